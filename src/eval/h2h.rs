//! Head-to-head (SPEC §1): model A against model B on a prompt set, judged pairwise by a
//! third model (a checkpoint, or any OpenAI-compatible endpoint).
//!
//! Every pair is judged twice, once in each order; a win needs both orders to agree, and
//! anything else (disagreement, a tie verdict, an unparsed one) is a tie — so a judge
//! that always prefers the first position produces only ties. The length-controlled
//! win rate regresses the length difference out, as length-controlled AlpacaEval does.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use super::source::{Answer, Decoding, Source};
use crate::judge::pairwise::{self, parse_verdict, Preference};

#[derive(Debug, Clone)]
pub struct EvalH2hConfig {
    /// Model A: a server URL (`http://…`), a checkpoint id, or a model file.
    pub a: String,
    /// Model B, named the same way.
    pub b: String,
    /// The judge, named the same way (a hosted model works: give its URL, --judge-model
    /// and --judge-api-key-env).
    pub judge: String,
    /// Model name sent to server A.
    pub a_model: String,
    /// Model name sent to server B.
    pub b_model: String,
    /// Model name sent to the judge's server.
    pub judge_model: String,
    /// Environment variable holding the judge server's API key.
    pub judge_api_key_env: Option<String>,
    /// Prompts: JSONL with `prompt`, `instruction` or `messages`, or a JSON array.
    pub prompts: PathBuf,
    /// Use only the first N prompts.
    pub limit: Option<usize>,
    /// Most new tokens per answer.
    pub max_tokens: usize,
    /// Sampling temperature of A and B (0 = greedy; the judge is always greedy).
    pub temperature: f64,
    /// Most new tokens per verdict.
    pub judge_max_tokens: usize,
    /// Pairwise judge prompt with `{prompt}`, `{first}` and `{second}` (default:
    /// templates/pairwise.txt), ending in "Verdict: 1|2|tie".
    pub judge_template: Option<PathBuf>,
    /// Prompts in flight at once.
    pub concurrency: usize,
    /// Write every prompt's answers and verdicts as JSON here.
    pub out: Option<PathBuf>,
    pub store: super::StoreConfig,
}

/// A's result on one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Win,
    Tie,
    Loss,
}

impl Outcome {
    fn value(self) -> f64 {
        match self {
            Self::Win => 1.0,
            Self::Tie => 0.5,
            Self::Loss => 0.0,
        }
    }
}

/// A's outcome from the verdict with A shown first and the one with B shown first.
pub fn outcome(a_first: Preference, b_first: Preference) -> Outcome {
    match (a_first, b_first) {
        (Preference::First, Preference::Second) => Outcome::Win,
        (Preference::Second, Preference::First) => Outcome::Loss,
        _ => Outcome::Tie,
    }
}

/// One prompt's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Match {
    pub prompt: String,
    pub a: String,
    pub b: String,
    pub a_tokens: usize,
    pub b_tokens: usize,
    /// The verdict with A shown first, then with B shown first.
    pub verdicts: [Preference; 2],
    pub judge_texts: [String; 2],
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct H2hMetrics {
    pub prompts: usize,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// (wins + ties / 2) / prompts.
    pub win_rate: Option<f64>,
    /// The win rate predicted for answers of equal length (see [`length_controlled`]).
    pub lc_win_rate: Option<f64>,
    /// How strongly the outcome follows the length difference (the regression's slope).
    pub length_coefficient: Option<f64>,
    pub mean_tokens_a: Option<f64>,
    pub mean_tokens_b: Option<f64>,
    /// Verdicts (two per prompt) without a parseable `Verdict:` line.
    pub unparsed_verdicts: usize,
    /// Of the verdicts that picked a side, the share that picked the one shown first.
    pub first_position_rate: Option<f64>,
}

pub fn metrics(matches: &[Match]) -> H2hMetrics {
    let n = matches.len();
    let count = |o: Outcome| matches.iter().filter(|m| m.outcome == o).count();
    let verdicts = || matches.iter().flat_map(|m| m.verdicts);
    let decisive = verdicts().filter(|v| matches!(v, Preference::First | Preference::Second)).count();
    let first = verdicts().filter(|v| *v == Preference::First).count();
    let mean = |f: fn(&Match) -> usize| (n > 0).then(|| matches.iter().map(|m| f(m) as f64).sum::<f64>() / n as f64);
    let outcomes: Vec<f64> = matches.iter().map(|m| m.outcome.value()).collect();
    let diffs: Vec<f64> = matches.iter().map(|m| m.a_tokens as f64 - m.b_tokens as f64).collect();
    let lc = length_controlled(&outcomes, &diffs);
    H2hMetrics {
        prompts: n,
        wins: count(Outcome::Win),
        ties: count(Outcome::Tie),
        losses: count(Outcome::Loss),
        win_rate: (n > 0).then(|| outcomes.iter().sum::<f64>() / n as f64),
        lc_win_rate: lc.map(|(rate, _)| rate),
        length_coefficient: lc.map(|(_, slope)| slope),
        mean_tokens_a: mean(|m| m.a_tokens),
        mean_tokens_b: mean(|m| m.b_tokens),
        unparsed_verdicts: verdicts().filter(|v| *v == Preference::Unparsed).count(),
        first_position_rate: (decisive > 0).then(|| first as f64 / decisive as f64),
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The length-controlled win rate: a logistic regression of the outcome (1, ½, 0) on an
/// intercept and tanh(length difference / its standard deviation), fitted by Newton's
/// method with a small ridge penalty (so a perfectly length-determined outcome still
/// has a finite fit); the rate is sigmoid(intercept), the win rate when the lengths are
/// equal. Length-controlled AlpacaEval fits this with an extra per-instruction term.
/// Returns (rate, slope); `None` without outcomes.
pub fn length_controlled(outcomes: &[f64], length_diffs: &[f64]) -> Option<(f64, f64)> {
    let n = outcomes.len();
    if n == 0 {
        return None;
    }
    let mean = length_diffs.iter().sum::<f64>() / n as f64;
    let sd = (length_diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let x: Vec<f64> = length_diffs.iter().map(|d| if sd > 0.0 { (d / sd).tanh() } else { 0.0 }).collect();
    const RIDGE: f64 = 1e-2;
    let (mut b0, mut b1) = (0.0f64, 0.0f64);
    for _ in 0..100 {
        // Gradient and Hessian of the penalised negative log-likelihood.
        let (mut g0, mut g1, mut h00, mut h01, mut h11) = (RIDGE * b0, RIDGE * b1, RIDGE, 0.0, RIDGE);
        for (y, xi) in outcomes.iter().zip(&x) {
            let p = sigmoid(b0 + b1 * xi);
            let w = p * (1.0 - p);
            g0 += p - y;
            g1 += (p - y) * xi;
            h00 += w;
            h01 += w * xi;
            h11 += w * xi * xi;
        }
        let det = h00 * h11 - h01 * h01;
        if det.abs() < 1e-12 {
            break;
        }
        let (d0, d1) = ((h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det);
        b0 -= d0;
        b1 -= d1;
        if d0.abs().max(d1.abs()) < 1e-10 {
            break;
        }
    }
    Some((sigmoid(b0), b1))
}

/// Judges one ordered pair.
pub trait PairJudge: Sync {
    fn judge(&self, prompt: &str, first: &str, second: &str) -> impl std::future::Future<Output = Result<(Preference, String)>> + Send;
}

/// A model judging with the pairwise template, greedily.
pub struct ModelJudge {
    pub source: Source,
    pub template: String,
    pub max_tokens: usize,
}

impl PairJudge for ModelJudge {
    async fn judge(&self, prompt: &str, first: &str, second: &str) -> Result<(Preference, String)> {
        let text = pairwise::prompt(&self.template, prompt, first, second);
        let decoding = Decoding { max_tokens: self.max_tokens, temperature: 0.0, top_p: 1.0, seed: 0 };
        let answer = self.source.answer(&text, decoding).await?;
        Ok((parse_verdict(&answer.text, [first, second]), answer.text))
    }
}

/// Judges A's and B's answers to `prompt` in both orders (concurrently).
pub async fn compare(judge: &impl PairJudge, prompt: &str, a: Answer, b: Answer) -> Result<Match> {
    let (one, two) = futures::try_join!(judge.judge(prompt, &a.text, &b.text), judge.judge(prompt, &b.text, &a.text))?;
    Ok(Match {
        prompt: prompt.to_string(),
        outcome: outcome(one.0, two.0),
        verdicts: [one.0, two.0],
        judge_texts: [one.1, two.1],
        a_tokens: a.tokens,
        b_tokens: b.tokens,
        a: a.text,
        b: b.text,
    })
}

/// Answers every prompt with A and B and judges each pair.
pub async fn evaluate(args: &EvalH2hConfig, a: &Source, b: &Source, judge: &ModelJudge) -> Result<Vec<Match>> {
    let mut prompts = super::source::read_prompts(&args.prompts)?;
    if let Some(n) = args.limit {
        prompts.truncate(n);
    }
    let decoding = |seed| Decoding { max_tokens: args.max_tokens, temperature: args.temperature, top_p: 1.0, seed };
    super::over_prompts(&prompts, args.concurrency, "h2h", |i, prompt| async move {
        let (ans_a, ans_b) = futures::try_join!(a.answer(prompt, decoding(i as u64)), b.answer(prompt, decoding(i as u64)))?;
        compare(judge, prompt, ans_a, ans_b).await
    })
    .await
}

pub async fn run(args: EvalH2hConfig) -> Result<()> {
    let store = args.store.connect().await?;
    let a = Source::open(&args.a, &args.a_model, None, store.as_ref()).await?;
    let b = Source::open(&args.b, &args.b_model, None, store.as_ref()).await?;
    let api_key = args.judge_api_key_env.as_deref().map(std::env::var).transpose().context("reading the judge's API key")?;
    let judge = ModelJudge {
        source: Source::open(&args.judge, &args.judge_model, api_key, store.as_ref()).await?,
        template: pairwise::read_template(args.judge_template.as_deref())?,
        max_tokens: args.judge_max_tokens,
    };
    let matches = evaluate(&args, &a, &b, &judge).await?;
    let m = metrics(&matches);
    let pct = super::pct;
    eprintln!("A: {}\nB: {}\njudge: {}", a.label(), b.label(), judge.source.label());
    eprintln!(
        "{:>8} {:>5} {:>5} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9}",
        "prompts", "wins", "ties", "losses", "win rate", "LC win", "tokens A", "tokens B", "unparsed"
    );
    eprintln!(
        "{:>8} {:>5} {:>5} {:>6} {:>9} {:>9} {:>8.1} {:>8.1} {:>9}",
        m.prompts,
        m.wins,
        m.ties,
        m.losses,
        pct(m.win_rate),
        pct(m.lc_win_rate),
        m.mean_tokens_a.unwrap_or(0.0),
        m.mean_tokens_b.unwrap_or(0.0),
        m.unparsed_verdicts
    );
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&matches)?).with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(store) = &store {
        let evaluation = crate::store::evaluations::NewEvaluation {
            kind: "h2h",
            checkpoint_id: a.checkpoint_id(),
            opponent_checkpoint_id: b.checkpoint_id(),
            subject: a.label().to_string(),
            opponent: Some(b.label().to_string()),
            method: judge.source.label().to_string(),
            dataset: args.prompts.display().to_string(),
            items: m.prompts as i32,
            metrics: serde_json::to_value(&m)?,
            config: serde_json::json!({"max_tokens": args.max_tokens, "temperature": args.temperature, "judge_max_tokens": args.judge_max_tokens}),
        };
        let id = store.record_evaluation(&evaluation).await?;
        eprintln!("stored as evaluation {id}");
        args.store.chart(store, "h2h", "win_rate").await?;
    }
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_win_needs_both_orders_to_agree() {
        use Preference::*;
        assert_eq!(outcome(First, Second), Outcome::Win);
        assert_eq!(outcome(Second, First), Outcome::Loss);
        // The same position both times: position bias, not preference.
        assert_eq!(outcome(First, First), Outcome::Tie);
        assert_eq!(outcome(Second, Second), Outcome::Tie);
        assert_eq!(outcome(First, Tie), Outcome::Tie);
        assert_eq!(outcome(Unparsed, Second), Outcome::Tie);
    }

    /// A judge following a fixed rule on the two texts it is shown.
    struct Scripted(fn(&str, &str) -> Preference);

    impl PairJudge for Scripted {
        async fn judge(&self, _prompt: &str, first: &str, second: &str) -> Result<(Preference, String)> {
            Ok(((self.0)(first, second), String::new()))
        }
    }

    fn answer(text: &str) -> Answer {
        Answer { text: text.to_string(), tokens: text.split_whitespace().count() }
    }

    async fn play(judge: &Scripted, pairs: &[(&str, &str)]) -> H2hMetrics {
        let mut matches = Vec::new();
        for (a, b) in pairs {
            matches.push(compare(judge, "q", answer(a), answer(b)).await.unwrap());
        }
        metrics(&matches)
    }

    #[tokio::test]
    async fn scripted_judges_show_the_order_swap_and_tie_rule() {
        let pairs = [("good answer here", "bad"), ("good one", "bad answer words"), ("bad", "good")];
        // Always the first shown: every prompt a tie, and all decisive verdicts first.
        let m = play(&Scripted(|_, _| Preference::First), &pairs).await;
        assert_eq!((m.wins, m.ties, m.losses), (0, 3, 0));
        assert_eq!((m.win_rate, m.first_position_rate), (Some(0.5), Some(1.0)));
        // A consistent judge preferring "good…": A wins two, loses one, in both orders.
        let prefers_good = Scripted(|first, second| match (first.starts_with("good"), second.starts_with("good")) {
            (true, false) => Preference::First,
            (false, true) => Preference::Second,
            _ => Preference::Tie,
        });
        let m = play(&prefers_good, &pairs).await;
        assert_eq!((m.wins, m.ties, m.losses, m.unparsed_verdicts), (2, 0, 1, 0));
        assert!((m.win_rate.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.first_position_rate, Some(0.5));
        assert_eq!((m.mean_tokens_a, m.mean_tokens_b), (Some(2.0), Some(5.0 / 3.0)));
        // A judge that cannot answer: all ties, all unparsed.
        let m = play(&Scripted(|_, _| Preference::Unparsed), &pairs).await;
        assert_eq!((m.ties, m.unparsed_verdicts, m.first_position_rate), (3, 6, None));
    }

    #[test]
    fn length_control_removes_a_win_rate_that_only_follows_length() {
        // A wins exactly when its answer is longer, which it is on 3 of 4 prompts.
        let outcomes = [1.0, 1.0, 1.0, 0.0].repeat(10);
        let diffs = [40.0, 40.0, 40.0, -40.0].repeat(10);
        let (lc, slope) = length_controlled(&outcomes, &diffs).unwrap();
        assert!(lc < 0.68 && slope > 1.0, "lc {lc}, slope {slope}");
        // The same wins with lengths unrelated to them: the rate stays.
        let diffs = [40.0, -40.0, 0.0, 0.0].repeat(10);
        let (lc, _) = length_controlled(&outcomes, &diffs).unwrap();
        assert!((lc - 0.75).abs() < 0.03, "lc {lc}");
        // Equal lengths: the plain win rate.
        let (lc, slope) = length_controlled(&[1.0, 0.5, 0.0, 1.0], &[0.0; 4]).unwrap();
        assert!((lc - 0.625).abs() < 5e-3 && slope == 0.0, "{lc} {slope}");
        assert_eq!(length_controlled(&[], &[]), None);
    }
}
