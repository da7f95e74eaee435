//! The one seam for local file I/O: every file the store writes goes through here.
//!
//! Files are written under a temporary name, fsynced, renamed into place, and the directory is
//! fsynced, so a crash leaves either the old file or the new one, never a torn mix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Suffix of files being written; anything with it is swept at open.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// The temporary name a file is written under before it is renamed to `path`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(TEMP_SUFFIX);
    PathBuf::from(p)
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let mut f = create(&tmp)?;
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", &tmp, e))?;
    sync(&f, &tmp)?;
    drop(f);
    rename_durably(&tmp, path)
}

/// Creates (truncating) a file for writing.
pub(crate) fn create(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io("creating", path, e))
}

/// fsyncs a file.
pub(crate) fn sync(f: &File, path: &Path) -> Result<()> {
    f.sync_all().map_err(|e| Error::io("fsyncing", path, e))
}

/// Renames `from` to `to` and fsyncs the directory of `to`.
pub(crate) fn rename_durably(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .map_err(|e| Error::io(format!("renaming {} to", from.display()), to, e))?;
    sync_dir(to.parent().unwrap_or(Path::new(".")))
}

/// fsyncs a directory so that renames and creations in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io("opening directory", dir, e))?;
    d.sync_all()
        .map_err(|e| Error::io("fsyncing directory", dir, e))
}

/// Creates a directory and its parents, then fsyncs its parent.
pub(crate) fn create_dir_durably(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            crate::ErrorKind::NotFound
        } else {
            crate::ErrorKind::Io
        };
        Error::new(kind, format!("reading {}: {e}", path.display())).with_source(e)
    })
}

/// Removes a file; a file already gone is fine.
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", path, e)),
        _ => Ok(()),
    }
}

/// Removes a directory tree; one already gone is fine.
pub(crate) fn remove_dir_all(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", path, e)),
        _ => Ok(()),
    }
}

/// Names of the entries of a directory.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
        let e = e.map_err(|e| Error::io("listing", dir, e))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
