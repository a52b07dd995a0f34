//! The trainer against the real model and a real Postgres: its log-probs against
//! mistralrs on the same F32 checkpoint, and `srlm train dpo` from pairs in Postgres to a
//! registered checkpoint the native engine serves.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use serde_json::Value;
use srlm::engine::native::NativeEngine;
use srlm::engine::{complete, ChatMessage, Generation, Prompt, SamplingConfig};
use srlm::model::weights::LlamaWeights;
use srlm::store::Store;
use srlm::train::data::ChatFormat;
use srlm::train::model::{Batch, Model, Trainable};

use crate::common::{database_url, engine, model_path, own_database, rt};

#[test]
fn trainer_log_probs_match_mistralrs_on_the_same_f32_checkpoint() {
    rt().block_on(async {
        let f32_path = srlm::model::gguf::converted_copy(Path::new(&model_path()), srlm::model::gguf::WeightType::F32).unwrap();
        let messages = vec![ChatMessage { role: "user".into(), content: "What makes bread rise?".into() }];
        let continuation = "Yeast eats the sugars in the dough and releases carbon dioxide, which gets trapped and makes the bread rise.";
        let reference = engine("mistralrs-f32").score(Prompt::Chat(messages.clone()), continuation).await.expect("mistralrs score");

        let format = ChatFormat::load(&f32_path).unwrap();
        let prompt = format.prompt(&messages).unwrap();
        let answer = format.answer(continuation).unwrap();
        let answer = &answer[..answer.len() - 1]; // without the end-of-turn token
        assert_eq!(answer, reference.iter().map(|t| t.token).collect::<Vec<_>>().as_slice(), "same tokens");
        let weights = LlamaWeights::load(&f32_path).unwrap();
        let model = Model::new(&weights, &Trainable::default(), DType::F32, 0).unwrap();
        let seq: Vec<u32> = prompt.iter().chain(answer).copied().collect();
        let batch = Batch::new(&[(&seq, prompt.len())], &Device::Cpu).unwrap();
        let ours = model.token_logprobs(&batch, false).unwrap().to_vec1::<f32>().unwrap();
        let diffs: Vec<f32> = ours.iter().zip(&reference).map(|(a, b)| (a - b.logprob).abs()).collect();
        let max = diffs.iter().copied().fold(0f32, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        eprintln!("trainer vs mistralrs (F32 GGUF): {} tokens, mean |Δ| {mean:.4}, max {max:.4} nats", diffs.len());
        // Measured: mean 0.0015, max 0.0065 nats over 22 tokens. A wrong RoPE layout,
        // norm or mask is off by whole nats.
        assert!(max < 0.03 && mean < 0.01, "trainer vs mistralrs log-probs: max {max}, mean {mean}");
    });
}

/// A checkpoint of its own for a test (a symlink to the default model under a fresh
/// path), with `pairs` preference pairs recorded for it.
async fn checkpoint_with_pairs(store: &Store, dir: &Path, pairs: usize) -> (i64, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let base = dir.join("base.gguf");
    let _ = std::fs::remove_file(&base);
    std::os::unix::fs::symlink(model_path(), &base).unwrap();
    let id: i64 = sqlx::query_scalar("INSERT INTO checkpoints (name, path, format) VALUES ('dpo-test-base', $1, 'gguf') RETURNING id")
        .bind(base.to_string_lossy().as_ref())
        .fetch_one(store.pool())
        .await
        .unwrap();
    let questions = ["Name a primary colour.", "What is 2 + 2?", "Say hello politely."];
    let answers = [
        ("Red is a primary colour.", "Banana."),
        ("2 + 2 is 4.", "It is 22, obviously."),
        ("Hello! How can I help you today?", "What do you want."),
    ];
    for i in 0..pairs {
        let (chosen, rejected) = answers[i % 3];
        crate::common::insert_pair(store, id, questions[i % 3], chosen, rejected).await;
    }
    (id, base)
}

fn srlm(args: &[&str]) -> (bool, String, String) {
    srlm_with(args, &database_url())
}

fn srlm_with(args: &[&str], url: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_srlm")).args(args).env("DATABASE_URL", url).output().expect("srlm runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn dpo_trains_the_pairs_in_postgres_into_a_registered_checkpoint_that_serves() {
    rt().block_on(async {
        let store = Store::connect_lazy(&database_url()).unwrap();
        store.migrate().await.unwrap();
        let dir = std::env::temp_dir().join(format!("srlm-dpo-e2e-{}", std::process::id()));
        let (base_id, base) = checkpoint_with_pairs(&store, &dir, 3).await;
        let id = base_id.to_string();

        // Dry run: counts, claims nothing.
        let (ok, out, err) = srlm(&["train", "dpo", "--checkpoint", &id, "--dry-run"]);
        assert!(ok, "{err}");
        let dry: Value = serde_json::from_str(out.trim()).expect("dry-run JSON");
        assert_eq!(dry["examples"], 3);
        assert!(dry["memory_estimate_gib"].as_f64().unwrap() > 0.5, "{dry}");

        // Too short a --max-len: every pair skipped, the run fails and gives them back.
        let (ok, _, err) = srlm(&["train", "dpo", "--checkpoint", &id, "--max-len", "8", "--truncation", "skip"]);
        assert!(!ok && err.contains("too long"), "{err}");
        let available: i64 = sqlx::query_scalar("SELECT count(*) FROM pairs WHERE checkpoint_id = $1 AND status = 'available'")
            .bind(base_id)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(available, 3, "a failed run returns its pairs");
        let failed: String = sqlx::query_scalar("SELECT status FROM training_runs WHERE base_checkpoint_id = $1 ORDER BY id DESC LIMIT 1")
            .bind(base_id)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(failed, "failed");

        let (ok, out, err) = srlm(&[
            "train",
            "dpo",
            "--checkpoint",
            &id,
            "--batch-size",
            "2",
            "--micro-batch",
            "1",
            "--lr",
            "5e-6",
            "--max-len",
            "96",
            "--dtype",
            "q8_0",
        ]);
        assert!(ok, "srlm train dpo failed:\n{err}");
        let summary: Value = serde_json::from_str(out.lines().last().unwrap()).expect("summary JSON");
        assert_eq!(summary["steps"], 2, "3 pairs in batches of 2: {summary}");
        assert_eq!(summary["parent_id"], base_id);
        let run_id = summary["run_id"].as_i64().unwrap();
        let new_id = summary["checkpoint_id"].as_i64().unwrap();
        let path = PathBuf::from(summary["path"].as_str().unwrap());
        assert!(path.exists() && path.starts_with(base.parent().unwrap()), "{}", path.display());

        let checkpoint = store.checkpoint(new_id).await.unwrap().unwrap();
        assert_eq!((checkpoint.parent_id, checkpoint.status.as_str(), checkpoint.format.as_str()), (Some(base_id), "registered", "gguf"));
        assert_eq!(store.run_status(run_id).await.unwrap().unwrap(), ("succeeded".into(), Some(new_id), None));
        let steps = store.run_steps(run_id).await.unwrap();
        assert_eq!(steps.len(), 2);
        for key in [
            "loss",
            "rewards/chosen",
            "rewards/rejected",
            "rewards/accuracies",
            "rewards/margins",
            "logps/chosen",
            "logps/rejected",
            "lr",
            "grad_norm",
        ] {
            assert!(steps[0][key].is_number(), "step metrics lack {key}: {}", steps[0]);
        }
        // At the first step the policy is the reference: the loss is log 2.
        assert!((steps[0]["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-3, "{}", steps[0]);
        let consumed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pairs WHERE checkpoint_id = $1 AND status = 'consumed' AND consumed_by_run = $2")
                .bind(base_id)
                .bind(run_id)
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(consumed, 3);

        // Lineage through the API: parent, run, pairs, prompts.
        let (status, body) = crate::common::server().get(&format!("/checkpoints/{new_id}")).await;
        assert_eq!(status, 200, "{body}");
        let lineage: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(lineage["parent"]["id"], base_id);
        assert_eq!(lineage["training_run"]["id"], run_id);
        assert_eq!(lineage["training_run"]["kind"], "dpo");
        assert_eq!(lineage["pair_ids"].as_array().unwrap().len(), 3);
        assert_eq!(lineage["prompt_ids"].as_array().unwrap().len(), 3);

        // The written checkpoint loads in the server's engine and answers.
        let options = srlm::engine::load::EngineOptions {
            max_seqs: 4,
            prefill_chunk: 64,
            ..srlm::engine::load::EngineOptions::for_model(&path.to_string_lossy())
        };
        let served = NativeEngine::load(&options).expect("the trained checkpoint loads");
        let generation = Generation {
            prompt: Prompt::Chat(vec![ChatMessage { role: "user".into(), content: "What is 2 + 2?".into() }]),
            sampling: SamplingConfig::greedy(),
            max_tokens: 12,
            stop: vec![],
        };
        let answer = complete(&served, generation).await.expect("the trained checkpoint generates");
        assert!(!answer.text.trim().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn dpo_trains_a_pairs_file_and_the_gate_judges_the_result() {
    rt().block_on(async {
        let store = Store::connect_lazy(&database_url()).unwrap();
        store.migrate().await.unwrap();
        let dir = std::env::temp_dir().join(format!("srlm-dpo-file-{}", std::process::id()));
        let (base_id, _) = checkpoint_with_pairs(&store, &dir, 2).await;
        let id = base_id.to_string();
        // Three pairs in TRL's shapes: conversational, text, implicit prompt.
        let file = dir.join("pairs.jsonl");
        std::fs::write(
            &file,
            [
                r#"{"prompt": [{"role": "user", "content": "Name a primary colour."}], "chosen": [{"role": "assistant", "content": "Red."}], "rejected": [{"role": "assistant", "content": "Banana."}]}"#,
                r#"{"prompt": "What is 2 + 2?", "chosen": "4.", "rejected": "22."}"#,
                r#"{"chosen": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "No."}]}"#,
            ]
            .join("\n"),
        )
        .unwrap();
        let file_arg = file.to_string_lossy().into_owned();
        let (ok, _, err) = srlm(&["train", "dpo", "--pairs", &file_arg, "--watch"]);
        assert!(!ok && err.contains("cannot be used with"), "{err}");

        let (ok, out, err) = srlm(&[
            "train", "dpo", "--checkpoint", &id, "--pairs", &file_arg, "--batch-size", "2", "--max-len", "96", "--dtype", "q8_0", "--no-announce",
        ]);
        assert!(ok, "srlm train dpo --pairs failed:\n{err}");
        let summary: Value = serde_json::from_str(out.lines().last().unwrap()).expect("summary JSON");
        assert_eq!((summary["steps"].as_i64(), summary["examples"].as_i64()), (Some(2), Some(3)), "{summary}");
        assert_eq!(summary["parent_id"], base_id);
        let child = summary["checkpoint_id"].as_i64().unwrap();
        // The pairs in Postgres were not touched; the run names its file.
        let available: i64 = sqlx::query_scalar("SELECT count(*) FROM pairs WHERE checkpoint_id = $1 AND status = 'available'")
            .bind(base_id)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(available, 2);
        let config: Value = sqlx::query_scalar("SELECT config FROM training_runs WHERE id = $1")
            .bind(summary["run_id"].as_i64().unwrap())
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(config["pairs_file"], file_arg.as_str());

        // The gate on the two, on a tiny subset: it decides and prints its figures…
        let (parent, child_arg) = (id.clone(), child.to_string());
        let gate = |margin: &'static str| {
            srlm(&[
                "eval", "gate", "--parent", &parent, "--child", &child_arg, "--gate-prompts", "3", "--gate-pair-limit", "2",
                "--gate-max-tokens", "24", "--gate-margin", margin,
            ])
        };
        let (ok, out, err) = gate("1");
        assert!(ok, "a margin of 100 points lets anything through:\n{err}");
        let outcome: Value = serde_json::from_str(out.trim()).expect("gate JSON");
        assert_eq!((outcome["refused"].as_bool(), outcome["margin"].as_f64()), (Some(false), Some(1.0)), "{outcome}");
        assert_eq!(outcome["judge_change"]["n"], 2);
        assert!(outcome["instruction_change"]["n"].as_i64().unwrap() >= 3, "{outcome}");
        // …and a margin that demands a sure gain of 100 points refuses, exits non-zero and
        // records the refusal on the child.
        let (ok, out, err) = gate("-1");
        assert!(!ok && err.contains("refuses checkpoint"), "{err}");
        assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["refused"], true);
        let checkpoint = store.checkpoint(child).await.unwrap().unwrap();
        assert_eq!(checkpoint.status, "refused");
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn sft_trains_chat_jsonl_into_a_registered_first_iteration() {
    rt().block_on(async {
        let store = Store::connect_lazy(&database_url()).unwrap();
        store.migrate().await.unwrap();
        let dir = std::env::temp_dir().join(format!("srlm-sft-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("ift.jsonl");
        let lines: Vec<String> =
            [("What is the capital of France?", "Paris."), ("Add 3 and 4.", "3 + 4 = 7."), ("Name a fruit.", "An apple.")]
                .iter()
                .map(|(q, a)| {
                    serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}).to_string()
                })
                .collect();
        std::fs::write(&data, lines.join("\n") + "\n").unwrap();
        let out = dir.join("m1.gguf");
        let (ok, stdout, err) = srlm(&[
            "train",
            "sft",
            "--model",
            &model_path(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--batch-size",
            "3",
            "--micro-batch",
            "3",
            "--epochs",
            "2",
            "--dtype",
            "q8_0",
            "--database-url",
            &database_url(),
        ]);
        assert!(ok, "srlm train sft failed:\n{err}");
        let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).expect("summary JSON");
        assert_eq!((summary["steps"].as_u64(), summary["examples"].as_u64()), (Some(2), Some(6)), "{summary}");
        assert!(summary["last_step"]["loss"].as_f64().unwrap() > 0.0);
        let checkpoint = store.checkpoint(summary["checkpoint_id"].as_i64().unwrap()).await.unwrap().unwrap();
        assert_eq!(checkpoint.path, out.to_string_lossy());
        assert!(checkpoint.iteration >= 1);
        assert!(LlamaWeights::load(&out).is_ok(), "the SFT checkpoint loads");
        // An invalid file is refused with its line number, before any training.
        let bad = dir.join("bad.jsonl");
        std::fs::write(&bad, "{\"messages\": [{\"role\": \"user\", \"content\": \"no answer\"}]}\n").unwrap();
        let (ok, _, err) = srlm(&["train", "sft", "--model", &model_path(), "--data", bad.to_str().unwrap(), "--dry-run"]);
        assert!(!ok && err.contains("bad.jsonl:1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn a_watching_trainer_trains_the_active_checkpoint_once_enough_pairs_exist() {
    rt().block_on(async {
        let (store, url) = own_database("srlm_test_watch").await;
        let dir = std::env::temp_dir().join(format!("srlm-watch-{}", std::process::id()));
        let (base_id, _) = checkpoint_with_pairs(&store, &dir, 1).await;
        store.activate_checkpoint(base_id).await.unwrap();
        let mut watcher = Command::new(env!("CARGO_BIN_EXE_srlm"))
            .args([
                "train",
                "dpo",
                "--watch",
                "--min-pairs",
                "2",
                "--poll-secs",
                "1",
                "--batch-size",
                "2",
                "--max-len",
                "96",
                "--dtype",
                "q8_0",
            ])
            .env("DATABASE_URL", &url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let runs = || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM training_runs WHERE status = 'succeeded'")
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        assert_eq!(runs().await, 0, "one pair is below --min-pairs");
        // A second pair arrives: the watcher trains.
        let (other, _) = checkpoint_with_pairs(&store, &dir.join("more"), 1).await;
        sqlx::query("UPDATE pairs SET checkpoint_id = $1 WHERE checkpoint_id = $2")
            .bind(base_id)
            .bind(other)
            .execute(store.pool())
            .await
            .unwrap();
        let mut trained = false;
        for _ in 0..240 {
            if runs().await == 1 {
                trained = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let _ = watcher.kill();
        let _ = watcher.wait();
        assert!(trained, "the watcher trained once two pairs were available");
        let new: (i64, i32) = sqlx::query_as("SELECT parent_id, iteration FROM checkpoints WHERE parent_id = $1")
            .bind(base_id)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(new, (base_id, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
