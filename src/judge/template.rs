//! The judge prompt: a text template with `{prompt}` and `{response}` placeholders.
//! The project's own wording of the additive 5-point rubric is `templates/judge.txt`;
//! `srlm serve --judge-template FILE` replaces it.

use std::path::Path;

use anyhow::{bail, Context, Result};

const DEFAULT: &str = include_str!("../../templates/judge.txt");
const PROMPT: &str = "{prompt}";
const RESPONSE: &str = "{response}";

#[derive(Debug, Clone, PartialEq)]
pub struct JudgeTemplate {
    text: String,
}

impl Default for JudgeTemplate {
    fn default() -> Self {
        Self { text: DEFAULT.to_string() }
    }
}

impl JudgeTemplate {
    pub fn new(text: impl Into<String>) -> Result<Self> {
        let text = text.into();
        check_placeholders(&text, &[PROMPT, RESPONSE], "a judge template")?;
        Ok(Self { text })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::new(text).with_context(|| format!("judge template {}", path.display()))
    }

    /// SHA-256 of the template text (hex), recorded with the pairs it helped decide.
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(self.text.as_bytes()))
    }

    pub fn render(&self, prompt: &str, response: &str) -> String {
        fill(&self.text, &[(PROMPT, prompt), (RESPONSE, response)])
    }
}

/// Fails unless `text` contains each placeholder exactly once.
pub fn check_placeholders(text: &str, placeholders: &[&str], what: &str) -> Result<()> {
    for placeholder in placeholders {
        if text.matches(placeholder).count() != 1 {
            bail!("{what} must contain {placeholder} exactly once");
        }
    }
    Ok(())
}

/// Fills `{name}` placeholders in one pass, so text inside the values that looks like a
/// placeholder stays as it is.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    'outer: while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        for (placeholder, value) in values {
            if let Some(after) = rest.strip_prefix(placeholder) {
                out.push_str(value);
                rest = after;
                continue 'outer;
            }
        }
        out.push('{');
        rest = &rest[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_once_and_leaves_lookalikes_in_the_inputs_alone() {
        let t = JudgeTemplate::new("Q: {prompt}\nA: {response}\n{other}").unwrap();
        assert_eq!(t.render("why {response}?", "because"), "Q: why {response}?\nA: because\n{other}");
    }

    #[test]
    fn templates_need_both_placeholders_once() {
        assert!(JudgeTemplate::new("only {prompt}").is_err());
        assert!(JudgeTemplate::new("{prompt}{prompt}{response}").is_err());
        let default = JudgeTemplate::default();
        assert!(default.render("P", "R").contains("Score: <points>"));
    }
}
