//! The parts of the crate import downwards only (ARCHITECTURE.md): a part may use its
//! own layer and the layers below, never one above. Read from the `crate::` paths of
//! every source file, as a newcomer would draw them. Parts of one layer may use each
//! other, except those listed as independent.

use std::collections::BTreeSet;
use std::path::Path;

/// Lowest first; each top-level module of `src/` is in exactly one layer.
const LAYERS: &[&[&str]] = &[
    &["metrics", "progress", "telemetry", "verify"],
    &["store"],
    &["model"],
    &["engine", "train", "checkpoint"],
    &["judge"],
    &["protocol", "client"],
    &["eval", "data", "generation", "selfinstruct", "selfloop", "swap"],
    &["api"],
    &["cli", "serve", "bench", "main", "lib"],
];

/// Parts of one layer that must not use each other: serving, training and registering
/// checkpoints share only what `model` gives them.
const INDEPENDENT: &[&str] = &["engine", "train", "checkpoint"];

fn layer_of(part: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&part))
}

/// `crate::x` parts named in the code of `text` (comments left out).
fn imported_parts(text: &str) -> BTreeSet<String> {
    let mut parts = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                parts.insert(name);
            }
        }
    }
    parts
}

fn source_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn parts_import_downwards_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let part = relative.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        let own = layer_of(&part).unwrap_or_else(|| panic!("src/{part} is in no layer: add it to LAYERS and ARCHITECTURE.md"));
        for used in imported_parts(&std::fs::read_to_string(file).unwrap()) {
            let Some(theirs) = layer_of(&used) else { continue };
            if theirs > own {
                upward.push(format!("src/{} ({part}, layer {own}) uses crate::{used} (layer {theirs})", relative.display()));
            } else if used != part && INDEPENDENT.contains(&part.as_str()) && INDEPENDENT.contains(&used.as_str()) {
                upward.push(format!("src/{} ({part}) uses crate::{used}: these parts are independent", relative.display()));
            }
        }
    }
    assert!(upward.is_empty(), "imports that point upwards or sideways:\n{}", upward.join("\n"));
}

#[test]
fn the_check_sees_imports_and_skips_comments() {
    let text = "use crate::api::AppState;\n//! see `crate::cli::Cli`\nlet x = crate::store::Store::new(); // crate::bench\n";
    let parts: Vec<String> = imported_parts(text).into_iter().collect();
    assert_eq!(parts, ["api", "store"]);
}
