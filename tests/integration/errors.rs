//! Bad input gets a 4xx in OpenAI's error shape, naming the field and the limit.

use serde_json::{json, Value};
use srlm::store::Store;
use srlm::{AppState, Limits};
use tower::ServiceExt;

use crate::common::{greedy_chat, rt, server};

fn assert_error(status: u16, body: &Value, want_status: u16, param: Option<&str>, needle: &str) {
    assert_eq!(status, want_status, "{body}");
    let error = &body["error"];
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "error.{field} present: {body}");
    }
    if let Some(param) = param {
        assert_eq!(error["param"], param, "{body}");
    }
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} should mention {needle:?}");
}

#[test]
fn each_bad_field_gets_a_400_naming_it_and_its_limit() {
    rt().block_on(async {
        let s = server();
        let cases: Vec<(Value, Option<&str>, &str)> = vec![
            (json!({"temperature": 2.5}), Some("temperature"), "between 0 and 2"),
            (json!({"temperature": -1}), Some("temperature"), "between 0 and 2"),
            (json!({"top_p": 0}), Some("top_p"), "greater than 0"),
            (json!({"top_p": 1.5}), Some("top_p"), "at most 1"),
            (json!({"n": 0}), Some("n"), "between 1 and 16"),
            (json!({"n": 1000}), Some("n"), "between 1 and 16"),
            (json!({"max_tokens": 0}), Some("max_tokens"), "between 1 and 4096"),
            (json!({"max_tokens": 100000}), Some("max_tokens"), "between 1 and 4096"),
            (json!({"max_completion_tokens": -3}), Some("max_completion_tokens"), "between 1 and 4096"),
            (json!({"messages": []}), Some("messages"), "at least 1 message"),
            (json!({"messages": [{"role": "wizard", "content": "hi"}]}), Some("messages[0].role"), "must be one of"),
            (json!({"top_logprobs": 3}), Some("top_logprobs"), "requires logprobs"),
            (json!({"logprobs": true, "top_logprobs": 50}), Some("top_logprobs"), "between 0 and 20"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), Some("stop"), "at most 4"),
            (json!({"temperature": "hot"}), Some("temperature"), "invalid type"),
        ];
        for (patch, param, needle) in cases {
            let mut request = greedy_chat("hi", 4);
            for (k, v) in patch.as_object().unwrap() {
                request[k] = v.clone();
            }
            let (status, body) = s.post("/v1/chat/completions", &request).await;
            assert_error(status, &body, 400, param, needle);
        }
    });
}

#[test]
fn malformed_bodies_unknown_models_and_missing_fields() {
    rt().block_on(async {
        let s = server();
        let (status, body) = s.post_raw("/v1/chat/completions", b"{\"model\": ".to_vec(), "application/json").await;
        assert_error(status, &body, 400, None, "JSON");
        assert_eq!(body["error"]["type"], "invalid_request_error");

        let (status, body) = s.post("/v1/chat/completions", &json!({"model": "current"})).await;
        assert_error(status, &body, 400, None, "messages");

        let mut request = greedy_chat("hi", 4);
        request["model"] = json!("gpt-17");
        let (status, body) = s.post("/v1/chat/completions", &request).await;
        assert_error(status, &body, 404, Some("model"), "gpt-17");
        assert_eq!(body["error"]["code"], "model_not_found");

        let (status, body) = s.post_raw("/v1/chat/completions", b"hello".to_vec(), "text/plain").await;
        assert_error(status, &body, 415, None, "JSON");

        let (status, body) = s.post("/v1/completions", &json!({"model": "current", "prompt": "x", "logprobs": 9})).await;
        assert_error(status, &body, 400, Some("logprobs"), "between 0 and 5");
        let (status, body) = s.post("/v1/completions", &json!({"model": "current", "prompt": "x", "echo": true})).await;
        assert_error(status, &body, 400, Some("echo"), "not supported");
        let (status, body) = s.post("/v1/completions", &json!({"model": "current", "prompt": []})).await;
        assert_error(status, &body, 400, Some("prompt"), "at least 1");
    });
}

#[test]
fn bad_paths_queries_routes_and_methods_get_the_error_shape_too() {
    rt().block_on(async {
        let s = server();
        let get = |path: &'static str| async move {
            let (status, text) = s.get(path).await;
            let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: JSON body, got {status}: {text}"));
            (status, body)
        };
        let (status, body) = get("/prompts/abc").await;
        assert_error(status, &body, 400, Some("id"), "abc");
        let (status, body) = get("/checkpoints/1.5").await;
        assert_error(status, &body, 400, Some("id"), "1.5");
        let (status, body) = get("/pairs?limit=ten").await;
        assert_error(status, &body, 400, Some("limit"), "invalid digit");
        let (status, body) = get("/prompts?iteration=-1").await;
        assert_error(status, &body, 400, Some("iteration"), "0 or more");
        let (status, body) = get("/no/such/route").await;
        assert_error(status, &body, 404, None, "/no/such/route");
        let (status, body) = get("/v1/chat/completions").await;
        assert_error(status, &body, 405, None, "GET");
        let (status, body) = s.post_raw("/judge", b"{}".to_vec(), "text/plain").await;
        assert_error(status, &body, 415, None, "JSON");
        let (status, body) = s.post("/judge", &json!({"candidate_id": 1, "prompt": "hi"})).await;
        assert_error(status, &body, 400, Some("candidate_id"), "alone");
    });
}

#[test]
fn oversized_bodies_get_413_with_the_limit() {
    rt().block_on(async {
        let s = server();
        let big = "x".repeat(s.state.limits.max_body_bytes + 10);
        let (status, body) = s.post("/v1/chat/completions", &greedy_chat(&big, 4)).await;
        assert_error(status, &body, 413, None, &s.state.limits.max_body_bytes.to_string());
    });
}

#[test]
fn a_full_admission_queue_answers_429_at_once_with_retry_after() {
    rt().block_on(async {
        let s = server();
        let limits = Limits { max_in_flight: 0, ..crate::common::test_limits() };
        let state = AppState::new(s.state.current().engine.clone(), s.state.store.clone(), limits);
        let request = axum::http::Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(serde_json::to_vec(&greedy_chat("hi", 4)).unwrap()))
            .unwrap();
        let response = srlm::app(state).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("limit of 0 requests"), "{body}");
    });
}

#[test]
fn ready_is_503_when_the_database_is_dead() {
    rt().block_on(async {
        let s = server();
        let dead = Store::connect_lazy("postgres://postgres@127.0.0.1:1/nothing").unwrap();
        let state = AppState::new(s.state.current().engine.clone(), dead, crate::common::test_limits());
        let request = axum::http::Request::get("/ready").body(axum::body::Body::empty()).unwrap();
        let response = srlm::app(state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 503);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["status"], "not_ready");
        assert!(body["database"].as_str().unwrap().starts_with("unavailable"), "{body}");
        // Liveness does not depend on the database.
        let request = axum::http::Request::get("/health").body(axum::body::Body::empty()).unwrap();
        assert_eq!(srlm::app(state).oneshot(request).await.unwrap().status(), 200);
    });
}
