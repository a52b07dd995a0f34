//! Optional API keys for the inference, self-rewarding and record routes
//! (`Authorization: Bearer <key>`), compared in constant time. Admin routes take the
//! separate admin token instead; the open routes (by default `/health`, `/ready`,
//! `/metrics` and the docs) need nothing.

use std::path::Path;

use anyhow::{Context, Result};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// Routes open without a key unless `--open-routes` says otherwise.
pub const DEFAULT_OPEN_ROUTES: &str = "/health,/ready,/metrics,/docs,/openapi.json";

#[derive(Debug, Clone)]
pub struct ApiKeys {
    keys: Vec<String>,
    /// Paths served without a key: exact matches, or prefixes ending in `/`.
    open: Vec<String>,
}

impl ApiKeys {
    /// Keys from a file (one per line; blank lines and `#` comments skipped) and from a
    /// comma-separated list; `None` when there are none (no authentication).
    pub fn load(file: Option<&Path>, list: Option<&str>, open_routes: &str) -> Result<Option<Self>> {
        let mut keys: Vec<String> = list.unwrap_or_default().split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading API keys from {}", path.display()))?;
            keys.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
        }
        let open = open_routes.split(',').map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect();
        Ok((!keys.is_empty()).then_some(Self { keys, open }))
    }

    fn is_open(&self, path: &str) -> bool {
        self.open.iter().any(|r| path == r || path.starts_with(&format!("{}/", r.trim_end_matches('/'))))
    }

    /// Whether `given` is one of the keys; every key is compared, each in constant time.
    pub fn accepts(&self, given: &str) -> bool {
        self.keys.iter().fold(false, |found, key| found | bool::from(given.as_bytes().ct_eq(key.as_bytes())))
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> &str {
    headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("")
}

/// Refuses requests without a valid key (401 with `WWW-Authenticate: Bearer`), except on
/// open and admin routes.
pub async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(keys) = state.api_keys.as_deref() else { return next.run(request).await };
    let path = request.uri().path();
    if path.starts_with("/admin/") || keys.is_open(path) || keys.accepts(bearer(request.headers())) {
        return next.run(request).await;
    }
    let mut response = ApiError::Unauthorized.into_response();
    response.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_a_file_and_a_list_and_open_routes_match_whole_segments() {
        let path = std::env::temp_dir().join(format!("srlm-keys-{}", std::process::id()));
        std::fs::write(&path, "# team keys\nsk-file-1\n\n  sk-file-2  \n").unwrap();
        let keys = ApiKeys::load(Some(&path), Some("sk-env, ,"), DEFAULT_OPEN_ROUTES).unwrap().unwrap();
        std::fs::remove_file(&path).unwrap();
        for good in ["sk-env", "sk-file-1", "sk-file-2"] {
            assert!(keys.accepts(good), "{good}");
        }
        for bad in ["", "sk-file", "sk-file-22", "# team keys", "sk-env "] {
            assert!(!keys.accepts(bad), "{bad:?}");
        }
        assert!(keys.is_open("/health") && keys.is_open("/docs/") && keys.is_open("/docs/index.html"));
        assert!(!keys.is_open("/healthz") && !keys.is_open("/v1/chat/completions") && !keys.is_open("/documents"));
        assert!(ApiKeys::load(None, None, DEFAULT_OPEN_ROUTES).unwrap().is_none(), "no keys, no authentication");
        assert!(ApiKeys::load(None, Some(" , "), DEFAULT_OPEN_ROUTES).unwrap().is_none());
    }
}
