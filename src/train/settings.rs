//! What a training run is asked to do, whoever asks: `srlm train` and `srlm loop` build
//! these from their flags (`cli`), and `train::run` takes nothing else.

use std::path::PathBuf;
use std::time::Duration;

use super::data::Truncation;
use super::dpo::DpoConfig;
use super::model::Trainable;
use super::trainer::OptimConfig;
use crate::model::gguf::WeightType;

/// How the weights are trained (SFT and DPO alike).
#[derive(Debug, Clone)]
pub struct TrainSettings {
    pub optim: OptimConfig,
    pub trainable: Trainable,
    /// Longest prompt + answer in tokens, and what to do with a longer example.
    pub max_len: usize,
    pub truncation: Truncation,
    /// Weight type of the written checkpoint.
    pub dtype: WeightType,
}

/// Where a run's checkpoint goes, and whether to train at all.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Default: beside the base, named after the run.
    pub out: Option<PathBuf>,
    /// Default: the file's stem.
    pub name: Option<String>,
    /// Print what would be trained (examples, tokens, memory estimate) and stop.
    pub dry_run: bool,
}

/// One DPO run on the pairs a checkpoint made.
#[derive(Debug, Clone)]
pub struct DpoJob {
    pub database_url: String,
    /// Whose pairs to train on; also the starting point and the reference (default:
    /// the active checkpoint).
    pub checkpoint: Option<i64>,
    /// Most pairs to claim (default: all available).
    pub max_pairs: Option<i64>,
    /// Train on the pairs of this preference JSONL instead of claiming pairs from
    /// Postgres (the run is still recorded and its checkpoint registered).
    pub pairs_file: Option<PathBuf>,
    /// How long claimed pairs stay a trainer's without renewal.
    pub lease: Duration,
    /// Announce the registered checkpoint to servers that follow (`serve --follow`).
    pub announce: bool,
    pub dpo: DpoConfig,
    pub train: TrainSettings,
    pub output: Output,
}

/// Keep training whenever the active checkpoint has enough pairs (`train dpo --watch`).
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    pub min_pairs: i64,
    pub poll: Duration,
}

/// One SFT run on chat files.
#[derive(Debug, Clone)]
pub struct SftJob {
    /// A .gguf file or an HF safetensors directory.
    pub model: PathBuf,
    /// JSONL files of `{"messages": [...]}` whose last message is the answer.
    pub data: Vec<PathBuf>,
    /// Records the run and registers the checkpoint when given.
    pub database_url: Option<String>,
    pub train: TrainSettings,
    pub output: Output,
}
