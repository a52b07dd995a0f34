//! Self-instruction creation (SPEC §1, step 1): the served model writes new prompts from
//! few-shot examples (6 seed prompts, 2 earlier generated ones), and the new prompts that
//! survive the filters are stored with source `self_instruct`.
//!
//! Filters, in order: empty, too short, too long (in words), exact duplicates (after
//! normalizing case and spacing) and near duplicates — ROUGE-L F1 against every stored
//! prompt and every prompt accepted earlier in the run at or above `--max-similarity`
//! (0.7, as in Self-Instruct).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rand::seq::IndexedRandom;
use rand::SeedableRng;

use crate::client::{Answerer, Client, Decoding};
use crate::store::Store;

/// The project's seed prompts, relative to the working directory.
pub const DEFAULT_SEED_PROMPTS: &str = "data/seed_prompts.jsonl";

#[derive(Debug, Clone)]
pub struct SelfInstructConfig {
    /// Base URL of the srlm server whose model writes the prompts.
    pub url: String,
    /// Postgres URL (where the prompts are stored and compared against).
    pub database_url: String,
    /// Seed prompts: JSONL lines `{"prompt": "..."}`.
    pub seeds: PathBuf,
    /// New prompts to accept.
    pub count: usize,
    /// Give up after this many generations, accepted or not.
    pub max_attempts: Option<usize>,
    /// The iteration the prompts are for (stored with them).
    pub iteration: i32,
    /// Model name to ask (the served model answers to `current`).
    pub model: String,
    pub temperature: f64,
    pub top_p: f64,
    /// Reject a prompt whose ROUGE-L F1 with any stored prompt reaches this.
    pub max_similarity: f64,
    pub min_words: usize,
    pub max_words: usize,
    pub seed: u64,
}

impl SelfInstructConfig {
    /// The paper's settings (temperature 0.6, top-p 0.9) and the default filters.
    pub fn new(url: &str, database_url: &str, seeds: PathBuf, count: usize, iteration: i32) -> Self {
        Self {
            url: url.to_string(),
            database_url: database_url.to_string(),
            seeds,
            count,
            max_attempts: None,
            iteration,
            model: "current".into(),
            temperature: 0.6,
            top_p: 0.9,
            max_similarity: 0.7,
            min_words: 3,
            max_words: 150,
            seed: 0,
        }
    }
}

/// Lower-cased alphanumeric words.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// ROUGE-L F1: from the longest common subsequence of words.
pub fn rouge_l(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { cur[j].max(prev[j + 1]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let lcs = prev[b.len()] as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let (p, r) = (lcs / b.len() as f64, lcs / a.len() as f64);
    2.0 * p * r / (p + r)
}

/// Why a generated prompt was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    Empty,
    TooShort,
    TooLong,
    Duplicate,
    NearDuplicate,
}

/// The prompts a candidate is compared against.
pub struct Filter {
    known: Vec<Vec<String>>,
    exact: HashSet<String>,
    pub max_similarity: f64,
    pub min_words: usize,
    pub max_words: usize,
}

impl Filter {
    pub fn new(existing: impl IntoIterator<Item = String>, max_similarity: f64, min_words: usize, max_words: usize) -> Self {
        let mut f = Self { known: Vec::new(), exact: HashSet::new(), max_similarity, min_words, max_words };
        for p in existing {
            f.remember(&p);
        }
        f
    }

    fn remember(&mut self, prompt: &str) {
        let w = words(prompt);
        self.exact.insert(w.join(" "));
        self.known.push(w);
    }

    /// Cleans the model's text into a prompt and accepts it (remembering it), or says why not.
    pub fn check(&mut self, generated: &str) -> Result<String, Rejection> {
        let prompt = generated.trim().trim_start_matches(|c: char| c == ':' || c.is_whitespace()).trim().to_string();
        let w = words(&prompt);
        if w.is_empty() {
            return Err(Rejection::Empty);
        }
        if w.len() < self.min_words {
            return Err(Rejection::TooShort);
        }
        if w.len() > self.max_words {
            return Err(Rejection::TooLong);
        }
        if self.exact.contains(&w.join(" ")) {
            return Err(Rejection::Duplicate);
        }
        if self.known.iter().any(|k| rouge_l(&w, k) >= self.max_similarity) {
            return Err(Rejection::NearDuplicate);
        }
        self.remember(&prompt);
        Ok(prompt)
    }
}

/// The few-shot prompt: numbered tasks, ending where the model writes the next one.
pub fn few_shot(examples: &[&str]) -> String {
    let mut text = String::from("Below are tasks that users give an AI assistant. Each is a single, self-contained request.\n\n");
    for (i, e) in examples.iter().enumerate() {
        text.push_str(&format!("Task {}: {}\n", i + 1, e.replace('\n', " ")));
    }
    text.push_str(&format!("Task {}:", examples.len() + 1));
    text
}

fn read_seeds(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))?;
            v["prompt"].as_str().map(str::to_string).with_context(|| format!("{}:{}: no \"prompt\" string", path.display(), i + 1))
        })
        .collect()
}

#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Report {
    /// Generations tried.
    pub attempts: usize,
    pub accepted: usize,
    /// Rejections by reason: empty, too_short, too_long, duplicate, near_duplicate.
    #[schema(value_type = Object)]
    pub rejected: BTreeMap<Rejection, usize>,
    /// The stored prompts.
    pub prompt_ids: Vec<i64>,
}

pub async fn run(args: SelfInstructConfig) -> Result<()> {
    let report = create(&args).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// A server over HTTP for `args` (its `/v1/completions` continues the few-shot text).
pub fn server(args: &SelfInstructConfig) -> Result<Answerer> {
    let client = Client::new(&args.url, std::time::Duration::from_secs(300))?;
    Ok(Answerer::Server { client, model: args.model.clone() })
}

/// Writes prompts one attempt at a time, remembering what it accepted.
pub struct Writer {
    seeds: Vec<String>,
    generated: Vec<String>,
    filter: Filter,
    completer: Answerer,
    rng: rand::rngs::StdRng,
    temperature: f64,
    top_p: f64,
    attempts: u64,
}

impl Writer {
    /// Reads the seeds file and every stored prompt (the duplicate filter's memory).
    pub async fn new(args: &SelfInstructConfig, store: &Store, completer: Answerer) -> Result<Self> {
        let seeds = read_seeds(&args.seeds)?;
        Self::with_seeds(seeds, args, store, completer).await
    }

    pub async fn with_seeds(seeds: Vec<String>, args: &SelfInstructConfig, store: &Store, completer: Answerer) -> Result<Self> {
        if seeds.len() < 6 {
            bail!("self-instruction needs at least 6 seed prompts, got {}", seeds.len());
        }
        let stored = store.prompt_texts(None).await?;
        let generated = store.prompt_texts(Some("self_instruct")).await?;
        let filter = Filter::new(stored.into_iter().chain(seeds.iter().cloned()), args.max_similarity, args.min_words, args.max_words);
        Ok(Self {
            seeds,
            generated,
            filter,
            completer,
            rng: rand::rngs::StdRng::seed_from_u64(args.seed),
            temperature: args.temperature,
            top_p: args.top_p,
            attempts: args.seed.wrapping_mul(1_000_003),
        })
    }

    /// One generation: a new prompt, or why the model's text was not one.
    pub async fn attempt(&mut self) -> Result<Result<String, Rejection>> {
        self.attempts += 1;
        // 6 seeds and 2 earlier generated prompts (more seeds while there are fewer).
        let earlier: Vec<&str> = self.generated.choose_multiple(&mut self.rng, 2).map(String::as_str).collect();
        let mut shots: Vec<&str> = self.seeds.choose_multiple(&mut self.rng, 8 - earlier.len()).map(String::as_str).collect();
        shots.extend(earlier);
        let decoding = Decoding { max_tokens: 96, temperature: self.temperature, top_p: self.top_p, seed: self.attempts };
        let stop = vec!["\nTask".to_string(), "\n\n".to_string()];
        let text = self.completer.continue_text(few_shot(&shots), decoding, stop).await?;
        let outcome = self.filter.check(&text);
        if let Ok(prompt) = &outcome {
            self.generated.push(prompt.clone());
        }
        Ok(outcome)
    }
}

/// Generations spent per prompt asked for before giving up (the default `max_attempts`).
pub const ATTEMPTS_PER_PROMPT: usize = 10;

/// Generates prompts until `count` are accepted or `max_attempts` are spent, storing
/// each accepted one.
pub async fn create(args: &SelfInstructConfig) -> Result<Report> {
    let store = Store::connect_migrated(&args.database_url).await.context("connecting to and migrating the database")?;
    let writer = Writer::new(args, &store, server(args)?).await?;
    write_prompts(writer, args, &store).await
}

/// The accept-and-store loop of [`create`], for any writer.
pub async fn write_prompts(mut writer: Writer, args: &SelfInstructConfig, store: &Store) -> Result<Report> {
    let mut report = Report::default();
    let max_attempts = args.max_attempts.unwrap_or(args.count * ATTEMPTS_PER_PROMPT);
    let bar = crate::progress::Progress::new(args.count as u64, "self-instruct", "prompts accepted");
    while report.accepted < args.count && report.attempts < max_attempts {
        report.attempts += 1;
        match writer.attempt().await? {
            Ok(prompt) => {
                let messages = serde_json::json!([{"role": "user", "content": prompt}]);
                report.prompt_ids.push(store.insert_prompt(&messages, "self_instruct", args.iteration).await?);
                report.accepted += 1;
                bar.inc(1);
            }
            Err(reason) => *report.rejected.entry(reason).or_default() += 1,
        }
        bar.set_message(format!("{} attempts", report.attempts));
    }
    bar.finish();
    tracing::info!(accepted = report.accepted, attempts = report.attempts, rejected = ?report.rejected, "self-instruction done");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        words(s)
    }

    #[test]
    fn rouge_l_matches_hand_computed_values() {
        assert_eq!(rouge_l(&w("the cat sat"), &w("the cat sat")), 1.0);
        assert_eq!(rouge_l(&w("a b c"), &w("d e f")), 0.0);
        // LCS("a b c d", "a c e") = "a c": P = 2/3, R = 2/4, F1 = 4/7.
        assert!((rouge_l(&w("a b c d"), &w("a c e")) - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(rouge_l(&w(""), &w("x")), 0.0);
    }

    #[test]
    fn filters_reject_by_reason_and_remember_what_they_accept() {
        let mut f = Filter::new(["Write a poem about the sea.".to_string()], 0.7, 3, 12);
        assert_eq!(f.check("   "), Err(Rejection::Empty));
        assert_eq!(f.check("Hi there"), Err(Rejection::TooShort));
        assert_eq!(f.check(&"word ".repeat(13)), Err(Rejection::TooLong));
        assert_eq!(f.check("write a POEM about the sea"), Err(Rejection::Duplicate));
        assert_eq!(f.check("Write a short poem about the sea."), Err(Rejection::NearDuplicate));
        assert_eq!(f.check(": Explain how vaccines train the immune system."), Ok("Explain how vaccines train the immune system.".into()));
        assert_eq!(f.check("Explain how vaccines train the immune system!"), Err(Rejection::Duplicate));
    }

    #[test]
    fn the_few_shot_prompt_ends_where_the_next_task_begins() {
        let text = few_shot(&["One?", "Two\nlines?"]);
        assert!(text.ends_with("Task 2: Two lines?\nTask 3:"), "{text}");
    }
}
