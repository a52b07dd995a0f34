//! The Llama forward pass for serving: one step over a ragged batch of rows.
//!
//! A row is one token of one sequence at its position. A step mixes prefill chunks and
//! decode tokens of many sequences; the linear layers see all rows as one matrix (4-bit
//! as the file stores them, or Q8_0; weights read once per step), attention runs per row
//! against its own sequence's KV cache. Nothing a row computes depends on the other rows
//! in the step.

use std::sync::Arc;

use anyhow::Result;
use rayon::prelude::*;

use super::attention::attend;
use super::q4::Q4Linear;
use super::q8::{Q8Linear, Q8Rows};
use crate::model::config::LlamaConfig;
use crate::model::weights::{self, rope_heads, LlamaWeights, LAYER_TENSORS};

/// A weight matrix as served: 4-bit blocks as the file stores them, or Q8_0.
enum Linear {
    Q4(Q4Linear),
    Q8(Q8Linear),
}

impl Linear {
    fn forward(&self, x: &Q8Rows) -> Vec<f32> {
        match self {
            Self::Q4(l) => l.forward(x),
            Self::Q8(l) => l.forward(x),
        }
    }

    /// The type served, as GGUF names it in lowercase (`q4_1`, `q8_0`).
    fn kind(&self) -> String {
        match self {
            Self::Q4(l) => format!("{:?}", l.dtype).to_lowercase(),
            Self::Q8(_) => "q8_0".into(),
        }
    }
}

/// The matrices that read the same input are stacked into one (q|k|v, gate|up): one
/// parallel pass instead of three or two, and more rows to share between the threads.
struct Layer {
    attn_norm: Vec<f32>,
    /// `[q; k; v]`: `hidden + 2 kv_dim` rows.
    qkv: Linear,
    o: Linear,
    ffn_norm: Vec<f32>,
    /// `[gate; up]`: `2 intermediate` rows.
    gate_up: Linear,
    down: Linear,
}

pub struct NativeModel {
    pub config: LlamaConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Linear,
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

/// Matrices with the same row length stacked (their rows in order) as Q8_0.
fn linear(ts: &[&candle_core::Tensor]) -> Result<Linear> {
    let (mut rows, mut values, k) = (0, Vec::new(), ts[0].dims2()?.1);
    for t in ts {
        rows += t.dims2()?.0;
        values.extend(flat(t)?);
    }
    Ok(Linear::Q8(Q8Linear::new(&values, rows, k)))
}

/// The file's own 4-bit blocks of GGUF tensor `name` where it holds Q4_0 or Q4_1, rows
/// in HF's order (`heads`: q and k, stored permuted for interleaved RoPE); else `None`.
fn four_bit(w: &LlamaWeights, name: &str, heads: Option<usize>) -> Result<Option<Linear>> {
    let Some(q) = w.quantized.get(name) else { return Ok(None) };
    let dtype = q.dtype();
    if !matches!(dtype, candle_core::quantized::GgmlDType::Q4_0 | candle_core::quantized::GgmlDType::Q4_1) {
        return Ok(None);
    }
    let (out, k) = q.shape().dims2()?;
    let order = heads.map(|heads| hf_row_order(out, heads));
    Ok(Some(Linear::Q4(Q4Linear::from_gguf(dtype, &q.data()?, out, k, order.as_deref())?)))
}

/// For q/k in GGUF's interleaved-RoPE layout: HF row `i` is GGUF row `order[i]` (within a
/// head, HF's first half holds the even GGUF rows and its second half the odd ones).
fn hf_row_order(out: usize, heads: usize) -> Vec<usize> {
    let hd = out / heads;
    let mut order = Vec::with_capacity(out);
    for h in 0..heads {
        for a in 0..2 {
            order.extend((0..hd / 2).map(|i| h * hd + 2 * i + a));
        }
    }
    order
}

impl NativeModel {
    /// `four_bit_weights`: serve Q4_0/Q4_1 matrices of a GGUF file as stored (4-bit
    /// kernels); otherwise every matrix is re-encoded as Q8_0.
    pub fn new(w: &LlamaWeights, four_bit_weights: bool) -> Result<Self> {
        let config = w.config.clone();
        let layers = w
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let ts = l.tensors();
                // Tensors `js` stacked: as the file's 4-bit blocks when every one of them is
                // Q4_0/Q4_1 of one type, else re-encoded as Q8_0.
                let lin = |js: &[usize]| -> Result<Linear> {
                    if four_bit_weights {
                        let mut parts = Vec::new();
                        for &j in js {
                            match four_bit(w, &format!("blk.{i}.{}.weight", LAYER_TENSORS[j].0), rope_heads(j, &config))? {
                                Some(Linear::Q4(l)) => parts.push(l),
                                _ => break,
                            }
                        }
                        if parts.len() == js.len() {
                            if let Some(stacked) = Q4Linear::stack(parts) {
                                return Ok(Linear::Q4(stacked));
                            }
                        }
                    }
                    linear(&js.iter().map(|&j| ts[j]).collect::<Vec<_>>())
                };
                Ok(Layer {
                    attn_norm: flat(&l.attn_norm)?,
                    qkv: lin(&[weights::Q, weights::K, weights::V])?,
                    o: lin(&[weights::O])?,
                    ffn_norm: flat(&l.ffn_norm)?,
                    gate_up: lin(&[weights::GATE, weights::UP])?,
                    down: lin(&[weights::DOWN])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = match (four_bit_weights, w.quantized.contains_key("output.weight")) {
            (true, true) => four_bit(w, "output.weight", None)?,
            (true, false) => four_bit(w, "token_embd.weight", None)?,
            _ => None,
        };
        let lm_head = match lm_head {
            Some(l) => l,
            None => linear(&[&w.lm_head])?,
        };
        let (cos, sin) = config.rope_tables(config.max_positions);
        let (cos, sin) = (cos.iter().map(|&x| x as f32).collect(), sin.iter().map(|&x| x as f32).collect());
        Ok(Self { embed: flat(&w.embed)?, norm: flat(&w.norm)?, lm_head, layers, cos, sin, config })
    }

    /// The weight types served, most (stacked) matrices first (`q4_1, q8_0`).
    pub fn weights(&self) -> String {
        let mut counts: Vec<(String, usize)> = Vec::new();
        let all = self.layers.iter().flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down]).chain([&self.lm_head]);
        for kind in all.map(Linear::kind) {
            match counts.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((kind, 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1));
        counts.into_iter().map(|(k, _)| k).collect::<Vec<_>>().join(", ")
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
            let qkv = layer.qkv.forward(&h);
            let (mut q, mut k, mut v) = (Vec::with_capacity(n * d), Vec::with_capacity(n * kv_dim), Vec::with_capacity(n * kv_dim));
            for row in qkv.chunks(d + 2 * kv_dim) {
                q.extend_from_slice(&row[..d]);
                k.extend_from_slice(&row[d..d + kv_dim]);
                v.extend_from_slice(&row[d + kv_dim..]);
            }
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
            let gate_up = layer.gate_up.forward(&h);
            let act: Vec<f32> = gate_up
                .chunks(2 * c.intermediate)
                .flat_map(|row| {
                    let (gate, up) = row.split_at(c.intermediate);
                    gate.iter().zip(up).map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                })
                .collect();
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
        NativeModel::new(&crate::model::weights::tiny_weights(7, false).unwrap(), true).unwrap()
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

    #[test]
    fn hf_rows_are_found_where_gguf_permuted_them() {
        let (out, heads) = (24, 3);
        let hf = candle_core::Tensor::arange(0f32, out as f32, &candle_core::Device::Cpu).unwrap().reshape((out, 1)).unwrap();
        let gguf: Vec<f32> = weights::permute(&hf, heads).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let order = hf_row_order(out, heads);
        for (i, &row) in order.iter().enumerate() {
            assert_eq!(gguf[row], i as f32, "HF row {i}");
        }
    }
}
