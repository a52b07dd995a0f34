//! `GET /v1/models`: the active checkpoint, under its name and the alias `current`.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState};
pub use crate::protocol::models::{ModelCard, ModelList};

/// Clients may always ask for the model being served by this name.
pub const CURRENT_ALIAS: &str = "current";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_models)).routes(routes!(get_model))
}

async fn cards(state: &AppState) -> Vec<ModelCard> {
    let served = state.current();
    let info = served.engine.info();
    let checkpoint_id = served.checkpoint_id();
    [info.name.as_str(), CURRENT_ALIAS]
        .into_iter()
        .map(|id| ModelCard {
            id: id.to_string(),
            object: "model".into(),
            created: state.started_at,
            owned_by: "srlm".into(),
            checkpoint_id,
            engine: info.engine.clone(),
        })
        .collect()
}

/// List models (OpenAI-compatible)
///
/// The active checkpoint, under its own name and as `current`.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, body = ModelList)))]
pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList { object: "list".into(), data: cards(&state).await })
}

/// Retrieve a model (OpenAI-compatible)
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    tag = "openai",
    params(("model" = String, Path, description = "The model's name or `current`")),
    responses((status = 200, body = ModelCard), (status = 404, description = "Unknown model", body = ErrorBody))
)]
pub async fn get_model(State(state): State<AppState>, super::ApiPath(model): super::ApiPath<String>) -> Result<Json<ModelCard>, ApiError> {
    cards(&state).await.into_iter().find(|c| c.id == model).map(Json).ok_or(ApiError::ModelNotFound(model))
}
