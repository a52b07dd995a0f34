//! Log-prob objects in OpenAI's two shapes (chat and legacy completions).

use crate::engine::TokenLogprob;
pub use crate::protocol::logprobs::{ChatLogprobs, ChatTokenLogprob, ChatTopLogprob, CompletionLogprobs};

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
