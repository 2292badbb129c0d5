//! A rayon pool per process. A pool built before `fork()` has no threads in the child, and its
//! first parallel call would hang forever, so the pool is keyed by pid and rebuilt after a fork.

use rayon::ThreadPool;
use std::sync::{Arc, Mutex};

static POOL: Mutex<Option<(u32, usize, Arc<ThreadPool>)>> = Mutex::new(None);

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

pub fn pool(threads: usize) -> Result<Arc<ThreadPool>, String> {
    let pid = std::process::id();
    let mut guard = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((p, n, pool)) = guard.as_ref() {
        if *p == pid && *n == threads {
            return Ok(pool.clone());
        }
    }
    if let Some((p, _, stale)) = guard.take() {
        if p != pid {
            // Inherited across fork: its threads do not exist here, so never drop (join) it.
            std::mem::forget(stale);
        }
    }
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("turnpack-{i}"))
            .build()
            .map_err(|e| format!("cannot start {threads} worker threads: {e}"))?,
    );
    *guard = Some((pid, threads, pool.clone()));
    Ok(pool)
}
