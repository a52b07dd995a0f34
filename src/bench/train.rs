//! `srlm bench train`: DPO training throughput and peak memory on synthetic pairs of
//! a fixed size, with the model and loop `srlm train dpo` uses (no database).
//!
//! Tokens/s counts every token through the policy (prompt and answer of both the chosen
//! and the rejected sequence) over the whole run, the reference pass included.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use rand::{Rng, SeedableRng};

use crate::cli::TrainBenchArgs;
use crate::model::weights::LlamaWeights;
use crate::train::data::PairTokens;
use crate::train::dpo::DpoConfig;
use crate::train::model::{LoraConfig, Model, Trainable};
use crate::train::trainer::{self, OptimConfig};

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub async fn run(args: TrainBenchArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || measure(&args)).await.context("the benchmark thread panicked")?
}

fn measure(args: &TrainBenchArgs) -> Result<()> {
    let mut weights = LlamaWeights::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    weights.quantized.clear();
    let device = crate::train::run::training_device()?;
    if !device.is_cpu() {
        weights = weights.to_device(&device)?;
    }
    let layers = weights.config.layers;
    let trainable = match args.mode.as_str() {
        "full" => Trainable::default(),
        "lora" => Trainable { lora: Some(LoraConfig { rank: 16, alpha: 32.0 }), ..Default::default() },
        "freeze" => Trainable { freeze_embeddings: true, freeze_layers: layers / 2, lora: None },
        other => bail!("--mode must be full, lora or freeze, not `{other}`"),
    };
    let model = Model::from_weights(weights, &trainable, DType::F32, 0)?;
    let (params, trained) = model.parameter_counts();
    let vocab = model.config.vocab as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut tokens = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..vocab)).collect() };
    let pairs: Vec<PairTokens> = (0..args.pairs)
        .map(|_| PairTokens {
            id: None,
            prompt: tokens(args.prompt_len),
            chosen: tokens(args.answer_len),
            rejected: tokens(args.answer_len),
        })
        .collect();
    let cfg = OptimConfig { batch_size: args.batch_size, micro_batch: args.micro_batch, ..OptimConfig::dpo_default() };
    let rss_before = peak_rss();
    let t0 = Instant::now();
    let summary = trainer::train_dpo(&model, &pairs, &DpoConfig::default(), &cfg, &mut ())?;
    let seconds = t0.elapsed().as_secs_f64();
    let total_tokens: usize = pairs.iter().map(PairTokens::tokens).sum();
    let result = serde_json::json!({
        "mode": args.mode,
        "model": args.model,
        "parameters": params,
        "trained_parameters": trained,
        "pairs": args.pairs,
        "tokens_per_pair": total_tokens / args.pairs.max(1),
        "batch_size": args.batch_size,
        "micro_batch": args.micro_batch,
        "optimizer_steps": summary.steps,
        "seconds": seconds,
        "reference_seconds": summary.reference_seconds,
        "seconds_per_pair": seconds / args.pairs.max(1) as f64,
        "tokens_per_second": total_tokens as f64 / seconds,
        "train_tokens_per_second": total_tokens as f64 / summary.train_seconds,
        "peak_rss_gib_before_training": rss_before.map(|b| b as f64 / (1u64 << 30) as f64),
        "peak_rss_gib": peak_rss().map(|b| b as f64 / (1u64 << 30) as f64),
        "threads": rayon::current_num_threads(),
        "device": format!("{device:?}"),
        "engine": if crate::train::fast::supports(&model) { "hand-derived passes (src/train/fast/)" } else { "candle autograd" },
        "matmul": crate::train::fast::blas::name(),
    });
    println!("{result}");
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&result)? + "\n")?;
    }
    Ok(())
}
