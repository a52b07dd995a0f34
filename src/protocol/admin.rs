//! The admin routes' answers (`/admin/...`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::Checkpoint;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SwapResponse {
    /// The checkpoint now serving.
    pub checkpoint: Checkpoint,
    /// The model name clients see for it.
    pub model: String,
    pub previous_checkpoint_id: Option<i64>,
    /// Seconds spent loading the new model (0 when it was already serving).
    pub load_seconds: f64,
}
