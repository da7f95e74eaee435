//! `dump`: a layer file or a manifest in readable form.

use std::ops::Range;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::{
    DataBlock, Footer, LAYER_MAGIC, LayerDesc, LayerKind, MANIFEST_MAGIC, Manifest,
    decode_block_ref, decode_index,
};
use crate::id::TimelineId;
use crate::lsn::Lsn;
use crate::value::{KeyRange, Value};

/// What [`dump_file`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dump {
    /// A layer file.
    Layer(LayerDump),
    /// A timeline's manifest.
    Manifest(ManifestDump),
}

/// A timeline's manifest: its ancestor, watermarks and layers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManifestDump {
    /// The timeline it belongs to.
    pub timeline: TimelineId,
    /// The timeline it branched from and the branch point.
    pub ancestor: Option<(TimelineId, Lsn)>,
    /// Everything at or below this LSN is in the layers listed.
    pub disk_consistent_lsn: Lsn,
    /// The oldest readable LSN.
    pub gc_cutoff: Lsn,
    /// The sequence number the next layer file name takes.
    pub next_layer_seq: u64,
    /// The layer files, as the manifest describes them.
    pub layers: Vec<LayerDesc>,
}

/// A layer file: what its footer says, and every version in every data block.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerDump {
    /// Delta or image.
    pub kind: LayerKind,
    /// The LSNs it covers, `[start, end)`.
    pub lsn_range: Range<Lsn>,
    /// The keys it covers.
    pub key_range: KeyRange,
    /// Its size in bytes.
    pub file_size: u64,
    /// The number of versions the footer counts.
    pub entry_count: u64,
    /// The framed size of its key filter block (0: none).
    pub filter_len: u32,
    /// Its data blocks in file order.
    pub blocks: Vec<BlockDump>,
}

/// One data block of a layer file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockDump {
    /// Where the framed block starts in the file.
    pub offset: u64,
    /// Its framed length (after compression, with its trailer).
    pub framed_len: u32,
    /// Its versions in `(key, lsn)` order.
    pub entries: Vec<DumpEntry>,
}

/// One version in a data block.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DumpEntry {
    /// The key.
    pub key: Bytes,
    /// The LSN.
    pub lsn: Lsn,
    /// The version as stored: an image, a delta record or a tombstone.
    pub value: Value,
}

/// Reads the layer file or manifest at `path` (told apart by their magic bytes) and decodes
/// all of it, checking every checksum on the way.
///
/// # Errors
/// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) or
/// [`Io`](crate::ErrorKind::Io) if it cannot be read;
/// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) if it is neither a layer file nor
/// a manifest; [`Corruption`](crate::ErrorKind::Corruption) naming the offset of the first
/// damage met.
pub fn dump_file(path: &Path) -> Result<Dump> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::new(
            crate::ErrorKind::NotFound,
            format!("{}: no such file", path.display()),
        ),
        _ => Error::io("reading", path, e),
    })?;
    if bytes.starts_with(MANIFEST_MAGIC) {
        let m = Manifest::decode(&bytes, path)?;
        return Ok(Dump::Manifest(ManifestDump {
            timeline: m.timeline_id,
            ancestor: m.ancestor,
            disk_consistent_lsn: m.disk_consistent_lsn,
            gc_cutoff: m.gc_cutoff,
            next_layer_seq: m.next_layer_seq,
            layers: m.layers,
        }));
    }
    if !bytes.ends_with(LAYER_MAGIC) {
        return Err(Error::invalid(format!(
            "{} is neither a layer file nor a manifest (no magic of either)",
            path.display()
        )));
    }
    let footer = Footer::decode(&bytes, path)?;
    let at = footer.index_offset;
    let framed = part(&bytes, at, footer.index_len)
        .ok_or_else(|| Error::corruption(path, at, "index block lies outside the file"))?;
    let index = decode_index(&decode_block_ref(framed, path, at)?, path, at)?;
    let mut blocks = Vec::with_capacity(index.len());
    for e in &index {
        let framed = part(&bytes, e.offset, e.len)
            .ok_or_else(|| Error::corruption(path, at, "index names a block past the file"))?;
        let block = DataBlock::parse(&decode_block_ref(framed, path, e.offset)?, path, e.offset)?;
        let mut entries = Vec::with_capacity(block.len());
        for i in 0..block.len() {
            let entry = block.entry(i).map_err(|what| {
                Error::corruption(path, e.offset, format!("data block entry {i}: {what}"))
            })?;
            entries.push(DumpEntry {
                key: Bytes::copy_from_slice(entry.key),
                lsn: entry.lsn,
                value: entry.value,
            });
        }
        blocks.push(BlockDump {
            offset: e.offset,
            framed_len: e.len,
            entries,
        });
    }
    Ok(Dump::Layer(LayerDump {
        kind: footer.kind,
        lsn_range: footer.lsn_range,
        key_range: footer.key_range,
        file_size: bytes.len() as u64,
        entry_count: footer.entry_count,
        filter_len: footer.filter_len,
        blocks,
    }))
}

/// `len` bytes of `bytes` from `at`, if they are all there.
fn part(bytes: &[u8], at: u64, len: u32) -> Option<&[u8]> {
    let end = at.checked_add(u64::from(len))?;
    bytes.get(usize::try_from(at).ok()?..usize::try_from(end).ok()?)
}
