//! Loading Hugging Face tokenizers and encoding text with byte offsets. The chat template owns
//! BOS/EOS, so encoding never adds special tokens; added tokens are still split out first.
//!
//! Byte-level BPE tokenizers that qualify (see `bpe/`) are encoded by turnpack's own
//! encoder, which gives the same ids and offsets faster; the others by `tokenizers`.

mod bpe;
mod byte_level;
mod native_check;
mod regex_dialect;
#[cfg(test)]
mod tests;
pub mod tiktoken;
mod tokens;

pub use tokens::{CharIndex, Tokens};

use crate::{Error, Result};
use bpe::NativeBpe;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use tokens::encode_with;

/// Which encoder turns text into ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// turnpack's byte-level BPE (`bpe/`).
    Native,
    /// Hugging Face `tokenizers`.
    Tokenizers,
}

impl Backend {
    /// The name the Python API uses: `"turnpack"` or `"tokenizers"`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "turnpack",
            Backend::Tokenizers => "tokenizers",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "turnpack" => Ok(Backend::Native),
            "tokenizers" => Ok(Backend::Tokenizers),
            other => Err(Error::InvalidArgument(format!(
                "bpe_backend must be \"turnpack\" or \"tokenizers\", not {other:?}"
            ))),
        }
    }
}

/// A Hugging Face tokenizer plus what span finding needs to know about its special tokens.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// The native encoder, when the tokenizer qualifies; else why not.
    native: std::result::Result<Arc<NativeBpe>, String>,
    backend: Backend,
    /// Texts of the special added tokens, longest first (so the longest match wins).
    specials: Vec<String>,
    special_ids: HashSet<u32>,
}

impl TextTokenizer {
    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Io(format!(
                "cannot read tokenizer file {}: {e}",
                path.display()
            ))
        })?;
        Self::from_json_str(&text).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Loads a `tokenizer.json` text.
    pub fn from_json_str(json: &str) -> Result<Self> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| Error::Tokenizer(format!("invalid tokenizer.json: {e}")))?;
        Ok(Self::build(inner, Some(json)))
    }

    /// Wraps a tokenizer, dropping any truncation or padding stored with it (transformers does too).
    pub fn new(inner: tokenizers::Tokenizer) -> Self {
        Self::build(inner, None)
    }

    /// `json`, when given, is the tokenizer's own JSON text: the native encoder reads it instead
    /// of serializing the tokenizer again.
    fn build(mut inner: tokenizers::Tokenizer, json: Option<&str>) -> Self {
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
        let native = match json {
            Some(json) => NativeBpe::from_json_str(json),
            None => NativeBpe::from_tokenizer(&inner),
        }
        .and_then(|n| native_check::check(&n, &inner).map(|()| Arc::new(n)));
        let backend = if native.is_ok() {
            Backend::Native
        } else {
            Backend::Tokenizers
        };
        TextTokenizer {
            inner,
            native,
            backend,
            specials,
            special_ids,
        }
    }

    /// The encoder in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why the native encoder cannot be used for this tokenizer (None when it can).
    pub fn native_unavailable(&self) -> Option<&str> {
        self.native.as_ref().err().map(String::as_str)
    }

    /// Chooses the encoder; asking for the native one fails when the tokenizer does not qualify.
    pub fn set_backend(&mut self, backend: Backend) -> Result<()> {
        if let (Backend::Native, Err(why)) = (backend, &self.native) {
            return Err(Error::InvalidArgument(format!(
                "this tokenizer cannot use turnpack's BPE encoder: {why}"
            )));
        }
        self.backend = backend;
        Ok(())
    }

    /// The Hugging Face tokenizer itself.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Encodes `text` without BOS/EOS; offsets are byte ranges into `text`.
    pub fn encode(&self, text: &str) -> Result<Tokens> {
        if let (Backend::Native, Ok(native)) = (self.backend, &self.native) {
            if let Some(tokens) = native.encode(text) {
                return Ok(tokens);
            }
        }
        self.encode_with_tokenizers(text)
    }

    /// Encodes with `tokenizers`, whatever the backend.
    pub fn encode_with_tokenizers(&self, text: &str) -> Result<Tokens> {
        encode_with(&self.inner, text)
    }

    /// The length in bytes of the special token that starts at `text[pos..]`, if any.
    pub fn special_at(&self, text: &str, pos: usize) -> Option<usize> {
        let rest = text.get(pos..)?;
        self.specials
            .iter()
            .find(|s| rest.starts_with(s.as_str()))
            .map(|s| s.len())
    }

    /// Whether `id` is a special added token.
    pub fn is_special_id(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// Texts of the special added tokens, longest first.
    pub fn special_tokens(&self) -> &[String] {
        &self.specials
    }

    /// The id of token `token` (vocabulary or added), if any.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The highest id of the vocabulary or the added tokens, plus one: the rows a model's
    /// embedding needs for every id this tokenizer can produce.
    pub fn vocab_size(&self) -> usize {
        self.inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&id| id as usize + 1)
    }

    /// Text of `ids` through the tokenizer's decoder, as `tokenizers`' `decode` gives it (ids
    /// outside the vocabulary are left out; special tokens too with `skip_special_tokens`).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer(format!("decoding failed: {e}")))
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
