//! Token selection: greedy or seeded temperature / top-k / top-p sampling, plus the
//! log-probabilities OpenAI clients ask for.
//!
//! srlm picks every token itself, whatever engine produced the logits, so that
//! per-request seeds are honoured (mistralrs 0.8.1 shares one RNG across all requests)
//! and log-probs are natural-log probabilities of the model's own distribution
//! (mistralrs reports base-10 logs of the truncated, tempered distribution).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::math::exp_shifted;

/// How to pick tokens; validated by the API layer before it gets here.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// 0 means greedy decoding.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 keeps every token.
    pub top_p: f32,
    /// 0 keeps every token.
    pub top_k: usize,
    pub seed: u64,
    /// `None`: no log-probs; `Some(k)`: the chosen token's log-prob and the `k` best.
    pub logprobs: Option<usize>,
    /// When not empty, only these tokens may be chosen (a forced choice, e.g. the digit
    /// after a judge's `Score:`); their log-probs under the full distribution are reported.
    pub allowed: Vec<u32>,
    /// Tokens to emit, in order, before sampling anything: scoring a fixed continuation
    /// (each one's log-prob under the model is reported as if it had been sampled).
    pub forced: Vec<u32>,
    /// Tokens never chosen (`ignore_eos` bans end-of-sequence); their log-probs still count
    /// in the distribution reported.
    pub banned: Vec<u32>,
}

impl SamplingConfig {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            logprobs: None,
            allowed: Vec::new(),
            forced: Vec::new(),
            banned: Vec::new(),
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
}

/// One sampled token with its log-probability under the model (temperature 1,
/// nothing truncated) and, when asked, the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
    /// Log-probs of the config's `allowed` tokens (full distribution), in its order.
    pub allowed: Vec<(u32, f32)>,
}

pub struct Sampler {
    cfg: SamplingConfig,
    rng: StdRng,
    /// Forced tokens emitted so far.
    step: usize,
}

impl Sampler {
    pub fn new(cfg: SamplingConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        Self { cfg, rng, step: 0 }
    }

    /// Picks the next token from raw (unnormalised) logits.
    pub fn sample(&mut self, logits: &[f32]) -> SampledToken {
        let log_z = log_sum_exp(logits);
        let forced = self.cfg.forced.get(self.step).map(|&t| t as usize);
        self.step += 1;
        let token = if let Some(t) = forced.filter(|&t| t < logits.len()) {
            t
        } else if self.cfg.allowed.is_empty() && self.cfg.banned.is_empty() {
            self.pick(logits)
        } else if self.cfg.allowed.is_empty() {
            let mut masked = logits.to_vec();
            for &t in &self.cfg.banned {
                if let Some(l) = masked.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            self.pick(&masked)
        } else {
            let mut masked = vec![f32::NEG_INFINITY; logits.len()];
            for &t in &self.cfg.allowed {
                if let Some(l) = logits.get(t as usize) {
                    masked[t as usize] = *l;
                }
            }
            self.pick(&masked)
        };
        let allowed = self.cfg.allowed.iter().filter_map(|&t| logits.get(t as usize).map(|l| (t, l - log_z))).collect();
        let top = match self.cfg.logprobs {
            Some(k) if k > 0 => top_k_indices(logits, k).into_iter().map(|i| (i as u32, logits[i] - log_z)).collect(),
            _ => Vec::new(),
        };
        SampledToken { token: token as u32, logprob: logits[token] - log_z, top, allowed }
    }

    fn pick(&mut self, logits: &[f32]) -> usize {
        if self.cfg.is_greedy() {
            argmax(logits)
        } else {
            self.draw(logits)
        }
    }

    fn draw(&mut self, logits: &[f32]) -> usize {
        let inv_t = 1.0 / self.cfg.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut weights: Vec<f32> = logits.iter().map(|&l| (l - max) * inv_t).collect();
        // Masked (−∞) logits weigh 0, so the sum is the kept tokens' total.
        let total = exp_shifted(&mut weights, 0.0);
        if self.cfg.top_p >= 1.0 && self.cfg.top_k == 0 {
            return self.walk(&weights, logits);
        }
        let probs: Vec<(usize, f32)> = weights.into_iter().enumerate().zip(logits).filter(|(_, l)| l.is_finite()).map(|(p, _)| p).collect();
        let keep = self.nucleus(probs, total);
        let kept: f32 = keep.iter().map(|p| p.1).sum();
        let mut u = self.rng.random::<f32>() * kept;
        for &(i, p) in &keep {
            if u < p {
                return i;
            }
            u -= p;
        }
        keep.last().map_or_else(|| argmax(logits), |p| p.0)
    }

    /// A draw from every token, as [`Self::nucleus`] keeping them all would give it (the
    /// same sum, the same walk), without building the list: masked tokens weigh 0.
    fn walk(&mut self, weights: &[f32], logits: &[f32]) -> usize {
        let kept: f32 = weights.iter().sum();
        let mut u = self.rng.random::<f32>() * kept;
        for (i, &p) in weights.iter().enumerate() {
            if u < p && logits[i].is_finite() {
                return i;
            }
            u -= p;
        }
        logits.iter().rposition(|l| l.is_finite()).unwrap_or_else(|| argmax(logits))
    }

    /// The tokens top-k and top-p keep, most likely first (ties by token id). Only the
    /// head of the distribution is sorted: a nucleus rarely needs more than a few
    /// hundred of the vocabulary's tokens.
    fn nucleus(&self, mut probs: Vec<(usize, f32)>, total: f32) -> Vec<(usize, f32)> {
        let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let limit = if self.cfg.top_k > 0 { self.cfg.top_k.min(probs.len()) } else { probs.len() };
        if self.cfg.top_p >= 1.0 {
            if limit < probs.len() {
                probs.select_nth_unstable_by(limit - 1, order);
                probs.truncate(limit);
            }
            return probs;
        }
        let mut head = 256.min(limit);
        loop {
            if head < probs.len() {
                probs.select_nth_unstable_by(head - 1, order);
            }
            let mut top = probs[..head].to_vec();
            top.sort_unstable_by(order);
            let top_total = if self.cfg.top_k > 0 { top.iter().map(|p| p.1).sum::<f32>() } else { total };
            let mut mass = 0.0;
            let cut = top.iter().position(|p| {
                mass += p.1 / top_total;
                mass >= self.cfg.top_p
            });
            match cut {
                Some(i) => {
                    top.truncate(i + 1);
                    return top;
                }
                None if head >= limit => return top,
                None => head = (head * 4).min(limit),
            }
        }
    }
}

fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

fn log_sum_exp(xs: &[f32]) -> f32 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut shifted = xs.to_vec();
    max + exp_shifted(&mut shifted, max).ln()
}

fn top_k_indices(xs: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    let k = k.min(xs.len());
    idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| xs[b].total_cmp(&xs[a]));
    idx.truncate(k);
    idx.sort_unstable_by(|&a, &b| xs[b].total_cmp(&xs[a]).then(a.cmp(&b)));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingConfig {
        SamplingConfig { temperature, top_p, top_k, seed, logprobs: Some(3), allowed: Vec::new(), forced: Vec::new(), banned: Vec::new() }
    }

    #[test]
    fn greedy_takes_argmax_and_reports_natural_log_probs() {
        let logits = [1.0, 3.0, 2.0, -1.0];
        let t = Sampler::new(cfg(0.0, 1.0, 0, 0)).sample(&logits);
        assert_eq!(t.token, 1);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((t.logprob - (3.0f32.exp() / z).ln()).abs() < 1e-5);
        let ids: Vec<u32> = t.top.iter().map(|p| p.0).collect();
        assert_eq!(ids, vec![1, 2, 0]);
        let probs: f32 = logits.iter().map(|l| (l - log_sum_exp(&logits)).exp()).sum();
        assert!((probs - 1.0).abs() < 1e-5);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(cfg(1.0, 1.0, 0, seed));
            (0..40).map(|_| s.sample(&logits).token).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // p ≈ [0.64, 0.24, 0.09, 0.03]: top_p 0.7 keeps tokens 0 and 1 only.
        let logits = [3.0, 2.0, 1.0, -0.2];
        let mut s = Sampler::new(cfg(1.0, 0.7, 0, 1));
        for _ in 0..500 {
            assert!(s.sample(&logits).token <= 1);
        }
    }

    #[test]
    fn top_k_limits_choices_and_temperature_sharpens() {
        let logits = [1.0, 1.0, 1.0, 1.0];
        let mut s = Sampler::new(cfg(1.0, 1.0, 2, 3));
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[s.sample(&logits).token as usize] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0 && seen[2] == 0 && seen[3] == 0, "{seen:?}");

        let logits = [2.0, 0.0];
        let mut cold = Sampler::new(cfg(0.1, 1.0, 0, 4));
        assert!((0..200).all(|_| cold.sample(&logits).token == 0));
    }

    #[test]
    fn allowed_tokens_restrict_the_choice_and_report_full_log_probs() {
        let logits = [5.0, 1.0, 2.0, 0.0];
        let mut cfg = cfg(0.0, 1.0, 0, 0);
        cfg.allowed = vec![1, 2];
        let t = Sampler::new(cfg.clone()).sample(&logits);
        assert_eq!(t.token, 2, "greedy among the allowed");
        let z = log_sum_exp(&logits);
        assert_eq!(t.allowed, vec![(1, 1.0 - z), (2, 2.0 - z)]);
        cfg.temperature = 1.0;
        let mut s = Sampler::new(cfg);
        assert!((0..200).all(|_| [1, 2].contains(&s.sample(&logits).token)));
    }

    #[test]
    fn banned_tokens_are_never_chosen_and_the_log_prob_is_the_models() {
        let logits = [5.0, 1.0, 2.0, 0.0];
        let mut cfg = cfg(0.0, 1.0, 0, 0);
        cfg.banned = vec![0];
        let t = Sampler::new(cfg.clone()).sample(&logits);
        assert_eq!(t.token, 2, "greedy past the banned best");
        assert!((t.logprob - (2.0 - log_sum_exp(&logits))).abs() < 1e-6);
        cfg.temperature = 1.0;
        let mut s = Sampler::new(cfg);
        assert!((0..200).all(|_| s.sample(&logits).token != 0));
    }

    #[test]
    fn forced_tokens_come_first_with_their_model_log_probs() {
        let logits = [0.0, 3.0, 1.0];
        let mut cfg = cfg(0.0, 1.0, 0, 0);
        cfg.forced = vec![2, 0];
        let mut s = Sampler::new(cfg);
        let z = log_sum_exp(&logits);
        let a = s.sample(&logits);
        assert_eq!((a.token, a.logprob), (2, 1.0 - z));
        assert_eq!(s.sample(&logits).token, 0);
        assert_eq!(s.sample(&logits).token, 1, "then sampling resumes (greedy)");
    }

    #[test]
    fn masked_logits_are_never_drawn() {
        let logits = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.5];
        let mut s = Sampler::new(cfg(1.5, 1.0, 0, 9));
        for _ in 0..300 {
            let t = s.sample(&logits).token;
            assert!(t == 1 || t == 3);
        }
    }
}
