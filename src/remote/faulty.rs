//! [`FaultyObjectStore`]: an object store that fails on purpose, for tests.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use parking_lot::Mutex;

/// What a [`FaultyObjectStore`] injects, and the seed of its random choices.
///
/// Probabilities are per call, clamped to `0.0..=1.0` (a NaN counts as 0). Every call may be
/// delayed (`latency`, a uniform wait up to `max_latency`) and may then fail before reaching the
/// inner store (`error_before`). A write (put, delete, copy, rename) that succeeded in the inner
/// store may still report an error (`drop_after_write`), as when a response is lost. Injected
/// errors are `object_store::Error::Generic`, the kind a network failure has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultConfig {
    /// Seeds the generator of every random choice; one seed, one sequence of choices (for the
    /// same sequence of calls).
    pub seed: u64,
    /// Chance that a call fails before it reaches the inner store.
    pub error_before: f64,
    /// Chance that a call is delayed.
    pub latency: f64,
    /// The longest injected delay.
    pub max_latency: Duration,
    /// Chance that a write which happened reports an error anyway.
    pub drop_after_write: f64,
}

impl FaultConfig {
    /// No faults yet, with `seed`.
    pub fn new(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            error_before: 0.0,
            latency: 0.0,
            max_latency: Duration::ZERO,
            drop_after_write: 0.0,
        }
    }

    /// Fails calls before they reach the inner store with chance `p`.
    pub fn with_errors(mut self, p: f64) -> FaultConfig {
        self.error_before = p;
        self
    }

    /// Delays calls with chance `p`, by up to `max`.
    pub fn with_latency(mut self, p: f64, max: Duration) -> FaultConfig {
        self.latency = p;
        self.max_latency = max;
        self
    }

    /// Reports an error after a write happened with chance `p`.
    pub fn with_dropped_responses(mut self, p: f64) -> FaultConfig {
        self.drop_after_write = p;
        self
    }
}

/// How many calls a [`FaultyObjectStore`] has seen and what it injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Calls made (a deletion stream counts one call per object).
    pub calls: u64,
    /// Calls failed before they reached the inner store.
    pub errors_before: u64,
    /// Calls delayed.
    pub delays: u64,
    /// Writes that happened but reported an error.
    pub dropped_responses: u64,
}

/// An [`ObjectStore`] around another that injects errors, latency and lost responses, as a
/// [`FaultConfig`] says, and counts them.
///
/// Multipart uploads get faults only when they start; reads and listings never get
/// `drop_after_write`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use object_store::{ObjectStoreExt, memory::InMemory, path::Path};
/// use stratakv::remote::{FaultConfig, FaultyObjectStore};
///
/// let inner = Arc::new(InMemory::new());
/// let faulty = FaultyObjectStore::new(inner.clone(), FaultConfig::new(7).with_dropped_responses(1.0));
/// assert!(faulty.put(&Path::from("a"), "x".into()).await.is_err()); // reported lost…
/// assert!(inner.head(&Path::from("a")).await.is_ok()); // …but it happened
/// assert_eq!(faulty.counts().dropped_responses, 1);
/// # });
/// ```
#[derive(Debug)]
pub struct FaultyObjectStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<FaultState>,
}

/// The shared, mutable part: the generator and the counters.
#[derive(Debug)]
struct FaultState {
    config: FaultConfig,
    rng: Mutex<u64>,
    enabled: AtomicBool,
    calls: AtomicU64,
    errors_before: AtomicU64,
    delays: AtomicU64,
    dropped_responses: AtomicU64,
}

impl FaultyObjectStore {
    /// Wraps `inner`, injecting faults as `config` says.
    pub fn new(inner: Arc<dyn ObjectStore>, config: FaultConfig) -> FaultyObjectStore {
        FaultyObjectStore {
            inner,
            state: Arc::new(FaultState {
                config,
                rng: Mutex::new(config.seed),
                enabled: AtomicBool::new(true),
                calls: AtomicU64::new(0),
                errors_before: AtomicU64::new(0),
                delays: AtomicU64::new(0),
                dropped_responses: AtomicU64::new(0),
            }),
        }
    }

    /// The store underneath, reachable without faults.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Turns injection on or off (calls are still counted); on at first.
    pub fn set_enabled(&self, enabled: bool) {
        self.state.enabled.store(enabled, Ordering::Relaxed);
    }

    /// What has been injected so far.
    pub fn counts(&self) -> FaultCounts {
        let s = &self.state;
        FaultCounts {
            calls: s.calls.load(Ordering::Relaxed),
            errors_before: s.errors_before.load(Ordering::Relaxed),
            delays: s.delays.load(Ordering::Relaxed),
            dropped_responses: s.dropped_responses.load(Ordering::Relaxed),
        }
    }
}

impl FaultState {
    /// The next number of a SplitMix64 sequence.
    fn next_u64(&self) -> u64 {
        let mut state = self.rng.lock();
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform draw in `[0, 1)`.
    fn unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with chance `p` while injection is on.
    fn chance(&self, p: f64) -> bool {
        if !self.enabled.load(Ordering::Relaxed) || p.is_nan() || p <= 0.0 {
            return false;
        }
        p >= 1.0 || self.unit() < p
    }

    /// Counts a call, maybe delays it, maybe fails it.
    async fn before(&self, op: &str, location: &Path) -> object_store::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.chance(self.config.latency) {
            self.delays.fetch_add(1, Ordering::Relaxed);
            let wait = self.config.max_latency.mul_f64(self.unit());
            tokio::time::sleep(wait).await;
        }
        if self.chance(self.config.error_before) {
            self.errors_before.fetch_add(1, Ordering::Relaxed);
            return Err(injected(format!(
                "{op} {location} failed before it was sent"
            )));
        }
        Ok(())
    }

    /// After a write happened: maybe report it lost.
    fn after_write<T>(
        &self,
        op: &str,
        location: &Path,
        result: object_store::Result<T>,
    ) -> object_store::Result<T> {
        if result.is_ok() && self.chance(self.config.drop_after_write) {
            self.dropped_responses.fetch_add(1, Ordering::Relaxed);
            return Err(injected(format!(
                "the response to {op} {location} was lost after the write happened"
            )));
        }
        result
    }
}

/// An injected failure, shaped like a network error.
fn injected(what: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyObjectStore",
        source: format!("injected fault: {what}").into(),
    }
}

impl fmt::Display for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyObjectStore({})", self.inner)
    }
}

/// A listing stream that first passes `before` (which may fail it).
fn faulty_stream(
    state: Arc<FaultState>,
    op: &'static str,
    location: Path,
    inner: BoxStream<'static, object_store::Result<ObjectMeta>>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    stream::once(async move {
        match state.before(op, &location).await {
            Ok(()) => inner,
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        }
    })
    .flatten()
    .boxed()
}

#[async_trait]
impl ObjectStore for FaultyObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.state.before("put", location).await?;
        let result = self.inner.put_opts(location, payload, opts).await;
        self.state.after_write("put", location, result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.state.before("put_multipart", location).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.state.before("get", location).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.state.before("get_ranges", location).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = Arc::clone(&self.inner);
        let state = Arc::clone(&self.state);
        locations
            .then(move |location| {
                let inner = Arc::clone(&inner);
                let state = Arc::clone(&state);
                async move {
                    let location = location?;
                    state.before("delete", &location).await?;
                    let result = inner.delete(&location).await;
                    state.after_write("delete", &location, result)?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let location = prefix.cloned().unwrap_or_default();
        faulty_stream(
            Arc::clone(&self.state),
            "list",
            location,
            self.inner.list(prefix),
        )
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let location = prefix.cloned().unwrap_or_default();
        faulty_stream(
            Arc::clone(&self.state),
            "list",
            location,
            self.inner.list_with_offset(prefix, offset),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let location = prefix.cloned().unwrap_or_default();
        self.state.before("list", &location).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.state.before("copy to", to).await?;
        let result = self.inner.copy_opts(from, to, options).await;
        self.state.after_write("copy to", to, result)
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.state.before("rename to", to).await?;
        let result = self.inner.rename_opts(from, to, options).await;
        self.state.after_write("rename to", to, result)
    }
}
