//! Log-probabilities of generated tokens, in OpenAI's chat and completion shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Log-probs of a chat choice.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<ChatTokenLogprob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatTokenLogprob {
    /// The token's text.
    pub token: String,
    /// Natural log of the token's probability under the model (temperature 1).
    pub logprob: f32,
    /// The token's UTF-8 bytes (a token may hold part of a character).
    pub bytes: Vec<u8>,
    /// The most likely tokens at this position, best first (`top_logprobs` of them).
    pub top_logprobs: Vec<ChatTopLogprob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatTopLogprob {
    /// The token's text.
    pub token: String,
    /// Natural log of its probability.
    pub logprob: f32,
    /// The token's UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// Log-probs of a legacy completion choice.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CompletionLogprobs {
    /// The generated tokens' texts.
    pub tokens: Vec<String>,
    /// Natural log of each token's probability.
    pub token_logprobs: Vec<f32>,
    /// For each position, the most likely tokens and their log-probs.
    pub top_logprobs: Vec<BTreeMap<String, f32>>,
    /// Character offset of each token in the returned text.
    pub text_offset: Vec<usize>,
}
