//! The metrics the store reports through the [`metrics`](https://docs.rs/metrics) facade, and
//! their names.
//!
//! The store only records: the program that links it installs a recorder (a Prometheus
//! exporter, say; `examples/metrics.rs` renders the Prometheus text format) and picks where the
//! numbers go. With no recorder installed every metric is a no-op.
//!
//! **Install the recorder before opening the store.** The counters of the hot paths (reads,
//! puts, commits, the block cache, the WAL) are registered once, when the store opens, so that
//! a read or a put pays for no lookup; a recorder installed later sees the rest (background
//! jobs, object storage) but not those. A global recorder
//! ([`metrics::set_global_recorder`](https://docs.rs/metrics/latest/metrics/fn.set_global_recorder.html))
//! sees everything; a thread-local one does not see the store's own threads, where opening,
//! background jobs and uploads run.
//!
//! Several stores in one process add up into the same series, except the per-timeline gauges,
//! which carry the timeline's id (unique across stores).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `stratakv_reads_total` | counter | | keys read: one per [`get`](crate::Timeline::get), one per key of [`get_many`](crate::Timeline::get_many) and [`scan`](crate::Timeline::scan) |
//! | `stratakv_read_duration_seconds` | histogram | | time of a [`get`](crate::Timeline::get) (any of its forms), waiting for its LSN included: one get in [`READ_LATENCY_SAMPLE`] per thread, or every get when [`slow_read_threshold`](crate::StoreOptions::slow_read_threshold) is set |
//! | `stratakv_read_layers_visited` | histogram | | per key read: in-memory layers and layer files visited, ancestors' included |
//! | `stratakv_read_redo_records_total` | counter | | delta records the redo hook applied to answer reads |
//! | `stratakv_slow_reads_total` | counter | | gets over [`slow_read_threshold`](crate::StoreOptions::slow_read_threshold) (each also logged) |
//! | `stratakv_block_cache_hits_total` | counter | | data blocks a read found in the block cache |
//! | `stratakv_block_cache_misses_total` | counter | | data blocks a read had to read, check and decode |
//! | `stratakv_layer_downloads_total` | counter | | layer files downloaded from object storage |
//! | `stratakv_layer_download_bytes_total` | counter | | their bytes |
//! | `stratakv_layer_download_duration_seconds` | histogram | | time of each download, writing the file included |
//! | `stratakv_puts_total` | counter | | puts accepted by a [`TimelineWriter`](crate::TimelineWriter) |
//! | `stratakv_put_bytes_total` | counter | | their key and value bytes |
//! | `stratakv_commits_total` | counter | | commits (`finish_write` and its forms) that published a new LSN |
//! | `stratakv_wal_bytes_total` | counter | | bytes written to the local write-ahead log |
//! | `stratakv_wal_fsyncs_total` | counter | | fsyncs of the local write-ahead log |
//! | `stratakv_jobs_total` | counter | `job` | background jobs finished: `flush` (one per frozen layer), `compaction` (a pass that merged L0 layers), `image` (an image layer written, by compaction, GC or `create_image_layer`), `gc` (a pass) |
//! | `stratakv_job_bytes_written_total` | counter | `job` | bytes of the layer files each job wrote (GC: its rewritten layers; the images it writes count as `image`) |
//! | `stratakv_job_duration_seconds` | histogram | `job` | time of each job |
//! | `stratakv_gc_bytes_removed_total` | counter | | bytes GC removed or saved by rewriting ([`GcReport::bytes_removed`](crate::GcReport::bytes_removed)) |
//! | `stratakv_remote_uploads_total` | counter | | objects written to object storage (layers, indexes, catalogs, WAL chunks, heartbeats) |
//! | `stratakv_remote_upload_bytes_total` | counter | | their bytes |
//! | `stratakv_remote_retries_total` | counter | | object-storage requests repeated after a transient error |
//! | `stratakv_remote_upload_queue_depth` | gauge | | timelines waiting for the uploader |
//! | `stratakv_timeline_last_record_lsn` | gauge | `timeline_id` | [`last_record_lsn`](crate::Timeline::last_record_lsn), set at each commit |
//! | `stratakv_timeline_disk_consistent_lsn` | gauge | `timeline_id` | [`disk_consistent_lsn`](crate::Timeline::disk_consistent_lsn), set at each flush |
//! | `stratakv_timeline_remote_consistent_lsn` | gauge | `timeline_id` | [`remote_consistent_lsn`](crate::Timeline::remote_consistent_lsn), set at each upload of the timeline's index |
//! | `stratakv_timeline_remote_lag_lsn` | gauge | `timeline_id` | `last_record_lsn − remote_consistent_lsn` (LSN units: WAL bytes), set at each flush and upload |
//! | `stratakv_timeline_gc_cutoff` | gauge | `timeline_id` | [`gc_cutoff`](crate::Timeline::gc_cutoff), set when GC moves it |
//!
//! Gauges are `f64`: an LSN above 2⁵³ loses its low bits there. Durations are in seconds.

use std::cell::Cell;
use std::time::Instant;

use ::metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

/// Keys read (counter).
pub const READS: &str = "stratakv_reads_total";
/// Time of a get, sampled (histogram, seconds).
pub const READ_DURATION: &str = "stratakv_read_duration_seconds";
/// Layers visited per key read (histogram).
pub const READ_LAYERS_VISITED: &str = "stratakv_read_layers_visited";
/// Delta records the redo hook applied for reads (counter).
pub const READ_REDO_RECORDS: &str = "stratakv_read_redo_records_total";
/// Gets over the slow-read threshold (counter).
pub const SLOW_READS: &str = "stratakv_slow_reads_total";
/// Block cache hits (counter).
pub const BLOCK_CACHE_HITS: &str = "stratakv_block_cache_hits_total";
/// Block cache misses (counter).
pub const BLOCK_CACHE_MISSES: &str = "stratakv_block_cache_misses_total";
/// Layer files downloaded (counter).
pub const LAYER_DOWNLOADS: &str = "stratakv_layer_downloads_total";
/// Bytes of layer files downloaded (counter).
pub const LAYER_DOWNLOAD_BYTES: &str = "stratakv_layer_download_bytes_total";
/// Time of each layer download (histogram, seconds).
pub const LAYER_DOWNLOAD_DURATION: &str = "stratakv_layer_download_duration_seconds";
/// Puts accepted (counter).
pub const PUTS: &str = "stratakv_puts_total";
/// Key and value bytes of the puts (counter).
pub const PUT_BYTES: &str = "stratakv_put_bytes_total";
/// Commits that published a new LSN (counter).
pub const COMMITS: &str = "stratakv_commits_total";
/// Bytes written to the local WAL (counter).
pub const WAL_BYTES: &str = "stratakv_wal_bytes_total";
/// Fsyncs of the local WAL (counter).
pub const WAL_FSYNCS: &str = "stratakv_wal_fsyncs_total";
/// Background jobs finished, by `job` (counter).
pub const JOBS: &str = "stratakv_jobs_total";
/// Bytes of layer files background jobs wrote, by `job` (counter).
pub const JOB_BYTES_WRITTEN: &str = "stratakv_job_bytes_written_total";
/// Time of each background job, by `job` (histogram, seconds).
pub const JOB_DURATION: &str = "stratakv_job_duration_seconds";
/// Bytes GC removed (counter).
pub const GC_BYTES_REMOVED: &str = "stratakv_gc_bytes_removed_total";
/// Objects written to object storage (counter).
pub const REMOTE_UPLOADS: &str = "stratakv_remote_uploads_total";
/// Bytes written to object storage (counter).
pub const REMOTE_UPLOAD_BYTES: &str = "stratakv_remote_upload_bytes_total";
/// Object-storage requests retried (counter).
pub const REMOTE_RETRIES: &str = "stratakv_remote_retries_total";
/// Timelines waiting for the uploader (gauge).
pub const REMOTE_UPLOAD_QUEUE_DEPTH: &str = "stratakv_remote_upload_queue_depth";
/// A timeline's `last_record_lsn` (gauge, label `timeline_id`).
pub const TIMELINE_LAST_RECORD_LSN: &str = "stratakv_timeline_last_record_lsn";
/// A timeline's `disk_consistent_lsn` (gauge, label `timeline_id`).
pub const TIMELINE_DISK_CONSISTENT_LSN: &str = "stratakv_timeline_disk_consistent_lsn";
/// A timeline's `remote_consistent_lsn` (gauge, label `timeline_id`).
pub const TIMELINE_REMOTE_CONSISTENT_LSN: &str = "stratakv_timeline_remote_consistent_lsn";
/// A timeline's `last_record_lsn − remote_consistent_lsn` (gauge, label `timeline_id`).
pub const TIMELINE_REMOTE_LAG_LSN: &str = "stratakv_timeline_remote_lag_lsn";
/// A timeline's GC cutoff (gauge, label `timeline_id`).
pub const TIMELINE_GC_CUTOFF: &str = "stratakv_timeline_gc_cutoff";

/// The label of the background-job metrics.
pub const JOB_LABEL: &str = "job";
/// The label of the per-timeline gauges: the timeline's id.
pub const TIMELINE_LABEL: &str = "timeline_id";

/// One get in this many, per thread, is timed for
/// `stratakv_read_duration_seconds` when no slow-read threshold is set: reading the clock
/// twice costs about as much as the rest of the instrumentation of a cached read.
pub const READ_LATENCY_SAMPLE: u32 = 16;

/// The names of every metric above, for a test or a dashboard to go through.
pub const ALL: &[&str] = &[
    READS,
    READ_DURATION,
    READ_LAYERS_VISITED,
    READ_REDO_RECORDS,
    SLOW_READS,
    BLOCK_CACHE_HITS,
    BLOCK_CACHE_MISSES,
    LAYER_DOWNLOADS,
    LAYER_DOWNLOAD_BYTES,
    LAYER_DOWNLOAD_DURATION,
    PUTS,
    PUT_BYTES,
    COMMITS,
    WAL_BYTES,
    WAL_FSYNCS,
    JOBS,
    JOB_BYTES_WRITTEN,
    JOB_DURATION,
    GC_BYTES_REMOVED,
    REMOTE_UPLOADS,
    REMOTE_UPLOAD_BYTES,
    REMOTE_RETRIES,
    REMOTE_UPLOAD_QUEUE_DEPTH,
    TIMELINE_LAST_RECORD_LSN,
    TIMELINE_DISK_CONSISTENT_LSN,
    TIMELINE_REMOTE_CONSISTENT_LSN,
    TIMELINE_REMOTE_LAG_LSN,
    TIMELINE_GC_CUTOFF,
];

/// Describes every metric above (unit and one line of help) to the recorder installed now, for
/// exporters that show them (Prometheus's `# HELP` lines). Optional; call it after installing
/// the recorder.
pub fn describe() {
    let (count, bytes, secs) = (Unit::Count, Unit::Bytes, Unit::Seconds);
    describe_counter!(READS, count, "Keys read by get, get_many and scan.");
    describe_histogram!(
        READ_DURATION,
        secs,
        "Time of a get (sampled unless a slow-read threshold is set)."
    );
    describe_histogram!(READ_LAYERS_VISITED, count, "Layers visited per key read.");
    describe_counter!(
        READ_REDO_RECORDS,
        count,
        "Delta records the redo hook applied for reads."
    );
    describe_counter!(SLOW_READS, count, "Gets over the slow-read threshold.");
    describe_counter!(
        BLOCK_CACHE_HITS,
        count,
        "Data blocks found in the block cache."
    );
    describe_counter!(
        BLOCK_CACHE_MISSES,
        count,
        "Data blocks read, checked and decoded."
    );
    describe_counter!(
        LAYER_DOWNLOADS,
        count,
        "Layer files downloaded from object storage."
    );
    describe_counter!(
        LAYER_DOWNLOAD_BYTES,
        bytes,
        "Bytes of layer files downloaded."
    );
    describe_histogram!(
        LAYER_DOWNLOAD_DURATION,
        secs,
        "Time of each layer download."
    );
    describe_counter!(PUTS, count, "Puts accepted.");
    describe_counter!(PUT_BYTES, bytes, "Key and value bytes of the puts.");
    describe_counter!(COMMITS, count, "Commits that published a new LSN.");
    describe_counter!(
        WAL_BYTES,
        bytes,
        "Bytes written to the local write-ahead log."
    );
    describe_counter!(WAL_FSYNCS, count, "Fsyncs of the local write-ahead log.");
    describe_counter!(JOBS, count, "Background jobs finished, by job.");
    describe_counter!(
        JOB_BYTES_WRITTEN,
        bytes,
        "Bytes of layer files written by background jobs, by job."
    );
    describe_histogram!(JOB_DURATION, secs, "Time of each background job, by job.");
    describe_counter!(
        GC_BYTES_REMOVED,
        bytes,
        "Bytes GC removed or saved by rewriting."
    );
    describe_counter!(REMOTE_UPLOADS, count, "Objects written to object storage.");
    describe_counter!(
        REMOTE_UPLOAD_BYTES,
        bytes,
        "Bytes written to object storage."
    );
    describe_counter!(REMOTE_RETRIES, count, "Object-storage requests retried.");
    describe_gauge!(
        REMOTE_UPLOAD_QUEUE_DEPTH,
        count,
        "Timelines waiting for the uploader."
    );
    describe_gauge!(TIMELINE_LAST_RECORD_LSN, "last_record_lsn of the timeline.");
    describe_gauge!(
        TIMELINE_DISK_CONSISTENT_LSN,
        "disk_consistent_lsn of the timeline."
    );
    describe_gauge!(
        TIMELINE_REMOTE_CONSISTENT_LSN,
        "remote_consistent_lsn of the timeline."
    );
    describe_gauge!(
        TIMELINE_REMOTE_LAG_LSN,
        "last_record_lsn - remote_consistent_lsn of the timeline."
    );
    describe_gauge!(TIMELINE_GC_CUTOFF, "GC cutoff of the timeline.");
}

/// The handles of the store's hot paths, registered once when it opens: recording through
/// one is a branch when no recorder was installed, and never a lookup.
pub(crate) struct StoreMetrics {
    pub(crate) reads: Counter,
    pub(crate) read_duration: Histogram,
    pub(crate) read_layers_visited: Histogram,
    pub(crate) read_redo_records: Counter,
    pub(crate) slow_reads: Counter,
    pub(crate) puts: Counter,
    pub(crate) put_bytes: Counter,
    pub(crate) commits: Counter,
}

impl StoreMetrics {
    /// Registers the handles with the recorder in place now.
    pub(crate) fn register() -> StoreMetrics {
        StoreMetrics {
            reads: counter!(READS),
            read_duration: histogram!(READ_DURATION),
            read_layers_visited: histogram!(READ_LAYERS_VISITED),
            read_redo_records: counter!(READ_REDO_RECORDS),
            slow_reads: counter!(SLOW_READS),
            puts: counter!(PUTS),
            put_bytes: counter!(PUT_BYTES),
            commits: counter!(COMMITS),
        }
    }
}

/// A timeline's watermark gauges, labelled with its id.
pub(crate) struct TimelineGauges {
    pub(crate) last_record_lsn: Gauge,
    pub(crate) disk_consistent_lsn: Gauge,
    pub(crate) remote_consistent_lsn: Gauge,
    pub(crate) remote_lag: Gauge,
    pub(crate) gc_cutoff: Gauge,
    /// Held while the watermark gauges are read and set: two updaters (a flush and an upload)
    /// would otherwise race, and the later `set` could carry the older reading.
    pub(crate) update: parking_lot::Mutex<()>,
}

impl TimelineGauges {
    /// Registers the gauges of the timeline whose id displays as `id`.
    pub(crate) fn register(id: &str) -> TimelineGauges {
        let g = |name: &'static str| gauge!(name, TIMELINE_LABEL => id.to_string());
        TimelineGauges {
            last_record_lsn: g(TIMELINE_LAST_RECORD_LSN),
            disk_consistent_lsn: g(TIMELINE_DISK_CONSISTENT_LSN),
            remote_consistent_lsn: g(TIMELINE_REMOTE_CONSISTENT_LSN),
            remote_lag: g(TIMELINE_REMOTE_LAG_LSN),
            gc_cutoff: g(TIMELINE_GC_CUTOFF),
            update: parking_lot::Mutex::new(()),
        }
    }
}

/// A background job's kind: the value of its `job` label.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Job {
    Flush,
    Compaction,
    Image,
    Gc,
}

impl Job {
    fn label(self) -> &'static str {
        match self {
            Job::Flush => "flush",
            Job::Compaction => "compaction",
            Job::Image => "image",
            Job::Gc => "gc",
        }
    }

    /// Records one finished job: its count, the bytes it wrote and the time since `start`.
    /// Background jobs are rare next to reads: the handles are looked up each time.
    pub(crate) fn done(self, start: Instant, bytes_written: u64) {
        self.handles().done(start, bytes_written);
    }

    /// The job's handles, looked up now, for recording later where a lookup would not do (under
    /// a lock).
    pub(crate) fn handles(self) -> JobHandles {
        let job = self.label();
        JobHandles {
            count: counter!(JOBS, JOB_LABEL => job),
            bytes: counter!(JOB_BYTES_WRITTEN, JOB_LABEL => job),
            duration: histogram!(JOB_DURATION, JOB_LABEL => job),
        }
    }
}

/// The handles of one kind of background job.
pub(crate) struct JobHandles {
    count: Counter,
    bytes: Counter,
    duration: Histogram,
}

impl JobHandles {
    /// Records one finished job: its count, the bytes it wrote and the time since `start`.
    pub(crate) fn done(&self, start: Instant, bytes_written: u64) {
        self.count.increment(1);
        self.bytes.increment(bytes_written);
        self.duration.record(start.elapsed().as_secs_f64());
    }
}

thread_local! {
    /// Gets started on this thread, for sampling their latency.
    static GETS: Cell<u32> = const { Cell::new(0) };
}

/// Whether this thread's next get is one timed for the latency histogram.
#[inline]
pub(crate) fn sample_read() -> bool {
    GETS.with(|n| {
        let v = n.get().wrapping_add(1);
        n.set(v);
        v % READ_LATENCY_SAMPLE == 0
    })
}
