//! Worker threads for batch encoding (the binding's `encode_batch`), kept between calls so that their
//! thread-local caches (BPE pieces, regex states) stay warm.
//!
//! A task always gets a thread of its own: an idle one, or a new one. It never queues behind
//! another task, so a call whose workers wait for samples (a slow Python source, or one that calls
//! `encode_batch` itself) cannot hold up another call. After `fork()` the child has none of the
//! parent's threads: the idle list is keyed by pid and starts empty in a new process.

use std::sync::mpsc;
use std::sync::Mutex;

pub type Task = Box<dyn FnOnce() + Send + 'static>;

/// Idle workers, each waiting on its channel, and the process they belong to.
static IDLE: Mutex<(u32, Vec<mpsc::Sender<Task>>)> = Mutex::new((0, Vec::new()));

/// Idle workers kept beyond this many exit (enough for a few concurrent calls on every core).
fn max_idle() -> usize {
    4 * default_threads()
}

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

fn idle() -> std::sync::MutexGuard<'static, (u32, Vec<mpsc::Sender<Task>>)> {
    let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if idle.0 != pid {
        // inherited across fork: no thread listens on these channels here
        std::mem::forget(std::mem::take(&mut idle.1));
        idle.0 = pid;
    }
    idle
}

/// Runs `task` on an idle worker thread, or on a new one.
pub fn run(task: Task) -> Result<(), String> {
    let mut task = task;
    loop {
        let Some(worker) = idle().1.pop() else {
            return spawn(task);
        };
        match worker.send(task) {
            Ok(()) => return Ok(()),
            // that worker is gone: try the next
            Err(mpsc::SendError(back)) => task = back,
        }
    }
}

fn spawn(first: Task) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<Task>();
    std::thread::Builder::new()
        .name("turnpack-worker".into())
        .spawn(move || {
            let mut task = first;
            loop {
                task();
                {
                    let mut idle = idle();
                    if idle.1.len() >= max_idle() {
                        return;
                    }
                    idle.1.push(tx.clone());
                }
                match rx.recv() {
                    Ok(next) => task = next,
                    Err(_) => return,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start a worker thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_never_wait_for_each_other() {
        // the first task blocks until the second has run: with a shared queue this would hang
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<&str>();
        let d1 = done_tx.clone();
        run(Box::new(move || {
            go_rx.recv().unwrap();
            d1.send("first").unwrap();
        }))
        .unwrap();
        run(Box::new(move || {
            go_tx.send(()).unwrap();
            done_tx.send("second").unwrap();
        }))
        .unwrap();
        let mut got: Vec<&str> = done_rx.iter().take(2).collect();
        got.sort();
        assert_eq!(got, ["first", "second"]);
    }
}
