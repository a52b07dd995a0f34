//! Q8_0 matrix multiplication that batches and is deterministic per row.
//!
//! candle's quantized matmul loops over activation rows outermost (`k_quants::matmul`),
//! streaming every weight once per row: batching gains nothing. Here each thread takes
//! a slice of weight rows and multiplies it with every activation row while it is in
//! cache, so the weights are read once per step. Every output element is one
//! `vec_dot` of a weight row with an activation row, computed the same way whatever
//! the batch holds — so a sequence gets bit-identical logits alone or batched.

use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};
use rayon::prelude::*;

const BLOCK: usize = 32;

pub struct Q8Linear {
    /// `out` rows of `k / 32` blocks each.
    blocks: Vec<BlockQ8_0>,
    pub out: usize,
    pub k: usize,
}

/// Activation rows quantized once per step and shared by every linear that reads them.
pub struct Q8Rows {
    blocks: Vec<BlockQ8_0>,
    pub rows: usize,
    pub k: usize,
}

impl Q8Rows {
    pub fn quantize(x: &[f32], k: usize) -> Self {
        assert_eq!(k % BLOCK, 0, "row length {k} is not a multiple of {BLOCK}");
        let rows = x.len() / k;
        let per_row = k / BLOCK;
        let mut blocks = vec![BlockQ8_0::zeros(); rows * per_row];
        blocks
            .par_chunks_mut(per_row)
            .zip(x.par_chunks(k))
            .for_each(|(dst, src)| BlockQ8_0::from_float(src, dst));
        Self { blocks, rows, k }
    }

    fn row(&self, r: usize) -> &[BlockQ8_0] {
        let per_row = self.k / BLOCK;
        &self.blocks[r * per_row..(r + 1) * per_row]
    }
}

impl Q8Linear {
    /// `w` is `[out, k]`, row-major.
    pub fn new(w: &[f32], out: usize, k: usize) -> Self {
        assert_eq!(w.len(), out * k);
        let x = Q8Rows::quantize(w, k);
        Self { blocks: x.blocks, out, k }
    }

    fn weight_row(&self, o: usize) -> &[BlockQ8_0] {
        let per_row = self.k / BLOCK;
        &self.blocks[o * per_row..(o + 1) * per_row]
    }

    /// `x · wᵀ`: `[rows, out]`, row-major.
    pub fn forward(&self, x: &Q8Rows) -> Vec<f32> {
        assert_eq!(x.k, self.k);
        let rows = x.rows;
        // Column-major result: each task owns a run of output columns.
        let mut cols = vec![0f32; self.out * rows];
        let chunk = 64;
        cols.par_chunks_mut(chunk * rows).enumerate().for_each(|(c, dst)| {
            let first = c * chunk;
            for (i, out_col) in dst.chunks_mut(rows).enumerate() {
                let w = self.weight_row(first + i);
                for (r, d) in out_col.iter_mut().enumerate() {
                    *d = BlockQ8_0::vec_dot(self.k, w, x.row(r));
                }
            }
        });
        if rows == 1 {
            return cols;
        }
        let mut y = vec![0f32; rows * self.out];
        for o in 0..self.out {
            for r in 0..rows {
                y[r * self.out + o] = cols[o * rows + r];
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 200) as f32 / 100.0 - 1.0).collect()
    }

    #[test]
    fn matches_f32_matmul_and_is_identical_per_row_whatever_the_batch() {
        let (out, k, rows) = (70, 64, 5);
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
}
