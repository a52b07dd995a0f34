//! Intervals for measured proportions.

use serde::Serialize;

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

#[cfg(test)]
mod tests {
    use super::*;

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
