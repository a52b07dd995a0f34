//! Sampling fields shared by the completion endpoints.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Up to 4 sequences where generation stops; the sequence itself is not returned.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}
