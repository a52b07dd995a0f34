//! The swap gate: before `srlm loop` serves M(t+1), it measures M(t+1) and M(t) the
//! same way — instruction-level strict accuracy on a quick subset of the yardstick
//! (greedy answers) and the judge's pairwise accuracy on verifiable pairs (an answer
//! that followed every instruction against one that did not) — and refuses M(t+1) when
//! either is worse for sure: the 95 % interval of the paired change (item by item, the
//! same instructions and pairs) lies wholly below −margin. On 48 prompts a drop of a few
//! points is noise; a point-estimate rule refused checkpoints on it. A refused
//! checkpoint stays registered (status `refused`, with the figures as its reason); the
//! old one keeps serving.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::source::{Decoding, Source};
use super::stats::MeanInterval;
use crate::judge::{JudgeMethod, JudgeSettings};

/// How the gate measures and how much worse it tolerates.
#[derive(Debug, Clone)]
pub struct GateSettings {
    /// The yardstick (`data/ifeval.jsonl`); its first `prompts` are the quick subset.
    pub ifeval: PathBuf,
    pub prompts: usize,
    /// Verifiable judge pairs (ranked JSONL, better answer first); `None` skips the
    /// judge half.
    pub pairs: Option<PathBuf>,
    pub pair_limit: usize,
    /// Largest tolerated drop, in accuracy points (0.05 = 5 points), at the upper end
    /// of the paired change's interval (0: refuse any drop the interval is sure of).
    pub margin: f64,
    pub max_tokens: usize,
    pub concurrency: usize,
}

impl GateSettings {
    /// Names what was measured, so stored figures are reused only for the same subset.
    pub fn dataset(&self) -> String {
        let pairs = self.pairs.as_ref().map_or_else(|| "-".to_string(), |p| format!("{}[:{}]", p.display(), self.pair_limit));
        format!("{}[:{}] + {pairs} ({} tokens, per item)", self.ifeval.display(), self.prompts, self.max_tokens)
    }
}

/// What the gate measured of one checkpoint, item by item so that two checkpoints are
/// compared on the same items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateFigures {
    /// Instruction-level strict accuracy on the quick subset.
    pub instruction_strict: f64,
    pub instructions: usize,
    /// Per instruction of the subset, in order: followed (strict).
    pub instruction_followed: Vec<bool>,
    /// Judge pairwise accuracy on the verifiable pairs (a tie or an unparsed score
    /// counts as wrong).
    pub judge_accuracy: Option<f64>,
    pub judge_pairs: usize,
    /// Per pair, in order: the better answer scored higher.
    pub judge_right: Vec<bool>,
}

impl GateFigures {
    pub fn new(instruction_followed: Vec<bool>, judge_right: Option<Vec<bool>>) -> Self {
        let share = |xs: &[bool]| xs.iter().filter(|&&x| x).count() as f64 / xs.len().max(1) as f64;
        Self {
            instruction_strict: share(&instruction_followed),
            instructions: instruction_followed.len(),
            judge_accuracy: judge_right.as_ref().filter(|r| !r.is_empty()).map(|r| share(r)),
            judge_pairs: judge_right.as_ref().map_or(0, Vec::len),
            judge_right: judge_right.unwrap_or_default(),
            instruction_followed,
        }
    }

    /// The figures without the items, for reports.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({"instruction_strict": self.instruction_strict, "instructions": self.instructions,
                           "judge_accuracy": self.judge_accuracy, "judge_pairs": self.judge_pairs})
    }
}

/// The gate's decision: `Err` holds the reasons for refusing. A measure refuses when the
/// upper end of its paired change's 95 % interval is below −`margin`.
pub fn decide(parent: &GateFigures, child: &GateFigures, margin: f64) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    let mut check = |what: &str, before: f64, after: f64, change: MeanInterval| {
        if change.high < -margin {
            reasons.push(format!(
                "{what} fell from {:.1}% to {:.1}%: paired change {} over {} items, below −{:.1} points even at its upper end",
                before * 100.0,
                after * 100.0,
                change.show_points(),
                change.n,
                margin * 100.0
            ));
        }
    };
    check(
        "instruction-level accuracy",
        parent.instruction_strict,
        child.instruction_strict,
        MeanInterval::paired_change(&parent.instruction_followed, &child.instruction_followed),
    );
    if let (Some(p), Some(c)) = (parent.judge_accuracy, child.judge_accuracy) {
        check("judge accuracy on verifiable pairs", p, c, MeanInterval::paired_change(&parent.judge_right, &child.judge_right));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// The paired changes from `parent` to `child` (instructions, judge pairs), for reports.
pub fn changes(parent: &GateFigures, child: &GateFigures) -> (MeanInterval, MeanInterval) {
    (
        MeanInterval::paired_change(&parent.instruction_followed, &child.instruction_followed),
        MeanInterval::paired_change(&parent.judge_right, &child.judge_right),
    )
}

/// The gate's verdict on `child` against `parent`, with what it measured.
#[derive(Debug, Clone, Serialize)]
pub struct GateOutcome {
    pub enabled: bool,
    pub refused: bool,
    /// Why it refused (`None` when it did not).
    pub reasons: Option<Vec<String>>,
    pub parent: serde_json::Value,
    pub child: serde_json::Value,
    pub instruction_change: MeanInterval,
    /// `None` without judge pairs.
    pub judge_change: Option<MeanInterval>,
    pub margin: f64,
    pub dataset: String,
}

/// Measures checkpoints `parent` and `child` (stored figures for the same subset are
/// reused), decides, and records a refusal on `child` (status `refused`, the reasons as
/// its error; an active checkpoint is left as it is).
pub async fn check(store: &crate::store::Store, parent: i64, child: i64, settings: &GateSettings) -> Result<GateOutcome> {
    let before = figures_of(store, parent, settings).await?;
    let after = figures_of(store, child, settings).await?;
    let decision = decide(&before, &after, settings.margin);
    if let Err(reasons) = &decision {
        store.mark_checkpoint_refused(child, &reasons.join("; ")).await?;
    }
    let (instructions, judge) = changes(&before, &after);
    Ok(GateOutcome {
        enabled: true,
        refused: decision.is_err(),
        reasons: decision.err(),
        parent: before.summary(),
        child: after.summary(),
        instruction_change: instructions,
        judge_change: (judge.n > 0).then_some(judge),
        margin: settings.margin,
        dataset: settings.dataset(),
    })
}

/// `srlm eval gate`: the gate on two stored checkpoints, measured in this process;
/// prints the outcome as JSON and fails when the gate refuses.
pub async fn run(database_url: &str, parent: i64, child: i64, settings: &GateSettings) -> Result<()> {
    let store = crate::store::Store::connect_migrated(database_url).await.context("connecting to Postgres")?;
    for id in [parent, child] {
        store.checkpoint(id).await?.with_context(|| format!("no checkpoint {id}"))?;
    }
    let outcome = check(&store, parent, child, settings).await?;
    println!("{}", serde_json::to_string(&outcome)?);
    if let Some(reasons) = &outcome.reasons {
        anyhow::bail!("the swap gate refuses checkpoint {child} in place of {parent}: {}", reasons.join("; "));
    }
    eprintln!("the swap gate lets checkpoint {child} replace {parent}");
    Ok(())
}

/// Measures `source` as the gate does.
pub async fn measure(source: &Source, settings: &GateSettings) -> Result<GateFigures> {
    let mut prompts = crate::verify::prompts::read(&settings.ifeval)?;
    prompts.truncate(settings.prompts);
    let decoding = Decoding { max_tokens: settings.max_tokens, temperature: 0.0, top_p: 1.0, seed: 0 };
    let scored = super::ifeval::evaluate(source, &prompts, decoding, settings.concurrency).await?;
    let followed = scored.iter().flat_map(|s| s.outcome.strict.iter().copied()).collect();
    let judge_right = match &settings.pairs {
        None => None,
        Some(path) => {
            let mut pairs = super::rm::read_ranked(path)?;
            pairs.truncate(settings.pair_limit);
            let judge = JudgeSettings { samples: 1, method: JudgeMethod::Expected, temperature: 0.0, top_p: 1.0, max_tokens: 128, seed: 0 };
            let questions: Vec<String> = pairs.iter().map(|p| p.prompt.clone()).collect();
            let right = super::over_prompts(&questions, settings.concurrency, "gate judge", |i, question| {
                let (pairs, judge) = (&pairs, &judge);
                async move {
                    let [better, worse, ..] = pairs[i].answers.as_slice() else {
                        anyhow::bail!("{}: pair {} has fewer than two answers", path.display(), i + 1);
                    };
                    let (b, w) = futures::try_join!(source.judge(question, better, judge), source.judge(question, worse, judge))?;
                    Ok(matches!((b.mean, w.mean), (Some(b), Some(w)) if b > w))
                }
            })
            .await?;
            Some(right)
        }
    };
    Ok(GateFigures::new(followed, judge_right))
}

/// The figures of checkpoint `id`: stored ones for the same subset, else measured
/// in this process and stored.
pub async fn figures_of(store: &crate::store::Store, id: i64, settings: &GateSettings) -> Result<GateFigures> {
    let dataset = settings.dataset();
    if let Some(stored) = store.latest_evaluation("ifeval", id, "gate", &dataset).await? {
        if let Ok(figures) = serde_json::from_value(stored.metrics) {
            return Ok(figures);
        }
    }
    let source = Source::open(&id.to_string(), "current", None, Some(store))
        .await
        .with_context(|| format!("loading checkpoint {id} for the gate"))?;
    let figures = measure(&source, settings).await?;
    let evaluation = crate::store::evaluations::NewEvaluation {
        kind: "ifeval",
        checkpoint_id: Some(id),
        opponent_checkpoint_id: None,
        subject: source.label().to_string(),
        opponent: None,
        method: "gate".into(),
        dataset,
        items: figures.instructions as i32,
        metrics: serde_json::to_value(&figures)?,
        config: serde_json::json!({"margin": settings.margin}),
    };
    store.record_evaluation(&evaluation).await?;
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures from `followed` of 20 instructions and `right` of 10 judge pairs, the
    /// passes first.
    fn figures(followed: usize, right: Option<usize>) -> GateFigures {
        let first = |k: usize, n: usize| (0..n).map(|i| i < k).collect::<Vec<bool>>();
        GateFigures::new(first(followed, 20), right.map(|k| first(k, 10)))
    }

    #[test]
    fn only_a_drop_the_paired_interval_is_sure_of_refuses() {
        let parent = figures(10, Some(6));
        assert_eq!((parent.instruction_strict, parent.judge_accuracy, parent.judge_pairs), (0.5, Some(0.6), 10));
        // Gains never refuse; neither does one instruction lost of 20 (the interval holds 0).
        assert_eq!(decide(&parent, &figures(14, Some(9)), 0.0), Ok(()));
        assert_eq!(decide(&parent, &figures(9, Some(6)), 0.0), Ok(()));
        // Four lost and none gained: -20 points [-38.0, -2.0] (s = 0.41, n = 20) is sure.
        let reasons = decide(&parent, &figures(6, Some(6)), 0.0).unwrap_err();
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].contains("50.0% to 30.0%") && reasons[0].contains("-20.0 points [-38.0, -2.0] over 20 items"), "{reasons:?}");
        // …unless the margin tolerates a drop that large at the interval's upper end.
        assert_eq!(decide(&parent, &figures(6, Some(6)), 0.05), Ok(()));
        // The judge half the same way; both at once give two reasons.
        let reasons = decide(&parent, &figures(10, Some(1)), 0.0).unwrap_err();
        assert!(reasons[0].contains("judge accuracy"), "{reasons:?}");
        assert_eq!(decide(&parent, &figures(0, Some(0)), 0.0).unwrap_err().len(), 2);
        // Without judge figures on both sides, only the yardstick counts.
        assert_eq!(decide(&parent, &figures(10, None), 0.0), Ok(()));
        // A negative margin demands a sure gain: no change at all refuses.
        assert!(decide(&parent, &parent, -0.01).is_err());
    }

    #[test]
    fn the_same_accuracy_from_other_items_is_a_change_the_pairing_sees() {
        // 10 of 20 both times, but the child passes exactly what the parent failed.
        let parent = figures(10, None);
        let mut child = parent.clone();
        child.instruction_followed.iter_mut().for_each(|f| *f = !*f);
        let (instructions, _) = changes(&parent, &child);
        assert_eq!((instructions.mean, instructions.n), (0.0, 20));
        assert!(instructions.low < -0.4 && instructions.high > 0.4, "{instructions:?}");
        assert_eq!(decide(&parent, &child, 0.0), Ok(()));
    }
}
