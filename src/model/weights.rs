//! Model weights as f32 tensors in HF layout (`[out, in]`, half-split RoPE), loaded
//! from GGUF (dequantized; q/k un-permuted from llama.cpp's interleaved-RoPE layout) or
//! from HF safetensors.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use super::config::LlamaConfig;
use super::gguf::GgufFile;

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub o: Tensor,
    pub ffn_norm: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

/// A layer's tensors in [`LayerWeights::tensors`] order, each with its name in GGUF
/// (`blk.N.<name>.weight`) and in HF safetensors (`model.layers.N.<name>.weight`).
pub const LAYER_TENSORS: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Positions in [`LAYER_TENSORS`] order.
pub const ATTN_NORM: usize = 0;
pub const Q: usize = 1;
pub const K: usize = 2;
pub const V: usize = 3;
pub const O: usize = 4;
pub const FFN_NORM: usize = 5;
pub const GATE: usize = 6;
pub const UP: usize = 7;
pub const DOWN: usize = 8;

/// The heads tensor `j` of a layer is split into when it is q or k: GGUF stores those
/// two permuted for interleaved RoPE.
pub fn rope_heads(j: usize, config: &LlamaConfig) -> Option<usize> {
    match j {
        Q => Some(config.heads),
        K => Some(config.kv_heads),
        _ => None,
    }
}

impl LayerWeights {
    pub fn from_array([attn_norm, q, k, v, o, ffn_norm, gate, up, down]: [Tensor; 9]) -> Self {
        Self { attn_norm, q, k, v, o, ffn_norm, gate, up, down }
    }

    /// The tensors in [`LAYER_TENSORS`] order.
    pub fn tensors(&self) -> [&Tensor; 9] {
        [&self.attn_norm, &self.q, &self.k, &self.v, &self.o, &self.ffn_norm, &self.gate, &self.up, &self.down]
    }

    /// Builds a layer from `get(j)` for each position `j` of [`LAYER_TENSORS`].
    fn build(get: impl FnMut(usize) -> Result<Tensor>) -> Result<Self> {
        let tensors: Vec<Tensor> = (0..LAYER_TENSORS.len()).map(get).collect::<Result<_>>()?;
        Ok(Self::from_array(tensors.try_into().expect("one tensor per name")))
    }
}

#[derive(Debug, Clone)]
pub struct LlamaWeights {
    pub config: LlamaConfig,
    pub embed: Tensor,
    pub layers: Vec<LayerWeights>,
    pub norm: Tensor,
    /// `[vocab, hidden]`; the embedding matrix when the model ties them.
    pub lm_head: Tensor,
    /// The quantized GGUF tensors as read, by GGUF name (for fast small-batch kernels).
    pub quantized: HashMap<String, std::sync::Arc<QTensor>>,
}

/// llama.cpp stores q/k rows permuted for interleaved RoPE; this restores HF's order.
fn unpermute(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let head_dim = out / heads;
    Ok(w.reshape((heads, head_dim / 2, 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))?)
}

/// The inverse of [`unpermute`], for writing GGUF.
pub fn permute(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let head_dim = out / heads;
    Ok(w.reshape((heads, 2, head_dim / 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))?)
}

impl LlamaWeights {
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::from_safetensors(path)
        } else {
            Self::from_gguf(path)
        }
    }

    /// A copy on `device` (the quantized originals stay behind); tied matrices stay tied.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let mv = |t: &Tensor| t.to_device(device);
        let embed = mv(&self.embed)?;
        let tied = self.lm_head.id() == self.embed.id();
        Ok(Self {
            config: self.config.clone(),
            lm_head: if tied { embed.clone() } else { mv(&self.lm_head)? },
            embed,
            layers: self
                .layers
                .iter()
                .map(|l| {
                    let ts = l.tensors();
                    LayerWeights::build(|j| Ok(mv(ts[j])?))
                })
                .collect::<Result<Vec<_>>>()?,
            norm: mv(&self.norm)?,
            quantized: HashMap::new(),
        })
    }

    pub fn from_gguf(path: &Path) -> Result<Self> {
        Self::from_gguf_file(&mut GgufFile::open(path)?)
    }

    pub fn from_gguf_file(gguf: &mut GgufFile) -> Result<Self> {
        let config = LlamaConfig::from_gguf(gguf.metadata())?;
        let has_output = gguf.has_tensor("output.weight");
        let mut quantized = HashMap::new();
        let mut load = |name: &str| -> Result<Tensor> {
            let q = std::sync::Arc::new(gguf.tensor(name)?);
            let t = q.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?;
            quantized.insert(name.to_string(), q);
            Ok(t)
        };
        let embed = load("token_embd.weight")?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            layers.push(LayerWeights::build(|j| {
                let t = load(&format!("blk.{i}.{}.weight", LAYER_TENSORS[j].0))?;
                match rope_heads(j, &config) {
                    Some(heads) => unpermute(&t, heads),
                    None => Ok(t),
                }
            })?);
        }
        let norm = load("output_norm.weight")?;
        let lm_head = if has_output { load("output.weight")? } else { embed.clone() };
        Ok(Self { config, embed, layers, norm, lm_head, quantized })
    }

    pub fn from_safetensors(dir: &Path) -> Result<Self> {
        let config = LlamaConfig::from_hf(dir)?;
        let mut tensors = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "safetensors") {
                tensors.extend(candle_core::safetensors::load(&path, &Device::Cpu)?);
            }
        }
        let mut take = |name: &str| -> Result<Tensor> {
            Ok(tensors.remove(name).with_context(|| format!("safetensors have no {name}"))?.to_dtype(DType::F32)?)
        };
        let embed = take("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            layers.push(LayerWeights::build(|j| take(&format!("model.layers.{i}.{}.weight", LAYER_TENSORS[j].1)))?);
        }
        let norm = take("model.norm.weight")?;
        let lm_head = take("lm_head.weight").unwrap_or_else(|_| embed.clone());
        Ok(Self { config, embed, layers, norm, lm_head, quantized: HashMap::new() })
    }
}

/// A random Llama small enough for exhaustive checks (tests of every part).
#[cfg(test)]
pub(crate) fn tiny_weights(seed: u64, tied: bool) -> Result<LlamaWeights> {
    use rand::{Rng, SeedableRng};
    let config = LlamaConfig {
        hidden: 32,
        intermediate: 64,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 8,
        vocab: 48,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        max_positions: 64,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dev = Device::Cpu;
    let mut rand = |shape: (usize, usize), scale: f32| -> Result<Tensor> {
        let v: Vec<f32> = (0..shape.0 * shape.1).map(|_| rng.random_range(-scale..scale)).collect();
        Ok(Tensor::from_vec(v, shape, &dev)?)
    };
    let (h, i, kvd) = (config.hidden, config.intermediate, config.kv_dim());
    let embed = rand((config.vocab, h), 1.0)?;
    let mut layers = Vec::new();
    for _ in 0..config.layers {
        layers.push(LayerWeights {
            attn_norm: (rand((1, h), 0.2)? + 1.0)?.squeeze(0)?,
            q: rand((h, h), 0.3)?,
            k: rand((kvd, h), 0.3)?,
            v: rand((kvd, h), 0.3)?,
            o: rand((h, h), 0.3)?,
            ffn_norm: (rand((1, h), 0.2)? + 1.0)?.squeeze(0)?,
            gate: rand((i, h), 0.3)?,
            up: rand((i, h), 0.3)?,
            down: rand((h, i), 0.3)?,
        });
    }
    let norm = (rand((1, h), 0.2)? + 1.0)?.squeeze(0)?;
    let lm_head = if tied { embed.clone() } else { rand((config.vocab, h), 0.3)? };
    Ok(LlamaWeights { config, embed, layers, norm, lm_head, quantized: Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_and_unpermute_are_inverse() -> Result<()> {
        let w = Tensor::arange(0f32, 8.0 * 3.0, &Device::Cpu)?.reshape((8, 3))?;
        let back = unpermute(&permute(&w, 2)?, 2)?;
        assert_eq!(back.to_vec2::<f32>()?, w.to_vec2::<f32>()?);
        // Interleaved pairs (0,1),(2,3) of a head become halves (0,2),(1,3).
        let rows: Vec<f32> = unpermute(&w, 2)?.narrow(1, 0, 1)?.flatten_all()?.to_vec1()?;
        assert_eq!(rows, vec![0.0, 6.0, 3.0, 9.0, 12.0, 18.0, 15.0, 21.0]);
        Ok(())
    }
}
