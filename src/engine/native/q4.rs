//! 4-bit weights served as the GGUF file holds them (Q4_0, Q4_1), against Q8
//! activations, without re-encoding.
//!
//! A block of 32 weights is 32 4-bit values q (0–15) and two f16 numbers, the weight
//! being d·q + m (Q4_1 as stored; Q4_0's d·(q − 8) is m = −8d). Against an activation
//! block x ≈ e·p (p in i8) the dot product is d·e·Σq·p + m·e·Σp: one integer dot product
//! per block (unsigned × signed bytes, which AVX2's `maddubs` and VNNI's `vpdpbusd` take
//! as they are) and the block's quantized sum, kept with the quantized activations (the
//! VNNI kernel takes that second part as one short dot product over the row's blocks).
//!
//! For the AVX2 kernel the blocks stay as the file has them (d, m, 16 bytes of values).
//! For the VNNI kernel a row is regrouped when loaded: its blocks' d, then their m (f16
//! each), then its values, runs of sixteen blocks [`interleave`]d, the rest in pairs of
//! blocks (32 bytes whose low nibbles are the first block's values and high nibbles the
//! second's): one 32-byte load and a shift give 64 values in activation order, one VNNI
//! instruction. Either way that is 20 bytes per 32 weights, as in the file, against 36 for
//! the Q8_0 re-encoding: decoding one token reads 45 % fewer bytes of these matrices. As in
//! [`super::q8`], a weight row meets several activation rows per load, and every output
//! depends only on its own two rows (bit-identical alone or batched).

use anyhow::{bail, Result};
use candle_core::quantized::GgmlDType;
use half::f16;

use super::q8::{dot_rows, interleave, matmul, panel_row_len, panel_rows, vnni, wide_split, Panel, Q8Rows, BLOCK, GROUP, VNNI_GROUP, WIDE};

/// Bytes per block in either layout: d and m as f16, 16 bytes of values.
const BYTES: usize = 20;

pub struct Q4Linear {
    rows: Vec<u8>,
    pub out: usize,
    pub k: usize,
    /// The file's type (`Q4_0` or `Q4_1`).
    pub dtype: GgmlDType,
    /// Rows laid out for the VNNI kernel ([`WeightRow`]); else each block as the file has
    /// it, m made explicit (d, m, 16 bytes of values), for the AVX2 kernel.
    wide: bool,
}

/// One row laid out for the VNNI kernel (where runs of [`WIDE`] blocks leave an odd number
/// of blocks, a zero block completes the last pair).
#[derive(Clone, Copy)]
struct WeightRow<'a> {
    /// Each block's d and m, f16 as stored.
    d: &'a [u8],
    m: &'a [u8],
    /// 16 bytes per block: for each run of [`WIDE`] blocks (wide rows only) its eight
    /// [`interleave`]d vectors of 64 values, 32 bytes each (value t in the low nibble of
    /// byte t, value 32 + t in its high nibble); then 32 bytes per pair of blocks, byte j
    /// holding the first block's element j in its low nibble, the second's in its high.
    q: &'a [u8],
}

impl Q4Linear {
    /// From a GGUF tensor's raw data, `[out, k]` of `dtype` (Q4_0 or Q4_1). Row `i` of
    /// the result is row `order[i]` of the file (all rows in order without one).
    pub fn from_gguf(dtype: GgmlDType, data: &[u8], out: usize, k: usize, order: Option<&[usize]>) -> Result<Self> {
        Self::with_layout(dtype, data, out, k, order, vnni())
    }

    /// `wide`: laid out for the VNNI kernel, else for the AVX2 one.
    fn with_layout(dtype: GgmlDType, data: &[u8], out: usize, k: usize, order: Option<&[usize]>, wide: bool) -> Result<Self> {
        let stored = match dtype {
            GgmlDType::Q4_0 => 18,
            GgmlDType::Q4_1 => 20,
            other => bail!("no 4-bit kernel for {other:?}"),
        };
        if !k.is_multiple_of(BLOCK) {
            bail!("row length {k} is not a multiple of {BLOCK}");
        }
        let per_row = k / BLOCK * stored;
        if data.len() != out * per_row {
            bail!("{dtype:?} data of {} bytes for [{out}, {k}] (expected {})", data.len(), out * per_row);
        }
        // One block as (d, m, its 32 values in element order).
        let block = |b: &[u8]| -> ([u8; 2], [u8; 2], [u8; BLOCK]) {
            let d = [b[0], b[1]];
            let (m, qs) = match dtype {
                GgmlDType::Q4_0 => (f16::from_f32(f16::from_le_bytes(d).to_f32() * -8.0).to_le_bytes(), &b[2..]),
                _ => ([b[2], b[3]], &b[4..]),
            };
            // GGUF's order: element j in the low half of byte j, element j + 16 in its high half.
            (d, m, std::array::from_fn(|j| if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 }))
        };
        if !wide {
            // As the file has them, m made explicit: d, m, then the 16 bytes of values.
            let mut rows = Vec::with_capacity(out * k / BLOCK * BYTES);
            for i in 0..out {
                let row = order.map_or(i, |o| o[i]);
                for b in data[row * per_row..(row + 1) * per_row].chunks_exact(stored) {
                    let (d, m, _) = block(b);
                    rows.extend_from_slice(&d);
                    rows.extend_from_slice(&m);
                    rows.extend_from_slice(&b[stored - 16..]);
                }
            }
            return Ok(Self { rows, out, k, dtype, wide });
        }
        let zero = ([0; 2], [0; 2], [0; BLOCK]);
        let runs = wide_split(k / BLOCK).0;
        let mut rows = Vec::with_capacity(out * Self::padded_blocks(k) * BYTES);
        for i in 0..out {
            let row = order.map_or(i, |o| o[i]);
            let mut blocks: Vec<_> = data[row * per_row..(row + 1) * per_row].chunks_exact(stored).map(block).collect();
            if (blocks.len() - runs * WIDE) % 2 == 1 {
                blocks.push(zero);
            }
            rows.extend(blocks.iter().flat_map(|b| b.0));
            rows.extend(blocks.iter().flat_map(|b| b.1));
            for run in blocks[..runs * WIDE].chunks_exact(WIDE) {
                let values: Vec<u8> = run.iter().flat_map(|b| b.2).collect();
                for v in interleave(&values).chunks_exact(64) {
                    rows.extend((0..32).map(|t| v[t] | (v[32 + t] << 4)));
                }
            }
            for two in blocks[runs * WIDE..].chunks_exact(2) {
                rows.extend((0..BLOCK).map(|j| two[0].2[j] | (two[1].2[j] << 4)));
            }
        }
        Ok(Self { rows, out, k, dtype, wide })
    }

    /// Blocks of one wide row, with the zero block that completes an odd last pair.
    fn padded_blocks(k: usize) -> usize {
        let (runs, pairs) = wide_split(k / BLOCK);
        runs * WIDE + pairs * 2
    }

    /// Matrices of one type and row length stacked, their rows in order (`None` if they
    /// differ).
    pub fn stack(parts: Vec<Q4Linear>) -> Option<Self> {
        let first = parts.first()?;
        let (k, dtype) = (first.k, first.dtype);
        let wide = first.wide;
        if parts.iter().any(|p| p.k != k || p.dtype != dtype || p.wide != wide) {
            return None;
        }
        let out = parts.iter().map(|p| p.out).sum();
        let rows = parts.into_iter().flat_map(|p| p.rows).collect();
        Some(Self { rows, out, k, dtype, wide })
    }

    fn row(&self, o: usize) -> WeightRow<'_> {
        let bytes = Self::padded_blocks(self.k) * BYTES;
        let row = &self.rows[o * bytes..(o + 1) * bytes];
        let scales = Self::padded_blocks(self.k) * 2;
        let (d, rest) = row.split_at(scales);
        let (m, q) = rest.split_at(scales);
        WeightRow { d, m, q }
    }

    /// `x · wᵀ`: `[rows, out]`, row-major.
    pub fn forward(&self, x: &Q8Rows) -> Vec<f32> {
        assert_eq!(x.k, self.k);
        if self.wide {
            let panels = x.panels();
            return matmul(self.out, x.rows, VNNI_GROUP, |o, first, dst| {
                panel_rows!(dot_vnni, self.row(o), panels[first / VNNI_GROUP], dst)
            });
        }
        let xs: Vec<_> = (0..x.rows).map(|r| x.row_with_sums(r)).collect();
        let bytes = self.k / BLOCK * BYTES;
        matmul(self.out, x.rows, GROUP, |o, first, dst| {
            dot_rows!(dot, &self.rows[o * bytes..(o + 1) * bytes], &xs[first..first + dst.len()], dst)
        })
    }
}

/// An activation row: its i8 values, the scale of each block and each block's sum.
type Row<'a> = (&'a [i8], &'a [f32], &'a [f32]);

/// Dot products of one 4-bit weight row with `N` activation rows; each result depends
/// only on its own two rows.
#[cfg(all(target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
fn dot<const N: usize>(w: &[u8], xs: [Row; N]) -> [f32; N] {
    use std::arch::x86_64::*;
    let blocks = w.len() / BYTES;
    // SAFETY: AVX2, FMA and F16C are enabled at compile time (cfg above). Each block
    // read is 20 bytes inside `w` (4 + 16 from its start); each activation read is 32
    // bytes inside a block of a slice whose length is a multiple of 32.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let nibble = _mm_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); N];
        let mut sums = [0f32; N];
        for b in 0..blocks {
            let block = w.as_ptr().add(b * BYTES);
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(block as *const i32)));
            let (d, m) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
            let packed = _mm_loadu_si128(block.add(4) as *const __m128i);
            let q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), nibble), _mm_and_si128(packed, nibble));
            for (j, (xq, xd, xs)) in xs.iter().enumerate() {
                let xv = _mm256_loadu_si256(xq.as_ptr().add(b * BLOCK) as *const __m256i);
                let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), ones);
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(prod), _mm256_set1_ps(d * xd[b]), acc[j]);
                sums[j] = m.mul_add(xs[b], sums[j]);
            }
        }
        std::array::from_fn(|j| super::q8::hsum256(acc[j]) + sums[j])
    }
}

#[cfg(not(all(target_feature = "avx2", target_feature = "fma", target_feature = "f16c")))]
fn dot<const N: usize>(w: &[u8], xs: [Row; N]) -> [f32; N] {
    xs.map(|(xq, xd, xs)| {
        w.chunks_exact(BYTES)
            .enumerate()
            .map(|(b, block)| {
                let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
                let s: i32 = (0..BLOCK)
                    .map(|i| {
                        let q = if i < 16 { block[4 + i] & 0x0F } else { block[4 + i - 16] >> 4 };
                        q as i32 * xq[b * BLOCK + i] as i32
                    })
                    .sum();
                s as f32 * d * xd[b] + m * xs[b]
            })
            .sum()
    })
}

/// [`dot`] with VNNI, against a panel of `N` activation rows.
fn dot_vnni<const N: usize>(w: WeightRow, xs: Panel) -> [f32; N] {
    assert!(vnni());
    let (q_row, d_row) = panel_row_len(xs.blocks);
    let padded = Q4Linear::padded_blocks(xs.blocks * BLOCK);
    assert!(xs.q.len() == N * q_row && xs.d.len() == N * d_row);
    assert!(xs.sums.len() == N * xs.blocks && w.q.len() == padded * 16 && w.d.len() == padded * 2 && w.m.len() == padded * 2);
    // SAFETY: the CPU has AVX-512 F/BW/VL and VNNI, and the lengths fit (checked above).
    #[cfg(target_arch = "x86_64")]
    return unsafe { avx512::dot(w, xs) };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{wide_split, Panel, WeightRow, BLOCK, WIDE};
    use crate::engine::native::q8::avx512::pair_index;

    /// Dot products of one 4-bit weight row with a panel of `N` activation rows: a run
    /// of sixteen blocks per eight `vpdpbusd` (each block's products gather in its own
    /// lane, scaled once), then the rest a pair of blocks (64 weights) per `vpdpbusd`. A
    /// row's odd last block meets zeros on both sides.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VL and VNNI. `w` is a wide row for the panel's
    /// length, and the panel holds `N` rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn dot<const N: usize>(w: WeightRow, xs: Panel) -> [f32; N] {
        let blocks = xs.blocks;
        let (runs, pairs) = wide_split(blocks);
        let (xq, xd) = (xs.q.as_ptr(), xs.d.as_ptr());
        let nibble = _mm512_set1_epi8(0x0F);
        // Both halves of a 64-byte vector hold the same 32 bytes, the upper one shifted:
        // the values of the low nibbles, then those of the high nibbles.
        let unpack = |at: *const u8| {
            let packed = _mm512_broadcast_i64x4(_mm256_loadu_si256(at as *const __m256i));
            _mm512_and_si512(_mm512_mask_srli_epi16::<4>(packed, 0xFFFF_0000, packed), nibble)
        };
        let mut acc = [_mm512_setzero_ps(); N];
        for g in 0..runs {
            // SAFETY (all reads): run g's eight vectors of 32 bytes and its 16 scales are
            // inside `w`; its eight vectors of 64 values and 16 scales of each of the N
            // rows inside the panel.
            let mut sums = [_mm512_setzero_si512(); N];
            for i in 0..8 {
                let q = unpack(w.q.as_ptr().add((g * 8 + i) * 32));
                for (j, sum) in sums.iter_mut().enumerate() {
                    *sum = _mm512_dpbusd_epi32(*sum, q, _mm512_loadu_si512(xq.add(((g * 8 + i) * N + j) * 64) as *const _));
                }
            }
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(w.d.as_ptr().add(g * WIDE * 2) as *const __m256i));
            for (j, acc) in acc.iter_mut().enumerate() {
                let scale = _mm512_mul_ps(d, _mm512_loadu_ps(xd.add((g * N + j) * WIDE)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[j]), scale, *acc);
            }
        }
        let (xq, xd) = (xq.add(N * runs * WIDE * BLOCK), xd.add(N * runs * WIDE));
        let index = pair_index();
        for p in 0..pairs {
            // SAFETY (all reads): pair p's 32 bytes of values and 4 of scales are inside
            // `w`; pair p of each row (64 values, 16 scales) inside the panel.
            let two = std::ptr::read_unaligned(w.d.as_ptr().add((runs * WIDE + 2 * p) * 2) as *const i32);
            let d = _mm512_permutexvar_ps(index, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(two))));
            let q = unpack(w.q.as_ptr().add(runs * WIDE * 16 + 32 * p));
            for (j, acc) in acc.iter_mut().enumerate() {
                let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, _mm512_loadu_si512(xq.add((p * N + j) * 64) as *const _));
                let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(prod), d);
                *acc = _mm512_fmadd_ps(scaled, _mm512_loadu_ps(xd.add((p * N + j) * 16)), *acc);
            }
        }
        // Σ m·s, sixteen blocks at a time (the last chunk masked), in the same lanes.
        for c in (0..blocks).step_by(16) {
            let mask = (u32::MAX >> (32 - (blocks - c).min(16))) as __mmask16;
            let m = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, w.m.as_ptr().add(2 * c) as *const i16));
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(m, _mm512_maskz_loadu_ps(mask, xs.sums.as_ptr().add(j * blocks + c)), *acc);
            }
        }
        acc.map(|a| _mm512_reduce_add_ps(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 200) as f32 / 100.0 - 1.0).collect()
    }

    /// A matrix quantized by candle (as llama.cpp writes it), its raw blocks, and what
    /// they decode to.
    fn quantized(dtype: GgmlDType, out: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
        let t = Tensor::from_vec(data(out * k, 1), (out, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dtype).unwrap();
        let decoded = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (q.data().unwrap().into_owned(), decoded)
    }

    #[test]
    fn the_files_blocks_multiply_as_what_they_decode_to_and_identically_per_row() {
        // Rows of pairs only, of a run of sixteen blocks and a pair, of two runs and an odd
        // block; ten activation rows (a full group and a part of one).
        for (dtype, k) in [(GgmlDType::Q4_0, 96), (GgmlDType::Q4_1, 96), (GgmlDType::Q4_1, 576), (GgmlDType::Q4_0, 1056)] {
            let (out, rows) = (40, 10);
            let x = data(rows * k, 2);
            let (raw, w) = quantized(dtype, out, k);
            let lin = Q4Linear::from_gguf(dtype, &raw, out, k, None).unwrap();
            let y = lin.forward(&Q8Rows::quantize(&x, k));
            for r in 0..rows {
                for o in 0..out {
                    let exact: f32 = (0..k).map(|i| w[o * k + i] * x[r * k + i]).sum();
                    let got = y[r * out + o];
                    // Rounding errors of the activations add up as a random walk over k.
                    let tolerance = 0.02 * (1.0 + exact.abs()) * (k as f32 / 96.0).sqrt();
                    assert!((got - exact).abs() < tolerance, "{dtype:?}, k {k}, {r},{o}: {got} vs {exact}");
                }
                let alone = lin.forward(&Q8Rows::quantize(&x[r * k..(r + 1) * k], k));
                assert_eq!(alone, y[r * out..(r + 1) * out].to_vec(), "{dtype:?}: row {r} alone equals row {r} batched, bit for bit");
            }
        }
    }

    #[test]
    fn the_vnni_kernel_agrees_with_the_avx2_one_where_the_cpu_has_it() {
        if !vnni() {
            eprintln!("no AVX-512 VNNI on this CPU: only the AVX2 kernel runs here");
            return;
        }
        // Pairs only; a run of sixteen and a pair; two runs and an odd block.
        for (dtype, k) in [(GgmlDType::Q4_1, 96), (GgmlDType::Q4_0, 576), (GgmlDType::Q4_1, 1056)] {
            let (raw, _) = quantized(dtype, 1, k);
            let narrow = Q4Linear::with_layout(dtype, &raw, 1, k, None, false).unwrap();
            let fast = Q4Linear::with_layout(dtype, &raw, 1, k, None, true).unwrap();
            let x = Q8Rows::quantize(&data(3 * k, 4), k);
            let plain = dot(&narrow.rows, std::array::from_fn::<_, 3, _>(|j| x.row_with_sums(j)));
            let wide = dot_vnni::<3>(fast.row(0), x.panel(0, 3));
            for (a, b) in plain.iter().zip(wide) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{dtype:?}, k {k}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn rows_are_taken_in_the_order_given() {
        let (out, k) = (8, 64);
        let (raw, _) = quantized(GgmlDType::Q4_1, out, k);
        let order: Vec<usize> = (0..out).rev().collect();
        let (plain, reordered) = (
            Q4Linear::from_gguf(GgmlDType::Q4_1, &raw, out, k, None).unwrap(),
            Q4Linear::from_gguf(GgmlDType::Q4_1, &raw, out, k, Some(&order)).unwrap(),
        );
        let x = Q8Rows::quantize(&data(k, 3), k);
        let (a, mut b) = (plain.forward(&x), reordered.forward(&x));
        b.reverse();
        assert_eq!(a, b);
    }

    #[test]
    fn stacked_matrices_give_each_ones_outputs_side_by_side() {
        let k = 64;
        let (a_raw, _) = quantized(GgmlDType::Q4_1, 8, k);
        let (b_raw, _) = quantized(GgmlDType::Q4_1, 3, k);
        let part = |raw: &[u8], out| Q4Linear::from_gguf(GgmlDType::Q4_1, raw, out, k, None).unwrap();
        let x = Q8Rows::quantize(&data(2 * k, 5), k);
        let (a, b) = (part(&a_raw, 8).forward(&x), part(&b_raw, 3).forward(&x));
        let stacked = Q4Linear::stack(vec![part(&a_raw, 8), part(&b_raw, 3)]).unwrap().forward(&x);
        for r in 0..2 {
            assert_eq!(stacked[r * 11..r * 11 + 8], a[r * 8..(r + 1) * 8]);
            assert_eq!(stacked[r * 11 + 8..(r + 1) * 11], b[r * 3..(r + 1) * 3]);
        }
        let (c_raw, _) = quantized(GgmlDType::Q4_0, 2, k);
        assert!(Q4Linear::stack(vec![part(&a_raw, 8), Q4Linear::from_gguf(GgmlDType::Q4_0, &c_raw, 2, k, None).unwrap()]).is_none());
    }

    #[test]
    fn what_has_no_kernel_or_the_wrong_size_is_refused() {
        let err = Q4Linear::from_gguf(GgmlDType::Q8_0, &[0; 34], 1, 32, None).err().unwrap().to_string();
        assert!(err.contains("no 4-bit kernel for Q8_0"), "{err}");
        let err = Q4Linear::from_gguf(GgmlDType::Q4_1, &[0; 19], 1, 32, None).err().unwrap().to_string();
        assert!(err.contains("expected 20"), "{err}");
    }
}
