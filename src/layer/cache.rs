//! The block cache: decoded, checksum-verified data blocks shared by every layer of a store.
//!
//! Each open layer file has a slot per data block ([`BlockSlots`]); a cached block sits in its
//! slot, so a read that found block `i` in the file's index reads it in place under slot `i`'s
//! read lock: no hashing, and the lock, the block's handles and their table pointer share one
//! cache line. The store-wide [`BlockCache`] only bounds the bytes held: it remembers the order
//! blocks were cached in and empties the oldest slots first.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{MappedRwLockReadGuard, Mutex, RwLock, RwLockReadGuard};

use crate::format::DataBlock;

/// A cache line holding one block's slot.
#[repr(align(64))]
struct Slot(RwLock<Option<DataBlock>>);

/// One slot per data block of a layer file.
pub(crate) struct BlockSlots(Box<[Slot]>);

impl BlockSlots {
    /// Block `i`, if it is cached, read-locked in its slot. Hold it briefly: evicting it waits.
    pub(crate) fn get(&self, i: usize) -> Option<MappedRwLockReadGuard<'_, DataBlock>> {
        RwLockReadGuard::try_map(self.0[i].0.read(), Option::as_ref).ok()
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
}

/// Bounds the bytes of cached blocks across every layer file of a store, evicting the blocks
/// cached first.
pub(crate) struct BlockCache {
    capacity: usize,
    fifo: Mutex<Fifo>,
}

impl BlockCache {
    /// A cache holding at most `capacity_bytes` of decoded blocks; 0 caches nothing.
    pub(crate) fn new(capacity_bytes: usize) -> BlockCache {
        BlockCache {
            capacity: capacity_bytes,
            fifo: Mutex::new(Fifo {
                order: VecDeque::new(),
                bytes: 0,
                blocks: 0,
            }),
        }
    }

    /// Empty slots for a layer file of `blocks` data blocks.
    pub(crate) fn slots(blocks: usize) -> Arc<BlockSlots> {
        Arc::new(BlockSlots(
            (0..blocks).map(|_| Slot(RwLock::new(None))).collect(),
        ))
    }

    /// Caches a copy of `block` as block `i` of the file owning `slots`, unless another reader
    /// cached it first. The caller must hold no slot's lock.
    pub(crate) fn insert(&self, slots: &Arc<BlockSlots>, i: usize, block: &DataBlock) {
        if self.capacity == 0 {
            return;
        }
        let mut fifo = self.fifo.lock();
        {
            let mut slot = slots.0[i].0.write();
            if slot.is_some() {
                return;
            }
            fifo.bytes += block.byte_len();
            fifo.blocks += 1;
            *slot = Some(block.clone());
        }
        fifo.order.push_back((slots.clone(), i));
        while fifo.bytes > self.capacity {
            let Some((s, j)) = fifo.order.pop_front() else {
                break;
            };
            if let Some(b) = s.0[j].0.write().take() {
                fifo.bytes -= b.byte_len();
                fifo.blocks -= 1;
            }
        }
        // Entries of closed files' slots pile up only while the cache is under its capacity;
        // drop them once they outnumber the blocks cached.
        if fifo.order.len() > 2 * fifo.blocks + 1024 {
            fifo.order.retain(|(s, j)| s.0[*j].0.read().is_some());
        }
    }

    /// Empties the slots of a file being closed, so its blocks are freed now.
    pub(crate) fn release(&self, slots: &BlockSlots) {
        if self.capacity == 0 {
            return;
        }
        let mut fifo = self.fifo.lock();
        for slot in &slots.0 {
            if let Some(b) = slot.0.write().take() {
                fifo.bytes -= b.byte_len();
                fifo.blocks -= 1;
            }
        }
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
        DataBlock::parse(Bytes::from(raw), Path::new("t"), 0).unwrap()
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
    fn releasing_a_file_frees_its_blocks_and_its_queue_entries_go_eventually() {
        let cache = BlockCache::new(1 << 30);
        for _ in 0..3000 {
            let s = BlockCache::slots(1);
            cache.insert(&s, 0, &block(1));
            cache.release(&s);
        }
        let fifo = cache.fifo.lock();
        assert_eq!((fifo.bytes, fifo.blocks), (0, 0));
        assert!(fifo.order.len() <= 1024 + 1, "{} queued", fifo.order.len());
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache = BlockCache::new(0);
        let s = BlockCache::slots(1);
        cache.insert(&s, 0, &block(1));
        assert!(s.get(0).is_none());
    }
}
