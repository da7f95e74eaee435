//! The directory layout of a store: the names of its files and folders, in one leaf module that
//! the store, its timelines and the write-ahead log all name them from.
//!
//! | path | holds |
//! |---|---|
//! | `CATALOG` | the timelines and their names; its presence marks the directory as a store |
//! | `LOCK` | locked while a process has the store open |
//! | `OWNER` | with a remote: the generation this directory last claimed (see [`remote`](crate::remote), "Reopening a directory") |
//! | `READ_ONLY` | marks the directory as a read-only store's cache, cleared at every open |
//! | `DISCARDING` | present only while an open replaces stale local state with the remote's newer state |
//! | `wal/<seq>.seg` | the write-ahead log, shared by every timeline |
//! | `timelines/<id>/manifest` | the timeline's manifest: its layers and watermarks |
//! | `timelines/<id>/timeindex` | the timeline's `lsn ↔ commit time` index |
//! | `timelines/<id>/*.layer` | the timeline's layer files |
//!
//! Anything in `timelines/` that the catalog or a manifest does not name is left over from a
//! crash and is removed at open.

/// The catalog: the timelines and their names.
pub(crate) const CATALOG_FILE: &str = "CATALOG";
/// Locked while a process has the store open.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// The folder of the timelines, one folder each, named by id.
pub(crate) const TIMELINES_DIR: &str = "timelines";
/// A timeline's manifest, in its folder.
pub(crate) const MANIFEST_FILE: &str = "manifest";
/// A timeline's `lsn ↔ commit time` index, in its folder.
pub(crate) const TIME_INDEX_FILE: &str = "timeindex";
/// The write-ahead log's folder.
pub(crate) const WAL_DIR: &str = "wal";
/// The generation this directory last claimed in its remote (see `format::owner`).
pub(crate) const OWNER_FILE: &str = "OWNER";
/// Marks a directory as the cache of a read-only store (cleared at every open).
pub(crate) const READ_ONLY_FILE: &str = "READ_ONLY";
/// Present while an open replaces stale local state with the remote's newer state.
pub(crate) const DISCARD_FILE: &str = "DISCARDING";
