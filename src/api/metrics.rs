//! `GET /metrics` (Prometheus text exposition of `crate::metrics`' recorder) and the
//! middleware that counts and times every request by route and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge, histogram};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::metrics::{handle, ACTIVE_CHECKPOINT, IN_FLIGHT, REQUESTS, REQUEST_SECONDS};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let handle = handle();
    gauge!(IN_FLIGHT).set(state.in_flight() as f64);
    gauge!(ACTIVE_CHECKPOINT).set(state.checkpoint_id().unwrap_or(0) as f64);
    handle.run_upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}

/// Counts every request by matched route and status and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    counter!(REQUESTS, "route" => route.clone(), "status" => response.status().as_u16().to_string()).increment(1);
    histogram!(REQUEST_SECONDS, "route" => route).record(started.elapsed().as_secs_f64());
    response
}
