//! Self-instruction against the real model: new prompts are stored with their source and
//! iteration, and every attempt is either accepted or counted under a rejection reason.

use srlm::selfinstruct::{create, SelfInstructConfig};

use crate::common::{database_url, rt, server};

#[test]
fn self_instruct_stores_new_prompts_and_accounts_for_every_attempt() {
    rt().block_on(async {
        let s = server();
        // The shared test database keeps what earlier runs (and the other engine's pass)
        // stored; this test's own prompts (iteration 7) would make the same seeds' output
        // a duplicate, so they go first.
        sqlx::query("DELETE FROM prompts WHERE source = 'self_instruct' AND iteration = 7").execute(s.state.store.pool()).await.unwrap();
        let dir = std::env::temp_dir().join(format!("srlm-selfinstruct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let seeds = dir.join("seeds.jsonl");
        let prompts = [
            "Explain why the sky is blue.",
            "Write a haiku about autumn leaves.",
            "Give me three tips for learning a new language.",
            "What is the difference between a virus and a bacterium?",
            "Summarize the plot of Romeo and Juliet in two sentences.",
            "How do I make a simple tomato sauce?",
            "Suggest a name for a small bakery.",
            "Convert 5 kilometres to miles and show the calculation.",
        ];
        let lines: Vec<String> = prompts.iter().map(|p| serde_json::json!({ "prompt": p }).to_string()).collect();
        std::fs::write(&seeds, lines.join("\n")).unwrap();
        let args = SelfInstructConfig { max_attempts: Some(6), seed: 3, ..SelfInstructConfig::new(&s.base, &database_url(), seeds, 2, 7) };
        let report = create(&args).await.expect("self-instruction runs");
        eprintln!("self-instruct: {report:?}");
        assert!(report.attempts <= 6 && report.attempts >= report.accepted);
        assert_eq!(report.accepted + report.rejected.values().sum::<usize>(), report.attempts);
        assert_eq!(report.prompt_ids.len(), report.accepted);
        assert!(report.accepted >= 1, "the model wrote no acceptable prompt in 6 attempts: {report:?}");
        for id in &report.prompt_ids {
            let p = s.state.store.prompt(*id).await.unwrap().expect("stored");
            assert_eq!((p.source.as_str(), p.iteration), ("self_instruct", 7));
            let text = p.messages[0]["content"].as_str().unwrap();
            assert!(!prompts.contains(&text), "a seed came back as a new prompt");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
