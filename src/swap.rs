//! Hot-swap: the slot that holds the served model, and the only way to change it.
//!
//! A swap loads the new checkpoint beside the old one, marks it active in Postgres and
//! then points new requests at it; requests already running finish on the old model,
//! which is unloaded when the last of them ends. A checkpoint that fails to load is
//! marked `failed` with its error, and the old one keeps serving. `follow` does the same
//! for every checkpoint a trainer announces (Postgres `LISTEN`). The admin routes and
//! the loop call this; nothing here knows about HTTP.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::engine::SharedEngine;
use crate::store::{Checkpoint, Store};

/// The model being served and its `checkpoints` row, replaced as one on a swap. A
/// request takes the current one at its start and keeps it to its end, so it is served,
/// and recorded, by one checkpoint; the old engine is dropped (unloaded) when the last
/// request holding it finishes.
pub struct Served {
    pub engine: SharedEngine,
    /// The row, once the database has it.
    pub checkpoint: Option<Checkpoint>,
}

impl Served {
    pub fn checkpoint_id(&self) -> Option<i64> {
        self.checkpoint.as_ref().map(|c| c.id)
    }
}

/// Loads the engine for a checkpoint file (path, name) the way `srlm serve` loaded the
/// first one.
pub type EngineLoader = Arc<dyn Fn(String, String) -> futures::future::BoxFuture<'static, anyhow::Result<SharedEngine>> + Send + Sync>;

/// A swap that happened (or found the checkpoint already serving).
#[derive(Debug, Clone)]
pub struct Swapped {
    /// The checkpoint now serving.
    pub checkpoint: Checkpoint,
    /// The model name clients see for it.
    pub model: String,
    pub previous_checkpoint_id: Option<i64>,
    /// Seconds spent loading the new model (0 when it was already serving).
    pub load_seconds: f64,
}

/// Why a swap did not happen; the old model keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("no checkpoint {0}")]
    NotFound(i64),
    #[error("this server cannot load checkpoints (no loader configured)")]
    NoLoader,
    #[error("the served checkpoint has no parent to roll back to")]
    NoParent,
    /// The checkpoint is marked `failed` with this message.
    #[error("{0}")]
    LoadFailed(String),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// The served model, shared by every request; swaps go one at a time.
#[derive(Clone)]
pub struct ServedSlot {
    served: Arc<RwLock<Arc<Served>>>,
    store: Store,
    /// Loads checkpoints for swaps; none means swaps are refused.
    pub loader: Option<EngineLoader>,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl ServedSlot {
    pub fn new(engine: SharedEngine, store: Store) -> Self {
        Self {
            served: Arc::new(RwLock::new(Arc::new(Served { engine, checkpoint: None }))),
            store,
            loader: None,
            one_at_a_time: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// What is being served now.
    pub fn current(&self) -> Arc<Served> {
        self.served.read().expect("the served lock is never poisoned").clone()
    }

    /// Makes `served` the model new requests get.
    pub fn replace(&self, served: Served) {
        *self.served.write().expect("the served lock is never poisoned") = Arc::new(served);
    }

    /// Records the served engine's row once registration finds it (unless a swap has
    /// replaced that engine meanwhile).
    pub fn set_registered(&self, engine: &SharedEngine, checkpoint: Checkpoint) {
        let mut served = self.served.write().expect("the served lock is never poisoned");
        if Arc::ptr_eq(&served.engine, engine) {
            *served = Arc::new(Served { engine: engine.clone(), checkpoint: Some(checkpoint) });
        }
    }

    /// Serves checkpoint `id`: loads it, marks it active, swaps it in. Idempotent.
    pub async fn activate(&self, id: i64) -> Result<Swapped, SwapError> {
        let _one_at_a_time = self.one_at_a_time.lock().await;
        let before = self.current();
        let checkpoint = self.store.checkpoint(id).await?.ok_or(SwapError::NotFound(id))?;
        if before.checkpoint_id() == Some(id) {
            let model = before.engine.info().name.clone();
            return Ok(Swapped { checkpoint, model, previous_checkpoint_id: Some(id), load_seconds: 0.0 });
        }
        let loader = self.loader.clone().ok_or(SwapError::NoLoader)?;
        let started = Instant::now();
        let engine = match loader(checkpoint.path.clone(), checkpoint.name.clone()).await {
            Ok(engine) => engine,
            Err(err) => {
                let message = format!("loading checkpoint {id} ({}): {err:#}", checkpoint.path);
                tracing::error!(checkpoint_id = id, error = %message, "checkpoint failed to load; the old model keeps serving");
                crate::metrics::swap("failed", None);
                self.store.mark_checkpoint_failed(id, &message).await?;
                return Err(SwapError::LoadFailed(message));
            }
        };
        let load_seconds = started.elapsed().as_secs_f64();
        let active = self.store.activate_checkpoint(id).await?.ok_or(SwapError::NotFound(id))?;
        let model = engine.info().name.clone();
        self.replace(Served { engine, checkpoint: Some(active.clone()) });
        crate::metrics::swap("ok", Some(started.elapsed().as_secs_f64()));
        tracing::info!(checkpoint_id = id, previous = ?before.checkpoint_id(), load_seconds, model = %model, "checkpoint swapped in");
        Ok(Swapped { checkpoint: active, model, previous_checkpoint_id: before.checkpoint_id(), load_seconds })
    }

    /// Re-activates the parent of the served checkpoint.
    pub async fn rollback(&self) -> Result<Swapped, SwapError> {
        let parent = self.current().checkpoint.as_ref().and_then(|c| c.parent_id).ok_or(SwapError::NoParent)?;
        self.activate(parent).await
    }

    /// `--follow`: activates every checkpoint a trainer announces on Postgres'
    /// `srlm_checkpoints` channel, in a background task. Every replica listening does
    /// the same.
    pub fn follow(&self) {
        let slot = self.clone();
        tokio::spawn(async move {
            loop {
                let mut listener = match sqlx::postgres::PgListener::connect_with(slot.store.pool()).await {
                    Ok(l) => l,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot listen for checkpoint announcements; retrying in 2 s");
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                        continue;
                    }
                };
                if let Err(err) = listener.listen(crate::store::CHECKPOINT_CHANNEL).await {
                    tracing::warn!(error = %err, "LISTEN failed; retrying in 2 s");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    continue;
                }
                tracing::info!(channel = crate::store::CHECKPOINT_CHANNEL, "following checkpoint announcements");
                loop {
                    match listener.recv().await {
                        Ok(note) => match note.payload().parse::<i64>() {
                            Ok(id) => match slot.activate(id).await {
                                Ok(swap) => {
                                    tracing::info!(checkpoint_id = id, load_seconds = swap.load_seconds, "followed a new checkpoint")
                                }
                                Err(err) => tracing::error!(checkpoint_id = id, error = %err, "could not follow the announced checkpoint"),
                            },
                            Err(_) => tracing::warn!(payload = note.payload(), "ignoring an announcement that is not a checkpoint id"),
                        },
                        Err(err) => {
                            tracing::warn!(error = %err, "lost the announcement connection; reconnecting");
                            break;
                        }
                    }
                }
            }
        });
    }
}
