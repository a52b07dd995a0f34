//! `srlm loop` end to end on a server of its own (small settings): two iterations make
//! M1 → M2 → M3 with full lineage, and a rerun picks up prompts already answered.

use srlm::cli::{Cli, Command};
use srlm::selfloop::iterate;

use crate::common::{model_path, own_database, own_server, rt};

#[test]
fn two_iterations_make_two_checkpoints_with_lineage_and_resume_without_duplicates() {
    rt().block_on(async {
        let dir = std::env::temp_dir().join(format!("srlm-loop-{}", std::process::id()));
        let (store, url, base, m1_row) = loop_server("srlm_test_loop", &dir).await;
        let seeds = dir.join("seeds.jsonl");
        let seed_prompts = [
            "Explain what a rainbow is.",
            "List three uses of vinegar at home.",
            "Write a two-line poem about coffee.",
            "How does a bicycle stay upright?",
            "Give a tip for saving money on groceries.",
            "What is photosynthesis?",
            "Describe a cat to someone who has never seen one.",
            "Why do we have seasons?",
        ];
        std::fs::write(&seeds, seed_prompts.iter().map(|p| serde_json::json!({"prompt": p}).to_string()).collect::<Vec<_>>().join("\n"))
            .unwrap();

        // Half the prompts carry checkable instructions and the verifier decides their
        // pairs; the gate measures every new checkpoint (tiny subsets, and a margin no
        // checkpoint can miss: what is checked here is that it measures, stores and then
        // swaps; refusing is tested with a scripted evaluation).
        let data = |f: &str| format!("{}/data/{f}", env!("CARGO_MANIFEST_DIR"));
        let seeds = seeds.to_string_lossy().into_owned();
        #[rustfmt::skip]
        let argv = [
            "srlm", "loop", "--url", &base, "--database-url", &url, "--admin-token", "loop-token", "--prompts", "2",
            "--seeds", &seeds, "--n", "2", "--samples", "1", "--method", "expected", "--max-tokens", "16",
            "--concurrency", "2", "--seed", "5", "--eval-ranked", &data("ranked.jsonl"), "--eval-limit", "1",
            "--reward", "judge+verify", "--verifiable-share", "0.5", "--gate-ifeval", &data("ifeval.jsonl"),
            "--gate-prompts", "2", "--gate-pairs", &data("ranked.jsonl"), "--gate-pair-limit", "1", "--gate-margin", "1.0",
            "--gate-max-tokens", "16", "--batch-size", "2", "--max-len", "160", "--dtype", "q8_0",
        ];
        let (cli, given) = Cli::try_parse_with_matches(argv).expect("loop flags");
        let Command::Loop(loop_args) = cli.command else { unreachable!("parsed as loop") };
        let loop_args = loop_args.with_preset(&given).config();
        // As if an earlier run died after answering one prompt of iteration 1.
        let client = srlm::client::Client::new(&base, std::time::Duration::from_secs(600)).unwrap();
        let request = srlm::protocol::generate::GenerateRequest {
            prompt: Some("Name two planets in the solar system.".into()),
            n: Some(2),
            max_tokens: Some(16),
            judge: Some(srlm::protocol::generate::JudgeChoice::Options(srlm::protocol::judge::JudgeOptions {
                samples: Some(1),
                method: Some(srlm::judge::JudgeMethod::Expected),
                ..Default::default()
            })),
            source: Some("self_instruct".into()),
            iteration: Some(1),
            ..Default::default()
        };
        client.generate(&request).await.expect("a recorded generation");

        let first = iterate(&loop_args, &store).await.expect("iteration 1");
        assert_eq!((first["prompts_answered_before"].as_u64(), first["prompts_answered_this_run"].as_u64()), (Some(1), Some(1)), "{first}");
        let second = iterate(&loop_args, &store).await.expect("iteration 2");
        eprintln!("iteration 1: {first}\niteration 2: {second}");

        let m2 = first["output_checkpoint_id"].as_i64().unwrap();
        let m3 = second["output_checkpoint_id"].as_i64().unwrap();
        let c2 = store.checkpoint(m2).await.unwrap().unwrap();
        let c3 = store.checkpoint(m3).await.unwrap().unwrap();
        assert_eq!((c2.parent_id, c2.iteration), (Some(m1_row.id), 1));
        assert_eq!((c3.parent_id, c3.iteration, c3.status.as_str()), (Some(m2), 2, "active"));
        for (it, base_id) in [(1, m1_row.id), (2, m2)] {
            let prompts: i64 = sqlx::query_scalar("SELECT count(*) FROM prompts WHERE source = 'self_instruct' AND iteration = $1")
                .bind(it)
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(prompts, 2, "iteration {it}: exactly --prompts prompts, none duplicated");
            let run = store.run_producing(if it == 1 { m2 } else { m3 }).await.unwrap().expect("a training run");
            assert_eq!(run.base_checkpoint_id, Some(base_id));
            let (pairs, from_prompts) = store.pairs_of_run(run.id).await.unwrap();
            assert!(!pairs.is_empty() && !from_prompts.is_empty());
        }
        // The verifiable prompts were stored with their instructions.
        let verifiable: i64 =
            sqlx::query_scalar("SELECT count(*) FROM prompts WHERE instructions IS NOT NULL").fetch_one(store.pool()).await.unwrap();
        assert_eq!(verifiable, 2, "one verifiable prompt per iteration");
        assert_eq!((first["verifiable_prompts"].as_u64(), second["verifiable_prompts"].as_u64()), (Some(1), Some(1)));
        // The gate measured M1, M2 and M3 once each (M2's figures were reused as the parent's).
        assert_eq!((first["gate"]["refused"].as_bool(), second["gate"]["refused"].as_bool()), (Some(false), Some(false)), "{first}");
        let gated: Vec<Option<i64>> = store
            .evaluations(Some("ifeval"), None, 10, 0)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.method == "gate")
            .map(|e| e.checkpoint_id)
            .collect();
        assert_eq!(gated, [Some(m1_row.id), Some(m2), Some(m3)]);
        // How far each new checkpoint moved from its parent, on the held-out pair.
        let moved = &second["policy_movement"];
        assert_eq!(moved["pairs"], 1, "{second}");
        assert!(moved["mean_abs_logprob_change"].as_f64().unwrap() > 0.0, "{moved}");
        assert!(moved["margin_change"].as_f64().unwrap().is_finite());
        let reports: i64 = sqlx::query_scalar("SELECT count(*) FROM iteration_reports").fetch_one(store.pool()).await.unwrap();
        assert_eq!(reports, 2);
        // Each new checkpoint's judge was measured after its swap and stored with it.
        assert_eq!(second["reward_model"]["prompts"], 1, "{second}");
        let measured = store.evaluations(Some("rm"), None, 10, 0).await.unwrap();
        let placed: Vec<(Option<i64>, Option<i32>)> = measured.iter().map(|e| (e.checkpoint_id, e.iteration)).collect();
        assert_eq!(placed, [(Some(m2), Some(1)), (Some(m3), Some(2))]);
        // Rerunning a finished iteration's training is not possible twice: the base has its output.
        assert_eq!(store.output_of_base(m1_row.id).await.unwrap(), Some(m2));

        // A gate that demands more than any checkpoint can show refuses M4: it stays
        // registered as `refused` with the reason, M3 keeps serving, and a rerun refuses
        // it again without training anew.
        let mut strict = loop_args.clone();
        strict.gate.as_mut().expect("the gate is on").margin = -1.0;
        strict.eval_ranked = None;
        let third = iterate(&strict, &store).await.expect("iteration 3 runs, then the gate refuses");
        assert_eq!(third["gate"]["refused"], true, "{third}");
        let m4 = third["output_checkpoint_id"].as_i64().unwrap();
        let c4 = store.checkpoint(m4).await.unwrap().unwrap();
        assert_eq!((c4.parent_id, c4.status.as_str()), (Some(m3), "refused"));
        assert!(store.checkpoint_error(m4).await.unwrap().unwrap().contains("instruction-level accuracy"));
        let served = client.models().await.unwrap();
        assert!(served.data.iter().any(|m| m.checkpoint_id == Some(m3)), "M3 still serves: {served:?}");
        let again = iterate(&strict, &store).await.expect("the rerun");
        assert_eq!((again["gate"]["refused"].as_bool(), again["output_checkpoint_id"].as_i64()), (Some(true), Some(m4)));
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// A database and a server of their own, serving a symlink to the default model as `m1`.
async fn loop_server(db: &str, dir: &std::path::Path) -> (srlm::store::Store, String, String, srlm::store::Checkpoint) {
    let (store, url) = own_database(db).await;
    std::fs::create_dir_all(dir).unwrap();
    let m1 = dir.join("m1.gguf");
    let _ = std::fs::remove_file(&m1);
    std::os::unix::fs::symlink(model_path(), &m1).unwrap();
    let (base, _, row) = own_server(&store, &m1, "m1", "loop-token").await;
    (store, url, base, row)
}

#[test]
fn a_loop_killed_mid_iteration_and_rerun_duplicates_nothing() {
    rt().block_on(async {
        let dir = std::env::temp_dir().join(format!("srlm-loop-kill-{}", std::process::id()));
        let (store, url, base, m1) = loop_server("srlm_test_loop_kill", &dir).await;
        let m1 = m1.id;
        let seeds = format!("{}/data/seed_prompts.jsonl", env!("CARGO_MANIFEST_DIR"));
        let argv = [
            "loop",
            "--url",
            &base,
            "--admin-token",
            "loop-token",
            "--prompts",
            "3",
            "--n",
            "2",
            "--samples",
            "1",
            "--method",
            "expected",
            "--max-tokens",
            "16",
            "--concurrency",
            "1",
            "--seeds",
            &seeds,
            "--batch-size",
            "2",
            "--max-len",
            "160",
            "--dtype",
            "q8_0",
            "--gate",
            "off",
        ];
        let answered = || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM prompts WHERE source = 'self_instruct' AND iteration = 1")
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        // Kill -9 the loop as soon as it has recorded its first answered prompt.
        let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_srlm"))
            .args(argv)
            .env("DATABASE_URL", &url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut seen = 0;
        // Up to 3 minutes: the first answer can be slow on a loaded 2-core machine.
        for _ in 0..3600 {
            seen = answered().await;
            if seen >= 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        first.kill().unwrap();
        let _ = first.wait();
        assert!((1..3).contains(&seen), "killed after {seen} of 3 prompts");
        // The rerun finishes the iteration without repeating what was done.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_srlm")).args(argv).env("DATABASE_URL", &url).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
        assert_eq!(answered().await, 3, "exactly --prompts prompts for the iteration: {report}");
        assert_eq!(report["prompts_answered_before"].as_i64().unwrap() + report["prompts_answered_this_run"].as_i64().unwrap(), 3);
        let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM training_runs WHERE status = 'succeeded' AND base_checkpoint_id = $1")
            .bind(m1)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(runs, 1);
        let candidates: i64 =
            sqlx::query_scalar("SELECT count(*) FROM candidates WHERE checkpoint_id = $1").bind(m1).fetch_one(store.pool()).await.unwrap();
        assert_eq!(candidates, 3 * 2, "n = 2 candidates per prompt, none duplicated");
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
