//! Conversations as transformers prepares them for a chat template: validated (a list of message
//! objects with a known role and well-typed content), keys whose value is null dropped, and
//! reasoning aliased under `thinking` and `reasoning_content`.

use super::value::from_json;
use crate::{Error, Result};
use minijinja::value::Value;
use serde_json::{Map, Value as Json};

/// Roles a message may have. Templates define what they do with each.
pub const KNOWN_ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "ipython",
    "function",
    "tool_response",
    "observation",
    "document",
];

/// The names a message's reasoning goes by; the first non-null one wins.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// One message, ready for the template.
#[derive(Debug, Clone)]
pub struct Message {
    /// The message's `role`.
    pub role: String,
    /// OpenAI fine-tuning's `weight`, any non-negative number: 0 excludes the message from
    /// training, other values scale its tokens' loss (`Encoded::loss_weights`).
    pub weight: Option<f64>,
    /// The message as the template sees it.
    pub value: Value,
}

impl Message {
    /// Whether the message is an assistant turn.
    pub fn is_assistant(&self) -> bool {
        self.role == "assistant"
    }

    /// The loss weight of its tokens (1 when it has none).
    pub fn loss_weight(&self) -> f64 {
        self.weight.unwrap_or(1.0)
    }
}

/// A validated conversation.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// The messages, in order.
    pub messages: Vec<Message>,
}

impl Conversation {
    /// Validates and prepares `json`, which must be a list of message objects.
    pub fn from_json(json: &Json) -> Result<Self> {
        let items = json.as_array().ok_or_else(|| {
            Error::Conversation(format!(
                "a conversation must be a list of messages, got {}",
                type_name(json)
            ))
        })?;
        if items.is_empty() {
            return Err(Error::Conversation(
                "the conversation has no messages".into(),
            ));
        }
        let messages = items
            .iter()
            .enumerate()
            .map(|(i, m)| prepare(i, m))
            .collect::<Result<_>>()?;
        Ok(Conversation { messages })
    }

    /// The messages as one template value.
    pub fn values(&self) -> Vec<Value> {
        self.messages.iter().map(|m| m.value.clone()).collect()
    }
}

fn prepare(index: usize, json: &Json) -> Result<Message> {
    let bad = |why: String| Error::Conversation(format!("message {index}: {why}"));
    let object = json.as_object().ok_or_else(|| {
        bad(format!(
            "a message must be an object, got {}",
            type_name(json)
        ))
    })?;
    let role = match object.get("role") {
        Some(Json::String(role)) => role.clone(),
        None | Some(Json::Null) => return Err(bad("missing 'role'".into())),
        Some(other) => {
            return Err(bad(format!(
                "'role' must be a string, got {}",
                type_name(other)
            )))
        }
    };
    if !KNOWN_ROLES.contains(&role.as_str()) {
        return Err(bad(format!(
            "unknown role {role:?} (expected one of {})",
            KNOWN_ROLES.join(", ")
        )));
    }
    match object.get("content") {
        None | Some(Json::Null) | Some(Json::String(_)) => {}
        Some(Json::Array(parts)) => {
            if let Some(part) = parts.iter().find(|p| !p.is_object()) {
                return Err(bad(format!(
                    "content parts must be objects, got {}",
                    type_name(part)
                )));
            }
        }
        Some(other) => {
            return Err(bad(format!(
                "'content' must be a string or a list of parts, got {}",
                type_name(other)
            )))
        }
    }
    let weight = match object.get("weight") {
        None | Some(Json::Null) => None,
        Some(Json::Bool(b)) => Some(if *b { 1.0 } else { 0.0 }),
        Some(Json::Number(n)) => match n.as_f64() {
            // a weight must survive as a float32 loss weight: 1e-50 would train a token at weight 0
            Some(w) if w == 0.0 || (w.is_finite() && w as f32 > 0.0 && w <= f32::MAX as f64) => {
                Some(w)
            }
            _ => {
                return Err(bad(format!(
                    "'weight' must be a non-negative finite number, got {n}"
                )))
            }
        },
        Some(other) => {
            return Err(bad(format!(
                "'weight' must be a non-negative number, got {}",
                type_name(other)
            )))
        }
    };
    Ok(Message {
        role,
        weight,
        value: from_json(&Json::Object(normalize(object))),
    })
}

/// Drops null-valued keys and aliases reasoning exactly as transformers does
/// (`{"thinking": r, **message, "reasoning_content": r}`, key order included).
pub fn normalize(object: &Map<String, Json>) -> Map<String, Json> {
    let kept = object.iter().filter(|(_, v)| !v.is_null());
    let reasoning = REASONING_FIELDS
        .iter()
        .find_map(|k| object.get(*k).filter(|v| !v.is_null()))
        .cloned();
    let Some(reasoning) = reasoning else {
        return kept.map(|(k, v)| (k.clone(), v.clone())).collect();
    };
    let mut out = Map::new();
    out.insert("thinking".into(), reasoning.clone());
    for (k, v) in kept {
        out.insert(k.clone(), v.clone());
    }
    out.insert("reasoning_content".into(), reasoning);
    out
}

pub fn type_name(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(n) if n.is_f64() => "float",
        Json::Number(_) => "int",
        Json::String(_) => "str",
        Json::Array(_) => "list",
        Json::Object(_) => "dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_message() {
        let err = |j: Json| Conversation::from_json(&j).unwrap_err().to_string();
        assert!(err(json!("hi")).contains("list of messages"));
        assert!(err(json!([{"role": "user", "content": "a"}, 3])).starts_with("message 1: "));
        assert!(err(json!([{"content": "a"}])).contains("missing 'role'"));
        assert!(err(json!([{"role": "wizard", "content": "a"}])).contains("unknown role"));
        assert!(err(json!([{"role": "user", "content": 5}])).contains("got int"));
    }

    #[test]
    fn reasoning_is_aliased_in_transformers_order() {
        let m = json!({"role": "assistant", "content": "x", "reasoning": "r", "tool_calls": null});
        let out = normalize(m.as_object().unwrap());
        let keys: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "thinking",
                "role",
                "content",
                "reasoning",
                "reasoning_content"
            ]
        );
        assert_eq!(out["reasoning_content"], "r");
    }
}
