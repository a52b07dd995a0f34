//! The mistralrs engine.
//!
//! mistralrs runs the model and its scheduler; srlm picks every token through a
//! per-request logits processor (see [`super::sampler`]): mistralrs decodes greedily
//! over logits that allow only the token srlm chose. That gives per-request seeds,
//! true log-probs, and a clean way to cancel (the processor forces end-of-sequence).
//!
//! On CPU, mistralrs 0.8.1 mixes up sequences it decodes together (shared scratch
//! buffers in its CPU attention; ../shared/KNOWN-ISSUES.md #1), so on CPU only one
//! generation is in the engine at a time. On CUDA it batches up to `max_seqs`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use async_trait::async_trait;
use mistralrs::{
    Constraint, CustomLogitsProcessor, DType, GgufModelBuilder, Model, NormalRequest, PagedAttentionMetaBuilder, Request, RequestLike,
    RequestMessage, Response, SamplingParams, Tensor, TextMessageRole, TextMessages, TextModelBuilder, TokenSource,
};
use tokio::sync::{mpsc, Semaphore};

use super::load::EngineOptions;
use super::sampler::{SampledToken, Sampler};
use super::text::{Piece, TextAssembler};
use super::{Engine, EngineError, Event, EventStream, Finish, FinishReason, Generation, ModelInfo, Prompt};
use crate::model::gguf::converted_copy;
use crate::model::vocab::Vocab;
use candle_core::quantized::GgmlDType;

pub struct MistralEngine {
    model: Model,
    vocab: Arc<Vocab>,
    info: ModelInfo,
    slots: Arc<Semaphore>,
}

/// The paged KV cache on a GPU: room for every sequence of `max_seqs` at 4096 tokens
/// unless `--kv-cache-tokens` says otherwise. On a GPU mistralrs also logs, every 5 s while
/// it generates, its tokens/s and how many sequences run together and wait
/// (`with_throughput_logging`; the GPU check reads those lines).
fn paged_attention(opts: &EngineOptions) -> Result<mistralrs::PagedAttentionConfig> {
    let tokens = opts.kv_cache_tokens.unwrap_or(opts.max_seqs.max(1) * 4096);
    tracing::info!(kv_cache_tokens = tokens, "paged attention");
    PagedAttentionMetaBuilder::default().with_gpu_memory(mistralrs::MemoryGpuConfig::ContextSize(tokens)).build()
}

impl MistralEngine {
    pub async fn load(opts: &EngineOptions) -> Result<Self> {
        let device = mistralrs::best_device(opts.force_cpu).context("selecting a device")?;
        let on_cpu = device.is_cpu();
        let max_concurrent = if on_cpu { 1 } else { opts.max_seqs.max(1) };
        let path = PathBuf::from(&opts.model);
        let prefix_cache = (opts.prefix_cache > 0).then_some(opts.prefix_cache);

        let (model, format, vocab, weights) = if is_gguf(&path) {
            let vocab = Vocab::from_gguf(&path)?;
            let path = match opts.weights.resolve(&path, on_cpu)? {
                Some(to) => converted_copy(&path, to)?,
                None => path.clone(),
            };
            let weights = crate::model::gguf::tensor_types(&path)?
                .iter()
                .filter(|t| !matches!(t, GgmlDType::F32))
                .map(|t| format!("{t:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(", ");
            tracing::info!(file = %path.display(), "loading GGUF weights");
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let file = path.file_name().context("model path has no file name")?.to_string_lossy();
            let mut builder = GgufModelBuilder::new(dir.to_string_lossy(), vec![file.to_string()])
                .with_token_source(TokenSource::None)
                .with_max_num_seqs(max_concurrent)
                .with_prefix_cache_n(prefix_cache)
                .with_device(device.clone());
            if !on_cpu {
                builder = builder.with_paged_attn(paged_attention(opts)?).with_throughput_logging();
            }
            (builder.build().await?, "gguf", vocab, weights)
        } else {
            let mut builder = TextModelBuilder::new(&opts.model)
                .with_max_num_seqs(max_concurrent)
                .with_prefix_cache_n(prefix_cache)
                .with_device(device.clone());
            if !on_cpu {
                builder = builder.with_paged_attn(paged_attention(opts)?).with_throughput_logging();
            }
            let model = builder.build().await?;
            let vocab = if path.is_dir() { Vocab::for_model(&path)? } else { Vocab::from_tokenizer_json(&hub_tokenizer(&opts.model)?)? };
            (model, "safetensors", vocab, "as stored".to_string())
        };

        let name = opts.name.clone().unwrap_or_else(|| default_name(&path));
        let info = ModelInfo {
            name,
            path: opts.model.clone(),
            format: format.into(),
            engine: "mistralrs".into(),
            device: match device.location() {
                candle_core::DeviceLocation::Cpu => "cpu".into(),
                candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
                candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
            },
            max_concurrent,
            weights,
        };
        tracing::info!(model = %info.name, device = %info.device, max_concurrent, weights = %info.weights, "mistralrs engine loaded");
        Ok(Self { model, vocab: Arc::new(vocab), info, slots: Arc::new(Semaphore::new(max_concurrent)) })
    }

    fn request(&self, generation: &Generation, steering: Arc<Steering>, tx: mpsc::Sender<Response>) -> Request {
        let messages = match &generation.prompt {
            Prompt::Chat(messages) => {
                let mut m = TextMessages::new();
                for msg in messages {
                    m = m.add_message(role(&msg.role), &msg.content);
                }
                m.take_messages()
            }
            Prompt::Text(text) => RequestMessage::Completion { text: text.clone(), echo_prompt: false, best_of: None },
        };
        // Greedy over the one-hot logits the processor returns: the processor decides.
        let sampling_params = SamplingParams { max_len: Some(generation.max_tokens), ..SamplingParams::neutral() };
        let processor: Arc<dyn CustomLogitsProcessor> = steering;
        Request::Normal(Box::new(NormalRequest {
            messages,
            sampling_params,
            response: tx,
            return_logprobs: false,
            is_streaming: true,
            id: self.model.inner().next_request_id(),
            constraint: Constraint::None,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: Some(vec![processor]),
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }))
    }
}

#[async_trait]
impl Engine for MistralEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    async fn tokenize(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.model
            .tokenize(either::Either::Right(text.to_string()), None, false, false, None)
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))
    }

    async fn generate(&self, generation: Generation) -> Result<EventStream, EngineError> {
        let permit = self.slots.clone().acquire_owned().await.map_err(|e| EngineError::Internal(e.to_string()))?;
        let steering = Arc::new(Steering::new(&generation, self.vocab.eos));
        let (tx, mut rx) = mpsc::channel(64);
        let request = self.request(&generation, steering.clone(), tx);
        let sender = self.model.inner().get_sender(None).map_err(|e| EngineError::Internal(e.to_string()))?;
        sender.send(request).await.map_err(|e| EngineError::Internal(e.to_string()))?;

        let (out, events) = mpsc::channel(64);
        let vocab = self.vocab.clone();
        let want_logprobs = generation.sampling.logprobs.is_some();
        let mut text = TextAssembler::new(generation.stop.clone());
        tokio::spawn(async move {
            // The slot is held until mistralrs has finished the sequence, cancelled or not,
            // so that no other sequence ever shares a CPU decode step with it.
            let _permit = permit;
            let mut consumer_gone = false;
            let mut counted = 0;
            while let Some(response) = rx.recv().await {
                // mistralrs' own text is not used: it drops a leading space and misses
                // stop strings; the tokens srlm chose are the truth.
                let finish = match chunk_finish(response) {
                    Ok(finish) => finish,
                    Err(err) => {
                        let _ = out.send(Err(err)).await;
                        steering.cancel();
                        consumer_gone = true;
                        continue;
                    }
                };
                let mut piece = Piece::default();
                for token in steering.take_tokens() {
                    if text.is_stopped() || Some(token.token) == vocab.eos {
                        continue;
                    }
                    counted += 1;
                    let logprob = want_logprobs.then(|| super::token_logprob(&vocab, &token));
                    let next = text.push(vocab.text_bytes(token.token), logprob);
                    piece.text.push_str(&next.text);
                    piece.logprobs.extend(next.logprobs);
                    if next.stopped {
                        piece.stopped = true;
                        steering.cancel();
                    }
                }
                if finish.is_some() {
                    let rest = text.finish();
                    piece.text.push_str(&rest.text);
                    piece.logprobs.extend(rest.logprobs);
                }
                if !consumer_gone && (!piece.text.is_empty() || !piece.logprobs.is_empty()) {
                    let delta = Event::Delta { text: piece.text, logprobs: piece.logprobs };
                    consumer_gone = out.send(Ok(delta)).await.is_err();
                    if consumer_gone {
                        steering.cancel();
                    }
                }
                if let Some(reason) = finish {
                    let reason = match (consumer_gone, text.is_stopped()) {
                        (true, _) => FinishReason::Cancelled,
                        (false, true) => FinishReason::Stop,
                        (false, false) => reason,
                    };
                    let prompt_tokens = steering.prompt_tokens();
                    let done = Finish { reason, prompt_tokens, completion_tokens: counted };
                    let _ = out.send(Ok(Event::Done(done))).await;
                    break;
                }
            }
        });
        Ok(events)
    }
}

/// The finish reason of one streamed mistralrs response (`None` while it runs).
fn chunk_finish(response: Response) -> Result<Option<FinishReason>, EngineError> {
    let finish = |r: &str| match r {
        "length" => FinishReason::Length,
        "canceled" => FinishReason::Cancelled,
        _ => FinishReason::Stop,
    };
    match response {
        Response::Chunk(chunk) => Ok(chunk.choices.first().and_then(|c| c.finish_reason.as_deref()).map(finish)),
        Response::CompletionChunk(chunk) => Ok(chunk.choices.first().and_then(|c| c.finish_reason.as_deref()).map(finish)),
        Response::Done(done) => Ok(Some(done.choices.first().map_or(FinishReason::Stop, |c| finish(&c.finish_reason)))),
        Response::CompletionDone(done) => Ok(Some(done.choices.first().map_or(FinishReason::Stop, |c| finish(&c.finish_reason)))),
        Response::ValidationError(e) => Err(EngineError::Invalid(e.to_string())),
        Response::InternalError(e) => Err(EngineError::Internal(e.to_string())),
        Response::ModelError(e, _) | Response::CompletionModelError(e, _) => Err(EngineError::Internal(e)),
        _ => Err(EngineError::Internal("unexpected response kind from mistralrs".into())),
    }
}

/// The per-request logits processor through which srlm chooses each token.
struct Steering {
    state: Mutex<SteeringState>,
}

struct SteeringState {
    sampler: Sampler,
    eos: Option<u32>,
    prompt_tokens: Option<usize>,
    pending: Vec<SampledToken>,
    cancelled: bool,
}

impl Steering {
    fn new(generation: &Generation, eos: Option<u32>) -> Self {
        Self {
            state: Mutex::new(SteeringState {
                sampler: Sampler::new(generation.sampling.clone()),
                eos,
                prompt_tokens: None,
                pending: Vec::new(),
                cancelled: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SteeringState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next token will be end-of-sequence, so the engine finishes the sequence.
    fn cancel(&self) {
        self.lock().cancelled = true;
    }

    fn take_tokens(&self) -> Vec<SampledToken> {
        std::mem::take(&mut self.lock().pending)
    }

    fn prompt_tokens(&self) -> usize {
        self.lock().prompt_tokens.unwrap_or(0)
    }
}

impl CustomLogitsProcessor for Steering {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        let values: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut s = self.lock();
        if s.prompt_tokens.is_none() {
            s.prompt_tokens = Some(context.len());
        }
        let pick = match (s.cancelled, s.eos) {
            (true, Some(eos)) => SampledToken { token: eos, logprob: 0.0, top: Vec::new(), allowed: Vec::new() },
            _ => s.sampler.sample(&values),
        };
        let mut forced = vec![f32::NEG_INFINITY; values.len()];
        forced[pick.token as usize] = 0.0;
        s.pending.push(pick);
        Tensor::from_vec(forced, values.len(), logits.device())
    }
}

fn role(role: &str) -> TextMessageRole {
    match role {
        "system" | "developer" => TextMessageRole::System,
        "user" => TextMessageRole::User,
        "assistant" => TextMessageRole::Assistant,
        "tool" => TextMessageRole::Tool,
        other => TextMessageRole::Custom(other.to_string()),
    }
}

/// Where the Hugging Face cache keeps a hub model's `tokenizer.json` once mistralrs
/// has downloaded the model.
fn hub_tokenizer(model_id: &str) -> Result<PathBuf> {
    let cache = mistralrs::core::hf_hub_cache_dir().context("no Hugging Face cache directory")?;
    let snapshots = cache.join(format!("models--{}", model_id.replace('/', "--"))).join("snapshots");
    std::fs::read_dir(&snapshots)
        .with_context(|| format!("reading {}", snapshots.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join("tokenizer.json")))
        .find(|p| p.exists())
        .with_context(|| format!("no tokenizer.json for {model_id} under {}", snapshots.display()))
}

fn is_gguf(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn default_name(path: &Path) -> String {
    let name = if is_gguf(path) { path.file_stem() } else { path.file_name() };
    name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}
