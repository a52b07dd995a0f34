//! `POST /judge`: an answer scored by the served model as its own judge.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::chat::RequestMessage;
use crate::judge::JudgeMethod;

/// How to judge.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct JudgeOptions {
    /// Judge samples per response, averaged (default 3, or the server's most if lower).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<i64>,
    /// `sample` (default), `constrained` or `expected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<JudgeMethod>,
    /// Judge sampling temperature (default 0.7).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Judge nucleus mass (default 0.9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Longest judge text in tokens (default 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
}

/// One judge sample.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JudgmentOut {
    /// Row id, when recorded.
    pub judgment_id: Option<i64>,
    pub sample_index: usize,
    /// `null` when the judge's text held no valid score (never coerced).
    pub score: Option<f32>,
    /// The judge's text.
    pub text: String,
}

/// What to judge: a stored candidate, or a prompt (or messages) and a response.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({
    "prompt": "Why is the sea salty?",
    "response": "Rivers carry dissolved minerals into the sea, and evaporation leaves the salt behind.",
    "samples": 3, "method": "expected"
}))]
pub struct JudgeRequest {
    /// The served model's name or `current` (default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A stored candidate to judge; its judgments are recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_id: Option<i64>,
    /// The question, as one user message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The conversation, instead of `prompt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<RequestMessage>>,
    /// The answer to judge (with `prompt` or `messages`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Judge samples, averaged (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<i64>,
    /// `sample` (default), `constrained` or `expected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<JudgeMethod>,
    /// Judge sampling temperature (default 0.7).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Judge nucleus mass (default 0.9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Longest judge text in tokens (default 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// Seed for reproducible judging (sample k uses seed + k).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Record the judgments of a stored candidate (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JudgeResponse {
    /// Always `srlm.judgment`.
    pub object: String,
    pub model: String,
    /// The judging checkpoint.
    pub checkpoint_id: Option<i64>,
    pub candidate_id: Option<i64>,
    pub method: JudgeMethod,
    pub samples: Vec<JudgmentOut>,
    /// Mean of the parsed scores; `null` when none parsed.
    pub mean: Option<f32>,
    /// Samples whose score parsed, out of `samples.len()`.
    pub parsed: usize,
}
