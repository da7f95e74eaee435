//! The store: one tenant's directory, its timelines, and the background flusher.
//!
//! The files of a store directory are listed in [`layout`](crate::layout).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::format::{Catalog, CatalogEntry, Manifest, WalRecord};
use crate::format::{RemoteIndex, decode_owner, encode_owner};
use crate::id::TimelineId;
use crate::io::Io;
use crate::layer::{BlockCache, Layer};
use crate::layout::{
    CATALOG_FILE, DISCARD_FILE, LOCK_FILE, MANIFEST_FILE, OWNER_FILE, READ_ONLY_FILE,
    TIME_INDEX_FILE, TIMELINES_DIR, WAL_DIR,
};
use crate::lsn::Lsn;
use crate::options::StoreOptions;
use crate::remote::{Generation, RemoteCtx};
use crate::timeline::{Env, StoreRuntime, Timeline, TimelineInner};
use crate::wal::{FsyncPolicy, Wal};

const CLOSE_UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How the WAL shipper batches, from the store's options.
fn ship_options(options: &StoreOptions) -> crate::remote::ShipOptions {
    crate::remote::ShipOptions {
        interval: options.remote_wal_interval,
        chunk_bytes: options.remote_wal_chunk_bytes,
    }
}

/// How long `close` waits for the uploader to stop before it gives up releasing the generation.
const CLOSE_RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const MAX_NAME_LEN: usize = 255;

/// The timelines and the catalog that names them, changed together.
struct State {
    catalog: Catalog,
    by_id: BTreeMap<TimelineId, Arc<TimelineInner>>,
}

impl State {
    fn find(&self, name: &str) -> Result<&Arc<TimelineInner>> {
        self.catalog
            .timelines
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| self.by_id.get(&e.id))
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no timeline named {name:?}")))
    }

    fn has_name(&self, name: &str) -> bool {
        self.catalog.timelines.iter().any(|e| e.name == name)
    }
}

/// Where a restore moves a branch name to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestorePoint {
    /// As of this LSN.
    Lsn(Lsn),
    /// As of the last commit at or before this time (see [`Timeline::lsn_at`]).
    Time(SystemTime),
}

/// What one catch-up of a read-only store did ([`Store::follow_wal`]).
pub(crate) enum Followed {
    /// Applied these chunks (perhaps none).
    Applied { chunks: usize, bytes: u64 },
    /// Cannot continue from what it applied: reopen from the indexes.
    Reload,
    /// Applied nothing: chunks were listed while an owner of this generation had claimed the
    /// store without recording where its chunks start, so some may be a fenced owner's late
    /// ones (see [`Store::follow_wal`]).
    Hold(crate::remote::Generation),
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The new timeline that now carries the name.
    pub timeline: Timeline,
    /// The LSN it was branched at.
    pub lsn: Lsn,
    /// The name the replaced timeline keeps, if the name was in use.
    pub backup_name: Option<String>,
}

/// What an open found stale in its directory and replaced with the remote's newer state: a
/// node that had lost the store to another reopened its old directory (see
/// [`Store::discarded_on_open`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discarded {
    /// The generation this directory last claimed; `None` if it has no record of one.
    pub local_generation: Option<Generation>,
    /// The newer generation that wrote to the remote since.
    pub remote_generation: Generation,
    /// Every timeline of the discarded local state.
    pub timelines: Vec<DiscardedTimeline>,
}

/// One timeline of discarded local state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscardedTimeline {
    /// The timeline.
    pub id: TimelineId,
    /// Its name in the discarded local catalog.
    pub name: String,
    /// The newest LSN the local state held for it (its layers and its write-ahead log).
    pub local_lsn: Lsn,
    /// The newest LSN the remote holds for it (`disk_consistent_lsn` of its newest index);
    /// `None` if the remote has no index of it. Local history above this was never made
    /// remote-consistent by the newer owner and is gone.
    pub remote_lsn: Option<Lsn>,
}

/// A store: one tenant's timelines in a local directory.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use stratakv::{Lsn, Store, StoreOptions, Value};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
/// let main = store.create_timeline("main").await.unwrap();
/// let mut w = main.writer().unwrap();
/// w.put(b"page/1", Lsn(0x10), Value::image("v1")).unwrap();
/// w.finish_write(Lsn(0x10)).unwrap();
/// w.put(b"page/1", Lsn(0x20), Value::image("v2")).unwrap();
/// w.finish_write(Lsn(0x20)).unwrap();
/// assert_eq!(main.get(b"page/1", Lsn(0x18)).await.unwrap().unwrap(), "v1");
/// assert_eq!(main.get(b"page/1", Lsn(0x20)).await.unwrap().unwrap(), "v2");
///
/// let dev = store.branch("dev", &main, Lsn(0x18)).await.unwrap();
/// assert_eq!(dev.get(b"page/1", Lsn(0x18)).await.unwrap().unwrap(), "v1");
/// store.close().await.unwrap();
/// # });
/// ```
pub struct Store {
    dir: PathBuf,
    env: Arc<Env>,
    state: Arc<Mutex<State>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The store's own runtime: uploads, downloads, timers, blocking halves of async calls.
    runtime: Mutex<StoreRuntime>,
    discarded: Option<Discarded>,
    /// How long open waited for the previous owner's deletions (see `claim_wait`).
    claim_wait: Duration,
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store in `options.path()`, creating it if the directory is missing or empty.
    ///
    /// Files a crash left behind (layers no manifest names, half-written temporary files,
    /// timelines the catalog does not list) are removed.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for bad options or a non-empty directory that is not a
    /// store; [`ErrorKind::Locked`] if another open store holds the directory;
    /// [`ErrorKind::Corruption`] if the catalog, a manifest or a layer footer is damaged.
    pub async fn open(options: StoreOptions) -> Result<Store> {
        // Opening reads and fsyncs files and may wait on object storage: it runs on a thread of
        // its own, so it blocks no executor and needs none (any executor can await it).
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::Builder::new()
            .name("stratakv-open".into())
            .spawn(move || {
                let _ = tx.send(Store::open_blocking(options));
            })
            .map_err(|e| Error::new(ErrorKind::Io, format!("starting the open thread: {e}")))?;
        rx.await.map_err(|_| {
            Error::new(
                ErrorKind::Io,
                "opening the store: the open thread ended without an answer (it panicked)",
            )
        })?
    }

    /// [`open`](Store::open) for callers on plain threads: blocks the calling thread until
    /// the store is open. Needs no async runtime; do not call it from inside an async task
    /// (await [`open`](Store::open) there).
    ///
    /// The store starts its own threads and a small runtime of its own for uploads,
    /// downloads and timers, and stops them at [`close`](Store::close) or drop.
    ///
    /// # Errors
    /// As [`open`](Store::open).
    pub fn open_blocking(options: StoreOptions) -> Result<Store> {
        let runtime = StoreRuntime::start()?;
        let rt = runtime.handle();
        options.validate()?;
        let io = Io::new(options.fs.clone());
        let dir = options.path.clone();
        let catalog_path = dir.join(CATALOG_FILE);
        let discard_marker = dir.join(DISCARD_FILE);
        let read_only = options.read_only;
        let read_only_marker = dir.join(READ_ONLY_FILE);
        let is_new = if dir.exists() {
            if !dir.is_dir() {
                return Err(Error::invalid(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            if read_only {
                // The directory is only a cache, rebuilt below; it must not be someone's store.
                if !read_only_marker.exists()
                    && !io
                        .list_dir(&dir)?
                        .iter()
                        .all(|n| is_leftover_of_creation(&dir, n))
                {
                    return Err(Error::invalid(format!(
                        "{}: a read-only store needs an empty directory (or its own earlier cache) to download into; this one holds other files",
                        dir.display()
                    )));
                }
                true
            } else if read_only_marker.exists() {
                return Err(Error::invalid(format!(
                    "{} is a read-only store's cache ({} is there); open it read-only, or give a writable store an empty directory",
                    dir.display(),
                    read_only_marker.display()
                )));
            } else if discard_marker.exists() {
                if options.remote.is_none() {
                    return Err(Error::invalid(format!(
                        "{}: an earlier open was replacing this directory's stale state with its remote's newer state ({} is there); open it with its remote",
                        dir.display(),
                        discard_marker.display()
                    )));
                }
                // That open is finished as an attach: what was there is wiped below.
                true
            } else if catalog_path.exists() {
                false
            } else if io
                .list_dir(&dir)?
                .iter()
                .all(|n| is_leftover_of_creation(&dir, n))
            {
                // Empty, or a first open that crashed before its catalog was in place.
                true
            } else {
                return Err(Error::invalid(format!(
                    "{} is not a StrataKV store (it has no {CATALOG_FILE} file) and is not empty",
                    dir.display()
                )));
            }
        } else {
            io.create_dir_durably(&dir)?;
            true
        };
        let lock = lock_dir(&dir)?;
        let timelines_dir = dir.join(TIMELINES_DIR);
        let mut claim_wait = Duration::ZERO;
        let remote = match &options.remote {
            None => None,
            Some(storage) if read_only => {
                // No claim: the owner keeps its generation. Read the newest state there is.
                let storage = storage.clone().with_entropy(options.entropy.clone());
                for leftover in [&timelines_dir, &dir.join(CATALOG_FILE)] {
                    if leftover.exists() {
                        remove_any(&io, leftover)?;
                    }
                }
                io.write_atomic(&read_only_marker, &[])?;
                Some(RemoteCtx::new(
                    storage,
                    Generation(u32::MAX),
                    rt.clone(),
                    options.local_disk_budget,
                    true,
                    ship_options(&options),
                    options.node_id.clone(),
                ))
            }
            Some(storage) => {
                let storage = storage.clone().with_entropy(options.entropy.clone());
                // The generation this directory held last: its process has exited (the lock
                // above is ours), so nothing it deleted is still in flight.
                let owner_path = dir.join(OWNER_FILE);
                let own_previous = match io.read(&owner_path) {
                    Ok(bytes) => Some(Generation(decode_owner(&bytes, &owner_path)?)),
                    Err(e) if e.kind() == ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
                let generation = rt.block_on(storage.claim_generation(&options.node_id))?;
                // An old owner's deletion validated just before this claim finishes within the
                // grace period: read the index only after it — unless that owner is known to
                // be done (none, released at close, or this directory's own exited process).
                claim_wait = rt.block_on(storage.claim_wait(generation, own_previous))?;
                std::thread::sleep(claim_wait);
                Some(RemoteCtx::new(
                    storage.clone(),
                    generation,
                    rt.clone(),
                    options.local_disk_budget,
                    false,
                    ship_options(&options),
                    options.node_id.clone(),
                ))
            }
        };
        // A read-only store reads its owner's WAL chunks before the indexes: a chunk the owner
        // deleted before this listing was covered by an index uploaded before it, which the
        // reads below find. (Read after the indexes, the chunks left could lie above commits
        // whose chunks were deleted meanwhile, covered only by an index newer than the one
        // read.) The records below what the indexes cover are skipped at replay.
        let mut early_tail = match remote.as_ref().filter(|r| r.read_only) {
            Some(r) => Some(rt.block_on(r.read_wal_tail())?),
            None => None,
        };
        let mut remote_layers = BTreeMap::new();
        let mut hot_layers = BTreeMap::new();
        let mut discarded = None;
        let mut catalog = None;
        // Per timeline, what its index in object storage holds, when the local state is kept
        // beside it (a restart on this directory).
        let mut indexed_at_open: Option<BTreeMap<TimelineId, Lsn>> = None;
        if !is_new {
            let c = Catalog::decode(&io.read(&catalog_path)?, &catalog_path)?;
            if let Some(r) = &remote {
                let mut indexes = BTreeMap::new();
                for e in &c.timelines {
                    if let Some(found) = latest_remote_index(r, e.id)? {
                        indexes.insert(e.id, found);
                    }
                }
                let remote_catalog = r.runtime.block_on(r.storage.latest_catalog(r.generation))?;
                match reconcile(&io, &options, &c, &indexes, remote_catalog.as_ref())? {
                    Some(d) => {
                        // Stale: marked first, so that a crash from here on finishes as an
                        // attach at the next open instead of reading a half-wiped directory.
                        io.write_atomic(&discard_marker, &[])?;
                        io.remove_file(&catalog_path)?;
                        io.sync_dir(&dir)?;
                        discarded = Some(d);
                    }
                    None => {
                        // A timeline the uploaded catalog does not name is unknown to a node
                        // attaching, index or not: it counts as not indexed.
                        let named = match &remote_catalog {
                            Some((g, bytes)) => {
                                let path = PathBuf::from(crate::remote::catalog_object(*g));
                                Catalog::decode(bytes, &path)?
                                    .timelines
                                    .into_iter()
                                    .map(|e| e.id)
                                    .collect()
                            }
                            None => std::collections::BTreeSet::new(),
                        };
                        let mut indexed = BTreeMap::new();
                        for (id, (_, idx)) in indexes {
                            if named.contains(&id) {
                                indexed.insert(id, idx.manifest.disk_consistent_lsn);
                            }
                            remote_layers.insert(id, idx.layer_generations.into_iter().collect());
                        }
                        indexed_at_open = Some(indexed);
                        catalog = Some(c);
                    }
                }
            } else {
                catalog = Some(c);
            }
        }
        let catalog = match catalog {
            Some(c) => c,
            None => {
                if discard_marker.exists() {
                    for leftover in [&timelines_dir, &dir.join(WAL_DIR)] {
                        if leftover.exists() {
                            io.remove_dir_all(leftover)?;
                        }
                    }
                }
                io.create_dir_durably(&timelines_dir)?;
                let c = match &remote {
                    Some(r) => attach(&io, r, &timelines_dir, &mut remote_layers, &mut hot_layers)?,
                    None => Catalog::default(),
                };
                io.write_atomic(&catalog_path, &c.encode())?;
                if discard_marker.exists() {
                    io.remove_file(&discard_marker)?;
                    io.sync_dir(&dir)?;
                }
                c
            }
        };
        if let Some(r) = remote.as_ref().filter(|r| !r.read_only) {
            // Before anything is uploaded under the new generation: the next open compares it
            // with the remote's newest writer.
            io.write_atomic(&dir.join(OWNER_FILE), &encode_owner(r.generation.0))?;
        }
        let cache = Arc::new(BlockCache::for_files(
            options.block_cache_bytes,
            options.map_layer_files,
        ));
        let (wal, wal_records) = if options.wal && !read_only {
            let (w, r) = Wal::open(
                &io,
                &dir.join(WAL_DIR),
                options.fsync_policy,
                options.wal_segment_size,
            )?;
            (Some(Arc::new(w)), r)
        } else {
            (None, Vec::new())
        };
        let (flush_tx, flush_rx) = mpsc::channel::<Arc<TimelineInner>>();
        let (bg_tx, bg_rx) = mpsc::channel::<()>();
        let env = Arc::new(Env {
            options,
            cache,
            wal,
            flush_tx: Mutex::new(Some(flush_tx)),
            bg_tx: Mutex::new(Some(bg_tx)),
            closed: AtomicBool::new(false),
            superseded: AtomicBool::new(false),
            bg_error: Mutex::new(None),
            bg_started: std::sync::atomic::AtomicU64::new(0),
            bg_done: tokio::sync::watch::Sender::new(0),
            io: io.clone(),
            remote: remote.clone(),
            rt: rt.clone(),
            metrics: crate::metrics::StoreMetrics::register(),
        });

        sweep_timelines(&io, &timelines_dir, &catalog)?;
        let by_id = open_timelines(&timelines_dir, &catalog, &env, &remote_layers)?;
        if let Some(r) = &remote {
            for (id, layers) in remote_layers {
                r.note_uploaded(id, layers);
            }
            if !r.read_only {
                for tl in by_id.values() {
                    let indexed = indexed_at_open.as_ref().map(|m| m.get(&tl.id));
                    // Layers above the index (or a timeline object storage does not know):
                    // commits shipped from now on are safe once the opening upload is done.
                    if let Some(indexed) = indexed
                        && indexed.is_none_or(|lsn| tl.disk_consistent_lsn() > *lsn)
                    {
                        r.note_unindexed_at_open(tl.id);
                    }
                    r.mark_dirty(tl.id, tl.me.clone());
                }
                r.mark_catalog(catalog.encode());
            }
            // Warm what the previous owner read most, in the background.
            for (id, names) in hot_layers {
                if let Some(tl) = by_id.get(&id) {
                    let tl = tl.clone();
                    rt.spawn(async move { tl.prefetch(&names).await });
                }
            }
        }
        if let Some(wal) = &env.wal {
            wal.init_durable(by_id.values().map(|t| (t.id, t.disk_consistent_lsn())));
        }

        let flusher_env = env.clone();
        let flusher = std::thread::Builder::new()
            .name("stratakv-flush".into())
            .spawn(move || {
                while let Ok(tl) = flush_rx.recv() {
                    // The job runner decides: a failed flush (its manifest or fsync) leaves the
                    // store's state uncertain, and so does a panic, which would otherwise leave
                    // every `flush` waiting for a layer nobody writes. A delete racing the
                    // flush is not a failure: the gate makes the flush finish or not start.
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        tl.flush_frozen()
                    }));
                    let failure = match run {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e),
                        Err(_) => Some(Error::new(
                            ErrorKind::Io,
                            format!("flushing timeline {}: the flush panicked", tl.name()),
                        )),
                    };
                    if let Some(e) = failure {
                        flusher_env.poison(&e);
                    }
                }
            })
            .map_err(|e| Error::io("starting the flush thread for", &dir, e))?;
        // Then what object storage holds above the indexes: commits shipped by this node or
        // by an owner that is gone, acknowledged perhaps only there.
        let mut wal_records = wal_records;
        if let Some(r) = &remote {
            let tail = match early_tail.take() {
                Some(t) => t,
                None => rt.block_on(r.read_wal_tail())?,
            };
            let known: Vec<TimelineId> = by_id.keys().copied().collect();
            let tail_records = r.adopt_wal_tail(tail, &known);
            if !r.read_only && env.wal.is_some() {
                ship_local_commits(r, &by_id, &wal_records, &tail_records);
                rt.block_on(r.mark_wal_start())?;
            }
            wal_records.extend(tail_records);
            r.start(env.wal.is_some(), env.options.heartbeat_interval);
        }
        replay(&by_id, wal_records);
        let state = Arc::new(Mutex::new(State { catalog, by_id }));
        if let Some(r) = &remote {
            let weak = Arc::downgrade(&state);
            *r.last_record_lsns.lock() = Some(Box::new(move || {
                weak.upgrade().map_or_else(BTreeMap::new, |s| {
                    s.lock()
                        .by_id
                        .iter()
                        .map(|(id, tl)| (*id, tl.last_record_lsn()))
                        .collect()
                })
            }));
        }
        let mut threads = vec![flusher];
        if let (Some(wal), FsyncPolicy::Interval(every)) = (&env.wal, env.options.fsync_policy) {
            let wal_env = env.clone();
            let wal = wal.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("stratakv-wal-sync".into())
                    .spawn(move || {
                        while wal_env.check().is_ok() {
                            std::thread::sleep(every);
                            if let Err(e) = wal.sync() {
                                wal_env.poison(&e);
                            }
                        }
                    })
                    .map_err(|e| Error::io("starting the WAL sync thread for", &dir, e))?,
            );
        }
        let bg_env = env.clone();
        let bg_state = Arc::downgrade(&state);
        let background = std::thread::Builder::new()
            .name("stratakv-background".into())
            .spawn(move || background_loop(&bg_env, &bg_state, &bg_rx))
            .map_err(|e| Error::io("starting the background thread for", &dir, e))?;

        threads.push(background);
        Ok(Store {
            dir,
            env,
            state,
            threads: Mutex::new(threads),
            runtime: Mutex::new(runtime),
            discarded,
            claim_wait,
            _lock: lock,
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The stale local state this open replaced with the remote's, if it did: the directory
    /// had last owned the remote under an older generation, and a newer owner has written
    /// there since. The remote's state won; the local history listed here (above each
    /// timeline's `remote_lsn`) was discarded, never uploaded over the newer owner's.
    pub fn discarded_on_open(&self) -> Option<&Discarded> {
        self.discarded.as_ref()
    }

    /// Number of write-ahead log segment files on disk (0 with the log turned off). Segments
    /// go once flushed layers cover them; the active one too, replaced by an empty one, when
    /// that frees at least 1 MiB, and at [`close`](Store::close) whatever it holds.
    pub fn wal_segments(&self) -> usize {
        self.env.wal.as_ref().map_or(0, |w| w.segment_count())
    }

    /// The last error background compaction or GC met, if any (they retry on their next run),
    /// with its kind and cause; its message names the timeline.
    pub fn background_error(&self) -> Option<Error> {
        self.env.bg_error.lock().clone()
    }

    /// Creates an empty timeline called `name`.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] if the name is taken; [`ErrorKind::InvalidArgument`] for an
    /// empty name, one over 255 bytes, or one with control characters.
    pub async fn create_timeline(&self, name: &str) -> Result<Timeline> {
        self.env
            .check_writable(&format!("creating timeline {name:?}"))?;
        let (core, name) = (self.core(), name.to_string());
        let tl = self
            .env
            .blocking("creating a timeline", move || core.create_timeline(&name))
            .await?;
        self.durable_at_remote_level().await?;
        Ok(tl)
    }

    /// At [`Durability::Remote`](crate::Durability::Remote), waits until the catalog and the
    /// indexes are uploaded, so that a timeline just created, branched or restored survives
    /// the loss of the node.
    async fn durable_at_remote_level(&self) -> Result<()> {
        match &self.env.remote {
            Some(r) if self.env.options.durability == crate::Durability::Remote => {
                let r = r.clone();
                self.env
                    .on_runtime(
                        "uploading the catalog",
                        async move { r.wait_uploaded().await },
                    )
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Creates the timeline `name` branched from `parent` at `lsn`: it reads what `parent`
    /// reads at `lsn`, copies no data, and takes its own writes above `lsn`. Its GC cutoff
    /// starts at `lsn`; history below it stays readable on the parent.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming the allowed range when `lsn` is above the parent's
    /// `last_record_lsn` or below its GC cutoff; [`ErrorKind::AlreadyExists`] if the name is
    /// taken; [`ErrorKind::NotFound`] if the parent was deleted.
    pub async fn branch(&self, name: &str, parent: &Timeline, lsn: Lsn) -> Result<Timeline> {
        self.env.check_writable(&format!("branching {name:?}"))?;
        let (core, name, parent) = (self.core(), name.to_string(), parent.clone());
        let tl = self
            .env
            .blocking("branching", move || core.branch(&name, &parent, lsn))
            .await?;
        self.durable_at_remote_level().await?;
        Ok(tl)
    }

    /// The timeline called `name`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is none.
    pub fn timeline(&self, name: &str) -> Result<Timeline> {
        self.core().timeline(name)
    }

    /// What the blocking halves of the async calls need, to run on the store's threads.
    fn core(&self) -> Core {
        Core {
            dir: self.dir.clone(),
            env: self.env.clone(),
            state: self.state.clone(),
        }
    }
}

/// The store's directory, environment and state: what a call runs on once it is moved off
/// the caller's executor onto the store's blocking threads.
struct Core {
    dir: PathBuf,
    env: Arc<Env>,
    state: Arc<Mutex<State>>,
}

impl Core {
    fn timeline(&self, name: &str) -> Result<Timeline> {
        self.env.check()?;
        let st = self.state.lock();
        st.find(name).map(|inner| Timeline::new(inner.clone()))
    }

    fn create_timeline(&self, name: &str) -> Result<Timeline> {
        self.env.check()?;
        check_name(name)?;
        let mut st = self.state.lock();
        if st.has_name(name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("timeline {name:?} already exists"),
            ));
        }
        let inner = self.new_timeline(&mut st, name, None, None)?;
        Ok(Timeline::new(inner))
    }

    fn branch(&self, name: &str, parent: &Timeline, lsn: Lsn) -> Result<Timeline> {
        let span = tracing::info_span!(
            "branch",
            name,
            parent_timeline_id = %parent.inner.id,
            lsn = %lsn,
            timeline_id = tracing::field::Empty,
        );
        let _entered = span.enter();
        let tl = self.branch_in_span(name, parent, lsn)?;
        span.record("timeline_id", tracing::field::display(tl.id()));
        Ok(tl)
    }

    fn branch_in_span(&self, name: &str, parent: &Timeline, lsn: Lsn) -> Result<Timeline> {
        self.env.check()?;
        check_name(name)?;
        parent.inner.check()?;
        let mut st = self.state.lock();
        if st.has_name(name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("timeline {name:?} already exists"),
            ));
        }
        let inner = self.new_timeline(&mut st, name, Some((&parent.inner, lsn)), None)?;
        Ok(Timeline::new(inner))
    }

    /// Creates a timeline in the catalog; with `parent`, a branch of it at the LSN given.
    ///
    /// With `rename`, the catalog entry of the timeline with that id takes the second name in
    /// the same catalog write (a restore's backup name).
    fn new_timeline(
        &self,
        st: &mut State,
        name: &str,
        parent: Option<(&Arc<TimelineInner>, Lsn)>,
        rename: Option<(TimelineId, &str)>,
    ) -> Result<Arc<TimelineInner>> {
        let id = TimelineId::from_entropy(self.env.options.entropy.as_ref());
        // Checked against the cutoff, registered and the commit time copied in one step with
        // respect to GC; against delete of the parent by the state lock held here.
        let parent_time = match parent {
            Some((p, lsn)) => p.pin_branch_point(id, lsn)?,
            None => None,
        };
        let result = (|| {
            let tl_dir = self.dir.join(TIMELINES_DIR).join(id.to_string());
            self.env.io.create_dir_durably(&tl_dir)?;
            let start = parent.map_or(Lsn::ZERO, |(_, lsn)| lsn);
            let manifest = Manifest {
                timeline_id: id,
                ancestor: parent.map(|(p, lsn)| (p.id, lsn)),
                disk_consistent_lsn: start,
                gc_cutoff: start,
                next_layer_seq: 1,
                layers: Vec::new(),
            };
            self.env
                .io
                .write_atomic(&tl_dir.join(MANIFEST_FILE), &manifest.encode())?;
            let inner = TimelineInner::new(
                name.to_string(),
                tl_dir.clone(),
                self.env.clone(),
                manifest,
                Vec::new(),
                parent.map(|(p, _)| p.clone()),
            );
            if let Some((_, lsn)) = parent {
                inner.inherit_time_index(lsn, parent_time)?;
            }
            // The catalog entry is the commit point: everything the timeline needs is on disk
            // before it, and a failure before it leaves only a directory the next open sweeps.
            let mut next = st.catalog.clone();
            if let Some((old, backup)) = rename
                && let Some(e) = next.timelines.iter_mut().find(|e| e.id == old)
            {
                e.name = backup.to_string();
            }
            next.timelines.push(CatalogEntry {
                name: name.to_string(),
                id,
            });
            self.env
                .io
                .write_atomic(&self.dir.join(CATALOG_FILE), &next.encode())?;
            st.catalog = next;
            if let Some(wal) = &self.env.wal {
                wal.set_durable(id, start);
            }
            st.by_id.insert(id, inner.clone());
            if let Some(r) = &self.env.remote {
                r.mark_new_timeline(id, inner.me.clone(), st.catalog.encode());
            }
            Ok(inner)
        })();
        if result.is_err() {
            if let Some((p, _)) = parent {
                p.children.lock().remove(&id);
            }
            let _ = self
                .env
                .io
                .remove_dir_all(&self.dir.join(TIMELINES_DIR).join(id.to_string()));
        }
        result
    }

    fn delete_timeline(&self, name: &str) -> Result<()> {
        self.env.check()?;
        let mut st = self.state.lock();
        let tl = st.find(name)?.clone();
        // Branching registers children under the state lock held here, so none can appear
        // after this check.
        let children: Vec<_> = tl.children.lock().keys().copied().collect();
        if !children.is_empty() {
            let names: Vec<_> = children
                .iter()
                .filter_map(|c| st.by_id.get(c))
                .map(|c| c.name())
                .collect();
            return Err(Error::invalid(format!(
                "timeline {name:?} has child timelines {names:?}: delete or detach them first"
            )));
        }
        // Ordered against background work by the gate: jobs inside finish, later ones are
        // refused, so nothing writes in the directory from here on.
        tl.gate.close();
        let mut next = st.catalog.clone();
        next.timelines.retain(|e| e.id != tl.id);
        if let Err(e) = self
            .env
            .io
            .write_atomic(&self.dir.join(CATALOG_FILE), &next.encode())
        {
            tl.gate.reopen();
            return Err(e);
        }
        st.catalog = next;
        st.by_id.remove(&tl.id);
        tl.deleted.store(true, Ordering::Release);
        if let Some(r) = &self.env.remote {
            r.mark_deleted(tl.id, st.catalog.encode());
        }
        if let Some(wal) = &self.env.wal {
            wal.forget(tl.id);
        }
        if let Some((p, _)) = &*tl.ancestor.read() {
            tl.unbranched.store(true, Ordering::Release);
            p.children.lock().remove(&tl.id);
        }
        // The catalog no longer names it: the delete is done. A directory left behind by a
        // failure here is swept at the next open.
        let _ = self.env.io.remove_dir_all(&tl.dir);
        Ok(())
    }

    fn restore_from(&self, name: &str, source: &str, point: RestorePoint) -> Result<Restored> {
        let span = tracing::info_span!(
            "restore",
            name,
            source,
            lsn = tracing::field::Empty,
            timeline_id = tracing::field::Empty,
            backup_name = tracing::field::Empty,
        );
        let _entered = span.enter();
        let r = self.restore_in_span(name, source, point)?;
        span.record("lsn", tracing::field::display(r.lsn));
        span.record("timeline_id", tracing::field::display(r.timeline.id()));
        if let Some(b) = &r.backup_name {
            span.record("backup_name", b.as_str());
        }
        Ok(r)
    }

    fn restore_in_span(&self, name: &str, source: &str, point: RestorePoint) -> Result<Restored> {
        self.env.check()?;
        check_name(name)?;
        let src = self.timeline(source)?;
        let lsn = match point {
            RestorePoint::Lsn(lsn) => lsn,
            RestorePoint::Time(t) => src.lsn_at(t)?,
        };
        let mut st = self.state.lock();
        let old = st.find(name).ok().cloned();
        let backup = old.as_ref().map(|_| {
            (1..)
                .map(|n| format!("{name}@restore-{n}"))
                .find(|b| !st.has_name(b))
                .expect("a free name")
        });
        if let Some(b) = &backup {
            check_name(b)?;
        }
        let rename = old.as_ref().zip(backup.as_deref()).map(|(o, b)| (o.id, b));
        let inner = self.new_timeline(&mut st, name, Some((&src.inner, lsn)), rename)?;
        if let (Some(o), Some(b)) = (&old, &backup) {
            o.set_name(b.clone());
        }
        Ok(Restored {
            timeline: Timeline::new(inner),
            lsn,
            backup_name: backup,
        })
    }
}

impl Store {
    /// Every timeline, ordered by name.
    pub fn timelines(&self) -> Vec<Timeline> {
        let st = self.state.lock();
        let mut v: Vec<_> = st
            .by_id
            .values()
            .map(|inner| Timeline::new(inner.clone()))
            .collect();
        v.sort_by_key(|t| t.name());
        v
    }

    /// Deletes the timeline `name` and its files.
    ///
    /// Background work on the timeline (a flush, compaction, GC, a download) is waited for or
    /// dropped: it never makes the delete fail. Handles to the timeline fail with
    /// [`ErrorKind::NotFound`] afterwards, and its unflushed writes are gone.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if it has children (delete them or
    /// [`detach_ancestor`](Store::detach_ancestor) them first); [`ErrorKind::NotFound`].
    pub async fn delete_timeline(&self, name: &str) -> Result<()> {
        self.env
            .check_writable(&format!("deleting timeline {name:?}"))?;
        let (core, name) = (self.core(), name.to_string());
        self.env
            .blocking("deleting a timeline", move || core.delete_timeline(&name))
            .await
    }

    /// Makes the timeline `name` independent of its ancestors: it materializes every value it
    /// reads at its branch point into an image layer of its own, then forgets the ancestor. It
    /// reads the same at every LSN afterwards, and the ancestor can be deleted.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if it has no ancestor; read errors met while
    /// materializing.
    pub async fn detach_ancestor(&self, name: &str) -> Result<()> {
        self.env.check()?;
        self.env.check_writable(&format!("detaching {name:?}"))?;
        let tl = self.timeline(name)?.inner;
        let t2 = tl.clone();
        self.env
            .blocking("detaching", move || t2.detach_ancestor())
            .await
    }

    /// Point-in-time restore: moves the name `name` to a new timeline branched from it at
    /// `point`, and keeps the timeline it named under a backup name. Nothing is lost; restoring
    /// again (or [`restore_from`](Store::restore_from) the backup) undoes it.
    ///
    /// # Errors
    /// As [`branch`](Store::branch), and [`Timeline::lsn_at`]'s errors for a time.
    pub async fn restore(&self, name: &str, point: RestorePoint) -> Result<Restored> {
        self.restore_from(name, name, point).await
    }

    /// Moves the name `name` to a new timeline branched from the timeline `source` at `point`;
    /// the timeline `name` named before keeps a backup name `"{name}@restore-N"`.
    ///
    /// # Errors
    /// As [`restore`](Store::restore).
    pub async fn restore_from(
        &self,
        name: &str,
        source: &str,
        point: RestorePoint,
    ) -> Result<Restored> {
        self.env.check_writable(&format!("restoring {name:?}"))?;
        let (core, name, source) = (self.core(), name.to_string(), source.to_string());
        let restored = self
            .env
            .blocking("restoring", move || {
                core.restore_from(&name, &source, point)
            })
            .await?;
        self.durable_at_remote_level().await?;
        Ok(restored)
    }

    /// Flushes every timeline, stops background work and releases the directory.
    ///
    /// # Errors
    /// The first flush error; the store is closed either way.
    pub async fn close(self) -> Result<()> {
        let mut result = Ok(());
        let timelines: Vec<_> = self.state.lock().by_id.values().cloned().collect();
        for tl in timelines {
            if let Err(e) = tl.flush().await
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        if let Some(wal) = self.env.wal.clone()
            && let Err(e) = self
                .env
                .blocking("syncing the log", move || {
                    wal.sync()?;
                    // Every timeline is flushed: what the log holds is in layer files.
                    wal.trim()
                })
                .await
            && result.is_ok()
        {
            result = Err(e);
        }
        if let Some(r) = &self.env.remote
            && result.is_ok()
        {
            result = match self
                .env
                .timeout(CLOSE_UPLOAD_TIMEOUT, r.wait_uploaded())
                .await
            {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "uploads did not finish within {CLOSE_UPLOAD_TIMEOUT:?}: {}",
                        r.last_error().map(|e| e.to_string()).unwrap_or_default()
                    ),
                )),
            };
        }
        if let Some(r) = &self.env.remote {
            let r = r.clone();
            let clean = result.is_ok();
            let _ = self
                .env
                .on_runtime("releasing the generation", async move {
                    if clean {
                        // Every timeline is flushed and indexed: no WAL chunk is needed.
                        r.delete_covered_chunks().await;
                    }
                    // The last request: after it the next owner need not wait for this one.
                    Ok(r.stop_and_release(CLOSE_RELEASE_TIMEOUT).await)
                })
                .await;
        }
        self.shutdown();
        result
    }

    /// Waits for the store's background work to settle: every timeline flushed, then one full
    /// pass of background compaction and GC started after that (kicked now, whatever
    /// `background_period` says), then, with a remote, everything uploaded. For a daemon that
    /// wants a quiet store before it measures, snapshots or hands over; work that new writes
    /// cause afterwards is not waited for.
    ///
    /// # Errors
    /// The first flush or upload error; [`ErrorKind::Closed`], [`ErrorKind::Poisoned`] or
    /// [`ErrorKind::Fenced`] if the store stops meanwhile. A failure of the background pass
    /// itself is not an error here: it is in [`background_error`](Store::background_error).
    pub async fn settle(&self) -> Result<()> {
        let timelines: Vec<_> = self.state.lock().by_id.values().cloned().collect();
        for tl in timelines {
            match tl.flush().await {
                // Deleted meanwhile: nothing of it to settle.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                r => {
                    r?;
                }
            }
        }
        let mut done = self.env.bg_done.subscribe();
        let after = self.env.bg_started.load(Ordering::Acquire);
        self.env.kick_background();
        while *done.borrow_and_update() <= after {
            self.env.check()?;
            let _ = self
                .env
                .timeout(std::time::Duration::from_millis(100), done.changed())
                .await;
        }
        match &self.env.remote {
            Some(r) => r.wait_uploaded().await,
            None => Ok(()),
        }
    }

    /// Waits until everything flushed so far is in object storage (layers, indexes, catalog).
    ///
    /// # Errors
    /// [`ErrorKind::Fenced`] if another node took the store; [`ErrorKind::InvalidArgument`]
    /// without a remote.
    pub async fn wait_for_upload(&self) -> Result<()> {
        match &self.env.remote {
            Some(r) => r.wait_uploaded().await,
            None => Err(Error::invalid("the store has no remote")),
        }
    }

    /// Drives `f` on the calling thread with the store's runtime as its context (object
    /// storage requests need its reactor). Not from inside an async task.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.env.block_on(f)
    }

    /// The open timeline with id `id`.
    pub(crate) fn timeline_by_id(&self, id: TimelineId) -> Option<Timeline> {
        self.state
            .lock()
            .by_id
            .get(&id)
            .map(|inner| Timeline::new(inner.clone()))
    }

    /// For a read-only store a secondary replaced by a newer one: it applies nothing more, so
    /// reads that wait for an LSN (on this store's timelines) fail at once from now on.
    pub(crate) fn supersede(&self) {
        self.env.superseded.store(true, Ordering::Release);
        for t in self.timelines() {
            // Wakes the waiters, which see the flag.
            t.inner.lrl_tx.send_modify(|_| {});
        }
    }

    /// For a read-only store that follows its owner: reads the WAL chunks after the ones it
    /// applied and applies them, or says to reload. Blocking.
    pub(crate) fn follow_wal(&self) -> Result<Followed> {
        let Some(r) = self.env.remote.as_ref().filter(|r| r.read_only) else {
            return Err(Error::invalid(
                "only a read-only store follows its owner's WAL",
            ));
        };
        self.env.check()?;
        // Held to the end: one catch-up at a time (the poller's and an explicit one would
        // otherwise apply the same chunks twice, or move `applied` back).
        let mut applied = r.applied.lock();
        let tail = match self.env.block_on(r.read_wal_after(Some(*applied)))? {
            crate::remote::Follow::Gap => return Ok(Followed::Reload),
            crate::remote::Follow::Tail(t) => t,
        };
        let by_id = self.state.lock().by_id.clone();
        if tail
            .records
            .iter()
            .any(|r| !by_id.contains_key(&r.timeline))
        {
            // A timeline created since the catalog this store opened with.
            return Ok(Followed::Reload);
        }
        if !tail.records.is_empty() {
            // A fenced owner's late chunk lands only after its successor's claim, so a claim
            // read after the listing shows it: one newer than every WAL start listed means a
            // successor that has not recorded where its chunks start, and so has not yet
            // settled which of the chunks listed are valid.
            let claim = self.env.block_on(r.storage.current_generation())?;
            if let Some((g, _)) = claim
                && g > tail.newest_start
            {
                return Ok(Followed::Hold(g));
            }
        }
        let (chunks, bytes) = (tail.chunk_count(), tail.bytes);
        let now = crate::remote::Applied {
            seq: tail.last_seq,
            start: tail.newest_start,
        };
        for rec in tail.records {
            let tl = &by_id[&rec.timeline];
            for (key, lsn, value) in rec.puts {
                tl.replay_put(&key, lsn, value);
            }
            tl.replay_commit(rec.lsn, rec.time_micros);
        }
        *applied = now;
        Ok(Followed::Applied { chunks, bytes })
    }

    /// How long [`open`](Store::open) waited after claiming its generation, for deletions the
    /// previous owner may have validated just before the claim: zero for a fresh store, after
    /// a clean [`close`](Store::close) (which releases the generation), and when this
    /// directory held the previous generation itself; the claim grace
    /// ([`RemoteStorage::claim_grace`](crate::remote::RemoteStorage::claim_grace)) when taking
    /// over from another node that did not release. Zero without a remote.
    pub fn claim_wait(&self) -> Duration {
        self.claim_wait
    }

    /// The generation this node holds in object storage, if it has a remote.
    /// `None` for a [read-only](StoreOptions::read_only) store, which holds none.
    pub fn generation(&self) -> Option<crate::remote::Generation> {
        self.env
            .remote
            .as_ref()
            .filter(|r| !r.read_only)
            .map(|r| r.generation)
    }

    /// The last error the uploader met (it retries with backoff), if any, with its kind
    /// ([`ErrorKind::Fenced`] once another node took the store) and cause. Cleared by the next
    /// upload that succeeds.
    pub fn upload_error(&self) -> Option<Error> {
        self.env.remote.as_ref().and_then(|r| r.last_error())
    }

    /// Evicts resident layers that are in object storage, least recently used first, until the
    /// local layer bytes fit `budget`; layers a reader holds stay. Reports what it removed and,
    /// when the budget could not be met, every layer it kept and why.
    pub fn evict_layers(&self, budget: u64) -> EvictReport {
        let timelines: Vec<_> = self.state.lock().by_id.values().cloned().collect();
        evict_to_budget(&self.env, &timelines, budget)
    }

    fn shutdown(&self) {
        self.env.closed.store(true, Ordering::Release);
        if let Some(r) = &self.env.remote {
            r.stop();
        }
        self.env.flush_tx.lock().take();
        self.env.bg_tx.lock().take();
        for h in self.threads.lock().drain(..) {
            let _ = h.join();
        }
        self.runtime.lock().shutdown();
    }
}

impl Drop for Store {
    /// Dropping without [`close`](Store::close) stops background work; writes not yet flushed
    /// are not on disk.
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs compaction and GC on every timeline each period, or when kicked.
fn background_loop(env: &Env, state: &std::sync::Weak<Mutex<State>>, rx: &mpsc::Receiver<()>) {
    let period = env.options.background_period;
    loop {
        let msg = match period {
            Some(p) => rx.recv_timeout(p),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        if matches!(msg, Err(mpsc::RecvTimeoutError::Disconnected)) {
            return;
        }
        let Some(state) = state.upgrade() else { return };
        let pass = env.bg_started.fetch_add(1, Ordering::AcqRel) + 1;
        let timelines: Vec<_> = state.lock().by_id.values().cloned().collect();
        drop(state);
        if let Some(budget) = env.remote.as_ref().and_then(|r| r.disk_budget) {
            evict_to_budget(env, &timelines, budget);
        }
        for tl in timelines {
            if env.check().is_err() {
                return;
            }
            if env.options.read_only {
                // Compaction and GC are the owner's: a read-only store only evicts.
                break;
            }
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tl.compact_if_needed()?;
                tl.gc().map(|_| ())
            }));

            let err = match run {
                Ok(Ok(())) => None,
                // A delete closed the gate under the job: not a failure.
                Ok(Err(_)) if tl.deleted.load(Ordering::Acquire) || tl.gate.is_closed() => None,
                Ok(Err(e)) => Some(e.context(format_args!(
                    "background compaction or GC of timeline {}",
                    tl.name()
                ))),
                Err(p) => Some(Error::new(
                    ErrorKind::Io,
                    format!(
                        "background compaction or GC of timeline {} panicked: {}",
                        tl.name(),
                        crate::error::panic_message(p.as_ref())
                    ),
                )),
            };
            if let Some(e) = err {
                *env.bg_error.lock() = Some(e);
            }
        }
        env.bg_done.send_replace(pass);
    }
}

/// Whether `name` in a directory without a catalog is what a first open leaves before its
/// catalog is renamed into place: the lock, an empty `timelines/` or `wal/`, the catalog's
/// temporary file.
fn is_leftover_of_creation(dir: &Path, name: &str) -> bool {
    let empty_dir = |d: &Path| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_none());
    name == LOCK_FILE
        || name == format!("{CATALOG_FILE}{}", crate::io::TEMP_SUFFIX)
        || ((name == TIMELINES_DIR || name == WAL_DIR) && empty_dir(&dir.join(name)))
}

/// Removes a leftover file or directory.
fn remove_any(io: &Io, path: &Path) -> Result<()> {
    if path.is_dir() {
        io.remove_dir_all(path)
    } else {
        io.remove_file(path)
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "timeline name {name:?} must be 1 to {MAX_NAME_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("opening", &path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::new(
            ErrorKind::Locked,
            format!(
                "store {} is open in another process or handle ({} is locked)",
                dir.display(),
                path.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("locking", &path, e)),
    }
}

/// Removes timeline directories the catalog does not list (a creation that crashed).
fn sweep_timelines(io: &Io, timelines_dir: &Path, catalog: &Catalog) -> Result<()> {
    for name in io.list_dir(timelines_dir)? {
        if !catalog.timelines.iter().any(|e| e.id.to_string() == name) {
            remove_any(io, &timelines_dir.join(&name))?;
        }
    }
    Ok(())
}

/// Replays logged commits, with their puts, above what each timeline's layers hold.
/// Queues for shipping, ahead of any new commit, the commits replayed from the local log that
/// object storage does not hold: above the timeline's layers and above what the remote log's
/// chunks hold. A commit at the local level that never reached object storage before the
/// node stopped is then shipped before the commits that follow it, so that a commit
/// acknowledged at the remote level never has a hole below it.
fn ship_local_commits(
    r: &RemoteCtx,
    by_id: &BTreeMap<TimelineId, Arc<TimelineInner>>,
    local: &[WalRecord],
    tail: &[WalRecord],
) {
    let mut held: BTreeMap<TimelineId, Lsn> = by_id
        .iter()
        .map(|(id, tl)| (*id, tl.disk_consistent_lsn()))
        .collect();
    for rec in tail {
        if let Some(l) = held.get_mut(&rec.timeline) {
            *l = (*l).max(rec.lsn);
        }
    }
    let (mut puts, mut record) = (Vec::new(), Vec::new());
    for rec in local {
        if held.get(&rec.timeline).is_none_or(|l| rec.lsn <= *l) {
            continue;
        }
        puts.clear();
        for (key, lsn, value) in &rec.puts {
            crate::format::encode_put(&mut puts, *lsn, key, value);
        }
        record.clear();
        crate::format::encode_commit(
            &mut record,
            rec.timeline,
            rec.lsn,
            rec.time_micros,
            u32::try_from(rec.puts.len()).expect("a commit's puts fit in u32"),
            &puts,
        );
        r.wal().append(rec.timeline, rec.lsn, &record);
    }
}

fn replay(by_id: &BTreeMap<TimelineId, Arc<TimelineInner>>, records: Vec<WalRecord>) {
    for r in records {
        if let Some(tl) = by_id.get(&r.timeline) {
            for (key, lsn, value) in r.puts {
                tl.replay_put(&key, lsn, value);
            }
            tl.replay_commit(r.lsn, r.time_micros);
        }
    }
    for tl in by_id.values() {
        tl.discard_unpublished();
    }
}

/// Opens every timeline in the catalog, ancestors before their children.
fn open_timelines(
    timelines_dir: &Path,
    catalog: &Catalog,
    env: &Arc<Env>,
    remote_layers: &BTreeMap<TimelineId, BTreeMap<String, u32>>,
) -> Result<BTreeMap<TimelineId, Arc<TimelineInner>>> {
    let mut manifests = Vec::new();
    for e in &catalog.timelines {
        let dir = timelines_dir.join(e.id.to_string());
        let mpath = dir.join(MANIFEST_FILE);
        let bytes = env.io.read(&mpath).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::corruption(
                &mpath,
                0,
                "the catalog names this timeline but its manifest is missing",
            ),
            _ => e,
        })?;
        let manifest = Manifest::decode(&bytes, &mpath)?;
        if manifest.timeline_id != e.id {
            return Err(Error::corruption(
                &mpath,
                0,
                format!(
                    "manifest is for timeline {}, expected {}",
                    manifest.timeline_id, e.id
                ),
            ));
        }
        manifests.push((e, dir, manifest));
    }
    let mut by_id: BTreeMap<TimelineId, Arc<TimelineInner>> = BTreeMap::new();
    while !manifests.is_empty() {
        let before = manifests.len();
        let mut rest = Vec::new();
        for (e, dir, manifest) in manifests {
            let ancestor = match manifest.ancestor {
                None => None,
                Some((a, _)) => match by_id.get(&a) {
                    Some(a) => Some(a.clone()),
                    None => {
                        rest.push((e, dir, manifest));
                        continue;
                    }
                },
            };
            let tl = open_timeline(e, dir, manifest, ancestor, env, remote_layers.get(&e.id))?;
            if let Some((a, lsn)) = &*tl.ancestor.read() {
                a.children.lock().insert(tl.id, *lsn);
            }
            by_id.insert(e.id, tl);
        }
        if rest.len() == before {
            let (e, dir, m) = &rest[0];
            return Err(Error::corruption(
                &dir.join(MANIFEST_FILE),
                0,
                format!(
                    "timeline {:?} names ancestor {} that is not in the catalog",
                    e.name,
                    m.ancestor.map(|(a, _)| a.to_string()).unwrap_or_default()
                ),
            ));
        }
        manifests = rest;
    }
    Ok(by_id)
}

fn open_timeline(
    e: &CatalogEntry,
    dir: PathBuf,
    manifest: Manifest,
    ancestor: Option<Arc<TimelineInner>>,
    env: &Arc<Env>,
    remote_layers: Option<&BTreeMap<String, u32>>,
) -> Result<Arc<TimelineInner>> {
    for name in env.io.list_dir(&dir)? {
        if name != MANIFEST_FILE
            && name != TIME_INDEX_FILE
            && !manifest.layers.iter().any(|l| l.file_name == name)
        {
            remove_any(&env.io, &dir.join(&name))?;
        }
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for d in &manifest.layers {
        let path = dir.join(&d.file_name);
        let remote_gen = remote_layers.and_then(|m| m.get(&d.file_name)).copied();
        let layer = match remote_gen {
            // In object storage and not (or no longer) on local disk: downloaded on demand.
            Some(g) if !path.exists() => Layer::remote(d.clone(), path, g),
            _ => {
                let l = Layer::open(&path, d, env.cache.clone())?;
                if let Some(g) = remote_gen {
                    l.set_remote_generation(g);
                }
                l
            }
        };
        layers.push(Arc::new(layer));
    }
    let tl = TimelineInner::new(e.name.clone(), dir, env.clone(), manifest, layers, ancestor);
    tl.load_time_index()?;
    Ok(tl)
}

/// Evicts uploaded resident layers, least recently used first, until the resident layer bytes
/// fit `budget`. Returns the bytes evicted.
fn evict_to_budget(env: &Env, timelines: &[Arc<TimelineInner>], budget: u64) -> EvictReport {
    // Reads from now on count as more recent than any before this pass.
    crate::layer::advance_clock();
    let mut resident = Vec::new();
    let mut not_uploaded = Vec::new();
    let mut total = 0;
    for tl in timelines {
        for l in tl.snapshot().map.layers() {
            if l.is_resident() {
                total += l.desc.file_size;
                if l.remote_generation().is_some() {
                    resident.push((l.last_used(), tl.id, l.clone()));
                } else {
                    not_uploaded.push((tl.id, l.clone()));
                }
            }
        }
    }
    // Sorted by when each was last used as read once here: readers move the tick meanwhile,
    // and a key that changes during the sort breaks its order (the sort may panic).
    resident.sort_by_key(|(used, _, _)| *used);
    let mut report = EvictReport::default();
    let mut in_use = Vec::new();
    for (_, tl, l) in resident {
        if total <= budget {
            break;
        }
        if l.evict(|path| {
            let _ = env.io.remove_file(path);
        }) {
            total -= l.desc.file_size;
            report.evicted_bytes += l.desc.file_size;
            report.evicted_layers += 1;
        } else {
            in_use.push((tl, l));
        }
    }
    report.resident_bytes = total;
    if total > budget {
        let kept = |(tl, l): (TimelineId, Arc<Layer>), reason| KeptLayer {
            timeline: tl,
            layer: l.desc.file_name.clone(),
            bytes: l.desc.file_size,
            reason,
        };
        report
            .kept
            .extend(in_use.into_iter().map(|x| kept(x, KeepReason::InUse)));
        report.kept.extend(
            not_uploaded
                .into_iter()
                .map(|x| kept(x, KeepReason::NotUploaded)),
        );
    }
    report
}

/// What [`Store::evict_layers`] did, and why it could not get under the budget when it could
/// not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EvictReport {
    /// Bytes of layer files removed from local disk.
    pub evicted_bytes: u64,
    /// How many layer files were removed.
    pub evicted_layers: usize,
    /// Bytes of layer files still on local disk afterwards.
    pub resident_bytes: u64,
    /// When `resident_bytes` is still over the budget: every resident layer that stayed,
    /// with the reason. Empty when the budget was met.
    pub kept: Vec<KeptLayer>,
}

/// A resident layer eviction had to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeptLayer {
    /// The timeline whose directory holds it.
    pub timeline: TimelineId,
    /// Its file name.
    pub layer: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Why it stayed.
    pub reason: KeepReason,
}

/// Why eviction kept a layer on local disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeepReason {
    /// Not in object storage yet (or the store has no remote): the local file is its only
    /// copy. It can go once the uploader has it.
    NotUploaded,
    /// A read or background job holds it open right now; a later pass can take it.
    InUse,
}

/// The newest index of `tl` at or below this node's generation.
fn latest_remote_index(r: &RemoteCtx, tl: TimelineId) -> Result<Option<(Generation, RemoteIndex)>> {
    let Some((g, bytes)) = r
        .runtime
        .block_on(r.storage.latest_index(tl, r.generation))?
    else {
        return Ok(None);
    };
    let name = PathBuf::from(crate::remote::index_object(tl, g));
    RemoteIndex::decode(&bytes, &name).map(|idx| Some((g, idx)))
}

/// Whether the local state of a store reopened with a remote is stale: some generation newer
/// than the one this directory last claimed (its `OWNER` record) has written an index or a
/// catalog. Then the remote wins, and this returns what the local state held that is
/// discarded; `None` when this directory is still the newest owner's.
///
/// A directory without an owner record never owned the remote (or was written before the
/// record existed): any remote state is newer than it.
fn reconcile(
    io: &Io,
    options: &StoreOptions,
    catalog: &Catalog,
    indexes: &BTreeMap<TimelineId, (Generation, RemoteIndex)>,
    remote_catalog: Option<&(Generation, bytes::Bytes)>,
) -> Result<Option<Discarded>> {
    let owner_path = options.path.join(OWNER_FILE);
    let local = match io.read(&owner_path) {
        Ok(bytes) => Some(Generation(decode_owner(&bytes, &owner_path)?)),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let newest = indexes
        .values()
        .map(|(g, _)| *g)
        .chain(remote_catalog.map(|(g, _)| *g))
        .max();
    let Some(newest) = newest.filter(|g| Some(*g) > local) else {
        return Ok(None);
    };
    // What the local state held: each timeline's flushed LSN, and commits in its log above.
    let mut local_lsn: BTreeMap<TimelineId, Lsn> = BTreeMap::new();
    let timelines_dir = options.path.join(TIMELINES_DIR);
    for e in &catalog.timelines {
        let mpath = timelines_dir.join(e.id.to_string()).join(MANIFEST_FILE);
        let dcl = io
            .read(&mpath)
            .and_then(|b| Manifest::decode(&b, &mpath))
            .map_or(Lsn::ZERO, |m| m.disk_consistent_lsn);
        local_lsn.insert(e.id, dcl);
    }
    if options.wal
        && let Ok((_, records)) = Wal::open(
            io,
            &options.path.join(WAL_DIR),
            options.fsync_policy,
            options.wal_segment_size,
        )
    {
        for rec in records {
            if let Some(l) = local_lsn.get_mut(&rec.timeline) {
                *l = (*l).max(rec.lsn);
            }
        }
    }
    let timelines = catalog
        .timelines
        .iter()
        .map(|e| DiscardedTimeline {
            id: e.id,
            name: e.name.clone(),
            local_lsn: local_lsn.get(&e.id).copied().unwrap_or(Lsn::ZERO),
            remote_lsn: indexes
                .get(&e.id)
                .map(|(_, idx)| idx.manifest.disk_consistent_lsn),
        })
        .collect();
    Ok(Some(Discarded {
        local_generation: local,
        remote_generation: newest,
        timelines,
    }))
}

/// Attach: brings the catalog and every timeline's manifest and commit times from object
/// storage into an empty directory. Layers stay remote until a read needs them.
fn attach(
    io: &Io,
    r: &RemoteCtx,
    timelines_dir: &Path,
    remote_layers: &mut BTreeMap<TimelineId, BTreeMap<String, u32>>,
    hot: &mut BTreeMap<TimelineId, Vec<String>>,
) -> Result<Catalog> {
    let span = tracing::info_span!(
        "attach",
        generation = r.generation.0,
        read_only = r.read_only,
        catalog_generation = tracing::field::Empty,
        timelines = tracing::field::Empty,
        layers = tracing::field::Empty,
        bytes = tracing::field::Empty,
    );
    let _entered = span.enter();
    let Some((g, bytes)) = r.runtime.block_on(r.storage.latest_catalog(r.generation))? else {
        return Ok(Catalog::default());
    };
    span.record("catalog_generation", g.0);
    let (mut layers, mut layer_bytes) = (0u64, 0u64);
    let catalog = Catalog::decode(&bytes, &PathBuf::from(crate::remote::catalog_object(g)))?;
    for e in &catalog.timelines {
        let (_, idx) = latest_remote_index(r, e.id)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Corruption,
                format!(
                    "the remote catalog names timeline {} ({:?}) but it has no index",
                    e.id, e.name
                ),
            )
        })?;
        let dir = timelines_dir.join(e.id.to_string());
        io.create_dir_durably(&dir)?;
        let times = crate::timeline::time_index::TimeIndex::from_entries(idx.commit_times.clone());
        crate::timeline::time_index::rewrite(io, &dir.join(TIME_INDEX_FILE), &times)?;
        io.write_atomic(&dir.join(MANIFEST_FILE), &idx.manifest.encode())?;
        layers += idx.manifest.layers.len() as u64;
        layer_bytes += idx.manifest.layers.iter().map(|l| l.file_size).sum::<u64>();
        remote_layers.insert(e.id, idx.layer_generations.into_iter().collect());
        hot.insert(e.id, idx.hot_layers);
    }
    // The layers stay remote: these are what the timelines name, not what was downloaded.
    span.record("timelines", catalog.timelines.len() as u64);
    span.record("layers", layers);
    span.record("bytes", layer_bytes);
    Ok(catalog)
}
