//! StrataKV: a versioned key-value store in which every write carries an LSN and every read
//! names one.
//!
//! History lives in immutable layer files (delta and image layers over key range × LSN range);
//! a [`Store`] holds [`Timeline`]s, each written by one [`TimelineWriter`] and read at any LSN.
//! Delta records are turned into values by a [`WalRedo`] hook.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use stratakv::{Lsn, SimpleRedo, Store, StoreOptions, Value};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(StoreOptions::new(dir.path())).await?;
//! let main = store.create_timeline("main").await?;
//! let mut w = main.writer()?;
//! w.put(b"page/42", Lsn(0x100), Value::image("hello"))?;
//! w.finish_write(Lsn(0x100))?;
//! w.put(b"page/42", Lsn(0x200), Value::delta(SimpleRedo::append(b" world")))?;
//! w.finish_write(Lsn(0x200))?;
//!
//! assert_eq!(main.get(b"page/42", Lsn(0x180)).await?.unwrap(), "hello");
//! assert_eq!(main.get(b"page/42", Lsn(0x200)).await?.unwrap(), "hello world");
//! main.flush().await?; // now in a layer file on disk
//! assert_eq!(main.get(b"page/42", Lsn(0x200)).await?.unwrap(), "hello world");
//! store.close().await?;
//! # Ok::<(), stratakv::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Cargo features
//!
//! The default build holds the local-folder and in-memory object stores only, so a first build
//! stays small. Each cloud backend of [`object_store`] is a feature that turns on the backend
//! with its HTTP and TLS stack:
//!
//! | feature | enables |
//! |---|---|
//! | `aws` | S3 and S3-compatible stores (`object_store::aws`, `s3://` URLs) |
//! | `azure` | Azure Blob Storage (`object_store::azure`, `az://`, `abfs://` URLs) |
//! | `gcp` | Google Cloud Storage (`object_store::gcp`, `gs://` URLs) |
//! | `cli` | the `stratakv` command-line tool (with `aws`, `azure` and `gcp`); the library's [`inspect`] module it uses is always there |
//!
//! [`object_store`] is re-exported, so a caller building its own store names the same version
//! as this crate: `stratakv::object_store::aws::AmazonS3Builder` with the `aws` feature.
#![deny(missing_docs)]
// Every type a public signature mentions can be named from outside: the public surface is what
// the crate root and `io`, `remote` re-export, nothing reachable only through a private module.
#![deny(unnameable_types)]

// The modules depend on each other top to bottom only (tests/layering.rs checks there is no
// cycle): `inspect` (verify and dump, reading files without opening the store) → `store` (the tenant) → `timeline` (handles, reads, flush, compaction, GC, and the
// `Env` they share) → `options` → `remote` (object storage; sees a timeline only through its
// `UploadSource` view) → `wal` → `layer` → `format` (on-disk encodings) → `redo`, `io` →
// `layout` (file names), `lsn`, `id`, `value`, `clock`, `random`, `error`, `hint`, `metrics`
// (the metric names and handles).
mod clock;
mod error;
mod format;
mod hint;
mod id;
pub mod inspect;
pub mod io;
mod layer;
mod layout;
mod lsn;
pub mod metrics;
mod options;
mod pages;
mod random;
mod redo;
pub mod remote;
mod secondary;
mod store;
mod timeline;
mod value;
mod wal;

/// The [`object_store`](https://docs.rs/object_store) crate this one is built on, re-exported so
/// that the stores a caller hands to [`remote::RemoteStorage::new`] come from the same version.
/// Its cloud backends are behind this crate's features `aws`, `azure` and `gcp` (see
/// [Cargo features](crate#cargo-features)).
pub use object_store;

/// The on-disk encoders and decoders, for this crate's own tests (`tests/formats.rs` re-encodes
/// the pinned fixtures, `tests/bitflips.rs` finds record boundaries, `tests/remote.rs` reads a
/// remote index) and for the fuzz targets in `fuzz/`. **Not public API:** hidden from the docs, only there with the `internals` feature,
/// and not covered by semver; anything here may change or go in any release. The formats
/// themselves are documented in the layout tables of `src/format/`.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::format::{
        BlockBuf, Catalog, CatalogEntry, Compression, DataBlock, DataBlockBuilder, DecodedSegment,
        DecodedTimeIndex, Entry, FOOTER_TRAILER_LEN, Footer, IndexEntry, KeyFilter, Manifest,
        Pinned, RemoteIndex, TIME_INDEX_HEADER_LEN, TIME_INDEX_RECORD_OVERHEAD, WAL_HEADER_LEN,
        WalRecord, decode_block, decode_index, decode_time_index, decode_wal_segment, encode_block,
        encode_entries, encode_header, encode_index, encode_wal_header, encode_wal_record,
        key_hash,
    };
}

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use format::{LayerDesc, LayerKind};
pub use id::TimelineId;
pub use lsn::Lsn;
pub use options::{Durability, MAX_KEY_LEN_LIMIT, StoreOptions};
pub use random::{Entropy, SeededEntropy, SystemEntropy};
pub use redo::{RedoRecord, SimpleRedo, WalRedo};
pub use remote::{Mirror, MirrorOptions, MirrorPass, MirrorState, MirrorStatus, MirrorTimeline};
pub use secondary::{
    PrimaryHealth, Promotion, Secondary, SecondaryOptions, SecondaryState, SecondaryStatus,
};
pub use store::{
    Discarded, DiscardedTimeline, EvictReport, KeepReason, KeptLayer, RestorePoint, Restored, Store,
};
pub use timeline::{
    ChangeFeed, ChangeRecord, CompactionReport, Diff, DiffEntry, GcReport, KeyVersion, LayerStatus,
    MergeConflict, MergeReport, ReadTrace, Resolution, Timeline, TimelineWriter,
};
pub use value::{KeyRange, Value};
pub use wal::FsyncPolicy;
