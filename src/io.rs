//! The one seam for local file I/O.
//!
//! Every file the store writes, syncs, renames or removes goes through a [`FileSystem`], so a
//! test can fail any of those operations or tear a write ([`FaultyFs`]). Layer files are read
//! through memory maps and WAL segments, manifests and the catalog through
//! [`FileSystem::read`].
//!
//! Files are written under a temporary name, fsynced, renamed into place, and the directory is
//! fsynced, so a crash leaves either the old file or the new one, never a torn mix. A failed
//! fsync poisons the store: after it, the state of the file on disk is unknown.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};

#[cfg(target_os = "linux")]
mod mapped;

/// A file open for writing.
pub trait WritableFile: Write + Send {
    /// Makes what was written durable (`fsync`).
    fn sync(&mut self) -> std::io::Result<()>;
}

/// Local file operations the store performs. [`StdFs`] is the real one.
pub trait FileSystem: Send + Sync + 'static {
    /// Creates `path` (truncating it) for writing.
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>>;
    /// Opens an existing `path` for appending.
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>>;
    /// Opens an existing write-ahead log segment for appending. By default
    /// [`open_append`](FileSystem::open_append); [`StdFs`] writes it through a memory map on
    /// Linux (an append is then a copy, with no system call; a process crash loses nothing,
    /// as with `write(2)`), allocating ahead and leaving zeros past the last write until the
    /// file is dropped, which reading a segment takes as its end.
    fn open_log(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        self.open_append(path)
    }
    /// Reads the whole of `path`.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> std::io::Result<()>;
    /// Removes a directory tree.
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()>;
    /// Makes the entries of a directory durable.
    fn sync_dir(&self, path: &Path) -> std::io::Result<()>;
    /// Names of the entries of a directory.
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>>;
    /// Cuts `path` to `len` bytes and makes that durable.
    fn truncate(&self, path: &Path, len: u64) -> std::io::Result<()>;
}

/// The operating system's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

struct StdFile(fs::File);

impl Write for StdFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl WritableFile for StdFile {
    fn sync(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
}

impl FileSystem for StdFs {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(StdFile(f)))
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(StdFile(
            OpenOptions::new().append(true).open(path)?,
        )))
    }
    #[cfg(target_os = "linux")]
    fn open_log(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(mapped::MappedLog::open(path)?))
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        fs::remove_dir_all(path)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        fs::create_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        fs::File::open(path)?.sync_all()
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in fs::read_dir(path)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
    fn truncate(&self, path: &Path, len: u64) -> std::io::Result<()> {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }
}

/// Which operation a [`FaultyFs`] fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// A write to a file (a torn write writes a prefix, then fails).
    Write,
    /// An fsync of a file or directory.
    Sync,
    /// A rename.
    Rename,
    /// Creating a file.
    Create,
}

/// A [`FileSystem`] that fails chosen operations: for tests of what the store does when the
/// disk says no.
///
/// Operations of each kind are counted from 1; [`fail_at`](FaultyFs::fail_at) makes the n-th
/// operation of a kind fail (and, for a write, [`torn`](FaultyFs::fail_at) writes part of the
/// buffer first).
pub struct FaultyFs {
    inner: Arc<dyn FileSystem>,
    counts: [AtomicU64; 4],
    plan: Mutex<Vec<(FaultOp, u64, Option<usize>)>>,
    injected: AtomicU64,
}

impl FaultyFs {
    /// Wraps `inner`, failing nothing until told.
    pub fn new(inner: Arc<dyn FileSystem>) -> Arc<FaultyFs> {
        Arc::new(FaultyFs {
            inner,
            counts: Default::default(),
            plan: Mutex::new(Vec::new()),
            injected: AtomicU64::new(0),
        })
    }

    /// Makes the `n`-th operation of kind `op` from now fail. For a write, `torn` writes that
    /// many bytes of the buffer (at most all but one) before failing.
    pub fn fail_at(&self, op: FaultOp, n: u64, torn: Option<usize>) {
        let at = self.count(op) + n;
        self.plan.lock().push((op, at, torn));
    }

    /// Operations of kind `op` performed so far.
    pub fn count(&self, op: FaultOp) -> u64 {
        self.counts[op as usize].load(Ordering::Acquire)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Acquire)
    }

    /// Forgets planned faults that have not fired.
    pub fn clear(&self) {
        self.plan.lock().clear();
    }

    /// Counts one operation; returns the fault planned for it, if any.
    fn tick(&self, op: FaultOp) -> Option<Option<usize>> {
        let n = self.counts[op as usize].fetch_add(1, Ordering::AcqRel) + 1;
        let mut plan = self.plan.lock();
        let i = plan.iter().position(|(o, at, _)| *o == op && *at == n)?;
        let (_, _, torn) = plan.remove(i);
        self.injected.fetch_add(1, Ordering::AcqRel);
        Some(torn)
    }

    fn injected_error(op: FaultOp) -> std::io::Error {
        std::io::Error::other(format!("injected {op:?} failure"))
    }
}

struct FaultyFile {
    inner: Box<dyn WritableFile>,
    fs: Arc<FaultyFs>,
}

impl Write for FaultyFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(torn) = self.fs.tick(FaultOp::Write) {
            if let Some(n) = torn {
                let n = n.min(buf.len().saturating_sub(1));
                self.inner.write_all(&buf[..n])?;
            }
            return Err(FaultyFs::injected_error(FaultOp::Write));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl WritableFile for FaultyFile {
    fn sync(&mut self) -> std::io::Result<()> {
        if self.fs.tick(FaultOp::Sync).is_some() {
            return Err(FaultyFs::injected_error(FaultOp::Sync));
        }
        self.inner.sync()
    }
}

/// Adapter so an `Arc<FaultyFs>` is a [`FileSystem`] that hands out faulty files.
impl FileSystem for Arc<FaultyFs> {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        if self.tick(FaultOp::Create).is_some() {
            return Err(FaultyFs::injected_error(FaultOp::Create));
        }
        Ok(Box::new(FaultyFile {
            inner: self.inner.create(path)?,
            fs: self.clone(),
        }))
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(FaultyFile {
            inner: self.inner.open_append(path)?,
            fs: self.clone(),
        }))
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        if self.tick(FaultOp::Rename).is_some() {
            return Err(FaultyFs::injected_error(FaultOp::Rename));
        }
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        if self.tick(FaultOp::Sync).is_some() {
            return Err(FaultyFs::injected_error(FaultOp::Sync));
        }
        self.inner.sync_dir(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> std::io::Result<()> {
        if self.tick(FaultOp::Sync).is_some() {
            return Err(FaultyFs::injected_error(FaultOp::Sync));
        }
        self.inner.truncate(path, len)
    }
}

/// Suffix of files being written; anything with it is swept at open.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// The temporary name a file is written under before it is renamed to `path`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(TEMP_SUFFIX);
    PathBuf::from(p)
}

/// The store's handle on its [`FileSystem`], with error mapping and the poison flag a failed
/// fsync raises.
#[derive(Clone)]
pub(crate) struct Io {
    fs: Arc<dyn FileSystem>,
    poison: Arc<Poison>,
}

/// Set once, read on every call: the flag is the fast path, the message the detail.
#[derive(Default)]
struct Poison {
    set: std::sync::atomic::AtomicBool,
    why: Mutex<Option<String>>,
}

impl Io {
    pub(crate) fn new(fs: Arc<dyn FileSystem>) -> Io {
        Io {
            fs,
            poison: Arc::new(Poison::default()),
        }
    }

    /// The real file system, for tests of the codecs.
    #[cfg(test)]
    pub(crate) fn std() -> Io {
        Io::new(Arc::new(StdFs))
    }

    /// Why the store is poisoned, if it is.
    pub(crate) fn poisoned(&self) -> Option<String> {
        if !self.poison.set.load(Ordering::Acquire) {
            return None;
        }
        self.poison.why.lock().clone()
    }

    /// Marks the store unusable.
    pub(crate) fn poison(&self, why: String) {
        self.poison.why.lock().get_or_insert(why);
        self.poison.set.store(true, Ordering::Release);
    }

    fn sync_failed(&self, e: Error) -> Error {
        self.poison(e.to_string());
        e
    }

    /// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = temp_path(path);
        let mut f = self.create(&tmp)?;
        f.write_all(bytes)
            .map_err(|e| Error::io("writing", &tmp, e))?;
        self.sync(f.as_mut(), &tmp)?;
        drop(f);
        self.rename_durably(&tmp, path)
    }

    /// Creates (truncating) a file for writing.
    pub(crate) fn create(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        self.fs
            .create(path)
            .map_err(|e| Error::io("creating", path, e))
    }

    /// Opens a file for appending.
    pub(crate) fn open_append(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        self.fs
            .open_append(path)
            .map_err(|e| Error::io("opening for append", path, e))
    }

    /// Opens a write-ahead log segment for appending ([`FileSystem::open_log`]).
    pub(crate) fn open_log(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        self.fs
            .open_log(path)
            .map_err(|e| Error::io("opening for append", path, e))
    }

    /// fsyncs a file; a failure poisons the store.
    pub(crate) fn sync(&self, f: &mut dyn WritableFile, path: &Path) -> Result<()> {
        f.sync()
            .map_err(|e| self.sync_failed(Error::io("fsyncing", path, e)))
    }

    /// Renames `from` to `to` and fsyncs the directory of `to`.
    pub(crate) fn rename_durably(&self, from: &Path, to: &Path) -> Result<()> {
        self.fs
            .rename(from, to)
            .map_err(|e| Error::io(format!("renaming {} to", from.display()), to, e))?;
        self.sync_dir(to.parent().unwrap_or(Path::new(".")))
    }

    /// fsyncs a directory; a failed fsync poisons the store. A directory that is not there
    /// (never made, or removed) is an error of the caller's, not a lost write: it poisons
    /// nothing.
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.fs.sync_dir(dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::io("fsyncing directory", dir, e)
            } else {
                self.sync_failed(Error::io("fsyncing directory", dir, e))
            }
        })
    }

    /// Creates a directory and its parents, then fsyncs its parent.
    pub(crate) fn create_dir_durably(&self, dir: &Path) -> Result<()> {
        self.fs
            .create_dir_all(dir)
            .map_err(|e| Error::io("creating directory", dir, e))?;
        if let Some(parent) = dir.parent() {
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    /// Reads a whole file; a missing one is [`ErrorKind::NotFound`].
    pub(crate) fn read(&self, path: &Path) -> Result<Vec<u8>> {
        self.fs.read(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Io
            };
            Error::new(kind, format!("reading {}: {e}", path.display())).with_source(e)
        })
    }

    /// Removes a file; a file already gone is fine.
    pub(crate) fn remove_file(&self, path: &Path) -> Result<()> {
        match self.fs.remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("removing", path, e))
            }
            _ => Ok(()),
        }
    }

    /// Removes a directory tree; one already gone is fine.
    pub(crate) fn remove_dir_all(&self, path: &Path) -> Result<()> {
        match self.fs.remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("removing", path, e))
            }
            _ => Ok(()),
        }
    }

    /// Names of the entries of a directory, sorted.
    pub(crate) fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        let mut names = self
            .fs
            .list_dir(dir)
            .map_err(|e| Error::io("listing", dir, e))?;
        names.sort();
        Ok(names)
    }

    /// Cuts a file to `len` bytes durably.
    pub(crate) fn truncate(&self, path: &Path, len: u64) -> Result<()> {
        self.fs
            .truncate(path, len)
            .map_err(|e| self.sync_failed(Error::io("truncating", path, e)))
    }
}
