//! The gate between a timeline's background jobs and the user operations that end it.
//!
//! Every job that writes in the timeline's directory (flush, compaction, image creation, GC,
//! detach, a layer download) enters the gate for as long as it writes; `delete_timeline` closes
//! the gate, which refuses new jobs and waits for those inside to leave, and only then marks the
//! timeline deleted and removes its directory. So no job ever writes into a directory that is
//! going away, and a job that finds the gate closed stops without an error of its own.
//!
//! A counter rather than a read-write lock: a job may enter again from inside (GC rebuilding a
//! value downloads a layer), which a fair read-write lock would deadlock on while delete waits.

use parking_lot::{Condvar, Mutex};

/// The gate: how many jobs are inside, and whether it is closed.
#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    left: Condvar,
}

#[derive(Default)]
struct GateState {
    inside: usize,
    closed: bool,
}

/// A job inside the gate; leaving is dropping it.
pub(crate) struct GateGuard<'a> {
    gate: &'a Gate,
}

impl Gate {
    /// Enters the gate, or `None` once it is closed.
    pub(crate) fn enter(&self) -> Option<GateGuard<'_>> {
        let mut s = self.state.lock();
        if s.closed {
            return None;
        }
        s.inside += 1;
        Some(GateGuard { gate: self })
    }

    /// Closes the gate and waits until every job inside has left. The caller must not be
    /// inside itself.
    pub(crate) fn close(&self) {
        let mut s = self.state.lock();
        s.closed = true;
        while s.inside > 0 {
            self.left.wait(&mut s);
        }
    }

    /// Whether a delete has closed the gate (it may not have marked the timeline deleted yet).
    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Opens a closed gate again (a delete that failed before it changed anything).
    pub(crate) fn reopen(&self) {
        self.state.lock().closed = false;
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.state.lock();
        s.inside -= 1;
        if s.inside == 0 {
            self.gate.left.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn close_waits_for_the_jobs_inside_and_refuses_new_ones() {
        let gate = Arc::new(Gate::default());
        let done = Arc::new(AtomicBool::new(false));
        let g = gate.clone();
        let d = done.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let job = std::thread::spawn(move || {
            let _inside = g.enter().expect("open gate");
            let _again = g.enter().expect("a job may enter again from inside");
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            d.store(true, Ordering::SeqCst);
        });
        rx.recv().unwrap();
        gate.close();
        assert!(
            done.load(Ordering::SeqCst),
            "close returned with a job inside"
        );
        assert!(gate.enter().is_none(), "a closed gate let a job in");
        job.join().unwrap();
        gate.reopen();
        assert!(gate.enter().is_some());
    }
}
