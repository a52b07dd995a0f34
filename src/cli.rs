//! Command-line interface: one clap struct per subcommand, parsed once in `main`.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::engine::load::{EngineChoice, EngineOptions};
use crate::model::gguf::WeightsChoice;
use crate::telemetry::LogFormat;
use crate::train::dpo::DpoConfig;
use crate::train::model::{LoraConfig, Trainable};
use crate::train::optim::Decay;
use crate::train::settings::{DpoJob, Output, SftJob, TrainSettings, Watch};
use crate::train::trainer::OptimConfig;

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
    SelfInstruct(crate::selfinstruct::SelfInstructArgs),
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
    ImportOasst(crate::data::oasst::ImportOasstArgs),
    /// Write preference pairs as TRL conversational JSONL (prompt/chosen/rejected).
    ExportPairs(crate::data::pairs::ExportPairsArgs),
    /// Write requests with checkable instructions (the `eval` split is the committed
    /// yardstick, data/ifeval.jsonl; the `train` split never overlaps it).
    MakeIfeval(crate::data::ifeval::MakeIfevalArgs),
    /// Verifiable judge pairs: a model's sampled answers to checkable requests, one that
    /// followed every instruction against one that did not (for `eval rm --data`).
    MakeJudgePairs(crate::data::ifeval::MakeJudgePairsArgs),
    /// Judge training data written by the model itself (the paper's EFT recipe): its
    /// judgments of human-scored responses, kept where they agree with the human order.
    MakeEft(crate::data::eft::MakeEftArgs),
}

#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// Register a GGUF file or HF safetensors directory trained elsewhere, with its parent.
    Import(crate::checkpoint::import::ImportCheckpointArgs),
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Reward-model quality: the judge's scores against a human ranking (pairwise
    /// accuracy, 5-best %, exact match %, Spearman, Kendall τ, parse rate) per method.
    Rm(crate::eval::rm::EvalRmArgs),
    /// Model A against model B on a prompt set, judged pairwise in both orders: win,
    /// tie and loss rates, length statistics and a length-controlled win rate.
    H2h(crate::eval::h2h::EvalH2hArgs),
    /// The objective yardstick: held-out requests with checkable instructions;
    /// prompt- and instruction-level accuracy, strict and loose, with 95 % intervals.
    Ifeval(crate::eval::ifeval::EvalIfevalArgs),
    /// Judge–human agreement per checkpoint, from people's reviews of pairs.
    Reviews(crate::eval::reviews::EvalReviewsArgs),
    /// A model's answers on a prompt set in AlpacaEval's model-outputs JSON.
    ExportAlpaca(crate::eval::alpaca::ExportAlpacaArgs),
    /// Draw a stored metric by iteration as an SVG or PNG chart.
    Chart(crate::eval::ChartArgs),
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
pub struct DpoArgs {
    /// Postgres URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Checkpoint id whose pairs to train on; it is also the starting point and the
    /// reference (default: the active checkpoint).
    #[arg(long)]
    pub checkpoint: Option<i64>,
    /// Keep running: whenever the active checkpoint has --min-pairs available pairs,
    /// train on them, register the result and announce it (servers started with
    /// --follow swap it in); then wait for the next batch. Stop with Ctrl-C.
    #[arg(long, conflicts_with_all = ["checkpoint", "dry_run"])]
    pub watch: bool,
    /// Register the checkpoint without announcing it to servers started with --follow.
    #[arg(long)]
    pub no_announce: bool,
    /// With --watch: available pairs needed to start a run.
    #[arg(long, default_value_t = 64)]
    pub min_pairs: i64,
    /// With --watch: seconds between looks at the pair count.
    #[arg(long, default_value_t = 10)]
    pub poll_secs: u64,
    /// Most pairs to claim (default: all available).
    #[arg(long)]
    pub max_pairs: Option<i64>,
    /// Train on the preference pairs of this JSONL file instead of pairs in Postgres:
    /// TRL's format (`prompt`, `chosen`, `rejected` as text or message lists; what
    /// `srlm data export-pairs` writes). The run is recorded and its checkpoint
    /// registered as a child of --checkpoint (default: the active checkpoint).
    #[arg(long, conflicts_with_all = ["watch", "max_pairs"])]
    pub pairs: Option<PathBuf>,
    /// Seconds a claim lasts without renewal; the trainer renews it while it runs, and
    /// pairs of a trainer that died become claimable when it runs out.
    #[arg(long, default_value_t = 600)]
    pub lease_secs: u64,
    #[command(flatten)]
    pub dpo: DpoOptions,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How DPO trains (`srlm train dpo` and `srlm loop`).
#[derive(Debug, Clone, Args)]
pub struct DpoOptions {
    /// DPO loss.
    #[arg(long, value_enum, default_value = "sigmoid")]
    pub loss: crate::train::dpo::DpoLoss,
    /// β: how far the policy may move from the reference.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Label smoothing ε (conservative DPO for `sigmoid`, the noise rate for `robust`).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Peak learning rate (paper: 1e-6).
    #[arg(long, default_value_t = 1e-6)]
    pub lr: f64,
    /// Learning rate at the last step (paper: 1e-7).
    #[arg(long, default_value_t = 1e-7)]
    pub final_lr: f64,
    #[command(flatten)]
    pub common: TrainArgs,
}

/// `srlm loop`'s scale: the settings a flag left at its default take from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// Small models on a few CPU cores (README, "Results"): one `expected` judge sample per
    /// answer, answers of at most 192 tokens, DPO at lr 5e-6 → 5e-7 for 2 epochs in
    /// batches of 8. These replace the defaults `--help` shows (the paper's).
    Small,
    /// The paper's: 3 sampled verdicts, 256 tokens, lr 1e-6 → 1e-7, 1 epoch, batches of 16.
    Paper,
}

/// Whether the swap gate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GateMode {
    On,
    Off,
}

/// How the swap gate measures (`srlm loop` and `srlm eval gate`).
#[derive(Debug, Clone, Args)]
pub struct GateArgs {
    /// The yardstick the gate takes its quick subset from.
    #[arg(long, default_value = "data/ifeval.jsonl")]
    pub gate_ifeval: PathBuf,
    /// Prompts of the yardstick the gate measures (its first N; default: all 320). On 48
    /// prompts the gate let a checkpoint trained on reversed pairs through (−6.9 points
    /// [−16.4, +2.6]); on all 320 it refused it (−12.4 [−16.0, −8.8]).
    #[arg(long, default_value_t = 320)]
    pub gate_prompts: usize,
    /// Verifiable judge pairs for the gate and the policy's movement (skipped when the
    /// file does not exist).
    #[arg(long, default_value = "data/verifiable_pairs.jsonl")]
    pub gate_pairs: PathBuf,
    /// Pairs of that file the gate judges.
    #[arg(long, default_value_t = 48)]
    pub gate_pair_limit: usize,
    /// Largest tolerated drop on either measure (0.05 = 5 accuracy points), at the upper
    /// end of the paired change's 95 % interval; 0 refuses any drop the interval is sure of.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub gate_margin: f64,
    /// Most new tokens per gate answer.
    #[arg(long, default_value_t = 192)]
    pub gate_max_tokens: usize,
}

impl GateArgs {
    /// The gate's settings; the judge pairs are skipped when their file does not exist.
    pub fn settings(&self, concurrency: usize) -> crate::eval::gate::GateSettings {
        crate::eval::gate::GateSettings {
            ifeval: self.gate_ifeval.clone(),
            prompts: self.gate_prompts,
            pairs: self.gate_pairs.exists().then(|| self.gate_pairs.clone()),
            pair_limit: self.gate_pair_limit,
            margin: self.gate_margin,
            max_tokens: self.gate_max_tokens,
            concurrency,
        }
    }
}

/// `srlm eval gate`: would the swap gate let `--child` replace `--parent`?
#[derive(Debug, Clone, Args)]
pub struct EvalGateArgs {
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// The checkpoint serving now (id).
    #[arg(long)]
    pub parent: i64,
    /// The checkpoint that would replace it (id): a refusal is recorded on it (status
    /// `refused`, the reasons as its error) and the command exits with an error.
    #[arg(long)]
    pub child: i64,
    /// Prompts and judge pairs measured at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    #[command(flatten)]
    pub gate: GateArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LoopArgs {
    /// Base URL of the running srlm server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// The server's admin token (to swap in each new checkpoint).
    #[arg(long, env = "SRLM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// Iterations to run (M(t) → M(t+1) each).
    #[arg(long, default_value_t = 1)]
    pub iterations: usize,
    /// New prompts per iteration.
    #[arg(long, default_value_t = 16)]
    pub prompts: usize,
    /// Seed prompts for self-instruction.
    #[arg(long, default_value = crate::selfinstruct::DEFAULT_SEED_PROMPTS)]
    pub seeds: PathBuf,
    /// Candidates per prompt (paper: 4).
    #[arg(long, default_value_t = 4)]
    pub n: usize,
    /// Judge samples per candidate (paper: 3).
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// Judging method.
    #[arg(long, value_enum, default_value = "sample")]
    pub method: crate::judge::JudgeMethod,
    /// Most new tokens per candidate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Prompts answered and judged at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Fewest pairs worth training on.
    #[arg(long, default_value_t = 1)]
    pub min_pairs: i64,
    /// After each swap, measure the new checkpoint's judge on this ranked set (`srlm
    /// eval rm` with --method and --samples) and store it with the iteration.
    #[arg(long)]
    pub eval_ranked: Option<PathBuf>,
    /// With --eval-ranked: use only its first N prompts.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// What decides each pair: judge (the paper), verify or judge+verify (see
    /// `POST /generate`'s `reward`).
    #[arg(long, value_enum, default_value = "judge")]
    pub reward: crate::judge::Reward,
    /// Share (0–1) of each iteration's prompts taken from the generator of requests
    /// with checkable instructions; the rest are written by the model.
    #[arg(long, default_value_t = 0.0)]
    pub verifiable_share: f64,
    /// The swap gate: measure M(t+1) against M(t) before activating it, and keep M(t)
    /// serving when M(t+1) is worse for sure (the 95 % interval of the paired change,
    /// item by item, wholly below -(--gate-margin)). Run the server without
    /// --follow, so that only the loop activates checkpoints.
    #[arg(long, value_enum, default_value = "on")]
    pub gate: GateMode,
    #[command(flatten)]
    pub gate_with: GateArgs,
    /// Where each iteration's checkpoint is written, as m<t>.gguf (default: beside its
    /// base, named after the training run).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Settings for the scale the loop runs at; flags given explicitly win.
    #[arg(long, value_enum, default_value = "small")]
    pub preset: Preset,
    /// How each iteration trains (`srlm train dpo`'s options; --seed also seeds the
    /// prompts the loop generates).
    #[command(flatten)]
    pub dpo: DpoOptions,
}

impl LoopArgs {
    /// The flags with the preset applied to those `given` (the command line's matches)
    /// left at their defaults.
    pub fn with_preset(&self, given: &ArgMatches) -> Self {
        let mut args = self.clone();
        if self.preset == Preset::Paper {
            return args;
        }
        let given = given.subcommand_matches("loop").unwrap_or(given);
        let unset = |id: &str| matches!(given.value_source(id), None | Some(ValueSource::DefaultValue));
        if unset("samples") {
            args.samples = 1;
        }
        if unset("method") {
            args.method = crate::judge::JudgeMethod::Expected;
        }
        if unset("max_tokens") {
            args.max_tokens = 192;
        }
        if unset("lr") {
            args.dpo.lr = 5e-6;
        }
        if unset("final_lr") {
            args.dpo.final_lr = 5e-7;
        }
        if unset("epochs") {
            args.dpo.common.epochs = 2;
        }
        if unset("batch_size") {
            args.dpo.common.batch_size = 8;
        }
        args
    }

    pub fn config(&self) -> crate::selfloop::LoopConfig {
        let gate = self.gate_with.settings(self.concurrency.max(4));
        crate::selfloop::LoopConfig {
            url: self.url.clone(),
            database_url: self.database_url.clone(),
            admin_token: self.admin_token.clone(),
            iterations: self.iterations,
            prompts: self.prompts,
            seeds: self.seeds.clone(),
            n: self.n,
            samples: self.samples,
            method: self.method,
            max_tokens: self.max_tokens,
            concurrency: self.concurrency,
            min_pairs: self.min_pairs,
            seed: self.dpo.common.seed,
            eval_ranked: self.eval_ranked.clone(),
            eval_limit: self.eval_limit,
            reward: self.reward,
            verifiable_share: self.verifiable_share,
            movement_pairs: gate.pairs.clone().map(|p| (p, gate.pair_limit)),
            gate: (self.gate == GateMode::On).then_some(gate),
            dpo: self.dpo.job(&self.database_url, None, Output::default()),
            out_dir: self.out_dir.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SftArgs {
    /// Model to start from: a .gguf file or an HF safetensors directory.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// JSONL files of `{"messages": [...]}` whose last message is the answer.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Postgres URL: when given, the run and its checkpoint are recorded there.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Peak learning rate (paper: 5.5e-6).
    #[arg(long, default_value_t = 5.5e-6)]
    pub lr: f64,
    /// Learning rate at the last step (paper: 1.1e-6).
    #[arg(long, default_value_t = 1.1e-6)]
    pub final_lr: f64,
    #[command(flatten)]
    pub common: TrainArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where a run's checkpoint goes.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Where to write the new checkpoint (default: beside the base, named after the run).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name of the new checkpoint (default: from the output file).
    #[arg(long)]
    pub name: Option<String>,
    /// Print what would be trained (examples, tokens, memory estimate) and stop.
    #[arg(long)]
    pub dry_run: bool,
}

/// Options SFT and DPO share.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Weight type of the written GGUF checkpoint (k-quants are not offered: they need
    /// rows divisible by 256).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: crate::model::gguf::WeightType,
    /// Passes over the data.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Examples per optimizer step (paper: 16).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Examples per forward/backward pass; their gradients add up to a batch.
    #[arg(long, default_value_t = 1)]
    pub micro_batch: usize,
    /// Learning-rate decay after warm-up (default: linear for DPO, cosine for SFT).
    #[arg(long, value_enum)]
    pub decay: Option<crate::train::optim::Decay>,
    /// Fraction of the steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// Clip the global gradient norm to this (0 = no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Seed for the data order and adapter initialization.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Longest prompt + answer in tokens.
    #[arg(long, default_value_t = 1024)]
    pub max_len: usize,
    /// What to do with examples longer than --max-len.
    #[arg(long, value_enum, default_value = "prompt")]
    pub truncation: crate::train::data::Truncation,
    /// Keep the token embeddings fixed.
    #[arg(long)]
    pub freeze_embeddings: bool,
    /// Keep the bottom K transformer layers fixed.
    #[arg(long, default_value_t = 0)]
    pub freeze_layers: usize,
    /// Train rank-R LoRA adapters on the attention and MLP projections instead of the
    /// weights (0 = full fine-tuning); they are merged into the written checkpoint.
    #[arg(long, default_value_t = 0)]
    pub lora_rank: usize,
    /// LoRA α (default: 2 × rank).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
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

impl TrainArgs {
    /// The settings of a run with this peak and final learning rate (`decay` unless
    /// --decay names another).
    pub fn settings(&self, lr: f64, final_lr: f64, decay: Decay) -> TrainSettings {
        TrainSettings {
            optim: OptimConfig {
                epochs: self.epochs.max(1),
                lr,
                final_lr,
                decay: self.decay.unwrap_or(decay),
                warmup_ratio: self.warmup_ratio,
                batch_size: self.batch_size.max(1),
                micro_batch: self.micro_batch.max(1),
                max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
                weight_decay: self.weight_decay,
                seed: self.seed,
            },
            trainable: Trainable {
                freeze_embeddings: self.freeze_embeddings,
                freeze_layers: self.freeze_layers,
                lora: (self.lora_rank > 0)
                    .then(|| LoraConfig { rank: self.lora_rank, alpha: self.lora_alpha.unwrap_or(2.0 * self.lora_rank as f64) }),
            },
            max_len: self.max_len,
            truncation: self.truncation,
            dtype: self.dtype,
        }
    }
}

impl OutputArgs {
    pub fn output(&self) -> Output {
        Output { out: self.out.clone(), name: self.name.clone(), dry_run: self.dry_run }
    }
}

impl DpoOptions {
    /// A DPO run of checkpoint `checkpoint`'s pairs (default: the active checkpoint's).
    pub fn job(&self, database_url: &str, checkpoint: Option<i64>, output: Output) -> DpoJob {
        DpoJob {
            database_url: database_url.to_string(),
            checkpoint,
            max_pairs: None,
            pairs_file: None,
            lease: Duration::from_secs(600),
            announce: true,
            dpo: DpoConfig { loss: self.loss, beta: self.beta, label_smoothing: self.label_smoothing },
            train: self.common.settings(self.lr, self.final_lr, Decay::Linear),
            output,
        }
    }
}

impl DpoArgs {
    pub fn job(&self) -> (DpoJob, Option<Watch>) {
        let job = DpoJob {
            max_pairs: self.max_pairs,
            pairs_file: self.pairs.clone(),
            lease: Duration::from_secs(self.lease_secs),
            announce: !self.no_announce,
            ..self.dpo.job(&self.database_url, self.checkpoint, self.output.output())
        };
        let watch = self.watch.then(|| Watch { min_pairs: self.min_pairs, poll: Duration::from_secs(self.poll_secs) });
        (job, watch)
    }
}

impl SftArgs {
    pub fn job(&self) -> SftJob {
        SftJob {
            model: self.model.clone(),
            data: self.data.clone(),
            database_url: self.database_url.clone(),
            train: self.common.settings(self.lr, self.final_lr, Decay::Cosine),
            output: self.output.output(),
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
