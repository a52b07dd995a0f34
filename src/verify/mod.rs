//! Instructions a program can check (IFEval-style): word, sentence, paragraph and bullet
//! counts, keywords, a letter's frequency, case, start and end phrases, a title, JSON,
//! quotation marks, commas, a postscript, placeholders and sections.
//!
//! Pure logic, no model and no database: the yardstick (`srlm eval ifeval`), the
//! `verify` pair rewards and the verifiable judge pairs all read the same checks.
//! An instruction is data (`serde`, stored with its prompt), says itself in words
//! (`describe`, appended to the request) and checks a response (`check`). Strict
//! accuracy checks the response as written; loose accuracy also accepts it with its
//! first and/or last line removed and with markdown `*` removed (IFEval's loose rule).

pub mod checks;
pub mod prompts;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a count compares with its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    AtLeast,
    AtMost,
    Exactly,
}

impl Relation {
    pub fn holds(self, count: usize, n: usize) -> bool {
        match self {
            Self::AtLeast => count >= n,
            Self::AtMost => count <= n,
            Self::Exactly => count == n,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Self::AtLeast => "at least",
            Self::AtMost => "at most",
            Self::Exactly => "exactly",
        }
    }
}

/// One checkable instruction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Instruction {
    /// Number of words.
    Words { relation: Relation, n: usize },
    /// Number of sentences (ending in `.`, `!` or `?`).
    Sentences { relation: Relation, n: usize },
    /// Number of paragraphs, separated by blank lines.
    Paragraphs { relation: Relation, n: usize },
    /// Number of markdown bullet points (lines starting with `* ` or `- `).
    Bullets { relation: Relation, n: usize },
    /// Every keyword appears (case-insensitive, whole words).
    IncludeKeywords { keywords: Vec<String> },
    /// None of the keywords appears (case-insensitive, whole words).
    ExcludeKeywords { keywords: Vec<String> },
    /// How often a letter appears (case-insensitive).
    LetterFrequency { letter: char, relation: Relation, n: usize },
    /// No capital letters.
    Lowercase,
    /// No lowercase letters.
    Uppercase,
    /// The answer starts with this phrase (case-insensitive).
    StartWith { phrase: String },
    /// The answer ends with this phrase (case-insensitive); nothing follows it.
    EndWith { phrase: String },
    /// A title in double angular brackets, `<<like this>>`.
    Title,
    /// The whole answer is valid JSON (markdown code fences allowed).
    Json,
    /// The whole answer is wrapped in double quotation marks.
    Quoted,
    /// No commas at all.
    NoCommas,
    /// A postscript: a line starting with `P.S.`.
    Postscript,
    /// At least `n` placeholders in square brackets, like `[address]`.
    Placeholders { n: usize },
    /// At least `n` sections, each starting with `SECTION <number>`.
    Sections { n: usize },
}

impl Instruction {
    /// A short stable name of the kind, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Words { .. } => "words",
            Self::Sentences { .. } => "sentences",
            Self::Paragraphs { .. } => "paragraphs",
            Self::Bullets { .. } => "bullets",
            Self::IncludeKeywords { .. } => "include_keywords",
            Self::ExcludeKeywords { .. } => "exclude_keywords",
            Self::LetterFrequency { .. } => "letter_frequency",
            Self::Lowercase => "lowercase",
            Self::Uppercase => "uppercase",
            Self::StartWith { .. } => "start_with",
            Self::EndWith { .. } => "end_with",
            Self::Title => "title",
            Self::Json => "json",
            Self::Quoted => "quoted",
            Self::NoCommas => "no_commas",
            Self::Postscript => "postscript",
            Self::Placeholders { .. } => "placeholders",
            Self::Sections { .. } => "sections",
        }
    }

    /// The instruction as a sentence appended to a request.
    pub fn describe(&self) -> String {
        let list = |ks: &[String], joiner: &str| match ks {
            [] => String::new(),
            [one] => format!("\"{one}\""),
            [init @ .., last] => {
                format!("{} {joiner} \"{last}\"", init.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", "))
            }
        };
        match self {
            Self::Words { relation, n } => format!("Answer with {} {n} words.", relation.words()),
            Self::Sentences { relation, n } => format!("Your answer must contain {} {n} sentences.", relation.words()),
            Self::Paragraphs { relation, n } => {
                format!("Write {} {n} paragraphs, separated from each other by a blank line.", relation.words())
            }
            Self::Bullets { relation, n } => {
                format!("Your answer must contain {} {n} bullet points, each on its own line starting with \"* \".", relation.words())
            }
            Self::IncludeKeywords { keywords } => format!("Include the keywords {} in your answer.", list(keywords, "and")),
            Self::ExcludeKeywords { keywords } => format!("Do not use the words {} anywhere in your answer.", list(keywords, "or")),
            Self::LetterFrequency { letter, relation, n } => {
                format!("The letter \"{letter}\" must appear {} {n} times in your answer.", relation.words())
            }
            Self::Lowercase => "Write your entire answer in lowercase letters; no capital letters are allowed.".into(),
            Self::Uppercase => "Write your entire answer in English capital letters only.".into(),
            Self::StartWith { phrase } => format!("Start your answer with the words \"{phrase}\"."),
            Self::EndWith { phrase } => format!("End your answer with the exact phrase \"{phrase}\". No other words should follow it."),
            Self::Title => "Give your answer a title wrapped in double angular brackets, such as <<my title>>.".into(),
            Self::Json => "Write your entire answer as valid JSON. You may wrap it in markdown ticks such as ```.".into(),
            Self::Quoted => "Wrap your entire answer in double quotation marks.".into(),
            Self::NoCommas => "Do not use any commas in your answer.".into(),
            Self::Postscript => "At the end of your answer, add a postscript starting with \"P.S.\"".into(),
            Self::Placeholders { n } => {
                format!("Include at least {n} placeholders in square brackets, such as [name] or [address].")
            }
            Self::Sections { n } => {
                format!("Divide your answer into {n} sections. Begin each section with SECTION X, such as: SECTION 1.")
            }
        }
    }

    /// Strict: does `response`, as written, follow the instruction?
    pub fn check(&self, response: &str) -> bool {
        checks::check(self, response)
    }

    /// Loose: does the response follow it as written, or with its first line, last line
    /// or both removed, or with markdown `*` removed from any of those?
    pub fn check_loose(&self, response: &str) -> bool {
        loose_variants(response).iter().any(|r| self.check(r))
    }

    /// Two instructions that no answer could follow together (or that would make the
    /// request absurd) are never put in one prompt.
    pub fn conflicts_with(&self, other: &Instruction) -> bool {
        use Instruction::*;
        let group = |i: &Instruction| match i {
            Words { .. } | Sentences { .. } => 1,
            Paragraphs { .. } | Bullets { .. } | Sections { .. } | Json => 2,
            Lowercase | Uppercase => 3,
            StartWith { .. } | Quoted => 4,
            IncludeKeywords { .. } | ExcludeKeywords { .. } => 5,
            EndWith { .. } | Postscript => 6,
            _ => 0,
        };
        let (a, b) = (group(self), group(other));
        if a != 0 && a == b {
            return true;
        }
        let clash = |x: &Instruction, y: &Instruction| match (x, y) {
            // Whole-answer formats leave no room for text outside them.
            (Json, StartWith { .. } | EndWith { .. } | Postscript | Title | Quoted | Sentences { .. } | NoCommas) => true,
            (Quoted, EndWith { .. } | Postscript) => true,
            // Capitals in the marker or the phrase.
            (Lowercase, Postscript | Sections { .. }) => true,
            _ => false,
        };
        self == other || clash(self, other) || clash(other, self)
    }
}

/// The response and the variants loose accuracy also accepts (IFEval's rule).
pub fn loose_variants(response: &str) -> Vec<String> {
    let lines: Vec<&str> = response.split('\n').collect();
    let without_first = lines.get(1..).unwrap_or_default().join("\n");
    let without_last = lines[..lines.len().saturating_sub(1)].join("\n");
    let without_both = if lines.len() > 2 { lines[1..lines.len() - 1].join("\n") } else { String::new() };
    let base = [response.to_string(), without_first, without_last, without_both];
    base.iter().cloned().chain(base.iter().map(|r| r.replace('*', ""))).collect()
}

/// What a response made of a prompt's instructions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Outcome {
    /// Per instruction, in the prompt's order: followed as written.
    pub strict: Vec<bool>,
    /// Per instruction: followed under the loose rule.
    pub loose: Vec<bool>,
}

impl Outcome {
    pub fn of(instructions: &[Instruction], response: &str) -> Self {
        Self {
            strict: instructions.iter().map(|i| i.check(response)).collect(),
            loose: instructions.iter().map(|i| i.check_loose(response)).collect(),
        }
    }

    /// Every instruction followed as written.
    pub fn passed(&self) -> bool {
        self.strict.iter().all(|&p| p)
    }

    /// Instructions followed as written.
    pub fn followed(&self) -> usize {
        self.strict.iter().filter(|&&p| p).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_variants_drop_first_and_last_lines_and_emphasis() {
        let v = loose_variants("Sure! Here it is:\n**hello world**\nHope this helps.");
        assert!(v.contains(&"**hello world**".to_string()));
        assert!(v.contains(&"hello world".to_string()));
        assert_eq!(v.len(), 8);
        // A lowercase answer behind a capitalised preamble passes loosely, not strictly.
        let i = Instruction::Lowercase;
        let answer = "Sure, here you go:\nall of this is lowercase.";
        assert!(!i.check(answer));
        assert!(i.check_loose(answer));
        // Nothing rescues an answer that breaks the instruction throughout.
        assert!(!i.check_loose("One Two\nThree Four\nFive Six"));
    }

    #[test]
    fn instructions_round_trip_through_json_and_describe_themselves() {
        let all = vec![
            Instruction::Words { relation: Relation::AtLeast, n: 50 },
            Instruction::IncludeKeywords { keywords: vec!["river".into(), "stone".into()] },
            Instruction::LetterFrequency { letter: 'z', relation: Relation::AtLeast, n: 3 },
            Instruction::Title,
        ];
        let json = serde_json::to_string(&all).unwrap();
        assert!(json.contains(r#""kind":"words","relation":"at_least","n":50"#), "{json}");
        assert_eq!(serde_json::from_str::<Vec<Instruction>>(&json).unwrap(), all);
        assert_eq!(all[1].describe(), "Include the keywords \"river\" and \"stone\" in your answer.");
        assert_eq!(all[0].describe(), "Answer with at least 50 words.");
    }

    #[test]
    fn conflicting_instructions_are_recognised() {
        use Instruction::*;
        assert!(Lowercase.conflicts_with(&Uppercase));
        assert!(Json.conflicts_with(&Postscript));
        assert!(Postscript.conflicts_with(&Json));
        assert!(Title.conflicts_with(&Title));
        assert!(Lowercase.conflicts_with(&Sections { n: 2 }));
        assert!(!Lowercase.conflicts_with(&Title));
        assert!(!NoCommas.conflicts_with(&Words { relation: Relation::AtMost, n: 80 }));
    }

    #[test]
    fn outcomes_count_what_was_followed() {
        let ins = [Instruction::NoCommas, Instruction::Lowercase];
        let o = Outcome::of(&ins, "Hello there friend");
        assert_eq!(o.strict, [true, false]);
        assert!(!o.passed());
        assert_eq!(o.followed(), 1);
        assert!(Outcome::of(&ins, "hello there friend").passed());
    }
}
