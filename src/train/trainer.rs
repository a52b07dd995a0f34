//! The optimization loop shared by SFT and DPO: shuffled epochs, micro-batches whose
//! gradients add up to one effective batch, global-norm clipping, AdamW on a schedule.

use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::data::{PairTokens, SftExample};
use super::dpo::{self, DpoConfig, DpoSums};
use super::fast;
use super::model::{Batch, Model};
use super::optim::{Accumulator, Decay, Schedule};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OptimConfig {
    pub epochs: usize,
    pub lr: f64,
    pub final_lr: f64,
    pub decay: Decay,
    /// Fraction of the optimizer steps spent warming up.
    pub warmup_ratio: f64,
    /// Examples (pairs for DPO) per optimizer step.
    pub batch_size: usize,
    /// Examples per forward/backward pass; gradients of `batch_size / micro_batch`
    /// passes are summed.
    pub micro_batch: usize,
    pub max_grad_norm: Option<f64>,
    pub weight_decay: f64,
    pub seed: u64,
}

impl OptimConfig {
    /// The paper's DPO settings: lr 1e-6 decaying to 1e-7, batch 16.
    pub fn dpo_default() -> Self {
        Self {
            epochs: 1,
            lr: 1e-6,
            final_lr: 1e-7,
            decay: Decay::Linear,
            warmup_ratio: 0.1,
            batch_size: 16,
            micro_batch: 1,
            max_grad_norm: Some(1.0),
            weight_decay: 0.0,
            seed: 42,
        }
    }

    /// The paper's SFT settings: lr 5.5e-6 cosine to 1.1e-6, batch 16.
    pub fn sft_default() -> Self {
        Self { lr: 5.5e-6, final_lr: 1.1e-6, decay: Decay::Cosine, ..Self::dpo_default() }
    }

    pub fn steps(&self, examples: usize) -> usize {
        (examples * self.epochs).div_ceil(self.batch_size.max(1))
    }
}

/// One optimizer step's measurements; `values` carries the loss-specific means.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Tokens through the policy in this step (prompt and answer, every sequence).
    pub tokens: usize,
    pub seconds: f64,
    pub values: Vec<(&'static str, f64)>,
}

impl StepMetrics {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.values {
            m.insert((*k).to_string(), serde_json::json!(v));
        }
        m.insert("lr".into(), serde_json::json!(self.lr));
        m.insert("grad_norm".into(), serde_json::json!(self.grad_norm));
        m.insert("epoch".into(), serde_json::json!(self.epoch));
        m.insert("tokens".into(), serde_json::json!(self.tokens));
        m.insert("seconds".into(), serde_json::json!(self.seconds));
        serde_json::Value::Object(m)
    }
}

/// What the loop reports as it goes.
pub trait Observer {
    /// `done` of `total` examples of the run have been through a forward pass
    /// (`phase` "reference" or "train").
    fn progress(&mut self, _phase: &'static str, _done: usize, _total: usize) {}
    fn step(&mut self, _metrics: &StepMetrics) -> Result<()> {
        Ok(())
    }
}

impl Observer for () {}

/// The run's totals.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub steps: usize,
    pub examples: usize,
    pub tokens: usize,
    pub train_seconds: f64,
    pub reference_seconds: f64,
    pub last: Option<serde_json::Value>,
}

/// Runs the loop. `micro(items, step_items, acc)` adds into `acc` the gradients of a
/// micro-batch's share of the step's mean loss, and returns its measurement sums and
/// token count.
fn optimize<S: Default>(
    model: &Model,
    cfg: &OptimConfig,
    n: usize,
    observer: &mut dyn Observer,
    mut micro: impl FnMut(&[usize], &[usize], &mut Accumulator) -> Result<(S, usize)>,
    add: impl Fn(&mut S, &S),
    means: impl Fn(&S) -> Vec<(&'static str, f64)>,
) -> Result<Summary> {
    ensure!(n > 0, "nothing to train on");
    ensure!(cfg.batch_size > 0 && cfg.micro_batch > 0, "batch sizes must be positive");
    let vars: Vec<_> = model.vars().into_iter().map(|(_, v)| v).collect();
    ensure!(!vars.is_empty(), "every parameter is frozen: nothing to train");
    let total_steps = cfg.steps(n);
    let schedule = Schedule {
        peak: cfg.lr,
        last: cfg.final_lr,
        warmup_steps: (cfg.warmup_ratio * total_steps as f64).round() as usize,
        total_steps,
        decay: cfg.decay,
    };
    let params = ParamsAdamW { lr: cfg.lr, weight_decay: cfg.weight_decay, ..Default::default() };
    let mut opt = AdamW::new(vars.clone(), params)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = Vec::with_capacity(n * cfg.epochs);
    for _ in 0..cfg.epochs {
        let mut epoch: Vec<usize> = (0..n).collect();
        epoch.shuffle(&mut rng);
        order.extend(epoch);
    }
    let mut summary = Summary { examples: order.len(), ..Default::default() };
    let started = Instant::now();
    let mut done = 0;
    for (step, items) in order.chunks(cfg.batch_size).enumerate() {
        let t0 = Instant::now();
        let mut acc = Accumulator::new(vars.clone());
        let mut sums = S::default();
        let mut tokens = 0;
        for chunk in items.chunks(cfg.micro_batch) {
            let (s, t) = micro(chunk, items, &mut acc)?;
            add(&mut sums, &s);
            tokens += t;
            done += chunk.len();
            observer.progress("train", done, order.len());
        }
        acc.settle(model)?;
        let (grads, grad_norm) = acc.take_clipped(cfg.max_grad_norm)?.expect("a step has at least one micro-batch");
        ensure!(grad_norm.is_finite(), "the gradient norm is {grad_norm} at step {step}: training diverged");
        let lr = schedule.lr(step);
        opt.set_learning_rate(lr);
        opt.step(&grads)?;
        let metrics = StepMetrics {
            step,
            epoch: done as f64 / n as f64,
            lr,
            grad_norm,
            tokens,
            seconds: t0.elapsed().as_secs_f64(),
            values: means(&sums),
        };
        summary.tokens += tokens;
        summary.steps += 1;
        summary.last = Some(metrics.to_json());
        observer.step(&metrics)?;
    }
    summary.train_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn pair_batch(pairs: &[&PairTokens], device: &candle_core::Device) -> Result<Batch> {
    let mut chosen: Vec<Vec<u32>> = Vec::new();
    let mut rejected: Vec<Vec<u32>> = Vec::new();
    for p in pairs {
        chosen.push([p.prompt.as_slice(), &p.chosen].concat());
        rejected.push([p.prompt.as_slice(), &p.rejected].concat());
    }
    let seqs: Vec<(&[u32], usize)> =
        chosen.iter().chain(&rejected).zip(pairs.iter().chain(pairs)).map(|(s, p)| (s.as_slice(), p.prompt.len())).collect();
    Batch::new(&seqs, device)
}

/// Reference log-probabilities of every pair's chosen and rejected answer under the
/// model as it is now (before any step), in passes that build no graph.
pub fn reference_logprobs(
    model: &Model,
    pairs: &[PairTokens],
    dpo: &DpoConfig,
    micro_batch: usize,
    observer: &mut dyn Observer,
) -> Result<Vec<(f64, f64)>> {
    let mut out = Vec::with_capacity(pairs.len());
    let device = model.embed.value().device().clone();
    for chunk in pairs.chunks(micro_batch.max(1)) {
        let refs: Vec<&PairTokens> = chunk.iter().collect();
        let batch = pair_batch(&refs, &device)?;
        let mean = dpo.loss.uses_mean_logprobs();
        let lp = if fast::supports_reference(model) {
            let (tokens, _) = fast::forward(model, &batch, false)?;
            per_sequence(&batch, &tokens, mean).0
        } else {
            model.sequence_logprobs(&batch, false, mean)?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?
        };
        let m = chunk.len();
        out.extend((0..m).map(|i| (lp[i], lp[m + i])));
        observer.progress("reference", out.len(), pairs.len());
    }
    Ok(out)
}

/// DPO on `pairs`, the reference being the model as passed in.
pub fn train_dpo(model: &Model, pairs: &[PairTokens], dpo: &DpoConfig, cfg: &OptimConfig, observer: &mut dyn Observer) -> Result<Summary> {
    let t0 = Instant::now();
    let reference = reference_logprobs(model, pairs, dpo, cfg.micro_batch, observer)?;
    let reference_seconds = t0.elapsed().as_secs_f64();
    let mut summary = optimize(
        model,
        cfg,
        pairs.len(),
        observer,
        |chunk, step_items, acc| {
            if fast::supports(model) {
                dpo_micro_fast(model, pairs, &reference, dpo, chunk, step_items.len(), acc.fast(model))
            } else {
                let (loss, sums, tokens) = dpo_micro(model, pairs, &reference, dpo, chunk, step_items.len())?;
                acc.add(loss.backward()?)?;
                Ok((sums, tokens))
            }
        },
        DpoSums::add,
        DpoSums::means,
    )?;
    summary.reference_seconds = reference_seconds;
    Ok(summary)
}

/// The pairs `chunk` as one batch (chosen sequences, then rejected), and their tokens.
fn chunk_batch(pairs: &[PairTokens], chunk: &[usize], device: &candle_core::Device) -> Result<(Batch, usize)> {
    let refs: Vec<&PairTokens> = chunk.iter().map(|&i| &pairs[i]).collect();
    Ok((pair_batch(&refs, device)?, refs.iter().map(|p| p.tokens()).sum()))
}

/// The DPO loss of pairs `chunk` from the policy's log-probs `pc`, `pr` (chosen,
/// rejected), as its share of the mean over `step_len` pairs, and its measurement sums.
fn chunk_loss(
    dpo: &DpoConfig,
    reference: &[(f64, f64)],
    chunk: &[usize],
    pc: &Tensor,
    pr: &Tensor,
    step_len: usize,
) -> Result<(Tensor, DpoSums)> {
    let column = |f: fn(&(f64, f64)) -> f64| -> Result<Tensor> {
        let values: Vec<f64> = chunk.iter().map(|&i| f(&reference[i])).collect();
        Ok(Tensor::from_vec(values, chunk.len(), pc.device())?.to_dtype(pc.dtype())?)
    };
    let (rc, rr) = (column(|r| r.0)?, column(|r| r.1)?);
    let losses = dpo::loss(dpo, pc, pr, &rc, &rr)?;
    let sums = DpoSums::of(dpo, &losses, &pc.detach(), &pr.detach(), &rc, &rr)?;
    Ok(((losses.sum_all()? / step_len as f64)?, sums))
}

/// The loss of pairs `chunk` as its share of the mean over `step_len` pairs.
fn dpo_micro(
    model: &Model,
    pairs: &[PairTokens],
    reference: &[(f64, f64)],
    dpo: &DpoConfig,
    chunk: &[usize],
    step_len: usize,
) -> Result<(Tensor, DpoSums, usize)> {
    let (batch, tokens) = chunk_batch(pairs, chunk, model.embed.value().device())?;
    let lp = model.sequence_logprobs(&batch, true, dpo.loss.uses_mean_logprobs())?;
    let m = chunk.len();
    let (loss, sums) = chunk_loss(dpo, reference, chunk, &lp.narrow(0, 0, m)?, &lp.narrow(0, m, m)?, step_len)?;
    Ok((loss, sums, tokens))
}

/// Per-sequence sums (or means) of token values, and each sequence's token count.
fn per_sequence(batch: &Batch, tokens: &[f32], mean: bool) -> (Vec<f64>, Vec<usize>) {
    let mut sums = vec![0f64; batch.sequences];
    let mut counts = vec![0usize; batch.sequences];
    for (&s, &v) in batch.owner.iter().zip(tokens) {
        sums[s] += v as f64;
        counts[s] += 1;
    }
    if mean {
        for (x, &n) in sums.iter_mut().zip(&counts) {
            *x /= n.max(1) as f64;
        }
    }
    (sums, counts)
}

/// [`dpo_micro`] on the hand-derived passes: the loss's gradient with respect to each
/// sequence's log-probability comes from candle's autograd over the (tiny) loss
/// expression, and flows into the model through [`fast::backward`].
fn dpo_micro_fast(
    model: &Model,
    pairs: &[PairTokens],
    reference: &[(f64, f64)],
    dpo: &DpoConfig,
    chunk: &[usize],
    step_len: usize,
    grads: &mut fast::Grads,
) -> Result<(DpoSums, usize)> {
    let device = candle_core::Device::Cpu;
    let (batch, tokens) = chunk_batch(pairs, chunk, &device)?;
    let mean = dpo.loss.uses_mean_logprobs();
    let (token_lp, cache) = fast::forward(model, &batch, true)?;
    let (seq, counts) = per_sequence(&batch, &token_lp, mean);
    let m = chunk.len();
    let pc = Var::from_vec(seq[..m].to_vec(), m, &device)?;
    let pr = Var::from_vec(seq[m..].to_vec(), m, &device)?;
    let (loss, sums) = chunk_loss(dpo, reference, chunk, pc.as_tensor(), pr.as_tensor(), step_len)?;
    let g = loss.backward()?;
    let grad_of = |v: &Var| -> Result<Vec<f64>> {
        Ok(match g.get(v.as_tensor()) {
            Some(t) => t.to_vec1::<f64>()?,
            None => vec![0.0; m],
        })
    };
    let dseq: Vec<f64> = grad_of(&pc)?.into_iter().chain(grad_of(&pr)?).collect();
    let dlogp: Vec<f32> = batch.owner.iter().map(|&s| (dseq[s] / if mean { counts[s].max(1) as f64 } else { 1.0 }) as f32).collect();
    fast::backward(model, &batch, cache.expect("kept"), &dlogp, grads)?;
    Ok((sums, tokens))
}

#[derive(Default)]
struct SftSums {
    nll: f64,
    answer_tokens: usize,
}

/// SFT: next-token cross-entropy on answer tokens, averaged over the step's answer tokens.
pub fn train_sft(model: &Model, examples: &[SftExample], cfg: &OptimConfig, observer: &mut dyn Observer) -> Result<Summary> {
    let device = model.embed.value().device().clone();
    optimize(
        model,
        cfg,
        examples.len(),
        observer,
        |chunk, step_items, acc| {
            let seqs: Vec<Vec<u32>> = chunk.iter().map(|&i| [examples[i].prompt.as_slice(), &examples[i].answer].concat()).collect();
            let firsts: Vec<usize> = chunk.iter().map(|&i| examples[i].prompt.len()).collect();
            let pairs: Vec<(&[u32], usize)> = seqs.iter().map(Vec::as_slice).zip(firsts).collect();
            let batch = Batch::new(&pairs, &device)?;
            let step_tokens = step_items.iter().map(|&i| examples[i].answer.len()).sum::<usize>() as f64;
            let tokens = seqs.iter().map(Vec::len).sum();
            let sums = |nll: f64| SftSums { nll, answer_tokens: batch.scored_tokens() };
            if fast::supports(model) {
                let (lp, cache) = fast::forward(model, &batch, true)?;
                let nll = -lp.iter().map(|&x| x as f64).sum::<f64>();
                let dlogp = vec![(-1.0 / step_tokens) as f32; lp.len()];
                fast::backward(model, &batch, cache.expect("kept"), &dlogp, acc.fast(model))?;
                Ok((sums(nll), tokens))
            } else {
                let nll = model.token_logprobs(&batch, true)?.sum_all()?.neg()?;
                let value = nll.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
                acc.add((nll / step_tokens)?.backward()?)?;
                Ok((sums(value), tokens))
            }
        },
        |a, b| {
            a.nll += b.nll;
            a.answer_tokens += b.answer_tokens;
        },
        |s| vec![("loss", s.nll / s.answer_tokens.max(1) as f64)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::tiny_weights;
    use crate::train::model::Trainable;
    use candle_core::DType;

    fn pairs() -> Vec<PairTokens> {
        // The chosen answers continue with even tokens, the rejected with odd ones.
        (0..6u32)
            .map(|i| PairTokens {
                id: None,
                prompt: vec![1, 2 + i, 3],
                chosen: vec![10 + 2 * (i % 3), 20, 2],
                rejected: vec![11 + 2 * (i % 3), 21, 2],
            })
            .collect()
    }

    struct Record(Vec<StepMetrics>);
    impl Observer for Record {
        fn step(&mut self, m: &StepMetrics) -> Result<()> {
            self.0.push(m.clone());
            Ok(())
        }
    }

    #[test]
    fn dpo_drives_the_loss_down_and_the_margin_and_accuracy_up() -> Result<()> {
        let model = Model::new(&tiny_weights(9, true)?, &Trainable::default(), DType::F32, 1)?;
        let pairs = pairs();
        let cfg = OptimConfig {
            lr: 1e-2,
            final_lr: 1e-2,
            epochs: 8,
            batch_size: 6,
            micro_batch: 2,
            warmup_ratio: 0.0,
            ..OptimConfig::dpo_default()
        };
        let mut rec = Record(Vec::new());
        let summary = train_dpo(&model, &pairs, &DpoConfig::default(), &cfg, &mut rec)?;
        assert_eq!(summary.steps, 8);
        let first = &rec.0[0];
        let last = rec.0.last().unwrap();
        // At step 0 the policy is the reference: Δ = 0 and the loss is log 2.
        assert!((first.get("loss").unwrap() - 2f64.ln()).abs() < 1e-4, "{:?}", first.values);
        assert!(last.get("loss").unwrap() < 0.5 * first.get("loss").unwrap(), "{:?}", last.values);
        assert!(last.get("rewards/margins").unwrap() > 1.0, "{:?}", last.values);
        assert_eq!(last.get("rewards/accuracies").unwrap(), 1.0);
        Ok(())
    }

    #[test]
    fn training_is_reproducible_with_a_seed() -> Result<()> {
        let run = || -> Result<Vec<f32>> {
            let model = Model::new(&tiny_weights(9, true)?, &Trainable::default(), DType::F32, 1)?;
            let cfg = OptimConfig { lr: 1e-3, epochs: 2, batch_size: 4, micro_batch: 2, ..OptimConfig::dpo_default() };
            train_dpo(&model, &pairs(), &DpoConfig::default(), &cfg, &mut ())?;
            Ok(model.export()?.layers[1].down.flatten_all()?.to_vec1::<f32>()?)
        };
        assert_eq!(run()?, run()?);
        Ok(())
    }

    #[test]
    fn micro_batches_add_up_to_the_full_batch_gradient() -> Result<()> {
        let model = Model::new(&tiny_weights(4, false)?, &Trainable::default(), DType::F32, 1)?;
        let pairs = pairs();
        let dpo = DpoConfig::default();
        // A reference that differs from the policy, so that Δ ≠ 0.
        let reference: Vec<(f64, f64)> = (0..pairs.len()).map(|i| (-20.0 + i as f64, -18.0)).collect();
        let all: Vec<usize> = (0..pairs.len()).collect();
        let vars: Vec<_> = model.vars().into_iter().map(|(_, v)| v).collect();
        let grads_of = |chunks: &[&[usize]]| -> Result<Vec<Vec<f32>>> {
            let mut acc = Accumulator::new(vars.clone());
            for c in chunks {
                acc.add(dpo_micro(&model, &pairs, &reference, &dpo, c, pairs.len())?.0.backward()?)?;
            }
            let (g, _) = acc.take_clipped(None)?.unwrap();
            vars.iter().map(|v| Ok(g.get(v.as_tensor()).unwrap().flatten_all()?.to_vec1::<f32>()?)).collect()
        };
        // The hand-derived pass, adding into one set of buffers in place.
        let fast_grads_of = |chunks: &[&[usize]]| -> Result<Vec<Vec<f32>>> {
            let mut acc = Accumulator::new(vars.clone());
            for c in chunks {
                dpo_micro_fast(&model, &pairs, &reference, &dpo, c, pairs.len(), acc.fast(&model))?;
            }
            acc.settle(&model)?;
            let (g, _) = acc.take_clipped(None)?.unwrap();
            vars.iter().map(|v| Ok(g.get(v.as_tensor()).unwrap().flatten_all()?.to_vec1::<f32>()?)).collect()
        };
        let whole = grads_of(&[&all])?;
        for other in
            [grads_of(&[&all[..2], &all[2..4], &all[4..]])?, fast_grads_of(&[&all])?, fast_grads_of(&[&all[..2], &all[2..4], &all[4..]])?]
        {
            for (a, b) in whole.iter().zip(&other) {
                let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() <= 1e-4 * scale, "{x} vs {y}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn sft_lowers_the_answer_loss() -> Result<()> {
        let model = Model::new(
            &tiny_weights(2, true)?,
            &Trainable { lora: Some(crate::train::model::LoraConfig { rank: 4, alpha: 8.0 }), ..Default::default() },
            DType::F32,
            1,
        )?;
        let examples: Vec<SftExample> = (0..4u32).map(|i| SftExample { prompt: vec![1, 5 + i], answer: vec![30, 31, 32, 2] }).collect();
        let cfg = OptimConfig {
            lr: 2e-2,
            final_lr: 2e-2,
            epochs: 10,
            batch_size: 4,
            micro_batch: 2,
            warmup_ratio: 0.0,
            ..OptimConfig::sft_default()
        };
        let mut rec = Record(Vec::new());
        train_sft(&model, &examples, &cfg, &mut rec)?;
        let (first, last) = (rec.0[0].get("loss").unwrap(), rec.0.last().unwrap().get("loss").unwrap());
        assert!(last < 0.5 * first, "loss {first} → {last}");
        Ok(())
    }
}
