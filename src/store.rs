//! The store: one tenant's directory, its timelines, and the background flusher.
//!
//! Directory layout:
//!
//! | path | holds |
//! |---|---|
//! | `CATALOG` | the timelines and their names; its presence marks the directory as a store |
//! | `LOCK` | locked while a process has the store open |
//! | `timelines/<id>/manifest` | the timeline's manifest: its layers and watermarks |
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

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::format::{Catalog, CatalogEntry, Manifest};
use crate::id::TimelineId;
use crate::io;
use crate::layer::{BlockCache, LayerFile};
use crate::lsn::Lsn;
use crate::options::StoreOptions;
use crate::timeline::{Timeline, TimelineInner};

pub(crate) const CATALOG_FILE: &str = "CATALOG";
pub(crate) const LOCK_FILE: &str = "LOCK";
pub(crate) const TIMELINES_DIR: &str = "timelines";
pub(crate) const MANIFEST_FILE: &str = "manifest";
const MAX_NAME_LEN: usize = 255;

/// What the store and its timelines share.
pub(crate) struct Env {
    pub(crate) options: StoreOptions,
    pub(crate) cache: Arc<BlockCache>,
    flush_tx: Mutex<Option<mpsc::Sender<Arc<TimelineInner>>>>,
    closed: AtomicBool,
    poison: Mutex<Option<String>>,
}

impl Env {
    /// Fails if the store is closed or poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(p) = &*self.poison.lock() {
            return Err(Error::new(
                ErrorKind::Poisoned,
                format!("store is poisoned and must be reopened: {p}"),
            ));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "store is closed"));
        }
        Ok(())
    }

    /// Marks the store unusable after a failure that leaves its state uncertain.
    pub(crate) fn poison(&self, e: &Error) {
        let mut p = self.poison.lock();
        if p.is_none() {
            *p = Some(e.to_string());
        }
    }

    pub(crate) fn request_flush(&self, tl: Arc<TimelineInner>) {
        if let Some(tx) = &*self.flush_tx.lock() {
            let _ = tx.send(tl);
        }
    }
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
/// store.close().await.unwrap();
/// # });
/// ```
pub struct Store {
    dir: PathBuf,
    env: Arc<Env>,
    timelines: Mutex<BTreeMap<String, Arc<TimelineInner>>>,
    catalog: Mutex<Catalog>,
    flusher: Mutex<Option<JoinHandle<()>>>,
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
        tokio::task::spawn_blocking(move || Store::open_blocking(options))
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("open task failed: {e}")))?
    }

    fn open_blocking(options: StoreOptions) -> Result<Store> {
        options.validate()?;
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
            } else if io::list_dir(&dir)?.iter().all(|n| n == LOCK_FILE) {
                true
            } else {
                return Err(Error::invalid(format!(
                    "{} is not a StrataKV store (it has no {CATALOG_FILE} file) and is not empty",
                    dir.display()
                )));
            }
        } else {
            io::create_dir_durably(&dir)?;
            true
        };
        let lock = lock_dir(&dir)?;
        let timelines_dir = dir.join(TIMELINES_DIR);
        let catalog = if is_new {
            io::create_dir_durably(&timelines_dir)?;
            let c = Catalog::default();
            io::write_atomic(&catalog_path, &c.encode())?;
            c
        } else {
            Catalog::decode(&io::read(&catalog_path)?, &catalog_path)?
        };
        let cache = Arc::new(BlockCache::new(options.block_cache_bytes));
        let (tx, rx) = mpsc::channel::<Arc<TimelineInner>>();
        let env = Arc::new(Env {
            options,
            cache,
            flush_tx: Mutex::new(Some(tx)),
            closed: AtomicBool::new(false),
            poison: Mutex::new(None),
        });

        sweep_timelines(&timelines_dir, &catalog)?;
        let mut timelines = BTreeMap::new();
        for e in &catalog.timelines {
            let tl = open_timeline(&timelines_dir, e, &env)?;
            timelines.insert(e.name.clone(), Arc::new(tl));
        }

        let flusher_env = env.clone();
        let flusher = std::thread::Builder::new()
            .name("stratakv-flush".into())
            .spawn(move || {
                while let Ok(tl) = rx.recv() {
                    if let Err(e) = tl.flush_frozen() {
                        flusher_env.poison(&e);
                    }
                }
            })
            .map_err(|e| Error::io("starting the flush thread for", &dir, e))?;

        Ok(Store {
            dir,
            env,
            timelines: Mutex::new(timelines),
            catalog: Mutex::new(catalog),
            flusher: Mutex::new(Some(flusher)),
            _lock: lock,
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates an empty timeline called `name`.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] if the name is taken; [`ErrorKind::InvalidArgument`] for an
    /// empty name, one over 255 bytes, or one with control characters.
    pub async fn create_timeline(&self, name: &str) -> Result<Timeline> {
        self.env.check()?;
        check_name(name)?;
        let mut catalog = self.catalog.lock();
        if catalog.timelines.iter().any(|e| e.name == name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("timeline {name:?} already exists"),
            ));
        }
        let id = TimelineId::generate();
        let tl_dir = self.dir.join(TIMELINES_DIR).join(id.to_string());
        io::create_dir_durably(&tl_dir)?;
        let manifest = Manifest {
            timeline_id: id,
            ancestor: None,
            disk_consistent_lsn: Lsn::ZERO,
            gc_cutoff: Lsn::ZERO,
            next_layer_seq: 1,
            layers: Vec::new(),
        };
        io::write_atomic(&tl_dir.join(MANIFEST_FILE), &manifest.encode())?;
        let mut next = catalog.clone();
        next.timelines.push(CatalogEntry {
            name: name.to_string(),
            id,
        });
        io::write_atomic(&self.dir.join(CATALOG_FILE), &next.encode())?;
        *catalog = next;
        let inner = Arc::new(TimelineInner::new(
            name.to_string(),
            tl_dir,
            self.env.clone(),
            manifest,
            Vec::new(),
        ));
        self.timelines
            .lock()
            .insert(name.to_string(), inner.clone());
        Ok(Timeline { inner })
    }

    /// The timeline called `name`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is none.
    pub fn timeline(&self, name: &str) -> Result<Timeline> {
        self.env.check()?;
        self.timelines
            .lock()
            .get(name)
            .map(|inner| Timeline {
                inner: inner.clone(),
            })
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no timeline named {name:?}")))
    }

    /// Every timeline, ordered by name.
    pub fn timelines(&self) -> Vec<Timeline> {
        self.timelines
            .lock()
            .values()
            .map(|inner| Timeline {
                inner: inner.clone(),
            })
            .collect()
    }

    /// Flushes every timeline, stops background work and releases the directory.
    ///
    /// # Errors
    /// The first flush error; the store is closed either way.
    pub async fn close(self) -> Result<()> {
        let mut result = Ok(());
        let timelines: Vec<_> = self.timelines.lock().values().cloned().collect();
        for tl in timelines {
            if let Err(e) = tl.flush().await
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        self.shutdown();
        result
    }

    fn shutdown(&self) {
        self.env.closed.store(true, Ordering::Release);
        self.env.flush_tx.lock().take();
        if let Some(h) = self.flusher.lock().take() {
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
fn sweep_timelines(timelines_dir: &Path, catalog: &Catalog) -> Result<()> {
    for name in io::list_dir(timelines_dir)? {
        if !catalog.timelines.iter().any(|e| e.id.to_string() == name) {
            io::remove_dir_all(&timelines_dir.join(&name))?;
        }
    }
    Ok(())
}

fn open_timeline(timelines_dir: &Path, e: &CatalogEntry, env: &Arc<Env>) -> Result<TimelineInner> {
    let dir = timelines_dir.join(e.id.to_string());
    let mpath = dir.join(MANIFEST_FILE);
    let manifest = Manifest::decode(&io::read(&mpath)?, &mpath)?;
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
    for name in io::list_dir(&dir)? {
        if name != MANIFEST_FILE && !manifest.layers.iter().any(|l| l.file_name == name) {
            io::remove_file(&dir.join(&name))?;
        }
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for d in &manifest.layers {
        layers.push(Arc::new(LayerFile::open(
            &dir.join(&d.file_name),
            d,
            env.cache.clone(),
        )?));
    }
    Ok(TimelineInner::new(
        e.name.clone(),
        dir,
        env.clone(),
        manifest,
        layers,
    ))
}
