//! Reward-model quality (SPEC §1): how well a checkpoint's judge agrees with a human
//! ranking of several answers to the same prompt. The metrics of the paper: pairwise
//! accuracy, 5-best %, exact-match %, Spearman and Kendall τ, plus the parse rate.
//!
//! Scores come in human order (best answer first); `None` is an unparsed judgment.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct EvalRmConfig {
    /// Base URL of the srlm server whose judge is measured.
    pub url: String,
    /// Ranked set: JSONL lines `{"prompt": "...", "answers": [best, …, worst]}`.
    pub data: PathBuf,
    /// Judging methods to measure.
    pub methods: Vec<crate::judge::JudgeMethod>,
    /// Judge samples per answer (paper: 3).
    pub samples: usize,
    /// Use only the first N prompts.
    pub limit: Option<usize>,
    /// Seed for the judge's sampling.
    pub seed: i64,
    pub store: super::StoreConfig,
}

/// What one run measured: per method, and which checkpoint judged.
#[derive(Debug, Clone)]
pub struct RmReport {
    /// The judging checkpoint, as the server named it in every answer.
    pub checkpoint_id: Option<i64>,
    pub results: Vec<(String, RmMetrics)>,
}

/// The agreement of judge scores with human rankings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RmMetrics {
    pub prompts: usize,
    /// Answer pairs of a prompt that the judge orders as the humans do (a tie counts as
    /// a disagreement; pairs with an unparsed score are left out).
    pub pairwise_accuracy: Option<f64>,
    /// Comparable answer pairs behind `pairwise_accuracy`.
    pub pairs: usize,
    /// 95 % Wilson interval of `pairwise_accuracy`.
    pub pairwise_low: Option<f64>,
    pub pairwise_high: Option<f64>,
    /// Of the answers the judge gave 5 (mean rounded), the share the humans ranked first.
    pub five_best: Option<f64>,
    /// Prompts whose whole ranking the judge reproduces exactly (strictly ordered).
    pub exact_match: Option<f64>,
    /// Mean over prompts of the Spearman correlation (prompts where either side is
    /// constant are left out).
    pub spearman: Option<f64>,
    /// Mean over prompts of Kendall's τ-b.
    pub kendall_tau: Option<f64>,
    /// Answers whose judgment parsed.
    pub parse_rate: f64,
}

/// Average ranks (1 = smallest) with ties sharing their mean rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && values[idx[j + 1]] == values[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            out[k] = mean;
        }
        i = j + 1;
    }
    out
}

fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let (va, vb): (f64, f64) = (a.iter().map(|x| (x - ma).powi(2)).sum(), b.iter().map(|y| (y - mb).powi(2)).sum());
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    pearson(&ranks(a), &ranks(b))
}

/// Kendall's τ-b (ties on either side handled).
pub fn kendall_tau(a: &[f64], b: &[f64]) -> Option<f64> {
    let (mut concordant, mut discordant, mut ties_a, mut ties_b) = (0f64, 0f64, 0f64, 0f64);
    for i in 0..a.len() {
        for j in i + 1..a.len() {
            let (da, db) = (a[i] - a[j], b[i] - b[j]);
            match (da == 0.0, db == 0.0) {
                (true, true) => {}
                (true, false) => ties_a += 1.0,
                (false, true) => ties_b += 1.0,
                _ if da.signum() == db.signum() => concordant += 1.0,
                _ => discordant += 1.0,
            }
        }
    }
    let denom = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)).sqrt();
    (denom > 0.0).then(|| (concordant - discordant) / denom)
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// The metrics for judge scores of answers in human order (best first), per prompt.
pub fn metrics(items: &[Vec<Option<f64>>]) -> RmMetrics {
    let (mut agree, mut pairs, mut fives, mut fives_best, mut exact) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut sp, mut kt) = (Vec::new(), Vec::new());
    let (mut parsed, mut answers) = (0usize, 0usize);
    for scores in items {
        answers += scores.len();
        parsed += scores.iter().flatten().count();
        for (i, s) in scores.iter().enumerate() {
            if s.is_some_and(|s| s.round() >= 5.0) {
                fives += 1;
                fives_best += usize::from(i == 0);
            }
        }
        for i in 0..scores.len() {
            for j in i + 1..scores.len() {
                if let (Some(better), Some(worse)) = (scores[i], scores[j]) {
                    pairs += 1;
                    agree += usize::from(better > worse);
                }
            }
        }
        if scores.iter().all(Option::is_some) {
            let judge: Vec<f64> = scores.iter().flatten().copied().collect();
            exact += usize::from(judge.windows(2).all(|w| w[0] > w[1]));
            // Human "scores": the best answer highest.
            let human: Vec<f64> = (0..judge.len()).rev().map(|r| r as f64).collect();
            sp.extend(spearman(&judge, &human));
            kt.extend(kendall_tau(&judge, &human));
        }
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    RmMetrics {
        prompts: items.len(),
        pairwise_accuracy: ratio(agree, pairs),
        pairs,
        pairwise_low: (pairs > 0).then(|| super::stats::wilson(agree, pairs).0),
        pairwise_high: (pairs > 0).then(|| super::stats::wilson(agree, pairs).1),
        five_best: ratio(fives_best, fives),
        exact_match: ratio(exact, items.len()),
        spearman: mean(&sp),
        kendall_tau: mean(&kt),
        parse_rate: ratio(parsed, answers).unwrap_or(0.0),
    }
}

/// A prompt with answers in human order, best first.
#[derive(serde::Deserialize)]
pub(crate) struct Ranked {
    pub prompt: String,
    pub answers: Vec<String>,
}

pub(crate) fn read_ranked(path: &std::path::Path) -> Result<Vec<Ranked>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: not a {{\"prompt\", \"answers\"}} line", path.display(), i + 1))
        })
        .collect()
}

/// Judges every answer of the ranked set through the server's `/judge`, per method.
/// Fails if the server swapped checkpoints midway (the scores would mix two judges).
pub async fn evaluate(args: &EvalRmConfig) -> Result<RmReport> {
    let mut items = read_ranked(&args.data)?;
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    let client = crate::client::Client::new(&args.url, std::time::Duration::from_secs(600))?;
    let mut out = Vec::new();
    let mut judges = std::collections::BTreeSet::new();
    for method in &args.methods {
        let mut scores = Vec::with_capacity(items.len());
        let bar = crate::progress::Progress::new(items.len() as u64, format!("rm {}", method.as_str()), "prompts");
        for item in &items {
            let judged = item.answers.iter().map(|answer| {
                let request = crate::protocol::judge::JudgeRequest {
                    prompt: Some(item.prompt.clone()),
                    response: Some(answer.clone()),
                    samples: Some(args.samples as i64),
                    method: Some(*method),
                    seed: Some(args.seed),
                    record: Some(false),
                    ..Default::default()
                };
                let client = client.clone();
                async move { client.judge(&request).await }
            });
            let answers = futures::future::try_join_all(judged).await?;
            judges.extend(answers.iter().map(|r| r.checkpoint_id));
            scores.push(answers.iter().map(|r| r.mean.map(f64::from)).collect::<Vec<_>>());
            bar.inc(1);
        }
        bar.finish();
        out.push((method.as_str().to_string(), metrics(&scores)));
    }
    anyhow::ensure!(judges.len() <= 1, "the server changed checkpoints during the evaluation (judges {judges:?}); run it again");
    Ok(RmReport { checkpoint_id: judges.into_iter().next().flatten(), results: out })
}

/// Stores each method's metrics with the judging checkpoint; returns the row ids.
pub async fn store_report(store: &crate::store::Store, args: &EvalRmConfig, report: &RmReport) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    for (method, m) in &report.results {
        let evaluation = crate::store::evaluations::NewEvaluation {
            kind: "rm",
            checkpoint_id: report.checkpoint_id,
            opponent_checkpoint_id: None,
            subject: args.url.clone(),
            opponent: None,
            method: method.clone(),
            dataset: args.data.display().to_string(),
            items: m.prompts as i32,
            metrics: serde_json::to_value(m)?,
            config: serde_json::json!({"samples": args.samples, "seed": args.seed}),
        };
        ids.push(store.record_evaluation(&evaluation).await?);
    }
    Ok(ids)
}

pub async fn run(args: EvalRmConfig) -> Result<()> {
    let store = args.store.connect().await?;
    let report = evaluate(&args).await?;
    let pct = super::pct;
    let num = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
    eprintln!(
        "{:>10} {:>8} {:>26} {:>7} {:>7} {:>8} {:>8} {:>6}",
        "method", "prompts", "pairwise [95% CI] (pairs)", "5-best", "exact", "spearman", "kendall", "parse"
    );
    for (method, m) in &report.results {
        let pairwise = match (m.pairwise_low, m.pairwise_high) {
            (Some(lo), Some(hi)) => format!("{} [{:.1}, {:.1}] ({})", pct(m.pairwise_accuracy), lo * 100.0, hi * 100.0, m.pairs),
            _ => "-".to_string(),
        };
        eprintln!(
            "{method:>10} {:>8} {:>26} {:>7} {:>7} {:>8} {:>8} {:>6}",
            m.prompts,
            pairwise,
            pct(m.five_best),
            pct(m.exact_match),
            num(m.spearman),
            num(m.kendall_tau),
            pct(Some(m.parse_rate))
        );
    }
    if let Some(store) = &store {
        for (id, (method, _)) in store_report(store, &args, &report).await?.into_iter().zip(&report.results) {
            eprintln!("{method}: stored as evaluation {id}");
        }
        args.store.chart(store, "rm", "pairwise_accuracy").await?;
    }
    let json: serde_json::Map<String, serde_json::Value> = report.results.into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect();
    println!("{}", serde_json::Value::Object(json));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("a value");
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn a_perfect_ranking_scores_one_everywhere() {
        let m = metrics(&[vec![Some(5.0), Some(3.0), Some(1.0)], vec![Some(4.0), Some(2.0)]]);
        close(m.pairwise_accuracy, 1.0);
        assert_eq!(m.pairs, 4);
        close(m.pairwise_low, super::super::stats::wilson(4, 4).0);
        close(m.exact_match, 1.0);
        close(m.spearman, 1.0);
        close(m.kendall_tau, 1.0);
        close(m.five_best, 1.0);
        assert_eq!(m.parse_rate, 1.0);
    }

    #[test]
    fn a_reversed_ranking_scores_minus_one() {
        let m = metrics(&[vec![Some(1.0), Some(3.0), Some(5.0)]]);
        close(m.pairwise_accuracy, 0.0);
        close(m.exact_match, 0.0);
        close(m.spearman, -1.0);
        close(m.kendall_tau, -1.0);
        close(m.five_best, 0.0);
    }

    #[test]
    fn ties_and_unparsed_scores_follow_the_stated_rules() {
        // Human order a > b > c; judge: a = 4, b = 4, c unparsed.
        let m = metrics(&[vec![Some(4.0), Some(4.0), None]]);
        close(m.pairwise_accuracy, 0.0); // the one comparable pair is tied
        close(m.exact_match, 0.0);
        assert_eq!(m.spearman, None, "an unparsed answer leaves the prompt out");
        assert!((m.parse_rate - 2.0 / 3.0).abs() < 1e-12);
        // Judge 3, 3, 1 against human 2, 1, 0: Spearman on ranks (2.5, 2.5, 1) vs (3, 2, 1)
        // = 0.866…; τ-b = 2 / √(3 · 2) = 0.816…
        close(spearman(&[3.0, 3.0, 1.0], &[2.0, 1.0, 0.0]), 3f64.sqrt() / 2.0);
        close(kendall_tau(&[3.0, 3.0, 1.0], &[2.0, 1.0, 0.0]), 2.0 / 6f64.sqrt());
        // A constant judge has no correlation.
        assert_eq!(spearman(&[2.0, 2.0], &[1.0, 0.0]), None);
    }
}
