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
        for placeholder in [PROMPT, RESPONSE] {
            if text.matches(placeholder).count() != 1 {
                bail!("a judge template must contain {placeholder} exactly once");
            }
        }
        Ok(Self { text })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::new(text).with_context(|| format!("judge template {}", path.display()))
    }

    /// Fills the placeholders in one pass, so text inside the prompt or the response
    /// that looks like a placeholder stays as it is.
    pub fn render(&self, prompt: &str, response: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + prompt.len() + response.len());
        let mut rest = self.text.as_str();
        while let Some(at) = rest.find('{') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix(PROMPT) {
                out.push_str(prompt);
                rest = after;
            } else if let Some(after) = rest.strip_prefix(RESPONSE) {
                out.push_str(response);
                rest = after;
            } else {
                out.push('{');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        out
    }
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
