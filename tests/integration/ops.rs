//! Models list, readiness with a live database, Swagger UI and the OpenAPI snapshot.

use serde_json::Value;

use crate::common::{rt, server};

#[test]
fn models_lists_the_served_checkpoint_and_the_current_alias() {
    rt().block_on(async {
        let s = server();
        let (status, body) = s.get("/v1/models").await;
        assert_eq!(status, 200);
        let body: Value = serde_json::from_str(&body).unwrap();
        let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        let name = s.state.current().engine.info().name.clone();
        assert_eq!(ids, vec![name.as_str(), "current"]);
        let checkpoint = s.state.current().checkpoint.clone().unwrap();
        assert_eq!(body["data"][0]["checkpoint_id"], checkpoint.id);
        assert_eq!(s.get("/v1/models/current").await.0, 200);
        assert_eq!(s.get("/v1/models/nope").await.0, 404);
    });
}

#[test]
fn ready_when_model_and_database_are_up_and_the_checkpoint_is_active_in_postgres() {
    rt().block_on(async {
        let s = server();
        let (status, body) = s.get("/ready").await;
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["database"], "ok");
        let id = body["checkpoint_id"].as_i64().unwrap();
        let stored = s.state.store.checkpoint(id).await.unwrap().expect("row");
        assert_eq!(stored.status, "active");
        assert_eq!(stored.format, "gguf");
        assert!(stored.path.ends_with(".gguf"));
        assert_eq!(s.get("/health").await.0, 200);
    });
}

#[test]
fn swagger_ui_and_the_spec_are_served() {
    rt().block_on(async {
        let s = server();
        let (status, html) = s.get("/docs/").await;
        assert_eq!(status, 200);
        assert!(html.contains("swagger"), "Swagger UI page");
        let (status, spec) = s.get("/openapi.json").await;
        assert_eq!(status, 200);
        let spec: Value = serde_json::from_str(&spec).unwrap();
        for path in ["/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/ready"] {
            assert!(spec["paths"].get(path).is_some(), "{path} documented");
        }
    });
}

#[test]
fn committed_openapi_matches_the_code() {
    let generated = srlm::api::openapi().to_pretty_json().unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale; regenerate it with: cargo run --release -- openapi --out openapi/openapi.json"
    );
}
