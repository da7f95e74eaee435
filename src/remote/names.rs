//! Object names, relative to a [`RemoteStorage`](super::RemoteStorage)'s prefix.

use crate::TimelineId;
use crate::error::{Error, Result};

use super::Generation;

/// The folder of one timeline's objects.
pub(super) fn timeline_dir(timeline: TimelineId) -> String {
    format!("timelines/{timeline}")
}

/// Name stem of a timeline index.
pub(super) const INDEX_STEM: &str = "index";
/// Name stem of a catalog.
pub(super) const CATALOG_STEM: &str = "catalog";
/// The claim object (backends with conditional `Update`).
pub(super) const CLAIM_OBJECT: &str = "generation";
/// The folder of per-generation claim objects (backends with `Create` only).
pub(super) const CLAIMS_DIR: &str = "generations";
/// The folder of WAL chunks.
pub(super) const WAL_DIR: &str = "wal";
/// The folder of release records: a generation whose owner closed cleanly.
pub(super) const RELEASED_DIR: &str = "released";

/// The name of a layer file uploaded under generation `generation`:
/// `timelines/{timeline}/{layer_file_name}-{generation}`.
///
/// # Errors
///
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if `layer_file_name` is
/// empty, is `index` (it would read as an index), or holds a character outside
/// `[A-Za-z0-9._=-]` (a `/`, say).
///
/// ```
/// use stratakv::TimelineId;
/// use stratakv::remote::{Generation, layer_object};
/// let t = TimelineId::from(1u128);
/// assert_eq!(
///     layer_object(t, "000000-ffffff__0100-0200", Generation(3)).unwrap(),
///     "timelines/00000000000000000000000000000001/000000-ffffff__0100-0200-00000003"
/// );
/// assert!(layer_object(t, "a/b", Generation(3)).is_err());
/// ```
pub fn layer_object(
    timeline: TimelineId,
    layer_file_name: &str,
    generation: Generation,
) -> Result<String> {
    let valid = !layer_file_name.is_empty()
        && layer_file_name != INDEX_STEM
        && layer_file_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'=' | b'-'));
    if !valid {
        return Err(Error::invalid(format!(
            "invalid layer file name {layer_file_name:?} for object storage"
        )));
    }
    Ok(format!(
        "{}/{layer_file_name}-{generation}",
        timeline_dir(timeline)
    ))
}

/// The name of a timeline's index uploaded under `generation`:
/// `timelines/{timeline}/index-{generation}`.
pub fn index_object(timeline: TimelineId, generation: Generation) -> String {
    format!("{}/{INDEX_STEM}-{generation}", timeline_dir(timeline))
}

/// The name of the catalog uploaded under `generation`: `catalog-{generation}`.
pub fn catalog_object(generation: Generation) -> String {
    format!("{CATALOG_STEM}-{generation}")
}

/// The name of the claim object of `generation` on create-only backends.
pub(super) fn claim_object_of(generation: Generation) -> String {
    format!("{CLAIMS_DIR}/{generation}")
}

/// The heartbeat of `generation`'s owner: `heartbeats/{gen}`.
pub(super) fn heartbeat_object_of(generation: Generation) -> String {
    format!("heartbeats/{generation}")
}

/// The release record of `generation`: `released/{gen}`.
pub(super) fn released_object_of(generation: Generation) -> String {
    format!("{RELEASED_DIR}/{generation}")
}

/// The name of WAL chunk `seq` uploaded under `generation`: `wal/{seq:016x}-{gen}`, so that
/// chunks sort by sequence number, then generation.
pub(super) fn wal_chunk_object(seq: u64, generation: Generation) -> String {
    format!("{WAL_DIR}/{seq:016x}-{generation}")
}

/// The sequence number and generation of a WAL chunk's name (relative to the prefix).
pub(super) fn parse_wal_chunk(name: &str) -> Option<(u64, Generation)> {
    let file = name.strip_prefix(WAL_DIR)?.strip_prefix('/')?;
    let (seq, generation) = file.split_once('-')?;
    if seq.len() != 16 {
        return None;
    }
    Some((u64::from_str_radix(seq, 16).ok()?, generation.parse().ok()?))
}

/// The folder of WAL start records.
pub(super) const WAL_STARTS_DIR: &str = "walstart";

/// The record that `generation`'s WAL chunks start at `seq`: `walstart/{gen}/{seq:016x}`.
pub(super) fn wal_start_object(generation: Generation, seq: u64) -> String {
    format!("{WAL_STARTS_DIR}/{generation}/{seq:016x}")
}

/// The generation and start of a WAL start record's name (relative to the prefix).
pub(super) fn parse_wal_start(name: &str) -> Option<(Generation, u64)> {
    let rest = name.strip_prefix(WAL_STARTS_DIR)?.strip_prefix('/')?;
    let (generation, seq) = rest.split_once('/')?;
    if seq.len() != 16 {
        return None;
    }
    Some((generation.parse().ok()?, u64::from_str_radix(seq, 16).ok()?))
}

/// The generation in a file name `{stem}-{gen}`, if the name is exactly that.
pub(super) fn parse_stem_generation(file_name: &str, stem: &str) -> Option<Generation> {
    let rest = file_name.strip_prefix(stem)?.strip_prefix('-')?;
    rest.parse().ok()
}
