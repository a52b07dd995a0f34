//! Text completions (`POST /v1/completions`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::chat::Usage;
use super::logprobs::CompletionLogprobs;
use super::sampling::Stop;

/// One prompt or a list of prompts.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PromptInput {
    One(String),
    Many(Vec<String>),
}

impl Default for PromptInput {
    fn default() -> Self {
        Self::One(String::new())
    }
}

/// An OpenAI text-completion request. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct CompletionRequest {
    /// The served model's name, or `current`.
    pub model: String,
    /// Text to continue; a list gives `n` choices per prompt, in order.
    pub prompt: PromptInput,
    /// Most tokens to generate per choice. Default 16, as in OpenAI's API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// Sampling temperature, 0 to 2 (0 = greedy). Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, in (0, 1]. Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Keep only the k most likely tokens (0 = off). Extension, as in vLLM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    /// Choices per prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<i64>,
    /// Up to 4 stop sequences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Seed for reproducible sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Log-probs of the generated tokens and of the 0 to 5 most likely alternatives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<i64>,
    /// Echo the prompt before the completion (not supported: must be false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub echo: bool,
    /// Text after the completion (not supported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Server-side best-of (not supported beyond `n`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_of: Option<i64>,
    /// Stream the answer as server-sent events, ending with `data: [DONE]`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Keep generating past end-of-sequence until the token limit (vLLM's extension, for
    /// benchmarks that need every answer the same length).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_eos: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<super::chat::StreamOptions>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompletionChoice {
    /// Prompt p's choice c has index p × n + c.
    pub index: usize,
    pub text: String,
    /// Present when the request asked for `logprobs`.
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// An OpenAI text completion.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompletionResponse {
    pub id: String,
    /// Always `text_completion`.
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}
