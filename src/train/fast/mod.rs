//! Hand-derived forward and backward passes of the Llama model, for training on CPU.
//!
//! candle's autograd is correct but slow on CPU for this job: every op allocates, most
//! elementwise kernels run on one thread, and each backward step adds into a zeroed
//! buffer. On the default model it trained DPO pairs at ~41 tokens/s with over a fifth
//! of the time spent faulting in fresh pages. This module computes the same gradients
//! with one GEMM call per matrix product (the `gemm` crate candle itself uses; strides
//! make every transpose free), fused RMSNorm / RoPE / SiLU / softmax kernels
//! parallelized over rows with rayon, and activations kept only as long as the backward
//! pass needs them. It covers full fine-tuning and frozen embeddings / bottom layers;
//! LoRA stays on the autograd model. `fast_matches_autograd` checks it against the
//! autograd model (itself checked against finite differences) to 1e-4.
//!
//! All matrices are row-major `Vec<f32>`; a batch is `b` right-padded sequences of
//! length `t`, so row `r` is position `r % t` of sequence `r / t`.

use std::sync::RwLockReadGuard;

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Storage, Tensor};
use rayon::prelude::*;

pub mod blas;
mod kernels;
use kernels::{attention, attention_back, dw_acc, dy_w, rms_norm, rms_norm_back, rope, sigmoid, x_wt};

use super::model::{Batch, Layer, Linear, Model, Param};
use crate::model::weights::{ATTN_NORM, DOWN, FFN_NORM, GATE, K, O, Q, UP, V};

/// A read-locked view of a weight's f32 values.
struct View<'a> {
    guard: RwLockReadGuard<'a, Storage>,
    start: usize,
    len: usize,
}

impl<'a> View<'a> {
    fn of(t: &'a Tensor) -> Result<Self> {
        if t.dtype() != DType::F32 || !t.device().is_cpu() || !t.is_contiguous() {
            bail!("the fast trainer needs contiguous f32 CPU weights");
        }
        let (guard, layout) = t.storage_and_layout();
        Ok(Self { start: layout.start_offset(), len: t.elem_count(), guard })
    }

    fn get(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            _ => unreachable!("checked in View::of"),
        }
    }
}

fn param_tensor(p: &Param) -> &Tensor {
    match p {
        Param::Frozen(t) => t,
        Param::Trained(v) => v.as_tensor(),
    }
}

/// A linear layer's weight; with `base_only` its adapter (if any) is left out, as in
/// the reference model.
fn linear_tensor(l: &Linear, base_only: bool) -> Result<&Tensor> {
    if l.lora.is_some() && !base_only {
        bail!("the fast trainer does not do LoRA");
    }
    Ok(param_tensor(&l.weight))
}

fn f32_cpu(model: &Model) -> bool {
    let t = param_tensor(&model.embed);
    t.dtype() == DType::F32 && t.device().is_cpu()
}

/// Whether `model` can be trained by this module.
pub fn supports(model: &Model) -> bool {
    f32_cpu(model) && model.layers.iter().all(|l| l.q.lora.is_none())
}

/// Whether this module can compute `model`'s reference (base, no-gradient) log-probs.
pub fn supports_reference(model: &Model) -> bool {
    f32_cpu(model)
}

// ---- the passes ------------------------------------------------------------------------

struct LayerCache {
    x_in: Vec<f32>,
    inv1: Vec<f32>,
    h1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention probabilities per (sequence, head): `[b·heads, t, t]`.
    p: Vec<f32>,
    attn: Vec<f32>,
    x_mid: Vec<f32>,
    inv2: Vec<f32>,
    h2: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    a: Vec<f32>,
}

/// What the backward pass needs from the forward pass.
pub struct Cache {
    layers: Vec<LayerCache>,
    /// Final-norm inputs, 1/rms and outputs of the scored rows, and their softmax.
    xs: Vec<f32>,
    inv: Vec<f32>,
    hn: Vec<f32>,
    probs: Vec<f32>,
    /// The rotary tables of the batch's positions.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

struct Weights<'a> {
    embed: View<'a>,
    layers: Vec<[View<'a>; 9]>,
    norm: View<'a>,
    head: Option<View<'a>>,
}

/// A layer's weights in [`LAYER_TENSORS`](crate::model::weights::LAYER_TENSORS) order; with
/// `base_only` LoRA adapters are left out, otherwise a layer with any is refused.
fn layer_tensors(l: &Layer, base_only: bool) -> Result<[&Tensor; 9]> {
    if !base_only && l.linears().iter().any(|(_, lin)| lin.lora.is_some()) {
        bail!("the fast trainer does not do LoRA");
    }
    Ok(l.weights().map(param_tensor))
}

fn layer_trained(l: &Layer) -> [bool; 9] {
    l.weights().map(|p| matches!(p, Param::Trained(_)))
}

impl<'a> Weights<'a> {
    fn of(model: &'a Model, base_only: bool) -> Result<Self> {
        let layers = model
            .layers
            .iter()
            .map(|l| -> Result<[View<'a>; 9]> {
                let views: Vec<View<'a>> = layer_tensors(l, base_only)?.into_iter().map(View::of).collect::<Result<_>>()?;
                Ok(views.try_into().unwrap_or_else(|_| unreachable!("nine weights")))
            })
            .collect::<Result<Vec<_>>>()?;
        let head = match &model.lm_head {
            Some(h) => Some(View::of(linear_tensor(h, base_only)?)?),
            None => None,
        };
        Ok(Self { embed: View::of(param_tensor(&model.embed))?, layers, norm: View::of(param_tensor(&model.norm))?, head })
    }

    fn output(&self) -> &[f32] {
        self.head.as_ref().unwrap_or(&self.embed).get()
    }
}

/// The rotary tables of positions `0..t` in f32, `[t, head_dim / 2]`.
fn rope_tables(model: &Model, t: usize) -> (Vec<f32>, Vec<f32>) {
    let (cos, sin) = model.config.rope_tables(t);
    (cos.iter().map(|&x| x as f32).collect(), sin.iter().map(|&x| x as f32).collect())
}

fn batch_ids(batch: &Batch) -> Result<(usize, usize, Vec<u32>, Vec<u32>, Vec<u32>)> {
    let (b, t) = batch.tokens.dims2()?;
    Ok((b, t, batch.tokens.flatten_all()?.to_vec1()?, batch.rows.to_vec1()?, batch.targets.to_vec1()?))
}

/// Log-probabilities of the scored tokens, and the cache for [`backward`] when `keep`.
/// Without `keep` LoRA adapters are left out: that is the reference (base) model.
pub fn forward(model: &Model, batch: &Batch, keep: bool) -> Result<(Vec<f32>, Option<Cache>)> {
    let c = &model.config;
    let w = Weights::of(model, !keep)?;
    let (b, t, tokens, rows, targets) = batch_ids(batch)?;
    let (h, heads, kv, hd, inter) = (c.hidden, c.heads, c.kv_heads, c.head_dim, c.intermediate);
    let kvd = kv * hd;
    let n_rows = b * t;
    let eps = c.rms_eps;
    let (cos, sin) = rope_tables(model, t);
    let embed = w.embed.get();
    let mut x = vec![0f32; n_rows * h];
    for (r, &tok) in tokens.iter().enumerate() {
        x[r * h..(r + 1) * h].copy_from_slice(&embed[tok as usize * h..(tok as usize + 1) * h]);
    }
    let mut caches = Vec::with_capacity(if keep { c.layers } else { 0 });
    for lw in &w.layers {
        let (h1, inv1) = rms_norm(&x, lw[ATTN_NORM].get(), eps);
        let mut q = x_wt(&h1, n_rows, h, lw[Q].get(), h);
        let mut k = x_wt(&h1, n_rows, h, lw[K].get(), kvd);
        let v = x_wt(&h1, n_rows, h, lw[V].get(), kvd);
        rope(&mut q, h, hd, t, &cos, &sin, 1.0);
        rope(&mut k, kvd, hd, t, &cos, &sin, 1.0);
        let (attn, p) = attention(&q, &k, &v, b, t, heads, kv, hd, keep);
        let o = x_wt(&attn, n_rows, h, lw[O].get(), h);
        let mut x_mid = x.clone();
        x_mid.par_iter_mut().zip(o.par_iter()).for_each(|(a, b)| *a += b);
        let (h2, inv2) = rms_norm(&x_mid, lw[FFN_NORM].get(), eps);
        let g = x_wt(&h2, n_rows, h, lw[GATE].get(), inter);
        let u = x_wt(&h2, n_rows, h, lw[UP].get(), inter);
        let a: Vec<f32> = g.par_iter().zip(u.par_iter()).map(|(&g, &u)| g * sigmoid(g) * u).collect();
        let d = x_wt(&a, n_rows, inter, lw[DOWN].get(), h);
        let mut x_out = x_mid.clone();
        x_out.par_iter_mut().zip(d.par_iter()).for_each(|(a, b)| *a += b);
        if keep {
            caches.push(LayerCache { x_in: std::mem::take(&mut x), inv1, h1, q, k, v, p, attn, x_mid, inv2, h2, g, u, a });
        }
        x = x_out;
    }
    let n = rows.len();
    let mut xs = vec![0f32; n * h];
    for (i, &r) in rows.iter().enumerate() {
        xs[i * h..(i + 1) * h].copy_from_slice(&x[r as usize * h..(r as usize + 1) * h]);
    }
    drop(x);
    let (hn, inv) = rms_norm(&xs, w.norm.get(), eps);
    let vocab = c.vocab;
    let mut logits = x_wt(&hn, n, h, w.output(), vocab);
    let mut logp = vec![0f32; n];
    logits.par_chunks_mut(vocab).zip(logp.par_iter_mut()).zip(targets.par_iter()).for_each(|((row, lp), &tgt)| {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        *lp = row[tgt as usize].ln() - sum.ln();
        if keep {
            for x in row.iter_mut() {
                *x /= sum;
            }
        }
    });
    let cache = keep.then(|| Cache { layers: caches, xs, inv, hn, probs: logits, cos, sin });
    Ok((logp, cache))
}

/// Gradient sums of the trained parameters; [`backward`] adds into them in place, so
/// the micro-batches of a step share one set of buffers.
pub struct Grads {
    embed: Option<Vec<f32>>,
    /// The output matrix when it is not the embedding matrix.
    head: Option<Vec<f32>>,
    norm: Option<Vec<f32>>,
    layers: Vec<[Option<Vec<f32>>; 9]>,
}

impl Grads {
    pub fn new(model: &Model) -> Self {
        let c = &model.config;
        let trained = |p: &Param| matches!(p, Param::Trained(_));
        let table = c.vocab * c.hidden;
        Self {
            embed: trained(&model.embed).then(|| vec![0f32; table]),
            head: model.lm_head.as_ref().filter(|l| trained(&l.weight)).map(|_| vec![0f32; table]),
            norm: trained(&model.norm).then(|| vec![0f32; c.hidden]),
            layers: model
                .layers
                .iter()
                .map(|l| {
                    let t = layer_trained(l);
                    std::array::from_fn(|i| t[i].then(|| vec![0f32; param_len(i, c)]))
                })
                .collect(),
        }
    }

    /// The sums as a gradient store keyed by the model's variables.
    pub fn into_store(self, model: &Model) -> Result<GradStore> {
        let mut grads = super::optim::empty_store()?;
        let mut put = |p: &Param, g: Option<Vec<f32>>| -> Result<()> {
            if let (Param::Trained(var), Some(g)) = (p, g) {
                grads.insert(var.as_tensor(), Tensor::from_vec(g, var.shape().clone(), &candle_core::Device::Cpu)?);
            }
            Ok(())
        };
        put(&model.embed, self.embed)?;
        if let Some(head) = &model.lm_head {
            put(&head.weight, self.head)?;
        }
        put(&model.norm, self.norm)?;
        for (layer, g) in model.layers.iter().zip(self.layers) {
            for (p, g) in layer.weights().into_iter().zip(g) {
                put(p, g)?;
            }
        }
        Ok(grads)
    }
}

/// Adds the gradients of `Σ dlogp[i] · logp[i]` (the forward pass's scored
/// log-probabilities) for every trained parameter of `model` into `grads`.
pub fn backward(model: &Model, batch: &Batch, cache: Cache, dlogp: &[f32], grads: &mut Grads) -> Result<()> {
    let c = &model.config;
    let w = Weights::of(model, false)?;
    let (b, t, tokens, rows, targets) = batch_ids(batch)?;
    let (h, heads, kv, hd, inter, vocab) = (c.hidden, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab);
    let (kvd, group) = (kv * hd, heads / kv);
    let n_rows = b * t;
    let n = rows.len();
    let scale = 1.0 / (hd as f32).sqrt();
    let Cache { layers: mut caches, xs, inv, hn, probs: mut dlogits, cos, sin } = cache;

    let embed_trained = matches!(model.embed, Param::Trained(_));

    // Output layer: d logits = dlogp · (onehot − softmax).
    dlogits.par_chunks_mut(vocab).zip(dlogp.par_iter()).zip(targets.par_iter()).for_each(|((row, &d), &tgt)| {
        for x in row.iter_mut() {
            *x *= -d;
        }
        row[tgt as usize] += d;
    });
    let mut dhn = vec![0f32; n * h];
    dy_w(&mut dhn, false, &dlogits, n, vocab, w.output(), h);
    let head_grad = if model.lm_head.is_some() { grads.head.as_mut() } else { grads.embed.as_mut() };
    if let Some(target) = head_grad {
        dw_acc(target, &dlogits, n, vocab, &hn, h);
    }
    drop(dlogits);
    let mut dxs = vec![0f32; n * h];
    rms_norm_back(&dhn, &xs, &inv, w.norm.get(), &mut dxs, grads.norm.as_deref_mut());
    let mut dx = vec![0f32; n_rows * h];
    for (i, &r) in rows.iter().enumerate() {
        let dst = &mut dx[r as usize * h..(r as usize + 1) * h];
        for (a, b) in dst.iter_mut().zip(&dxs[i * h..(i + 1) * h]) {
            *a += b;
        }
    }

    // The lowest layer whose input gradient anyone needs.
    let lowest =
        if embed_trained { 0 } else { model.layers.iter().position(|l| layer_trained(l).iter().any(|&x| x)).unwrap_or(model.layers.len()) };
    for li in (lowest..model.layers.len()).rev() {
        let lc = caches.pop().expect("one cache per layer");
        let lw = &w.layers[li];
        let g = &mut grads.layers[li];

        // MLP: x_out = x_mid + down(silu(gate) · up).
        let mut da = vec![0f32; n_rows * inter];
        dy_w(&mut da, false, &dx, n_rows, h, lw[DOWN].get(), inter);
        if let Some(gd) = g[DOWN].as_mut() {
            dw_acc(gd, &dx, n_rows, h, &lc.a, inter);
        }
        drop(lc.a);
        let mut dgate = vec![0f32; n_rows * inter];
        let mut dup = vec![0f32; n_rows * inter];
        dgate.par_iter_mut().zip(dup.par_iter_mut()).zip(da.par_iter()).zip(lc.g.par_iter().zip(lc.u.par_iter())).for_each(
            |(((dg, du), &da), (&g, &u))| {
                let s = sigmoid(g);
                *du = da * g * s;
                *dg = da * u * s * (1.0 + g * (1.0 - s));
            },
        );
        drop(da);
        let mut dh2 = vec![0f32; n_rows * h];
        dy_w(&mut dh2, false, &dgate, n_rows, inter, lw[GATE].get(), h);
        dy_w(&mut dh2, true, &dup, n_rows, inter, lw[UP].get(), h);
        if let Some(gg) = g[GATE].as_mut() {
            dw_acc(gg, &dgate, n_rows, inter, &lc.h2, h);
        }
        if let Some(gu) = g[UP].as_mut() {
            dw_acc(gu, &dup, n_rows, inter, &lc.h2, h);
        }
        drop((dgate, dup));
        // dx now also flows into x_mid through the norm.
        rms_norm_back(&dh2, &lc.x_mid, &lc.inv2, lw[FFN_NORM].get(), &mut dx, g[FFN_NORM].as_deref_mut());
        drop(dh2);

        // Attention: x_mid = x_in + o(attn).
        let mut dattn = vec![0f32; n_rows * h];
        dy_w(&mut dattn, false, &dx, n_rows, h, lw[O].get(), h);
        if let Some(go) = g[O].as_mut() {
            dw_acc(go, &dx, n_rows, h, &lc.attn, h);
        }
        let (mut dq, mut dk, dv) = attention_back(&dattn, &lc.q, &lc.k, &lc.v, &lc.p, b, t, heads, kv, hd, group, scale);
        drop(dattn);
        rope(&mut dq, h, hd, t, &cos, &sin, -1.0);
        rope(&mut dk, kvd, hd, t, &cos, &sin, -1.0);
        let mut dh1 = vec![0f32; n_rows * h];
        dy_w(&mut dh1, false, &dq, n_rows, h, lw[Q].get(), h);
        dy_w(&mut dh1, true, &dk, n_rows, kvd, lw[K].get(), h);
        dy_w(&mut dh1, true, &dv, n_rows, kvd, lw[V].get(), h);
        for (i, d) in [(Q, &dq), (K, &dk), (V, &dv)] {
            if let Some(gw) = g[i].as_mut() {
                dw_acc(gw, d, n_rows, if i == Q { h } else { kvd }, &lc.h1, h);
            }
        }
        if li > lowest || embed_trained {
            rms_norm_back(&dh1, &lc.x_in, &lc.inv1, lw[ATTN_NORM].get(), &mut dx, g[ATTN_NORM].as_deref_mut());
        } else if let Some(gn) = g[ATTN_NORM].as_deref_mut() {
            // The input gradient is not needed below here; only the weight's.
            let mut scratch = vec![0f32; n_rows * h];
            rms_norm_back(&dh1, &lc.x_in, &lc.inv1, lw[ATTN_NORM].get(), &mut scratch, Some(gn));
        }
    }
    if let Some(de) = grads.embed.as_mut() {
        for (r, &tok) in tokens.iter().enumerate() {
            let dst = &mut de[tok as usize * h..(tok as usize + 1) * h];
            for (a, b) in dst.iter_mut().zip(&dx[r * h..(r + 1) * h]) {
                *a += b;
            }
        }
    }
    Ok(())
}

fn param_len(i: usize, c: &crate::model::config::LlamaConfig) -> usize {
    let (h, kvd, inter) = (c.hidden, c.kv_dim(), c.intermediate);
    match i {
        ATTN_NORM | FFN_NORM => h,
        Q | O => h * h,
        K | V => kvd * h,
        _ => inter * h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::tiny_weights;
    use crate::train::model::Trainable;
    use candle_core::Device;

    fn batch() -> Batch {
        let a: Vec<u32> = vec![1, 5, 9, 3, 7, 2, 11, 40];
        let b: Vec<u32> = vec![4, 8, 15, 16, 23];
        Batch::new(&[(&a, 3), (&b, 1)], &Device::Cpu).unwrap()
    }

    #[test]
    fn fast_matches_autograd() -> Result<()> {
        for (tied, trainable) in [
            (true, Trainable::default()),
            (false, Trainable::default()),
            (true, Trainable { freeze_embeddings: true, freeze_layers: 1, lora: None }),
            (false, Trainable { freeze_embeddings: false, freeze_layers: 1, lora: None }),
        ] {
            let model = Model::new(&tiny_weights(13, tied)?, &trainable, DType::F32, 0)?;
            let batch = batch();
            let reference = model.token_logprobs(&batch, true)?;
            let (ours, cache) = forward(&model, &batch, true)?;
            let theirs = reference.to_vec1::<f32>()?;
            for (a, b) in ours.iter().zip(&theirs) {
                assert!((a - b).abs() < 1e-4, "log-prob {a} vs {b}");
            }
            // Any weighting of the token log-probs: compare the gradients.
            let weights: Vec<f32> = (0..ours.len()).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.3).collect();
            let wt = Tensor::from_vec(weights.clone(), weights.len(), &Device::Cpu)?;
            let expected = (reference * wt)?.sum_all()?.backward()?;
            let mut grads = Grads::new(&model);
            backward(&model, &batch, cache.unwrap(), &weights, &mut grads)?;
            let got = grads.into_store(&model)?;
            let vars = model.vars();
            assert!(!vars.is_empty());
            for (name, var) in vars {
                let e = expected.get(var.as_tensor()).unwrap().flatten_all()?.to_vec1::<f32>()?;
                let g = got.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no fast gradient")).flatten_all()?.to_vec1::<f32>()?;
                let scale = e.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
                for (i, (x, y)) in e.iter().zip(&g).enumerate() {
                    assert!((x - y).abs() <= 1e-4 * scale + 1e-6, "{name}[{i}] (tied={tied}, {trainable:?}): autograd {x} vs fast {y}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn reference_pass_of_a_lora_model_is_the_base_model() -> Result<()> {
        let lora = Trainable { lora: Some(crate::train::model::LoraConfig { rank: 2, alpha: 4.0 }), ..Default::default() };
        let model = Model::new(&tiny_weights(3, true)?, &lora, DType::F32, 0)?;
        for (name, v) in model.vars() {
            if name.ends_with(".1") {
                v.set(&(v.as_tensor().ones_like()? * 0.1)?)?; // adapters now change the output
            }
        }
        assert!(!supports(&model) && supports_reference(&model));
        let (fast, _) = forward(&model, &batch(), false)?;
        let reference = model.token_logprobs(&batch(), false)?.to_vec1::<f32>()?;
        let adapted = model.token_logprobs(&batch(), true)?.to_vec1::<f32>()?;
        for (a, b) in fast.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        assert!(fast.iter().zip(&adapted).any(|(a, c)| (a - c).abs() > 1e-3), "the adapters matter in training");
        assert!(forward(&model, &batch(), true).is_err());
        Ok(())
    }

    #[test]
    fn forward_without_cache_gives_the_same_log_probs() -> Result<()> {
        let model = Model::new(&tiny_weights(3, true)?, &Trainable::default(), DType::F32, 0)?;
        let (a, _) = forward(&model, &batch(), true)?;
        let (b, cache) = forward(&model, &batch(), false)?;
        assert!(cache.is_none());
        assert_eq!(a, b);
        Ok(())
    }
}
