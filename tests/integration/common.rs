//! One real server for the whole test binary: the default model through mistralrs, a
//! real Postgres (DATABASE_URL, migrated at startup), listening on a loopback port.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use srlm::engine::mistral::MistralEngine;
use srlm::engine::native::NativeEngine;
use srlm::engine::SharedEngine;
use srlm::store::Store;
use srlm::{AppState, Limits};

pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub client: reqwest::Client,
}

pub fn model_path() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    std::env::var("SRLM_TEST_MODEL").unwrap_or_else(|_| format!("{root}/{}", srlm::cli::DEFAULT_MODEL))
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").expect("DATABASE_URL must name a test database (scripts/test.sh sets it)")
}

/// All tests share this runtime, so the engine's tasks outlive any one test.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime"))
}

pub fn test_limits() -> Limits {
    Limits { max_body_bytes: 64 * 1024, max_in_flight: 64, ..Limits::default() }
}

pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    // Started from a plain thread: tests call this from inside `rt().block_on`.
    SERVER.get_or_init(|| std::thread::spawn(|| rt().block_on(start())).join().expect("test server starts"))
}

/// The engine the HTTP tests run on: `SRLM_TEST_ENGINE` = `native` (default) or `mistralrs`.
pub fn server_engine_kind() -> String {
    std::env::var("SRLM_TEST_ENGINE").unwrap_or_else(|_| "native".into())
}

/// Each engine is loaded once per test binary, on the shared runtime.
pub fn engine(kind: &str) -> SharedEngine {
    static NATIVE: OnceLock<SharedEngine> = OnceLock::new();
    static NATIVE_Q8: OnceLock<SharedEngine> = OnceLock::new();
    static MISTRAL: OnceLock<SharedEngine> = OnceLock::new();
    static MISTRAL_F32: OnceLock<SharedEngine> = OnceLock::new();
    let load = move || -> SharedEngine {
        let kind = kind.to_string();
        std::thread::spawn(move || {
            rt().block_on(async move {
                if kind.starts_with("native") {
                    // `native`: the file's Q4_1 blocks as stored; `native-q8`: re-encoded as Q8_0.
                    let weights =
                        if kind == "native-q8" { srlm::model::gguf::WeightsChoice::Q8_0 } else { srlm::model::gguf::WeightsChoice::Auto };
                    let options =
                        srlm::engine::load::EngineOptions { weights, ..srlm::engine::load::EngineOptions::for_model(&model_path()) };
                    Arc::new(NativeEngine::load(&options).expect("native engine loads the default model")) as SharedEngine
                } else {
                    let options = srlm::engine::load::EngineOptions {
                        choice: srlm::engine::load::EngineChoice::Mistralrs,
                        force_cpu: true,
                        weights: if kind == "mistralrs-f32" {
                            srlm::model::gguf::WeightsChoice::F32
                        } else {
                            srlm::model::gguf::WeightsChoice::Auto
                        },
                        ..srlm::engine::load::EngineOptions::for_model(&model_path())
                    };
                    Arc::new(MistralEngine::load(&options).await.expect("mistralrs loads the default model")) as SharedEngine
                }
            })
        })
        .join()
        .expect("engine loads")
    };
    match kind {
        "native" => NATIVE.get_or_init(load).clone(),
        "native-q8" => NATIVE_Q8.get_or_init(load).clone(),
        "mistralrs" => MISTRAL.get_or_init(load).clone(),
        // The single-sequence f32 reference: mistralrs on an F32 copy of the weights.
        "mistralrs-f32" => MISTRAL_F32.get_or_init(load).clone(),
        other => panic!("unknown engine {other}"),
    }
}

async fn start() -> TestServer {
    let engine = engine(&server_engine_kind());
    let store = Store::connect_lazy(&database_url()).expect("database url");
    let state = AppState::new(engine, store, test_limits());
    srlm::serve::register_in_background(&state);
    for _ in 0..300 {
        if state.current().checkpoint.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(state.current().checkpoint.is_some(), "served checkpoint registered in Postgres");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = srlm::app(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let client = reqwest::Client::builder().timeout(Duration::from_secs(600)).build().unwrap();
    TestServer { base, state, client }
}

impl TestServer {
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, serde_json::to_vec(body).unwrap(), "application/json").await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>, content_type: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("JSON body, got {status}: {}", String::from_utf8_lossy(&bytes)));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// A streamed request: every `data:` payload, in order.
    pub async fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let text = response.text().await.expect("body");
        text.split("\n\n").filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data:")).map(|d| d.trim().to_string())).collect()
    }
}

/// A greedy chat request for `prompt`.
pub fn greedy_chat(prompt: &str, max_tokens: u32) -> Value {
    serde_json::json!({
        "model": "current",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

pub fn content(response: &Value, choice: usize) -> String {
    response["choices"][choice]["message"]["content"].as_str().expect("content").to_string()
}

/// A fresh, migrated database for a test that changes global state (which checkpoint
/// is active, which pairs are claimable).
pub async fn own_database(name: &str) -> (Store, String) {
    let url = database_url();
    let (server, _) = url.rsplit_once('/').expect("a database URL");
    let admin = Store::connect_lazy(&format!("{server}/postgres")).unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(admin.pool()).await;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(admin.pool()).await.unwrap();
    let url = format!("{server}/{name}");
    let store = Store::connect_migrated(&url).await.unwrap();
    (store, url)
}

/// A server of a test's own on loopback: `model` loaded the way `srlm serve` does, the
/// active checkpoint `name` in `store`, hot-swap enabled under `admin_token`.
pub async fn own_server(store: &Store, model: &Path, name: &str, admin_token: &str) -> (String, AppState, srlm::store::Checkpoint) {
    let options = engine_options(model);
    let engine = srlm::engine::load::load(&options).await.unwrap();
    let mut state = AppState::new(engine.clone(), store.clone(), test_limits());
    state.slot.loader = Some(srlm::serve::loader(options));
    state.admin_token = Some(Arc::new(admin_token.into()));
    let row = store.activate_served(name, &model.to_string_lossy(), "gguf").await.unwrap();
    state.slot.set_registered(&engine, row.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = srlm::app(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, state, row)
}

/// `srlm serve`'s engine options for `model`, on the native engine.
pub fn engine_options(model: &Path) -> srlm::engine::load::EngineOptions {
    srlm::engine::load::EngineOptions {
        choice: srlm::engine::load::EngineChoice::Native,
        max_seqs: 8,
        ..srlm::engine::load::EngineOptions::for_model(&model.to_string_lossy())
    }
}

/// Records a prompt, two answers made by `checkpoint_id` and the pair (chosen, rejected)
/// the way `/generate` does; returns the pair's id.
pub async fn insert_pair(store: &Store, checkpoint_id: i64, question: &str, chosen: &str, rejected: &str) -> i64 {
    let pool = store.pool();
    let prompt: i64 = sqlx::query_scalar("INSERT INTO prompts (messages, source) VALUES ($1, 'seed') RETURNING id")
        .bind(serde_json::json!([{"role": "user", "content": question}]))
        .fetch_one(pool)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (j, text) in [chosen, rejected].iter().enumerate() {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO candidates (prompt_id, checkpoint_id, choice_index, text, prompt_tokens, completion_tokens,
                 finish_reason, temperature, top_p, max_tokens, seed)
             VALUES ($1, $2, $3, $4, 10, 10, 'stop', 0.7, 0.9, 64, 1) RETURNING id",
        )
        .bind(prompt)
        .bind(checkpoint_id)
        .bind(j as i32)
        .bind(*text)
        .fetch_one(pool)
        .await
        .unwrap();
        ids.push(id);
    }
    sqlx::query_scalar(
        "INSERT INTO pairs (prompt_id, chosen_id, rejected_id, chosen_score, rejected_score, checkpoint_id) VALUES ($1, $2, $3, 5, 1, $4) RETURNING id",
    )
    .bind(prompt)
    .bind(ids[0])
    .bind(ids[1])
    .bind(checkpoint_id)
    .fetch_one(pool)
    .await
    .unwrap()
}
