//! `srlm bench generate`: the self-rewarding workload at paper settings (N candidates,
//! K judge samples each) through `/generate`, per judging method: scored candidates per
//! minute, pairs per hour, parse rate and tie rate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::cli::GenerateBenchArgs;
use crate::client::Client;
use crate::judge::{JudgeMethod, NoPairReason};
use crate::protocol::generate::{GenerateRequest, JudgeChoice};
use crate::protocol::judge::JudgeOptions;

const PROMPTS: [&str; 8] = [
    "Give one tip for learning to cook.",
    "Explain what a hash map is.",
    "How do I keep basil alive?",
    "Why is the sea salty?",
    "What should I pack for a weekend hike?",
    "How can I sleep better?",
    "What is the difference between a virus and a bacterium?",
    "Suggest three ways to save money on groceries.",
];

#[derive(Debug, Clone, Default, Serialize)]
pub struct MethodResult {
    pub method: String,
    pub concurrency: usize,
    pub prompts: usize,
    pub errors: usize,
    pub candidates: usize,
    /// Candidates with a parsed mean score.
    pub scored_candidates: usize,
    /// Candidates answered and judged K times, whether or not a score parsed.
    pub judged_candidates: usize,
    pub judge_samples: usize,
    pub parsed_samples: usize,
    pub pairs: usize,
    /// Prompts whose best and worst scores tied (no pair for that reason).
    pub ties: usize,
    pub wall_s: f64,
    pub scored_candidates_per_min: f64,
    pub judged_candidates_per_min: f64,
    pub pairs_per_hour: f64,
    pub parse_rate: f64,
    pub tie_rate: f64,
}

pub async fn run(args: GenerateBenchArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.url, Duration::from_secs(args.time_limit_s))?;
    let mut results = Vec::new();
    println!(
        "{:>12} {:>5} {:>7} {:>6} {:>7} {:>11} {:>11} {:>8} {:>6} {:>5} {:>6}",
        "method", "conc", "prompts", "errors", "scored", "judged/min", "scored/min", "pairs/h", "parse", "ties", "wall s"
    );
    for method in &args.methods {
        let r = run_method(&client, &args, *method).await?;
        println!(
            "{:>12} {:>5} {:>7} {:>6} {:>7} {:>11.1} {:>11.1} {:>8.0} {:>5.0}% {:>4.0}% {:>6.0}",
            r.method,
            r.concurrency,
            r.prompts,
            r.errors,
            r.scored_candidates,
            r.judged_candidates_per_min,
            r.scored_candidates_per_min,
            r.pairs_per_hour,
            r.parse_rate * 100.0,
            r.tie_rate * 100.0,
            r.wall_s
        );
        results.push(r);
    }
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&results)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn run_method(client: &Client, args: &GenerateBenchArgs, method: JudgeMethod) -> anyhow::Result<MethodResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.time_limit_s);
    let start = Instant::now();
    let bar = crate::progress::Progress::new(args.prompts as u64, format!("generate {}", method.as_str()), "prompts");
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (client, next, args, bar) = (client.clone(), next.clone(), args.clone(), bar.clone());
            tokio::spawn(async move {
                let mut bodies = Vec::new();
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.prompts || Instant::now() > deadline {
                        break;
                    }
                    let request = GenerateRequest {
                        prompt: Some(PROMPTS[i % PROMPTS.len()].to_string()),
                        n: Some(args.n as i64),
                        max_tokens: Some(args.max_tokens as i64),
                        seed: Some(i as i64),
                        record: Some(args.record),
                        judge: Some(JudgeChoice::Options(JudgeOptions {
                            samples: Some(args.samples as i64),
                            method: Some(method),
                            max_tokens: Some(args.max_tokens as i64),
                            ..Default::default()
                        })),
                        ..Default::default()
                    };
                    match client.generate(&request).await {
                        Ok(v) => bodies.push(v),
                        Err(err) => {
                            tracing::warn!(error = %err, "generate failed");
                            errors += 1;
                        }
                    }
                    bar.inc(1);
                }
                (bodies, errors)
            })
        })
        .collect();
    let mut r = MethodResult { method: method.as_str().to_string(), concurrency: args.concurrency, ..Default::default() };
    let finished = futures::future::try_join_all(workers).await?;
    bar.finish();
    for (bodies, errors) in finished {
        r.errors += errors;
        for b in bodies {
            r.prompts += 1;
            r.candidates += b.choices.len();
            r.scored_candidates += b.choices.iter().filter(|c| c.score.is_some()).count();
            r.judged_candidates += b.choices.iter().filter(|c| !c.judgments.is_empty()).count();
            if let Some(judge) = &b.judge {
                r.judge_samples += judge.total;
                r.parsed_samples += judge.parsed;
            }
            r.pairs += usize::from(b.pair.is_some());
            r.ties += usize::from(b.no_pair_reason == Some(NoPairReason::Tie));
        }
    }
    r.wall_s = start.elapsed().as_secs_f64();
    r.scored_candidates_per_min = r.scored_candidates as f64 / (r.wall_s / 60.0);
    r.judged_candidates_per_min = r.judged_candidates as f64 / (r.wall_s / 60.0);
    r.pairs_per_hour = r.pairs as f64 / (r.wall_s / 3600.0);
    r.parse_rate = r.parsed_samples as f64 / r.judge_samples.max(1) as f64;
    r.tie_rate = r.ties as f64 / r.prompts.max(1) as f64;
    Ok(r)
}
