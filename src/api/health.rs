//! `GET /health` (liveness) and `GET /ready` (model loaded, database answering).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
pub use crate::protocol::health::{Health, Readiness};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(ready))
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
