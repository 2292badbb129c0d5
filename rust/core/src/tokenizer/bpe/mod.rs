//! turnpack's own byte-level BPE encoder. It gives the ids and offsets of `tokenizers` for the
//! tokenizers it accepts (byte-level BPE: GPT-2, cl100k, Llama 3/4, Qwen, DeepSeek and the like)
//! at a fraction of the cost, by doing only what those need:
//! - added tokens are split out with Aho-Corasick ([`added`]);
//! - the `Split` patterns run on the `regex` crate's automata, with the one look-ahead these
//!   patterns use emulated exactly ([`pattern`]);
//! - pre-tokens are merged as raw bytes, with a per-thread cache ([`merge`]);
//! - no normalized-string bookkeeping: offsets are computed from byte positions at the end.
//!
//! [`NativeBpe::from_tokenizer`] says why a tokenizer does not qualify; `TextTokenizer` then
//! keeps `tokenizers`.

pub mod added;
mod cache;
pub mod config;
pub mod merge;
pub mod pattern;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use added::{AddedTokens, Segment};
use cache::per_encoder;
use config::Config;
use merge::MergeModel;
use pattern::{SplitCaches, SplitRegex};

use crate::tokenizer::tokens::Tokens;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Each thread's regex search caches, per encoder.
    static SPLIT_CACHES: RefCell<HashMap<usize, Vec<SplitCaches>>> = RefCell::new(HashMap::new());
}

#[derive(Debug)]
pub struct NativeBpe {
    id: usize,
    nfc: bool,
    added: AddedTokens,
    stages: Vec<SplitRegex>,
    model: MergeModel,
}

impl NativeBpe {
    /// Builds the encoder for `tokenizer`, or says why it does not qualify.
    pub fn from_tokenizer(tokenizer: &tokenizers::Tokenizer) -> Result<Self, String> {
        let json = tokenizer
            .to_string(false)
            .map_err(|e| format!("cannot serialize the tokenizer: {e}"))?;
        Self::from_json_str(&json)
    }

    /// Builds the encoder from a `tokenizer.json` text, or says why it does not qualify.
    pub fn from_json_str(json: &str) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("tokenizer JSON: {e}"))?;
        Self::from_config(Config::from_json(&value)?)
    }

    pub fn from_config(config: Config) -> Result<Self, String> {
        let stages = config
            .patterns
            .iter()
            .map(|p| SplitRegex::new(p))
            .collect::<Result<_, _>>()?;
        Ok(NativeBpe {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            nfc: config.nfc,
            added: AddedTokens::new(&config.added)?,
            stages,
            model: MergeModel::new(config.vocab, &config.merges, config.ignore_merges)?,
        })
    }

    /// Whether the tokenizer normalizes text to NFC (then text not in NFC is left to `tokenizers`).
    pub fn normalizes_nfc(&self) -> bool {
        self.nfc
    }

    /// Ids and byte offsets of `text`, as `tokenizers` gives them (a token that covers part of a
    /// character spans the whole character). None when the text is not in NFC and the tokenizer
    /// normalizes: the caller then uses `tokenizers`.
    pub fn encode(&self, text: &str) -> Option<Tokens> {
        if self.nfc && !unicode_normalization_alignments::is_nfc(text) {
            return None;
        }
        let mut ids = Vec::with_capacity(text.len() / 3 + 4);
        // Byte position where each token starts; the last token ends at the text's end.
        let mut starts = Vec::with_capacity(ids.capacity());
        let mut pieces = Vec::with_capacity(ids.capacity());
        let mut next = Vec::new();
        SPLIT_CACHES.with(|caches| {
            let mut caches = caches.borrow_mut();
            let caches = per_encoder(&mut caches, self.id, || {
                self.stages.iter().map(SplitRegex::create_caches).collect()
            });
            self.added.split(text, |segment| match segment {
                Segment::Added { id, start, .. } => {
                    ids.push(id);
                    starts.push(start);
                }
                Segment::Text { start, end } => {
                    pieces.clear();
                    pieces.push((start, end));
                    for (stage, cache) in self.stages.iter().zip(caches.iter_mut()) {
                        next.clear();
                        for &(a, b) in &pieces {
                            stage.split(text, a, b, cache, &mut next);
                        }
                        std::mem::swap(&mut pieces, &mut next);
                    }
                    for &(a, b) in &pieces {
                        let from = ids.len();
                        self.model.encode(&text.as_bytes()[a..b], &mut ids);
                        let mut at = a;
                        for &id in &ids[from..] {
                            starts.push(at);
                            at += self.model.token_len(id);
                        }
                    }
                }
            });
        });
        Some(Tokens {
            offsets: offsets(text, &starts),
            ids,
        })
    }
}

/// (start, end) of each token from the start positions, widened to whole characters.
fn offsets(text: &str, starts: &[usize]) -> Vec<(usize, usize)> {
    let floor = |mut i: usize| {
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let ceil = |mut i: usize| {
        while !text.is_char_boundary(i) {
            i += 1;
        }
        i
    };
    let ends = starts.iter().skip(1).copied().chain([text.len()]);
    starts
        .iter()
        .zip(ends)
        .map(|(&s, e)| (floor(s), ceil(e)))
        .collect()
}
