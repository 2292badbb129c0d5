//! How many threads `encode_batch` uses. Its workers are scoped threads of each call (no pool that a
//! `fork()` could copy without its threads, and no shared queue one call could block another on).

/// Threads when the caller does not say: `TURNPACK_NUM_THREADS`, else all cores.
pub fn default_threads() -> usize {
    std::env::var("TURNPACK_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}
