//! Token id → bytes, read from the checkpoint itself (GGUF metadata or an HF
//! `tokenizer.json`), for log-prob entries and special-token ids.
//!
//! The `tokenizers` decoders return `String`s, which lose the raw bytes of a token that
//! is only part of a UTF-8 character; OpenAI's `bytes` field needs those bytes, so the
//! byte-level table is inverted here.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::gguf::GgufFile;
use super::template::ChatTemplate;

#[derive(Debug, Clone)]
pub struct Vocab {
    tokens: Vec<Vec<u8>>,
    /// Control tokens (`<|im_start|>` …): never part of generated text.
    special: Vec<bool>,
    by_bytes: HashMap<Vec<u8>, u32>,
    pub eos: Option<u32>,
    /// The checkpoint's chat template, where it has one.
    pub chat_template: Option<ChatTemplate>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    /// GPT-2 style: every byte is mapped to a printable character (`Ġ` is a space).
    ByteLevel,
    /// SentencePiece style: `▁` is a space and `<0xNN>` is a raw byte.
    SentencePiece,
}

impl Vocab {
    pub fn from_gguf(path: &Path) -> Result<Self> {
        Self::from_gguf_file(&GgufFile::open(path)?)
    }

    pub fn from_gguf_file(gguf: &GgufFile) -> Result<Self> {
        let md = gguf.metadata();
        let model = gguf.string("tokenizer.ggml.model").unwrap_or("gpt2");
        let encoding = if model == "llama" { Encoding::SentencePiece } else { Encoding::ByteLevel };
        let tokens = md
            .get("tokenizer.ggml.tokens")
            .context("GGUF has no tokenizer.ggml.tokens")?
            .to_vec()
            .map_err(|e| anyhow::anyhow!("tokenizer.ggml.tokens: {e}"))?
            .iter()
            .map(|v| v.to_string().map(|s| s.clone()).map_err(|e| anyhow::anyhow!("token: {e}")))
            .collect::<Result<Vec<String>>>()?;
        let eos = md.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok());
        // llama.cpp token types: 3 = control.
        let special = match md.get("tokenizer.ggml.token_type").and_then(|v| v.to_vec().ok()) {
            Some(types) => types.iter().map(|t| t.to_i32().is_ok_and(|t| t == 3)).collect(),
            None => vec![false; tokens.len()],
        };
        let mut vocab = Self::build(&tokens, encoding, special, eos);
        let token_text =
            |key: &str| md.get(key).and_then(|v| v.to_u32().ok()).and_then(|id| tokens.get(id as usize)).cloned().unwrap_or_default();
        vocab.chat_template = gguf
            .string("tokenizer.chat_template")
            .map(|t| ChatTemplate::new(t, token_text("tokenizer.ggml.bos_token_id"), token_text("tokenizer.ggml.eos_token_id")));
        Ok(vocab)
    }

    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let tok = tokenizers::Tokenizer::from_file(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let size = tok.get_vocab_size(true);
        let tokens: Vec<String> = (0..size as u32).map(|id| tok.id_to_token(id).unwrap_or_default()).collect();
        let byte_level = tokens.iter().any(|t| t.starts_with('Ġ'));
        let encoding = if byte_level { Encoding::ByteLevel } else { Encoding::SentencePiece };
        let eos = ["<|im_end|>", "<|eot_id|>", "</s>", "<|endoftext|>"].iter().find_map(|t| tok.token_to_id(t));
        let mut special = vec![false; tokens.len()];
        for (id, added) in tok.get_added_tokens_decoder() {
            if added.special {
                if let Some(s) = special.get_mut(id as usize) {
                    *s = true;
                }
            }
        }
        let mut vocab = Self::build(&tokens, encoding, special, eos);
        let config = path.with_file_name("tokenizer_config.json");
        if let Ok(text) = std::fs::read_to_string(&config) {
            let config: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}", config.display()))?;
            let token = |key: &str| match &config[key] {
                serde_json::Value::String(s) => s.clone(),
                other => other["content"].as_str().unwrap_or_default().to_string(),
            };
            vocab.chat_template = config["chat_template"].as_str().map(|t| ChatTemplate::new(t, token("bos_token"), token("eos_token")));
        }
        Ok(vocab)
    }

    /// Reads the vocabulary next to a model: a GGUF file, or a directory holding
    /// `tokenizer.json`.
    pub fn for_model(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Self::from_tokenizer_json(&path.join("tokenizer.json"));
        }
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            return Self::from_gguf(path);
        }
        bail!("{}: expected a .gguf file or a directory with tokenizer.json", path.display())
    }

    fn build(tokens: &[String], encoding: Encoding, special: Vec<bool>, eos: Option<u32>) -> Self {
        let unmap = byte_level_inverse();
        let tokens = tokens
            .iter()
            .map(|t| match encoding {
                Encoding::ByteLevel => t
                    .chars()
                    .map(|c| unmap.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    // Special tokens such as `<|im_end|>` are not byte-mapped.
                    .unwrap_or_else(|| t.as_bytes().to_vec()),
                Encoding::SentencePiece => sentencepiece_bytes(t),
            })
            .collect::<Vec<Vec<u8>>>();
        let mut by_bytes = HashMap::new();
        for (id, bytes) in tokens.iter().enumerate() {
            if !special.get(id).copied().unwrap_or(false) {
                by_bytes.entry(bytes.clone()).or_insert(id as u32);
            }
        }
        Self { tokens, special, by_bytes, eos, chat_template: None }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn bytes(&self, id: u32) -> &[u8] {
        self.tokens.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The id of the (non-special) token whose bytes are exactly `bytes`.
    pub fn find(&self, bytes: &[u8]) -> Option<u32> {
        self.by_bytes.get(bytes).copied()
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// What the token adds to generated text: nothing for control tokens.
    pub fn text_bytes(&self, id: u32) -> &[u8] {
        if self.is_special(id) {
            &[]
        } else {
            self.bytes(id)
        }
    }

    /// The token as text (lossy where the token is part of a multi-byte character).
    pub fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.bytes(id)).into_owned()
    }
}

/// GPT-2's table maps each byte to a printable character; this is its inverse.
fn byte_level_inverse() -> HashMap<char, u8> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                let c = char::from_u32(next).expect("valid code point");
                next += 1;
                c
            };
            (c, b)
        })
        .collect()
}

fn sentencepiece_bytes(t: &str) -> Vec<u8> {
    if let Some(hex) = t.strip_prefix("<0x").and_then(|r| r.strip_suffix('>')) {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            return vec![b];
        }
    }
    t.replace('\u{2581}', " ").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_tokens_round_trip_to_bytes() {
        let v = Vocab::build(
            &["Ġhello".into(), "Ċ".into(), "<|im_end|>".into(), "Ã©".into(), "Ã".into()],
            Encoding::ByteLevel,
            vec![false, false, true, false, false],
            Some(2),
        );
        assert_eq!(v.bytes(0), b" hello");
        assert_eq!(v.bytes(1), b"\n");
        assert_eq!(v.bytes(2), b"<|im_end|>");
        assert_eq!(v.text(3), "é");
        assert_eq!(v.bytes(4), &[0xC3]);
        assert_eq!(v.bytes(99), b"");
        assert!(v.is_special(2));
        assert_eq!(v.find(b" hello"), Some(0));
        assert_eq!(v.find(b"<|im_end|>"), None, "special tokens are not text");
        assert_eq!(v.text_bytes(2), b"");
    }

    #[test]
    fn sentencepiece_tokens_decode_spaces_and_bytes() {
        let v = Vocab::build(&["▁the".into(), "<0x0A>".into()], Encoding::SentencePiece, vec![false; 2], None);
        assert_eq!(v.bytes(0), b" the");
        assert_eq!(v.bytes(1), b"\n");
    }
}
