//! `srlm loop`: whole self-rewarding iterations against a running server (SPEC §1).
//!
//! One iteration, from the active checkpoint M(t): write new prompts (self-instruction)
//! → `/generate` N candidates for each, judged by M(t) itself → DPO on the pairs →
//! activate M(t+1) in the server → report. Each step's results are in Postgres before
//! the next starts, and the loop reads its position from there, so a rerun after a crash
//! or Ctrl-C continues where it stopped: prompts already answered for this iteration
//! count towards `--prompts`, a finished training run is not repeated, and a registered
//! but not yet active checkpoint is just swapped in.
//!
//! With `--verifiable-share`, part of each iteration's prompts come from the generator
//! of requests with checkable instructions (`verify::prompts`, the `train` split, never
//! the yardstick's prompts), and `--reward verify|judge+verify` lets the verifier decide
//! their pairs. The swap gate (`--gate`, on by default) measures M(t+1) against M(t)
//! before activating it and keeps M(t) serving when M(t+1) is worse (`eval::gate`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::eval::gate::{self, GateSettings};
use crate::judge::Reward;
use crate::selfinstruct::{Rejection, SelfInstructArgs, Writer};
use crate::store::Store;
use crate::verify::prompts::{generate, Split};

/// Whether the swap gate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GateMode {
    On,
    Off,
}

#[derive(Debug, Clone, clap::Args)]
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
    #[arg(long, default_value = "data/seed_prompts.jsonl")]
    pub seeds: PathBuf,
    /// Candidates per prompt (paper: 4).
    #[arg(long, default_value_t = 4)]
    pub n: usize,
    /// Judge samples per candidate (paper: 3).
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// Judging method: sample (the paper), constrained or expected.
    #[arg(long, default_value = "sample")]
    pub method: String,
    /// Most new tokens per candidate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Prompts answered and judged at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Fewest pairs worth training on.
    #[arg(long, default_value_t = 1)]
    pub min_pairs: i64,
    /// Extra `srlm train dpo` options, e.g. `--train-arg=--max-len=512`.
    #[arg(long = "train-arg", allow_hyphen_values = true)]
    pub train_args: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
    pub reward: Reward,
    /// Share (0–1) of each iteration's prompts taken from the generator of requests
    /// with checkable instructions; the rest are written by the model.
    #[arg(long, default_value_t = 0.0)]
    pub verifiable_share: f64,
    /// The swap gate: measure M(t+1) against M(t) before activating it, and keep M(t)
    /// serving when M(t+1) is worse by more than --gate-margin. Run the server without
    /// --follow, so that only the loop activates checkpoints.
    #[arg(long, value_enum, default_value = "on")]
    pub gate: GateMode,
    /// The yardstick the gate takes its quick subset from.
    #[arg(long, default_value = "data/ifeval.jsonl")]
    pub gate_ifeval: PathBuf,
    /// Prompts of the quick subset.
    #[arg(long, default_value_t = 48)]
    pub gate_prompts: usize,
    /// Verifiable judge pairs for the gate (skipped when the file does not exist).
    #[arg(long, default_value = "data/verifiable_pairs.jsonl")]
    pub gate_pairs: PathBuf,
    /// Pairs of that file the gate judges.
    #[arg(long, default_value_t = 48)]
    pub gate_pair_limit: usize,
    /// Largest tolerated drop on either measure (0.05 = 5 accuracy points).
    #[arg(long, default_value_t = 0.05)]
    pub gate_margin: f64,
    /// Most new tokens per gate answer.
    #[arg(long, default_value_t = 192)]
    pub gate_max_tokens: usize,
}

impl LoopArgs {
    fn gate_settings(&self) -> GateSettings {
        GateSettings {
            ifeval: self.gate_ifeval.clone(),
            prompts: self.gate_prompts,
            pairs: self.gate_pairs.exists().then(|| self.gate_pairs.clone()),
            pair_limit: self.gate_pair_limit,
            margin: self.gate_margin,
            max_tokens: self.gate_max_tokens,
            concurrency: self.concurrency.max(4),
        }
    }
}

/// What the `/generate` answers of one iteration add up to.
#[derive(Debug, Default)]
struct Tally {
    prompts: usize,
    rejected: BTreeMap<Rejection, usize>,
    attempts: usize,
    candidates: usize,
    judge_samples: usize,
    judge_parsed: usize,
    /// Candidates by mean score rounded to a whole point ("unscored" when none parsed).
    histogram: BTreeMap<String, usize>,
    pairs: usize,
    no_pair: usize,
    chosen_chars: usize,
    rejected_chars: usize,
    /// Prompts with checkable instructions, their candidates and those that followed
    /// every instruction.
    verifiable_prompts: usize,
    verifiable_candidates: usize,
    verifiable_passed: usize,
    pairs_by_verifier: usize,
}

impl Tally {
    fn add(&mut self, r: &Value) {
        self.prompts += 1;
        let choices = r["choices"].as_array().cloned().unwrap_or_default();
        self.candidates += choices.len();
        self.judge_samples += r["judge"]["total"].as_u64().unwrap_or(0) as usize;
        self.judge_parsed += r["judge"]["parsed"].as_u64().unwrap_or(0) as usize;
        for c in &choices {
            if let Some(strict) = c["verified"]["strict"].as_array() {
                self.verifiable_candidates += 1;
                self.verifiable_passed += usize::from(strict.iter().all(|p| p.as_bool() == Some(true)));
            }
            let bucket = c["score"].as_f64().map_or_else(|| "unscored".to_string(), |s| format!("{}", s.round() as i64));
            *self.histogram.entry(bucket).or_default() += 1;
        }
        let len = |i: &Value| i.as_u64().and_then(|i| choices.get(i as usize)).and_then(|c| c["message"]["content"].as_str()).map_or(0, str::len);
        self.verifiable_prompts += usize::from(choices.iter().any(|c| c["verified"].is_object()));
        if r["pair"].is_object() {
            self.pairs += 1;
            self.pairs_by_verifier += usize::from(r["pair"]["decided_by"] == "verifier");
            self.chosen_chars += len(&r["pair"]["chosen_index"]);
            self.rejected_chars += len(&r["pair"]["rejected_index"]);
        } else {
            self.no_pair += 1;
        }
    }
}

pub async fn run(args: LoopArgs) -> Result<()> {
    let store = Store::connect_migrated(&args.database_url).await.context("connecting to and migrating the database")?;
    for _ in 0..args.iterations {
        let report = iterate(&args, &store).await?;
        print_table(&report);
        println!("{report}");
        if report["gate"]["refused"] == true {
            bail!(
                "the swap gate refused checkpoint {}: {}; M(t) keeps serving. Train again with other settings, or rerun with --gate off",
                report["output_checkpoint_id"],
                report["gate"]["reasons"]
            );
        }
    }
    Ok(())
}

fn print_table(report: &Value) {
    eprintln!("── iteration {} ──", report["iteration"]);
    if let Some(map) = report.as_object() {
        for (k, v) in map {
            eprintln!("  {k:<28} {v}");
        }
    }
}

/// One iteration from the active checkpoint; returns (and stores) its report.
pub async fn iterate(args: &LoopArgs, store: &Store) -> Result<Value> {
    let active = store.active_checkpoints().await?.pop().context("no active checkpoint: start `srlm serve` first")?;
    let iteration = active.iteration + 1;
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(1800)).build()?;
    let base = args.url.trim_end_matches('/').to_string();
    let mut tally = Tally::default();

    // 1–2. New prompts, each answered and judged by the active checkpoint as it comes.
    let started = Instant::now();
    let done = store.count_prompts("self_instruct", iteration, active.id).await? as usize;
    let need = args.prompts.saturating_sub(done);
    if need > 0 {
        let verifiable = ((need as f64) * args.verifiable_share.clamp(0.0, 1.0)).round() as usize;
        let bar = crate::progress::Progress::new(need as u64, format!("iter {iteration}"), "prompts judged");
        let mut running: JoinSet<Result<Value>> = JoinSet::new();
        let body = |prompt: &str, instructions: Option<&[crate::verify::Instruction]>| {
            json!({
                "messages": [{"role": "user", "content": prompt}], "n": args.n, "max_tokens": args.max_tokens,
                "judge": {"samples": args.samples, "method": args.method}, "source": "self_instruct", "iteration": iteration,
                "reward": args.reward, "instructions": instructions,
            })
        };
        let spawn = |running: &mut JoinSet<Result<Value>>, body: Value| {
            let (client, url) = (client.clone(), format!("{base}/generate"));
            running.spawn(async move { crate::bench::post_json(&client, &url, &body).await });
        };
        // 1a. Requests with checkable instructions (none of them already stored).
        if verifiable > 0 {
            let stored: std::collections::HashSet<String> = store.prompt_texts(None).await?.into_iter().collect();
            let fresh: Vec<_> = generate(Split::Train, stored.len() + verifiable, args.seed)
                .into_iter()
                .filter(|p| !stored.contains(&p.prompt))
                .take(verifiable)
                .collect();
            for p in fresh {
                tally.attempts += 1;
                spawn(&mut running, body(&p.prompt, Some(&p.instructions)));
                while running.len() >= args.concurrency.max(1) {
                    tally.add(&running.join_next().await.expect("non-empty")??);
                    bar.set_message(format!("{} pairs", tally.pairs));
                    bar.set_position(tally.prompts as u64);
                }
            }
        }
        // 1b. Prompts the model writes (self-instruction).
        let written = need - verifiable;
        if written > 0 {
            let si = SelfInstructArgs {
                seed: args.seed.wrapping_add(iteration as u64 * 7919 + done as u64),
                ..SelfInstructArgs::new(&base, &args.database_url, args.seeds.clone(), written, iteration)
            };
            let mut writer = Writer::new(&si, store, crate::selfinstruct::Completer::http(&si)?).await?;
            let mut accepted = 0;
            let mut attempts = 0;
            while accepted < written && attempts < written * 10 {
                attempts += 1;
                tally.attempts += 1;
                match writer.attempt().await? {
                    Ok(prompt) => {
                        accepted += 1;
                        spawn(&mut running, body(&prompt, None));
                        while running.len() >= args.concurrency.max(1) {
                            tally.add(&running.join_next().await.expect("non-empty")??);
                            bar.set_message(format!("{} pairs", tally.pairs));
                            bar.set_position(tally.prompts as u64);
                        }
                    }
                    Err(reason) => *tally.rejected.entry(reason).or_default() += 1,
                }
            }
        }
        while let Some(r) = running.join_next().await {
            tally.add(&r??);
            bar.set_position(tally.prompts as u64);
        }
        bar.finish();
    }
    let data_seconds = started.elapsed().as_secs_f64();

    // 3. DPO on the pairs (once per base checkpoint).
    let started = Instant::now();
    let output = match store.output_of_base(active.id).await? {
        Some(id) => id,
        None => {
            let pairs = store.claimable_pairs(active.id).await?;
            if pairs < args.min_pairs {
                bail!("iteration {iteration}: only {pairs} pairs for checkpoint {} (need --min-pairs {})", active.id, args.min_pairs);
            }
            let id = active.id.to_string();
            let mut argv = vec!["srlm", "train", "dpo", "--database-url", &args.database_url, "--checkpoint", &id];
            if args.gate == GateMode::On {
                argv.push("--no-announce");
            }
            argv.extend(args.train_args.iter().map(String::as_str));
            let cli = crate::cli::Cli::try_parse_from(argv).context("--train-arg")?;
            let crate::cli::Command::Train(crate::cli::TrainCommand::Dpo(dpo)) = cli.command else { unreachable!("parsed as train dpo") };
            crate::train::run::dpo(dpo).await?;
            store.output_of_base(active.id).await?.context("the training run registered no checkpoint")?
        }
    };
    let train_seconds = started.elapsed().as_secs_f64();

    // 4. The gate: M(t+1) against M(t), before it is served.
    let started = Instant::now();
    let gate = match args.gate {
        GateMode::Off => json!({"enabled": false}),
        GateMode::On => {
            let settings = args.gate_settings();
            let parent = gate::figures_of(store, active.id, &settings).await?;
            let child = gate::figures_of(store, output, &settings).await?;
            let decision = gate::decide(&parent, &child, settings.margin);
            if let Err(reasons) = &decision {
                store.mark_checkpoint_refused(output, &reasons.join("; ")).await?;
            }
            json!({"enabled": true, "refused": decision.is_err(), "reasons": decision.err(), "parent": parent, "child": child,
                   "margin": settings.margin, "dataset": settings.dataset()})
        }
    };
    let gate_seconds = started.elapsed().as_secs_f64();

    // How far M(t+1) moved from M(t) on held-out pairs (the gate's verifiable pairs).
    let movement = if args.gate_pairs.exists() {
        let path = |c: Option<crate::store::Checkpoint>| c.map(|c| PathBuf::from(c.path)).context("a checkpoint row vanished");
        let (parent, child) = (path(store.checkpoint(active.id).await?)?, path(store.checkpoint(output).await?)?);
        let (pairs, limit) = (args.gate_pairs.clone(), args.gate_pair_limit);
        let measured = tokio::task::spawn_blocking(move || crate::eval::movement::measure(&parent, &child, &pairs, limit)).await??;
        json!(measured)
    } else {
        Value::Null
    };
    let refused = gate["refused"] == true;

    // 5. Swap it in (unless the gate refused it).
    let started = Instant::now();
    let swap = if refused { Value::Null } else { activate(&client, &base, &args.admin_token, output).await? };
    let swap_seconds = started.elapsed().as_secs_f64();

    // 6. Report.
    let run = store.run_producing(output).await?;
    let last_step = match &run {
        Some(r) => store.run_steps(r.id).await?.pop(),
        None => None,
    };
    let reward_model = match &args.eval_ranked {
        Some(data) if !refused => {
            let eval = crate::eval::rm::EvalRmArgs {
                url: base.to_string(),
                data: data.clone(),
                methods: vec![args.method.clone()],
                samples: args.samples,
                limit: args.eval_limit,
                seed: args.seed as i64,
                store: crate::eval::StoreArgs::default(),
            };
            let measured = crate::eval::rm::evaluate(&eval).await?;
            crate::eval::rm::store_report(store, &eval, &measured).await?;
            json!(measured.results.first().map(|(_, m)| m))
        }
        _ => Value::Null,
    };
    let ratio = |a: usize, b: usize| if b == 0 { Value::Null } else { json!(a as f64 / b as f64) };
    let report = json!({
        "iteration": iteration,
        "base_checkpoint_id": active.id,
        "output_checkpoint_id": output,
        "prompts_answered_this_run": tally.prompts,
        "prompts_answered_before": done,
        "prompt_attempts": tally.attempts,
        "prompts_rejected": tally.rejected,
        "candidates": tally.candidates,
        "judge_parse_rate": ratio(tally.judge_parsed, tally.judge_samples),
        "score_histogram": tally.histogram,
        "pairs": tally.pairs,
        "tie_rate": ratio(tally.no_pair, tally.prompts),
        "mean_chosen_chars": ratio(tally.chosen_chars, tally.pairs),
        "mean_rejected_chars": ratio(tally.rejected_chars, tally.pairs),
        "reward": args.reward.as_str(),
        "verifiable_prompts": tally.verifiable_prompts,
        "verifiable_pass_rate": ratio(tally.verifiable_passed, tally.verifiable_candidates),
        "pairs_by_verifier": tally.pairs_by_verifier,
        "training_run_id": run.as_ref().map(|r| r.id),
        "training_examples": run.as_ref().and_then(|r| r.examples),
        "training_last_step": last_step,
        "data_seconds": data_seconds,
        "train_seconds": train_seconds,
        "gate_seconds": gate_seconds,
        "gate": gate,
        "policy_movement": movement,
        "swap_seconds": swap_seconds,
        "swap_load_seconds": swap["load_seconds"],
        "reward_model": reward_model,
    });
    store.record_iteration(iteration, active.id, output, &report).await?;
    Ok(report)
}

/// Asks the server to serve checkpoint `id`; returns its answer.
async fn activate(client: &reqwest::Client, base: &str, token: &str, id: i64) -> Result<Value> {
    let response = client.post(format!("{base}/admin/checkpoints/{id}/activate")).bearer_auth(token).send().await?;
    let status = response.status();
    let swap: Value = serde_json::from_str(&response.text().await?).unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("activating checkpoint {id}: HTTP {status}: {swap}");
    }
    Ok(swap)
}
