//! Intervals for measured proportions and means.

use serde::{Deserialize, Serialize};

/// A proportion with its 95 % Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Proportion {
    pub successes: usize,
    pub total: usize,
    /// successes / total (0 when total is 0).
    pub value: f64,
    /// 95 % Wilson interval, lower end.
    pub low: f64,
    /// 95 % Wilson interval, upper end.
    pub high: f64,
}

impl Proportion {
    pub fn new(successes: usize, total: usize) -> Self {
        let (low, high) = wilson(successes, total);
        let value = if total == 0 { 0.0 } else { successes as f64 / total as f64 };
        Self { successes, total, value, low, high }
    }

    /// `61.2% [55.8, 66.3]`
    pub fn show(&self) -> String {
        format!("{:.1}% [{:.1}, {:.1}]", self.value * 100.0, self.low * 100.0, self.high * 100.0)
    }
}

/// The 95 % Wilson score interval of `successes` out of `total` ((0, 1) when total is 0).
pub fn wilson(successes: usize, total: usize) -> (f64, f64) {
    if total == 0 {
        return (0.0, 1.0);
    }
    const Z: f64 = 1.959_963_984_540_054;
    let (n, p) = (total as f64, successes as f64 / total as f64);
    let denom = 1.0 + Z * Z / n;
    let centre = (p + Z * Z / (2.0 * n)) / denom;
    let half = Z * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// A mean with its 95 % interval, mean ± 1.96 · s/√n (the mean alone below two values).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanInterval {
    pub n: usize,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl MeanInterval {
    pub fn of(xs: &[f64]) -> Self {
        let n = xs.len();
        let mean = if n == 0 { 0.0 } else { xs.iter().sum::<f64>() / n as f64 };
        let sd = if n > 1 { (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
        let half = if n > 0 { 1.96 * sd / (n as f64).sqrt() } else { 0.0 };
        Self { n, mean, low: mean - half, high: mean + half }
    }

    /// The change from `before` to `after` of the same items, each passed or failed:
    /// per item +1 (now passes), −1 (now fails) or 0. Pairing removes the items both
    /// got right or both got wrong from the noise, so it tells a real change from chance
    /// on far fewer items than comparing two accuracies does.
    pub fn paired_change(before: &[bool], after: &[bool]) -> Self {
        let changes: Vec<f64> = before.iter().zip(after).map(|(&b, &a)| f64::from(u8::from(a)) - f64::from(u8::from(b))).collect();
        Self::of(&changes)
    }

    /// `-6.2 points [-11.0, -1.4]`, for changes of proportions.
    pub fn show_points(&self) -> String {
        format!("{:+.1} points [{:+.1}, {:+.1}]", self.mean * 100.0, self.low * 100.0, self.high * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paired_change_matches_hand_computed_values() {
        // 10 items: 3 now fail, 1 now passes, 6 unchanged. Changes sum to -2, mean -0.2;
        // Σ(x - m)² = 3·0.64 + 1.44 + 6·0.04 = 3.6, s = √0.4, half 1.96 · √0.4 / √10 = 0.392.
        let before = [true, true, true, false, true, false, true, false, true, false];
        let after = [false, false, false, true, true, false, true, false, true, false];
        let d = MeanInterval::paired_change(&before, &after);
        assert_eq!(d.n, 10);
        assert!((d.mean + 0.2).abs() < 1e-12 && (d.low + 0.592).abs() < 1e-12 && (d.high - 0.192).abs() < 1e-12, "{d:?}");
        assert_eq!(d.show_points(), "-20.0 points [-59.2, +19.2]");
        // Nothing changed: a zero-width interval at 0; nothing measured: 0 as well.
        assert_eq!(MeanInterval::paired_change(&before, &before), MeanInterval { n: 10, mean: 0.0, low: 0.0, high: 0.0 });
        assert_eq!(MeanInterval::of(&[]), MeanInterval { n: 0, mean: 0.0, low: 0.0, high: 0.0 });
    }

    #[test]
    fn wilson_matches_hand_computed_values() {
        // 8 of 10: centre (0.8 + 0.19208) / 1.38415 = 0.71674, half 0.21181.
        let (lo, hi) = wilson(8, 10);
        assert!((lo - 0.4902).abs() < 1e-4 && (hi - 0.9433).abs() < 1e-4, "{lo} {hi}");
        // 0 of 20 keeps a non-zero upper end; all of them a non-one lower end.
        let (lo, hi) = wilson(0, 20);
        assert!(lo == 0.0 && (hi - 0.1611).abs() < 1e-4, "{hi}");
        let (lo, hi) = wilson(20, 20);
        assert!((lo - 0.8389).abs() < 1e-4 && hi == 1.0, "{lo}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        assert_eq!(Proportion::new(1, 4).show(), "25.0% [4.6, 69.9]");
    }
}
