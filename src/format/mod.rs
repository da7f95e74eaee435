//! Every on-disk encoding, each with its byte layout beside its code.
//!
//! Integers are little-endian; the one exception is a timeline id, written as its 16 bytes
//! big-endian (the order of its hex form), in the catalog, manifests (and the remote indexes
//! that carry them) and WAL records. Each structure carries a CRC32 (crc32fast) and is decoded
//! with bounds checks, so corrupt bytes are an error of kind
//! [`Corruption`](crate::ErrorKind::Corruption) naming the file and offset, never a panic.
//!
//! Private to the crate: of what is here, only [`LayerDesc`] and [`LayerKind`] are public API
//! (re-exported at the crate root). `crate::internals`, behind the `internals` feature, hands
//! the encoders and decoders to the crate's own tests and to the fuzz targets.

mod block;
mod catalog;
mod cursor;
mod data_block;
mod envelope;
mod filter;
mod footer;
mod index;
mod key_order;
mod manifest;
mod owner;
mod remote_index;
mod time_index;
pub(crate) mod varint;
mod wal;

pub use block::{Compression, CompressionProbe, decode_block, decode_block_ref, encode_block};

/// The largest value or delta record a layer can hold (32 MiB): a block of at most 16 MiB
/// plus one entry of this size stays under [`MAX_RAW_BLOCK`](block::MAX_RAW_BLOCK).
pub const MAX_VALUE_LEN: usize = 32 << 20;
pub use catalog::{Catalog, CatalogEntry};
pub use data_block::{Alloc, BlockBuf, DataBlock, DataBlockBuilder, Pinned};
pub(crate) use data_block::{Side, common_prefix, partition_near};
pub use filter::{KeyFilter, key_hash};
pub(crate) use footer::FOOTER_MAX_LEN;
pub(crate) use footer::MAGIC as LAYER_MAGIC;
pub use footer::{Footer, LayerKind};
pub use index::{IndexEntry, decode_index, encode_index};
pub(crate) use key_order::OrdKey;
pub(crate) use manifest::MAGIC as MANIFEST_MAGIC;
pub use manifest::{LayerDesc, Manifest};
pub(crate) use owner::{decode_owner, encode_owner};
pub use remote_index::RemoteIndex;
pub use time_index::{decode_time_index, encode_entries, encode_header};
pub use wal::{
    WAL_HEADER_LEN, WalRecord, decode_wal_segment, encode_commit, encode_put, encode_wal_header,
};

// What only `crate::internals` (the crate's tests and the fuzz targets) and unit tests name.
#[cfg(feature = "internals")]
pub use data_block::Entry;
#[cfg(feature = "internals")]
pub use footer::FOOTER_TRAILER_LEN;
#[cfg(feature = "internals")]
pub use time_index::DecodedTimeIndex;
#[cfg(any(test, feature = "internals"))]
pub use time_index::{TIME_INDEX_HEADER_LEN, TIME_INDEX_RECORD_OVERHEAD};
#[cfg(feature = "internals")]
pub use wal::DecodedSegment;
#[cfg(any(test, feature = "internals"))]
pub use wal::encode_wal_record;
