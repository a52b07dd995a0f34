//! The differentiable Llama model the trainer optimizes.
//!
//! Every op here has a backward pass in candle 0.10. The fused fast paths of
//! `candle_nn` (`ops::rms_norm`, `ops::softmax_last_dim`, `rotary_emb::rope*`, `sdpa`)
//! have none and would silently cut the gradient, so normalization, softmax and RoPE
//! are written out from primitive ops. The test `every_trainable_parameter_gets_a_gradient`
//! keeps it that way.
//!
//! The model works in whatever float dtype its weights have: f32 for training, f64 in
//! the finite-difference test.

use anyhow::{ensure, Result};
use candle_core::{DType, Device, IndexOp, Tensor, Var, D};
use rand::{Rng, SeedableRng};

use crate::model::config::LlamaConfig;
use crate::model::weights::{LayerWeights, LlamaWeights};

/// What of the model is trained.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Trainable {
    /// Keep the token embeddings (and a tied output matrix) fixed.
    pub freeze_embeddings: bool,
    /// Keep the bottom `freeze_layers` transformer layers fixed.
    pub freeze_layers: usize,
    /// Train low-rank adapters instead of the weights themselves.
    pub lora: Option<LoraConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
}

/// A weight: a variable the optimizer updates, or a constant.
#[derive(Debug, Clone)]
pub enum Param {
    Frozen(Tensor),
    Trained(Var),
}

impl Param {
    fn new(tensor: Tensor, train: bool) -> Result<Self> {
        Ok(if train { Self::Trained(Var::from_tensor(&tensor)?) } else { Self::Frozen(tensor) })
    }

    /// The value; with `grad` false, cut from the graph so no backward state is built.
    fn get(&self, grad: bool) -> Tensor {
        match self {
            Self::Trained(var) if grad => var.as_tensor().clone(),
            Self::Trained(var) => var.as_detached_tensor(),
            Self::Frozen(t) => t.clone(),
        }
    }

    pub fn value(&self) -> Tensor {
        self.get(false)
    }
}

/// Low-rank update `scale · B·A` of a `[out, in]` weight; `B` starts at zero so the
/// adapted model starts equal to the base.
#[derive(Debug, Clone)]
pub struct Lora {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
}

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Param,
    pub lora: Option<Lora>,
}

impl Linear {
    fn new(weight: Tensor, train: bool, lora: Option<LoraConfig>, rng: &mut rand::rngs::StdRng) -> Result<Self> {
        let lora = match lora.filter(|_| train) {
            Some(cfg) => {
                let (out, inp) = weight.dims2()?;
                // Kaiming-uniform A as in PEFT, zero B.
                let bound = (1.0 / inp as f64).sqrt();
                let a: Vec<f64> = (0..cfg.rank * inp).map(|_| rng.random_range(-bound..bound)).collect();
                let a = Tensor::from_vec(a, (cfg.rank, inp), weight.device())?.to_dtype(weight.dtype())?;
                let b = Tensor::zeros((out, cfg.rank), weight.dtype(), weight.device())?;
                Some(Lora { a: Var::from_tensor(&a)?, b: Var::from_tensor(&b)?, scale: cfg.alpha / cfg.rank as f64 })
            }
            None => None,
        };
        let train_weight = train && lora.is_none();
        Ok(Self { weight: Param::new(weight, train_weight)?, lora })
    }

    /// `x · Wᵀ` for `x: [rows, in]`, plus the adapter's update. With `grad` false the
    /// adapter is left out: that is the base (reference) model.
    fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        let y = match &self.weight {
            Param::Frozen(w) if grad => matmul_const_t(x, w)?,
            p => x.matmul(&p.get(grad).t()?)?,
        };
        match &self.lora {
            Some(lora) if grad => {
                let low = x.matmul(&lora.a.as_tensor().t()?)?.matmul(&lora.b.as_tensor().t()?)?;
                Ok((y + (low * lora.scale)?)?)
            }
            _ => Ok(y),
        }
    }

    /// The weight with the adapter merged in, `[out, in]`.
    pub fn merged(&self) -> Result<Tensor> {
        let w = self.weight.value();
        match &self.lora {
            Some(lora) => Ok((w + (lora.b.as_tensor().matmul(lora.a.as_tensor())? * lora.scale)?)?),
            None => Ok(w),
        }
    }

    fn vars(&self) -> Vec<Var> {
        match (&self.lora, &self.weight) {
            (Some(l), _) => vec![l.a.clone(), l.b.clone()],
            (None, Param::Trained(v)) => vec![v.clone()],
            (None, Param::Frozen(_)) => vec![],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Param,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: Param,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub config: LlamaConfig,
    pub embed: Param,
    pub layers: Vec<Layer>,
    pub norm: Param,
    /// `None` when the output matrix is the embedding matrix (tied).
    pub lm_head: Option<Linear>,
    cos: Tensor,
    sin: Tensor,
}

/// Sequences to score: right-padded token ids and the positions whose next token counts.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[sequences, length]`, u32.
    pub tokens: Tensor,
    /// Flat row indices (`sequence · length + position`) of the positions that predict
    /// a scored token, u32 `[n]`.
    pub rows: Tensor,
    /// The token each of those rows should predict, u32 `[n]`.
    pub targets: Tensor,
    /// Which sequence each scored token belongs to.
    pub owner: Vec<usize>,
    pub sequences: usize,
}

impl Batch {
    /// `seqs[i] = (tokens, first)`: every token from index `first` on is scored.
    pub fn new(seqs: &[(&[u32], usize)], device: &Device) -> Result<Self> {
        ensure!(!seqs.is_empty(), "empty batch");
        let len = seqs.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
        let mut tokens = Vec::with_capacity(seqs.len() * len);
        let (mut rows, mut targets, mut owner) = (Vec::new(), Vec::new(), Vec::new());
        for (s, (seq, first)) in seqs.iter().enumerate() {
            ensure!(*first >= 1 && *first <= seq.len(), "scored tokens must follow at least one context token");
            tokens.extend_from_slice(seq);
            tokens.extend(std::iter::repeat_n(0u32, len - seq.len()));
            for (p, &t) in seq.iter().enumerate().skip(*first) {
                rows.push((s * len + p - 1) as u32);
                targets.push(t);
                owner.push(s);
            }
        }
        let n = rows.len();
        Ok(Self {
            tokens: Tensor::from_vec(tokens, (seqs.len(), len), device)?,
            rows: Tensor::from_vec(rows, n, device)?,
            targets: Tensor::from_vec(targets, n, device)?,
            owner,
            sequences: seqs.len(),
        })
    }

    pub fn scored_tokens(&self) -> usize {
        self.owner.len()
    }

    /// `[sequences, n]` 0/1 matrix that sums per-token values into per-sequence ones;
    /// `mean` divides each row by its token count instead.
    pub fn owner_matrix(&self, dtype: DType, mean: bool) -> Result<Tensor> {
        let n = self.owner.len();
        let mut m = vec![0f64; self.sequences * n];
        let mut counts = vec![0usize; self.sequences];
        for &s in &self.owner {
            counts[s] += 1;
        }
        for (i, &s) in self.owner.iter().enumerate() {
            m[s * n + i] = if mean { 1.0 / counts[s] as f64 } else { 1.0 };
        }
        Ok(Tensor::from_vec(m, (self.sequences, n), self.tokens.device())?.to_dtype(dtype)?)
    }
}

/// `x · wᵀ` where `w` is a constant. candle's matmul backward computes the gradient of
/// both operands, which for a frozen weight is a whole wasted matmul per layer (a third
/// of the step for LoRA); this op's backward computes only the input's.
fn matmul_const_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !x.track_op() || !x.device().is_cpu() {
        return Ok(x.matmul(&w.t()?)?);
    }
    Ok(x.contiguous()?.apply_op1(ConstRhs(w.clone()))?)
}

struct ConstRhs(Tensor);

impl candle_core::CustomOp1 for ConstRhs {
    fn name(&self) -> &'static str {
        "matmul-const-rhs-t"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage;
        let (start, end) =
            layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("matmul-const-rhs-t: input not contiguous".into()))?;
        let shape = layout.shape();
        let x = match storage {
            CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], shape, &Device::Cpu)?,
            CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], shape, &Device::Cpu)?,
            _ => return Err(candle_core::Error::Msg("matmul-const-rhs-t: f32 or f64 only".into())),
        };
        let y = x.matmul(&self.0.t()?)?;
        let out_shape = y.shape().clone();
        let flat = y.flatten_all()?;
        let out = match storage {
            CpuStorage::F32(_) => CpuStorage::F32(flat.to_vec1()?),
            _ => CpuStorage::F64(flat.to_vec1()?),
        };
        Ok((out, out_shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.0)?))
    }
}

fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(weight)?)
}

/// Softmax over the last dimension from primitive ops (the maximum is a constant shift
/// and needs no gradient).
fn softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// HF-layout (half-split) rotary embedding of `x: [b, heads, t, d]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

impl Model {
    /// The model from loaded weights, in `dtype`, with what `trainable` says as variables.
    pub fn new(weights: &LlamaWeights, trainable: &Trainable, dtype: DType, seed: u64) -> Result<Self> {
        Self::from_weights(weights.clone(), trainable, dtype, seed)
    }

    /// [`Self::new`], consuming the weights: each loaded tensor is freed as soon as its
    /// variable holds a copy, so peak memory holds one set of weights, not two.
    pub fn from_weights(weights: LlamaWeights, trainable: &Trainable, dtype: DType, seed: u64) -> Result<Self> {
        let c = weights.config.clone();
        ensure!(trainable.freeze_layers <= c.layers, "--freeze-layers {} but the model has {} layers", trainable.freeze_layers, c.layers);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let cast = |t: &Tensor| t.to_dtype(dtype);
        let full = trainable.lora.is_none();
        let LlamaWeights { embed: w_embed, layers: w_layers, norm: w_norm, lm_head: w_head, .. } = weights;
        let tied = w_head.id() == w_embed.id();
        let device = w_embed.device().clone();
        let layers = w_layers
            .into_iter()
            .enumerate()
            .map(|(i, w): (usize, LayerWeights)| -> Result<Layer> {
                let train = i >= trainable.freeze_layers;
                let mut lin = |t: &Tensor| Linear::new(cast(t)?, train, trainable.lora, &mut rng);
                Ok(Layer {
                    attn_norm: Param::new(cast(&w.attn_norm)?, train && full)?,
                    q: lin(&w.q)?,
                    k: lin(&w.k)?,
                    v: lin(&w.v)?,
                    o: lin(&w.o)?,
                    ffn_norm: Param::new(cast(&w.ffn_norm)?, train && full)?,
                    gate: lin(&w.gate)?,
                    up: lin(&w.up)?,
                    down: lin(&w.down)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if tied { None } else { Some(Linear::new(cast(&w_head)?, true, trainable.lora, &mut rng)?) };
        drop(w_head);
        let embed = Param::new(cast(&w_embed)?, full && !trainable.freeze_embeddings)?;
        drop(w_embed);
        let norm = Param::new(cast(&w_norm)?, full)?;
        let (cos, sin) = rope_tables(&c, dtype, &device)?;
        Ok(Self { config: c, embed, layers, norm, lm_head, cos, sin })
    }

    /// The variables the optimizer updates, with stable names.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        if let Param::Trained(v) = &self.embed {
            out.push(("embed".to_string(), v.clone()));
        }
        for (i, l) in self.layers.iter().enumerate() {
            for (name, p) in [("attn_norm", &l.attn_norm), ("ffn_norm", &l.ffn_norm)] {
                if let Param::Trained(v) = p {
                    out.push((format!("layers.{i}.{name}"), v.clone()));
                }
            }
            for (name, lin) in l.linears() {
                for (j, v) in lin.vars().into_iter().enumerate() {
                    out.push((format!("layers.{i}.{name}.{j}"), v));
                }
            }
        }
        if let Param::Trained(v) = &self.norm {
            out.push(("norm".to_string(), v.clone()));
        }
        if let Some(head) = &self.lm_head {
            for (j, v) in head.vars().into_iter().enumerate() {
                out.push((format!("lm_head.{j}"), v));
            }
        }
        out
    }

    /// Log-probability of each scored token of `batch`, `[n]`. With `grad` false no
    /// backward graph is built and adapters are left out (the reference model).
    pub fn token_logprobs(&self, batch: &Batch, grad: bool) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = batch.tokens.dims2()?;
        let (heads, kv, hd) = (c.heads, c.kv_heads, c.head_dim);
        let group = heads / kv;
        let eps = c.rms_eps as f64;
        let embed = self.embed.get(grad);
        let dtype = embed.dtype();
        let mut x = embed.index_select(&batch.tokens.flatten_all()?, 0)?; // [b·t, hidden]
        let cos = self.cos.i(..t)?;
        let sin = self.sin.i(..t)?;
        let mask = causal_mask(t, group, dtype, x.device())?;
        let scale = 1.0 / (hd as f64).sqrt();
        for layer in &self.layers {
            let h = rms_norm(&x, &layer.attn_norm.get(grad), eps)?;
            let q = layer.q.forward(&h, grad)?.reshape((b, t, heads, hd))?.transpose(1, 2)?;
            let k = layer.k.forward(&h, grad)?.reshape((b, t, kv, hd))?.transpose(1, 2)?;
            let v = layer.v.forward(&h, grad)?.reshape((b, t, kv, hd))?.transpose(1, 2)?.contiguous()?;
            let q = rope(&q.contiguous()?, &cos, &sin)?;
            let k = rope(&k.contiguous()?, &cos, &sin)?;
            // The query heads sharing a KV head attend as one block: [b, kv, group·t, hd].
            let q = q.reshape((b, kv, group * t, hd))?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
            let attn = softmax(&scores)?.matmul(&v)?; // [b, kv, group·t, hd]
            let attn = attn.reshape((b, heads, t, hd))?.transpose(1, 2)?.reshape((b * t, heads * hd))?;
            x = (x + layer.o.forward(&attn, grad)?)?;
            let h = rms_norm(&x, &layer.ffn_norm.get(grad), eps)?;
            let gated = (layer.gate.forward(&h, grad)?.silu()? * layer.up.forward(&h, grad)?)?;
            x = (x + layer.down.forward(&gated, grad)?)?;
        }
        // Only the rows that predict a scored token go through the output matrix.
        let h = rms_norm(&x.index_select(&batch.rows, 0)?, &self.norm.get(grad), eps)?;
        let logits = match &self.lm_head {
            Some(head) => head.forward(&h, grad)?,
            None => match &self.embed {
                Param::Frozen(e) if grad => matmul_const_t(&h, e)?,
                _ => h.matmul(&embed.t()?)?,
            },
        };
        let max = logits.max_keepdim(1)?.detach();
        let shifted = logits.broadcast_sub(&max)?;
        let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
        let picked = shifted.gather(&batch.targets.unsqueeze(1)?, 1)?;
        Ok((picked - lse)?.squeeze(1)?)
    }

    /// Per-sequence sums of [`Self::token_logprobs`] (means with `mean`), `[sequences]`.
    pub fn sequence_logprobs(&self, batch: &Batch, grad: bool, mean: bool) -> Result<Tensor> {
        let per_token = self.token_logprobs(batch, grad)?;
        let owners = batch.owner_matrix(per_token.dtype(), mean)?;
        Ok(owners.matmul(&per_token.unsqueeze(1)?)?.squeeze(1)?)
    }

    /// The current weights (adapters merged) in the layout [`LlamaWeights`] uses.
    pub fn export(&self) -> Result<LlamaWeights> {
        let f32 = |t: Tensor| t.to_dtype(DType::F32)?.to_device(&Device::Cpu);
        let embed = f32(self.embed.value())?;
        let layers = self
            .layers
            .iter()
            .map(|l| -> Result<LayerWeights> {
                Ok(LayerWeights {
                    attn_norm: f32(l.attn_norm.value())?,
                    q: f32(l.q.merged()?)?,
                    k: f32(l.k.merged()?)?,
                    v: f32(l.v.merged()?)?,
                    o: f32(l.o.merged()?)?,
                    ffn_norm: f32(l.ffn_norm.value())?,
                    gate: f32(l.gate.merged()?)?,
                    up: f32(l.up.merged()?)?,
                    down: f32(l.down.merged()?)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = match &self.lm_head {
            Some(head) => f32(head.merged()?)?,
            None => embed.clone(),
        };
        Ok(LlamaWeights {
            config: self.config.clone(),
            embed,
            layers,
            norm: f32(self.norm.value())?,
            lm_head,
            quantized: Default::default(),
        })
    }

    /// Parameters in the model, and how many of them are trained.
    pub fn parameter_counts(&self) -> (usize, usize) {
        let trained: usize = self.vars().iter().map(|(_, v)| v.elem_count()).sum();
        let c = &self.config;
        let per_layer = 2 * c.hidden + c.hidden * (c.hidden + 2 * c.kv_dim() + c.hidden) + 3 * c.hidden * c.intermediate;
        let head = if self.lm_head.is_some() { c.vocab * c.hidden } else { 0 };
        (c.vocab * c.hidden + c.layers * per_layer + c.hidden + head, trained)
    }
}

impl Layer {
    /// The weights (a projection's base weight, without its adapter) in
    /// [`crate::model::weights::LAYER_TENSORS`] order.
    pub fn weights(&self) -> [&Param; 9] {
        [
            &self.attn_norm,
            &self.q.weight,
            &self.k.weight,
            &self.v.weight,
            &self.o.weight,
            &self.ffn_norm,
            &self.gate.weight,
            &self.up.weight,
            &self.down.weight,
        ]
    }

    pub(crate) fn linears(&self) -> [(&'static str, &Linear); 7] {
        [("q", &self.q), ("k", &self.k), ("v", &self.v), ("o", &self.o), ("gate", &self.gate), ("up", &self.up), ("down", &self.down)]
    }
}

/// [`LlamaConfig::rope_tables`] with each row's half repeated, `[positions, head_dim]`,
/// to multiply both halves of a head at once.
fn rope_tables(c: &LlamaConfig, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let positions = c.max_positions.min(1 << 16);
    let (cos, sin) = c.rope_tables(positions);
    let both = |t: Vec<f64>| -> Result<Tensor> {
        let rows: Vec<f64> = t.chunks(c.head_dim / 2).flat_map(|row| row.iter().chain(row).copied()).collect();
        Ok(Tensor::from_vec(rows, (positions, c.head_dim), device)?.to_dtype(dtype)?)
    };
    Ok((both(cos)?, both(sin)?))
}

/// Additive causal mask for `group` query heads stacked along the rows: `[group·t, t]`.
fn causal_mask(t: usize, group: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; group * t * t];
    for r in 0..group * t {
        let pos = r % t;
        for col in pos + 1..t {
            m[r * t + col] = f32::NEG_INFINITY;
        }
    }
    Ok(Tensor::from_vec(m, (group * t, t), device)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::tiny_weights;

    fn sample_batch() -> Result<Batch> {
        let a: Vec<u32> = vec![1, 5, 9, 3, 7, 2, 11];
        let b: Vec<u32> = vec![4, 8, 15, 16];
        Batch::new(&[(&a, 3), (&b, 2)], &Device::Cpu)
    }

    #[test]
    fn every_trainable_parameter_gets_a_gradient() -> Result<()> {
        let lora = Some(LoraConfig { rank: 4, alpha: 8.0 });
        for tied in [true, false] {
            for trainable in [Trainable::default(), Trainable { lora, ..Default::default() }] {
                let model = Model::new(&tiny_weights(1, tied)?, &trainable, DType::F32, 7)?;
                // With LoRA, B starts at zero, so A's gradient is zero at step 0; move B.
                for (name, v) in model.vars() {
                    if name.ends_with(".1") && trainable.lora.is_some() {
                        v.set(&(v.as_tensor().ones_like()? * 0.01)?)?;
                    }
                }
                let batch = sample_batch()?;
                let loss = model.sequence_logprobs(&batch, true, false)?.sum_all()?.neg()?;
                let grads = loss.backward()?;
                let vars = model.vars();
                let expected = if trainable.lora.is_some() { 2 * 7 * 2 + if tied { 0 } else { 2 } } else { 2 * 9 + 2 + usize::from(!tied) };
                assert_eq!(vars.len(), expected, "tied={tied} lora={:?}", trainable.lora);
                for (name, var) in vars {
                    let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has no gradient (tied={tied})"));
                    let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
                    assert!(norm > 0.0 && norm.is_finite(), "{name}: gradient norm {norm}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn frozen_parts_are_not_variables() -> Result<()> {
        let t = Trainable { freeze_embeddings: true, freeze_layers: 1, lora: None };
        let model = Model::new(&tiny_weights(1, true)?, &t, DType::F32, 7)?;
        let names: Vec<String> = model.vars().into_iter().map(|(n, _)| n).collect();
        assert!(!names.iter().any(|n| n == "embed" || n.starts_with("layers.0.")), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("layers.1.")));
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        for lora in [None, Some(LoraConfig { rank: 2, alpha: 4.0 })] {
            let trainable = Trainable { lora, ..Default::default() };
            let model = Model::new(&tiny_weights(3, false)?, &trainable, DType::F64, 11)?;
            if lora.is_some() {
                for (name, v) in model.vars() {
                    if name.ends_with(".1") {
                        v.set(&(v.as_tensor().ones_like()? * 0.05)?)?;
                    }
                }
            }
            let batch = sample_batch()?;
            // A loss that weighs the sequences differently, so their gradients don't cancel.
            let weigh = |s: Tensor| -> Result<Tensor> { Ok(((s.i(0)? * 0.7)? - (s.i(1)? * 1.3)?)?) };
            let loss = |m: &Model| -> Result<f64> { Ok(weigh(m.sequence_logprobs(&batch, true, false)?)?.to_scalar::<f64>()?) };
            let l = weigh(model.sequence_logprobs(&batch, true, false)?)?;
            let grads = l.backward()?;
            let h = 1e-6;
            let mut checked = 0;
            for (name, var) in model.vars() {
                let g = grads.get(var.as_tensor()).expect("gradient").flatten_all()?.to_vec1::<f64>()?;
                let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
                // A few coordinates of every parameter.
                for idx in [0, base.len() / 3, base.len() - 1] {
                    let mut plus = base.clone();
                    plus[idx] += h;
                    var.set(&Tensor::from_vec(plus, var.shape(), &Device::Cpu)?)?;
                    let up = loss(&model)?;
                    let mut minus = base.clone();
                    minus[idx] -= h;
                    var.set(&Tensor::from_vec(minus, var.shape(), &Device::Cpu)?)?;
                    let down = loss(&model)?;
                    var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu)?)?;
                    let numeric = (up - down) / (2.0 * h);
                    let err = (numeric - g[idx]).abs();
                    assert!(err <= 1e-6 + 1e-5 * numeric.abs(), "{name}[{idx}]: analytic {} numeric {numeric}", g[idx]);
                    checked += 1;
                }
            }
            assert!(checked > 60);
        }
        Ok(())
    }

    #[test]
    fn padding_and_batching_do_not_change_logprobs() -> Result<()> {
        let model = Model::new(&tiny_weights(5, true)?, &Trainable::default(), DType::F64, 1)?;
        let a: Vec<u32> = vec![1, 5, 9, 3, 7, 2, 11];
        let b: Vec<u32> = vec![4, 8, 15, 16];
        let together = model.token_logprobs(&Batch::new(&[(&a, 3), (&b, 2)], &Device::Cpu)?, false)?.to_vec1::<f64>()?;
        let alone_a = model.token_logprobs(&Batch::new(&[(&a, 3)], &Device::Cpu)?, false)?.to_vec1::<f64>()?;
        let alone_b = model.token_logprobs(&Batch::new(&[(&b, 2)], &Device::Cpu)?, false)?.to_vec1::<f64>()?;
        let alone: Vec<f64> = alone_a.into_iter().chain(alone_b).collect();
        assert_eq!(together.len(), alone.len());
        for (x, y) in together.iter().zip(&alone) {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
            assert!(*x < 0.0);
        }
        Ok(())
    }
}
