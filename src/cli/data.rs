//! The flags of `srlm data …`, `srlm self-instruct` and `srlm checkpoints import`, each
//! turned into the typed configuration its command takes.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ImportOasstArgs {
    /// The message-tree export: JSONL, one tree per line.
    pub file: PathBuf,
    /// Folder to write ift.jsonl, eft.train.jsonl, eft.eval.jsonl and ranked.jsonl to.
    #[arg(long, default_value = "data/oasst")]
    pub out: PathBuf,
    /// Language of the prompts to keep.
    #[arg(long, default_value = "en")]
    pub lang: String,
    /// Percent of the trees held out for evaluation (EFT eval and the ranked set).
    #[arg(long, default_value_t = 20)]
    pub eval_percent: u64,
    /// Judge template the EFT prompts are wrapped in (default: templates/judge.txt).
    #[arg(long)]
    pub judge_template: Option<PathBuf>,
}

impl From<ImportOasstArgs> for crate::data::oasst::ImportOasstConfig {
    fn from(a: ImportOasstArgs) -> Self {
        Self { file: a.file, out: a.out, lang: a.lang, eval_percent: a.eval_percent, judge_template: a.judge_template }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ExportPairsArgs {
    /// Postgres URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Only pairs made by this checkpoint.
    #[arg(long)]
    pub checkpoint: Option<i64>,
    /// Only pairs made by checkpoints of this iteration (M0 = 0).
    #[arg(long)]
    pub iteration: Option<i32>,
    /// Only pairs of this status: available, claimed or consumed.
    #[arg(long, value_parser = ["available", "claimed", "consumed"])]
    pub status: Option<String>,
    /// Where to write the JSONL (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl From<ExportPairsArgs> for crate::data::pairs::ExportPairsConfig {
    fn from(a: ExportPairsArgs) -> Self {
        Self { database_url: a.database_url, checkpoint: a.checkpoint, iteration: a.iteration, status: a.status, out: a.out }
    }
}

#[derive(Debug, Clone, Args)]
pub struct MakeIfevalArgs {
    /// `eval` (the held-out yardstick) or `train` (for self-instruction).
    #[arg(long, value_enum, default_value = "eval")]
    pub split: crate::verify::prompts::Split,
    /// Prompts to write.
    #[arg(long, default_value_t = 320)]
    pub count: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// JSONL file to write.
    #[arg(long, default_value = "data/ifeval.jsonl")]
    pub out: PathBuf,
}

impl From<MakeIfevalArgs> for crate::data::ifeval::MakeIfevalConfig {
    fn from(a: MakeIfevalArgs) -> Self {
        Self { split: a.split, count: a.count, seed: a.seed, out: a.out }
    }
}

#[derive(Debug, Clone, Args)]
pub struct MakeJudgePairsArgs {
    /// The model whose answers are paired: a server URL, a checkpoint id or a model file.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub model: String,
    /// Model name sent to a server.
    #[arg(long, default_value = "current")]
    pub model_name: String,
    /// Requests with checkable instructions.
    #[arg(long, default_value = "data/ifeval.jsonl")]
    pub prompts: PathBuf,
    /// Use only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Answers sampled per prompt (temperature 0.7, top-p 0.9).
    #[arg(long, default_value_t = 4)]
    pub n: usize,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Prompts in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Postgres URL, to look a checkpoint id up.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Ranked JSONL to write: `{"prompt", "answers": [passing, failing], …}`.
    #[arg(long, default_value = "data/verifiable_pairs.jsonl")]
    pub out: PathBuf,
}

impl From<MakeJudgePairsArgs> for crate::data::ifeval::MakeJudgePairsConfig {
    fn from(a: MakeJudgePairsArgs) -> Self {
        Self {
            model: a.model,
            model_name: a.model_name,
            prompts: a.prompts,
            limit: a.limit,
            n: a.n,
            max_tokens: a.max_tokens,
            concurrency: a.concurrency,
            database_url: a.database_url,
            out: a.out,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct MakeEftArgs {
    /// The judge: a server URL (its `/judge`), a checkpoint id or a model file.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub model: String,
    /// Human-scored responses: JSONL `{"question", "response", "score", …}`.
    #[arg(long, default_value = "data/eft.source.jsonl")]
    pub source: PathBuf,
    /// Judge samples per response (the best-agreeing one is kept).
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// Most tokens per judgment.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Questions in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Postgres URL, to look a checkpoint id up.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Chat JSONL to write.
    #[arg(long, default_value = "data/eft.self.jsonl")]
    pub out: PathBuf,
}

impl From<MakeEftArgs> for crate::data::eft::MakeEftConfig {
    fn from(a: MakeEftArgs) -> Self {
        Self {
            model: a.model,
            source: a.source,
            samples: a.samples,
            max_tokens: a.max_tokens,
            concurrency: a.concurrency,
            database_url: a.database_url,
            out: a.out,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ImportCheckpointArgs {
    /// A .gguf file, or an HF directory (config.json, *.safetensors, tokenizer.json).
    pub path: PathBuf,
    /// The checkpoint it was trained from.
    #[arg(long)]
    pub parent: Option<i64>,
    /// Its iteration (default: the parent's + 1, or 0 without a parent).
    #[arg(long)]
    pub iteration: Option<i32>,
    /// Its name (default: the file or directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// Postgres URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
}

impl From<ImportCheckpointArgs> for crate::checkpoint::import::ImportCheckpointConfig {
    fn from(a: ImportCheckpointArgs) -> Self {
        Self { path: a.path, parent: a.parent, iteration: a.iteration, name: a.name, database_url: a.database_url }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SelfInstructArgs {
    /// Base URL of the srlm server whose model writes the prompts.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Postgres URL (where the prompts are stored and compared against).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Seed prompts: JSONL lines `{"prompt": "..."}`.
    #[arg(long, default_value = crate::selfinstruct::DEFAULT_SEED_PROMPTS)]
    pub seeds: PathBuf,
    /// New prompts to accept.
    #[arg(long, default_value_t = 16)]
    pub count: usize,
    /// Give up after this many generations, accepted or not.
    #[arg(long)]
    pub max_attempts: Option<usize>,
    /// The iteration the prompts are for (stored with them).
    #[arg(long, default_value_t = 1)]
    pub iteration: i32,
    /// Model name to ask (the served model answers to `current`).
    #[arg(long, default_value = "current")]
    pub model: String,
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    /// Reject a prompt whose ROUGE-L F1 with any stored prompt reaches this.
    #[arg(long, default_value_t = 0.7)]
    pub max_similarity: f64,
    #[arg(long, default_value_t = 3)]
    pub min_words: usize,
    #[arg(long, default_value_t = 150)]
    pub max_words: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl From<SelfInstructArgs> for crate::selfinstruct::SelfInstructConfig {
    fn from(a: SelfInstructArgs) -> Self {
        Self {
            url: a.url,
            database_url: a.database_url,
            seeds: a.seeds,
            count: a.count,
            max_attempts: a.max_attempts,
            iteration: a.iteration,
            model: a.model,
            temperature: a.temperature,
            top_p: a.top_p,
            max_similarity: a.max_similarity,
            min_words: a.min_words,
            max_words: a.max_words,
            seed: a.seed,
        }
    }
}
