//! One error type for every handler, rendered in OpenAI's error shape:
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::engine::EngineError;
pub use crate::protocol::error::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing, has the wrong type, or is out of range.
    #[error("{message}")]
    InvalidField { param: String, message: String },
    /// The body is not JSON, or not of the expected shape.
    #[error("{0}")]
    InvalidJson(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the model `{0}` does not exist; GET /v1/models lists the served model")]
    ModelNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("the server is at its limit of {limit} requests in flight; retry shortly")]
    Overloaded { limit: usize },
    #[error("the request took longer than the server's limit of {seconds} s (--request-timeout-secs)")]
    TimedOut { seconds: u64 },
    #[error("the database is unavailable: {0}")]
    DatabaseUnavailable(String),
    #[error("{0}")]
    Engine(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    /// The request is valid but the state does not allow it (e.g. no parent to roll back to).
    #[error("{0}")]
    Conflict(String),
    /// A checkpoint that could not be loaded; the old model keeps serving.
    #[error("{0}")]
    LoadFailed(String),
    /// Logged once, never shown to the client.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// A database error is logged whole and answered as 503 without the driver's text (it
/// can name tables, constraints and hosts).
impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        tracing::warn!(error = %err, "database error");
        Self::DatabaseUnavailable("the database did not answer the request; nothing was recorded".into())
    }
}

impl ApiError {
    pub fn field(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField { param: param.into(), message: message.into() }
    }

    /// 400 for a loop iteration below 0.
    pub fn check_iteration(iteration: Option<i32>) -> Result<(), Self> {
        match iteration {
            Some(i) if i < 0 => Err(Self::field("iteration", format!("iteration must be 0 or more, got {i}"))),
            _ => Ok(()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidField { .. } | Self::InvalidJson(_) | Self::Engine(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::LoadFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body clients see.
    pub fn body(&self) -> ErrorBody {
        let (kind, code, param) = match self {
            Self::InvalidField { param, .. } => ("invalid_request_error", "invalid_value", Some(param.clone())),
            Self::InvalidJson(_) => ("invalid_request_error", "invalid_json", None),
            Self::BodyTooLarge { .. } => ("invalid_request_error", "body_too_large", None),
            Self::UnsupportedMediaType => ("invalid_request_error", "unsupported_media_type", None),
            Self::ModelNotFound(_) => ("invalid_request_error", "model_not_found", Some("model".into())),
            Self::NotFound(_) => ("invalid_request_error", "not_found", None),
            Self::MethodNotAllowed(_) => ("invalid_request_error", "method_not_allowed", None),
            Self::Overloaded { .. } => ("server_overloaded", "too_many_requests", None),
            Self::TimedOut { .. } => ("server_error", "timeout", None),
            Self::DatabaseUnavailable(_) => ("service_unavailable", "database_unavailable", None),
            Self::Engine(_) => ("invalid_request_error", "engine_rejected", None),
            Self::Unauthorized => ("authentication_error", "invalid_token", None),
            Self::Forbidden(_) => ("permission_error", "forbidden", None),
            Self::Conflict(_) => ("invalid_request_error", "conflict", None),
            Self::LoadFailed(_) => ("invalid_request_error", "checkpoint_load_failed", None),
            Self::Internal(_) => ("server_error", "internal_error", None),
        };
        ErrorBody { error: ErrorDetail { message: self.to_string(), kind: kind.into(), param, code: Some(code.into()) } }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Invalid(msg) => Self::Engine(msg),
            EngineError::Internal(msg) => Self::Internal(anyhow::anyhow!(msg)),
        }
    }
}

impl From<crate::generation::GenerationError> for ApiError {
    fn from(err: crate::generation::GenerationError) -> Self {
        match err {
            crate::generation::GenerationError::Engine(e) => e.into(),
            crate::generation::GenerationError::Store(e) => e.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::BodyTooLarge { limit: 0 },
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            _ => {
                let text = rejection.body_text();
                // axum reports serde's path first: "…target type: messages[0].role: missing field".
                match json_error_path(&text) {
                    Some((param, detail)) => Self::field(param.clone(), format!("{param}: {detail}")),
                    None => Self::InvalidJson(text),
                }
            }
        }
    }
}

fn json_error_path(text: &str) -> Option<(String, String)> {
    let rest = text.split_once("target type: ")?.1;
    let (path, detail) = rest.split_once(": ")?;
    let looks_like_path = !path.is_empty() && !path.contains(' ') && path != ".";
    looks_like_path.then(|| (path.to_string(), detail.to_string()))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(err) = &self {
            tracing::error!(error = ?err, "internal error");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_paths_become_the_param() {
        let (param, detail) =
            json_error_path("Failed to deserialize the JSON body into the target type: messages[0].role: missing field `role` at line 1")
                .unwrap();
        assert_eq!(param, "messages[0].role");
        assert!(detail.starts_with("missing field"));
        assert!(json_error_path("Failed to parse the request body as JSON: expected value").is_none());
    }

    #[test]
    fn internal_errors_are_not_echoed() {
        let err = ApiError::Internal(anyhow::anyhow!("password=hunter2"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.body().error.message.contains("hunter2"));
    }
}
