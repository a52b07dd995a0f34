//! `GET /health` (liveness) and `GET /ready` (model loaded, database answering).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(ready))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Readiness of the server and what it depends on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// The served model's name.
    pub model: String,
    /// The engine serving it: `native` or `mistralrs`.
    pub engine: String,
    /// Where it runs: `cpu`, `cuda:0`, …
    pub device: String,
    /// The weight types it serves, most matrices first: `q4_1, q8_0` (the native
    /// engine's 4-bit kernels on the file's own blocks), `q8_0`, …
    pub weights: String,
    /// The checkpoint row of the served model, once registered.
    pub checkpoint_id: Option<i64>,
    /// `ok`, or what is wrong with the database.
    pub database: String,
}

/// Liveness
///
/// 200 while the process serves HTTP.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Readiness
///
/// 200 when the model is loaded, the database answers and the served checkpoint is
/// registered; 503 otherwise, saying which.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, description = "Not ready", body = Readiness))
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let served = state.current();
    let checkpoint_id = served.checkpoint_id();
    let database = match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) if checkpoint_id.is_some() => "ok".to_string(),
        Ok(Ok(())) => "connected; the served checkpoint is not registered yet".to_string(),
        Ok(Err(err)) => format!("unavailable: {err}"),
        Err(_) => "unavailable: no answer within 2 s".to_string(),
    };
    let is_ready = database == "ok";
    let status = if is_ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness {
        status: if is_ready { "ready" } else { "not_ready" }.into(),
        model: served.engine.info().name.clone(),
        engine: served.engine.info().engine.clone(),
        device: served.engine.info().device.clone(),
        weights: served.engine.info().weights.clone(),
        checkpoint_id,
        database,
    };
    (status, Json(body))
}
