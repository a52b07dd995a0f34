//! `GET /health` and `GET /ready`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
