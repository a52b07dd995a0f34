//! The `checkpoints` table: model files and which one is being served.

use chrono::{DateTime, Utc};

use super::Store;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    pub id: i64,
    pub name: String,
    pub parent_id: Option<i64>,
    pub iteration: i32,
    pub path: String,
    pub format: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Registers the checkpoint at `path` (once; a restart finds the same row) and marks
    /// it the active one, the previously active one inactive — in one transaction.
    pub async fn activate_served(&self, name: &str, path: &str, format: &str) -> Result<Checkpoint, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let id = sqlx::query_scalar!(
            r#"INSERT INTO checkpoints (name, path, format) VALUES ($1, $2, $3)
               ON CONFLICT (path) DO UPDATE SET name = EXCLUDED.name, error = NULL
               RETURNING id"#,
            name,
            path,
            format
        )
        .fetch_one(&mut *tx)
        .await?;
        let checkpoint = activate_in(&mut tx, id).await?.ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(checkpoint)
    }

    /// Marks checkpoint `id` the active one and every other inactive, in one transaction.
    pub async fn activate_checkpoint(&self, id: i64) -> Result<Option<Checkpoint>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = activate_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(checkpoint)
    }

    /// Records why checkpoint `id` could not be served.
    pub async fn mark_checkpoint_failed(&self, id: i64, error: &str) -> Result<(), sqlx::Error> {
        sqlx::query!("UPDATE checkpoints SET status = 'failed', error = $2 WHERE id = $1", id, error).execute(&self.pool).await?;
        Ok(())
    }

    /// Records that the swap gate refused checkpoint `id`, and why.
    pub async fn mark_checkpoint_refused(&self, id: i64, reason: &str) -> Result<(), sqlx::Error> {
        sqlx::query!("UPDATE checkpoints SET status = 'refused', error = $2 WHERE id = $1 AND status <> 'active'", id, reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Why checkpoint `id` failed, if it did.
    pub async fn checkpoint_error(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        Ok(sqlx::query_scalar!("SELECT error FROM checkpoints WHERE id = $1", id).fetch_optional(&self.pool).await?.flatten())
    }

    pub async fn checkpoint(&self, id: i64) -> Result<Option<Checkpoint>, sqlx::Error> {
        sqlx::query_as!(
            Checkpoint,
            "SELECT id, name, parent_id, iteration, path, format, status, created_at, activated_at
             FROM checkpoints WHERE id = $1",
            id
        )
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn checkpoint_by_path(&self, path: &str) -> Result<Option<Checkpoint>, sqlx::Error> {
        sqlx::query_as!(
            Checkpoint,
            "SELECT id, name, parent_id, iteration, path, format, status, created_at, activated_at
             FROM checkpoints WHERE path = $1",
            path
        )
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn active_checkpoints(&self) -> Result<Vec<Checkpoint>, sqlx::Error> {
        sqlx::query_as!(
            Checkpoint,
            "SELECT id, name, parent_id, iteration, path, format, status, created_at, activated_at
             FROM checkpoints WHERE status = 'active' ORDER BY id"
        )
        .fetch_all(&self.pool)
        .await
    }
}

/// Makes checkpoint `id` the active one and every other inactive.
async fn activate_in(tx: &mut sqlx::PgConnection, id: i64) -> Result<Option<Checkpoint>, sqlx::Error> {
    sqlx::query!("UPDATE checkpoints SET status = 'inactive' WHERE status = 'active' AND id <> $1", id).execute(&mut *tx).await?;
    sqlx::query_as!(
        Checkpoint,
        r#"UPDATE checkpoints SET status = 'active', activated_at = now(), error = NULL WHERE id = $1
           RETURNING id, name, parent_id, iteration, path, format, status, created_at, activated_at"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[sqlx::test(migrations = "./migrations")]
    async fn activating_is_idempotent_and_leaves_one_active(pool: sqlx::PgPool) {
        let store = Store::from_pool(pool);
        let a = store.activate_served("m0", "/models/a.gguf", "gguf").await.unwrap();
        assert_eq!(a.status, "active");
        let again = store.activate_served("m0", "/models/a.gguf", "gguf").await.unwrap();
        assert_eq!(again.id, a.id, "the same path is one checkpoint");
        let b = store.activate_served("m1", "/models/b.gguf", "gguf").await.unwrap();
        assert_ne!(b.id, a.id);
        let active = store.active_checkpoints().await.unwrap();
        assert_eq!(active.iter().map(|c| c.id).collect::<Vec<_>>(), vec![b.id]);
        assert_eq!(store.checkpoint(a.id).await.unwrap().unwrap().status, "inactive");
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn unknown_format_is_refused_by_the_schema(pool: sqlx::PgPool) {
        let store = Store::from_pool(pool);
        assert!(store.activate_served("x", "/models/x.bin", "pickle").await.is_err());
    }
}

/// Inserts a new checkpoint row with status `registered`.
pub(crate) async fn insert_checkpoint(
    conn: &mut sqlx::PgConnection,
    c: &super::training::NewCheckpoint,
) -> Result<Checkpoint, sqlx::Error> {
    sqlx::query_as!(
        Checkpoint,
        r#"INSERT INTO checkpoints (name, path, format, parent_id, iteration, status)
           VALUES ($1, $2, $3, $4, $5, 'registered')
           RETURNING id, name, parent_id, iteration, path, format, status, created_at, activated_at"#,
        c.name,
        c.path,
        c.format,
        c.parent_id,
        c.iteration
    )
    .fetch_one(conn)
    .await
}
