//! The mirror's status: what the destination holds against what the source holds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::id::TimelineId;
use crate::lsn::Lsn;
use crate::remote::names::parse_wal_start;
use crate::remote::wal_ship::valid_chunks;
use crate::remote::{Generation, layer_object};

use super::pass::{DestListing, Work};
use super::source::Survey;
use super::{Inner, MirrorState, MirrorTimeline};

impl Inner {
    /// Per timeline the destination's catalog names, the newest LSN it holds.
    pub(super) fn mirrored(&self, work: &Work, listing: &DestListing) -> BTreeMap<TimelineId, Lsn> {
        let mut listed: Vec<(u64, Generation, String)> = listing
            .chunks
            .iter()
            .map(|(n, (seq, g))| (*seq, *g, n.clone()))
            .collect();
        listed.sort();
        let starts: BTreeMap<Generation, u64> = listing
            .starts
            .iter()
            .filter_map(|n| parse_wal_start(n))
            .collect();
        let (valid, _) = valid_chunks(&listed, &starts);
        let mut out = BTreeMap::new();
        let Some((_, catalog)) = &work.catalog else {
            return out;
        };
        for e in &catalog.timelines {
            let mut lsn = work.indexes.get(&e.id).map_or(Lsn::ZERO, |d| d.dcl);
            for (_, name) in &valid {
                if let Some(l) = work.chunk_lsns.get(name).and_then(|m| m.get(&e.id)) {
                    lsn = lsn.max(*l);
                }
            }
            out.insert(e.id, lsn);
        }
        out
    }

    /// Publishes the status after a pass (`complete` known) or a measurement (`None`).
    pub(super) fn publish(
        &self,
        work: &Work,
        survey: &Survey,
        listing: &DestListing,
        state: MirrorState,
        complete: Option<bool>,
    ) {
        let mirrored = self.mirrored(work, listing);
        let mut timelines: BTreeMap<TimelineId, MirrorTimeline> = BTreeMap::new();
        let mut names: BTreeMap<TimelineId, String> = BTreeMap::new();
        for c in [
            work.catalog.as_ref().map(|(_, c)| c),
            survey.catalog.as_ref().map(|(_, _, c)| c),
        ]
        .into_iter()
        .flatten()
        {
            for e in &c.timelines {
                names.insert(e.id, e.name.clone());
            }
        }
        let source_catalog: Option<BTreeSet<TimelineId>> = survey
            .catalog
            .as_ref()
            .map(|(_, _, c)| c.timelines.iter().map(|e| e.id).collect());
        let mut source: BTreeMap<TimelineId, Lsn> = BTreeMap::new();
        let mut raise = |tl: TimelineId, lsn: Lsn| {
            let e = source.entry(tl).or_insert(lsn);
            *e = (*e).max(lsn);
        };
        for (tl, src) in &survey.indexes {
            raise(*tl, src.index.manifest.disk_consistent_lsn);
        }
        if let Some(hb) = &survey.heartbeat {
            for (tl, lsn) in &hb.timelines {
                raise(*tl, *lsn);
            }
        }
        for (tl, lsn) in &work.source_seen {
            if survey.indexes.contains_key(tl) {
                raise(*tl, *lsn);
            }
        }
        for (tl, lsn) in source {
            // Timelines the source's catalog no longer names are not lag.
            if source_catalog.as_ref().is_some_and(|c| !c.contains(&tl)) {
                continue;
            }
            timelines.insert(
                tl,
                MirrorTimeline {
                    name: names.get(&tl).cloned(),
                    source: lsn,
                    mirrored: mirrored.get(&tl).copied().unwrap_or(Lsn::ZERO),
                },
            );
        }
        for (tl, lsn) in &mirrored {
            timelines.entry(*tl).or_insert_with(|| MirrorTimeline {
                name: names.get(tl).cloned(),
                source: Lsn::ZERO,
                mirrored: *lsn,
            });
        }
        let lag_lsn = timelines
            .values()
            .map(|t| t.source.0.saturating_sub(t.mirrored.0))
            .max()
            .unwrap_or(0);
        let (mut lag_chunks, mut lag_bytes) = (0u64, 0u64);
        for (_, _, name, size) in &survey.chunks {
            if !listing.chunks.contains_key(name) {
                lag_chunks += 1;
                lag_bytes += size;
            }
        }
        for (tl, src) in &survey.indexes {
            for (file, g) in &src.index.layer_generations {
                if let Ok(name) = layer_object(*tl, file, Generation(*g))
                    && !listing.objects.contains(&name)
                {
                    lag_bytes += survey.objects.get(&name).copied().unwrap_or(0);
                }
            }
        }
        let now = Instant::now();
        let (since_complete_pass, lag) = {
            let mut t = self.times.lock();
            if complete == Some(true) {
                t.last_complete = Some(now);
            }
            if lag_lsn > 0 || lag_chunks > 0 || complete == Some(false) {
                t.behind_since.get_or_insert(now);
            } else {
                t.behind_since = None;
            }
            (
                t.last_complete.map(|at| now - at),
                t.behind_since.map_or(Duration::ZERO, |at| now - at),
            )
        };
        let held = work.held;
        self.status.send_modify(|s| {
            s.state = state;
            s.source_generation = Some((survey.generation, survey.node.clone()));
            s.mirror_generation = held;
            s.timelines = timelines;
            s.lag_lsn = lag_lsn;
            s.lag_chunks = lag_chunks;
            s.lag_bytes = lag_bytes;
            s.lag = lag;
            s.since_complete_pass = since_complete_pass;
            s.passes = work.passes;
            s.copied_objects = work.copied_objects;
            s.copied_bytes = work.copied_bytes;
            s.deleted_objects = work.deleted_objects;
            if state != MirrorState::Fenced {
                s.last_error = None;
            }
        });
    }
}
