//! `POST /generate` (also `/v1/generate`): N candidates for one prompt, optionally
//! judged by the same model, the best and worst made a preference pair, all recorded in
//! Postgres in one transaction before the response is sent. The handler validates the
//! request and shapes the answer; the step itself is `generation::run`.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::chat::{validate_messages, ResponseMessage};
use super::error::ErrorBody;
use super::judge::{validate_judge_options, JudgeOptions, JudgmentOut};
use super::sampling::{self, SamplingDefaults, SamplingInput, ValidSampling};
use super::ServedChecks;
use super::{ApiError, ApiJson, AppState, Served};
use crate::engine::{ChatMessage, Prompt};
use crate::generation::{self, Generated, GenerationJob, RecordAs};
use crate::judge::{JudgeSettings, PairDecision, PairPolicy, Reward, Verdict};
pub use crate::protocol::generate::{GenerateRequest, GenerateResponse, GeneratedChoice, JudgeChoice, JudgeSummary, PairOut};
use crate::verify::Instruction;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(generate))
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
            (Some(m), None) if m.is_empty() => return Err(ApiError::field("messages", "messages must contain at least 1 message, got 0")),
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
            return Err(ApiError::field(
                "pair_policy.min_margin",
                format!("min_margin must be between 0 and 5, got {}", policy.min_margin),
            ));
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
        Ok(ValidGenerate {
            messages,
            sampling,
            judge,
            record: self.record.unwrap_or(true),
            policy,
            source,
            iteration,
            instructions,
            reward,
        })
    }
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
    let prompt = Prompt::Chat(request.messages.clone());
    served.check_prompt_tokens(state.limits.max_prompt_tokens, &prompt, "messages").await?;
    let sampling = &request.sampling;
    let job = GenerationJob {
        generations: (0..sampling.n).map(|i| sampling.generation(prompt.clone(), i)).collect(),
        record: checkpoint_id.map(|checkpoint_id| RecordAs {
            checkpoint_id,
            source: request.source.clone(),
            iteration: request.iteration,
            temperature: sampling.config.temperature,
            top_p: sampling.config.top_p,
            max_tokens: sampling.max_tokens,
            seed: sampling.config.seed,
        }),
        messages: request.messages,
        judge: request.judge.clone(),
        policy: request.policy,
        reward: request.reward,
        instructions: request.instructions,
    };
    let generated = generation::run(served.engine.as_ref(), &state.judge_template, &state.store, job).await?;
    Ok(Json(response(&generated, request.judge.as_ref(), checkpoint_id.or(served.checkpoint_id()), &served.engine.info().name)))
}

/// The response to a generation step.
fn response(generated: &Generated, judge: Option<&JudgeSettings>, checkpoint_id: Option<i64>, model: &str) -> GenerateResponse {
    let ids = generated.ids.as_ref();
    let candidate_id = |i: usize| ids.map(|ids| ids.candidate_ids[i]);
    let choices = generated
        .completions
        .iter()
        .enumerate()
        .map(|(i, (c, finish))| {
            let verdict = generated.verdicts.as_ref().map(|v| &v[i]);
            GeneratedChoice {
                index: i,
                message: ResponseMessage { role: "assistant".into(), content: c.text.clone() },
                finish_reason: finish.reason.as_openai().into(),
                candidate_id: candidate_id(i),
                score: verdict.and_then(|v| v.mean),
                parsed: verdict.map_or(0, Verdict::parsed),
                judgments: verdict.map_or_else(Vec::new, |v| JudgmentOut::list(v, ids.map(|ids| ids.judgment_ids[i].as_slice()))),
                verified: generated.outcomes.as_ref().map(|o| o[i].clone()),
            }
        })
        .collect();
    GenerateResponse {
        id: format!("gen-{}", uuid::Uuid::new_v4().simple()),
        object: "srlm.generation".into(),
        created: chrono::Utc::now().timestamp(),
        model: model.to_string(),
        checkpoint_id,
        prompt_id: ids.map(|ids| ids.prompt_id),
        choices,
        pair: generated.pair().zip(generated.decision).map(|(p, (_, decided_by))| PairOut {
            pair_id: ids.and_then(|ids| ids.pair_id),
            chosen_index: p.chosen,
            rejected_index: p.rejected,
            chosen_candidate_id: candidate_id(p.chosen),
            rejected_candidate_id: candidate_id(p.rejected),
            chosen_score: p.chosen_score,
            rejected_score: p.rejected_score,
            decided_by,
        }),
        no_pair_reason: match generated.decision {
            Some((PairDecision::NoPair(reason), _)) => Some(reason),
            _ => None,
        },
        judge: judge.zip(generated.verdicts.as_ref()).map(|(s, vs)| JudgeSummary {
            method: s.method,
            samples_per_candidate: s.samples,
            total: vs.iter().map(|v| v.samples.len()).sum(),
            parsed: vs.iter().map(Verdict::parsed).sum(),
        }),
        usage: super::usage_of(generated.completions.iter().map(|(_, finish)| finish)),
    }
}
