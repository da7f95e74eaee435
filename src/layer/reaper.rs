//! Frees replaced layers off the threads that happen to drop them last. Whoever holds the last
//! reference to a layer a flush or compaction replaced — the writer, when a freeze replaces
//! the snapshot that held it; the flush thread; a reader's snapshot — would otherwise empty
//! the layer file's cached blocks (thousands of them) or unmap a frozen layer's memory right
//! there: measured under ingest (the peers harness, one commit per put), up to 0.8 ms on the
//! writer's commit path and 8 ms on the flush thread. Such drops are handed to one thread of
//! the process instead.

use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

type Job = Box<dyn FnOnce() + Send>;

/// The reaper thread's queue; `None` if the thread could not be started (work then runs where
/// it is handed over, as before).
static QUEUE: OnceLock<Option<Sender<Job>>> = OnceLock::new();

/// Runs `job` on the reaper thread (`stratakv-reaper`, started on first use), in the order
/// handed over; where there is no such thread, runs it now.
pub(crate) fn later(job: impl FnOnce() + Send + 'static) {
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("stratakv-reaper".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok()
            .map(|_| tx)
    });
    let job: Job = Box::new(job);
    match queue {
        Some(tx) => {
            if let Err(e) = tx.send(job) {
                (e.0)();
            }
        }
        None => job(),
    }
}

#[cfg(test)]
mod tests {
    /// Jobs run, in order, on a thread other than the caller's.
    #[test]
    fn jobs_run_in_order_elsewhere() {
        let (tx, rx) = std::sync::mpsc::channel();
        let me = std::thread::current().id();
        for i in 0..100 {
            let tx = tx.clone();
            super::later(move || tx.send((i, std::thread::current().id())).unwrap());
        }
        for i in 0..100 {
            let (j, id) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
            assert_eq!(j, i);
            assert_ne!(id, me);
        }
    }
}
