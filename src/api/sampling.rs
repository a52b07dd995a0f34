//! Sampling fields shared by the completion endpoints, validated into a `ValidSampling`.

use super::{ApiError, Limits};
use crate::engine::{Generation, Prompt, SamplingConfig};
pub use crate::protocol::sampling::Stop;

/// The raw sampling fields of a request, before validation.
#[derive(Debug, Default, Clone)]
pub struct SamplingInput {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub n: Option<i64>,
    /// (field name, value): `max_tokens` or `max_completion_tokens`.
    pub max_tokens: Option<(&'static str, i64)>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    /// Already validated by the endpoint (its field and limit differ between endpoints).
    pub logprobs: Option<usize>,
}

/// Defaults an endpoint applies where a field is absent.
#[derive(Debug, Clone, Copy)]
pub struct SamplingDefaults {
    pub temperature: f64,
    pub top_p: f64,
    pub n: usize,
}

impl SamplingDefaults {
    /// OpenAI's defaults.
    pub const OPENAI: Self = Self { temperature: 1.0, top_p: 1.0, n: 1 };
}

#[derive(Debug, Clone)]
pub struct ValidSampling {
    pub n: usize,
    pub config: SamplingConfig,
    pub max_tokens: usize,
    pub stop: Vec<String>,
}

impl ValidSampling {
    /// `ignore_eos`: end-of-sequence is never chosen, so answers run to the token limit.
    pub fn ignore_eos(&mut self, vocab: &crate::model::vocab::Vocab) {
        self.config.banned = vocab.eos.into_iter().collect();
    }

    /// The generation for choice `index`: each choice gets its own seed so that `n`
    /// sampled choices differ, and a request with a `seed` is reproducible.
    pub fn generation(&self, prompt: Prompt, index: usize) -> Generation {
        let mut sampling = self.config.clone();
        sampling.seed = sampling.seed.wrapping_add(index as u64);
        Generation { prompt, sampling, max_tokens: self.max_tokens, stop: self.stop.clone() }
    }
}

/// The temperatures the sampler accepts.
pub const TEMPERATURE: std::ops::RangeInclusive<f64> = 0.0..=2.0;
/// top_p must be greater than 0 and at most this.
pub const TOP_P_MAX: f64 = 1.0;

/// A token budget named `field`, checked against the server's limit.
pub fn max_tokens_in_range(field: &str, value: i64, limits: &Limits) -> Result<usize, ApiError> {
    if value < 1 || value > limits.max_tokens as i64 {
        return Err(ApiError::field(field, format!("{field} must be between 1 and {}, got {value}", limits.max_tokens)));
    }
    Ok(value as usize)
}

/// Which token budget a chat-style request gives: `max_completion_tokens`, else its
/// deprecated alias `max_tokens`. When both are given the alias is ignored, but it must
/// still be a valid budget.
pub fn token_budget(
    max_completion_tokens: Option<i64>,
    max_tokens: Option<i64>,
    limits: &Limits,
) -> Result<Option<(&'static str, i64)>, ApiError> {
    match (max_completion_tokens, max_tokens) {
        (Some(v), alias) => {
            if let Some(alias) = alias {
                max_tokens_in_range("max_tokens", alias, limits)?;
            }
            Ok(Some(("max_completion_tokens", v)))
        }
        (None, Some(v)) => Ok(Some(("max_tokens", v))),
        (None, None) => Ok(None),
    }
}

pub fn validate(input: SamplingInput, limits: &Limits, defaults: SamplingDefaults) -> Result<ValidSampling, ApiError> {
    let temperature = input.temperature.unwrap_or(defaults.temperature);
    if !TEMPERATURE.contains(&temperature) {
        return Err(ApiError::field("temperature", format!("temperature must be between 0 and 2, got {temperature}")));
    }
    let top_p = input.top_p.unwrap_or(defaults.top_p);
    if !(top_p > 0.0 && top_p <= TOP_P_MAX) {
        return Err(ApiError::field("top_p", format!("top_p must be greater than 0 and at most 1, got {top_p}")));
    }
    let top_k = input.top_k.unwrap_or(0);
    if top_k < 0 {
        return Err(ApiError::field("top_k", format!("top_k must be 0 (off) or positive, got {top_k}")));
    }
    let n = input.n.unwrap_or(defaults.n.min(limits.max_n) as i64);
    if n < 1 || n > limits.max_n as i64 {
        return Err(ApiError::field("n", format!("n must be between 1 and {}, got {n}", limits.max_n)));
    }
    let max_tokens = match input.max_tokens {
        None => limits.default_max_tokens.min(limits.max_tokens),
        Some((field, value)) => max_tokens_in_range(field, value, limits)?,
    };
    let stop = match input.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > limits.max_stop {
        return Err(ApiError::field("stop", format!("stop takes at most {} sequences, got {}", limits.max_stop, stop.len())));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::field("stop", "stop sequences must not be empty"));
    }
    let seed = input.seed.map_or_else(rand::random::<u64>, |s| s as u64);
    Ok(ValidSampling {
        n: n as usize,
        config: SamplingConfig {
            temperature: temperature as f32,
            top_p: top_p as f32,
            top_k: top_k as usize,
            seed,
            logprobs: input.logprobs,
            allowed: Vec::new(),
            forced: Vec::new(),
            banned: Vec::new(),
        },
        max_tokens,
        stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: SamplingInput) -> Result<ValidSampling, ApiError> {
        validate(input, &Limits::default(), SamplingDefaults::OPENAI)
    }

    fn param_of(err: ApiError) -> String {
        err.body().error.param.unwrap_or_default()
    }

    #[test]
    fn out_of_range_fields_name_the_field_and_limit() {
        let e = check(SamplingInput { temperature: Some(2.5), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("between 0 and 2"), "{e}");
        assert_eq!(param_of(e), "temperature");
        let e = check(SamplingInput { top_p: Some(0.0), ..Default::default() }).unwrap_err();
        assert_eq!(param_of(e), "top_p");
        let e = check(SamplingInput { n: Some(17), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("between 1 and 16"), "{e}");
        let e = check(SamplingInput { max_tokens: Some(("max_completion_tokens", 0)), ..Default::default() }).unwrap_err();
        assert_eq!(param_of(e), "max_completion_tokens");
        let e = check(SamplingInput { stop: Some(Stop::Many(vec!["a".into(); 5])), ..Default::default() }).unwrap_err();
        assert_eq!(param_of(e), "stop");
    }

    #[test]
    fn defaults_apply_and_choices_get_distinct_seeds() {
        let v = check(SamplingInput { seed: Some(41), n: Some(3), ..Default::default() }).unwrap();
        assert_eq!(v.n, 3);
        assert_eq!(v.config.temperature, 1.0);
        assert_eq!(v.max_tokens, Limits::default().default_max_tokens);
        let seeds: Vec<u64> = (0..3).map(|i| v.generation(Prompt::Text("x".into()), i).sampling.seed).collect();
        assert_eq!(seeds, vec![41, 42, 43]);
    }
}
