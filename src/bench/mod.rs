//! `srlm bench`: load generators for a running server. Bounded in requests and time;
//! meant for loopback targets.

pub mod chat;
pub mod generate;
pub mod train;

/// POSTs JSON and returns the JSON answer; a non-2xx status is an error with the body.
pub async fn post_json(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body)?)
        .send()
        .await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    anyhow::ensure!(status.is_success(), "HTTP {status}: {}", String::from_utf8_lossy(&bytes));
    Ok(serde_json::from_slice(&bytes)?)
}

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
