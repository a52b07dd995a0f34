//! The Llama forward pass for serving: one step over a ragged batch of rows.
//!
//! A row is one token of one sequence at its position. A step mixes prefill chunks and
//! decode tokens of many sequences; the linear layers see all rows as one matrix (Q8_0,
//! weights read once per step), attention runs per row against its own sequence's KV
//! cache. Nothing a row computes depends on the other rows in the step.

use std::sync::Arc;

use anyhow::Result;
use rayon::prelude::*;

use super::attention::attend;
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

/// Keys and values of a run of positions, one vector per layer.
struct Run {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Run {
    fn new(layers: usize) -> Self {
        Self { k: vec![Vec::new(); layers], v: vec![Vec::new(); layers] }
    }

    fn len(&self, kv_dim: usize) -> usize {
        self.k.first().map_or(0, |k| k.len() / kv_dim)
    }
}

/// The keys and values one sequence has accumulated: runs shared with other sequences
/// (frozen; each used up to a length), then the positions only this sequence holds.
/// Sequences that continue one prompt (the `n` choices of a request, the K samples of a
/// judge prompt, every judge prompt's rubric) read one copy of that prompt's keys and
/// values instead of one copy each.
pub struct KvCache {
    shared: Vec<(Arc<Run>, usize)>,
    shared_len: usize,
    own: Run,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self { shared: Vec::new(), shared_len: 0, own: Run::new(layers) }
    }

    /// Positions stored.
    pub fn len(&self, kv_dim: usize) -> usize {
        self.shared_len + self.own.len(kv_dim)
    }

    /// A cache for another sequence that starts with this one's first `positions`
    /// positions, shared rather than copied: what this sequence holds alone is frozen
    /// into a shared run first (it keeps appending to a new run of its own).
    pub fn share(&mut self, positions: usize, kv_dim: usize) -> Self {
        let layers = self.own.k.len();
        if positions > self.shared_len {
            let own = std::mem::replace(&mut self.own, Run::new(layers));
            let len = own.len(kv_dim);
            self.shared.push((Arc::new(own), len));
            self.shared_len += len;
        }
        let positions = positions.min(self.shared_len);
        let mut shared = Vec::new();
        let mut left = positions;
        for (run, len) in &self.shared {
            if left == 0 {
                break;
            }
            let take = (*len).min(left);
            shared.push((run.clone(), take));
            left -= take;
        }
        Self { shared, shared_len: positions, own: Run::new(layers) }
    }

    fn push(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        self.own.k[layer].extend_from_slice(k);
        self.own.v[layer].extend_from_slice(v);
    }

    /// Layer `layer`'s keys and values of the first `len` positions, as runs in order.
    fn runs(&self, layer: usize, len: usize, kv_dim: usize) -> Vec<(&[f32], &[f32])> {
        let mut out = Vec::with_capacity(self.shared.len() + 1);
        let mut left = len;
        let own = (&self.own.k[layer][..], &self.own.v[layer][..]);
        for (k, v) in self.shared.iter().map(|(run, n)| (&run.k[layer][..n * kv_dim], &run.v[layer][..n * kv_dim])).chain([own]) {
            let take = (k.len() / kv_dim).min(left);
            if take > 0 {
                out.push((&k[..take * kv_dim], &v[..take * kv_dim]));
            }
            left -= take;
        }
        out
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
        Ok(Self { embed: flat(&w.embed)?, norm: flat(&w.norm)?, lm_head: linear(&w.lm_head)?, layers, cos, sin, config })
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
                debug_assert_eq!(cache.shared_len + cache.own.k[li].len() / kv_dim, r.pos, "rows follow the cache");
                cache.push(li, &k[i * kv_dim..(i + 1) * kv_dim], &v[i * kv_dim..(i + 1) * kv_dim]);
            }
            let mut attn = vec![0f32; n * d];
            let caches_ro: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
            attn.par_chunks_mut(d).enumerate().for_each(|(i, out)| {
                let r = rows[i];
                let cache = caches_ro[r.seq];
                let runs = cache.runs(li, r.pos + 1, kv_dim);
                attend(&q[i * d..(i + 1) * d], &runs, r.pos + 1, c.heads, c.kv_heads, hd, out);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> NativeModel {
        NativeModel::new(&crate::train::model::tests::tiny_weights(7, false).unwrap()).unwrap()
    }

    /// Feeds `tokens` one step at a time after what `cache` holds; the last logits.
    fn feed(m: &NativeModel, cache: &mut KvCache, tokens: &[u32]) -> Vec<f32> {
        let start = cache.len(m.config.kv_dim());
        let rows: Vec<Row> = tokens.iter().enumerate().map(|(j, &token)| Row { seq: 0, token, pos: start + j }).collect();
        m.step(&rows, &mut [cache], &[rows.len() - 1]).remove(0)
    }

    #[test]
    fn a_shared_prefix_gives_the_same_logits_as_computing_it_again() {
        let m = model();
        let kv_dim = m.config.kv_dim();
        let prompt: Vec<u32> = (0..20).map(|i| (i * 7 % 48) as u32).collect();
        let mut solo = KvCache::new(m.config.layers);
        let expected = feed(&m, &mut solo, &prompt);

        // A donor that has the first 12 tokens and went its own way after them.
        let mut donor = KvCache::new(m.config.layers);
        feed(&m, &mut donor, &prompt[..8]);
        feed(&m, &mut donor, &prompt[8..12]);
        let donor_next = feed(&m, &mut donor, &[3, 4, 5]);
        let mut borrower = donor.share(12, kv_dim);
        assert_eq!(borrower.len(kv_dim), 12);
        assert_eq!(feed(&m, &mut borrower, &prompt[12..]), expected, "bit for bit");

        // The donor keeps appending after its positions were frozen, and a third
        // sequence shares a prefix that spans two of the donor's runs.
        let after = feed(&m, &mut donor, &[6]);
        let mut again = KvCache::new(m.config.layers);
        feed(&m, &mut again, &prompt[..12]);
        feed(&m, &mut again, &[3, 4, 5]);
        assert_eq!(feed(&m, &mut again, &[6]), after);
        let mut third = donor.share(15, kv_dim);
        assert_eq!(feed(&m, &mut third, &[6]), after);
        assert_eq!(donor.len(kv_dim), 16);
        assert!(!donor_next.is_empty());
    }
}
