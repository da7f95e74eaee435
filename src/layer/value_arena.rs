//! The in-memory layer's small values, end to end in chunks the layer maps from the kernel.
//!
//! A value handed to a put is usually a buffer of its own: for 100-byte values, a 112-byte
//! allocation plus the 32-byte `Bytes` that points at it, freed one by one after the layer is
//! flushed, in between allocations that live on. The allocator keeps those holes: measured in
//! `benches/peers`, tens of MB a store held and no longer used. Here a small value is copied
//! into a chunk of [`CHUNK_BYTES`], which is unmapped whole when the layer is dropped, and a
//! version names it with a location and a length. Readers copy a value out, so nothing a caller
//! keeps pins a chunk.

use memmap2::MmapMut;

/// Bytes per chunk.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// Values up to this long go into the arena; longer ones keep their own buffer, which a read
/// then shares rather than copies.
pub(crate) const SMALL_VALUE: usize = 1024;

/// Memory of one chunk: a private anonymous mapping, or the heap where the kernel refused one.
pub(crate) enum Chunk {
    Mapped(MmapMut),
    Heap(Box<[u8]>),
}

impl Chunk {
    fn new() -> Chunk {
        match MmapMut::map_anon(CHUNK_BYTES) {
            Ok(m) => Chunk::Mapped(m),
            Err(_) => Chunk::Heap(vec![0; CHUNK_BYTES].into_boxed_slice()),
        }
    }

    /// A new chunk whose pages are backed already: writing values into it faults nothing.
    pub(crate) fn faulted_in() -> Chunk {
        let c = Chunk::new();
        if let Chunk::Mapped(m) = &c {
            // Only a hint: where the kernel lacks it, the pages fault in as they are written.
            #[cfg(target_os = "linux")]
            let _ = m.advise(memmap2::Advice::PopulateWrite);
            #[cfg(not(target_os = "linux"))]
            let _ = m;
        }
        c
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Mapped(m) => m,
            Chunk::Heap(b) => b,
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Chunk::Mapped(m) => m,
            Chunk::Heap(b) => b,
        }
    }
}

/// Values appended end to end; a value never spans two chunks.
#[derive(Default)]
pub(crate) struct ValueArena {
    chunks: Vec<Chunk>,
    /// Bytes used in the last chunk.
    used: usize,
    /// The next chunk, mapped and faulted in ahead by the writer outside the layer's write
    /// lock ([`needs_spare`](Self::needs_spare)), so that readers waiting on that lock never
    /// wait for a mapping and its page faults.
    spare: Option<Chunk>,
}

/// Room left in the last chunk below which the next one is prepared.
const SPARE_AT: usize = 64 << 10;

/// Where a value starts: the chunk in the upper 32 bits, the offset in the lower.
pub(crate) type Location = u64;

impl ValueArena {
    /// Copies `value` (at most [`CHUNK_BYTES`] long) in; returns where it starts.
    pub(crate) fn push(&mut self, value: &[u8]) -> Location {
        debug_assert!(value.len() <= CHUNK_BYTES);
        if self.chunks.is_empty() || self.used + value.len() > CHUNK_BYTES {
            self.chunks
                .push(self.spare.take().unwrap_or_else(Chunk::new));
            self.used = 0;
        }
        let c = self.chunks.len() - 1;
        let start = self.used;
        self.chunks[c].bytes_mut()[start..start + value.len()].copy_from_slice(value);
        self.used += value.len();
        ((c as u64) << 32) | start as u64
    }

    /// Whether the next chunk should be prepared ([`Chunk::faulted_in`]) and handed to
    /// [`set_spare`](Self::set_spare): the last one is nearly full and none is ready. An
    /// arena with no chunk yet needs none: a layer that takes a few puts (one per timeline, one
    /// after each freeze) would otherwise hold a whole faulted-in chunk it may never use.
    pub(crate) fn needs_spare(&self) -> bool {
        self.spare.is_none() && !self.chunks.is_empty() && self.used + SPARE_AT > CHUNK_BYTES
    }

    /// The chunk the next push that needs one takes.
    pub(crate) fn set_spare(&mut self, chunk: Chunk) {
        self.spare = Some(chunk);
    }

    /// Takes the spare chunk out, if one is ready (a layer that takes no more values).
    pub(crate) fn take_spare(&mut self) -> Option<Chunk> {
        self.spare.take()
    }

    /// The `len` bytes at `at`, as [`push`](Self::push) returned.
    pub(crate) fn get(&self, at: Location, len: usize) -> &[u8] {
        let (c, start) = ((at >> 32) as usize, at as u32 as usize);
        &self.chunks[c].bytes()[start..start + len]
    }

    /// Forgets every value from `at` on (values pushed at or after it), unmapping the chunks
    /// that held only those.
    pub(crate) fn truncate(&mut self, at: Location) {
        let (c, start) = ((at >> 32) as usize, at as u32 as usize);
        if c >= self.chunks.len() {
            return;
        }
        self.chunks.truncate(c + 1);
        self.used = start;
    }

    /// Bytes of the chunks in use: full ones whole, the last as far as it is written (the
    /// kernel backs a mapping's pages only once they are written), and the spare whole (its
    /// pages are faulted in).
    pub(crate) fn memory(&self) -> usize {
        self.chunks.len().saturating_sub(1) * CHUNK_BYTES
            + self.used
            + if self.spare.is_some() { CHUNK_BYTES } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        /// The arena against a list of the values pushed: lengths that cross chunk ends,
        /// truncations back to a value pushed earlier, every value read back after each step.
        #[test]
        fn arena_gives_back_what_was_pushed(
            steps in proptest::collection::vec((0usize..3, 1usize..400, 0usize..SMALL_VALUE + 1), 1..12),
        ) {
            let mut arena = ValueArena::default();
            let mut model: Vec<(Location, Vec<u8>)> = Vec::new();
            let mut seed = 0u8;
            for (kind, count, len) in steps {
                if kind == 0 && !model.is_empty() {
                    let keep = count % model.len();
                    arena.truncate(model[keep].0);
                    model.truncate(keep);
                } else {
                    // Long values so that a step of a few hundred crosses chunk ends.
                    let len = if kind == 1 { len * 64 } else { len };
                    for _ in 0..count {
                        seed = seed.wrapping_add(1);
                        let v: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
                        model.push((arena.push(&v), v));
                    }
                }
                for (at, v) in &model {
                    prop_assert_eq!(arena.get(*at, v.len()), &v[..]);
                }
                let total: usize = model.iter().map(|(_, v)| v.len()).sum();
                prop_assert!(arena.memory() >= total, "{} < {}", arena.memory(), total);
                prop_assert!(arena.memory() <= total + arena.chunks.len() * (64 * (SMALL_VALUE + 1)));
            }
        }
    }

    /// A new arena asks for no spare; a nearly full one does, once; the spare is counted
    /// whole until a push takes it as the next chunk.
    #[test]
    fn a_spare_is_asked_for_only_near_a_chunk_end_and_counted() {
        let mut arena = ValueArena::default();
        assert!(!arena.needs_spare(), "an empty arena asked for a spare");
        let value = vec![7u8; 4096];
        arena.push(&value);
        assert!(!arena.needs_spare(), "a fresh chunk asked for a spare");
        while arena.used + value.len() <= CHUNK_BYTES - SPARE_AT {
            arena.push(&value);
        }
        arena.push(&value);
        assert!(arena.needs_spare());
        let before = arena.memory();
        arena.set_spare(Chunk::faulted_in());
        assert!(!arena.needs_spare());
        assert_eq!(arena.memory(), before + CHUNK_BYTES);
        while arena.chunks.len() == 1 {
            arena.push(&value);
        }
        assert!(arena.spare.is_none());
        assert_eq!(arena.memory(), CHUNK_BYTES + value.len());
        arena.set_spare(Chunk::faulted_in());
        assert!(arena.take_spare().is_some());
        assert_eq!(arena.memory(), CHUNK_BYTES + value.len());
    }
}
