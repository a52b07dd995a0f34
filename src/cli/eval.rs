//! The flags of `srlm eval …`, each turned into the typed configuration its command takes.

use std::path::PathBuf;

use clap::Args;

/// Where results are kept, and the chart drawn from them.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Postgres URL: results are stored there with the checkpoint measured (and served
    /// at GET /evaluations). Without it they are only printed.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Also draw the stored results of this kind, metric by iteration (a .svg or .png file).
    #[arg(long)]
    pub chart: Option<PathBuf>,
}

impl From<StoreArgs> for crate::eval::StoreConfig {
    fn from(a: StoreArgs) -> Self {
        Self { database_url: a.database_url, chart: a.chart }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ChartArgs {
    /// Postgres URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// `rm` or `h2h`.
    #[arg(long, default_value = "rm")]
    pub kind: String,
    /// The metric to draw (a key of the stored metrics, e.g. pairwise_accuracy,
    /// spearman, win_rate, lc_win_rate).
    #[arg(long, default_value = "pairwise_accuracy")]
    pub metric: String,
    /// Chart file to write (.svg or .png).
    #[arg(long)]
    pub out: PathBuf,
}

impl From<ChartArgs> for crate::eval::ChartConfig {
    fn from(a: ChartArgs) -> Self {
        Self { database_url: a.database_url, kind: a.kind, metric: a.metric, out: a.out }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EvalRmArgs {
    /// Base URL of the srlm server whose judge is measured.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Ranked set: JSONL lines `{"prompt": "...", "answers": [best, …, worst]}`.
    #[arg(long, default_value = "data/ranked.jsonl")]
    pub data: PathBuf,
    /// Judging methods to measure.
    #[arg(long, value_delimiter = ',', default_value = "sample,expected")]
    pub methods: Vec<crate::judge::JudgeMethod>,
    /// Judge samples per answer (paper: 3).
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// Use only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed for the judge's sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl From<EvalRmArgs> for crate::eval::rm::EvalRmConfig {
    fn from(a: EvalRmArgs) -> Self {
        Self { url: a.url, data: a.data, methods: a.methods, samples: a.samples, limit: a.limit, seed: a.seed, store: a.store.into() }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EvalH2hArgs {
    /// Model A: a server URL (`http://…`), a checkpoint id, or a model file.
    #[arg(long)]
    pub a: String,
    /// Model B, named the same way.
    #[arg(long)]
    pub b: String,
    /// The judge, named the same way (a hosted model works: give its URL, --judge-model
    /// and --judge-api-key-env).
    #[arg(long)]
    pub judge: String,
    /// Model name sent to server A.
    #[arg(long, default_value = "current")]
    pub a_model: String,
    /// Model name sent to server B.
    #[arg(long, default_value = "current")]
    pub b_model: String,
    /// Model name sent to the judge's server.
    #[arg(long, default_value = "current")]
    pub judge_model: String,
    /// Environment variable holding the judge server's API key.
    #[arg(long)]
    pub judge_api_key_env: Option<String>,
    /// Prompts: JSONL with `prompt`, `instruction` or `messages`, or a JSON array.
    #[arg(long, default_value = crate::selfinstruct::DEFAULT_SEED_PROMPTS)]
    pub prompts: PathBuf,
    /// Use only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature of A and B (0 = greedy; the judge is always greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Most new tokens per verdict.
    #[arg(long, default_value_t = 192)]
    pub judge_max_tokens: usize,
    /// Pairwise judge prompt with `{prompt}`, `{first}` and `{second}` (default:
    /// templates/pairwise.txt), ending in "Verdict: 1|2|tie".
    #[arg(long)]
    pub judge_template: Option<PathBuf>,
    /// Prompts in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Write every prompt's answers and verdicts as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl From<EvalH2hArgs> for crate::eval::h2h::EvalH2hConfig {
    fn from(a: EvalH2hArgs) -> Self {
        Self {
            a: a.a,
            b: a.b,
            judge: a.judge,
            a_model: a.a_model,
            b_model: a.b_model,
            judge_model: a.judge_model,
            judge_api_key_env: a.judge_api_key_env,
            prompts: a.prompts,
            limit: a.limit,
            max_tokens: a.max_tokens,
            temperature: a.temperature,
            judge_max_tokens: a.judge_max_tokens,
            judge_template: a.judge_template,
            concurrency: a.concurrency,
            out: a.out,
            store: a.store.into(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EvalIfevalArgs {
    /// The model: a server URL (`http://…`), a checkpoint id, or a model file.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub model: String,
    /// Model name sent to a server.
    #[arg(long, default_value = "current")]
    pub model_name: String,
    /// The prompts: JSONL lines `{"id", "prompt", "instructions"}`.
    #[arg(long, default_value = "data/ifeval.jsonl")]
    pub data: PathBuf,
    /// Use only the first N prompts (a quick subset, as the swap gate does).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy, the default: the measurement repeats).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Prompts in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Write every prompt's answer and outcome as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl From<EvalIfevalArgs> for crate::eval::ifeval::EvalIfevalConfig {
    fn from(a: EvalIfevalArgs) -> Self {
        Self {
            model: a.model,
            model_name: a.model_name,
            data: a.data,
            limit: a.limit,
            max_tokens: a.max_tokens,
            temperature: a.temperature,
            concurrency: a.concurrency,
            out: a.out,
            store: a.store.into(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EvalReviewsArgs {
    /// Postgres URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Store each checkpoint's agreement in `evaluations` (kind `review`).
    #[arg(long)]
    pub store: bool,
}

impl From<EvalReviewsArgs> for crate::eval::reviews::EvalReviewsConfig {
    fn from(a: EvalReviewsArgs) -> Self {
        Self { database_url: a.database_url, store: a.store }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ExportAlpacaArgs {
    /// The model: a server URL (`http://…`), a checkpoint id, or a model file.
    #[arg(long)]
    pub model: String,
    /// Model name sent to a server.
    #[arg(long, default_value = "current")]
    pub model_name: String,
    /// Prompts: AlpacaEval's evaluation set (a JSON array with `instruction`), or JSONL
    /// with `prompt`, `instruction` or `messages`.
    #[arg(long, default_value = crate::selfinstruct::DEFAULT_SEED_PROMPTS)]
    pub prompts: PathBuf,
    /// Use only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The `generator` name written with each output (default: from the model).
    #[arg(long)]
    pub generator: Option<String>,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Prompts in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Where to write the JSON array.
    #[arg(long)]
    pub out: PathBuf,
    /// Postgres URL, to look a checkpoint id up.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

impl From<ExportAlpacaArgs> for crate::eval::alpaca::ExportAlpacaConfig {
    fn from(a: ExportAlpacaArgs) -> Self {
        Self {
            model: a.model,
            model_name: a.model_name,
            prompts: a.prompts,
            limit: a.limit,
            generator: a.generator,
            max_tokens: a.max_tokens,
            temperature: a.temperature,
            concurrency: a.concurrency,
            out: a.out,
            database_url: a.database_url,
        }
    }
}
