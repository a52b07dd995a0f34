//! Where `srlm eval` gets answers (and pairwise verdicts) from: any OpenAI-compatible
//! server (srlm, vLLM, llama.cpp, a hosted API), or a checkpoint loaded in this process.
//!
//! A source is named by one string: `http://…` or `https://…` is a server, an integer is
//! a checkpoint id in the database, anything else a model file or directory.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::engine::{ChatMessage, Generation, Prompt, SamplingConfig, SharedEngine};
use crate::store::Store;

/// How to decode.
#[derive(Debug, Clone, Copy)]
pub struct Decoding {
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
}

/// One answer and its length in the source's tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub tokens: usize,
}

pub enum Source {
    Http {
        client: reqwest::Client,
        base: String,
        url: String,
        model: String,
        api_key: Option<String>,
        checkpoint_id: Option<i64>,
        label: String,
    },
    Engine {
        engine: SharedEngine,
        checkpoint_id: Option<i64>,
        label: String,
    },
}

impl Source {
    /// Opens the source `spec` names. `model` is the model name sent to a server;
    /// `api_key` its bearer token. Checkpoint ids need the database.
    pub async fn open(spec: &str, model: &str, api_key: Option<String>, store: Option<&Store>) -> Result<Self> {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let base = spec.trim_end_matches('/').trim_end_matches("/v1").to_string();
            let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(900)).build()?;
            let checkpoint_id = served_checkpoint(&client, &base, model, api_key.as_deref()).await;
            let label = format!("{base} ({model})");
            let url = format!("{base}/v1/chat/completions");
            return Ok(Self::Http { client, base, url, model: model.to_string(), api_key, checkpoint_id, label });
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
        Ok(Self::Engine { engine, checkpoint_id, label })
    }

    /// The checkpoint answering, when srlm knows it.
    pub fn checkpoint_id(&self) -> Option<i64> {
        match self {
            Self::Http { checkpoint_id, .. } | Self::Engine { checkpoint_id, .. } => *checkpoint_id,
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Self::Http { label, .. } | Self::Engine { label, .. } => label,
        }
    }

    /// The assistant's answer to a one-turn conversation.
    pub async fn answer(&self, user: &str, decoding: Decoding) -> Result<Answer> {
        match self {
            Self::Http { client, url, model, api_key, .. } => {
                let body = serde_json::json!({
                    "model": model, "messages": [{"role": "user", "content": user}],
                    "max_tokens": decoding.max_tokens, "temperature": decoding.temperature, "top_p": decoding.top_p,
                    "seed": decoding.seed,
                });
                let json = post(client, url, api_key.as_deref(), &body).await?;
                let text = json["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string();
                let tokens = json["usage"]["completion_tokens"].as_u64().map_or_else(|| text.split_whitespace().count(), |t| t as usize);
                Ok(Answer { text, tokens })
            }
            Self::Engine { engine, .. } => {
                let sampling = SamplingConfig {
                    temperature: decoding.temperature as f32,
                    top_p: decoding.top_p as f32,
                    seed: decoding.seed,
                    ..SamplingConfig::greedy()
                };
                let messages = vec![ChatMessage { role: "user".into(), content: user.to_string() }];
                let generation = Generation { prompt: Prompt::Chat(messages), sampling, max_tokens: decoding.max_tokens, stop: vec![] };
                let done = crate::engine::complete(engine.as_ref(), generation).await.map_err(|e| anyhow!("{e}"))?;
                let tokens = done.finish.map_or(0, |f| f.completion_tokens);
                Ok(Answer { text: done.text, tokens })
            }
        }
    }
}

impl Source {
    /// This source's judgment of `response` (the default rubric in-process; the
    /// server's own rubric over HTTP, which must be srlm's `/judge`).
    pub async fn judge(&self, question: &str, response: &str, settings: &crate::judge::JudgeSettings) -> Result<crate::judge::Verdict> {
        match self {
            Self::Http { client, base, api_key, .. } => {
                let url = format!("{base}/judge");
                let body = serde_json::json!({"prompt": question, "response": response, "samples": settings.samples,
                    "method": settings.method, "seed": settings.seed, "max_tokens": settings.max_tokens,
                    "temperature": settings.temperature, "record": false});
                let json = post(client, &url, api_key.as_deref(), &body).await?;
                let samples = json["samples"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .map(|s| crate::judge::JudgeSample {
                                text: s["text"].as_str().unwrap_or_default().to_string(),
                                score: s["score"].as_f64().map(|v| v as f32),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(crate::judge::Verdict { samples, mean: json["mean"].as_f64().map(|m| m as f32) })
            }
            Self::Engine { engine, .. } => {
                let template = crate::judge::JudgeTemplate::default();
                crate::judge::judge(engine.as_ref(), &template, question, response, settings).await.map_err(|e| anyhow!("{e}"))
            }
        }
    }
}

/// POSTs `body` to `url` (with the bearer key, if any); the JSON answer, or an error
/// naming the URL and the status.
async fn post(client: &reqwest::Client, url: &str, api_key: Option<&str>, body: &serde_json::Value) -> Result<serde_json::Value> {
    let mut request = client.post(url).json(body);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let json: serde_json::Value = response.json().await.with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        bail!("{url}: HTTP {status}: {json}");
    }
    Ok(json)
}

/// The checkpoint an srlm server says it serves under `model` (other servers: none).
async fn served_checkpoint(client: &reqwest::Client, base: &str, model: &str, api_key: Option<&str>) -> Option<i64> {
    let mut request = client.get(format!("{base}/v1/models"));
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let list: serde_json::Value = request.send().await.ok()?.json().await.ok()?;
    list["data"].as_array()?.iter().find(|m| m["id"] == model)?["checkpoint_id"].as_i64()
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
