//! Keeping object storage in step with the local store: the upload queue, attach, on-demand
//! download and eviction.
//!
//! Uploads are coalesced per timeline: a flush, compaction or GC marks its timeline dirty, and
//! the uploader uploads the timeline's *current* state — first every layer the manifest names
//! that is not in object storage yet, then (after checking the generation) the index, and only
//! then deletes the objects the previous index named and this one does not. So an index is
//! uploaded only after every layer it names is there, and an object is deleted only after no
//! uploaded index of this generation names it. The catalog follows the timelines' indexes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use super::wal_ship::{ShipOptions, WalShip};
use super::{Generation, RemoteStorage, catalog_object, index_object, layer_object};
use crate::error::{Error, ErrorKind, Result};
use crate::format::Manifest;
use crate::format::RemoteIndex;
use crate::id::TimelineId;
use crate::layer::Layer;
use crate::lsn::Lsn;

/// Layers named in an index's heatmap.
const HEATMAP_LAYERS: usize = 256;

/// What the uploader needs of a timeline: a narrow view, so that object storage sits below
/// the timelines and never names them.
pub(crate) trait UploadSource: Send + Sync {
    /// The timeline.
    fn id(&self) -> TimelineId;
    /// Whether the timeline was deleted (its objects go, nothing more is uploaded).
    fn is_deleted(&self) -> bool;
    /// The manifest, the layers it names, and the commit times up to its
    /// `disk_consistent_lsn`, taken together.
    fn remote_state(&self) -> (Manifest, Vec<Arc<Layer>>, Vec<(Lsn, u64)>);
    /// Records that everything up to `lsn` is in object storage.
    fn set_remote_consistent_lsn(&self, lsn: Lsn);
}

#[derive(Default)]
struct Queue {
    dirty: BTreeMap<TimelineId, Weak<dyn UploadSource>>,
    deleted: BTreeSet<TimelineId>,
    catalog: Option<Vec<u8>>,
    /// Bumped by every request; the uploader reports the value it has caught up with.
    requested: u64,
    /// The number of the last pass that took the queue (passes are numbered from 1): what is
    /// queued now goes in pass `passes_taken + 1`, or a later one if that pass fails.
    passes_taken: u64,
}

/// Reads every timeline's `last_record_lsn`.
pub(crate) type LastRecordLsns = Box<dyn Fn() -> BTreeMap<TimelineId, Lsn> + Send + Sync>;

/// The store's link to object storage.
pub(crate) struct RemoteCtx {
    pub(crate) storage: RemoteStorage,
    pub(crate) generation: Generation,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) disk_budget: Option<u64>,
    /// A read-only store's link: downloads only; it holds no generation (`generation` is the
    /// newest possible, for reading the newest indexes), and never uploads, deletes or releases.
    pub(crate) read_only: bool,
    queue: Mutex<Queue>,
    notify: Notify,
    completed: watch::Sender<u64>,
    /// The uploader's passes so far: the last that succeeded, how many failed, the last error.
    passes: watch::Sender<Passes>,
    /// Timelines that object storage does not hold whole yet — layers found above the index at
    /// open, a timeline not in the uploaded catalog — with the pass that carries them: until it
    /// succeeds, no commit on them (or their branches) counts as safe in object storage.
    unindexed: Mutex<BTreeMap<TimelineId, u64>>,
    /// Set at open when a timeline had layers above its index: the WAL shipper waits for the
    /// first pass, so that no chunk lands above commits object storage does not hold.
    hold_shipping: AtomicBool,
    /// The uploader's loop ended (stopped, fenced, or panicked).
    uploader_exited: AtomicBool,
    pub(super) fenced: AtomicBool,
    pub(super) stopped: AtomicBool,
    /// How many of the background loops (uploader, WAL shipper) are running: counted from
    /// [`start`](RemoteCtx::start) until each returns.
    running: watch::Sender<u32>,
    /// A checked deletion failed or was abandoned: it may still land, so this generation must
    /// not be released.
    pub(super) uncertain_delete: AtomicBool,
    /// Per timeline, the layers (name → generation) the last uploaded index named.
    uploaded: Mutex<BTreeMap<TimelineId, BTreeMap<String, u32>>>,
    pub(super) last_error: Mutex<Option<Error>>,
    /// The WAL in object storage (see `wal_ship`).
    pub(super) wal: WalShip,
    /// Chunks a fenced owner left, found at open, to delete.
    pub(super) stale_chunks: Mutex<Vec<String>>,
    /// The node id written into the heartbeat.
    pub(super) node_id: String,
    /// Catalog uploads of this generation so far (in the heartbeat).
    pub(super) catalog_uploads: AtomicU64,
    /// Heartbeats written so far.
    pub(super) beats: AtomicU64,
    /// The heartbeat interval, once started with one.
    heartbeat_interval: Mutex<Option<Duration>>,
    /// Each timeline's `last_record_lsn`, for the heartbeat (set by the store at open).
    pub(crate) last_record_lsns: Mutex<Option<LastRecordLsns>>,
    /// What a read-only store has applied of its owner's WAL.
    pub(crate) applied: Mutex<Applied>,
}

/// A follower's place in its owner's WAL.
#[derive(Clone, Copy, Default)]
pub(crate) struct Applied {
    /// The last chunk applied (its sequence number).
    pub(crate) seq: Option<u64>,
    /// The newest generation whose WAL start was listed when it read them (`Generation(0)`:
    /// none). A newer one means a new owner may have numbered its chunks anew, and may have
    /// declared stale a late chunk of its predecessor that the follower applied: it reloads.
    pub(crate) start: Generation,
}

impl RemoteCtx {
    pub(crate) fn new(
        storage: RemoteStorage,
        generation: Generation,
        runtime: tokio::runtime::Handle,
        disk_budget: Option<u64>,
        read_only: bool,
        ship: ShipOptions,
        node_id: String,
    ) -> Arc<RemoteCtx> {
        Arc::new(RemoteCtx {
            storage,
            generation,
            runtime,
            disk_budget,
            read_only,
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            completed: watch::Sender::new(0),
            passes: watch::Sender::new(Passes::default()),
            unindexed: Mutex::new(BTreeMap::new()),
            hold_shipping: AtomicBool::new(false),
            uploader_exited: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            running: watch::Sender::new(0),
            uncertain_delete: AtomicBool::new(false),
            uploaded: Mutex::new(BTreeMap::new()),
            last_error: Mutex::new(None),
            wal: WalShip::new(ship),
            stale_chunks: Mutex::new(Vec::new()),
            node_id,
            catalog_uploads: AtomicU64::new(0),
            beats: AtomicU64::new(0),
            heartbeat_interval: Mutex::new(None),
            applied: Mutex::default(),
            last_record_lsns: Mutex::new(None),
        })
    }

    /// Whether another node has claimed a newer generation.
    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Records what an index already in object storage names, so that the next upload deletes
    /// only what it drops.
    pub(crate) fn note_uploaded(&self, tl: TimelineId, layers: BTreeMap<String, u32>) {
        self.uploaded.lock().insert(tl, layers);
    }

    /// Asks for the timeline's current state to be uploaded.
    pub(crate) fn mark_dirty(&self, id: TimelineId, tl: Weak<dyn UploadSource>) {
        let mut q = self.queue.lock();
        q.dirty.insert(id, tl);
        q.requested += 1;
        queue_depth(q.dirty.len());
        drop(q);
        self.notify.notify_one();
    }

    /// Asks for the catalog to be uploaded (after the dirty timelines).
    pub(crate) fn mark_catalog(&self, catalog: Vec<u8>) {
        let mut q = self.queue.lock();
        q.catalog = Some(catalog);
        q.requested += 1;
        drop(q);
        self.notify.notify_one();
    }

    /// Asks for a deleted timeline's objects to be removed (after the catalog without it).
    pub(crate) fn mark_deleted(&self, tl: TimelineId, catalog: Vec<u8>) {
        let mut q = self.queue.lock();
        q.deleted.insert(tl);
        q.dirty.remove(&tl);
        q.catalog = Some(catalog);
        q.requested += 1;
        drop(q);
        self.notify.notify_one();
    }

    /// Waits until everything asked for before the call is in object storage.
    pub(crate) async fn wait_uploaded(&self) -> Result<()> {
        if self.read_only {
            // Nothing is ever uploaded (a replayed tail flushed into the cache stays local).
            return Ok(());
        }
        let target = self.queue.lock().requested;
        let mut rx = self.completed.subscribe();
        loop {
            if self.is_fenced() {
                return Err(fenced_error(self.generation));
            }
            if *rx.borrow_and_update() >= target {
                return Ok(());
            }
            if self.stopped.load(Ordering::Acquire) {
                return Err(Error::new(ErrorKind::Closed, "store is closed"));
            }
            // On the store's timer: the caller may be on any executor, or none.
            let tick = {
                let _store_timer = self.runtime.enter();
                tokio::time::timeout(Duration::from_millis(100), rx.changed())
            };
            let _ = tick.await;
        }
    }

    /// The last upload error, if the uploader is retrying.
    pub(crate) fn last_error(&self) -> Option<Error> {
        self.last_error.lock().clone()
    }

    /// Records at open that `tl`'s local layers reach above its index in object storage (or
    /// object storage has no index of it): the opening upload, the first pass, carries them.
    /// The WAL shipper holds its chunks until then.
    pub(crate) fn note_unindexed_at_open(&self, tl: TimelineId) {
        // Before the uploader starts, so that its first pass takes what open queued.
        debug_assert_eq!(*self.running.borrow(), 0, "the uploader has started");
        let carrier = self.queue.lock().passes_taken + 1;
        self.unindexed.lock().insert(tl, carrier);
        self.hold_shipping.store(true, Ordering::Release);
    }

    /// Queues a timeline just created (its index) and the catalog naming it, and records that
    /// commits on it are safe in object storage only once the pass carrying both succeeds.
    pub(crate) fn mark_new_timeline(
        &self,
        id: TimelineId,
        tl: Weak<dyn UploadSource>,
        catalog: Vec<u8>,
    ) {
        let mut q = self.queue.lock();
        q.dirty.insert(id, tl);
        q.catalog = Some(catalog);
        q.requested += 1;
        queue_depth(q.dirty.len());
        // Read under the lock that queued them: the next pass to take the queue carries both.
        let carrier = q.passes_taken + 1;
        self.unindexed.lock().insert(id, carrier);
        drop(q);
        self.notify.notify_one();
    }

    /// Whether object storage does not hold `tl` whole yet (see `unindexed`), or the WAL
    /// shipper holds every chunk (see `hold_shipping`): no commit of `tl` is safe there yet.
    pub(crate) fn awaits_index(&self, tl: TimelineId) -> bool {
        let carrier = self.carrier(tl);
        carrier > 0 && self.passes.borrow().carried_upto < carrier
    }

    /// The pass `tl`'s commits wait for: the one carrying its index, or while the shipper
    /// holds the chunks, at least the first; 0 for none.
    fn carrier(&self, tl: TimelineId) -> u64 {
        let own = self.unindexed.lock().get(&tl).copied().unwrap_or(0);
        if self.shipping_held() {
            own.max(1)
        } else {
            own
        }
    }

    /// Waits until object storage holds `tl` whole (see
    /// [`awaits_index`](Self::awaits_index)).
    ///
    /// # Errors
    /// The error of an upload pass that failed after the call (the uploader retries it),
    /// `Fenced`, or `Closed` when the store stops first.
    pub(crate) async fn wait_indexed(&self, tl: TimelineId) -> Result<()> {
        let carrier = self.carrier(tl);
        if carrier == 0 {
            return Ok(());
        }
        let mut passes = self.passes.subscribe();
        let failed_before = passes.borrow_and_update().failed;
        loop {
            {
                let p = passes.borrow_and_update();
                if p.carried_upto >= carrier {
                    return Ok(());
                }
                if self.is_fenced() {
                    return Err(fenced_error(self.generation));
                }
                // A pass that failed before it carried its uploads, since the wait began: the
                // carrier, or a later pass the carrier's work went back to.
                if p.failed > failed_before && p.last_failed >= carrier {
                    return Err(p.error.clone().unwrap_or_else(|| {
                        Error::new(ErrorKind::Io, "uploading to object storage failed")
                    }));
                }
            }
            if self.stopped.load(Ordering::Acquire) || self.uploader_exited.load(Ordering::Acquire)
            {
                return Err(Error::new(
                    ErrorKind::Closed,
                    "the store closed before object storage held the timeline",
                ));
            }
            // No timer: whatever ends the uploader (stop, fencing, a panic) wakes the wait,
            // which must end even while the store's runtime shuts down. The sender lives as
            // long as `self`.
            let _ = passes.changed().await;
        }
    }

    /// Whether the WAL shipper waits for the opening upload (see `hold_shipping`); not once
    /// the uploader is gone (the waits on it fail then).
    pub(crate) fn shipping_held(&self) -> bool {
        self.hold_shipping.load(Ordering::Acquire)
            && self.passes.borrow().carried_upto == 0
            && !self.uploader_exited.load(Ordering::Acquire)
    }

    /// Per timeline, the highest LSN safe in object storage (for the heartbeat): as the WAL's,
    /// except that a timeline object storage does not hold whole counts only its index.
    pub(crate) fn safe_lsns(&self) -> BTreeMap<TimelineId, Lsn> {
        let mut safe = self.wal.safe_lsns();
        let unindexed: Vec<TimelineId> = self.unindexed.lock().keys().copied().collect();
        for tl in unindexed {
            if self.awaits_index(tl) {
                match self.wal.indexed_lsn(tl) {
                    Some(lsn) => safe.insert(tl, lsn),
                    None => safe.remove(&tl),
                };
            }
        }
        safe
    }

    /// Records that this node lost its generation, and wakes whoever waits on the uploader.
    pub(super) fn fence(&self) {
        self.fenced.store(true, Ordering::Release);
        self.passes.send_modify(|_| {});
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_one();
        self.wal.close();
        // Wakes the waits on the uploader's passes.
        self.passes.send_modify(|_| {});
    }

    /// Stops the uploader, waits (up to `timeout`) for it to return, and then, when nothing it
    /// deleted can still land and it was not fenced, releases this generation so that the next
    /// owner need not wait the claim grace. Returns whether it released. Runs on the store's
    /// runtime.
    pub(crate) async fn stop_and_release(&self, timeout: Duration) -> bool {
        let mut running = self.running.subscribe();
        self.stop();
        if self.read_only {
            return false;
        }
        let stopped = tokio::time::timeout(timeout, running.wait_for(|r| *r == 0))
            .await
            .is_ok_and(|r| r.is_ok());
        if !stopped || self.is_fenced() {
            return false;
        }
        let interval = *self.heartbeat_interval.lock();
        if let Some(interval) = interval {
            // The last beat says the owner stopped cleanly: a secondary need not wait for
            // the confirmation window.
            let last = self.beats.load(Ordering::Acquire) + 1;
            let _ = self.beat(last, interval, true).await;
        }
        if self.uncertain_delete.load(Ordering::Acquire) {
            return false;
        }
        match self.storage.release_generation(self.generation).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    generation = %self.generation,
                    error = %e,
                    "could not release the generation; the next owner waits the claim grace"
                );
                false
            }
        }
    }

    /// Checks the generation and deletes `name`, remembering a deletion that may still land.
    pub(super) async fn delete_checked(&self, name: &str) -> Result<()> {
        let result = self.storage.delete_checked(self.generation, name).await;
        if let Err(e) = &result
            && e.kind() != ErrorKind::Fenced
        {
            self.uncertain_delete.store(true, Ordering::Release);
        }
        result
    }

    /// Starts the uploader and, with `ship_wal`, the WAL shipper, and with a `heartbeat`
    /// interval the heartbeat, on the store's runtime.
    pub(crate) fn start(self: &Arc<Self>, ship_wal: bool, heartbeat: Option<Duration>) {
        if self.read_only {
            return;
        }
        if let Some(interval) = heartbeat {
            *self.heartbeat_interval.lock() = Some(interval);
            let me = self.clone();
            let running = Running::enter(&self.running);
            self.runtime.spawn(async move {
                let _running = running;
                me.run_heartbeat(interval).await;
            });
        }
        let me = self.clone();
        let running = Running::enter(&self.running);
        self.runtime.spawn(async move {
            let _running = running;
            me.run().await;
        });
        if ship_wal {
            let me = self.clone();
            let running = Running::enter(&self.running);
            self.runtime.spawn(async move {
                let _running = running;
                me.run_wal_ship().await;
            });
            let me = self.clone();
            let running = Running::enter(&self.running);
            self.runtime.spawn(async move {
                let _running = running;
                me.run_wal_deleter().await;
            });
        }
    }

    /// The uploader: runs until stopped or fenced.
    async fn run(self: Arc<Self>) {
        // However this loop ends (stopped, fenced, a panic), the waits on its passes wake.
        let _exit = UploaderExit(self.clone());
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.stopped.load(Ordering::Acquire) || self.is_fenced() {
                return;
            }
            let taken = {
                let mut q = self.queue.lock();
                queue_depth(0);
                if q.dirty.is_empty() && q.deleted.is_empty() && q.catalog.is_none() {
                    Err(q.requested)
                } else {
                    q.passes_taken += 1;
                    Ok((
                        q.passes_taken,
                        q.requested,
                        std::mem::take(&mut q.dirty),
                        std::mem::take(&mut q.deleted),
                        q.catalog.take(),
                    ))
                }
            };
            let (number, requested, dirty, deleted, catalog) = match taken {
                Ok(work) => work,
                Err(requested) => {
                    self.completed.send_replace(requested);
                    let _ =
                        tokio::time::timeout(Duration::from_millis(200), self.notify.notified())
                            .await;
                    continue;
                }
            };
            let result = self
                .pass(number, &dirty, &deleted, catalog.as_deref())
                .await;
            match result {
                Ok(()) => {
                    backoff = Duration::from_millis(50);
                    *self.last_error.lock() = None;
                    let idle = {
                        let q = self.queue.lock();
                        q.dirty.is_empty() && q.deleted.is_empty() && q.catalog.is_none()
                    };
                    if idle {
                        self.completed.send_replace(requested);
                    }
                }
                Err(e) => {
                    if e.kind() == ErrorKind::Fenced {
                        self.fence();
                        self.wal.close();
                    }
                    let e = e.context("uploading to object storage");
                    *self.last_error.lock() = Some(e.clone());
                    self.passes.send_modify(|p| {
                        p.failed += 1;
                        if p.carried_upto < number {
                            p.last_failed = number;
                            p.error = Some(e);
                        }
                    });
                    // Put the work back (newer requests win) and retry later.
                    {
                        let mut q = self.queue.lock();
                        for (id, w) in dirty {
                            q.dirty.entry(id).or_insert(w);
                        }
                        queue_depth(q.dirty.len());
                        q.deleted.extend(deleted);
                        if q.catalog.is_none() {
                            q.catalog = catalog;
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Pass `number`: the dirty timelines' layers and indexes, the catalog, then the objects
    /// they no longer name and the deleted timelines' objects.
    async fn pass(
        &self,
        number: u64,
        dirty: &BTreeMap<TimelineId, Weak<dyn UploadSource>>,
        deleted: &BTreeSet<TimelineId>,
        catalog: Option<&[u8]>,
    ) -> Result<()> {
        let mut garbage = Vec::new();
        for tl in dirty.values().filter_map(Weak::upgrade) {
            if !tl.is_deleted() {
                garbage.extend(self.upload_timeline(&tl).await?);
            }
        }
        if let Some(c) = catalog {
            self.storage.check_generation(self.generation).await?;
            self.storage
                .upload(&catalog_object(self.generation), Bytes::copy_from_slice(c))
                .await?;
            // Checked again after the put: a timeline it names counts as held by object
            // storage (see `unindexed`) only if no newer owner could have read the catalog
            // before this one landed.
            self.storage.check_generation(self.generation).await?;
            self.catalog_uploads.fetch_add(1, Ordering::AcqRel);
        }
        // What this pass carries is in object storage: the waits on it end, whatever the
        // deletions below meet (a failed one fails the pass, which is retried).
        self.passes
            .send_modify(|p| p.carried_upto = p.carried_upto.max(number));
        self.unindexed.lock().retain(|_, carrier| *carrier > number);
        for (tl, object) in garbage {
            self.delete_checked(&object).await.map_err(|e| {
                e.context(format_args!(
                    "removing a layer timeline {tl}'s index no longer names"
                ))
            })?;
        }
        for tl in deleted {
            let objects = self.storage.list(&format!("timelines/{tl}")).await?;
            for (name, _) in objects {
                self.delete_checked(&name).await?;
            }
            self.uploaded.lock().remove(tl);
            // Its records in WAL chunks are needed no more.
            self.wal.note_indexed(*tl, Lsn::MAX);
        }
        Ok(())
    }

    /// Uploads the layers `tl`'s manifest names that are not uploaded yet, then its index;
    /// returns the objects the previous index named and this one does not, for the pass to
    /// delete.
    async fn upload_timeline(
        &self,
        tl: &Arc<dyn UploadSource>,
    ) -> Result<Vec<(TimelineId, String)>> {
        let (manifest, layers, commit_times) = tl.remote_state();
        let span = tracing::info_span!(
            "upload",
            timeline_id = %tl.id(),
            disk_consistent_lsn = %manifest.disk_consistent_lsn,
            layers = tracing::field::Empty,
            bytes = tracing::field::Empty,
        );
        self.upload_timeline_in_span(tl, manifest, layers, commit_times, &span)
            .instrument(span.clone())
            .await
    }

    async fn upload_timeline_in_span(
        &self,
        tl: &Arc<dyn UploadSource>,
        manifest: Manifest,
        layers: Vec<Arc<Layer>>,
        commit_times: Vec<(Lsn, u64)>,
        span: &tracing::Span,
    ) -> Result<Vec<(TimelineId, String)>> {
        let (mut uploaded_layers, mut uploaded_bytes) = (0u64, 0u64);
        let mut generations = BTreeMap::new();
        for d in &manifest.layers {
            let layer = layers
                .iter()
                .find(|l| l.desc.file_name == d.file_name)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Io,
                        format!(
                            "layer {} of timeline {} is not in its snapshot",
                            d.file_name,
                            tl.id()
                        ),
                    )
                })?;
            let g = match layer.remote_generation() {
                Some(g) => g,
                None => {
                    let file = layer.file_quiet().ok_or_else(|| {
                        Error::new(
                            ErrorKind::Io,
                            format!(
                                "layer {} is neither uploaded nor on local disk",
                                d.file_name
                            ),
                        )
                    })?;
                    let name = layer_object(tl.id(), &d.file_name, self.generation)?;
                    self.storage
                        .upload(&name, Bytes::from(file.read_all()?))
                        .await?;
                    uploaded_layers += 1;
                    uploaded_bytes += file.desc.file_size;
                    layer.set_remote_generation(self.generation.0);
                    self.generation.0
                }
            };
            generations.insert(d.file_name.clone(), g);
        }
        let dcl = manifest.disk_consistent_lsn;
        crate::layer::advance_clock();
        let mut hot: Vec<_> = layers
            .iter()
            .filter(|l| l.is_resident() && l.last_used() > 0)
            .collect();
        hot.sort_by_key(|l| std::cmp::Reverse(l.last_used()));
        let hot_layers = hot
            .into_iter()
            .filter(|l| generations.contains_key(&l.desc.file_name))
            .take(HEATMAP_LAYERS)
            .map(|l| l.desc.file_name.clone())
            .collect();
        let index = RemoteIndex {
            manifest,
            layer_generations: generations.iter().map(|(n, g)| (n.clone(), *g)).collect(),
            commit_times,
            hot_layers,
        };
        self.storage.check_generation(self.generation).await?;
        self.storage
            .upload(
                &index_object(tl.id(), self.generation),
                Bytes::from(index.encode()),
            )
            .await?;
        span.record("layers", uploaded_layers);
        span.record("bytes", uploaded_bytes);
        tl.set_remote_consistent_lsn(dcl);
        self.wal.note_indexed(tl.id(), dcl);
        let previous = self
            .uploaded
            .lock()
            .insert(tl.id(), generations.clone())
            .unwrap_or_default();
        let mut garbage = Vec::new();
        for (name, g) in previous {
            if generations.get(&name) != Some(&g) {
                garbage.push((tl.id(), layer_object(tl.id(), &name, Generation(g))?));
            }
        }
        Ok(garbage)
    }
}

/// The uploader's passes so far.
#[derive(Default)]
struct Passes {
    /// The number of the last pass whose layers, indexes and catalog are all in object storage
    /// (0: none yet). Passes run one at a time, so every pass up to it either carried its work
    /// or had it carried by a later one.
    carried_upto: u64,
    /// Passes that failed.
    failed: u64,
    /// The number of the last pass that failed before it carried its work, and its error.
    last_failed: u64,
    error: Option<Error>,
}

/// Marks the uploader as gone when its loop ends, and wakes the waits on its passes.
struct UploaderExit(Arc<RemoteCtx>);

impl Drop for UploaderExit {
    fn drop(&mut self) {
        self.0.uploader_exited.store(true, Ordering::Release);
        self.0.passes.send_modify(|_| {});
    }
}

/// Counts a background loop as running until dropped (returned, or dropped with the runtime).
struct Running(watch::Sender<u32>);

impl Running {
    fn enter(count: &watch::Sender<u32>) -> Running {
        count.send_modify(|n| *n += 1);
        Running(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// The error of a node that lost its generation.
pub(crate) fn fenced_error(generation: Generation) -> Error {
    Error::new(
        ErrorKind::Fenced,
        format!(
            "this node's generation {generation} was superseded by another node's claim; it no longer writes or deletes"
        ),
    )
}

/// Sets the gauge of timelines waiting for the uploader.
fn queue_depth(n: usize) {
    ::metrics::gauge!(crate::metrics::REMOTE_UPLOAD_QUEUE_DEPTH).set(n as f64);
}
