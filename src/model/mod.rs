//! The model on disk, below everything that serves or trains it: the configuration,
//! reading and writing weights (GGUF, safetensors), weight-type conversion, the
//! tokenizer, the vocabulary (token bytes, special tokens) and the chat template.
//!
//! GGUF headers are read in one place ([`gguf::GgufFile::open`]), and a model that is
//! served or trained is read whole from one opening ([`ModelFiles::open`]).

pub mod config;
pub mod export;
pub mod gguf;
pub mod template;
pub mod tokenizer;
pub mod vocab;
pub mod weights;

use std::path::Path;

use anyhow::{Context, Result};

use gguf::GgufFile;
use vocab::Vocab;
use weights::LlamaWeights;

/// A model read from disk: its weights, tokenizer and vocabulary (with the chat
/// template), from a GGUF file opened once or an HF directory.
pub struct ModelFiles {
    pub weights: LlamaWeights,
    pub tokenizer: tokenizers::Tokenizer,
    pub vocab: Vocab,
}

impl ModelFiles {
    pub fn open(path: &Path) -> Result<Self> {
        let read = || -> Result<Self> {
            if path.is_dir() {
                return Ok(Self {
                    weights: LlamaWeights::from_safetensors(path)?,
                    tokenizer: tokenizer::load(path)?,
                    vocab: Vocab::for_model(path)?,
                });
            }
            let mut gguf = GgufFile::open(path)?;
            Ok(Self {
                vocab: Vocab::from_gguf_file(&gguf)?,
                tokenizer: tokenizer::from_gguf_metadata(gguf.metadata())?,
                weights: LlamaWeights::from_gguf_file(&mut gguf)?,
            })
        };
        read().with_context(|| format!("loading {}", path.display()))
    }
}
