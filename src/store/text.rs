//! Postgres `text` and `jsonb` cannot hold U+0000, which clients may send and a model
//! may write; recorded text carries U+FFFD in its place (what is served is unchanged).

use std::borrow::Cow;

use serde_json::Value;

/// `text` as Postgres can store it.
pub fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// `value` with every string and key as Postgres can store it.
pub fn storable_json(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(storable(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(storable_json).collect()),
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (storable(k).into_owned(), storable_json(v))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character_everywhere_else_nothing_changes() {
        assert!(matches!(storable("plain"), Cow::Borrowed("plain")));
        assert_eq!(storable("a\0b"), "a\u{FFFD}b");
        let value = serde_json::json!({"k\0": ["x\0", 1, null, {"c": "\0"}]});
        assert_eq!(storable_json(&value), serde_json::json!({"k\u{FFFD}": ["x\u{FFFD}", 1, null, {"c": "\u{FFFD}"}]}));
    }
}
