//! Talking to a running srlm server over HTTP (the loop, self-instruction, `eval rm`
//! and the benchmarks do): below every command, above nothing of the crate.

/// POSTs JSON and returns the JSON answer; a non-2xx status is an error with the body.
pub async fn post_json(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let response =
        client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(serde_json::to_vec(body)?).send().await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    anyhow::ensure!(status.is_success(), "HTTP {status}: {}", String::from_utf8_lossy(&bytes));
    Ok(serde_json::from_slice(&bytes)?)
}
