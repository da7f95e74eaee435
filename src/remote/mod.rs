//! Object storage: the remote copy of a store, generations and fencing.
//!
//! Every remote byte goes through one seam, `Arc<dyn object_store::ObjectStore>` (S3, Azure
//! Blob, GCS, the local file system, memory). [`RemoteStorage`] puts a prefix, checksums,
//! retries and generation claims on top of it; [`FaultyObjectStore`] is a wrapper implementing
//! the same trait that injects errors, latency and lost responses for tests.
//!
//! The local file system and memory backends are always there. S3 needs the crate's `aws`
//! feature, Azure Blob its `azure` feature and GCS its `gcp` feature (see
//! [Cargo features](crate#cargo-features)); without them [`RemoteStorage::from_url`] refuses
//! those URLs and says which feature to turn on.
//!
//! # Object layout
//!
//! All names are below the storage's prefix (`tenants/acme` say). `{gen}` is a [`Generation`]
//! as 8 lowercase hexadecimal digits, so names of one kind sort by generation.
//!
//! | object | name | content |
//! |---|---|---|
//! | layer file | `{prefix}/timelines/{timeline_id}/{layer_file_name}-{gen}` | the layer file's bytes |
//! | timeline index | `{prefix}/timelines/{timeline_id}/index-{gen}` | the crate's manifest encoding (opaque here) |
//! | WAL chunk | `{prefix}/wal/{seq:016x}-{gen}` | commit records, as a local WAL segment (see the WAL section below) |
//! | WAL start | `{prefix}/walstart/{gen}/{seq:016x}` | empty: `{gen}`'s chunks start at `{seq}` |
//! | catalog | `{prefix}/catalog-{gen}` | the crate's catalog encoding (opaque here) |
//! | generation claim | `{prefix}/generation` | `{gen}\n{nonce:016x}\n{node_id}` |
//! | claim, create-only backends | `{prefix}/generations/{gen}` | `{gen}\n{nonce:016x}\n{node_id}` |
//! | release record | `{prefix}/released/{gen}` | `{gen}\n`: the owner of `{gen}` closed cleanly, nothing of it is in flight |
//! | heartbeat | `{prefix}/heartbeats/{gen}` | the owner's liveness and how far each timeline is safe (see [`Heartbeat`]) |
//! | capability probe | `{prefix}/generation.probe` | never stored: a conditional update that must fail (deleted again if a backend that ignores conditions took it) |
//!
//! Every object, whatever its kind, ends with a 4-byte trailer: the CRC32 (little-endian) of the
//! bytes before it. [`RemoteStorage::upload`] appends it and [`RemoteStorage::download`] checks
//! and strips it, so a torn or altered object is reported as [`ErrorKind::Corruption`] naming the
//! object. Sizes reported by [`RemoteStorage::list`] exclude the trailer.
//!
//! The helpers [`layer_object`], [`index_object`] and [`catalog_object`] build these names (as
//! suffixes relative to the prefix) and refuse names that could be mistaken for another kind.
//!
//! # Generations and fencing
//!
//! There is no control plane. A node that wants to own the store calls
//! [`RemoteStorage::claim_generation`], which takes the next generation number with a
//! conditional write. Every object the node writes carries its generation in its name, so two
//! owners never overwrite each other's objects; a node attaching reads the newest index at or
//! below its own generation ([`RemoteStorage::latest_index`]). Before every index upload and
//! every deletion the owner calls [`RemoteStorage::check_generation`] (or uses
//! [`RemoteStorage::delete_checked`]), which fails with [`ErrorKind::Fenced`] once another node
//! has claimed a newer generation; a fenced node stops writing and deleting.
//!
//! A check and the write after it are two requests, so an old owner may still complete one
//! write or deletion it validated just before losing its claim. Writes are harmless (they carry
//! the old generation and are never read by the new owner once it has written its own index).
//! Deletions are what the grace period is for: after claiming, a new owner waits
//! [`RemoteStorage::claim_grace`] (default 2 s) before it reads the index, and
//! [`RemoteStorage::delete_checked`] gives up on a deletion that has not finished within half of
//! that grace after its check, so no deletion validated under the old generation lands after the
//! new owner has read what it needs.
//!
//! The wait is skipped where no such deletion can exist ([`RemoteStorage::claim_wait`]): for the
//! first generation of a store; when the previous owner released its generation
//! ([`RemoteStorage::release_generation`], written by a clean `Store::close` as its last request,
//! after its uploader stopped, and only if none of its checked deletions failed or was
//! abandoned); and when the previous generation is the one the opening directory held itself
//! (its process has exited: the directory lock is free). So only a takeover from a node that
//! crashed, vanished or is still running waits.
//!
//! What fencing guarantees on each backend:
//!
//! | backend | claim by | guarantee |
//! |---|---|---|
//! | S3 (`If-Match` / `If-None-Match`), Azure Blob, `InMemory` | `PutMode::Update` on `{prefix}/generation` (`PutMode::Create` for the first claim) | each generation is taken by exactly one node; a superseded node is fenced at its next check |
//! | GCS | the same, matched on the object's `version` (its generation) rather than its e-tag | as above |
//! | local file system | no `Update` there: `PutMode::Create` (an atomic hard link) of `{prefix}/generations/{gen}` | as above, on one machine or a file system with atomic hard links (not every network file system); a check lists `generations/` |
//! | `http` (WebDAV) and stores with neither | — | no fencing: [`RemoteStorage::claim_generation`] fails rather than pretend |
//!
//! [`RemoteStorage`] finds out which protocol the backend has on its first claim (or check) and
//! remembers it. On every backend the guarantee assumes that a validated deletion completes
//! within the grace period; [`RemoteStorage::delete_checked`] enforces that bound on its side.
//!
//! # Reopening a directory
//!
//! A node that opens a non-empty store directory with a remote cannot trust its local state
//! blindly: another node may have taken the store over while this one was away, and written.
//! So every claim is recorded in the directory (its `OWNER` file) before anything is uploaded
//! under it, and at open, after claiming, the rule is:
//!
//! - If no generation newer than the recorded one has written an index or a catalog, this
//!   directory is still the newest owner's: it opens as it is, and uploads what it holds that
//!   the remote lacks (a restart, as before).
//! - Otherwise **the remote wins**. The local state is discarded — its layers (a newer owner may
//!   have written other layers under the same file names), manifests, time indexes and
//!   write-ahead log — and the store is attached from the newest remote index, as on an empty
//!   directory. What the local state held above what the remote has (the history of a fenced
//!   owner that was never made remote-consistent) is reported by
//!   [`Store::discarded_on_open`](crate::Store::discarded_on_open), never uploaded over the newer
//!   owner's. A `DISCARDING` marker makes this step crash-safe: an open that finds it finishes
//!   the attach.
//! - A directory with no `OWNER` record never owned this remote (or predates the record): any
//!   remote state is newer than it.
//!
//! # The WAL in object storage
//!
//! With a remote and the local WAL on, every commit is also shipped to object storage in
//! chunks, and a commit at [`Durability::Remote`](crate::Durability::Remote) is acknowledged
//! only once its chunk is there and the generation was checked after the upload. Every open
//! replays the valid chunks above the indexes. The protocol, and why no acknowledged commit is
//! lost in a takeover, is in the `wal_ship` module's source documentation; in short: check
//! after upload, list after claim.
//!
//! # Retries
//!
//! Transient failures (network errors, server errors — the `Generic` kind of
//! [`object_store::Error`]) are retried with exponential backoff, bounded both in attempts and
//! in total time by a [`RetryPolicy`]. Permanent ones (not found, precondition failed, already
//! exists, not implemented, permission denied, invalid path) are reported at once. Uploads
//! overwrite with identical bytes and deletions of a missing object succeed, so retrying a
//! request whose response was lost is safe. The HTTP backends also retry inside `object_store`;
//! these retries come on top.
//!
//! [`ErrorKind::Corruption`]: crate::ErrorKind::Corruption
//! [`ErrorKind::Fenced`]: crate::ErrorKind::Fenced

mod claim;
mod faulty;
mod generation;
mod heartbeat;
mod mirror;
mod names;
mod retry;
mod storage;
mod sync;
mod wal_ship;

pub use faulty::{FaultConfig, FaultCounts, FaultyObjectStore};
pub use generation::Generation;
pub use heartbeat::Heartbeat;
pub use mirror::{Mirror, MirrorOptions, MirrorPass, MirrorState, MirrorStatus, MirrorTimeline};
pub use names::{catalog_object, index_object, layer_object};
pub use retry::RetryPolicy;
pub use storage::RemoteStorage;
pub(crate) use sync::{Applied, RemoteCtx, UploadSource, fenced_error};
pub(crate) use wal_ship::{Follow, ShipOptions};

#[cfg(test)]
mod tests;
