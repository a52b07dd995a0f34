//! Requests carrying checkable instructions, made from the project's own task and topic
//! lists. Two splits that never meet: `eval` (the held-out yardstick, committed as
//! `data/ifeval.jsonl`) and `train` (what self-instruction feeds the loop) draw on
//! disjoint topics and keywords, so no training prompt can repeat an evaluation one.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{Instruction, Relation};

/// Which side of the split a prompt comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// The held-out yardstick.
    Eval,
    /// Self-instruction for the loop.
    Train,
}

/// A request and the instructions appended to it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct VerifiablePrompt {
    pub id: String,
    /// What the model is asked: the request, then each instruction in words.
    pub prompt: String,
    pub instructions: Vec<Instruction>,
}

/// Ordinary requests; `{}` is the topic.
const TASKS: &[&str] = &[
    "Write a short blog post about {}.",
    "Explain {} to a curious twelve-year-old.",
    "Write a letter to a friend telling them about {}.",
    "Describe {} for a travel or hobby magazine.",
    "Give practical advice to someone who wants to learn about {}.",
    "Write a short story in which {} plays an important part.",
    "Write a product description for a new book about {}.",
    "Summarize the main ideas someone should know about {}.",
    "Write a speech for a school assembly about {}.",
    "Write a poem about {}.",
    "Write an email to your team proposing a workshop on {}.",
    "List the pros and cons of spending a weekend on {}.",
];

/// Topics of the held-out yardstick.
const EVAL_TOPICS: &[&str] = &[
    "beekeeping",
    "the history of the bicycle",
    "volcanoes",
    "learning to play the violin",
    "composting at home",
    "the moon landing",
    "lighthouses",
    "saving money as a student",
    "desert plants",
    "the invention of paper",
    "coral reefs",
    "marathon training",
    "board games",
    "the water cycle",
    "public libraries",
    "origami",
    "sourdough bread",
    "the northern lights",
    "recycling electronics",
    "chess openings",
    "rainforests",
    "a first job interview",
    "honeybees and pollination",
    "ancient Egypt",
    "bird watching",
    "renewable energy",
    "the human heart",
    "mountain hiking safety",
    "jazz music",
    "time management",
    "tea ceremonies",
    "octopuses",
    "city gardens",
    "the printing press",
    "sleep and memory",
    "glaciers",
    "kite flying",
    "electric cars",
    "museum visits",
    "penguins",
];

/// Topics for self-instruction (none of them in `EVAL_TOPICS`).
const TRAIN_TOPICS: &[&str] = &[
    "knitting",
    "the history of the telephone",
    "earthquakes",
    "learning to play the guitar",
    "keeping chickens",
    "the first flight of the Wright brothers",
    "windmills",
    "budgeting for a family",
    "cactus care",
    "the invention of the compass",
    "sea turtles",
    "swimming lessons",
    "card games",
    "the rock cycle",
    "community theatre",
    "paper airplanes",
    "pizza dough",
    "solar eclipses",
    "fixing a bicycle puncture",
    "learning a new language",
    "wetlands",
    "moving to a new city",
    "butterflies",
    "the Roman empire",
    "stargazing",
    "wind power",
    "the human brain",
    "camping with children",
    "classical music",
    "healthy breakfasts",
    "whales",
    "balcony vegetables",
    "the steam engine",
    "daily exercise",
    "rivers",
    "photography for beginners",
    "trains",
    "volunteering",
    "wolves",
    "pottery",
];

const EVAL_KEYWORDS: &[&str] = &[
    "bridge", "lantern", "harvest", "compass", "whisper", "orange", "journey", "silver", "pattern", "window", "courage", "garden",
    "signal", "blanket", "thunder", "market",
];
const TRAIN_KEYWORDS: &[&str] = &[
    "anchor", "meadow", "puzzle", "copper", "echo", "ladder", "velvet", "island", "rhythm", "candle", "harbor", "feather", "mirror",
    "balance", "canyon", "ribbon",
];
const BANNED: &[&str] = &["very", "really", "good", "thing", "important", "also", "just", "many", "people", "great"];
const STARTS: &[&str] = &["Here is my answer", "To begin with", "Let me explain", "In short", "Once upon a time"];
const ENDS: &[&str] =
    &["Is there anything else I can help with?", "That is all for now.", "Thank you for reading.", "Let me know what you think."];
const LETTERS: &[char] = &['a', 'e', 'o', 's', 't', 'r', 'l', 'n'];

/// `count` prompts of `split`, the same for the same seed.
pub fn generate(split: Split, count: usize, seed: u64) -> Vec<VerifiablePrompt> {
    let (topics, keywords, prefix) = match split {
        Split::Eval => (EVAL_TOPICS, EVAL_KEYWORDS, "ifeval"),
        Split::Train => (TRAIN_TOPICS, TRAIN_KEYWORDS, "ifgen"),
    };
    let mut rng = StdRng::seed_from_u64(seed ^ if split == Split::Eval { 0x5eed_e7a1 } else { 0x7a17_5eed });
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let task = TASKS.choose(&mut rng).expect("tasks").replace("{}", topics.choose(&mut rng).expect("topics"));
        let wanted = rng.random_range(1..=3);
        let mut instructions: Vec<Instruction> = Vec::new();
        for _ in 0..wanted * 8 {
            if instructions.len() == wanted {
                break;
            }
            let next = random_instruction(&mut rng, keywords);
            if !instructions.iter().any(|i| i.conflicts_with(&next)) {
                instructions.push(next);
            }
        }
        let prompt = std::iter::once(task).chain(instructions.iter().map(Instruction::describe)).collect::<Vec<_>>().join(" ");
        if seen.insert(prompt.clone()) {
            out.push(VerifiablePrompt { id: format!("{prefix}-{:04}", out.len() + 1), prompt, instructions });
        }
    }
    out
}

fn random_instruction(rng: &mut StdRng, keywords: &[&str]) -> Instruction {
    let pick = |rng: &mut StdRng, xs: &[usize]| *xs.choose(rng).expect("choices");
    let two = |rng: &mut StdRng, pool: &[&str]| pool.choose_multiple(rng, 2).map(|s| s.to_string()).collect::<Vec<_>>();
    match rng.random_range(0..18) {
        0 => Instruction::Words { relation: Relation::AtLeast, n: pick(rng, &[40, 60, 100]) },
        1 => Instruction::Words { relation: Relation::AtMost, n: pick(rng, &[30, 50, 80]) },
        2 => {
            let relation = *[Relation::AtLeast, Relation::AtMost].choose(rng).expect("relations");
            Instruction::Sentences { relation, n: pick(rng, &[2, 3, 5]) }
        }
        3 => Instruction::Paragraphs { relation: Relation::Exactly, n: pick(rng, &[2, 3]) },
        4 => Instruction::Bullets { relation: Relation::Exactly, n: pick(rng, &[2, 3, 4]) },
        5 => Instruction::IncludeKeywords { keywords: two(rng, keywords) },
        6 => Instruction::ExcludeKeywords { keywords: two(rng, BANNED) },
        7 => Instruction::LetterFrequency {
            letter: *LETTERS.choose(rng).expect("letters"),
            relation: Relation::AtLeast,
            n: pick(rng, &[5, 10, 15]),
        },
        8 => Instruction::Lowercase,
        9 => Instruction::Uppercase,
        10 => Instruction::StartWith { phrase: STARTS.choose(rng).expect("starts").to_string() },
        11 => Instruction::EndWith { phrase: ENDS.choose(rng).expect("ends").to_string() },
        12 => Instruction::Title,
        13 => Instruction::Json,
        14 => Instruction::Quoted,
        15 => Instruction::NoCommas,
        16 => Instruction::Postscript,
        _ => match rng.random_range(0..2) {
            0 => Instruction::Placeholders { n: pick(rng, &[1, 2, 3]) },
            _ => Instruction::Sections { n: pick(rng, &[2, 3]) },
        },
    }
}

/// Reads a JSONL file of `VerifiablePrompt`s.
pub fn read(path: &std::path::Path) -> anyhow::Result<Vec<VerifiablePrompt>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a {{\"id\", \"prompt\", \"instructions\"}} line", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_eval_set() -> Vec<VerifiablePrompt> {
        read(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/ifeval.jsonl")).expect("data/ifeval.jsonl")
    }

    #[test]
    fn the_splits_share_no_topic_and_no_keyword() {
        for t in TRAIN_TOPICS {
            assert!(!EVAL_TOPICS.contains(t), "{t} is in both splits");
        }
        for k in TRAIN_KEYWORDS {
            assert!(!EVAL_KEYWORDS.contains(k), "{k} is in both splits");
        }
    }

    #[test]
    fn no_training_prompt_overlaps_the_committed_eval_set() {
        let eval = committed_eval_set();
        assert!(eval.len() >= 300, "the yardstick has {} prompts", eval.len());
        let eval_texts: std::collections::HashSet<&str> = eval.iter().map(|p| p.prompt.as_str()).collect();
        assert_eq!(eval_texts.len(), eval.len(), "the eval set repeats a prompt");
        for seed in 0..5 {
            for p in generate(Split::Train, 1000, seed) {
                assert!(!eval_texts.contains(p.prompt.as_str()), "{} is in the eval set", p.prompt);
                assert!(!EVAL_TOPICS.iter().any(|t| p.prompt.contains(t)), "{} mentions an eval topic", p.prompt);
            }
        }
    }

    #[test]
    fn every_committed_prompt_says_its_instructions_and_none_conflict() {
        for p in committed_eval_set() {
            assert!((1..=3).contains(&p.instructions.len()), "{}", p.id);
            for (i, a) in p.instructions.iter().enumerate() {
                assert!(p.prompt.contains(&a.describe()), "{}: {a:?} is not in the text", p.id);
                for b in &p.instructions[i + 1..] {
                    assert!(!a.conflicts_with(b), "{}: {a:?} conflicts with {b:?}", p.id);
                }
            }
        }
    }

    #[test]
    fn generation_is_deterministic_and_varied() {
        let a = generate(Split::Train, 50, 7);
        assert_eq!(a, generate(Split::Train, 50, 7));
        assert_ne!(a, generate(Split::Train, 50, 8));
        let kinds: std::collections::HashSet<&str> = a.iter().flat_map(|p| p.instructions.iter().map(Instruction::kind)).collect();
        assert!(kinds.len() >= 12, "only {kinds:?}");
    }
}
