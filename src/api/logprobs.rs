//! Log-prob objects in OpenAI's two shapes (chat and legacy completions).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::TokenLogprob;

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

impl ChatLogprobs {
    pub fn from_tokens(tokens: &[TokenLogprob]) -> Self {
        let content = tokens
            .iter()
            .map(|t| ChatTokenLogprob {
                token: t.text.clone(),
                logprob: t.logprob,
                bytes: t.bytes.clone(),
                top_logprobs: t
                    .top
                    .iter()
                    .map(|a| ChatTopLogprob { token: a.text.clone(), logprob: a.logprob, bytes: a.bytes.clone() })
                    .collect(),
            })
            .collect();
        Self { content }
    }
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

impl CompletionLogprobs {
    /// `offset` is where the first token starts in the choice's text (streams continue).
    pub fn from_tokens(tokens: &[TokenLogprob], mut offset: usize) -> Self {
        let mut out = Self::default();
        for t in tokens {
            out.tokens.push(t.text.clone());
            out.token_logprobs.push(t.logprob);
            out.top_logprobs.push(t.top.iter().map(|a| (a.text.clone(), a.logprob)).collect());
            out.text_offset.push(offset);
            offset += t.text.chars().count();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TopLogprob;

    fn tok(text: &str, lp: f32) -> TokenLogprob {
        TokenLogprob {
            token: 1,
            text: text.into(),
            bytes: text.as_bytes().to_vec(),
            logprob: lp,
            allowed: vec![],
            top: vec![TopLogprob { token: 1, text: text.into(), bytes: text.as_bytes().to_vec(), logprob: lp }],
        }
    }

    #[test]
    fn completion_offsets_follow_the_text() {
        let lp = CompletionLogprobs::from_tokens(&[tok("Hé", -0.1), tok("llo", -0.2)], 5);
        assert_eq!(lp.text_offset, vec![5, 7]);
        assert_eq!(lp.top_logprobs[1]["llo"], -0.2);
    }
}
