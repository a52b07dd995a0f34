//! `POST /generate`: N answers, each judged, the pair decided and recorded.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::chat::{RequestMessage, ResponseMessage, Usage};
use super::judge::{JudgeOptions, JudgmentOut};
use super::sampling::Stop;
use crate::judge::{self, DecidedBy, NoPairReason, PairPolicy, Reward};
use crate::verify::{Instruction, Outcome};

/// `judge`: `false`/absent (no judging), `true` (defaults) or the judging options.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum JudgeChoice {
    Flag(bool),
    Options(JudgeOptions),
}

/// A chat-completion request body with the paper's defaults and srlm's extensions.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({
    "messages": [{"role": "user", "content": "How do I keep basil alive?"}],
    "n": 4, "max_tokens": 128,
    "judge": {"samples": 3, "method": "sample"}
}))]
pub struct GenerateRequest {
    /// The served model's name or `current` (default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The conversation to answer; or give `prompt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<RequestMessage>>,
    /// A single user message, instead of `messages`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Candidates to generate (default 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<i64>,
    /// Default 0.7 (the paper's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Default 0.9 (the paper's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    /// Most tokens per candidate (default 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Seed for reproducible candidates (candidate i uses seed + i).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Judge each candidate with the same model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeChoice>,
    /// Record prompt, candidates, judgments and pair in Postgres (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
    /// How the pair is chosen from the judged candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair_policy: Option<PairPolicy>,
    /// `user` (default), `seed` or `self_instruct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Loop iteration the prompt belongs to (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iteration: Option<i32>,
    /// Checkable instructions the prompt carries (as `srlm data make-ifeval` writes
    /// them, at most 10): every candidate is checked against them, and they are stored
    /// with the prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<Vec<Instruction>>,
    /// What decides the pair: `judge` (default, the paper), `verify` (answers that
    /// followed more of `instructions` beat those that followed fewer; the judge chooses
    /// within each group) or `judge+verify` (the verifier, and the judge where it cannot
    /// tell the answers apart).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward: Option<Reward>,
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
