//! Attention of one query row over its sequence's cached keys and values.
//!
//! The cache comes as runs (shared prefixes, then the sequence's own positions); the
//! query heads that share a key/value head are scored in one pass over its keys and
//! summed in one pass over its values. With AVX2, keys are scored eight positions at a
//! time (one horizontal reduction for eight dot products) and values are summed into
//! accumulators that stay in registers. Every position is computed by the same
//! operations in the same order whichever path takes it, so a row's result never
//! depends on how its cache is split into runs or what else is in the batch.

use crate::engine::math::exp_shifted;

/// Writes into `out` (`heads × hd`) the attention of query `q` over the first `len`
/// positions held in `runs` (keys, values; each `positions × kv_heads × hd`).
#[allow(clippy::too_many_arguments)]
pub fn attend(q: &[f32], runs: &[(&[f32], &[f32])], len: usize, heads: usize, kv_heads: usize, hd: usize, out: &mut [f32]) {
    let kv_dim = kv_heads * hd;
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0f32; group * len];
    for kvh in 0..kv_heads {
        let offset = kvh * hd;
        let qs = &q[kvh * group * hd..(kvh + 1) * group * hd];
        let mut j0 = 0;
        for (keys, _) in runs {
            score_run(qs, keys, kv_dim, offset, hd, &mut scores, len, j0, scale);
            j0 += keys.len() / kv_dim;
        }
        debug_assert_eq!(j0, len);
        for row in scores.chunks_exact_mut(len) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let total = exp_shifted(row, max);
            row.iter_mut().for_each(|s| *s /= total);
        }
        let outs = &mut out[kvh * group * hd..(kvh + 1) * group * hd];
        outs.iter_mut().for_each(|o| *o = 0.0);
        let mut j0 = 0;
        for (_, values) in runs {
            value_run(&scores, len, j0, values, kv_dim, offset, hd, outs);
            j0 += values.len() / kv_dim;
        }
    }
}

/// `scores[g·len + j0 + p] = scale · q_g · k_p` for every position `p` of one run.
#[allow(clippy::too_many_arguments)]
fn score_run(qs: &[f32], keys: &[f32], kv_dim: usize, offset: usize, hd: usize, scores: &mut [f32], len: usize, j0: usize, scale: f32) {
    let n = keys.len() / kv_dim;
    let mut p = 0;
    #[cfg(target_feature = "avx2")]
    if hd.is_multiple_of(8) {
        while p + 8 <= n {
            let block = &keys[p * kv_dim + offset..(p + 7) * kv_dim + offset + hd];
            for (g, qh) in qs.chunks_exact(hd).enumerate() {
                // SAFETY: AVX2 and FMA are enabled at compile time (cfg above); `block`
                // holds eight positions' `hd` values `kv_dim` apart and `qh` is `hd` long.
                let s = unsafe { simd::dot8(qh, block, kv_dim) };
                for (i, v) in s.into_iter().enumerate() {
                    scores[g * len + j0 + p + i] = v * scale;
                }
            }
            p += 8;
        }
    }
    for p in p..n {
        let k = &keys[p * kv_dim + offset..p * kv_dim + offset + hd];
        for (g, qh) in qs.chunks_exact(hd).enumerate() {
            scores[g * len + j0 + p] = dot(qh, k) * scale;
        }
    }
}

/// `outs_g += Σ_p scores[g·len + j0 + p] · v_p` over the positions of one run.
#[allow(clippy::too_many_arguments)]
fn value_run(scores: &[f32], len: usize, j0: usize, values: &[f32], kv_dim: usize, offset: usize, hd: usize, outs: &mut [f32]) {
    let n = values.len() / kv_dim;
    if n == 0 {
        return;
    }
    let weights = |g: usize| &scores[g * len + j0..g * len + j0 + n];
    let values = &values[offset..(n - 1) * kv_dim + offset + hd];
    #[cfg(target_feature = "avx2")]
    if hd.is_multiple_of(16) {
        // SAFETY: AVX2 and FMA are enabled at compile time (cfg above); each weight
        // slice has `n` values, `values` holds `n` positions `kv_dim` apart and `outs`
        // `G × hd` values.
        unsafe {
            match outs.len() / hd {
                1 => return simd::values([weights(0)], values, kv_dim, hd, outs),
                2 => return simd::values([weights(0), weights(1)], values, kv_dim, hd, outs),
                3 => return simd::values([weights(0), weights(1), weights(2)], values, kv_dim, hd, outs),
                4 => return simd::values([weights(0), weights(1), weights(2), weights(3)], values, kv_dim, hd, outs),
                _ => {}
            }
        }
    }
    for p in 0..n {
        let v = &values[p * kv_dim..p * kv_dim + hd];
        for (g, oh) in outs.chunks_exact_mut(hd).enumerate() {
            let w = weights(g)[p];
            oh.iter_mut().zip(v).for_each(|(o, x)| *o = w.mul_add(*x, *o));
        }
    }
}

/// A dot product in eight lanes of fused multiply-adds, summed as a tree: the same
/// operations, in the same order, as one column of [`simd::dot8`].
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut l = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            l[i] = ca[i].mul_add(cb[i], l[i]);
        }
    }
    let tail: f32 = a.chunks_exact(8).remainder().iter().zip(b.chunks_exact(8).remainder()).map(|(x, y)| x * y).sum();
    (((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))) + tail
}

#[cfg(target_feature = "avx2")]
mod simd {
    use std::arch::x86_64::*;

    /// `q · k_p` for eight positions `p`, the keys `stride` apart in `keys`.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `q.len()` is a multiple of 8 and `keys` holds
    /// `7 · stride + q.len()` values.
    pub unsafe fn dot8(q: &[f32], keys: &[f32], stride: usize) -> [f32; 8] {
        debug_assert!(q.len().is_multiple_of(8) && keys.len() >= 7 * stride + q.len());
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in (0..q.len()).step_by(8) {
            let qv = _mm256_loadu_ps(q.as_ptr().add(c));
            for (p, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys.as_ptr().add(p * stride + c)), *acc);
            }
        }
        // Lane sums of all eight accumulators at once: ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)).
        let s01 = _mm256_hadd_ps(acc[0], acc[1]);
        let s23 = _mm256_hadd_ps(acc[2], acc[3]);
        let s45 = _mm256_hadd_ps(acc[4], acc[5]);
        let s67 = _mm256_hadd_ps(acc[6], acc[7]);
        let s0123 = _mm256_hadd_ps(s01, s23);
        let s4567 = _mm256_hadd_ps(s45, s67);
        let lo = _mm256_permute2f128_ps(s0123, s4567, 0x20);
        let hi = _mm256_permute2f128_ps(s0123, s4567, 0x31);
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(lo, hi));
        out
    }

    /// `outs_g += Σ_p weights_g[p] · v_p` for `G` heads sharing the values, sixteen
    /// values of every head at a time in registers.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `hd` is a multiple of 16, `outs` holds `G · hd`
    /// values, `values` holds `n` positions `stride` apart (`n` = each weight slice's
    /// length).
    pub unsafe fn values<const G: usize>(weights: [&[f32]; G], values: &[f32], stride: usize, hd: usize, outs: &mut [f32]) {
        let n = weights[0].len();
        debug_assert!(hd.is_multiple_of(16) && outs.len() == G * hd && values.len() >= (n - 1) * stride + hd);
        debug_assert!(weights.iter().all(|w| w.len() == n));
        for c in (0..hd).step_by(16) {
            let mut acc = [[_mm256_setzero_ps(); 2]; G];
            for (g, acc) in acc.iter_mut().enumerate() {
                acc[0] = _mm256_loadu_ps(outs.as_ptr().add(g * hd + c));
                acc[1] = _mm256_loadu_ps(outs.as_ptr().add(g * hd + c + 8));
            }
            for p in 0..n {
                let v = values.as_ptr().add(p * stride + c);
                let (v0, v1) = (_mm256_loadu_ps(v), _mm256_loadu_ps(v.add(8)));
                for (acc, w) in acc.iter_mut().zip(&weights) {
                    let w = _mm256_broadcast_ss(&*w.as_ptr().add(p));
                    acc[0] = _mm256_fmadd_ps(w, v0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(w, v1, acc[1]);
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(outs.as_mut_ptr().add(g * hd + c), acc[0]);
                _mm256_storeu_ps(outs.as_mut_ptr().add(g * hd + c + 8), acc[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 2000) as f32 / 1000.0 - 1.0).collect()
    }

    /// Attention written out plainly, in f64.
    fn reference(q: &[f32], k: &[f32], v: &[f32], len: usize, heads: usize, kv_heads: usize, hd: usize) -> Vec<f32> {
        let kv_dim = kv_heads * hd;
        let mut out = vec![0f32; heads * hd];
        for h in 0..heads {
            let kvh = h / (heads / kv_heads);
            let s: Vec<f64> = (0..len)
                .map(|j| (0..hd).map(|d| q[h * hd + d] as f64 * k[j * kv_dim + kvh * hd + d] as f64).sum::<f64>() / (hd as f64).sqrt())
                .collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let total: f64 = e.iter().sum();
            for d in 0..hd {
                out[h * hd + d] = ((0..len).map(|j| e[j] * v[j * kv_dim + kvh * hd + d] as f64).sum::<f64>() / total) as f32;
            }
        }
        out
    }

    #[test]
    fn matches_plain_attention_and_does_not_depend_on_how_the_cache_is_split() {
        for (heads, kv_heads, hd, group_note) in
            [(9, 3, 64, "3 per kv head"), (4, 4, 16, "1"), (8, 2, 8, "4, hd 8"), (6, 1, 32, "6: portable values")]
        {
            let kv_dim = kv_heads * hd;
            let len = 37;
            let (q, k, v) = (data(heads * hd, 1), data(len * kv_dim, 2), data(len * kv_dim, 3));
            let want = reference(&q, &k, &v, len, heads, kv_heads, hd);
            let mut whole = vec![0f32; heads * hd];
            attend(&q, &[(&k, &v)], len, heads, kv_heads, hd, &mut whole);
            for (a, b) in whole.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{group_note}: {a} vs {b}");
            }
            for cuts in [vec![3, 20], vec![8, 16, 17], vec![1, 2, 3, 4, 5, 36]] {
                let mut runs = Vec::new();
                let mut start = 0;
                for end in cuts.iter().copied().chain([len]) {
                    runs.push((&k[start * kv_dim..end * kv_dim], &v[start * kv_dim..end * kv_dim]));
                    start = end;
                }
                let mut split = vec![0f32; heads * hd];
                attend(&q, &runs, len, heads, kv_heads, hd, &mut split);
                assert_eq!(split, whole, "{group_note}, runs cut at {cuts:?}: bit for bit");
            }
        }
    }
}
