//! Reading the source: the survey a pass works from, without writing anything there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::format::{Catalog, RemoteIndex, decode_wal_segment};
use crate::id::TimelineId;
use crate::lsn::Lsn;
use crate::remote::names::{
    CATALOG_STEM, INDEX_STEM, WAL_DIR, WAL_STARTS_DIR, parse_stem_generation, parse_wal_chunk,
    parse_wal_start,
};
use crate::remote::{Generation, Heartbeat, RemoteStorage, catalog_object, index_object};

/// A source index read by a survey.
pub(super) struct SourceIndex {
    pub(super) generation: Generation,
    pub(super) bytes: Bytes,
    pub(super) index: RemoteIndex,
}

/// What a survey of the source found, in the order it was read.
pub(super) struct Survey {
    pub(super) generation: Generation,
    pub(super) node: String,
    pub(super) heartbeat: Option<Heartbeat>,
    /// WAL chunks at or below `generation`: `(seq, generation, name, size)`, sorted.
    pub(super) chunks: Vec<(u64, Generation, String, u64)>,
    /// WAL start records at or below `generation`.
    pub(super) starts: Vec<String>,
    /// Everything under `timelines/`: name → size.
    pub(super) objects: BTreeMap<String, u64>,
    pub(super) indexes: BTreeMap<TimelineId, SourceIndex>,
    /// Timelines whose index vanished while it was read (deleted, or rewritten meanwhile).
    pub(super) unreadable: BTreeSet<TimelineId>,
    pub(super) catalog: Option<(Generation, Bytes, Catalog)>,
    /// Objects of a generation above `generation` were listed: the source moved on meanwhile.
    pub(super) newer: bool,
    /// The claim, read again after the WAL chunks and starts were listed, was no longer
    /// `(generation, node)`: a new owner claimed meanwhile. A chunk of `generation` listed then
    /// may be the fenced owner's late one, uploaded after that claim and never acknowledged,
    /// and no start record of the new owner lists yet to mark it invalid. A pass copies no new
    /// chunk from such a survey; the next one starts from the new claim.
    pub(super) claim_moved: bool,
}

/// Reads the source, in the order the protocol needs: claim, heartbeat, WAL chunks, WAL
/// starts, the claim again, `timelines/`, indexes, catalog. `None` if nothing was ever claimed
/// there.
pub(super) async fn survey(source: &RemoteStorage) -> Result<Option<Survey>> {
    let Some((generation, node)) = source.peek_generation().await? else {
        return Ok(None);
    };
    let heartbeat = source.read_heartbeat(generation).await?;
    let mut newer = false;
    let mut chunks = Vec::new();
    for (name, size) in source.list(WAL_DIR).await? {
        if let Some((seq, g)) = parse_wal_chunk(&name) {
            if g > generation {
                newer = true;
            } else {
                chunks.push((seq, g, name, size));
            }
        }
    }
    chunks.sort();
    let mut starts = Vec::new();
    for (name, _) in source.list(WAL_STARTS_DIR).await? {
        if let Some((g, _)) = parse_wal_start(&name) {
            if g > generation {
                newer = true;
            } else {
                starts.push(name);
            }
        }
    }
    // The claim again. A chunk the old owner uploaded before a new owner's claim is in the new
    // owner's listing, and the new owner starts past it; one that lands after the claim (never
    // acknowledged: the old owner checks the claim after each upload) is invalid only once the
    // new owner's start record is written. If the listings above show such a chunk, the claim
    // was made before they ended, so this read sees it.
    let claim_moved = !source
        .peek_generation()
        .await?
        .is_some_and(|(g, n)| g == generation && n == node);
    let objects: BTreeMap<String, u64> = source.list("timelines").await?.into_iter().collect();
    let mut timelines: BTreeSet<TimelineId> = BTreeSet::new();
    for name in objects.keys() {
        if let Some((tl, file)) = split_timeline_object(name) {
            timelines.insert(tl);
            if let Some(g) = parse_stem_generation(file, INDEX_STEM)
                && g > generation
            {
                newer = true;
            }
        }
    }
    let mut indexes = BTreeMap::new();
    let mut unreadable = BTreeSet::new();
    for tl in timelines {
        match read_newest_index(source, tl, generation).await? {
            Some((g, bytes, index)) => {
                indexes.insert(
                    tl,
                    SourceIndex {
                        generation: g,
                        bytes,
                        index,
                    },
                );
            }
            // Layers without an index yet, or a deleted timeline's leftovers.
            None => {
                if objects.keys().any(|n| {
                    split_timeline_object(n).is_some_and(|(t, f)| {
                        t == tl && parse_stem_generation(f, INDEX_STEM).is_some()
                    })
                }) {
                    unreadable.insert(tl);
                }
            }
        }
    }
    let mut catalog = None;
    let newest_catalog = source
        .list_files(source.prefix())
        .await?
        .iter()
        .filter_map(|f| parse_stem_generation(f, CATALOG_STEM))
        .max();
    if newest_catalog.is_some_and(|g| g > generation) {
        newer = true;
    }
    if let Some((g, bytes)) = source.latest_catalog(generation).await? {
        let c = Catalog::decode(&bytes, &PathBuf::from(catalog_object(g)))
            .map_err(|e| e.context(format!("source {}", source.prefix())))?;
        catalog = Some((g, bytes, c));
    }
    Ok(Some(Survey {
        generation,
        node,
        heartbeat,
        chunks,
        starts,
        objects,
        indexes,
        unreadable,
        catalog,
        newer,
        claim_moved,
    }))
}

/// The newest index of `tl` at or below `max`, downloaded and decoded.
pub(super) async fn read_newest_index(
    storage: &RemoteStorage,
    tl: TimelineId,
    max: Generation,
) -> Result<Option<(Generation, Bytes, RemoteIndex)>> {
    let found = match storage.latest_index(tl, max).await {
        Ok(found) => found,
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some((g, bytes)) = found else {
        return Ok(None);
    };
    let name = index_object(tl, g);
    let index = RemoteIndex::decode(&bytes, &PathBuf::from(&name))
        .map_err(|e| e.context(format!("index under {}", storage.prefix())))?;
    Ok(Some((g, bytes, index)))
}

/// Checks that WAL chunk `name` decodes whole as sequence `seq`; returns per timeline the
/// highest LSN of its records.
pub(super) fn check_chunk(seq: u64, name: &str, bytes: &[u8]) -> Result<BTreeMap<TimelineId, Lsn>> {
    let path = PathBuf::from(name);
    let d = decode_wal_segment(bytes, &path)?;
    if d.torn_tail || d.seq != seq {
        return Err(Error::corruption(
            &path,
            d.valid_len as u64,
            if d.torn_tail {
                "WAL chunk ends in a torn record".to_string()
            } else {
                format!("WAL chunk header says sequence {:016x}", d.seq)
            },
        ));
    }
    let mut lsns = BTreeMap::new();
    for r in &d.records {
        let e = lsns.entry(r.timeline).or_insert(r.lsn);
        *e = (*e).max(r.lsn);
    }
    Ok(lsns)
}

/// `timelines/{id}/{file}` as the timeline and the file name.
pub(super) fn split_timeline_object(name: &str) -> Option<(TimelineId, &str)> {
    let rest = name.strip_prefix("timelines/")?;
    let (id, file) = rest.split_once('/')?;
    Some((id.parse().ok()?, file))
}
