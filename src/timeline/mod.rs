//! Timelines: the handle, the writer, the read path and the layer work behind them.
//!
//! # Background work beside user operations
//!
//! Background jobs (flush, compaction, image creation, GC and gc-compaction, uploads,
//! eviction, downloads) run beside user calls on the same timeline. What orders each pair:
//!
//! | job | user operation | ordered by |
//! |---|---|---|
//! | flush, compaction, image creation, GC, a download's local write | `delete_timeline` | the [gate](gate) of the timeline whose directory the job writes (for a download, the reader's or the ancestor's the read fell through to): each job writes inside it; delete closes it, waits for the jobs inside, then marks the timeline deleted and removes its directory; a job refused at the gate stops quietly |
//! | compaction, image creation, GC | `detach_ancestor`, each other | `layer_ops`, one at a time, inside the gate |
//! | GC moving the cutoff and trimming the time index | `branch`, `restore`, `lease` | the lease lock: GC moves the cutoff and trims under it; a branch checks the cutoff, registers its branch point and copies its commit time under it ([`pin_branch_point`](TimelineInner::pin_branch_point)); a lease checks and records under it |
//! | GC removing layers | reads | the snapshot is taken before the cutoff is read ([`snapshot_at`](TimelineInner::snapshot_at)); a read keeps its snapshot's layers alive |
//! | flush, compaction, GC publishing layers | reads | readers clone an immutable snapshot and never wait |
//! | uploads | `delete_timeline` | the uploader skips a deleted timeline; its objects are deleted in a later pass, after the catalog without it |
//! | eviction | reads | a layer a reader holds is not evicted (the layer's own state) |
//! | any job | `close`, drop of the store | close flushes, then stops the threads and joins them; the uploader is stopped |
//! | flush | the writer's backpressure, `flush()` | the `flushed` condvar and the `disk_consistent_lsn` watch; both give up with [`ErrorKind::NotFound`] once the timeline is deleted |
//! | a parent's deletion | `branch` | the store's state lock: delete checks for children and branch registers one under it |
//!
//! A user operation waits for or cancels background work; it never fails because of it. The
//! store is poisoned only where its state is uncertain: a failed fsync, a manifest write whose
//! outcome is unknown (`publish`), a failed or panicking flush (the flusher thread decides);
//! never for a race with a user operation. The background loop records compaction and GC
//! failures in `Store::background_error` and retries.

mod compaction;
mod diff;
mod env;
mod feed;
mod flush;
mod gate;
mod gc;
mod history;
mod image;
mod merge;
mod read;
mod residence;
mod time;
pub(crate) mod time_index;
mod writer;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::watch;

use crate::error::{Error, ErrorKind, Result};
use crate::format::{LayerDesc, Manifest};
use crate::id::TimelineId;
use crate::layer::{InMemoryLayer, Layer, LayerMap};
use crate::lsn::Lsn;

pub(crate) use env::{Env, StoreRuntime};
pub(crate) use gate::GateGuard;

pub use compaction::CompactionReport;
pub use diff::{Diff, DiffEntry};
pub use feed::{ChangeFeed, ChangeRecord};
pub use gc::GcReport;
pub use history::KeyVersion;
pub use merge::{MergeConflict, MergeReport, Resolution};
pub use read::ReadTrace;
pub use residence::LayerStatus;
pub use writer::TimelineWriter;

/// What readers see: the open and frozen in-memory layers and the layer files, published whole.
pub(crate) struct Snapshot {
    /// The ancestor and branch point reads fall through to; published with the layers, so a
    /// read never sees a detached timeline without the image that replaced its ancestor.
    pub(crate) ancestor: Option<(Arc<TimelineInner>, Lsn)>,
    pub(crate) open: Arc<InMemoryLayer>,
    /// Newest first.
    pub(crate) frozen: Vec<Arc<InMemoryLayer>>,
    pub(crate) map: LayerMap,
}

/// The writer's state; the writer and `flush` take it to put and to freeze.
pub(crate) struct WriteState {
    pub(crate) open: Arc<InMemoryLayer>,
    /// Puts not yet published, encoded for the write-ahead log, which takes them with their
    /// commit; and how many.
    pub(crate) wal_puts: Vec<u8>,
    pub(crate) wal_put_count: u32,
    /// Scratch for encoding a commit record once for both the local and the shipped WAL.
    pub(crate) wal_record: Vec<u8>,
    /// The LSN of the newest put, published or not.
    pub(crate) last_put: Lsn,
}

pub(crate) struct TimelineInner {
    /// This timeline, for handing to the uploader.
    pub(crate) me: Weak<TimelineInner>,
    /// The newest LSN whose writes are all in object storage.
    pub(crate) remote_consistent_lsn: AtomicU64,
    pub(crate) id: TimelineId,
    name: RwLock<String>,
    /// The timeline this one branched from, and the LSN it branched at.
    /// Cleared by `detach_ancestor`.
    pub(crate) ancestor: RwLock<Option<(Arc<TimelineInner>, Lsn)>>,
    /// Timelines branched from this one, and their branch LSNs: GC keeps what they read.
    pub(crate) children: Mutex<BTreeMap<TimelineId, Lsn>>,
    /// Set when the timeline is deleted; every later call on a handle fails.
    pub(crate) deleted: AtomicBool,
    /// Set by delete and detach before the timeline leaves its ancestor's children: from then
    /// on the ancestor's GC no longer keeps its branch point, and a read that fell through to
    /// the ancestor must retry (see `read.rs`).
    pub(crate) unbranched: AtomicBool,
    /// How often a restore renamed the timeline away from its name: a writer taken under an
    /// older name refuses to write.
    pub(crate) renames: AtomicU64,
    /// Entered by every job that writes in the timeline's directory; delete closes it and
    /// waits for them (see [`gate`]).
    pub(crate) gate: gate::Gate,
    /// Held by compaction, GC, image creation and detach, one at a time (inside the gate);
    /// never by readers or flush.
    pub(crate) layer_ops: Mutex<()>,
    /// Bytes of delta records needing redo that compaction merged above the newest image
    /// layer; `None` until compaction writes an image after the timeline was opened with
    /// layers, whose records are not known (see
    /// [`StoreOptions::image_threshold_bytes`](crate::StoreOptions::image_threshold_bytes)).
    /// Under `layer_ops`.
    pub(crate) redo_above_image: Mutex<Option<u64>>,
    /// Delta layers GC found not worth rewriting, and the cutoff it looked at them with.
    pub(crate) gc_checked: Mutex<std::collections::HashMap<String, Lsn>>,
    /// LSN leases: `(lsn, expiry)`. GC's cutoff does not pass an unexpired lease.
    pub(crate) leases: Mutex<Vec<(Lsn, SystemTime)>>,
    /// The `lsn ↔ commit time` index.
    pub(crate) time: Mutex<time::TimeState>,
    /// Held while the time index file is appended to or rewritten (the `time` lock only while
    /// entries are taken or marked persisted, so a commit never waits for that fsync).
    pub(crate) time_file: Mutex<()>,
    pub(crate) dir: PathBuf,
    pub(crate) env: Arc<Env>,
    /// What reads read. Replaced whole, under `snapshot_change`; loaded without a lock.
    pub(crate) snapshot: ArcSwap<Snapshot>,
    /// Held while the snapshot is read, changed and replaced (a freeze, a published change), so
    /// that two changes never start from the same snapshot.
    pub(crate) snapshot_change: Mutex<()>,
    pub(crate) write: Mutex<WriteState>,
    pub(crate) last_record_lsn: AtomicU64,
    pub(crate) lrl_tx: watch::Sender<Lsn>,
    pub(crate) disk_consistent_lsn: AtomicU64,
    pub(crate) dcl_tx: watch::Sender<Lsn>,
    pub(crate) gc_cutoff: AtomicU64,
    pub(crate) writer_taken: AtomicBool,
    /// The persisted manifest; held while it is changed and written.
    pub(crate) manifest: Mutex<Manifest>,
    /// Signalled whenever a frozen layer is flushed, for a writer waiting on backpressure.
    pub(crate) flushed: (Mutex<()>, Condvar),
    /// The watermark gauges (see [`crate::metrics`]).
    pub(crate) gauges: crate::metrics::TimelineGauges,
}

impl TimelineInner {
    /// Builds a timeline from its manifest and the opened layer files it names.
    pub(crate) fn new(
        name: String,
        dir: PathBuf,
        env: Arc<Env>,
        manifest: Manifest,
        layers: Vec<Arc<Layer>>,
        ancestor: Option<Arc<TimelineInner>>,
    ) -> Arc<TimelineInner> {
        Arc::new_cyclic(|me| {
            TimelineInner::build(name, dir, env, manifest, layers, ancestor, me.clone())
        })
    }

    fn build(
        name: String,
        dir: PathBuf,
        env: Arc<Env>,
        manifest: Manifest,
        layers: Vec<Arc<Layer>>,
        ancestor: Option<Arc<TimelineInner>>,
        me: Weak<TimelineInner>,
    ) -> TimelineInner {
        let ancestor = ancestor.zip(manifest.ancestor.map(|(_, lsn)| lsn));
        let dcl = manifest.disk_consistent_lsn;
        let open = Arc::new(InMemoryLayer::new(dcl.next()));
        let gauges = crate::metrics::TimelineGauges::register(&manifest.timeline_id.to_string());
        gauges.gc_cutoff.set(manifest.gc_cutoff.0 as f64);
        TimelineInner {
            me,
            remote_consistent_lsn: AtomicU64::new(0),
            id: manifest.timeline_id,
            name: RwLock::new(name),
            ancestor: RwLock::new(ancestor.clone()),
            children: Mutex::new(BTreeMap::new()),
            deleted: AtomicBool::new(false),
            unbranched: AtomicBool::new(false),
            renames: AtomicU64::new(0),
            gate: gate::Gate::default(),
            layer_ops: Mutex::new(()),
            redo_above_image: Mutex::new(layers.is_empty().then_some(0)),
            gc_checked: Mutex::new(std::collections::HashMap::new()),
            leases: Mutex::new(Vec::new()),
            time: Mutex::new(time::TimeState::default()),
            time_file: Mutex::new(()),
            dir,
            env,
            snapshot_change: Mutex::new(()),
            snapshot: ArcSwap::from_pointee(Snapshot {
                ancestor,
                open: open.clone(),
                frozen: Vec::new(),
                map: LayerMap::new(layers),
            }),
            write: Mutex::new(WriteState {
                open,
                last_put: dcl,
                wal_puts: Vec::new(),
                wal_put_count: 0,
                wal_record: Vec::new(),
            }),
            last_record_lsn: AtomicU64::new(dcl.0),
            lrl_tx: watch::Sender::new(dcl),
            disk_consistent_lsn: AtomicU64::new(dcl.0),
            dcl_tx: watch::Sender::new(dcl),
            gc_cutoff: AtomicU64::new(manifest.gc_cutoff.0),
            writer_taken: AtomicBool::new(false),
            manifest: Mutex::new(manifest),
            flushed: (Mutex::new(()), Condvar::new()),
            gauges,
        }
        .with_gauges_set()
    }

    /// Sets the watermark gauges from the watermarks, for a timeline just built.
    fn with_gauges_set(self) -> TimelineInner {
        self.gauges
            .last_record_lsn
            .set(self.last_record_lsn().0 as f64);
        self.update_gauges();
        self
    }

    /// Sets the gauges of the watermarks that move with flushes and uploads: at the end of
    /// each. (`last_record_lsn`'s is set at each commit, `gc_cutoff`'s when GC moves it.)
    pub(crate) fn update_gauges(&self) {
        let g = &self.gauges;
        // Read under the lock: whoever sets last read the watermarks last.
        let _update = g.update.lock();
        let rcl = self.remote_consistent_lsn.load(Ordering::Acquire);
        g.disk_consistent_lsn
            .set(self.disk_consistent_lsn().0 as f64);
        g.remote_consistent_lsn.set(rcl as f64);
        if self.env.remote.is_some() {
            g.remote_lag
                .set(self.last_record_lsn().0.saturating_sub(rcl) as f64);
        }
    }

    /// The timeline's current name.
    pub(crate) fn name(&self) -> String {
        self.name.read().clone()
    }

    /// Gives the timeline a new name (a restore's backup name); writers taken before it fail
    /// from then on (see [`TimelineWriter`]).
    pub(crate) fn set_name(&self, name: String) {
        *self.name.write() = name;
        self.renames.fetch_add(1, Ordering::AcqRel);
    }

    /// Fails if the store is closed or poisoned, or this timeline was deleted.
    pub(crate) fn check(&self) -> Result<()> {
        self.env.check()?;
        if self.deleted.load(Ordering::Acquire) {
            return Err(self.deleted_error());
        }
        Ok(())
    }

    fn deleted_error(&self) -> Error {
        Error::new(
            ErrorKind::NotFound,
            format!("timeline {} was deleted", self.id),
        )
    }

    /// Enters the timeline's gate for a job that writes in its directory, then checks it as
    /// [`check`](Self::check) does.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] once a delete has closed the gate.
    pub(crate) fn enter_gate(&self) -> Result<GateGuard<'_>> {
        let guard = self.gate.enter().ok_or_else(|| self.deleted_error())?;
        self.check()?;
        Ok(guard)
    }

    pub(crate) fn last_record_lsn(&self) -> Lsn {
        Lsn(self.last_record_lsn.load(Ordering::Acquire))
    }

    pub(crate) fn disk_consistent_lsn(&self) -> Lsn {
        Lsn(self.disk_consistent_lsn.load(Ordering::Acquire))
    }

    /// What the uploader needs, taken together under the manifest lock: the manifest, the
    /// layers it names, and the commit times up to `disk_consistent_lsn`.
    fn upload_state(&self) -> (Manifest, Vec<Arc<Layer>>, Vec<(Lsn, u64)>) {
        let m = self.manifest.lock();
        let layers = self.snapshot().map.layers().to_vec();
        let dcl = m.disk_consistent_lsn;
        let times = self
            .time
            .lock()
            .index
            .to_vec()
            .into_iter()
            .filter(|(l, _)| *l <= dcl)
            .collect();
        (m.clone(), layers, times)
    }

    /// Whether object storage does not hold this timeline, or an ancestor, whole yet: layers
    /// found above its index at open, or a timeline not in the uploaded catalog. Until it does,
    /// a commit shipped in a WAL chunk is not safe: a node attaching would find the chunk
    /// without the commits below it.
    pub(crate) fn awaits_index(&self) -> bool {
        let Some(r) = &self.env.remote else {
            return false;
        };
        r.awaits_index(self.id)
            || self
                .ancestor
                .read()
                .as_ref()
                .is_some_and(|(a, _)| a.awaits_index())
    }

    /// Waits until object storage holds this timeline and its ancestors whole (see
    /// [`awaits_index`](Self::awaits_index)).
    ///
    /// # Errors
    /// An upload that failed after the call, `Fenced`, `Closed`.
    pub(crate) async fn wait_indexed(&self) -> Result<()> {
        let Some(r) = &self.env.remote else {
            return Ok(());
        };
        let mut chain = vec![self.id];
        let mut next = self.ancestor.read().as_ref().map(|(a, _)| a.clone());
        while let Some(a) = next {
            chain.push(a.id);
            next = a.ancestor.read().as_ref().map(|(a, _)| a.clone());
        }
        for id in chain {
            r.wait_indexed(id).await?;
        }
        Ok(())
    }

    pub(crate) fn gc_cutoff(&self) -> Lsn {
        Lsn(self.gc_cutoff.load(Ordering::Acquire))
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Waits until `lsn` is published, up to the configured timeout.
    pub(crate) async fn wait_for_lsn(&self, lsn: Lsn) -> Result<()> {
        if lsn <= self.last_record_lsn() {
            return Ok(());
        }
        let timeout = self.env.options.wait_lsn_timeout;
        let mut rx = self.lrl_tx.subscribe();
        // The writer sends only while someone is subscribed (see `publish_commit`): the
        // channel's value can be older than `last_record_lsn`, which is what counts.
        std::sync::atomic::fence(Ordering::SeqCst);
        let env = &self.env;
        let waited = env
            .timeout(timeout, async {
                loop {
                    rx.borrow_and_update();
                    if self.last_record_lsn() >= lsn {
                        return Ok(());
                    }
                    env.check()?;
                    if env.superseded.load(Ordering::Acquire) {
                        return Err(Error::new(
                            ErrorKind::Closed,
                            format!(
                                "timeline {}: LSN {lsn} will not be reached on this handle \
                                 (last_record_lsn {}): the secondary reloaded since it was taken; \
                                 take the timeline again from the secondary",
                                self.name(),
                                self.last_record_lsn()
                            ),
                        ));
                    }
                    if rx.changed().await.is_err() {
                        return Err(Error::new(
                            ErrorKind::Closed,
                            format!("timeline {} was dropped", self.name()),
                        ));
                    }
                }
            })
            .await;
        match waited {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::LsnTimeout,
                format!(
                    "timeline {}: LSN {lsn} not reached within {:?}; last_record_lsn is {}",
                    self.name(),
                    timeout,
                    self.last_record_lsn()
                ),
            )),
        }
    }

    /// The snapshot a read at `lsn` uses: waits for `lsn` if it is ahead, refuses it if it is
    /// below the cutoff.
    ///
    /// It also waits for every ancestor to publish what the read needs from it (see
    /// [`lagging_ancestor`](Self::lagging_ancestor)).
    pub(crate) async fn read_snapshot(&self, lsn: Lsn) -> Result<Arc<Snapshot>> {
        self.check()?;
        if lsn > self.last_record_lsn() {
            self.wait_for_lsn(lsn).await?;
        }
        loop {
            let snap = self.snapshot_at(lsn)?;
            match Self::lagging_ancestor(&snap, lsn) {
                None => return Ok(snap),
                Some((ancestor, needed)) => ancestor.wait_for_lsn(needed).await?,
            }
        }
    }

    /// The first ancestor of `snap` that has not published yet what a read at `lsn` falls
    /// through to it for (its branch point, or a lower one further down), with that LSN.
    ///
    /// Never one in a writable store, where a branch point is at or below the parent's
    /// `last_record_lsn` when the branch is made. A secondary applies each timeline's WAL
    /// records as it reads them, so a branch it picked up may be ahead of its parent there for
    /// a moment; a read answering from the parent's older state would be wrong data.
    pub(crate) fn lagging_ancestor(snap: &Snapshot, lsn: Lsn) -> Option<(Arc<Self>, Lsn)> {
        let (mut ancestor, mut needed) = snap.ancestor.clone()?;
        needed = needed.min(lsn);
        loop {
            if ancestor.last_record_lsn() < needed {
                return Some((ancestor, needed));
            }
            let (next, at) = ancestor.snapshot().ancestor.clone()?;
            (ancestor, needed) = (next, needed.min(at));
        }
    }

    /// A snapshot that answers reads at `lsn`, or [`ErrorKind::BelowBranchPoint`] /
    /// [`ErrorKind::BelowGcCutoff`].
    ///
    /// The snapshot is taken before the cutoff is read. GC stores a new cutoff before it
    /// publishes any layer change made for it, so a snapshot taken while the cutoff was still at
    /// or below `lsn` holds no change that dropped a version a read at `lsn` needs. Checked the
    /// other way round, a GC pass could move the cutoff past `lsn` and remove layers between
    /// the check and the snapshot, and the read would answer from what is left.
    pub(crate) fn snapshot_at(&self, lsn: Lsn) -> Result<Arc<Snapshot>> {
        let snap = self.snapshot();
        self.check_readable(&snap, lsn)?;
        Ok(snap)
    }

    /// [`snapshot_at`](Self::snapshot_at) without taking a reference: for a read that ends
    /// before the guard is dropped, and does not hold many at once.
    pub(crate) fn snapshot_guard_at(&self, lsn: Lsn) -> Result<arc_swap::Guard<Arc<Snapshot>>> {
        let snap = self.snapshot.load();
        self.check_readable(&snap, lsn)?;
        Ok(snap)
    }

    /// The checks of [`snapshot_at`](Self::snapshot_at) on a snapshot just taken.
    fn check_readable(&self, snap: &Snapshot, lsn: Lsn) -> Result<()> {
        let cutoff = self.gc_cutoff();
        if let Some((parent, at)) = &snap.ancestor
            && lsn < *at
        {
            return Err(Error::new(
                ErrorKind::BelowBranchPoint,
                format!(
                    "timeline {}: LSN {lsn} is below its branch point {at}; that history is its ancestor's, {}",
                    self.name(),
                    parent.name()
                ),
            ));
        }
        if lsn < cutoff {
            return Err(Error::new(
                ErrorKind::BelowGcCutoff,
                format!(
                    "timeline {}: LSN {lsn} is below the GC cutoff {cutoff}",
                    self.name()
                ),
            ));
        }
        Ok(())
    }
}

impl crate::remote::UploadSource for TimelineInner {
    fn id(&self) -> TimelineId {
        self.id
    }

    fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    fn remote_state(&self) -> (Manifest, Vec<Arc<Layer>>, Vec<(Lsn, u64)>) {
        self.upload_state()
    }

    fn set_remote_consistent_lsn(&self, lsn: Lsn) {
        self.remote_consistent_lsn
            .fetch_max(lsn.0, Ordering::AcqRel);
        self.update_gauges();
    }
}

/// A handle to one timeline: a linear history of `(key, lsn) → value`.
///
/// Cheap to clone; every clone reads the same timeline. Reads never wait for flushes or other
/// background work: they read an immutable snapshot of the layers.
#[derive(Clone)]
pub struct Timeline {
    pub(crate) inner: Arc<TimelineInner>,
    /// What must live as long as the handle: a secondary's store that was replaced since.
    keep: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Timeline {
    pub(crate) fn new(inner: Arc<TimelineInner>) -> Timeline {
        Timeline { inner, keep: None }
    }

    /// The handle, keeping `keep` alive while it or a clone lives.
    pub(crate) fn keeping(mut self, keep: Arc<dyn std::any::Any + Send + Sync>) -> Timeline {
        self.keep = Some(keep);
        self
    }
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("name", &self.inner.name())
            .field("id", &self.inner.id)
            .field("last_record_lsn", &self.last_record_lsn())
            .finish()
    }
}

impl Timeline {
    /// The timeline's identity.
    pub fn id(&self) -> TimelineId {
        self.inner.id
    }

    /// The timeline's current name (a restore can move a name to another timeline).
    pub fn name(&self) -> String {
        self.inner.name()
    }

    /// The timeline this one branched from and the LSN it branched at, if any.
    pub fn ancestor(&self) -> Option<(Timeline, Lsn)> {
        self.inner.ancestor.read().as_ref().map(|(a, lsn)| {
            (
                Timeline {
                    inner: a.clone(),
                    keep: self.keep.clone(),
                },
                *lsn,
            )
        })
    }

    /// The newest LSN readers can see.
    pub fn last_record_lsn(&self) -> Lsn {
        self.inner.last_record_lsn()
    }

    /// The newest LSN whose writes are all in layer files on local disk.
    pub fn disk_consistent_lsn(&self) -> Lsn {
        self.inner.disk_consistent_lsn()
    }

    /// The newest LSN whose writes are all in object storage (0 without a remote): what
    /// survives losing this node.
    pub fn remote_consistent_lsn(&self) -> Lsn {
        Lsn(self.inner.remote_consistent_lsn.load(Ordering::Acquire))
    }

    /// The newest LSN whose commits are all safe in object storage, in layer files or in WAL
    /// chunks (0 without a remote): what a node that attaches after losing this one reads.
    /// At least [`remote_consistent_lsn`](Timeline::remote_consistent_lsn); never moves
    /// backwards. Commits at [`Durability::Remote`](crate::Durability::Remote) are at or below
    /// it when acknowledged; others follow within
    /// [`remote_wal_interval`](crate::StoreOptions::remote_wal_interval). While object storage
    /// does not hold the timeline (or an ancestor) whole — just created, or with layers a
    /// restarted node found above its index — it stays at `remote_consistent_lsn`.
    pub fn remote_wal_lsn(&self) -> Lsn {
        let indexed = self.remote_consistent_lsn();
        match &self.inner.env.remote {
            Some(r) if !self.inner.awaits_index() => {
                r.wal().shipped_lsn(self.inner.id).max(indexed)
            }
            _ => indexed,
        }
    }

    /// Waits until every commit at or below `lsn` is safe in object storage
    /// ([`remote_wal_lsn`](Timeline::remote_wal_lsn) reaches it): waits for the upload of a
    /// timeline object storage does not hold whole yet (see
    /// [`Durability::Remote`](crate::Durability::Remote)), ships the WAL buffered now at once,
    /// and if that does not cover `lsn` (commits replayed from the local WAL at open were never
    /// shipped), flushes and uploads. The async way to commit at
    /// [`Durability::Remote`](crate::Durability::Remote): commit at `Local`, then await this.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] without a remote, or when `lsn` is above
    /// `last_record_lsn`; [`ErrorKind::Fenced`] if another node took the store; upload errors.
    pub async fn wait_remote_durable(&self, lsn: Lsn) -> Result<()> {
        let Some(r) = self.inner.env.remote.clone().filter(|r| !r.read_only) else {
            return Err(Error::invalid(format!(
                "timeline {}: waiting for LSN {lsn} in object storage needs a writable store with a remote",
                self.name()
            )));
        };
        let lrl = self.last_record_lsn();
        if lsn > lrl {
            return Err(Error::invalid(format!(
                "timeline {}: LSN {lsn} is above last_record_lsn {lrl}",
                self.name()
            )));
        }
        if self.remote_wal_lsn() >= lsn {
            return Ok(());
        }
        if self.inner.awaits_index() {
            let inner = self.inner.clone();
            self.inner
                .env
                .on_runtime("uploading", async move { inner.wait_indexed().await })
                .await?;
        }
        if self.inner.env.wal.is_some() {
            let shipping = r.clone();
            self.inner
                .env
                .on_runtime("shipping the WAL", async move { shipping.ship_now().await })
                .await?;
            if self.remote_wal_lsn() >= lsn {
                return Ok(());
            }
        }
        self.flush().await?;
        self.inner
            .env
            .on_runtime("uploading", async move { r.wait_uploaded().await })
            .await?;
        if self.remote_wal_lsn() >= lsn {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Io,
            format!(
                "timeline {}: LSN {lsn} is still not in object storage after a flush and upload (remote_wal_lsn {})",
                self.name(),
                self.remote_wal_lsn()
            ),
        ))
    }

    /// The oldest readable LSN.
    pub fn gc_cutoff(&self) -> Lsn {
        self.inner.gc_cutoff()
    }

    /// Fails with [`ErrorKind::ReadOnly`] on a read-only store; `what` names the call.
    fn writable(&self, what: &str) -> Result<()> {
        self.inner
            .env
            .check_writable(&format!("{what} of timeline {}", self.inner.name()))
    }

    /// The timeline's single writer.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if another writer for this timeline is alive;
    /// [`ErrorKind::Closed`] if the store is closed.
    pub fn writer(&self) -> Result<TimelineWriter> {
        self.inner.check()?;
        self.inner
            .env
            .check_writable(&format!("a writer for timeline {}", self.inner.name()))?;
        if self.inner.writer_taken.swap(true, Ordering::AcqRel) {
            return Err(Error::invalid(format!(
                "timeline {} already has a writer",
                self.inner.name()
            )));
        }
        Ok(TimelineWriter::new(self.inner.clone()))
    }

    /// The value of `key` as of `lsn`: the newest version at or below it, rebuilt through deltas
    /// by the redo hook. `None` if the key does not exist at `lsn`.
    ///
    /// A read above `last_record_lsn` waits for it up to the configured timeout.
    ///
    /// # Errors
    /// [`ErrorKind::LsnTimeout`] if `lsn` is not reached in time; [`ErrorKind::BelowGcCutoff`]
    /// below the cutoff ([`ErrorKind::BelowBranchPoint`] on a branch, below its branch point);
    /// [`ErrorKind::Redo`] if a delta has no base or the hook fails;
    /// [`ErrorKind::Corruption`] if a block read fails its checksum.
    pub async fn get(&self, key: &[u8], lsn: Lsn) -> Result<Option<Bytes>> {
        Ok(self.get_traced(key, lsn).await?.0)
    }

    /// [`get`](Timeline::get), also telling how many layers the read visited.
    ///
    /// # Errors
    /// As [`get`](Timeline::get).
    pub async fn get_traced(&self, key: &[u8], lsn: Lsn) -> Result<(Option<Bytes>, ReadTrace)> {
        let start = self.read_start();
        let mut snap = self.inner.read_snapshot(lsn).await?;
        let mut trace = ReadTrace::default();
        let v = self
            .inner
            .read_value(&mut snap, key, lsn, &mut trace)
            .await?;
        self.timed(start, key, lsn, &trace);
        Ok((v, trace))
    }

    /// When a get starts, if it is timed: the clock is read for a sample of the gets only (see
    /// `crate::metrics`), unless the user asked for slow reads to be reported.
    fn read_start(&self) -> Option<Instant> {
        (self.inner.env.options.slow_read_threshold.is_some() || crate::metrics::sample_read())
            .then(Instant::now)
    }

    /// Records the time of a get that started at `start` (if it is timed), and reports it if
    /// it was slow.
    fn timed(&self, start: Option<Instant>, key: &[u8], lsn: Lsn, trace: &ReadTrace) {
        if let Some(start) = start {
            let elapsed = start.elapsed();
            self.inner
                .env
                .metrics
                .read_duration
                .record(elapsed.as_secs_f64());
            if let Some(t) = self.inner.env.options.slow_read_threshold
                && elapsed >= t
            {
                self.slow_read(key, lsn, trace, elapsed, t);
            }
        }
    }

    /// Counts and logs a get that took `elapsed`, over the threshold `t`.
    #[cold]
    fn slow_read(
        &self,
        key: &[u8],
        lsn: Lsn,
        trace: &ReadTrace,
        elapsed: std::time::Duration,
        t: std::time::Duration,
    ) {
        self.inner.env.metrics.slow_reads.increment(1);
        tracing::warn!(
            timeline_id = %self.inner.id,
            timeline = %self.inner.name(),
            key = %crate::error::show_key(key),
            lsn = %lsn,
            layers_visited = trace.layers_visited,
            ancestors_visited = trace.ancestors_visited,
            filter_skips = trace.filter_skips,
            redo_records = trace.redo_records,
            elapsed_us = elapsed.as_micros() as u64,
            threshold_us = t.as_micros() as u64,
            "slow read"
        );
    }

    /// The values of several keys as of one `lsn`, in the order asked, from one snapshot.
    ///
    /// # Errors
    /// As [`get`](Timeline::get); the first failing key fails the call.
    pub async fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        lsn: Lsn,
    ) -> Result<Vec<Option<Bytes>>> {
        let mut snap = self.inner.read_snapshot(lsn).await?;
        let mut trace = ReadTrace::default();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(
                self.inner
                    .read_value(&mut snap, k.as_ref(), lsn, &mut trace)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Every live key in `range` with its value as of `lsn`, in key order: exactly what
    /// [`get`](Timeline::get) would return for each key.
    ///
    /// # Errors
    /// As [`get`](Timeline::get).
    pub async fn scan<K: AsRef<[u8]>>(
        &self,
        range: impl std::ops::RangeBounds<K>,
        lsn: Lsn,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let lo = range.start_bound().map(|k| k.as_ref());
        let hi = range.end_bound().map(|k| k.as_ref());
        let snap = self.inner.read_snapshot(lsn).await?;
        if is_empty_range(lo, hi) {
            return Ok(Vec::new());
        }
        self.inner.scan(snap, lo, hi, lsn).await
    }

    /// [`get`](Timeline::get) for a caller on its own thread: blocks the calling thread until
    /// the answer is there. It waits where `get` waits: for an LSN above `last_record_lsn` (up
    /// to the configured timeout) and for a layer download from object storage; the read
    /// itself runs on the calling thread.
    ///
    /// Needs no async runtime. Do not call it from inside an async task, whose executor thread
    /// it would block: await [`get`](Timeline::get) there.
    ///
    /// ```
    /// use stratakv::{Lsn, Store, StoreOptions, Value};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open_blocking(StoreOptions::new(dir.path())).unwrap();
    /// // Every async call of the store also runs on any executor, or none:
    /// let main = futures::executor::block_on(store.create_timeline("main")).unwrap();
    /// let mut w = main.writer().unwrap();
    /// w.put(b"page/1", Lsn(0x10), Value::image("v1")).unwrap();
    /// w.finish_write(Lsn(0x10)).unwrap();
    /// assert_eq!(main.get_blocking(b"page/1", Lsn(0x10)).unwrap().unwrap(), "v1");
    /// futures::executor::block_on(store.close()).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`get`](Timeline::get).
    pub fn get_blocking(&self, key: &[u8], lsn: Lsn) -> Result<Option<Bytes>> {
        self.inner.env.block_on(self.get(key, lsn))
    }

    /// [`get`](Timeline::get) that never waits for an LSN: above `last_record_lsn` it fails at
    /// once. It still waits for a layer download from object storage when the read needs one.
    /// Blocking, like [`get_blocking`](Timeline::get_blocking).
    ///
    /// # Errors
    /// [`ErrorKind::LsnNotYetAvailable`] naming `last_record_lsn` when `lsn` is above it; the
    /// rest as [`get`](Timeline::get).
    pub fn get_now(&self, key: &[u8], lsn: Lsn) -> Result<Option<Bytes>> {
        let published = self.inner.last_record_lsn();
        if lsn > published {
            self.inner.check()?;
            return Err(Error::new(
                ErrorKind::LsnNotYetAvailable,
                format!(
                    "timeline {}: LSN {lsn} is not published yet; last_record_lsn is {published}",
                    self.inner.name()
                ),
            ));
        }
        let start = self.read_start();
        self.inner.check()?;
        let snap = self.inner.snapshot_guard_at(lsn)?;
        if let Some((ancestor, needed)) = TimelineInner::lagging_ancestor(&snap, lsn) {
            return Err(Error::new(
                ErrorKind::LsnNotYetAvailable,
                format!(
                    "timeline {}: its ancestor {} has not published LSN {needed} yet (a secondary \
                     still applying it); its last_record_lsn is {}",
                    self.inner.name(),
                    ancestor.name(),
                    ancestor.last_record_lsn()
                ),
            ));
        }
        // Read on this thread from the snapshot taken; only a read that needs a layer
        // downloaded (or that raced a delete of its ancestor) goes the waiting way.
        let mut trace = ReadTrace::default();
        if let read::Local::Ready(v) = self.inner.reconstruct_traced(&snap, key, lsn, &mut trace)? {
            self.inner.count_read(&trace);
            self.timed(start, key, lsn, &trace);
            return Ok(v);
        }
        drop(snap);
        self.get_blocking(key, lsn)
    }

    /// [`get_many`](Timeline::get_many) for a caller on its own thread; it blocks and waits as
    /// [`get_blocking`](Timeline::get_blocking) does.
    ///
    /// # Errors
    /// As [`get_many`](Timeline::get_many).
    pub fn get_many_blocking<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        lsn: Lsn,
    ) -> Result<Vec<Option<Bytes>>> {
        self.inner.env.block_on(self.get_many(keys, lsn))
    }

    /// [`scan`](Timeline::scan) for a caller on its own thread; it blocks and waits as
    /// [`get_blocking`](Timeline::get_blocking) does.
    ///
    /// # Errors
    /// As [`scan`](Timeline::scan).
    pub fn scan_blocking<K: AsRef<[u8]>>(
        &self,
        range: impl std::ops::RangeBounds<K>,
        lsn: Lsn,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.inner.env.block_on(self.scan(range, lsn))
    }

    /// Freezes the open in-memory layer and waits until everything published so far is in
    /// layer files on disk. Returns the new `disk_consistent_lsn`.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] or [`ErrorKind::Poisoned`] if a flush fails.
    pub async fn flush(&self) -> Result<Lsn> {
        if self.inner.env.options.read_only {
            // Nothing is ever written in memory: there is nothing to flush.
            self.inner.check()?;
            return Ok(self.disk_consistent_lsn());
        }
        self.inner.flush().await
    }

    /// Writes an image layer holding the full value of every live key at the newest flushed
    /// LSN, after flushing. Returns that LSN. Reads at or above it need no older layer.
    ///
    /// # Errors
    /// As [`flush`](Timeline::flush), and any read error met while rebuilding values;
    /// [`ErrorKind::InvalidArgument`] if nothing of the timeline is on disk yet (its
    /// `disk_consistent_lsn` is 0: there is nothing to image).
    pub async fn create_image_layer(&self) -> Result<Lsn> {
        self.writable("an image layer")?;
        self.inner.flush().await?;
        let inner = self.inner.clone();
        self.inner
            .env
            .blocking("image layer", move || inner.create_image_layer())
            .await
    }

    /// The LSN as of `time`: the LSN of the last commit at or before it, found by binary
    /// search in the timeline's persisted `lsn ↔ commit time` index — exact per commit.
    ///
    /// # Errors
    /// [`ErrorKind::BelowGcCutoff`] when `time` is before the first commit the index holds or
    /// maps below the GC cutoff; [`ErrorKind::InvalidArgument`] when `time` is in the future;
    /// [`ErrorKind::NotFound`] when no commit time was recorded.
    pub fn lsn_at(&self, time: SystemTime) -> Result<Lsn> {
        self.inner.lsn_at(time)
    }

    /// The commit time of the newest commit at or below `lsn`, if the index has one.
    pub fn time_at(&self, lsn: Lsn) -> Option<SystemTime> {
        self.inner.time_at(lsn)
    }

    /// Holds the GC cutoff at or below `lsn` until `ttl` passes on the store's clock, so that a
    /// branch or restore at `lsn` planned now cannot race GC. Returns the expiry.
    ///
    /// A lease lives in this store's memory: closing the store, or a crash, drops it, and
    /// another node that attaches the timeline does not see it. Take it again after an open.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming the allowed range when `lsn` is below the GC
    /// cutoff or above `last_record_lsn`.
    pub fn lease(&self, lsn: Lsn, ttl: std::time::Duration) -> Result<SystemTime> {
        self.writable("a lease")?;
        self.inner.lease(lsn, ttl)
    }

    /// Runs one GC pass now: advances the cutoff as retention and leases allow, rewrites
    /// history below it that is mostly garbage, and removes layers no read needs.
    ///
    /// # Errors
    /// I/O and read errors; the timeline keeps its last good state.
    pub async fn gc(&self) -> Result<GcReport> {
        self.writable("GC")?;
        let inner = self.inner.clone();
        self.inner.env.blocking("GC", move || inner.gc()).await
    }

    /// Runs compaction now: merges every L0 layer into L1 layers, and writes an image layer
    /// if the delta records above the newest image exceed
    /// [`image_threshold_bytes`](crate::StoreOptions::image_threshold_bytes) or the delta
    /// layers stacked there [`image_threshold_layers`](crate::StoreOptions::image_threshold_layers).
    ///
    /// # Errors
    /// I/O and read errors; the timeline keeps its last good state.
    pub async fn compact(&self) -> Result<CompactionReport> {
        self.writable("compaction")?;
        let inner = self.inner.clone();
        self.inner
            .env
            .blocking("compaction", move || inner.compact(true))
            .await
    }

    /// The layer files the timeline reads, newest first.
    pub fn layers(&self) -> Vec<LayerDesc> {
        self.inner
            .snapshot()
            .map
            .layers()
            .iter()
            .map(|l| l.desc.clone())
            .collect()
    }

    /// The layer files the timeline reads, newest first, as [`layers`](Timeline::layers)
    /// gives them, each with where its bytes are: on local disk, in object storage, or both.
    pub fn layer_status(&self) -> Vec<LayerStatus> {
        self.inner
            .snapshot()
            .map
            .layers()
            .iter()
            .map(|l| LayerStatus {
                desc: l.desc.clone(),
                resident: l.is_resident(),
                remote_generation: l.remote_generation().map(crate::remote::Generation),
            })
            .collect()
    }

    /// The unexpired LSN [leases](Timeline::lease) this store holds on the timeline, as
    /// `(lsn, expiry)`, lowest LSN first. Leases live in the memory of the process that took
    /// them: another process opening the store sees none of them.
    pub fn leases(&self) -> Vec<(Lsn, SystemTime)> {
        let now = self.inner.env.options.clock.now();
        let mut leases: Vec<(Lsn, SystemTime)> = self
            .inner
            .leases
            .lock()
            .iter()
            .filter(|(_, expiry)| *expiry > now)
            .copied()
            .collect();
        leases.sort();
        leases
    }

    /// Every version of `key` within the retention window `[gc_cutoff, last_record_lsn]`,
    /// oldest first: what was written at each LSN and the value a read there returns. When
    /// the key has a value at the cutoff but no version written exactly there, the first
    /// entry stands for that value ([`KeyVersion::written`] is `None`). Versions below the
    /// window, and those of ancestors below the branch point, are not readable here and are
    /// not listed. Reads layer files only in the key's range, downloading them if needed.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use stratakv::{Lsn, SimpleRedo, Store, StoreOptions, Value};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(StoreOptions::new(dir.path())).await?;
    /// let main = store.create_timeline("main").await?;
    /// let mut w = main.writer()?;
    /// w.put(b"k", Lsn(0x10), Value::image("a"))?;
    /// w.finish_write(Lsn(0x10))?;
    /// w.put(b"k", Lsn(0x20), Value::delta(SimpleRedo::append(b"b")))?;
    /// w.finish_write(Lsn(0x20))?;
    /// let h = main.history(b"k").await?;
    /// assert_eq!(h.iter().map(|v| v.lsn).collect::<Vec<_>>(), [Lsn(0x10), Lsn(0x20)]);
    /// assert_eq!(h[1].value.as_deref(), Some(&b"ab"[..]));
    /// store.close().await?;
    /// # Ok::<(), stratakv::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`get`](Timeline::get): [`ErrorKind::Corruption`] if a block fails its checksum,
    /// [`ErrorKind::Redo`] if a delta cannot be applied, download errors.
    pub async fn history(&self, key: &[u8]) -> Result<Vec<KeyVersion>> {
        self.inner.history(key).await
    }

    /// Number of in-memory layers (the open one and any frozen ones waiting for flush).
    pub fn in_memory_layers(&self) -> usize {
        1 + self.inner.snapshot().frozen.len()
    }
}

/// Whether no key lies in the bounds (a start above the end, or an excluded point).
fn is_empty_range(lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Bound::Included(l), Bound::Included(h)) => l > h,
        (Bound::Included(l), Bound::Excluded(h))
        | (Bound::Excluded(l), Bound::Included(h))
        | (Bound::Excluded(l), Bound::Excluded(h)) => l >= h,
        _ => false,
    }
}
