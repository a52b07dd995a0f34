//! The flags of `srlm train …`, `srlm loop` and `srlm eval gate`, and the typed jobs
//! and configurations they become.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

use super::DEFAULT_MODEL;
use crate::train::dpo::DpoConfig;
use crate::train::model::{LoraConfig, Trainable};
use crate::train::optim::Decay;
use crate::train::settings::{DpoJob, Output, SftJob, TrainSettings, Watch};
use crate::train::trainer::OptimConfig;

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
