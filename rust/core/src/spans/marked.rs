//! Generation-prompt renderings at a fraction of their cost: message contents replaced by short
//! markers.
//!
//! Where the generation prompt cannot be found in the text (see [`super::prompt_start`]),
//! `start="prompt"` renders `messages[:i]` with the generation prompt for every supervised message
//! `i`, and asks whether that text is a prefix of the full rendering. Those prefixes sum to about
//! half the conversation per message, quadratic in turns, and most of their bytes are the messages'
//! contents, which templates print verbatim. So every string `content` is replaced by a marker, the
//! prompts are rendered with markers (only the template's own structure is produced), and each
//! marker is compared against the real content when the rendering is matched against the full text.
//!
//! This is only sound for a template that prints contents verbatim and does not branch on them,
//! which is checked on the whole conversation: its marked rendering, with the markers expanded, must
//! be the full rendering byte for byte. Otherwise the caller renders the real prompts.

use super::render::Renderer;
use minijinja::value::{Value, ValueKind};

const OPEN: char = '\u{F0002}';
const CLOSE: char = '\u{F0003}';

/// Messages whose string contents are replaced by markers, and the contents by message index.
#[derive(Debug)]
pub struct Compressed {
    pub messages: Vec<Value>,
    contents: Vec<Option<String>>,
}

/// Replaces every non-empty string `content` by a marker; `None` when there is nothing to gain or a
/// content already holds marker characters.
pub fn compress(messages: &[Value]) -> Option<Compressed> {
    let mut out = Vec::with_capacity(messages.len());
    let mut contents = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let content = message.get_attr("content").ok();
        let text = content
            .as_ref()
            .and_then(|c| c.as_str())
            .filter(|c| !c.is_empty());
        match text {
            Some(text) => {
                if text.contains([OPEN, CLOSE]) {
                    return None;
                }
                out.push(with_content(
                    message,
                    Value::from(format!("{OPEN}{i}{CLOSE}")),
                )?);
                contents.push(Some(text.to_string()));
            }
            None => {
                out.push(message.clone());
                contents.push(None);
            }
        }
    }
    contents.iter().any(Option::is_some).then_some(Compressed {
        messages: out,
        contents,
    })
}

/// A copy of a message map with its `content` replaced, keys in the same order.
pub(crate) fn with_content(message: &Value, content: Value) -> Option<Value> {
    if message.kind() != ValueKind::Map {
        return None;
    }
    let pairs: Vec<(Value, Value)> = message
        .try_iter()
        .ok()?
        .map(|key| {
            let value = if key.as_str() == Some("content") {
                content.clone()
            } else {
                message.get_item(&key).unwrap_or_default()
            };
            (key, value)
        })
        .collect();
    Some(Value::from_pairs(pairs))
}

impl Compressed {
    /// The messages with marked contents, if the template prints contents verbatim: checked on
    /// the whole conversation, whose marked rendering must expand to `text`, the full one.
    pub(crate) fn checked(renderer: &Renderer<'_>, messages: &[Value], text: &str) -> Option<Self> {
        let c = compress(messages)?;
        let marked = renderer.text(&c.messages, false)?;
        (c.expanded_prefix_of(&marked, text) == Some(text.len())).then_some(c)
    }

    /// If `marked` with its markers expanded is a prefix of `full`, the prefix's length.
    pub fn expanded_prefix_of(&self, marked: &str, full: &str) -> Option<usize> {
        let mut pos = 0;
        let mut rest = marked;
        while let Some(at) = rest.find(OPEN) {
            let literal = &rest[..at];
            if !full[pos..].starts_with(literal) {
                return None;
            }
            pos += literal.len();
            let after = &rest[at + OPEN.len_utf8()..];
            let close = after.find(CLOSE)?;
            let index: usize = after[..close].parse().ok()?;
            let content = self.contents.get(index)?.as_deref()?;
            if !full[pos..].starts_with(content) {
                return None;
            }
            pos += content.len();
            rest = &after[close + CLOSE.len_utf8()..];
        }
        full[pos..].starts_with(rest).then_some(pos + rest.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str) -> Value {
        Value::from_pairs([
            ("role", Value::from(role)),
            ("content", Value::from(content)),
            ("name", Value::from("n")),
        ])
    }

    #[test]
    fn markers_expand_to_the_contents() {
        let messages = [message("user", "hello there"), message("assistant", "")];
        let c = compress(&messages).unwrap();
        let first = c.messages[0].get_attr("content").unwrap();
        assert_eq!(first.as_str(), Some("\u{F0002}0\u{F0003}"));
        let keys: Vec<String> = c.messages[0]
            .try_iter()
            .unwrap()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(keys, ["role", "content", "name"]);
        assert_eq!(
            c.messages[1].get_attr("content").unwrap().as_str(),
            Some("")
        );
        let full = "<u>hello there</u><a></a>";
        let marked = "<u>\u{F0002}0\u{F0003}</u>";
        assert_eq!(c.expanded_prefix_of(marked, full), Some(18));
        assert_eq!(
            c.expanded_prefix_of("<u>\u{F0002}0\u{F0003}</x>", full),
            None
        );
        assert_eq!(c.expanded_prefix_of("<u>\u{F0002}1\u{F0003}", full), None);
        assert_eq!(c.expanded_prefix_of("<u>\u{F0002}0", full), None);
    }

    #[test]
    fn nothing_to_compress_or_marker_inside() {
        assert!(compress(&[message("user", "")]).is_none());
        assert!(compress(&[message("user", "a\u{F0002}b")]).is_none());
    }
}
