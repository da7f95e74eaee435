//! [`Mirror`]: a second object store kept as an asynchronous copy of a store's first one.
//!
//! # The protocol
//!
//! Each pass **surveys** the source without writing to it — the claim (read, never probed),
//! the owner's heartbeat, the WAL chunk listing, the WAL start records, the `timelines/`
//! listing, each timeline's newest index, the newest catalog, in that order — and then brings
//! the destination up to that survey in an order that keeps the destination a consistent store
//! after every single request:
//!
//! 1. **claim**: the destination's claim is set to the source's generation `G` (a conditional
//!    write matched on the mirror's previous claim; on create-only backends every generation
//!    up to `G` in turn), or checked when it is there already. Only objects named with a
//!    generation at or below `G` are copied, so nothing the mirror writes can carry the name of
//!    a node that claims in the destination later: that node takes `G + 1` or more and fences
//!    the mirror, which stops for good;
//! 2. **WAL start records**, then the **layer objects** the source's indexes name (each one's
//!    CRC32 trailer and size checked; a corrupt object fails the pass and is reported, never
//!    copied);
//! 3. after a generation check, the **indexes** whose layers are all there, then the
//!    **catalog** once every timeline it names has its index;
//! 4. only when every index and the catalog are current: **WAL chunks the source deleted** are
//!    deleted, oldest first (the source deletes a chunk only after an index covering it was
//!    uploaded, and the indexes copied were read after the chunk listing, so they cover it);
//! 5. **WAL chunks** the destination lacks, in sequence order, each decoded and checked before
//!    its upload; without step 4 only as a continuation of the chunks already there, so the
//!    run never has a gap;
//! 6. only when everything is current: **layer objects** no copied index names and the source
//!    no longer has, and the objects of **timelines** the copied catalog dropped;
//! 7. when the pass copied everything: the **heartbeat** `heartbeats/{G}`, carrying the
//!    owner's node, beat, catalog count and committed LSNs, but as *safe* LSNs what the
//!    destination holds. A secondary following the destination then sees the owner's liveness
//!    through the mirror, and a promotion there refuses, as usual, when the owner committed
//!    more than the destination holds.
//!
//! Deletions go through the destination's checked deletion, bounded by its claim grace. The
//! mirror never releases its generation in the destination, so a promotion there always waits
//! the grace: a deletion the mirror validated just before the promotion's claim has finished
//! by then.
//!
//! What is mutable in object storage — the claim (`generation`, `generations/`), indexes,
//! catalogs and heartbeats, rewritten under the same name — is never copied byte for byte
//! without a check: the claim is the mirror's own, indexes and the catalog are compared with
//! what the destination holds, the heartbeat is rewritten. Release records (`released/`) are
//! the source's business and never copied.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::names::{
    CATALOG_STEM, INDEX_STEM, WAL_DIR, WAL_STARTS_DIR, heartbeat_object_of, parse_stem_generation,
    parse_wal_chunk, parse_wal_start,
};
use super::wal_ship::valid_chunks;
use super::{Generation, Heartbeat, RemoteStorage, catalog_object, index_object, layer_object};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{Catalog, RemoteIndex, decode_wal_segment};
use crate::id::TimelineId;
use crate::lsn::Lsn;

/// How many times a pass reads a timeline's index again when a layer it names vanished from
/// the source (its owner compacted meanwhile) before leaving the timeline to the next pass.
const INDEX_ROUNDS: usize = 3;

/// How a [`Mirror`] runs.
#[derive(Clone, Debug)]
pub struct MirrorOptions {
    interval: Option<Duration>,
    node_id: String,
}

impl Default for MirrorOptions {
    fn default() -> MirrorOptions {
        MirrorOptions {
            interval: Some(Duration::from_secs(1)),
            node_id: "mirror".to_string(),
        }
    }
}

impl MirrorOptions {
    /// The defaults: a pass every second, node id `mirror`.
    pub fn new() -> MirrorOptions {
        MirrorOptions::default()
    }

    /// How long the mirror's task waits between passes (default 1 s); `None`: no task, passes
    /// run only at [`Mirror::sync_now`].
    pub fn interval(mut self, interval: Option<Duration>) -> Self {
        self.interval = interval;
        self
    }

    /// The name the mirror claims the destination under, as `mirror:{id}` (default `mirror`).
    /// A mirror restarted on the same destination with the same id carries on; one with
    /// another id finds the destination owned by someone else and stops (fenced).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = id.into();
        self
    }
}

/// Where a mirror is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MirrorState {
    /// No pass has finished yet.
    Initializing,
    /// The last pass left something of the source out (it changed meanwhile, or the mirror
    /// measured without copying): the destination is behind.
    CatchingUp,
    /// The last pass copied everything the source held when it began.
    InSync,
    /// Paused: measuring the lag, copying nothing until resumed.
    Paused,
    /// The last pass failed (see [`MirrorStatus::last_error`]); the next one retries.
    Failing,
    /// Another node claimed a generation in the destination (a promotion there): the mirror
    /// copies nothing more, ever.
    Fenced,
    /// Stopped.
    Stopped,
}

/// One timeline as the source and the destination hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MirrorTimeline {
    /// Its name in the catalog (source's, else destination's), if a catalog names it.
    pub name: Option<String>,
    /// The newest LSN safe in the source: its owner's heartbeat (shipped or indexed), its
    /// newest index, and the WAL chunks the mirror read, whichever is highest.
    pub source: Lsn,
    /// The newest LSN the destination holds: its index's `disk_consistent_lsn` or the last
    /// record of its WAL chunks, whichever is higher — exactly the `last_record_lsn` of a store
    /// that attaches from the destination now.
    pub mirrored: Lsn,
}

/// A mirror's status: how far behind its source the destination is.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MirrorStatus {
    /// Where the mirror is.
    pub state: MirrorState,
    /// The source's generation and the node that claimed it, as of the last survey.
    pub source_generation: Option<(Generation, String)>,
    /// The generation the mirror holds in the destination.
    pub mirror_generation: Option<Generation>,
    /// Per timeline, what the source and the destination hold.
    pub timelines: BTreeMap<TimelineId, MirrorTimeline>,
    /// The largest `source − mirrored` over the timelines.
    pub lag_lsn: u64,
    /// WAL chunks in the source the destination lacks.
    pub lag_chunks: u64,
    /// Bytes of the WAL chunks and layer objects (named by the source's indexes) the
    /// destination lacks.
    pub lag_bytes: u64,
    /// How long the destination has been behind (zero when it is not).
    pub lag: Duration,
    /// How long ago the last pass that copied everything finished.
    pub since_complete_pass: Option<Duration>,
    /// Passes so far (copying and measuring).
    pub passes: u64,
    /// Objects copied so far.
    pub copied_objects: u64,
    /// Bytes copied so far (without trailers).
    pub copied_bytes: u64,
    /// Objects deleted from the destination so far.
    pub deleted_objects: u64,
    /// The error of the last pass, if it failed.
    pub last_error: Option<Error>,
}

/// What one pass of [`Mirror::sync_now`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MirrorPass {
    /// Objects copied.
    pub copied_objects: u64,
    /// Bytes copied (without trailers).
    pub copied_bytes: u64,
    /// Objects deleted from the destination.
    pub deleted_objects: u64,
    /// Whether the destination holds everything the source held when the pass began.
    pub complete: bool,
    /// Per timeline, the newest LSN the destination holds after the pass (see
    /// [`MirrorTimeline::mirrored`]).
    pub mirrored: BTreeMap<TimelineId, Lsn>,
}

/// An asynchronous copy of a store's object storage (`source`) in a second object store
/// (`destination`: another bucket, region or provider), kept by a task the mirror owns.
///
/// The destination is a consistent store at every moment: a store can
/// [attach](crate::Store::open) from it, read-only or as a new owner, and a
/// [`Secondary`](crate::Secondary) can follow it, and each sees the source's history up to the
/// [mirrored LSNs](MirrorTimeline::mirrored) — never an index naming a missing layer, never a
/// gap in the WAL. The mirror only reads the source. The protocol is in the module's source
/// documentation (`src/remote/mirror.rs`).
///
/// **Generations.** The mirror holds the source's generation in the destination under the node
/// id `mirror:{node_id}`. A store that opens writable on the destination (a promotion in the
/// mirror's region, after the source region is lost) claims the next generation there through
/// the normal path, waits the destination's claim grace, and owns it; the mirror's next pass
/// finds the newer claim, copies nothing more and reports [`MirrorState::Fenced`].
///
/// ```
/// use std::sync::Arc;
/// use stratakv::remote::RemoteStorage;
/// use stratakv::{Mirror, MirrorOptions, MirrorState, Store, StoreOptions};
/// use stratakv::object_store::{memory::InMemory, path::Path};
///
/// let source = RemoteStorage::new(Arc::new(InMemory::new()), Path::from("acme"));
/// let copy = RemoteStorage::new(Arc::new(InMemory::new()), Path::from("acme"));
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open_blocking(StoreOptions::new(dir.path()).remote(source.clone()))?;
/// let main = futures::executor::block_on(store.create_timeline("main"))?;
/// let mut w = main.writer()?;
/// w.put(b"k", stratakv::Lsn(1), stratakv::Value::image(&b"v"[..]))?;
/// w.finish_write_with(stratakv::Lsn(1), stratakv::Durability::Remote)?;
///
/// let mirror = Mirror::start(source, copy.clone(), MirrorOptions::new().interval(None))?;
/// let pass = mirror.sync_now()?;
/// assert!(pass.complete);
/// assert_eq!(pass.mirrored[&main.id()], stratakv::Lsn(1));
/// assert_eq!(mirror.status().state, MirrorState::InSync);
/// mirror.stop();
/// # drop(w);
/// # futures::executor::block_on(store.close())?;
/// # Ok::<(), stratakv::Error>(())
/// ```
pub struct Mirror {
    inner: Arc<Inner>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("source", &self.inner.source)
            .field("destination", &self.inner.dest)
            .finish_non_exhaustive()
    }
}

/// The destination's newest index of a timeline, as the mirror knows it.
struct DestIndex {
    bytes: Bytes,
    dcl: Lsn,
    /// The layer objects it names.
    layers: BTreeSet<String>,
}

/// What the mirror knows of the destination between passes.
#[derive(Default)]
struct Work {
    /// The generation the mirror holds in the destination.
    held: Option<Generation>,
    /// Whether the destination's indexes and catalog were read (once per start).
    loaded: bool,
    indexes: BTreeMap<TimelineId, DestIndex>,
    catalog: Option<(Bytes, Catalog)>,
    /// Per WAL chunk in the destination, the highest LSN of each timeline's records in it.
    chunk_lsns: BTreeMap<String, BTreeMap<TimelineId, Lsn>>,
    /// The heartbeat last written to the destination.
    heartbeat: Option<String>,
    /// Per timeline, the highest LSN seen in the source.
    source_seen: BTreeMap<TimelineId, Lsn>,
    passes: u64,
    copied_objects: u64,
    copied_bytes: u64,
    deleted_objects: u64,
}

/// A source index read by a survey.
struct SourceIndex {
    generation: Generation,
    bytes: Bytes,
    index: RemoteIndex,
}

/// What a survey of the source found, in the order it was read.
struct Survey {
    generation: Generation,
    node: String,
    heartbeat: Option<Heartbeat>,
    /// WAL chunks at or below `generation`: `(seq, generation, name, size)`, sorted.
    chunks: Vec<(u64, Generation, String, u64)>,
    /// WAL start records at or below `generation`.
    starts: Vec<String>,
    /// Everything under `timelines/`: name → size.
    objects: BTreeMap<String, u64>,
    indexes: BTreeMap<TimelineId, SourceIndex>,
    /// Timelines whose index vanished while it was read (deleted, or rewritten meanwhile).
    unreadable: BTreeSet<TimelineId>,
    catalog: Option<(Generation, Bytes, Catalog)>,
    /// Objects of a generation above `generation` were listed: the source moved on meanwhile.
    newer: bool,
}

/// What the destination holds now: its listings.
struct DestListing {
    chunks: BTreeMap<String, (u64, Generation)>,
    starts: BTreeSet<String>,
    objects: BTreeSet<String>,
}

/// When the destination was last complete, and since when it is behind.
#[derive(Default)]
struct Times {
    last_complete: Option<Instant>,
    behind_since: Option<Instant>,
}

struct Inner {
    source: RemoteStorage,
    dest: RemoteStorage,
    options: MirrorOptions,
    claim_node: String,
    work: tokio::sync::Mutex<Work>,
    status: watch::Sender<MirrorStatus>,
    times: Mutex<Times>,
    stop: AtomicBool,
    paused: AtomicBool,
    fenced: AtomicBool,
    wake: Notify,
}

impl Mirror {
    /// Starts mirroring `source` into `destination`: with an
    /// [interval](MirrorOptions::interval), a task of the mirror's own runtime runs a pass at
    /// once and then one per interval. Neither store is touched before the first pass.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] if the interval is zero, the node id is empty, or the
    /// destination is the source (the same object store, a prefix inside the other's);
    /// [`ErrorKind::Io`] if the runtime cannot start.
    pub fn start(
        source: RemoteStorage,
        destination: RemoteStorage,
        options: MirrorOptions,
    ) -> Result<Mirror> {
        if options.interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid("mirror interval must not be zero"));
        }
        if options.node_id.is_empty() || options.node_id.contains('\n') {
            return Err(Error::invalid(format!(
                "invalid mirror node id {:?}: it must be non-empty and on one line",
                options.node_id
            )));
        }
        if Arc::ptr_eq(source.store(), destination.store()) {
            let (a, b) = (source.prefix().as_ref(), destination.prefix().as_ref());
            let inside = |outer: &str, inner: &str| {
                outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}/"))
            };
            if inside(a, b) || inside(b, a) {
                return Err(Error::invalid(format!(
                    "a mirror's destination {b:?} overlaps its source {a:?} in the same object store"
                )));
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stratakv-mirror")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Io, format!("starting the mirror's runtime: {e}"))
                    .with_source(e)
            })?;
        let inner = Arc::new(Inner {
            claim_node: format!("mirror:{}", options.node_id),
            source,
            dest: destination,
            options,
            work: tokio::sync::Mutex::new(Work::default()),
            status: watch::Sender::new(MirrorStatus {
                state: MirrorState::Initializing,
                source_generation: None,
                mirror_generation: None,
                timelines: BTreeMap::new(),
                lag_lsn: 0,
                lag_chunks: 0,
                lag_bytes: 0,
                lag: Duration::ZERO,
                since_complete_pass: None,
                passes: 0,
                copied_objects: 0,
                copied_bytes: 0,
                deleted_objects: 0,
                last_error: None,
            }),
            times: Mutex::new(Times::default()),
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let task = inner.options.interval.map(|interval| {
            let me = inner.clone();
            runtime.spawn(async move { me.run(interval).await })
        });
        Ok(Mirror {
            inner,
            runtime: Mutex::new(Some(runtime)),
            task: Mutex::new(task),
        })
    }

    /// Runs one pass now (waiting for a pass under way to finish first), whether or not the
    /// mirror is paused, and returns what it did. Blocking; callable from any thread, inside
    /// an async runtime or not (the pass runs on the mirror's own runtime).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Fenced`] once another node claimed in the destination;
    /// [`ErrorKind::Corruption`] naming a source object that fails its checksum or does not
    /// decode (nothing after it in the pass's order is copied); [`ErrorKind::Closed`] after
    /// [`stop`](Mirror::stop); errors of either object store.
    pub fn sync_now(&self) -> Result<MirrorPass> {
        let inner = self.inner.clone();
        let handle = self.spawn(async move { inner.pass_and_publish().await })?;
        futures::executor::block_on(handle).map_err(|e| {
            Error::new(
                ErrorKind::Closed,
                format!("the mirror stopped during the pass: {e}"),
            )
        })?
    }

    /// Reads the source and reports the lag now, copying nothing. Blocking, as
    /// [`sync_now`](Mirror::sync_now).
    ///
    /// # Errors
    ///
    /// Errors of reading either object store; [`ErrorKind::Closed`] after
    /// [`stop`](Mirror::stop).
    pub fn measure(&self) -> Result<MirrorStatus> {
        let inner = self.inner.clone();
        let handle = self.spawn(async move { inner.measure_and_publish().await })?;
        futures::executor::block_on(handle).map_err(|e| {
            Error::new(
                ErrorKind::Closed,
                format!("the mirror stopped during the measurement: {e}"),
            )
        })??;
        Ok(self.status())
    }

    /// The status as of the last pass or measurement, with
    /// [`since_complete_pass`](MirrorStatus::since_complete_pass) and
    /// [`lag`](MirrorStatus::lag) as of now.
    pub fn status(&self) -> MirrorStatus {
        let mut s = self.inner.status.borrow().clone();
        let times = self.inner.times.lock();
        let now = Instant::now();
        s.since_complete_pass = times.last_complete.map(|t| now - t);
        s.lag = times.behind_since.map_or(Duration::ZERO, |t| now - t);
        s
    }

    /// The status, and every change of it (each pass and measurement publishes one).
    pub fn subscribe(&self) -> watch::Receiver<MirrorStatus> {
        self.inner.status.subscribe()
    }

    /// Stops copying in the background: the task only measures the lag each interval until
    /// [`resume`](Mirror::resume). [`sync_now`](Mirror::sync_now) still copies.
    pub fn pause(&self) {
        self.inner.paused.store(true, Ordering::Release);
        self.inner.status.send_modify(|s| {
            if matches!(s.state, MirrorState::InSync | MirrorState::CatchingUp) {
                s.state = MirrorState::Paused;
            }
        });
    }

    /// Copies in the background again, with a pass at once.
    pub fn resume(&self) {
        self.inner.paused.store(false, Ordering::Release);
        self.inner.wake.notify_one();
    }

    /// Stops the task (after the pass under way) and the runtime. The destination stays as
    /// the last pass left it: a consistent store.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        if let Some(task) = self.task.lock().take() {
            let _ = futures::executor::block_on(task);
        }
        if let Some(rt) = self.runtime.lock().take() {
            // The task has returned; a pass of a `sync_now` still running is cut short, which
            // leaves the destination consistent (every step is).
            rt.shutdown_background();
        }
        self.inner
            .status
            .send_modify(|s| s.state = MirrorState::Stopped);
    }

    fn spawn<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<T>> {
        let rt = self.runtime.lock();
        match rt.as_ref() {
            Some(rt) if !self.inner.stop.load(Ordering::Acquire) => Ok(rt.spawn(f)),
            _ => Err(Error::new(ErrorKind::Closed, "the mirror is stopped")),
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if self.runtime.lock().is_some() {
            self.stop();
        }
    }
}

impl Inner {
    /// The task: a pass (or, paused, a measurement) per interval until stopped.
    async fn run(self: Arc<Self>, interval: Duration) {
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            if !self.fenced.load(Ordering::Acquire) {
                // Failures are in the status; the next interval retries.
                if self.paused.load(Ordering::Acquire) {
                    let _ = self.measure_and_publish().await;
                } else {
                    let _ = self.pass_and_publish().await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    async fn pass_and_publish(&self) -> Result<MirrorPass> {
        let mut work = self.work.lock().await;
        work.passes += 1;
        let result = self.pass(&mut work).await;
        match &result {
            Ok(_) => {}
            Err(e) => {
                if e.kind() == ErrorKind::Fenced {
                    self.fenced.store(true, Ordering::Release);
                }
                let fenced = self.fenced.load(Ordering::Acquire);
                let e = e.clone();
                let passes = work.passes;
                self.status.send_modify(|s| {
                    s.state = if fenced {
                        MirrorState::Fenced
                    } else {
                        MirrorState::Failing
                    };
                    s.passes = passes;
                    s.last_error = Some(e);
                });
            }
        }
        result
    }

    async fn measure_and_publish(&self) -> Result<()> {
        let mut work = self.work.lock().await;
        work.passes += 1;
        let result: Result<()> = async {
            let Some(survey) = survey(&self.source).await? else {
                return Ok(());
            };
            let listing = self.list_dest().await?;
            let state = if self.paused.load(Ordering::Acquire) {
                MirrorState::Paused
            } else {
                MirrorState::CatchingUp
            };
            self.publish(&work, &survey, &listing, state, None);
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            let e = e.clone();
            self.status.send_modify(|s| s.last_error = Some(e));
        }
        drop(work);
        result
    }

    /// One copying pass (see the module docs for the order and why).
    async fn pass(&self, work: &mut Work) -> Result<MirrorPass> {
        if self.fenced.load(Ordering::Acquire) {
            return Err(self.fenced_error(work.held));
        }
        let mut done = MirrorPass::default();
        let Some(mut survey) = survey(&self.source).await? else {
            // Nothing claimed in the source yet: nothing to mirror.
            done.complete = true;
            return Ok(done);
        };
        let g = self.claim(work, survey.generation).await?;
        if !work.loaded {
            self.load_dest(work).await?;
            work.loaded = true;
        }
        let mut listing = self.list_dest().await?;
        self.learn_chunks(work, &listing).await?;

        // WAL start records first: they make a fenced owner's late chunks invalid.
        for name in &survey.starts {
            if !listing.starts.contains(name) {
                self.copy(name, None, &mut done).await?;
                listing.starts.insert(name.clone());
            }
        }

        // Layers, then (checked) the indexes whose layers are all there.
        let mut current: BTreeSet<TimelineId> = BTreeSet::new();
        let ids: Vec<TimelineId> = survey.indexes.keys().copied().collect();
        for tl in ids {
            if self
                .copy_layers(tl, &mut survey, &mut listing, &mut done)
                .await?
            {
                current.insert(tl);
            }
        }
        self.check(g).await?;
        for tl in &current {
            let src = &survey.indexes[tl];
            if work.indexes.get(tl).is_some_and(|d| d.bytes == src.bytes) {
                continue;
            }
            let name = index_object(*tl, src.generation);
            self.dest.upload(&name, src.bytes.clone()).await?;
            done.copied_objects += 1;
            done.copied_bytes += src.bytes.len() as u64;
            work.indexes
                .insert(*tl, dest_index(*tl, &src.index, src.bytes.clone())?);
            listing.objects.insert(name);
        }

        // The catalog, once every timeline it names has its index.
        let mut catalog_current = survey.catalog.is_none() && work.catalog.is_none();
        if let Some((cg, bytes, catalog)) = &survey.catalog {
            let ready = catalog.timelines.iter().all(|e| current.contains(&e.id));
            if work.catalog.as_ref().is_some_and(|(b, _)| b == bytes) {
                catalog_current = true;
            } else if ready {
                self.check(g).await?;
                self.dest
                    .upload(&catalog_object(*cg), bytes.clone())
                    .await?;
                done.copied_objects += 1;
                done.copied_bytes += bytes.len() as u64;
                work.catalog = Some((bytes.clone(), catalog.clone()));
                catalog_current = true;
            }
        }
        let all_current = catalog_current
            && !survey.newer
            && survey.unreadable.is_empty()
            && current.len() == survey.indexes.len()
            && work
                .catalog
                .as_ref()
                .is_none_or(|(_, c)| c.timelines.iter().all(|e| current.contains(&e.id)));

        // Chunks the source deleted (covered by the indexes just copied), oldest first.
        if all_current {
            let in_source: BTreeSet<&str> = survey
                .chunks
                .iter()
                .map(|(_, _, n, _)| n.as_str())
                .collect();
            let gone: Vec<String> = listing
                .chunks
                .keys()
                .filter(|n| !in_source.contains(n.as_str()))
                .cloned()
                .collect();
            for name in gone {
                self.dest.delete_checked(g, &name).await?;
                listing.chunks.remove(&name);
                work.chunk_lsns.remove(&name);
                done.deleted_objects += 1;
            }
        }

        // New chunks, in order, never leaving a gap.
        let mut chunks_current = true;
        let last_here = listing.chunks.values().map(|(seq, _)| *seq).max();
        let missing: Vec<(u64, Generation, String, u64)> = survey
            .chunks
            .iter()
            .filter(|(_, _, n, _)| !listing.chunks.contains_key(n))
            .cloned()
            .collect();
        let continues = match (missing.first(), last_here) {
            (None, _) => true,
            (Some(_), _) if all_current => true,
            (Some((seq, ..)), Some(last)) => *seq <= last + 1,
            (Some(_), None) => false,
        };
        if continues {
            for (seq, cg, name, _) in missing {
                match self.copy_chunk(seq, &name, &mut done).await {
                    Ok(lsns) => {
                        for (tl, lsn) in &lsns {
                            let e = work.source_seen.entry(*tl).or_insert(*lsn);
                            *e = (*e).max(*lsn);
                        }
                        work.chunk_lsns.insert(name.clone(), lsns);
                        listing.chunks.insert(name, (seq, cg));
                    }
                    // Deleted since the listing (an index covers it now): the next pass.
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        chunks_current = false;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        } else {
            chunks_current = false;
        }

        // Objects nothing names any more, and timelines the catalog dropped.
        if all_current {
            self.delete_unnamed(g, work, &survey, &mut listing, &mut done)
                .await?;
        }

        done.complete = all_current && chunks_current;
        let mirrored = self.mirrored(work, &listing);
        if done.complete
            && let Some(hb) = &survey.heartbeat
            && hb.generation == g
        {
            let mut copy = hb.clone();
            copy.timelines = mirrored.clone();
            let text = copy.encode();
            if work.heartbeat.as_deref() != Some(text.as_str()) {
                self.dest
                    .upload(&heartbeat_object_of(g), Bytes::from(text.clone()))
                    .await?;
                work.heartbeat = Some(text);
            }
        }
        done.mirrored = mirrored;
        work.copied_objects += done.copied_objects;
        work.copied_bytes += done.copied_bytes;
        work.deleted_objects += done.deleted_objects;
        let state = if done.complete {
            MirrorState::InSync
        } else {
            MirrorState::CatchingUp
        };
        self.publish(work, &survey, &listing, state, Some(done.complete));
        Ok(done)
    }

    /// Holds the source's generation `target` in the destination: adopts a claim of this
    /// mirror found there, claims up to `target`, or checks the claim it holds.
    async fn claim(&self, work: &mut Work, target: Generation) -> Result<Generation> {
        if work.held.is_none() {
            match self.dest.peek_generation().await? {
                None => {}
                Some((g, node)) if node == self.claim_node && g <= target => work.held = Some(g),
                Some((g, node)) => {
                    return Err(Error::new(
                        ErrorKind::Fenced,
                        format!(
                            "mirror {:?}: the destination {} is owned by generation {g} of node {node:?}, not by this mirror below the source's generation {target}",
                            self.claim_node,
                            self.dest.prefix()
                        ),
                    ));
                }
            }
        }
        match work.held {
            Some(h) if h == target => self.check(h).await?,
            Some(h) if h > target => {
                return Err(Error::invalid(format!(
                    "mirror {:?} holds generation {h} in {} but the source {} is at generation {target}: is it the same source?",
                    self.claim_node,
                    self.dest.prefix(),
                    self.source.prefix()
                )));
            }
            held => {
                self.dest
                    .claim_exact(&self.claim_node, held, target)
                    .await?;
                work.held = Some(target);
            }
        }
        Ok(target)
    }

    /// Fails with `Fenced` if a newer generation than `g` was claimed in the destination.
    async fn check(&self, g: Generation) -> Result<()> {
        self.dest.check_generation(g).await.map_err(|e| {
            if e.kind() == ErrorKind::Fenced {
                e.context(format!("mirror {:?}", self.claim_node))
            } else {
                e
            }
        })
    }

    fn fenced_error(&self, held: Option<Generation>) -> Error {
        Error::new(
            ErrorKind::Fenced,
            format!(
                "mirror {:?}: a newer generation than its {held:?} was claimed in {}; it copies nothing more",
                self.claim_node,
                self.dest.prefix()
            ),
        )
    }

    /// Reads the destination's newest indexes and catalog (at the first pass after a start).
    async fn load_dest(&self, work: &mut Work) -> Result<()> {
        let mut newest: BTreeMap<TimelineId, Generation> = BTreeMap::new();
        for (name, _) in self.dest.list("timelines").await? {
            if let Some((tl, file)) = split_timeline_object(&name)
                && let Some(g) = parse_stem_generation(file, INDEX_STEM)
            {
                let e = newest.entry(tl).or_insert(g);
                *e = (*e).max(g);
            }
        }
        for (tl, g) in newest {
            let name = index_object(tl, g);
            let bytes = self.dest.download(&name).await?;
            let index = RemoteIndex::decode(&bytes, &PathBuf::from(&name))?;
            work.indexes.insert(tl, dest_index(tl, &index, bytes)?);
        }
        if let Some((g, bytes)) = self.dest.latest_catalog(Generation(u32::MAX)).await? {
            let catalog = Catalog::decode(&bytes, &PathBuf::from(catalog_object(g)))?;
            work.catalog = Some((bytes, catalog));
        }
        Ok(())
    }

    async fn list_dest(&self) -> Result<DestListing> {
        let chunks = self
            .dest
            .list(WAL_DIR)
            .await?
            .into_iter()
            .filter_map(|(name, _)| {
                let (seq, g) = parse_wal_chunk(&name)?;
                Some((name, (seq, g)))
            })
            .collect();
        let starts = self
            .dest
            .list(WAL_STARTS_DIR)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let objects = self
            .dest
            .list("timelines")
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        Ok(DestListing {
            chunks,
            starts,
            objects,
        })
    }

    /// Reads the destination's chunks the mirror has not seen (after a restart).
    async fn learn_chunks(&self, work: &mut Work, listing: &DestListing) -> Result<()> {
        work.chunk_lsns
            .retain(|n, _| listing.chunks.contains_key(n));
        for (name, (seq, _)) in &listing.chunks {
            if work.chunk_lsns.contains_key(name) {
                continue;
            }
            let bytes = self.dest.download(name).await?;
            let lsns = check_chunk(*seq, name, &bytes)?;
            work.chunk_lsns.insert(name.clone(), lsns);
        }
        Ok(())
    }

    /// Copies `name` from the source to the destination, checking its trailer and, when
    /// given, its size; returns its bytes.
    async fn copy(&self, name: &str, size: Option<u64>, done: &mut MirrorPass) -> Result<Bytes> {
        let bytes = self.source.download(name).await?;
        if let Some(size) = size
            && bytes.len() as u64 != size
        {
            return Err(Error::new(
                ErrorKind::Corruption,
                format!(
                    "object {name} under {}: {} bytes, its index says {size}; not mirrored",
                    self.source.prefix(),
                    bytes.len()
                ),
            ));
        }
        self.dest.upload(name, bytes.clone()).await?;
        done.copied_objects += 1;
        done.copied_bytes += bytes.len() as u64;
        Ok(bytes)
    }

    /// Copies the layers `tl`'s source index names that the destination lacks; reads the
    /// index again when one vanished. Returns whether all of them are there now.
    async fn copy_layers(
        &self,
        tl: TimelineId,
        survey: &mut Survey,
        listing: &mut DestListing,
        done: &mut MirrorPass,
    ) -> Result<bool> {
        'rounds: for round in 0..INDEX_ROUNDS {
            let Some(src) = survey.indexes.get(&tl) else {
                return Ok(false);
            };
            let sizes: BTreeMap<&str, u64> = src
                .index
                .manifest
                .layers
                .iter()
                .map(|d| (d.file_name.as_str(), d.file_size))
                .collect();
            let mut wanted = Vec::new();
            for (file, g) in &src.index.layer_generations {
                let name = layer_object(tl, file, Generation(*g))?;
                if !listing.objects.contains(&name) {
                    wanted.push((name, sizes.get(file.as_str()).copied()));
                }
            }
            for (name, size) in wanted {
                match self.copy(&name, size, done).await {
                    Ok(_) => {
                        listing.objects.insert(name);
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound && round + 1 < INDEX_ROUNDS => {
                        // Compacted away since: the source has a newer index.
                        match read_newest_index(&self.source, tl, survey.generation).await? {
                            Some((generation, bytes, index)) => {
                                survey.indexes.insert(
                                    tl,
                                    SourceIndex {
                                        generation,
                                        bytes,
                                        index,
                                    },
                                );
                            }
                            None => {
                                survey.indexes.remove(&tl);
                                survey.unreadable.insert(tl);
                                return Ok(false);
                            }
                        }
                        continue 'rounds;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(e.context("mirroring a layer")),
                }
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Copies WAL chunk `seq` after checking that it decodes whole; returns its LSNs.
    async fn copy_chunk(
        &self,
        seq: u64,
        name: &str,
        done: &mut MirrorPass,
    ) -> Result<BTreeMap<TimelineId, Lsn>> {
        let bytes = self.source.download(name).await?;
        let lsns = check_chunk(seq, name, &bytes).map_err(|e| {
            e.context(format!(
                "WAL chunk under {}; not mirrored",
                self.source.prefix()
            ))
        })?;
        self.dest.upload(name, bytes.clone()).await?;
        done.copied_objects += 1;
        done.copied_bytes += bytes.len() as u64;
        Ok(lsns)
    }

    /// Deletes the destination's layer objects no copied index names and the source no
    /// longer has, and every object of a timeline the source and the copied catalog dropped.
    async fn delete_unnamed(
        &self,
        g: Generation,
        work: &mut Work,
        survey: &Survey,
        listing: &mut DestListing,
        done: &mut MirrorPass,
    ) -> Result<()> {
        let named: BTreeSet<TimelineId> = work
            .catalog
            .as_ref()
            .map(|(_, c)| c.timelines.iter().map(|e| e.id).collect())
            .unwrap_or_default();
        let source_timelines: BTreeSet<TimelineId> = survey
            .objects
            .keys()
            .filter_map(|n| split_timeline_object(n).map(|(tl, _)| tl))
            .collect();
        let mut doomed = Vec::new();
        let mut indexes_doomed = Vec::new();
        for name in &listing.objects {
            let Some((tl, file)) = split_timeline_object(name) else {
                continue;
            };
            let is_index = parse_stem_generation(file, INDEX_STEM).is_some();
            if !source_timelines.contains(&tl) && !named.contains(&tl) {
                // A deleted timeline: layers first, its indexes last.
                if is_index {
                    indexes_doomed.push(name.clone());
                } else {
                    doomed.push(name.clone());
                }
            } else if !is_index
                && !survey.objects.contains_key(name)
                && work
                    .indexes
                    .get(&tl)
                    .is_none_or(|d| !d.layers.contains(name))
            {
                doomed.push(name.clone());
            }
        }
        doomed.extend(indexes_doomed);
        for name in doomed {
            self.dest.delete_checked(g, &name).await?;
            listing.objects.remove(&name);
            if let Some((tl, file)) = split_timeline_object(&name)
                && parse_stem_generation(file, INDEX_STEM).is_some()
            {
                work.indexes.remove(&tl);
            }
            done.deleted_objects += 1;
        }
        Ok(())
    }

    /// Per timeline the destination's catalog names, the newest LSN it holds.
    fn mirrored(&self, work: &Work, listing: &DestListing) -> BTreeMap<TimelineId, Lsn> {
        let mut listed: Vec<(u64, Generation, String)> = listing
            .chunks
            .iter()
            .map(|(n, (seq, g))| (*seq, *g, n.clone()))
            .collect();
        listed.sort();
        let starts: BTreeMap<Generation, u64> = listing
            .starts
            .iter()
            .filter_map(|n| parse_wal_start(n))
            .collect();
        let (valid, _) = valid_chunks(&listed, &starts);
        let mut out = BTreeMap::new();
        let Some((_, catalog)) = &work.catalog else {
            return out;
        };
        for e in &catalog.timelines {
            let mut lsn = work.indexes.get(&e.id).map_or(Lsn::ZERO, |d| d.dcl);
            for (_, name) in &valid {
                if let Some(l) = work.chunk_lsns.get(name).and_then(|m| m.get(&e.id)) {
                    lsn = lsn.max(*l);
                }
            }
            out.insert(e.id, lsn);
        }
        out
    }

    /// Publishes the status after a pass (`complete` known) or a measurement (`None`).
    fn publish(
        &self,
        work: &Work,
        survey: &Survey,
        listing: &DestListing,
        state: MirrorState,
        complete: Option<bool>,
    ) {
        let mirrored = self.mirrored(work, listing);
        let mut timelines: BTreeMap<TimelineId, MirrorTimeline> = BTreeMap::new();
        let mut names: BTreeMap<TimelineId, String> = BTreeMap::new();
        for c in [
            work.catalog.as_ref().map(|(_, c)| c),
            survey.catalog.as_ref().map(|(_, _, c)| c),
        ]
        .into_iter()
        .flatten()
        {
            for e in &c.timelines {
                names.insert(e.id, e.name.clone());
            }
        }
        let source_catalog: Option<BTreeSet<TimelineId>> = survey
            .catalog
            .as_ref()
            .map(|(_, _, c)| c.timelines.iter().map(|e| e.id).collect());
        let mut source: BTreeMap<TimelineId, Lsn> = BTreeMap::new();
        let mut raise = |tl: TimelineId, lsn: Lsn| {
            let e = source.entry(tl).or_insert(lsn);
            *e = (*e).max(lsn);
        };
        for (tl, src) in &survey.indexes {
            raise(*tl, src.index.manifest.disk_consistent_lsn);
        }
        if let Some(hb) = &survey.heartbeat {
            for (tl, lsn) in &hb.timelines {
                raise(*tl, *lsn);
            }
        }
        for (tl, lsn) in &work.source_seen {
            if survey.indexes.contains_key(tl) {
                raise(*tl, *lsn);
            }
        }
        for (tl, lsn) in source {
            // Timelines the source's catalog no longer names are not lag.
            if source_catalog.as_ref().is_some_and(|c| !c.contains(&tl)) {
                continue;
            }
            timelines.insert(
                tl,
                MirrorTimeline {
                    name: names.get(&tl).cloned(),
                    source: lsn,
                    mirrored: mirrored.get(&tl).copied().unwrap_or(Lsn::ZERO),
                },
            );
        }
        for (tl, lsn) in &mirrored {
            timelines.entry(*tl).or_insert_with(|| MirrorTimeline {
                name: names.get(tl).cloned(),
                source: Lsn::ZERO,
                mirrored: *lsn,
            });
        }
        let lag_lsn = timelines
            .values()
            .map(|t| t.source.0.saturating_sub(t.mirrored.0))
            .max()
            .unwrap_or(0);
        let (mut lag_chunks, mut lag_bytes) = (0u64, 0u64);
        for (_, _, name, size) in &survey.chunks {
            if !listing.chunks.contains_key(name) {
                lag_chunks += 1;
                lag_bytes += size;
            }
        }
        for (tl, src) in &survey.indexes {
            for (file, g) in &src.index.layer_generations {
                if let Ok(name) = layer_object(*tl, file, Generation(*g))
                    && !listing.objects.contains(&name)
                {
                    lag_bytes += survey.objects.get(&name).copied().unwrap_or(0);
                }
            }
        }
        let now = Instant::now();
        let (since_complete_pass, lag) = {
            let mut t = self.times.lock();
            if complete == Some(true) {
                t.last_complete = Some(now);
            }
            if lag_lsn > 0 || lag_chunks > 0 || complete == Some(false) {
                t.behind_since.get_or_insert(now);
            } else {
                t.behind_since = None;
            }
            (
                t.last_complete.map(|at| now - at),
                t.behind_since.map_or(Duration::ZERO, |at| now - at),
            )
        };
        let held = work.held;
        self.status.send_modify(|s| {
            s.state = state;
            s.source_generation = Some((survey.generation, survey.node.clone()));
            s.mirror_generation = held;
            s.timelines = timelines;
            s.lag_lsn = lag_lsn;
            s.lag_chunks = lag_chunks;
            s.lag_bytes = lag_bytes;
            s.lag = lag;
            s.since_complete_pass = since_complete_pass;
            s.passes = work.passes;
            s.copied_objects = work.copied_objects;
            s.copied_bytes = work.copied_bytes;
            s.deleted_objects = work.deleted_objects;
            s.last_error = None;
        });
    }
}

/// Reads the source, in the order the protocol needs: claim, heartbeat, WAL chunks, WAL
/// starts, `timelines/`, indexes, catalog. `None` if nothing was ever claimed there.
async fn survey(source: &RemoteStorage) -> Result<Option<Survey>> {
    let Some((generation, node)) = source.peek_generation().await? else {
        return Ok(None);
    };
    let heartbeat = source.read_heartbeat(generation).await?;
    let mut newer = false;
    let mut chunks = Vec::new();
    for (name, size) in source.list(WAL_DIR).await? {
        if let Some((seq, g)) = parse_wal_chunk(&name) {
            if g > generation {
                newer = true;
            } else {
                chunks.push((seq, g, name, size));
            }
        }
    }
    chunks.sort();
    let mut starts = Vec::new();
    for (name, _) in source.list(WAL_STARTS_DIR).await? {
        if let Some((g, _)) = parse_wal_start(&name) {
            if g > generation {
                newer = true;
            } else {
                starts.push(name);
            }
        }
    }
    let objects: BTreeMap<String, u64> = source.list("timelines").await?.into_iter().collect();
    let mut timelines: BTreeSet<TimelineId> = BTreeSet::new();
    for name in objects.keys() {
        if let Some((tl, file)) = split_timeline_object(name) {
            timelines.insert(tl);
            if let Some(g) = parse_stem_generation(file, INDEX_STEM)
                && g > generation
            {
                newer = true;
            }
        }
    }
    let mut indexes = BTreeMap::new();
    let mut unreadable = BTreeSet::new();
    for tl in timelines {
        match read_newest_index(source, tl, generation).await? {
            Some((g, bytes, index)) => {
                indexes.insert(
                    tl,
                    SourceIndex {
                        generation: g,
                        bytes,
                        index,
                    },
                );
            }
            // Layers without an index yet, or a deleted timeline's leftovers.
            None => {
                if objects.keys().any(|n| {
                    split_timeline_object(n).is_some_and(|(t, f)| {
                        t == tl && parse_stem_generation(f, INDEX_STEM).is_some()
                    })
                }) {
                    unreadable.insert(tl);
                }
            }
        }
    }
    let mut catalog = None;
    let newest_catalog = source
        .list_files(source.prefix())
        .await?
        .iter()
        .filter_map(|f| parse_stem_generation(f, CATALOG_STEM))
        .max();
    if newest_catalog.is_some_and(|g| g > generation) {
        newer = true;
    }
    if let Some((g, bytes)) = source.latest_catalog(generation).await? {
        let c = Catalog::decode(&bytes, &PathBuf::from(catalog_object(g)))
            .map_err(|e| e.context(format!("source {}", source.prefix())))?;
        catalog = Some((g, bytes, c));
    }
    Ok(Some(Survey {
        generation,
        node,
        heartbeat,
        chunks,
        starts,
        objects,
        indexes,
        unreadable,
        catalog,
        newer,
    }))
}

/// The newest index of `tl` at or below `max`, downloaded and decoded.
async fn read_newest_index(
    storage: &RemoteStorage,
    tl: TimelineId,
    max: Generation,
) -> Result<Option<(Generation, Bytes, RemoteIndex)>> {
    let found = match storage.latest_index(tl, max).await {
        Ok(found) => found,
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some((g, bytes)) = found else {
        return Ok(None);
    };
    let name = index_object(tl, g);
    let index = RemoteIndex::decode(&bytes, &PathBuf::from(&name))
        .map_err(|e| e.context(format!("index under {}", storage.prefix())))?;
    Ok(Some((g, bytes, index)))
}

/// The destination's view of an index it holds.
fn dest_index(tl: TimelineId, index: &RemoteIndex, bytes: Bytes) -> Result<DestIndex> {
    let layers = index
        .layer_generations
        .iter()
        .map(|(file, g)| layer_object(tl, file, Generation(*g)))
        .collect::<Result<_>>()?;
    Ok(DestIndex {
        bytes,
        dcl: index.manifest.disk_consistent_lsn,
        layers,
    })
}

/// Checks that WAL chunk `name` decodes whole as sequence `seq`; returns per timeline the
/// highest LSN of its records.
fn check_chunk(seq: u64, name: &str, bytes: &[u8]) -> Result<BTreeMap<TimelineId, Lsn>> {
    let path = PathBuf::from(name);
    let d = decode_wal_segment(bytes, &path)?;
    if d.torn_tail || d.seq != seq {
        return Err(Error::corruption(
            &path,
            d.valid_len as u64,
            if d.torn_tail {
                "WAL chunk ends in a torn record".to_string()
            } else {
                format!("WAL chunk header says sequence {:016x}", d.seq)
            },
        ));
    }
    let mut lsns = BTreeMap::new();
    for r in &d.records {
        let e = lsns.entry(r.timeline).or_insert(r.lsn);
        *e = (*e).max(r.lsn);
    }
    Ok(lsns)
}

/// `timelines/{id}/{file}` as the timeline and the file name.
fn split_timeline_object(name: &str) -> Option<(TimelineId, &str)> {
    let rest = name.strip_prefix("timelines/")?;
    let (id, file) = rest.split_once('/')?;
    Some((id.parse().ok()?, file))
}
