//! Frees replaced layers off the threads that happen to drop them last. Whoever holds the last
//! reference to a layer a flush or compaction replaced — the writer, when a freeze replaces
//! the snapshot that held it; the flush thread; a reader's snapshot — would otherwise empty
//! the layer file's cached blocks (thousands of them) or unmap a frozen layer's memory right
//! there: measured under ingest (the peers harness, one commit per put), up to 0.8 ms on the
//! writer's commit path and 8 ms on the flush thread. Such drops are handed to one thread of
//! the process instead, which ends once it has had nothing to do for [`IDLE`] (a process that
//! has closed its stores keeps no thread of ours) and starts again when needed.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use parking_lot::Mutex;

type Job = Box<dyn FnOnce() + Send>;

/// How long the reaper thread waits for work before it ends.
#[cfg(not(test))]
const IDLE: Duration = Duration::from_secs(10);
#[cfg(test)]
const IDLE: Duration = Duration::from_millis(100);

/// The running reaper thread's queue, if one runs. Jobs are sent under this lock, and the
/// thread ends only after finding its queue empty under it, so no job is left unrun.
static QUEUE: Mutex<Option<Sender<Job>>> = Mutex::new(None);

/// Runs `job` on the reaper thread (`stratakv-reaper`, started if none runs), in the order
/// handed over; where no thread can be started, runs it now.
pub(crate) fn later(job: impl FnOnce() + Send + 'static) {
    let job: Job = Box::new(job);
    let mut queue = QUEUE.lock();
    let job = match queue.as_ref() {
        Some(tx) => match tx.send(job) {
            Ok(()) => return,
            // The thread ended without clearing the queue: start another.
            Err(e) => e.0,
        },
        None => job,
    };
    let (tx, rx) = channel::<Job>();
    let started = std::thread::Builder::new()
        .name("stratakv-reaper".into())
        .spawn(move || run(&rx));
    match started {
        Ok(_) => {
            tx.send(job)
                .expect("the reaper holds its receiver until it ends");
            *queue = Some(tx);
        }
        Err(_) => {
            drop(queue);
            job();
        }
    }
}

/// Runs a job; a panic in one (a drop) is not allowed to end the thread and drop the jobs
/// queued behind it.
fn run_one(job: Job) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
}

/// The reaper thread: runs jobs until it has waited [`IDLE`] for one and none came.
fn run(rx: &Receiver<Job>) {
    loop {
        match rx.recv_timeout(IDLE) {
            Ok(job) => run_one(job),
            Err(RecvTimeoutError::Timeout) => {
                let mut queue = QUEUE.lock();
                match rx.try_recv() {
                    Ok(job) => {
                        drop(queue);
                        run_one(job);
                    }
                    Err(_) => {
                        *queue = None;
                        return;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Jobs run, in order, on a thread other than the caller's; the thread ends once idle and
    /// a new one runs the next job.
    #[test]
    fn jobs_run_in_order_elsewhere_and_the_thread_ends_when_idle() {
        for round in 0..2 {
            let (tx, rx) = std::sync::mpsc::channel();
            let me = std::thread::current().id();
            for i in 0..100 {
                let tx = tx.clone();
                super::later(move || tx.send((i, std::thread::current().id())).unwrap());
            }
            for i in 0..100 {
                let (j, id) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
                assert_eq!(j, i, "round {round}");
                assert_ne!(id, me);
            }
            // Other tests in this process may keep it busy for a while.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while super::QUEUE.lock().is_some() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the reaper did not end when idle"
                );
                std::thread::sleep(super::IDLE / 4);
            }
        }
    }
}
