//! The shape of a Llama-family model, from GGUF metadata or an HF `config.json`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
    pub max_positions: usize,
}

impl LlamaConfig {
    pub fn from_gguf(md: &HashMap<String, gguf_file::Value>) -> Result<Self> {
        let arch = super::gguf::metadata_str(md, "general.architecture").unwrap_or("llama");
        if arch != "llama" {
            bail!("architecture `{arch}` is not Llama-family");
        }
        let get = |key: &str| -> Result<&gguf_file::Value> {
            md.get(&format!("llama.{key}")).with_context(|| format!("GGUF has no llama.{key}"))
        };
        let int = |key: &str| -> Result<usize> { Ok(get(key)?.to_u32().map_err(|e| anyhow::anyhow!("llama.{key}: {e}"))? as usize) };
        let float = |key: &str| -> Result<f32> { get(key)?.to_f32().map_err(|e| anyhow::anyhow!("llama.{key}: {e}")) };
        let hidden = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        let vocab = match md.get("tokenizer.ggml.tokens").and_then(|v| v.to_vec().ok()) {
            Some(tokens) => tokens.len(),
            None => int("vocab_size")?,
        };
        Ok(Self {
            hidden,
            intermediate: int("feed_forward_length")?,
            layers: int("block_count")?,
            heads,
            kv_heads: int("attention.head_count_kv").unwrap_or(heads),
            head_dim: hidden / heads,
            vocab,
            rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
            rms_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            max_positions: int("context_length").unwrap_or(4096),
        })
    }

    pub fn from_hf(dir: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Hf {
            hidden_size: usize,
            intermediate_size: usize,
            num_hidden_layers: usize,
            num_attention_heads: usize,
            num_key_value_heads: Option<usize>,
            vocab_size: usize,
            rope_theta: Option<f32>,
            rms_norm_eps: Option<f32>,
            max_position_embeddings: Option<usize>,
        }
        let path = dir.join("config.json");
        let hf: Hf = serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("parsing {}", path.display()))?;
        Ok(Self {
            hidden: hf.hidden_size,
            intermediate: hf.intermediate_size,
            layers: hf.num_hidden_layers,
            heads: hf.num_attention_heads,
            kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim: hf.hidden_size / hf.num_attention_heads,
            vocab: hf.vocab_size,
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rms_eps: hf.rms_norm_eps.unwrap_or(1e-5),
            max_positions: hf.max_position_embeddings.unwrap_or(4096),
        })
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// cos and sin of the rotary angles of positions `0..positions`, row-major
    /// `[positions, head_dim / 2]` (frequency i is θ^(−2i/head_dim)), computed in f64.
    pub fn rope_tables(&self, positions: usize) -> (Vec<f64>, Vec<f64>) {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for pos in 0..positions {
            for i in 0..half {
                let freq = 1.0 / (self.rope_theta as f64).powf((2 * i) as f64 / self.head_dim as f64);
                let angle = pos as f64 * freq;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        (cos, sin)
    }
}
