//! The flags of `srlm bench …` (the benchmarks are commands themselves).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::DEFAULT_MODEL;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Streamed chat: tokens/s, requests/s, latency and time-to-first-token percentiles.
    Chat(BenchArgs),
    /// `/generate` with judging at paper settings: scored candidates per minute, pairs
    /// per hour, parse and tie rates.
    Generate(GenerateBenchArgs),
    /// DPO training speed and peak memory on synthetic pairs (no server, no database).
    Train(TrainBenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TrainBenchArgs {
    /// Model to train.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Pairs to train on (one optimizer step per --batch-size pairs).
    #[arg(long, default_value_t = 16)]
    pub pairs: usize,
    /// Prompt tokens per pair.
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// Tokens per answer (chosen and rejected each).
    #[arg(long, default_value_t = 128)]
    pub answer_len: usize,
    /// Pairs per optimizer step.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Pairs per forward/backward pass.
    #[arg(long, default_value_t = 1)]
    pub micro_batch: usize,
    /// `full`, `lora` (rank 16 on every projection) or `freeze` (embeddings and the
    /// bottom half of the layers fixed).
    #[arg(long, default_value = "full")]
    pub mode: String,
    /// Write the result as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct GenerateBenchArgs {
    /// Base URL of a running srlm server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Judging methods to measure, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "sample,constrained,expected")]
    pub methods: Vec<crate::judge::JudgeMethod>,
    /// Prompts judged at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Prompts per method.
    #[arg(long, default_value_t = 4)]
    pub prompts: usize,
    /// Candidates per prompt (paper: 4).
    #[arg(long, default_value_t = 4)]
    pub n: usize,
    /// Judge samples per candidate (paper: 3).
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// Most new tokens per candidate and per judge sample.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Record in Postgres (as the loop does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub record: bool,
    /// Stop a method after this many seconds, whatever is left.
    #[arg(long, default_value_t = 1200)]
    pub time_limit_s: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Base URL of a running srlm (or any OpenAI-compatible) server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Model name to send.
    #[arg(long, default_value = "current")]
    pub model: String,
    /// Concurrency levels to measure, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub concurrency: Vec<usize>,
    /// Requests per concurrency level (at least the concurrency).
    #[arg(long, default_value_t = 32)]
    pub requests: usize,
    /// Tokens to generate per request.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    /// Generate every answer to --max-tokens (ignore end-of-sequence), as throughput
    /// benchmarks do.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Stop a level after this many seconds, whatever is left.
    #[arg(long, default_value_t = 600)]
    pub time_limit_s: u64,
    /// Prompts to cycle through (default: a built-in set of varied questions).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A label stored with the results (e.g. the build setting).
    #[arg(long, default_value = "")]
    pub label: String,
}
