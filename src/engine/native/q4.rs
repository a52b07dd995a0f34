//! 4-bit weights served as the GGUF file holds them (Q4_0, Q4_1), against Q8
//! activations, without re-encoding.
//!
//! A block of 32 weights is 16 bytes of 4-bit values q (0–15) and two f16 numbers, the
//! weight being d·q + m (Q4_1 as stored; Q4_0's d·(q − 8) is m = −8d). Against an
//! activation block x ≈ e·p (p in i8) the dot product is d·e·Σq·p + m·e·Σp: one integer
//! dot product per block (unsigned × signed bytes, which AVX2's `maddubs` takes as they
//! are) and the block's quantized sum, kept with the quantized activations. A block is 20
//! bytes, against 36 for the Q8_0 re-encoding: decoding one token reads 45 % fewer bytes
//! of these matrices. As in [`super::q8`], a weight row meets up to four activation rows
//! per load, and every output depends only on its own two rows (bit-identical alone or
//! batched).

use anyhow::{bail, Result};
use candle_core::quantized::GgmlDType;
use half::f16;

use super::q8::{Q8Rows, BLOCK};

/// Bytes of one block: d and m as f16, then the 16 bytes of 4-bit values (element j in
/// the low half of byte j, element j + 16 in its high half: GGUF's order).
const BYTES: usize = 20;

pub struct Q4Linear {
    blocks: Vec<u8>,
    pub out: usize,
    pub k: usize,
    /// The file's type (`Q4_0` or `Q4_1`).
    pub dtype: GgmlDType,
}

impl Q4Linear {
    /// From a GGUF tensor's raw data, `[out, k]` of `dtype` (Q4_0 or Q4_1). Row `i` of
    /// the result is row `order[i]` of the file (all rows in order without one).
    pub fn from_gguf(dtype: GgmlDType, data: &[u8], out: usize, k: usize, order: Option<&[usize]>) -> Result<Self> {
        let stored = match dtype {
            GgmlDType::Q4_0 => 18,
            GgmlDType::Q4_1 => 20,
            other => bail!("no 4-bit kernel for {other:?}"),
        };
        if k % BLOCK != 0 {
            bail!("row length {k} is not a multiple of {BLOCK}");
        }
        let per_row = k / BLOCK * stored;
        if data.len() != out * per_row {
            bail!("{dtype:?} data of {} bytes for [{out}, {k}] (expected {})", data.len(), out * per_row);
        }
        let mut blocks = Vec::with_capacity(out * k / BLOCK * BYTES);
        for i in 0..out {
            let row = order.map_or(i, |o| o[i]);
            for b in data[row * per_row..(row + 1) * per_row].chunks_exact(stored) {
                let d = [b[0], b[1]];
                let (m, qs) = match dtype {
                    GgmlDType::Q4_0 => ((f16::from_le_bytes(d).to_f32() * -8.0).to_bits_f16(), &b[2..]),
                    _ => ([b[2], b[3]], &b[4..]),
                };
                blocks.extend_from_slice(&d);
                blocks.extend_from_slice(&m);
                blocks.extend_from_slice(qs);
            }
        }
        Ok(Self { blocks, out, k, dtype })
    }

    /// Matrices of one type and row length stacked, their rows in order (`None` if they
    /// differ).
    pub fn stack(parts: Vec<Q4Linear>) -> Option<Self> {
        let first = parts.first()?;
        let (k, dtype) = (first.k, first.dtype);
        if parts.iter().any(|p| p.k != k || p.dtype != dtype) {
            return None;
        }
        let out = parts.iter().map(|p| p.out).sum();
        let blocks = parts.into_iter().flat_map(|p| p.blocks).collect();
        Some(Self { blocks, out, k, dtype })
    }

    fn row(&self, o: usize) -> &[u8] {
        let per_row = self.k / BLOCK * BYTES;
        &self.blocks[o * per_row..(o + 1) * per_row]
    }

    /// `x · wᵀ`: `[rows, out]`, row-major.
    pub fn forward(&self, x: &Q8Rows) -> Vec<f32> {
        assert_eq!(x.k, self.k);
        super::q8::matmul(self.out, x, |o, first, dst| {
            let w = self.row(o);
            let row = |j: usize| x.row_with_sums(first + j);
            super::q8::dot_rows!(dot, w, row, dst)
        })
    }
}

trait F16Bits {
    fn to_bits_f16(self) -> [u8; 2];
}

impl F16Bits for f32 {
    fn to_bits_f16(self) -> [u8; 2] {
        f16::from_f32(self).to_le_bytes()
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
        std::array::from_fn(|j| {
            let a = acc[j];
            let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s) + sums[j]
        })
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
        let (out, k, rows) = (70, 96, 6);
        let x = data(rows * k, 2);
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1] {
            let (raw, w) = quantized(dtype, out, k);
            let lin = Q4Linear::from_gguf(dtype, &raw, out, k, None).unwrap();
            let y = lin.forward(&Q8Rows::quantize(&x, k));
            for r in 0..rows {
                for o in 0..out {
                    let exact: f32 = (0..k).map(|i| w[o * k + i] * x[r * k + i]).sum();
                    let got = y[r * out + o];
                    assert!((got - exact).abs() < 0.02 * (1.0 + exact.abs()), "{dtype:?} {r},{o}: {got} vs {exact}");
                }
                let alone = lin.forward(&Q8Rows::quantize(&x[r * k..(r + 1) * k], k));
                assert_eq!(alone, y[r * out..(r + 1) * out].to_vec(), "{dtype:?}: row {r} alone equals row {r} batched, bit for bit");
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
