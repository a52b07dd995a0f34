//! Chat completions (`POST /v1/chat/completions`): the request, its messages and the answer.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::logprobs::ChatLogprobs;
use super::sampling::Stop;

/// A chat message in a request.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct RequestMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text, or a list of content parts of which only `text` parts are supported.
    #[serde(default)]
    pub content: Option<MessageContent>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A content part; srlm serves text models, so `type` must be `text`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

/// Options for streamed responses.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the token usage of the whole request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_usage: bool,
}

/// An OpenAI chat-completion request. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// The served model's name, or `current`.
    pub model: String,
    /// The conversation so far; at least one message.
    pub messages: Vec<RequestMessage>,
    /// Sampling temperature, 0 to 2 (0 = greedy). Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, in (0, 1]. Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Keep only the k most likely tokens (0 = off). Extension, as in vLLM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    /// Number of choices, 1 to the server's limit (default 16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<i64>,
    /// Deprecated alias of `max_completion_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// Most tokens to generate per choice, 1 to the server's limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    /// Up to 4 stop sequences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Seed for reproducible sampling; choice i uses seed + i.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Return the log-prob of each generated token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub logprobs: bool,
    /// With `logprobs`, also the 0 to 20 most likely tokens at each position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<i64>,
    /// Stream the answer as server-sent events, ending with `data: [DONE]`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Keep generating past end-of-sequence until the token limit (vLLM's extension, for
    /// benchmarks that need every answer the same length).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_eos: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

/// The assistant's message in a choice.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResponseMessage {
    /// Always `assistant`.
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ResponseMessage,
    /// Present when the request asked for `logprobs`.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop` (end of sequence or a stop sequence) or `length` (`max_tokens` reached).
    pub finish_reason: String,
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Prompt tokens (counted once per choice the engine prefilled).
    pub prompt_tokens: usize,
    /// Generated tokens over all choices.
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// An OpenAI chat completion.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionResponse {
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix time in seconds.
    pub created: i64,
    /// The model that answered.
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}
