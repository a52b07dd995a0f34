//! HTTP only: routes, request/response types, errors, OpenAPI.

pub mod admin;
pub mod auth;
pub mod chat;
pub mod completions;
pub mod error;
pub mod generate;
pub mod health;
pub mod judge;
pub mod lineage;
pub mod logprobs;
pub mod metrics;
pub mod models;
pub mod records;
pub mod sampling;
pub mod spec;
pub mod stream;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::Router;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::engine::SharedEngine;
use crate::judge::{JudgeTemplate, PairPolicy};
use crate::store::Store;
use crate::swap::ServedSlot;
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
    /// Most prompts one self-instruction call may ask for; it may spend ten generations
    /// per prompt (`max_attempts`).
    pub max_self_instruct: usize,
    /// Requests admitted at once (running or waiting for the engine); more get 429.
    pub max_in_flight: usize,
    /// Longest a request may take to its response head; 504 beyond.
    pub request_timeout: std::time::Duration,
    /// Most prompt tokens (after the chat template); none = the model's context.
    pub max_prompt_tokens: Option<usize>,
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
            max_self_instruct: 256,
            max_in_flight: 256,
            request_timeout: std::time::Duration::from_secs(600),
            max_prompt_tokens: None,
        }
    }
}

pub use crate::swap::{EngineLoader, Served};

/// The request checks that need the served model.
pub(crate) trait ServedChecks {
    /// 400 naming `field` when `prompt` (rendered with the chat template) has more tokens
    /// than `limit`.
    async fn check_prompt_tokens(&self, limit: Option<usize>, prompt: &crate::engine::Prompt, field: &str) -> Result<(), ApiError>;
    /// Resolves the `model` a client named: the served model's name or `current`.
    fn check_model(&self, requested: &str) -> Result<(), ApiError>;
}

impl ServedChecks for Served {
    async fn check_prompt_tokens(&self, limit: Option<usize>, prompt: &crate::engine::Prompt, field: &str) -> Result<(), ApiError> {
        let Some(limit) = limit else { return Ok(()) };
        let Some(text) = prompt.text(self.engine.vocab()).map_err(|e| ApiError::field(field, e.to_string()))? else {
            return Ok(());
        };
        let tokens = self.engine.tokenize(&text).await?.len();
        if tokens > limit {
            return Err(ApiError::field(
                field,
                format!("the prompt has {tokens} tokens; this server takes at most {limit} (--max-prompt-tokens)"),
            ));
        }
        Ok(())
    }

    fn check_model(&self, requested: &str) -> Result<(), ApiError> {
        let name = &self.engine.info().name;
        if requested == name || requested == models::CURRENT_ALIAS {
            Ok(())
        } else {
            Err(ApiError::ModelNotFound(requested.to_string()))
        }
    }
}

/// Everything handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The served model; swaps go through it (`crate::swap`).
    pub slot: ServedSlot,
    pub store: Store,
    pub limits: Arc<Limits>,
    /// The judge prompt (`--judge-template`).
    pub judge_template: Arc<JudgeTemplate>,
    /// Pair policy of `/generate` requests that give none (`--min-margin`, `--length-band`).
    pub pair_policy: PairPolicy,
    admission: Arc<Semaphore>,
    /// Unix time the model was loaded (`created` in `/v1/models`).
    pub started_at: i64,
    /// Bearer token of the admin routes; none means they are disabled.
    pub admin_token: Option<Arc<String>>,
    /// Seed prompts of `/admin/self-instruct` requests that give none (`--seed-prompts`).
    pub seed_prompts: std::path::PathBuf,
    /// Keys the other routes require; none means they are open.
    pub api_keys: Option<Arc<auth::ApiKeys>>,
}

impl AppState {
    pub fn new(engine: SharedEngine, store: Store, limits: Limits) -> Self {
        Self {
            slot: ServedSlot::new(engine, store.clone()),
            store,
            admin_token: None,
            seed_prompts: crate::selfinstruct::DEFAULT_SEED_PROMPTS.into(),
            api_keys: None,
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
        self.admission.clone().try_acquire_owned().map_err(|_| {
            crate::metrics::rejected("overloaded");
            ApiError::Overloaded { limit: self.limits.max_in_flight }
        })
    }

    /// Requests admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.limits.max_in_flight.saturating_sub(self.admission.available_permits())
    }

    /// What is being served now.
    pub fn current(&self) -> Arc<Served> {
        self.slot.current()
    }

    /// The served checkpoint's row id, once the database has it.
    pub fn checkpoint_id(&self) -> Option<i64> {
        self.current().checkpoint_id()
    }

    /// The id of `served`'s checkpoint when recording is possible: the checkpoint is
    /// registered and the database answers; 503 otherwise, before any work is done.
    pub async fn recording_checkpoint(&self, served: &Served) -> Result<i64, ApiError> {
        let id = served
            .checkpoint_id()
            .ok_or_else(|| ApiError::DatabaseUnavailable("the served checkpoint is not registered in the database yet".into()))?;
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.store.ping()).await {
            Ok(Ok(())) => Ok(id),
            Ok(Err(err)) => Err(err.into()),
            Err(_) => Err(ApiError::DatabaseUnavailable("no answer within 2 s".into())),
        }
    }
}

/// Runs every generation to the end (concurrently, so the engine can batch them),
/// adds up their usage and records the tokens in the request's span.
pub(crate) async fn complete_all(
    engine: &dyn crate::engine::Engine,
    generations: Vec<crate::engine::Generation>,
) -> Result<(Vec<(crate::engine::Completion, crate::engine::Finish)>, chat::Usage), ApiError> {
    let completions = futures::future::try_join_all(generations.into_iter().map(|g| crate::engine::complete(engine, g))).await?;
    Ok(tally(completions))
}

/// Pairs each finished completion with its finish and adds up the usage (also recorded
/// on the request's span).
pub(crate) fn tally(completions: Vec<crate::engine::Completion>) -> (Vec<(crate::engine::Completion, crate::engine::Finish)>, chat::Usage) {
    let done: Vec<_> = completions
        .into_iter()
        .map(|c| {
            let finish = c.finish.expect("complete() returns a finish");
            (c, finish)
        })
        .collect();
    let usage = usage_of(done.iter().map(|(_, finish)| finish));
    (done, usage)
}

/// The usage of finished generations, recorded in the request's span.
pub(crate) fn usage_of<'a>(finishes: impl IntoIterator<Item = &'a crate::engine::Finish>) -> chat::Usage {
    let mut usage = chat::Usage::default();
    finishes.into_iter().for_each(|finish| usage.add(finish));
    tracing::Span::current().record("tokens", usage.completion_tokens);
    usage
}

/// `axum::Json` whose rejections come back in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let axum::Json(mut value) =
            axum::Json::<serde_json::Value>::from_request(req, state).await.map_err(|rejection| match ApiError::from(rejection) {
                ApiError::BodyTooLarge { .. } => ApiError::BodyTooLarge { limit: state.limits.max_body_bytes },
                other => other,
            })?;
        integral_floats_as_integers(&mut value);
        serde_path_to_error::deserialize(value).map(Self).map_err(|err| {
            let path = err.path().to_string();
            let detail = err.into_inner();
            if path == "." {
                ApiError::InvalidJson(detail.to_string())
            } else {
                ApiError::field(path.clone(), format!("{path}: {detail}"))
            }
        })
    }
}

/// JSON has one number type: `4.0` is the integer 4 to JSON Schema (and to the spec's
/// clients), so integral numbers are made integers before typed fields read them.
fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(number) => {
            if let Some(x) = number.as_f64().filter(|x| number.is_f64() && x.fract() == 0.0) {
                if x > i64::MIN as f64 && x < i64::MAX as f64 {
                    *value = Value::from(x as i64);
                } else if x >= 0.0 && x < u64::MAX as f64 {
                    *value = Value::from(x as u64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// `axum::extract::Path` whose rejections come back in the API's error shape, naming
/// the parameter (`/prompts/abc` → 400, `param: "id"`).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let param = match e.kind() {
                    ErrorKind::ParseErrorAtKey { key, .. } | ErrorKind::InvalidUtf8InPathParam { key } => Some(key.clone()),
                    // One parameter (`/prompts/{id}`): serde does not say its name; the route does.
                    _ => match axum::extract::RawPathParams::from_request_parts(parts, state).await {
                        Ok(raw) if raw.iter().count() == 1 => raw.iter().next().map(|(key, _)| key.to_string()),
                        _ => None,
                    },
                };
                Err(ApiError::field(param.unwrap_or_else(|| "path".into()), e.body_text()))
            }
            Err(other) => Err(ApiError::field("path", other.body_text())),
        }
    }
}

/// Declares the bearer token the admin routes take.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("admin_token", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        components.add_security_scheme("api_key", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// Marks every operation outside the admin and default open routes as taking an API
/// key (when the server has keys; `--open-routes` can change which are open).
fn declare_api_keys(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::SecurityRequirement;
    let open: Vec<&str> = auth::DEFAULT_OPEN_ROUTES.split(',').collect();
    for (path, item) in openapi.paths.paths.iter_mut() {
        if path.starts_with("/admin/") || open.contains(&path.as_str()) {
            continue;
        }
        let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            operation.security.get_or_insert_with(Vec::new).push(SecurityRequirement::new("api_key", Vec::<String>::new()));
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&SecuritySchemes),
    info(
        title = "srlm",
        description = "Self-Rewarding Language Models as infrastructure: an OpenAI-compatible server \
                       whose model answers, judges its own answers and is retrained on them."
    ),
    tags(
        (name = "openai", description = "OpenAI-compatible inference"),
        (name = "self-rewarding", description = "Candidates, self-judging and preference pairs (also under /v1/generate and /v1/judge)"),
        (name = "records", description = "What /generate and /judge recorded, for spot-checking"),
        (name = "ops", description = "Liveness, readiness and Prometheus metrics"),
        (name = "admin", description = "Checkpoint hot-swap (bearer admin token)")
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
        .merge(admin::router())
        .merge(lineage::router())
        .merge(metrics::router())
}

/// The OpenAPI document the code describes with the default limits (committed as
/// `openapi/openapi.json`).
pub fn openapi() -> serde_json::Value {
    openapi_for(&Limits::default())
}

/// The OpenAPI document of a server with `limits`, as `GET /openapi.json` serves it.
pub fn openapi_for(limits: &Limits) -> serde_json::Value {
    finish_document(routes().into_openapi(), limits)
}

/// utoipa's document with the key requirements, statuses and constraints added.
fn finish_document(mut spec: utoipa::openapi::OpenApi, limits: &Limits) -> serde_json::Value {
    declare_api_keys(&mut spec);
    spec::document(&spec, limits)
}

/// The whole HTTP stack: routes, Swagger UI at `/docs`, the spec at `/openapi.json`,
/// body limit and a tracing span per request.
pub fn app(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    crate::metrics::handle();
    let (router, spec) = routes().split_for_parts();
    // Serialized once: the document only changes with the limits, fixed for the process.
    let spec = axum::body::Bytes::from(serde_json::to_vec(&finish_document(spec, &state.limits)).expect("the OpenAPI document serializes"));
    let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
    router
        .route("/v1/generate", axum::routing::post(generate::generate))
        .route("/v1/judge", axum::routing::post(judge::judge))
        .route("/openapi.json", axum::routing::get(move || std::future::ready((json, spec.clone()))))
        .merge(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
        .fallback(|uri: axum::http::Uri| async move { ApiError::NotFound(format!("no route for {}", uri.path())) })
        .method_not_allowed_fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            ApiError::MethodNotAllowed(format!("{} does not take {method}", uri.path()))
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), deadline))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_api_key))
        .layer(axum::middleware::from_fn(metrics::track))
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

/// Ends a request that has not produced its response head within the limit: the handler
/// is dropped, which cancels its generations, and the client gets a 504.
async fn deadline(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = state.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::TimedOut { seconds: limit.as_secs() }.into_response(),
    }
}
