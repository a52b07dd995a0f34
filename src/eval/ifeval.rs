//! `srlm eval ifeval`: the objective yardstick. A model answers held-out requests that
//! carry checkable instructions (`data/ifeval.jsonl`, see `verify::prompts`), and a
//! program checks them: prompt-level accuracy (every instruction of a prompt followed)
//! and instruction-level accuracy, strict and loose, as IFEval reports them, each with a
//! 95 % Wilson interval.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::source::{Decoding, Source};
use super::stats::Proportion;
use crate::verify::prompts::VerifiablePrompt;
use crate::verify::Outcome;

#[derive(Debug, Clone)]
pub struct EvalIfevalConfig {
    /// The model: a server URL (`http://…`), a checkpoint id, or a model file.
    pub model: String,
    /// Model name sent to a server.
    pub model_name: String,
    /// The prompts: JSONL lines `{"id", "prompt", "instructions"}`.
    pub data: PathBuf,
    /// Use only the first N prompts (a quick subset, as the swap gate does).
    pub limit: Option<usize>,
    /// Most new tokens per answer.
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy, the default: the measurement repeats).
    pub temperature: f64,
    /// Prompts in flight at once.
    pub concurrency: usize,
    /// Write every prompt's answer and outcome as JSON here.
    pub out: Option<PathBuf>,
    pub store: super::StoreConfig,
}

/// What a model did with one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub id: String,
    pub prompt: String,
    pub answer: String,
    pub tokens: usize,
    pub kinds: Vec<&'static str>,
    pub outcome: Outcome,
}

/// The yardstick's figures.
#[derive(Debug, Clone, Serialize)]
pub struct IfevalMetrics {
    pub prompts: usize,
    pub prompt_strict: Proportion,
    pub prompt_loose: Proportion,
    pub instruction_strict: Proportion,
    pub instruction_loose: Proportion,
    /// Strict instruction-level accuracy per instruction kind.
    pub by_kind: BTreeMap<&'static str, Proportion>,
    pub mean_answer_tokens: f64,
    pub mean_answer_words: f64,
}

/// Accuracies over scored prompts.
pub fn metrics(scored: &[Scored]) -> IfevalMetrics {
    let n = scored.len();
    let count = |f: &dyn Fn(&Scored) -> bool| scored.iter().filter(|s| f(s)).count();
    let instructions: usize = scored.iter().map(|s| s.outcome.strict.len()).sum();
    let followed = |pick: &dyn Fn(&Outcome) -> &Vec<bool>| scored.iter().map(|s| pick(&s.outcome).iter().filter(|&&p| p).count()).sum();
    let mut by_kind: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    for s in scored {
        for (kind, &ok) in s.kinds.iter().zip(&s.outcome.strict) {
            let slot = by_kind.entry(kind).or_default();
            slot.0 += usize::from(ok);
            slot.1 += 1;
        }
    }
    let mean = |f: &dyn Fn(&Scored) -> usize| if n == 0 { 0.0 } else { scored.iter().map(f).sum::<usize>() as f64 / n as f64 };
    IfevalMetrics {
        prompts: n,
        prompt_strict: Proportion::new(count(&|s| s.outcome.strict.iter().all(|&p| p)), n),
        prompt_loose: Proportion::new(count(&|s| s.outcome.loose.iter().all(|&p| p)), n),
        instruction_strict: Proportion::new(followed(&|o| &o.strict), instructions),
        instruction_loose: Proportion::new(followed(&|o| &o.loose), instructions),
        by_kind: by_kind.into_iter().map(|(k, (s, t))| (k, Proportion::new(s, t))).collect(),
        mean_answer_tokens: mean(&|s| s.tokens),
        mean_answer_words: mean(&|s| crate::verify::checks::words(&s.answer)),
    }
}

/// Answers every prompt with `source` and checks the answers.
pub async fn evaluate(source: &Source, prompts: &[VerifiablePrompt], decoding: Decoding, concurrency: usize) -> Result<Vec<Scored>> {
    let texts: Vec<String> = prompts.iter().map(|p| p.prompt.clone()).collect();
    super::over_prompts(&texts, concurrency, "ifeval", |i, text| {
        let p = &prompts[i];
        async move {
            let answer = source.answer(text, Decoding { seed: decoding.seed.wrapping_add(i as u64), ..decoding }).await?;
            Ok(Scored {
                id: p.id.clone(),
                prompt: text.clone(),
                outcome: Outcome::of(&p.instructions, &answer.text),
                kinds: p.instructions.iter().map(|i| i.kind()).collect(),
                tokens: answer.tokens,
                answer: answer.text,
            })
        }
    })
    .await
}

pub fn print(label: &str, m: &IfevalMetrics) {
    eprintln!("{label}: {} prompts, {:.1} tokens ({:.1} words) per answer", m.prompts, m.mean_answer_tokens, m.mean_answer_words);
    eprintln!("  prompt-level      strict {:<24} loose {}", m.prompt_strict.show(), m.prompt_loose.show());
    eprintln!("  instruction-level strict {:<24} loose {}", m.instruction_strict.show(), m.instruction_loose.show());
    for (kind, p) in &m.by_kind {
        eprintln!("    {kind:<18} {:>3}/{:<3} {}", p.successes, p.total, p.show());
    }
}

pub async fn run(args: EvalIfevalConfig) -> Result<()> {
    let store = args.store.connect().await?;
    let source = Source::open(&args.model, &args.model_name, None, store.as_ref()).await?;
    let mut prompts = crate::verify::prompts::read(&args.data)?;
    if let Some(n) = args.limit {
        prompts.truncate(n);
    }
    let decoding = Decoding { max_tokens: args.max_tokens, temperature: args.temperature, top_p: 1.0, seed: 0 };
    let scored = evaluate(&source, &prompts, decoding, args.concurrency).await?;
    let m = metrics(&scored);
    print(source.label(), &m);
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&scored)?)?;
    }
    if let Some(store) = &store {
        let evaluation = crate::store::evaluations::NewEvaluation {
            kind: "ifeval",
            checkpoint_id: source.checkpoint_id(),
            opponent_checkpoint_id: None,
            subject: source.label().to_string(),
            opponent: None,
            method: "strict".into(),
            dataset: args.data.display().to_string(),
            items: m.prompts as i32,
            metrics: flat_metrics(&m)?,
            config: serde_json::json!({"max_tokens": args.max_tokens, "temperature": args.temperature, "limit": args.limit}),
        };
        let id = store.record_evaluation(&evaluation).await?;
        eprintln!("stored as evaluation {id}");
        args.store.chart(store, "ifeval", "prompt_strict").await?;
    }
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

/// The metrics as stored: each accuracy as a number (so charts can draw it), its
/// interval beside it (`prompt_strict_low`, `prompt_strict_high`), the rest as is.
pub fn flat_metrics(m: &IfevalMetrics) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(m)?;
    let map = v.as_object_mut().expect("an object");
    for (name, p) in [
        ("prompt_strict", m.prompt_strict),
        ("prompt_loose", m.prompt_loose),
        ("instruction_strict", m.instruction_strict),
        ("instruction_loose", m.instruction_loose),
    ] {
        map.insert(name.into(), p.value.into());
        map.insert(format!("{name}_low"), p.low.into());
        map.insert(format!("{name}_high"), p.high.into());
        map.insert(format!("{name}_count"), serde_json::json!([p.successes, p.total]));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(strict: &[bool], loose: &[bool], kinds: &[&'static str], answer: &str) -> Scored {
        Scored {
            id: "x".into(),
            prompt: "p".into(),
            answer: answer.into(),
            tokens: 10,
            kinds: kinds.to_vec(),
            outcome: Outcome { strict: strict.to_vec(), loose: loose.to_vec() },
        }
    }

    #[test]
    fn prompt_and_instruction_accuracies_are_counted_as_ifeval_does() {
        let items = [
            scored(&[true, true], &[true, true], &["title", "no_commas"], "one two"),
            scored(&[true, false], &[true, true], &["title", "lowercase"], "three"),
            scored(&[false], &[false], &["json"], "four five six"),
            scored(&[true, true, false], &[true, true, false], &["title", "no_commas", "json"], ""),
        ];
        let m = metrics(&items);
        assert_eq!((m.prompt_strict.successes, m.prompt_strict.total), (1, 4));
        assert_eq!((m.prompt_loose.successes, m.prompt_loose.total), (2, 4));
        assert_eq!((m.instruction_strict.successes, m.instruction_strict.total), (5, 8));
        assert_eq!((m.instruction_loose.successes, m.instruction_loose.total), (6, 8));
        assert_eq!((m.by_kind["title"].successes, m.by_kind["title"].total), (3, 3));
        assert_eq!((m.by_kind["json"].successes, m.by_kind["json"].total), (0, 2));
        assert_eq!(m.mean_answer_words, 1.5);
        let flat = flat_metrics(&m).unwrap();
        assert_eq!(flat["prompt_strict"], 0.25);
        assert!(flat["prompt_strict_low"].as_f64().unwrap() < 0.25 && flat["prompt_strict_high"].as_f64().unwrap() > 0.25);
    }
}
