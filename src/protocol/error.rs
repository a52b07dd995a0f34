//! The one error shape of every route (OpenAI's).

use serde::Serialize;
use utoipa::ToSchema;

/// OpenAI's error envelope.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, naming the field and the limit where one applies.
    pub message: String,
    /// Error class, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The offending request field, when there is one.
    pub param: Option<String>,
    /// A stable machine-readable code, e.g. `invalid_value`.
    pub code: Option<String>,
}
