//! The srlm API from the calling side, on the API's own types ([`crate::protocol`]):
//! [`Client`] talks to a running server over HTTP, and [`Answerer`] is "a server or a
//! model loaded in this process" for the parts that work with either (evaluation,
//! self-instruction).

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::engine::{ChatMessage, Generation, Prompt, SamplingConfig, SharedEngine};
use crate::judge::{JudgeSample, JudgeSettings, JudgeTemplate, Verdict};
use crate::protocol::admin::SwapResponse;
use crate::protocol::chat::{ChatCompletionRequest, ChatCompletionResponse, MessageContent, RequestMessage};
use crate::protocol::completions::{CompletionRequest, CompletionResponse, PromptInput};
use crate::protocol::error::ErrorBody;
use crate::protocol::generate::{GenerateRequest, GenerateResponse};
use crate::protocol::judge::{JudgeRequest, JudgeResponse};
use crate::protocol::models::ModelList;
use crate::protocol::sampling::Stop;

/// An HTTP client of one srlm (or OpenAI-compatible) server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    /// A client of the server at `url` (with or without a trailing `/v1`); each request
    /// may take up to `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        Ok(Self::with_http(url, reqwest::Client::builder().timeout(timeout).build()?))
    }

    /// A client that opens a new connection for every request. Benchmarks use it: servers
    /// differ in when they close an idle keep-alive connection (llama-server closes it
    /// after a stream), and a request sent on one the server just closed fails without
    /// reaching it. On loopback a connection costs well under a millisecond.
    pub fn unpooled(url: &str, timeout: Duration) -> Result<Self> {
        Ok(Self::with_http(url, reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(0).build()?))
    }

    fn with_http(url: &str, http: reqwest::Client) -> Self {
        Self { http, base: url.trim_end_matches('/').trim_end_matches("/v1").to_string(), api_key: None }
    }

    /// Sends `key` as the bearer token of every request.
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key;
        self
    }

    /// The server's address, without `/v1`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn chat(&self, request: &ChatCompletionRequest) -> Result<ChatCompletionResponse> {
        self.post("/v1/chat/completions", request).await
    }

    /// A streamed chat completion (`stream: true` in `request`): the response, whose body
    /// is the server-sent chunks.
    pub async fn chat_stream(&self, request: &ChatCompletionRequest) -> Result<reqwest::Response> {
        let url = format!("{}/v1/chat/completions", self.base);
        self.send(&url, self.authorized(self.http.post(&url).json(request))).await
    }

    pub async fn complete(&self, request: &CompletionRequest) -> Result<CompletionResponse> {
        self.post("/v1/completions", request).await
    }

    pub async fn generate(&self, request: &GenerateRequest) -> Result<GenerateResponse> {
        self.post("/generate", request).await
    }

    pub async fn judge(&self, request: &JudgeRequest) -> Result<JudgeResponse> {
        self.post("/judge", request).await
    }

    /// Asks the server to serve checkpoint `id` (an admin route: `admin_token` is its
    /// bearer token).
    pub async fn activate(&self, id: i64, admin_token: &str) -> Result<SwapResponse> {
        let url = format!("{}/admin/checkpoints/{id}/activate", self.base);
        self.read(&url, self.http.post(&url).bearer_auth(admin_token)).await
    }

    pub async fn models(&self) -> Result<ModelList> {
        let url = format!("{}/v1/models", self.base);
        self.read(&url, self.authorized(self.http.get(&url))).await
    }

    /// POSTs `body` to `path` and reads the answer as `T`.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let url = format!("{}{path}", self.base);
        self.read(&url, self.authorized(self.http.post(&url).json(body))).await
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn read<T: DeserializeOwned>(&self, url: &str, request: reqwest::RequestBuilder) -> Result<T> {
        let bytes = self.send(url, request).await?.bytes().await.with_context(|| format!("{url}: reading the answer"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{url}: an answer of an unexpected shape"))
    }

    /// Sends `request`; a non-2xx status is an error naming the route, the status and
    /// the server's message (srlm's error shape, or the body as it came).
    async fn send(&self, url: &str, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = request.send().await.with_context(|| format!("{url}: no answer"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        anyhow::bail!("{url}: HTTP {status}: {message}")
    }
}

/// How to decode one answer.
#[derive(Debug, Clone, Copy)]
pub struct Decoding {
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
}

impl Decoding {
    fn sampling(&self) -> SamplingConfig {
        SamplingConfig { temperature: self.temperature as f32, top_p: self.top_p as f32, seed: self.seed, ..SamplingConfig::greedy() }
    }
}

/// One answer and its length in the answering model's tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub tokens: usize,
}

/// The part of a chat completion every OpenAI-compatible server returns: srlm always
/// sends usage and text content, others may leave usage out or send `null` content.
#[derive(Deserialize)]
struct ForeignChat {
    #[serde(default)]
    choices: Vec<ForeignChoice>,
    usage: Option<ForeignUsage>,
}

#[derive(Deserialize)]
struct ForeignChoice {
    message: ForeignMessage,
}

#[derive(Deserialize)]
struct ForeignMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct ForeignUsage {
    completion_tokens: usize,
}

/// What answers: a running server (`model` is the name sent to it), or an engine loaded
/// in this process.
pub enum Answerer {
    Server { client: Client, model: String },
    Engine(SharedEngine),
}

impl Answerer {
    /// The assistant's answer to a one-turn conversation.
    pub async fn chat(&self, user: &str, decoding: Decoding) -> Result<Answer> {
        match self {
            Self::Server { client, model } => {
                let request = ChatCompletionRequest {
                    model: model.clone(),
                    messages: vec![RequestMessage { role: "user".into(), content: Some(MessageContent::Text(user.into())) }],
                    max_tokens: Some(decoding.max_tokens as i64),
                    temperature: Some(decoding.temperature),
                    top_p: Some(decoding.top_p),
                    seed: Some(decoding.seed as i64),
                    ..Default::default()
                };
                // Any OpenAI-compatible server answers here (a hosted judge, vLLM,
                // llama.cpp): read only what all of them send, as before the typed client.
                let response: ForeignChat = client.post("/v1/chat/completions", &request).await?;
                let text = response.choices.into_iter().next().and_then(|c| c.message.content).unwrap_or_default();
                let tokens = response.usage.map_or_else(|| text.split_whitespace().count(), |u| u.completion_tokens);
                Ok(Answer { tokens, text })
            }
            Self::Engine(engine) => {
                let messages = vec![ChatMessage { role: "user".into(), content: user.to_string() }];
                let generation = Generation {
                    prompt: Prompt::Chat(messages),
                    sampling: decoding.sampling(),
                    max_tokens: decoding.max_tokens,
                    stop: vec![],
                };
                let done = crate::engine::complete(engine.as_ref(), generation).await.map_err(|e| anyhow!("{e}"))?;
                Ok(Answer { tokens: done.finish.map_or(0, |f| f.completion_tokens), text: done.text })
            }
        }
    }

    /// `prompt` continued as raw text, up to the first of `stop`.
    pub async fn continue_text(&self, prompt: String, decoding: Decoding, stop: Vec<String>) -> Result<String> {
        match self {
            Self::Server { client, model } => {
                let request = CompletionRequest {
                    model: model.clone(),
                    prompt: PromptInput::One(prompt),
                    max_tokens: Some(decoding.max_tokens as i64),
                    temperature: Some(decoding.temperature),
                    top_p: Some(decoding.top_p),
                    seed: Some(decoding.seed as i64),
                    stop: Some(Stop::Many(stop)),
                    ..Default::default()
                };
                Ok(client.complete(&request).await?.choices.into_iter().next().map(|c| c.text).unwrap_or_default())
            }
            Self::Engine(engine) => {
                let generation =
                    Generation { prompt: Prompt::Text(prompt), sampling: decoding.sampling(), max_tokens: decoding.max_tokens, stop };
                Ok(crate::engine::complete(engine.as_ref(), generation).await.map_err(|e| anyhow!("{e}"))?.text)
            }
        }
    }

    /// The judgment of `response` to `question`: the default rubric in-process; over HTTP
    /// the server's own rubric (srlm's `/judge`).
    pub async fn judge(&self, question: &str, response: &str, settings: &JudgeSettings) -> Result<Verdict> {
        match self {
            Self::Server { client, .. } => {
                let request = JudgeRequest {
                    prompt: Some(question.into()),
                    response: Some(response.into()),
                    samples: Some(settings.samples as i64),
                    method: Some(settings.method),
                    seed: Some(settings.seed as i64),
                    max_tokens: Some(settings.max_tokens as i64),
                    temperature: Some(settings.temperature.into()),
                    top_p: Some(settings.top_p.into()),
                    record: Some(false),
                    ..Default::default()
                };
                let judged = client.judge(&request).await?;
                let samples = judged.samples.into_iter().map(|s| JudgeSample { text: s.text, score: s.score }).collect();
                Ok(Verdict { samples, mean: judged.mean })
            }
            Self::Engine(engine) => crate::judge::judge(engine.as_ref(), &JudgeTemplate::default(), question, response, settings)
                .await
                .map_err(|e| anyhow!("{e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields a request leaves unset are not sent: other OpenAI-compatible servers (a
    /// hosted judge) refuse parameters they do not know, such as `ignore_eos`.
    #[test]
    fn requests_carry_only_the_fields_that_are_set() {
        let request = ChatCompletionRequest {
            model: "m".into(),
            messages: vec![RequestMessage { role: "user".into(), content: Some(MessageContent::Text("hi".into())) }],
            max_tokens: Some(8),
            ..Default::default()
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json, serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}));
        let judge = serde_json::to_value(JudgeRequest { prompt: Some("q".into()), ..Default::default() }).unwrap();
        assert_eq!(judge, serde_json::json!({"prompt": "q"}));
        // What is sent reads back as the same request on the server's side.
        let back: ChatCompletionRequest = serde_json::from_value(json).unwrap();
        assert_eq!((back.max_tokens, back.stream, back.temperature), (Some(8), false, None));
    }

    /// Another server's answer without usage or with `null` content still reads.
    #[test]
    fn foreign_chat_answers_read_without_usage_or_text() {
        let bare: ForeignChat = serde_json::from_str(r#"{"choices": [{"message": {"content": "two words"}}]}"#).unwrap();
        assert_eq!((bare.usage.is_none(), bare.choices[0].message.content.as_deref()), (true, Some("two words")));
        let empty: ForeignChat = serde_json::from_str(
            r#"{"choices": [{"message": {"role": "assistant", "content": null}}], "usage": {"completion_tokens": 0, "prompt_tokens": 3}}"#,
        )
        .unwrap();
        assert_eq!((empty.choices[0].message.content.as_deref(), empty.usage.map(|u| u.completion_tokens)), (None, Some(0)));
    }

    #[test]
    fn a_base_url_is_kept_without_v1() {
        let client = Client::new("http://127.0.0.1:8080/v1/", Duration::from_secs(1)).unwrap();
        assert_eq!(client.base(), "http://127.0.0.1:8080");
    }
}
