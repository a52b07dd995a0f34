//! Direct Preference Optimization losses (Rafailov et al. 2023) and their variants.
//!
//! Δ = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)], where the
//! log-probabilities are sums over answer tokens (means for IPO, as in its paper).

use anyhow::Result;
use candle_core::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DpoLoss {
    /// −log σ(βΔ) (with label smoothing ε: conservative DPO).
    Sigmoid,
    /// (Δ − 1/(2β))², on per-token mean log-probabilities (Azar et al. 2023).
    Ipo,
    /// max(0, 1 − βΔ) (SLiC).
    Hinge,
    /// Unbiased loss under label noise ε (Chowdhury et al. 2024).
    Robust,
}

impl DpoLoss {
    /// Whether sequence log-probabilities are per-token means rather than sums.
    pub fn uses_mean_logprobs(self) -> bool {
        self == Self::Ipo
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DpoConfig {
    pub loss: DpoLoss,
    pub beta: f64,
    pub label_smoothing: f64,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self { loss: DpoLoss::Sigmoid, beta: 0.1, label_smoothing: 0.0 }
    }
}

/// log σ(x), stable for large |x|: min(x, 0) − log(1 + e^{−|x|}).
fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let min0 = x.neg()?.relu()?.neg()?;
    Ok((min0 - (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

/// Per-pair losses, `[n]`, from policy (`pc`, `pr`) and reference (`rc`, `rr`)
/// log-probabilities of the chosen and rejected answers.
pub fn loss(cfg: &DpoConfig, pc: &Tensor, pr: &Tensor, rc: &Tensor, rr: &Tensor) -> Result<Tensor> {
    let delta = ((pc - pr)? - (rc - rr)?)?;
    let (beta, eps) = (cfg.beta, cfg.label_smoothing);
    let scaled = (&delta * beta)?;
    Ok(match cfg.loss {
        DpoLoss::Sigmoid => ((log_sigmoid(&scaled)? * -(1.0 - eps))? - (log_sigmoid(&scaled.neg()?)? * eps)?)?,
        DpoLoss::Robust => (((log_sigmoid(&scaled)? * -(1.0 - eps))? + (log_sigmoid(&scaled.neg()?)? * eps)?)? / (1.0 - 2.0 * eps))?,
        DpoLoss::Hinge => (scaled.neg()? + 1.0)?.relu()?,
        DpoLoss::Ipo => (delta - 1.0 / (2.0 * beta))?.sqr()?,
    })
}

/// Sums over a micro-batch of the quantities TRL logs, to be averaged per step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DpoSums {
    pub pairs: usize,
    pub loss: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    pub accuracy: f64,
    pub logps_chosen: f64,
    pub logps_rejected: f64,
}

impl DpoSums {
    pub fn of(cfg: &DpoConfig, losses: &Tensor, pc: &Tensor, pr: &Tensor, rc: &Tensor, rr: &Tensor) -> Result<Self> {
        let v = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?) };
        let (l, pc, pr, rc, rr) = (v(losses)?, v(pc)?, v(pr)?, v(rc)?, v(rr)?);
        let mut s = Self { pairs: l.len(), ..Default::default() };
        for i in 0..l.len() {
            let chosen = cfg.beta * (pc[i] - rc[i]);
            let rejected = cfg.beta * (pr[i] - rr[i]);
            s.loss += l[i];
            s.chosen_reward += chosen;
            s.rejected_reward += rejected;
            s.accuracy += f64::from(u8::from(chosen > rejected));
            s.logps_chosen += pc[i];
            s.logps_rejected += pr[i];
        }
        Ok(s)
    }

    pub fn add(&mut self, o: &Self) {
        self.pairs += o.pairs;
        self.loss += o.loss;
        self.chosen_reward += o.chosen_reward;
        self.rejected_reward += o.rejected_reward;
        self.accuracy += o.accuracy;
        self.logps_chosen += o.logps_chosen;
        self.logps_rejected += o.logps_rejected;
    }

    /// The step's means, under the names TRL uses.
    pub fn means(&self) -> Vec<(&'static str, f64)> {
        let n = self.pairs.max(1) as f64;
        vec![
            ("loss", self.loss / n),
            ("rewards/chosen", self.chosen_reward / n),
            ("rewards/rejected", self.rejected_reward / n),
            ("rewards/accuracies", self.accuracy / n),
            ("rewards/margins", (self.chosen_reward - self.rejected_reward) / n),
            ("logps/chosen", self.logps_chosen / n),
            ("logps/rejected", self.logps_rejected / n),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f64]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn run(loss_kind: DpoLoss, beta: f64, eps: f64) -> Vec<f64> {
        // Δ = (pc − pr) − (rc − rr) = 2, −3, 0 for the three pairs.
        let (pc, pr) = (t(&[-10.0, -20.0, -5.0]), t(&[-12.0, -18.0, -5.0]));
        let (rc, rr) = (t(&[-11.0, -19.0, -6.0]), t(&[-11.0, -20.0, -6.0]));
        let cfg = DpoConfig { loss: loss_kind, beta, label_smoothing: eps };
        loss(&cfg, &pc, &pr, &rc, &rr).unwrap().to_vec1::<f64>().unwrap()
    }

    fn close(a: &[f64], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn losses_match_hand_computed_values() {
        // softplus(−βΔ) = log(1 + e^{−βΔ}) with β = 0.1.
        let sp = |x: f64| (1.0 + x.exp()).ln();
        close(&run(DpoLoss::Sigmoid, 0.1, 0.0), &[sp(-0.2), sp(0.3), 2f64.ln()]);
        let eps = 0.1;
        let cdpo = |d: f64| (1.0 - eps) * sp(-0.1 * d) + eps * sp(0.1 * d);
        close(&run(DpoLoss::Sigmoid, 0.1, eps), &[cdpo(2.0), cdpo(-3.0), cdpo(0.0)]);
        let robust = |d: f64| ((1.0 - eps) * sp(-0.1 * d) - eps * sp(0.1 * d)) / (1.0 - 2.0 * eps);
        close(&run(DpoLoss::Robust, 0.1, eps), &[robust(2.0), robust(-3.0), robust(0.0)]);
        close(&run(DpoLoss::Hinge, 0.1, 0.0), &[0.8, 1.3, 1.0]);
        close(&run(DpoLoss::Hinge, 1.0, 0.0), &[0.0, 4.0, 1.0]);
        // IPO: (Δ − 1/(2β))² with 1/(2β) = 5.
        close(&run(DpoLoss::Ipo, 0.1, 0.0), &[9.0, 64.0, 25.0]);
    }

    #[test]
    fn log_sigmoid_is_stable_at_the_extremes() {
        let v = log_sigmoid(&t(&[-1000.0, 0.0, 1000.0])).unwrap().to_vec1::<f64>().unwrap();
        close(&v, &[-1000.0, -(2f64.ln()), 0.0]);
    }

    #[test]
    fn step_means_use_trl_names_and_values() {
        let cfg = DpoConfig::default();
        let (pc, pr) = (t(&[-10.0, -20.0]), t(&[-12.0, -18.0]));
        let (rc, rr) = (t(&[-11.0, -19.0]), t(&[-11.0, -20.0]));
        let l = loss(&cfg, &pc, &pr, &rc, &rr).unwrap();
        let m: std::collections::HashMap<_, _> = DpoSums::of(&cfg, &l, &pc, &pr, &rc, &rr).unwrap().means().into_iter().collect();
        // Pair 1: chosen reward 0.1, rejected −0.1; pair 2: chosen −0.1, rejected 0.2.
        assert!((m["rewards/chosen"] - 0.0).abs() < 1e-12);
        assert!((m["rewards/rejected"] - 0.05).abs() < 1e-12);
        assert!((m["rewards/margins"] + 0.05).abs() < 1e-12);
        assert!((m["rewards/accuracies"] - 0.5).abs() < 1e-12);
        assert!((m["logps/chosen"] + 15.0).abs() < 1e-12);
    }
}
