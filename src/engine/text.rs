//! Generated tokens → streamed text, with stop sequences.
//!
//! Text is the exact concatenation of the tokens' bytes, released only up to a
//! complete UTF-8 character and never including the start of what may become a stop
//! sequence (so a streamed answer never shows text that a stop sequence later cuts).
//! A token's log-prob is released with the text it ends in.

use std::collections::VecDeque;

use super::TokenLogprob;

#[derive(Debug, Default, PartialEq)]
pub struct Piece {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    /// A stop sequence was found; nothing more will be released.
    pub stopped: bool,
}

pub struct TextAssembler {
    stop: Vec<String>,
    bytes: Vec<u8>,
    /// Bytes already released (always at a character boundary).
    released: usize,
    /// Tokens not yet released, with the byte offset where each starts.
    held: VecDeque<(usize, Option<TokenLogprob>)>,
    stopped: bool,
}

impl TextAssembler {
    pub fn new(stop: Vec<String>) -> Self {
        Self { stop, bytes: Vec::new(), released: 0, held: VecDeque::new(), stopped: false }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Adds one token's bytes (empty for special tokens) and returns what can be released.
    pub fn push(&mut self, bytes: &[u8], logprob: Option<TokenLogprob>) -> Piece {
        if self.stopped {
            return Piece { stopped: true, ..Piece::default() };
        }
        self.held.push_back((self.bytes.len(), logprob));
        self.bytes.extend_from_slice(bytes);
        let pending = &self.bytes[self.released..];
        let valid = match std::str::from_utf8(pending) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&pending[..e.valid_up_to()]).expect("valid prefix"),
        };
        if let Some(at) = self.stop.iter().filter_map(|s| valid.find(s.as_str())).min() {
            self.stopped = true;
            let piece = self.release(self.released + at);
            self.held.clear();
            return Piece { stopped: true, ..piece };
        }
        let keep = self.longest_stop_prefix_suffix(valid);
        self.release(self.released + valid.len() - keep)
    }

    /// Releases everything still held (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> Piece {
        if self.stopped {
            return Piece { stopped: true, ..Piece::default() };
        }
        let end = self.bytes.len();
        let text = String::from_utf8_lossy(&self.bytes[self.released..end]).into_owned();
        self.released = end;
        let logprobs = self.held.drain(..).filter_map(|(_, lp)| lp).collect();
        Piece { text, logprobs, stopped: false }
    }

    fn release(&mut self, end: usize) -> Piece {
        let text = std::str::from_utf8(&self.bytes[self.released..end]).expect("boundary").to_string();
        let mut logprobs = Vec::new();
        // A token is released with the text its first byte is in.
        while self.held.front().is_some_and(|(start, _)| *start < end) {
            if let Some((_, Some(lp))) = self.held.pop_front() {
                logprobs.push(lp);
            }
        }
        self.released = end;
        Piece { text, logprobs, stopped: false }
    }

    /// Length in bytes of the longest suffix of `text` that is a proper prefix of a
    /// stop sequence (held back: the next token may complete the stop sequence).
    fn longest_stop_prefix_suffix(&self, text: &str) -> usize {
        let mut best = 0;
        for stop in &self.stop {
            for (i, _) in text.char_indices() {
                let suffix = &text[i..];
                if suffix.len() < stop.len() && stop.starts_with(suffix) {
                    best = best.max(suffix.len());
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(text: &str) -> Option<TokenLogprob> {
        Some(TokenLogprob { token: 0, text: text.into(), bytes: text.as_bytes().to_vec(), logprob: -1.0, top: vec![], allowed: vec![] })
    }

    fn run(tokens: &[&[u8]], stop: &[&str]) -> (Vec<String>, bool) {
        let mut t = TextAssembler::new(stop.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        let mut stopped = false;
        for b in tokens {
            let p = t.push(b, None);
            out.push(p.text);
            stopped |= p.stopped;
        }
        out.push(t.finish().text);
        (out, stopped)
    }

    #[test]
    fn text_is_the_exact_concatenation_of_token_bytes() {
        let (out, stopped) = run(&[b" the", b" sea"], &[]);
        assert_eq!(out.concat(), " the sea");
        assert!(!stopped);
    }

    #[test]
    fn split_characters_are_held_until_complete() {
        let e_acute = "é".as_bytes();
        let (out, _) = run(&[b"caf", &e_acute[..1], &e_acute[1..], b"!"], &[]);
        assert_eq!(out, vec!["caf", "", "é", "!", ""]);
    }

    #[test]
    fn stop_sequences_cut_the_text_even_across_tokens() {
        let (out, stopped) = run(&[b"Hello", b" wor", b"ld", b" again"], &["world"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Hello ");
        // "wor" may start "world": it is held back, never shown and then retracted.
        assert_eq!(out[1], " ");
        let (out, stopped) = run(&[b"a sunny day"], &["sun"]);
        assert!(stopped);
        assert_eq!(out.concat(), "a ");
    }

    #[test]
    fn a_held_prefix_is_released_when_it_does_not_become_a_stop() {
        let (out, stopped) = run(&[b"Hello wo", b"nder"], &["world"]);
        assert!(!stopped);
        assert_eq!(out, vec!["Hello ", "wonder", ""]);
    }

    #[test]
    fn logprobs_travel_with_their_text_and_stop_drops_the_rest() {
        let mut t = TextAssembler::new(vec!["END".into()]);
        let p = t.push(b"ab", lp("ab"));
        assert_eq!(p.logprobs.len(), 1);
        let p = t.push(b"cE", lp("cE"));
        assert_eq!((p.text.as_str(), p.logprobs.len()), ("c", 1));
        let p = t.push(b"ND", lp("ND"));
        assert!(p.stopped);
        assert!(p.logprobs.is_empty());
        assert_eq!(t.push(b"more", lp("more")), Piece { stopped: true, ..Piece::default() });
    }
}
