//! [`RemoteStorage`]: a prefix of an object store with checksums and retries.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload};

use crate::TimelineId;
use crate::error::{Error, ErrorKind, Result};

use super::names::{CATALOG_STEM, INDEX_STEM, parse_stem_generation, timeline_dir};
use super::{Generation, RetryPolicy};

/// Bytes of the CRC32 trailer on every object.
const TRAILER_LEN: usize = 4;

/// How many times [`RemoteStorage::latest_index`] lists again when the newest object vanishes
/// between the listing and the download.
const LATEST_ROUNDS: usize = 3;

/// A store's remote home: a prefix of an object store, with checksums on every object, retries
/// of transient failures and generation claims (see the [module docs](super) for the layout and
/// the fencing protocol).
///
/// Cheap to clone; clones share the detected claim protocol.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use stratakv::remote::RemoteStorage;
///
/// let remote = RemoteStorage::new(
///     Arc::new(object_store::memory::InMemory::new()),
///     object_store::path::Path::from("tenants/acme"),
/// );
/// remote.upload("hello", bytes::Bytes::from_static(b"world")).await?;
/// assert_eq!(remote.download("hello").await?, "world");
/// let generation = remote.claim_generation("node-a").await?;
/// remote.check_generation(generation).await?;
/// # Ok::<(), stratakv::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct RemoteStorage {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) prefix: Path,
    pub(super) retry: RetryPolicy,
    pub(super) claim_grace: Duration,
    pub(super) max_claim_conflicts: u32,
    /// The claim protocol the backend supports, once known (see `claim.rs`).
    pub(super) claim_mode: Arc<AtomicU8>,
    /// Where claim nonces come from.
    pub(super) entropy: Arc<dyn crate::random::Entropy>,
}

impl fmt::Debug for RemoteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStorage")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix.as_ref())
            .field("retry", &self.retry)
            .field("claim_grace", &self.claim_grace)
            .finish_non_exhaustive()
    }
}

impl RemoteStorage {
    /// The default [`claim_grace`](RemoteStorage::claim_grace).
    pub const DEFAULT_CLAIM_GRACE: Duration = Duration::from_secs(2);

    /// The default bound on lost races in one [`claim_generation`](RemoteStorage::claim_generation).
    pub const DEFAULT_MAX_CLAIM_CONFLICTS: u32 = 256;

    /// Storage under `prefix` of `store`, with the default [`RetryPolicy`] and claim grace.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> RemoteStorage {
        RemoteStorage {
            store,
            prefix,
            retry: RetryPolicy::default(),
            claim_grace: Self::DEFAULT_CLAIM_GRACE,
            max_claim_conflicts: Self::DEFAULT_MAX_CLAIM_CONFLICTS,
            claim_mode: Arc::new(AtomicU8::new(0)),
            entropy: Arc::new(crate::random::SystemEntropy),
        }
    }

    /// Storage at a URL: `file:///abs/dir`, `memory://`, and with the crate's features
    /// `s3://bucket/prefix` (`aws`), `az://container/prefix` (or `azure://`, `abfs://`,
    /// `https://account.blob…`; `azure`), `gs://bucket/prefix` (`gcp`). The URL's path becomes
    /// the prefix. `options` are the backend's configuration keys (`aws_endpoint`,
    /// `azure_storage_account_key`, …) as [`object_store::parse_url_opts`] takes them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] if the URL does not parse, names an unknown scheme or a
    /// backend whose feature is off (the message names the feature), or an option is refused
    /// by the backend.
    ///
    /// ```
    /// use stratakv::remote::RemoteStorage;
    /// let remote = RemoteStorage::from_url("memory:///tenants/acme", Vec::new()).unwrap();
    /// assert_eq!(remote.prefix().as_ref(), "tenants/acme");
    /// assert!(RemoteStorage::from_url("no scheme", Vec::new()).is_err());
    /// ```
    pub fn from_url(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RemoteStorage> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::invalid(format!("invalid object store URL {url:?}: {e}")))?;
        let (store, prefix) = object_store::parse_url_opts(&parsed, options).map_err(|e| {
            // object_store names its own feature; say which of ours turns the backend on when
            // it is off (the usual cause, though another crate may turn object_store's on).
            let hint = match ObjectStoreScheme::parse(&parsed) {
                Ok((ObjectStoreScheme::AmazonS3, _)) if !cfg!(feature = "aws") => {
                    " (stratakv's `aws` feature, for S3, is off)"
                }
                Ok((ObjectStoreScheme::MicrosoftAzure, _)) if !cfg!(feature = "azure") => {
                    " (stratakv's `azure` feature, for Azure Blob, is off)"
                }
                Ok((ObjectStoreScheme::GoogleCloudStorage, _)) if !cfg!(feature = "gcp") => {
                    " (stratakv's `gcp` feature, for GCS, is off)"
                }
                _ => "",
            };
            Error::invalid(format!("cannot configure object store {url:?}: {e}{hint}"))
                .with_source(e)
        })?;
        Ok(RemoteStorage::new(Arc::from(store), prefix))
    }

    /// Replaces the retry policy for transient failures.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> RemoteStorage {
        self.retry = retry;
        self
    }

    /// Replaces the claim grace (see [`claim_grace`](RemoteStorage::claim_grace)).
    pub fn with_claim_grace(mut self, grace: Duration) -> RemoteStorage {
        self.claim_grace = grace;
        self
    }

    /// Replaces the number of races one [`claim_generation`](RemoteStorage::claim_generation)
    /// may lose to other claimers before it gives up (each lost race means another node took a
    /// generation; the default, 256, only matters with that many simultaneous claimers).
    pub fn with_max_claim_conflicts(mut self, conflicts: u32) -> RemoteStorage {
        self.max_claim_conflicts = conflicts.max(1);
        self
    }

    /// Draws claim nonces from `entropy` instead of [`SystemEntropy`](crate::SystemEntropy). A
    /// store opened with a remote uses the entropy of its options (see
    /// [`StoreOptions::entropy`](crate::StoreOptions::entropy)).
    pub fn with_entropy(mut self, entropy: Arc<dyn crate::random::Entropy>) -> RemoteStorage {
        self.entropy = entropy;
        self
    }

    /// The object store underneath.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The prefix every object name is under.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The retry policy for transient failures.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// How long a node waits after claiming a generation before it reads the index.
    ///
    /// An old owner may have validated a deletion (with
    /// [`check_generation`](RemoteStorage::check_generation)) just before the claim; waiting this
    /// long lets such a deletion finish before the new owner decides what exists.
    /// [`delete_checked`](RemoteStorage::delete_checked) abandons a deletion that has not
    /// finished within half of it. Default 2 s.
    pub fn claim_grace(&self) -> Duration {
        self.claim_grace
    }

    /// The full object path of a name relative to the prefix.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] if `suffix` is empty or not a valid object path (an empty
    /// segment, `.` or `..`, a control character).
    pub fn location(&self, suffix: &str) -> Result<Path> {
        let full = self.location_or_prefix(suffix)?;
        if full == self.prefix {
            return Err(Error::invalid("empty object name"));
        }
        Ok(full)
    }

    /// Like [`location`](Self::location), but an empty suffix means the prefix itself.
    pub(super) fn location_or_prefix(&self, suffix: &str) -> Result<Path> {
        let rel = Path::parse(suffix)
            .map_err(|e| Error::invalid(format!("invalid object name {suffix:?}: {e}")))?;
        Ok(self.prefix.parts().chain(rel.parts()).collect())
    }

    /// The name of `location` relative to the prefix.
    fn relative<'a>(&self, location: &'a Path) -> &'a str {
        let full = location.as_ref();
        let prefix = self.prefix.as_ref();
        if prefix.is_empty() {
            return full;
        }
        full.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(full)
    }

    /// Uploads `data` as the object `name` (relative to the prefix), replacing any object there,
    /// with a CRC32 trailer appended. Transient failures are retried.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] for a bad name; [`ErrorKind::Io`] (naming the object) when
    /// the store fails permanently or the retry policy is used up.
    pub async fn upload(&self, name: &str, data: Bytes) -> Result<()> {
        let location = self.location(name)?;
        let payload = seal(data);
        let len = payload.content_length() as u64;
        let (store, loc) = (&self.store, &location);
        self.retry
            .run(move || {
                let payload = payload.clone();
                async move { store.put(loc, payload).await }
            })
            .await
            .map_err(|e| store_error("upload", &location, e))?;
        ::metrics::counter!(crate::metrics::REMOTE_UPLOADS).increment(1);
        ::metrics::counter!(crate::metrics::REMOTE_UPLOAD_BYTES).increment(len);
        Ok(())
    }

    /// Downloads the object `name`, checks its CRC32 trailer and returns the bytes before it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] if there is no such object; [`ErrorKind::Corruption`] (naming the
    /// object) if it is shorter than the trailer or fails its checksum; [`ErrorKind::Io`] when
    /// the store fails.
    pub async fn download(&self, name: &str) -> Result<Bytes> {
        let location = self.location(name)?;
        let raw = self.get_raw(&location, "download").await?;
        unseal(&location, raw)
    }

    /// The stored bytes of `location`, trailer included, with retries.
    pub(crate) async fn get_raw(&self, location: &Path, op: &str) -> Result<Bytes> {
        let store = &self.store;
        self.retry
            .run(move || async move { store.get(location).await?.bytes().await })
            .await
            .map_err(|e| store_error(op, location, e))
    }

    /// Deletes the object `name`. Deleting a missing object succeeds on every backend (Azure
    /// reports it as not found, S3 does not).
    ///
    /// This does not check the generation: a store deleting objects it may have lost should use
    /// [`delete_checked`](RemoteStorage::delete_checked).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] for a bad name; [`ErrorKind::Io`] when the store fails.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let location = self.location(name)?;
        let (store, loc) = (&self.store, &location);
        match self
            .retry
            .run(move || async move { store.delete(loc).await })
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error("delete", &location, e)),
        }
    }

    /// Checks that `generation` still owns the store, then deletes `name`, abandoning the
    /// deletion (with an error) if it has not finished within half the
    /// [`claim_grace`](RemoteStorage::claim_grace) of the check (with a zero grace the deletion
    /// is not bounded). An abandoned request may still have reached the store; the bound is on
    /// this side only.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Fenced`] if another node has claimed a newer generation (nothing is
    /// deleted); [`ErrorKind::Io`] if the deletion fails or runs out of time (it may or may not
    /// have happened).
    pub async fn delete_checked(&self, generation: Generation, name: &str) -> Result<()> {
        self.check_generation(generation).await?;
        let budget = self.claim_grace / 2;
        if budget.is_zero() {
            // No grace: nothing to stay within (and no protection against a late deletion).
            return self.delete(name).await;
        }
        match tokio::time::timeout(budget, self.delete(name)).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Io,
                format!(
                    "delete {}: abandoned, not finished within {budget:?} of the generation check",
                    self.location(name)?
                ),
            )),
        }
    }

    /// Every object below `dir` (relative to the prefix; empty for all), recursively, as its
    /// name relative to the prefix and its size without the trailer, sorted by name.
    ///
    /// `dir` is matched by whole path segments: `timelines/a` lists `timelines/a/x`, not
    /// `timelines/ab/x`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] for a bad name; [`ErrorKind::Io`] when the store fails.
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        let location = self.location_or_prefix(dir)?;
        let store = &self.store;
        let loc = &location;
        let metas: Vec<object_store::ObjectMeta> = self
            .retry
            .run(move || async move {
                let prefix = (!loc.as_ref().is_empty()).then_some(loc);
                store.list(prefix).try_collect().await
            })
            .await
            .map_err(|e| store_error("list", &location, e))?;
        let mut out: Vec<(String, u64)> = metas
            .iter()
            .map(|m| {
                (
                    self.relative(&m.location).to_string(),
                    m.size.saturating_sub(TRAILER_LEN as u64),
                )
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The objects directly in `dir` (not below it), as file names.
    pub(super) async fn list_files(&self, dir: &Path) -> Result<Vec<String>> {
        let store = &self.store;
        let result = self
            .retry
            .run(move || async move {
                let prefix = (!dir.as_ref().is_empty()).then_some(dir);
                store.list_with_delimiter(prefix).await
            })
            .await
            .map_err(|e| store_error("list", dir, e))?;
        Ok(result
            .objects
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }

    /// The newest index of `timeline` whose generation is at most `max_generation`, with its
    /// generation, found by listing the timeline's folder; `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corruption`] if that index fails its checksum (an older one is not tried);
    /// [`ErrorKind::Io`] when the store fails.
    pub async fn latest_index(
        &self,
        timeline: TimelineId,
        max_generation: Generation,
    ) -> Result<Option<(Generation, Bytes)>> {
        self.latest_of(&timeline_dir(timeline), INDEX_STEM, max_generation)
            .await
    }

    /// The newest catalog whose generation is at most `max_generation`, with its generation;
    /// `None` if there is none.
    ///
    /// # Errors
    ///
    /// As for [`latest_index`](RemoteStorage::latest_index).
    pub async fn latest_catalog(
        &self,
        max_generation: Generation,
    ) -> Result<Option<(Generation, Bytes)>> {
        self.latest_of("", CATALOG_STEM, max_generation).await
    }

    /// The newest `{dir}/{stem}-{gen}` with `gen <= max`, downloaded.
    async fn latest_of(
        &self,
        dir: &str,
        stem: &str,
        max: Generation,
    ) -> Result<Option<(Generation, Bytes)>> {
        let dir_path = self.location_or_prefix(dir)?;
        let mut last_err = None;
        for _ in 0..LATEST_ROUNDS {
            let newest = self
                .list_files(&dir_path)
                .await?
                .iter()
                .filter_map(|name| parse_stem_generation(name, stem))
                .filter(|g| *g <= max)
                .max();
            let Some(generation) = newest else {
                return Ok(None);
            };
            let name = if dir.is_empty() {
                format!("{stem}-{generation}")
            } else {
                format!("{dir}/{stem}-{generation}")
            };
            match self.download(&name).await {
                Ok(bytes) => return Ok(Some((generation, bytes))),
                // Deleted between the listing and the download: list again.
                Err(e) if e.kind() == ErrorKind::NotFound => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::new(ErrorKind::NotFound, "no object")))
    }
}

/// `data` followed by its CRC32, little-endian, without copying `data`.
pub(super) fn seal(data: Bytes) -> PutPayload {
    let crc = crc32fast::hash(&data);
    PutPayload::from_iter([data, Bytes::copy_from_slice(&crc.to_le_bytes())])
}

/// The bytes of a sealed object without its trailer, if the trailer matches.
pub(super) fn unseal(location: &Path, mut raw: Bytes) -> Result<Bytes> {
    if raw.len() < TRAILER_LEN {
        return Err(Error::new(
            ErrorKind::Corruption,
            format!(
                "object {location}: {} bytes, shorter than its {TRAILER_LEN}-byte checksum",
                raw.len()
            ),
        ));
    }
    let trailer = raw.split_off(raw.len() - TRAILER_LEN);
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = crc32fast::hash(&raw);
    if stored != computed {
        return Err(Error::new(
            ErrorKind::Corruption,
            format!(
                "object {location}: checksum mismatch (stored {stored:08x}, computed {computed:08x} over {} bytes)",
                raw.len()
            ),
        ));
    }
    Ok(raw)
}

/// An object-store error as the crate's error, naming the operation and the object.
pub(super) fn store_error(op: &str, location: &Path, e: object_store::Error) -> Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        object_store::Error::InvalidPath { .. } => ErrorKind::InvalidArgument,
        _ => ErrorKind::Io,
    };
    Error::new(kind, format!("{op} {location}: {e}")).with_source(e)
}
