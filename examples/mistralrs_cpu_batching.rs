//! Reproduces the mistralrs 0.8.1 CPU batching defect (../shared/KNOWN-ISSUES.md #1):
//! four different prompts decoded together come back with each other's text.
//!
//! For each prompt it prints the greedy answer when the prompt runs alone and when the
//! four run at once, and whether they match. Once a mistralrs release prints four
//! MATCHes here, srlm's one-sequence-at-a-time workaround for mistralrs on CPU
//! (src/engine/mistral.rs) can go.
//!
//!     cargo run --release --example mistralrs_cpu_batching [-- MODEL.gguf]

use std::path::PathBuf;

use mistralrs::{GgufModelBuilder, RequestBuilder, TextMessageRole, TokenSource};

const PROMPTS: [&str; 4] =
    ["Give one tip for learning to cook.", "Explain what a hash map is.", "How do I keep basil alive?", "Why is the sea salty?"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| srlm::cli::DEFAULT_MODEL.to_string()));
    let dir = path.parent().map_or(".".into(), |p| p.display().to_string());
    let file = path.file_name().expect("a model file").to_string_lossy().to_string();
    let model =
        GgufModelBuilder::new(dir, vec![file]).with_token_source(TokenSource::None).with_force_cpu().with_max_num_seqs(4).build().await?;
    // `RequestBuilder::new()` decodes greedily, so every difference is the batching.
    let ask = |p: &str| RequestBuilder::new().add_message(TextMessageRole::User, p).set_sampler_max_len(48);
    let answer = |r: mistralrs::ChatCompletionResponse| r.choices[0].message.content.clone().unwrap_or_default();

    let mut alone = Vec::new();
    for p in PROMPTS {
        alone.push(answer(model.send_chat_request(ask(p)).await?));
    }
    let together = futures::future::join_all(PROMPTS.iter().map(|p| model.send_chat_request(ask(p)))).await;
    let mut mismatches = 0;
    for ((prompt, solo), batched) in PROMPTS.iter().zip(&alone).zip(together) {
        let batched = answer(batched?);
        let verdict = if *solo == batched { "MATCH" } else { "DIFFERS" };
        mismatches += usize::from(*solo != batched);
        println!("== {prompt} [{verdict}]\n-- alone:   {}\n-- batched: {}\n", first_line(solo), first_line(&batched));
    }
    println!("{mismatches} of {} answers changed when batched", PROMPTS.len());
    Ok(())
}

fn first_line(text: &str) -> String {
    text.chars().take(160).collect::<String>().replace('\n', " ")
}
