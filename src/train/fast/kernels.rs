//! The kernels of the hand-derived passes: strided GEMM calls, fused RMSNorm / RoPE
//! forward and backward, and causal attention with its backward, each parallel over rows
//! or (sequence, head) with rayon.

use gemm::Parallelism;
use rayon::prelude::*;

// ---- matrix products ------------------------------------------------------------------

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, each operand given by its row and column strides.
#[allow(clippy::too_many_arguments)]
pub(super) fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    par: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n, "gemm: destination too small");
    assert!(k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs, "gemm: lhs too small");
    assert!(k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs, "gemm: rhs too small");
    // The large products (`par`) go to OpenBLAS where it is loaded; the small ones, run
    // from inside a parallel loop (attention per head), stay on one thread of `gemm`.
    if par && super::blas::sgemm(m, n, k, dst, dst_rs, acc, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs) {
        return;
    }
    let parallelism = if par { Parallelism::Rayon(rayon::current_num_threads()) } else { Parallelism::None };
    // SAFETY: the asserts above keep every strided access inside the slices, and `dst`
    // is borrowed mutably while `lhs` and `rhs` are shared borrows, so they don't alias.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `x[rows×inp] · wᵀ` for `w: [out×inp]`.
pub(super) fn x_wt(x: &[f32], rows: usize, inp: usize, w: &[f32], out: usize) -> Vec<f32> {
    let mut y = vec![0f32; rows * out];
    mm(rows, out, inp, &mut y, out, false, x, inp, 1, w, 1, inp, true);
    y
}

/// `dx[rows×inp] (+)= dy[rows×out] · w[out×inp]`.
pub(super) fn dy_w(dx: &mut [f32], acc: bool, dy: &[f32], rows: usize, out: usize, w: &[f32], inp: usize) {
    mm(rows, inp, out, dx, inp, acc, dy, out, 1, w, inp, 1, true);
}

/// `dw[out×inp] += dyᵀ · x`.
pub(super) fn dw_acc(dw: &mut [f32], dy: &[f32], rows: usize, out: usize, x: &[f32], inp: usize) {
    mm(out, inp, rows, dw, inp, true, dy, 1, out, x, inp, 1, true);
}

// ---- fused elementwise kernels -------------------------------------------------------

/// RMSNorm of each row: returns the normalized-and-scaled rows and each row's 1/rms.
pub(super) fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let h = w.len();
    let rows = x.len() / h;
    let mut y = vec![0f32; x.len()];
    let mut inv = vec![0f32; rows];
    y.par_chunks_mut(h).zip(inv.par_iter_mut()).zip(x.par_chunks(h)).for_each(|((y, r), x)| {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / h as f32;
        *r = 1.0 / (ms + eps).sqrt();
        for j in 0..h {
            y[j] = x[j] * *r * w[j];
        }
    });
    (y, inv)
}

/// Backward of [`rms_norm`]: adds the input gradient into `dx` and (when given) the
/// weight gradient into `dw`.
pub(super) fn rms_norm_back(dy: &[f32], x: &[f32], inv: &[f32], w: &[f32], dx: &mut [f32], dw: Option<&mut [f32]>) {
    let h = w.len();
    dx.par_chunks_mut(h).zip(dy.par_chunks(h)).zip(x.par_chunks(h)).zip(inv.par_iter()).for_each(|(((dx, dy), x), &r)| {
        let s: f32 = (0..h).map(|j| dy[j] * w[j] * x[j]).sum();
        let c = r * r * r * s / h as f32;
        for j in 0..h {
            dx[j] += r * dy[j] * w[j] - x[j] * c;
        }
    });
    if let Some(dw) = dw {
        // Column sums over rows, split across threads by column blocks.
        let rows = inv.len();
        dw.par_chunks_mut(64).enumerate().for_each(|(blk, dw)| {
            let j0 = blk * 64;
            for r in 0..rows {
                let (dy, x, s) = (&dy[r * h..], &x[r * h..], inv[r]);
                for (jj, d) in dw.iter_mut().enumerate() {
                    *d += dy[j0 + jj] * x[j0 + jj] * s;
                }
            }
        });
    }
}

/// Rotates every head of every row by its position's angles (HF half-split layout);
/// `sign` −1 applies the inverse rotation (the backward pass).
pub(super) fn rope(x: &mut [f32], width: usize, head_dim: usize, t: usize, cos: &[f32], sin: &[f32], sign: f32) {
    let half = head_dim / 2;
    x.par_chunks_mut(width).enumerate().for_each(|(r, row)| {
        let p = r % t;
        let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
        for head in row.chunks_mut(head_dim) {
            let (x1, x2) = head.split_at_mut(half);
            for i in 0..half {
                let (a, b) = (x1[i], x2[i]);
                let si = sign * s[i];
                x1[i] = a * c[i] - b * si;
                x2[i] = b * c[i] + a * si;
            }
        }
    });
}

pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Causal attention of every (sequence, head); returns the output rows and (when
/// `keep`) the probabilities.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    b: usize,
    t: usize,
    heads: usize,
    kv: usize,
    hd: usize,
    keep: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (width, kv_width, group) = (heads * hd, kv * hd, heads / kv);
    let scale = 1.0 / (hd as f32).sqrt();
    let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..b * heads)
        .into_par_iter()
        .map(|bh| {
            let (s, h) = (bh / heads, bh % heads);
            let kvh = h / group;
            let qs = &q[s * t * width + h * hd..];
            let ks = &k[s * t * kv_width + kvh * hd..];
            let vs = &v[s * t * kv_width + kvh * hd..];
            let mut p = vec![0f32; t * t];
            mm(t, t, hd, &mut p, t, false, qs, width, 1, ks, 1, kv_width, false);
            for (i, row) in p.chunks_mut(t).enumerate() {
                let valid = &mut row[..=i];
                let max = valid.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * scale;
                let mut sum = 0.0;
                for x in valid.iter_mut() {
                    *x = (*x * scale - max).exp();
                    sum += *x;
                }
                for x in valid.iter_mut() {
                    *x /= sum;
                }
                row[i + 1..].fill(0.0);
            }
            let mut o = vec![0f32; t * hd];
            mm(t, hd, t, &mut o, hd, false, &p, t, 1, vs, kv_width, 1, false);
            (if keep { p } else { Vec::new() }, o)
        })
        .collect();
    let mut out = vec![0f32; b * t * width];
    let mut probs = Vec::with_capacity(if keep { b * heads * t * t } else { 0 });
    for (bh, (p, o)) in per_head.into_iter().enumerate() {
        let (s, h) = (bh / heads, bh % heads);
        for i in 0..t {
            out[(s * t + i) * width + h * hd..][..hd].copy_from_slice(&o[i * hd..(i + 1) * hd]);
        }
        probs.extend_from_slice(&p);
    }
    (out, probs)
}

/// Backward of [`attention`]: gradients of the (rotated) queries, keys and values.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_back(
    dattn: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: &[f32],
    b: usize,
    t: usize,
    heads: usize,
    kv: usize,
    hd: usize,
    group: usize,
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (width, kv_width) = (heads * hd, kv * hd);
    // One task per (sequence, KV head): it owns that head's dK and dV.
    let parts: Vec<(Vec<Vec<f32>>, Vec<f32>, Vec<f32>)> = (0..b * kv)
        .into_par_iter()
        .map(|bk| {
            let (s, kvh) = (bk / kv, bk % kv);
            let ks = &k[s * t * kv_width + kvh * hd..];
            let vs = &v[s * t * kv_width + kvh * hd..];
            let mut dk = vec![0f32; t * hd];
            let mut dv = vec![0f32; t * hd];
            let mut dqs = Vec::with_capacity(group);
            for gi in 0..group {
                let hh = kvh * group + gi;
                let ph = &p[(s * heads + hh) * t * t..][..t * t];
                let dout = &dattn[s * t * width + hh * hd..];
                let qs = &q[s * t * width + hh * hd..];
                // dV += Pᵀ dO; dP = dO Vᵀ.
                mm(t, hd, t, &mut dv, hd, true, ph, 1, t, dout, width, 1, false);
                let mut ds = vec![0f32; t * t];
                mm(t, t, hd, &mut ds, t, false, dout, width, 1, vs, 1, kv_width, false);
                // dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale.
                for i in 0..t {
                    let (prow, drow) = (&ph[i * t..(i + 1) * t], &mut ds[i * t..(i + 1) * t]);
                    let dot: f32 = prow[..=i].iter().zip(&drow[..=i]).map(|(a, b)| a * b).sum();
                    for j in 0..=i {
                        drow[j] = prow[j] * (drow[j] - dot) * scale;
                    }
                    drow[i + 1..].fill(0.0);
                }
                // dQ = dS K; dK += dSᵀ Q.
                let mut dq = vec![0f32; t * hd];
                mm(t, hd, t, &mut dq, hd, false, &ds, t, 1, ks, kv_width, 1, false);
                mm(t, hd, t, &mut dk, hd, true, &ds, 1, t, qs, width, 1, false);
                dqs.push(dq);
            }
            (dqs, dk, dv)
        })
        .collect();
    let mut dq = vec![0f32; b * t * width];
    let mut dk = vec![0f32; b * t * kv_width];
    let mut dv = vec![0f32; b * t * kv_width];
    for (bk, (dqs, dkh, dvh)) in parts.into_iter().enumerate() {
        let (s, kvh) = (bk / kv, bk % kv);
        for i in 0..t {
            let row = s * t + i;
            dk[row * kv_width + kvh * hd..][..hd].copy_from_slice(&dkh[i * hd..(i + 1) * hd]);
            dv[row * kv_width + kvh * hd..][..hd].copy_from_slice(&dvh[i * hd..(i + 1) * hd]);
            for (gi, dqh) in dqs.iter().enumerate() {
                let hh = kvh * group + gi;
                dq[row * width + hh * hd..][..hd].copy_from_slice(&dqh[i * hd..(i + 1) * hd]);
            }
        }
    }
    (dq, dk, dv)
}
