//! HTTP only: routes, request/response types, errors, OpenAPI.

pub mod chat;
pub mod completions;
pub mod error;
pub mod generate;
pub mod health;
pub mod judge;
pub mod logprobs;
pub mod models;
pub mod records;
pub mod sampling;
pub mod stream;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request};
use axum::Router;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, RwLock, Semaphore};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::engine::SharedEngine;
use crate::judge::{JudgeTemplate, PairPolicy};
use crate::store::{Checkpoint, Store};
pub use error::ApiError;

/// Request limits; each one is named in the error a client gets when it is exceeded.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_n: usize,
    pub max_tokens: usize,
    pub default_max_tokens: usize,
    pub max_top_logprobs: usize,
    pub max_stop: usize,
    /// Largest number of judge samples per candidate.
    pub max_judge_samples: usize,
    /// Requests admitted at once (running or waiting for the engine); more get 429.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_n: 16,
            max_tokens: 4096,
            default_max_tokens: 512,
            max_top_logprobs: 20,
            max_stop: 4,
            max_judge_samples: 16,
            max_in_flight: 256,
        }
    }
}

/// Everything handlers share.
#[derive(Clone)]
pub struct AppState {
    pub engine: SharedEngine,
    pub store: Store,
    /// The checkpoints row of the served model, once the database has it.
    pub checkpoint: Arc<RwLock<Option<Checkpoint>>>,
    pub limits: Arc<Limits>,
    /// The judge prompt (`--judge-template`).
    pub judge_template: Arc<JudgeTemplate>,
    /// Pair policy of `/generate` requests that give none (`--min-margin`, `--length-band`).
    pub pair_policy: PairPolicy,
    admission: Arc<Semaphore>,
    /// Unix time the model was loaded (`created` in `/v1/models`).
    pub started_at: i64,
}

impl AppState {
    pub fn new(engine: SharedEngine, store: Store, limits: Limits) -> Self {
        Self {
            engine,
            store,
            checkpoint: Arc::new(RwLock::new(None)),
            admission: Arc::new(Semaphore::new(limits.max_in_flight)),
            judge_template: Arc::new(JudgeTemplate::default()),
            pair_policy: PairPolicy::default(),
            limits: Arc::new(limits),
            started_at: chrono::Utc::now().timestamp(),
        }
    }

    /// A place in the admission queue, or 429 at once when it is full. The permit lives
    /// as long as the request, streams included.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded { limit: self.limits.max_in_flight })
    }

    /// The served checkpoint's row id, once the database has it.
    pub async fn checkpoint_id(&self) -> Option<i64> {
        self.checkpoint.read().await.as_ref().map(|c| c.id)
    }

    /// The served checkpoint's id when recording is possible: the checkpoint is
    /// registered and the database answers; 503 otherwise, before any work is done.
    pub async fn recording_checkpoint(&self) -> Result<i64, ApiError> {
        let id = self.checkpoint_id().await.ok_or_else(|| {
            ApiError::DatabaseUnavailable("the served checkpoint is not registered in the database yet".into())
        })?;
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.store.ping()).await {
            Ok(Ok(())) => Ok(id),
            Ok(Err(err)) => Err(ApiError::DatabaseUnavailable(err.to_string())),
            Err(_) => Err(ApiError::DatabaseUnavailable("no answer within 2 s".into())),
        }
    }

    /// Resolves the `model` a client named: the served model's name or `current`.
    pub fn check_model(&self, requested: &str) -> Result<(), ApiError> {
        let name = &self.engine.info().name;
        if requested == name || requested == models::CURRENT_ALIAS {
            Ok(())
        } else {
            Err(ApiError::ModelNotFound(requested.to_string()))
        }
    }
}

/// Runs every generation to the end (concurrently, so the engine can batch them),
/// adds up their usage and records the tokens in the request's span.
pub(crate) async fn complete_all(
    engine: &dyn crate::engine::Engine,
    generations: Vec<crate::engine::Generation>,
) -> Result<(Vec<(crate::engine::Completion, crate::engine::Finish)>, chat::Usage), ApiError> {
    let completions =
        futures::future::try_join_all(generations.into_iter().map(|g| crate::engine::complete(engine, g))).await?;
    let mut usage = chat::Usage::default();
    let done = completions
        .into_iter()
        .map(|c| {
            let finish = c.finish.expect("complete() returns a finish");
            usage.add(&finish);
            (c, finish)
        })
        .collect();
    tracing::Span::current().record("tokens", usage.completion_tokens);
    Ok((done, usage))
}

/// `axum::Json` whose rejections come back in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match ApiError::from(rejection) {
                ApiError::BodyTooLarge { .. } => ApiError::BodyTooLarge { limit: state.limits.max_body_bytes },
                other => other,
            }),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "srlm",
        description = "Self-Rewarding Language Models as infrastructure: an OpenAI-compatible server \
                       whose model answers, judges its own answers and is retrained on them."
    ),
    tags(
        (name = "openai", description = "OpenAI-compatible inference"),
        (name = "self-rewarding", description = "Candidates, self-judging and preference pairs (also under /v1/generate and /v1/judge)"),
        (name = "records", description = "What /generate and /judge recorded, for spot-checking"),
        (name = "ops", description = "Liveness and readiness")
    )
)]
struct ApiDoc;

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(chat::router())
        .merge(completions::router())
        .merge(models::router())
        .merge(generate::router())
        .merge(judge::router())
        .merge(records::router())
        .merge(health::router())
}

/// The OpenAPI document the code describes (committed as `openapi/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The whole HTTP stack: routes, Swagger UI at `/docs`, the spec at `/openapi.json`,
/// body limit and a tracing span per request.
pub fn app(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    let (router, spec) = routes().split_for_parts();
    router
        .route("/v1/generate", axum::routing::post(generate::generate))
        .route("/v1/judge", axum::routing::post(judge::judge))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", spec))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req.extensions().get::<MatchedPath>().map_or(req.uri().path(), |p| p.as_str());
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        route = %route,
                        status = tracing::field::Empty,
                        latency_ms = tracing::field::Empty,
                        tokens = tracing::field::Empty,
                    )
                })
                .on_response(|res: &axum::response::Response, latency: std::time::Duration, span: &tracing::Span| {
                    span.record("status", res.status().as_u16());
                    span.record("latency_ms", latency.as_millis() as u64);
                    tracing::info!(parent: span, "response");
                })
                .on_eos(|_: Option<&axum::http::HeaderMap>, stream: std::time::Duration, span: &tracing::Span| {
                    tracing::info!(parent: span, stream_ms = stream.as_millis() as u64, "stream end");
                }),
        )
        .with_state(state)
}
