//! The read path: collect versions down the layers, then rebuild the value.

use std::ops::Bound;

use bytes::Bytes;

use super::{Snapshot, TimelineInner, bound_contains};
use crate::error::Result;
use crate::layer::Versions;
use crate::lsn::Lsn;

impl TimelineInner {
    /// The value of `key` at `lsn` in `snap`.
    pub(crate) fn reconstruct(
        &self,
        snap: &Snapshot,
        key: &[u8],
        lsn: Lsn,
    ) -> Result<Option<Bytes>> {
        let mut versions = Versions::default();
        let mut cont = lsn.next();
        let in_memory = std::iter::once(&snap.open).chain(snap.frozen.iter());
        let mut done = false;
        for layer in in_memory {
            if cont <= layer.start() {
                continue;
            }
            if layer.collect(key, cont, &mut versions) {
                done = true;
                break;
            }
            cont = layer.start();
        }
        while !done {
            let Some(hit) = snap.map.search(key, cont) else {
                break;
            };
            done = hit.layer.collect(key, hit.lower, cont, &mut versions)?;
            cont = hit.lower;
        }
        versions.finish(key, self.env.options.redo.as_ref())
    }

    /// Every live key in the bounds with its value at `lsn`, in key order.
    pub(crate) fn scan(
        &self,
        snap: &Snapshot,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        lsn: Lsn,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let keys = self.keys_at(snap, lo, hi, lsn)?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(v) = self.reconstruct(snap, &k, lsn)? {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// Every key in the bounds with some version at or below `lsn`, sorted, without duplicates.
    pub(crate) fn keys_at(
        &self,
        snap: &Snapshot,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        lsn: Lsn,
    ) -> Result<Vec<Bytes>> {
        let cont = lsn.next();
        let mut keys = Vec::new();
        for layer in std::iter::once(&snap.open).chain(snap.frozen.iter()) {
            if layer.start() < cont {
                layer.keys_in(lo, hi, cont, &mut keys);
            }
        }
        for layer in snap.map.layers() {
            if layer.lsn_range().start < cont && layer.key_range().overlaps(lo, hi) {
                layer.keys_in(lo, hi, cont, &mut keys)?;
            }
        }
        keys.sort_unstable();
        keys.dedup();
        debug_assert!(keys.iter().all(|k| bound_contains(lo, hi, k)));
        Ok(keys)
    }
}
