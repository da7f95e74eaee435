//! Options for opening a store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::format::Compression;
use crate::io::{FileSystem, StdFs};
use crate::random::{Entropy, SystemEntropy};
use crate::redo::{SimpleRedo, WalRedo};
use crate::remote::RemoteStorage;
use crate::wal::FsyncPolicy;

/// How to open a [`Store`](crate::Store): the directory, the redo hook, and tuning.
///
/// Every setting has a default suited to a storage daemon; change only what you measured.
///
/// ```
/// use stratakv::StoreOptions;
/// let opts = StoreOptions::new("./data").freeze_bytes(8 << 20).max_key_len(128);
/// assert_eq!(opts.path(), std::path::Path::new("./data"));
/// ```
#[derive(Clone)]
pub struct StoreOptions {
    pub(crate) path: PathBuf,
    pub(crate) redo: Arc<dyn WalRedo>,
    pub(crate) max_key_len: usize,
    pub(crate) max_value_len: usize,
    pub(crate) freeze_bytes: usize,
    pub(crate) freeze_lsn_distance: u64,
    pub(crate) max_frozen_layers: usize,
    pub(crate) block_size: usize,
    pub(crate) compression: Compression,
    pub(crate) compress_l0: bool,
    pub(crate) block_cache_bytes: usize,
    pub(crate) map_layer_files: bool,
    pub(crate) wait_lsn_timeout: Duration,
    pub(crate) slow_read_threshold: Option<Duration>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) entropy: Arc<dyn Entropy>,
    pub(crate) pitr_interval: Option<Duration>,
    pub(crate) gc_horizon: Option<u64>,
    pub(crate) compaction_threshold: usize,
    pub(crate) target_layer_size: u64,
    pub(crate) image_threshold_bytes: u64,
    pub(crate) image_threshold_layers: usize,
    pub(crate) gc_compaction_ratio: f64,
    pub(crate) background_period: Option<Duration>,
    pub(crate) wal: bool,
    pub(crate) fsync_policy: FsyncPolicy,
    pub(crate) wal_segment_size: u64,
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) remote: Option<RemoteStorage>,
    pub(crate) node_id: String,
    pub(crate) local_disk_budget: Option<u64>,
    pub(crate) read_only: bool,
    pub(crate) durability: Durability,
    pub(crate) remote_wal_interval: Duration,
    pub(crate) remote_wal_chunk_bytes: usize,
    pub(crate) heartbeat_interval: Option<Duration>,
}

/// When a commit ([`TimelineWriter::finish_write`](crate::TimelineWriter::finish_write)) is
/// acknowledged: the store's default is set by [`StoreOptions::durability`], and a commit can
/// ask for another level with
/// [`finish_write_with`](crate::TimelineWriter::finish_write_with).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Durability {
    /// Visible to readers at once; in the local WAL's buffer, written with the next commit that
    /// waits for more (a process crash can lose it).
    Memory,
    /// In the local WAL under its [`FsyncPolicy`] (the default): survives a process crash, and
    /// with [`FsyncPolicy::EveryCommit`] a power loss, but not the loss of the node's disk.
    Local,
    /// As `Local`, and in object storage: the WAL chunk holding the commit was uploaded and
    /// the node's generation checked after the upload. Survives the loss of the node: any node
    /// that attaches afterwards reads it. On a timeline object storage does not hold whole yet
    /// (just created, or with layers a restarted node found above its index) it also waits for
    /// the upload that puts it there. Needs a remote and the local WAL. The call blocks
    /// until then (a thread of its own; from async code, commit at `Local` and await
    /// [`Timeline::wait_remote_durable`](crate::Timeline::wait_remote_durable)).
    Remote,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("path", &self.path)
            .field("max_key_len", &self.max_key_len)
            .field("max_value_len", &self.max_value_len)
            .field("freeze_bytes", &self.freeze_bytes)
            .field("freeze_lsn_distance", &self.freeze_lsn_distance)
            .field("max_frozen_layers", &self.max_frozen_layers)
            .field("block_size", &self.block_size)
            .field("compression", &self.compression)
            .field("compress_l0", &self.compress_l0)
            .field("block_cache_bytes", &self.block_cache_bytes)
            .field("map_layer_files", &self.map_layer_files)
            .field("wait_lsn_timeout", &self.wait_lsn_timeout)
            .field("slow_read_threshold", &self.slow_read_threshold)
            .field("pitr_interval", &self.pitr_interval)
            .field("gc_horizon", &self.gc_horizon)
            .field("compaction_threshold", &self.compaction_threshold)
            .field("target_layer_size", &self.target_layer_size)
            .field("image_threshold_bytes", &self.image_threshold_bytes)
            .field("image_threshold_layers", &self.image_threshold_layers)
            .field("gc_compaction_ratio", &self.gc_compaction_ratio)
            .field("background_period", &self.background_period)
            .field("wal", &self.wal)
            .field("fsync_policy", &self.fsync_policy)
            .field("wal_segment_size", &self.wal_segment_size)
            .field("remote", &self.remote)
            .field("node_id", &self.node_id)
            .field("local_disk_budget", &self.local_disk_budget)
            .field("read_only", &self.read_only)
            .field("durability", &self.durability)
            .field("remote_wal_interval", &self.remote_wal_interval)
            .field("remote_wal_chunk_bytes", &self.remote_wal_chunk_bytes)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .finish_non_exhaustive()
    }
}

/// The largest key any store accepts: keys and key-range bounds (a key and one more byte) are
/// stored with a 16-bit length.
pub const MAX_KEY_LEN_LIMIT: usize = u16::MAX as usize - 1;

impl StoreOptions {
    /// Options for a store in the directory `path`, with every default.
    pub fn new(path: impl AsRef<Path>) -> StoreOptions {
        StoreOptions {
            path: path.as_ref().to_path_buf(),
            redo: Arc::new(SimpleRedo),
            max_key_len: 1024,
            max_value_len: 16 << 20,
            freeze_bytes: 64 << 20,
            freeze_lsn_distance: 1 << 30,
            max_frozen_layers: 4,
            block_size: 4 << 10,
            compression: Compression::Zstd(-1),
            compress_l0: false,
            block_cache_bytes: 256 << 20,
            map_layer_files: false,
            wait_lsn_timeout: Duration::from_secs(10),
            slow_read_threshold: None,
            clock: Arc::new(SystemClock),
            entropy: Arc::new(SystemEntropy),
            pitr_interval: Some(Duration::from_secs(7 * 24 * 3600)),
            gc_horizon: None,
            compaction_threshold: 4,
            target_layer_size: 64 << 20,
            image_threshold_bytes: 128 << 20,
            image_threshold_layers: 8,
            gc_compaction_ratio: 0.15,
            background_period: Some(Duration::from_secs(10)),
            wal: true,
            fsync_policy: FsyncPolicy::EveryCommit,
            wal_segment_size: 64 << 20,
            fs: Arc::new(StdFs),
            remote: None,
            node_id: format!("pid-{}", std::process::id()),
            local_disk_budget: None,
            read_only: false,
            durability: Durability::Local,
            remote_wal_interval: Duration::from_millis(100),
            remote_wal_chunk_bytes: 4 << 20,
            heartbeat_interval: Some(Duration::from_secs(1)),
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The WAL-redo hook that turns delta records into values. Default: [`SimpleRedo`].
    pub fn redo(mut self, redo: Arc<dyn WalRedo>) -> Self {
        self.redo = redo;
        self
    }

    /// The longest key accepted, in bytes (default 1024, at most 65535).
    pub fn max_key_len(mut self, n: usize) -> Self {
        self.max_key_len = n;
        self
    }

    /// The longest value or delta record accepted, in bytes (default 16 MiB).
    pub fn max_value_len(mut self, n: usize) -> Self {
        self.max_value_len = n;
        self
    }

    /// The open in-memory layer is frozen and flushed once it holds this many bytes of memory
    /// (default 64 MiB): its keys and values, a 32-byte entry per version, a 64-byte entry and
    /// an index slot or two per key. The open layer and up to
    /// [`max_frozen_layers`](Self::max_frozen_layers) frozen ones waiting for flush are in
    /// memory at once.
    pub fn freeze_bytes(mut self, n: usize) -> Self {
        self.freeze_bytes = n;
        self
    }

    /// The open in-memory layer is frozen once it spans this many LSNs (default 2^30).
    pub fn freeze_lsn_distance(mut self, n: u64) -> Self {
        self.freeze_lsn_distance = n;
        self
    }

    /// Frozen layers waiting for flush beyond which the writer waits (default 4).
    pub fn max_frozen_layers(mut self, n: usize) -> Self {
        self.max_frozen_layers = n;
        self
    }

    /// Target size of a data block before compression (default 4 KiB). Smaller blocks make a
    /// point read that misses the block cache cheaper (less to check and decompress) and let the
    /// cache hold more distinct blocks; larger ones compress better and suit scans.
    pub fn block_size(mut self, n: usize) -> Self {
        self.block_size = n;
        self
    }

    /// zstd level for new blocks, or `None` to store them raw (default −1). Negative levels are
    /// zstd's fast modes: on 4 KiB data blocks, −1 compressed exactly as well as level 1 in our
    /// measurements and ran 1.7–1.9× faster; higher levels save a little more space for far more
    /// flush and compaction CPU.
    pub fn zstd_level(mut self, level: Option<i32>) -> Self {
        self.compression = level.map_or(Compression::None, Compression::Zstd);
        self
    }

    /// Whether flushes compress the L0 layers they write (default `false`: only compaction's
    /// L1 layers and image layers are compressed). An L0 layer lives until the next compaction
    /// merges it, which reads every block of it once; compressing it and decompressing it
    /// again cost about 30% of ingest throughput on 100-byte values in our benchmarks
    /// (`ingest/100B`), for a file that is soon replaced by a compressed one. L0 layers are
    /// uploaded as written, so with a remote and compressible values, `true` uploads fewer
    /// bytes.
    pub fn compress_l0(mut self, on: bool) -> Self {
        self.compress_l0 = on;
        self
    }

    /// Bytes of decoded blocks kept in memory (default 256 MiB).
    pub fn block_cache_bytes(mut self, n: usize) -> Self {
        self.block_cache_bytes = n;
        self
    }

    /// Whether reads that miss the block cache take their block from a memory mapping of the
    /// layer file instead of reading it with `pread` (default `false`: read).
    ///
    /// Mapped, such a read costs less when the file is in the OS page cache (on this project's
    /// 2-core VM, `get/latest/disk_cold` 1.28 µs mapped against 1.69 µs read, and
    /// `disk_evicting` 1.23 against 1.58 µs), at two prices: the file pages reads touch count
    /// in the process's resident memory (and in the OOM killer's choice) for as long as the
    /// page cache keeps them, and an I/O error of the device under a mapped page is a `SIGBUS`
    /// that ends the process rather than an error naming the file. A checksum failure is an
    /// error either way.
    pub fn map_layer_files(mut self, on: bool) -> Self {
        self.map_layer_files = on;
        self
    }

    /// How long a read above `last_record_lsn` waits for it (default 10 s).
    pub fn wait_lsn_timeout(mut self, t: Duration) -> Self {
        self.wait_lsn_timeout = t;
        self
    }

    /// A [`get`](crate::Timeline::get) (in any of its forms) that takes longer than `t`, waiting
    /// for its LSN included, is logged as a `tracing` warning with its key, LSN, timeline, the
    /// layers and ancestors it visited and the time it took, and counted in
    /// `stratakv_slow_reads_total` (see [`metrics`](crate::metrics)). `None`, the default, times
    /// no read for this: a get then reads the clock only for the sampled latency histogram.
    /// With a threshold every get is timed, and every get goes into that histogram.
    pub fn slow_read_threshold(mut self, t: Option<Duration>) -> Self {
        self.slow_read_threshold = t;
        self
    }

    /// The clock for commit times, retention and leases. Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where timeline ids and generation-claim nonces come from. Default: [`SystemEntropy`].
    /// With a [`SeededEntropy`](crate::SeededEntropy) and a [`ManualClock`](crate::ManualClock),
    /// the same calls write the same bytes, ids and nonces included.
    pub fn entropy(mut self, entropy: Arc<dyn Entropy>) -> Self {
        self.entropy = entropy;
        self
    }

    /// Keep history readable for this long behind the clock's now (default 7 days);
    /// `None` to retain by [`gc_horizon`](StoreOptions::gc_horizon) only. With both set, the
    /// longer window wins.
    pub fn pitr_interval(mut self, d: Option<Duration>) -> Self {
        self.pitr_interval = d;
        self
    }

    /// Keep history readable for this many LSNs behind `last_record_lsn` (default: not set).
    pub fn gc_horizon(mut self, lsns: Option<u64>) -> Self {
        self.gc_horizon = lsns;
        self
    }

    /// L0 delta layers that trigger compaction into L1 (default 4).
    pub fn compaction_threshold(mut self, n: usize) -> Self {
        self.compaction_threshold = n;
        self
    }

    /// Size at which compaction starts a new output layer (default 64 MiB).
    pub fn target_layer_size(mut self, bytes: u64) -> Self {
        self.target_layer_size = bytes;
        self
    }

    /// Bytes of delta records (versions the redo hook must apply: not images, tombstones or
    /// `will_init` deltas) compacted above the newest image layer beyond which compaction
    /// writes a new image layer, bounding what a read replays (default 128 MiB).
    ///
    /// Versions that are whole values need no image: a read stops at the first it finds, so an
    /// image of them would only copy them. Whole values count towards
    /// [`image_threshold_layers`](Self::image_threshold_layers) instead. After the store
    /// reopens, the delta layers above the newest image count in full until the next image,
    /// as their records are not known without reading them.
    pub fn image_threshold_bytes(mut self, bytes: u64) -> Self {
        self.image_threshold_bytes = bytes;
        self
    }

    /// Delta layers stacked above the newest image layer (each L0 layer, and the L1 layers of
    /// each compaction pass) beyond which compaction writes a new image layer whatever they
    /// hold, bounding how many layers a read of a key not written for a while passes through
    /// (each costs it a key-filter probe). Default 8, about the sorted runs a leveled LSM tree
    /// probes (four L0 files and its levels); `usize::MAX` writes images only for redo.
    pub fn image_threshold_layers(mut self, layers: usize) -> Self {
        self.image_threshold_layers = layers;
        self
    }

    /// Share of garbage GC tolerates before rewriting (default 0.15, which keeps layer bytes
    /// within about 1.3× the live data of the retention window): when layer bytes below the
    /// cutoff, kept only because no image covers them, pass this share of the timeline's bytes,
    /// GC writes an image at the cutoff so they can go; when versions no read can reach pass
    /// this share of a delta layer GC must keep, GC rewrites the layer without them.
    pub fn gc_compaction_ratio(mut self, ratio: f64) -> Self {
        self.gc_compaction_ratio = ratio;
        self
    }

    /// How often background compaction and GC run (default every 10 s). They also run when
    /// flushes pile up `compaction_threshold` L0 layers; `None` leaves only that trigger and
    /// the on-demand calls.
    pub fn background_period(mut self, period: Option<Duration>) -> Self {
        self.background_period = period;
        self
    }

    /// Whether writes go to the local write-ahead log before they are acknowledged (default
    /// on). Turn it off when the caller has its own log; after a crash it then replays from
    /// [`Timeline::disk_consistent_lsn`](crate::Timeline::disk_consistent_lsn).
    pub fn wal(mut self, on: bool) -> Self {
        self.wal = on;
        self
    }

    /// When the write-ahead log is fsynced (default: every commit).
    pub fn fsync_policy(mut self, policy: FsyncPolicy) -> Self {
        self.fsync_policy = policy;
        self
    }

    /// Size at which the write-ahead log starts a new segment (default 64 MiB).
    pub fn wal_segment_size(mut self, bytes: u64) -> Self {
        self.wal_segment_size = bytes;
        self
    }

    /// The file system every write, fsync, rename and removal goes through (default: the
    /// operating system's). Tests pass a [`FaultyFs`](crate::io::FaultyFs) to fail them.
    pub fn file_system(mut self, fs: Arc<dyn FileSystem>) -> Self {
        self.fs = fs;
        self
    }

    /// Keep the store in object storage too: layers, indexes and the catalog are uploaded,
    /// an empty directory attaches from there, and layers can be downloaded on demand. The
    /// node claims a new generation at open (see [`crate::remote`]).
    pub fn remote(mut self, storage: RemoteStorage) -> Self {
        self.remote = Some(storage);
        self
    }

    /// The name this node writes into its generation claim (default `pid-<process id>`).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = id.into();
        self
    }

    /// With a remote, the local bytes of layer files beyond which the least recently used
    /// uploaded layers are evicted from local disk (default: no limit).
    pub fn local_disk_budget(mut self, bytes: Option<u64>) -> Self {
        self.local_disk_budget = bytes;
        self
    }

    /// Open the [`remote`](StoreOptions::remote) store read-only (default off): for an
    /// inspector, an analytics job or a reader beside the owner. The store claims no
    /// generation, so it never fences the owner, and never writes, uploads or deletes anything
    /// in object storage; every call that would ([`Timeline::writer`](crate::Timeline::writer),
    /// branch, delete, restore, GC, compaction, leases) fails with
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly). Opening does not wait.
    ///
    /// It reads the newest catalog and indexes in object storage at open, whichever generation
    /// wrote them, and serves reads at any LSN they cover; layers download on demand into the
    /// directory, which is only a cache: it must be empty (or missing) or a previous read-only
    /// cache, and is cleared at every open. A layer that the owner's GC or compaction removes
    /// from object storage after the open and that was not downloaded yet fails its read with
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) naming the object; open again to
    /// read the owner's newer state.
    ///
    /// Requires a remote ([`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// without one).
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// When commits are acknowledged unless a commit says otherwise (default
    /// [`Durability::Local`]). [`Durability::Remote`] needs a remote and the WAL.
    pub fn durability(mut self, level: Durability) -> Self {
        self.durability = level;
        self
    }

    /// With a remote, the longest a commit waits in the buffer before its WAL chunk is shipped
    /// when no commit at [`Durability::Remote`] is waiting for it (default 100 ms): how far
    /// [`Timeline::remote_wal_lsn`](crate::Timeline::remote_wal_lsn) trails local commits.
    pub fn remote_wal_interval(mut self, interval: Duration) -> Self {
        self.remote_wal_interval = interval;
        self
    }

    /// With a remote, the buffered WAL bytes at which a chunk is shipped at once (default
    /// 4 MiB).
    pub fn remote_wal_chunk_bytes(mut self, bytes: usize) -> Self {
        self.remote_wal_chunk_bytes = bytes;
        self
    }

    /// With a remote, how often the owner renews its heartbeat in object storage (default 1 s;
    /// `None`: no heartbeat). A [`Secondary`](crate::Secondary) judges the owner's liveness and
    /// its own lag by it.
    pub fn heartbeat_interval(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::invalid(what));
        if self.max_key_len == 0 || self.max_key_len > MAX_KEY_LEN_LIMIT {
            return bad(format!(
                "max_key_len {} must be in 1..={MAX_KEY_LEN_LIMIT}",
                self.max_key_len
            ));
        }
        if self.max_value_len > crate::format::MAX_VALUE_LEN {
            return bad(format!(
                "max_value_len {} must be at most {}",
                self.max_value_len,
                crate::format::MAX_VALUE_LEN
            ));
        }
        if self.block_size < 512 || self.block_size > (16 << 20) {
            return bad(format!(
                "block_size {} must be in 512..=16 MiB",
                self.block_size
            ));
        }
        if self.max_frozen_layers == 0 {
            return bad("max_frozen_layers must be at least 1".to_string());
        }
        if self.freeze_lsn_distance == 0 {
            return bad("freeze_lsn_distance must be at least 1".to_string());
        }
        if matches!(self.fsync_policy, FsyncPolicy::Interval(d) if d.is_zero()) {
            return bad("fsync interval must not be zero".to_string());
        }
        if self.compaction_threshold < 2 {
            return bad("compaction_threshold must be at least 2".to_string());
        }
        if !(self.gc_compaction_ratio > 0.0 && self.gc_compaction_ratio <= 1.0) {
            return bad(format!(
                "gc_compaction_ratio {} must be in (0, 1]",
                self.gc_compaction_ratio
            ));
        }
        if self.background_period.is_some_and(|p| p.is_zero()) {
            return bad("background_period must not be zero".to_string());
        }
        if self.read_only && self.remote.is_none() {
            return bad(format!(
                "{}: a read-only open needs a remote (StoreOptions::remote); it reads the store from object storage",
                self.path.display()
            ));
        }
        if self.durability == Durability::Remote && (self.remote.is_none() || !self.wal) {
            return bad(
                "durability Remote needs a remote (StoreOptions::remote) and the WAL".to_string(),
            );
        }
        if self.heartbeat_interval.is_some_and(|d| d.is_zero()) {
            return bad("heartbeat_interval must not be zero".to_string());
        }
        if self.remote_wal_chunk_bytes == 0 || self.remote_wal_interval.is_zero() {
            return bad(
                "remote_wal_chunk_bytes and remote_wal_interval must not be zero".to_string(),
            );
        }
        if let Compression::Zstd(level) = self.compression
            && !zstd::compression_level_range().contains(&level)
        {
            return bad(format!("zstd level {level} is out of range"));
        }
        Ok(())
    }
}
