//! Q8_0-style matrix multiplication that batches and is deterministic per row.
//!
//! Weights and activations are quantized in blocks of 32 values to `i8` with an `f32`
//! scale per block. Each thread takes a run of weight rows and multiplies every one of
//! them with all activation rows while it is in cache (candle's quantized matmul loops
//! over activation rows outermost and streams the weights once per row), up to four
//! activation rows per weight load (eight with VNNI). Every output element is computed by
//! the same sequence of operations whatever the batch holds — so a sequence gets
//! bit-identical logits alone or batched.
//!
//! Where the CPU has AVX-512 VNNI, kernels chosen once at run time (the build targets
//! AVX2, which every x86 server since ~2015 has) take 64 bytes per `vpdpbusd` (unsigned ×
//! signed bytes summed four at a time into 32-bit lanes): runs of sixteen blocks laid out
//! so that each block's products gather in a lane of its own ([`interleave`]), then the
//! rest two blocks at a time. Either path gives the same numbers alone and batched; the
//! two differ from each other by float rounding only.

use std::sync::OnceLock;

use rayon::prelude::*;

pub(super) const BLOCK: usize = 32;

/// Blocks the VNNI kernels take together: sixteen blocks' products land in one vector's
/// sixteen lanes, one lane per block (see [`interleave`]).
pub(super) const WIDE: usize = 16;

/// Sixteen blocks' values (512, block after block) as the VNNI kernels read them: eight
/// vectors of 64, vector `i` holding values `4i..4i + 4` of each block in turn. Eight
/// `vpdpbusd` into one accumulator then give each block's whole integer dot product in
/// its own lane, scaled once (rather than once per pair of blocks).
pub(super) fn interleave<T: Copy>(values: &[T]) -> Vec<T> {
    debug_assert_eq!(values.len(), WIDE * BLOCK);
    (0..8).flat_map(|i| (0..64).map(move |v| values[v / 4 * BLOCK + 4 * i + v % 4])).collect()
}

/// How the VNNI kernels split a row of `blocks` blocks: runs of [`WIDE`] blocks, then
/// pairs (the last one possibly half empty).
pub(super) fn wide_split(blocks: usize) -> (usize, usize) {
    (blocks / WIDE, (blocks % WIDE).div_ceil(2))
}

/// Whether the VNNI kernels run: this CPU has AVX-512 with VNNI (F, BW, VL and VNNI),
/// detected once, and `SRLM_KERNELS` is not `avx2` (which keeps the AVX2 kernels, whose
/// numbers are the same on every x86-64-v3 machine).
pub fn vnni() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        if std::env::var("SRLM_KERNELS").is_ok_and(|v| v == "avx2") {
            return false;
        }
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
    /// For the VNNI kernels, the rows again in panels of up to [`VNNI_GROUP`] rows. A
    /// panel holds each run of [`WIDE`] blocks as its eight [`interleave`]d vectors, each
    /// vector of every row in turn, then the rest of the blocks in pairs, each pair of
    /// every row in turn (a row's odd last block is paired with zeros). A kernel walks
    /// one pointer through a panel instead of one per row.
    panel_q: Vec<i8>,
    /// As `panel_q`: per run the sixteen blocks' scales of each row, per pair each
    /// block's scale eight times over (a pair's 16 lanes' factors).
    panel_d: Vec<f32>,
    pub rows: usize,
    pub k: usize,
}

impl Q8Rows {
    /// `x`'s rows quantized, with the VNNI kernels' panels where they run.
    pub fn quantize(x: &[f32], k: usize) -> Self {
        let mut x = Self::blocks(x, k);
        if vnni() {
            x.make_panels();
        }
        x
    }

    /// `x`'s rows quantized, without panels (a weight matrix needs none).
    fn blocks(x: &[f32], k: usize) -> Self {
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
        Self { q, d, sums, panel_q: Vec::new(), panel_d: Vec::new(), rows, k }
    }

    fn make_panels(&mut self) {
        let (nb, k) = (self.k / BLOCK, self.k);
        let runs = wide_split(nb).0;
        let (q_row, d_row) = panel_row_len(nb);
        self.panel_q = vec![0; self.rows * q_row];
        self.panel_d = vec![0.0; self.rows * d_row];
        for r in 0..self.rows {
            let (first, n) = self.panel_of(r);
            let j = r - first;
            let (x, d) = (&self.q[r * k..(r + 1) * k], &self.d[r * nb..(r + 1) * nb]);
            let (q_at, d_at) = (first * q_row, first * d_row);
            for g in 0..runs {
                let run = &x[g * WIDE * BLOCK..(g + 1) * WIDE * BLOCK];
                for i in 0..8 {
                    let at = q_at + ((g * 8 + i) * n + j) * 64;
                    // As `interleave`: values 4i..4i + 4 of each block in turn.
                    for (l, four) in self.panel_q[at..at + 64].chunks_exact_mut(4).enumerate() {
                        four.copy_from_slice(&run[l * BLOCK + 4 * i..l * BLOCK + 4 * i + 4]);
                    }
                }
                let at = d_at + (g * n + j) * WIDE;
                self.panel_d[at..at + WIDE].copy_from_slice(&d[g * WIDE..(g + 1) * WIDE]);
            }
            let (q_at, d_at) = (q_at + n * runs * WIDE * BLOCK, d_at + n * runs * WIDE);
            for b in runs * WIDE..nb {
                let (p, h) = ((b - runs * WIDE) / 2, (b - runs * WIDE) % 2);
                let at = q_at + (p * n + j) * 64 + h * BLOCK;
                self.panel_q[at..at + BLOCK].copy_from_slice(&x[b * BLOCK..(b + 1) * BLOCK]);
                let at = d_at + (p * n + j) * 16 + h * 8;
                self.panel_d[at..at + 8].fill(d[b]);
            }
        }
    }

    /// The first row and the number of rows of the panel that holds row `r`.
    fn panel_of(&self, r: usize) -> (usize, usize) {
        let first = r / VNNI_GROUP * VNNI_GROUP;
        (first, VNNI_GROUP.min(self.rows - first))
    }

    /// The panels in order, each of rows `VNNI_GROUP · i..` (VNNI kernels only).
    pub(super) fn panels(&self) -> Vec<Panel<'_>> {
        (0..self.rows).step_by(VNNI_GROUP).map(|first| self.panel(first, self.panel_of(first).1)).collect()
    }

    /// The panel of rows `first..first + n` (a whole panel, VNNI kernels only).
    pub(super) fn panel(&self, first: usize, n: usize) -> Panel<'_> {
        debug_assert_eq!(self.panel_of(first), (first, n));
        let nb = self.k / BLOCK;
        let (q_row, d_row) = panel_row_len(nb);
        Panel {
            q: &self.panel_q[first * q_row..(first + n) * q_row],
            d: &self.panel_d[first * d_row..(first + n) * d_row],
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

/// The values and the scales one row of `blocks` blocks takes in a panel: its runs and
/// its pairs (an odd last block padded to a pair), each pair's scales eight times over.
pub(super) fn panel_row_len(blocks: usize) -> (usize, usize) {
    let (runs, pairs) = wide_split(blocks);
    (runs * WIDE * BLOCK + pairs * 2 * BLOCK, runs * WIDE + pairs * 16)
}

/// Activation rows laid out for the VNNI kernels (see [`Q8Rows::panel`]).
#[derive(Clone, Copy)]
pub(super) struct Panel<'a> {
    /// The rows' values as [`Q8Rows::panel_q`] lays them out.
    pub q: &'a [i8],
    /// Their scales as [`Q8Rows::panel_d`] lays them out.
    pub d: &'a [f32],
    /// Each row's block sums, row after row.
    pub sums: &'a [f32],
    pub blocks: usize,
}

pub struct Q8Linear {
    w: Q8Rows,
    pub out: usize,
    pub k: usize,
    /// Each row's runs of [`WIDE`] blocks [`interleave`]d for the VNNI kernel.
    wide: bool,
}

impl Q8Linear {
    /// `w` is `[out, k]`, row-major.
    pub fn new(w: &[f32], out: usize, k: usize) -> Self {
        Self::with_layout(w, out, k, vnni())
    }

    /// `wide`: laid out for the VNNI kernel, else for the AVX2 one.
    fn with_layout(w: &[f32], out: usize, k: usize, wide: bool) -> Self {
        assert_eq!(w.len(), out * k);
        // Block sums serve activations against 4-bit weights; a weight matrix keeps none.
        let mut w = Q8Rows { sums: Vec::new(), ..Q8Rows::blocks(w, k) };
        if wide {
            let runs = wide_split(k / BLOCK).0;
            for row in w.q.chunks_exact_mut(k) {
                for run in row.chunks_exact_mut(WIDE * BLOCK).take(runs) {
                    let v = interleave(run);
                    run.copy_from_slice(&v);
                }
            }
        }
        Self { w, out, k, wide }
    }

    /// `x · wᵀ`: `[rows, out]`, row-major.
    pub fn forward(&self, x: &Q8Rows) -> Vec<f32> {
        assert_eq!(x.k, self.k);
        if self.wide {
            let panels = x.panels();
            return matmul(self.out, x.rows, VNNI_GROUP, |o, first, dst| {
                panel_rows!(dot_vnni, self.w.row(o), panels[first / VNNI_GROUP], dst)
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

/// `dst.copy_from_slice(&dot(w, [xs[0], …]))` for the one to [`GROUP`] rows `xs` holds
/// (the AVX2 kernels take the number of activation rows as a constant).
macro_rules! dot_rows {
    ($dot:ident, $w:expr, $xs:expr, $dst:expr) => {{
        let (xs, dst) = ($xs, $dst);
        match xs.len() {
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

/// Sum of a 256-bit vector's lanes, in the one fixed order every kernel reduces in.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub(super) fn hsum256(a: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
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
        acc.map(|a| hsum256(a))
    }
}

/// [`dot`] with VNNI, against a panel of `N` activation rows.
fn dot_vnni<const N: usize>(w: (&[i8], &[f32]), xs: Panel) -> [f32; N] {
    assert!(vnni());
    assert!(w.0.len() == xs.blocks * BLOCK && w.1.len() == xs.blocks);
    let (q_row, d_row) = panel_row_len(xs.blocks);
    assert!(xs.q.len() == N * q_row && xs.d.len() == N * d_row);
    // SAFETY: the CPU has AVX-512 F/BW/VL and VNNI, and the lengths fit (checked above).
    #[cfg(target_arch = "x86_64")]
    return unsafe { avx512::dot(w, xs) };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::{hsum256, Panel, BLOCK, WIDE};

    /// Lanes 0–7 take element 0 of a 128-bit vector, lanes 8–15 element 1: a pair of
    /// blocks' two scales spread over their 16 lanes.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) fn pair_index() -> __m512i {
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
    }

    /// Dot products of one Q8 weight row (runs [`interleave`]d) with a panel of `N`
    /// activation rows: `|w|` (unsigned) against `x` negated where `w` is negative, a run
    /// of sixteen blocks per eight `vpdpbusd`, then the rest two blocks per `vpdpbusd`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VL and VNNI. The weight row has the panel's
    /// blocks; the panel holds `N` rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    pub unsafe fn dot<const N: usize>(w: (&[i8], &[f32]), xs: Panel) -> [f32; N] {
        let (wq, wd) = (w.0.as_ptr(), w.1);
        let blocks = xs.blocks;
        let runs = blocks / WIDE;
        let (xq, xd) = (xs.q.as_ptr(), xs.d.as_ptr());
        let mut acc = [_mm512_setzero_ps(); N];
        // SAFETY (all reads): run g's eight vectors of 64 values and its 16 scales are
        // inside the weight row and, for each of the N rows, inside the panel.
        for g in 0..runs {
            let mut sums = [_mm512_setzero_si512(); N];
            for i in 0..8 {
                let wv = _mm512_loadu_si512(wq.add(g * WIDE * BLOCK + i * 64) as *const _);
                let (negative, wabs) = (_mm512_movepi8_mask(wv), _mm512_abs_epi8(wv));
                for (j, sum) in sums.iter_mut().enumerate() {
                    let xv = _mm512_loadu_si512(xq.add(((g * 8 + i) * N + j) * 64) as *const _);
                    let signed = _mm512_mask_sub_epi8(xv, negative, _mm512_setzero_si512(), xv);
                    *sum = _mm512_dpbusd_epi32(*sum, wabs, signed);
                }
            }
            let d = _mm512_loadu_ps(wd.as_ptr().add(g * WIDE));
            for (j, acc) in acc.iter_mut().enumerate() {
                let scale = _mm512_mul_ps(d, _mm512_loadu_ps(xd.add((g * N + j) * WIDE)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[j]), scale, *acc);
            }
        }
        let (xq, xd) = (xq.add(N * runs * WIDE * BLOCK), xd.add(N * runs * WIDE));
        let rest = blocks - runs * WIDE;
        let index = pair_index();
        for p in 0..rest / 2 {
            // SAFETY (all reads): blocks b and b + 1 and their scales are inside the
            // weight row; pair p of each row inside the panel.
            let b = runs * WIDE + 2 * p;
            let wv = _mm512_loadu_si512(wq.add(b * BLOCK) as *const _);
            let (negative, wabs) = (_mm512_movepi8_mask(wv), _mm512_abs_epi8(wv));
            let two = _mm_castpd_ps(_mm_load_sd(wd.as_ptr().add(b) as *const f64));
            let wscale = _mm512_permutexvar_ps(index, _mm512_castps128_ps512(two));
            for (j, acc) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_si512(xq.add((p * N + j) * 64) as *const _);
                let signed = _mm512_mask_sub_epi8(xv, negative, _mm512_setzero_si512(), xv);
                let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wabs, signed);
                let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(prod), wscale);
                *acc = _mm512_fmadd_ps(scaled, _mm512_loadu_ps(xd.add((p * N + j) * 16)), *acc);
            }
        }
        let mut tail = [0f32; N];
        if rest % 2 == 1 {
            let (b, p) = (blocks - 1, rest / 2);
            let wv = _mm256_loadu_si256(wq.add(b * BLOCK) as *const __m256i);
            let wabs = _mm256_sign_epi8(wv, wv);
            for (j, t) in tail.iter_mut().enumerate() {
                // The first half of the last pair (the second is zeros).
                let xv = _mm256_loadu_si256(xq.add((p * N + j) * 64) as *const __m256i);
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
        // Even and odd numbers of blocks, with and without runs of sixteen (as the VNNI
        // kernel takes them).
        for k in [64, 96, 544, 1088] {
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
                // Rounding errors add up as a random walk over k.
                let tolerance = 0.05 * (1.0 + exact.abs()) * (k as f32 / 64.0).sqrt();
                assert!((y[r * out + o] - exact).abs() < tolerance, "k {k}, {r},{o}: {} vs {exact}", y[r * out + o]);
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
        // Pairs only; a run of sixteen and an odd block; two runs and a pair.
        for k in [96, 544, 1088] {
            let (narrow, wide) = (Q8Linear::with_layout(&data(k, 1), 1, k, false), Q8Linear::with_layout(&data(k, 1), 1, k, true));
            let x = Q8Rows::quantize(&data(4 * k, 2), k);
            let plain = dot(narrow.w.row(0), std::array::from_fn::<_, 4, _>(|j| x.row(j)));
            let fast = dot_vnni::<4>(wide.w.row(0), x.panel(0, 4));
            for (a, b) in plain.iter().zip(fast) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "k {k}: {a} vs {b}");
            }
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
