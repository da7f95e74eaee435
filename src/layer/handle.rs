//! A layer as the layer map holds it: its description always, its file only while resident on
//! local disk. A layer that lives only in object storage is downloaded on first use (one
//! download however many readers ask) and may be evicted again under a disk budget.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};

use super::cache::BlockCache;
use super::file::LayerFile;
use crate::error::Result;
use crate::format::{LayerDesc, LayerKind};
use crate::lsn::Lsn;
use crate::value::KeyRange;

/// A process-wide clock for least-recently-used eviction: coarse, moved by
/// [`advance_clock`] when an order of use is about to be read (and by each download), not by
/// every read. A read only loads it, and stores a layer's use only when the clock moved since:
/// two threads reading the same layers would otherwise write the same cache lines on every
/// read and take them from each other.
static TICK: AtomicU64 = AtomicU64::new(1);

/// Moves the eviction clock on: layers read from now on look more recently used than those
/// read before.
pub(crate) fn advance_clock() {
    TICK.fetch_add(1, Ordering::Relaxed);
}

/// One layer of a timeline.
pub(crate) struct Layer {
    pub(crate) desc: LayerDesc,
    path: PathBuf,
    resident: RwLock<Option<Arc<LayerFile>>>,
    /// Held while downloading, so that concurrent readers wait for one download.
    pub(crate) download: tokio::sync::Mutex<()>,
    last_used: AtomicU64,
    /// The generation of the remote object holding this layer, once uploaded (0 = not).
    remote_generation: AtomicU64,
    /// Set when a published change removed the layer from its timeline's layer map: its object
    /// may be deleted from object storage once an index without it is uploaded.
    retired: AtomicBool,
}

impl Layer {
    /// A resident layer around an open file.
    pub(crate) fn resident(file: LayerFile) -> Layer {
        let path = file.path().to_path_buf();
        Layer {
            desc: file.desc.clone(),
            path,
            resident: RwLock::new(Some(Arc::new(file))),
            download: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(0),
            remote_generation: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    /// A layer known from an index whose file is not on local disk yet.
    pub(crate) fn remote(desc: LayerDesc, path: PathBuf, generation: u32) -> Layer {
        Layer {
            desc,
            path,
            resident: RwLock::new(None),
            download: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(0),
            remote_generation: AtomicU64::new(u64::from(generation) + 1),
            retired: AtomicBool::new(false),
        }
    }

    /// Opens the layer file at `path` as a resident layer.
    pub(crate) fn open(path: &Path, desc: &LayerDesc, cache: Arc<BlockCache>) -> Result<Layer> {
        Ok(Layer::resident(LayerFile::open(path, desc, cache)?))
    }

    /// The open file, if the layer is on local disk; marks it used.
    pub(crate) fn file(&self) -> Option<Arc<LayerFile>> {
        let f = self.resident.read().clone();
        if f.is_some() {
            self.mark_used();
        }
        f
    }

    /// Records a use at the current tick, writing only when the clock moved since the last.
    fn mark_used(&self) {
        let now = TICK.load(Ordering::Relaxed);
        if self.last_used.load(Ordering::Relaxed) != now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    /// The open file, if the layer is on local disk, read-locked in place; marks it used. For
    /// a read of a few blocks: no reference count is touched (two threads reading the same
    /// layer would take its cache line from each other on every read), and eviction of this
    /// layer waits until the guard is dropped.
    pub(crate) fn file_locked(&self) -> Option<MappedRwLockReadGuard<'_, LayerFile>> {
        let f = RwLockReadGuard::try_map(self.resident.read(), |r| r.as_deref()).ok()?;
        self.mark_used();
        Some(f)
    }

    /// The open file, if on local disk, without counting it as read: for uploads and
    /// compaction, which should not make a layer look hot.
    pub(crate) fn file_quiet(&self) -> Option<Arc<LayerFile>> {
        self.resident.read().clone()
    }

    /// Whether the file is on local disk.
    pub(crate) fn is_resident(&self) -> bool {
        self.resident.read().is_some()
    }

    /// Installs the downloaded file; the caller's copy keeps it from eviction.
    pub(crate) fn set_resident(&self, file: LayerFile) -> Arc<LayerFile> {
        let file = Arc::new(file);
        *self.resident.write() = Some(file.clone());
        advance_clock();
        self.mark_used();
        file
    }

    /// Drops the local file if no reader holds it, and calls `remove` to delete it from disk;
    /// returns whether it did. The file is deleted before the layer shows as not resident, so
    /// a download that follows never has its new file deleted under it.
    pub(crate) fn evict(&self, remove: impl FnOnce(&Path)) -> bool {
        let mut r = self.resident.write();
        match &*r {
            Some(f) if Arc::strong_count(f) == 1 => {
                *r = None;
                remove(&self.path);
                true
            }
            _ => false,
        }
    }

    /// When a read last used the layer (0: never), on a process-wide tick.
    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The generation of the uploaded object, if the layer is in object storage.
    pub(crate) fn remote_generation(&self) -> Option<u32> {
        match self.remote_generation.load(Ordering::Acquire) {
            0 => None,
            g => Some((g - 1) as u32),
        }
    }

    /// Records that the layer was uploaded under `generation`.
    pub(crate) fn set_remote_generation(&self, generation: u32) {
        self.remote_generation
            .store(u64::from(generation) + 1, Ordering::Release);
    }

    /// Marks the layer as removed from its timeline's layer map (by compaction, GC or image
    /// creation); readers holding an older snapshot may still ask for it.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Whether a published change removed the layer from its timeline's layer map.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    pub(crate) fn kind(&self) -> LayerKind {
        self.desc.kind
    }

    pub(crate) fn lsn_range(&self) -> &Range<Lsn> {
        &self.desc.lsn_range
    }

    pub(crate) fn key_range(&self) -> &KeyRange {
        &self.desc.key_range
    }
}
