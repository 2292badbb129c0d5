//! turnpack core: render Hugging Face chat templates, find what each assistant turn must learn,
//! tokenize once, and pack the results into fixed-length training rows.
//!
//! Pure Rust; the Python binding lives in `rust/python`.

pub mod bpe;
pub mod compressed;
pub mod conversation;
pub mod encode;
pub mod error;
pub mod layout;
pub mod model_dir;
pub mod pack;
pub mod prompt_start;
pub mod spans;
pub mod template;
pub mod tiktoken;
pub mod tokenizer;
pub mod workers;

pub use error::{Error, Result};
