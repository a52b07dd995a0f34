//! Command-line interface: one clap struct per subcommand, parsed once in `main`.

pub mod bench;
pub mod data;
pub mod eval;
pub mod train;

use std::path::PathBuf;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::engine::load::{EngineChoice, EngineOptions};
use crate::model::gguf::WeightsChoice;
use crate::telemetry::LogFormat;

pub use bench::*;
pub use train::*;

/// The model `srlm serve` hosts when none is named (fetched by scripts/fetch-model.sh).
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, Parser)]
#[command(name = "srlm", version, about = "Self-Rewarding Language Models: serve, judge, train, repeat")]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text", env = "SRLM_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The command line, and which flags it gave (`srlm loop`'s preset fills the rest).
    pub fn parse_with_matches() -> (Self, ArgMatches) {
        Self::try_parse_with_matches(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    pub fn try_parse_with_matches<I, T>(argv: I) -> Result<(Self, ArgMatches), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(argv)?;
        Ok((Self::from_arg_matches(&matches)?, matches))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Print the OpenAPI document (or write it to a file).
    Openapi(OpenapiArgs),
    /// Measure a running server (loopback targets; bounded in requests and time), or
    /// the trainer.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Make new prompts with the served model (few-shot from seed prompts), filter out
    /// near duplicates and store the rest for the next iteration.
    SelfInstruct(data::SelfInstructArgs),
    /// Run whole self-rewarding iterations against a running server: new prompts →
    /// judged candidates → pairs → DPO → swap → report. Resumable.
    Loop(LoopArgs),
    /// Measure a checkpoint (through a running server).
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Train the next checkpoint: SFT from chat JSONL, or DPO on the pairs in Postgres.
    #[command(subcommand)]
    Train(TrainCommand),
    /// Data in and out: Open Assistant import, pairs for TRL, checkable requests and
    /// verifiable judge pairs.
    #[command(subcommand)]
    Data(DataCommand),
    /// Checkpoints trained elsewhere.
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Build IFT, EFT (train and eval) and a ranked evaluation set from an Open
    /// Assistant message-tree export.
    ImportOasst(data::ImportOasstArgs),
    /// Write preference pairs as TRL conversational JSONL (prompt/chosen/rejected).
    ExportPairs(data::ExportPairsArgs),
    /// Write requests with checkable instructions (the `eval` split is the committed
    /// yardstick, data/ifeval.jsonl; the `train` split never overlaps it).
    MakeIfeval(data::MakeIfevalArgs),
    /// Verifiable judge pairs: a model's sampled answers to checkable requests, one that
    /// followed every instruction against one that did not (for `eval rm --data`).
    MakeJudgePairs(data::MakeJudgePairsArgs),
    /// Judge training data written by the model itself (the paper's EFT recipe): its
    /// judgments of human-scored responses, kept where they agree with the human order.
    MakeEft(data::MakeEftArgs),
}

#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// Register a GGUF file or HF safetensors directory trained elsewhere, with its parent.
    Import(data::ImportCheckpointArgs),
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Reward-model quality: the judge's scores against a human ranking (pairwise
    /// accuracy, 5-best %, exact match %, Spearman, Kendall τ, parse rate) per method.
    Rm(eval::EvalRmArgs),
    /// Model A against model B on a prompt set, judged pairwise in both orders: win,
    /// tie and loss rates, length statistics and a length-controlled win rate.
    H2h(eval::EvalH2hArgs),
    /// The objective yardstick: held-out requests with checkable instructions;
    /// prompt- and instruction-level accuracy, strict and loose, with 95 % intervals.
    Ifeval(eval::EvalIfevalArgs),
    /// Judge–human agreement per checkpoint, from people's reviews of pairs.
    Reviews(eval::EvalReviewsArgs),
    /// A model's answers on a prompt set in AlpacaEval's model-outputs JSON.
    ExportAlpaca(eval::ExportAlpacaArgs),
    /// Draw a stored metric by iteration as an SVG or PNG chart.
    Chart(eval::ChartArgs),
    /// The swap gate on two checkpoints: would it let --child replace --parent? (The
    /// same measures and rule as `srlm loop`'s gate; for checkpoints trained elsewhere.)
    Gate(EvalGateArgs),
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// M(t+1) = DPO(M(t)) on the preference pairs M(t) made (claimed from Postgres).
    Dpo(DpoArgs),
    /// Supervised fine-tuning on chat JSONL files (IFT and EFT data): M1 = SFT(M0).
    Sft(SftArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Model to serve: a .gguf file, an HF safetensors directory, or a Hugging Face id.
    #[arg(long, env = "SRLM_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Name clients use for the model (default: the file name without extension).
    #[arg(long, env = "SRLM_MODEL_NAME")]
    pub model_name: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "SRLM_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, env = "SRLM_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Engine: `native` (srlm's Llama model, batched on CPU), `mistralrs`, or `auto`
    /// (native for Llama-family models on CPU, mistralrs otherwise).
    #[arg(long, env = "SRLM_ENGINE", value_enum, default_value = "auto")]
    pub engine: EngineChoice,
    /// Postgres URL; migrations run at startup.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Sequences the engine decodes together where batching is correct (CUDA). On CPU
    /// mistralrs 0.8.1 mixes up batched sequences, so there it runs one at a time.
    #[arg(long, env = "SRLM_MAX_SEQS", default_value_t = crate::engine::load::DEFAULT_MAX_SEQS)]
    pub max_seqs: usize,
    /// Prompt tokens the native engine prefills per step (shared by new sequences).
    #[arg(long, env = "SRLM_PREFILL_CHUNK", default_value_t = crate::engine::load::DEFAULT_PREFILL_CHUNK)]
    pub prefill_chunk: usize,
    /// Sequences kept in mistralrs' prefix cache (0 = off).
    #[arg(long, env = "SRLM_PREFIX_CACHE", default_value_t = 0)]
    pub prefix_cache: usize,
    /// Tokens the paged KV cache holds on a GPU (mistralrs), all sequences together
    /// (default: 4096 × --max-seqs).
    #[arg(long, env = "SRLM_KV_CACHE_TOKENS")]
    pub kv_cache_tokens: Option<usize>,
    /// Run on CPU even when a GPU is available.
    #[arg(long, env = "SRLM_CPU")]
    pub cpu: bool,
    /// Weight type to serve a GGUF model with. The native engine: `auto` (and `as-is`)
    /// serve Q4_0/Q4_1 matrices as the file stores them, with 4-bit kernels, and
    /// everything else as Q8_0; `q8_0` re-encodes all as Q8_0. mistralrs: `auto`
    /// re-encodes Q4_1 as Q8_0 on CPU (candle has SIMD kernels for Q8_0, not Q4_1), the
    /// copy written once beside the model and reused. `/ready` says what is served.
    #[arg(long, env = "SRLM_WEIGHTS", value_enum, default_value = "auto")]
    pub weights: WeightsChoice,
    /// Requests admitted at once (running or queued); beyond it, 429 with Retry-After.
    #[arg(long, env = "SRLM_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = "SRLM_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Largest `n` (choices per request).
    #[arg(long, env = "SRLM_MAX_N", default_value_t = 16)]
    pub max_n: usize,
    /// Largest `max_tokens` a request may ask for.
    #[arg(long, env = "SRLM_MAX_TOKENS", default_value_t = 4096)]
    pub max_tokens: usize,
    /// Judge prompt template with `{prompt}` and `{response}` placeholders (default: the
    /// project's additive 5-point rubric, templates/judge.txt).
    #[arg(long, env = "SRLM_JUDGE_TEMPLATE")]
    pub judge_template: Option<PathBuf>,
    /// Seed prompts `POST /admin/self-instruct` writes from when a request gives none.
    #[arg(long, env = "SRLM_SEED_PROMPTS", default_value = crate::selfinstruct::DEFAULT_SEED_PROMPTS)]
    pub seed_prompts: PathBuf,
    /// Smallest chosen − rejected score difference that makes a preference pair.
    #[arg(long, env = "SRLM_MIN_MARGIN", default_value_t = 0.0)]
    pub min_margin: f32,
    /// Length control: scores within this band of the top count as equal and the
    /// shortest is chosen (Meta-Rewarding). Off unless given.
    #[arg(long, env = "SRLM_LENGTH_BAND")]
    pub length_band: Option<f32>,
    /// Largest number of judge samples per candidate.
    #[arg(long, env = "SRLM_MAX_JUDGE_SAMPLES", default_value_t = 16)]
    pub max_judge_samples: usize,
    /// Most prompts one `POST /admin/self-instruct` may ask for (`count`).
    #[arg(long, env = "SRLM_MAX_SELF_INSTRUCT", default_value_t = 256)]
    pub max_self_instruct: usize,
    /// Bearer token for the admin routes (`/admin/...`: hot-swap, rollback); without it
    /// they answer 403.
    #[arg(long, env = "SRLM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File of API keys (one per line, `#` comments) the inference, self-rewarding and
    /// record routes require as `Authorization: Bearer <key>`. Without keys (here or in
    /// --api-keys) those routes are open.
    #[arg(long, env = "SRLM_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// API keys, comma-separated (added to --api-keys-file's).
    #[arg(long, env = "SRLM_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// Routes served without an API key (comma-separated; a path also opens what lies
    /// under it).
    #[arg(long, env = "SRLM_OPEN_ROUTES", default_value = crate::api::auth::DEFAULT_OPEN_ROUTES)]
    pub open_routes: String,
    /// Activate every checkpoint a trainer announces (Postgres LISTEN/NOTIFY), so that
    /// `srlm train dpo` results are served as soon as they are registered.
    #[arg(long, env = "SRLM_FOLLOW")]
    pub follow: bool,
    /// Most prompt tokens a request may send (after the chat template); 400 beyond.
    /// Default: the model's context.
    #[arg(long, env = "SRLM_MAX_PROMPT_TOKENS")]
    pub max_prompt_tokens: Option<usize>,
    /// After SIGTERM or Ctrl-C, seconds to let requests in flight finish before exiting.
    #[arg(long, env = "SRLM_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Longest a request may take to its response head (504 beyond); streams are
    /// bounded by `max_tokens`.
    #[arg(long, env = "SRLM_REQUEST_TIMEOUT_SECS", default_value_t = 600)]
    pub request_timeout_secs: u64,
    /// `max_tokens` of chat requests that name none.
    #[arg(long, env = "SRLM_DEFAULT_MAX_TOKENS", default_value_t = 512)]
    pub default_max_tokens: usize,
}

#[derive(Debug, Clone, Args)]
pub struct OpenapiArgs {
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl ServeArgs {
    /// The engine these flags ask for.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            model: self.model.clone(),
            name: self.model_name.clone(),
            choice: self.engine,
            max_seqs: self.max_seqs,
            prefill_chunk: self.prefill_chunk,
            prefix_cache: self.prefix_cache,
            kv_cache_tokens: self.kv_cache_tokens,
            force_cpu: self.cpu,
            weights: self.weights,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loop_args(extra: &[&str]) -> LoopArgs {
        let argv = [&["srlm", "loop", "--database-url", "postgres://x", "--admin-token", "t"], extra].concat();
        let (cli, given) = Cli::try_parse_with_matches(argv).unwrap();
        let Command::Loop(args) = cli.command else { unreachable!("parsed as loop") };
        args.with_preset(&given)
    }

    #[test]
    fn the_small_preset_fills_what_was_not_given_and_the_paper_keeps_the_defaults() {
        let small = loop_args(&[]);
        assert_eq!((small.samples, small.method, small.max_tokens), (1, crate::judge::JudgeMethod::Expected, 192));
        assert_eq!((small.dpo.lr, small.dpo.final_lr, small.dpo.common.epochs, small.dpo.common.batch_size), (5e-6, 5e-7, 2, 8));
        let given = loop_args(&["--samples", "3", "--lr", "2e-6", "--batch-size", "4"]);
        assert_eq!((given.samples, given.dpo.lr, given.dpo.common.batch_size, given.dpo.common.epochs), (3, 2e-6, 4, 2));
        let paper = loop_args(&["--preset", "paper"]);
        assert_eq!((paper.samples, paper.method, paper.max_tokens), (3, crate::judge::JudgeMethod::Sample, 256));
        assert_eq!((paper.dpo.lr, paper.dpo.final_lr, paper.dpo.common.epochs, paper.dpo.common.batch_size), (1e-6, 1e-7, 1, 16));
    }

    #[test]
    fn the_loop_trains_its_checkpoints_where_it_is_told_and_seeds_with_the_training_seed() {
        let config = loop_args(&["--out-dir", "/tmp/m", "--seed", "7", "--gate", "off"]).config();
        assert_eq!((config.out_dir.as_deref(), config.seed, config.dpo.train.optim.seed), (Some(std::path::Path::new("/tmp/m")), 7, 7));
        assert!(config.gate.is_none());
    }
}
