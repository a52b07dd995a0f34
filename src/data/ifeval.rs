//! `srlm data make-ifeval`: requests with checkable instructions as JSONL.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::verify::prompts::{generate, Split};

#[derive(Debug, Clone)]
pub struct MakeIfevalConfig {
    /// `eval` (the held-out yardstick) or `train` (for self-instruction).
    pub split: Split,
    /// Prompts to write.
    pub count: usize,
    pub seed: u64,
    /// JSONL file to write.
    pub out: PathBuf,
}

pub fn run(args: MakeIfevalConfig) -> Result<()> {
    let prompts = generate(args.split, args.count, args.seed);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?);
    for p in &prompts {
        serde_json::to_writer(&mut out, p)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!("{} prompts written to {}", prompts.len(), args.out.display());
    Ok(())
}

#[derive(Debug, Clone)]
pub struct MakeJudgePairsConfig {
    /// The model whose answers are paired: a server URL, a checkpoint id or a model file.
    pub model: String,
    /// Model name sent to a server.
    pub model_name: String,
    /// Requests with checkable instructions.
    pub prompts: PathBuf,
    /// Use only the first N prompts.
    pub limit: Option<usize>,
    /// Answers sampled per prompt (temperature 0.7, top-p 0.9).
    pub n: usize,
    pub max_tokens: usize,
    /// Prompts in flight at once.
    pub concurrency: usize,
    /// Postgres URL, to look a checkpoint id up.
    pub database_url: Option<String>,
    /// Ranked JSONL to write: `{"prompt", "answers": [passing, failing], …}`.
    pub out: PathBuf,
}

/// A verifiable judge pair: the first sampled answer that followed every instruction
/// and the first that broke one, or `None` when the samples did not split.
pub fn pair_of(instructions: &[crate::verify::Instruction], answers: &[String]) -> Option<(usize, usize)> {
    let passed: Vec<bool> = answers.iter().map(|a| crate::verify::Outcome::of(instructions, a).passed()).collect();
    Some((passed.iter().position(|&p| p)?, passed.iter().position(|&p| !p)?))
}

/// `srlm data make-judge-pairs`: answers sampled from a model, checked, and paired.
pub async fn make_judge_pairs(args: MakeJudgePairsConfig) -> Result<()> {
    use crate::eval::source::{Decoding, Source};
    let store = match &args.database_url {
        Some(url) => Some(crate::store::Store::connect_migrated(url).await?),
        None => None,
    };
    let source = Source::open(&args.model, &args.model_name, None, store.as_ref()).await?;
    let mut prompts = crate::verify::prompts::read(&args.prompts)?;
    if let Some(n) = args.limit {
        prompts.truncate(n);
    }
    let texts: Vec<String> = prompts.iter().map(|p| p.prompt.clone()).collect();
    let (source, n, max_tokens) = (&source, args.n, args.max_tokens);
    let answers = crate::eval::over_prompts(&texts, args.concurrency, "answers", |i, text| async move {
        let decoding = |k: usize| Decoding { max_tokens, temperature: 0.7, top_p: 0.9, seed: (i * 1000 + k) as u64 };
        let all = futures::future::try_join_all((0..n).map(|k| source.answer(text, decoding(k)))).await?;
        Ok(all.into_iter().map(|a| a.text).collect::<Vec<_>>())
    })
    .await?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?);
    let mut written = 0;
    for (p, answers) in prompts.iter().zip(&answers) {
        if let Some((good, bad)) = pair_of(&p.instructions, answers) {
            let line = serde_json::json!({"prompt": p.prompt, "answers": [answers[good], answers[bad]], "id": p.id,
                "instructions": p.instructions, "source": source.label()});
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    out.flush()?;
    eprintln!("{written} verifiable pairs from {} prompts written to {}", prompts.len(), args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Instruction;

    #[test]
    fn a_pair_needs_one_passing_and_one_failing_answer() {
        let ins = [Instruction::NoCommas];
        let answers = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(pair_of(&ins, &answers(&["a, b", "a b", "c, d", "e f"])), Some((1, 0)));
        assert_eq!(pair_of(&ins, &answers(&["a b", "c d"])), None);
        assert_eq!(pair_of(&ins, &answers(&["a, b"])), None);
    }
}
