//! Where `srlm eval` gets answers (and pairwise verdicts) from: any OpenAI-compatible
//! server (srlm, vLLM, llama.cpp, a hosted API), or a checkpoint loaded in this process.
//!
//! A source is named by one string: `http://…` or `https://…` is a server, an integer is
//! a checkpoint id in the database, anything else a model file or directory.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

pub use crate::client::{Answer, Decoding};
use crate::client::{Answerer, Client};
use crate::store::Store;

/// An [`Answerer`] with the name it is reported under and, where srlm knows it, the
/// checkpoint that answers.
pub struct Source {
    pub answerer: Answerer,
    checkpoint_id: Option<i64>,
    label: String,
}

impl Source {
    /// Opens the source `spec` names. `model` is the model name sent to a server;
    /// `api_key` its bearer token. Checkpoint ids need the database.
    pub async fn open(spec: &str, model: &str, api_key: Option<String>, store: Option<&Store>) -> Result<Self> {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let client = Client::new(spec, std::time::Duration::from_secs(900))?.with_api_key(api_key);
            let checkpoint_id = served_checkpoint(&client, model).await;
            let label = format!("{} ({model})", client.base());
            return Ok(Self { answerer: Answerer::Server { client, model: model.to_string() }, checkpoint_id, label });
        }
        let (path, checkpoint_id) = match spec.parse::<i64>() {
            Ok(id) => {
                let store = store.ok_or_else(|| anyhow!("checkpoint {id}: give --database-url to look checkpoints up"))?;
                let c = store.checkpoint(id).await?.ok_or_else(|| anyhow!("checkpoint {id} does not exist"))?;
                (c.path, Some(id))
            }
            Err(_) => {
                let absolute = std::path::absolute(spec).map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| spec.to_string());
                let known = match store {
                    Some(store) => store.checkpoint_by_path(&absolute).await?.map(|c| c.id),
                    None => None,
                };
                (spec.to_string(), known)
            }
        };
        if !Path::new(&path).exists() {
            bail!("model {path} does not exist");
        }
        let options = crate::engine::load::EngineOptions::for_model(&path);
        let engine = crate::engine::load::load(&options).await.with_context(|| format!("loading {path}"))?;
        let label = match checkpoint_id {
            Some(id) => format!("checkpoint {id} ({path})"),
            None => path,
        };
        Ok(Self { answerer: Answerer::Engine(engine), checkpoint_id, label })
    }

    /// The checkpoint answering, when srlm knows it.
    pub fn checkpoint_id(&self) -> Option<i64> {
        self.checkpoint_id
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The assistant's answer to a one-turn conversation.
    pub async fn answer(&self, user: &str, decoding: Decoding) -> Result<Answer> {
        self.answerer.chat(user, decoding).await
    }

    /// This source's judgment of `response` (the default rubric in-process; the
    /// server's own rubric over HTTP, which must be srlm's `/judge`).
    pub async fn judge(&self, question: &str, response: &str, settings: &crate::judge::JudgeSettings) -> Result<crate::judge::Verdict> {
        self.answerer.judge(question, response, settings).await
    }
}

/// The checkpoint an srlm server says it serves under `model` (other servers: none).
async fn served_checkpoint(client: &Client, model: &str) -> Option<i64> {
    client.models().await.ok()?.data.into_iter().find(|m| m.id == model)?.checkpoint_id
}

/// Prompts from a file: JSONL lines with `prompt`, `instruction` or `messages` (the last
/// user message), or a JSON array of such objects (AlpacaEval's evaluation set).
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let items: Vec<serde_json::Value> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).with_context(|| format!("{}: not a JSON array", path.display()))?
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not JSON", path.display(), i + 1)))
            .collect::<Result<_>>()?
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            prompt_of(item).ok_or_else(|| anyhow!("{} item {}: no `prompt`, `instruction` or user message", path.display(), i + 1))
        })
        .collect()
}

fn prompt_of(item: &serde_json::Value) -> Option<String> {
    let direct = item["prompt"].as_str().or_else(|| item["instruction"].as_str());
    let from_messages = || item["messages"].as_array()?.iter().rev().find(|m| m["role"] == "user")?["content"].as_str();
    direct.or_else(from_messages).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_come_from_jsonl_or_a_json_array() {
        let dir = std::env::temp_dir().join(format!("srlm-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let jsonl = dir.join("p.jsonl");
        std::fs::write(
            &jsonl,
            "{\"prompt\": \"a\"}\n\n{\"instruction\": \"b\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"c\"}]}\n",
        )
        .unwrap();
        assert_eq!(read_prompts(&jsonl).unwrap(), ["a", "b", "c"]);
        let array = dir.join("p.json");
        std::fs::write(&array, r#"[{"instruction": "x", "dataset": "helpful_base"}]"#).unwrap();
        assert_eq!(read_prompts(&array).unwrap(), ["x"]);
        std::fs::write(&jsonl, "{\"text\": \"no prompt\"}\n").unwrap();
        assert!(read_prompts(&jsonl).unwrap_err().to_string().contains("item 1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
