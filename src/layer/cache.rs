//! The block cache: decoded, checksum-verified data blocks shared by every layer of a store.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::format::DataBlock;

const SHARDS: usize = 16;

/// `(file id, block offset)`.
type BlockKey = (u64, u64);

/// A cheap hasher for block keys: they are small integers we mix ourselves.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

struct Shard {
    map: HashMap<BlockKey, Arc<DataBlock>, BuildHasherDefault<MixHasher>>,
    /// Insertion order, for first-in-first-out eviction.
    order: VecDeque<BlockKey>,
    bytes: usize,
}

/// A sharded cache of decoded blocks, bounded in bytes, evicting the oldest insertions first.
pub(crate) struct BlockCache {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    next_file_id: AtomicU64,
}

impl BlockCache {
    pub(crate) fn new(capacity_bytes: usize) -> BlockCache {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::default(),
                    order: VecDeque::new(),
                    bytes: 0,
                })
            })
            .collect();
        BlockCache {
            shards,
            shard_capacity: capacity_bytes / SHARDS,
            next_file_id: AtomicU64::new(1),
        }
    }

    /// A fresh identity for a layer file's blocks.
    pub(crate) fn new_file_id(&self) -> u64 {
        self.next_file_id.fetch_add(1, Ordering::Relaxed)
    }

    fn shard(&self, key: BlockKey) -> &Mutex<Shard> {
        let h = (key.0 ^ key.1.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.shards[(h >> 60) as usize % SHARDS]
    }

    pub(crate) fn get(&self, file: u64, offset: u64) -> Option<Arc<DataBlock>> {
        self.shard((file, offset))
            .lock()
            .map
            .get(&(file, offset))
            .cloned()
    }

    pub(crate) fn insert(&self, file: u64, offset: u64, block: Arc<DataBlock>) {
        if self.shard_capacity == 0 {
            return;
        }
        let key = (file, offset);
        let mut s = self.shard(key).lock();
        let size = block.byte_len();
        if s.map.insert(key, block).is_none() {
            s.order.push_back(key);
            s.bytes += size;
        }
        while s.bytes > self.shard_capacity {
            let Some(old) = s.order.pop_front() else {
                break;
            };
            if let Some(b) = s.map.remove(&old) {
                s.bytes -= b.byte_len();
            }
        }
    }
}
