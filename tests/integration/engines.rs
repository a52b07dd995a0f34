//! Engine correctness: the native engine gives every sequence the same tokens and
//! log-probs whether it runs alone or batched with others (of other lengths, joining
//! mid-way), and agrees with mistralrs on the same weights.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use srlm::engine::{self, ChatMessage, Completion, Generation, Prompt, SamplingConfig, SharedEngine};

use crate::common::{engine, rt};

const PROMPTS: [&str; 6] = [
    "Give one tip for learning to cook.",
    "Explain what a hash map is, with an example in two sentences.",
    "Why is the sea salty?",
    "Hi",
    "List three fruits that are red, and say which one you like best and why.",
    "What is 7 times 8?",
];

fn greedy(prompt: &str, max_tokens: usize) -> Generation {
    Generation {
        prompt: Prompt::Chat(vec![ChatMessage { role: "user".into(), content: prompt.into() }]),
        sampling: SamplingConfig { logprobs: Some(2), ..SamplingConfig::greedy() },
        max_tokens,
        stop: vec![],
    }
}

async fn run(engine: &SharedEngine, generation: Generation) -> Completion {
    engine::complete(engine.as_ref(), generation).await.expect("generation")
}

fn same(a: &Completion, b: &Completion) -> bool {
    a.text == b.text
        && a.logprobs.len() == b.logprobs.len()
        && a.logprobs.iter().zip(&b.logprobs).all(|(x, y)| x.token == y.token && x.logprob.to_bits() == y.logprob.to_bits())
}

#[test]
fn native_batched_sequences_equal_their_solo_runs_bit_for_bit() {
    rt().block_on(async {
        let native = engine("native");
        let mut alone = Vec::new();
        for p in PROMPTS {
            alone.push(run(&native, greedy(p, 20)).await);
        }
        let together = futures::future::join_all(PROMPTS.iter().map(|p| run(&native, greedy(p, 20)))).await;
        for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
            assert!(same(a, t), "prompt {i}: alone {:?} vs batched {:?}", a.text, t.text);
        }
    });
}

#[test]
fn native_random_mixes_joining_mid_way_match_solo_runs() {
    rt().block_on(async {
        let native = engine("native");
        let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
        for round in 0..3 {
            let picks: Vec<(usize, usize, u64)> = (0..rng.random_range(3..=6))
                .map(|_| (rng.random_range(0..PROMPTS.len()), rng.random_range(4..=24), rng.random_range(0..40)))
                .collect();
            let mut solo = Vec::new();
            for &(p, max_tokens, _) in &picks {
                solo.push(run(&native, greedy(PROMPTS[p], max_tokens)).await);
            }
            let mixed = futures::future::join_all(picks.iter().map(|&(p, max_tokens, delay_ms)| {
                let native = native.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(delay_ms * 10)).await;
                    run(&native, greedy(PROMPTS[p], max_tokens)).await
                }
            }))
            .await;
            for (i, (a, m)) in solo.iter().zip(&mixed).enumerate() {
                assert!(same(a, m), "round {round}, request {i} {:?}: solo {:?} vs mixed {:?}", picks[i], a.text, m.text);
            }
        }
    });
}

#[test]
fn native_and_mistralrs_agree_on_the_same_weights() {
    rt().block_on(async {
        // The same weights: the file's Q4_1 blocks re-encoded as Q8_0 in both (srlm
        // `--weights q8_0`, mistralrs's CPU default). mistralrs keeps activations in F16
        // on CPU, srlm quantizes them to 8 bits. Measured: mean |Δ| 0.03, max 0.16 nats.
        // (srlm on the Q4_1 blocks themselves against mistralrs's Q8_0: mean 0.043, max 0.26.)
        let native = engine("native-q8");
        let mistral = engine("mistralrs");
        let mut diffs = Vec::new();
        for p in PROMPTS {
            let a = run(&native, greedy(p, 16)).await;
            let b = run(&mistral, greedy(p, 16)).await;
            // Greedy paths may part at a near-tie; compare the shared prefix.
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                if x.token != y.token {
                    break;
                }
                diffs.push((x.logprob - y.logprob).abs());
            }
        }
        assert!(diffs.len() >= 40, "only {} tokens in common between the engines", diffs.len());
        let max = diffs.iter().copied().fold(0f32, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        assert!(max < 0.25 && mean < 0.06, "log-prob differences: max {max}, mean {mean}");
    });
}

#[test]
fn scoring_a_fixed_continuation_agrees_between_engines() {
    rt().block_on(async {
        let prompt = Prompt::Chat(vec![ChatMessage { role: "user".into(), content: "Why is the sea salty?".into() }]);
        let continuation = "The sea is salty because rivers carry dissolved minerals into it, and evaporation leaves the salt behind.";
        let native = engine("native").score(prompt.clone(), continuation).await.expect("native score");
        let mistral = engine("mistralrs").score(prompt, continuation).await.expect("mistralrs score");
        assert!(native.len() >= 15, "{} tokens", native.len());
        assert_eq!(native.iter().map(|t| t.token).collect::<Vec<_>>(), mistral.iter().map(|t| t.token).collect::<Vec<_>>());
        assert_eq!(native.iter().map(|t| t.text.as_str()).collect::<String>(), continuation);
        let diffs: Vec<f32> = native.iter().zip(&mistral).map(|(a, b)| (a.logprob - b.logprob).abs()).collect();
        let max = diffs.iter().copied().fold(0f32, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        // Measured: max 0.22, mean 0.068 nats (same Q8_0 weights; mistralrs computes CPU
        // activations in F16, srlm in f32).
        assert!(max < 0.3 && mean < 0.1, "teacher-forced log-prob differences: max {max}, mean {mean}");
        assert!(native.iter().all(|t| t.logprob <= 0.0));
    });
}

/// Teacher-forced log-probs of `kind` and of the f32 reference on one fixed answer: the
/// largest and the mean difference (the tokens must agree).
async fn against_f32_reference(kind: &str) -> (f32, f32) {
    let prompt = Prompt::Chat(vec![ChatMessage { role: "user".into(), content: "How do I keep basil alive?".into() }]);
    let continuation = "Give it plenty of sunlight, water it when the top of the soil is dry, and pinch off the flowers.";
    let native = engine(kind).score(prompt.clone(), continuation).await.expect("native score");
    let reference = engine("mistralrs-f32").score(prompt, continuation).await.expect("f32 reference score");
    assert_eq!(native.iter().map(|t| t.token).collect::<Vec<_>>(), reference.iter().map(|t| t.token).collect::<Vec<_>>());
    let diffs: Vec<f32> = native.iter().zip(&reference).map(|(a, b)| (a.logprob - b.logprob).abs()).collect();
    let (max, mean) = (diffs.iter().copied().fold(0f32, f32::max), diffs.iter().sum::<f32>() / diffs.len() as f32);
    eprintln!("{kind} vs f32: {} tokens, max {max:.3}, mean {mean:.3} nats", diffs.len());
    (max, mean)
}

#[test]
fn native_log_probs_stay_close_to_an_f32_reference() {
    rt().block_on(async {
        // The native engine multiplies the file's Q4_1 blocks with 8-bit activations; the
        // reference keeps f32 weights decoded from the same blocks (mistralrs still
        // computes CPU activations in F16). Measured: max 0.20, mean 0.053 nats over 23
        // tokens. A broken kernel is off by whole nats.
        let (max, mean) = against_f32_reference("native").await;
        assert!(max < 0.8 && mean < 0.15, "native (Q4_1 weights, Q8 activations) vs f32: max {max}, mean {mean}");
        // The same with every matrix re-encoded as Q8_0 (`--weights q8_0`), a second
        // rounding of the weights: max 0.54, mean 0.100 nats.
        let (max, mean) = against_f32_reference("native-q8").await;
        assert!(max < 0.8 && mean < 0.15, "native (Q8_0 weights and activations) vs f32: max {max}, mean {mean}");
    });
}
