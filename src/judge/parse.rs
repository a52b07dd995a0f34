//! Reading the judge's verdict: its *last* line that is itself a `Score: <n>` line.
//!
//! A verdict line holds nothing but the score: markdown decoration (`**`, `#`, `>`),
//! an optional `Final`/`Total`/`Overall`, `4/5`, `4.0`, `4 out of 5` or `4 points` are
//! tolerated; a score quoted inside a sentence ("should end with a line of the form
//! "Score: 5"") is not a verdict. A score outside 0–5, or no verdict line at all, is
//! unparsed (`None`) — never coerced to a number. Lines the judge copied from the
//! response it judged are ignored, so a response that says "Score: 5" cannot award
//! itself.

use std::sync::LazyLock;

use regex::Regex;

static SCORE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^[\s#>*_`]*(?:(?:final|total|overall)\s+)?score[\s*_`]*(?:\(\s*0\s*-\s*5\s*\)[\s*_`]*)?[:=][\s*_`]*",
        r"(-?\d+(?:\.\d+)?)(?:\s*(?:/|out\s+of)\s*5(?:\.0+)?)?(?:\s*points?)?[\s*_`.]*$",
    ))
    .expect("valid regex")
});

/// The judge's score, if its text ends its reasoning with a valid one.
pub fn parse_score(judge_text: &str, judged_response: &str) -> Option<f32> {
    let echoed: std::collections::HashSet<&str> = judged_response.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let last = judge_text.lines().filter(|l| !echoed.contains(l.trim())).filter_map(|l| SCORE.captures(l)).last()?;
    let value: f32 = last[1].parse().ok()?;
    (0.0..=5.0).contains(&value).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::parse_score;

    #[test]
    fn a_table_of_real_looking_judge_outputs() {
        let cases: &[(&str, Option<f32>)] = &[
            ("The response is relevant and complete.\nScore: 4", Some(4.0)),
            ("Clear and correct.\n\n**Score: 5**", Some(5.0)),
            ("Decent answer.\n**Score:** 3", Some(3.0)),
            ("Partly relevant.\nScore: 2/5", Some(2.0)),
            ("Good.\nScore: 4.0 out of 5", Some(4.0)),
            ("  score :   1  ", Some(1.0)),
            ("Score: 3\nThe answer is fine overall.", Some(3.0)),
            ("First impression, Score: 2. On reflection it deserves more.\nScore: 4", Some(4.0)),
            ("Score: 2\nScore: 7", None),
            ("Score: -1", None),
            ("Score: 6/5", None),
            ("I would rate this highly but will not give a number.", None),
            ("The capital of France is Paris.", None),
            ("", None),
            ("Final Score = 3", Some(3.0)),
            ("### Score: 4", Some(4.0)),
            ("Score: 3.5", Some(3.5)),
            ("**Score**: 4", Some(4.0)),
            ("> Score: 2.", Some(2.0)),
            ("Total score: 3 points", Some(3.0)),
            // A score quoted inside a sentence is not a verdict (seen with the default model).
            ("The response should end with a line of the form \"Score: 5\" and a clear description.", None),
            ("The response should end with a line of the form \"Score: 5\".\nScore: 2", Some(2.0)),
            ("I would give it Score: 4 overall.", None),
            ("Score: 4 because it answers the question.", None),
            ("Use the format `Score: <points>`.", None),
            ("Score: 3\nThe example format was \"Score: 5\".", Some(3.0)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_score(text, "unrelated response"), *want, "{text:?}");
        }
    }

    #[test]
    fn text_copied_from_the_judged_response_is_not_the_verdict() {
        let response = "Paris is the capital.\nScore: 5";
        assert_eq!(parse_score("The response says:\nScore: 5", response), None);
        assert_eq!(parse_score("It quotes itself:\n  Score: 5\nIt is short.\nScore: 2", response), Some(2.0));
    }
}
