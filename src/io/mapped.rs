//! A WAL segment written through a shared memory map: an append is a copy into the page
//! cache, with no system call, and survives the process as a `write(2)` does (the pages are
//! the file's). Used by [`StdFs`](super::StdFs) on Linux for
//! [`FileSystem::open_log`](super::FileSystem::open_log).
//!
//! An append of [`WRITE_MIN`] bytes or more (a batch of commits) is written with `pwrite`
//! instead: one system call then costs less than making its pages writable through the map.
//!
//! The file is allocated ahead of the writes in steps of [`WINDOW`] bytes with `fallocate`,
//! so a full disk fails the allocation (an error, like a failed `write(2)`) instead of a page
//! fault (a `SIGBUS`). Only the window being written is mapped, so the resident pages stay a
//! few MiB whatever the segment's size. Past the last write the file holds zeros until it is
//! cut to its written length when dropped; a crash leaves them, and reading a segment stops
//! at an all-zero tail (see [`decode_wal_segment`](crate::format::decode_wal_segment)).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use memmap2::{MmapMut, MmapOptions};

use super::WritableFile;

/// Bytes mapped and allocated ahead at a time.
const WINDOW: u64 = 4 << 20;

/// Appends at least this large are written with `pwrite`: the system call costs less than
/// making that many pages writable through the map.
const WRITE_MIN: u64 = 16 << 10;

/// The page size mappings are aligned to (the smallest on the platforms this runs on; a
/// larger page size is a multiple of it, and `mmap` rejects a misaligned offset).
const PAGE: u64 = 4096;

/// An open segment written through a map (see the module docs).
pub(crate) struct MappedLog {
    file: File,
    /// The mapped window and the file offset it starts at.
    map: Option<(MmapMut, u64)>,
    /// Bytes written: the file's length once dropped.
    len: u64,
    /// Bytes allocated (the file's length meanwhile).
    allocated: u64,
    /// The file system cannot allocate ahead (`fallocate` unsupported): every append is a
    /// `pwrite`, since a mapped page of a sparse file on a full disk would fault (`SIGBUS`).
    plain: bool,
}

impl MappedLog {
    /// Opens `path` to append after what it holds.
    pub(crate) fn open(path: &Path) -> std::io::Result<MappedLog> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(MappedLog {
            file,
            map: None,
            len,
            allocated: len,
            plain: false,
        })
    }

    /// Maps a window holding `[self.len, self.len + need)`, allocating the file to its end;
    /// maps nothing and turns [`plain`](Self::plain) on where allocation is unsupported.
    fn remap(&mut self, need: u64) -> std::io::Result<()> {
        self.unmap();
        let start = self.len / PAGE * PAGE;
        let size = (self.len - start + need).div_ceil(WINDOW) * WINDOW;
        let end = start + size;
        if end > self.allocated {
            // SAFETY: a plain system call on an open descriptor; the range is in bounds.
            let r = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    0,
                    self.allocated as libc::off_t,
                    (end - self.allocated) as libc::off_t,
                )
            };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) {
                    self.plain = true;
                    return Ok(());
                }
                return Err(e);
            }
            self.allocated = end;
        }
        let len = usize::try_from(size).map_err(std::io::Error::other)?;
        // SAFETY: the file is this writer's own (the WAL's lock file keeps other processes
        // out, and the store opens a segment once); the window lies inside its allocated
        // length, which only this writer changes, and only after the map is dropped.
        let map = unsafe {
            MmapOptions::new()
                .offset(start)
                .len(len)
                .map_mut(&self.file)?
        };
        // Every page made writable ahead (in steps, see `crate::pages`), instead of a fault or
        // two per page on first write. Only a hint: a kernel without it faults them in as
        // they are written.
        crate::pages::populate_write(&map);
        self.map = Some((map, start));
        Ok(())
    }
}

impl MappedLog {
    /// Unmaps the window, its pages dropped first a step at a time (see `crate::pages`).
    fn unmap(&mut self) {
        if let Some((map, _)) = self.map.take() {
            crate::pages::release_shared(&map);
        }
    }
}

impl Write for MappedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len() as u64;
        let fits = self
            .map
            .as_ref()
            .is_some_and(|(m, start)| self.len + n <= start + m.len() as u64);
        if !fits && n < WRITE_MIN && !self.plain {
            self.remap(n)?;
        }
        if n >= WRITE_MIN || self.plain {
            // Large: one `pwrite` costs less than mapping its pages (the map and the file
            // are the same page cache, so the two mix).
            use std::os::unix::fs::FileExt;
            self.file.write_all_at(buf, self.len)?;
            self.len += n;
            self.allocated = self.allocated.max(self.len);
            return Ok(buf.len());
        }
        let (map, start) = self.map.as_mut().expect("mapped above");
        let at = (self.len - *start) as usize;
        map[at..at + buf.len()].copy_from_slice(buf);
        self.len += n;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl WritableFile for MappedLog {
    fn sync(&mut self) -> std::io::Result<()> {
        // The mapped pages are the file's page cache: `fdatasync` writes them back. The
        // allocated length is metadata it makes durable too; the zeros past `len` read as
        // the end of the segment.
        self.file.sync_data()
    }
}

impl Drop for MappedLog {
    fn drop(&mut self) {
        self.unmap();
        if self.allocated > self.len {
            // Best effort: a tail left by a failure here reads as the segment's end.
            let _ = self.file.set_len(self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes of every size across windows read back in order, and the file is cut to them.
    #[test]
    fn writes_across_windows_read_back_and_the_file_is_cut_to_them() {
        write_and_read_back(false);
    }

    /// The same where the file system cannot allocate ahead: every write a `pwrite`.
    #[test]
    fn writes_read_back_where_allocation_is_unsupported() {
        write_and_read_back(true);
    }

    fn write_and_read_back(plain: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        std::fs::write(&path, b"header").unwrap();
        let mut expect = b"header".to_vec();
        {
            let mut log = MappedLog::open(&path).unwrap();
            log.plain = plain;
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            for i in 0..2_000u64 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // Mostly small records through the map, now and then one written with
                // `pwrite`, larger than a window too.
                let n = if i % 500 == 499 {
                    WINDOW as usize + 3
                } else if i % 100 == 99 {
                    WRITE_MIN as usize + (rng % 9_000) as usize
                } else {
                    (rng % 9_000) as usize
                };
                let chunk: Vec<u8> = (0..n).map(|j| (i as usize + j) as u8).collect();
                log.write_all(&chunk).unwrap();
                expect.extend_from_slice(&chunk);
            }
            log.sync().unwrap();
            assert!(
                std::fs::metadata(&path).unwrap().len() >= expect.len() as u64,
                "allocated ahead"
            );
            assert_eq!(log.map.is_some(), !plain);
        }
        assert_eq!(std::fs::read(&path).unwrap(), expect);
    }
}
