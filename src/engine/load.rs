//! Which engine serves a model, and loading it: `EngineOptions` is what the server,
//! hot-swaps and in-process evaluation take (the CLI builds it from `srlm serve`'s flags).

use std::path::Path;
use std::sync::Arc;

use super::mistral::MistralEngine;
use super::native::NativeEngine;
use super::SharedEngine;
use crate::model::gguf::{GgufFile, WeightsChoice};

/// `srlm serve`'s defaults.
pub const DEFAULT_MAX_SEQS: usize = 32;
pub const DEFAULT_PREFILL_CHUNK: usize = 256;

/// `--engine`: which engine serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    Auto,
    Mistralrs,
    Native,
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// A .gguf file, an HF safetensors directory, or a Hugging Face id.
    pub model: String,
    pub name: Option<String>,
    pub choice: EngineChoice,
    /// Sequences decoded together (mistralrs batches only on a GPU).
    pub max_seqs: usize,
    /// Prompt tokens per prefill step (native engine).
    pub prefill_chunk: usize,
    /// Sequences kept in mistralrs's prefix cache (0 turns it off).
    pub prefix_cache: usize,
    /// Tokens mistralrs's paged KV cache holds on a GPU, all sequences together
    /// (default: 4096 per sequence of `max_seqs`).
    pub kv_cache_tokens: Option<usize>,
    /// Run on CPU even when a GPU is available.
    pub force_cpu: bool,
    /// Weight type to serve a GGUF file with: the native engine serves Q4_0/Q4_1 as stored
    /// unless asked for Q8_0; mistralrs converts once, then reuses the copy.
    pub weights: WeightsChoice,
}

impl EngineOptions {
    /// `srlm serve`'s defaults for `model`.
    pub fn for_model(model: &str) -> Self {
        Self {
            model: model.to_string(),
            name: None,
            choice: EngineChoice::Auto,
            max_seqs: DEFAULT_MAX_SEQS,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            prefix_cache: 0,
            kv_cache_tokens: None,
            force_cpu: false,
            weights: WeightsChoice::Auto,
        }
    }

    /// The same options for another model (a hot-swap).
    pub fn with_model(&self, model: String, name: String) -> Self {
        Self { model, name: Some(name), ..self.clone() }
    }
}

/// Loads the engine the options name; `auto` takes the native engine for Llama-family
/// models on CPU (it batches correctly there) and mistralrs otherwise.
pub async fn load(options: &EngineOptions) -> anyhow::Result<SharedEngine> {
    let on_cpu = mistralrs::best_device(options.force_cpu).map(|d| d.is_cpu()).unwrap_or(true);
    let native = match options.choice {
        EngineChoice::Native => true,
        EngineChoice::Mistralrs => false,
        EngineChoice::Auto => on_cpu && is_llama(Path::new(&options.model)),
    };
    if native {
        let native = options.clone();
        return Ok(Arc::new(tokio::task::spawn_blocking(move || NativeEngine::load(&native)).await??));
    }
    Ok(Arc::new(MistralEngine::load(options).await?))
}

/// A local GGUF file or HF directory of a Llama-family model (the native engine's).
fn is_llama(path: &Path) -> bool {
    if path.is_dir() {
        let config = std::fs::read_to_string(path.join("config.json")).unwrap_or_default();
        return serde_json::from_str::<serde_json::Value>(&config).is_ok_and(|c| c["model_type"] == "llama");
    }
    GgufFile::open(path).is_ok_and(|gguf| gguf.string("general.architecture") == Some("llama"))
}
