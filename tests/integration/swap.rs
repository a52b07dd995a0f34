//! Hot-swap under load: clients keep sending requests while checkpoints are activated,
//! rolled back and announced; a checkpoint that fails to load leaves the old one serving.
//! Runs against a database of its own: which checkpoint is "active" is global state.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use srlm::store::Store;
use srlm::AppState;

use crate::common::{engine_options, model_path, own_database, own_server, rt, test_limits};

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    serde_json::from_str(&client.get(url).send().await.unwrap().text().await.unwrap()).unwrap()
}

async fn register(store: &Store, name: &str, path: &Path, parent: Option<i64>) -> i64 {
    sqlx::query_scalar("INSERT INTO checkpoints (name, path, format, parent_id, iteration) VALUES ($1, $2, 'gguf', $3, $4) RETURNING id")
        .bind(name)
        .bind(path.to_string_lossy().as_ref())
        .bind(parent)
        .bind(i32::from(parent.is_some()))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[test]
fn swapping_under_load_fails_no_request_and_each_response_names_its_checkpoint() {
    rt().block_on(async {
        let (store, _) = own_database("srlm_test_swap").await;
        let dir = std::env::temp_dir().join(format!("srlm-swap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, bad) = (dir.join("swap-a.gguf"), dir.join("swap-b.gguf"), dir.join("swap-bad.gguf"));
        for p in [&a, &b] {
            let _ = std::fs::remove_file(p);
            std::os::unix::fs::symlink(model_path(), p).unwrap();
        }
        std::fs::write(&bad, b"GGUF but not really").unwrap();

        // Serve A the way `srlm serve` does.
        let (base, state, a_row) = own_server(&store, &a, "swap-a", "sesame").await;
        state.slot.follow();
        let options = engine_options(&a);
        // A second replica on the same database follows the same announcements.
        let replica_engine = srlm::engine::load::load(&options).await.unwrap();
        let mut replica = AppState::new(replica_engine.clone(), store.clone(), test_limits());
        replica.slot.loader = Some(srlm::serve::loader(options));
        replica.slot.set_registered(&replica_engine, a_row.clone());
        replica.slot.follow();
        let b_id = register(&store, "swap-b", &b, Some(a_row.id)).await;
        let c_id = register(&store, "swap-c", &a.with_file_name("swap-c.gguf"), Some(b_id)).await;
        std::os::unix::fs::symlink(model_path(), dir.join("swap-c.gguf")).unwrap();
        let bad_id = register(&store, "swap-bad", &bad, Some(a_row.id)).await;

        let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();

        // Clients: chat (some streamed) without pause until told to stop.
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..4 {
            let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
            clients.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"model": "current", "messages": [{"role": "user", "content": format!("Count to {}", c + i % 3)}],
                        "max_tokens": 6, "temperature": 0, "stream": c == 3});
                    let response = client
                        .post(format!("{base}/v1/chat/completions"))
                        .header("content-type", "application/json")
                        .body(serde_json::to_vec(&body).unwrap())
                        .send()
                        .await
                        .expect("request sent");
                    let status = response.status().as_u16();
                    let text = response.text().await.expect("body read");
                    let model = if c == 3 {
                        let first = text.lines().find_map(|l| l.strip_prefix("data: ")).expect("a data line");
                        serde_json::from_str::<Value>(first).unwrap()["model"].as_str().unwrap_or_default().to_string()
                    } else {
                        serde_json::from_str::<Value>(&text)
                            .map(|v| v["model"].as_str().unwrap_or_default().to_string())
                            .unwrap_or_default()
                    };
                    seen.push((status, model, text.contains("[DONE]") || c != 3));
                    i += 1;
                }
                seen
            }));
        }
        let admin = |path: String, token: &'static str| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let r = client.post(format!("{base}{path}")).bearer_auth(token).send().await.unwrap();
                (r.status().as_u16(), serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap())
            }
        };
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(admin(format!("/admin/checkpoints/{b_id}/activate"), "wrong").await.0, 401);
        let (status, swap) = admin(format!("/admin/checkpoints/{b_id}/activate"), "sesame").await;
        assert_eq!(status, 200, "{swap}");
        assert_eq!((swap["model"].as_str(), swap["previous_checkpoint_id"].as_i64()), (Some("swap-b"), Some(a_row.id)));
        eprintln!("swap A → B: loaded in {:.2} s", swap["load_seconds"].as_f64().unwrap());
        tokio::time::sleep(Duration::from_millis(800)).await;
        let models = get_json(&client, &format!("{base}/v1/models")).await;
        assert_eq!((models["data"][0]["id"].as_str(), models["data"][0]["checkpoint_id"].as_i64()), (Some("swap-b"), Some(b_id)));
        let stored: String =
            sqlx::query_scalar("SELECT status FROM checkpoints WHERE id = $1").bind(b_id).fetch_one(store.pool()).await.unwrap();
        assert_eq!(stored, "active");

        // A checkpoint that does not load: 422, marked failed, B keeps serving.
        let (status, err) = admin(format!("/admin/checkpoints/{bad_id}/activate"), "sesame").await;
        assert_eq!(status, 422, "{err}");
        assert_eq!(store.checkpoint(bad_id).await.unwrap().unwrap().status, "failed");
        assert!(store.checkpoint_error(bad_id).await.unwrap().unwrap().contains("swap-bad.gguf"));

        // Roll back to B's parent, A.
        let (status, back) = admin("/admin/rollback".into(), "sesame").await;
        assert_eq!((status, back["model"].as_str()), (200, Some("swap-a")), "{back}");
        tokio::time::sleep(Duration::from_millis(800)).await;

        // A trainer's announcement (what `srlm train` sends on registration): C follows.
        let announced = std::time::Instant::now();
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(srlm::store::CHECKPOINT_CHANNEL)
            .bind(c_id.to_string())
            .execute(store.pool())
            .await
            .unwrap();
        let mut followed = false;
        for _ in 0..100 {
            let ready = get_json(&client, &format!("{base}/ready")).await;
            if ready["checkpoint_id"].as_i64() == Some(c_id) {
                followed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(followed, "the server followed the announced checkpoint");
        eprintln!("announce → serving C: {:.2} s", announced.elapsed().as_secs_f64());
        for _ in 0..100 {
            if replica.checkpoint_id() == Some(c_id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(replica.checkpoint_id(), Some(c_id), "the replica followed too");
        assert_eq!(replica.current().engine.info().name, "swap-c");

        // Self-instruction through the admin API, with the served engine writing.
        let seeds: Vec<String> = (0..8)
            .map(|i| {
                format!(
                    "Seed task number {i}: describe a {} in detail.",
                    ["cat", "tree", "river", "city", "song", "meal", "game", "cloud"][i]
                )
            })
            .collect();
        let (client2, base2) = (client.clone(), base.clone());
        let post = |body: Value| {
            let (client, base) = (client2.clone(), base2.clone());
            async move {
                let r = client
                    .post(format!("{base}/admin/self-instruct"))
                    .bearer_auth("sesame")
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap())
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap())
            }
        };
        let (status, err) = post(json!({"count": 0})).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some("count")), "{err}");
        let (status, report) = post(json!({"count": 1, "seeds": seeds, "max_attempts": 4, "iteration": 9})).await;
        assert_eq!(status, 200, "{report}");
        let rejected: u64 = report["rejected"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(report["accepted"].as_u64().unwrap() + rejected, report["attempts"].as_u64().unwrap(), "{report}");
        tokio::time::sleep(Duration::from_millis(800)).await;

        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for c in clients {
            all.extend(c.await.unwrap());
        }
        let failed: Vec<_> = all.iter().filter(|(status, _, complete)| *status != 200 || !complete).collect();
        assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), all.len());
        let names: BTreeSet<&str> = all.iter().map(|(_, m, _)| m.as_str()).collect();
        assert_eq!(names, BTreeSet::from(["swap-a", "swap-b", "swap-c"]), "every response names the checkpoint that served it");
        eprintln!("{} requests through 3 swaps, none failed", all.len());
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
