//! The in-memory layer's small values, end to end in chunks the layer maps from the kernel.
//!
//! A value handed to a put is usually a buffer of its own: for 100-byte values, a 112-byte
//! allocation plus the 32-byte `Bytes` that points at it, freed one by one after the layer is
//! flushed, in between allocations that live on. The allocator keeps those holes: measured in
//! `benches/peers`, tens of MB a store held and no longer used. Here a small value is copied
//! into a chunk of [`CHUNK_BYTES`], which is unmapped whole when the layer is dropped, and a
//! version names it with a location and a length. Chunks come mapped and faulted in from a
//! small process-wide set of spares a helper thread keeps ready (see [`Spares`]), so that a
//! put never waits on the kernel's memory-map lock. Readers copy a value out, so nothing a caller
//! keeps pins a chunk.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use memmap2::{MmapMut, MmapOptions};

use super::append_vec::AppendVec;

/// Bytes per chunk.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// Values up to this long go into the arena; longer ones keep their own buffer, which a read
/// then shares rather than copies.
pub(crate) const SMALL_VALUE: usize = 1024;

/// Memory of one chunk: a private anonymous mapping, or the heap where the kernel refused one.
/// Read and written only through `base`, never through a reference to the whole chunk: the
/// writer fills one part while readers read others.
struct Chunk {
    base: *mut u8,
    /// Owns the mapping (unmapped on drop); `None` for a heap chunk, freed in `drop`.
    map: Option<MmapMut>,
}

// SAFETY: a chunk is plain bytes owned through a raw pointer; which thread writes which bytes
// is the arena's contract (one writer, and readers only of bytes written before they were
// published).
unsafe impl Send for Chunk {}
// SAFETY: as above.
unsafe impl Sync for Chunk {}

impl Chunk {
    fn new() -> Chunk {
        match SPARES
            .take()
            .map_or_else(|| MmapMut::map_anon(CHUNK_BYTES), Ok)
        {
            Ok(mut m) => Chunk {
                base: m.as_mut_ptr(),
                map: Some(m),
            },
            Err(_) => Chunk {
                base: Box::into_raw(vec![0u8; CHUNK_BYTES].into_boxed_slice()).cast::<u8>(),
                map: None,
            },
        }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if self.map.is_none() {
            // SAFETY: `base` came from `Box::into_raw` of a boxed slice of `CHUNK_BYTES`.
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.base, CHUNK_BYTES))
            });
        }
    }
}

/// Chunks mapped and faulted in ahead of the writers that need them. A writer that maps a chunk
/// itself takes the kernel's memory-map lock for writing, and waits for it behind other
/// threads' page faults and unmappings: a `sched_switch` trace of the peer benchmark's ingest
/// caught a put waiting 20–95 ms there. A helper thread keeps a few chunks ready and stops,
/// unmapping them, once none was taken for a while; a writer that finds none maps its own.
/// At most [`SPARE_CHUNKS`] MiB per process, outside every layer's memory.
struct Spares {
    state: Mutex<SpareState>,
    /// Signalled when a chunk is taken.
    taken: Condvar,
    /// Chunks kept ready.
    keep: usize,
    /// How long the helper waits for a chunk to be taken before it stops.
    idle: Duration,
}

struct SpareState {
    ready: Vec<MmapMut>,
    /// Whether a helper thread is running.
    helper: bool,
}

/// Chunks the process-wide spares keep ready.
const SPARE_CHUNKS: usize = 4;

static SPARES: Spares = Spares::new(SPARE_CHUNKS, Duration::from_secs(1));

impl Spares {
    const fn new(keep: usize, idle: Duration) -> Spares {
        Spares {
            state: Mutex::new(SpareState {
                ready: Vec::new(),
                helper: false,
            }),
            taken: Condvar::new(),
            keep,
            idle,
        }
    }

    /// A ready chunk, if there is one; starts the helper (or wakes it) to prepare the next.
    fn take(&'static self) -> Option<MmapMut> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let chunk = s.ready.pop();
        if s.helper {
            self.taken.notify_one();
        } else {
            s.helper = std::thread::Builder::new()
                .name("stratakv-arena".into())
                .spawn(move || self.prepare())
                .is_ok();
        }
        chunk
    }

    /// The helper: maps and faults in chunks until `keep` are ready, then waits for one to be
    /// taken; stops after `idle` without one taken (or when the kernel refuses a mapping).
    fn prepare(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            while s.ready.len() >= self.keep {
                let (g, wait) = self
                    .taken
                    .wait_timeout(s, self.idle)
                    .unwrap_or_else(PoisonError::into_inner);
                s = g;
                if wait.timed_out() && s.ready.len() >= self.keep {
                    s.helper = false;
                    let unused = std::mem::take(&mut s.ready);
                    drop(s);
                    drop(unused);
                    return;
                }
            }
            drop(s);
            let chunk = MmapOptions::new().len(CHUNK_BYTES).populate().map_anon();
            s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match chunk {
                Ok(c) => s.ready.push(c),
                Err(_) => {
                    s.helper = false;
                    return;
                }
            }
        }
    }
}

/// Values appended end to end; a value never spans two chunks. One writer pushes (keeping its
/// place in [`ArenaCursor`]) while readers read values pushed before.
#[derive(Default)]
pub(crate) struct ValueArena {
    chunks: AppendVec<Chunk>,
}

/// The writer's place in a [`ValueArena`]: bytes used in its last chunk.
#[derive(Default)]
pub(crate) struct ArenaCursor {
    used: usize,
}

/// Where a value starts: the chunk in the upper 32 bits, the offset in the lower.
pub(crate) type Location = u64;

impl ValueArena {
    /// Copies `value` (at most [`CHUNK_BYTES`] long) in; returns where it starts. Readers may
    /// read it once its location is published to them (with `Release`).
    ///
    /// # Safety
    /// No other thread pushes meanwhile, and `cursor` is this arena's (it was passed to every
    /// earlier push).
    pub(crate) unsafe fn push(&self, cursor: &mut ArenaCursor, value: &[u8]) -> Location {
        debug_assert!(value.len() <= CHUNK_BYTES);
        if self.chunks.is_empty() || cursor.used + value.len() > CHUNK_BYTES {
            // SAFETY: one pusher at a time, as this function requires.
            unsafe { self.chunks.push(Chunk::new()) };
            cursor.used = 0;
        }
        let c = self.chunks.len() - 1;
        let start = cursor.used;
        let chunk = self.chunks.get(c).expect("just pushed");
        // SAFETY: `start..start + len` is inside the chunk and above every byte handed out
        // (the cursor is this arena's), so no reader reads it and no one else writes it.
        unsafe {
            std::ptr::copy_nonoverlapping(value.as_ptr(), chunk.base.add(start), value.len())
        };
        cursor.used += value.len();
        ((c as u64) << 32) | start as u64
    }

    /// The `len` bytes at `at`, as [`push`](Self::push) returned for a value of that length.
    ///
    /// # Safety
    /// The location was published to this thread after the push that returned it (through a
    /// `Release` store the caller loaded with `Acquire`): bytes still being written would be a
    /// data race.
    ///
    /// # Panics
    /// If no chunk `at` names was pushed, or the bytes run past its end.
    pub(crate) unsafe fn get(&self, at: Location, len: usize) -> &[u8] {
        let (c, start) = ((at >> 32) as usize, at as u32 as usize);
        let chunk = self.chunks.get(c).expect("a value in a pushed chunk");
        assert!(start + len <= CHUNK_BYTES, "value past its chunk's end");
        // SAFETY: inside the chunk, which lives as long as `self`; the bytes were written
        // before their location was published, and are never written again.
        unsafe { std::slice::from_raw_parts(chunk.base.add(start), len) }
    }

    /// Bytes of the chunks in use: full ones whole, the last as far as `cursor` says it is
    /// written (the kernel backs a mapping's pages only once they are written).
    pub(crate) fn memory(&self, cursor: &ArenaCursor) -> usize {
        self.chunks.len().saturating_sub(1) * CHUNK_BYTES + cursor.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Polls `f` until it holds, for up to 10 s.
    fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The spares fill up after a take, hand out whole zeroed chunks, and stop (unmapping what
    /// they hold) once nothing is taken for their idle time. A pool of its own: the process's
    /// is shared with every other test.
    #[test]
    fn spares_fill_after_a_take_and_stop_when_idle() {
        let spares: &'static Spares =
            Box::leak(Box::new(Spares::new(3, Duration::from_millis(100))));
        let state = || spares.state.lock().unwrap();
        assert!(
            spares.take().is_none(),
            "nothing is ready before the first take"
        );
        eventually("three chunks ready", || state().ready.len() == 3);
        let mut chunk = spares.take().expect("a ready chunk");
        assert_eq!(chunk.len(), CHUNK_BYTES);
        assert!(chunk.iter().all(|&b| b == 0));
        chunk[CHUNK_BYTES - 1] = 7;
        eventually("refilled", || state().ready.len() == 3);
        eventually("the helper stopped", || !state().helper);
        assert!(state().ready.is_empty(), "a stopped helper keeps no chunks");
        // A take after the stop starts a helper again.
        assert!(spares.take().is_none());
        eventually("ready again", || state().ready.len() == 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        /// The arena against a list of the values pushed: lengths that cross chunk ends, empty
        /// values, every value read back after each step, memory at least the values' bytes.
        #[test]
        fn arena_gives_back_what_was_pushed(
            steps in proptest::collection::vec((any::<bool>(), 1usize..400, 0usize..SMALL_VALUE + 1), 1..12),
        ) {
            let arena = ValueArena::default();
            let mut cursor = ArenaCursor::default();
            let mut model: Vec<(Location, Vec<u8>)> = Vec::new();
            let mut seed = 0u8;
            for (long, count, len) in steps {
                // Long values so that a step of a few hundred crosses chunk ends.
                let len = if long { len * 64 } else { len };
                for _ in 0..count {
                    seed = seed.wrapping_add(1);
                    let v: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
                    // SAFETY: this thread is the only pusher, and the cursor is the arena's.
                    model.push((unsafe { arena.push(&mut cursor, &v) }, v));
                }
                for (at, v) in &model {
                    // SAFETY: pushed by this thread.
                    prop_assert_eq!(unsafe { arena.get(*at, v.len()) }, &v[..]);
                }
                let total: usize = model.iter().map(|(_, v)| v.len()).sum();
                let memory = arena.memory(&cursor);
                prop_assert!(memory >= total, "{} < {}", memory, total);
                prop_assert!(memory <= total + arena.chunks.len() * (64 * (SMALL_VALUE + 1)));
            }
        }
    }
}
