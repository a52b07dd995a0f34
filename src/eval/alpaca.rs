//! `srlm eval export-alpaca`: a model's answers on a prompt set in AlpacaEval's
//! model-outputs format (a JSON array of `{instruction, output, generator}`), so the
//! public leaderboard tools can judge them.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::source::{Decoding, Source};

#[derive(Debug, Clone)]
pub struct ExportAlpacaConfig {
    /// The model: a server URL (`http://…`), a checkpoint id, or a model file.
    pub model: String,
    /// Model name sent to a server.
    pub model_name: String,
    /// Prompts: AlpacaEval's evaluation set (a JSON array with `instruction`), or JSONL
    /// with `prompt`, `instruction` or `messages`.
    pub prompts: PathBuf,
    /// Use only the first N prompts.
    pub limit: Option<usize>,
    /// The `generator` name written with each output (default: from the model).
    pub generator: Option<String>,
    /// Most new tokens per answer.
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    pub temperature: f64,
    /// Prompts in flight at once.
    pub concurrency: usize,
    /// Where to write the JSON array.
    pub out: PathBuf,
    /// Postgres URL, to look a checkpoint id up.
    pub database_url: Option<String>,
}

/// One AlpacaEval model output.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelOutput {
    pub instruction: String,
    pub output: String,
    pub generator: String,
}

/// The model's outputs on the prompts, in the prompts' order.
pub async fn outputs(source: &Source, prompts: &[String], generator: &str, args: &ExportAlpacaConfig) -> Result<Vec<ModelOutput>> {
    let decoding = |seed| Decoding { max_tokens: args.max_tokens, temperature: args.temperature, top_p: 1.0, seed };
    super::over_prompts(prompts, args.concurrency, "answers", |i, prompt| async move {
        let answer = source.answer(prompt, decoding(i as u64)).await?;
        Ok(ModelOutput { instruction: prompt.clone(), output: answer.text, generator: generator.to_string() })
    })
    .await
}

pub async fn run(args: ExportAlpacaConfig) -> Result<()> {
    let store = match &args.database_url {
        Some(url) => Some(crate::store::Store::connect_migrated(url).await?),
        None => None,
    };
    let source = Source::open(&args.model, &args.model_name, None, store.as_ref()).await?;
    let mut prompts = super::source::read_prompts(&args.prompts)?;
    if let Some(n) = args.limit {
        prompts.truncate(n);
    }
    let generator = args.generator.clone().unwrap_or_else(|| match source.checkpoint_id() {
        Some(id) => format!("srlm-checkpoint-{id}"),
        None => "srlm".to_string(),
    });
    let outputs = outputs(&source, &prompts, &generator, &args).await?;
    std::fs::write(&args.out, serde_json::to_vec_pretty(&outputs)?).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("{} outputs of {} written to {}", outputs.len(), source.label(), args.out.display());
    Ok(())
}
