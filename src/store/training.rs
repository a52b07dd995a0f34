//! Training runs and the pairs they claim.
//!
//! A trainer claims pairs with `FOR UPDATE SKIP LOCKED`, so two trainers never take the
//! same pair, and holds them under a lease it renews while it works. Pairs whose lease
//! ran out are claimable again: a trainer that died gives them back by doing nothing.
//! Pairs become `consumed` in the same transaction that registers the new checkpoint.

use std::time::Duration;

use serde::Serialize;

use super::{Checkpoint, Store};

/// The training run that produced a checkpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunRow {
    pub id: i64,
    /// `sft` or `dpo`.
    pub kind: String,
    pub base_checkpoint_id: Option<i64>,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    pub error: Option<String>,
    /// Optimizer, loss and data settings.
    pub config: serde_json::Value,
    pub examples: Option<i32>,
    pub truncated: Option<i32>,
    pub skipped: Option<i32>,
    pub tokens: Option<i64>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A claimed pair with the texts the trainer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedPair {
    pub id: i64,
    pub messages: serde_json::Value,
    pub chosen: String,
    pub rejected: String,
}

/// The checkpoint a run produced.
#[derive(Debug, Clone)]
pub struct NewCheckpoint {
    pub name: String,
    pub path: String,
    pub format: String,
    pub parent_id: Option<i64>,
    pub iteration: i32,
}

/// What a run trained on, for its row.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RunCounts {
    pub examples: i32,
    pub truncated: i32,
    pub skipped: i32,
    pub tokens: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error("{lost} of the run's pairs were no longer claimed by it (the lease ran out and another trainer took them)")]
    LeaseLost { lost: usize },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Store {
    pub async fn start_run(
        &self,
        kind: &str,
        base_checkpoint_id: Option<i64>,
        worker: &str,
        config: &serde_json::Value,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar!(
            "INSERT INTO training_runs (kind, base_checkpoint_id, worker, config) VALUES ($1, $2, $3, $4) RETURNING id",
            kind,
            base_checkpoint_id,
            worker,
            config
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Claims up to `limit` pairs made by `checkpoint_id` that are available or whose
    /// lease has run out, for `lease`. Runs still `running` under a worker whose lease ran
    /// out (a trainer that died without a word) are marked failed in the same
    /// transaction.
    pub async fn claim_pairs(
        &self,
        checkpoint_id: i64,
        worker: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<ClaimedPair>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "UPDATE training_runs SET status = 'failed', finished_at = now(),
                 error = 'the trainer stopped renewing its lease (it died or hung); its pairs went back'
             WHERE status = 'running' AND worker IN (
                 SELECT claimed_by FROM pairs
                 WHERE checkpoint_id = $1 AND status = 'claimed' AND lease_expires_at < now())",
            checkpoint_id
        )
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query!(
            r#"WITH picked AS (
                   SELECT id FROM pairs
                   WHERE checkpoint_id = $1
                     AND (status = 'available' OR (status = 'claimed' AND lease_expires_at < now()))
                   ORDER BY id
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED
               ), claimed AS (
                   UPDATE pairs p
                   SET status = 'claimed', claimed_by = $2, lease_expires_at = now() + make_interval(secs => $4)
                   FROM picked WHERE p.id = picked.id
                   RETURNING p.id, p.prompt_id, p.chosen_id, p.rejected_id
               )
               SELECT claimed.id AS "id!", pr.messages AS "messages!", c.text AS "chosen!", r.text AS "rejected!"
               FROM claimed
               JOIN prompts pr ON pr.id = claimed.prompt_id
               JOIN candidates c ON c.id = claimed.chosen_id
               JOIN candidates r ON r.id = claimed.rejected_id
               ORDER BY claimed.id"#,
            checkpoint_id,
            worker,
            limit,
            seconds(lease)
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|r| ClaimedPair { id: r.id, messages: r.messages, chosen: r.chosen, rejected: r.rejected }).collect())
    }

    /// The pairs [`Self::claim_pairs`] would claim now, without claiming them.
    pub async fn available_pairs(&self, checkpoint_id: i64, limit: i64) -> Result<Vec<ClaimedPair>, sqlx::Error> {
        let rows = sqlx::query!(
            r#"SELECT p.id, pr.messages, c.text AS chosen, r.text AS rejected
               FROM pairs p
               JOIN prompts pr ON pr.id = p.prompt_id
               JOIN candidates c ON c.id = p.chosen_id
               JOIN candidates r ON r.id = p.rejected_id
               WHERE p.checkpoint_id = $1
                 AND (p.status = 'available' OR (p.status = 'claimed' AND p.lease_expires_at < now()))
               ORDER BY p.id LIMIT $2"#,
            checkpoint_id,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| ClaimedPair { id: r.id, messages: r.messages, chosen: r.chosen, rejected: r.rejected }).collect())
    }

    /// How many pairs of `checkpoint_id` a trainer could claim now.
    pub async fn claimable_pairs(&self, checkpoint_id: i64) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM pairs
               WHERE checkpoint_id = $1
                 AND (status = 'available' OR (status = 'claimed' AND lease_expires_at < now()))"#,
            checkpoint_id
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Extends the lease on every pair `worker` holds; returns how many it holds.
    pub async fn renew_lease(&self, worker: &str, lease: Duration) -> Result<u64, sqlx::Error> {
        let done = sqlx::query!(
            "UPDATE pairs SET lease_expires_at = now() + make_interval(secs => $2)
             WHERE claimed_by = $1 AND status = 'claimed'",
            worker,
            seconds(lease)
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Gives back every pair `worker` holds.
    pub async fn release_pairs(&self, worker: &str) -> Result<u64, sqlx::Error> {
        release(&self.pool, worker).await
    }

    pub async fn record_step(&self, run_id: i64, step: i32, metrics: &serde_json::Value) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "INSERT INTO training_steps (run_id, step, metrics) VALUES ($1, $2, $3)
             ON CONFLICT (run_id, step) DO UPDATE SET metrics = EXCLUDED.metrics",
            run_id,
            step,
            metrics
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Registers the run's checkpoint, marks its pairs consumed and the run succeeded,
    /// in one transaction. Fails, changing nothing, if any pair is no longer this
    /// worker's.
    pub async fn finish_run(
        &self,
        run_id: i64,
        worker: &str,
        checkpoint: &NewCheckpoint,
        pair_ids: &[i64],
        counts: RunCounts,
        announce: bool,
    ) -> Result<Checkpoint, FinishError> {
        let mut tx = self.pool.begin().await?;
        let consumed = sqlx::query!(
            "UPDATE pairs SET status = 'consumed', consumed_by_run = $1, lease_expires_at = NULL
             WHERE id = ANY($2) AND claimed_by = $3 AND status = 'claimed'",
            run_id,
            pair_ids,
            worker
        )
        .execute(&mut *tx)
        .await?
        .rows_affected() as usize;
        if consumed != pair_ids.len() {
            tx.rollback().await?;
            return Err(FinishError::LeaseLost { lost: pair_ids.len() - consumed });
        }
        let registered = super::checkpoints::insert_checkpoint(&mut tx, checkpoint).await?;
        sqlx::query!(
            "UPDATE training_runs SET status = 'succeeded', output_checkpoint_id = $2, finished_at = now(),
                 examples = $3, truncated = $4, skipped = $5, tokens = $6
             WHERE id = $1",
            run_id,
            registered.id,
            counts.examples,
            counts.truncated,
            counts.skipped,
            counts.tokens
        )
        .execute(&mut *tx)
        .await?;
        // Servers started with --follow activate it (delivered when this commits).
        if announce {
            sqlx::query!("SELECT pg_notify($1, $2)", super::CHECKPOINT_CHANNEL, registered.id.to_string()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(registered)
    }

    /// Marks the run failed and gives its pairs back.
    pub async fn fail_run(&self, run_id: i64, worker: &str, error: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        release(&mut *tx, worker).await?;
        sqlx::query!("UPDATE training_runs SET status = 'failed', error = $2, finished_at = now() WHERE id = $1", run_id, error)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The run whose output is checkpoint `id`, if it was trained here.
    pub async fn run_producing(&self, checkpoint_id: i64) -> Result<Option<RunRow>, sqlx::Error> {
        sqlx::query_as!(
            RunRow,
            "SELECT id, kind, base_checkpoint_id, status, error, config, examples, truncated, skipped, tokens, started_at, finished_at
             FROM training_runs WHERE output_checkpoint_id = $1",
            checkpoint_id
        )
        .fetch_optional(&self.pool)
        .await
    }

    /// The pairs a run trained on, and the prompts they came from (both in id order).
    pub async fn pairs_of_run(&self, run_id: i64) -> Result<(Vec<i64>, Vec<i64>), sqlx::Error> {
        let rows =
            sqlx::query!("SELECT id, prompt_id FROM pairs WHERE consumed_by_run = $1 ORDER BY id", run_id).fetch_all(&self.pool).await?;
        let pairs = rows.iter().map(|r| r.id).collect();
        let mut prompts: Vec<i64> = rows.iter().map(|r| r.prompt_id).collect();
        prompts.sort_unstable();
        prompts.dedup();
        Ok((pairs, prompts))
    }

    /// The checkpoint a successful DPO run made from `base_id`, if any.
    pub async fn output_of_base(&self, base_id: i64) -> Result<Option<i64>, sqlx::Error> {
        Ok(sqlx::query_scalar!(
            "SELECT output_checkpoint_id FROM training_runs
             WHERE base_checkpoint_id = $1 AND kind = 'dpo' AND status = 'succeeded' ORDER BY id DESC LIMIT 1",
            base_id
        )
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// Prompts of `source` and `iteration` that checkpoint `checkpoint_id` has answered.
    pub async fn count_prompts(&self, source: &str, iteration: i32, checkpoint_id: i64) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar!(
            r#"SELECT count(DISTINCT p.id) AS "n!" FROM prompts p JOIN candidates c ON c.prompt_id = p.id
               WHERE p.source = $1 AND p.iteration = $2 AND c.checkpoint_id = $3"#,
            source,
            iteration,
            checkpoint_id
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Stores what `srlm loop` measured for the iteration that started from `base_id`.
    pub async fn record_iteration(
        &self,
        iteration: i32,
        base_id: i64,
        output_id: i64,
        report: &serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "INSERT INTO iteration_reports (iteration, base_checkpoint_id, output_checkpoint_id, report) VALUES ($1, $2, $3, $4)
             ON CONFLICT (base_checkpoint_id) DO UPDATE SET report = EXCLUDED.report, output_checkpoint_id = EXCLUDED.output_checkpoint_id",
            iteration,
            base_id,
            output_id,
            report
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A run's status and per-step metrics, in step order.
    pub async fn run_steps(&self, run_id: i64) -> Result<Vec<serde_json::Value>, sqlx::Error> {
        sqlx::query_scalar!("SELECT metrics FROM training_steps WHERE run_id = $1 ORDER BY step", run_id).fetch_all(&self.pool).await
    }

    pub async fn run_status(&self, run_id: i64) -> Result<Option<(String, Option<i64>, Option<String>)>, sqlx::Error> {
        let row = sqlx::query!("SELECT status, output_checkpoint_id, error FROM training_runs WHERE id = $1", run_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.status, r.output_checkpoint_id, r.error)))
    }
}

async fn release(db: impl sqlx::PgExecutor<'_>, worker: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE pairs SET status = 'available', claimed_by = NULL, lease_expires_at = NULL
         WHERE claimed_by = $1 AND status = 'claimed'",
        worker
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint with `n` pairs; returns the checkpoint id.
    async fn seed(store: &Store, n: usize) -> i64 {
        let ck = store.activate_served("m0", "/models/m0.gguf", "gguf").await.unwrap().id;
        for i in 0..n {
            let prompt: i64 = sqlx::query_scalar("INSERT INTO prompts (messages) VALUES ($1) RETURNING id")
                .bind(serde_json::json!([{"role": "user", "content": format!("question {i}")}]))
                .fetch_one(store.pool())
                .await
                .unwrap();
            let mut ids = Vec::new();
            for (j, text) in ["good", "bad"].iter().enumerate() {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO candidates (prompt_id, checkpoint_id, choice_index, text, prompt_tokens, completion_tokens,
                         finish_reason, temperature, top_p, max_tokens, seed)
                     VALUES ($1, $2, $3, $4, 1, 1, 'stop', 0.7, 0.9, 16, 0) RETURNING id",
                )
                .bind(prompt)
                .bind(ck)
                .bind(j as i32)
                .bind(format!("{text} {i}"))
                .fetch_one(store.pool())
                .await
                .unwrap();
                ids.push(id);
            }
            sqlx::query("INSERT INTO pairs (prompt_id, chosen_id, rejected_id, chosen_score, rejected_score, checkpoint_id) VALUES ($1, $2, $3, 5, 1, $4)")
                .bind(prompt)
                .bind(ids[0])
                .bind(ids[1])
                .bind(ck)
                .execute(store.pool())
                .await
                .unwrap();
        }
        ck
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn concurrent_trainers_never_claim_the_same_pair(pool: sqlx::PgPool) {
        let store = Store::from_pool(pool);
        let ck = seed(&store, 40).await;
        let lease = Duration::from_secs(600);
        let mut tasks = Vec::new();
        for w in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.claim_pairs(ck, &format!("trainer-{w}"), 3, lease).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|p| p.id));
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!((n, all.len()), (40, 40), "every pair claimed exactly once");
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn an_expired_lease_frees_pairs_and_the_old_holder_cannot_consume_them(pool: sqlx::PgPool) {
        let store = Store::from_pool(pool);
        let ck = seed(&store, 3).await;
        let dead = store.claim_pairs(ck, "dead", 10, Duration::from_millis(200)).await.unwrap();
        let dead_run = store.start_run("dpo", Some(ck), "dead", &serde_json::json!({})).await.unwrap();
        assert_eq!(dead.len(), 3);
        assert_eq!(dead[0].chosen, "good 0");
        assert_eq!(dead[0].messages[0]["content"], "question 0");
        assert!(store.claim_pairs(ck, "alive", 10, Duration::from_secs(60)).await.unwrap().is_empty(), "held under lease");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let taken = store.claim_pairs(ck, "alive", 10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(taken.len(), 3, "the lease ran out");
        let (status, _, error) = store.run_status(dead_run).await.unwrap().unwrap();
        assert_eq!(status, "failed", "the silent trainer's run is closed");
        assert!(error.unwrap().contains("lease"));

        let run = store.start_run("dpo", Some(ck), "dead", &serde_json::json!({})).await.unwrap();
        let ids: Vec<i64> = dead.iter().map(|p| p.id).collect();
        let new =
            NewCheckpoint { name: "m1".into(), path: "/models/m1.gguf".into(), format: "gguf".into(), parent_id: Some(ck), iteration: 1 };
        let err = store.finish_run(run, "dead", &new, &ids, RunCounts::default(), true).await.unwrap_err();
        assert!(matches!(err, FinishError::LeaseLost { lost: 3 }), "{err}");
        assert!(store.checkpoint(ck + 1).await.unwrap().is_none(), "nothing registered");

        let run = store.start_run("dpo", Some(ck), "alive", &serde_json::json!({"beta": 0.1})).await.unwrap();
        store.record_step(run, 0, &serde_json::json!({"loss": 0.69})).await.unwrap();
        let registered = store.finish_run(run, "alive", &new, &ids, RunCounts { examples: 3, ..Default::default() }, true).await.unwrap();
        assert_eq!((registered.status.as_str(), registered.parent_id, registered.iteration), ("registered", Some(ck), 1));
        assert_eq!(store.run_status(run).await.unwrap().unwrap(), ("succeeded".to_string(), Some(registered.id), None));
        assert_eq!(store.run_steps(run).await.unwrap(), vec![serde_json::json!({"loss": 0.69})]);
        let consumed = store.pairs(Some("consumed"), Some(ck), 10, 0).await.unwrap();
        assert_eq!(consumed.len(), 3);
        assert!(store.claim_pairs(ck, "later", 10, Duration::from_secs(60)).await.unwrap().is_empty());
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn a_failed_run_gives_its_pairs_back(pool: sqlx::PgPool) {
        let store = Store::from_pool(pool);
        let ck = seed(&store, 2).await;
        let run = store.start_run("dpo", Some(ck), "w", &serde_json::json!({})).await.unwrap();
        assert_eq!(store.claim_pairs(ck, "w", 10, Duration::from_secs(600)).await.unwrap().len(), 2);
        assert_eq!(store.renew_lease("w", Duration::from_secs(600)).await.unwrap(), 2);
        store.fail_run(run, "w", "out of memory").await.unwrap();
        assert_eq!(store.run_status(run).await.unwrap().unwrap(), ("failed".to_string(), None, Some("out of memory".to_string())));
        assert_eq!(store.claim_pairs(ck, "other", 10, Duration::from_secs(600)).await.unwrap().len(), 2);
    }
}
