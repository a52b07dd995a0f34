//! How far a checkpoint moved from its parent: on held-out preference pairs (a ranked
//! JSONL file, better answer first — the verifiable judge pairs by default), the
//! change of the better − worse log-probability margin (sums over answer tokens),
//! child minus parent, with a 95 % interval (mean ± 1.96 · s/√n), and the mean absolute
//! change of one answer's log-probability. A DPO step that did nothing gives 0 on both.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::DType;
use serde::Serialize;

use crate::engine::ChatMessage;
use crate::model::weights::LlamaWeights;
use crate::train::data::ChatFormat;
use crate::train::model::{Batch, Model, Trainable};

/// Longest sequence scored (prompt + answer, in tokens); longer answers are cut.
const MAX_LEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Movement {
    pub pairs: usize,
    /// Mean better − worse log-probability margin under the parent and the child.
    pub parent_margin: f64,
    pub child_margin: f64,
    /// Mean over pairs of (child margin − parent margin), with its 95 % interval.
    pub margin_change: f64,
    pub margin_change_low: f64,
    pub margin_change_high: f64,
    /// Mean |child − parent| log-probability of one answer.
    pub mean_abs_logprob_change: f64,
}

/// Log-probabilities of `(better, worse)` for each `(prompt, better, worse)` under the
/// model at `path`.
pub fn answer_logprobs(path: &Path, pairs: &[(String, String, String)]) -> Result<Vec<(f64, f64)>> {
    let format = ChatFormat::load(path)?;
    let weights = LlamaWeights::load(path).with_context(|| format!("loading {}", path.display()))?;
    let model = Model::from_weights(weights, &Trainable::default(), DType::F32, 0)?;
    let device = crate::train::run::training_device()?;
    pairs
        .iter()
        .map(|(prompt, better, worse)| {
            let context = format.prompt(&[ChatMessage { role: "user".into(), content: prompt.clone() }])?;
            let sequence = |answer: &str| -> Result<Vec<u32>> {
                let mut s = context.clone();
                s.extend(format.answer(answer)?);
                s.truncate(MAX_LEN.max(context.len() + 1));
                Ok(s)
            };
            let (b, w) = (sequence(better)?, sequence(worse)?);
            let batch = Batch::new(&[(&b, context.len()), (&w, context.len())], &device)?;
            let lp: Vec<f32> = model.sequence_logprobs(&batch, false, false)?.to_vec1()?;
            Ok((lp[0] as f64, lp[1] as f64))
        })
        .collect()
}

/// The movement from `parent` to `child` log-probabilities of the same pairs.
pub fn movement(parent: &[(f64, f64)], child: &[(f64, f64)]) -> Movement {
    let n = parent.len().min(child.len());
    let mean = |xs: &[f64]| if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 };
    let margins = |lp: &[(f64, f64)]| lp[..n].iter().map(|(b, w)| b - w).collect::<Vec<_>>();
    let (pm, cm) = (margins(parent), margins(child));
    let changes: Vec<f64> = pm.iter().zip(&cm).map(|(p, c)| c - p).collect();
    let change = super::stats::MeanInterval::of(&changes);
    let abs: Vec<f64> = parent[..n].iter().zip(&child[..n]).flat_map(|(p, c)| [(c.0 - p.0).abs(), (c.1 - p.1).abs()]).collect();
    Movement {
        pairs: n,
        parent_margin: mean(&pm),
        child_margin: mean(&cm),
        margin_change: change.mean,
        margin_change_low: change.low,
        margin_change_high: change.high,
        mean_abs_logprob_change: mean(&abs),
    }
}

/// Measures the movement from the model at `parent` to the one at `child` on the first
/// `limit` pairs of the ranked file `pairs`.
pub fn measure(parent: &Path, child: &Path, pairs: &Path, limit: usize) -> Result<Movement> {
    let mut ranked = super::rm::read_ranked(pairs)?;
    ranked.truncate(limit);
    let triples: Vec<(String, String, String)> = ranked
        .into_iter()
        .filter_map(|r| {
            let mut answers = r.answers.into_iter();
            Some((r.prompt, answers.next()?, answers.next()?))
        })
        .collect();
    Ok(movement(&answer_logprobs(parent, &triples)?, &answer_logprobs(child, &triples)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_change_is_zero_and_a_widened_margin_is_positive() {
        let parent = [(-10.0, -12.0), (-20.0, -19.0)];
        let same = movement(&parent, &parent);
        assert_eq!((same.margin_change, same.mean_abs_logprob_change), (0.0, 0.0));
        assert_eq!(same.parent_margin, 0.5);
        // The child raises the better answers by 1 and lowers the worse ones by 1 and 3.
        let child = [(-9.0, -13.0), (-19.0, -22.0)];
        let m = movement(&parent, &child);
        assert_eq!((m.pairs, m.margin_change, m.child_margin), (2, 3.0, 3.5));
        assert_eq!(m.mean_abs_logprob_change, 1.5);
        // Changes 2 and 4: s = √2, half-width 1.96 · √2 / √2 = 1.96.
        assert!((m.margin_change_low - (3.0 - 1.96)).abs() < 1e-12 && (m.margin_change_high - 4.96).abs() < 1e-12);
    }
}
