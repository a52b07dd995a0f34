//! `POST /v1/completions` (OpenAI's legacy text completions).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::chat::Usage;
use super::error::ErrorBody;
use super::logprobs::CompletionLogprobs;
use super::sampling::{self, SamplingDefaults, SamplingInput, Stop, ValidSampling};
use super::stream::{self, StreamKind, StreamMeta};
use super::ServedChecks;
use super::{ApiError, ApiJson, AppState, Served};
use crate::engine::Prompt;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(completions))
}

/// One prompt or a list of prompts.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PromptInput {
    One(String),
    Many(Vec<String>),
}

/// Legacy completions allow at most this many log-prob alternatives.
pub(crate) const MAX_COMPLETION_LOGPROBS: i64 = 5;

/// An OpenAI text-completion request. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct CompletionRequest {
    /// The served model's name, or `current`.
    pub model: String,
    /// Text to continue; a list gives `n` choices per prompt, in order.
    pub prompt: PromptInput,
    /// Most tokens to generate per choice. Default 16, as in OpenAI's API.
    pub max_tokens: Option<i64>,
    /// Sampling temperature, 0 to 2 (0 = greedy). Default 1.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, in (0, 1]. Default 1.
    pub top_p: Option<f64>,
    /// Keep only the k most likely tokens (0 = off). Extension, as in vLLM.
    pub top_k: Option<i64>,
    /// Choices per prompt.
    pub n: Option<i64>,
    /// Up to 4 stop sequences.
    pub stop: Option<Stop>,
    /// Seed for reproducible sampling.
    pub seed: Option<i64>,
    /// Log-probs of the generated tokens and of the 0 to 5 most likely alternatives.
    pub logprobs: Option<i64>,
    /// Echo the prompt before the completion (not supported: must be false).
    #[serde(default)]
    pub echo: bool,
    /// Text after the completion (not supported).
    pub suffix: Option<String>,
    /// Server-side best-of (not supported beyond `n`).
    pub best_of: Option<i64>,
    /// Stream the answer as server-sent events, ending with `data: [DONE]`.
    #[serde(default)]
    pub stream: bool,
    /// Keep generating past end-of-sequence until the token limit (vLLM's extension, for
    /// benchmarks that need every answer the same length).
    #[serde(default)]
    pub ignore_eos: bool,
    pub stream_options: Option<super::chat::StreamOptions>,
}

#[derive(Debug, Clone)]
pub struct ValidCompletionRequest {
    pub prompts: Vec<String>,
    pub sampling: ValidSampling,
    pub stream: bool,
    pub include_usage: bool,
}

impl CompletionRequest {
    pub fn validate(self, state: &AppState, served: &Served) -> Result<ValidCompletionRequest, ApiError> {
        served.check_model(&self.model)?;
        let prompts = match self.prompt {
            PromptInput::One(p) => vec![p],
            PromptInput::Many(ps) => ps,
        };
        if prompts.is_empty() {
            return Err(ApiError::field("prompt", "prompt must contain at least 1 prompt, got 0"));
        }
        if let Some(i) = prompts.iter().position(String::is_empty) {
            return Err(ApiError::field("prompt", format!("prompt[{i}] is empty")));
        }
        if self.echo {
            return Err(ApiError::field("echo", "echo is not supported; it must be false"));
        }
        if self.suffix.is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::field("suffix", "suffix is not supported"));
        }
        if let Some(best_of) = self.best_of.filter(|&b| b != 1) {
            return Err(ApiError::field("best_of", format!("best_of is not supported: omit it or send 1, got {best_of}")));
        }
        let logprobs = match self.logprobs {
            None => None,
            Some(k) if !(0..=MAX_COMPLETION_LOGPROBS).contains(&k) => {
                return Err(ApiError::field("logprobs", format!("logprobs must be between 0 and {MAX_COMPLETION_LOGPROBS}, got {k}")));
            }
            Some(k) => Some(k as usize),
        };
        let mut limits = (*state.limits).clone();
        limits.default_max_tokens = 16;
        let input = SamplingInput {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            n: self.n,
            max_tokens: self.max_tokens.map(|v| ("max_tokens", v)),
            seed: self.seed,
            stop: self.stop,
            logprobs,
        };
        let mut sampling = sampling::validate(input, &limits, SamplingDefaults::OPENAI)?;
        if prompts.len() > state.limits.max_n {
            return Err(ApiError::field("prompt", format!("prompt may hold at most {} items, got {}", state.limits.max_n, prompts.len())));
        }
        if self.ignore_eos {
            sampling.ignore_eos(served.engine.vocab());
        }
        Ok(ValidCompletionRequest {
            prompts,
            sampling,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompletionChoice {
    /// Prompt p's choice c has index p × n + c.
    pub index: usize,
    pub text: String,
    /// Present when the request asked for `logprobs`.
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// An OpenAI text completion.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompletionResponse {
    pub id: String,
    /// Always `text_completion`.
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

/// Text completion (OpenAI-compatible, legacy)
///
/// Continues raw text without a chat template.
#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "openai",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The completion (or an SSE stream of chunks when `stream` is true)",
            content((CompletionResponse = "application/json"), (super::stream::CompletionChunk = "text/event-stream"))),
        (status = 400, description = "Invalid field; the message names the field and the limit", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body larger than the server's limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many requests in flight", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
pub async fn completions(State(state): State<AppState>, ApiJson(request): ApiJson<CompletionRequest>) -> Result<Response, ApiError> {
    let permit = state.admit()?;
    let served = state.current();
    let request = request.validate(&state, &served)?;
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    let model = served.engine.info().name.clone();
    let n = request.sampling.n;
    for p in &request.prompts {
        served.check_prompt_tokens(state.limits.max_prompt_tokens, &Prompt::Text(p.clone()), "prompt").await?;
    }
    let generations: Vec<_> =
        request.prompts.iter().flat_map(|p| (0..n).map(|i| request.sampling.generation(Prompt::Text(p.clone()), i))).collect();

    if request.stream {
        let meta = StreamMeta { id, model, include_usage: request.include_usage, kind: StreamKind::Completion };
        return Ok(stream::sse(served.engine.clone(), generations, meta, permit).into_response());
    }

    let (completions, usage) = super::complete_all(served.engine.as_ref(), generations).await?;
    drop(permit);
    let choices = completions
        .into_iter()
        .enumerate()
        .map(|(index, (c, finish))| CompletionChoice {
            index,
            logprobs: request.sampling.config.logprobs.map(|_| CompletionLogprobs::from_tokens(&c.logprobs, 0)),
            text: c.text,
            finish_reason: finish.reason.as_openai().into(),
        })
        .collect();
    Ok(axum::Json(CompletionResponse {
        id,
        object: "text_completion".into(),
        created: chrono::Utc::now().timestamp(),
        model,
        choices,
        usage,
    })
    .into_response())
}
