//! One copying pass: the destination brought up to a survey of the source, step by step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::format::{Catalog, RemoteIndex};
use crate::id::TimelineId;
use crate::lsn::Lsn;
use crate::remote::names::{
    INDEX_STEM, WAL_DIR, WAL_STARTS_DIR, heartbeat_object_of, parse_stem_generation,
    parse_wal_chunk,
};
use crate::remote::{Generation, catalog_object, index_object, layer_object};

use super::source::{
    SourceIndex, Survey, check_chunk, read_newest_index, split_timeline_object, survey,
};
use super::{Inner, MirrorPass, MirrorState};

/// How many times a pass reads a timeline's index again when a layer it names vanished from
/// the source (its owner compacted meanwhile) before leaving the timeline to the next pass.
const INDEX_ROUNDS: usize = 3;

/// The destination's newest index of a timeline, as the mirror knows it.
pub(super) struct DestIndex {
    pub(super) bytes: Bytes,
    pub(super) dcl: Lsn,
    /// The layer objects it names.
    pub(super) layers: BTreeSet<String>,
}

/// What the mirror knows of the destination between passes.
#[derive(Default)]
pub(super) struct Work {
    /// The generation the mirror holds in the destination.
    pub(super) held: Option<Generation>,
    /// Whether the destination's indexes and catalog were read (once per start).
    pub(super) loaded: bool,
    pub(super) indexes: BTreeMap<TimelineId, DestIndex>,
    pub(super) catalog: Option<(Bytes, Catalog)>,
    /// Per WAL chunk in the destination, the highest LSN of each timeline's records in it.
    pub(super) chunk_lsns: BTreeMap<String, BTreeMap<TimelineId, Lsn>>,
    /// The heartbeat last written to the destination.
    pub(super) heartbeat: Option<String>,
    /// Per timeline, the highest LSN seen in the source.
    pub(super) source_seen: BTreeMap<TimelineId, Lsn>,
    pub(super) passes: u64,
    pub(super) copied_objects: u64,
    pub(super) copied_bytes: u64,
    pub(super) deleted_objects: u64,
}

/// What the destination holds now: its listings.
pub(super) struct DestListing {
    pub(super) chunks: BTreeMap<String, (u64, Generation)>,
    pub(super) starts: BTreeSet<String>,
    pub(super) objects: BTreeSet<String>,
}

impl Inner {
    /// The task: a pass (or, paused, a measurement) per interval until stopped.
    pub(super) async fn run(self: Arc<Self>, interval: Duration) {
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            if !self.fenced.load(Ordering::Acquire) {
                // Failures are in the status; the next interval retries.
                if self.paused.load(Ordering::Acquire) {
                    let _ = self.measure_and_publish().await;
                } else {
                    let _ = self.pass_and_publish().await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    pub(super) async fn pass_and_publish(&self) -> Result<MirrorPass> {
        let mut work = self.work.lock().await;
        work.passes += 1;
        let result = self.pass(&mut work).await;
        match &result {
            Ok(_) => {}
            Err(e) => {
                if e.kind() == ErrorKind::Fenced {
                    self.fenced.store(true, Ordering::Release);
                }
                let fenced = self.fenced.load(Ordering::Acquire);
                let e = e.clone();
                let passes = work.passes;
                self.status.send_modify(|s| {
                    s.state = if fenced {
                        MirrorState::Fenced
                    } else {
                        MirrorState::Failing
                    };
                    s.passes = passes;
                    s.last_error = Some(e);
                });
            }
        }
        result
    }

    pub(super) async fn measure_and_publish(&self) -> Result<()> {
        let mut work = self.work.lock().await;
        work.passes += 1;
        let result: Result<()> = async {
            let Some(survey) = survey(&self.source).await? else {
                return Ok(());
            };
            let listing = self.list_dest().await?;
            let state = if self.fenced.load(Ordering::Acquire) {
                MirrorState::Fenced
            } else if self.paused.load(Ordering::Acquire) {
                MirrorState::Paused
            } else {
                MirrorState::CatchingUp
            };
            self.publish(&work, &survey, &listing, state, None);
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            let e = e.clone();
            self.status.send_modify(|s| s.last_error = Some(e));
        }
        drop(work);
        result
    }

    /// One copying pass (see the module docs for the order and why).
    pub(super) async fn pass(&self, work: &mut Work) -> Result<MirrorPass> {
        if self.fenced.load(Ordering::Acquire) {
            return Err(self.fenced_error(work.held));
        }
        let mut done = MirrorPass::default();
        let Some(mut survey) = survey(&self.source).await? else {
            // Nothing claimed in the source yet: nothing to mirror.
            done.complete = true;
            return Ok(done);
        };
        let g = self.claim(work, survey.generation).await?;
        if !work.loaded {
            self.load_dest(work).await?;
            work.loaded = true;
        }
        let mut listing = self.list_dest().await?;
        self.learn_chunks(work, &listing).await?;

        // WAL start records first: they make a fenced owner's late chunks invalid.
        for name in &survey.starts {
            if !listing.starts.contains(name) {
                self.copy(name, None, &mut done).await?;
                listing.starts.insert(name.clone());
            }
        }

        // Layers, then (checked) the indexes whose layers are all there.
        let mut current: BTreeSet<TimelineId> = BTreeSet::new();
        let ids: Vec<TimelineId> = survey.indexes.keys().copied().collect();
        for tl in ids {
            if self
                .copy_layers(tl, &mut survey, &mut listing, &mut done)
                .await?
            {
                current.insert(tl);
            }
        }
        self.check(g).await?;
        for tl in &current {
            let src = &survey.indexes[tl];
            if work.indexes.get(tl).is_some_and(|d| d.bytes == src.bytes) {
                continue;
            }
            let name = index_object(*tl, src.generation);
            self.dest.upload(&name, src.bytes.clone()).await?;
            done.copied_objects += 1;
            done.copied_bytes += src.bytes.len() as u64;
            work.indexes
                .insert(*tl, dest_index(*tl, &src.index, src.bytes.clone())?);
            listing.objects.insert(name);
        }

        // The catalog, once every timeline it names has its index.
        let mut catalog_current = survey.catalog.is_none() && work.catalog.is_none();
        if let Some((cg, bytes, catalog)) = &survey.catalog {
            let ready = catalog.timelines.iter().all(|e| current.contains(&e.id));
            if work.catalog.as_ref().is_some_and(|(b, _)| b == bytes) {
                catalog_current = true;
            } else if ready {
                self.check(g).await?;
                self.dest
                    .upload(&catalog_object(*cg), bytes.clone())
                    .await?;
                done.copied_objects += 1;
                done.copied_bytes += bytes.len() as u64;
                work.catalog = Some((bytes.clone(), catalog.clone()));
                catalog_current = true;
            }
        }
        let all_current = catalog_current
            && !survey.newer
            && !survey.claim_moved
            && survey.unreadable.is_empty()
            && current.len() == survey.indexes.len()
            && work
                .catalog
                .as_ref()
                .is_none_or(|(_, c)| c.timelines.iter().all(|e| current.contains(&e.id)));

        // Chunks the source deleted (covered by the indexes just copied), oldest first.
        if all_current {
            let in_source: BTreeSet<&str> = survey
                .chunks
                .iter()
                .map(|(_, _, n, _)| n.as_str())
                .collect();
            let gone: Vec<String> = listing
                .chunks
                .keys()
                .filter(|n| !in_source.contains(n.as_str()))
                .cloned()
                .collect();
            for name in gone {
                self.dest.delete_checked(g, &name).await?;
                listing.chunks.remove(&name);
                work.chunk_lsns.remove(&name);
                done.deleted_objects += 1;
            }
        }

        // New chunks, in order, never leaving a gap; none when the claim moved during the
        // survey (one listed may be a fenced owner's late chunk, see `Survey::claim_moved`).
        let mut chunks_current = true;
        let last_here = listing.chunks.values().map(|(seq, _)| *seq).max();
        let missing: Vec<(u64, Generation, String, u64)> = survey
            .chunks
            .iter()
            .filter(|(_, _, n, _)| !listing.chunks.contains_key(n))
            .cloned()
            .collect();
        let continues = match (missing.first(), last_here) {
            (None, _) => true,
            (Some(_), _) if survey.claim_moved => false,
            (Some(_), _) if all_current => true,
            (Some((seq, ..)), Some(last)) => *seq <= last + 1,
            (Some(_), None) => false,
        };
        if continues {
            for (seq, cg, name, _) in missing {
                match self.copy_chunk(seq, &name, &mut done).await {
                    Ok(lsns) => {
                        for (tl, lsn) in &lsns {
                            let e = work.source_seen.entry(*tl).or_insert(*lsn);
                            *e = (*e).max(*lsn);
                        }
                        work.chunk_lsns.insert(name.clone(), lsns);
                        listing.chunks.insert(name, (seq, cg));
                    }
                    // Deleted since the listing (an index covers it now): the next pass.
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        chunks_current = false;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        } else {
            chunks_current = false;
        }

        // Objects nothing names any more, and timelines the catalog dropped.
        if all_current {
            self.delete_unnamed(g, work, &survey, &mut listing, &mut done)
                .await?;
        }

        done.complete = all_current && chunks_current;
        let mirrored = self.mirrored(work, &listing);
        if done.complete
            && let Some(hb) = &survey.heartbeat
            && hb.generation == g
        {
            let mut copy = hb.clone();
            copy.timelines = mirrored.clone();
            let text = copy.encode();
            if work.heartbeat.as_deref() != Some(text.as_str()) {
                self.dest
                    .upload(&heartbeat_object_of(g), Bytes::from(text.clone()))
                    .await?;
                work.heartbeat = Some(text);
            }
        }
        done.mirrored = mirrored;
        work.copied_objects += done.copied_objects;
        work.copied_bytes += done.copied_bytes;
        work.deleted_objects += done.deleted_objects;
        let state = if done.complete {
            MirrorState::InSync
        } else {
            MirrorState::CatchingUp
        };
        self.publish(work, &survey, &listing, state, Some(done.complete));
        Ok(done)
    }

    /// Holds the source's generation `target` in the destination: adopts a claim of this
    /// mirror found there, claims up to `target`, or checks the claim it holds.
    pub(super) async fn claim(&self, work: &mut Work, target: Generation) -> Result<Generation> {
        if work.held.is_none() {
            match self.dest.peek_generation().await? {
                None => {}
                Some((g, node)) if node == self.claim_node && g <= target => work.held = Some(g),
                Some((g, node)) => {
                    return Err(Error::new(
                        ErrorKind::Fenced,
                        format!(
                            "mirror {:?}: the destination {} is owned by generation {g} of node {node:?}, not by this mirror below the source's generation {target}",
                            self.claim_node,
                            self.dest.prefix()
                        ),
                    ));
                }
            }
        }
        match work.held {
            Some(h) if h == target => self.check(h).await?,
            Some(h) if h > target => {
                return Err(Error::invalid(format!(
                    "mirror {:?} holds generation {h} in {} but the source {} is at generation {target}: is it the same source?",
                    self.claim_node,
                    self.dest.prefix(),
                    self.source.prefix()
                )));
            }
            held => {
                self.dest
                    .claim_exact(&self.claim_node, held, target)
                    .await?;
                work.held = Some(target);
            }
        }
        Ok(target)
    }

    /// Fails with `Fenced` if a newer generation than `g` was claimed in the destination.
    pub(super) async fn check(&self, g: Generation) -> Result<()> {
        self.dest.check_generation(g).await.map_err(|e| {
            if e.kind() == ErrorKind::Fenced {
                e.context(format!("mirror {:?}", self.claim_node))
            } else {
                e
            }
        })
    }

    pub(super) fn fenced_error(&self, held: Option<Generation>) -> Error {
        Error::new(
            ErrorKind::Fenced,
            format!(
                "mirror {:?}: a newer generation than its {held:?} was claimed in {}; it copies nothing more",
                self.claim_node,
                self.dest.prefix()
            ),
        )
    }

    /// Reads the destination's newest indexes and catalog (at the first pass after a start).
    pub(super) async fn load_dest(&self, work: &mut Work) -> Result<()> {
        let mut newest: BTreeMap<TimelineId, Generation> = BTreeMap::new();
        for (name, _) in self.dest.list("timelines").await? {
            if let Some((tl, file)) = split_timeline_object(&name)
                && let Some(g) = parse_stem_generation(file, INDEX_STEM)
            {
                let e = newest.entry(tl).or_insert(g);
                *e = (*e).max(g);
            }
        }
        for (tl, g) in newest {
            let name = index_object(tl, g);
            let bytes = self.dest.download(&name).await?;
            let index = RemoteIndex::decode(&bytes, &PathBuf::from(&name))?;
            work.indexes.insert(tl, dest_index(tl, &index, bytes)?);
        }
        if let Some((g, bytes)) = self.dest.latest_catalog(Generation(u32::MAX)).await? {
            let catalog = Catalog::decode(&bytes, &PathBuf::from(catalog_object(g)))?;
            work.catalog = Some((bytes, catalog));
        }
        Ok(())
    }

    pub(super) async fn list_dest(&self) -> Result<DestListing> {
        let chunks = self
            .dest
            .list(WAL_DIR)
            .await?
            .into_iter()
            .filter_map(|(name, _)| {
                let (seq, g) = parse_wal_chunk(&name)?;
                Some((name, (seq, g)))
            })
            .collect();
        let starts = self
            .dest
            .list(WAL_STARTS_DIR)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let objects = self
            .dest
            .list("timelines")
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        Ok(DestListing {
            chunks,
            starts,
            objects,
        })
    }

    /// Reads the destination's chunks the mirror has not seen (after a restart).
    pub(super) async fn learn_chunks(&self, work: &mut Work, listing: &DestListing) -> Result<()> {
        work.chunk_lsns
            .retain(|n, _| listing.chunks.contains_key(n));
        for (name, (seq, _)) in &listing.chunks {
            if work.chunk_lsns.contains_key(name) {
                continue;
            }
            let bytes = self.dest.download(name).await?;
            let lsns = check_chunk(*seq, name, &bytes)?;
            work.chunk_lsns.insert(name.clone(), lsns);
        }
        Ok(())
    }

    /// Copies `name` from the source to the destination, checking its trailer and, when
    /// given, its size; returns its bytes.
    pub(super) async fn copy(
        &self,
        name: &str,
        size: Option<u64>,
        done: &mut MirrorPass,
    ) -> Result<Bytes> {
        let bytes = self.source.download(name).await?;
        if let Some(size) = size
            && bytes.len() as u64 != size
        {
            return Err(Error::new(
                ErrorKind::Corruption,
                format!(
                    "object {name} under {}: {} bytes, its index says {size}; not mirrored",
                    self.source.prefix(),
                    bytes.len()
                ),
            ));
        }
        self.dest.upload(name, bytes.clone()).await?;
        done.copied_objects += 1;
        done.copied_bytes += bytes.len() as u64;
        Ok(bytes)
    }

    /// Copies the layers `tl`'s source index names that the destination lacks; reads the
    /// index again when one vanished. Returns whether all of them are there now.
    pub(super) async fn copy_layers(
        &self,
        tl: TimelineId,
        survey: &mut Survey,
        listing: &mut DestListing,
        done: &mut MirrorPass,
    ) -> Result<bool> {
        'rounds: for round in 0..INDEX_ROUNDS {
            let Some(src) = survey.indexes.get(&tl) else {
                return Ok(false);
            };
            let sizes: BTreeMap<&str, u64> = src
                .index
                .manifest
                .layers
                .iter()
                .map(|d| (d.file_name.as_str(), d.file_size))
                .collect();
            let mut wanted = Vec::new();
            for (file, g) in &src.index.layer_generations {
                let name = layer_object(tl, file, Generation(*g))?;
                if !listing.objects.contains(&name) {
                    wanted.push((name, sizes.get(file.as_str()).copied()));
                }
            }
            for (name, size) in wanted {
                match self.copy(&name, size, done).await {
                    Ok(_) => {
                        listing.objects.insert(name);
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound && round + 1 < INDEX_ROUNDS => {
                        // Compacted away since: the source has a newer index.
                        match read_newest_index(&self.source, tl, survey.generation).await? {
                            Some((generation, bytes, index)) => {
                                survey.indexes.insert(
                                    tl,
                                    SourceIndex {
                                        generation,
                                        bytes,
                                        index,
                                    },
                                );
                            }
                            None => {
                                survey.indexes.remove(&tl);
                                survey.unreadable.insert(tl);
                                return Ok(false);
                            }
                        }
                        continue 'rounds;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(e.context("mirroring a layer")),
                }
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Copies WAL chunk `seq` after checking that it decodes whole; returns its LSNs.
    pub(super) async fn copy_chunk(
        &self,
        seq: u64,
        name: &str,
        done: &mut MirrorPass,
    ) -> Result<BTreeMap<TimelineId, Lsn>> {
        let bytes = self.source.download(name).await?;
        let lsns = check_chunk(seq, name, &bytes).map_err(|e| {
            e.context(format!(
                "WAL chunk under {}; not mirrored",
                self.source.prefix()
            ))
        })?;
        self.dest.upload(name, bytes.clone()).await?;
        done.copied_objects += 1;
        done.copied_bytes += bytes.len() as u64;
        Ok(lsns)
    }

    /// Deletes the destination's layer objects no copied index names and the source no
    /// longer has, and every object of a timeline the source and the copied catalog dropped.
    pub(super) async fn delete_unnamed(
        &self,
        g: Generation,
        work: &mut Work,
        survey: &Survey,
        listing: &mut DestListing,
        done: &mut MirrorPass,
    ) -> Result<()> {
        let named: BTreeSet<TimelineId> = work
            .catalog
            .as_ref()
            .map(|(_, c)| c.timelines.iter().map(|e| e.id).collect())
            .unwrap_or_default();
        let source_timelines: BTreeSet<TimelineId> = survey
            .objects
            .keys()
            .filter_map(|n| split_timeline_object(n).map(|(tl, _)| tl))
            .collect();
        let mut doomed = Vec::new();
        let mut indexes_doomed = Vec::new();
        for name in &listing.objects {
            let Some((tl, file)) = split_timeline_object(name) else {
                continue;
            };
            let is_index = parse_stem_generation(file, INDEX_STEM).is_some();
            if !source_timelines.contains(&tl) && !named.contains(&tl) {
                // A deleted timeline: layers first, its indexes last.
                if is_index {
                    indexes_doomed.push(name.clone());
                } else {
                    doomed.push(name.clone());
                }
            } else if !is_index
                && !survey.objects.contains_key(name)
                && work
                    .indexes
                    .get(&tl)
                    .is_none_or(|d| !d.layers.contains(name))
            {
                doomed.push(name.clone());
            }
        }
        doomed.extend(indexes_doomed);
        for name in doomed {
            self.dest.delete_checked(g, &name).await?;
            listing.objects.remove(&name);
            if let Some((tl, file)) = split_timeline_object(&name)
                && parse_stem_generation(file, INDEX_STEM).is_some()
            {
                work.indexes.remove(&tl);
            }
            done.deleted_objects += 1;
        }
        Ok(())
    }
}

/// The destination's view of an index it holds.
pub(super) fn dest_index(tl: TimelineId, index: &RemoteIndex, bytes: Bytes) -> Result<DestIndex> {
    let layers = index
        .layer_generations
        .iter()
        .map(|(file, g)| layer_object(tl, file, Generation(*g)))
        .collect::<Result<_>>()?;
    Ok(DestIndex {
        bytes,
        dcl: index.manifest.disk_consistent_lsn,
        layers,
    })
}
