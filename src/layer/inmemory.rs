//! The in-memory layer: the open one takes writes, frozen ones wait to be flushed.
//!
//! Each key is stored once (its bytes in its entry, or in an arena when long) and found through
//! a hash table; versions are appended to one chunked vector in put order, each linking to the previous
//! version of its key. A put is a hash lookup and two appends; a point read is a hash lookup and
//! a walk down the key's versions, newest first. Nothing keeps the keys in order as they are
//! written, which is what a tree would spend a put on (a cache miss per node on the way down):
//! only scans and flushes need the order. A flush sorts the keys once. A scan sorts the keys
//! added since the previous scan into a run and merges runs of similar size, so each key is
//! moved O(log n) times however scans and puts interleave, and a scan binary-searches O(log n)
//! runs.
//!
//! The writer's puts go through a short pipeline ([`InMemoryLayer::put_pipelined`]): the hash
//! lookup's two cache misses (the index slot, then the key's entry) are fetched ahead while
//! later puts arrive, and the put is applied once both are in the CPU cache. Puts waiting there
//! are unpublished, so no read can ask for them; the writer applies them before it publishes.

use std::cmp::Ordering as KeyOrdering;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use hashbrown::DefaultHashBuilder;
use parking_lot::{Mutex, RwLock, RwLockUpgradableReadGuard};

use super::chunked::Chunked;
use super::key_index::KeyIndex;
use super::value_arena::{SMALL_VALUE, ValueArena};
use super::versions::Versions;
use crate::format::OrdKey;
use crate::hint::prefetch;
use crate::lsn::Lsn;
use crate::value::{Value, ValueRef};

/// No version: the end of a key's chain.
const NONE: usize = usize::MAX;

/// Keys added since the last sorted run that a scan checks one by one before it sorts them
/// into a new run.
const RUN_MIN: usize = 256;

/// Versions of every key written since the layer opened, at LSNs `[start, end)`.
pub(crate) struct InMemoryLayer {
    start: Lsn,
    /// `u64::MAX` while open; the exclusive end once frozen.
    end: AtomicU64,
    table: RwLock<Table>,
    /// Key order for scans, over a prefix of the keys. Locked after `table`.
    order: Mutex<Runs>,
    /// The memory the table holds ([`Table::memory`]), as of the last put; changed only under
    /// `table`'s write lock.
    bytes: AtomicUsize,
    /// Set under `table`'s write lock when the next [`GROW_AHEAD`] new keys would make the
    /// index or the key vector grow; the next put grows them first, off the write lock (see
    /// [`grow_ahead`](InMemoryLayer::grow_ahead)).
    grow_soon: AtomicBool,
}

impl Drop for InMemoryLayer {
    fn drop(&mut self) {
        // A frozen layer's last reference is often a reader's snapshot, taken before the
        // flush published the layer file that replaced it: its memory (a layer's worth of
        // mapped chunks and vectors) is freed on the reaper thread, not in that get.
        let table = self.table.get_mut();
        if table.memory() >= REAP_BYTES {
            let table = std::mem::replace(table, Table::new());
            super::reaper::later(move || drop(table));
        }
    }
}

/// Tables holding at least this much are freed on the reaper thread when dropped.
const REAP_BYTES: usize = 1 << 20;

/// How far ahead of need the table grows: more than the puts one write-lock section applies
/// (a put and the pipeline it drains).
const GROW_AHEAD: usize = 4 * PIPELINE_LAG + 4;

/// A copy of `v` with room for `cap` elements. Only for plain data: the versions hold `Bytes`,
/// which a reader's clone may change in place (promoting it to shared), so a bitwise copy of
/// them taken beside readers would disagree with the original about who frees the buffer.
fn larger_copy<T: Copy>(v: &[T], cap: usize) -> Vec<T> {
    let mut n = Vec::with_capacity(cap.max(v.len()));
    n.extend_from_slice(v);
    n
}

/// The keys and versions of a layer.
struct Table {
    hasher: DefaultHashBuilder,
    /// Every key's id, by the hash of the key's bytes.
    index: KeyIndex,
    /// By key id, in the order keys were first written (so by the LSN of their oldest version).
    keys: Vec<KeyEntry>,
    /// Every key's bytes, end to end.
    arena: Vec<u8>,
    /// Every version, in put order (so by LSN: puts never go backwards); in chunks, so a
    /// put that needs room never copies the versions while readers wait.
    versions: Chunked<Version>,
    /// The values of up to [`SMALL_VALUE`] bytes, end to end.
    values: ValueArena,
    /// Longer values, each in its own buffer.
    large: Chunked<Bytes>,
    /// Bytes of the values in `large`.
    large_bytes: usize,
    /// Puts taken by [`InMemoryLayer::put_pipelined`] and not yet in the table, oldest first;
    /// none below an LSN in the table.
    pending: VecDeque<Pending>,
}

/// Puts a pipelined put runs ahead of the one it applies, per stage: a put's index slot is
/// fetched when it arrives, its key entry `PIPELINE_LAG` puts later, and it is applied
/// `PIPELINE_LAG` puts after that, when both are in the CPU cache. At 1M keys each of the
/// two is a cache miss, which a put otherwise waits for in turn.
const PIPELINE_LAG: usize = 8;

/// Keys up to this long can wait in the pipeline; a longer key is applied at once.
const PIPELINE_KEY: usize = 32;

/// A put waiting in the pipeline.
struct Pending {
    hash: u64,
    lsn: Lsn,
    value: Value,
    len: u8,
    key: [u8; PIPELINE_KEY],
}

impl Pending {
    /// A put of `key` (at most `PIPELINE_KEY` bytes), zero-padded.
    fn new(hash: u64, key: &[u8], lsn: Lsn, value: Value) -> Pending {
        let mut p = Pending {
            hash,
            lsn,
            value,
            // At most `PIPELINE_KEY`.
            len: key.len() as u8,
            key: [0; PIPELINE_KEY],
        };
        p.key[..key.len()].copy_from_slice(key);
        p
    }

    fn key(&self) -> &[u8] {
        &self.key[..usize::from(self.len)]
    }
}

/// Keys up to this long are stored in their [`KeyEntry`], longer ones in the arena.
const INLINE: usize = 28;

/// One cache line: a point read that finds a short key reads its bytes here.
#[repr(align(64))]
#[derive(Clone, Copy)]
struct KeyEntry {
    head: u64,
    /// Index in `versions` of the newest version.
    newest: usize,
    oldest_lsn: Lsn,
    /// Where the key's bytes start in the arena, when it is longer than `INLINE`.
    at: usize,
    len: u32,
    /// A short key's bytes, then zeros (which [`Table::find_padded`] relies on).
    inline: [u8; INLINE],
}

const _: () = assert!(
    std::mem::size_of::<KeyEntry>() == 64,
    "a key entry fills one line"
);

impl KeyEntry {
    fn key<'a>(&'a self, arena: &'a [u8]) -> &'a [u8] {
        let len = self.len as usize;
        if len <= INLINE {
            &self.inline[..len]
        } else {
            &arena[self.at..self.at + len]
        }
    }
}

/// One version: 32 bytes, its value elsewhere ([`Table::value`]).
struct Version {
    lsn: Lsn,
    /// Where the value is: its location in `values`, or with [`LARGE`] its index in `large`.
    at: u64,
    len: u32,
    /// Index in `versions` of the key's previous version, or `OLDER_NONE`. A layer holds far
    /// fewer than 4G versions (it is frozen at `freeze_bytes`, and each version counts its
    /// 32 bytes), so 32 bits do, and leave room for `key` in the same size.
    older: u32,
    /// The key's id, for reading the layer in LSN order (the change feed).
    key: u32,
    /// One of the `KIND_` values, with [`LARGE`] set for a value in `large`.
    kind: u8,
}

const _: () = assert!(std::mem::size_of::<Version>() == 32);

const KIND_TOMBSTONE: u8 = 0;
const KIND_IMAGE: u8 = 1;
const KIND_DELTA: u8 = 2;
const KIND_DELTA_INIT: u8 = 3;
/// Set in [`Version::kind`] when the value is in `large`.
const LARGE: u8 = 4;
/// Bytes a large value holds beyond its own: its `Bytes` and the allocator's header.
const LARGE_OVERHEAD: usize = 48;

/// No older version, in [`Version::older`].
const OLDER_NONE: u32 = u32::MAX;

impl Version {
    /// Whether the value is in the arena (a tombstone has none).
    fn in_arena(&self) -> bool {
        self.kind != KIND_TOMBSTONE && self.kind & LARGE == 0
    }

    fn older(&self) -> usize {
        match self.older {
            OLDER_NONE => NONE,
            o => o as usize,
        }
    }
}

/// A key's head (for comparing it as [`OrdKey`] without reading its bytes) and id.
type Sorted = (u64, usize);

/// Sorted runs covering the keys with ids below `covered`.
#[derive(Default)]
struct Runs {
    runs: Vec<Vec<Sorted>>,
    covered: usize,
}

impl Table {
    fn new() -> Table {
        Table {
            hasher: DefaultHashBuilder::default(),
            index: KeyIndex::new(),
            keys: Vec::new(),
            arena: Vec::new(),
            versions: Chunked::default(),
            values: ValueArena::default(),
            large: Chunked::default(),
            large_bytes: 0,
            pending: VecDeque::new(),
        }
    }

    /// The memory the table holds, in bytes: its key entries, index and versions, and the
    /// bytes of keys and values. Grown capacity not written yet is left out (the kernel backs
    /// pages only once written), as are the short pipeline of pending puts and the key order
    /// a scan builds.
    fn memory(&self) -> usize {
        self.keys.len() * std::mem::size_of::<KeyEntry>()
            + self.index.memory()
            + self.versions.len() * std::mem::size_of::<Version>()
            + self.arena.len()
            + self.values.memory()
            + self.large_bytes
    }

    /// Stores `value`: returns where it is, its length and its kind for a [`Version`].
    fn store(&mut self, value: Value) -> (u64, u32, u8) {
        let (kind, bytes) = match value {
            Value::Tombstone => return (0, 0, KIND_TOMBSTONE),
            Value::Image(b) => (KIND_IMAGE, b),
            Value::Delta {
                record,
                will_init: false,
            } => (KIND_DELTA, record),
            Value::Delta {
                record,
                will_init: true,
            } => (KIND_DELTA_INIT, record),
        };
        // Values are at most `max_value_len`, which options keep far below 4 GiB.
        let len = bytes.len() as u32;
        if bytes.len() <= SMALL_VALUE {
            (self.values.push(&bytes), len, kind)
        } else {
            // The buffer, and its `Bytes` and the allocator's header beside it.
            self.large_bytes += bytes.len() + LARGE_OVERHEAD;
            self.large.push(bytes);
            (self.large.len() as u64 - 1, len, kind | LARGE)
        }
    }

    /// The value of `v`, borrowed.
    fn value_ref(&self, v: &Version) -> ValueRef<'_> {
        let bytes = || {
            if v.kind & LARGE != 0 {
                &self.large[v.at as usize][..]
            } else {
                self.values.get(v.at, v.len as usize)
            }
        };
        match v.kind & !LARGE {
            KIND_IMAGE => ValueRef::Image(bytes()),
            KIND_DELTA => ValueRef::Delta {
                record: bytes(),
                will_init: false,
            },
            KIND_DELTA_INIT => ValueRef::Delta {
                record: bytes(),
                will_init: true,
            },
            _ => ValueRef::Tombstone,
        }
    }

    /// The value of `v`: a small value copied out of the arena, a large one shared.
    fn value(&self, v: &Version) -> Value {
        self.value_ref(v).to_value_with(|b| {
            if v.kind & LARGE != 0 {
                self.large[v.at as usize].clone()
            } else {
                Bytes::copy_from_slice(b)
            }
        })
    }

    /// Fetches the key entry the index most likely holds for `hash` into the CPU cache.
    fn prefetch_entry(&self, hash: u64) {
        if let Some(k) = self.index.likely(hash).and_then(|id| self.keys.get(id)) {
            prefetch(k);
        }
    }

    /// Applies every pending put, in order.
    fn apply_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // Entries of the puts that arrived last were not fetched yet: ask for them all first.
        for p in &self.pending {
            self.prefetch_entry(p.hash);
        }
        while let Some(p) = self.pending.pop_front() {
            self.apply_one(p);
        }
    }

    fn apply_one(&mut self, p: Pending) {
        let Pending {
            hash,
            lsn,
            value,
            len,
            key,
        } = p;
        let len = usize::from(len);
        let found = self.find_padded(hash, len, &key);
        self.apply_found(found, hash, &key[..len], lsn, value);
    }

    /// Adds a version to the table: the key's newest, at the newest LSN.
    fn apply(&mut self, hash: u64, key: &[u8], lsn: Lsn, value: Value) {
        let found = self.find_hashed(hash, key);
        self.apply_found(found, hash, key, lsn, value);
    }

    /// As [`apply`](Self::apply), where `found` is the key's id if the table has the key.
    fn apply_found(&mut self, found: Option<usize>, hash: u64, key: &[u8], lsn: Lsn, value: Value) {
        let at = self.versions.len();
        let (older, key_id) = match found {
            Some(id) => (std::mem::replace(&mut self.keys[id].newest, at), id),
            None => {
                let id = self.keys.len();
                let mut entry = KeyEntry {
                    head: OrdKey::new(key).head(),
                    newest: at,
                    oldest_lsn: lsn,
                    at: self.arena.len(),
                    // Keys are at most `max_key_len`, which options keep far below 4 GiB.
                    len: key.len() as u32,
                    inline: [0; INLINE],
                };
                if key.len() <= INLINE {
                    entry.inline[..key.len()].copy_from_slice(key);
                } else {
                    self.arena.extend_from_slice(key);
                }
                self.keys.push(entry);
                self.index.insert(hash, id);
                (NONE, id)
            }
        };
        debug_assert!(at < OLDER_NONE as usize && key_id < u32::MAX as usize);
        let (value_at, len, kind) = self.store(value);
        self.versions.push(Version {
            lsn,
            at: value_at,
            len,
            older: if older == NONE {
                OLDER_NONE
            } else {
                older as u32
            },
            key: key_id as u32,
            kind,
        });
    }

    fn key(&self, id: usize) -> &[u8] {
        self.keys[id].key(&self.arena)
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        self.find_hashed(self.hasher.hash_one(key), key)
    }

    fn find_hashed(&self, hash: u64, key: &[u8]) -> Option<usize> {
        self.index.find(hash, |id| self.key(id) == key)
    }

    /// As [`find_hashed`](Self::find_hashed) for a key of `len` bytes given zero-padded: a
    /// short key is compared with an entry's padded inline bytes as one fixed-size array,
    /// which compiles to a few loads where a slice comparison calls `memcmp`.
    fn find_padded(&self, hash: u64, len: usize, padded: &[u8; PIPELINE_KEY]) -> Option<usize> {
        let Some(short) = padded.first_chunk::<INLINE>().filter(|_| len <= INLINE) else {
            return self.find_hashed(hash, &padded[..len]);
        };
        self.index.find(hash, |id| {
            let k = &self.keys[id];
            k.len as usize == len && k.inline == *short
        })
    }

    /// The key's versions, newest first.
    fn chain(&self, id: usize) -> impl Iterator<Item = &Version> {
        let mut v = self.keys[id].newest;
        std::iter::from_fn(move || {
            let version = self.versions.get(v)?;
            v = version.older();
            Some(version)
        })
    }

    fn cmp_sorted(&self, a: &Sorted, b: &Sorted) -> KeyOrdering {
        a.0.cmp(&b.0).then_with(|| self.key(a.1).cmp(self.key(b.1)))
    }

    /// How the key of `s` compares to `key`, whose head is `head`.
    fn cmp_key(&self, s: &Sorted, key: &[u8], head: u64) -> KeyOrdering {
        s.0.cmp(&head).then_with(|| self.key(s.1).cmp(key))
    }

    /// Every key id, sorted by key.
    fn sorted_ids(&self) -> Vec<Sorted> {
        let mut ids: Vec<Sorted> = self.keys.iter().map(|k| k.head).zip(0..).collect();
        ids.sort_unstable_by(|a, b| self.cmp_sorted(a, b));
        ids
    }
}

impl Runs {
    /// Sorts keys added since the last run into a new run when there are enough of them, then
    /// merges the newest runs while the older of the two is at most twice the size of the newer.
    fn catch_up(&mut self, t: &Table) {
        if t.keys.len() - self.covered < RUN_MIN {
            return;
        }
        let mut run: Vec<Sorted> = t.keys[self.covered..]
            .iter()
            .map(|k| k.head)
            .zip(self.covered..)
            .collect();
        run.sort_unstable_by(|a, b| t.cmp_sorted(a, b));
        self.covered = t.keys.len();
        self.runs.push(run);
        while let [.., older, newer] = &self.runs[..]
            && older.len() <= 2 * newer.len()
        {
            let mut merged = Vec::with_capacity(older.len() + newer.len());
            let (mut i, mut j) = (0, 0);
            while i < older.len() && j < newer.len() {
                if t.cmp_sorted(&older[i], &newer[j]) == KeyOrdering::Less {
                    merged.push(older[i]);
                    i += 1;
                } else {
                    merged.push(newer[j]);
                    j += 1;
                }
            }
            merged.extend_from_slice(&older[i..]);
            merged.extend_from_slice(&newer[j..]);
            self.runs.pop();
            *self.runs.last_mut().expect("two runs") = merged;
        }
    }
}

impl InMemoryLayer {
    pub(crate) fn new(start: Lsn) -> InMemoryLayer {
        InMemoryLayer {
            start,
            end: AtomicU64::new(u64::MAX),
            table: RwLock::new(Table::new()),
            order: Mutex::new(Runs::default()),
            bytes: AtomicUsize::new(0),
            grow_soon: AtomicBool::new(false),
        }
    }

    /// Grows the key index and the key vector ahead of need, when a put found them close to
    /// full, and maps and faults in the value arena's next chunk (a mapping and its page
    /// faults under the write lock were the commonest place a reader found the writer
    /// preempted while it waited). The larger copies are built under an upgradable read lock,
    /// so reads go on meanwhile; only the swap takes the write lock. Rebuilding the index inside a put, under
    /// the write lock, kept reads of a layer of a million keys waiting for milliseconds. (The
    /// versions are never copied: they grow by a chunk, see [`Chunked`].)
    fn grow_ahead(&self) {
        let t = self.table.upgradable_read();
        let index = t.index.needs_room_for(GROW_AHEAD).then(|| t.index.grown());
        let keys = (t.keys.len() + GROW_AHEAD > t.keys.capacity())
            .then(|| larger_copy(&t.keys, 2 * t.keys.len() + GROW_AHEAD));
        let values = t
            .values
            .needs_spare()
            .then(super::value_arena::Chunk::faulted_in);
        let mut t = RwLockUpgradableReadGuard::upgrade(t);
        if let Some(i) = index {
            t.index = i;
        }
        if let Some(c) = values {
            t.values.set_spare(c);
        }
        let old_keys = keys.map(|k| std::mem::replace(&mut t.keys, k));
        self.grow_soon.store(false, Ordering::Relaxed);
        drop(t);
        drop(old_keys);
    }

    /// Notes, under the write lock, whether the table should grow before the next put.
    fn note_room(&self, t: &Table) {
        if t.index.needs_room_for(GROW_AHEAD)
            || t.keys.len() + GROW_AHEAD > t.keys.capacity()
            || t.values.needs_spare()
        {
            self.grow_soon.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn start(&self) -> Lsn {
        self.start
    }

    pub(crate) fn end(&self) -> Lsn {
        Lsn(self.end.load(Ordering::Acquire))
    }

    /// Ends the layer at `end`, its pending puts applied.
    pub(crate) fn freeze(&self, end: Lsn) {
        let spare = {
            let mut t = self.table.write();
            t.apply_pending();
            // Nothing is pushed any more: the chunk prepared for the next values goes.
            let spare = t.values.take_spare();
            self.note_memory(&t);
            spare
        };
        if let Some(chunk) = spare {
            // Unmapped off the writer's path, which freezes.
            super::reaper::later(move || drop(chunk));
        }
        self.end.store(end.0, Ordering::Release);
    }

    /// Notes the memory `t` holds; the caller holds the table's write lock.
    fn note_memory(&self, t: &Table) {
        self.bytes.store(t.memory(), Ordering::Relaxed);
    }

    /// The memory the layer holds, in bytes, as of its last put: what `freeze_bytes` bounds.
    pub(crate) fn size(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        let t = self.table.read();
        t.versions.is_empty() && t.pending.is_empty()
    }

    /// Whether `(key, lsn)` is already written here, pending puts included.
    pub(crate) fn contains(&self, key: &[u8], lsn: Lsn) -> bool {
        let t = self.table.read();
        if t.pending.iter().any(|p| p.lsn == lsn && p.key() == key) {
            return true;
        }
        let Some(id) = t.find(key) else {
            return false;
        };
        t.chain(id)
            .find(|v| v.lsn <= lsn)
            .is_some_and(|v| v.lsn == lsn)
    }

    /// Adds a version; the caller has checked that `(key, lsn)` is new and `lsn` is the newest
    /// LSN written to this layer so far.
    pub(crate) fn put(&self, key: &[u8], lsn: Lsn, value: Value) {
        if self.grow_soon.load(Ordering::Relaxed) {
            self.grow_ahead();
        }
        let mut t = self.table.write();
        t.apply_pending();
        let hash = t.hasher.hash_one(key);
        t.apply(hash, key, lsn, value);
        self.note_room(&t);
        self.note_memory(&t);
    }

    /// As [`put`](Self::put), but the version may wait in a short pipeline, invisible to
    /// reads, until [`apply_pending`](Self::apply_pending) or a later put applies it: the
    /// writer applies its puts before it publishes them, so readers, which read only
    /// published LSNs, never miss one. A pipelined put fetches what the put
    /// `PIPELINE_LAG` before it will touch, so their cache misses overlap.
    pub(crate) fn put_pipelined(&self, key: &[u8], lsn: Lsn, value: Value) {
        if key.len() > PIPELINE_KEY {
            return self.put(key, lsn, value);
        }
        if self.grow_soon.load(Ordering::Relaxed) {
            self.grow_ahead();
        }
        let mut guard = self.table.write();
        let t = &mut *guard;
        let hash = t.hasher.hash_one(key);
        t.index.prefetch(hash);
        t.pending.push_back(Pending::new(hash, key, lsn, value));
        if let Some(mid) = t.pending.len().checked_sub(PIPELINE_LAG + 1) {
            t.prefetch_entry(t.pending[mid].hash);
        }
        if t.pending.len() > 2 * PIPELINE_LAG
            && let Some(p) = t.pending.pop_front()
        {
            t.apply_one(p);
        }
        self.note_room(t);
        self.note_memory(t);
    }

    /// Applies the puts waiting in the pipeline: reads see them from now on.
    pub(crate) fn apply_pending(&self) {
        let mut t = self.table.write();
        t.apply_pending();
        self.note_memory(&t);
    }

    /// Collects versions of `key` in `[start, cont)`, newest first; returns whether complete.
    pub(crate) fn collect(&self, key: &[u8], cont: Lsn, out: &mut Versions) -> bool {
        let t = self.table.read();
        let Some(id) = t.find(key) else {
            return false;
        };
        for v in t.chain(id).filter(|v| v.lsn < cont) {
            if out.push(v.lsn, t.value(v)) {
                return true;
            }
        }
        false
    }

    /// Every version of `key` in the layer, oldest first.
    pub(crate) fn versions_of(&self, key: &[u8]) -> Vec<(Lsn, Value)> {
        let t = self.table.read();
        let Some(id) = t.find(key) else {
            return Vec::new();
        };
        let mut out: Vec<(Lsn, Value)> = t.chain(id).map(|v| (v.lsn, t.value(v))).collect();
        out.reverse();
        out
    }

    /// Keys in the bounds that have a version below `cont`, appended to `out` (in no
    /// particular order).
    pub(crate) fn keys_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        cont: Lsn,
        out: &mut Vec<Bytes>,
    ) {
        self.keys_changed(lo, hi, Lsn::ZERO, cont, out);
    }

    /// Keys in the bounds whose newest version below `cont` is at or above `from`, appended to
    /// `out` (in no particular order): the keys written in `[from, cont)`.
    pub(crate) fn keys_changed(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        from: Lsn,
        cont: Lsn,
        out: &mut Vec<Bytes>,
    ) {
        let t = self.table.read();
        let mut order = self.order.lock();
        order.catch_up(&t);
        let below_hi = |key: &[u8]| match hi {
            Bound::Included(h) => key <= h,
            Bound::Excluded(h) => key < h,
            Bound::Unbounded => true,
        };
        let mut take = |id: usize| {
            let changed = if from == Lsn::ZERO {
                t.keys[id].oldest_lsn < cont
            } else {
                t.chain(id)
                    .find(|v| v.lsn < cont)
                    .is_some_and(|v| v.lsn >= from)
            };
            if changed {
                out.push(Bytes::copy_from_slice(t.key(id)));
            }
        };
        for run in &order.runs {
            let from = match lo {
                Bound::Unbounded => 0,
                Bound::Included(k) => {
                    let head = OrdKey::new(k).head();
                    run.partition_point(|s| t.cmp_key(s, k, head) == KeyOrdering::Less)
                }
                Bound::Excluded(k) => {
                    let head = OrdKey::new(k).head();
                    run.partition_point(|s| t.cmp_key(s, k, head) != KeyOrdering::Greater)
                }
            };
            for &(_, id) in &run[from..] {
                if !below_hi(t.key(id)) {
                    break;
                }
                take(id);
            }
        }
        for id in order.covered..t.keys.len() {
            if crate::value::bound_contains(lo, hi, t.key(id)) {
                take(id);
            }
        }
    }

    /// The LSN of the `n`-th version (counting from 1) at or above `from`, if the layer holds
    /// that many: where a reader taking at most `n` versions in LSN order stops.
    pub(crate) fn nth_lsn_from(&self, from: Lsn, n: usize) -> Option<Lsn> {
        let t = self.table.read();
        let first = t.versions.partition_point(|v| v.lsn < from);
        t.versions.get(first + n.checked_sub(1)?).map(|v| v.lsn)
    }

    /// Appends every version at LSNs in `[from, to]`, in LSN order (puts at one LSN in put
    /// order), found by binary search: the cost follows the versions taken, not the layer.
    pub(crate) fn versions_between(&self, from: Lsn, to: Lsn, out: &mut Vec<(Bytes, Lsn, Value)>) {
        let t = self.table.read();
        let first = t.versions.partition_point(|v| v.lsn < from);
        for v in t.versions.iter_from(first).take_while(|v| v.lsn <= to) {
            out.push((
                Bytes::copy_from_slice(t.key(v.key as usize)),
                v.lsn,
                t.value(v),
            ));
        }
    }

    /// Moves every version above `lsn` into a new layer starting at `lsn + 1`.
    pub(crate) fn split_off_above(&self, lsn: Lsn) -> InMemoryLayer {
        let next = InMemoryLayer::new(lsn.next());
        let mut t = self.table.write();
        let t = &mut *t;
        t.apply_pending();
        let cut = t.versions.partition_point(|v| v.lsn <= lsn);
        if cut == t.versions.len() {
            return next;
        }
        // Unlink the versions from `cut` on, noting whose they were.
        let mut moved = Vec::with_capacity(t.versions.len() - cut);
        for (id, k) in t.keys.iter_mut().enumerate() {
            while k.newest != NONE && k.newest >= cut {
                moved.push((k.newest, id));
                k.newest = t.versions[k.newest].older();
            }
        }
        moved.sort_unstable();
        for &(v, id) in &moved {
            let version = &t.versions[v];
            next.put(t.key(id), version.lsn, t.value(version));
        }
        // Values are stored in version order: those of the moved versions are the last ones.
        if let Some(first) = t.versions.iter_from(cut).find(|v| v.in_arena()) {
            t.values.truncate(first.at);
        }
        if let Some(first) = t.versions.iter_from(cut).find(|v| v.kind & LARGE != 0) {
            let first = first.at as usize;
            for i in first..t.large.len() {
                t.large_bytes -= t.large[i].len() + LARGE_OVERHEAD;
            }
            t.large.truncate(first);
        }
        t.versions.truncate(cut);
        // Keys first written above `lsn` are the newest ones: drop them.
        let kept = t.keys.partition_point(|k| k.oldest_lsn <= lsn);
        if let Some(first_dropped) = t.keys.get(kept) {
            t.arena.truncate(first_dropped.at);
        }
        t.keys.truncate(kept);
        t.index.retain(|id| id < kept);
        let mut order = self.order.lock();
        for run in &mut order.runs {
            run.retain(|&(_, id)| id < kept);
        }
        order.runs.retain(|run| !run.is_empty());
        order.covered = order.covered.min(kept);
        self.note_memory(t);
        next
    }

    /// Calls `f` for every version in `(key, lsn)` order.
    pub(crate) fn for_each(
        &self,
        mut f: impl FnMut(&[u8], Lsn, ValueRef<'_>) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let t = self.table.read();
        let ids = t.sorted_ids();
        let mut chain = Vec::new();
        for (i, &(_, id)) in ids.iter().enumerate() {
            // Key order visits keys and versions in no order in memory: ask for them ahead.
            if let Some(&(_, ahead)) = ids.get(i + 16) {
                prefetch(&t.keys[ahead]);
            }
            if let Some(v) = ids
                .get(i + 8)
                .and_then(|&(_, a)| t.versions.get(t.keys[a].newest))
            {
                prefetch(v);
            }
            if let Some(v) = ids
                .get(i + 4)
                .and_then(|&(_, a)| t.versions.get(t.keys[a].newest))
                .filter(|v| v.in_arena())
            {
                prefetch(t.values.get(v.at, v.len as usize).as_ptr());
            }
            chain.clear();
            chain.extend(t.chain(id));
            let key = t.key(id);
            for v in chain.iter().rev() {
                f(key, v.lsn, t.value_ref(v))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    type Model = BTreeMap<Vec<u8>, BTreeMap<u64, Value>>;

    /// An image at every third LSN, a delta elsewhere, so reads walk several versions.
    /// One in seven values is longer than `SMALL_VALUE`, so kept in its own buffer.
    fn value(lsn: u64) -> Value {
        let repeat = if lsn.is_multiple_of(7) {
            SMALL_VALUE / 8 + 1
        } else {
            1
        };
        let bytes = Bytes::from(lsn.to_be_bytes().repeat(repeat));
        if lsn.is_multiple_of(3) {
            Value::Image(bytes)
        } else {
            Value::Delta {
                record: bytes,
                will_init: false,
            }
        }
    }

    /// Moves the versions above `at` out of `model` into the model returned, as
    /// `split_off_above(at)` does to a layer.
    fn split_model(model: &mut Model, at: u64) -> Model {
        let mut high = Model::new();
        for (k, versions) in model.iter_mut() {
            let tail = versions.split_off(&(at + 1));
            if !tail.is_empty() {
                high.insert(k.clone(), tail);
            }
        }
        model.retain(|_, v| !v.is_empty());
        high
    }

    /// Everything `for_each` yields.
    fn dump(layer: &InMemoryLayer) -> Vec<(Vec<u8>, u64, Value)> {
        let mut all = Vec::new();
        layer
            .for_each(|k, l, v| {
                all.push((k.to_vec(), l.0, v.to_value_with(Bytes::copy_from_slice)));
                Ok(())
            })
            .unwrap();
        all
    }

    fn flat(model: &Model) -> Vec<(Vec<u8>, u64, Value)> {
        let mut all = Vec::new();
        for (k, versions) in model {
            for (l, v) in versions {
                all.push((k.clone(), *l, v.clone()));
            }
        }
        all
    }

    fn check_keys_in(
        layer: &InMemoryLayer,
        model: &Model,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        cont: u64,
    ) {
        let mut got = Vec::new();
        layer.keys_in(lo, hi, Lsn(cont), &mut got);
        got.sort();
        let owned = |b: Bound<&[u8]>| b.map(|k| k.to_vec());
        let want: Vec<Bytes> = model
            .range((owned(lo), owned(hi)))
            .filter(|(_, versions)| versions.keys().next().is_some_and(|l| *l < cont))
            .map(|(k, _)| Bytes::from(k.clone()))
            .collect();
        assert_eq!(got, want, "keys in {lo:?}..{hi:?} below LSN {cont}");
    }

    /// Bounds of every kind from two keys and a choice.
    fn bounds<'a>(a: &'a [u8], b: &'a [u8], kind: u8) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        match kind % 4 {
            0 => (Bound::Included(lo), Bound::Excluded(hi)),
            1 => (Bound::Excluded(lo), Bound::Included(hi)),
            2 => (Bound::Unbounded, Bound::Included(hi)),
            _ => (Bound::Included(lo), Bound::Unbounded),
        }
    }

    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct bytes and lengths across 8, so heads tie and keys are prefixes of others;
        // some keys longer than `INLINE`, stored in the arena.
        (
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff)], 1..11),
            any::<bool>(),
        )
            .prop_map(|(mut key, long)| {
                if long {
                    key.extend_from_slice(&[1; INLINE]);
                }
                key
            })
    }

    /// A pipelined put counts in the layer's size once applied (found by `matches_a_model`: the
    /// size stayed 0 until the next put, and a split at LSN 0 then "grew" the emptied layer).
    #[test]
    fn applying_pipelined_puts_counts_their_memory() {
        let layer = InMemoryLayer::new(Lsn(1));
        layer.put_pipelined(b"k", Lsn(1), value(1));
        layer.apply_pending();
        let applied = layer.size();
        assert_eq!(applied, layer.table.read().memory());
        assert!(applied >= 32, "{applied}");
        let frozen = InMemoryLayer::new(Lsn(1));
        frozen.put_pipelined(b"k", Lsn(1), value(1));
        frozen.freeze(Lsn(2));
        assert_eq!(frozen.size(), applied);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Pipelined puts: `contains` sees them before they are applied, and a freeze or a
        /// split applies them first, against a `BTreeMap` model.
        #[test]
        fn pipelined_puts_are_seen_by_contains_and_applied_by_freeze_and_split(
            puts in proptest::collection::vec((key_strategy(), 0u64..3), 1..300),
            split_at in proptest::option::of(0u64..400),
        ) {
            let layer = InMemoryLayer::new(Lsn(1));
            let mut model = Model::new();
            let mut lsn = 1;
            for (key, step) in puts {
                lsn += step;
                let written = model.get(&key).is_some_and(|v| v.contains_key(&lsn));
                prop_assert_eq!(layer.contains(&key, Lsn(lsn)), written);
                if !written {
                    layer.put_pipelined(&key, Lsn(lsn), value(lsn));
                    model.entry(key).or_default().insert(lsn, value(lsn));
                }
            }
            match split_at {
                None => {
                    layer.freeze(Lsn(lsn + 1));
                    prop_assert_eq!(dump(&layer), flat(&model));
                }
                Some(split_at) => {
                    let above = layer.split_off_above(Lsn(split_at));
                    let high = split_model(&mut model, split_at);
                    prop_assert_eq!(dump(&layer), flat(&model));
                    prop_assert_eq!(dump(&above), flat(&high));
                }
            }
        }

        /// Keys whose hashes collide are told apart by their bytes, whichever way a put
        /// compares them: pipelined (padded) or not (slices).
        #[test]
        fn colliding_keys_are_told_apart(
            puts in proptest::collection::vec((key_strategy(), any::<bool>()), 1..100),
        ) {
            let mut t = Table::new();
            let mut model: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
            for (lsn, (key, pipelined)) in (1..).zip(puts) {
                // One hash for every key: each lookup compares keys.
                let hash = 7;
                if pipelined && key.len() <= PIPELINE_KEY {
                    t.apply_one(Pending::new(hash, &key, Lsn(lsn), value(lsn)));
                } else {
                    t.apply(hash, &key, Lsn(lsn), value(lsn));
                }
                model.entry(key).or_default().insert(0, lsn);
            }
            prop_assert_eq!(t.keys.len(), model.len());
            for (key, lsns) in &model {
                let id = t.find_hashed(7, key).expect("written");
                prop_assert_eq!(t.key(id), &key[..]);
                let chain: Vec<u64> = t.chain(id).map(|v| v.lsn.0).collect();
                prop_assert_eq!(&chain, lsns);
            }
        }

        /// Puts, point reads, scans, and a split at any LSN, against a `BTreeMap` model.
        #[test]
        fn matches_a_model(
            puts in proptest::collection::vec((key_strategy(), 0u64..3, any::<bool>()), 1..1200),
            probes in proptest::collection::vec((key_strategy(), key_strategy(), 1u64..800, any::<u8>()), 1..20),
            split_at in 0u64..800,
        ) {
            let layer = InMemoryLayer::new(Lsn(1));
            let mut model = Model::new();
            let mut lsn = 1;
            for (i, (key, step, pipelined)) in puts.into_iter().enumerate() {
                lsn += step;
                if layer.contains(&key, Lsn(lsn)) {
                    prop_assert!(model[&key].contains_key(&lsn));
                    continue;
                }
                prop_assert!(!model.get(&key).is_some_and(|v| v.contains_key(&lsn)));
                if pipelined {
                    layer.put_pipelined(&key, Lsn(lsn), value(lsn));
                } else {
                    layer.put(&key, Lsn(lsn), value(lsn));
                }
                model.entry(key).or_default().insert(lsn, value(lsn));
                if i % 97 == 0 {
                    // Scans between puts build and merge runs. Reads see published puts, and
                    // the writer applies its pipeline before it publishes.
                    layer.apply_pending();
                    check_keys_in(&layer, &model, Bound::Unbounded, Bound::Unbounded, lsn + 1);
                }
            }
            layer.apply_pending();
            for (a, b, cont, kind) in &probes {
                let (lo, hi) = bounds(a, b, *kind);
                check_keys_in(&layer, &model, lo, hi, *cont);
                let mut got = Versions::default();
                let complete = layer.collect(a, Lsn(*cont), &mut got);
                let mut want = Vec::new();
                let mut want_complete = false;
                for (l, v) in model.get(a).into_iter().flat_map(|v| v.range(..*cont).rev()) {
                    want.push((Lsn(*l), v.clone()));
                    if matches!(v, Value::Image(_)) {
                        want_complete = true;
                        break;
                    }
                }
                prop_assert_eq!(complete, want_complete);
                let mut collected = got.collected();
                if !complete {
                    // Without a base, the deltas only: `collected` lists them newest first.
                    collected.retain(|(_, v)| matches!(v, Value::Delta { .. }));
                }
                prop_assert_eq!(collected, want);
            }
            prop_assert_eq!(dump(&layer), flat(&model));

            let size = layer.size();
            let above = layer.split_off_above(Lsn(split_at));
            let high = split_model(&mut model, split_at);
            prop_assert_eq!(dump(&layer), flat(&model));
            prop_assert_eq!(dump(&above), flat(&high));
            // Memory moves with the versions: the layer holds no more than before, and each
            // side at least its versions and their values.
            prop_assert!(layer.size() <= size, "{} > {}", layer.size(), size);
            for (l, m) in [(&layer, &model), (&above, &high)] {
                let least: usize = flat(m).iter().map(|(_, _, v)| 32 + v.payload_len()).sum();
                prop_assert!(l.size() >= least, "{} < {}", l.size(), least);
            }
            prop_assert_eq!(layer.is_empty(), model.is_empty());
            for (a, b, cont, kind) in &probes {
                let (lo, hi) = bounds(a, b, *kind);
                check_keys_in(&layer, &model, lo, hi, *cont);
                check_keys_in(&above, &high, lo, hi, *cont);
            }
            // The split layer still takes puts after its old newest LSN.
            let key = vec![7u8; 3];
            layer.put(&key, Lsn(split_at.max(lsn) + 1), value(0));
            prop_assert!(layer.contains(&key, Lsn(split_at.max(lsn) + 1)));
        }
    }
}
