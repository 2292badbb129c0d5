//! turnpack core: render Hugging Face chat templates, find what each assistant turn must learn,
//! tokenize once, and pack the results into fixed-length training rows.
//!
//! The path of one conversation (see `ARCHITECTURE.md` for the whole map):
//! - [`Conversation::from_json`] checks and prepares the messages as transformers does;
//! - [`ChatTokenizer::encode`] renders them with the [`ChatTemplate`] (byte-identical to
//!   `apply_chat_template`), finds each trained assistant turn's span (the `spans` module), tokenizes the
//!   rendering once with the [`TextTokenizer`] and maps the spans to a mask of trained tokens;
//! - [`BatchEncoder`] does that for many conversations on worker threads;
//! - [`Packer`] (or [`pack`]) places the encoded samples best-fit into fixed-length rows.
//!
//! Pure Rust: the Python binding lives in `rust/python` and only converts.
//!
//! ```
//! use turnpack_core::{ChatTemplate, ChatTokenizer, Conversation, EncodeOptions, TextTokenizer};
//! use turnpack_core::tiktoken;
//!
//! // A byte-level tokenizer: every byte its own token, plus two special tokens.
//! let ranks: Vec<(Vec<u8>, u32)> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
//! let specials = [("<s>".to_string(), 256), ("</s>".to_string(), 257)];
//! let tokenizer = TextTokenizer::new(tiktoken::tokenizer_from_ranks(&ranks, r"\S+|\s+", &specials)?);
//! let template = ChatTemplate::new(
//!     "{% for m in messages %}<s>{{ m.role }}: {{ m.content }}</s>{% endfor %}\
//!      {% if add_generation_prompt %}<s>assistant: {% endif %}",
//! )?;
//! let tok = ChatTokenizer::new(tokenizer, Some(template), Vec::new());
//! let conv = Conversation::from_json(&serde_json::json!([
//!     {"role": "user", "content": "hi"},
//!     {"role": "assistant", "content": "hello"},
//! ]))?;
//! let enc = tok.encode(&conv, &().into(), &Vec::new(), &EncodeOptions::default())?;
//! // trained: the answer after the generation prompt, and the end-of-turn token
//! let trained: String = enc.offsets.iter().zip(&enc.mask)
//!     .filter(|(_, &m)| m)
//!     .map(|(&(a, b), _)| &enc.text[a..b])
//!     .collect();
//! assert_eq!(trained, "hello</s>");
//! # Ok::<(), turnpack_core::Error>(())
//! ```
#![warn(missing_docs)]

mod batch;
mod chat_tokenizer;
mod error;
mod history;
mod model_dir;
mod options;
mod pack;
mod spans;
mod template;
mod tokenizer;

pub use batch::{default_threads, BatchEncoder, BatchSample};
pub use chat_tokenizer::{ChatTokenizer, Encoded};
pub use error::{guarded, Error, Result};
pub use history::{Branch, Rewrite, RewriteTraining};
pub use model_dir::{TokenizerConfig, SPECIAL_TOKEN_KEYS};
pub use options::{Boundary, EncodeOptions, Eot, History, Method, SpanSource, Start, Supervise};
pub use pack::{
    pack, Admission, DocRole, DropReason, Overflow, PackOptions, PackStats, Packed, PackedRows,
    Packer, Sample, TreeBranch, DEFAULT_BUFFER, DEFAULT_MAX_OPEN_ROWS, IGNORE_INDEX, MIN_DOC_LEN,
};
pub use template::{
    context as template_context, from_json, string_vars, ChatTemplate, Conversation, Message,
    Rendered, Vars, KNOWN_ROLES,
};
pub use tokenizer::{tiktoken, Backend, CharIndex, TextTokenizer, Tokens};

/// The span-finding pieces, for the crate's own benchmarks (`benches/encode.rs`), which time them
/// one by one. Not part of the API: no stability promised.
#[doc(hidden)]
pub mod internals {
    pub use crate::spans::diff::{diff, Blanked};
    pub use crate::spans::layout::marker;
    pub use crate::spans::marked::compress;
    pub use crate::spans::mask::tokens_overlapping;
    pub use crate::spans::render::blank_message;
}
