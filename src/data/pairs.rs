//! `srlm data export-pairs`: preference pairs in TRL's conversational format, for
//! training on another machine (TRL's DPOTrainer, or anything that reads it).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::store::evaluations::PairText;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct ExportPairsConfig {
    /// Postgres URL.
    pub database_url: String,
    /// Only pairs made by this checkpoint.
    pub checkpoint: Option<i64>,
    /// Only pairs made by checkpoints of this iteration (M0 = 0).
    pub iteration: Option<i32>,
    /// Only pairs of this status: available, claimed or consumed.
    pub status: Option<String>,
    /// Where to write the JSONL (default: standard output).
    pub out: Option<PathBuf>,
}

/// One line: `prompt` (the stored conversation), `chosen` and `rejected` (one
/// assistant message each), the judge's scores, what decided the pair, and the ids back
/// into srlm.
pub fn trl_line(p: &PairText) -> serde_json::Value {
    let answer = |text: &str| serde_json::json!([{"role": "assistant", "content": text}]);
    serde_json::json!({
        "prompt": p.messages,
        "chosen": answer(&p.chosen),
        "rejected": answer(&p.rejected),
        "score_chosen": p.chosen_score,
        "score_rejected": p.rejected_score,
        "pair_id": p.id,
        "prompt_id": p.prompt_id,
        "checkpoint_id": p.checkpoint_id,
        "decided_by": p.decided_by,
    })
}

pub async fn run(args: ExportPairsConfig) -> Result<()> {
    let store = Store::connect_migrated(&args.database_url).await?;
    let pairs = store.pair_texts(args.checkpoint, args.iteration, args.status.as_deref()).await?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => {
            Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?))
        }
        None => Box::new(std::io::stdout().lock()),
    };
    for p in &pairs {
        serde_json::to_writer(&mut out, &trl_line(p))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!("{} pairs exported", pairs.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_trl_conversational_preference_rows() {
        let p = PairText {
            id: 7,
            prompt_id: 3,
            checkpoint_id: 1,
            messages: serde_json::json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]),
            chosen: "Hello!".into(),
            rejected: "Go away.".into(),
            chosen_score: 4.5,
            rejected_score: 1.0,
            decided_by: Some(serde_json::json!({"reward": "verify", "by": "verifier"})),
        };
        let line = trl_line(&p);
        assert_eq!(line["prompt"][1]["content"], "Hi?");
        assert_eq!(line["chosen"], serde_json::json!([{"role": "assistant", "content": "Hello!"}]));
        assert_eq!(line["rejected"][0]["content"], "Go away.");
        assert_eq!((line["score_chosen"].as_f64(), line["pair_id"].as_i64()), (Some(4.5), Some(7)));
        assert_eq!(line["decided_by"]["by"], "verifier");
    }
}
