//! `srlm eval reviews`: judge–human agreement per checkpoint — of the pairs a
//! checkpoint's judge made that people reviewed (`POST /pairs/{id}/review`), the share
//! whose latest review says `agree`, with a 95 % Wilson interval; stored in `evaluations`.

use anyhow::Result;

use super::stats::Proportion;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct EvalReviewsConfig {
    /// Postgres URL.
    pub database_url: String,
    /// Store each checkpoint's agreement in `evaluations` (kind `review`).
    pub store: bool,
}

pub async fn run(args: EvalReviewsConfig) -> Result<()> {
    let store = Store::connect_migrated(&args.database_url).await?;
    let rows = store.review_agreement().await?;
    eprintln!("{:>10} {:>8} {:>6} {:>8} {:>6}  agreement [95% CI]", "checkpoint", "reviewed", "agree", "disagree", "swap");
    for a in &rows {
        let p = Proportion::new(a.agree as usize, a.reviewed as usize);
        eprintln!("{:>10} {:>8} {:>6} {:>8} {:>6}  {}", a.checkpoint_id, a.reviewed, a.agree, a.disagree, a.swap, p.show());
        if args.store {
            let evaluation = crate::store::evaluations::NewEvaluation {
                kind: "review",
                checkpoint_id: Some(a.checkpoint_id),
                opponent_checkpoint_id: None,
                subject: format!("checkpoint {}", a.checkpoint_id),
                opponent: None,
                method: "human".into(),
                dataset: "pair_reviews".into(),
                items: a.reviewed as i32,
                metrics: serde_json::json!({"agreement": p.value, "agreement_low": p.low, "agreement_high": p.high,
                    "agree": a.agree, "disagree": a.disagree, "swap": a.swap}),
                config: serde_json::json!({}),
            };
            store.record_evaluation(&evaluation).await?;
        }
    }
    if rows.is_empty() {
        eprintln!("no reviewed pairs yet (POST /pairs/{{id}}/review)");
    }
    println!("{}", serde_json::to_string(&rows)?);
    Ok(())
}
