//! `GET /v1/models`: the served model.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A model the server answers for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelCard {
    /// The name to put in `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix time the model was loaded.
    pub created: i64,
    /// Always `srlm`.
    pub owned_by: String,
    /// The checkpoint row in the database, once registered.
    pub checkpoint_id: Option<i64>,
    /// `mistralrs` or `native`.
    pub engine: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<ModelCard>,
}
