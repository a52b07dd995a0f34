//! Learning-rate schedules, gradient accumulation and clipping around candle-nn's AdamW.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::Var;

/// How the learning rate falls from its peak to its final value after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Linear,
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Schedule {
    pub peak: f64,
    pub last: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub decay: Decay,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based): linear warm-up from near
    /// zero to `peak`, then `decay` down to `last` at the final step.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / (self.warmup_steps + 1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).saturating_sub(1);
        if span == 0 {
            return self.peak;
        }
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let fraction = match self.decay {
            Decay::Linear => 1.0 - progress,
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        self.last + (self.peak - self.last) * fraction
    }
}

/// A gradient store with nothing of ours in it (candle offers no public constructor;
/// the backward pass of an untracked scalar makes one).
pub(crate) fn empty_store() -> Result<GradStore> {
    Ok(candle_core::Tensor::zeros((), candle_core::DType::F32, &candle_core::Device::Cpu)?.backward()?)
}

/// Sums the gradients of several micro-batches for one optimizer step: gradient stores
/// from candle's autograd, or buffers the hand-derived backward pass adds into in place.
pub struct Accumulator {
    vars: Vec<Var>,
    grads: Option<GradStore>,
    fast: Option<super::fast::Grads>,
}

impl Accumulator {
    pub fn new(vars: Vec<Var>) -> Self {
        Self { vars, grads: None, fast: None }
    }

    /// The in-place buffers for [`super::fast::backward`], created on first use.
    pub fn fast(&mut self, model: &super::model::Model) -> &mut super::fast::Grads {
        self.fast.get_or_insert_with(|| super::fast::Grads::new(model))
    }

    /// Moves what the hand-derived pass accumulated into the gradient store.
    pub fn settle(&mut self, model: &super::model::Model) -> Result<()> {
        if let Some(fast) = self.fast.take() {
            self.add(fast.into_store(model)?)?;
        }
        Ok(())
    }

    pub fn add(&mut self, mut grads: GradStore) -> Result<()> {
        if self.grads.is_none() {
            self.grads = Some(empty_store()?);
        }
        let acc = self.grads.as_mut().expect("set above");
        // Only the variables' gradients are kept; a store from `backward` also holds
        // gradients of constants that fed the graph.
        for v in &self.vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                let sum = match acc.remove(v.as_tensor()) {
                    Some(prev) => (prev + g)?,
                    None => g,
                };
                acc.insert(v.as_tensor(), sum);
            }
        }
        Ok(())
    }

    /// The accumulated gradients, scaled so that their global L2 norm is at most
    /// `max_norm` (when given), and the norm before clipping.
    pub fn take_clipped(&mut self, max_norm: Option<f64>) -> Result<Option<(GradStore, f64)>> {
        let Some(mut grads) = self.grads.take() else { return Ok(None) };
        let mut sq = 0f64;
        for v in &self.vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            }
        }
        let norm = sq.sqrt();
        if let Some(max) = max_norm {
            if norm > max && norm.is_finite() {
                let coef = max / (norm + 1e-6);
                for v in &self.vars {
                    if let Some(g) = grads.remove(v.as_tensor()) {
                        grads.insert(v.as_tensor(), (g * coef)?);
                    }
                }
            }
        }
        Ok(Some((grads, norm)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear_decay_reaches_the_final_rate() {
        let s = Schedule { peak: 1e-6, last: 1e-7, warmup_steps: 2, total_steps: 10, decay: Decay::Linear };
        assert!((s.lr(0) - 1e-6 / 3.0).abs() < 1e-15);
        assert!((s.lr(1) - 2e-6 / 3.0).abs() < 1e-15);
        assert!((s.lr(2) - 1e-6).abs() < 1e-15);
        assert!((s.lr(9) - 1e-7).abs() < 1e-15);
        let mid = s.lr(5);
        assert!(mid < 1e-6 && mid > 1e-7);
    }

    #[test]
    fn cosine_decay_is_halfway_at_the_middle() {
        let s = Schedule { peak: 5.5e-6, last: 1.1e-6, warmup_steps: 0, total_steps: 11, decay: Decay::Cosine };
        assert!((s.lr(0) - 5.5e-6).abs() < 1e-15);
        assert!((s.lr(5) - 3.3e-6).abs() < 1e-12);
        assert!((s.lr(10) - 1.1e-6).abs() < 1e-15);
    }

    #[test]
    fn accumulated_gradients_are_summed_and_clipped() -> Result<()> {
        use candle_core::{Device, Tensor};
        let w = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &Device::Cpu)?)?;
        let mut acc = Accumulator::new(vec![w.clone()]);
        for k in [1f64, 2.0] {
            let loss = (w.as_tensor() * k)?.sum_all()?;
            acc.add(loss.backward()?)?;
        }
        let (grads, norm) = acc.take_clipped(Some(1.0))?.unwrap();
        // Each coordinate's gradient is 1 + 2 = 3; the norm is 3·√2.
        assert!((norm - 3.0 * 2f64.sqrt()).abs() < 1e-6);
        let g = grads.get(w.as_tensor()).unwrap().to_vec1::<f32>()?;
        assert!((g[0] - 1.0 / 2f32.sqrt()).abs() < 1e-4 && (g[0] - g[1]).abs() < 1e-6, "{g:?}");
        assert!(acc.take_clipped(None)?.is_none());
        Ok(())
    }
}
