//! One error type for the core; the binding maps each variant to a typed Python exception.

/// Everything the core can fail with. Messages are written for the person who fed the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The chat template failed to compile or raised while rendering, or its output cannot be
    /// turned into consistent spans.
    #[error("{0}")]
    Template(String),
    /// The conversation itself is malformed (not a list of messages, bad role, bad content).
    #[error("{0}")]
    Conversation(String),
    /// The tokenizer could not be loaded or failed to encode.
    #[error("{0}")]
    Tokenizer(String),
    /// A file could not be read.
    #[error("{0}")]
    Io(String),
    /// An argument is out of range or inconsistent.
    #[error("{0}")]
    InvalidArgument(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
