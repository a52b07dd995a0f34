//! `srlm bench`: load generators for a running server. Bounded in requests and time;
//! meant for loopback targets.

pub mod chat;
pub mod generate;
pub mod train;

pub fn percentile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let rank = ((xs.len() as f64 - 1.0) * q).round() as usize;
    xs[rank]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_pick_by_rank() {
        let mut xs: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(percentile(&mut xs, 0.5), 51.0);
        assert_eq!(percentile(&mut xs, 0.99), 99.0);
        assert!(percentile(&mut [], 0.5).is_nan());
    }
}
