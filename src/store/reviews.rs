//! People's verdicts on preference pairs: `agree`, `disagree` (the pair leaves training)
//! or `swap` (chosen and rejected exchanged), and the judge–human agreement they add up to.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::records::PairRow;
use super::Store;

/// What a reviewer says of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewVerdict {
    /// The judge's order is right.
    Agree,
    /// The pair is wrong: take it out of training.
    Disagree,
    /// The rejected answer is the better one: exchange them.
    Swap,
}

impl ReviewVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agree => "agree",
            Self::Disagree => "disagree",
            Self::Swap => "swap",
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewRow {
    pub id: i64,
    pub pair_id: i64,
    /// `agree`, `disagree` or `swap`.
    pub verdict: String,
    pub note: Option<String>,
    /// The API key's label, or `anonymous`.
    pub reviewer: String,
    /// Whether the verdict changed the pair (only an `available` pair changes).
    pub applied: bool,
    /// The pair's chosen candidate when it was reviewed (the judge's order, or an
    /// earlier reviewer's).
    pub chosen_id: i64,
    pub rejected_id: i64,
    pub created_at: DateTime<Utc>,
}

/// Judge–human agreement of one checkpoint's pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    pub checkpoint_id: i64,
    /// Pairs with at least one review (the latest one counts).
    pub reviewed: i64,
    pub agree: i64,
    pub disagree: i64,
    pub swap: i64,
}

impl Store {
    /// Records a review and applies it to an `available` pair, in one transaction;
    /// `None` when the pair does not exist.
    pub async fn review_pair(
        &self,
        pair_id: i64,
        verdict: ReviewVerdict,
        note: Option<&str>,
        reviewer: &str,
    ) -> Result<Option<(ReviewRow, PairRow)>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let Some(pair) = sqlx::query!("SELECT status, chosen_id, rejected_id FROM pairs WHERE id = $1 FOR UPDATE", pair_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let applied = pair.status == "available" && verdict != ReviewVerdict::Agree;
        if applied {
            match verdict {
                ReviewVerdict::Disagree => {
                    sqlx::query!("UPDATE pairs SET status = 'excluded' WHERE id = $1", pair_id).execute(&mut *tx).await?;
                }
                ReviewVerdict::Swap => {
                    sqlx::query!(
                        "UPDATE pairs SET chosen_id = rejected_id, rejected_id = chosen_id,
                                          chosen_score = rejected_score, rejected_score = chosen_score
                         WHERE id = $1",
                        pair_id
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                ReviewVerdict::Agree => {}
            }
        }
        let note = note.map(super::text::storable);
        let review = sqlx::query_as!(
            ReviewRow,
            r#"INSERT INTO pair_reviews (pair_id, verdict, note, reviewer, applied, chosen_id, rejected_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               RETURNING id, pair_id, verdict, note, reviewer, applied, chosen_id, rejected_id, created_at"#,
            pair_id,
            verdict.as_str(),
            note.as_deref(),
            reviewer,
            applied,
            pair.chosen_id,
            pair.rejected_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let pair = pair_row(&mut *tx, pair_id).await?.ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(Some((review, pair)))
    }

    pub async fn pair(&self, id: i64) -> Result<Option<PairRow>, sqlx::Error> {
        pair_row(&self.pool, id).await
    }

    /// A pair's reviews, oldest first.
    pub async fn reviews_of_pair(&self, pair_id: i64) -> Result<Vec<ReviewRow>, sqlx::Error> {
        sqlx::query_as!(
            ReviewRow,
            r#"SELECT id, pair_id, verdict, note, reviewer, applied, chosen_id, rejected_id, created_at
               FROM pair_reviews WHERE pair_id = $1 ORDER BY id"#,
            pair_id
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Per checkpoint that made reviewed pairs: how the latest review of each pair went.
    pub async fn review_agreement(&self) -> Result<Vec<Agreement>, sqlx::Error> {
        sqlx::query_as!(
            Agreement,
            r#"SELECT p.checkpoint_id, count(*) AS "reviewed!",
                      count(*) FILTER (WHERE r.verdict = 'agree') AS "agree!",
                      count(*) FILTER (WHERE r.verdict = 'disagree') AS "disagree!",
                      count(*) FILTER (WHERE r.verdict = 'swap') AS "swap!"
               FROM pairs p
               JOIN LATERAL (SELECT verdict FROM pair_reviews WHERE pair_id = p.id ORDER BY id DESC LIMIT 1) r ON true
               GROUP BY p.checkpoint_id ORDER BY p.checkpoint_id"#
        )
        .fetch_all(&self.pool)
        .await
    }
}

/// One pair's row, through the pool or inside a transaction.
async fn pair_row<'e>(executor: impl sqlx::PgExecutor<'e>, id: i64) -> Result<Option<PairRow>, sqlx::Error> {
    sqlx::query_as!(
        PairRow,
        r#"SELECT id, prompt_id, chosen_id, rejected_id, chosen_score, rejected_score, checkpoint_id, status, decided_by, created_at
               FROM pairs WHERE id = $1"#,
        id
    )
    .fetch_optional(executor)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{NewCandidate, NewGeneration, NewPair};

    async fn a_pair(store: &Store) -> (i64, i64, Vec<i64>) {
        let checkpoint = store.activate_served("m", "/m.gguf", "gguf").await.unwrap();
        let candidate = |t: &str| NewCandidate {
            text: t.into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            finish_reason: "stop".into(),
            temperature: 0.7,
            top_p: 0.9,
            max_tokens: 8,
            seed: 0,
        };
        let g = NewGeneration {
            messages: serde_json::json!([{"role": "user", "content": "hi"}]),
            instructions: None,
            source: "user".into(),
            iteration: 0,
            checkpoint_id: checkpoint.id,
            candidates: vec![candidate("good"), candidate("bad")],
            judgments: vec![],
            pair: Some(NewPair { chosen: 0, rejected: 1, chosen_score: 4.0, rejected_score: 1.0 }),
            decided_by: None,
        };
        let ids = store.record_generation(&g).await.unwrap();
        (ids.pair_id.unwrap(), checkpoint.id, ids.candidate_ids)
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn disagree_excludes_swap_exchanges_and_a_consumed_pair_only_records(pool: sqlx::PgPool) {
        let store = Store::from_pool(pool.clone());
        // swap: chosen and rejected (and their scores) change places; the review keeps
        // the judge's order.
        let (pair, checkpoint, c) = a_pair(&store).await;
        let (review, row) = store.review_pair(pair, ReviewVerdict::Swap, Some("the second is right"), "ana").await.unwrap().unwrap();
        assert!(review.applied);
        assert_eq!((review.chosen_id, review.rejected_id), (c[0], c[1]));
        assert_eq!((row.chosen_id, row.rejected_id, row.chosen_score, row.rejected_score), (c[1], c[0], 1.0, 4.0));
        // The trainer claims it in the exchanged order.
        let claimed = store.claim_pairs(checkpoint, "w", 10, std::time::Duration::from_secs(60)).await.unwrap();
        assert_eq!((claimed[0].chosen.as_str(), claimed[0].rejected.as_str()), ("bad", "good"));
        store.release_pairs("w").await.unwrap();

        // disagree: the pair leaves training, and no trainer claims it.
        let (review, row) = store.review_pair(pair, ReviewVerdict::Disagree, None, "bo").await.unwrap().unwrap();
        assert!(review.applied && row.status == "excluded");
        assert!(store.claim_pairs(checkpoint, "w", 10, std::time::Duration::from_secs(60)).await.unwrap().is_empty());
        assert_eq!(store.claimable_pairs(checkpoint).await.unwrap(), 0);

        // A consumed pair keeps its status; the review is recorded only.
        sqlx::query("UPDATE pairs SET status = 'consumed' WHERE id = $1").bind(pair).execute(&pool).await.unwrap();
        let (review, row) = store.review_pair(pair, ReviewVerdict::Disagree, None, "cy").await.unwrap().unwrap();
        assert!(!review.applied);
        assert_eq!(row.status, "consumed");
        let reviews = store.reviews_of_pair(pair).await.unwrap();
        assert_eq!(reviews.iter().map(|r| r.reviewer.as_str()).collect::<Vec<_>>(), ["ana", "bo", "cy"]);
        assert!(store.review_pair(pair + 1000, ReviewVerdict::Agree, None, "x").await.unwrap().is_none());

        // Agreement counts the latest review of each pair.
        let (other, _, _) = a_pair(&store).await;
        store.review_pair(other, ReviewVerdict::Agree, None, "ana").await.unwrap();
        let agreement = store.review_agreement().await.unwrap();
        assert_eq!(agreement.len(), 1, "both pairs come from the one served checkpoint");
        assert_eq!((agreement[0].reviewed, agreement[0].agree, agreement[0].disagree, agreement[0].swap), (2, 1, 1, 0));
    }
}
