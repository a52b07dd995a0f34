//! Admin routes: hot-swap the served checkpoint, and roll back to its parent.
//!
//! A swap loads the new checkpoint beside the old one, marks it active in Postgres and
//! then points new requests at it; requests already running finish on the old model,
//! which is unloaded when the last of them ends. A checkpoint that fails to load is
//! marked `failed` with its error, and the old one keeps serving.

use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState, Served};
use crate::store::Checkpoint;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(activate_checkpoint)).routes(routes!(rollback)).routes(routes!(self_instruct))
}

/// The fewest seed prompts a caller may give (the few-shot block takes six).
pub(crate) const MIN_SEEDS: usize = 6;

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SelfInstructRequest {
    /// New prompts to accept (1 to the server's `--max-self-instruct`, default 256).
    pub count: usize,
    /// Iteration to store them under (default: the served checkpoint's iteration + 1).
    pub iteration: Option<i32>,
    /// Seed prompts (at least 6; default: the server's `data/seed_prompts.jsonl`).
    pub seeds: Option<Vec<String>>,
    /// Give up after this many generations (default and most: 10 × count).
    pub max_attempts: Option<usize>,
}

/// Create prompts (self-instruction)
///
/// The served model writes new prompts from 8 few-shot examples (6 seeds, 2 earlier
/// generated ones; temperature 0.6, top-p 0.9); empty, too short, too long, duplicate
/// and near-duplicate ones (ROUGE-L ≥ 0.7 against every stored prompt) are rejected,
/// the rest stored with source `self_instruct`.
#[utoipa::path(
    post,
    path = "/admin/self-instruct",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = SelfInstructRequest,
    responses(
        (status = 200, body = crate::selfinstruct::Report),
        (status = 400, description = "Invalid count or seeds", body = ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Admin routes disabled", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn self_instruct(
    State(state): State<AppState>,
    headers: HeaderMap,
    super::ApiJson(request): super::ApiJson<SelfInstructRequest>,
) -> Result<Json<crate::selfinstruct::Report>, ApiError> {
    use crate::selfinstruct::{write_prompts, Completer, SelfInstructArgs, Writer};
    authorize(&state, &headers)?;
    let max = state.limits.max_self_instruct;
    if !(1..=max).contains(&request.count) {
        return Err(ApiError::field("count", format!("count must be between 1 and {max} (--max-self-instruct), got {}", request.count)));
    }
    ApiError::check_iteration(request.iteration)?;
    let most_attempts = crate::selfinstruct::ATTEMPTS_PER_PROMPT * max;
    if let Some(attempts) = request.max_attempts.filter(|a| !(1..=most_attempts).contains(a)) {
        return Err(ApiError::field("max_attempts", format!("max_attempts must be between 1 and {most_attempts}, got {attempts}")));
    }
    let served = state.current();
    let iteration = request.iteration.unwrap_or_else(|| served.checkpoint.as_ref().map_or(1, |c| c.iteration + 1));
    let defaults = SelfInstructArgs {
        max_attempts: request.max_attempts,
        seed: rand::random(),
        ..SelfInstructArgs::new("", "", crate::selfinstruct::DEFAULT_SEED_PROMPTS.into(), request.count, iteration)
    };
    let completer = Completer::Engine(served.engine.clone());
    let writer = match request.seeds {
        Some(seeds) if seeds.len() < MIN_SEEDS => {
            return Err(ApiError::field("seeds", format!("seeds must hold at least {MIN_SEEDS} prompts, got {}", seeds.len())));
        }
        Some(seeds) => Writer::with_seeds(seeds, &defaults, &state.store, completer).await,
        None => Writer::new(&defaults, &state.store, completer).await,
    }
    .map_err(|e| ApiError::field("seeds", format!("{e:#}")))?;
    let report = write_prompts(writer, &defaults, &state.store).await.map_err(|e| match e.downcast::<sqlx::Error>() {
        Ok(db) => ApiError::from(db),
        Err(e) => ApiError::Internal(e),
    })?;
    Ok(Json(report))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SwapResponse {
    /// The checkpoint now serving.
    pub checkpoint: Checkpoint,
    /// The model name clients see for it.
    pub model: String,
    pub previous_checkpoint_id: Option<i64>,
    /// Seconds spent loading the new model (0 when it was already serving).
    pub load_seconds: f64,
}

/// The admin token check: 403 when admin routes are disabled, 401 for a missing or
/// wrong token (compared in constant time).
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError::Forbidden("admin routes are disabled; start the server with --admin-token".into()));
    };
    let given = super::auth::bearer(headers);
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Serves checkpoint `id`: loads it, marks it active, swaps it in. Idempotent.
pub async fn activate(state: &AppState, id: i64) -> Result<SwapResponse, ApiError> {
    let _one_at_a_time = state.swap.lock().await;
    let before = state.current();
    let checkpoint = state.store.checkpoint(id).await?.ok_or_else(|| ApiError::NotFound(format!("no checkpoint {id}")))?;
    if before.checkpoint_id() == Some(id) {
        return Ok(SwapResponse {
            checkpoint,
            model: before.engine.info().name.clone(),
            previous_checkpoint_id: Some(id),
            load_seconds: 0.0,
        });
    }
    let Some(loader) = state.loader.clone() else {
        return Err(ApiError::Conflict("this server cannot load checkpoints (no loader configured)".into()));
    };
    let started = Instant::now();
    let engine = match loader(checkpoint.path.clone(), checkpoint.name.clone()).await {
        Ok(engine) => engine,
        Err(err) => {
            let message = format!("loading checkpoint {id} ({}): {err:#}", checkpoint.path);
            tracing::error!(checkpoint_id = id, error = %message, "checkpoint failed to load; the old model keeps serving");
            crate::metrics::swap("failed", None);
            state.store.mark_checkpoint_failed(id, &message).await?;
            return Err(ApiError::LoadFailed(message));
        }
    };
    let load_seconds = started.elapsed().as_secs_f64();
    let active = state.store.activate_checkpoint(id).await?.ok_or_else(|| ApiError::NotFound(format!("no checkpoint {id}")))?;
    let model = engine.info().name.clone();
    state.replace(Served { engine, checkpoint: Some(active.clone()) });
    crate::metrics::swap("ok", Some(started.elapsed().as_secs_f64()));
    tracing::info!(checkpoint_id = id, previous = ?before.checkpoint_id(), load_seconds, model = %model, "checkpoint swapped in");
    Ok(SwapResponse { checkpoint: active, model, previous_checkpoint_id: before.checkpoint_id(), load_seconds })
}

/// Activate a checkpoint
///
/// Loads the registered checkpoint beside the served one and swaps it in: new requests
/// go to it, running ones finish on the old model. No request fails because of a swap.
#[utoipa::path(
    post,
    path = "/admin/checkpoints/{id}/activate",
    tag = "admin",
    params(("id" = i64, Path, description = "Checkpoint id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = SwapResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Admin routes disabled", body = ErrorBody),
        (status = 404, description = "No such checkpoint", body = ErrorBody),
        (status = 409, description = "This server cannot load checkpoints (no loader configured)", body = ErrorBody),
        (status = 422, description = "The checkpoint failed to load (marked failed; the old model keeps serving)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn activate_checkpoint(State(state): State<AppState>, headers: HeaderMap, super::ApiPath(id): super::ApiPath<i64>) -> Result<Json<SwapResponse>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(activate(&state, id).await?))
}

/// Roll back
///
/// Re-activates the parent of the served checkpoint.
#[utoipa::path(
    post,
    path = "/admin/rollback",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, body = SwapResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Admin routes disabled", body = ErrorBody),
        (status = 404, description = "The parent checkpoint is not in the database", body = ErrorBody),
        (status = 409, description = "The served checkpoint has no parent, or this server cannot load checkpoints", body = ErrorBody),
        (status = 422, description = "The parent failed to load", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn rollback(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<SwapResponse>, ApiError> {
    authorize(&state, &headers)?;
    let parent = state.current().checkpoint.as_ref().and_then(|c| c.parent_id);
    let Some(parent) = parent else {
        return Err(ApiError::Conflict("the served checkpoint has no parent to roll back to".into()));
    };
    Ok(Json(activate(&state, parent).await?))
}

/// `--follow`: activates every checkpoint a trainer announces on Postgres'
/// `srlm_checkpoints` channel. Every replica listening does the same.
pub fn follow(state: AppState) {
    tokio::spawn(async move {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(state.store.pool()).await {
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
                        Ok(id) => match activate(&state, id).await {
                            Ok(swap) => tracing::info!(checkpoint_id = id, load_seconds = swap.load_seconds, "followed a new checkpoint"),
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
