//! Q8_0-style matrix multiplication that batches and is deterministic per row.
//!
//! Weights and activations are quantized in blocks of 32 values to `i8` with an `f32`
//! scale per block. Each thread takes a run of weight rows and multiplies every one of
//! them with all activation rows while it is in cache (candle's quantized matmul loops
//! over activation rows outermost and streams the weights once per row), up to four
//! activation rows per weight load. Every output element is computed by the same
//! sequence of operations whatever the batch holds — so a sequence gets bit-identical
//! logits alone or batched.

use rayon::prelude::*;

pub(super) const BLOCK: usize = 32;

/// Rows of `k` values as `i8` blocks with one `f32` scale per block (and each block's
/// sum as quantized, which 4-bit weights with an offset need).
pub struct Q8Rows {
    q: Vec<i8>,
    d: Vec<f32>,
    sums: Vec<f32>,
    pub rows: usize,
    pub k: usize,
}

impl Q8Rows {
    pub fn quantize(x: &[f32], k: usize) -> Self {
        assert_eq!(k % BLOCK, 0, "row length {k} is not a multiple of {BLOCK}");
        let rows = x.len() / k;
        let mut q = vec![0i8; x.len()];
        let mut d = vec![0f32; x.len() / BLOCK];
        let mut sums = vec![0f32; x.len() / BLOCK];
        let block = |((q, (d, sum)), x): ((&mut [i8], (&mut f32, &mut f32)), &[f32])| {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            *d = amax / 127.0;
            let inv = if amax == 0.0 { 0.0 } else { 127.0 / amax };
            for (q, v) in q.iter_mut().zip(x) {
                *q = (v * inv).round() as i8;
            }
            // The sum of the quantized values, not of x: a weight's offset then meets the
            // same rounding as its other part, and the errors stay those of the weight.
            *sum = *d * q.iter().map(|&q| q as i32).sum::<i32>() as f32;
        };
        // A few rows are quicker alone than handed to other threads.
        if x.len() < 16 * 1024 {
            q.chunks_mut(BLOCK).zip(d.iter_mut().zip(sums.iter_mut())).zip(x.chunks(BLOCK)).for_each(block);
        } else {
            q.par_chunks_mut(BLOCK).zip(d.par_iter_mut().zip(sums.par_iter_mut())).zip(x.par_chunks(BLOCK)).for_each(block);
        }
        Self { q, d, sums, rows, k }
    }

    fn row(&self, r: usize) -> (&[i8], &[f32]) {
        let nb = self.k / BLOCK;
        (&self.q[r * self.k..(r + 1) * self.k], &self.d[r * nb..(r + 1) * nb])
    }

    /// Row `r` with its block sums.
    pub(super) fn row_with_sums(&self, r: usize) -> (&[i8], &[f32], &[f32]) {
        let nb = self.k / BLOCK;
        let (q, d) = self.row(r);
        (q, d, &self.sums[r * nb..(r + 1) * nb])
    }
}

pub struct Q8Linear {
    w: Q8Rows,
    pub out: usize,
    pub k: usize,
}

impl Q8Linear {
    /// `w` is `[out, k]`, row-major.
    pub fn new(w: &[f32], out: usize, k: usize) -> Self {
        assert_eq!(w.len(), out * k);
        // Block sums serve activations against 4-bit weights; a weight matrix keeps none.
        let w = Q8Rows { sums: Vec::new(), ..Q8Rows::quantize(w, k) };
        Self { w, out, k }
    }

    /// `x · wᵀ`: `[rows, out]`, row-major.
    pub fn forward(&self, x: &Q8Rows) -> Vec<f32> {
        assert_eq!(x.k, self.k);
        matmul(self.out, x, |o, first, dst| {
            let w = self.w.row(o);
            let row = |j: usize| x.row(first + j);
            dot_rows!(dot, w, row, dst)
        })
    }
}

/// `dst.copy_from_slice(&dot(w, [row(0), …]))` for the one to four rows `dst` holds
/// (the kernels take the number of activation rows as a constant).
macro_rules! dot_rows {
    ($dot:ident, $w:expr, $row:expr, $dst:expr) => {
        match $dst.len() {
            4 => $dst.copy_from_slice(&$dot($w, std::array::from_fn::<_, 4, _>($row))),
            3 => $dst.copy_from_slice(&$dot($w, std::array::from_fn::<_, 3, _>($row))),
            2 => $dst.copy_from_slice(&$dot($w, std::array::from_fn::<_, 2, _>($row))),
            _ => $dst.copy_from_slice(&$dot($w, std::array::from_fn::<_, 1, _>($row))),
        }
    };
}
pub(super) use dot_rows;

/// `x · wᵀ` for a weight matrix of `out` rows: `[rows, out]`, row-major. `dots(o, first,
/// dst)` writes the dot products of weight row `o` with activation rows `first..first +
/// dst.len()` (one to four) into `dst`. Each task takes a run of weight rows and
/// multiplies each with every activation row while it is in cache.
pub(super) fn matmul(out: usize, x: &Q8Rows, dots: impl Fn(usize, usize, &mut [f32]) + Sync) -> Vec<f32> {
    let rows = x.rows;
    // Column-major result: each task owns a run of output columns.
    let mut cols = vec![0f32; out * rows];
    // Enough work per task to amortise scheduling, and enough tasks (eight per thread)
    // that the threads finish together; chunking never changes a result.
    let threads = rayon::current_num_threads().max(1);
    let chunk = (1024 / rows.max(1)).min(out.div_ceil(8 * threads)).clamp(16, 256);
    cols.par_chunks_mut(chunk * rows).enumerate().for_each(|(c, dst)| {
        for (i, out_col) in dst.chunks_mut(rows).enumerate() {
            for (g, group) in out_col.chunks_mut(4).enumerate() {
                dots(c * chunk + i, g * 4, group);
            }
        }
    });
    if rows == 1 {
        return cols;
    }
    let mut y = vec![0f32; rows * out];
    for o in 0..out {
        for r in 0..rows {
            y[r * out + o] = cols[o * rows + r];
        }
    }
    y
}

/// Dot products of one weight row with `N` activation rows. Each result depends only on
/// its own two rows: the rows share the weight loads, not the arithmetic.
#[cfg(target_feature = "avx2")]
fn dot<const N: usize>(w: (&[i8], &[f32]), xs: [(&[i8], &[f32]); N]) -> [f32; N] {
    use std::arch::x86_64::*;
    let (wq, wd) = w;
    // SAFETY: AVX2 is enabled at compile time (cfg above); every load reads 32 bytes
    // inside a block of a slice whose length is a multiple of 32.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..wd.len() {
            let wv = _mm256_loadu_si256(wq.as_ptr().add(b * BLOCK) as *const __m256i);
            let wabs = _mm256_sign_epi8(wv, wv);
            for (acc, (xq, xd)) in acc.iter_mut().zip(xs) {
                let xv = _mm256_loadu_si256(xq.as_ptr().add(b * BLOCK) as *const __m256i);
                // |w| · (x · sign w) = w · x, with |w| unsigned as maddubs needs.
                let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(xv, wv)), ones);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(prod), _mm256_set1_ps(wd[b] * xd[b]), *acc);
            }
        }
        acc.map(|a| {
            let hi = _mm256_extractf128_ps(a, 1);
            let s = _mm_add_ps(_mm256_castps256_ps128(a), hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        })
    }
}

#[cfg(not(target_feature = "avx2"))]
fn dot<const N: usize>(w: (&[i8], &[f32]), xs: [(&[i8], &[f32]); N]) -> [f32; N] {
    let (wq, wd) = w;
    xs.map(|(xq, xd)| {
        (0..wd.len())
            .map(|b| {
                let s: i32 = (b * BLOCK..(b + 1) * BLOCK).map(|i| wq[i] as i32 * xq[i] as i32).sum();
                s as f32 * wd[b] * xd[b]
            })
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 200) as f32 / 100.0 - 1.0).collect()
    }

    #[test]
    fn matches_f32_matmul_and_is_identical_per_row_whatever_the_batch() {
        let (out, k, rows) = (70, 64, 6);
        let w = data(out * k, 1);
        let x = data(rows * k, 2);
        let lin = Q8Linear::new(&w, out, k);
        let y = lin.forward(&Q8Rows::quantize(&x, k));
        for r in 0..rows {
            for o in 0..out {
                let exact: f32 = (0..k).map(|i| w[o * k + i] * x[r * k + i]).sum();
                assert!((y[r * out + o] - exact).abs() < 0.05 * (1.0 + exact.abs()), "{r},{o}: {} vs {exact}", y[r * out + o]);
            }
            let alone = lin.forward(&Q8Rows::quantize(&x[r * k..(r + 1) * k], k));
            assert_eq!(alone, y[r * out..(r + 1) * out].to_vec(), "row {r} alone equals row {r} batched, bit for bit");
        }
    }

    #[test]
    fn extreme_values_do_not_saturate() {
        let k = 64;
        let w = vec![-1.0f32; k];
        let x = vec![-1.0f32; k];
        let y = Q8Linear::new(&w, 1, k).forward(&Q8Rows::quantize(&x, k));
        assert!((y[0] - k as f32).abs() < 1e-3, "{}", y[0]);
    }
}
