//! The block cache: decoded, checksum-verified data blocks shared by every layer of a store.
//!
//! Each open layer file has a slot per data block ([`BlockSlots`]); a cached block sits in its
//! slot, so a read that found block `i` in the file's index reads it in place under slot `i`'s
//! read lock: no hashing, and the lock, the block's handles and their table pointer share one
//! cache line. The store-wide [`BlockCache`] only bounds the bytes held: it remembers the order
//! blocks were cached in and empties the oldest slots first.
//!
//! Blocks of small entries are copied into an [`Arena`] of large chunks, in the order they are
//! cached, which is also the order they are evicted in: a chunk is freed once its blocks are all
//! gone. A read of a cached block then touches few pages (a chunk of 2 MiB or more is backed by
//! huge pages where the kernel allows), which matters more than anything else on a warm read:
//! at 1M keys a 4 KiB page per block meant a TLB miss, and in a VM a two-level page walk, for
//! every read. Values read from the arena are copied out, so a value a caller keeps never pins
//! a chunk; blocks with a larger entry keep memory of their own and lend their values.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use memmap2::MmapMut;
use parking_lot::{MappedRwLockReadGuard, Mutex, RwLock, RwLockReadGuard};

use crate::error::Result;
use crate::format::{Alloc, BlockBuf, DataBlock, Pinned};

/// A cache line holding one block's slot.
#[repr(align(64))]
struct Slot(RwLock<Option<DataBlock>>);

/// One slot per data block of a layer file, and where each cached block's search starts.
pub(crate) struct BlockSlots {
    slots: Box<[Slot]>,
    /// For each block, in lines of eight, the address of its [`search_area`] and the length of
    /// its entries (see [`area_word`]) while it is cached, else 0. Read only to prefetch
    /// (which never faults, whatever the address), so a stale one costs a wasted fetch, nothing else: a lookup that knows which eight blocks
    /// its key may lie in fetches their line beside the heads it is searching, and then the
    /// block's search area beside the slot, rather than one after the other.
    ///
    /// [`search_area`]: DataBlock::search_area
    areas: Box<[AreaLine]>,
}

/// The search-area addresses of eight blocks: one cache line.
#[repr(align(64))]
struct AreaLine([AtomicUsize; AREA_LINE]);

/// As many as [`Heads`](super::heads::Heads) keeps in a group: a lookup knows the group its
/// key lies in before it knows the block.
const AREA_LINE: usize = super::heads::GROUP;

/// Lines of a cached block's search area a lookup prefetches: the offset table and heads of a
/// block of up to about 40 entries (a 4 KiB block of 100-byte values holds 30).
const AREA_PREFETCH_LINES: usize = 8;

/// Low bits of an area word holding the address; the high bits hold the length of the
/// block's entries (x86-64 and AArch64 user addresses fit in 48 bits).
const AREA_ADDRESS_BITS: u32 = 48;
const AREA_ADDRESS: usize = (1 << AREA_ADDRESS_BITS) - 1;

/// Lines a lookup prefetches around where it guesses its key's entries are in a block, and
/// how many of them come before the guess: eight lines, the guess in the fourth, did best of
/// 2 to 12 on a store of 100-byte values (a guess is off by a few entries either way; a key's
/// versions follow its first entry).
const NEAR_LINES: usize = 8;
const NEAR_BEFORE: usize = 3;

/// The area word of a cached block: its search area's address, and the length of its entries
/// above it (0 there when it does not fit). 0 when the address does not fit.
fn area_word(block: &DataBlock) -> usize {
    let at = block.search_area() as usize;
    let len = block.entries_len();
    if at > AREA_ADDRESS {
        0
    } else if len > usize::from(u16::MAX) {
        at
    } else {
        at | len << AREA_ADDRESS_BITS
    }
}

impl BlockSlots {
    fn new(blocks: usize) -> BlockSlots {
        BlockSlots {
            slots: (0..blocks).map(|_| Slot(RwLock::new(None))).collect(),
            areas: (0..blocks.div_ceil(AREA_LINE))
                .map(|_| AreaLine(std::array::from_fn(|_| AtomicUsize::new(0))))
                .collect(),
        }
    }

    /// Block `i`, if it is cached, read-locked in its slot. Hold it briefly: evicting it waits.
    pub(crate) fn get(&self, i: usize) -> Option<MappedRwLockReadGuard<'_, DataBlock>> {
        RwLockReadGuard::try_map(self.slots[i].0.read(), Option::as_ref).ok()
    }

    fn area(&self, i: usize) -> &AtomicUsize {
        &self.areas[i / AREA_LINE].0[i % AREA_LINE]
    }

    /// Starts fetching the search-area addresses of the blocks of heads group `line` into the
    /// CPU cache: a hint.
    pub(crate) fn prefetch_areas(&self, line: usize) {
        if let Some(l) = self.areas.get(line) {
            crate::hint::prefetch(l);
        }
    }

    /// Starts fetching block `i`'s slot into the CPU cache, and if the block is cached, the
    /// start of its search area and the lines around `place` (how far into the block's
    /// entries the key is guessed to lie, in 65,536ths): a hint. The entry a lookup reads
    /// then comes in beside the search that finds it, rather than after it.
    pub(crate) fn prefetch(&self, i: usize, place: Option<u16>) {
        if let Some(s) = self.slots.get(i) {
            crate::hint::prefetch(s);
            let word = self.area(i).load(Ordering::Relaxed);
            let at = word & AREA_ADDRESS;
            if at == 0 {
                return; // not cached: no address to fetch
            }
            crate::hint::prefetch_lines(at as *const u8, AREA_PREFETCH_LINES);
            let len = word >> AREA_ADDRESS_BITS;
            if let Some(place) = place
                && len != 0
            {
                // The entries end where the search area starts.
                let start = at.wrapping_sub(len);
                let guess = start + ((len * usize::from(place)) >> 16);
                let from = guess.saturating_sub(NEAR_BEFORE * 64).max(start);
                crate::hint::prefetch_lines(from as *const u8, NEAR_LINES);
            }
        }
    }

    /// Empties slot `i` (its write lock held as `slot`), returning the block.
    fn take(&self, i: usize, slot: &mut Option<DataBlock>) -> Option<DataBlock> {
        self.area(i).store(0, Ordering::Relaxed);
        slot.take()
    }
}

struct Fifo {
    /// Blocks in the order they were cached; an entry whose slot was emptied since (its file
    /// was closed) is skipped when it comes up.
    order: VecDeque<(Arc<BlockSlots>, usize)>,
    /// Bytes of the blocks in slots.
    bytes: usize,
    /// Blocks in slots.
    blocks: usize,
    arena: Arena,
}

/// Memory for cached blocks, carved in order from chunks of one size.
struct Arena {
    /// The newest chunk and how many of its bytes are handed out.
    chunk: Option<(Arc<Chunk>, usize)>,
    size: usize,
    /// Mappings of chunks whose blocks are all gone, kept for the next chunks: a cache that
    /// evicts as fast as it fills would otherwise unmap a chunk and map, fault in and zero a
    /// new one for every chunk's worth of blocks it caches.
    spares: Arc<Mutex<Vec<MmapMut>>>,
    /// Asks the thread that maps and faults in chunks ahead of need for one (started with the
    /// first chunk; it ends when the arena is dropped).
    preparer: Option<std::sync::mpsc::SyncSender<()>>,
    /// Chunks mapped from the kernel, by the arena or its preparer; recycled ones not counted.
    #[cfg(test)]
    mapped: Arc<std::sync::atomic::AtomicUsize>,
}

/// Spare chunk mappings an arena keeps at most: memory beyond the cache's capacity.
const SPARE_CHUNKS: usize = 2;

impl Arena {
    /// Chunks for a cache of `capacity` bytes: small enough that a chunk kept alive by a few
    /// blocks is a small part of the cache, large enough for huge pages in a large cache.
    fn new(capacity: usize) -> Arena {
        Arena {
            chunk: None,
            size: (capacity / 32).clamp(64 << 10, 8 << 20),
            spares: Arc::default(),
            preparer: None,
            #[cfg(test)]
            mapped: Arc::default(),
        }
    }

    /// `len` bytes written by `fill`, in the arena; of their own when they are a large part of a
    /// chunk, or when no chunk can be mapped.
    fn alloc(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> BlockBuf {
        let own = |fill: &mut dyn FnMut(&mut [u8])| {
            let mut v = vec![0; len];
            fill(&mut v);
            BlockBuf::from(Bytes::from(v))
        };
        if len > self.size / 8 {
            return own(fill);
        }
        let used = self.chunk.as_ref().map_or(self.size, |(_, used)| *used);
        if self.size - used < len {
            match self.next_chunk() {
                Ok(c) => self.chunk = Some((Arc::new(c), 0)),
                Err(_) => return own(fill),
            }
        }
        let (chunk, used) = self.chunk.as_mut().expect("a chunk with room");
        let start = *used;
        // SAFETY: `start + len` is within the mapping, whose bytes are all initialized (zeroed
        // by the kernel, or written before), and no piece handed out covers them (pieces cover
        // only bytes below `used`, and only pieces of this chunk), so nothing else reads or
        // writes them while `fill` does.
        fill(unsafe { std::slice::from_raw_parts_mut(chunk.base.add(start), len) });
        *used += len;
        let owner: Arc<dyn Send + Sync> = chunk.clone();
        // SAFETY: the bytes were just written and are never written again while the chunk
        // lives: later pieces cover only bytes above `used`, and the mapping is reused only
        // once the chunk, which every piece holds, is dropped.
        BlockBuf::Pinned(unsafe { Pinned::new(owner, chunk.base.add(start), len) })
    }

    /// A spare chunk, or a new one; then, if no spare is left, asks for one to be made ready.
    fn next_chunk(&mut self) -> std::io::Result<Chunk> {
        let spare = self.spares.lock().pop();
        let map = match spare {
            Some(map) => map,
            None => {
                #[cfg(test)]
                self.mapped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Chunk::map(self.size)?
            }
        };
        if self.spares.lock().is_empty() {
            self.prepare_spare();
        }
        Ok(Chunk::new(map, self.spares.clone()))
    }

    /// Has a chunk mapped and faulted in on a thread of its own, for the spares. A chunk
    /// fresh from the kernel is zeroed when first written, 2 MiB at a time on huge pages: in
    /// the read that caches a block there, under the cache's lock, that was milliseconds every
    /// reader waited while ingest moved the reads onto new blocks.
    fn prepare_spare(&mut self) {
        if self.preparer.is_none() {
            // One request waits at most: a second while one is pending adds nothing.
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            let (spares, size) = (self.spares.clone(), self.size);
            #[cfg(test)]
            let mapped = self.mapped.clone();
            let started = std::thread::Builder::new()
                .name("stratakv-cache".into())
                .spawn(move || {
                    while rx.recv().is_ok() {
                        if !spares.lock().is_empty() {
                            continue;
                        }
                        let Ok(map) = Chunk::map(size) else { continue };
                        #[cfg(test)]
                        mapped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let map = Chunk::fault_in(map);
                        let mut spares = spares.lock();
                        if spares.len() < SPARE_CHUNKS {
                            spares.push(map);
                        }
                    }
                });
            // Without the thread, chunks are mapped and faulted in where needed, as before.
            let Ok(_) = started else { return };
            self.preparer = Some(tx);
        }
        if let Some(tx) = &self.preparer {
            let _ = tx.try_send(());
        }
    }
}

/// A private anonymous mapping the arena carves pieces from. Fresh from the kernel rather than
/// from the allocator, so that no page of it was touched before it was advised onto huge
/// pages. Once its last piece is gone it goes back to the arena's spares, or is unmapped.
struct Chunk {
    /// Keeps the mapping alive; its bytes are reached only through `base`. `None` only while
    /// dropping.
    map: Option<MmapMut>,
    base: *mut u8,
    spares: Arc<Mutex<Vec<MmapMut>>>,
}

// SAFETY: a chunk's bytes are written only by the arena, under the cache's mutex, before any
// piece covers them; pieces only read, and only bytes already written. A recycled mapping has
// no pieces left: it is reused only after its chunk, and so every piece of it, was dropped.
// The preparer thread writes only a mapping it owns, before it is in the spares and so before
// any chunk holds it.
unsafe impl Send for Chunk {}
// SAFETY: as for `Send`.
unsafe impl Sync for Chunk {}

impl Chunk {
    fn map(size: usize) -> std::io::Result<MmapMut> {
        let map = MmapMut::map_anon(size)?;
        // Advice the kernel may ignore (transparent huge pages off, none free): the arena works
        // the same on small pages.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(map)
    }

    /// Writes every page of `map` now, so that none faults (and is zeroed) when a block is
    /// copied there.
    fn fault_in(mut map: MmapMut) -> MmapMut {
        if crate::pages::populate_write(&map) {
            return map;
        }
        // The mapping is fresh and zeroed: writing a zero to each page changes nothing but
        // faults it in.
        for i in (0..map.len()).step_by(4096) {
            map[i] = 0;
        }
        map
    }

    fn new(mut map: MmapMut, spares: Arc<Mutex<Vec<MmapMut>>>) -> Chunk {
        let base = map.as_mut_ptr();
        Chunk {
            map: Some(map),
            base,
            spares,
        }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(mut map) = self.map.take() {
            let mut spares = self.spares.lock();
            if spares.len() < SPARE_CHUNKS {
                spares.push(map);
                return;
            }
            drop(spares);
            // Unmapped: its pages given back a step at a time first (see `crate::pages`).
            // SAFETY: a private anonymous mapping no piece covers any more (the chunk, which
            // every piece holds, is being dropped), unmapped right after.
            unsafe { crate::pages::release_private(map.as_mut_ptr(), map.len()) };
        }
    }
}

/// Bounds the bytes of cached blocks across every layer file of a store, evicting the blocks
/// cached first.
pub(crate) struct BlockCache {
    capacity: usize,
    /// Whether layer files whose blocks this cache holds are mapped rather than read (see
    /// [`StoreOptions::map_layer_files`](crate::StoreOptions::map_layer_files)).
    pub(crate) map_files: bool,
    fifo: Mutex<Fifo>,
    /// Reads that found their block cached, and those that did not (see [`crate::metrics`]).
    pub(crate) hits: ::metrics::Counter,
    pub(crate) misses: ::metrics::Counter,
}

impl BlockCache {
    /// A cache holding at most `capacity_bytes` of decoded blocks; 0 caches nothing.
    pub(crate) fn new(capacity_bytes: usize) -> BlockCache {
        BlockCache {
            capacity: capacity_bytes,
            map_files: false,
            fifo: Mutex::new(Fifo {
                order: VecDeque::new(),
                bytes: 0,
                blocks: 0,
                arena: Arena::new(capacity_bytes),
            }),
            hits: ::metrics::counter!(crate::metrics::BLOCK_CACHE_HITS),
            misses: ::metrics::counter!(crate::metrics::BLOCK_CACHE_MISSES),
        }
    }

    /// [`new`](Self::new), for layer files that are mapped (`map_files`) or read.
    pub(crate) fn for_files(capacity_bytes: usize, map_files: bool) -> BlockCache {
        BlockCache {
            map_files,
            ..BlockCache::new(capacity_bytes)
        }
    }

    /// Empty slots for a layer file of `blocks` data blocks.
    pub(crate) fn slots(blocks: usize) -> Arc<BlockSlots> {
        Arc::new(BlockSlots::new(blocks))
    }

    /// Caches a copy of `block` as block `i` of the file owning `slots`, unless another reader
    /// cached it first. The caller must hold no slot's lock.
    #[cfg(test)]
    pub(crate) fn insert(&self, slots: &Arc<BlockSlots>, i: usize, block: &DataBlock) {
        self.insert_with(slots, i, |alloc| Ok(block.cached_copy(alloc)))
            .expect("a copy never fails");
    }

    /// Caches the block `make` builds in memory from the allocator it is given (the arena) as
    /// block `i` of the file owning `slots`, unless another reader cached it first. Returns
    /// whether the block was cached (by this call or another), or `make`'s error. The caller
    /// must hold no slot's lock.
    pub(crate) fn insert_with(
        &self,
        slots: &Arc<BlockSlots>,
        i: usize,
        make: impl FnOnce(&mut Alloc<'_>) -> Result<DataBlock>,
    ) -> Result<bool> {
        if self.capacity == 0 {
            return Ok(false);
        }
        // Blocks evicted to make room, dropped once the lock is let go: the last block of a
        // chunk unmaps it.
        let mut evicted = Vec::new();
        let mut fifo = self.fifo.lock();
        {
            let mut slot = slots.slots[i].0.write();
            if slot.is_some() {
                return Ok(true);
            }
            let arena = &mut fifo.arena;
            let block = make(&mut |len, fill| arena.alloc(len, fill))?;
            fifo.bytes += block.byte_len();
            fifo.blocks += 1;
            // The block's bytes stay where they are as long as it is in the slot.
            slots.area(i).store(area_word(&block), Ordering::Relaxed);
            *slot = Some(block);
        }
        fifo.order.push_back((slots.clone(), i));
        while fifo.bytes > self.capacity {
            let Some((s, j)) = fifo.order.pop_front() else {
                break;
            };
            if let Some(b) = s.take(j, &mut s.slots[j].0.write()) {
                fifo.bytes -= b.byte_len();
                fifo.blocks -= 1;
                evicted.push(b);
            }
        }
        // Entries of closed files' slots pile up only while the cache is under its capacity;
        // drop them once they outnumber the blocks cached.
        if fifo.order.len() > 2 * fifo.blocks + 1024 {
            fifo.order.retain(|(s, j)| s.slots[*j].0.read().is_some());
        }
        drop(fifo);
        drop(evicted);
        Ok(true)
    }

    /// Empties the slots of a file being closed and drops its entries from the queue; its
    /// blocks are freed after the cache's lock is let go, so readers caching a block meanwhile
    /// wait only for the slots to be emptied and one pass over the queue, not for thousands of
    /// blocks to be freed.
    pub(crate) fn release(&self, slots: &Arc<BlockSlots>) {
        if self.capacity == 0 {
            return;
        }
        let mut taken = Vec::new();
        let mut fifo = self.fifo.lock();
        for (i, slot) in slots.slots.iter().enumerate() {
            if let Some(b) = slots.take(i, &mut slot.0.write()) {
                fifo.bytes -= b.byte_len();
                fifo.blocks -= 1;
                taken.push(b);
            }
        }
        fifo.order.retain(|(s, _)| !Arc::ptr_eq(s, slots));
        drop(fifo);
        drop(taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::path::Path;

    /// A parsed block of `n` entries; its `byte_len` grows with `n`.
    fn block(n: u32) -> DataBlock {
        let mut b = crate::format::DataBlockBuilder::default();
        for k in 0..n {
            b.add(
                &k.to_be_bytes(),
                crate::Lsn(1),
                &crate::Value::Image(Bytes::from_static(b"v")),
            );
        }
        let mut raw = Vec::new();
        b.finish_into(&mut raw);
        DataBlock::parse(&raw, Path::new("t"), 0).unwrap()
    }

    #[test]
    fn holds_at_most_its_capacity_and_evicts_the_oldest_first() {
        let size = block(4).byte_len();
        let cache = BlockCache::new(3 * size);
        let a = BlockCache::slots(4);
        let b = BlockCache::slots(4);
        for i in 0..4 {
            cache.insert(&a, i, &block(4));
        }
        // a/0 was cached first and is gone; a/1..4 stay.
        assert!(a.get(0).is_none());
        assert!((1..4).all(|i| a.get(i).is_some()));
        cache.insert(&b, 2, &block(4));
        assert!(a.get(1).is_none());
        assert!(b.get(2).is_some());
        assert_eq!(cache.fifo.lock().bytes, 3 * size);
    }

    #[test]
    fn a_slot_holds_its_blocks_search_area_only_while_the_block_is_cached() {
        let size = block(4).byte_len();
        let cache = BlockCache::new(2 * size);
        // Nine blocks: the second line of addresses is used too.
        let s = BlockCache::slots(9);
        let area = |i: usize| s.area(i).load(Ordering::Relaxed);
        assert!((0..9).all(|i| area(i) == 0));
        for i in [0, 8] {
            cache.insert(&s, i, &block(4));
            let b = s.get(i).unwrap();
            let (at, len) = (area(i) & AREA_ADDRESS, area(i) >> AREA_ADDRESS_BITS);
            assert_eq!(at, b.search_area() as usize, "block {i}");
            assert_eq!(len, b.entries_len(), "block {i}");
            assert_ne!(len, 0);
        }
        // A third block evicts the first: its address goes with it.
        cache.insert(&s, 3, &block(4));
        assert!(s.get(0).is_none());
        assert_eq!(area(0), 0);
        assert_ne!(area(3), 0);
        cache.release(&s);
        assert!((0..9).all(|i| area(i) == 0));
    }

    #[test]
    fn a_racing_insert_keeps_the_first_block() {
        let cache = BlockCache::new(1 << 20);
        let s = BlockCache::slots(1);
        cache.insert(&s, 0, &block(2));
        cache.insert(&s, 0, &block(3));
        assert_eq!(s.get(0).map(|b| b.len()), Some(2));
        let fifo = cache.fifo.lock();
        assert_eq!(
            (fifo.blocks, fifo.bytes, fifo.order.len()),
            (1, block(2).byte_len(), 1)
        );
    }

    #[test]
    fn releasing_a_file_frees_its_blocks_and_its_queue_entries() {
        let cache = BlockCache::new(1 << 30);
        let kept = BlockCache::slots(1);
        cache.insert(&kept, 0, &block(1));
        for _ in 0..3000 {
            let s = BlockCache::slots(2);
            cache.insert(&s, 0, &block(1));
            cache.insert(&s, 1, &block(2));
            cache.release(&s);
        }
        let fifo = cache.fifo.lock();
        assert_eq!((fifo.bytes, fifo.blocks), (block(1).byte_len(), 1));
        assert_eq!(fifo.order.len(), 1, "only the kept file's block is queued");
    }

    #[test]
    fn a_cache_that_keeps_evicting_reuses_its_chunks() {
        // 64 KiB chunks (the smallest), a cache of 16 of them, blocks of a few hundred bytes.
        let capacity = 1 << 20;
        let cache = BlockCache::new(capacity);
        let size = cache.fifo.lock().arena.size;
        let b = block(40);
        let blocks = 40 * capacity / b.byte_len();
        let s = BlockCache::slots(blocks);
        for i in 0..blocks {
            cache.insert(&s, i, &b);
            let g = s.get(i).expect("just cached");
            assert_eq!(g.len(), 40);
        }
        let fifo = cache.fifo.lock();
        // Forty cache capacities went through; without reuse that would map about 640 chunks.
        // With it: the chunks that hold the cache's capacity, the newest, the spares, and one
        // whose last block is on its way out.
        let bound = capacity / size + 1 + SPARE_CHUNKS + 1;
        assert!(
            fifo.arena.mapped.load(std::sync::atomic::Ordering::Relaxed) <= bound,
            "{:?} chunks mapped, at most {bound} expected",
            fifo.arena.mapped
        );
        assert!(fifo.bytes <= capacity);
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache = BlockCache::new(0);
        let s = BlockCache::slots(1);
        cache.insert(&s, 0, &block(1));
        assert!(s.get(0).is_none());
    }
}
