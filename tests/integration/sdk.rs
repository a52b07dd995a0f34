//! The official OpenAI Python SDK, unchanged, against the running server.

use crate::common::{rt, server};

#[test]
fn the_official_openai_python_sdk_works_unchanged() {
    let base = rt().block_on(async { server().base.clone() });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_sdk.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg(format!("{base}/v1"))
        .output()
        .expect("python3 runs (scripts/test.sh installs the openai package)");
    assert!(
        output.status.success(),
        "openai SDK check failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
