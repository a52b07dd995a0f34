//! `POST /v1/completions` (OpenAI's legacy text completions).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::logprobs::CompletionLogprobs;
use super::sampling::{self, SamplingDefaults, SamplingInput, ValidSampling};
use super::stream::{self, StreamKind, StreamMeta};
use super::ServedChecks;
use super::{ApiError, ApiJson, AppState, Served};
use crate::engine::Prompt;
pub use crate::protocol::completions::{CompletionChoice, CompletionRequest, CompletionResponse, PromptInput};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(completions))
}

/// Legacy completions allow at most this many log-prob alternatives.
pub(crate) const MAX_COMPLETION_LOGPROBS: i64 = 5;

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
