//! Garbage collection: the cutoff, leases, and removing or rewriting history no read needs.
//!
//! A read at or above the cutoff, at a child's branch point, or under a lease must keep
//! answering the same. A layer entirely at or below the cutoff is removed when, for every such
//! read point at or above its start, another image layer covering its keys lies between its
//! top and that point: those reads stop at the image and never reach the layer. When layers
//! kept below the cutoff only for want of such an image make up more than
//! `gc_compaction_ratio` of the timeline's bytes, GC writes an image at the cutoff (and at any
//! child branch point below it) so that they can go.
//!
//! A delta layer that reaches below the cutoff and must stay (it straddles the cutoff, or a
//! branch point still reads it) may still be mostly versions no read can reach: a version below
//! the cutoff is unreachable when, for the lowest read point at or above it, a newer version of
//! the same key in the same layer at or below that point ends reconstruction (an image, a
//! tombstone or a `will_init` delta). When such versions make up more than
//! `gc_compaction_ratio` of a layer, GC rewrites the layer without them (gc-compaction): same
//! key range, LSN range and level, so the layer map answers as before.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::TimelineInner;
use super::compaction::Merge;
use super::flush::Change;
use crate::error::{Error, ErrorKind, Result};
use crate::format::{LayerDesc, LayerKind};
use crate::id::TimelineId;
use crate::layer::Layer;
use crate::lsn::Lsn;
use crate::value::{KeyRange, Value};

/// What one GC pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The cutoff after the pass.
    pub cutoff: Lsn,
    /// Layer files removed.
    pub layers_removed: usize,
    /// Delta layers rewritten without the versions no read can reach.
    pub layers_rewritten: usize,
    /// Bytes of layer files removed, plus what rewriting layers saved.
    pub bytes_removed: u64,
    /// Image layers written so that history below the cutoff could go.
    pub images_written: usize,
}

impl TimelineInner {
    /// Holds GC's cutoff at or below `lsn` until `ttl` has passed on the store's clock.
    pub(crate) fn lease(&self, lsn: Lsn, ttl: Duration) -> Result<SystemTime> {
        self.check()?;
        let now = self.env.options.clock.now();
        let expiry = now + ttl;
        let mut leases = self.leases.lock();
        // Checked under the lease lock, which GC holds while it moves the cutoff.
        let cutoff = self.gc_cutoff();
        let lrl = self.last_record_lsn();
        if lsn < cutoff || lsn > lrl {
            return Err(Error::invalid(format!(
                "cannot lease LSN {lsn} on timeline {}: the allowed range is {cutoff} (GC cutoff) to {lrl} (last_record_lsn)",
                self.name()
            )));
        }
        leases.push((lsn, expiry));
        Ok(expiry)
    }

    /// The cutoff the retention settings ask for now, before leases and monotonicity.
    fn wanted_cutoff(&self, now: SystemTime) -> Option<Lsn> {
        let opts = &self.env.options;
        let lrl = self.last_record_lsn();
        let by_horizon = opts.gc_horizon.map(|h| Lsn(lrl.0.saturating_sub(h)));
        let by_time = opts.pitr_interval.map(|p| match now.checked_sub(p) {
            Some(t) => self.lsn_at_or_zero(t),
            None => Lsn::ZERO,
        });
        match (by_horizon, by_time) {
            (None, None) => None,
            (Some(h), None) => Some(h),
            (None, Some(t)) => Some(t),
            (Some(h), Some(t)) => Some(h.min(t)),
        }
    }

    /// Moves the cutoff as retention and leases allow; never backwards. Returns it.
    fn advance_cutoff(&self) -> Result<Lsn> {
        let now = self.env.options.clock.now();
        let old = self.gc_cutoff();
        let mut leases = self.leases.lock();
        leases.retain(|(_, expiry)| *expiry > now);
        let Some(mut wanted) = self.wanted_cutoff(now) else {
            return Ok(old);
        };
        if let Some(min_lease) = leases.iter().map(|(l, _)| *l).min() {
            wanted = wanted.min(min_lease);
        }
        wanted = wanted.min(self.last_record_lsn());
        if wanted <= old {
            return Ok(old);
        }
        self.publish(
            Change {
                gc_cutoff: Some(wanted),
                ..Change::default()
            },
            |_| {},
        )?;
        // Stored before this pass publishes any layer change: readers rely on it (see
        // `snapshot_at`).
        self.gc_cutoff
            .store(wanted.0, std::sync::atomic::Ordering::SeqCst);
        self.gauges.gc_cutoff.set(wanted.0 as f64);
        // Trimmed under the lease lock still: a branch checks the cutoff and copies its
        // branch point's commit time under it (`pin_branch_point`), so it sees either the old
        // cutoff and the untrimmed index, or the new cutoff.
        self.trim_time_index(wanted)?;
        drop(leases);
        Ok(wanted)
    }

    /// Registers `child` as branching off this timeline at `lsn` and returns this timeline's
    /// commit time there, if it has one — checked, registered and copied in one step with
    /// respect to GC.
    ///
    /// The lease lock orders it against GC, which moves the cutoff and trims the time index
    /// under that lock and reads the children after it: either GC sees this branch point and
    /// keeps what it reads, or this check sees GC's cutoff and refuses.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming the allowed range when `lsn` is below the cutoff
    /// or above `last_record_lsn`; [`ErrorKind::NotFound`] if this timeline was deleted.
    pub(crate) fn pin_branch_point(&self, child: TimelineId, lsn: Lsn) -> Result<Option<u64>> {
        let _retention = self.leases.lock();
        self.check()?;
        let (cutoff, lrl) = (self.gc_cutoff(), self.last_record_lsn());
        if lsn < cutoff || lsn > lrl {
            return Err(Error::invalid(format!(
                "cannot branch timeline {} at LSN {lsn}: the allowed range is {cutoff} (GC cutoff) to {lrl} (last_record_lsn)",
                self.name()
            )));
        }
        self.children.lock().insert(child, lsn);
        Ok(self.time.lock().index.time_of(lsn))
    }

    /// One GC pass: advance the cutoff, rewrite mostly-garbage history, remove what no read
    /// needs.
    pub(crate) fn gc(&self) -> Result<GcReport> {
        let _gate = self.enter_gate()?;
        let _ops = self.layer_ops.lock();
        let span = tracing::info_span!(
            "gc",
            timeline_id = %self.id,
            cutoff = tracing::field::Empty,
            layers_removed = tracing::field::Empty,
            bytes_removed = tracing::field::Empty,
            bytes = tracing::field::Empty,
        );
        let _entered = span.enter();
        let start = std::time::Instant::now();
        let (report, rewritten) = self.gc_pass()?;
        span.record("cutoff", tracing::field::display(report.cutoff));
        span.record("layers_removed", report.layers_removed);
        span.record("bytes_removed", report.bytes_removed);
        span.record("bytes", rewritten);
        crate::metrics::Job::Gc.done(start, rewritten);
        ::metrics::counter!(crate::metrics::GC_BYTES_REMOVED).increment(report.bytes_removed);
        Ok(report)
    }

    /// [`gc`](Self::gc)'s work: its report and the bytes of the layers it rewrote.
    fn gc_pass(&self) -> Result<(GcReport, u64)> {
        let cutoff = self.advance_cutoff()?;
        let mut report = GcReport {
            cutoff,
            ..GcReport::default()
        };
        // Children registered after this read check their branch LSN against the new cutoff.
        let mut points: Vec<Lsn> = self
            .children
            .lock()
            .values()
            .copied()
            .filter(|p| *p < cutoff)
            .collect();
        points.push(cutoff);
        points.extend(self.leases.lock().iter().map(|(l, _)| *l));
        points.sort_unstable();
        points.dedup();

        let layers = self.layer_descs();
        let (removable, kept_below) = plan(&layers, &points, cutoff);
        let total: u64 = layers.iter().map(|l| l.file_size).sum();
        let kept_bytes: u64 = kept_below.iter().map(|l| l.file_size).sum();
        let mut added = Vec::new();
        if cutoff > Lsn::ZERO
            && kept_bytes as f64 > self.env.options.gc_compaction_ratio * total as f64
        {
            for p in points.iter().copied().filter(|p| *p <= cutoff) {
                let has_image = layers.iter().any(|l| {
                    l.kind == LayerKind::Image
                        && l.lsn_range.start == p
                        && l.key_range == KeyRange::ALL
                });
                let needs = kept_below.iter().any(|l| l.lsn_range.start <= p);
                if !has_image && needs && p <= self.disk_consistent_lsn() {
                    added.push(self.write_image(p)?);
                }
            }
        }
        report.images_written = added.len();
        let mut all = layers.clone();
        all.extend(added.iter().cloned());
        let (removable, _) = if added.is_empty() {
            (removable, kept_below)
        } else {
            plan(&all, &points, cutoff)
        };
        report.layers_removed = removable.len();
        report.bytes_removed = removable.iter().map(|l| l.file_size).sum();
        let mut removed: Vec<String> = removable.into_iter().map(|l| l.file_name).collect();
        let snap = self.snapshot();
        // Image layers at or below the cutoff, this pass's included: reads stop at them.
        let images: Vec<(Lsn, KeyRange)> = snap
            .map
            .layers()
            .iter()
            .map(|l| &l.desc)
            .chain(&added)
            .filter(|d| d.kind == LayerKind::Image && d.lsn_range.start <= cutoff)
            .map(|d| (d.lsn_range.start, d.key_range.clone()))
            .collect();
        let mut rewritten = 0;
        let reach = Reach {
            points: &points,
            cutoff,
            images,
        };
        for group in rewrite_groups(snap.map.layers(), &removed, cutoff) {
            if let Some(outputs) = self.rewrite_garbage(&group, &reach)? {
                let before: u64 = group.iter().map(|l| l.desc.file_size).sum();
                let after: u64 = outputs.iter().map(|d| d.file_size).sum();
                report.layers_rewritten += group.len();
                report.bytes_removed += before.saturating_sub(after);
                rewritten += after;
                added.extend(outputs);
                removed.extend(group.iter().map(|l| l.desc.file_name.clone()));
            }
        }
        if !added.is_empty() || !removed.is_empty() {
            self.publish(
                Change {
                    added,
                    removed,
                    ..Change::default()
                },
                |_| {},
            )?;
        }
        let mut checked = self.gc_checked.lock();
        checked.retain(|name, _| snap.map.layers().iter().any(|l| l.desc.file_name == *name));
        Ok((report, rewritten))
    }

    /// Rewrites a group of delta layers (see [`rewrite_groups`]) into L1 layers over their
    /// LSN range without the versions no read can reach (see [`sift`]), if those are more
    /// than `gc_compaction_ratio` of the group. A group found not worth it is looked at again
    /// only once the cutoff has moved on by an eighth of the history the group held below the
    /// cutoff then.
    fn rewrite_garbage(
        &self,
        group: &[Arc<Layer>],
        reach: &Reach<'_>,
    ) -> Result<Option<Vec<LayerDesc>>> {
        let cutoff = reach.cutoff;
        let lo = group.iter().map(|l| l.lsn_range().start).min();
        let Some(lo) = lo else {
            return Ok(None);
        };
        {
            let checked = self.gc_checked.lock();
            let moved_little =
                |at: &Lsn| cutoff.0.saturating_sub(at.0) < at.0.saturating_sub(lo.0) / 8;
            let recent = |l: &Arc<Layer>| checked.get(&l.desc.file_name).is_some_and(moved_little);
            if group.iter().all(recent) {
                return Ok(None);
            }
        }
        let files = group
            .iter()
            .map(|l| self.resident_file_blocking(l))
            .collect::<Result<Vec<_>>>()?;
        let mut merged = Merge::new(&files)?;
        let (dropped, kept) = sift(|| merged.next_entry(), reach, |_, _, _| Ok(()))?;
        if dropped == 0
            || (dropped as f64) <= self.env.options.gc_compaction_ratio * (dropped + kept) as f64
        {
            let mut checked = self.gc_checked.lock();
            for l in group {
                checked.insert(l.desc.file_name.clone(), cutoff);
            }
            return Ok(None);
        }
        let mut merged = Merge::new(&files)?;
        let mut out = self.l1_writer(merged.lsn_range());
        sift(|| merged.next_entry(), reach, |k, l, v| out.add(k, l, v))?;
        out.finish().map(Some)
    }

    fn layer_descs(&self) -> Vec<LayerDesc> {
        self.snapshot()
            .map
            .layers()
            .iter()
            .map(|l| l.desc.clone())
            .collect()
    }

    /// Materializes what this timeline reads at its branch point into an image layer of its
    /// own and forgets the ancestor.
    pub(crate) fn detach_ancestor(&self) -> Result<()> {
        let _gate = self.enter_gate()?;
        let _ops = self.layer_ops.lock();
        let Some((parent, branch_lsn)) = self.ancestor.read().clone() else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("timeline {} has no ancestor to detach from", self.name()),
            ));
        };
        let desc = self.write_image(branch_lsn)?;
        self.publish(
            Change {
                added: vec![desc],
                detach: true,
                ..Change::default()
            },
            |_| {},
        )?;
        *self.ancestor.write() = None;
        self.unbranched
            .store(true, std::sync::atomic::Ordering::Release);
        parent.children.lock().remove(&self.id);
        Ok(())
    }
}

/// Which layers can go, and which layers entirely at or below the cutoff must stay.
fn plan(layers: &[LayerDesc], points: &[Lsn], cutoff: Lsn) -> (Vec<LayerDesc>, Vec<LayerDesc>) {
    let mut removable = Vec::new();
    let mut kept_below = Vec::new();
    for l in layers {
        let top = Lsn(l.lsn_range.end.0 - 1);
        if top > cutoff {
            continue;
        }
        // An image is covered only by a newer one — or, at the same LSN, by one with a larger
        // name — so that of several images covering each other the newest always stays.
        let newer = |i: &LayerDesc| match l.kind {
            LayerKind::Delta => true,
            LayerKind::Image => {
                (i.lsn_range.start, &i.file_name) > (l.lsn_range.start, &l.file_name)
            }
        };
        let covered = |p: Lsn| {
            layers.iter().any(|i| {
                i.kind == LayerKind::Image
                    && i.file_name != l.file_name
                    && newer(i)
                    && i.lsn_range.start >= top
                    && i.lsn_range.start <= p
                    && range_contains(&i.key_range, &l.key_range)
            })
        };
        if points
            .iter()
            .filter(|p| **p >= l.lsn_range.start)
            .all(|p| covered(*p))
        {
            removable.push(l.clone());
        } else {
            kept_below.push(l.clone());
        }
    }
    // The newest image at or below a point (by LSN, then name) is never removable, so every
    // removed layer keeps a cover for every point it mattered to.
    (removable, kept_below)
}

/// Delta layers GC may rewrite together, each group over an LSN range no other delta layer
/// overlaps (image layers may sit inside it: reads stop at them as before): every delta layer
/// that starts below the cutoff and is not being removed, as one group if no other delta layer
/// overlaps their LSN span, else each alone. Together, a version below the cutoff is dropped
/// when a newer base version of its key in any of them ends every read that could reach it.
fn rewrite_groups(layers: &[Arc<Layer>], removed: &[String], cutoff: Lsn) -> Vec<Vec<Arc<Layer>>> {
    let is_delta = |l: &Arc<Layer>| l.kind() == LayerKind::Delta;
    let (group, others): (Vec<Arc<Layer>>, Vec<Arc<Layer>>) = layers
        .iter()
        .filter(|l| !removed.contains(&l.desc.file_name))
        .cloned()
        .partition(|l| is_delta(l) && l.lsn_range().start < cutoff);
    let lo = group.iter().map(|l| l.lsn_range().start).min();
    let hi = group.iter().map(|l| l.lsn_range().end).max();
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Vec::new();
    };
    let overlapped = others
        .iter()
        .any(|l| is_delta(l) && l.lsn_range().start < hi && l.lsn_range().end > lo);
    if overlapped {
        group.into_iter().map(|l| vec![l]).collect()
    } else {
        vec![group]
    }
}

/// What decides whether a read can reach a version below the cutoff.
struct Reach<'a> {
    /// The points below the cutoff reads are made at (branch points), and the cutoff: sorted.
    points: &'a [Lsn],
    cutoff: Lsn,
    /// Image layers at or below the cutoff: LSN and key range. A read at or above one stops
    /// there.
    images: Vec<(Lsn, KeyRange)>,
}

/// Walks versions in `(key, lsn)` order, as `next` yields them, and hands `keep` each one a
/// read can reach: one at or above the cutoff, or one below it with no newer base version of
/// its key (image, tombstone, `will_init` delta) in the stream, and no image layer holding its
/// key, at or below the lowest point at or above it. Returns the approximate bytes dropped and
/// kept.
fn sift(
    mut next: impl FnMut() -> Result<Option<(Bytes, Lsn, Value)>>,
    reach: &Reach<'_>,
    mut keep: impl FnMut(&[u8], Lsn, &Value) -> Result<()>,
) -> Result<(u64, u64)> {
    let mut sizes = (0u64, 0u64);
    let mut key = Bytes::new();
    let mut versions: Vec<(Lsn, Value)> = Vec::new();
    loop {
        let entry = next()?;
        if entry.as_ref().is_none_or(|(k, _, _)| *k != key) && !versions.is_empty() {
            sift_key(&key, &mut versions, reach, &mut keep, &mut sizes)?;
        }
        let Some((k, lsn, value)) = entry else {
            return Ok(sizes);
        };
        key = k;
        versions.push((lsn, value));
    }
}

/// [`sift`] for the versions of one key, oldest first; empties `versions`.
fn sift_key(
    key: &[u8],
    versions: &mut Vec<(Lsn, Value)>,
    reach: &Reach<'_>,
    keep: &mut impl FnMut(&[u8], Lsn, &Value) -> Result<()>,
    (dropped, kept): &mut (u64, u64),
) -> Result<()> {
    // Newest first: note for each version whether a base version above it ends every read
    // that could reach it.
    let mut reachable = vec![true; versions.len()];
    let mut base_above: Option<Lsn> = None;
    for (i, (lsn, value)) in versions.iter().enumerate().rev() {
        if *lsn < reach.cutoff {
            let points = reach.points;
            let first_point = points[points.partition_point(|p| p < lsn)];
            let imaged = reach
                .images
                .iter()
                .any(|(i, keys)| lsn < i && *i <= first_point && keys.contains(key));
            reachable[i] = !imaged && base_above.is_none_or(|b| b > first_point);
        }
        if value.is_base() {
            base_above = Some(*lsn);
        }
    }
    for ((lsn, value), reachable) in versions.drain(..).zip(reachable) {
        let size = (key.len() + 8 + 4 + value.payload_len()) as u64;
        if reachable {
            *kept += size;
            keep(key, lsn, &value)?;
        } else {
            *dropped += size;
        }
    }
    Ok(())
}

/// Whether `outer` holds every key of `inner`.
fn range_contains(outer: &KeyRange, inner: &KeyRange) -> bool {
    outer.start <= inner.start
        && match (&outer.end, &inner.end) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(o), Some(i)) => i <= o,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn layer(name: &str, kind: LayerKind, start: u64, end: u64) -> LayerDesc {
        LayerDesc {
            file_name: name.into(),
            kind,
            level: 0,
            lsn_range: Lsn(start)..Lsn(end),
            key_range: KeyRange::ALL,
            file_size: 10,
        }
    }

    #[test]
    fn layers_under_an_image_below_the_cutoff_go() {
        let l = vec![
            layer("d1", LayerKind::Delta, 1, 10),
            layer("i9", LayerKind::Image, 9, 10),
            layer("d2", LayerKind::Delta, 10, 20),
        ];
        let (rm, kept) = plan(&l, &[Lsn(15)], Lsn(15));
        assert_eq!(
            rm.iter().map(|l| l.file_name.as_str()).collect::<Vec<_>>(),
            ["d1"]
        );
        assert_eq!(
            kept.iter()
                .map(|l| l.file_name.as_str())
                .collect::<Vec<_>>(),
            ["i9"]
        );
    }

    #[test]
    fn a_branch_point_below_the_image_keeps_the_layers_it_reads() {
        let l = vec![
            layer("d1", LayerKind::Delta, 1, 10),
            layer("i12", LayerKind::Image, 12, 13),
        ];
        let (rm, _) = plan(&l, &[Lsn(5), Lsn(15)], Lsn(15));
        assert!(rm.is_empty());
        let (rm, _) = plan(&l, &[Lsn(15)], Lsn(15));
        assert_eq!(rm.len(), 1);
    }

    #[test]
    fn of_two_images_at_one_lsn_one_stays() {
        let l = vec![
            layer("d1", LayerKind::Delta, 1, 10),
            layer("i9a", LayerKind::Image, 9, 10),
            layer("i9b", LayerKind::Image, 9, 10),
        ];
        let (rm, kept) = plan(&l, &[Lsn(15)], Lsn(15));
        let rm: Vec<_> = rm.iter().map(|l| l.file_name.as_str()).collect();
        assert_eq!(rm, ["d1", "i9a"]);
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn a_partial_image_does_not_cover_a_wider_layer() {
        let mut img = layer("i", LayerKind::Image, 12, 13);
        img.key_range = KeyRange {
            start: Bytes::from_static(b"a"),
            end: Some(Bytes::from_static(b"m")),
        };
        let l = vec![layer("d1", LayerKind::Delta, 1, 10), img];
        assert!(plan(&l, &[Lsn(15)], Lsn(15)).0.is_empty());
    }
}
