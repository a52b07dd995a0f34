//! All SQL lives here. The store knows no HTTP.

pub mod checkpoints;
pub mod evaluations;
pub mod records;
pub mod reviews;
pub mod text;
pub mod training;

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

pub use checkpoints::Checkpoint;

/// The `LISTEN/NOTIFY` channel on which trainers announce new checkpoints (payload: id).
pub const CHECKPOINT_CHANNEL: &str = "srlm_checkpoints";

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// A pool that connects on first use, so the server starts (and serves chat) while
    /// the database is still coming up; `/ready` says when it answers.
    pub fn connect_lazy(url: &str) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(3)).connect_lazy(url)?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A pool for the commands (`srlm train`, `loop`, `self-instruct`): the database
    /// must answer now, and is migrated before anything else.
    pub async fn connect_migrated(url: &str) -> Result<Self, sqlx::migrate::MigrateError> {
        let store = Self::connect_lazy(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations in `migrations/` that have not run yet.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations").run(&self.pool).await
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query_scalar!("SELECT 1 AS one").fetch_one(&self.pool).await.map(|_| ())
    }
}
