//! `srlm checkpoints import`: register a checkpoint trained elsewhere (TRL, DeepSpeed,
//! llama.cpp's tools) with its parent, so srlm can serve, judge, swap to and measure it.
//! The files are checked to be what their format says before anything is recorded;
//! activating the checkpoint stays the admin API's job (it loads the model first).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::store::training::NewCheckpoint;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct ImportCheckpointConfig {
    /// A .gguf file, or an HF directory (config.json, *.safetensors, tokenizer.json).
    pub path: PathBuf,
    /// The checkpoint it was trained from.
    pub parent: Option<i64>,
    /// Its iteration (default: the parent's + 1, or 0 without a parent).
    pub iteration: Option<i32>,
    /// Its name (default: the file or directory name).
    pub name: Option<String>,
    /// Postgres URL.
    pub database_url: String,
}

/// `gguf` or `safetensors`, after checking the files are readable as such.
pub fn check_files(path: &Path) -> Result<&'static str> {
    if path.is_dir() {
        let config =
            std::fs::read_to_string(path.join("config.json")).with_context(|| format!("{}: no readable config.json", path.display()))?;
        let config: serde_json::Value =
            serde_json::from_str(&config).with_context(|| format!("{}: config.json is not JSON", path.display()))?;
        if config["model_type"].as_str().is_none() {
            bail!("{}: config.json names no model_type", path.display());
        }
        if !path.join("tokenizer.json").is_file() {
            bail!("{}: no tokenizer.json", path.display());
        }
        let shards: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        if shards.is_empty() {
            bail!("{}: no *.safetensors files", path.display());
        }
        // SAFETY: the files are mapped read-only and only their headers are read here.
        unsafe { candle_core::safetensors::MmapedSafetensors::multi(&shards) }
            .with_context(|| format!("{}: unreadable safetensors", path.display()))?;
        return Ok("safetensors");
    }
    let content = crate::model::gguf::GgufFile::open(path)?.content;
    for key in ["general.architecture", "tokenizer.ggml.tokens"] {
        if !content.metadata.contains_key(key) {
            bail!("{}: GGUF metadata has no {key}", path.display());
        }
    }
    if content.tensor_infos.is_empty() {
        bail!("{}: GGUF file has no tensors", path.display());
    }
    Ok("gguf")
}

pub async fn run(args: ImportCheckpointConfig) -> Result<()> {
    let format = check_files(&args.path)?;
    let store = Store::connect_migrated(&args.database_url).await?;
    let path = std::path::absolute(&args.path)?.to_string_lossy().into_owned();
    if let Some(existing) = store.checkpoint_by_path(&path).await? {
        bail!("{path} is already checkpoint {}", existing.id);
    }
    let parent = match args.parent {
        Some(id) => Some(store.checkpoint(id).await?.with_context(|| format!("parent checkpoint {id} does not exist"))?),
        None => None,
    };
    let name = args.name.clone().unwrap_or_else(|| {
        let stem = if args.path.is_dir() { args.path.file_name() } else { args.path.file_stem() };
        stem.map_or_else(|| path.clone(), |s| s.to_string_lossy().into_owned())
    });
    let new = NewCheckpoint {
        name,
        path,
        format: format.to_string(),
        parent_id: parent.as_ref().map(|p| p.id),
        iteration: args.iteration.unwrap_or_else(|| parent.as_ref().map_or(0, |p| p.iteration + 1)),
    };
    let registered = store.register_checkpoint(&new).await?;
    eprintln!(
        "registered checkpoint {} ({}, iteration {}, parent {:?}); serve it with POST /admin/checkpoints/{}/activate",
        registered.id, registered.format, registered.iteration, registered.parent_id, registered.id
    );
    println!("{}", serde_json::to_string(&registered)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_checkpoints_are_refused() {
        let dir = std::env::temp_dir().join(format!("srlm-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bogus = dir.join("model.gguf");
        std::fs::write(&bogus, b"not gguf at all").unwrap();
        assert!(check_files(&bogus).unwrap_err().to_string().contains("not a GGUF file"));
        let hf = dir.join("hf");
        std::fs::create_dir_all(&hf).unwrap();
        assert!(check_files(&hf).unwrap_err().to_string().contains("config.json"));
        std::fs::write(hf.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
        assert!(check_files(&hf).unwrap_err().to_string().contains("tokenizer.json"));
        std::fs::write(hf.join("tokenizer.json"), "{}").unwrap();
        assert!(check_files(&hf).unwrap_err().to_string().contains("safetensors"));
        std::fs::write(hf.join("model.safetensors"), b"\x08\0\0\0\0\0\0\0garbage!").unwrap();
        assert!(check_files(&hf).unwrap_err().to_string().contains("unreadable"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
