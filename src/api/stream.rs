//! Server-sent events for streamed chat and text completions (OpenAI's chunk format,
//! ending with `data: [DONE]`).
//!
//! Each choice is its own generation; their events are merged as they come. The
//! admission permit lives as long as the stream; when the client goes away the stream
//! is dropped and with it every generation, which the engine then cancels.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;

use super::chat::Usage;
use super::logprobs::{ChatLogprobs, CompletionLogprobs};
use super::ApiError;
use crate::engine::{Event, Generation, SharedEngine};
pub use crate::protocol::stream::{ChatChunkChoice, ChatCompletionChunk, CompletionChunk, CompletionChunkChoice, Delta};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StreamKind {
    Chat,
    Completion,
}

pub struct StreamMeta {
    pub id: String,
    pub model: String,
    pub include_usage: bool,
    pub kind: StreamKind,
}

/// One choice's step in the stream, before it is shaped for the endpoint.
struct Step {
    index: usize,
    role: bool,
    text: Option<String>,
    logprobs: Option<Vec<crate::engine::TokenLogprob>>,
    finish: Option<String>,
}

struct Shaper {
    meta: StreamMeta,
    created: i64,
    want_logprobs: bool,
    /// Characters already sent per choice (completion log-prob offsets).
    sent_chars: Vec<usize>,
}

impl Shaper {
    fn step(&mut self, s: Step) -> SseEvent {
        let json = match self.meta.kind {
            StreamKind::Chat => serde_json::to_string(&ChatCompletionChunk {
                id: self.meta.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.meta.model.clone(),
                choices: vec![ChatChunkChoice {
                    index: s.index,
                    delta: Delta { role: s.role.then(|| "assistant".into()), content: s.text },
                    logprobs: s.logprobs.filter(|_| self.want_logprobs).map(|t| ChatLogprobs::from_tokens(&t)),
                    finish_reason: s.finish,
                }],
                usage: None,
            }),
            StreamKind::Completion => {
                let offset = self.sent_chars[s.index];
                let text = s.text.unwrap_or_default();
                self.sent_chars[s.index] += text.chars().count();
                serde_json::to_string(&CompletionChunk {
                    id: self.meta.id.clone(),
                    object: "text_completion".into(),
                    created: self.created,
                    model: self.meta.model.clone(),
                    choices: vec![CompletionChunkChoice {
                        index: s.index,
                        text,
                        logprobs: s.logprobs.filter(|_| self.want_logprobs).map(|t| CompletionLogprobs::from_tokens(&t, offset)),
                        finish_reason: s.finish,
                    }],
                    usage: None,
                })
            }
        };
        SseEvent::default().data(json.expect("chunks serialise"))
    }

    fn usage(&self, usage: Usage) -> SseEvent {
        let json = match self.meta.kind {
            StreamKind::Chat => serde_json::to_string(&ChatCompletionChunk {
                id: self.meta.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.meta.model.clone(),
                choices: vec![],
                usage: Some(usage),
            }),
            StreamKind::Completion => serde_json::to_string(&CompletionChunk {
                id: self.meta.id.clone(),
                object: "text_completion".into(),
                created: self.created,
                model: self.meta.model.clone(),
                choices: vec![],
                usage: Some(usage),
            }),
        };
        SseEvent::default().data(json.expect("chunks serialise"))
    }
}

/// Streams the choices of one request. `generations[i]` is choice `i`.
pub fn sse(
    engine: SharedEngine,
    generations: Vec<Generation>,
    meta: StreamMeta,
    permit: OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let n = generations.len();
    let want_logprobs = generations.first().is_some_and(|g| g.sampling.logprobs.is_some());
    let choices = generations.into_iter().enumerate().map(|(index, generation)| {
        let engine = engine.clone();
        Box::pin(async_stream::stream! {
            let mut watch = crate::engine::GenerationWatch::start();
            match engine.generate(generation).await {
                Ok(mut events) => {
                    while let Some(event) = events.recv().await {
                        if let Ok(event) = &event {
                            watch.event(event);
                        }
                        yield (index, event);
                    }
                }
                Err(err) => yield (index, Err(err)),
            }
        })
    });
    let mut merged = futures::stream::select_all(choices);
    let include_usage = meta.include_usage;
    let chat = meta.kind == StreamKind::Chat;
    let mut shaper = Shaper { meta, created: chrono::Utc::now().timestamp(), want_logprobs, sent_chars: vec![0; n] };

    let body = async_stream::stream! {
        let _permit = permit;
        if chat {
            for index in 0..n {
                yield Ok(shaper.step(Step { index, role: true, text: Some(String::new()), logprobs: None, finish: None }));
            }
        }
        let mut usage = Usage::default();
        while let Some((index, event)) = merged.next().await {
            match event {
                Ok(Event::Delta { text, logprobs }) => {
                    yield Ok(shaper.step(Step { index, role: false, text: Some(text), logprobs: Some(logprobs), finish: None }));
                }
                Ok(Event::Done(finish)) => {
                    usage.add(&finish);
                    let step = Step {
                        index,
                        role: false,
                        text: (!chat).then(String::new),
                        logprobs: None,
                        finish: Some(finish.reason.as_openai().into()),
                    };
                    yield Ok(shaper.step(step));
                }
                Err(err) => {
                    let err = ApiError::from(err);
                    if let ApiError::Internal(cause) = &err {
                        tracing::error!(error = ?cause, "generation failed mid-stream");
                    }
                    let body = err.body();
                    yield Ok(SseEvent::default().data(serde_json::to_string(&body).expect("errors serialise")));
                    break;
                }
            }
        }
        if include_usage {
            yield Ok(shaper.usage(usage));
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    };
    Sse::new(body).keep_alive(KeepAlive::default())
}
