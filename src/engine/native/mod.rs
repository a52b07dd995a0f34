//! The native engine: srlm's own Llama model with continuous batching on CPU.
//!
//! One scheduler thread owns the model and every running sequence. Each step it admits
//! waiting requests (up to `max_seqs`), gives prefilling sequences a chunk of their
//! prompt and decoding sequences one token, runs one forward step over all those rows,
//! samples each sequence that reached the end of its rows, and sends the text on. A
//! sequence whose consumer went away is dropped at the next step.

mod attention;
pub mod model;
pub mod q4;
pub mod q8;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use tokio::sync::mpsc;

use self::model::{KvCache, NativeModel, Row};
use rayon::prelude::*;

use super::load::EngineOptions;
use super::sampler::{SampledToken, Sampler};
use super::text::TextAssembler;
use super::{Engine, EngineError, Event, EventStream, Finish, FinishReason, Generation, ModelInfo, Prompt};
use crate::model::gguf::WeightsChoice;
use crate::model::vocab::Vocab;
use crate::model::ModelFiles;

/// Shorter shared prefixes are recomputed: sharing them is not worth the bookkeeping.
const MIN_SHARED_PREFIX: usize = 16;
/// Finished sequences whose caches are kept for later prompts that continue them (a
/// judge's forced `Score:` line continues the judge's own text).
const RECENT_CACHES: usize = 32;

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Where a new sequence's shared prefix comes from.
enum Donor {
    Running(usize),
    Recent(usize),
}

struct Job {
    prompt: Vec<u32>,
    generation: Generation,
    events: mpsc::Sender<Result<Event, EngineError>>,
}

pub struct NativeEngine {
    info: ModelInfo,
    vocab: Arc<Vocab>,
    tokenizer: tokenizers::Tokenizer,
    max_positions: usize,
    jobs: std_mpsc::Sender<Job>,
}

impl NativeEngine {
    /// Loads `opts.model`; `opts.weights` `auto` or `as-is` serves a GGUF file's Q4_0 and
    /// Q4_1 matrices as stored (4-bit kernels), anything else re-encodes them as Q8_0.
    pub fn load(opts: &EngineOptions) -> Result<Self> {
        let path = Path::new(&opts.model);
        let ModelFiles { weights, tokenizer, vocab } = ModelFiles::open(path)?;
        let four_bit = matches!(opts.weights, WeightsChoice::Auto | WeightsChoice::AsIs);
        let model = NativeModel::new(&weights, four_bit)?;
        drop(weights);
        let vocab = Arc::new(vocab);
        let name = opts.name.clone().unwrap_or_else(|| {
            let stem = if path.is_dir() { path.file_name() } else { path.file_stem() };
            stem.map_or_else(|| opts.model.clone(), |s| s.to_string_lossy().into_owned())
        });
        let info = ModelInfo {
            name,
            path: opts.model.clone(),
            format: if path.is_dir() { "safetensors" } else { "gguf" }.into(),
            engine: "native".into(),
            device: "cpu".into(),
            max_concurrent: opts.max_seqs,
            weights: model.weights(),
        };
        let max_positions = model.config.max_positions;
        let (jobs, queue) = std_mpsc::channel();
        let scheduler =
            Scheduler { model, vocab: vocab.clone(), max_seqs: opts.max_seqs.max(1), prefill_chunk: opts.prefill_chunk.max(1), queue };
        // The scheduler runs on a worker of the engine's own thread pool, so that the
        // parallel parts of a step are forked from a worker (the other workers steal, still
        // warm) rather than handed over from outside the pool and waited for on a futex
        // each time: a decode step has some 330 of them. The pool ends with the engine.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("srlm-native-{i}")).build()?;
        std::thread::Builder::new().name("srlm-native".into()).spawn(move || pool.install(|| scheduler.run()))?;
        let kernels = if q8::vnni() { "avx512-vnni" } else { "avx2" };
        tracing::info!(model = %info.name, max_seqs = opts.max_seqs, weights = %info.weights, kernels, "native engine loaded");
        Ok(Self { info, vocab, tokenizer, max_positions, jobs })
    }

    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
        let text =
            prompt.text(&self.vocab)?.ok_or_else(|| EngineError::Invalid("the model has no chat template; use /v1/completions".into()))?;
        crate::model::tokenizer::encode(&self.tokenizer, &text).map_err(|e| EngineError::Internal(e.to_string()))
    }
}

#[async_trait]
impl Engine for NativeEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    async fn tokenize(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        crate::model::tokenizer::encode(&self.tokenizer, text).map_err(|e| EngineError::Internal(e.to_string()))
    }

    async fn generate(&self, generation: Generation) -> Result<EventStream, EngineError> {
        let prompt = self.prompt_ids(&generation.prompt)?;
        if prompt.is_empty() {
            return Err(EngineError::Invalid("the prompt is empty".into()));
        }
        if prompt.len() >= self.max_positions {
            return Err(EngineError::Invalid(format!(
                "the prompt has {} tokens; the model's context is {} tokens",
                prompt.len(),
                self.max_positions
            )));
        }
        // Room for every token's event and the finish: the scheduler never waits on a client.
        let (events, stream) = mpsc::channel(generation.max_tokens + 8);
        self.jobs.send(Job { prompt, generation, events }).map_err(|_| EngineError::Internal("the native engine has stopped".into()))?;
        Ok(stream)
    }
}

struct Sequence {
    job: Job,
    sampler: Sampler,
    cache: KvCache,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// The token to feed next while decoding.
    next: Option<u32>,
    /// Tokens whose keys and values the cache holds, in order.
    cached: Vec<u32>,
    generated: usize,
    text: TextAssembler,
}

struct Scheduler {
    model: NativeModel,
    vocab: Arc<Vocab>,
    max_seqs: usize,
    prefill_chunk: usize,
    queue: std_mpsc::Receiver<Job>,
}

impl Scheduler {
    fn run(self) {
        let mut running: Vec<Sequence> = Vec::new();
        let mut waiting: VecDeque<Job> = VecDeque::new();
        let mut recent: VecDeque<(Vec<u32>, KvCache)> = VecDeque::new();
        loop {
            if running.is_empty() && waiting.is_empty() {
                match self.queue.recv() {
                    Ok(job) => waiting.push_back(job),
                    Err(_) => return,
                }
            }
            waiting.extend(self.queue.try_iter());
            while running.len() < self.max_seqs {
                let Some(job) = waiting.front() else { break };
                if job.events.is_closed() {
                    waiting.pop_front();
                    continue;
                }
                // Reuse the longest prompt prefix a running sequence has computed (the
                // n choices of one request, judge prompts sharing the rubric). A prefix
                // still being prefilled is waited for rather than computed twice.
                let kv_dim = self.model.config.kv_dim();
                let shared = |tokens: &[u32]| common_prefix(tokens, &job.prompt).min(job.prompt.len() - 1);
                let donor = running
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (Donor::Running(i), s.prefilled, shared(&s.job.prompt)))
                    .chain(recent.iter().enumerate().map(|(i, (tokens, _))| (Donor::Recent(i), tokens.len(), shared(tokens))))
                    .filter(|d| d.2 >= MIN_SHARED_PREFIX)
                    .max_by_key(|d| d.2);
                let cache = match donor {
                    Some((Donor::Running(_), computed, shared)) if computed < shared => break,
                    Some((Donor::Running(i), _, shared)) => running[i].cache.share(shared, kv_dim),
                    Some((Donor::Recent(i), _, shared)) => recent[i].1.share(shared, kv_dim),
                    None => KvCache::new(self.model.config.layers),
                };
                let job = waiting.pop_front().expect("front exists");
                let sampler = Sampler::new(job.generation.sampling.clone());
                let text = TextAssembler::new(job.generation.stop.clone());
                let prefilled = cache.len(kv_dim);
                let cached = job.prompt[..prefilled].to_vec();
                running.push(Sequence { job, sampler, cache, prefilled, next: None, cached, generated: 0, text });
            }
            running.retain(|s| !s.job.events.is_closed());
            if running.is_empty() {
                continue;
            }
            for done in self.step(&mut running) {
                if recent.len() == RECENT_CACHES {
                    recent.pop_front();
                }
                recent.push_back((done.cached, done.cache));
            }
        }
    }

    /// One forward step; returns the sequences that finished.
    fn step(&self, running: &mut Vec<Sequence>) -> Vec<Sequence> {
        let mut rows = Vec::new();
        let mut wanted = Vec::new();
        let mut sampled = Vec::new();
        let mut budget = self.prefill_chunk;
        for (si, s) in running.iter().enumerate() {
            if let Some(token) = s.next {
                rows.push(Row { seq: si, token, pos: s.prefilled + s.generated - 1 });
                wanted.push(rows.len() - 1);
                sampled.push(si);
            } else if budget > 0 {
                let take = (s.job.prompt.len() - s.prefilled).min(budget);
                budget -= take;
                for (j, &token) in s.job.prompt[s.prefilled..s.prefilled + take].iter().enumerate() {
                    rows.push(Row { seq: si, token, pos: s.prefilled + j });
                }
                if s.prefilled + take == s.job.prompt.len() {
                    wanted.push(rows.len() - 1);
                    sampled.push(si);
                }
            }
        }
        // Account prompt chunks before the forward pass moves the caches.
        let prefill_counts: Vec<usize> = running
            .iter()
            .enumerate()
            .map(|(si, s)| if s.next.is_none() { rows.iter().filter(|r| r.seq == si).count() } else { 0 })
            .collect();
        let mut caches: Vec<&mut KvCache> = running.iter_mut().map(|s| &mut s.cache).collect();
        let logits = self.model.step(&rows, &mut caches, &wanted);
        for (si, count) in prefill_counts.into_iter().enumerate() {
            let s = &mut running[si];
            if count > 0 {
                let fed = s.job.prompt[s.prefilled..s.prefilled + count].to_vec();
                s.cached.extend(fed);
            } else if let Some(token) = s.next {
                s.cached.push(token);
            }
            s.prefilled += count;
        }
        // Sampling is per sequence and independent: spread it over the threads.
        let mut chosen: Vec<(usize, &mut Sequence)> = running.iter_mut().enumerate().filter(|(si, _)| sampled.contains(si)).collect();
        let tokens: Vec<(usize, SampledToken)> =
            chosen.par_iter_mut().zip(logits.par_iter()).map(|((si, s), logits)| (*si, s.sampler.sample(logits))).collect();
        drop(chosen);
        let mut finished = Vec::new();
        for (si, token) in tokens {
            if let Some(reason) = self.advance(&mut running[si], token) {
                finished.push((si, reason));
            }
        }
        let mut done = Vec::new();
        for (si, reason) in finished.into_iter().rev() {
            let s = running.swap_remove(si);
            let finish = Finish { reason, prompt_tokens: s.job.prompt.len(), completion_tokens: s.generated };
            let _ = s.job.events.try_send(Ok(Event::Done(finish)));
            done.push(s);
        }
        done
    }

    /// Samples the sequence's next token and sends its text; `Some` when it is done.
    fn advance(&self, s: &mut Sequence, token: SampledToken) -> Option<FinishReason> {
        if Some(token.token) == self.vocab.eos {
            self.flush(s);
            return Some(FinishReason::Stop);
        }
        s.generated += 1;
        s.next = Some(token.token);
        let logprob = s.job.generation.sampling.logprobs.is_some().then(|| super::token_logprob(&self.vocab, &token));
        let piece = s.text.push(self.vocab.text_bytes(token.token), logprob);
        if !piece.text.is_empty() || !piece.logprobs.is_empty() {
            let delta = Event::Delta { text: piece.text, logprobs: piece.logprobs };
            if s.job.events.try_send(Ok(delta)).is_err() {
                return Some(FinishReason::Cancelled);
            }
        }
        if piece.stopped {
            return Some(FinishReason::Stop);
        }
        let context_full = s.prefilled + s.generated >= self.model.config.max_positions;
        if s.generated >= s.job.generation.max_tokens || context_full {
            self.flush(s);
            return Some(FinishReason::Length);
        }
        None
    }

    fn flush(&self, s: &mut Sequence) {
        let rest = s.text.finish();
        if !rest.text.is_empty() || !rest.logprobs.is_empty() {
            let _ = s.job.events.try_send(Ok(Event::Delta { text: rest.text, logprobs: rest.logprobs }));
        }
    }
}
