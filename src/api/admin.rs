//! Admin routes: hot-swap the served checkpoint and roll back to its parent (the swap
//! itself is `crate::swap`), and self-instruction on the served model.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState};
pub use crate::protocol::admin::SwapResponse;
use crate::swap::{SwapError, Swapped};

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
    /// Seed prompts (at least 6; default: the server's `--seed-prompts` file).
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
    use crate::selfinstruct::{write_prompts, SelfInstructConfig, Writer};
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
    let defaults = SelfInstructConfig {
        max_attempts: request.max_attempts,
        seed: rand::random(),
        ..SelfInstructConfig::new("", "", state.seed_prompts.clone(), request.count, iteration)
    };
    let completer = crate::client::Answerer::Engine(served.engine.clone());
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

impl From<Swapped> for SwapResponse {
    fn from(s: Swapped) -> Self {
        Self { checkpoint: s.checkpoint, model: s.model, previous_checkpoint_id: s.previous_checkpoint_id, load_seconds: s.load_seconds }
    }
}

impl From<SwapError> for ApiError {
    fn from(err: SwapError) -> Self {
        match err {
            SwapError::NotFound(_) => Self::NotFound(err.to_string()),
            SwapError::NoLoader | SwapError::NoParent => Self::Conflict(err.to_string()),
            SwapError::LoadFailed(message) => Self::LoadFailed(message),
            SwapError::Store(e) => e.into(),
        }
    }
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
pub async fn activate_checkpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    super::ApiPath(id): super::ApiPath<i64>,
) -> Result<Json<SwapResponse>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.slot.activate(id).await?.into()))
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
    Ok(Json(state.slot.rollback().await?.into()))
}
