//! The metrics' names, their descriptions and the process-wide Prometheus recorder
//! (served by `api::metrics` at `GET /metrics`). Latencies are real Prometheus
//! histograms (fixed buckets), so they can be aggregated across servers. This module
//! imports nothing of the crate: each part records its own events here (the engine its
//! tokens, the judge its samples, the pair policy its pairs, the server its requests).
//!
//! What is measured: requests by route and status with their latency, time to first
//! token, prompt and generated tokens, requests in flight and rejections, judge samples
//! and parse failures by method, pairs formed and ties, the active checkpoint, swaps and
//! their duration.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "srlm_http_requests_total";
pub const REQUEST_SECONDS: &str = "srlm_http_request_duration_seconds";
pub const TTFT_SECONDS: &str = "srlm_time_to_first_token_seconds";
pub const PROMPT_TOKENS: &str = "srlm_prompt_tokens_total";
pub const GENERATED_TOKENS: &str = "srlm_generated_tokens_total";
pub const IN_FLIGHT: &str = "srlm_requests_in_flight";
pub const REJECTED: &str = "srlm_requests_rejected_total";
pub const JUDGE_SAMPLES: &str = "srlm_judge_samples_total";
pub const JUDGE_UNPARSED: &str = "srlm_judge_parse_failures_total";
pub const PAIRS: &str = "srlm_pairs_formed_total";
pub const PAIR_TIES: &str = "srlm_pair_ties_total";
pub const ACTIVE_CHECKPOINT: &str = "srlm_active_checkpoint_id";
pub const SWAPS: &str = "srlm_swaps_total";
pub const SWAP_SECONDS: &str = "srlm_swap_duration_seconds";

const SECONDS_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// The process-wide recorder, installed on first use (`api::app` installs it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    describe_counter!(REQUESTS, "HTTP requests by route and status");
    describe_histogram!(REQUEST_SECONDS, Unit::Seconds, "Time to the response head, by route (streams: to the first byte)");
    describe_histogram!(TTFT_SECONDS, Unit::Seconds, "Time from the start of a generation to its first token");
    describe_counter!(PROMPT_TOKENS, "Prompt tokens of finished generations");
    describe_counter!(GENERATED_TOKENS, "Tokens generated");
    describe_gauge!(IN_FLIGHT, "Requests admitted and not finished (streams included)");
    describe_counter!(REJECTED, "Requests refused by admission control (429)");
    describe_counter!(JUDGE_SAMPLES, "Judge samples, by method");
    describe_counter!(JUDGE_UNPARSED, "Judge samples without a valid score, by method");
    describe_counter!(PAIRS, "Preference pairs formed by /generate");
    describe_counter!(PAIR_TIES, "Judged /generate requests that formed no pair because the scores tied");
    describe_gauge!(ACTIVE_CHECKPOINT, "Id of the checkpoint being served (0 before it is registered)");
    describe_counter!(SWAPS, "Checkpoint swaps, by outcome");
    describe_histogram!(SWAP_SECONDS, Unit::Seconds, "Time to load a checkpoint and swap it in");
}

pub fn judge_samples(method: &'static str, samples: usize, parsed: usize) {
    counter!(JUDGE_SAMPLES, "method" => method).increment(samples as u64);
    counter!(JUDGE_UNPARSED, "method" => method).increment((samples - parsed) as u64);
}

pub fn swap(outcome: &'static str, seconds: Option<f64>) {
    counter!(SWAPS, "outcome" => outcome).increment(1);
    if let Some(s) = seconds {
        histogram!(SWAP_SECONDS).record(s);
    }
}

pub fn rejected(reason: &'static str) {
    counter!(REJECTED, "reason" => reason).increment(1);
}

/// A pair formed by the pair policy.
pub fn pair_formed() {
    counter!(PAIRS).increment(1);
}

/// A judged request that formed no pair because its scores tied.
pub fn pair_tie() {
    counter!(PAIR_TIES).increment(1);
}
