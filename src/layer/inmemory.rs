//! The in-memory layer: the open one takes writes, frozen ones wait to be flushed.

use std::borrow::Borrow;
use std::cmp::Ordering as KeyOrdering;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;

use super::versions::Versions;
use crate::format::OrdKey;
use crate::lsn::Lsn;
use crate::value::Value;

/// Bytes of bookkeeping counted per version on top of key and value bytes.
const VERSION_OVERHEAD: usize = 48;

/// Versions of every key written since the layer opened, at LSNs `[start, end)`.
pub(crate) struct InMemoryLayer {
    start: Lsn,
    /// `u64::MAX` while open; the exclusive end once frozen.
    end: AtomicU64,
    map: RwLock<BTreeMap<MemKey, Vec<(Lsn, Value)>>>,
    bytes: AtomicUsize,
}

impl InMemoryLayer {
    pub(crate) fn new(start: Lsn) -> InMemoryLayer {
        InMemoryLayer {
            start,
            end: AtomicU64::new(u64::MAX),
            map: RwLock::new(BTreeMap::new()),
            bytes: AtomicUsize::new(0),
        }
    }

    pub(crate) fn start(&self) -> Lsn {
        self.start
    }

    pub(crate) fn end(&self) -> Lsn {
        Lsn(self.end.load(Ordering::Acquire))
    }

    pub(crate) fn freeze(&self, end: Lsn) {
        self.end.store(end.0, Ordering::Release);
    }

    /// Approximate bytes held.
    pub(crate) fn size(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// Whether `(key, lsn)` is already written here.
    pub(crate) fn contains(&self, key: &[u8], lsn: Lsn) -> bool {
        self.map
            .read()
            .get(OrdKey::new(key))
            .is_some_and(|v| v.binary_search_by_key(&lsn, |(l, _)| *l).is_ok())
    }

    /// Adds a version; the caller has checked that `(key, lsn)` is new and `lsn` is the newest
    /// LSN written to this layer so far.
    pub(crate) fn put(&self, key: &[u8], lsn: Lsn, value: Value) {
        let add = key.len() + value.payload_len() + VERSION_OVERHEAD;
        let mut map = self.map.write();
        match map.get_mut(OrdKey::new(key)) {
            Some(versions) => versions.push((lsn, value)),
            None => {
                map.insert(MemKey(Bytes::copy_from_slice(key)), vec![(lsn, value)]);
            }
        }
        drop(map);
        self.bytes.fetch_add(add, Ordering::Relaxed);
    }

    /// Collects versions of `key` in `[start, cont)`, newest first; returns whether complete.
    pub(crate) fn collect(&self, key: &[u8], cont: Lsn, out: &mut Versions) -> bool {
        let map = self.map.read();
        let Some(versions) = map.get(OrdKey::new(key)) else {
            return false;
        };
        let below = versions.partition_point(|(l, _)| *l < cont);
        for (lsn, value) in versions[..below].iter().rev() {
            if out.push(*lsn, value.clone()) {
                return true;
            }
        }
        false
    }

    /// Keys in the bounds that have a version below `cont`, appended to `out`.
    pub(crate) fn keys_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        cont: Lsn,
        out: &mut Vec<Bytes>,
    ) {
        let map = self.map.read();
        let bounds = (lo.map(OrdKey::new), hi.map(OrdKey::new));
        for (k, versions) in map.range::<OrdKey, _>(bounds) {
            if versions.first().is_some_and(|(l, _)| *l < cont) {
                out.push(k.0.clone());
            }
        }
    }

    /// Moves every version above `lsn` into a new layer starting at `lsn + 1`.
    pub(crate) fn split_off_above(&self, lsn: Lsn) -> InMemoryLayer {
        let next = InMemoryLayer::new(lsn.next());
        let mut map = self.map.write();
        let mut moved = BTreeMap::new();
        let mut moved_bytes = 0;
        map.retain(|k, versions| {
            let keep = versions.partition_point(|(l, _)| *l <= lsn);
            if keep < versions.len() {
                let tail = versions.split_off(keep);
                moved_bytes += tail
                    .iter()
                    .map(|(_, v)| k.0.len() + v.payload_len() + VERSION_OVERHEAD)
                    .sum::<usize>();
                moved.insert(k.clone(), tail);
            }
            !versions.is_empty()
        });
        drop(map);
        self.bytes.fetch_sub(moved_bytes, Ordering::Relaxed);
        next.bytes.store(moved_bytes, Ordering::Relaxed);
        *next.map.write() = moved;
        next
    }

    /// Calls `f` for every version in `(key, lsn)` order.
    pub(crate) fn for_each(
        &self,
        mut f: impl FnMut(&[u8], Lsn, &Value) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let map = self.map.read();
        for (k, versions) in map.iter() {
            for (l, v) in versions {
                f(&k.0, *l, v)?;
            }
        }
        Ok(())
    }
}

/// A key owned by the in-memory layer, ordered as [`OrdKey`] (which lookups borrow it as).
#[derive(Clone, PartialEq, Eq)]
struct MemKey(Bytes);

impl Borrow<OrdKey> for MemKey {
    fn borrow(&self) -> &OrdKey {
        OrdKey::new(&self.0)
    }
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> KeyOrdering {
        OrdKey::new(&self.0).cmp(OrdKey::new(&other.0))
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<KeyOrdering> {
        Some(self.cmp(other))
    }
}
