//! Faulting pages in and giving them back a step at a time.
//!
//! A process has one lock over its memory map. Faulting a range in with `madvise` holds it (for
//! reading) until the whole range is in, and unmapping holds it while every page is freed.
//! Meanwhile a thread that needs it for writing waits — any `mmap`, `munmap` or `mprotect`,
//! and `malloc` growing a thread's heap is an `mprotect` — and every reader arriving after that
//! waiter waits too. Measured in `benches/peers` (a `perf` trace of the reader's context
//! switches and of who woke it): every get under ingest that blocked, blocked in its thread's
//! `malloc` growing its heap, behind the writer faulting in a 4 MiB window of the mapped WAL
//! (up to 3.7 ms), unmapping the last one (4.5 ms) or the block cache faulting in a chunk (up
//! to 18.6 ms, its thread preempted mid-way). Done in steps of [`STEP`], each holds the lock
//! for tens of microseconds, and a waiting writer gets it between two steps.

use memmap2::MmapMut;

/// Bytes one system call faults in or gives back.
const STEP: usize = 256 << 10;

/// The kernel's page size: `madvise` takes only page-aligned starts, and rounds a length up to
/// whole pages, so [`release_private`] must round inward by the real size (64 KiB on some
/// aarch64 and ppc64le kernels), or it would clear memory past its range. [`STEP`] is a
/// multiple of every page size in use.
#[cfg(target_os = "linux")]
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: `sysconf` only reads a system value.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n)
            .ok()
            .filter(|n| n.is_power_of_two())
            .unwrap_or(4096)
    })
}

/// Faults every page of `map` in for writing, a step at a time, so that writes to it fault
/// nothing. Returns false if the kernel cannot (nothing then was done; the pages fault in as
/// they are written).
pub(crate) fn populate_write(map: &MmapMut) -> bool {
    #[cfg(target_os = "linux")]
    {
        let mut off = 0;
        while off < map.len() {
            let len = STEP.min(map.len() - off);
            if map
                .advise_range(memmap2::Advice::PopulateWrite, off, len)
                .is_err()
            {
                return off > 0;
            }
            off += len;
        }
        true
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = map;
        false
    }
}

/// Drops the pages of a shared file mapping a step at a time (what was written stays in the
/// file's page cache), so that unmapping it after frees nothing under the lock.
pub(crate) fn release_shared(map: &MmapMut) {
    #[cfg(target_os = "linux")]
    {
        let mut off = 0;
        while off < map.len() {
            let len = STEP.min(map.len() - off);
            // SAFETY: for a shared file mapping, dropping pages loses nothing: a later access
            // reads the file's page cache, which holds every write made through the map.
            let _ =
                unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, off, len) };
            off += len;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = map;
}

/// Gives the whole pages inside `[ptr, ptr + len)` back to the kernel a step at a time, so that
/// freeing the memory after has few pages left to free under the lock. Only worth it for
/// large ranges.
///
/// # Safety
/// The range is private anonymous memory (a heap allocation or such a mapping) that nothing
/// reads again before it is freed: its pages read as zeros afterwards.
pub(crate) unsafe fn release_private(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        let page = page_size();
        let start = (ptr as usize).div_ceil(page) * page;
        let end = (ptr as usize + len) / page * page;
        let mut at = start;
        while at < end {
            // A multiple of the page size: `end - at` is one, and so is `STEP` or it is larger.
            let n = if STEP.is_multiple_of(page) {
                STEP.min(end - at)
            } else {
                end - at
            };
            // SAFETY: whole pages inside memory the caller owns and no longer reads; a private
            // anonymous page dropped this way reads as zeros if touched again (by the
            // allocator's own bookkeeping when the memory is freed), never as other data.
            unsafe { libc::madvise(at as *mut libc::c_void, n, libc::MADV_DONTNEED) };
            at += n;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    /// A populated map holds its zeros and takes writes; released private memory reads as
    /// zeros (whole pages) and keeps the bytes outside them.
    #[test]
    fn populated_and_released_memory_reads_as_expected() {
        if page_size() != PAGE {
            return;
        }
        let mut map = MmapMut::map_anon(3 * STEP + 5 * PAGE).unwrap();
        populate_write(&map);
        assert!(map.iter().all(|&b| b == 0));
        map.fill(7);
        let base = map.as_mut_ptr();
        // From the middle of a page to the middle of another: only the whole pages between.
        let (from, len) = (PAGE / 2, 2 * STEP + PAGE);
        // SAFETY: inside the map, which is private anonymous memory this test owns.
        unsafe { release_private(base.add(from), len) };
        let first_whole = PAGE;
        let end_whole = (from + len) / PAGE * PAGE;
        for (i, &b) in map.iter().enumerate() {
            let released = (first_whole..end_whole).contains(&i);
            assert_eq!(b, if released { 0 } else { 7 }, "byte {i}");
        }
    }

    /// Dropping a shared file mapping's pages keeps what was written through it.
    #[test]
    fn released_shared_pages_keep_their_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len((STEP + PAGE) as u64).unwrap();
        // SAFETY: a file this test alone opened.
        let mut map = unsafe { memmap2::MmapOptions::new().map_mut(&file).unwrap() };
        populate_write(&map);
        map.fill(9);
        release_shared(&map);
        assert!(map.iter().all(|&b| b == 9));
        drop(map);
        assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 9));
    }
}
