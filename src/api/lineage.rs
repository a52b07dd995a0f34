//! Lineage: for a checkpoint, its parent, iteration, the run that trained it, the pairs
//! it was trained on and the prompts those came from.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::store::training::RunRow;
use crate::store::Checkpoint;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_checkpoint))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckpointLineage {
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    pub parent: Option<Checkpoint>,
    /// The run that produced it (none for a checkpoint registered by `srlm serve`).
    pub training_run: Option<RunRow>,
    /// Ids of the pairs it was trained on.
    pub pair_ids: Vec<i64>,
    /// Ids of the prompts of those pairs.
    pub prompt_ids: Vec<i64>,
    /// The failure that kept it from being served, if any.
    pub error: Option<String>,
}

/// A checkpoint and its lineage
#[utoipa::path(
    get,
    path = "/checkpoints/{id}",
    tag = "records",
    params(("id" = i64, Path, description = "Checkpoint id")),
    responses(
        (status = 200, body = CheckpointLineage),
        (status = 404, description = "No such checkpoint", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn get_checkpoint(
    State(state): State<AppState>,
    super::ApiPath(id): super::ApiPath<i64>,
) -> Result<Json<CheckpointLineage>, ApiError> {
    let store = &state.store;
    let checkpoint = store.checkpoint(id).await?.ok_or_else(|| ApiError::NotFound(format!("checkpoint {id} does not exist")))?;
    let parent = match checkpoint.parent_id {
        Some(p) => store.checkpoint(p).await?,
        None => None,
    };
    let run = store.run_producing(id).await?;
    let (pair_ids, prompt_ids) = match &run {
        Some(r) => store.pairs_of_run(r.id).await?,
        None => (Vec::new(), Vec::new()),
    };
    Ok(Json(CheckpointLineage { checkpoint, parent, training_run: run, pair_ids, prompt_ids, error: store.checkpoint_error(id).await? }))
}
