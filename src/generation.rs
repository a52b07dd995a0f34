//! One step of the self-rewarding data path: N answers to one prompt, each judged by the
//! same model as soon as it is done (and checked against the prompt's instructions when
//! it carries any), the pair decided by the reward, and everything recorded in Postgres
//! in one transaction. `POST /generate` validates a request into a [`GenerationJob`] and
//! shapes the [`Generated`] it gets back; the decisions are made here.

use crate::engine::{self, ChatMessage, Completion, Engine, EngineError, Finish, Generation};
use crate::judge::{self, DecidedBy, JudgeSettings, JudgeTemplate, PairDecision, PairPolicy, Reward, Scored, Verdict};
use crate::store::records::{NewCandidate, NewGeneration, NewJudgment, NewPair, RecordedIds};
use crate::store::Store;
use crate::verify::{Instruction, Outcome};

/// What one generation step is asked to do.
#[derive(Debug, Clone)]
pub struct GenerationJob {
    pub messages: Vec<ChatMessage>,
    /// One generation per candidate (each with its own seed).
    pub generations: Vec<Generation>,
    /// Judge every candidate with the same model (`None`: no judging).
    pub judge: Option<JudgeSettings>,
    pub policy: PairPolicy,
    pub reward: Reward,
    /// Checkable instructions the prompt carries.
    pub instructions: Option<Vec<Instruction>>,
    /// Where and how to record it (`None`: nothing is written).
    pub record: Option<RecordAs>,
}

/// How a generation step is recorded.
#[derive(Debug, Clone)]
pub struct RecordAs {
    /// The checkpoint that generates (and judges).
    pub checkpoint_id: i64,
    /// `user`, `seed` or `self_instruct`.
    pub source: String,
    pub iteration: i32,
    /// The sampling settings stored with each candidate (candidate i used seed + i).
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: usize,
    pub seed: u64,
}

/// What a generation step produced.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Per candidate, in order.
    pub completions: Vec<(Completion, Finish)>,
    /// Per candidate, when judged.
    pub verdicts: Option<Vec<Verdict>>,
    /// Per candidate, when the prompt carries instructions.
    pub outcomes: Option<Vec<Outcome>>,
    /// The reward's decision, when anything could decide (a judge, or a verifier).
    pub decision: Option<(PairDecision, DecidedBy)>,
    /// Row ids, when recorded.
    pub ids: Option<RecordedIds>,
}

impl Generated {
    /// The pair formed, if any.
    pub fn pair(&self) -> Option<NewPair> {
        match self.decision {
            Some((PairDecision::Pair { chosen, rejected, chosen_score, rejected_score }, _)) => {
                Some(NewPair { chosen, rejected, chosen_score, rejected_score })
            }
            _ => None,
        }
    }
}

/// Why a generation step failed; nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Runs one generation step on `engine`, judging with `template`, recording in `store`.
pub async fn run(engine: &dyn Engine, template: &JudgeTemplate, store: &Store, job: GenerationJob) -> Result<Generated, GenerationError> {
    // Each candidate is judged as soon as its own answer is done: the engine batches the
    // judge samples of early answers with the decoding of late ones.
    let question = judge::question_text(&job.messages);
    let candidates = futures::future::try_join_all(job.generations.iter().cloned().enumerate().map(|(i, generation)| {
        let settings = job.judge.as_ref().map(|s| JudgeSettings { seed: s.seed.wrapping_add(1000 * i as u64), ..s.clone() });
        let question = &question;
        async move {
            let completion = engine::complete(engine, generation).await?;
            let verdict = match settings {
                Some(settings) => Some(judge::judge(engine, template, question, &completion.text, &settings).await?),
                None => None,
            };
            Ok::<_, EngineError>((completion, verdict))
        }
    }))
    .await?;
    let (completions, verdicts): (Vec<Completion>, Vec<Option<Verdict>>) = candidates.into_iter().unzip();
    let verdicts: Option<Vec<Verdict>> = job.judge.is_some().then(|| verdicts.into_iter().flatten().collect());
    let completions: Vec<(Completion, Finish)> = completions
        .into_iter()
        .map(|c| {
            let finish = c.finish.expect("complete() returns a finish");
            (c, finish)
        })
        .collect();

    let outcomes: Option<Vec<Outcome>> =
        job.instructions.as_ref().map(|list| completions.iter().map(|(c, _)| Outcome::of(list, &c.text)).collect());
    let decides = verdicts.is_some() || (job.reward != Reward::Judge && outcomes.is_some());
    let decision = decides.then(|| {
        let scored: Vec<Scored> = completions
            .iter()
            .enumerate()
            .map(|(i, (c, _))| Scored {
                score: verdicts.as_ref().and_then(|vs| vs[i].mean),
                length: c.text.chars().count(),
                verified: outcomes.as_ref().map(|o| o[i].followed() as f32 / o[i].strict.len() as f32),
            })
            .collect();
        job.policy.decide_with(job.reward, &scored)
    });
    if let Some((decision, _)) = &decision {
        decision.count();
    }
    let mut generated = Generated { completions, verdicts, outcomes, decision, ids: None };
    if let Some(record) = &job.record {
        generated.ids = Some(store.record_generation(&to_record(&job, record, &generated, template)).await?);
    }
    Ok(generated)
}

fn to_record(job: &GenerationJob, record: &RecordAs, generated: &Generated, template: &JudgeTemplate) -> NewGeneration {
    let messages: Vec<serde_json::Value> = job.messages.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect();
    let candidates = generated
        .completions
        .iter()
        .enumerate()
        .map(|(i, (c, finish))| NewCandidate {
            text: c.text.clone(),
            prompt_tokens: finish.prompt_tokens as i32,
            completion_tokens: finish.completion_tokens as i32,
            finish_reason: finish.reason.as_openai().into(),
            temperature: record.temperature,
            top_p: record.top_p,
            max_tokens: record.max_tokens as i32,
            seed: record.seed.wrapping_add(i as u64) as i64,
        })
        .collect();
    let method = job.judge.as_ref().map_or("sample", |j| j.method.as_str());
    let judgments = generated.verdicts.as_ref().map_or_else(Vec::new, |vs| vs.iter().map(|v| new_judgments(v, method)).collect());
    let pair = generated.pair();
    let decided_by = pair.zip(generated.decision.map(|d| d.1)).map(|(pair, by)| {
        let outcome = |i: usize| generated.outcomes.as_ref().map(|o| &o[i].strict);
        let judged = job.judge.as_ref();
        serde_json::json!({
            "reward": job.reward.as_str(),
            "by": by,
            "method": judged.map(|j| j.method.as_str()),
            "judge_checkpoint_id": judged.map(|_| record.checkpoint_id),
            "template_sha256": judged.map(|_| template.sha256()),
            "chosen": outcome(pair.chosen),
            "rejected": outcome(pair.rejected),
        })
    });
    NewGeneration {
        messages: serde_json::Value::Array(messages),
        source: record.source.clone(),
        iteration: record.iteration,
        checkpoint_id: record.checkpoint_id,
        candidates,
        judgments,
        pair,
        instructions: job.instructions.as_ref().map(|l| serde_json::to_value(l).expect("instructions serialize")),
        decided_by,
    }
}

/// A verdict's samples as judgment rows.
pub fn new_judgments(verdict: &Verdict, method: &str) -> Vec<NewJudgment> {
    verdict
        .samples
        .iter()
        .enumerate()
        .map(|(k, s)| NewJudgment { sample_index: k as i32, method: method.into(), score: s.score, raw_text: s.text.clone() })
        .collect()
}
