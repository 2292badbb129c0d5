//! Loading Hugging Face tokenizers and encoding text with byte offsets. The chat template owns
//! BOS/EOS, so encoding never adds special tokens; added tokens are still split out first.
//!
//! Byte-level BPE tokenizers that qualify (see [`crate::bpe`]) are encoded by turnpack's own
//! encoder, which gives the same ids and offsets faster; the others by `tokenizers`.

use crate::bpe::{probe, NativeBpe};
use crate::{Error, Result};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// Which encoder turns text into ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// turnpack's byte-level BPE ([`crate::bpe`]).
    Native,
    /// Hugging Face `tokenizers`.
    Tokenizers,
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

/// Token ids with the byte range of the text each one covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

impl Tokens {
    /// The offsets as character (code point) positions in `text`, as Python's `tokenizers` gives
    /// them.
    pub fn char_offsets(&self, text: &str) -> Vec<(usize, usize)> {
        // chars_before[b] = number of characters before byte b, at character boundaries.
        let mut chars_before = vec![0usize; text.len() + 1];
        let mut count = 0;
        for (b, _) in text.char_indices() {
            chars_before[b] = count;
            count += 1;
        }
        chars_before[text.len()] = count;
        self.offsets
            .iter()
            .map(|&(s, e)| (chars_before[s], chars_before[e]))
            .collect()
    }
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
        .and_then(|n| probe::check(&n, &inner).map(|()| Arc::new(n)));
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

/// `text` through `tokenizers` without BOS/EOS, as [`Tokens`].
pub(crate) fn encode_with(tokenizer: &tokenizers::Tokenizer, text: &str) -> Result<Tokens> {
    let encoding = tokenizer
        .encode(text, false)
        .map_err(|e| Error::Tokenizer(format!("tokenization failed: {e}")))?;
    Ok(Tokens {
        ids: encoding.get_ids().to_vec(),
        offsets: encoding.get_offsets().to_vec(),
    })
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("specials", &self.specials.len())
            .finish()
    }
}
