//! One small pure function per instruction kind: does this text follow it?

use std::sync::LazyLock;

use regex::Regex;

use super::Instruction;

static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[\p{L}\p{N}]+(?:['’\-][\p{L}\p{N}]+)*").expect("valid regex"));
static SENTENCE_END: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[.!?]+(?:[\s\x22'”)\]]|$)").expect("valid regex"));
static PARAGRAPH_BREAK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\n[ \t]*\n").expect("valid regex"));
static BULLET: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?m)^[ \t]*[*\-][ \t]+\S").expect("valid regex"));
static TITLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<<[^\n<>]*\S[^\n<>]*>>").expect("valid regex"));
static POSTSCRIPT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?m)^[ \t*_#>]*P\.\s?S\.").expect("valid regex"));
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[[^\[\]\n]*\S[^\[\]\n]*\]").expect("valid regex"));
static SECTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?m)^[ \t*_#]*SECTION\s+\d+").expect("valid regex"));
static FENCE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)^```[A-Za-z]*[ \t]*\n(.*?)\n?```$").expect("valid regex"));

pub fn check(instruction: &Instruction, text: &str) -> bool {
    match instruction {
        Instruction::Words { relation, n } => relation.holds(words(text), *n),
        Instruction::Sentences { relation, n } => relation.holds(sentences(text), *n),
        Instruction::Paragraphs { relation, n } => relation.holds(paragraphs(text), *n),
        Instruction::Bullets { relation, n } => relation.holds(BULLET.find_iter(text).count(), *n),
        Instruction::IncludeKeywords { keywords } => keywords.iter().all(|k| contains_word(text, k)),
        Instruction::ExcludeKeywords { keywords } => !keywords.iter().any(|k| contains_word(text, k)),
        Instruction::LetterFrequency { letter, relation, n } => relation.holds(letter_count(text, *letter), *n),
        Instruction::Lowercase => text.chars().any(char::is_alphabetic) && !text.chars().any(char::is_uppercase),
        Instruction::Uppercase => text.chars().any(char::is_alphabetic) && !text.chars().any(char::is_lowercase),
        Instruction::StartWith { phrase } => starts_with(text, phrase),
        Instruction::EndWith { phrase } => ends_with(text, phrase),
        Instruction::Title => TITLE.is_match(text),
        Instruction::Json => is_json(text),
        Instruction::Quoted => quoted(text),
        Instruction::NoCommas => !text.contains(',') && !text.contains('，'),
        Instruction::Postscript => POSTSCRIPT.is_match(text),
        Instruction::Placeholders { n } => PLACEHOLDER.find_iter(text).count() >= *n,
        Instruction::Sections { n } => SECTION.find_iter(text).count() >= *n,
    }
}

/// Words: runs of letters and digits, with inner apostrophes and hyphens.
pub fn words(text: &str) -> usize {
    WORD.find_iter(text).count()
}

/// Sentences: runs of text ending in `.`, `!` or `?` (a final run without one counts).
pub fn sentences(text: &str) -> usize {
    let mut count = 0;
    let mut last = 0;
    for m in SENTENCE_END.find_iter(text) {
        if WORD.is_match(&text[last..m.start()]) {
            count += 1;
        }
        last = m.end();
    }
    count + usize::from(WORD.is_match(&text[last..]))
}

/// Paragraphs: non-empty blocks separated by blank lines.
pub fn paragraphs(text: &str) -> usize {
    PARAGRAPH_BREAK.split(text.trim()).filter(|p| !p.trim().is_empty()).count()
}

fn letter_count(text: &str, letter: char) -> usize {
    let lower: Vec<char> = letter.to_lowercase().collect();
    text.chars().filter(|c| c.to_lowercase().eq(lower.iter().copied())).count()
}

/// `keyword` as a whole word (or phrase), case-insensitive.
fn contains_word(text: &str, keyword: &str) -> bool {
    let pattern = format!(r"(?i)(?:^|[^\p{{L}}\p{{N}}]){}(?:$|[^\p{{L}}\p{{N}}])", regex::escape(keyword.trim()));
    Regex::new(&pattern).is_ok_and(|r| r.is_match(text))
}

fn starts_with(text: &str, phrase: &str) -> bool {
    text.trim_start().to_lowercase().starts_with(&phrase.trim().to_lowercase())
}

fn ends_with(text: &str, phrase: &str) -> bool {
    text.trim_end().to_lowercase().ends_with(&phrase.trim().to_lowercase())
}

fn is_json(text: &str) -> bool {
    let trimmed = text.trim();
    let body = FENCE.captures(trimmed).map_or(trimmed, |c| c.get(1).map_or("", |m| m.as_str()));
    serde_json::from_str::<serde_json::Value>(body.trim()).is_ok()
}

fn quoted(text: &str) -> bool {
    let t = text.trim();
    let pairs = [('"', '"'), ('“', '”')];
    t.chars().count() > 2 && pairs.iter().any(|&(open, close)| t.starts_with(open) && t.ends_with(close))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Relation::*;
    use Instruction::*;

    /// Each case: the instruction, a text that follows it, a text that does not.
    fn cases() -> Vec<(Instruction, &'static str, &'static str)> {
        vec![
            (Words { relation: AtLeast, n: 5 }, "one two three four five", "one two three four"),
            (Words { relation: AtMost, n: 3 }, "it's well-known here", "one two three four"),
            (Words { relation: Exactly, n: 2 }, "Hello, world!", "Hello there, world!"),
            (Sentences { relation: AtLeast, n: 3 }, "One. Two! Three?", "One. Two."),
            (Sentences { relation: AtMost, n: 2 }, "It is 3.5 metres long. Fine", "A. B. C."),
            (Sentences { relation: Exactly, n: 2 }, "First one. \"Second one.\"", "Only one."),
            (Paragraphs { relation: Exactly, n: 2 }, "First part.\n\nSecond part.\n", "One.\nStill one."),
            (Paragraphs { relation: AtLeast, n: 3 }, "a\n\nb\n  \nc", "a\n\nb"),
            (Bullets { relation: Exactly, n: 3 }, "Items:\n* one\n* two\n- three", "* one\n* two"),
            (Bullets { relation: AtMost, n: 1 }, "* only one\nplain text", "* a\n* b"),
            (
                IncludeKeywords { keywords: vec!["river".into(), "old stone".into()] },
                "The River flowed past an old stone.",
                "A river, stones.",
            ),
            (ExcludeKeywords { keywords: vec!["bad".into(), "ugly".into()] }, "Badly written but badger-free.", "It was UGLY."),
            (LetterFrequency { letter: 'z', relation: AtLeast, n: 3 }, "Zany zebras buzz", "A lazy day"),
            (LetterFrequency { letter: 'e', relation: AtMost, n: 1 }, "A dog", "Eerie"),
            (Lowercase, "all lower case, 100%.", "Not lower case."),
            (Uppercase, "ALL CAPS, 100%!", "ALL CAPS but one word"),
            (StartWith { phrase: "Dear friend".into() }, "  dear Friend, hello.", "Hello, dear friend."),
            (
                EndWith { phrase: "Is there anything else I can help with?".into() },
                "Done. Is there anything else I can help with?\n",
                "Is there anything else I can help with? Bye.",
            ),
            (Title, "<<A Poem of Joy>>\nRoses are red.", "<< >> no title\n<A Poem>"),
            (Json, "```json\n{\"name\": \"river\", \"length\": 3}\n```", "{\"name\": river}"),
            (Json, "[1, 2, 3]", "Here is JSON: [1, 2, 3]"),
            (Quoted, "\"The whole answer.\"", "\"Half\" an answer."),
            (NoCommas, "No commas here.", "Yes, one."),
            (Postscript, "Body.\n\nP.S. Bring snacks.", "Body. PS bring snacks."),
            (Postscript, "Body.\n**P.S.** Bring snacks.", "Body, and a p.s. in the middle"),
            (Placeholders { n: 2 }, "Meet at [address] on [date].", "Meet at [address] on [] soon."),
            (Sections { n: 2 }, "SECTION 1\nIntro.\n\n## SECTION 2\nMore.", "Section 1 intro. SECTION two."),
        ]
    }

    #[test]
    fn every_checker_passes_and_fails_the_right_texts() {
        for (instruction, good, bad) in cases() {
            assert!(instruction.check(good), "{instruction:?} should accept {good:?}");
            assert!(!instruction.check(bad), "{instruction:?} should refuse {bad:?}");
        }
    }

    #[test]
    fn counts_follow_their_definitions() {
        assert_eq!(words("Don't stop — it's a well-known 2-step plan."), 7);
        assert_eq!(sentences("Dr. Who? No. The value is 3.14 here"), 4);
        assert_eq!(sentences(""), 0);
        assert_eq!(paragraphs("\n\none\n\n\n\ntwo\n\n"), 2);
        assert_eq!(paragraphs("   "), 0);
    }

    #[test]
    fn loose_accepts_a_preamble_or_emphasis_that_strict_refuses() {
        let start = StartWith { phrase: "My answer".into() };
        let text = "Sure! Here is my response.\nMy answer is yes.";
        assert!(!start.check(text));
        assert!(start.check_loose(text));
        let end = EndWith { phrase: "That is all.".into() };
        assert!(!end.check("Done. **That is all.**"));
        assert!(end.check_loose("Done. **That is all.**"));
        assert!(!end.check_loose("That is all. Really."));
        let json = Json;
        assert!(!json.check("Here you go:\n{\"a\": 1}"));
        assert!(json.check_loose("Here you go:\n{\"a\": 1}"));
    }
}
