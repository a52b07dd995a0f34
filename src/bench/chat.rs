//! `srlm bench chat`: streamed chat requests at fixed concurrency levels against a
//! running server (ours or any OpenAI-compatible one): completion tokens/s,
//! requests/s, time to first token and latency percentiles.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::percentile;
use crate::cli::BenchArgs;
use crate::client::Client;
use crate::protocol::chat::{ChatCompletionRequest, MessageContent, RequestMessage, StreamOptions};

const DEFAULT_PROMPTS: [&str; 8] = [
    "Give one tip for learning to cook.",
    "Explain what a hash map is.",
    "How do I keep basil alive?",
    "Why is the sea salty?",
    "Write a haiku about autumn rain.",
    "What is the difference between weather and climate?",
    "Suggest a name for a small bakery and say why.",
    "How does a bicycle stay upright?",
];

#[derive(Debug, Clone, Serialize)]
pub struct LevelResult {
    pub label: String,
    pub concurrency: usize,
    pub requests: usize,
    pub errors: usize,
    pub completion_tokens: usize,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    pub requests_per_s: f64,
    pub latency_p50_s: f64,
    pub latency_p95_s: f64,
    pub latency_p99_s: f64,
    pub ttft_p50_s: f64,
    pub ttft_p99_s: f64,
}

struct Sample {
    latency: Duration,
    ttft: Duration,
    tokens: usize,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let prompts: Vec<String> =
        if args.prompt.is_empty() { DEFAULT_PROMPTS.iter().map(|s| s.to_string()).collect() } else { args.prompt.clone() };
    // A connection per request (see `Client::unpooled`).
    let client = Client::unpooled(&args.url, Duration::from_secs(args.time_limit_s))?;
    let mut results = Vec::new();
    println!(
        "{:>11} {:>8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "concurrency", "requests", "errors", "tokens/s", "req/s", "p50 s", "p95 s", "p99 s", "ttft p50"
    );
    for &concurrency in &args.concurrency {
        let r = level(&client, &args, &prompts, concurrency).await?;
        println!(
            "{:>11} {:>8} {:>6} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2}",
            r.concurrency,
            r.requests,
            r.errors,
            r.tokens_per_s,
            r.requests_per_s,
            r.latency_p50_s,
            r.latency_p95_s,
            r.latency_p99_s,
            r.ttft_p50_s
        );
        results.push(r);
    }
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&results)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn level(client: &Client, args: &BenchArgs, prompts: &[String], concurrency: usize) -> anyhow::Result<LevelResult> {
    let total = args.requests.max(concurrency);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.time_limit_s);
    let start = Instant::now();
    let bar = crate::progress::Progress::new(total as u64, format!("chat c={concurrency}"), "requests");
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, prompts, bar) = (client.clone(), next.clone(), prompts.to_vec(), bar.clone());
            let (model, max_tokens, temperature, ignore_eos) = (args.model.clone(), args.max_tokens, args.temperature, args.ignore_eos);
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() > deadline {
                        break;
                    }
                    let request = ChatCompletionRequest {
                        model: model.clone(),
                        messages: vec![RequestMessage {
                            role: "user".into(),
                            content: Some(MessageContent::Text(prompts[i % prompts.len()].clone())),
                        }],
                        max_tokens: Some(max_tokens as i64),
                        temperature: Some(temperature),
                        seed: Some(i as i64),
                        stream: true,
                        stream_options: Some(StreamOptions { include_usage: true }),
                        ignore_eos,
                        ..Default::default()
                    };
                    match one_request(&client, &request).await {
                        Ok(sample) => samples.push(sample),
                        Err(err) => {
                            tracing::warn!(error = %err, "request failed");
                            errors += 1;
                        }
                    }
                    bar.inc(1);
                }
                (samples, errors)
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (s, e) = w.await?;
        samples.extend(s);
        errors += e;
    }
    bar.finish();
    let wall = start.elapsed().as_secs_f64();
    let tokens: usize = samples.iter().map(|s| s.tokens).sum();
    let mut latencies: Vec<f64> = samples.iter().map(|s| s.latency.as_secs_f64()).collect();
    let mut ttfts: Vec<f64> = samples.iter().map(|s| s.ttft.as_secs_f64()).collect();
    Ok(LevelResult {
        label: args.label.clone(),
        concurrency,
        requests: samples.len(),
        errors,
        completion_tokens: tokens,
        wall_s: wall,
        tokens_per_s: tokens as f64 / wall,
        requests_per_s: samples.len() as f64 / wall,
        latency_p50_s: percentile(&mut latencies, 0.50),
        latency_p95_s: percentile(&mut latencies, 0.95),
        latency_p99_s: percentile(&mut latencies, 0.99),
        ttft_p50_s: percentile(&mut ttfts, 0.50),
        ttft_p99_s: percentile(&mut ttfts, 0.99),
    })
}

/// One streamed request: time to the first content, total time, completion tokens
/// (from the final usage chunk). The chunks are read as plain JSON, not srlm's chunk
/// type: the benchmark measures other OpenAI-compatible servers too (llama.cpp's), whose
/// chunks need not match srlm's field for field.
async fn one_request(client: &Client, request: &ChatCompletionRequest) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let mut response = client.chat_stream(request).await?;
    let mut buffer = String::new();
    let mut ttft = None;
    let mut tokens = 0;
    let mut done = false;
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data:").map(str::trim) else { continue };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(data)?;
            anyhow::ensure!(value.get("error").is_none(), "error event: {data}");
            let has_content = value["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty());
            if has_content && ttft.is_none() {
                ttft = Some(start.elapsed());
            }
            if let Some(n) = value["usage"]["completion_tokens"].as_u64() {
                tokens = n as usize;
            }
        }
    }
    anyhow::ensure!(done, "stream ended without [DONE]");
    let latency = start.elapsed();
    Ok(Sample { latency, ttft: ttft.unwrap_or(latency), tokens })
}
