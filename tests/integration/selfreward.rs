//! /generate, /judge and the read endpoints against the real model and Postgres.

use serde_json::{json, Value};
use srlm::store::{Checkpoint, Store};
use srlm::AppState;
use tower::ServiceExt;

use crate::common::{greedy_chat, rt, server, test_limits};

fn ids(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

#[test]
fn generate_with_judging_records_candidates_judgments_and_at_most_one_pair() {
    rt().block_on(async {
        let s = server();
        let request = json!({
            "prompt": "Give one tip for learning to cook.",
            "n": 2, "max_tokens": 24, "seed": 7,
            "judge": {"samples": 2, "method": "expected", "max_tokens": 32},
        });
        let (status, body) = s.post("/generate", &request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["object"], "srlm.generation");
        let choices = body["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 2);
        assert_eq!(body["judge"]["total"], 4);
        assert_eq!(body["judge"]["parsed"], 4, "expected judging always yields a score");
        let prompt_id = body["prompt_id"].as_i64().expect("recorded prompt");

        let rows = s.state.store.candidates_of_prompt(prompt_id).await.unwrap();
        let candidate_ids: Vec<i64> = choices.iter().map(|c| c["candidate_id"].as_i64().unwrap()).collect();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), candidate_ids);
        for (row, choice) in rows.iter().zip(choices) {
            assert_eq!(row.text, choice["message"]["content"].as_str().unwrap());
            assert_eq!(row.checkpoint_id, body["checkpoint_id"].as_i64().unwrap());
            assert!((row.temperature - 0.7).abs() < 1e-6 && (row.top_p - 0.9).abs() < 1e-6, "paper defaults");
        }
        let judgments = s.state.store.judgments_of_candidates(&candidate_ids).await.unwrap();
        assert_eq!(judgments.len(), 4, "N × K judgments");
        for choice in choices {
            let mine: Vec<i64> =
                judgments.iter().filter(|j| Some(j.candidate_id) == choice["candidate_id"].as_i64()).map(|j| j.id).collect();
            let reported: Vec<i64> = choice["judgments"].as_array().unwrap().iter().map(|j| j["judgment_id"].as_i64().unwrap()).collect();
            assert_eq!(mine, reported);
            let score = choice["score"].as_f64().unwrap();
            assert!((0.0..=5.0).contains(&score));
        }
        assert!(judgments.iter().all(|j| j.method == "expected"));

        let pairs = s.state.store.pairs_of_prompt(prompt_id).await.unwrap();
        assert!(pairs.len() <= 1);
        match (&body["pair"], pairs.first()) {
            (Value::Null, None) => assert!(!body["no_pair_reason"].is_null()),
            (pair, Some(row)) => {
                assert_eq!(pair["pair_id"].as_i64(), Some(row.id));
                assert_eq!(pair["chosen_candidate_id"].as_i64(), Some(row.chosen_id));
                assert_eq!(pair["rejected_candidate_id"].as_i64(), Some(row.rejected_id));
                assert!(row.chosen_score > row.rejected_score);
                assert_eq!(row.status, "available");
            }
            (pair, None) => panic!("response names a pair the database lacks: {pair}"),
        }

        let (status, detail) = s.get(&format!("/prompts/{prompt_id}")).await;
        assert_eq!(status, 200);
        let detail: Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(detail["candidates"].as_array().unwrap().len(), 2);
        assert_eq!(detail["candidates"][0]["judgments"].as_array().unwrap().len(), 2);
    });
}

#[test]
fn judge_on_a_stored_candidate_records_its_samples() {
    rt().block_on(async {
        let s = server();
        let (status, generated) =
            s.post("/generate", &json!({"prompt": "Why is the sea salty?", "n": 1, "max_tokens": 16, "seed": 3})).await;
        assert_eq!(status, 200, "{generated}");
        assert!(generated["judge"].is_null() && generated["pair"].is_null());
        let candidate_id = generated["choices"][0]["candidate_id"].as_i64().unwrap();

        let (status, body) = s
            .post("/v1/judge", &json!({"candidate_id": candidate_id, "samples": 3, "method": "constrained", "max_tokens": 24, "seed": 1}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["candidate_id"], candidate_id);
        let samples = body["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(body["parsed"], 3);
        let recorded = s.state.store.judgments_of_candidates(&[candidate_id]).await.unwrap();
        assert_eq!(
            recorded.iter().map(|j| j.id).collect::<Vec<_>>(),
            ids(&json!(samples.iter().map(|j| j["judgment_id"].clone()).collect::<Vec<_>>()))
        );
        for (row, sample) in recorded.iter().zip(samples) {
            let score = row.score.expect("constrained judging always scores");
            assert_eq!(score.fract(), 0.0, "a digit 0-5");
            assert_eq!(Some(score as f64), sample["score"].as_f64());
        }
        let (status, candidate) = s.get(&format!("/candidates/{candidate_id}")).await;
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_str::<Value>(&candidate).unwrap()["judgments"].as_array().unwrap().len(), 3);
    });
}

#[test]
fn inline_judging_reports_parse_counts_and_records_nothing() {
    rt().block_on(async {
        let s = server();
        let request = json!({
            "prompt": "What is 2 + 2?", "response": "4. Score: 5",
            "samples": 2, "max_tokens": 24, "seed": 11,
        });
        let (status, body) = s.post("/judge", &request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["method"], "sample");
        let samples = body["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 2);
        let parsed = samples.iter().filter(|j| !j["score"].is_null()).count();
        assert_eq!(body["parsed"], parsed);
        assert!(samples.iter().all(|j| j["judgment_id"].is_null()));
        if parsed == 0 {
            assert!(body["mean"].is_null(), "no parsed score is never coerced to a number");
        }
    });
}

#[test]
fn plain_chat_records_nothing() {
    rt().block_on(async {
        let s = server();
        let marker = format!("marker-{}", uuid::Uuid::new_v4());
        let (status, _) = s.post("/v1/chat/completions", &greedy_chat(&format!("Repeat {marker}"), 4)).await;
        assert_eq!(status, 200);
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM prompts WHERE messages::text LIKE $1")
            .bind(format!("%{marker}%"))
            .fetch_one(s.state.store.pool())
            .await
            .unwrap();
        assert_eq!(count, 0);
    });
}

#[test]
fn recording_with_the_database_down_is_a_503_before_any_work_and_chat_still_works() {
    rt().block_on(async {
        let s = server();
        let dead = Store::connect_lazy("postgres://postgres@127.0.0.1:1/nothing").unwrap();
        let engine = s.state.current().engine.clone();
        let state = AppState::new(engine.clone(), dead, test_limits());
        let registered: Checkpoint = s.state.current().checkpoint.clone().unwrap();
        state.slot.set_registered(&engine, registered);
        let call = |path: &str, body: Value| {
            axum::http::Request::post(path)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap()
        };
        let response = srlm::app(state.clone()).oneshot(call("/generate", json!({"prompt": "hi", "n": 2, "max_tokens": 4}))).await.unwrap();
        assert_eq!(response.status(), 503);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "database_unavailable", "{body}");

        let unrecorded = json!({"prompt": "hi", "n": 1, "max_tokens": 4, "record": false});
        let response = srlm::app(state.clone()).oneshot(call("/generate", unrecorded)).await.unwrap();
        assert_eq!(response.status(), 200, "without recording the database is not needed");
        let response = srlm::app(state).oneshot(call("/v1/chat/completions", greedy_chat("hi", 4))).await.unwrap();
        assert_eq!(response.status(), 200);
    });
}

#[test]
fn bad_generate_judge_and_pair_queries_get_400s_naming_the_field() {
    rt().block_on(async {
        let s = server();
        let cases = [
            ("/generate", json!({"prompt": "hi", "n": 0}), "n"),
            ("/generate", json!({"prompt": "hi", "judge": {"samples": 100}}), "judge.samples"),
            ("/generate", json!({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}), "prompt"),
            ("/generate", json!({}), "messages"),
            ("/generate", json!({"prompt": "hi", "source": "web"}), "source"),
            ("/generate", json!({"prompt": "hi", "pair_policy": {"min_margin": -1}}), "pair_policy.min_margin"),
            ("/judge", json!({"prompt": "hi"}), "response"),
            ("/judge", json!({"prompt": "hi", "response": "x", "method": "vibes"}), "method"),
            ("/judge", json!({"prompt": "hi", "response": "x", "temperature": 3}), "judge.temperature"),
        ];
        for (path, body, param) in cases {
            let (status, response) = s.post(path, &body).await;
            assert_eq!(status, 400, "{path} {body} → {response}");
            assert_eq!(response["error"]["param"], param, "{path} {body} → {response}");
        }
        for query in ["limit=0", "limit=501", "status=bogus", "offset=-1", "limit=abc"] {
            let (status, body) = s.get(&format!("/pairs?{query}")).await;
            assert_eq!(status, 400, "{query}: {body}");
        }
        let (status, body) = s.get("/pairs?status=available&limit=5").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(s.get("/candidates/999999999").await.0, 404);
        assert_eq!(s.get("/prompts/999999999").await.0, 404);
    });
}

#[test]
fn the_verifier_decides_pairs_of_checkable_prompts_and_the_prompt_list_shows_them() {
    rt().block_on(async {
        let s = server();
        let instructions = json!([{"kind": "no_commas"}, {"kind": "words", "relation": "at_most", "n": 12}]);
        let request = json!({
            "prompt": "Name some fruits. Do not use any commas in your answer. Answer with at most 12 words.",
            "n": 4, "max_tokens": 24, "seed": 11, "temperature": 1.0,
            "instructions": instructions, "reward": "verify", "iteration": 77,
        });
        let (status, body) = s.post("/generate", &request).await;
        assert_eq!(status, 200, "{body}");
        let choices = body["choices"].as_array().unwrap();
        // Every candidate's outcome is what the checks say of its text.
        let followed: Vec<usize> = choices
            .iter()
            .map(|c| {
                let text = c["message"]["content"].as_str().unwrap();
                let expect = [!text.contains(','), srlm::verify::checks::words(text) <= 12];
                let strict: Vec<bool> = c["verified"]["strict"].as_array().unwrap().iter().map(|b| b.as_bool().unwrap()).collect();
                assert_eq!(strict, expect, "{text:?}");
                expect.iter().filter(|&&b| b).count()
            })
            .collect();
        let prompt_id = body["prompt_id"].as_i64().unwrap();
        let rows = s.state.store.pairs_of_prompt(prompt_id).await.unwrap();
        if followed.iter().all(|&f| f == followed[0]) {
            assert_eq!(body["no_pair_reason"], "verifier_tie", "{body}");
            assert!(rows.is_empty());
        } else {
            let pair = &body["pair"];
            assert_eq!(pair["decided_by"], "verifier");
            let (c, r) = (pair["chosen_index"].as_u64().unwrap() as usize, pair["rejected_index"].as_u64().unwrap() as usize);
            assert_eq!(followed[c], *followed.iter().max().unwrap());
            assert_eq!(followed[r], *followed.iter().min().unwrap());
            let decided = rows[0].decided_by.as_ref().expect("decided_by is recorded");
            assert_eq!((decided["reward"].as_str(), decided["by"].as_str()), (Some("verify"), Some("verifier")));
            assert_eq!(decided["chosen"], choices[c]["verified"]["strict"]);
        }
        // The list finds it by iteration and by "not judged", with its instructions and counts.
        let (status, page) = s.get("/prompts?iteration=77&judged=false").await;
        assert_eq!(status, 200, "{page}");
        let page: Value = serde_json::from_str(&page).unwrap();
        let listed = page["data"].as_array().unwrap().iter().find(|p| p["id"] == prompt_id).expect("listed");
        assert_eq!((listed["candidates"].as_i64(), listed["judged"].as_i64()), (Some(4), Some(0)));
        assert_eq!(listed["pairs"].as_i64(), Some(rows.len() as i64));
        assert_eq!(listed["instructions"], instructions);
        let (_, judged) = s.get("/prompts?iteration=77&judged=true").await;
        assert!(!judged.contains(&format!("\"id\":{prompt_id},")), "{judged}");
        let (status, bad) = s.get("/prompts?source=robot").await;
        assert_eq!(status, 400, "{bad}");
        assert!(bad.contains("source"), "{bad}");
    });
}
