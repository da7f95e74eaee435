//! The read path: collect versions down the layers (and down the ancestors), then rebuild the
//! value.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::{Snapshot, TimelineInner};
use crate::error::Result;
use crate::id::TimelineId;
use crate::layer::{Layer, Versions};
use crate::lsn::Lsn;
use crate::value::bound_contains;

/// A read's outcome from what is on local disk: the answer, or the layer it must download
/// first.
pub(crate) enum Local<T> {
    Ready(T),
    Missing(Arc<Layer>),
    /// The read fell through to an ancestor that no longer keeps what the read needs: the
    /// timeline was deleted or detached from it meanwhile. The caller checks the timeline and
    /// retries on a new snapshot.
    Stale,
}

/// Returns early with `Local::Missing` or `Local::Stale` from a function returning
/// `Result<Local<_>>`.
macro_rules! local {
    ($e:expr) => {
        match $e? {
            Local::Ready(v) => v,
            Local::Missing(l) => return Ok(Local::Missing(l)),
            Local::Stale => return Ok(Local::Stale),
        }
    };
}

/// Whether the ancestor of `child` still keeps what a read of `child` at the branch point needs.
///
/// Checked after the read took the ancestor's snapshot. Delete and detach mark the child
/// unbranched before they unregister it from the ancestor, and GC reads the children (under
/// their lock) before it drops anything a branch point needs, so a child not yet marked now was
/// registered when that snapshot was published, and the snapshot holds every version the
/// child's reads need. One atomic load: no lock on the read path.
pub(super) fn still_branched(child: &TimelineInner) -> bool {
    !child.unbranched.load(std::sync::atomic::Ordering::Acquire)
}

/// What one read did: how many layers it visited on its way to the value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadTrace {
    /// In-memory layers and layer files consulted, across the timeline and its ancestors.
    pub layers_visited: u32,
    /// Ancestor timelines the read descended into.
    pub ancestors_visited: u32,
    /// Of the layer files visited, those whose key filter showed the key absent, so that no
    /// block was read.
    pub filter_skips: u32,
    /// Delta records the redo hook applied to rebuild the value (0 when the newest version
    /// was a whole value).
    pub redo_records: u32,
}

impl TimelineInner {
    /// The value of `key` at `lsn` in `snap`, falling through to ancestors.
    pub(crate) fn reconstruct(
        &self,
        snap: &Snapshot,
        key: &[u8],
        lsn: Lsn,
    ) -> Result<Local<Option<Bytes>>> {
        self.reconstruct_traced(snap, key, lsn, &mut ReadTrace::default())
    }

    /// The value of `key` at `lsn`, downloading layers it needs; for async callers.
    pub(crate) async fn read_value(
        &self,
        snap: &mut Arc<Snapshot>,
        key: &[u8],
        lsn: Lsn,
        trace: &mut ReadTrace,
    ) -> Result<Option<Bytes>> {
        // Layers this read downloaded, held so that eviction under a tight disk budget cannot
        // take them away before the read uses them: each round adds one, so the read ends.
        let mut pinned = Vec::new();
        loop {
            *trace = ReadTrace::default();
            match self.reconstruct_traced(snap, key, lsn, trace)? {
                Local::Ready(v) => {
                    self.count_read(trace);
                    return Ok(v);
                }
                Local::Missing(layer) => {
                    pinned.extend(self.download_on_store(&layer).await?);
                    *snap = self.snapshot_at(lsn)?;
                }
                Local::Stale => {
                    self.check()?;
                    *snap = self.snapshot_at(lsn)?;
                }
            }
        }
    }

    /// Counts a key read in the metrics.
    pub(crate) fn count_read(&self, trace: &ReadTrace) {
        let m = &self.env.metrics;
        m.reads.increment(1);
        m.read_layers_visited
            .record(f64::from(trace.layers_visited));
        m.read_redo_records.increment(u64::from(trace.redo_records));
    }

    /// The value of `key` at `lsn`, downloading layers it needs; for background threads.
    pub(crate) fn read_value_blocking(&self, key: &[u8], lsn: Lsn) -> Result<Option<Bytes>> {
        loop {
            let snap = self.snapshot();
            match self.reconstruct(&snap, key, lsn)? {
                Local::Ready(v) => return Ok(v),
                Local::Missing(layer) => self.download_layer_blocking(&layer)?,
                Local::Stale => self.check()?,
            }
        }
    }

    pub(crate) fn reconstruct_traced(
        &self,
        snap: &Snapshot,
        key: &[u8],
        lsn: Lsn,
        trace: &mut ReadTrace,
    ) -> Result<Local<Option<Bytes>>> {
        let (versions, _) = local!(self.collect_traced(snap, key, lsn, trace));
        versions
            .finish(key, self.env.options.redo.as_ref())
            .map(Local::Ready)
    }

    /// The versions a read of `key` at `lsn` needs, newest first down to a base, without
    /// applying them; with the timeline that wrote the newest of them (`None` if there is none).
    pub(crate) fn collect_traced(
        &self,
        snap: &Snapshot,
        key: &[u8],
        lsn: Lsn,
        trace: &mut ReadTrace,
    ) -> Result<Local<(Versions, Option<TimelineId>)>> {
        let mut versions = Versions::default();
        let mut cont = lsn.next();
        // Loaded after the snapshot was taken: GC stores a cutoff before it publishes layers
        // rewritten under it, so this is at least the cutoff the snapshot's layers went by.
        let cutoff = self.gc_cutoff();
        let done = local!(collect_from(
            snap,
            key,
            cutoff,
            &mut cont,
            &mut versions,
            trace
        ));
        let mut origin = (!versions.is_empty()).then_some(self.id);
        let mut level = if done { None } else { snap.ancestor.clone() };
        let mut child: Option<Arc<TimelineInner>> = None;
        while let Some((anc, branch_lsn)) = level {
            cont = cont.min(branch_lsn.next());
            trace.ancestors_visited += 1;
            let anc_snap = anc.snapshot();
            let cutoff = anc.gc_cutoff();
            let done = local!(collect_from(
                &anc_snap,
                key,
                cutoff,
                &mut cont,
                &mut versions,
                trace
            ));
            if !still_branched(child.as_deref().unwrap_or(self)) {
                return Ok(Local::Stale);
            }
            if origin.is_none() && !versions.is_empty() {
                origin = Some(anc.id);
            }
            if done {
                break;
            }
            child = Some(anc);
            level = anc_snap.ancestor.clone();
        }
        trace.redo_records = u32::try_from(versions.delta_count()).unwrap_or(u32::MAX);
        Ok(Local::Ready((versions, origin)))
    }

    /// Every live key in the bounds with its value at `lsn`, in key order, read from `snap`
    /// (see [`snapshot_at`](TimelineInner::snapshot_at)).
    pub(crate) async fn scan(
        &self,
        mut snap: Arc<Snapshot>,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        lsn: Lsn,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let mut pinned = Vec::new();
        let keys = loop {
            match self.keys_at(&snap, lo, hi, lsn)? {
                Local::Ready(k) => break k,
                Local::Missing(layer) => {
                    // Held until the keys are listed (see `read_value`).
                    pinned.extend(self.download_on_store(&layer).await?);
                    snap = self.snapshot_at(lsn)?;
                }
                Local::Stale => {
                    self.check()?;
                    snap = self.snapshot_at(lsn)?;
                }
            }
        };
        let mut out = Vec::with_capacity(keys.len());
        let mut trace = ReadTrace::default();
        for k in keys {
            if let Some(v) = self.read_value(&mut snap, &k, lsn, &mut trace).await? {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// Every key in the bounds with some version at or below `lsn` here or in an ancestor at
    /// or below the branch point: sorted, without duplicates.
    pub(crate) fn keys_at(
        &self,
        snap: &Snapshot,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        lsn: Lsn,
    ) -> Result<Local<Vec<Bytes>>> {
        let mut keys = Vec::new();
        local!(keys_from(snap, lo, hi, lsn.next(), &mut keys));
        let mut cont = lsn.next();
        let mut level = snap.ancestor.clone();
        let mut child: Option<Arc<TimelineInner>> = None;
        while let Some((anc, branch_lsn)) = level {
            cont = cont.min(branch_lsn.next());
            let anc_snap = anc.snapshot();
            local!(keys_from(&anc_snap, lo, hi, cont, &mut keys));
            if !still_branched(child.as_deref().unwrap_or(self)) {
                return Ok(Local::Stale);
            }
            child = Some(anc);
            level = anc_snap.ancestor.clone();
        }
        keys.sort_unstable();
        keys.dedup();
        debug_assert!(keys.iter().all(|k| bound_contains(lo, hi, k)));
        Ok(Local::Ready(keys))
    }
}

/// Collects versions of `key` below `cont` from one timeline's snapshot; lowers `cont` to
/// where it stopped. Returns whether the base was found.
///
/// Versions below `gc_cutoff`, the timeline's GC cutoff, may be gone from a layer that GC
/// rewrote, so a read ends early in a delta layer below an image only at or above it.
fn collect_from(
    snap: &Snapshot,
    key: &[u8],
    gc_cutoff: Lsn,
    cont: &mut Lsn,
    versions: &mut Versions,
    trace: &mut ReadTrace,
) -> Result<Local<bool>> {
    for layer in std::iter::once(&snap.open).chain(snap.frozen.iter()) {
        if *cont <= layer.start() {
            continue;
        }
        trace.layers_visited += 1;
        if layer.collect(key, *cont, versions) {
            return Ok(Local::Ready(true));
        }
        *cont = layer.start();
    }
    while let Some(hit) = snap.map.search(key, *cont) {
        trace.layers_visited += 1;
        let Some(file) = hit.layer.file_locked() else {
            return Ok(Local::Missing(hit.layer.clone()));
        };
        let floor = hit.floor.max(gc_cutoff).min(hit.lower);
        match file.collect_filtered(key, floor, hit.lower, *cont, versions)? {
            Some(true) => return Ok(Local::Ready(true)),
            Some(false) => {}
            None => {
                trace.filter_skips += 1;
                if file.absent_if_image(versions) {
                    return Ok(Local::Ready(true));
                }
            }
        }
        *cont = hit.lower;
    }
    Ok(Local::Ready(false))
}

/// Keys in the bounds with a version below `cont` in one timeline's snapshot.
fn keys_from(
    snap: &Snapshot,
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
    cont: Lsn,
    keys: &mut Vec<Bytes>,
) -> Result<Local<()>> {
    for layer in std::iter::once(&snap.open).chain(snap.frozen.iter()) {
        if layer.start() < cont {
            layer.keys_in(lo, hi, cont, keys);
        }
    }
    for layer in snap.map.layers() {
        if layer.lsn_range().start < cont && layer.key_range().overlaps(lo, hi) {
            let Some(file) = layer.file() else {
                return Ok(Local::Missing(layer.clone()));
            };
            file.keys_in(lo, hi, cont, keys)?;
        }
    }
    Ok(Local::Ready(()))
}
