//! The OpenAPI document as the server means it. utoipa derives the shapes; this adds
//! what the derive cannot know: every status an operation can answer with (401 where a
//! key applies, 400 for malformed parameters and bodies, 413, 415, 500 for an internal
//! error, 504 under the request deadline), and the limits validation enforces written as schema constraints — taken
//! from the same constants and [`Limits`] the handlers check, so the two cannot drift. A
//! server documents its own limits (`GET /openapi.json`); `srlm openapi` writes the
//! defaults.

use serde_json::{json, Map, Value};

use super::Limits;

/// One enforced limit, as a schema keyword on a field.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// A component schema name, or `query:<path>` for an operation's query parameter.
    pub target: &'static str,
    /// A property of that schema (or the parameter's name).
    pub field: &'static str,
    /// JSON Schema keyword (`minimum`, `maximum`, `exclusiveMinimum`, `enum`, `minItems`,
    /// `maxItems`, `minLength`, `maxLength`, `pattern`) and its value.
    pub keyword: &'static str,
    pub value: Value,
}

fn c(target: &'static str, field: &'static str, keyword: &'static str, value: Value) -> Constraint {
    Constraint { target, field, keyword, value }
}

/// Every limit the handlers enforce, for a server with `limits`.
pub fn constraints(limits: &Limits) -> Vec<Constraint> {
    use super::{admin, chat, completions, generate, records, sampling};
    let (t_lo, t_hi) = (*sampling::TEMPERATURE.start(), *sampling::TEMPERATURE.end());
    let (m_lo, m_hi) = (*generate::MARGIN.start(), *generate::MARGIN.end());
    let mut out = Vec::new();
    // The sampling fields of the three generation bodies.
    for target in ["ChatCompletionRequest", "CompletionRequest", "GenerateRequest"] {
        out.push(c(target, "temperature", "minimum", json!(t_lo)));
        out.push(c(target, "temperature", "maximum", json!(t_hi)));
        out.push(c(target, "top_p", "exclusiveMinimum", json!(0)));
        out.push(c(target, "top_p", "maximum", json!(sampling::TOP_P_MAX)));
        out.push(c(target, "top_k", "minimum", json!(0)));
        out.push(c(target, "n", "minimum", json!(1)));
        out.push(c(target, "n", "maximum", json!(limits.max_n)));
        out.push(c(target, "max_tokens", "minimum", json!(1)));
        out.push(c(target, "max_tokens", "maximum", json!(limits.max_tokens)));
    }
    for target in ["ChatCompletionRequest", "GenerateRequest"] {
        out.push(c(target, "max_completion_tokens", "minimum", json!(1)));
        out.push(c(target, "max_completion_tokens", "maximum", json!(limits.max_tokens)));
        out.push(c(target, "messages", "minItems", json!(1)));
    }
    out.push(c("Stop", "[array]", "maxItems", json!(limits.max_stop)));
    out.push(c("Stop", "[items]", "minLength", json!(1)));
    out.push(c("ChatCompletionRequest", "top_logprobs", "minimum", json!(0)));
    out.push(c("ChatCompletionRequest", "top_logprobs", "maximum", json!(limits.max_top_logprobs)));
    out.push(c("RequestMessage", "role", "enum", json!(chat::ROLES)));
    out.push(c("ContentPart", "type", "enum", json!(["text"])));
    out.push(c("CompletionRequest", "logprobs", "minimum", json!(0)));
    out.push(c("CompletionRequest", "logprobs", "maximum", json!(completions::MAX_COMPLETION_LOGPROBS)));
    out.push(c("CompletionRequest", "echo", "enum", json!([false])));
    out.push(c("CompletionRequest", "suffix", "maxLength", json!(0)));
    out.push(c("CompletionRequest", "best_of", "minimum", json!(1)));
    out.push(c("CompletionRequest", "best_of", "maximum", json!(1)));
    out.push(c("PromptInput", "[array]", "minItems", json!(1)));
    out.push(c("PromptInput", "[array]", "maxItems", json!(limits.max_n)));
    out.push(c("PromptInput", "[items]", "minLength", json!(1)));
    out.push(c("GenerateRequest", "prompt", "pattern", json!(r"\S")));
    out.push(c("GenerateRequest", "source", "enum", json!(generate::SOURCES)));
    out.push(c("GenerateRequest", "iteration", "minimum", json!(0)));
    out.push(c("GenerateRequest", "instructions", "maxItems", json!(generate::MAX_INSTRUCTIONS)));
    // A letter is one character.
    out.push(c("Instruction", "letter", "minLength", json!(1)));
    out.push(c("Instruction", "letter", "maxLength", json!(1)));
    out.push(c("PairPolicy", "min_margin", "minimum", json!(m_lo)));
    out.push(c("PairPolicy", "min_margin", "maximum", json!(m_hi)));
    out.push(c("PairPolicy", "length_band", "minimum", json!(m_lo)));
    out.push(c("PairPolicy", "length_band", "maximum", json!(m_hi)));
    // Judging options: inside /generate and in /judge's own body.
    for target in ["JudgeOptions", "JudgeRequest"] {
        out.push(c(target, "samples", "minimum", json!(1)));
        out.push(c(target, "samples", "maximum", json!(limits.max_judge_samples)));
        out.push(c(target, "temperature", "minimum", json!(t_lo)));
        out.push(c(target, "temperature", "maximum", json!(t_hi)));
        out.push(c(target, "top_p", "exclusiveMinimum", json!(0)));
        out.push(c(target, "top_p", "maximum", json!(sampling::TOP_P_MAX)));
        out.push(c(target, "max_tokens", "minimum", json!(1)));
        out.push(c(target, "max_tokens", "maximum", json!(limits.max_tokens)));
    }
    out.push(c("JudgeRequest", "messages", "minItems", json!(1)));
    out.push(c("JudgeRequest", "prompt", "pattern", json!(r"\S")));
    out.push(c("SelfInstructRequest", "count", "minimum", json!(1)));
    out.push(c("SelfInstructRequest", "count", "maximum", json!(limits.max_self_instruct)));
    out.push(c("SelfInstructRequest", "max_attempts", "minimum", json!(1)));
    out.push(c(
        "SelfInstructRequest",
        "max_attempts",
        "maximum",
        json!(crate::selfinstruct::ATTEMPTS_PER_PROMPT * limits.max_self_instruct),
    ));
    out.push(c("SelfInstructRequest", "iteration", "minimum", json!(0)));
    out.push(c("SelfInstructRequest", "seeds", "minItems", json!(admin::MIN_SEEDS)));
    out.push(c("ReviewRequest", "note", "maxLength", json!(records::MAX_NOTE_CHARS)));
    // Query parameters of the record lists.
    for target in ["query:/prompts", "query:/pairs", "query:/evaluations"] {
        out.push(c(target, "limit", "minimum", json!(1)));
        out.push(c(target, "limit", "maximum", json!(records::MAX_PAGE)));
        out.push(c(target, "offset", "minimum", json!(0)));
    }
    out.push(c("query:/prompts", "source", "enum", json!(generate::SOURCES)));
    out.push(c("query:/prompts", "iteration", "minimum", json!(0)));
    out.push(c("query:/pairs", "status", "enum", json!(records::PAIR_STATUSES)));
    out.push(c("query:/evaluations", "kind", "enum", json!(records::EVALUATION_KINDS)));
    out
}

/// The document for a server with `limits`: utoipa's, with statuses and constraints.
pub fn document(spec: &utoipa::openapi::OpenApi, limits: &Limits) -> Value {
    let mut doc = serde_json::to_value(spec).expect("the OpenAPI document serializes");
    declare_statuses(&mut doc);
    declare_alternatives(&mut doc);
    declare_event_streams(&mut doc);
    for constraint in constraints(limits) {
        let applied = apply(&mut doc, &constraint);
        assert!(applied, "constraint {constraint:?} names no field of the document");
    }
    doc
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// Adds the statuses every operation of its kind can answer with, keeping the
/// descriptions handlers gave where they already list one.
fn declare_statuses(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            let keyed = operation["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()));
            let admin = path.starts_with("/admin/");
            let params = operation["parameters"].as_array().is_some_and(|p| !p.is_empty());
            let body = operation.get("requestBody").is_some();
            let Some(responses) = operation["responses"].as_object_mut() else { continue };
            let mut add = |status: u16, description: &str| {
                responses.entry(status.to_string()).or_insert_with(|| error_response(description));
            };
            if keyed {
                add(401, "Missing or wrong API key (the server was started with keys)");
            }
            if admin {
                add(401, "Missing or wrong admin token");
                add(403, "Admin routes are disabled (no --admin-token)");
            }
            if params {
                add(400, "A path or query parameter is malformed or out of range; `param` names it");
            }
            if body {
                add(400, "The body is not valid JSON, or a field is invalid; `param` names it");
                add(413, "The body is larger than the server's limit (--max-body-bytes)");
                add(415, "The body is not JSON (Content-Type: application/json)");
            }
            add(500, "An internal error (logged by the server; the message says nothing more)");
            add(504, "No response within the server's request deadline (--request-timeout-secs)");
        }
    }
}

/// A streamed response's media type describes one server-sent event: its `data` is a
/// chunk as JSON, or the closing `[DONE]`.
fn declare_event_streams(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        for operation in item.values_mut() {
            let Some(responses) = operation["responses"].as_object_mut() else { continue };
            for response in responses.values_mut() {
                let Some(stream) = response.pointer_mut("/content/text~1event-stream") else { continue };
                let chunk = stream["schema"].take();
                stream["schema"] = json!({
                    "type": "object",
                    "description": "One server-sent event",
                    "required": ["data"],
                    "properties": {"data": {"anyOf": [
                        {"type": "string", "contentMediaType": "application/json", "contentSchema": chunk},
                        {"type": "string", "const": "[DONE]"}
                    ]}}
                });
            }
        }
    }
}

/// `field` is given, as a `kind` (not null).
fn present(field: &str, kind: &str) -> Value {
    json!({"required": [field], "properties": {field: {"type": kind}}})
}

/// `field` is given and `other` is not.
fn instead_of(field: (&str, &str), other: (&str, &str)) -> Value {
    let mut schema = present(field.0, field.1);
    schema["not"] = present(other.0, other.1);
    schema
}

/// The alternatives the handlers accept, which the fields alone cannot say: a
/// `/generate` body has `messages` or `prompt`, not both; a `/judge` body has a stored
/// `candidate_id` alone, or a `response` with `prompt` or `messages`; chat's
/// `top_logprobs` comes with `logprobs: true`.
fn declare_alternatives(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    let question =
        json!([instead_of(("messages", "array"), ("prompt", "string")), instead_of(("prompt", "string"), ("messages", "array"))]);
    schemas["GenerateRequest"]["oneOf"] = question.clone();
    let mut stored = present("candidate_id", "integer");
    stored["not"] = json!({"anyOf": [present("response", "string"), present("prompt", "string"), present("messages", "array")]});
    let mut given = instead_of(("response", "string"), ("candidate_id", "integer"));
    given["oneOf"] = question;
    schemas["JudgeRequest"]["oneOf"] = json!([stored, given]);
    // Chat's top_logprobs needs logprobs: true.
    let logprobs_on = json!({"required": ["logprobs"], "properties": {"logprobs": {"const": true}}});
    schemas["ChatCompletionRequest"]["anyOf"] = json!([{"not": present("top_logprobs", "integer")}, logprobs_on]);
}

/// Writes one constraint into the document; false when its target or field is absent.
fn apply(doc: &mut Value, constraint: &Constraint) -> bool {
    if let Some(path) = constraint.target.strip_prefix("query:") {
        let pointer = format!("/paths/{}/get/parameters", path.replace('~', "~0").replace('/', "~1"));
        let Some(params) = doc.pointer_mut(&pointer).and_then(Value::as_array_mut) else { return false };
        let Some(param) = params.iter_mut().find(|p| p["name"] == constraint.field && p["in"] == "query") else { return false };
        return set(&mut param["schema"], constraint);
    }
    let Some(schema) = doc["components"]["schemas"].get_mut(constraint.target) else { return false };
    match constraint.field {
        // The array (or its string items) of an untagged "one or many" schema.
        "[array]" | "[items]" => {
            let Some(variants) = schema["oneOf"].as_array_mut() else { return false };
            let Some(array) = variants.iter_mut().find(|v| v["type"] == "array") else { return false };
            if constraint.field == "[array]" {
                set(array, constraint)
            } else {
                let items = &mut array["items"];
                set(items, constraint) && variants.iter_mut().filter(|v| v["type"] == "string").all(|s| set(s, constraint))
            }
        }
        field => match schema["properties"].get_mut(field) {
            Some(property) => set(property, constraint),
            // A tagged enum: every variant that has the field.
            None => {
                let Some(variants) = schema["oneOf"].as_array_mut() else { return false };
                let mut landed = false;
                for variant in variants {
                    if let Some(property) = variant["properties"].get_mut(field) {
                        landed = set(property, constraint) || landed;
                    }
                }
                landed
            }
        },
    }
}

/// Sets the keyword on a property schema; an optional reference (`oneOf: [null, $ref]`)
/// cannot carry it and counts as absent.
fn set(schema: &mut Value, constraint: &Constraint) -> bool {
    let Some(object) = schema.as_object_mut() else { return false };
    if object.contains_key("$ref") || object.contains_key("oneOf") {
        return false;
    }
    let mut value = constraint.value.clone();
    // An optional field's enum still admits its null.
    if constraint.keyword == "enum" && is_nullable(object) {
        value.as_array_mut().expect("enum values are a list").push(Value::Null);
    }
    object.insert(constraint.keyword.to_string(), value);
    true
}

fn is_nullable(object: &Map<String, Value>) -> bool {
    object.get("type").and_then(Value::as_array).is_some_and(|types| types.iter().any(|t| t == "null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        super::super::openapi()
    }

    #[test]
    fn every_constraint_lands_on_a_field_with_the_limits_value() {
        let limits = Limits { max_n: 3, max_tokens: 40, ..Limits::default() };
        let doc = document(&super::super::routes().into_openapi(), &limits);
        let chat = &doc["components"]["schemas"]["ChatCompletionRequest"]["properties"];
        assert_eq!((chat["n"]["minimum"].clone(), chat["n"]["maximum"].clone()), (json!(1), json!(3)));
        assert_eq!(chat["max_completion_tokens"]["maximum"], json!(40));
        assert_eq!(chat["temperature"]["maximum"], json!(2.0));
        assert_eq!(chat["top_p"]["exclusiveMinimum"], json!(0));
        let status =
            doc["paths"]["/pairs"]["get"]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "status").unwrap().clone();
        assert_eq!(status["in"], "query");
        assert_eq!(status["schema"]["enum"], json!(["available", "claimed", "consumed", "excluded"]));
        let generate = &doc["components"]["schemas"]["GenerateRequest"]["properties"];
        assert_eq!(generate["source"]["enum"], json!(["user", "seed", "self_instruct", null]), "an optional body field's enum admits null");
    }

    #[test]
    fn every_operation_lists_the_errors_its_kind_can_produce() {
        let doc = doc();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let has = |status: &str| op["responses"].get(status).is_some();
                let keyed = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()));
                if keyed || path.starts_with("/admin/") {
                    assert!(has("401"), "{method} {path} takes a token but does not list 401");
                }
                if op["parameters"].as_array().is_some_and(|p| !p.is_empty()) {
                    assert!(has("400"), "{method} {path} has parameters but does not list 400");
                }
                if op.get("requestBody").is_some() {
                    for status in ["400", "413", "415"] {
                        assert!(has(status), "{method} {path} takes a body but does not list {status}");
                    }
                }
                for (status, response) in op["responses"].as_object().unwrap() {
                    // /ready's 503 is its readiness report, by design.
                    if (status.starts_with('4') || status.starts_with('5')) && path != "/ready" {
                        let schema = &response["content"]["application/json"]["schema"]["$ref"];
                        assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status} is not the error shape");
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} operations");
    }

    #[test]
    fn a_constraint_naming_no_field_is_reported() {
        let mut doc = doc();
        assert!(!apply(&mut doc, &c("ChatCompletionRequest", "no_such_field", "minimum", json!(1))));
        assert!(!apply(&mut doc, &c("query:/pairs", "no_such_param", "minimum", json!(1))));
        assert!(!apply(&mut doc, &c("NoSuchSchema", "n", "minimum", json!(1))));
    }
}
