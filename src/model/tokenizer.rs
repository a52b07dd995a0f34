//! A `tokenizers::Tokenizer` for a checkpoint: `tokenizer.json` where there is one,
//! otherwise built from a GGUF file's BPE vocabulary and merges.
//!
//! GGUF `gpt2`-style vocabularies are byte-level BPE. The pre-tokenizer follows the
//! file's `tokenizer.ggml.pre`: `smollm` (SmolLM/SmolLM2) splits every digit, then
//! applies GPT-2's byte-level split, as the model's own `tokenizer.json` does.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use tokenizers::models::bpe::BPE;

use super::gguf::metadata_str;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

/// The tokenizer of a model file (GGUF) or directory (`tokenizer.json`).
pub fn load(path: &Path) -> Result<Tokenizer> {
    if path.is_dir() {
        let file = path.join("tokenizer.json");
        return Tokenizer::from_file(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()));
    }
    from_gguf_metadata(super::gguf::GgufFile::open(path)?.metadata())
}

fn strings(md: &std::collections::HashMap<String, gguf_file::Value>, key: &str) -> Result<Vec<String>> {
    md.get(key)
        .with_context(|| format!("GGUF has no {key}"))?
        .to_vec()
        .map_err(|e| anyhow::anyhow!("{key}: {e}"))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| anyhow::anyhow!("{key}: {e}")))
        .collect()
}

pub fn from_gguf_metadata(md: &std::collections::HashMap<String, gguf_file::Value>) -> Result<Tokenizer> {
    let model = metadata_str(md, "tokenizer.ggml.model").unwrap_or("gpt2");
    if model != "gpt2" {
        bail!("GGUF tokenizer model `{model}` is not supported by the native engine (only byte-level BPE, `gpt2`)");
    }
    let tokens = strings(md, "tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings(md, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).context("merge without a space"))
        .collect::<Result<_>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| anyhow::anyhow!("BPE: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let pre = metadata_str(md, "tokenizer.ggml.pre").unwrap_or("default");
    let byte_level = ByteLevel::new(false, false, true);
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        _ => byte_level.into(),
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::new(false, false, true)));

    // Control tokens (`<|im_start|>` …) are matched whole in the text.
    let types = md.get("tokenizer.ggml.token_type").and_then(|v| v.to_vec().ok());
    let special: Vec<AddedToken> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| types.is_some_and(|t| t.get(*i).and_then(|v| v.to_i32().ok()) == Some(3)))
        .map(|(_, t)| AddedToken::from(t.clone(), true))
        .collect();
    tokenizer.add_special_tokens(&special);
    Ok(tokenizer)
}

/// Token ids of `text` (special tokens in the text are recognised; nothing is added).
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tokenizer.encode_fast(text, false).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?.get_ids().to_vec())
}
