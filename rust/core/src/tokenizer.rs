//! Loading Hugging Face tokenizers and encoding text with byte offsets. The chat template owns
//! BOS/EOS, so encoding never adds special tokens; added tokens are still split out first.

use crate::{Error, Result};
use std::collections::HashSet;
use std::path::Path;

/// A Hugging Face tokenizer plus what span finding needs to know about its special tokens.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// Texts of the special added tokens, longest first (so the longest match wins).
    specials: Vec<String>,
    special_ids: HashSet<u32>,
}

/// Token ids with the byte range of the text each one covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Io(format!(
                "cannot read tokenizer file {}: {e}",
                path.display()
            ))
        })?;
        Self::from_json_str(&text).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    pub fn from_json_str(json: &str) -> Result<Self> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| Error::Tokenizer(format!("invalid tokenizer.json: {e}")))?;
        Ok(Self::new(inner))
    }

    /// Wraps a tokenizer, dropping any truncation or padding stored with it (transformers does too).
    pub fn new(mut inner: tokenizers::Tokenizer) -> Self {
        let _ = inner.with_truncation(None);
        inner.with_padding(None);
        let added = inner.get_added_tokens_decoder();
        let mut specials: Vec<String> = added
            .values()
            .filter(|t| t.special)
            .map(|t| t.content.clone())
            .collect();
        specials.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        let special_ids = added
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        TextTokenizer {
            inner,
            specials,
            special_ids,
        }
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Encodes `text` without BOS/EOS; offsets are byte ranges into `text`.
    pub fn encode(&self, text: &str) -> Result<Tokens> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("tokenization failed: {e}")))?;
        Ok(Tokens {
            ids: encoding.get_ids().to_vec(),
            offsets: encoding.get_offsets().to_vec(),
        })
    }

    /// The length in bytes of the special token that starts at `text[pos..]`, if any.
    pub fn special_at(&self, text: &str, pos: usize) -> Option<usize> {
        let rest = text.get(pos..)?;
        self.specials
            .iter()
            .find(|s| rest.starts_with(s.as_str()))
            .map(|s| s.len())
    }

    pub fn is_special_id(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    pub fn special_tokens(&self) -> &[String] {
        &self.specials
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| Error::Tokenizer(format!("cannot serialize tokenizer: {e}")))
    }
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("specials", &self.specials.len())
            .finish()
    }
}
