//! Generation claims and fencing by conditional writes (no control plane).
//!
//! Two protocols, chosen once per [`RemoteStorage`] by probing the backend:
//!
//! - **Update** (S3, Azure, GCS, memory): one claim object `generation`. A claim reads it (its
//!   generation and its e-tag/version) and writes the next generation with `PutMode::Update`
//!   matched on what it read (`PutMode::Create` when there is none). Of several claimers that
//!   read the same state exactly one write succeeds; the others read again and try the next
//!   number. A check reads the object.
//! - **Create-only** (the local file system): one object per generation, `generations/{gen}`,
//!   written with `PutMode::Create`; a claimer that finds its number taken tries the next. A
//!   check lists `generations/` after its own generation.
//!
//! Every claim record carries a random nonce, so a claimer whose response was lost after its
//! write happened recognises its own record on the next read instead of claiming twice.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};

use crate::error::{Error, ErrorKind, Result};

use super::Generation;
use super::names::{CLAIM_OBJECT, CLAIMS_DIR, claim_object_of, released_object_of};
use super::retry::is_transient;
use super::storage::{RemoteStorage, seal, store_error, unseal};

/// Claim protocol not known yet.
const MODE_UNKNOWN: u8 = 0;
/// The backend honours `PutMode::Update`.
const MODE_UPDATE: u8 = 1;
/// The backend has `PutMode::Create` but not `Update`.
const MODE_CREATE_ONLY: u8 = 2;

/// The object the capability probe writes to (conditionally, so never in fact).
const PROBE_OBJECT: &str = "generation.probe";

/// One claim record: who took which generation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClaimRecord {
    generation: Generation,
    nonce: u64,
    node: String,
}

impl ClaimRecord {
    /// `{gen}\n{nonce:016x}\n{node}`; sealed with a CRC32 trailer on upload.
    fn encode(&self) -> Bytes {
        Bytes::from(format!(
            "{}\n{:016x}\n{}",
            self.generation, self.nonce, self.node
        ))
    }

    fn decode(location: &Path, bytes: &[u8]) -> Result<ClaimRecord> {
        let bad = |what: &str| {
            Error::new(
                ErrorKind::Corruption,
                format!("claim object {location}: {what}"),
            )
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let mut fields = text.splitn(3, '\n');
        let (Some(generation), Some(nonce), Some(node)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected three lines"));
        };
        let generation = generation
            .parse::<Generation>()
            .map_err(|_| bad("bad generation"))?;
        let nonce = (nonce.len() == 16)
            .then(|| u64::from_str_radix(nonce, 16).ok())
            .flatten()
            .ok_or_else(|| bad("bad nonce"))?;
        Ok(ClaimRecord {
            generation,
            nonce,
            node: node.to_string(),
        })
    }
}

/// A claim record as read, with what a conditional update must match.
struct ReadClaim {
    record: ClaimRecord,
    version: UpdateVersion,
}

/// Counts transient failures within one claim against the retry policy.
struct TransientBudget {
    start: tokio::time::Instant,
    failures: u32,
}

impl TransientBudget {
    fn new() -> TransientBudget {
        TransientBudget {
            start: tokio::time::Instant::now(),
            failures: 0,
        }
    }

    /// Sleeps before the next try, or returns `false` when the policy is used up.
    async fn wait(&mut self, storage: &RemoteStorage) -> bool {
        self.failures += 1;
        let policy = storage.retry;
        let wait = policy.backoff(self.failures);
        if self.failures >= policy.max_attempts
            || self.start.elapsed().saturating_add(wait) > policy.max_elapsed
        {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }
}

impl RemoteStorage {
    /// Claims the next generation for `node_id` (any text naming the node; kept in the claim
    /// for people reading it) and returns it. From now on, any node holding an older
    /// generation is fenced.
    ///
    /// Wait [`claim_wait`](RemoteStorage::claim_wait) after this before reading the index (the
    /// grace period when the previous owner may still be deleting, zero when it cannot be).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Fenced`] if the claim lost more races than
    /// [`with_max_claim_conflicts`](RemoteStorage::with_max_claim_conflicts) allows;
    /// [`ErrorKind::Io`] if the backend supports no conditional write (no fencing is possible
    /// there), ignores conditions, or fails beyond the retry policy;
    /// [`ErrorKind::Corruption`] if a claim object does not parse.
    pub async fn claim_generation(&self, node_id: &str) -> Result<Generation> {
        match self.claim_mode().await? {
            MODE_UPDATE => self.claim_by_update(node_id).await,
            _ => self.claim_by_create(node_id).await,
        }
    }

    /// Succeeds if `generation` still owns the store: no node has claimed a newer one.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Fenced`] if a newer generation has been claimed (the message names it and
    /// its node), or, on backends with conditional update, if the claim object is missing or
    /// names another generation (ownership cannot be shown); [`ErrorKind::Io`] when the store
    /// fails.
    pub async fn check_generation(&self, generation: Generation) -> Result<()> {
        if self.claim_mode().await? == MODE_UPDATE {
            let location = self.location(CLAIM_OBJECT)?;
            return match self.read_claim(&location).await? {
                Some(current) if current.record.generation == generation => Ok(()),
                Some(current) => Err(Error::new(
                    ErrorKind::Fenced,
                    format!(
                        "generation {generation} no longer owns {}: {location} names generation {} of node {:?}",
                        self.prefix, current.record.generation, current.record.node
                    ),
                )),
                None => Err(Error::new(
                    ErrorKind::Fenced,
                    format!(
                        "generation {generation} cannot show it owns {}: no claim object {location}",
                        self.prefix
                    ),
                )),
            };
        }
        let dir = self.location(CLAIMS_DIR)?;
        let offset = self.location(&claim_object_of(generation))?;
        let (store, dir_ref, offset_ref) = (&self.store, &dir, &offset);
        let newer: Vec<object_store::ObjectMeta> = self
            .retry
            .run(move || async move {
                store
                    .list_with_offset(Some(dir_ref), offset_ref)
                    .try_collect()
                    .await
            })
            .await
            .map_err(|e| store_error("list", &dir, e))?;
        let newest = newer
            .iter()
            .filter_map(|m| m.location.filename()?.parse::<Generation>().ok())
            .filter(|g| *g > generation)
            .max();
        match newest {
            None => Ok(()),
            Some(newest) => Err(Error::new(
                ErrorKind::Fenced,
                format!(
                    "generation {generation} no longer owns {}: generation {newest} has been claimed",
                    self.prefix
                ),
            )),
        }
    }

    /// The newest generation claimed so far and the node that claimed it (`None` before the
    /// first claim), without claiming anything: what a reader or a secondary follows.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the store fails or supports no conditional write;
    /// [`ErrorKind::Corruption`] if a claim object does not parse.
    pub async fn current_generation(&self) -> Result<Option<(Generation, String)>> {
        if self.claim_mode().await? == MODE_UPDATE {
            let location = self.location(CLAIM_OBJECT)?;
            return Ok(self
                .read_claim(&location)
                .await?
                .map(|c| (c.record.generation, c.record.node)));
        }
        let Some(newest) = self.newest_claim_created().await? else {
            return Ok(None);
        };
        let location = self.location(&claim_object_of(newest))?;
        Ok(self
            .read_claim(&location)
            .await?
            .map(|c| (c.record.generation, c.record.node)))
    }

    /// Records that `generation` has stopped for good with nothing in flight: every deletion it
    /// validated has finished, and it will write and delete nothing more. Written by
    /// [`Store::close`](crate::Store::close) as its last request; the next claimer reads it
    /// with [`is_released`](RemoteStorage::is_released) and skips the
    /// [`claim_grace`](RemoteStorage::claim_grace) wait.
    ///
    /// Call it only when that is true: a release written while a deletion may still land
    /// removes the protection the grace period gives the next owner.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the store fails (the next claimer then waits the grace).
    pub async fn release_generation(&self, generation: Generation) -> Result<()> {
        self.upload(
            &released_object_of(generation),
            Bytes::from(format!("{generation}\n")),
        )
        .await
    }

    /// Whether `generation` was released by its owner (see
    /// [`release_generation`](RemoteStorage::release_generation)).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the store fails; [`ErrorKind::Corruption`] if the record is
    /// damaged.
    pub async fn is_released(&self, generation: Generation) -> Result<bool> {
        match self.download(&released_object_of(generation)).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// How long a node that just claimed `generation` must wait before it reads the index:
    /// zero when no deletion validated under the generation before it can still land — there
    /// is none (a fresh store), its owner released it ([`is_released`](RemoteStorage::is_released)),
    /// or it is `own_previous`, the generation the caller itself held last and whose process is
    /// known to have exited (the store directory's lock is free); otherwise
    /// [`claim_grace`](RemoteStorage::claim_grace).
    ///
    /// # Errors
    ///
    /// As [`is_released`](RemoteStorage::is_released).
    pub async fn claim_wait(
        &self,
        generation: Generation,
        own_previous: Option<Generation>,
    ) -> Result<std::time::Duration> {
        let previous = match generation.0.checked_sub(1) {
            None | Some(0) => return Ok(std::time::Duration::ZERO),
            Some(p) => Generation(p),
        };
        if own_previous == Some(previous) || self.is_released(previous).await? {
            return Ok(std::time::Duration::ZERO);
        }
        Ok(self.claim_grace)
    }

    /// The backend's claim protocol, probed on first use.
    ///
    /// The probe is an update of `generation.probe` conditional on an e-tag and version no
    /// object has: a backend with conditional update refuses it (precondition failed or not
    /// found), the local file system answers "not implemented". A backend that accepts it
    /// ignores conditions and cannot fence.
    async fn claim_mode(&self) -> Result<u8> {
        let known = self.claim_mode.load(Ordering::Acquire);
        if known != MODE_UNKNOWN {
            return Ok(known);
        }
        let probe = self.location(PROBE_OBJECT)?;
        let (store, loc) = (&self.store, &probe);
        let result = self
            .retry
            .run(move || async move {
                let opts = PutOptions {
                    mode: PutMode::Update(UpdateVersion {
                        e_tag: Some("\"stratakv-fencing-probe\"".to_string()),
                        version: Some("1".to_string()),
                    }),
                    ..PutOptions::default()
                };
                store
                    .put_opts(loc, seal(Bytes::from_static(b"probe")), opts)
                    .await
            })
            .await;
        let mode = match result {
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => MODE_UPDATE,
            Err(object_store::Error::NotImplemented { .. }) => MODE_CREATE_ONLY,
            Ok(_) => {
                let _ = self.delete(PROBE_OBJECT).await;
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "{}: the object store ignored a write condition; it cannot fence generations",
                        self.store
                    ),
                ));
            }
            Err(e) => return Err(store_error("probe conditional update at", &probe, e)),
        };
        self.claim_mode.store(mode, Ordering::Release);
        Ok(mode)
    }

    /// Reads and parses a claim object; `None` if it does not exist.
    async fn read_claim(&self, location: &Path) -> Result<Option<ReadClaim>> {
        let store = &self.store;
        let got = self
            .retry
            .run(move || async move {
                let result = store.get(location).await?;
                let version = UpdateVersion {
                    e_tag: result.meta.e_tag.clone(),
                    version: result.meta.version.clone(),
                };
                Ok((result.bytes().await?, version))
            })
            .await;
        match got {
            Ok((raw, version)) => {
                let bytes = unseal(location, raw)?;
                let record = ClaimRecord::decode(location, &bytes)?;
                Ok(Some(ReadClaim { record, version }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error("read claim", location, e)),
        }
    }

    /// The error for a claim that lost too many races.
    fn too_many_conflicts(&self, node_id: &str) -> Error {
        Error::new(
            ErrorKind::Fenced,
            format!(
                "node {node_id:?} gave up claiming a generation of {} after losing {} races to other claimers",
                self.prefix, self.max_claim_conflicts
            ),
        )
    }

    /// Claims through the single claim object with conditional update.
    async fn claim_by_update(&self, node_id: &str) -> Result<Generation> {
        let location = self.location(CLAIM_OBJECT)?;
        let nonce = self.entropy.next_u64();
        let mut conflicts = 0u32;
        let mut transient = TransientBudget::new();
        // A generation we wrote without learning whether the write happened.
        let mut pending: Option<Generation> = None;
        loop {
            let current = self.read_claim(&location).await?;
            if let (Some(p), Some(c)) = (pending, &current)
                && c.record.generation == p
                && c.record.nonce == nonce
            {
                return Ok(p);
            }
            pending = None;
            let (next, mode) = match current {
                None => (Generation(1), PutMode::Create),
                Some(c) => {
                    let next = c.record.generation.next().ok_or_else(|| {
                        Error::new(
                            ErrorKind::Io,
                            format!("{location}: every generation number is used"),
                        )
                    })?;
                    (next, PutMode::Update(c.version))
                }
            };
            let record = ClaimRecord {
                generation: next,
                nonce,
                node: node_id.to_string(),
            };
            let opts = PutOptions {
                mode,
                ..PutOptions::default()
            };
            match self
                .store
                .put_opts(&location, seal(record.encode()), opts)
                .await
            {
                Ok(_) => return Ok(next),
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::NotFound { .. },
                ) => {
                    conflicts += 1;
                    if conflicts >= self.max_claim_conflicts {
                        return Err(self.too_many_conflicts(node_id));
                    }
                }
                Err(e) if is_transient(&e) => {
                    pending = Some(next);
                    if !transient.wait(self).await {
                        return Err(store_error("claim generation at", &location, e));
                    }
                }
                Err(e) => return Err(store_error("claim generation at", &location, e)),
            }
        }
    }

    /// The newest generation in `generations/` (create-only backends), if any.
    async fn newest_claim_created(&self) -> Result<Option<Generation>> {
        let dir = self.location(CLAIMS_DIR)?;
        Ok(self
            .list_files(&dir)
            .await?
            .iter()
            .filter_map(|name| name.parse::<Generation>().ok())
            .max())
    }

    /// Claims by creating `generations/{gen}` for the lowest free number above the newest.
    async fn claim_by_create(&self, node_id: &str) -> Result<Generation> {
        let dir = self.location(CLAIMS_DIR)?;
        let newest = self.newest_claim_created().await?.unwrap_or(Generation(0));
        let exhausted = || {
            Error::new(
                ErrorKind::Io,
                format!("{dir}: every generation number is used"),
            )
        };
        let mut next = newest.next().ok_or_else(exhausted)?;
        let nonce = self.entropy.next_u64();
        let mut conflicts = 0u32;
        let mut transient = TransientBudget::new();
        let mut pending: Option<Generation> = None;
        loop {
            let location = self.location(&claim_object_of(next))?;
            let record = ClaimRecord {
                generation: next,
                nonce,
                node: node_id.to_string(),
            };
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match self
                .store
                .put_opts(&location, seal(record.encode()), opts)
                .await
            {
                Ok(_) => return Ok(next),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {
                    if pending == Some(next)
                        && let Some(c) = self.read_claim(&location).await?
                        && c.record.nonce == nonce
                    {
                        return Ok(next);
                    }
                    pending = None;
                    conflicts += 1;
                    if conflicts >= self.max_claim_conflicts {
                        return Err(self.too_many_conflicts(node_id));
                    }
                    next = next.next().ok_or_else(exhausted)?;
                }
                Err(object_store::Error::NotImplemented { .. }) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!(
                            "{}: the object store supports neither conditional update nor create; generations cannot be fenced on it",
                            self.store
                        ),
                    ));
                }
                Err(e) if is_transient(&e) => {
                    pending = Some(next);
                    if !transient.wait(self).await {
                        return Err(store_error("claim generation at", &location, e));
                    }
                }
                Err(e) => return Err(store_error("claim generation at", &location, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_record_round_trips_and_rejects_garbage() {
        let loc = Path::from("p/generation");
        let r = ClaimRecord {
            generation: Generation(7),
            nonce: 0xdead_beef,
            node: "node\nwith newline".to_string(),
        };
        assert_eq!(ClaimRecord::decode(&loc, &r.encode()).unwrap(), r);
        for bad in [
            &b""[..],
            b"00000007",
            b"7\n00000000deadbeef\nn",
            b"00000007\nzz\nn",
            b"\xff",
        ] {
            let e = ClaimRecord::decode(&loc, bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corruption, "{bad:?}");
            assert!(e.message().contains("p/generation"));
        }
    }
}
