//! `srlm eval`, `srlm data export-pairs` and `srlm checkpoints import` end to end: the
//! real model behind the test server, a real Postgres.

use srlm::eval::h2h::{self, EvalH2hConfig, ModelJudge};
use srlm::eval::rm::{evaluate, EvalRmConfig};
use srlm::eval::source::Source;
use srlm::eval::StoreConfig;
use srlm::store::evaluations::NewEvaluation;

use crate::common::{model_path, own_database, rt, server};

fn data(name: &str) -> std::path::PathBuf {
    format!("{}/data/{name}", env!("CARGO_MANIFEST_DIR")).into()
}

#[test]
fn reward_model_metrics_come_from_the_served_judge_and_are_stored() {
    rt().block_on(async {
        let s = server();
        let args = EvalRmConfig {
            url: s.base.clone(),
            data: data("ranked.jsonl"),
            methods: vec![srlm::judge::JudgeMethod::Expected],
            samples: 1,
            limit: Some(2),
            seed: 1,
            store: StoreConfig::default(),
        };
        let report = evaluate(&args).await.expect("evaluation runs");
        let (method, m) = &report.results[0];
        eprintln!("eval rm ({method}): {m:?}");
        assert_eq!((method.as_str(), m.prompts), ("expected", 2));
        assert_eq!(m.parse_rate, 1.0, "expected judging always scores");
        let p = m.pairwise_accuracy.expect("pairs to compare");
        assert!((0.0..=1.0).contains(&p));
        for r in [m.spearman, m.kendall_tau].into_iter().flatten() {
            assert!((-1.0..=1.0).contains(&r));
        }
        let served = s.state.checkpoint_id().expect("the server's checkpoint is registered");
        assert_eq!(report.checkpoint_id, Some(served), "the judging checkpoint is the served one");

        // Stored with the checkpoint and shown by the API.
        let id = s
            .state
            .store
            .record_evaluation(&NewEvaluation {
                kind: "rm",
                checkpoint_id: report.checkpoint_id,
                opponent_checkpoint_id: None,
                subject: s.base.clone(),
                opponent: None,
                method: method.clone(),
                dataset: "ranked.jsonl".into(),
                items: m.prompts as i32,
                metrics: serde_json::to_value(m).unwrap(),
                config: serde_json::json!({}),
            })
            .await
            .unwrap();
        let (status, body) = s.get(&format!("/evaluations?kind=rm&checkpoint_id={served}&limit=500")).await;
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let row = page["data"].as_array().unwrap().iter().find(|r| r["id"] == id).expect("the stored row is listed");
        assert_eq!(row["metrics"]["pairwise_accuracy"].as_f64(), m.pairwise_accuracy);
        assert!(row["iteration"].is_i64());
        let (status, body) = s.get("/evaluations?kind=best").await;
        assert!(status == 400 && body.contains("kind"), "{status} {body}");
    });
}

#[test]
fn head_to_head_answers_with_both_models_and_judges_both_orders() {
    rt().block_on(async {
        let s = server();
        let store = &s.state.store;
        let a = Source::open(&s.base, "current", None, Some(store)).await.unwrap();
        // B: the same file loaded in this process, found in the database by its path.
        let b = Source::open(&model_path(), "current", None, Some(store)).await.unwrap();
        let served = s.state.checkpoint_id();
        assert_eq!((a.checkpoint_id(), b.checkpoint_id()), (served, served));
        let judge = ModelJudge {
            source: Source::open(&s.base, "current", None, None).await.unwrap(),
            template: srlm::judge::pairwise::read_template(None).unwrap(),
            max_tokens: 48,
        };
        let args = EvalH2hConfig {
            a: s.base.clone(),
            b: model_path(),
            judge: s.base.clone(),
            a_model: "current".into(),
            b_model: "current".into(),
            judge_model: "current".into(),
            judge_api_key_env: None,
            prompts: data("seed_prompts.jsonl"),
            limit: Some(2),
            max_tokens: 24,
            temperature: 0.0,
            judge_max_tokens: 48,
            judge_template: None,
            concurrency: 2,
            out: None,
            store: StoreConfig::default(),
        };
        let matches = h2h::evaluate(&args, &a, &b, &judge).await.expect("h2h runs");
        assert_eq!(matches.len(), 2);
        for m in &matches {
            assert!(m.a_tokens > 0 && m.b_tokens > 0 && !m.a.is_empty());
            assert!(m.judge_texts.iter().all(|t| !t.is_empty()), "two verdict texts per prompt");
            assert_eq!(m.outcome, h2h::outcome(m.verdicts[0], m.verdicts[1]));
        }
        let metrics = h2h::metrics(&matches);
        eprintln!("h2h: {metrics:?}");
        assert_eq!(metrics.wins + metrics.ties + metrics.losses, 2);
        assert!(metrics.win_rate.is_some_and(|w| (0.0..=1.0).contains(&w)));
    });
}

#[test]
fn alpaca_export_writes_one_output_per_prompt() {
    rt().block_on(async {
        let s = server();
        let source = Source::open(&s.base, "current", None, None).await.unwrap();
        let dir = std::env::temp_dir().join(format!("srlm-alpaca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prompts = dir.join("eval.json");
        std::fs::write(
            &prompts,
            r#"[{"instruction": "Name a primary colour.", "dataset": "test"}, {"instruction": "Say hello in French."}]"#,
        )
        .unwrap();
        let args = srlm::eval::alpaca::ExportAlpacaConfig {
            model: s.base.clone(),
            model_name: "current".into(),
            prompts: prompts.clone(),
            limit: None,
            generator: Some("m1".into()),
            max_tokens: 16,
            temperature: 0.0,
            concurrency: 2,
            out: dir.join("outputs.json"),
            database_url: None,
        };
        let read = srlm::eval::source::read_prompts(&prompts).unwrap();
        let outputs = srlm::eval::alpaca::outputs(&source, &read, "m1", &args).await.unwrap();
        assert_eq!(outputs.len(), 2);
        assert_eq!(outputs[1].instruction, "Say hello in French.");
        assert!(outputs.iter().all(|o| o.generator == "m1" && !o.output.is_empty()));
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn pairs_export_filters_and_imported_checkpoints_join_the_lineage() {
    rt().block_on(async {
        let (store, url) = own_database("srlm_test_exchange").await;
        let model = model_path();
        let m0 = store.activate_served("m0", &model, "gguf").await.unwrap();

        // One pair made by M0, written the way /generate records it.
        crate::common::insert_pair(&store, m0.id, "Why is the sea salty?", "Rivers carry dissolved minerals into it.", "Because fish cry.")
            .await;
        let all = store.pair_texts(Some(m0.id), Some(0), Some("available")).await.unwrap();
        assert_eq!(all.len(), 1);
        let line = srlm::data::pairs::trl_line(&all[0]);
        assert_eq!(line["prompt"][0]["content"], "Why is the sea salty?");
        assert_eq!(line["chosen"][0]["content"], "Rivers carry dissolved minerals into it.");
        assert_eq!(line["rejected"][0]["content"], "Because fish cry.");
        assert_eq!((line["score_chosen"].as_f64(), line["score_rejected"].as_f64()), (Some(5.0), Some(1.0)));
        assert!(store.pair_texts(None, Some(1), None).await.unwrap().is_empty(), "no pairs from iteration 1");
        assert!(store.pair_texts(None, None, Some("consumed")).await.unwrap().is_empty());

        // A checkpoint trained elsewhere (here: the same file under another name).
        let dir = std::env::temp_dir().join(format!("srlm-import-it-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let elsewhere = dir.join("m1-trl.gguf");
        let _ = std::fs::remove_file(&elsewhere);
        std::os::unix::fs::symlink(&model, &elsewhere).unwrap();
        let import = |path: &std::path::Path| srlm::checkpoint::import::ImportCheckpointConfig {
            path: path.to_path_buf(),
            parent: Some(m0.id),
            iteration: None,
            name: None,
            database_url: url.clone(),
        };
        srlm::checkpoint::import::run(import(&elsewhere)).await.expect("import");
        let m1 = store.checkpoint_by_path(&elsewhere.to_string_lossy()).await.unwrap().expect("registered");
        assert_eq!((m1.parent_id, m1.iteration, m1.name.as_str(), m1.status.as_str()), (Some(m0.id), 1, "m1-trl", "registered"));
        assert!(srlm::checkpoint::import::run(import(&elsewhere)).await.unwrap_err().to_string().contains("already checkpoint"));
        let corrupt = dir.join("broken.gguf");
        std::fs::write(&corrupt, b"GGUF but truncated").unwrap();
        assert!(srlm::checkpoint::import::run(import(&corrupt)).await.is_err());
        assert!(store.checkpoint_by_path(&corrupt.to_string_lossy()).await.unwrap().is_none(), "nothing recorded");

        // Measurements of M0 and M1 stored, then charted by iteration.
        for (checkpoint, accuracy) in [(m0.id, 0.4), (m1.id, 0.55)] {
            store
                .record_evaluation(&NewEvaluation {
                    kind: "rm",
                    checkpoint_id: Some(checkpoint),
                    opponent_checkpoint_id: None,
                    subject: "test".into(),
                    opponent: None,
                    method: "sample".into(),
                    dataset: "ranked".into(),
                    items: 3,
                    metrics: serde_json::json!({"pairwise_accuracy": accuracy}),
                    config: serde_json::json!({}),
                })
                .await
                .unwrap();
        }
        let stored = store.evaluations(Some("rm"), None, 50, 0).await.unwrap();
        assert_eq!(stored.iter().map(|e| e.iteration).collect::<Vec<_>>(), [Some(0), Some(1)]);
        let chart = dir.join("rm.svg");
        StoreConfig { database_url: Some(url.clone()), chart: Some(chart.clone()) }.chart(&store, "rm", "pairwise_accuracy").await.unwrap();
        let svg = std::fs::read_to_string(&chart).unwrap();
        assert_eq!(svg.matches("<circle").count(), 2, "one point per iteration");
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
