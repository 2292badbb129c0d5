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
    /// A bug in turnpack: a panic, caught before it reaches the caller.
    #[error("internal error (a bug in turnpack, please report it): {0}")]
    Internal(String),
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs `f`, turning a panic into [`Error::Internal`] so that one bad sample costs an error, not
/// the process (or a Python `PanicException`).
pub fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(Error::Internal(message))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let r: Result<()> = guarded(|| panic!("index {} out of range", 3));
        assert_eq!(r, Err(Error::Internal("index 3 out of range".into())));
        assert_eq!(guarded(|| Ok(1)), Ok(1));
    }
}
