//! The in-memory layer's hash index from key to key id: one array of 8-byte slots.
//!
//! Each slot holds the upper 32 bits of the key's hash (its tag) and the key's id, and keys are
//! placed by linear probing from the slot the tag names. A lookup reads one slot, usually in one
//! cache line, and then the key entry of the id whose tag matches: two memory reads where a
//! table with separate control bytes (`hashbrown`) takes three. The table is kept at most half
//! full, so probe sequences stay short. Keys are never removed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A slot that holds no key.
const EMPTY: u64 = u64::MAX;

/// Slots a table has when the first key arrives.
const MIN_SLOTS: usize = 16;

/// Slots are atomics, so that readers look keys up while the writer inserts: a slot is
/// written once, with `Release`, after the key entry it names.
pub(crate) struct KeyIndex {
    slots: Box<[AtomicU64]>,
    len: AtomicUsize,
}

impl KeyIndex {
    pub(crate) fn new() -> KeyIndex {
        KeyIndex::with_slots(0)
    }

    fn with_slots(n: usize) -> KeyIndex {
        KeyIndex {
            slots: (0..n).map(|_| AtomicU64::new(EMPTY)).collect(),
            len: AtomicUsize::new(0),
        }
    }

    fn tag(hash: u64) -> u32 {
        (hash >> 32) as u32
    }

    /// The id of the key with this `hash` for which `is_key(id)` holds, if one was inserted.
    pub(crate) fn find(&self, hash: u64, mut is_key: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let tag = Self::tag(hash);
        let mut i = tag as usize & mask;
        loop {
            let s = self.slots[i].load(Ordering::Acquire);
            if s == EMPTY {
                return None;
            }
            let id = s as u32 as usize;
            if (s >> 32) as u32 == tag && is_key(id) {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }

    /// Starts fetching the slot where a lookup of `hash` begins: a hint.
    pub(crate) fn prefetch(&self, hash: u64) {
        if !self.slots.is_empty() {
            let i = Self::tag(hash) as usize & (self.slots.len() - 1);
            crate::hint::prefetch(&self.slots[i]);
        }
    }

    /// The id of the first key whose tag matches `hash`'s, which is most likely the key with
    /// that hash: reads slots only, so that a caller can fetch that key's entry ahead of a
    /// [`find`](Self::find).
    pub(crate) fn likely(&self, hash: u64) -> Option<usize> {
        self.find(hash, |_| true)
    }

    /// Adds a key that is not in the index; the index has room for it
    /// ([`needs_room_for`](Self::needs_room_for)`(1)` is false). One inserter at a time (two
    /// at once could take the same slot; nothing unsafe, but a key would be lost).
    ///
    /// # Panics
    /// If `id` does not fit in 32 bits (an in-memory layer of four billion keys), or the index
    /// has no room.
    pub(crate) fn insert(&self, hash: u64, id: usize) {
        let id = u32::try_from(id)
            .ok()
            .filter(|&id| id != u32::MAX)
            .expect("fewer than 2^32 - 1 keys in one in-memory layer");
        assert!(!self.needs_room_for(1), "key index full");
        self.place((u64::from(Self::tag(hash)) << 32) | u64::from(id));
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts a slot value in the first free slot of its probe sequence.
    fn place(&self, slot: u64) {
        let mask = self.slots.len() - 1;
        let mut i = (slot >> 32) as usize & mask;
        while self.slots[i].load(Ordering::Relaxed) != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i].store(slot, Ordering::Release);
    }

    /// Whether inserting `more` keys would leave the index more than half full.
    pub(crate) fn needs_room_for(&self, more: usize) -> bool {
        (self.len.load(Ordering::Relaxed) + more) * 2 > self.slots.len()
    }

    /// A copy with twice the slots (at least [`MIN_SLOTS`]), built while readers go on
    /// reading this one; the writer then publishes it in this one's place.
    pub(crate) fn grown(&self) -> KeyIndex {
        let to = KeyIndex::with_slots((self.slots.len() * 2).max(MIN_SLOTS));
        for s in self.slots.iter().map(|s| s.load(Ordering::Relaxed)) {
            if s != EMPTY {
                to.place(s);
                to.len.fetch_add(1, Ordering::Relaxed);
            }
        }
        to
    }

    /// Bytes of the slots.
    pub(crate) fn memory(&self) -> usize {
        self.slots.len() * std::mem::size_of::<u64>()
    }

    /// Keys in the index.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::KeyIndex;

    proptest! {
        /// Against a `HashMap` of hash to ids: every inserted id is found under its hash, and a
        /// probe offers exactly the ids whose hashes share its tag, across growth into copies.
        #[test]
        fn finds_what_was_inserted(
            hashes in proptest::collection::vec(
                // Few distinct tags and low bits, so that probes collide.
                (0u64..8, 0u64..64).prop_map(|(tag, low)| (tag << 32) | low),
                0..300,
            ),
        ) {
            let mut index = KeyIndex::new();
            let mut model: HashMap<u64, Vec<usize>> = HashMap::new();
            for (id, &h) in hashes.iter().enumerate() {
                // Grown as the in-memory layer grows it: into a copy, before the insert.
                if index.needs_room_for(1) {
                    let before = index.slots.len();
                    index = index.grown();
                    prop_assert_eq!(index.slots.len(), (before * 2).max(super::MIN_SLOTS));
                }
                index.insert(h, id);
                model.entry(h).or_default().push(id);
            }
            prop_assert_eq!(index.len(), hashes.len());
            for (id, &h) in hashes.iter().enumerate() {
                prop_assert_eq!(index.find(h, |i| i == id), Some(id), "id {} hash {:x}", id, h);
                // Only the upper 32 bits are kept: a probe offers every id whose hash shares
                // them, and only those.
                let mut offered = Vec::new();
                prop_assert_eq!(index.find(h, |i| { offered.push(i); false }), None);
                offered.sort_unstable();
                let mut same_tag: Vec<usize> = model
                    .iter()
                    .filter(|(k, _)| *k >> 32 == h >> 32)
                    .flat_map(|(_, ids)| ids.iter().copied())
                    .collect();
                same_tag.sort_unstable();
                prop_assert_eq!(offered, same_tag);
            }
            prop_assert_eq!(index.find(u64::MAX, |_| true), None);
        }
    }
}
