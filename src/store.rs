//! The store: one tenant's directory, its timelines, and the background flusher.
//!
//! Directory layout:
//!
//! | path | holds |
//! |---|---|
//! | `CATALOG` | the timelines and their names; its presence marks the directory as a store |
//! | `LOCK` | locked while a process has the store open |
//! | `wal/<seq>.seg` | the write-ahead log, shared by every timeline |
//! | `timelines/<id>/manifest` | the timeline's manifest: its layers and watermarks |
//! | `timelines/<id>/timeindex` | the timeline's `lsn ↔ commit time` index |
//! | `timelines/<id>/*.layer` | the timeline's layer files |
//!
//! Anything in `timelines/` that the catalog or a manifest does not name is left over from a
//! crash and is removed at open.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::format::RemoteIndex;
use crate::format::{Catalog, CatalogEntry, Manifest, WalRecord};
use crate::id::TimelineId;
use crate::io::Io;
use crate::layer::{BlockCache, Layer};
use crate::lsn::Lsn;
use crate::options::StoreOptions;
use crate::remote::RemoteCtx;
use crate::timeline::{Timeline, TimelineInner};
use crate::wal::{FsyncPolicy, Wal};

pub(crate) const CATALOG_FILE: &str = "CATALOG";
pub(crate) const LOCK_FILE: &str = "LOCK";
pub(crate) const TIMELINES_DIR: &str = "timelines";
pub(crate) const MANIFEST_FILE: &str = "manifest";
pub(crate) const TIME_INDEX_FILE: &str = "timeindex";
pub(crate) const WAL_DIR: &str = "wal";
const CLOSE_UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
const MAX_NAME_LEN: usize = 255;

/// What the store and its timelines share.
pub(crate) struct Env {
    pub(crate) options: StoreOptions,
    pub(crate) cache: Arc<BlockCache>,
    /// The write-ahead log, unless turned off.
    pub(crate) wal: Option<Arc<Wal>>,
    flush_tx: Mutex<Option<mpsc::Sender<Arc<TimelineInner>>>>,
    bg_tx: Mutex<Option<mpsc::Sender<()>>>,
    closed: AtomicBool,
    bg_error: Mutex<Option<String>>,
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
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || Store::open_blocking(options, runtime))
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("open task failed: {e}")))?
    }

    fn open_blocking(options: StoreOptions, runtime: tokio::runtime::Handle) -> Result<Store> {
        options.validate()?;
        let io = Io::new(options.fs.clone());
        let dir = options.path.clone();
        let catalog_path = dir.join(CATALOG_FILE);
        let is_new = if dir.exists() {
            if !dir.is_dir() {
                return Err(Error::invalid(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            if catalog_path.exists() {
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
        let remote = match &options.remote {
            None => None,
            Some(storage) => {
                let generation = runtime.block_on(storage.claim_generation(&options.node_id))?;
                // An old owner's deletion validated just before this claim finishes within the
                // grace period: read the index only after it.
                std::thread::sleep(storage.claim_grace());
                Some(RemoteCtx::new(
                    storage.clone(),
                    generation,
                    runtime.clone(),
                    options.local_disk_budget,
                ))
            }
        };
        let mut remote_layers = BTreeMap::new();
        let mut hot_layers = BTreeMap::new();
        let catalog = if is_new {
            io.create_dir_durably(&timelines_dir)?;
            let c = match &remote {
                Some(r) => attach(&io, r, &timelines_dir, &mut remote_layers, &mut hot_layers)?,
                None => Catalog::default(),
            };
            io.write_atomic(&catalog_path, &c.encode())?;
            c
        } else {
            let c = Catalog::decode(&io.read(&catalog_path)?, &catalog_path)?;
            if let Some(r) = &remote {
                for e in &c.timelines {
                    if let Some(idx) = latest_remote_index(r, e.id)? {
                        remote_layers.insert(e.id, idx.layer_generations.into_iter().collect());
                    }
                }
            }
            c
        };
        let cache = Arc::new(BlockCache::new(options.block_cache_bytes));
        let (wal, wal_records) = if options.wal {
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
            bg_error: Mutex::new(None),
            io: io.clone(),
            remote: remote.clone(),
        });

        sweep_timelines(&io, &timelines_dir, &catalog)?;
        let by_id = open_timelines(&timelines_dir, &catalog, &env, &remote_layers)?;
        if let Some(r) = &remote {
            for (id, layers) in remote_layers {
                r.note_uploaded(id, layers);
            }
            for tl in by_id.values() {
                r.mark_dirty(tl.id, tl.me.clone());
            }
            r.mark_catalog(catalog.encode());
            runtime.spawn(r.clone().run());
            // Warm what the previous owner read most, in the background.
            for (id, names) in hot_layers {
                if let Some(tl) = by_id.get(&id) {
                    let tl = tl.clone();
                    runtime.spawn(async move { tl.prefetch(&names).await });
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
                    if let Err(e) = tl.flush_frozen()
                        && !tl.deleted.load(Ordering::Acquire)
                    {
                        flusher_env.poison(&e);
                    }
                }
            })
            .map_err(|e| Error::io("starting the flush thread for", &dir, e))?;
        replay(&by_id, wal_records);
        let state = Arc::new(Mutex::new(State { catalog, by_id }));
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
            _lock: lock,
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Number of write-ahead log segment files on disk (0 with the log turned off). Segments
    /// go once flushed layers cover them.
    pub fn wal_segments(&self) -> usize {
        self.env.wal.as_ref().map_or(0, |w| w.segment_count())
    }

    /// The last error background compaction or GC met, if any (they retry on their next run).
    pub fn background_error(&self) -> Option<String> {
        self.env.bg_error.lock().clone()
    }

    /// Creates an empty timeline called `name`.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] if the name is taken; [`ErrorKind::InvalidArgument`] for an
    /// empty name, one over 255 bytes, or one with control characters.
    pub async fn create_timeline(&self, name: &str) -> Result<Timeline> {
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
        Ok(Timeline { inner })
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
        Ok(Timeline { inner })
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
        let id = TimelineId::generate();
        if let Some((p, lsn)) = parent {
            // Register first, then check the cutoff: GC moves the cutoff before it reads the
            // children, so either it sees this branch point or this check sees its cutoff.
            p.children.lock().insert(id, lsn);
            let (cutoff, lrl) = (p.gc_cutoff(), p.last_record_lsn());
            if lsn < cutoff || lsn > lrl {
                p.children.lock().remove(&id);
                return Err(Error::invalid(format!(
                    "cannot branch timeline {} at LSN {lsn}: the allowed range is {cutoff} (GC cutoff) to {lrl} (last_record_lsn)",
                    p.name()
                )));
            }
        }
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
            if let Some((p, lsn)) = parent {
                inner.inherit_time_index(p, lsn)?;
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
                r.mark_dirty(id, inner.me.clone());
            }
            self.env.catalog_changed(&st.catalog);
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

    /// The timeline called `name`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is none.
    pub fn timeline(&self, name: &str) -> Result<Timeline> {
        self.env.check()?;
        let st = self.state.lock();
        st.find(name).map(|inner| Timeline {
            inner: inner.clone(),
        })
    }

    /// Every timeline, ordered by name.
    pub fn timelines(&self) -> Vec<Timeline> {
        let st = self.state.lock();
        let mut v: Vec<_> = st
            .by_id
            .values()
            .map(|inner| Timeline {
                inner: inner.clone(),
            })
            .collect();
        v.sort_by_key(|t| t.name());
        v
    }

    /// Deletes the timeline `name` and its files.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if it has children (delete them or
    /// [`detach_ancestor`](Store::detach_ancestor) them first); [`ErrorKind::NotFound`].
    pub async fn delete_timeline(&self, name: &str) -> Result<()> {
        self.env.check()?;
        let mut st = self.state.lock();
        let tl = st.find(name)?.clone();
        let _ops = tl.layer_ops.lock();
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
        let mut next = st.catalog.clone();
        next.timelines.retain(|e| e.id != tl.id);
        self.env
            .io
            .write_atomic(&self.dir.join(CATALOG_FILE), &next.encode())?;
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
            p.children.lock().remove(&tl.id);
        }
        self.env.io.remove_dir_all(&tl.dir)
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
        let tl = self.timeline(name)?.inner;
        let t2 = tl.clone();
        tokio::task::spawn_blocking(move || t2.detach_ancestor())
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("detach task failed: {e}")))?
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
            timeline: Timeline { inner },
            lsn,
            backup_name: backup,
        })
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
        if let Some(wal) = &self.env.wal
            && let Err(e) = wal.sync()
            && result.is_ok()
        {
            result = Err(e);
        }
        if let Some(r) = &self.env.remote
            && result.is_ok()
        {
            result = match tokio::time::timeout(CLOSE_UPLOAD_TIMEOUT, r.wait_uploaded()).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "uploads did not finish within {CLOSE_UPLOAD_TIMEOUT:?}: {}",
                        r.last_error().unwrap_or_default()
                    ),
                )),
            };
        }
        self.shutdown();
        result
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

    /// The generation this node holds in object storage, if it has a remote.
    pub fn generation(&self) -> Option<crate::remote::Generation> {
        self.env.remote.as_ref().map(|r| r.generation)
    }

    /// The last error the uploader met (it retries with backoff), if any.
    pub fn upload_error(&self) -> Option<String> {
        self.env.remote.as_ref().and_then(|r| r.last_error())
    }

    /// Evicts resident layers that are in object storage, least recently used first, until the
    /// local layer bytes fit `budget`; layers a reader holds stay. Returns the bytes evicted.
    pub fn evict_layers(&self, budget: u64) -> u64 {
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
        let timelines: Vec<_> = state.lock().by_id.values().cloned().collect();
        drop(state);
        if let Some(budget) = env.remote.as_ref().and_then(|r| r.disk_budget) {
            evict_to_budget(env, &timelines, budget);
        }
        for tl in timelines {
            if env.check().is_err() {
                return;
            }
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tl.compact_if_needed()?;
                tl.gc().map(|_| ())
            }));

            let err = match run {
                Ok(Ok(())) => None,
                Ok(Err(e)) if tl.deleted.load(Ordering::Acquire) => {
                    let _ = e;
                    None
                }
                Ok(Err(e)) => Some(format!("timeline {}: {e}", tl.name())),
                Err(_) => Some(format!("timeline {}: background work panicked", tl.name())),
            };
            if let Some(e) = err {
                *env.bg_error.lock() = Some(e);
            }
        }
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
fn evict_to_budget(env: &Env, timelines: &[Arc<TimelineInner>], budget: u64) -> u64 {
    let mut resident = Vec::new();
    let mut total = 0;
    for tl in timelines {
        for l in tl.snapshot().map.layers() {
            if l.is_resident() {
                total += l.desc.file_size;
                if l.remote_generation().is_some() {
                    resident.push(l.clone());
                }
            }
        }
    }
    resident.sort_by_key(|l| l.last_used());
    let mut evicted = 0;
    for l in resident {
        if total <= budget {
            break;
        }
        if l.evict(|path| {
            let _ = env.io.remove_file(path);
        }) {
            total -= l.desc.file_size;
            evicted += l.desc.file_size;
        }
    }
    evicted
}

/// The newest index of `tl` at or below this node's generation.
fn latest_remote_index(r: &RemoteCtx, tl: TimelineId) -> Result<Option<RemoteIndex>> {
    let Some((g, bytes)) = r
        .runtime
        .block_on(r.storage.latest_index(tl, r.generation))?
    else {
        return Ok(None);
    };
    let name = PathBuf::from(crate::remote::index_object(tl, g));
    RemoteIndex::decode(&bytes, &name).map(Some)
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
    let Some((g, bytes)) = r.runtime.block_on(r.storage.latest_catalog(r.generation))? else {
        return Ok(Catalog::default());
    };
    let catalog = Catalog::decode(&bytes, &PathBuf::from(crate::remote::catalog_object(g)))?;
    for e in &catalog.timelines {
        let idx = latest_remote_index(r, e.id)?.ok_or_else(|| {
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
        remote_layers.insert(e.id, idx.layer_generations.into_iter().collect());
        hot.insert(e.id, idx.hot_layers);
    }
    Ok(catalog)
}
