//! Single-precision matrix products from the system's OpenBLAS, loaded at run time where
//! it is installed (Debian: `libopenblas0`), for the trainer's large products.
//!
//! OpenBLAS picks kernels for the CPU it runs on (AVX-512 ones on Skylake-X and later);
//! the `gemm` crate, on a stable compiler, stops at AVX2. On the trainer's shapes (512
//! rows × 576–1536, and the 49152-row LM head) OpenBLAS 0.3.21 ran 1.5–2.5× the `gemm`
//! crate's GFLOP/s on a 2-core AVX-512 machine. Loading it at run time keeps it optional:
//! srlm builds and runs without it, and the `gemm` crate does the work then.
//! `SRLM_BLAS=gemm` keeps the `gemm` crate even where OpenBLAS is present.

use std::sync::LazyLock;

/// `cblas_sgemm(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)`.
type Sgemm = unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, f32, *const f32, i32, *const f32, i32, f32, *mut f32, i32);
type SetThreads = unsafe extern "C" fn(i32);

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

struct Blas {
    sgemm: Sgemm,
    name: &'static str,
    /// Keeps the library mapped for as long as `sgemm` may be called (the whole process).
    _library: libloading::Library,
}

static BLAS: LazyLock<Option<Blas>> = LazyLock::new(load);

fn load() -> Option<Blas> {
    if std::env::var("SRLM_BLAS").is_ok_and(|v| v == "gemm") {
        return None;
    }
    for name in ["libopenblas.so.0", "libopenblas.so"] {
        // SAFETY: loading OpenBLAS runs its initializers, which only read the CPU's
        // features and the OPENBLAS_* environment; the symbols are looked up with the
        // signatures of OpenBLAS's cblas.h.
        unsafe {
            let Ok(library) = libloading::Library::new(name) else { continue };
            let Ok(sgemm) = library.get::<Sgemm>(b"cblas_sgemm\0").map(|f| *f) else { continue };
            if let Ok(set_threads) = library.get::<SetThreads>(b"openblas_set_num_threads\0") {
                set_threads(rayon::current_num_threads() as i32);
            }
            tracing::info!(library = name, "the trainer's matrix products run on OpenBLAS");
            return Some(Blas { sgemm, name, _library: library });
        }
    }
    None
}

/// What computes the trainer's large matrix products: the OpenBLAS library loaded, or
/// the `gemm` crate.
pub fn name() -> &'static str {
    BLAS.as_ref().map_or("gemm crate", |b| b.name)
}

/// One operand's layout for row-major BLAS: (transposed, leading dimension), where one
/// of its strides is 1.
fn layout(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(i32, i32)> {
    if cs == 1 && rs >= cols.max(1) {
        Some((NO_TRANS, rs as i32))
    } else if rs == 1 && cs >= rows.max(1) {
        Some((TRANS, cs as i32))
    } else {
        None
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` through OpenBLAS, as `kernels::mm` describes the
/// operands; `false` (nothing done) where OpenBLAS is not loaded or a layout is not one
/// BLAS takes. The caller has checked the slices' bounds.
#[allow(clippy::too_many_arguments)]
pub(super) fn sgemm(
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
) -> bool {
    let Some(blas) = BLAS.as_ref() else { return false };
    let (Some((ta, lda)), Some((tb, ldb))) = (layout(m, k, lhs_rs, lhs_cs), layout(k, n, rhs_rs, rhs_cs)) else { return false };
    if k == 0 || dst_rs < n || [m, n, k, dst_rs].iter().any(|&d| d > i32::MAX as usize) {
        return false;
    }
    let beta = if acc { 1.0 } else { 0.0 };
    // SAFETY: the layouts above describe the same elements `kernels::mm` bounds-checked,
    // `dst` is the only mutable borrow, and OpenBLAS reads and writes nothing else.
    unsafe {
        (blas.sgemm)(
            ROW_MAJOR,
            ta,
            tb,
            m as i32,
            n as i32,
            k as i32,
            1.0,
            lhs.as_ptr(),
            lda,
            rhs.as_ptr(),
            ldb,
            beta,
            dst.as_mut_ptr(),
            dst_rs as i32,
        )
    };
    true
}

#[cfg(test)]
mod tests {
    use super::super::kernels::{dw_acc, dy_w, x_wt};
    use super::*;

    /// `a[rows×inner] · b` where `b(i, j)` is given as a closure.
    fn naive(a: &[f32], rows: usize, inner: usize, cols: usize, b: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        let mut out = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                out[r * cols + c] = (0..inner).map(|i| a[r * inner + i] * b(i, c)).sum();
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32]) {
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-3, "largest difference {worst}");
    }

    /// The trainer's three products, through whichever library `name()` says, against
    /// plain loops: a layout read the wrong way round is off by whole units.
    #[test]
    fn the_trainers_products_match_plain_loops() {
        let (rows, inp, out) = (37, 29, 23);
        let value = |i: usize, scale: usize| ((i * 7919 % scale) as f32 - scale as f32 / 2.0) / scale as f32;
        let x: Vec<f32> = (0..rows * inp).map(|i| value(i, 97)).collect();
        let w: Vec<f32> = (0..out * inp).map(|i| value(i, 89)).collect();
        let dy: Vec<f32> = (0..rows * out).map(|i| value(i, 83)).collect();
        // y = x · wᵀ
        close(&x_wt(&x, rows, inp, &w, out), &naive(&x, rows, inp, out, |i, c| w[c * inp + i]));
        // dx = dy · w, then accumulated once more
        let mut dx = vec![0f32; rows * inp];
        dy_w(&mut dx, false, &dy, rows, out, &w, inp);
        dy_w(&mut dx, true, &dy, rows, out, &w, inp);
        let once = naive(&dy, rows, out, inp, |i, c| w[i * inp + c]);
        close(&dx, &once.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
        // dw += dyᵀ · x, onto ones
        let mut dw = vec![1f32; out * inp];
        dw_acc(&mut dw, &dy, rows, out, &x, inp);
        let dyt: Vec<f32> = (0..out * rows).map(|j| dy[(j % rows) * out + j / rows]).collect();
        let want: Vec<f32> = naive(&dyt, out, rows, inp, |i, c| x[i * inp + c]).iter().map(|v| v + 1.0).collect();
        close(&dw, &want);
        eprintln!("matrix products by: {}", name());
    }

    #[test]
    fn layouts_are_read_from_the_strides() {
        // A 3×4 matrix stored row by row, and its transpose's view of the same memory.
        assert_eq!(layout(3, 4, 4, 1), Some((NO_TRANS, 4)));
        assert_eq!(layout(4, 3, 1, 4), Some((TRANS, 4)));
        // Rows of a wider buffer (a head's columns of a [t × width] matrix).
        assert_eq!(layout(3, 64, 576, 1), Some((NO_TRANS, 576)));
        // Neither stride is 1, or the leading dimension is too short: not BLAS's.
        assert_eq!(layout(3, 4, 8, 2), None);
        assert_eq!(layout(3, 4, 2, 1), None);
    }
}
