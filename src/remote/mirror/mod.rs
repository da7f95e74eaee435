//! [`Mirror`]: a second object store kept as an asynchronous copy of a store's first one.
//!
//! # The protocol
//!
//! Each pass **surveys** the source without writing to it — the claim (read, never probed),
//! the owner's heartbeat, the WAL chunk listing, the WAL start records, the claim again, the
//! `timelines/` listing, each timeline's newest index, the newest catalog, in that order — and
//! then brings the destination up to that survey in an order that keeps the destination a
//! consistent store after every single request:
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
//!    run never has a gap. None when the survey's second read of the claim found it moved: a
//!    new owner claimed after the first, and the old owner, fenced, may have landed a late
//!    chunk (never acknowledged) that the listing shows under the old claim with nothing yet
//!    to mark it invalid. The next pass surveys under the new claim, and copies the new
//!    owner's WAL start record (step 2) before any chunk, which makes such a chunk invalid to
//!    every reader of the destination;
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

mod pass;
mod source;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::{Generation, RemoteStorage};
use crate::error::{Error, ErrorKind, Result};
use crate::id::TimelineId;
use crate::lsn::Lsn;

use pass::Work;

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
/// documentation (`src/remote/mirror/mod.rs`).
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
