//! `srlm data make-eft`: judge training data made by the model itself (the paper's EFT
//! recipe). The model judges human-scored responses (`data/eft.source.jsonl`: a
//! question, several responses, a human score each) with K samples each; for every
//! response the sample closest to the human score is taken, and a question's judgments
//! are kept only when their scores order its responses as the human scores do (every
//! pair with different human scores ordered the same way, strictly). Kept judgments
//! become chat examples in `eft.jsonl`'s format, for `srlm train sft`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::eval::source::Source;
use crate::judge::{JudgeMethod, JudgeSample, JudgeSettings, JudgeTemplate};

#[derive(Debug, Clone)]
pub struct MakeEftConfig {
    /// The judge: a server URL (its `/judge`), a checkpoint id or a model file.
    pub model: String,
    /// Human-scored responses: JSONL `{"question", "response", "score", …}`.
    pub source: PathBuf,
    /// Judge samples per response (the best-agreeing one is kept).
    pub samples: usize,
    /// Most tokens per judgment.
    pub max_tokens: usize,
    /// Questions in flight at once.
    pub concurrency: usize,
    /// Postgres URL, to look a checkpoint id up.
    pub database_url: Option<String>,
    /// Chat JSONL to write.
    pub out: PathBuf,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Scored {
    question: String,
    response: String,
    score: f32,
}

/// For each response, the sample whose score is closest to the human score; `None`
/// when a response has no parsed sample or the chosen scores do not order the
/// responses as the human scores do.
pub fn agreeing(human: &[f32], samples: &[Vec<JudgeSample>]) -> Option<Vec<JudgeSample>> {
    let chosen: Vec<JudgeSample> = human
        .iter()
        .zip(samples)
        .map(|(h, s)| {
            s.iter()
                .filter(|s| s.score.is_some())
                .min_by(|a, b| (a.score.unwrap() - h).abs().total_cmp(&(b.score.unwrap() - h).abs()))
                .cloned()
        })
        .collect::<Option<_>>()?;
    for i in 0..human.len() {
        for j in 0..human.len() {
            if human[i] > human[j] && chosen[i].score? <= chosen[j].score? {
                return None;
            }
        }
    }
    Some(chosen)
}

pub async fn run(args: MakeEftConfig) -> Result<()> {
    let store = match &args.database_url {
        Some(url) => Some(crate::store::Store::connect_migrated(url).await?),
        None => None,
    };
    let judge = Source::open(&args.model, "current", None, store.as_ref()).await?;
    let text = std::fs::read_to_string(&args.source).with_context(|| format!("reading {}", args.source.display()))?;
    let mut by_question: BTreeMap<String, Vec<Scored>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let s: Scored = serde_json::from_str(line).with_context(|| format!("{}:{}", args.source.display(), i + 1))?;
        by_question.entry(s.question.clone()).or_default().push(s);
    }
    let questions: Vec<String> = by_question.keys().cloned().collect();
    let settings = JudgeSettings {
        samples: args.samples,
        method: JudgeMethod::Sample,
        temperature: 0.7,
        top_p: 0.9,
        max_tokens: args.max_tokens,
        seed: 0,
    };
    let (judge, settings, by_question) = (&judge, &settings, &by_question);
    let kept = crate::eval::over_prompts(&questions, args.concurrency, "eft", |i, question| async move {
        let responses = &by_question[question];
        let verdicts = futures::future::try_join_all(responses.iter().enumerate().map(|(k, r)| {
            let settings = JudgeSettings { seed: (i * 100 + k) as u64, ..settings.clone() };
            async move { judge.judge(question, &r.response, &settings).await }
        }))
        .await?;
        let human: Vec<f32> = responses.iter().map(|r| r.score).collect();
        let samples: Vec<Vec<JudgeSample>> = verdicts.into_iter().map(|v| v.samples).collect();
        Ok(agreeing(&human, &samples).map(|chosen| responses.iter().cloned().zip(chosen).collect::<Vec<_>>()))
    })
    .await?;
    let template = JudgeTemplate::default();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?);
    let (mut examples, mut questions_kept) = (0, 0);
    for group in kept.iter().flatten() {
        questions_kept += 1;
        for (r, sample) in group {
            let line = serde_json::json!({"messages": [
                {"role": "user", "content": template.render(&r.question, &r.response)},
                {"role": "assistant", "content": sample.text.trim()},
            ]});
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
            examples += 1;
        }
    }
    out.flush()?;
    eprintln!(
        "{questions_kept} of {} questions agreed with the human scores: {examples} judge examples written to {}",
        questions.len(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(score: Option<f32>) -> JudgeSample {
        JudgeSample { text: format!("ok\nScore: {score:?}"), score }
    }

    #[test]
    fn judgments_are_kept_only_when_they_order_the_responses_as_humans_do() {
        let human = [5.0, 3.0, 1.0];
        // The closest sample to each human score is chosen: 4, 3, 2 — the same order.
        let samples = vec![vec![s(Some(2.0)), s(Some(4.0))], vec![s(Some(3.0))], vec![s(None), s(Some(2.0))]];
        let kept = agreeing(&human, &samples).unwrap();
        assert_eq!(kept.iter().map(|k| k.score).collect::<Vec<_>>(), [Some(4.0), Some(3.0), Some(2.0)]);
        // A tie between responses the humans told apart: dropped.
        let samples = vec![vec![s(Some(3.0))], vec![s(Some(3.0))], vec![s(Some(1.0))]];
        assert_eq!(agreeing(&human, &samples), None);
        // A response without any parsed judgment: dropped.
        let samples = vec![vec![s(Some(5.0))], vec![s(None)], vec![s(Some(1.0))]];
        assert_eq!(agreeing(&human, &samples), None);
        // Equal human scores may be judged in either order.
        assert!(agreeing(&[4.0, 4.0], &[vec![s(Some(2.0))], vec![s(Some(5.0))]]).is_some());
    }
}
