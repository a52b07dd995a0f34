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
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::client::Client;
use crate::eval::gate::{self, GateSettings};
use crate::judge::{DecidedBy, JudgeMethod, Reward};
use crate::protocol::generate::{GenerateRequest, GenerateResponse, JudgeChoice};
use crate::protocol::judge::JudgeOptions;
use crate::selfinstruct::{Rejection, SelfInstructConfig, Writer};
use crate::store::Store;
use crate::train::settings::DpoJob;
use crate::verify::prompts::{generate, Split};

/// What `srlm loop` runs (the CLI builds it from its flags).
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Base URL of the running srlm server.
    pub url: String,
    pub database_url: String,
    /// The server's admin token (to swap in each new checkpoint).
    pub admin_token: String,
    pub iterations: usize,
    /// New prompts per iteration.
    pub prompts: usize,
    /// Seed prompts for self-instruction.
    pub seeds: PathBuf,
    /// Candidates per prompt.
    pub n: usize,
    /// Judge samples per candidate.
    pub samples: usize,
    pub method: JudgeMethod,
    /// Most new tokens per candidate.
    pub max_tokens: usize,
    /// Prompts answered and judged at once.
    pub concurrency: usize,
    /// Fewest pairs worth training on.
    pub min_pairs: i64,
    /// Seeds prompt generation, self-instruction and judging.
    pub seed: u64,
    /// After each swap, measure the new checkpoint's judge on this ranked set (its first
    /// `eval_limit` prompts).
    pub eval_ranked: Option<PathBuf>,
    pub eval_limit: Option<usize>,
    pub reward: Reward,
    /// Share (0–1) of each iteration's prompts taken from the generator of requests
    /// with checkable instructions.
    pub verifiable_share: f64,
    /// The swap gate (`None`: every checkpoint is activated).
    pub gate: Option<GateSettings>,
    /// Held-out verifiable pairs on which the policy's movement is measured.
    pub movement_pairs: Option<(PathBuf, usize)>,
    /// The DPO run of each iteration; its checkpoint and output are set per iteration.
    pub dpo: DpoJob,
    /// Where M(t+1) is written, as `m<t+1>.gguf` (default: beside its base).
    pub out_dir: Option<PathBuf>,
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
    fn add(&mut self, r: &GenerateResponse) {
        self.prompts += 1;
        self.candidates += r.choices.len();
        if let Some(judge) = &r.judge {
            self.judge_samples += judge.total;
            self.judge_parsed += judge.parsed;
        }
        for c in &r.choices {
            if let Some(verified) = &c.verified {
                self.verifiable_candidates += 1;
                self.verifiable_passed += usize::from(verified.strict.iter().all(|&p| p));
            }
            let bucket = c.score.map_or_else(|| "unscored".to_string(), |s| format!("{}", s.round() as i64));
            *self.histogram.entry(bucket).or_default() += 1;
        }
        let len = |i: usize| r.choices.get(i).map_or(0, |c| c.message.content.len());
        self.verifiable_prompts += usize::from(r.choices.iter().any(|c| c.verified.is_some()));
        match &r.pair {
            Some(pair) => {
                self.pairs += 1;
                self.pairs_by_verifier += usize::from(pair.decided_by == DecidedBy::Verifier);
                self.chosen_chars += len(pair.chosen_index);
                self.rejected_chars += len(pair.rejected_index);
            }
            None => self.no_pair += 1,
        }
    }
}

pub async fn run(args: LoopConfig) -> Result<()> {
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
pub async fn iterate(args: &LoopConfig, store: &Store) -> Result<Value> {
    let active = store.active_checkpoints().await?.pop().context("no active checkpoint: start `srlm serve` first")?;
    let iteration = active.iteration + 1;
    let client = Client::new(&args.url, std::time::Duration::from_secs(1800))?;
    let base = client.base().to_string();
    let mut tally = Tally::default();

    // 1–2. New prompts, each answered and judged by the active checkpoint as it comes.
    let started = Instant::now();
    let done = store.count_prompts("self_instruct", iteration, active.id).await? as usize;
    let need = args.prompts.saturating_sub(done);
    if need > 0 {
        let verifiable = ((need as f64) * args.verifiable_share.clamp(0.0, 1.0)).round() as usize;
        let bar = crate::progress::Progress::new(need as u64, format!("iter {iteration}"), "prompts judged");
        let mut running: JoinSet<Result<GenerateResponse>> = JoinSet::new();
        let body = |prompt: &str, instructions: Option<&[crate::verify::Instruction]>| GenerateRequest {
            prompt: Some(prompt.to_string()),
            n: Some(args.n as i64),
            max_tokens: Some(args.max_tokens as i64),
            judge: Some(JudgeChoice::Options(JudgeOptions {
                samples: Some(args.samples as i64),
                method: Some(args.method),
                ..Default::default()
            })),
            source: Some("self_instruct".into()),
            iteration: Some(iteration),
            reward: Some(args.reward),
            instructions: instructions.map(<[_]>::to_vec),
            ..Default::default()
        };
        let spawn = |running: &mut JoinSet<Result<GenerateResponse>>, body: GenerateRequest| {
            let client = client.clone();
            running.spawn(async move { client.generate(&body).await });
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
            let si = SelfInstructConfig {
                seed: args.seed.wrapping_add(iteration as u64 * 7919 + done as u64),
                ..SelfInstructConfig::new(&base, &args.database_url, args.seeds.clone(), written, iteration)
            };
            let mut writer = Writer::new(&si, store, crate::selfinstruct::server(&si)?).await?;
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
            let mut job = args.dpo.clone();
            job.checkpoint = Some(active.id);
            // With the gate, the loop decides what is served, not servers that follow.
            job.announce = args.gate.is_none();
            if let Some(dir) = &args.out_dir {
                job.output.out = Some(dir.join(format!("m{iteration}.gguf")));
            }
            crate::train::run::dpo(job, None).await?;
            store.output_of_base(active.id).await?.context("the training run registered no checkpoint")?
        }
    };
    let train_seconds = started.elapsed().as_secs_f64();

    // 4. The gate: M(t+1) against M(t), before it is served.
    let started = Instant::now();
    let gate = match &args.gate {
        None => json!({"enabled": false}),
        Some(settings) => serde_json::to_value(gate::check(store, active.id, output, settings).await?)?,
    };
    let gate_seconds = started.elapsed().as_secs_f64();

    // How far M(t+1) moved from M(t) on held-out pairs (the gate's verifiable pairs).
    let movement = if let Some((pairs, limit)) = args.movement_pairs.clone() {
        let path = |c: Option<crate::store::Checkpoint>| c.map(|c| PathBuf::from(c.path)).context("a checkpoint row vanished");
        let (parent, child) = (path(store.checkpoint(active.id).await?)?, path(store.checkpoint(output).await?)?);
        let measured = tokio::task::spawn_blocking(move || crate::eval::movement::measure(&parent, &child, &pairs, limit)).await??;
        json!(measured)
    } else {
        Value::Null
    };
    let refused = gate["refused"] == true;

    // 5. Swap it in (unless the gate refused it).
    let started = Instant::now();
    let swap = if refused {
        None
    } else {
        Some(client.activate(output, &args.admin_token).await.with_context(|| format!("activating checkpoint {output}"))?)
    };
    let swap_seconds = started.elapsed().as_secs_f64();

    // 6. Report.
    let run = store.run_producing(output).await?;
    let last_step = match &run {
        Some(r) => store.run_steps(r.id).await?.pop(),
        None => None,
    };
    let reward_model = match &args.eval_ranked {
        Some(data) if !refused => {
            let eval = crate::eval::rm::EvalRmConfig {
                url: base.to_string(),
                data: data.clone(),
                methods: vec![args.method],
                samples: args.samples,
                limit: args.eval_limit,
                seed: args.seed as i64,
                store: crate::eval::StoreConfig::default(),
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
        "swap_load_seconds": swap.map(|s| s.load_seconds),
        "reward_model": reward_model,
    });
    store.record_iteration(iteration, active.id, output, &report).await?;
    Ok(report)
}
