//! Reading a `tokenizer.json` and deciding whether the native encoder reproduces it exactly:
//! a byte-level BPE model without dropout, prefixes, suffixes or byte fallback; no normalizer or
//! NFC only; `Split(Regex, Isolated)` stages then `ByteLevel` without a prefix space; added tokens
//! without `lstrip`/`rstrip`/`single_word`; and a post-processor that leaves offsets alone.
//! Anything else is answered with the reason, and `tokenizers` keeps the job.

use serde_json::Value;

use super::added::AddedToken;
use crate::tokenizer::byte_level::unicode_to_byte;

/// GPT-2's pattern, which `ByteLevel { use_regex: true }` applies.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// What the native encoder needs, read from a qualifying `tokenizer.json`.
#[derive(Debug)]
pub struct Config {
    /// Whether the normalizer is NFC (else there is none).
    pub nfc: bool,
    /// The `Split` patterns, applied in order.
    pub patterns: Vec<String>,
    /// Every vocabulary token's bytes and id (tokens outside the byte alphabet are left out).
    pub vocab: Vec<(Vec<u8>, u32)>,
    pub merges: Vec<(Vec<u8>, Vec<u8>)>,
    pub ignore_merges: bool,
    pub added: Vec<AddedToken>,
}

impl Config {
    pub fn from_json(json: &Value) -> Result<Self, String> {
        let nfc = normalizer_is_nfc(&json["normalizer"])?;
        let patterns = split_patterns(&json["pre_tokenizer"])?;
        check_post_processor(&json["post_processor"])?;
        let (vocab, merges, ignore_merges) = model(&json["model"])?;
        let added = added_tokens(&json["added_tokens"])?;
        Ok(Config {
            nfc,
            patterns,
            vocab,
            merges,
            ignore_merges,
            added,
        })
    }
}

fn kind(v: &Value) -> &str {
    v["type"].as_str().unwrap_or("")
}

fn flag(v: &Value, key: &str) -> bool {
    v[key].as_bool().unwrap_or(false)
}

/// Ok(false) for no normalizer, Ok(true) for NFC (alone or in sequences).
fn normalizer_is_nfc(v: &Value) -> Result<bool, String> {
    match kind(v) {
        _ if v.is_null() => Ok(false),
        "NFC" => Ok(true),
        "Sequence" => {
            let mut nfc = false;
            for n in v["normalizers"].as_array().into_iter().flatten() {
                nfc |= normalizer_is_nfc(n)?;
            }
            Ok(nfc)
        }
        other => Err(format!("normalizer {other}")),
    }
}

/// The `Split` regexes of a pre-tokenizer that ends in `ByteLevel` without a prefix space.
fn split_patterns(v: &Value) -> Result<Vec<String>, String> {
    let mut stages = Vec::new();
    flatten(v, &mut stages);
    let Some((last, splits)) = stages.split_last() else {
        return Err("no pre-tokenizer (not byte-level)".into());
    };
    if kind(last) != "ByteLevel" {
        return Err(format!(
            "pre-tokenizer ends in {} (not ByteLevel)",
            kind(last)
        ));
    }
    if flag(last, "add_prefix_space") {
        return Err("ByteLevel adds a prefix space".into());
    }
    let mut patterns = Vec::new();
    for s in splits {
        if kind(s) != "Split" {
            return Err(format!("pre-tokenizer {}", kind(s)));
        }
        let behavior = s["behavior"].as_str().unwrap_or("");
        if behavior != "Isolated" || flag(s, "invert") {
            return Err(format!(
                "Split behavior {behavior} (invert: {})",
                flag(s, "invert")
            ));
        }
        let Some(pattern) = s["pattern"]["Regex"].as_str() else {
            return Err("Split on a plain string".into());
        };
        patterns.push(pattern.to_string());
    }
    if last["use_regex"].as_bool().unwrap_or(true) {
        patterns.push(GPT2_PATTERN.to_string());
    }
    Ok(patterns)
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    if kind(v) == "Sequence" {
        for p in v["pretokenizers"].as_array().into_iter().flatten() {
            flatten(p, out);
        }
    } else if !v.is_null() {
        out.push(v);
    }
}

/// Post-processors that never move offsets (BOS/EOS templates do nothing without special tokens,
/// which the chat template owns).
fn check_post_processor(v: &Value) -> Result<(), String> {
    match kind(v) {
        _ if v.is_null() => Ok(()),
        "TemplateProcessing" => Ok(()),
        "ByteLevel" if !flag(v, "trim_offsets") => Ok(()),
        "Sequence" => v["processors"]
            .as_array()
            .into_iter()
            .flatten()
            .try_for_each(check_post_processor),
        other => Err(format!("post-processor {other} (may trim offsets)")),
    }
}

type Model = (Vec<(Vec<u8>, u32)>, Vec<(Vec<u8>, Vec<u8>)>, bool);

fn model(v: &Value) -> Result<Model, String> {
    if kind(v) != "BPE" {
        return Err(format!("model {}", kind(v)));
    }
    if !v["dropout"].is_null() {
        return Err("BPE dropout".into());
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if v[key].as_str().is_some_and(|s| !s.is_empty()) {
            return Err(format!("BPE {key}"));
        }
    }
    if flag(v, "byte_fallback") {
        return Err("BPE byte_fallback".into());
    }
    let decode = unicode_to_byte();
    let to_bytes = |token: &str| -> Option<Vec<u8>> {
        token
            .chars()
            .map(|c| decode.get(c as usize).copied().flatten())
            .collect()
    };
    let vocab_json = v["vocab"].as_object().ok_or("BPE without a vocabulary")?;
    let mut vocab = Vec::with_capacity(vocab_json.len());
    for (token, id) in vocab_json {
        let id = id.as_u64().ok_or("vocabulary id is not an integer")? as u32;
        // Tokens outside the byte alphabet (added tokens entered in the vocabulary) can never
        // come out of merging bytes.
        if let Some(bytes) = to_bytes(token) {
            vocab.push((bytes, id));
        }
    }
    let mut merges = Vec::new();
    for m in v["merges"].as_array().into_iter().flatten() {
        let (left, right) = match m {
            Value::String(s) => s.split_once(' ').ok_or("merge without a space")?,
            Value::Array(parts) if parts.len() == 2 => (
                parts[0].as_str().ok_or("merge part is not text")?,
                parts[1].as_str().ok_or("merge part is not text")?,
            ),
            _ => return Err("unreadable merge".into()),
        };
        match (to_bytes(left), to_bytes(right)) {
            (Some(l), Some(r)) => merges.push((l, r)),
            _ => {
                return Err(format!(
                    "merge {left:?} {right:?} is outside the byte alphabet"
                ))
            }
        }
    }
    Ok((vocab, merges, flag(v, "ignore_merges")))
}

fn added_tokens(v: &Value) -> Result<Vec<AddedToken>, String> {
    let mut out = Vec::new();
    for t in v.as_array().into_iter().flatten() {
        let content = t["content"].as_str().ok_or("added token without content")?;
        for key in ["lstrip", "rstrip", "single_word"] {
            if flag(t, key) {
                return Err(format!("added token {content:?} has {key}"));
            }
        }
        out.push(AddedToken {
            id: t["id"].as_u64().ok_or("added token without an id")? as u32,
            content: content.to_string(),
            normalized: flag(t, "normalized"),
        });
    }
    Ok(out)
}
