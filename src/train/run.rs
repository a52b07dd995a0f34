//! `srlm train dpo` and `srlm train sft`: the trainer as an operator runs it.
//!
//! The compute runs on a blocking thread; the async side renews the pair lease, writes
//! per-step metrics to Postgres, and turns Ctrl-C into a failed run whose pairs go back.
//! The checkpoint file appears under its name only when complete, and is registered
//! (with the pairs marked consumed) in one transaction after that.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::DType;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::data::{self, ChatFormat, FitCounts, PairTokens, SftExample, TextPair};
use super::dpo::DpoConfig;
use super::model::Model;
use super::settings::{DpoJob, Output, SftJob, TrainSettings, Watch};
use super::trainer::{self, Observer, StepMetrics, Summary};
use crate::model::export;
use crate::model::weights::LlamaWeights;
use crate::store::training::{ClaimedPair, NewCheckpoint, RunCounts};
use crate::store::{Checkpoint, Store};

/// A name unique to this trainer process, stored on the pairs it claims.
fn worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "host".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &id[..8])
}

/// Claimed pairs as text pairs (their stored conversation parsed).
fn text_pairs(claimed: &[ClaimedPair]) -> Result<Vec<TextPair>> {
    claimed
        .iter()
        .map(|p| {
            Ok(TextPair {
                id: Some(p.id),
                messages: data::messages_of(&p.messages).with_context(|| format!("pair {}", p.id))?,
                chosen: p.chosen.clone(),
                rejected: p.rejected.clone(),
            })
        })
        .collect()
}

/// A rough peak-memory estimate: weights, gradients and Adam moments of what is
/// trained, and the activations one micro-batch keeps for its backward pass.
pub fn memory_estimate(model: &Model, tokens_per_micro: usize, scored_per_micro: usize) -> u64 {
    let c = &model.config;
    let (total, trained) = model.parameter_counts();
    let per_token_layer = 14 * c.hidden + 2 * c.kv_dim() + 5 * c.intermediate + 4 * c.heads * tokens_per_micro.min(4096) / 2;
    let activations = c.layers * per_token_layer * tokens_per_micro + 4 * scored_per_micro * c.vocab;
    4 * (total + 3 * trained + activations) as u64
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Progress bar and step log of a run; steps also go to Postgres through `steps`.
struct CliObserver {
    bar: ProgressBar,
    phase: &'static str,
    steps: Option<mpsc::UnboundedSender<StepMetrics>>,
}

impl CliObserver {
    fn new(steps: Option<mpsc::UnboundedSender<StepMetrics>>) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta}) {msg}").expect("a valid template"),
        );
        Self { bar, phase: "", steps }
    }
}

impl Observer for CliObserver {
    fn progress(&mut self, phase: &'static str, done: usize, total: usize) {
        if phase != self.phase {
            self.phase = phase;
            self.bar.reset();
            self.bar.set_prefix(phase);
            self.bar.set_length(total as u64);
        }
        self.bar.set_position(done as u64);
    }

    fn step(&mut self, m: &StepMetrics) -> Result<()> {
        let v = |k| m.get(k).unwrap_or(f64::NAN);
        let line = match m.get("rewards/margins") {
            Some(margin) => format!(
                "step {} loss {:.4} margin {margin:.4} acc {:.2} lr {:.2e} grad-norm {:.3} ({:.0} tok/s)",
                m.step,
                v("loss"),
                v("rewards/accuracies"),
                m.lr,
                m.grad_norm,
                m.tokens as f64 / m.seconds
            ),
            None => format!(
                "step {} loss {:.4} lr {:.2e} grad-norm {:.3} ({:.0} tok/s)",
                m.step,
                v("loss"),
                m.lr,
                m.grad_norm,
                m.tokens as f64 / m.seconds
            ),
        };
        self.bar.set_message(format!(
            "loss {:.4}{}",
            v("loss"),
            m.get("rewards/margins").map(|x| format!(" margin {x:.3}")).unwrap_or_default()
        ));
        if self.bar.is_hidden() {
            tracing::info!(metrics = %m.to_json(), "{line}");
        } else {
            self.bar.println(line);
        }
        if let Some(tx) = &self.steps {
            let _ = tx.send(m.clone());
        }
        Ok(())
    }
}

/// Where a run's checkpoint goes by default: beside its base.
fn default_out(base: &Path, tag: &str, dtype: crate::model::gguf::WeightType) -> PathBuf {
    let stem = if base.is_dir() { base.file_name() } else { base.file_stem() }
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let name = if base.is_dir() { format!("{stem}-{tag}") } else { format!("{stem}-{tag}.{}.gguf", dtype.suffix()) };
    base.with_file_name(name)
}

/// The GPU in a `cuda` build when there is one, else the CPU.
pub fn training_device() -> Result<candle_core::Device> {
    #[cfg(feature = "cuda")]
    return Ok(candle_core::Device::cuda_if_available(0)?);
    #[cfg(not(feature = "cuda"))]
    Ok(candle_core::Device::Cpu)
}

fn load_model(path: &Path, train: &TrainSettings) -> Result<Model> {
    let mut weights = LlamaWeights::load(path).with_context(|| format!("loading {}", path.display()))?;
    weights.quantized.clear();
    let device = training_device()?;
    if !device.is_cpu() {
        weights = weights.to_device(&device)?;
    }
    Model::from_weights(weights, &train.trainable, DType::F32, train.optim.seed)
}

/// What the blocking half of a run needs.
struct Job {
    base: PathBuf,
    out: PathBuf,
    train: TrainSettings,
    work: Work,
}

enum Work {
    Dpo(Vec<PairTokens>, DpoConfig),
    Sft(Vec<SftExample>),
}

impl Job {
    fn run(self, observer: &mut dyn Observer) -> Result<Summary> {
        let model = load_model(&self.base, &self.train)?;
        let (total, trained) = model.parameter_counts();
        tracing::info!(parameters = total, trained, "model loaded");
        let summary = match &self.work {
            Work::Dpo(pairs, dpo) => trainer::train_dpo(&model, pairs, dpo, &self.train.optim, observer)?,
            Work::Sft(examples) => trainer::train_sft(&model, examples, &self.train.optim, observer)?,
        };
        export::write_like(&self.base, &model.export()?, self.train.dtype, &self.out)?;
        Ok(summary)
    }
}

/// Runs `job` on a blocking thread while recording its steps and renewing the lease.
async fn supervise(job: Job, store: Option<(Store, i64, String, Duration)>) -> Result<Summary> {
    let (tx, mut rx) = mpsc::unbounded_channel::<StepMetrics>();
    let mut handle = tokio::task::spawn_blocking(move || job.run(&mut CliObserver::new(Some(tx))));
    let renewal = store.clone().map(|(store, _, worker, lease)| {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                if let Err(e) = store.renew_lease(&worker, lease).await {
                    tracing::warn!(error = %e, "renewing the pair lease failed; retrying");
                }
            }
        })
    });
    let record = |m: StepMetrics| {
        let store = store.clone();
        async move {
            if let Some((store, run, _, _)) = store {
                if let Err(e) = store.record_step(run, m.step as i32, &m.to_json()).await {
                    tracing::warn!(error = %e, step = m.step, "could not record step metrics");
                }
            }
        }
    };
    let outcome = loop {
        tokio::select! {
            done = &mut handle => break done.context("the training thread panicked").and_then(|r| r),
            Some(m) = rx.recv() => record(m).await,
            _ = tokio::signal::ctrl_c() => break Err(anyhow::anyhow!("interrupted")),
        }
    };
    while let Ok(m) = rx.try_recv() {
        record(m).await;
    }
    if let Some(r) = renewal {
        r.abort();
    }
    outcome
}

fn report(summary: &Summary, extra: serde_json::Value) {
    let seconds = summary.train_seconds + summary.reference_seconds;
    let mut out = serde_json::json!({
        "steps": summary.steps,
        "examples": summary.examples,
        "tokens": summary.tokens,
        "train_seconds": summary.train_seconds,
        "reference_seconds": summary.reference_seconds,
        "tokens_per_second": summary.tokens as f64 / seconds.max(1e-9),
        "last_step": summary.last,
    });
    if let (Some(o), Some(e)) = (out.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("{out}");
}

/// `srlm train dpo`: one run, or (`watch`) a run whenever the active checkpoint has
/// enough pairs.
pub async fn dpo(job: DpoJob, watch: Option<Watch>) -> Result<()> {
    let store = Store::connect_migrated(&job.database_url).await.context("connecting to and migrating the database")?;
    let Some(Watch { min_pairs, poll }) = watch else {
        return dpo_once(&store, &job).await;
    };
    let poll = poll.max(Duration::from_secs(1));
    tracing::info!(min_pairs, "watching for pairs of the active checkpoint");
    loop {
        let ready = match store.active_checkpoints().await {
            Ok(mut active) => match active.pop() {
                Some(c) => store.claimable_pairs(c.id).await.map(|n| (n >= min_pairs.max(1)).then_some((c.id, n))),
                None => Ok(None),
            },
            Err(e) => Err(e),
        };
        match ready {
            Ok(Some((id, n))) => {
                tracing::info!(checkpoint_id = id, pairs = n, "enough pairs; training");
                if let Err(e) = dpo_once(&store, &job).await {
                    tracing::error!(error = %format!("{e:#}"), "training run failed; waiting for the next batch");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "database unavailable; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One DPO run on the pairs of `job.checkpoint` (default: the active checkpoint).
async fn dpo_once(store: &Store, job: &DpoJob) -> Result<()> {
    let store = store.clone();
    let base = match job.checkpoint {
        Some(id) => store.checkpoint(id).await?.with_context(|| format!("no checkpoint {id}"))?,
        None => store.active_checkpoints().await?.pop().context("no active checkpoint; name one with --checkpoint")?,
    };
    let base_path = PathBuf::from(&base.path);
    let format = ChatFormat::load(&base_path)?;
    let (train, output, dpo) = (&job.train, &job.output, job.dpo);
    if !(0.0..0.5).contains(&dpo.label_smoothing) {
        bail!("--label-smoothing must be in [0, 0.5), got {}", dpo.label_smoothing);
    }
    if dpo.beta <= 0.0 {
        bail!("--beta must be positive, got {}", dpo.beta);
    }
    let limit = job.max_pairs.unwrap_or(i64::MAX);
    let lease = job.lease.max(Duration::from_secs(10));

    let from_file = match &job.pairs_file {
        Some(path) => Some(data::read_pairs_jsonl(path)?),
        None => None,
    };
    if output.dry_run {
        let peek = match &from_file {
            Some(pairs) => pairs.clone(),
            None => text_pairs(&store.available_pairs(base.id, limit).await?)?,
        };
        let (pairs, counts) = data::pair_examples(&format, &peek, train.max_len, train.truncation)?;
        return dry_run("dpo", &base_path, train, pairs.iter().map(|p| (p.tokens(), p.chosen.len() + p.rejected.len())), counts);
    }

    let worker = worker_name();
    // Pairs from a file are the run's own; pairs in Postgres are claimed (leased) first.
    let claimed = match from_file {
        Some(pairs) => pairs,
        None => text_pairs(&store.claim_pairs(base.id, &worker, limit, lease).await?)?,
    };
    let config = serde_json::json!({"dpo": dpo, "optim": train.optim, "trainable": train.trainable, "max_len": train.max_len,
        "truncation": train.truncation, "base": base.path, "dtype": train.dtype.suffix(), "pairs_file": job.pairs_file});
    let run_id = store.start_run("dpo", Some(base.id), &worker, &config).await?;
    let out = output.out.clone().unwrap_or_else(|| default_out(&base_path, &format!("dpo-r{run_id}"), train.dtype));
    let result = async {
        let (pairs, counts) = data::pair_examples(&format, &claimed, train.max_len, train.truncation)?;
        let from = job.pairs_file.as_ref().map_or_else(|| "postgres (claimed)".to_string(), |p| p.display().to_string());
        tracing::info!(
            run = run_id,
            from,
            pairs = claimed.len(),
            kept = counts.kept,
            truncated = counts.truncated,
            skipped = counts.skipped,
            "pairs to train on"
        );
        if pairs.is_empty() {
            bail!(
                "no pairs to train on for checkpoint {} ({} claimed, {} too long for --max-len {})",
                base.id,
                claimed.len(),
                counts.skipped,
                train.max_len
            );
        }
        let ids: Vec<i64> = pairs.iter().filter_map(|p| p.id).collect();
        let work = Job { base: base_path.clone(), out: out.clone(), train: train.clone(), work: Work::Dpo(pairs, dpo) };
        let summary = supervise(work, Some((store.clone(), run_id, worker.clone(), lease))).await?;
        Ok((summary, ids, counts))
    }
    .await;
    let (summary, ids, counts) = match result {
        Ok(r) => r,
        Err(e) => return Err(fail(&store, run_id, &worker, Some(&out), e).await),
    };
    let new = new_checkpoint(output, &out, Some(&base));
    let registered = register(&store, run_id, &worker, &out, &new, &ids, run_counts(&summary, counts), job.announce).await?;
    // Pairs skipped for length go back for a trainer with a longer --max-len.
    store.release_pairs(&worker).await?;
    report(
        &summary,
        serde_json::json!({"run_id": run_id, "checkpoint_id": registered.id, "path": registered.path,
        "parent_id": base.id, "iteration": registered.iteration, "truncated": counts.truncated, "skipped": counts.skipped}),
    );
    Ok(())
}

/// The row for a run's output at `out`, child of `parent` (iteration 1 without one).
fn new_checkpoint(output: &Output, out: &Path, parent: Option<&Checkpoint>) -> NewCheckpoint {
    let name =
        output.name.clone().unwrap_or_else(|| out.file_stem().map_or_else(|| "checkpoint".into(), |s| s.to_string_lossy().into_owned()));
    NewCheckpoint {
        name,
        path: absolute(out),
        format: format_of(out).into(),
        parent_id: parent.map(|p| p.id),
        iteration: parent.map_or(1, |p| p.iteration + 1),
    }
}

/// Registers the written checkpoint and finishes the run; if that fails, the file is
/// removed and the run marked failed.
#[allow(clippy::too_many_arguments)]
async fn register(
    store: &Store,
    run_id: i64,
    worker: &str,
    out: &Path,
    new: &NewCheckpoint,
    pair_ids: &[i64],
    counts: RunCounts,
    announce: bool,
) -> Result<Checkpoint> {
    match store.finish_run(run_id, worker, new, pair_ids, counts, announce).await {
        Ok(registered) => Ok(registered),
        Err(e) => {
            let _ = remove_output(out);
            Err(fail(store, run_id, worker, None, e.into()).await)
        }
    }
}

fn run_counts(summary: &Summary, counts: FitCounts) -> RunCounts {
    RunCounts {
        examples: summary.examples as i32,
        truncated: counts.truncated as i32,
        skipped: counts.skipped as i32,
        tokens: summary.tokens as i64,
    }
}

fn remove_output(out: &Path) -> std::io::Result<()> {
    if out.is_dir() {
        std::fs::remove_dir_all(out)
    } else {
        std::fs::remove_file(out)
    }
}

/// Marks the run failed (its pairs go back) and removes any partial output.
async fn fail(store: &Store, run_id: i64, worker: &str, out: Option<&Path>, error: anyhow::Error) -> anyhow::Error {
    if let Some(out) = out {
        let part = export::part_path(out);
        let _ = remove_output(&part);
    }
    if let Err(e) = store.fail_run(run_id, worker, &format!("{error:#}")).await {
        tracing::error!(error = %e, run = run_id, "could not mark the run failed; its pairs come back when the lease runs out");
    }
    error.context(format!("training run {run_id} failed"))
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).to_string_lossy().into_owned()
}

fn format_of(p: &Path) -> &'static str {
    if p.extension().is_some_and(|e| e == "gguf") {
        "gguf"
    } else {
        "safetensors"
    }
}

fn dry_run(kind: &str, base: &Path, train: &TrainSettings, sizes: impl Iterator<Item = (usize, usize)>, counts: FitCounts) -> Result<()> {
    let sizes: Vec<(usize, usize)> = sizes.collect();
    let tokens: usize = sizes.iter().map(|s| s.0).sum();
    let scored: usize = sizes.iter().map(|s| s.1).sum();
    let optim = &train.optim;
    let model = load_model(base, train)?;
    let (total, trained) = model.parameter_counts();
    let longest_micro = sizes.iter().map(|s| s.0).max().unwrap_or(0) * optim.micro_batch;
    let longest_scored = sizes.iter().map(|s| s.1).max().unwrap_or(0) * optim.micro_batch;
    let memory = memory_estimate(&model, longest_micro, longest_scored);
    println!(
        "{}",
        serde_json::json!({
            "kind": kind, "examples": sizes.len(), "truncated": counts.truncated, "skipped": counts.skipped,
            "tokens_per_epoch": tokens, "scored_tokens_per_epoch": scored, "epochs": optim.epochs,
            "optimizer_steps": optim.steps(sizes.len()), "parameters": total, "trained_parameters": trained,
            "memory_estimate_gib": (gib(memory) * 100.0).round() / 100.0,
        })
    );
    Ok(())
}

/// `srlm train sft`: one run on chat files.
pub async fn sft(job: SftJob) -> Result<()> {
    let (train, output) = (&job.train, &job.output);
    let format = ChatFormat::load(&job.model)?;
    let mut messages = Vec::new();
    for file in &job.data {
        messages.extend(data::read_chat_jsonl(file)?);
    }
    let (examples, counts) = data::sft_examples(&format, &messages, train.max_len, train.truncation)?;
    if output.dry_run {
        return dry_run("sft", &job.model, train, examples.iter().map(|e| (e.prompt.len() + e.answer.len(), e.answer.len())), counts);
    }
    if examples.is_empty() {
        bail!("no examples to train on ({} read, {} too long for --max-len {})", messages.len(), counts.skipped, train.max_len);
    }
    let started = Instant::now();
    let work = |out: &Path| Job { base: job.model.clone(), out: out.to_path_buf(), train: train.clone(), work: Work::Sft(examples) };
    let Some(url) = &job.database_url else {
        let out = output.out.clone().unwrap_or_else(|| default_out(&job.model, "sft", train.dtype));
        let summary = supervise(work(&out), None).await.inspect_err(|_| {
            let _ = remove_output(&export::part_path(&out));
        })?;
        report(
            &summary,
            serde_json::json!({"path": absolute(&out), "truncated": counts.truncated, "skipped": counts.skipped, "wall_seconds": started.elapsed().as_secs_f64()}),
        );
        return Ok(());
    };
    let store = Store::connect_migrated(url).await.context("connecting to and migrating the database")?;
    let parent = store.checkpoint_by_path(&absolute(&job.model)).await?;
    let worker = worker_name();
    let config = serde_json::json!({"optim": train.optim, "trainable": train.trainable, "max_len": train.max_len,
        "truncation": train.truncation, "base": absolute(&job.model), "data": job.data, "dtype": train.dtype.suffix()});
    let run_id = store.start_run("sft", parent.as_ref().map(|p| p.id), &worker, &config).await?;
    let out = output.out.clone().unwrap_or_else(|| default_out(&job.model, &format!("sft-r{run_id}"), train.dtype));
    let summary = match supervise(work(&out), Some((store.clone(), run_id, worker.clone(), Duration::from_secs(600)))).await {
        Ok(s) => s,
        Err(e) => return Err(fail(&store, run_id, &worker, Some(&out), e).await),
    };
    let new = new_checkpoint(output, &out, parent.as_ref());
    let registered = register(&store, run_id, &worker, &out, &new, &[], run_counts(&summary, counts), true).await?;
    report(
        &summary,
        serde_json::json!({"run_id": run_id, "checkpoint_id": registered.id, "path": registered.path, "iteration": registered.iteration}),
    );
    Ok(())
}
