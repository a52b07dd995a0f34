//! The container files (docker/) stay consistent with the code, checked without Docker:
//! every srlm command they run parses with the real CLI, every variable they set is one
//! the CLI reads, every file they copy exists, the model path is the one
//! scripts/fetch-model.sh writes, and the health checks name real routes.

use std::collections::BTreeSet;

use clap::CommandFactory;
use regex::Regex;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const FILES: [&str; 3] = ["docker/Dockerfile", "docker/Dockerfile.cuda", "docker/compose.yaml"];

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every environment variable any srlm argument reads.
fn cli_env_names() -> BTreeSet<String> {
    fn walk(command: &clap::Command, out: &mut BTreeSet<String>) {
        out.extend(command.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()));
        for sub in command.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut names = BTreeSet::new();
    walk(&srlm::cli::Cli::command(), &mut names);
    names
}

/// `["srlm", …]` arrays (ENTRYPOINT, entrypoint:, CMD).
fn srlm_commands(text: &str) -> Vec<Vec<String>> {
    let array = Regex::new(r#"(?m)^\s*(?:ENTRYPOINT|entrypoint:|CMD|command:)\s*(\[.*\])\s*$"#).unwrap();
    array
        .captures_iter(text)
        .filter_map(|c| serde_json::from_str::<Vec<String>>(&c[1]).ok())
        .filter(|argv| argv.first().is_some_and(|a| a == "srlm"))
        .collect()
}

#[test]
fn container_commands_parse_with_the_real_cli() {
    let mut seen = 0;
    for file in FILES {
        for mut argv in srlm_commands(&read(file)) {
            // The database URL comes from DATABASE_URL in the containers.
            if !argv.iter().any(|a| a == "--database-url") && argv.get(1).is_some_and(|s| s == "serve" || s == "train") {
                argv.extend(["--database-url".into(), "postgres://from-the-environment".into()]);
            }
            if let Err(e) = <srlm::cli::Cli as clap::Parser>::try_parse_from(&argv) {
                panic!("{file}: {argv:?} does not parse: {e}");
            }
            seen += 1;
        }
    }
    assert!(seen >= 3, "the serve entrypoints and the trainer command were found ({seen})");
}

#[test]
fn container_variables_exist_in_the_cli() {
    let known = cli_env_names();
    let variable = Regex::new(r"\b(SRLM_[A-Z0-9_]+|DATABASE_URL)\b").unwrap();
    for file in FILES {
        for c in variable.captures_iter(&read(file)) {
            assert!(known.contains(&c[1]), "{file} sets {} but no srlm option reads it (known: {known:?})", &c[1]);
        }
    }
}

#[test]
fn copied_files_and_the_model_path_exist() {
    let copy = Regex::new(r"(?m)^COPY\s+(\S+)\s").unwrap();
    for file in ["docker/Dockerfile", "docker/Dockerfile.cuda"] {
        let text = read(file);
        for c in copy.captures_iter(&text) {
            if !c[1].starts_with("--") {
                assert!(std::path::Path::new(ROOT).join(&c[1]).exists(), "{file} copies {} which does not exist", &c[1]);
            }
        }
    }
    let compose = read("docker/compose.yaml");
    let dockerfile = Regex::new(r"dockerfile:\s*(\S+)").unwrap();
    for c in dockerfile.captures_iter(&compose) {
        assert!(std::path::Path::new(ROOT).join(&c[1]).exists(), "compose builds {}", &c[1]);
    }
    // The model the images fetch is where SRLM_MODEL points.
    let fetched = format!("MODEL={}", srlm::cli::DEFAULT_MODEL);
    assert!(read("scripts/fetch-model.sh").contains(&fetched));
    let expected = format!("/opt/srlm/{}", srlm::cli::DEFAULT_MODEL);
    let model = Regex::new(r"SRLM_MODEL[=:]\s*(\S+)").unwrap();
    for file in FILES {
        for c in model.captures_iter(&read(file)) {
            assert_eq!(c[1].trim_end_matches('\\').trim(), expected, "{file}");
        }
    }
}

#[test]
fn health_checks_name_real_routes() {
    let spec = srlm::api::openapi();
    let route = Regex::new(r"http://127\.0\.0\.1:8080(/[a-z]+)").unwrap();
    for file in FILES {
        for c in route.captures_iter(&read(file)) {
            assert!(spec["paths"].get(&c[1]).is_some(), "{file} checks {} which is not a route", &c[1]);
        }
    }
}
