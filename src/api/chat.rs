//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::logprobs::ChatLogprobs;
use super::sampling::{self, SamplingDefaults, SamplingInput, ValidSampling};
use super::ServedChecks;
use super::{stream, ApiError, ApiJson, AppState, Served};
use crate::engine::{self, ChatMessage, Prompt};
pub use crate::protocol::chat::{
    ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ContentPart, MessageContent, RequestMessage, ResponseMessage, StreamOptions,
    Usage,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(chat_completions))
}

/// A chat request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidChatRequest {
    pub messages: Vec<ChatMessage>,
    pub sampling: ValidSampling,
    pub stream: bool,
    pub include_usage: bool,
}

pub(crate) const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

impl ChatCompletionRequest {
    pub fn validate(self, state: &AppState, served: &Served) -> Result<ValidChatRequest, ApiError> {
        served.check_model(&self.model)?;
        if self.messages.is_empty() {
            return Err(ApiError::field("messages", "messages must contain at least 1 message, got 0"));
        }
        let messages = validate_messages(self.messages)?;
        let logprobs = top_logprobs(self.logprobs, self.top_logprobs, state.limits.max_top_logprobs)?;
        let max_tokens = sampling::token_budget(self.max_completion_tokens, self.max_tokens, &state.limits)?;
        let input = SamplingInput {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            n: self.n,
            max_tokens,
            seed: self.seed,
            stop: self.stop,
            logprobs,
        };
        let mut sampling = sampling::validate(input, &state.limits, SamplingDefaults::OPENAI)?;
        if self.ignore_eos {
            sampling.ignore_eos(served.engine.vocab());
        }
        Ok(ValidChatRequest {
            messages,
            sampling,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

/// Validates every message, naming the first bad one by its index.
pub(super) fn validate_messages(messages: Vec<RequestMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    messages.into_iter().enumerate().map(|(i, m)| validate_message(i, m)).collect()
}

fn validate_message(index: usize, message: RequestMessage) -> Result<ChatMessage, ApiError> {
    if !ROLES.contains(&message.role.as_str()) {
        return Err(ApiError::field(
            format!("messages[{index}].role"),
            format!("messages[{index}].role must be one of {}, got `{}`", ROLES.join(", "), message.role),
        ));
    }
    let content = match message.content {
        None => String::new(),
        Some(MessageContent::Text(text)) => text,
        Some(MessageContent::Parts(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.into_iter().enumerate() {
                match part.kind.as_str() {
                    "text" => text.push_str(&part.text),
                    kind => {
                        return Err(ApiError::field(
                            format!("messages[{index}].content[{j}]"),
                            format!("messages[{index}].content[{j}]: only `text` parts are supported, got `{kind}`"),
                        ))
                    }
                }
            }
            text
        }
    };
    Ok(ChatMessage { role: message.role, content })
}

/// `logprobs` + `top_logprobs` → how many alternatives to report (`None`: no log-probs).
fn top_logprobs(logprobs: bool, top: Option<i64>, max: usize) -> Result<Option<usize>, ApiError> {
    match (logprobs, top) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(ApiError::field("top_logprobs", "top_logprobs requires logprobs to be true")),
        (true, top) => {
            let top = top.unwrap_or(0);
            if top < 0 || top > max as i64 {
                return Err(ApiError::field("top_logprobs", format!("top_logprobs must be between 0 and {max}, got {top}")));
            }
            Ok(Some(top as usize))
        }
    }
}

impl Usage {
    pub fn add(&mut self, finish: &engine::Finish) {
        self.prompt_tokens = self.prompt_tokens.max(finish.prompt_tokens);
        self.completion_tokens += finish.completion_tokens;
        self.total_tokens = self.prompt_tokens + self.completion_tokens;
    }
}

/// Chat completion (OpenAI-compatible)
///
/// Answers a conversation; with `stream: true` the answer arrives as server-sent
/// `chat.completion.chunk` events ending with `data: [DONE]`.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion (or an SSE stream of chunks when `stream` is true)",
            content((ChatCompletionResponse = "application/json"), (super::stream::ChatCompletionChunk = "text/event-stream"))),
        (status = 400, description = "Invalid field; the message names the field and the limit", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body larger than the server's limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many requests in flight; retry after the `Retry-After` seconds", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let permit = state.admit()?;
    let served = state.current();
    let request = request.validate(&state, &served)?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let model = served.engine.info().name.clone();
    let prompt = Prompt::Chat(request.messages);
    served.check_prompt_tokens(state.limits.max_prompt_tokens, &prompt, "messages").await?;
    let generations: Vec<_> = (0..request.sampling.n).map(|i| request.sampling.generation(prompt.clone(), i)).collect();

    if request.stream {
        let meta = stream::StreamMeta { id, model, include_usage: request.include_usage, kind: stream::StreamKind::Chat };
        return Ok(stream::sse(served.engine.clone(), generations, meta, permit).into_response());
    }

    let (completions, usage) = super::complete_all(served.engine.as_ref(), generations).await?;
    drop(permit);
    let choices = completions
        .into_iter()
        .enumerate()
        .map(|(index, (c, finish))| ChatChoice {
            index,
            message: ResponseMessage { role: "assistant".into(), content: c.text },
            logprobs: request.sampling.config.logprobs.map(|_| ChatLogprobs::from_tokens(&c.logprobs)),
            finish_reason: finish.reason.as_openai().into(),
        })
        .collect();
    let response =
        ChatCompletionResponse { id, object: "chat.completion".into(), created: chrono::Utc::now().timestamp(), model, choices, usage };
    Ok(axum::Json(response).into_response())
}
