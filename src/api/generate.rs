//! `POST /generate` (also `/v1/generate`): N candidates for one prompt, optionally
//! judged by the same model, the best and worst made a preference pair, all recorded in
//! Postgres in one transaction before the response is sent.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::chat::{validate_messages, RequestMessage, ResponseMessage, Usage};
use super::error::ErrorBody;
use super::judge::{validate_judge_options, JudgeOptions, JudgmentOut};
use super::sampling::{self, SamplingDefaults, SamplingInput, Stop, ValidSampling};
use super::{ApiError, ApiJson, AppState, Served};
use crate::engine::{self, ChatMessage, Completion, Prompt};
use crate::judge::{self, DecidedBy, JudgeSettings, NoPairReason, PairDecision, PairPolicy, Reward, Scored, Verdict};
use crate::store::records::{NewCandidate, NewGeneration, NewJudgment, NewPair};
use crate::verify::{Instruction, Outcome};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(generate))
}

/// `judge`: `false`/absent (no judging), `true` (defaults) or the judging options.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum JudgeChoice {
    Flag(bool),
    Options(JudgeOptions),
}

/// A chat-completion request body with the paper's defaults and srlm's extensions.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({
    "messages": [{"role": "user", "content": "How do I keep basil alive?"}],
    "n": 4, "max_tokens": 128,
    "judge": {"samples": 3, "method": "sample"}
}))]
pub struct GenerateRequest {
    /// The served model's name or `current` (default).
    pub model: Option<String>,
    /// The conversation to answer; or give `prompt`.
    pub messages: Option<Vec<RequestMessage>>,
    /// A single user message, instead of `messages`.
    pub prompt: Option<String>,
    /// Candidates to generate (default 4).
    pub n: Option<i64>,
    /// Default 0.7 (the paper's).
    pub temperature: Option<f64>,
    /// Default 0.9 (the paper's).
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    /// Most tokens per candidate (default 256).
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub stop: Option<Stop>,
    /// Seed for reproducible candidates (candidate i uses seed + i).
    pub seed: Option<i64>,
    /// Judge each candidate with the same model.
    pub judge: Option<JudgeChoice>,
    /// Record prompt, candidates, judgments and pair in Postgres (default true).
    pub record: Option<bool>,
    /// How the pair is chosen from the judged candidates.
    pub pair_policy: Option<PairPolicy>,
    /// `user` (default), `seed` or `self_instruct`.
    pub source: Option<String>,
    /// Loop iteration the prompt belongs to (default 0).
    pub iteration: Option<i32>,
    /// Checkable instructions the prompt carries (as `srlm data make-ifeval` writes
    /// them, at most 10): every candidate is checked against them, and they are stored
    /// with the prompt.
    pub instructions: Option<Vec<Instruction>>,
    /// What decides the pair: `judge` (default, the paper), `verify` (answers that
    /// followed more of `instructions` beat those that followed fewer; the judge chooses
    /// within each group) or `judge+verify` (the verifier, and the judge where it cannot
    /// tell the answers apart).
    pub reward: Option<Reward>,
}

/// Most checkable instructions one prompt may carry.
pub const MAX_INSTRUCTIONS: usize = 10;
/// The range of a pair policy's `min_margin` and `length_band`.
pub(crate) const MARGIN: std::ops::RangeInclusive<f64> = 0.0..=5.0;

pub(crate) const SOURCES: [&str; 3] = ["user", "seed", "self_instruct"];
const DEFAULT_MAX_TOKENS: usize = 256;

struct ValidGenerate {
    messages: Vec<ChatMessage>,
    sampling: ValidSampling,
    judge: Option<JudgeSettings>,
    record: bool,
    policy: PairPolicy,
    source: String,
    iteration: i32,
    instructions: Option<Vec<Instruction>>,
    reward: Reward,
}

impl GenerateRequest {
    fn validate(self, state: &AppState, served: &Served) -> Result<ValidGenerate, ApiError> {
        served.check_model(self.model.as_deref().unwrap_or(super::models::CURRENT_ALIAS))?;
        let messages = match (self.messages, self.prompt) {
            (Some(_), Some(_)) => return Err(ApiError::field("prompt", "give either messages or prompt, not both")),
            (None, None) => return Err(ApiError::field("messages", "messages (or prompt) is required")),
            (None, Some(p)) if p.trim().is_empty() => return Err(ApiError::field("prompt", "prompt must not be empty")),
            (None, Some(p)) => vec![ChatMessage { role: "user".into(), content: p }],
            (Some(m), None) if m.is_empty() => {
                return Err(ApiError::field("messages", "messages must contain at least 1 message, got 0"))
            }
            (Some(m), None) => validate_messages(m)?,
        };
        let mut limits = (*state.limits).clone();
        limits.default_max_tokens = DEFAULT_MAX_TOKENS;
        let max_tokens = sampling::token_budget(self.max_completion_tokens, self.max_tokens, &state.limits)?;
        let input = SamplingInput {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            n: self.n,
            max_tokens,
            seed: self.seed,
            stop: self.stop,
            logprobs: None,
        };
        let paper = SamplingDefaults { temperature: 0.7, top_p: 0.9, n: 4 };
        let sampling = sampling::validate(input, &limits, paper)?;
        let judge = match self.judge {
            None | Some(JudgeChoice::Flag(false)) => None,
            Some(JudgeChoice::Flag(true)) => Some(validate_judge_options(JudgeOptions::default(), &state.limits, sampling.config.seed)?),
            Some(JudgeChoice::Options(o)) => Some(validate_judge_options(o, &state.limits, sampling.config.seed)?),
        };
        let policy = self.pair_policy.unwrap_or(state.pair_policy);
        if !MARGIN.contains(&(policy.min_margin as f64)) {
            return Err(ApiError::field("pair_policy.min_margin", format!("min_margin must be between 0 and 5, got {}", policy.min_margin)));
        }
        if let Some(band) = policy.length_band {
            if !MARGIN.contains(&(band as f64)) {
                return Err(ApiError::field("pair_policy.length_band", format!("length_band must be between 0 and 5, got {band}")));
            }
        }
        let source = self.source.unwrap_or_else(|| "user".into());
        if !SOURCES.contains(&source.as_str()) {
            return Err(ApiError::field("source", format!("source must be one of {}, got `{source}`", SOURCES.join(", "))));
        }
        ApiError::check_iteration(self.iteration)?;
        let iteration = self.iteration.unwrap_or(0);
        if let Some(list) = &self.instructions {
            if list.len() > MAX_INSTRUCTIONS {
                return Err(ApiError::field(
                    "instructions",
                    format!("instructions may hold at most {MAX_INSTRUCTIONS} items, got {}", list.len()),
                ));
            }
        }
        let instructions = self.instructions.filter(|l| !l.is_empty());
        let reward = self.reward.unwrap_or_default();
        Ok(ValidGenerate { messages, sampling, judge, record: self.record.unwrap_or(true), policy, source, iteration, instructions, reward })
    }
}

/// The pair formed from the candidates.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PairOut {
    /// Row id, when recorded.
    pub pair_id: Option<i64>,
    pub chosen_index: usize,
    pub rejected_index: usize,
    pub chosen_candidate_id: Option<i64>,
    pub rejected_candidate_id: Option<i64>,
    pub chosen_score: f32,
    pub rejected_score: f32,
    /// Which signal made the pair: the judge or the verifier.
    pub decided_by: DecidedBy,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GeneratedChoice {
    pub index: usize,
    pub message: ResponseMessage,
    pub finish_reason: String,
    /// Row id, when recorded.
    pub candidate_id: Option<i64>,
    /// Mean of the parsed judge scores (absent when not judged or none parsed).
    pub score: Option<f32>,
    /// Judge samples whose score parsed.
    pub parsed: usize,
    pub judgments: Vec<JudgmentOut>,
    /// Per instruction of the request: followed or not (absent without instructions).
    pub verified: Option<Outcome>,
}

/// Per-request judging summary.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JudgeSummary {
    pub method: judge::JudgeMethod,
    pub samples_per_candidate: usize,
    /// Judge samples run (candidates × samples).
    pub total: usize,
    /// Samples whose score parsed.
    pub parsed: usize,
}

/// A chat-completion-like object: the candidates, their scores, and the pair.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GenerateResponse {
    pub id: String,
    /// Always `srlm.generation`.
    pub object: String,
    pub created: i64,
    pub model: String,
    /// The checkpoint that generated (and judged) the candidates.
    pub checkpoint_id: Option<i64>,
    /// Row id of the recorded prompt.
    pub prompt_id: Option<i64>,
    pub choices: Vec<GeneratedChoice>,
    /// The pair formed, if any.
    pub pair: Option<PairOut>,
    /// Why no pair was formed, when judged and none was.
    pub no_pair_reason: Option<NoPairReason>,
    pub judge: Option<JudgeSummary>,
    pub usage: Usage,
}

/// Generate scored candidates
///
/// N candidates (paper defaults: N = 4, temperature 0.7, top-p 0.9), optionally judged
/// by the served model with the additive 5-point rubric; the best and worst become a
/// preference pair. With `record` (default), prompt, candidates, judgments and pair are
/// committed in one transaction before the response is sent; with the database down the
/// request fails with 503 before generating.
#[utoipa::path(
    post,
    path = "/generate",
    tag = "self-rewarding",
    request_body = GenerateRequest,
    responses(
        (status = 200, description = "Candidates, scores, the pair and the recorded ids", body = GenerateResponse),
        (status = 400, description = "Invalid field; the message names the field and the limit", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body larger than the server's limit", body = ErrorBody),
        (status = 429, description = "Too many requests in flight", body = ErrorBody),
        (status = 503, description = "Recording asked for and the database is unavailable; nothing was written", body = ErrorBody),
    )
)]
pub async fn generate(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<GenerateRequest>,
) -> Result<Json<GenerateResponse>, ApiError> {
    let _permit = state.admit()?;
    let served = state.current();
    let request = request.validate(&state, &served)?;
    let checkpoint_id = if request.record { Some(state.recording_checkpoint(&served).await?) } else { None };
    let engine = served.engine.as_ref();
    let prompt = Prompt::Chat(request.messages.clone());
    served.check_prompt_tokens(state.limits.max_prompt_tokens, &prompt, "messages").await?;
    // Each candidate is judged as soon as its own answer is done: the engine batches the
    // judge samples of early answers with the decoding of late ones.
    let question = judge::question_text(&request.messages);
    let template = state.judge_template.as_ref();
    let candidates = futures::future::try_join_all((0..request.sampling.n).map(|i| {
        let generation = request.sampling.generation(prompt.clone(), i);
        let settings = request
            .judge
            .as_ref()
            .map(|s| JudgeSettings { seed: s.seed.wrapping_add(1000 * i as u64), ..s.clone() });
        let question = &question;
        async move {
            let completion = engine::complete(engine, generation).await?;
            let verdict = match settings {
                Some(settings) => Some(judge::judge(engine, template, question, &completion.text, &settings).await?),
                None => None,
            };
            Ok::<_, engine::EngineError>((completion, verdict))
        }
    }))
    .await?;
    let (completions, verdicts): (Vec<Completion>, Vec<Option<Verdict>>) = candidates.into_iter().unzip();
    let verdicts: Option<Vec<Verdict>> = request.judge.is_some().then(|| verdicts.into_iter().flatten().collect());
    let (done, usage) = super::tally(completions);
    let completions: Vec<Completion> = done.iter().map(|(c, _)| c.clone()).collect();

    let outcomes: Option<Vec<Outcome>> =
        request.instructions.as_ref().map(|list| completions.iter().map(|c| Outcome::of(list, &c.text)).collect());
    let decides = verdicts.is_some() || (request.reward != Reward::Judge && outcomes.is_some());
    let decision = decides.then(|| {
        let scored: Vec<Scored> = completions
            .iter()
            .enumerate()
            .map(|(i, c)| Scored {
                score: verdicts.as_ref().and_then(|vs| vs[i].mean),
                length: c.text.chars().count(),
                verified: outcomes.as_ref().map(|o| o[i].followed() as f32 / o[i].strict.len() as f32),
            })
            .collect();
        request.policy.decide_with(request.reward, &scored)
    });
    let pair = match decision {
        Some((PairDecision::Pair { chosen, rejected, chosen_score, rejected_score }, _)) => {
            Some(NewPair { chosen, rejected, chosen_score, rejected_score })
        }
        _ => None,
    };
    let decided_by = decision.map(|d| d.1);
    let decision = decision.map(|d| d.0);
    if let Some(decision) = &decision {
        decision.count();
    }

    let ids = match checkpoint_id {
        None => None,
        Some(checkpoint_id) => {
            let decided = pair.zip(decided_by).map(|(p, by)| Decided { by, pair: p, outcomes: outcomes.as_deref(), template: state.judge_template.sha256(), checkpoint_id });
            let record = to_record(&request, checkpoint_id, &completions, verdicts.as_deref(), pair, decided);
            Some(state.store.record_generation(&record).await?)
        }
    };

    let choices = done
        .iter()
        .enumerate()
        .map(|(i, (c, finish))| {
            let verdict = verdicts.as_ref().map(|v| &v[i]);
            GeneratedChoice {
                index: i,
                message: ResponseMessage { role: "assistant".into(), content: c.text.clone() },
                finish_reason: finish.reason.as_openai().into(),
                candidate_id: ids.as_ref().map(|ids| ids.candidate_ids[i]),
                score: verdict.and_then(|v| v.mean),
                parsed: verdict.map_or(0, Verdict::parsed),
                judgments: verdict.map_or_else(Vec::new, |v| {
                    JudgmentOut::list(v, ids.as_ref().map(|ids| ids.judgment_ids[i].as_slice()))
                }),
                verified: outcomes.as_ref().map(|o| o[i].clone()),
            }
        })
        .collect();
    let candidate_id = |i: usize| ids.as_ref().map(|ids| ids.candidate_ids[i]);
    let response = GenerateResponse {
        id: format!("gen-{}", uuid::Uuid::new_v4().simple()),
        object: "srlm.generation".into(),
        created: chrono::Utc::now().timestamp(),
        model: served.engine.info().name.clone(),
        checkpoint_id: checkpoint_id.or(served.checkpoint_id()),
        prompt_id: ids.as_ref().map(|ids| ids.prompt_id),
        choices,
        pair: pair.map(|p| PairOut {
            pair_id: ids.as_ref().and_then(|ids| ids.pair_id),
            chosen_index: p.chosen,
            rejected_index: p.rejected,
            chosen_candidate_id: candidate_id(p.chosen),
            rejected_candidate_id: candidate_id(p.rejected),
            chosen_score: p.chosen_score,
            rejected_score: p.rejected_score,
            decided_by: decided_by.unwrap_or(DecidedBy::Judge),
        }),
        no_pair_reason: match decision {
            Some(PairDecision::NoPair(reason)) => Some(reason),
            _ => None,
        },
        judge: request.judge.as_ref().zip(verdicts.as_ref()).map(|(s, vs)| JudgeSummary {
            method: s.method,
            samples_per_candidate: s.samples,
            total: vs.iter().map(|v| v.samples.len()).sum(),
            parsed: vs.iter().map(Verdict::parsed).sum(),
        }),
        usage,
    };
    Ok(Json(response))
}

/// What decided a recorded pair, for its `decided_by` column.
struct Decided<'a> {
    by: DecidedBy,
    pair: NewPair,
    outcomes: Option<&'a [Outcome]>,
    template: String,
    checkpoint_id: i64,
}

fn to_record(
    request: &ValidGenerate,
    checkpoint_id: i64,
    completions: &[Completion],
    verdicts: Option<&[Verdict]>,
    pair: Option<NewPair>,
    decided: Option<Decided>,
) -> NewGeneration {
    let messages: Vec<serde_json::Value> =
        request.messages.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect();
    let candidates = completions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let finish = c.finish.expect("complete() returns a finish");
            NewCandidate {
                text: c.text.clone(),
                prompt_tokens: finish.prompt_tokens as i32,
                completion_tokens: finish.completion_tokens as i32,
                finish_reason: finish.reason.as_openai().into(),
                temperature: request.sampling.config.temperature,
                top_p: request.sampling.config.top_p,
                max_tokens: request.sampling.max_tokens as i32,
                seed: request.sampling.config.seed.wrapping_add(i as u64) as i64,
            }
        })
        .collect();
    let method = request.judge.as_ref().map_or("sample", |j| j.method.as_str());
    let judgments = verdicts.map_or_else(Vec::new, |vs| vs.iter().map(|v| new_judgments(v, method)).collect());
    NewGeneration {
        messages: serde_json::Value::Array(messages),
        source: request.source.clone(),
        iteration: request.iteration,
        checkpoint_id,
        candidates,
        judgments,
        pair,
        instructions: request.instructions.as_ref().map(|l| serde_json::to_value(l).expect("instructions serialize")),
        decided_by: decided.map(|d| {
            let outcome = |i: usize| d.outcomes.map(|o| &o[i].strict);
            serde_json::json!({
                "reward": request.reward.as_str(),
                "by": d.by,
                "method": request.judge.as_ref().map(|j| j.method.as_str()),
                "judge_checkpoint_id": request.judge.as_ref().map(|_| d.checkpoint_id),
                "template_sha256": request.judge.as_ref().map(|_| d.template),
                "chosen": outcome(d.pair.chosen),
                "rejected": outcome(d.pair.rejected),
            })
        }),
    }
}

pub(super) fn new_judgments(verdict: &Verdict, method: &str) -> Vec<NewJudgment> {
    verdict
        .samples
        .iter()
        .enumerate()
        .map(|(k, s)| NewJudgment { sample_index: k as i32, method: method.into(), score: s.score, raw_text: s.text.clone() })
        .collect()
}
