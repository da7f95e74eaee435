//! What the store and its timelines share: options, caches, the write-ahead log, local I/O,
//! object storage, and the channels to the store's background threads.
//!
//! It lives below the store, which builds it, so that timelines name it without reaching back
//! up into the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use parking_lot::Mutex;

use super::TimelineInner;
use crate::error::{Error, ErrorKind, Result};
use crate::format::Catalog;
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
    pub(crate) bg_error: Mutex<Option<String>>,
    /// Local file I/O, and the poison flag a failed fsync raises.
    pub(crate) io: Io,
    /// Object storage, if configured.
    pub(crate) remote: Option<Arc<RemoteCtx>>,
}

impl Env {
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

    /// Tells the uploader that the catalog changed.
    pub(crate) fn catalog_changed(&self, catalog: &Catalog) {
        if let Some(r) = &self.remote {
            r.mark_catalog(catalog.encode());
        }
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

    /// Asks the background thread to look for compaction and GC work now.
    pub(crate) fn kick_background(&self) {
        if let Some(tx) = &*self.bg_tx.lock() {
            let _ = tx.send(());
        }
    }
}
