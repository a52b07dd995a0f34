//! Vector arithmetic shared by the native engine and the sampler.

/// `x ← exp(x − shift)` over a slice, returning the sum. A polynomial the compiler turns
/// into SIMD (the library `exp` is one call per value): 2ⁿ from the exponent bits times
/// a degree-6 series on the remainder (ln 2 split in two so the remainder stays exact),
/// relative error about 1e-7. Values more than 87 below `shift` (`-inf` too) become 0.
pub fn exp_shifted(xs: &mut [f32], shift: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    for x in xs.iter_mut() {
        let u = *x - shift;
        let t = u.max(-87.0);
        let n = (t * std::f32::consts::LOG2_E).round();
        let r = t - n * LN2_HI - n * LN2_LO;
        let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
        let y = p * f32::from_bits(((n as i32 + 127) << 23) as u32);
        *x = if u < -87.0 { 0.0 } else { y };
    }
    sum(xs)
}

/// A sum in eight independent lanes (SIMD, and a smaller rounding error than one
/// running total).
fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for c in xs.chunks_exact(8) {
        for i in 0..8 {
            lanes[i] += c[i];
        }
    }
    lanes.iter().sum::<f32>() + xs.chunks_exact(8).remainder().iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_shifted_matches_the_library_exp() {
        let xs: Vec<f32> = (0..2000).map(|i| -60.0 + i as f32 * 0.03).collect();
        let mut got = xs.clone();
        let total = exp_shifted(&mut got, 0.5);
        for (x, y) in xs.iter().zip(&got) {
            let want = (x - 0.5).exp();
            assert!((y - want).abs() <= 2e-6 * want, "exp({}) = {y}, want {want}", x - 0.5);
        }
        let want: f64 = xs.iter().map(|&x| ((x - 0.5) as f64).exp()).sum();
        assert!((total as f64 - want).abs() <= 1e-5 * want, "{total} vs {want}");
        let mut edges = [-1000.0f32, f32::NEG_INFINITY, 0.0, -86.0];
        exp_shifted(&mut edges, 0.0);
        assert_eq!(&edges[..3], &[0.0, 0.0, 1.0]);
        assert!((edges[3] / (-86f32).exp() - 1.0).abs() < 1e-5);
    }
}
