//! `srlm data import-oasst`: the paper's seed data from an Open Assistant export (the
//! message-tree JSONL a user downloads, one tree per line, replies ranked by people).
//!
//! - IFT: first-turn prompts with their top-ranked reply (rank 0).
//! - EFT: prompts with two or more ranked replies, each reply wrapped in the judge
//!   template; the target is a rubric justification and a `Score:` line. The score
//!   comes from the reply's human quality label when present, otherwise from its rank.
//!   (The paper has its SFT model write the justifications and keeps those that agree
//!   with the human ranking; this importer writes the rubric's own wording instead, so
//!   it needs no model.)
//! - A ranked set (`{"prompt", "answers": [best, …]}`) for `srlm eval rm`, from the
//!   held-out trees only: the EFT training set never sees its prompts.
//!
//! Trees are split into training and evaluation by a hash of their id, so a re-import
//! puts every tree on the same side.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::judge::template::JudgeTemplate;

#[derive(Debug, Clone)]
pub struct ImportOasstConfig {
    /// The message-tree export: JSONL, one tree per line.
    pub file: PathBuf,
    /// Folder to write ift.jsonl, eft.train.jsonl, eft.eval.jsonl and ranked.jsonl to.
    pub out: PathBuf,
    /// Language of the prompts to keep.
    pub lang: String,
    /// Percent of the trees held out for evaluation (EFT eval and the ranked set).
    pub eval_percent: u64,
    /// Judge template the EFT prompts are wrapped in (default: templates/judge.txt).
    pub judge_template: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tree {
    pub message_tree_id: String,
    #[serde(default)]
    pub tree_state: Option<String>,
    pub prompt: Message,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub text: String,
    pub role: String,
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub rank: Option<u32>,
    #[serde(default)]
    pub deleted: Option<bool>,
    #[serde(default)]
    pub review_result: Option<bool>,
    #[serde(default)]
    pub synthetic: Option<bool>,
    /// Averaged human labels, by name (`quality`, `helpfulness`, …), each in 0–1.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, Label>>,
    #[serde(default)]
    pub replies: Vec<Message>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Label {
    pub value: f64,
}

impl Message {
    fn usable(&self) -> bool {
        !self.deleted.unwrap_or(false)
            && self.review_result != Some(false)
            && !self.synthetic.unwrap_or(false)
            && !self.text.trim().is_empty()
    }

    /// Usable assistant replies with a rank, best first.
    fn ranked_replies(&self) -> Vec<&Message> {
        let mut replies: Vec<&Message> = self.replies.iter().filter(|r| r.role == "assistant" && r.usable() && r.rank.is_some()).collect();
        replies.sort_by_key(|r| r.rank);
        replies
    }
}

/// What an import produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub trees: usize,
    /// Trees left out: not ready for export, another language, or an unusable prompt.
    pub skipped: usize,
    pub ift: usize,
    /// EFT examples (one per judged reply) for training, and their prompts.
    pub eft_train: usize,
    pub eft_train_prompts: usize,
    pub eft_eval: usize,
    pub ranked_prompts: usize,
}

/// The score a reply of human rank `rank` (0 = best) among `of` replies gets: its
/// quality label × 5 when labelled, else spread from 5 (best) down to 1 (worst).
pub fn score_of(reply: &Message, rank: usize, of: usize) -> u8 {
    if let Some(quality) = reply.labels.as_ref().and_then(|l| l.get("quality")) {
        return (quality.value.clamp(0.0, 1.0) * 5.0).round() as u8;
    }
    if of < 2 {
        return 5;
    }
    (5.0 - 4.0 * rank as f64 / (of - 1) as f64).round() as u8
}

const CRITERIA: [&str; 5] = [
    "it is relevant to the question and offers related information",
    "it covers a substantial part of the question",
    "it answers the basic elements of the question usefully",
    "it addresses the question directly and completely, clearly organised",
    "it is impeccable: tailored, focused and expert",
];

/// The judge's target for a reply worth `score`: which rubric points it earns, which
/// it misses, and the `Score:` line.
pub fn justification(score: u8) -> String {
    let s = usize::from(score.min(5));
    let mut text = match s {
        0 => "The response earns no points: it is not relevant to the question.".to_string(),
        _ => format!("The response earns {s} point{}: {}.", if s == 1 { "" } else { "s" }, CRITERIA[..s].join("; ")),
    };
    if s > 0 && s < 5 {
        text.push_str(&format!(" It misses the next point because it falls short of this: {}.", CRITERIA[s]));
    }
    format!("{text}\nScore: {s}")
}

/// FNV-1a, stable across builds and platforms (the split must not move between runs).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

pub fn held_out(tree_id: &str, eval_percent: u64) -> bool {
    stable_hash(tree_id) % 100 < eval_percent
}

/// Files the importer writes, one JSON value per line.
pub struct Outputs<W: Write> {
    pub ift: W,
    pub eft_train: W,
    pub eft_eval: W,
    pub ranked: W,
}

fn line<W: Write>(w: &mut W, value: &serde_json::Value) -> Result<()> {
    serde_json::to_writer(&mut *w, value)?;
    w.write_all(b"\n")?;
    Ok(())
}

fn chat(user: &str, assistant: &str) -> serde_json::Value {
    serde_json::json!({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]})
}

/// Reads trees line by line and writes the four sets.
pub fn import<R: BufRead, W: Write>(input: R, args: &ImportOasstConfig, template: &JudgeTemplate, out: &mut Outputs<W>) -> Result<Counts> {
    let mut counts = Counts::default();
    for (i, text) in input.lines().enumerate() {
        let text = text?;
        if text.trim().is_empty() {
            continue;
        }
        let tree: Tree = serde_json::from_str(&text).with_context(|| format!("line {}: not an Open Assistant message tree", i + 1))?;
        counts.trees += 1;
        let prompt = &tree.prompt;
        let ready = tree.tree_state.as_deref().is_none_or(|s| s == "ready_for_export");
        if !ready || prompt.role != "prompter" || !prompt.usable() || prompt.lang.as_deref() != Some(args.lang.as_str()) {
            counts.skipped += 1;
            continue;
        }
        let replies = prompt.ranked_replies();
        if let Some(best) = replies.first().filter(|r| r.rank == Some(0)) {
            line(&mut out.ift, &chat(&prompt.text, &best.text))?;
            counts.ift += 1;
        }
        if replies.len() < 2 {
            continue;
        }
        let eval = held_out(&tree.message_tree_id, args.eval_percent);
        for (rank, reply) in replies.iter().enumerate() {
            let example = chat(&template.render(&prompt.text, &reply.text), &justification(score_of(reply, rank, replies.len())));
            if eval {
                line(&mut out.eft_eval, &example)?;
                counts.eft_eval += 1;
            } else {
                line(&mut out.eft_train, &example)?;
                counts.eft_train += 1;
            }
        }
        if eval {
            let answers: Vec<&str> = replies.iter().map(|r| r.text.as_str()).collect();
            line(&mut out.ranked, &serde_json::json!({"prompt": prompt.text, "answers": answers}))?;
            counts.ranked_prompts += 1;
        } else {
            counts.eft_train_prompts += 1;
        }
    }
    Ok(counts)
}

pub fn run(args: ImportOasstConfig) -> Result<()> {
    let template = match &args.judge_template {
        Some(path) => JudgeTemplate::from_file(path)?,
        None => JudgeTemplate::default(),
    };
    let input = std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let create = |name: &str| -> Result<std::io::BufWriter<std::fs::File>> {
        let path: &Path = &args.out.join(name);
        Ok(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?))
    };
    let mut out = Outputs {
        ift: create("ift.jsonl")?,
        eft_train: create("eft.train.jsonl")?,
        eft_eval: create("eft.eval.jsonl")?,
        ranked: create("ranked.jsonl")?,
    };
    let counts = import(std::io::BufReader::new(input), &args, &template, &mut out)?;
    for w in [&mut out.ift, &mut out.eft_train, &mut out.eft_eval, &mut out.ranked] {
        w.flush()?;
    }
    eprintln!(
        "{} trees ({} skipped): {} IFT examples, {} EFT training examples on {} prompts, {} EFT evaluation examples, {} ranked prompts → {}",
        counts.trees,
        counts.skipped,
        counts.ift,
        counts.eft_train,
        counts.eft_train_prompts,
        counts.eft_eval,
        counts.ranked_prompts,
        args.out.display()
    );
    println!("{}", serde_json::to_string(&counts)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn justifications_follow_the_additive_rubric() {
        assert!(justification(0).ends_with("\nScore: 0"));
        let three = justification(3);
        assert!(three.starts_with("The response earns 3 points: it is relevant"), "{three}");
        assert!(three.contains("misses the next point") && three.contains(CRITERIA[3]));
        assert!(!justification(5).contains("misses"));
        assert_eq!(crate::judge::parse::parse_score(&justification(4), "reply"), Some(4.0));
    }

    #[test]
    fn scores_come_from_quality_labels_or_rank() {
        let reply = |quality: Option<f64>| Message {
            text: "x".into(),
            role: "assistant".into(),
            lang: None,
            rank: Some(0),
            deleted: None,
            review_result: None,
            synthetic: None,
            labels: quality.map(|q| [("quality".to_string(), Label { value: q })].into()),
            replies: vec![],
        };
        assert_eq!(score_of(&reply(Some(0.75)), 2, 3), 4);
        assert_eq!(score_of(&reply(Some(0.0)), 0, 3), 0);
        assert_eq!([0, 1, 2, 3].map(|r| score_of(&reply(None), r, 4)), [5, 4, 2, 1]);
        assert_eq!([0, 1].map(|r| score_of(&reply(None), r, 2)), [5, 1]);
    }

    fn import_sample(eval_percent: u64) -> (Counts, [Vec<serde_json::Value>; 4]) {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/oasst_sample.jsonl");
        let args = ImportOasstConfig { file: file.clone(), out: PathBuf::new(), lang: "en".into(), eval_percent, judge_template: None };
        let mut out = Outputs { ift: Vec::new(), eft_train: Vec::new(), eft_eval: Vec::new(), ranked: Vec::new() };
        let input = std::io::BufReader::new(std::fs::File::open(&file).unwrap());
        let counts = import(input, &args, &JudgeTemplate::default(), &mut out).unwrap();
        let parse = |b: &[u8]| std::str::from_utf8(b).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (counts, [parse(&out.ift), parse(&out.eft_train), parse(&out.eft_eval), parse(&out.ranked)])
    }

    #[test]
    fn the_synthetic_export_becomes_the_papers_sets() {
        let (counts, [ift, eft_train, eft_eval, ranked]) = import_sample(0);
        // German, not-ready and deleted trees are skipped; three English prompts remain.
        assert_eq!(counts, Counts { trees: 6, skipped: 3, ift: 3, eft_train: 5, eft_train_prompts: 2, eft_eval: 0, ranked_prompts: 0 });
        assert_eq!(ift.len(), 3);
        assert_eq!(ift[0]["messages"][0]["content"], "Why do volcanoes erupt?");
        assert!(ift[0]["messages"][1]["content"].as_str().unwrap().starts_with("Magma"), "the rank-0 reply");
        assert!(eft_eval.is_empty() && ranked.is_empty());
        // EFT: each ranked reply in the judge template; scores from quality labels (0.9 → 5,
        // 0.4 → 2), else from rank (third of three → 1). The deleted and unranked
        // replies of the last tree are left out.
        let scores: Vec<f32> = eft_train
            .iter()
            .map(|e| crate::judge::parse::parse_score(e["messages"][1]["content"].as_str().unwrap(), "").unwrap())
            .collect();
        assert_eq!(scores, [5.0, 2.0, 1.0, 5.0, 1.0]);
        let judge_prompt = eft_train[1]["messages"][0]["content"].as_str().unwrap();
        assert!(judge_prompt.contains("Why do volcanoes erupt?") && judge_prompt.contains("Because the Earth is hot inside."));

        // Everything held out: the same prompts become evaluation data and the ranked set.
        let (counts, [_, eft_train, eft_eval, ranked]) = import_sample(100);
        assert_eq!((counts.eft_train, counts.eft_eval, counts.ranked_prompts), (0, 5, 2));
        assert!(eft_train.is_empty() && eft_eval.len() == 5);
        assert_eq!(ranked[1]["prompt"], "How do I reverse a list in Python?");
        assert_eq!(ranked[1]["answers"].as_array().unwrap().len(), 2);
        assert_eq!(ranked[0]["answers"][2], "Volcanoes are mountains.");
    }

    #[test]
    fn the_split_is_stable() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
        let held = (0..1000).filter(|i| held_out(&format!("tree-{i}"), 20)).count();
        assert!((150..250).contains(&held), "{held} of 1000 held out at 20%");
    }
}
