//! LLM-as-a-judge: the rubric template, score parsing, the pair policy, and judging a
//! response with K samples through an engine. Pure logic over an engine handle: it
//! never touches the database (handlers record what it returns).

pub mod pairwise;
pub mod parse;
pub mod policy;
pub mod template;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::{self, ChatMessage, Engine, EngineError, Generation, Prompt, SamplingConfig};
pub use parse::parse_score;
pub use policy::{DecidedBy, NoPairReason, PairDecision, PairPolicy, Reward, Scored};
pub use template::JudgeTemplate;

/// How a judge sample becomes a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum JudgeMethod {
    /// The judge writes freely; its last `Score: <n>` line is the score (paper).
    #[default]
    Sample,
    /// The judge writes its justification freely, then `Score:` is forced and the digit
    /// 0–5 is sampled from the judge's own probabilities: every sample has a score.
    Constrained,
    /// As `constrained`, but the score is the probability-weighted mean of the digits
    /// 0–5: a continuous score that breaks ties.
    Expected,
}

impl JudgeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sample => "sample",
            Self::Constrained => "constrained",
            Self::Expected => "expected",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JudgeSettings {
    pub samples: usize,
    pub method: JudgeMethod,
    pub temperature: f32,
    pub top_p: f32,
    /// Longest judge text (the justification for forced methods).
    pub max_tokens: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JudgeSample {
    pub text: String,
    /// `None` when the text held no valid score.
    pub score: Option<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub samples: Vec<JudgeSample>,
    /// Mean of the parsed scores; `None` when none parsed.
    pub mean: Option<f32>,
}

impl Verdict {
    pub fn parsed(&self) -> usize {
        self.samples.iter().filter(|s| s.score.is_some()).count()
    }
}

/// The question as the judge sees it: a lone user message as is, a conversation as
/// `role: content` lines.
pub fn question_text(messages: &[ChatMessage]) -> String {
    match messages {
        [only] => only.content.clone(),
        _ => messages.iter().map(|m| format!("{}: {}", m.role, m.content)).collect::<Vec<_>>().join("\n"),
    }
}

/// Judges `response` to `question` with `settings.samples` samples, run concurrently so
/// the engine can batch them.
pub async fn judge(
    engine: &dyn Engine,
    template: &JudgeTemplate,
    question: &str,
    response: &str,
    settings: &JudgeSettings,
) -> Result<Verdict, EngineError> {
    let messages = vec![ChatMessage { role: "user".into(), content: template.render(question, response) }];
    let samples =
        futures::future::try_join_all((0..settings.samples).map(|k| judge_once(engine, &messages, response, settings, k as u64))).await?;
    let scores: Vec<f32> = samples.iter().filter_map(|s| s.score).collect();
    crate::metrics::judge_samples(settings.method.as_str(), samples.len(), scores.len());
    let mean = (!scores.is_empty()).then(|| scores.iter().sum::<f32>() / scores.len() as f32);
    Ok(Verdict { samples, mean })
}

async fn judge_once(
    engine: &dyn Engine,
    messages: &[ChatMessage],
    response: &str,
    settings: &JudgeSettings,
    k: u64,
) -> Result<JudgeSample, EngineError> {
    let sampling = SamplingConfig {
        temperature: settings.temperature,
        top_p: settings.top_p,
        seed: settings.seed.wrapping_add(k),
        ..SamplingConfig::greedy()
    };
    let free = Generation {
        prompt: Prompt::Chat(messages.to_vec()),
        sampling: sampling.clone(),
        max_tokens: settings.max_tokens,
        stop: match settings.method {
            JudgeMethod::Sample => vec![],
            JudgeMethod::Constrained | JudgeMethod::Expected => vec!["Score:".into(), "score:".into(), "SCORE:".into()],
        },
    };
    let written = engine::complete(engine, free).await?;
    if settings.method == JudgeMethod::Sample {
        let score = parse_score(&written.text, response);
        return Ok(JudgeSample { text: written.text, score });
    }

    // Force the score line and read the judge's probabilities of the digits 0–5.
    let vocab = engine.vocab();
    let template = vocab
        .chat_template
        .as_ref()
        .ok_or_else(|| EngineError::Invalid("the model has no chat template; constrained and expected judging need one".into()))?;
    let justification = written.text.trim_end().trim_end_matches(['*', '#', '_']).trim_end();
    let rendered = template.render(messages).map_err(|e| EngineError::Internal(format!("chat template: {e}")))?;
    let digits = digit_tokens(vocab);
    let forced = Generation {
        prompt: Prompt::Text(format!("{rendered}{justification}\nScore:")),
        sampling: SamplingConfig {
            temperature: if settings.method == JudgeMethod::Constrained { 1.0 } else { 0.0 },
            logprobs: Some(0),
            allowed: digits.iter().map(|d| d.0).collect(),
            ..sampling
        },
        max_tokens: 1,
        stop: vec![],
    };
    let scored = engine::complete(engine, forced).await?;
    let Some(token) = scored.logprobs.first() else {
        return Ok(JudgeSample { text: justification.to_string(), score: None });
    };
    let mut mass = [0f64; 6];
    for &(id, logprob) in &token.allowed {
        if let Some(&(_, d)) = digits.iter().find(|(t, _)| *t == id) {
            mass[d as usize] += (logprob as f64).exp();
        }
    }
    let score = match settings.method {
        JudgeMethod::Expected => expected_score(&mass),
        _ => digits.iter().find(|(t, _)| *t == token.token).map(|&(_, d)| d as f32),
    };
    let shown = score.map_or("?".to_string(), |s| format!("{s:.2}").trim_end_matches('0').trim_end_matches('.').to_string());
    Ok(JudgeSample { text: format!("{justification}\nScore: {shown}"), score })
}

/// Tokens that read as the digits 0–5 right after `Score:` (with or without a space).
fn digit_tokens(vocab: &crate::model::vocab::Vocab) -> Vec<(u32, u8)> {
    (0..=5u8)
        .flat_map(|d| [format!("{d}"), format!(" {d}")].into_iter().map(move |s| (s, d)))
        .filter_map(|(s, d)| vocab.find(s.as_bytes()).map(|t| (t, d)))
        .collect()
}

/// Σ p(d)·d / Σ p(d) over the digits 0–5; `None` when they have no mass at all.
pub fn expected_score(mass: &[f64; 6]) -> Option<f32> {
    let total: f64 = mass.iter().sum();
    (total > 0.0).then(|| (mass.iter().enumerate().map(|(d, p)| d as f64 * p).sum::<f64>() / total) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_score_weights_digits_by_probability() {
        assert_eq!(expected_score(&[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]), Some(4.0));
        let s = expected_score(&[0.0, 0.0, 0.0, 0.1, 0.3, 0.1]).unwrap();
        assert!((s - 4.0).abs() < 1e-6, "{s}");
        let s = expected_score(&[0.0, 0.0, 0.0, 0.5, 0.5, 0.0]).unwrap();
        assert!((s - 3.5).abs() < 1e-6);
        assert_eq!(expected_score(&[0.0; 6]), None);
    }

    #[test]
    fn lone_questions_stay_plain_and_conversations_are_labelled() {
        let user = |c: &str| ChatMessage { role: "user".into(), content: c.into() };
        assert_eq!(question_text(&[user("Why?")]), "Why?");
        let convo = [ChatMessage { role: "system".into(), content: "Be brief.".into() }, user("Why?")];
        assert_eq!(question_text(&convo), "system: Be brief.\nuser: Why?");
    }
}
