//! Diff: which keys differ between two points of history, at a cost that follows what changed.
//!
//! The two points are a timeline at an LSN each: two LSNs of one timeline, a branch and its
//! parent, two siblings, or any two timelines that share an ancestor. Both read down their
//! ancestor chains to a lowest common ancestor `L`, which one side reads at `p_old` and the
//! other at `p_new` (its own LSN, or the branch point the chain falls through at). Below the
//! *common point* `c = min(p_old, p_new)` both sides read the same stored versions of `L`, so a
//! key can differ only if one side has a version above it:
//!
//! | where a side reads | versions that can make it differ |
//! |---|---|
//! | its own timeline and every ancestor before `L` | those above the timeline's branch point, up to where the side reads it |
//! | `L` | those in `(c, p]` |
//!
//! Only layers (in-memory and on disk) reaching into those LSN ranges are read to list the
//! *candidate* keys; a layer wholly at or below them is never opened, so the cost does not
//! grow with the data below the common point. For each candidate, each side collects the
//! versions a read needs (no redo) and:
//!
//! - the key is skipped when both sides' newest version is the same stored version (same
//!   timeline of origin, same LSN): it holds the same value on both sides;
//! - else, when neither newest version needs redo (an image, a tombstone, or no version), the
//!   two are compared as they are;
//! - else the values are rebuilt by the redo hook and compared.
//!
//! A key is reported when its values differ: a key rewritten to the value it had is not.
//! [`Diff::next`] gives both values; [`Diff::next_key`] gives only the key, and applies the
//! redo hook only where a newest version is a delta — both report exactly the same keys.
//!
//! One exception to the cost: an image layer inside those ranges, on a timeline whose GC cutoff
//! is above the range's start. GC may have removed, under that image, the tombstone of a key
//! that existed at the common point, so every key either side has in the image's key range is
//! a candidate there. A branch whose retention window reaches back to its branch point never
//! meets it.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::read::{Local, ReadTrace, still_branched};
use super::{Snapshot, Timeline, TimelineInner};
use crate::error::{Error, ErrorKind, Result};
use crate::format::LayerKind;
use crate::id::TimelineId;
use crate::layer::Versions;
use crate::lsn::Lsn;
use crate::value::{KeyRange, bound_contains};

/// One key whose value differs between the two sides of a [`Diff`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiffEntry {
    /// The key.
    pub key: Bytes,
    /// Its value on the old side (the timeline `diff` was called on), `None` if absent there.
    pub old: Option<Bytes>,
    /// Its value on the new side, `None` if absent there.
    pub new: Option<Bytes>,
}

/// A timeline at an LSN, with the snapshot it is read from.
pub(crate) struct Side {
    pub(crate) tl: Arc<TimelineInner>,
    pub(crate) lsn: Lsn,
    snap: Arc<Snapshot>,
}

impl Side {
    /// The side, refusing an LSN not yet published, below the GC cutoff or the branch point.
    async fn open(tl: &Arc<TimelineInner>, lsn: Lsn) -> Result<Side> {
        tl.check()?;
        let lrl = tl.last_record_lsn();
        if lsn > lrl {
            return Err(Error::new(
                ErrorKind::LsnNotYetAvailable,
                format!(
                    "diff: timeline {}: LSN {lsn} is not published yet; last_record_lsn is {lrl}",
                    tl.name()
                ),
            ));
        }
        let snap = tl
            .read_snapshot(lsn)
            .await
            .map_err(|e| e.context(format_args!("diff of timeline {}", tl.name())))?;
        Ok(Side {
            tl: tl.clone(),
            lsn,
            snap,
        })
    }

    /// The versions a read of `key` needs on this side and the timeline that wrote the newest.
    async fn collect(&mut self, key: &[u8]) -> Result<(Versions, Option<TimelineId>)> {
        let mut pinned = Vec::new();
        loop {
            let mut trace = ReadTrace::default();
            match self
                .tl
                .collect_traced(&self.snap, key, self.lsn, &mut trace)?
            {
                Local::Ready(v) => return Ok(v),
                Local::Missing(layer) => {
                    pinned.extend(self.tl.download_on_store(&layer).await?);
                    self.snap = self.tl.snapshot_at(self.lsn)?;
                }
                Local::Stale => {
                    self.tl.check()?;
                    self.snap = self.tl.snapshot_at(self.lsn)?;
                }
            }
        }
    }

    /// Where this side reads: itself, then each ancestor, with the highest LSN read there and
    /// the branch point below which it reads the next ancestor (0 without one).
    fn path(&self) -> Vec<Level> {
        let mut out = vec![Level {
            tl: self.tl.clone(),
            snap: self.snap.clone(),
            limit: self.lsn,
            above: self.snap.ancestor.as_ref().map_or(Lsn::ZERO, |(_, at)| *at),
        }];
        let mut next = self.snap.ancestor.clone();
        let mut limit = self.lsn;
        while let Some((anc, at)) = next {
            limit = limit.min(at);
            let snap = anc.snapshot();
            next = snap.ancestor.clone();
            out.push(Level {
                above: next.as_ref().map_or(Lsn::ZERO, |(_, at)| *at),
                tl: anc,
                snap,
                limit,
            });
        }
        out
    }
}

/// One timeline on a side's path.
struct Level {
    tl: Arc<TimelineInner>,
    snap: Arc<Snapshot>,
    /// The highest LSN the side reads here.
    limit: Lsn,
    /// Versions at or below this are not this level's to list (its branch point, or the
    /// common point on the common ancestor).
    above: Lsn,
}

/// Which keys differ between two points of history, in key order; made by
/// [`Timeline::diff`].
///
/// The candidate keys are listed when the diff is made; each key's values are read as
/// [`next`](Diff::next) or [`next_key`](Diff::next_key) reaches it, from the snapshots taken
/// then. The module documentation of `timeline::diff` in the source has the cost model; in
/// short, it follows the keys written above the common point, not the data.
pub struct Diff {
    old: Side,
    new: Side,
    keys: std::vec::IntoIter<Bytes>,
    candidates: usize,
    common: (Arc<TimelineInner>, Lsn),
}

impl std::fmt::Debug for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Diff")
            .field("old", &(self.old.tl.name(), self.old.lsn))
            .field("new", &(self.new.tl.name(), self.new.lsn))
            .field("common", &(self.common.0.name(), self.common.1))
            .field("candidates", &self.candidates)
            .finish()
    }
}

impl Diff {
    /// Lists the candidate keys of a diff of `old_tl@old_lsn` against `new_tl@new_lsn`.
    pub(crate) async fn new(
        old_tl: &Arc<TimelineInner>,
        old_lsn: Lsn,
        new_tl: &Arc<TimelineInner>,
        new_lsn: Lsn,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> Result<Diff> {
        let mut old = Side::open(old_tl, old_lsn).await?;
        let mut new = Side::open(new_tl, new_lsn).await?;
        let mut pinned = Vec::new();
        loop {
            let (a, b) = (old.path(), new.path());
            let Some((i, j)) = a.iter().enumerate().find_map(|(i, la)| {
                b.iter()
                    .position(|lb| Arc::ptr_eq(&la.tl, &lb.tl))
                    .map(|j| (i, j))
            }) else {
                return Err(Error::invalid(format!(
                    "diff: timelines {} and {} share no ancestor",
                    old.tl.name(),
                    new.tl.name()
                )));
            };
            let common_tl = a[i].tl.clone();
            let c = a[i].limit.min(b[j].limit);
            let levels = a[..i]
                .iter()
                .chain(&b[..j])
                .map(|l| (l, l.above))
                .chain([(&a[i], c), (&b[j], c)])
                .filter(|(l, above)| l.limit > *above);
            if super::is_empty_range(lo, hi) {
                return Ok(Diff::with_keys(old, new, Vec::new(), (common_tl, c)));
            }
            match candidates(levels, lo, hi, (&a, &b), &old, &new)? {
                Local::Ready(keys) => return Ok(Diff::with_keys(old, new, keys, (common_tl, c))),
                Local::Missing(layer) => {
                    pinned.extend(
                        layer_owner(&layer, &a, &b)
                            .download_on_store(&layer)
                            .await?,
                    );
                }
                Local::Stale => {}
            }
            old.tl.check()?;
            new.tl.check()?;
            old.snap = old.tl.snapshot_at(old.lsn)?;
            new.snap = new.tl.snapshot_at(new.lsn)?;
        }
    }

    fn with_keys(
        old: Side,
        new: Side,
        keys: Vec<Bytes>,
        common: (Arc<TimelineInner>, Lsn),
    ) -> Diff {
        Diff {
            old,
            new,
            candidates: keys.len(),
            keys: keys.into_iter(),
            common,
        }
    }

    /// How many keys the diff looks at: those with a version above the common point on either
    /// side (see the cost model). Every key it reports is among them.
    pub fn candidates(&self) -> usize {
        self.candidates
    }

    /// The lowest common ancestor's id and the common point: below it both sides read the
    /// same history.
    pub fn common_point(&self) -> (TimelineId, Lsn) {
        (self.common.0.id, self.common.1)
    }

    pub(crate) fn common(&self) -> (&Arc<TimelineInner>, Lsn) {
        (&self.common.0, self.common.1)
    }

    /// The next key whose values differ, with both values; `None` at the end.
    ///
    /// # Errors
    /// As [`Timeline::get`]: [`ErrorKind::Redo`], [`ErrorKind::Corruption`], download errors,
    /// [`ErrorKind::BelowGcCutoff`] if GC passed a side's LSN since the diff was made.
    pub async fn next(&mut self) -> Result<Option<DiffEntry>> {
        for key in self.keys.by_ref() {
            let (a, oa) = self.old.collect(&key).await?;
            let (b, ob) = self.new.collect(&key).await?;
            if same_stored(&a, oa, &b, ob) {
                continue;
            }
            let redo = self.old.tl.env.options.redo.clone();
            let old = a.finish(&key, redo.as_ref())?;
            let new = b.finish(&key, redo.as_ref())?;
            if old != new {
                return Ok(Some(DiffEntry { key, old, new }));
            }
        }
        Ok(None)
    }

    /// The next key whose values differ, without its values; `None` at the end. The same keys
    /// as [`next`](Diff::next), with redo only where a newest version is a delta record.
    ///
    /// # Errors
    /// As [`next`](Diff::next).
    pub async fn next_key(&mut self) -> Result<Option<Bytes>> {
        for key in self.keys.by_ref() {
            let (a, oa) = self.old.collect(&key).await?;
            let (b, ob) = self.new.collect(&key).await?;
            if same_stored(&a, oa, &b, ob) {
                continue;
            }
            let (na, nb) = (a.newest(), b.newest());
            if let (Some(x), Some(y)) = (na.value_without_redo(), nb.value_without_redo()) {
                if x != y {
                    return Ok(Some(key));
                }
                continue;
            }
            let redo = self.old.tl.env.options.redo.clone();
            if a.finish(&key, redo.as_ref())? != b.finish(&key, redo.as_ref())? {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// [`next`](Diff::next) for a caller on its own thread (see
    /// [`Timeline::get_blocking`]).
    ///
    /// # Errors
    /// As [`next`](Diff::next).
    pub fn next_blocking(&mut self) -> Result<Option<DiffEntry>> {
        let env = self.old.tl.env.clone();
        env.block_on(self.next())
    }

    /// [`next_key`](Diff::next_key) for a caller on its own thread.
    ///
    /// # Errors
    /// As [`next`](Diff::next).
    pub fn next_key_blocking(&mut self) -> Result<Option<Bytes>> {
        let env = self.old.tl.env.clone();
        env.block_on(self.next_key())
    }

    /// Every remaining entry, in key order.
    ///
    /// # Errors
    /// As [`next`](Diff::next).
    pub async fn collect_all(mut self) -> Result<Vec<DiffEntry>> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await? {
            out.push(e);
        }
        Ok(out)
    }
}

/// Whether both reads ended on the same stored version: same timeline of origin, same LSN.
fn same_stored(a: &Versions, oa: Option<TimelineId>, b: &Versions, ob: Option<TimelineId>) -> bool {
    let (la, lb) = (a.newest().lsn(), b.newest().lsn());
    oa.is_some() && oa == ob && la.is_some() && la == lb
}

/// The timeline on either path whose snapshot holds `layer`.
fn layer_owner(layer: &Arc<crate::layer::Layer>, a: &[Level], b: &[Level]) -> Arc<TimelineInner> {
    a.iter()
        .chain(b)
        .find(|l| l.snap.map.layers().iter().any(|x| Arc::ptr_eq(x, layer)))
        .map_or_else(|| a[0].tl.clone(), |l| l.tl.clone())
}

/// The keys in the bounds written on `levels` above their `above` LSN, sorted, deduplicated.
fn candidates<'a>(
    levels: impl Iterator<Item = (&'a Level, Lsn)>,
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
    paths: (&[Level], &[Level]),
    old: &Side,
    new: &Side,
) -> Result<Local<Vec<Bytes>>> {
    let mut keys = Vec::new();
    let mut images: Vec<KeyRange> = Vec::new();
    for (level, above) in levels {
        let (from, cont) = (above.next(), level.limit.next());
        let snap = &level.snap;
        for layer in std::iter::once(&snap.open).chain(snap.frozen.iter()) {
            if layer.start() < cont && layer.end() > from {
                layer.keys_changed(lo, hi, from, cont, &mut keys);
            }
        }
        // Loaded after the snapshot: at least the cutoff its layers went by.
        let gc_moved_past = level.tl.gc_cutoff() > above;
        for layer in snap.map.layers() {
            let r = layer.lsn_range();
            if r.start >= cont || r.end <= from || !layer.key_range().overlaps(lo, hi) {
                continue;
            }
            if layer.kind() == LayerKind::Image {
                if gc_moved_past {
                    images.push(layer.key_range().clone());
                }
                continue;
            }
            let Some(file) = layer.file() else {
                return Ok(Local::Missing(layer.clone()));
            };
            file.keys_changed(lo, hi, from, cont, &mut keys)?;
        }
    }
    // Every child on both paths must still be registered with its ancestor, whose snapshot
    // was read: else GC may have dropped what it reads there (see `read.rs`).
    for path in [paths.0, paths.1] {
        if path.iter().rev().skip(1).any(|l| !still_branched(&l.tl)) {
            return Ok(Local::Stale);
        }
    }
    if !images.is_empty() {
        let mut all = Vec::new();
        for side in [old, new] {
            match side.tl.keys_at(&side.snap, lo, hi, side.lsn)? {
                Local::Ready(k) => all.extend(k),
                Local::Missing(l) => return Ok(Local::Missing(l)),
                Local::Stale => return Ok(Local::Stale),
            }
        }
        keys.extend(
            all.into_iter()
                .filter(|k| images.iter().any(|r| r.contains(k))),
        );
    }
    let keys: BTreeSet<Bytes> = keys.into_iter().collect();
    debug_assert!(keys.iter().all(|k| bound_contains(lo, hi, k)));
    Ok(Local::Ready(keys.into_iter().collect()))
}

impl Timeline {
    /// Every key in `range` whose value differs between this timeline at `lsn` (the old side)
    /// and `other` at `other_lsn` (the new side), in key order, with both values.
    ///
    /// The two may be one timeline at two LSNs, a branch and its parent, two siblings, or any
    /// two timelines that share an ancestor. The cost follows what was written above the
    /// common point, not the size of the data: layers wholly below it are not read, and a key
    /// whose newest version is the same stored version on both sides is skipped without redo.
    /// Values are compared after redo: a key rewritten to the value it had is not reported.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use stratakv::{Lsn, Store, StoreOptions, Value};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(StoreOptions::new(dir.path())).await?;
    /// let main = store.create_timeline("main").await?;
    /// let mut w = main.writer()?;
    /// w.put(b"a", Lsn(0x10), Value::image("1"))?;
    /// w.put(b"b", Lsn(0x10), Value::image("1"))?;
    /// w.finish_write(Lsn(0x10))?;
    /// let dev = store.branch("dev", &main, Lsn(0x10)).await?;
    /// let mut d = dev.writer()?;
    /// d.put(b"b", Lsn(0x20), Value::image("2"))?;
    /// d.put(b"c", Lsn(0x20), Value::image("new"))?;
    /// d.finish_write(Lsn(0x20))?;
    /// let mut diff = main.diff::<&[u8]>(Lsn(0x10), &dev, Lsn(0x20), ..).await?;
    /// let e = diff.next().await?.unwrap();
    /// assert_eq!((&e.key[..], e.old.as_deref(), e.new.as_deref()), (&b"b"[..], Some(&b"1"[..]), Some(&b"2"[..])));
    /// let e = diff.next().await?.unwrap();
    /// assert_eq!((&e.key[..], e.old, e.new.as_deref()), (&b"c"[..], None, Some(&b"new"[..])));
    /// assert!(diff.next().await?.is_none());
    /// store.close().await?;
    /// # Ok::<(), stratakv::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::LsnNotYetAvailable`] when an LSN is above its timeline's
    /// `last_record_lsn`; [`ErrorKind::BelowGcCutoff`] / [`ErrorKind::BelowBranchPoint`] below
    /// a timeline's cutoff or branch point; [`ErrorKind::InvalidArgument`] when the two
    /// timelines share no ancestor; each naming the timeline and LSN. Read errors as
    /// [`get`](Timeline::get).
    pub async fn diff<K: AsRef<[u8]>>(
        &self,
        lsn: Lsn,
        other: &Timeline,
        other_lsn: Lsn,
        range: impl std::ops::RangeBounds<K>,
    ) -> Result<Diff> {
        let lo = range.start_bound().map(|k| k.as_ref());
        let hi = range.end_bound().map(|k| k.as_ref());
        Diff::new(&self.inner, lsn, &other.inner, other_lsn, lo, hi).await
    }

    /// [`diff`](Timeline::diff) for a caller on its own thread; read the entries with
    /// [`Diff::next_blocking`].
    ///
    /// # Errors
    /// As [`diff`](Timeline::diff).
    pub fn diff_blocking<K: AsRef<[u8]>>(
        &self,
        lsn: Lsn,
        other: &Timeline,
        other_lsn: Lsn,
        range: impl std::ops::RangeBounds<K>,
    ) -> Result<Diff> {
        self.inner
            .env
            .block_on(self.diff(lsn, other, other_lsn, range))
    }
}
