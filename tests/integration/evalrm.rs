//! `srlm eval rm` against the real model on two prompts of the project's ranked set.

use srlm::eval::rm::{evaluate, EvalRmArgs};

use crate::common::{rt, server};

#[test]
fn reward_model_metrics_come_from_the_served_judge() {
    rt().block_on(async {
        let s = server();
        let args = EvalRmArgs {
            url: s.base.clone(),
            data: format!("{}/data/ranked.jsonl", env!("CARGO_MANIFEST_DIR")).into(),
            methods: vec!["expected".into()],
            samples: 1,
            limit: Some(2),
            seed: 1,
        };
        let results = evaluate(&args).await.expect("evaluation runs");
        let (method, m) = &results[0];
        eprintln!("eval rm ({method}): {m:?}");
        assert_eq!((method.as_str(), m.prompts), ("expected", 2));
        assert_eq!(m.parse_rate, 1.0, "expected judging always scores");
        let p = m.pairwise_accuracy.expect("pairs to compare");
        assert!((0.0..=1.0).contains(&p));
        for r in [m.spearman, m.kendall_tau].into_iter().flatten() {
            assert!((-1.0..=1.0).contains(&r));
        }
    });
}
