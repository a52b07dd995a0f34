//! Writing trained weights as a checkpoint the server (and llama.cpp) loads: GGUF with
//! the base's metadata and tokenizer, or an HF safetensors directory beside the base's
//! config and tokenizer files. Files appear under their final name only when complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Tensor;

use super::gguf::{GgufFile, WeightType};
use crate::model::weights::{permute, rope_heads, LlamaWeights, LAYER_TENSORS};

/// llama.cpp's `general.file_type` for the weight type.
fn file_type(to: WeightType) -> u32 {
    match to {
        WeightType::F32 => 0,
        WeightType::F16 => 1,
        WeightType::Q8_0 => 7,
    }
}

fn encode(t: &Tensor, to: WeightType) -> Result<QTensor> {
    let target = match to {
        WeightType::F32 => GgmlDType::F32,
        WeightType::F16 => GgmlDType::F16,
        WeightType::Q8_0 => GgmlDType::Q8_0,
    };
    // Vectors (norms) stay F32, as llama.cpp writes them; so do rows a block can't tile.
    let row = *t.dims().last().unwrap_or(&0);
    let target = if t.rank() < 2 || row % target.block_size() != 0 { GgmlDType::F32 } else { target };
    Ok(QTensor::quantize(t, target)?)
}

/// The weights under llama.cpp's tensor names, q/k permuted back to its RoPE layout.
fn gguf_tensors(w: &LlamaWeights, to: WeightType) -> Result<Vec<(String, QTensor)>> {
    let c = &w.config;
    let mut out = vec![("token_embd.weight".to_string(), encode(&w.embed, to)?)];
    for (i, l) in w.layers.iter().enumerate() {
        for (j, (t, (name, _))) in l.tensors().into_iter().zip(LAYER_TENSORS).enumerate() {
            let t = match rope_heads(j, c) {
                Some(heads) => permute(t, heads)?,
                None => t.clone(),
            };
            out.push((format!("blk.{i}.{name}.weight"), encode(&t, to)?));
        }
    }
    out.push(("output_norm.weight".to_string(), encode(&w.norm, to)?));
    if w.lm_head.id() != w.embed.id() {
        out.push(("output.weight".to_string(), encode(&w.lm_head, to)?));
    }
    Ok(out)
}

/// Writes `weights` as a GGUF file at `dst` with the metadata (architecture,
/// hyper-parameters, tokenizer, chat template) of the GGUF file `base`.
pub fn write_gguf(base: &Path, weights: &LlamaWeights, to: WeightType, dst: &Path) -> Result<()> {
    let content = GgufFile::open(base)?.content;
    let mut metadata: Vec<(String, gguf_file::Value)> = content.metadata.into_iter().filter(|(k, _)| k != "general.file_type").collect();
    metadata.push(("general.file_type".into(), gguf_file::Value::U32(file_type(to))));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let tensors = gguf_tensors(weights, to)?;
    let md: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_atomically(dst, |part| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(part)?);
        gguf_file::write(&mut out, &md, &ts)?;
        use std::io::Write;
        out.flush()?;
        out.get_ref().sync_all()?;
        Ok(())
    })
}

/// Writes `weights` as an HF directory at `dst`: `model.safetensors` plus the base
/// directory's JSON files (config, tokenizer, generation config).
pub fn write_safetensors(base: &Path, weights: &LlamaWeights, dst: &Path) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    tensors.insert("model.embed_tokens.weight".into(), weights.embed.clone());
    for (i, l) in weights.layers.iter().enumerate() {
        for (t, (_, name)) in l.tensors().into_iter().zip(LAYER_TENSORS) {
            tensors.insert(format!("model.layers.{i}.{name}.weight"), t.clone());
        }
    }
    tensors.insert("model.norm.weight".into(), weights.norm.clone());
    if weights.lm_head.id() != weights.embed.id() {
        tensors.insert("lm_head.weight".into(), weights.lm_head.clone());
    }
    write_atomically(dst, |part| {
        std::fs::create_dir_all(part)?;
        candle_core::safetensors::save(&tensors, part.join("model.safetensors"))?;
        for entry in std::fs::read_dir(base)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") && !path.file_name().is_some_and(|n| n.to_string_lossy().contains("index")) {
                std::fs::copy(&path, part.join(path.file_name().expect("a file")))?;
            }
        }
        Ok(())
    })
}

/// Writes the checkpoint in the base's format: GGUF for a GGUF base, safetensors for an
/// HF directory.
pub fn write_like(base: &Path, weights: &LlamaWeights, to: WeightType, dst: &Path) -> Result<()> {
    if base.is_dir() {
        if to != WeightType::F32 {
            bail!("safetensors checkpoints are written in F32; --dtype {} applies to GGUF", to.suffix());
        }
        write_safetensors(base, weights, dst)
    } else {
        write_gguf(base, weights, to, dst)
    }
}

/// The in-progress name of `dst`.
pub fn part_path(dst: &Path) -> PathBuf {
    let mut name = dst.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    dst.with_file_name(name)
}

/// Runs `write` on a `.part` path and renames it to `dst` only when it succeeded; on
/// failure the partial output is removed.
fn write_atomically(dst: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if dst.exists() {
        bail!("{} exists; refusing to overwrite a checkpoint", dst.display());
    }
    if let Some(dir) = dst.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let part = part_path(dst);
    let remove = |p: &Path| {
        let _ = if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
    };
    remove(&part);
    match write(&part) {
        Ok(()) => {
            std::fs::rename(&part, dst).with_context(|| format!("renaming {} to {}", part.display(), dst.display()))?;
            Ok(())
        }
        Err(e) => {
            remove(&part);
            Err(e.context(format!("writing {}", dst.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::tiny_weights;

    fn tiny_base(dir: &Path, w: &LlamaWeights) -> Result<PathBuf> {
        let c = &w.config;
        let u = |v: usize| gguf_file::Value::U32(v as u32);
        let md = vec![
            ("general.architecture", gguf_file::Value::String("llama".into())),
            ("llama.embedding_length", u(c.hidden)),
            ("llama.feed_forward_length", u(c.intermediate)),
            ("llama.block_count", u(c.layers)),
            ("llama.attention.head_count", u(c.heads)),
            ("llama.attention.head_count_kv", u(c.kv_heads)),
            ("llama.vocab_size", u(c.vocab)),
            ("llama.context_length", u(c.max_positions)),
            ("llama.rope.freq_base", gguf_file::Value::F32(c.rope_theta)),
            ("llama.attention.layer_norm_rms_epsilon", gguf_file::Value::F32(c.rms_eps)),
        ];
        let path = dir.join("base.gguf");
        let mut f = std::fs::File::create(&path)?;
        let refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(&mut f, &refs, &[])?;
        Ok(path)
    }

    /// Every weight of `w` in one list, in the order the trainer and the engines read them.
    fn values_of(w: &LlamaWeights) -> Result<Vec<f32>> {
        let mut all = vec![&w.embed, &w.norm, &w.lm_head];
        all.extend(w.layers.iter().flat_map(|l| l.tensors()));
        let mut out = Vec::new();
        for t in all {
            out.extend(t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    #[test]
    fn gguf_write_then_load_gives_identical_weights() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("srlm-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        for tied in [true, false] {
            let w = tiny_weights(21, tied)?;
            let base = tiny_base(&dir, &w)?;
            let out = dir.join(format!("out-{tied}.gguf"));
            write_gguf(&base, &w, WeightType::F32, &out)?;
            assert!(!part_path(&out).exists());
            let back = LlamaWeights::from_gguf(&out)?;
            assert_eq!(back.config, w.config);
            assert_eq!(values_of(&back)?, values_of(&w)?, "tied={tied}");
            assert_eq!(back.lm_head.id() == back.embed.id(), tied);
            // Refuses to overwrite.
            assert!(write_gguf(&base, &w, WeightType::F32, &out).is_err());
            // Q8_0 is close, not identical.
            let q8 = dir.join(format!("out-{tied}.q8.gguf"));
            write_gguf(&base, &w, WeightType::Q8_0, &q8)?;
            let (a, b) = (values_of(&LlamaWeights::from_gguf(&q8)?)?, values_of(&w)?);
            let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            // Q8_0 keeps each value within half a step of its block's scale (1/254 of the
            // block's largest value, at most 1.0 here) plus the scale's f16 rounding
            // (127 steps × 2⁻¹¹): under 1/200. A wrong tensor or layout is off by tenths.
            assert!(max > 0.0 && max < 1.0 / 200.0, "Q8_0 weight difference {max}");
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn safetensors_write_then_load_gives_identical_weights() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("srlm-export-st-{}", std::process::id()));
        let base = dir.join("base");
        std::fs::create_dir_all(&base)?;
        let w = tiny_weights(8, false)?;
        let c = &w.config;
        let config = serde_json::json!({
            "hidden_size": c.hidden, "intermediate_size": c.intermediate, "num_hidden_layers": c.layers,
            "num_attention_heads": c.heads, "num_key_value_heads": c.kv_heads, "vocab_size": c.vocab,
            "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_eps, "max_position_embeddings": c.max_positions,
        });
        std::fs::write(base.join("config.json"), config.to_string())?;
        let out = dir.join("trained");
        write_like(&base, &w, WeightType::F32, &out)?;
        assert!(out.join("config.json").exists() && out.join("model.safetensors").exists());
        let back = LlamaWeights::from_safetensors(&out)?;
        assert_eq!(values_of(&back)?, values_of(&w)?);
        assert!(write_like(&base, &w, WeightType::Q8_0, &dir.join("q8")).is_err(), "safetensors are written in F32 only");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_failed_write_leaves_no_file() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("srlm-export-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let dst = dir.join("x.gguf");
        let err = write_atomically(&dst, |part| {
            std::fs::write(part, b"half")?;
            bail!("disk full")
        });
        assert!(err.is_err());
        assert!(!dst.exists() && !part_path(&dst).exists());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
