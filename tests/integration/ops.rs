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
        assert_eq!(body["engine"], s.state.current().engine.info().engine, "{body}");
        assert_eq!(body["device"], "cpu", "{body}");
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
    let generated = serde_json::to_string_pretty(&srlm::api::openapi()).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale; regenerate it with: cargo run --release -- openapi --out openapi/openapi.json"
    );
}

/// The shared server's model behind a second stack of this test's own.
async fn own_stack(configure: impl FnOnce(&mut srlm::AppState)) -> String {
    let s = server();
    let mut state = srlm::AppState::new(s.state.current().engine.clone(), s.state.store.clone(), crate::common::test_limits());
    configure(&mut state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = srlm::app(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[test]
fn api_keys_guard_the_model_routes_and_leave_health_metrics_and_admin_alone() {
    rt().block_on(async {
        let keys = srlm::api::auth::ApiKeys::load(None, Some("sk-alpha,sk-beta"), srlm::api::auth::DEFAULT_OPEN_ROUTES).unwrap().unwrap();
        let base = own_stack(|state| state.api_keys = Some(std::sync::Arc::new(keys))).await;
        let client = reqwest::Client::new();
        let get = |path: &str, key: Option<&str>| {
            let mut request = client.get(format!("{base}{path}"));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            request.send()
        };
        let refused = get("/v1/models", None).await.unwrap();
        assert_eq!(refused.status(), 401);
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["type"], "authentication_error");
        assert_eq!(get("/v1/models", Some("sk-alph")).await.unwrap().status(), 401);
        assert_eq!(get("/pairs", Some("nope")).await.unwrap().status(), 401, "records need a key too");
        assert_eq!(get("/v1/models", Some("sk-beta")).await.unwrap().status(), 200);
        let chat = client.post(format!("{base}/v1/chat/completions")).json(&crate::common::greedy_chat("Hi", 2));
        assert_eq!(chat.send().await.unwrap().status(), 401);
        for open in ["/health", "/metrics", "/docs/", "/openapi.json"] {
            assert_eq!(get(open, None).await.unwrap().status(), 200, "{open} stays open");
        }
        // Admin routes answer to the admin token (disabled here), not to API keys.
        let admin = client.post(format!("{base}/admin/rollback")).bearer_auth("sk-alpha").send().await.unwrap();
        assert_eq!(admin.status(), 403);

        // The spec declares the schemes and which operations take a key.
        let spec = srlm::api::openapi();
        assert!(spec["components"]["securitySchemes"]["api_key"].is_object());
        assert_eq!(spec["paths"]["/v1/chat/completions"]["post"]["security"][0]["api_key"], serde_json::json!([]));
        assert!(spec["paths"]["/health"]["get"]["security"].is_null());
        assert!(spec["paths"]["/admin/rollback"]["post"]["security"][0]["admin_token"].is_array());
    });
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric line starting with {line_start}"))
}

#[test]
fn metrics_count_requests_tokens_judging_and_rejections() {
    rt().block_on(async {
        let s = server();
        let (status, _) = s.post("/v1/chat/completions", &crate::common::greedy_chat("Name a colour.", 4)).await;
        assert_eq!(status, 200);
        let mut streamed = crate::common::greedy_chat("Name a fruit.", 4);
        streamed["stream"] = true.into();
        assert!(!s.stream("/v1/chat/completions", &streamed).await.is_empty());
        let judge = serde_json::json!({"prompt": "2+2?", "response": "4", "samples": 1, "method": "expected", "record": false});
        assert_eq!(s.post("/judge", &judge).await.0, 200);
        // A stack that admits nothing: every model request is a 429.
        let full = own_stack(|state| {
            *state = srlm::AppState::new(
                state.current().engine.clone(),
                state.store.clone(),
                srlm::Limits { max_in_flight: 0, ..crate::common::test_limits() },
            )
        })
        .await;
        let rejected = reqwest::Client::new()
            .post(format!("{full}/v1/chat/completions"))
            .json(&crate::common::greedy_chat("Hi", 2))
            .send()
            .await
            .unwrap();
        assert_eq!(rejected.status(), 429);
        assert!(rejected.headers().contains_key("retry-after"));

        let (status, text) = s.get("/metrics").await;
        assert_eq!(status, 200);
        assert!(metric(&text, r#"srlm_http_requests_total{route="/v1/chat/completions",status="200"}"#) >= 2.0, "{text}");
        assert!(metric(&text, r#"srlm_http_requests_total{route="/v1/chat/completions",status="429"}"#) >= 1.0);
        assert!(metric(&text, r#"srlm_requests_rejected_total{reason="overloaded"}"#) >= 1.0);
        assert!(metric(&text, r#"srlm_http_request_duration_seconds_count{route="/judge"}"#) >= 1.0);
        assert!(metric(&text, r#"srlm_time_to_first_token_seconds_bucket{le="+Inf"}"#) >= 2.0);
        assert!(metric(&text, "srlm_generated_tokens_total") >= 8.0);
        assert!(metric(&text, r#"srlm_judge_samples_total{method="expected"}"#) >= 1.0);
        assert!(text.contains(r#"srlm_judge_parse_failures_total{method="expected"}"#));
        assert_eq!(metric(&text, "srlm_active_checkpoint_id"), s.state.checkpoint_id().unwrap() as f64);
        assert!(metric(&text, "srlm_requests_in_flight") >= 0.0);
        assert!(text.contains("# TYPE srlm_http_request_duration_seconds histogram"));
    });
}

#[test]
fn a_request_past_the_deadline_gets_a_504_and_frees_its_place() {
    rt().block_on(async {
        let limits =
            srlm::Limits { request_timeout: std::time::Duration::from_millis(200), max_in_flight: 4, ..crate::common::test_limits() };
        let mut handle = None;
        let base = own_stack(|state| {
            *state = srlm::AppState::new(state.current().engine.clone(), state.store.clone(), limits);
            handle = Some(state.clone());
        })
        .await;
        let state = handle.unwrap();
        let mut long = crate::common::greedy_chat("Write a long story about a lighthouse keeper.", 2000);
        long["max_tokens"] = 2000.into();
        let started = std::time::Instant::now();
        let response = reqwest::Client::new().post(format!("{base}/v1/chat/completions")).json(&long).send().await.unwrap();
        assert_eq!(response.status(), 504);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "answered at the deadline");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "timeout");
        assert_eq!(state.in_flight(), 0, "the timed-out request released its place");
    });
}

#[test]
fn prompts_over_the_token_limit_get_a_400_naming_the_field() {
    rt().block_on(async {
        let limits = srlm::Limits { max_prompt_tokens: Some(64), ..crate::common::test_limits() };
        let base = own_stack(|state| *state = srlm::AppState::new(state.current().engine.clone(), state.store.clone(), limits)).await;
        let client = reqwest::Client::new();
        let long = "Please summarise the following words. ".repeat(40);
        let refused = client.post(format!("{base}/v1/chat/completions")).json(&crate::common::greedy_chat(&long, 2)).send().await.unwrap();
        assert_eq!(refused.status(), 400);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["param"], "messages", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("at most 64"), "{body}");
        let ok = client.post(format!("{base}/v1/chat/completions")).json(&crate::common::greedy_chat("Hi", 2)).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        let completion = serde_json::json!({"model": "current", "prompt": long, "max_tokens": 2});
        let refused = client.post(format!("{base}/v1/completions")).json(&completion).send().await.unwrap();
        assert_eq!(refused.status(), 400);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["param"], "prompt");
    });
}

#[test]
fn a_review_names_its_reviewer_from_the_key_label_and_changes_what_trains() {
    rt().block_on(async {
        let s = server();
        let dir = std::env::temp_dir().join(format!("srlm-review-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.txt");
        std::fs::write(&file, "# reviewers\nana:sk-review-ana\nsk-unlabelled\n").unwrap();
        let keys = srlm::api::auth::ApiKeys::load(Some(&file), None, srlm::api::auth::DEFAULT_OPEN_ROUTES).unwrap().unwrap();
        let base = own_stack(|state| state.api_keys = Some(std::sync::Arc::new(keys))).await;
        // A pair recorded by the served checkpoint.
        let checkpoint = s.state.current().checkpoint_id().expect("the test server records");
        let pair = crate::common::insert_pair(&s.state.store, checkpoint, "Which is right?", "judge's pick", "the better one").await;
        let row = s.state.store.pair(pair).await.unwrap().unwrap();
        let candidate_ids = [row.chosen_id, row.rejected_id];
        let client = reqwest::Client::new();
        let review = |key: &str, body: Value| client.post(format!("{base}/pairs/{pair}/review")).bearer_auth(key).json(&body).send();

        let swapped: Value = review("sk-review-ana", serde_json::json!({"verdict": "swap", "note": "the second answers the question"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(swapped["review"]["reviewer"], "ana", "{swapped}");
        assert_eq!(swapped["review"]["applied"], true);
        assert_eq!(swapped["pair"]["chosen_id"], candidate_ids[1]);
        let agreed: Value = review("sk-unlabelled", serde_json::json!({"verdict": "agree"})).await.unwrap().json().await.unwrap();
        assert_eq!(agreed["review"]["reviewer"], "api-key");
        // Bad input: the one error shape, naming the field.
        let bad = review("sk-review-ana", serde_json::json!({"verdict": "maybe"})).await.unwrap();
        assert_eq!(bad.status(), 400);
        let bad = review("sk-review-ana", serde_json::json!({"verdict": "agree", "note": "x".repeat(2001)})).await.unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(bad.json::<Value>().await.unwrap()["error"]["param"], "note");
        assert_eq!(review("nope", serde_json::json!({"verdict": "agree"})).await.unwrap().status(), 401);
        // GET /pairs/{id} lists the reviews, oldest first.
        let detail: Value =
            client.get(format!("{base}/pairs/{pair}")).bearer_auth("sk-review-ana").send().await.unwrap().json().await.unwrap();
        let reviewers: Vec<&str> = detail["reviews"].as_array().unwrap().iter().map(|r| r["reviewer"].as_str().unwrap()).collect();
        assert_eq!(reviewers, ["ana", "api-key"]);
        assert_eq!(detail["reviews"][0]["chosen_id"], candidate_ids[0], "the judge's order is kept with the review");
        // Disagreeing takes it out of training for good.
        let out: Value = review("sk-review-ana", serde_json::json!({"verdict": "disagree"})).await.unwrap().json().await.unwrap();
        assert_eq!(out["pair"]["status"], "excluded");
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
