//! Worker threads for batch encoding (the binding's `encode_batch`), kept between calls so that their
//! thread-local caches (BPE pieces, regex states) stay warm.
//!
//! A task always gets a thread of its own: an idle one, or a new one. It never queues behind
//! another task, so a call whose workers wait for samples (a slow Python source, or one that calls
//! `encode_batch` itself) cannot hold up another call. After `fork()` the child has none of the
//! parent's threads: the idle list is keyed by pid and starts empty in a new process.

use std::sync::{mpsc, Mutex, OnceLock};

pub type Task = Box<dyn FnOnce() + Send + 'static>;

/// A task and where its worker says that it is idle again (or gone).
struct Job {
    task: Task,
    idle_again: mpsc::Sender<()>,
}

/// Idle workers, each waiting on its channel, and the process they belong to.
static IDLE: Mutex<(u32, Vec<mpsc::Sender<Job>>)> = Mutex::new((0, Vec::new()));

/// Idle workers kept beyond this many exit (enough for a few concurrent calls on every core).
fn max_idle() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| 4 * default_threads())
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

fn idle() -> std::sync::MutexGuard<'static, (u32, Vec<mpsc::Sender<Job>>)> {
    let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if idle.0 != pid {
        // inherited across fork: no thread listens on these channels here
        std::mem::forget(std::mem::take(&mut idle.1));
        idle.0 = pid;
    }
    idle
}

/// Runs `task` on an idle worker thread, or on a new one. The receiver hears (or sees closed) once
/// that worker is back on the idle list or gone: a caller that waits for it before returning leaves
/// no worker holding the list's lock, so a `fork()` right after the call cannot copy it locked, and
/// the next call finds its workers idle instead of starting more.
pub fn run(task: Task) -> Result<mpsc::Receiver<()>, String> {
    let (idle_again, done) = mpsc::channel();
    let mut job = Job { task, idle_again };
    loop {
        let Some(worker) = idle().1.pop() else {
            return spawn(job).map(|()| done);
        };
        match worker.send(job) {
            Ok(()) => return Ok(done),
            // that worker is gone: try the next
            Err(mpsc::SendError(back)) => job = back,
        }
    }
}

fn spawn(first: Job) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("turnpack-worker".into())
        .spawn(move || {
            let mut job = first;
            loop {
                (job.task)();
                let keep = {
                    let mut idle = idle();
                    let keep = idle.1.len() < max_idle();
                    if keep {
                        idle.1.push(tx.clone());
                    }
                    keep
                };
                let _ = job.idle_again.send(());
                if !keep {
                    return;
                }
                match rx.recv() {
                    Ok(next) => job = next,
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

    #[test]
    fn a_finished_worker_is_idle_again_and_reused() {
        let idle_again = run(Box::new(|| {})).unwrap();
        idle_again.recv().unwrap();
        assert!(!idle().1.is_empty());
        let (tx, rx) = mpsc::channel();
        let again = run(Box::new(move || tx.send(7).unwrap())).unwrap();
        assert_eq!(rx.recv(), Ok(7));
        assert_eq!(again.recv(), Ok(()));
    }

    #[test]
    fn a_task_that_panics_does_not_leave_its_caller_waiting() {
        let idle_again = run(Box::new(|| panic!("a bug"))).unwrap();
        // the worker is gone: its sender is dropped, so this returns instead of blocking
        assert!(idle_again.recv().is_err());
    }
}
