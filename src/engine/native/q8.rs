//! Q8_0-style matrix multiplication that batches and is deterministic per row.
//!
//! Weights and activations are quantized in blocks of 32 values to `i8` with an `f32`
//! scale per block. Each thread takes a run of weight rows and multiplies every one of
//! them with all activation rows while it is in cache (candle's quantized matmul loops
//! over activation rows outermost and streams the weights once per row), up to four
//! activation rows per weight load. Every output element is computed by the same
//! sequence of operations whatever the batch holds — so a sequence gets bit-identical
//! logits alone or batched.
//!
//! Where the CPU has AVX-512 VNNI, the kernels take two blocks (64 bytes) per
//! instruction with `vpdpbusd` (unsigned × signed bytes summed into 32-bit lanes), chosen
//! once at run time: the build targets AVX2, which every x86 server since ~2015 has.
//! Either path gives the same numbers alone and batched; the two paths differ from each
//! other by float rounding only.

use std::sync::OnceLock;

use rayon::prelude::*;

pub(super) const BLOCK: usize = 32;

/// Whether this CPU has AVX-512 with VNNI (F, BW, VL and VNNI), detected once.
pub fn vnni() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        return is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Rows of `k` values as `i8` blocks with one `f32` scale per block (and each block's
/// sum as quantized, which 4-bit weights with an offset need).
pub struct Q8Rows {
    q: Vec<i8>,
    d: Vec<f32>,
    sums: Vec<f32>,
    /// For the VNNI kernels, the rows again in panels of up to [`VNNI_GROUP`], pair of
    /// blocks by pair of blocks: the pair's 64 values of each row of the panel, then the
    /// next pair's (a row's odd last block is paired with zeros). A kernel walks one
    /// pointer through a panel instead of one per row.
    panel_q: Vec<i8>,
    /// As `panel_q`, each block's scale eight times over: a pair's 16 lanes' factors.
    panel_d: Vec<f32>,
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
        let mut x = Self { q, d, sums, panel_q: Vec::new(), panel_d: Vec::new(), rows, k };
        if vnni() {
            x.make_panels();
        }
        x
    }

    fn make_panels(&mut self) {
        let (nb, k) = (self.k / BLOCK, self.k);
        let pairs = nb.div_ceil(2);
        self.panel_q = vec![0; self.rows * pairs * 2 * BLOCK];
        self.panel_d = vec![0.0; self.rows * pairs * 16];
        for r in 0..self.rows {
            let (first, n) = self.panel_of(r);
            for b in 0..nb {
                let at = (first * pairs + b / 2 * n + r - first) * 2 + b % 2;
                self.panel_q[at * BLOCK..(at + 1) * BLOCK].copy_from_slice(&self.q[r * k + b * BLOCK..r * k + (b + 1) * BLOCK]);
                self.panel_d[at * 8..(at + 1) * 8].fill(self.d[r * nb + b]);
            }
        }
    }

    /// The first row and the number of rows of the panel that holds row `r`.
    fn panel_of(&self, r: usize) -> (usize, usize) {
        let first = r / VNNI_GROUP * VNNI_GROUP;
        (first, VNNI_GROUP.min(self.rows - first))
    }

    /// The panel of rows `first..first + n` (a whole panel, VNNI kernels only).
    pub(super) fn panel(&self, first: usize, n: usize) -> Panel<'_> {
        debug_assert_eq!(self.panel_of(first), (first, n));
        let (nb, pairs) = (self.k / BLOCK, (self.k / BLOCK).div_ceil(2));
        Panel {
            q: &self.panel_q[first * pairs * 2 * BLOCK..(first + n) * pairs * 2 * BLOCK],
            d: &self.panel_d[first * pairs * 16..(first + n) * pairs * 16],
            sums: &self.sums[first * nb..(first + n) * nb],
            blocks: nb,
        }
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

/// Activation rows laid out for the VNNI kernels (see [`Q8Rows::panel`]).
#[derive(Clone, Copy)]
pub(super) struct Panel<'a> {
    /// `pairs × rows × 64` values.
    pub q: &'a [i8],
    /// `pairs × rows × 16` scales.
    pub d: &'a [f32],
    /// Each row's block sums, row after row.
    pub sums: &'a [f32],
    pub blocks: usize,
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
        let w = Q8Rows { sums: Vec::new(), panel_q: Vec::new(), panel_d: Vec::new(), ..Q8Rows::quantize(w, k) };
        Self { w, out, k }
    }

    /// `x · wᵀ`: `[rows, out]`, row-major.
    pub fn forward(&self, x: &Q8Rows) -> Vec<f32> {
        assert_eq!(x.k, self.k);
        if vnni() {
            return matmul(self.out, x.rows, VNNI_GROUP, |o, first, dst| {
                let panel = x.panel(first, dst.len());
                panel_rows!(dot_vnni, self.w.row(o), panel, dst)
            });
        }
        let xs: Vec<_> = (0..x.rows).map(|r| x.row(r)).collect();
        matmul(self.out, x.rows, GROUP, |o, first, dst| dot_rows!(dot, self.w.row(o), &xs[first..first + dst.len()], dst))
    }
}

/// The most activation rows a kernel takes per weight load: their accumulators stay in
/// registers (AVX2 has 16 vector registers, AVX-512 32).
pub(super) const GROUP: usize = 4;
pub(super) const VNNI_GROUP: usize = 8;

/// `dst.copy_from_slice(&dot(w, [xs[0], …]))` for the one to [`VNNI_GROUP`] rows `xs` holds
/// (the kernels take the number of activation rows as a constant).
macro_rules! dot_rows {
    ($dot:ident, $w:expr, $xs:expr, $dst:expr) => {{
        let (xs, dst) = ($xs, $dst);
        match xs.len() {
            8 => dst.copy_from_slice(&$dot($w, <[_; 8]>::try_from(xs).unwrap())),
            7 => dst.copy_from_slice(&$dot($w, <[_; 7]>::try_from(xs).unwrap())),
            6 => dst.copy_from_slice(&$dot($w, <[_; 6]>::try_from(xs).unwrap())),
            5 => dst.copy_from_slice(&$dot($w, <[_; 5]>::try_from(xs).unwrap())),
            4 => dst.copy_from_slice(&$dot($w, <[_; 4]>::try_from(xs).unwrap())),
            3 => dst.copy_from_slice(&$dot($w, <[_; 3]>::try_from(xs).unwrap())),
            2 => dst.copy_from_slice(&$dot($w, <[_; 2]>::try_from(xs).unwrap())),
            _ => dst.copy_from_slice(&$dot($w, <[_; 1]>::try_from(xs).unwrap())),
        }
    }};
}
pub(super) use dot_rows;

/// `dst.copy_from_slice(&dot::<N>(w, panel))` for the `N` (one to [`VNNI_GROUP`]) rows
/// `dst` holds.
macro_rules! panel_rows {
    ($dot:ident, $w:expr, $panel:expr, $dst:expr) => {{
        let dst: &mut [f32] = $dst;
        match dst.len() {
            8 => dst.copy_from_slice(&$dot::<8>($w, $panel)),
            7 => dst.copy_from_slice(&$dot::<7>($w, $panel)),
            6 => dst.copy_from_slice(&$dot::<6>($w, $panel)),
            5 => dst.copy_from_slice(&$dot::<5>($w, $panel)),
            4 => dst.copy_from_slice(&$dot::<4>($w, $panel)),
            3 => dst.copy_from_slice(&$dot::<3>($w, $panel)),
            2 => dst.copy_from_slice(&$dot::<2>($w, $panel)),
            _ => dst.copy_from_slice(&$dot::<1>($w, $panel)),
        }
    }};
}
pub(super) use panel_rows;

/// `x · wᵀ` for a weight matrix of `out` rows and `rows` activation rows: `[rows, out]`,
/// row-major. `dots(o, first, dst)` writes the dot products of weight row `o` with
/// activation rows `first..first + dst.len()` (up to `group` of them, starting at a
/// multiple of `group`) into `dst`. Each task takes a run of weight rows and multiplies
/// each with every activation row while it is in cache.
pub(super) fn matmul(out: usize, rows: usize, group: usize, dots: impl Fn(usize, usize, &mut [f32]) + Sync) -> Vec<f32> {
    // Column-major result: each task owns a run of output columns.
    let mut cols = vec![0f32; out * rows];
    // Enough work per task to amortise scheduling, and enough tasks (eight per thread)
    // that the threads finish together; chunking never changes a result.
    let threads = rayon::current_num_threads().max(1);
    let chunk = (1024 / rows.max(1)).min(out.div_ceil(8 * threads)).clamp(16, 256);
    cols.par_chunks_mut(chunk * rows).enumerate().for_each(|(c, dst)| {
        for (i, out_col) in dst.chunks_mut(rows).enumerate() {
            for (g, dst) in out_col.chunks_mut(group).enumerate() {
                dots(c * chunk + i, g * group, dst);
            }
        }
    });
    if rows == 1 {
        return cols;
    }
    // Transposed a tile of 16 columns at a time: the tile's values stay in cache, and
    // each row's 16 land in one cache line.
    let mut y = vec![0f32; rows * out];
    for o0 in (0..out).step_by(16) {
        let tile = &cols[o0 * rows..(o0 + 16).min(out) * rows];
        for r in 0..rows {
            for (i, v) in y[r * out + o0..r * out + (o0 + 16).min(out)].iter_mut().enumerate() {
                *v = tile[i * rows + r];
            }
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

/// [`dot`] with VNNI, against a panel of `N` activation rows.
fn dot_vnni<const N: usize>(w: (&[i8], &[f32]), xs: Panel) -> [f32; N] {
    assert!(vnni());
    assert!(xs.q.len() == N * xs.blocks.div_ceil(2) * 2 * BLOCK && xs.d.len() == N * xs.blocks.div_ceil(2) * 16);
    assert!(w.0.len() == xs.blocks * BLOCK && w.1.len() == xs.blocks);
    // SAFETY: the CPU has AVX-512 F/BW/VL and VNNI, and the lengths fit (checked above).
    #[cfg(target_arch = "x86_64")]
    return unsafe { avx512::dot(w, xs) };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::{Panel, BLOCK};

    /// Lanes 0–7 take element `first` of a 128-bit vector, lanes 8–15 the next: a pair of
    /// blocks' two scales spread over their 16 lanes.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) fn pair_index(first: i32) -> __m512i {
        let (a, b) = (first, first + 1);
        _mm512_setr_epi32(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b)
    }

    /// Sum of a 256-bit vector's lanes, in a fixed order.
    #[target_feature(enable = "avx2")]
    fn hsum256(a: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// Dot products of one Q8 weight row with a panel of `N` activation rows, two blocks
    /// per step: `|w|` (unsigned) against `x` negated where `w` is negative.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VL and VNNI. The weight row has the panel's
    /// blocks; the panel holds `N` rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    pub unsafe fn dot<const N: usize>(w: (&[i8], &[f32]), xs: Panel) -> [f32; N] {
        let (wq, wd) = w;
        let blocks = xs.blocks;
        let (xq, xd) = (xs.q.as_ptr(), xs.d.as_ptr());
        let index = pair_index(0);
        let mut acc = [_mm512_setzero_ps(); N];
        for p in 0..blocks / 2 {
            // SAFETY (all reads): 64 bytes from block 2p and two scales are inside the
            // weight row (2p + 1 < blocks); pair p of row j is inside the panel.
            let wv = _mm512_loadu_si512(wq.as_ptr().add(p * 2 * BLOCK) as *const _);
            let negative = _mm512_movepi8_mask(wv);
            let wabs = _mm512_abs_epi8(wv);
            let two = _mm_castpd_ps(_mm_load_sd(wd.as_ptr().add(2 * p) as *const f64));
            let wscale = _mm512_permutexvar_ps(index, _mm512_castps128_ps512(two));
            for (j, acc) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_si512(xq.add((p * N + j) * 2 * BLOCK) as *const _);
                let signed = _mm512_mask_sub_epi8(xv, negative, _mm512_setzero_si512(), xv);
                let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wabs, signed);
                let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(prod), wscale);
                *acc = _mm512_fmadd_ps(scaled, _mm512_loadu_ps(xd.add((p * N + j) * 16)), *acc);
            }
        }
        let mut tail = [0f32; N];
        if blocks % 2 == 1 {
            let b = blocks - 1;
            let wv = _mm256_loadu_si256(wq.as_ptr().add(b * BLOCK) as *const __m256i);
            let wabs = _mm256_sign_epi8(wv, wv);
            let p = blocks / 2;
            for (j, t) in tail.iter_mut().enumerate() {
                // The first half of the last pair (the second is zeros).
                let xv = _mm256_loadu_si256(xq.add((p * N + j) * 2 * BLOCK) as *const __m256i);
                let prod = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wabs, _mm256_sign_epi8(xv, wv));
                *t = hsum256(_mm256_cvtepi32_ps(prod)) * (wd[b] * *xd.add((p * N + j) * 16));
            }
        }
        std::array::from_fn(|j| _mm512_reduce_add_ps(acc[j]) + tail[j])
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
        // An even and an odd number of blocks (the VNNI kernel takes them in pairs).
        for k in [64, 96] {
            matches_f32_and_per_row(k);
        }
    }

    fn matches_f32_and_per_row(k: usize) {
        let (out, rows) = (70, 6);
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
    fn the_vnni_kernel_agrees_with_the_avx2_one_where_the_cpu_has_it() {
        if !vnni() {
            eprintln!("no AVX-512 VNNI on this CPU: only the AVX2 kernel runs here");
            return;
        }
        let (k, rows) = (96, 4);
        let lin = Q8Linear::new(&data(k, 1), 1, k);
        let x = Q8Rows::quantize(&data(rows * k, 2), k);
        let plain = dot(lin.w.row(0), std::array::from_fn::<_, 4, _>(|j| x.row(j)));
        let wide = dot_vnni::<4>(lin.w.row(0), x.panel(0, 4));
        for (a, b) in plain.iter().zip(wide) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
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
