//! What the store and its timelines share: options, caches, the write-ahead log, local I/O,
//! object storage, and the channels to the store's background threads.
//!
//! It lives below the store, which builds it, so that timelines name it without reaching back
//! up into the store.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;

use super::TimelineInner;
use crate::error::{Error, ErrorKind, Result};
use crate::io::Io;
use crate::layer::BlockCache;
use crate::options::StoreOptions;
use crate::remote::RemoteCtx;
use crate::wal::Wal;

/// What the store and its timelines share.
pub(crate) struct Env {
    pub(crate) options: StoreOptions,
    pub(crate) cache: Arc<BlockCache>,
    /// The write-ahead log, unless turned off.
    pub(crate) wal: Option<Arc<Wal>>,
    pub(crate) flush_tx: Mutex<Option<mpsc::Sender<Arc<TimelineInner>>>>,
    pub(crate) bg_tx: Mutex<Option<mpsc::Sender<()>>>,
    pub(crate) closed: AtomicBool,
    /// A secondary replaced this read-only store by a newer one: it applies nothing more, so
    /// a read waiting for an LSN would wait in vain.
    pub(crate) superseded: AtomicBool,
    /// The last failure of background compaction or GC (they retry on their next run).
    pub(crate) bg_error: Mutex<Option<Error>>,
    /// Background passes started, and the number of the last one finished: a pass that starts
    /// after a kick has a number above what `started` said at the kick.
    pub(crate) bg_started: std::sync::atomic::AtomicU64,
    pub(crate) bg_done: tokio::sync::watch::Sender<u64>,
    /// Local file I/O, and the poison flag a failed fsync raises.
    pub(crate) io: Io,
    /// Object storage, if configured.
    pub(crate) remote: Option<Arc<RemoteCtx>>,
    /// The store's own runtime (see [`StoreRuntime`]): uploads, downloads, timers and the
    /// blocking work of async calls run here, never on the caller's executor.
    pub(crate) rt: tokio::runtime::Handle,
    /// The handles of the hot paths' metrics, registered at open.
    pub(crate) metrics: crate::metrics::StoreMetrics,
}

impl Env {
    /// Fails with [`ErrorKind::ReadOnly`] when the store was opened read-only; `what` names
    /// the refused call.
    pub(crate) fn check_writable(&self, what: &str) -> Result<()> {
        if self.options.read_only {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                format!(
                    "{what}: the store in {} was opened read-only",
                    self.options.path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Fails if the store is closed or poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(p) = self.io.poisoned() {
            return Err(Error::new(
                ErrorKind::Poisoned,
                format!("store is poisoned and must be reopened: {p}"),
            ));
        }
        if let Some(r) = &self.remote
            && r.is_fenced()
        {
            return Err(crate::remote::fenced_error(r.generation));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "store is closed"));
        }
        Ok(())
    }

    /// Marks the store unusable after a failure that leaves its state uncertain.
    pub(crate) fn poison(&self, e: &Error) {
        self.io.poison(e.to_string());
    }

    pub(crate) fn request_flush(&self, tl: Arc<TimelineInner>) {
        if let Some(tx) = &*self.flush_tx.lock() {
            let _ = tx.send(tl);
        }
    }

    /// Runs `f` (file I/O, fsyncs, waits on locks) on the store's blocking threads and waits
    /// for it without blocking the caller's executor, whatever executor that is.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        joined(what, self.rt.spawn_blocking(f).await)
    }

    /// Runs the future `f` on the store's runtime (object-storage requests need its reactor)
    /// and waits for it from any executor.
    pub(crate) async fn on_runtime<T: Send + 'static>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        joined(what, self.rt.spawn(f).await)
    }

    /// A timeout on the store's timer, so that it can be awaited on any executor.
    pub(crate) fn timeout<F: Future>(&self, d: Duration, f: F) -> tokio::time::Timeout<F> {
        let _on_store_timer = self.rt.enter();
        tokio::time::timeout(d, f)
    }

    /// Drives `f` to completion on the calling thread, with the store's runtime as its context
    /// (timers, object storage). For the synchronous API: the caller must not be inside an
    /// async task, whose executor this would block.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        let _context = self.rt.enter();
        futures::executor::block_on(f)
    }

    /// Asks the background thread to look for compaction and GC work now.
    pub(crate) fn kick_background(&self) {
        if let Some(tx) = &*self.bg_tx.lock() {
            let _ = tx.send(());
        }
    }
}

fn joined<T>(what: &str, r: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(Error::new(
            ErrorKind::Io,
            format!(
                "{what}: the task panicked: {}",
                crate::error::panic_message(e.into_panic().as_ref())
            ),
        )),
        Err(_) => Err(Error::new(
            ErrorKind::Closed,
            format!("{what}: the store closed before the task ran"),
        )),
    }
}

/// The runtime a store owns: a small multi-thread tokio runtime started at open and shut down
/// at close or drop. It serves uploads, downloads, timers and the blocking halves of async
/// calls, so the store never depends on a caller's executor being alive or driven.
pub(crate) struct StoreRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl StoreRuntime {
    /// Starts the runtime's threads (`stratakv-io`).
    pub(crate) fn start() -> Result<StoreRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(64)
            .thread_name("stratakv-io")
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, format!("starting the store's runtime: {e}")))?;
        Ok(StoreRuntime { rt: Some(rt) })
    }

    /// A handle to spawn on.
    pub(crate) fn handle(&self) -> tokio::runtime::Handle {
        self.rt
            .as_ref()
            .expect("the runtime lives until the store drops")
            .handle()
            .clone()
    }

    /// Stops the runtime without waiting for its tasks; allowed from any context, async ones
    /// included.
    pub(crate) fn shutdown(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        self.shutdown();
    }
}
