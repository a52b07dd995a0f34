//! Training examples as token ids: chat prompts rendered with the checkpoint's own
//! template (the text the server feeds the model), answers followed by end-of-turn.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::model::template::ChatMessage;
use crate::model::template::ChatTemplate;
use crate::model::vocab::Vocab;

/// How a checkpoint turns chat messages into tokens.
pub struct ChatFormat {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    eos: u32,
}

impl ChatFormat {
    pub fn load(model: &Path) -> Result<Self> {
        let vocab = Vocab::for_model(model)?;
        let template = vocab.chat_template.clone().context("the model has no chat template to format training data with")?;
        let eos = vocab.eos.context("the model names no end-of-sequence token")?;
        Ok(Self { tokenizer: crate::model::tokenizer::load(model)?, template, eos })
    }

    /// The prompt up to where the assistant's answer begins.
    pub fn prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.template.render(messages).map_err(|e| anyhow::anyhow!("chat template: {e}"))?;
        crate::model::tokenizer::encode(&self.tokenizer, &text)
    }

    /// An answer and the end-of-turn token that closes it.
    pub fn answer(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = crate::model::tokenizer::encode(&self.tokenizer, text)?;
        ids.push(self.eos);
        Ok(ids)
    }
}

/// A preference pair as tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct PairTokens {
    /// The `pairs` row it came from, when it came from Postgres.
    pub id: Option<i64>,
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

impl PairTokens {
    pub fn tokens(&self) -> usize {
        2 * self.prompt.len() + self.chosen.len() + self.rejected.len()
    }
}

/// An SFT example: a prompt and the answer the loss is computed on.
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    pub prompt: Vec<u32>,
    pub answer: Vec<u32>,
}

/// What [`fit`] did to an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Kept,
    /// The prompt lost its beginning.
    Truncated,
    /// Even the answer alone does not fit.
    Skipped,
}

/// What to do with an example longer than `--max-len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Truncation {
    /// Drop the start of the prompt, keeping its end (where the question usually is).
    Prompt,
    /// Leave the example out.
    Skip,
}

/// Makes `prompt + longest_answer` fit `max_len` tokens by the `policy`. At least one
/// prompt token is kept: it is the context the first answer token is predicted from.
pub fn fit(prompt: &mut Vec<u32>, longest_answer: usize, max_len: usize, policy: Truncation) -> Fit {
    if prompt.len() + longest_answer <= max_len {
        return Fit::Kept;
    }
    let budget = max_len.saturating_sub(longest_answer);
    if policy == Truncation::Skip || budget == 0 {
        return Fit::Skipped;
    }
    prompt.drain(..prompt.len() - budget);
    Fit::Truncated
}

/// How many examples were kept, truncated and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FitCounts {
    pub kept: usize,
    pub truncated: usize,
    pub skipped: usize,
}

impl FitCounts {
    pub fn count(&mut self, f: Fit) {
        match f {
            Fit::Kept => self.kept += 1,
            Fit::Truncated => self.truncated += 1,
            Fit::Skipped => self.skipped += 1,
        }
    }
}

#[derive(Deserialize)]
struct JsonMessage {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct JsonExample {
    messages: Vec<JsonMessage>,
}

/// Reads a JSONL file of `{"messages": [{"role", "content"}, …]}` lines whose last
/// message is the assistant's answer (IFT and EFT data alike).
pub fn read_chat_jsonl(path: &Path) -> Result<Vec<Vec<ChatMessage>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let ex: JsonExample = serde_json::from_str(line).with_context(|| format!("{}: not a {{\"messages\": [...]}} object", at()))?;
        match ex.messages.last() {
            Some(m) if m.role == "assistant" => {}
            _ => bail!("{}: the last message must be the assistant's answer", at()),
        }
        if ex.messages.len() < 2 {
            bail!("{}: an example needs a prompt message before the answer", at());
        }
        out.push(ex.messages.into_iter().map(|m| ChatMessage { role: m.role, content: m.content }).collect());
    }
    Ok(out)
}

/// A JSON list of `{"role", "content"}` messages (a stored pair's conversation, a
/// preference row's prompt or answers).
pub fn messages_of(value: &serde_json::Value) -> Result<Vec<ChatMessage>> {
    let list = value.as_array().context("prompt messages are not a list")?;
    list.iter()
        .map(|m| {
            Ok(ChatMessage {
                role: m["role"].as_str().context("message without role")?.to_string(),
                content: m["content"].as_str().context("message without text content")?.to_string(),
            })
        })
        .collect()
}

/// A preference pair as text: the conversation up to the answer, the better answer and
/// the worse one.
#[derive(Debug, Clone, PartialEq)]
pub struct TextPair {
    /// The `pairs` row it came from, when it came from Postgres.
    pub id: Option<i64>,
    pub messages: Vec<ChatMessage>,
    pub chosen: String,
    pub rejected: String,
}

/// Reads TRL's preference JSONL (what `srlm data export-pairs` writes): `prompt`,
/// `chosen` and `rejected`, each either text (a text prompt is one user message) or a
/// list of messages (`chosen` and `rejected` end with the assistant's answer). Without
/// `prompt`, `chosen` and `rejected` are whole conversations that share all but their
/// last message (TRL's implicit prompt). Other keys (scores, ids) are ignored.
pub fn read_pairs_jsonl(path: &Path) -> Result<Vec<TextPair>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let row: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{at}: not JSON"))?;
        out.push(text_pair(&row).with_context(|| at.clone())?);
    }
    Ok(out)
}

fn text_pair(row: &serde_json::Value) -> Result<TextPair> {
    let conversation = |key: &str| -> Result<Vec<ChatMessage>> {
        match &row[key] {
            serde_json::Value::String(text) => {
                let role = if key == "prompt" { "user" } else { "assistant" };
                Ok(vec![ChatMessage { role: role.into(), content: text.clone() }])
            }
            list @ serde_json::Value::Array(_) => messages_of(list).with_context(|| format!("`{key}`")),
            serde_json::Value::Null => bail!("no `{key}`"),
            _ => bail!("`{key}` is neither text nor a list of messages"),
        }
    };
    let (mut chosen, mut rejected) = (conversation("chosen")?, conversation("rejected")?);
    let answer = |messages: &mut Vec<ChatMessage>, key: &str| -> Result<String> {
        match messages.pop() {
            Some(m) if m.role == "assistant" => Ok(m.content),
            _ => bail!("`{key}` must end with the assistant's answer"),
        }
    };
    let (better, worse) = (answer(&mut chosen, "chosen")?, answer(&mut rejected, "rejected")?);
    let messages = if row.get("prompt").is_some_and(|p| !p.is_null()) {
        if !chosen.is_empty() || !rejected.is_empty() {
            bail!("with a `prompt`, `chosen` and `rejected` hold only the answer");
        }
        conversation("prompt")?
    } else {
        if chosen != rejected {
            bail!("without a `prompt`, `chosen` and `rejected` must share every message before the answer");
        }
        chosen
    };
    if !messages.iter().any(|m| m.role == "user") {
        bail!("the prompt has no user message");
    }
    Ok(TextPair { id: None, messages, chosen: better, rejected: worse })
}

/// Tokenizes preference pairs for DPO, fitting them to `max_len` (the prompt gives way
/// to the longer answer).
pub fn pair_examples(format: &ChatFormat, pairs: &[TextPair], max_len: usize, policy: Truncation) -> Result<(Vec<PairTokens>, FitCounts)> {
    let mut counts = FitCounts::default();
    let mut out = Vec::with_capacity(pairs.len());
    for p in pairs {
        let mut prompt = format.prompt(&p.messages)?;
        let (chosen, rejected) = (format.answer(&p.chosen)?, format.answer(&p.rejected)?);
        let f = fit(&mut prompt, chosen.len().max(rejected.len()), max_len, policy);
        counts.count(f);
        if f != Fit::Skipped {
            out.push(PairTokens { id: p.id, prompt, chosen, rejected });
        }
    }
    Ok((out, counts))
}

/// Tokenizes chat examples for SFT, fitting them to `max_len`.
pub fn sft_examples(
    format: &ChatFormat,
    examples: &[Vec<ChatMessage>],
    max_len: usize,
    policy: Truncation,
) -> Result<(Vec<SftExample>, FitCounts)> {
    let mut counts = FitCounts::default();
    let mut out = Vec::with_capacity(examples.len());
    for messages in examples {
        let (answer, prompt) = messages.split_last().expect("read_chat_jsonl checks");
        let mut prompt = format.prompt(prompt)?;
        let answer = format.answer(&answer.content)?;
        let f = fit(&mut prompt, answer.len(), max_len, policy);
        counts.count(f);
        if f != Fit::Skipped {
            out.push(SftExample { prompt, answer });
        }
    }
    Ok((out, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_prompts_lose_their_start_or_the_example() {
        let mut p: Vec<u32> = (0..10).collect();
        assert_eq!(fit(&mut p, 5, 20, Truncation::Prompt), Fit::Kept);
        assert_eq!(fit(&mut p, 5, 8, Truncation::Prompt), Fit::Truncated);
        assert_eq!(p, vec![7, 8, 9]);
        let mut p: Vec<u32> = (0..10).collect();
        assert_eq!(fit(&mut p, 5, 8, Truncation::Skip), Fit::Skipped);
        assert_eq!(fit(&mut p, 8, 8, Truncation::Prompt), Fit::Skipped);
        assert_eq!(p.len(), 10);
    }

    #[test]
    fn preference_rows_are_read_in_each_of_trls_shapes() {
        let user = |t: &str| ChatMessage { role: "user".into(), content: t.into() };
        let row = |v: serde_json::Value| text_pair(&v);
        // Conversational, as `data export-pairs` writes it (extra keys ignored).
        let p = row(serde_json::json!({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
            "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go away."}],
            "score_chosen": 4.5}))
        .unwrap();
        assert_eq!(
            (p.messages.len(), p.messages[1].content.as_str(), p.chosen.as_str(), p.rejected.as_str()),
            (2, "Hi?", "Hello!", "Go away.")
        );
        // Standard (text).
        let p = row(serde_json::json!({"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."})).unwrap();
        assert_eq!((p.messages, p.chosen.as_str()), (vec![user("Hi?")], "Hello!"));
        // Implicit prompt: whole conversations sharing everything but the answer.
        let p = row(serde_json::json!({"chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}]}))
        .unwrap();
        assert_eq!((p.messages, p.rejected.as_str()), (vec![user("Hi?")], "Go away."));
        // What cannot be a pair says why.
        let why = |v: serde_json::Value| format!("{:#}", row(v).unwrap_err());
        assert!(why(serde_json::json!({"prompt": "Hi?", "chosen": "Hello!"})).contains("no `rejected`"));
        assert!(why(serde_json::json!({"prompt": "Hi?", "chosen": [{"role": "user", "content": "x"}], "rejected": "y"}))
            .contains("`chosen` must end with the assistant's answer"));
        assert!(why(serde_json::json!({"chosen": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "x"}],
            "rejected": [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "y"}]}))
        .contains("share every message"));
        assert!(why(serde_json::json!({"prompt": [{"role": "system", "content": "s"}], "chosen": "x", "rejected": "y"}))
            .contains("no user message"));
        assert!(why(serde_json::json!({"prompt": 3, "chosen": "x", "rejected": "y"})).contains("neither text nor"));
    }

    #[test]
    fn jsonl_needs_an_assistant_answer_last() {
        let dir = std::env::temp_dir().join(format!("srlm-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.jsonl");
        std::fs::write(&good, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Hello\"}]}\n\n")
            .unwrap();
        let ex = read_chat_jsonl(&good).unwrap();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0][1].content, "Hello");
        let bad = dir.join("bad.jsonl");
        std::fs::write(&bad, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}\n").unwrap();
        let err = read_chat_jsonl(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:1") && err.contains("assistant"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
