//! The Llama forward pass for serving: one step over a ragged batch of rows.
//!
//! A row is one token of one sequence at its position. A step mixes prefill chunks and
//! decode tokens of many sequences; the linear layers see all rows as one matrix (Q8_0,
//! weights read once per step), attention runs per row against its own sequence's KV
//! cache. Nothing a row computes depends on the other rows in the step.

use anyhow::Result;
use rayon::prelude::*;

use super::q8::{Q8Linear, Q8Rows};
use crate::train::config::LlamaConfig;
use crate::train::weights::LlamaWeights;

struct Layer {
    attn_norm: Vec<f32>,
    q: Q8Linear,
    k: Q8Linear,
    v: Q8Linear,
    o: Q8Linear,
    ffn_norm: Vec<f32>,
    gate: Q8Linear,
    up: Q8Linear,
    down: Q8Linear,
}

pub struct NativeModel {
    pub config: LlamaConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Q8Linear,
    /// cos/sin of position × frequency, `[max_positions, head_dim / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// The keys and values one sequence has accumulated, per layer.
#[derive(Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self { k: vec![Vec::new(); layers], v: vec![Vec::new(); layers] }
    }

    /// Positions stored.
    pub fn len(&self, kv_dim: usize) -> usize {
        self.k.first().map_or(0, |k| k.len() / kv_dim)
    }

    /// A new cache holding this one's first `positions` positions.
    pub fn prefix(&self, positions: usize, kv_dim: usize) -> Self {
        let take = |layers: &Vec<Vec<f32>>| layers.iter().map(|l| l[..positions * kv_dim].to_vec()).collect();
        Self { k: take(&self.k), v: take(&self.v) }
    }
}

/// One token of one sequence in a step.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Index of the sequence's cache in the step's cache list.
    pub seq: usize,
    pub token: u32,
    pub pos: usize,
}

fn flat(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn linear(t: &candle_core::Tensor) -> Result<Q8Linear> {
    let (out, k) = t.dims2()?;
    Ok(Q8Linear::new(&flat(t)?, out, k))
}

impl NativeModel {
    pub fn new(w: &LlamaWeights) -> Result<Self> {
        let config = w.config.clone();
        let layers = w
            .layers
            .iter()
            .map(|l| {
                Ok(Layer {
                    attn_norm: flat(&l.attn_norm)?,
                    q: linear(&l.q)?,
                    k: linear(&l.k)?,
                    v: linear(&l.v)?,
                    o: linear(&l.o)?,
                    ffn_norm: flat(&l.ffn_norm)?,
                    gate: linear(&l.gate)?,
                    up: linear(&l.up)?,
                    down: linear(&l.down)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (cos, sin) = config.rope_tables(config.max_positions);
        let (cos, sin) = (cos.iter().map(|&x| x as f32).collect(), sin.iter().map(|&x| x as f32).collect());
        Ok(Self {
            embed: flat(&w.embed)?,
            norm: flat(&w.norm)?,
            lm_head: linear(&w.lm_head)?,
            layers,
            cos,
            sin,
            config,
        })
    }

    /// Runs one step. Rows of a sequence must be consecutive positions following what
    /// its cache holds. Returns the logits of the rows listed in `wanted`, in order.
    pub fn step(&self, rows: &[Row], caches: &mut [&mut KvCache], wanted: &[usize]) -> Vec<Vec<f32>> {
        let c = &self.config;
        let (d, kv_dim, hd) = (c.hidden, c.kv_dim(), c.head_dim);
        let n = rows.len();
        let mut x = Vec::with_capacity(n * d);
        for r in rows {
            x.extend_from_slice(&self.embed[r.token as usize * d..(r.token as usize + 1) * d]);
        }
        for (li, layer) in self.layers.iter().enumerate() {
            let h = Q8Rows::quantize(&rms_norm(&x, &layer.attn_norm, c.rms_eps), d);
            let mut q = layer.q.forward(&h);
            let mut k = layer.k.forward(&h);
            let v = layer.v.forward(&h);
            for (i, r) in rows.iter().enumerate() {
                self.rope(&mut q[i * d..(i + 1) * d], r.pos);
                self.rope(&mut k[i * kv_dim..(i + 1) * kv_dim], r.pos);
            }
            for (i, r) in rows.iter().enumerate() {
                let cache = &mut caches[r.seq];
                debug_assert_eq!(cache.k[li].len(), r.pos * kv_dim, "rows follow the cache");
                cache.k[li].extend_from_slice(&k[i * kv_dim..(i + 1) * kv_dim]);
                cache.v[li].extend_from_slice(&v[i * kv_dim..(i + 1) * kv_dim]);
            }
            let mut attn = vec![0f32; n * d];
            let caches_ro: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
            attn.par_chunks_mut(d).enumerate().for_each(|(i, out)| {
                let r = rows[i];
                let cache = caches_ro[r.seq];
                attend(&q[i * d..(i + 1) * d], &cache.k[li], &cache.v[li], r.pos + 1, c.heads, c.kv_heads, hd, out);
            });
            let o = layer.o.forward(&Q8Rows::quantize(&attn, d));
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);

            let h = Q8Rows::quantize(&rms_norm(&x, &layer.ffn_norm, c.rms_eps), d);
            let gate = layer.gate.forward(&h);
            let up = layer.up.forward(&h);
            let act: Vec<f32> = gate.iter().zip(&up).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            let down = layer.down.forward(&Q8Rows::quantize(&act, c.intermediate));
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
        if wanted.is_empty() {
            return Vec::new();
        }
        let mut last = Vec::with_capacity(wanted.len() * d);
        for &i in wanted {
            last.extend_from_slice(&x[i * d..(i + 1) * d]);
        }
        let h = Q8Rows::quantize(&rms_norm(&last, &self.norm, c.rms_eps), d);
        let logits = self.lm_head.forward(&h);
        logits.chunks(c.vocab).map(<[f32]>::to_vec).collect()
    }

    /// Half-split rotary embedding (HF layout), every head of one row.
    fn rope(&self, x: &mut [f32], pos: usize) {
        let hd = self.config.head_dim;
        let half = hd / 2;
        let (cos, sin) = (&self.cos[pos * half..(pos + 1) * half], &self.sin[pos * half..(pos + 1) * half]);
        for head in x.chunks_mut(hd) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x0, x1) = (a[i], b[i]);
                a[i] = x0 * cos[i] - x1 * sin[i];
                b[i] = x1 * cos[i] + x0 * sin[i];
            }
        }
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(o, row)| {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        for ((o, v), w) in o.iter_mut().zip(row).zip(w) {
            *o = v * scale * w;
        }
    });
    out
}

/// Causal attention of one query row over the first `len` cached positions. The query
/// heads that share a key/value head are scored in one pass over the cache.
#[allow(clippy::too_many_arguments)]
fn attend(q: &[f32], k: &[f32], v: &[f32], len: usize, heads: usize, kv_heads: usize, hd: usize, out: &mut [f32]) {
    let kv_dim = kv_heads * hd;
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0f32; group * len];
    for kvh in 0..kv_heads {
        let heads_q = &q[kvh * group * hd..(kvh + 1) * group * hd];
        for j in 0..len {
            let kj = &k[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
            for (g, qh) in heads_q.chunks_exact(hd).enumerate() {
                scores[g * len + j] = dot(qh, kj) * scale;
            }
        }
        for (g, row) in scores.chunks_exact_mut(len).enumerate() {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0f32;
            for s in row.iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            let h = kvh * group + g;
            let oh = &mut out[h * hd..(h + 1) * hd];
            oh.iter_mut().for_each(|o| *o = 0.0);
            for (j, s) in row.iter().enumerate() {
                let w = s / total;
                let vj = &v[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
                oh.iter_mut().zip(vj).for_each(|(o, x)| *o += w * x);
            }
        }
    }
}

/// A dot product in eight independent lanes, so the compiler can use SIMD (a plain
/// iterator sum must keep its order and stays scalar).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += ca[i] * cb[i];
        }
    }
    let tail: f32 = a.chunks_exact(8).remainder().iter().zip(b.chunks_exact(8).remainder()).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}
