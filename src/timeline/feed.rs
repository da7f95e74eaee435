//! The change feed: every committed write of a timeline from an LSN on, in LSN order, first
//! from its layers (history), then live as commits are published.
//!
//! The feed pulls: it reads the next window of history only when the subscriber has taken
//! what it read before, so a slow subscriber holds back nothing but itself (never the writer)
//! and nothing is buffered without bound. Each window is read from one snapshot of the
//! timeline's layers:
//!
//! - from the in-memory layers (the open one and frozen ones), by binary search on their
//!   versions in LSN order, at most [`FEED_BATCH`] versions a window;
//! - from delta layer files overlapping the window, each read through once; a window ends at
//!   the top of the lowest layer file overlapping it, so a window holds at most what one flush
//!   wrote, or, over compacted history, the versions of one compaction's LSN span.
//!
//! Image layers are not writes and are skipped. Versions at or below the GC cutoff may be gone
//! (layers under an image at the cutoff are removed), so the oldest LSN a feed can start from,
//! or reach while it reads history, is `gc_cutoff + 1`; below it the feed fails with
//! [`ErrorKind::BelowGcCutoff`] naming that LSN. A branch's feed holds its own writes only
//! (above its branch point).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::read::Local;
use super::{Timeline, TimelineInner};
use crate::error::{Error, ErrorKind, Result};
use crate::format::LayerKind;
use crate::lsn::Lsn;
use crate::value::Value;

/// Versions a feed takes from the in-memory layers per window.
pub const FEED_BATCH: usize = 16 * 1024;

/// How often a waiting feed looks whether the store closed or the timeline was deleted.
const LIVE_CHECK: Duration = Duration::from_millis(100);

/// One committed write, from a [`ChangeFeed`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangeRecord {
    /// The key written.
    pub key: Bytes,
    /// The LSN of the write.
    pub lsn: Lsn,
    /// What was written: an image, a delta record or a tombstone.
    pub value: Value,
}

/// A subscription to a timeline's writes from an LSN on; made by [`Timeline::subscribe`].
///
/// Records come in LSN order (writes at one LSN in key order). Replaying them, with a
/// `finish_write` after the last record of each LSN, into an empty timeline rebuilds every
/// read from the start LSN on.
pub struct ChangeFeed {
    tl: Arc<TimelineInner>,
    /// The lowest LSN not read yet.
    next: Lsn,
    buf: VecDeque<ChangeRecord>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("timeline", &self.tl.name())
            .field("next", &self.next)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Timeline {
    /// Subscribes to every write of this timeline at `from` or above, in LSN order: first
    /// those already published, then live ones as they are published.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use stratakv::{Lsn, Store, StoreOptions, Value};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(StoreOptions::new(dir.path())).await?;
    /// let main = store.create_timeline("main").await?;
    /// let mut w = main.writer()?;
    /// w.put(b"k", Lsn(0x10), Value::image("a"))?;
    /// w.finish_write(Lsn(0x10))?;
    /// let mut feed = main.subscribe(Lsn(1))?;
    /// assert_eq!(feed.next().await?.lsn, Lsn(0x10));
    /// w.put(b"k", Lsn(0x20), Value::Tombstone)?;
    /// w.finish_write(Lsn(0x20))?;
    /// let r = feed.next().await?;
    /// assert_eq!((r.lsn, r.value), (Lsn(0x20), Value::Tombstone));
    /// assert!(feed.try_next()?.is_none());
    /// store.close().await?;
    /// # Ok::<(), stratakv::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::BelowGcCutoff`] naming the oldest LSN still available when `from` is at or
    /// below the GC cutoff; [`ErrorKind::InvalidArgument`] for `from` of 0.
    pub fn subscribe(&self, from: Lsn) -> Result<ChangeFeed> {
        self.inner.check()?;
        if from == Lsn::ZERO {
            return Err(Error::invalid(format!(
                "subscribe to timeline {}: LSN 0 holds no writes; start at 0/1",
                self.name()
            )));
        }
        check_available(&self.inner, from)?;
        Ok(ChangeFeed {
            tl: self.inner.clone(),
            next: from,
            buf: VecDeque::new(),
        })
    }
}

/// Fails if the versions at `from` may be gone.
fn check_available(tl: &TimelineInner, from: Lsn) -> Result<()> {
    let cutoff = tl.gc_cutoff();
    if cutoff > Lsn::ZERO && from <= cutoff {
        return Err(Error::new(
            ErrorKind::BelowGcCutoff,
            format!(
                "change feed of timeline {}: LSN {from} is at or below the GC cutoff {cutoff}; the oldest LSN still available is {}",
                tl.name(),
                cutoff.next()
            ),
        ));
    }
    Ok(())
}

impl ChangeFeed {
    /// The next write; waits for one to be published when the feed has caught up.
    ///
    /// # Errors
    /// [`ErrorKind::BelowGcCutoff`] naming the oldest LSN still available when GC passed
    /// the feed's position; [`ErrorKind::Closed`] / [`ErrorKind::NotFound`] when the store
    /// closes or the timeline is deleted; read and download errors.
    pub async fn next(&mut self) -> Result<ChangeRecord> {
        loop {
            if let Some(r) = self.buf.pop_front() {
                return Ok(r);
            }
            if !self.fill().await? {
                self.wait().await?;
            }
        }
    }

    /// The next write if one is published, `None` when the feed has caught up; never waits
    /// for a commit (it may wait for a layer download).
    ///
    /// # Errors
    /// As [`next`](ChangeFeed::next).
    pub fn try_next(&mut self) -> Result<Option<ChangeRecord>> {
        if let Some(r) = self.buf.pop_front() {
            return Ok(Some(r));
        }
        let env = self.tl.env.clone();
        while self.buf.is_empty() {
            if !env.block_on(self.fill())? {
                return Ok(None);
            }
        }
        Ok(self.buf.pop_front())
    }

    /// [`next`](ChangeFeed::next) for a caller on its own thread.
    ///
    /// # Errors
    /// As [`next`](ChangeFeed::next).
    pub fn next_blocking(&mut self) -> Result<ChangeRecord> {
        let env = self.tl.env.clone();
        env.block_on(self.next())
    }

    /// The lowest LSN whose writes the feed has not handed out yet (those buffered aside).
    pub fn position(&self) -> Lsn {
        self.buf.front().map_or(self.next, |r| r.lsn)
    }

    /// Waits until a commit above what the feed read is published.
    async fn wait(&mut self) -> Result<()> {
        let mut rx = self.tl.lrl_tx.subscribe();
        // As in `wait_for_lsn`: the channel's value may be stale; `last_record_lsn` is not.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        loop {
            rx.borrow_and_update();
            if self.tl.last_record_lsn() >= self.next {
                return Ok(());
            }
            self.tl.check()?;
            let _ = self.tl.env.timeout(LIVE_CHECK, rx.changed()).await;
        }
    }

    /// Reads the next window of published writes into the buffer; `false` if there is none.
    async fn fill(&mut self) -> Result<bool> {
        let mut pinned = Vec::new();
        loop {
            self.tl.check()?;
            let lrl = self.tl.last_record_lsn();
            if self.next > lrl {
                return Ok(false);
            }
            match self.read_window(lrl)? {
                Local::Ready(()) => return Ok(true),
                Local::Missing(layer) => {
                    pinned.extend(self.tl.download_on_store(&layer).await?);
                }
                Local::Stale => {}
            }
        }
    }

    /// Reads the writes in `[next, hi]` for the largest `hi <= lrl` that keeps the window
    /// within one layer file's top and [`FEED_BATCH`] in-memory versions.
    fn read_window(&mut self, lrl: Lsn) -> Result<Local<()>> {
        // The snapshot before the cutoff: the snapshot's layers hold every version above it.
        let snap = self.tl.snapshot();
        check_available(&self.tl, self.next)?;
        let from = self.next;
        let mut hi = lrl;
        let files: Vec<_> = snap
            .map
            .layers()
            .iter()
            .filter(|l| l.kind() == LayerKind::Delta && l.lsn_range().end > from)
            .collect();
        for l in &files {
            if l.lsn_range().start <= hi {
                hi = hi.min(Lsn(l.lsn_range().end.0 - 1));
            }
        }
        let mems: Vec<_> = std::iter::once(&snap.open)
            .chain(snap.frozen.iter())
            .collect();
        for m in &mems {
            if m.start() <= hi
                && let Some(l) = m.nth_lsn_from(from, FEED_BATCH)
            {
                hi = hi.min(l);
            }
        }
        let mut out = Vec::new();
        for l in &files {
            if l.lsn_range().start > hi {
                continue;
            }
            let Some(file) = l.file() else {
                return Ok(Local::Missing((*l).clone()));
            };
            file.versions_between(from, hi, &mut out)?;
        }
        for m in &mems {
            if m.start() <= hi {
                m.versions_between(from, hi, &mut out);
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        self.buf.extend(
            out.into_iter()
                .map(|(key, lsn, value)| ChangeRecord { key, lsn, value }),
        );
        self.next = hi.next();
        Ok(Local::Ready(()))
    }
}
