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

/// Who sent a request: the label of its API key (`label:key` lines of the keys file;
/// `api-key` for keys given without one), or `anonymous` on a server without keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

#[derive(Debug, Clone)]
pub struct ApiKeys {
    /// (label, key).
    keys: Vec<(String, String)>,
    /// Paths served without a key: exact matches, or prefixes ending in `/`.
    open: Vec<String>,
}

impl ApiKeys {
    /// Keys from a file (one per line, `label:key` or a bare key; blank lines and `#`
    /// comments skipped) and from a comma-separated list; `None` when there are none (no
    /// authentication).
    pub fn load(file: Option<&Path>, list: Option<&str>, open_routes: &str) -> Result<Option<Self>> {
        let unlabelled = |k: &str| ("api-key".to_string(), k.to_string());
        let mut keys: Vec<(String, String)> =
            list.unwrap_or_default().split(',').map(str::trim).filter(|k| !k.is_empty()).map(unlabelled).collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading API keys from {}", path.display()))?;
            keys.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(|l| match l.split_once(':') {
                Some((label, key)) if !label.trim().is_empty() && !key.trim().is_empty() => {
                    (label.trim().to_string(), key.trim().to_string())
                }
                _ => unlabelled(l),
            }));
        }
        let open = open_routes.split(',').map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect();
        Ok((!keys.is_empty()).then_some(Self { keys, open }))
    }

    fn is_open(&self, path: &str) -> bool {
        self.open.iter().any(|r| path == r || path.starts_with(&format!("{}/", r.trim_end_matches('/'))))
    }

    /// Whether `given` is one of the keys; every key is compared, each in constant time.
    pub fn accepts(&self, given: &str) -> bool {
        self.label_of(given).is_some()
    }

    /// The label of key `given`, if it is one; every key is compared in constant time.
    pub fn label_of(&self, given: &str) -> Option<&str> {
        self.keys
            .iter()
            .fold(None, |found, (label, key)| if bool::from(given.as_bytes().ct_eq(key.as_bytes())) { Some(label.as_str()) } else { found })
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> &str {
    headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("")
}

/// Refuses requests without a valid key (401 with `WWW-Authenticate: Bearer`), except on
/// open and admin routes.
pub async fn require_api_key(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(keys) = state.api_keys.as_deref() else {
        request.extensions_mut().insert(Caller("anonymous".into()));
        return next.run(request).await;
    };
    let path = request.uri().path();
    let label = keys.label_of(bearer(request.headers())).map(str::to_string);
    if path.starts_with("/admin/") || keys.is_open(path) || label.is_some() {
        request.extensions_mut().insert(Caller(label.unwrap_or_else(|| "anonymous".into())));
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
        std::fs::write(&path, "# team keys\nsk-file-1\n\n  sk-file-2  \nana: sk-ana\n").unwrap();
        let keys = ApiKeys::load(Some(&path), Some("sk-env, ,"), DEFAULT_OPEN_ROUTES).unwrap().unwrap();
        std::fs::remove_file(&path).unwrap();
        for good in ["sk-env", "sk-file-1", "sk-file-2", "sk-ana"] {
            assert!(keys.accepts(good), "{good}");
        }
        assert_eq!((keys.label_of("sk-ana"), keys.label_of("sk-file-1"), keys.label_of("ana")), (Some("ana"), Some("api-key"), None));
        for bad in ["", "sk-file", "sk-file-22", "# team keys", "sk-env "] {
            assert!(!keys.accepts(bad), "{bad:?}");
        }
        assert!(keys.is_open("/health") && keys.is_open("/docs/") && keys.is_open("/docs/index.html"));
        assert!(!keys.is_open("/healthz") && !keys.is_open("/v1/chat/completions") && !keys.is_open("/documents"));
        assert!(ApiKeys::load(None, None, DEFAULT_OPEN_ROUTES).unwrap().is_none(), "no keys, no authentication");
        assert!(ApiKeys::load(None, Some(" , "), DEFAULT_OPEN_ROUTES).unwrap().is_none());
    }
}
