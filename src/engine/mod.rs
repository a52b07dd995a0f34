//! The model behind a small handle: what the API asks of any engine.
//!
//! An engine turns one [`Generation`] (a prompt and how to sample) into a stream of
//! [`Event`]s. `n` choices are `n` generations; the engine decides what may run
//! together. Dropping the stream cancels the generation. The engine knows no HTTP
//! and no database.

pub mod load;
pub mod math;
pub mod mistral;
pub mod native;
pub mod sampler;
pub mod text;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use crate::model::template::ChatMessage;
use crate::model::vocab;
pub use sampler::{SampledToken, SamplingConfig};

#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Rendered with the model's chat template, ending with the assistant's turn.
    Chat(Vec<ChatMessage>),
    /// Raw text, continued as is.
    Text(String),
}

impl Prompt {
    /// The text the model reads: raw text as is, a chat rendered with the model's chat
    /// template (`None` when the model has none).
    pub fn text(&self, vocab: &vocab::Vocab) -> Result<Option<String>, EngineError> {
        match self {
            Self::Text(text) => Ok(Some(text.clone())),
            Self::Chat(messages) => vocab
                .chat_template
                .as_ref()
                .map(|template| template.render(messages).map_err(|e| EngineError::Invalid(format!("chat template: {e}"))))
                .transpose(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt: Prompt,
    pub sampling: SamplingConfig,
    pub max_tokens: usize,
    /// Generation ends before any of these strings; the string is not returned.
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The consumer went away.
    Cancelled,
}

impl FinishReason {
    pub fn as_openai(self) -> &'static str {
        match self {
            Self::Stop | Self::Cancelled => "stop",
            Self::Length => "length",
        }
    }
}

/// A generated token as reported to clients that ask for log-probs.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub text: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<TopLogprob>,
    /// Log-probs of the generation's `allowed` tokens, when it restricted the choice.
    pub allowed: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    pub token: u32,
    pub text: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text, with the log-probs of the tokens that produced it (when asked).
    Delta {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Done(Finish),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request cannot be served as asked (e.g. the prompt exceeds the context).
    #[error("{0}")]
    Invalid(String),
    #[error("engine failure: {0}")]
    Internal(String),
}

pub type EventStream = mpsc::Receiver<Result<Event, EngineError>>;

/// What the server says about the model it hosts.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The name clients use in `model` (besides the alias `current`).
    pub name: String,
    pub path: String,
    /// `gguf` or `safetensors`.
    pub format: String,
    /// `mistralrs` or `native`.
    pub engine: String,
    /// Where it runs: `cpu`, `cuda:0`, …
    pub device: String,
    /// Generations the engine runs at once.
    pub max_concurrent: usize,
    /// The weight types served, most matrices first (`q4_1, q8_0`).
    pub weights: String,
}

#[async_trait]
pub trait Engine: Send + Sync + 'static {
    fn info(&self) -> &ModelInfo;

    /// The model's tokens (ids of text pieces, special tokens, chat template).
    fn vocab(&self) -> &vocab::Vocab;

    /// Starts a generation; events arrive on the returned stream, the last one `Done`
    /// (or an error). Waits while the engine is full.
    async fn generate(&self, generation: Generation) -> Result<EventStream, EngineError>;

    /// Token ids of `text` as the model reads it (special tokens recognised, none added).
    async fn tokenize(&self, text: &str) -> Result<Vec<u32>, EngineError>;

    /// Log-probs of each token of `continuation` after `prompt` (teacher forcing), under
    /// the model's full distribution.
    async fn score(&self, prompt: Prompt, continuation: &str) -> Result<Vec<TokenLogprob>, EngineError> {
        let forced = self.tokenize(continuation).await?;
        if forced.is_empty() {
            return Ok(Vec::new());
        }
        let generation = Generation {
            prompt,
            sampling: SamplingConfig { logprobs: Some(0), forced: forced.clone(), ..SamplingConfig::greedy() },
            max_tokens: forced.len(),
            stop: vec![],
        };
        let completion = complete(self, generation).await?;
        Ok(completion.logprobs)
    }
}

pub type SharedEngine = Arc<dyn Engine>;

/// Watches one generation's events for the metrics: time to its first token, and its
/// tokens when it finishes. Start it before asking the engine, so queueing counts.
pub struct GenerationWatch {
    started: std::time::Instant,
    first: bool,
}

impl GenerationWatch {
    pub fn start() -> Self {
        Self { started: std::time::Instant::now(), first: true }
    }

    pub fn event(&mut self, event: &Event) {
        use crate::metrics::{GENERATED_TOKENS, PROMPT_TOKENS, TTFT_SECONDS};
        match event {
            Event::Delta { .. } if self.first => {
                self.first = false;
                metrics::histogram!(TTFT_SECONDS).record(self.started.elapsed().as_secs_f64());
            }
            Event::Done(finish) => {
                metrics::counter!(PROMPT_TOKENS).increment(finish.prompt_tokens as u64);
                metrics::counter!(GENERATED_TOKENS).increment(finish.completion_tokens as u64);
            }
            Event::Delta { .. } => {}
        }
    }
}

/// Runs a generation to the end and gathers its text and log-probs.
pub async fn complete<E: Engine + ?Sized>(engine: &E, generation: Generation) -> Result<Completion, EngineError> {
    let mut watch = GenerationWatch::start();
    let mut stream = engine.generate(generation).await?;
    let mut out = Completion::default();
    while let Some(event) = stream.recv().await {
        let event = event?;
        watch.event(&event);
        match event {
            Event::Delta { text, logprobs } => {
                out.text.push_str(&text);
                out.logprobs.extend(logprobs);
            }
            Event::Done(finish) => {
                out.finish = Some(finish);
                return Ok(out);
            }
        }
    }
    Err(EngineError::Internal("generation ended without a finish event".into()))
}

#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish: Option<Finish>,
}

/// A sampled token as clients see it in log-probs.
pub(crate) fn token_logprob(vocab: &vocab::Vocab, t: &SampledToken) -> TokenLogprob {
    let entry = |token: u32| (vocab.text(token), vocab.bytes(token).to_vec());
    let (text, bytes) = entry(t.token);
    TokenLogprob {
        token: t.token,
        text,
        bytes,
        logprob: t.logprob,
        allowed: t.allowed.clone(),
        top: t
            .top
            .iter()
            .map(|&(token, logprob)| {
                let (text, bytes) = entry(token);
                TopLogprob { token, text, bytes, logprob }
            })
            .collect(),
    }
}
