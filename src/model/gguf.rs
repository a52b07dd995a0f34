//! GGUF files: the one reader of their headers ([`GgufFile`]), the weight types, and
//! conversion between them.
//!
//! candle (and so mistralrs) has SIMD kernels for Q8_0 and Q4_0 but runs Q4_1 through
//! a scalar fallback (`BlockQ4_1::vec_dot_unopt`, 38% of decode time in a profile of the
//! default model). Re-encoding Q4_1 weights as Q8_0 keeps them (Q8_0 represents every
//! Q4_1 value to within 1/254 of its block's range) and lets the SIMD kernels run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

/// A GGUF file with its header read (metadata and the tensor index); tensors are read
/// when asked for.
pub struct GgufFile {
    path: PathBuf,
    file: std::fs::File,
    pub content: gguf_file::Content,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| anyhow::anyhow!("{}: not a GGUF file: {e}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), file, content })
    }

    pub fn metadata(&self) -> &HashMap<String, gguf_file::Value> {
        &self.content.metadata
    }

    /// A metadata value that is a string, such as `general.architecture`.
    pub fn string(&self, key: &str) -> Option<&str> {
        metadata_str(&self.content.metadata, key)
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The tensor `name` as stored (on the CPU).
    pub fn tensor(&mut self, name: &str) -> Result<QTensor> {
        self.content.tensor(&mut self.file, name, &Device::Cpu).with_context(|| format!("{}: tensor {name}", self.path.display()))
    }
}

/// The string value of `key` in GGUF metadata, where it is one.
pub fn metadata_str<'a>(md: &'a HashMap<String, gguf_file::Value>, key: &str) -> Option<&'a str> {
    md.get(key).and_then(|v| v.to_string().ok()).map(String::as_str)
}

/// The weight types srlm converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightType {
    #[value(name = "q8_0")]
    Q8_0,
    F16,
    F32,
}

impl WeightType {
    fn ggml(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::F16 => GgmlDType::F16,
            Self::F32 => GgmlDType::F32,
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::F16 => "f16",
            Self::F32 => "f32",
        }
    }
}

/// What `srlm serve --weights` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsChoice {
    /// The native engine: Q4_0/Q4_1 as stored, the rest as Q8_0. mistralrs: Q8_0 on CPU
    /// where the file holds Q4_1 (no SIMD kernel in candle); otherwise as is.
    Auto,
    /// Serve the file's weights unchanged.
    AsIs,
    #[value(name = "q8_0")]
    Q8_0,
    F16,
    F32,
}

impl WeightsChoice {
    /// The conversion to apply to a GGUF file, if any.
    pub fn resolve(self, model: &Path, on_cpu: bool) -> Result<Option<WeightType>> {
        Ok(match self {
            Self::AsIs => None,
            Self::Q8_0 => Some(WeightType::Q8_0),
            Self::F16 => Some(WeightType::F16),
            Self::F32 => Some(WeightType::F32),
            Self::Auto => (on_cpu && tensor_types(model)?.contains(&GgmlDType::Q4_1)).then_some(WeightType::Q8_0),
        })
    }
}

/// Weight types of the tensors in a GGUF file, most common first.
pub fn tensor_types(path: &Path) -> Result<Vec<GgmlDType>> {
    let content = GgufFile::open(path)?.content;
    let mut counts: Vec<(GgmlDType, usize)> = Vec::new();
    for info in content.tensor_infos.values() {
        match counts.iter_mut().find(|(d, _)| *d == info.ggml_dtype) {
            Some((_, n)) => *n += 1,
            None => counts.push((info.ggml_dtype, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1));
    Ok(counts.into_iter().map(|(d, _)| d).collect())
}

/// Writes `src` with every quantized matrix re-encoded as `to` (1-D tensors such as
/// norms stay as they are). Metadata is copied unchanged.
pub fn convert(src: &Path, dst: &Path, to: WeightType) -> Result<()> {
    let mut gguf = GgufFile::open(src)?;
    let target = to.ggml();
    let mut names: Vec<String> = gguf.content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let tensor = gguf.tensor(&name)?;
        let dims = tensor.shape().dims().to_vec();
        let row = *dims.last().unwrap_or(&0);
        let convertible = dims.len() >= 2 && tensor.dtype() != target && row % target.block_size() == 0;
        let tensor = if convertible { QTensor::quantize(&tensor.dequantize(&Device::Cpu)?, target)? } else { tensor };
        tensors.push((name, tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = gguf.content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let part = dst.with_extension("gguf.part");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?);
    gguf_file::write(&mut out, &metadata, &tensor_refs)?;
    drop(out);
    std::fs::rename(&part, dst)?;
    Ok(())
}

/// The path of `model` converted to `to`, converting once and reusing the file after.
/// Where the model's folder is not writable the copy goes to the user's cache folder.
pub fn converted_copy(model: &Path, to: WeightType) -> Result<PathBuf> {
    let stem = model.file_stem().context("model path has no file name")?.to_string_lossy().into_owned();
    let name = format!("{stem}.{}.gguf", to.suffix());
    let beside = model.with_file_name(&name);
    let candidates = [beside, std::env::temp_dir().join("srlm-models").join(&name)];
    for path in &candidates {
        if path.exists() {
            return Ok(path.clone());
        }
    }
    let mut last_err = None;
    for path in &candidates {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        tracing::info!(from = %model.display(), to = %path.display(), "converting weights to {}", to.suffix());
        match convert(model, path, to) {
            Ok(()) => return Ok(path.clone()),
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.expect("at least one candidate"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    #[test]
    fn q4_1_matrices_become_q8_0_with_the_same_values_and_metadata() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("srlm-gguf-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let src = dir.join("tiny.gguf");
        let values: Vec<f32> = (0..64 * 4).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let weight = QTensor::quantize(&Tensor::from_vec(values, (4, 64), &Device::Cpu)?, GgmlDType::Q4_1)?;
        let norm = QTensor::quantize(&Tensor::ones(64, candle_core::DType::F32, &Device::Cpu)?, GgmlDType::F32)?;
        let arch = gguf_file::Value::String("llama".into());
        {
            let mut f = std::fs::File::create(&src)?;
            gguf_file::write(&mut f, &[("general.architecture", &arch)], &[("w", &weight), ("norm", &norm)])?;
        }
        let dst = dir.join("tiny.q8_0.gguf");
        convert(&src, &dst, WeightType::Q8_0)?;

        let mut f = std::fs::File::open(&dst)?;
        let content = gguf_file::Content::read(&mut f)?;
        assert_eq!(content.metadata["general.architecture"].to_string()?, "llama");
        let w = content.tensor(&mut f, "w", &Device::Cpu)?;
        assert_eq!(w.dtype(), GgmlDType::Q8_0);
        assert_eq!(content.tensor(&mut f, "norm", &Device::Cpu)?.dtype(), GgmlDType::F32);
        let before = weight.dequantize(&Device::Cpu)?;
        let after = w.dequantize(&Device::Cpu)?;
        let err = (before - after)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 0.02, "max abs difference {err}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
