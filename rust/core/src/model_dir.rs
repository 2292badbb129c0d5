//! Reading a Hugging Face model folder: `tokenizer.json`, the special tokens and chat template in
//! `tokenizer_config.json`, or a `chat_template.jinja` file (which wins, as in transformers).

use crate::tokenizer::TextTokenizer;
use crate::{Error, Result};
use serde_json::Value as Json;
use std::path::Path;

/// The special-token names transformers passes to chat templates.
pub const SPECIAL_TOKEN_KEYS: &[&str] = &[
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// What a model folder says about chat rendering.
#[derive(Debug, Clone, Default)]
pub struct TokenizerConfig {
    /// The chat template's source (`chat_template`, or the one named "default" in a list).
    pub chat_template: Option<String>,
    /// `bos_token`, `eos_token`, ... as plain strings.
    pub special_tokens: Vec<(String, String)>,
}

impl TokenizerConfig {
    /// Reads the parsed `tokenizer_config.json`.
    pub fn from_json(json: &Json) -> Self {
        let chat_template = match json.get("chat_template") {
            Some(Json::String(s)) => Some(s.clone()),
            // A list of named templates: transformers uses the one named "default".
            Some(Json::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        let special_tokens = SPECIAL_TOKEN_KEYS
            .iter()
            .filter_map(|key| {
                let text = match json.get(*key)? {
                    Json::String(s) => s.clone(),
                    Json::Object(o) => o.get("content")?.as_str()?.to_string(),
                    _ => return None,
                };
                Some((key.to_string(), text))
            })
            .collect();
        TokenizerConfig {
            chat_template,
            special_tokens,
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))
}

/// What a model folder holds for chat rendering: its tokenizer, its chat template's source and
/// its special tokens.
pub(crate) struct ModelDir {
    pub tokenizer: TextTokenizer,
    pub template_source: Option<String>,
    pub special_tokens: Vec<(String, String)>,
}

/// Reads a model folder.
pub(crate) fn load(dir: &Path) -> Result<ModelDir> {
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
    let config_path = dir.join("tokenizer_config.json");
    let config = if config_path.exists() {
        let text = read(&config_path)?;
        let json: Json = serde_json::from_str(&text).map_err(|e| {
            Error::Tokenizer(format!("{} is not valid JSON: {e}", config_path.display()))
        })?;
        TokenizerConfig::from_json(&json)
    } else {
        TokenizerConfig::default()
    };
    let jinja_path = dir.join("chat_template.jinja");
    let source = if jinja_path.exists() {
        Some(read(&jinja_path)?)
    } else {
        config.chat_template.clone()
    };
    Ok(ModelDir {
        tokenizer,
        template_source: source,
        special_tokens: config.special_tokens,
    })
}
