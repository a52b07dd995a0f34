//! `srlm loop`: whole self-rewarding iterations against a running server (SPEC §1).
//!
//! One iteration, from the active checkpoint M(t): write new prompts (self-instruction)
//! → `/generate` N candidates for each, judged by M(t) itself → DPO on the pairs →
//! activate M(t+1) in the server → report. Each step's results are in Postgres before
//! the next starts, and the loop reads its position from there, so a rerun after a crash
//! or Ctrl-C continues where it stopped: prompts already answered for this iteration
//! count towards `--prompts`, a finished training run is not repeated, and a registered
//! but not yet active checkpoint is just swapped in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::selfinstruct::{Rejection, SelfInstructArgs, Writer};
use crate::store::Store;

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
}

impl Tally {
    fn add(&mut self, r: &Value) {
        self.prompts += 1;
        let choices = r["choices"].as_array().cloned().unwrap_or_default();
        self.candidates += choices.len();
        self.judge_samples += r["judge"]["total"].as_u64().unwrap_or(0) as usize;
        self.judge_parsed += r["judge"]["parsed"].as_u64().unwrap_or(0) as usize;
        for c in &choices {
            let bucket = c["score"].as_f64().map_or_else(|| "unscored".to_string(), |s| format!("{}", s.round() as i64));
            *self.histogram.entry(bucket).or_default() += 1;
        }
        let len = |i: &Value| i.as_u64().and_then(|i| choices.get(i as usize)).and_then(|c| c["message"]["content"].as_str()).map_or(0, str::len);
        if r["pair"].is_object() {
            self.pairs += 1;
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
        let si = SelfInstructArgs {
            seed: args.seed.wrapping_add(iteration as u64 * 7919 + done as u64),
            ..SelfInstructArgs::new(&base, &args.database_url, args.seeds.clone(), need, iteration)
        };
        let mut writer = Writer::new(&si, store, crate::selfinstruct::Completer::http(&si)?).await?;
        let bar = indicatif::ProgressBar::new(need as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} prompts judged ({eta}) {msg}")
                .expect("a valid template"),
        );
        bar.set_prefix(format!("iter {iteration}"));
        let mut running: JoinSet<Result<Value>> = JoinSet::new();
        let mut accepted = 0;
        while accepted < need && tally.attempts < need * 10 {
            tally.attempts += 1;
            match writer.attempt().await? {
                Ok(prompt) => {
                    accepted += 1;
                    let body = json!({
                        "messages": [{"role": "user", "content": prompt}], "n": args.n, "max_tokens": args.max_tokens,
                        "judge": {"samples": args.samples, "method": args.method}, "source": "self_instruct", "iteration": iteration,
                    });
                    let (client, url) = (client.clone(), format!("{base}/generate"));
                    running.spawn(async move { crate::bench::post_json(&client, &url, &body).await });
                    while running.len() >= args.concurrency.max(1) {
                        tally.add(&running.join_next().await.expect("non-empty")??);
                        bar.set_position(tally.prompts as u64);
                        bar.set_message(format!("{} pairs", tally.pairs));
                    }
                }
                Err(reason) => *tally.rejected.entry(reason).or_default() += 1,
            }
        }
        while let Some(r) = running.join_next().await {
            tally.add(&r??);
            bar.set_position(tally.prompts as u64);
        }
        bar.finish_and_clear();
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
            argv.extend(args.train_args.iter().map(String::as_str));
            let cli = crate::cli::Cli::try_parse_from(argv).context("--train-arg")?;
            let crate::cli::Command::Train(crate::cli::TrainCommand::Dpo(dpo)) = cli.command else { unreachable!("parsed as train dpo") };
            crate::train::run::dpo(dpo).await?;
            store.output_of_base(active.id).await?.context("the training run registered no checkpoint")?
        }
    };
    let train_seconds = started.elapsed().as_secs_f64();

    // 4. Swap it in.
    let started = Instant::now();
    let response = client
        .post(format!("{base}/admin/checkpoints/{output}/activate"))
        .bearer_auth(&args.admin_token)
        .send()
        .await?;
    let status = response.status();
    let swap: Value = serde_json::from_str(&response.text().await?).unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("activating checkpoint {output}: HTTP {status}: {swap}");
    }
    let swap_seconds = started.elapsed().as_secs_f64();

    // 5. Report.
    let run = store.run_producing(output).await?;
    let last_step = match &run {
        Some(r) => store.run_steps(r.id).await?.pop(),
        None => None,
    };
    let reward_model = match &args.eval_ranked {
        Some(data) => {
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
        None => Value::Null,
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
        "training_run_id": run.as_ref().map(|r| r.id),
        "training_examples": run.as_ref().and_then(|r| r.examples),
        "training_last_step": last_step,
        "data_seconds": data_seconds,
        "train_seconds": train_seconds,
        "swap_seconds": swap_seconds,
        "swap_load_seconds": swap["load_seconds"],
        "reward_model": reward_model,
    });
    store.record_iteration(iteration, active.id, output, &report).await?;
    Ok(report)
}
