//! Correctness under concurrency: every answer must equal the same prompt run alone.
//! (mistralrs 0.8.1 on CPU corrupts sequences it batches; see KNOWN-ISSUES.md #1.)

use std::time::Duration;

use serde_json::json;
use srlm::engine::{Generation, Prompt, SamplingConfig};

use crate::common::{content, greedy_chat, rt, server};

const PROMPTS: [&str; 4] =
    ["Give one tip for learning to cook.", "Explain what a hash map is.", "How do I keep basil alive?", "Why is the sea salty?"];

#[test]
fn concurrent_different_prompts_and_n_choices_match_their_solo_answers() {
    rt().block_on(async {
        let s = server();
        let mut alone = Vec::new();
        for p in PROMPTS {
            let (status, body) = s.post("/v1/chat/completions", &greedy_chat(p, 24)).await;
            assert_eq!(status, 200, "{body}");
            alone.push(content(&body, 0));
        }
        assert!(alone.iter().collect::<std::collections::HashSet<_>>().len() == 4, "{alone:?}");

        let requests: Vec<_> = PROMPTS.iter().map(|p| greedy_chat(p, 24)).collect();
        let singles = requests.iter().map(|r| s.post("/v1/chat/completions", r));
        let mut with_n = greedy_chat(PROMPTS[1], 24);
        with_n["n"] = json!(4);
        let mut streamed = greedy_chat(PROMPTS[2], 24);
        streamed["stream"] = json!(true);
        let (singles, (status, n_body), events) = tokio::join!(
            futures::future::join_all(singles),
            s.post("/v1/chat/completions", &with_n),
            s.stream("/v1/chat/completions", &streamed),
        );
        for (i, (status, body)) in singles.iter().enumerate() {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(content(body, 0), alone[i], "prompt {i} answered as when alone");
        }
        assert_eq!(status, 200, "{n_body}");
        for c in 0..4 {
            assert_eq!(content(&n_body, c), alone[1], "greedy choice {c} of n=4 equals the solo answer");
        }
        let text: String = events[..events.len() - 1]
            .iter()
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
            .collect();
        assert_eq!(text, alone[2], "the streamed answer equals the solo answer");
    });
}

#[test]
fn a_dropped_stream_is_cancelled_and_frees_the_engine() {
    rt().block_on(async {
        let engine = server().state.current().engine.clone();
        let long = Generation {
            prompt: Prompt::Chat(vec![srlm::engine::ChatMessage { role: "user".into(), content: "Tell me a long story.".into() }]),
            sampling: SamplingConfig::greedy(),
            max_tokens: 4000,
            stop: vec![],
        };
        let mut events = engine.generate(long).await.expect("generate");
        let first = events.recv().await.expect("a first event").expect("no error");
        assert!(matches!(first, srlm::engine::Event::Delta { .. }));
        drop(events);
        // If the cancelled sequence kept its slot, this would wait for up to 4000 tokens (minutes).
        let next = Generation { prompt: Prompt::Text("Hello".into()), sampling: SamplingConfig::greedy(), max_tokens: 4, stop: vec![] };
        let done = tokio::time::timeout(Duration::from_secs(90), srlm::engine::complete(engine.as_ref(), next))
            .await
            .expect("the engine is free again after a cancel")
            .expect("generation");
        assert!(done.finish.unwrap().completion_tokens <= 4);
    });
}
