//! The swap gate: before `srlm loop` serves M(t+1), it measures M(t+1) and M(t) the
//! same way — instruction-level strict accuracy on a quick subset of the yardstick
//! (greedy answers) and the judge's pairwise accuracy on verifiable pairs (an answer
//! that followed every instruction against one that did not) — and refuses M(t+1) when
//! either falls more than a margin below M(t). A refused checkpoint stays registered
//! (status `refused`, with the figures as its reason); the old one keeps serving.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::source::{Decoding, Source};
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
    /// Largest tolerated drop, in accuracy points (0.05 = 5 points).
    pub margin: f64,
    pub max_tokens: usize,
    pub concurrency: usize,
}

impl GateSettings {
    /// Names what was measured, so stored figures are reused only for the same subset.
    pub fn dataset(&self) -> String {
        let pairs = self.pairs.as_ref().map_or_else(|| "-".to_string(), |p| format!("{}[:{}]", p.display(), self.pair_limit));
        format!("{}[:{}] + {pairs} ({} tokens)", self.ifeval.display(), self.prompts, self.max_tokens)
    }
}

/// What the gate measured of one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GateFigures {
    /// Instruction-level strict accuracy on the quick subset.
    pub instruction_strict: f64,
    pub instructions: usize,
    /// Judge pairwise accuracy on the verifiable pairs (a tie or an unparsed score
    /// counts as wrong).
    pub judge_accuracy: Option<f64>,
    pub judge_pairs: usize,
}

/// The gate's decision: `Err` holds the reasons for refusing.
pub fn decide(parent: &GateFigures, child: &GateFigures, margin: f64) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    if child.instruction_strict < parent.instruction_strict - margin {
        reasons.push(format!(
            "instruction-level accuracy fell from {:.1}% to {:.1}% (more than the {:.1}-point margin)",
            parent.instruction_strict * 100.0,
            child.instruction_strict * 100.0,
            margin * 100.0
        ));
    }
    if let (Some(p), Some(c)) = (parent.judge_accuracy, child.judge_accuracy) {
        if c < p - margin {
            reasons.push(format!(
                "judge accuracy on verifiable pairs fell from {:.1}% to {:.1}% (more than the {:.1}-point margin)",
                p * 100.0,
                c * 100.0,
                margin * 100.0
            ));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// Measures `source` as the gate does.
pub async fn measure(source: &Source, settings: &GateSettings) -> Result<GateFigures> {
    let mut prompts = crate::verify::prompts::read(&settings.ifeval)?;
    prompts.truncate(settings.prompts);
    let decoding = Decoding { max_tokens: settings.max_tokens, temperature: 0.0, top_p: 1.0, seed: 0 };
    let scored = super::ifeval::evaluate(source, &prompts, decoding, settings.concurrency).await?;
    let m = super::ifeval::metrics(&scored);
    let (judge_accuracy, judge_pairs) = match &settings.pairs {
        None => (None, 0),
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
            let n = right.len();
            ((n > 0).then(|| right.iter().filter(|&&r| r).count() as f64 / n as f64), n)
        }
    };
    Ok(GateFigures { instruction_strict: m.instruction_strict.value, instructions: m.instruction_strict.total, judge_accuracy, judge_pairs })
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
    let source = Source::open(&id.to_string(), "current", None, Some(store)).await.with_context(|| format!("loading checkpoint {id} for the gate"))?;
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
        metrics: serde_json::to_value(figures)?,
        config: serde_json::json!({"margin": settings.margin}),
    };
    store.record_evaluation(&evaluation).await?;
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(ifeval: f64, judge: Option<f64>) -> GateFigures {
        GateFigures { instruction_strict: ifeval, instructions: 100, judge_accuracy: judge, judge_pairs: 50 }
    }

    #[test]
    fn a_drop_beyond_the_margin_on_either_measure_refuses() {
        let parent = figures(0.40, Some(0.60));
        assert_eq!(decide(&parent, &figures(0.36, Some(0.56)), 0.05), Ok(()));
        assert_eq!(decide(&parent, &figures(0.60, Some(0.70)), 0.05), Ok(()));
        let reasons = decide(&parent, &figures(0.30, Some(0.61)), 0.05).unwrap_err();
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].contains("40.0% to 30.0%"), "{reasons:?}");
        let reasons = decide(&parent, &figures(0.41, Some(0.50)), 0.05).unwrap_err();
        assert!(reasons[0].contains("judge accuracy"), "{reasons:?}");
        assert_eq!(decide(&parent, &figures(0.20, Some(0.20)), 0.05).unwrap_err().len(), 2);
        // Without judge figures on both sides, only the yardstick counts.
        assert_eq!(decide(&parent, &figures(0.40, None), 0.0), Ok(()));
        // margin 0: any drop refuses.
        assert!(decide(&parent, &figures(0.399, Some(0.60)), 0.0).is_err());
    }
}
