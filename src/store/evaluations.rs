//! The `evaluations` table (what `srlm eval` measured), the pairs export and the
//! registration of checkpoints trained elsewhere.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::training::NewCheckpoint;
use super::{Checkpoint, Store};

/// A measurement to store.
#[derive(Debug, Clone)]
pub struct NewEvaluation {
    /// `rm` or `h2h`.
    pub kind: &'static str,
    pub checkpoint_id: Option<i64>,
    pub opponent_checkpoint_id: Option<i64>,
    pub subject: String,
    pub opponent: Option<String>,
    pub method: String,
    pub dataset: String,
    pub items: i32,
    pub metrics: serde_json::Value,
    pub config: serde_json::Value,
}

/// A stored measurement, with the iteration of the checkpoint it measured.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Evaluation {
    pub id: i64,
    /// `rm` (the judge against human rankings), `h2h` (model A against model B) or
    /// `ifeval` (the yardstick; method `gate` for the loop's swap gate).
    pub kind: String,
    /// rm: the judging checkpoint; h2h: model A.
    pub checkpoint_id: Option<i64>,
    /// The iteration of that checkpoint (M0 = 0).
    pub iteration: Option<i32>,
    /// h2h: model B.
    pub opponent_checkpoint_id: Option<i64>,
    pub subject: String,
    pub opponent: Option<String>,
    /// rm: the judging method; h2h: the judge.
    pub method: String,
    pub dataset: String,
    pub items: i32,
    #[schema(value_type = Object)]
    pub metrics: serde_json::Value,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A preference pair with its texts, for training elsewhere.
#[derive(Debug, Clone)]
pub struct PairText {
    pub id: i64,
    pub prompt_id: i64,
    pub checkpoint_id: i64,
    pub messages: serde_json::Value,
    pub chosen: String,
    pub rejected: String,
    pub chosen_score: f32,
    pub rejected_score: f32,
    /// What decided the pair (see `PairRow::decided_by`).
    pub decided_by: Option<serde_json::Value>,
}

impl Store {
    pub async fn record_evaluation(&self, e: &NewEvaluation) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar!(
            r#"INSERT INTO evaluations (kind, checkpoint_id, opponent_checkpoint_id, subject, opponent, method, dataset, items, metrics, config)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id"#,
            e.kind,
            e.checkpoint_id,
            e.opponent_checkpoint_id,
            e.subject,
            e.opponent,
            e.method,
            e.dataset,
            e.items,
            e.metrics,
            e.config
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Measurements, oldest first, optionally of one kind and one checkpoint.
    pub async fn evaluations(
        &self,
        kind: Option<&str>,
        checkpoint_id: Option<i64>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Evaluation>, sqlx::Error> {
        sqlx::query_as!(
            Evaluation,
            r#"SELECT e.id, e.kind, e.checkpoint_id, c.iteration AS "iteration?", e.opponent_checkpoint_id, e.subject, e.opponent,
                      e.method, e.dataset, e.items, e.metrics, e.config, e.created_at
               FROM evaluations e LEFT JOIN checkpoints c ON c.id = e.checkpoint_id
               WHERE ($1::text IS NULL OR e.kind = $1) AND ($2::bigint IS NULL OR e.checkpoint_id = $2)
               ORDER BY e.id LIMIT $3 OFFSET $4"#,
            kind,
            checkpoint_id,
            limit,
            offset
        )
        .fetch_all(&self.pool)
        .await
    }

    /// The newest measurement of `kind` and `method` of a checkpoint on a dataset.
    pub async fn latest_evaluation(
        &self,
        kind: &str,
        checkpoint_id: i64,
        method: &str,
        dataset: &str,
    ) -> Result<Option<Evaluation>, sqlx::Error> {
        sqlx::query_as!(
            Evaluation,
            r#"SELECT e.id, e.kind, e.checkpoint_id, c.iteration AS "iteration?", e.opponent_checkpoint_id, e.subject, e.opponent,
                      e.method, e.dataset, e.items, e.metrics, e.config, e.created_at
               FROM evaluations e LEFT JOIN checkpoints c ON c.id = e.checkpoint_id
               WHERE e.kind = $1 AND e.checkpoint_id = $2 AND e.method = $3 AND e.dataset = $4
               ORDER BY e.id DESC LIMIT 1"#,
            kind,
            checkpoint_id,
            method,
            dataset
        )
        .fetch_optional(&self.pool)
        .await
    }

    /// Pairs with their prompt and answer texts, oldest first: of one checkpoint, of the
    /// checkpoints of one iteration, of one status — each filter optional.
    pub async fn pair_texts(
        &self,
        checkpoint_id: Option<i64>,
        iteration: Option<i32>,
        status: Option<&str>,
    ) -> Result<Vec<PairText>, sqlx::Error> {
        sqlx::query_as!(
            PairText,
            r#"SELECT p.id, p.prompt_id, p.checkpoint_id, pr.messages, ch.text AS chosen, rj.text AS rejected,
                      p.chosen_score, p.rejected_score, p.decided_by
               FROM pairs p
               JOIN prompts pr ON pr.id = p.prompt_id
               JOIN candidates ch ON ch.id = p.chosen_id
               JOIN candidates rj ON rj.id = p.rejected_id
               JOIN checkpoints c ON c.id = p.checkpoint_id
               WHERE ($1::bigint IS NULL OR p.checkpoint_id = $1) AND ($2::int IS NULL OR c.iteration = $2)
                 AND ($3::text IS NULL OR p.status = $3)
               ORDER BY p.id"#,
            checkpoint_id,
            iteration,
            status
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Registers a checkpoint made outside srlm (status `registered`; activating it is
    /// the admin API's job). A file already registered is refused.
    pub async fn register_checkpoint(&self, c: &NewCheckpoint) -> Result<Checkpoint, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        super::checkpoints::insert_checkpoint(&mut conn, c).await
    }
}
