//! Metrics and tracing: a recording metrics backend (metrics-util's debugging recorder,
//! installed globally, since the store records from its own threads) checks that every counter
//! in the table of `src/metrics.rs` moves by what the workload did, and a capturing `tracing`
//! subscriber checks the spans of background jobs and the slow-read warning.
//!
//! The recorder and the subscriber are process-wide, so the tests here take one lock and
//! read deltas: each snapshot of the debugging recorder empties its counters and histograms
//! (and its gauges too, so a gauge's current value is kept beside it: see [`Latest`]).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use object_store::path::Path;
use stratakv::metrics as m;
use stratakv::remote::{FaultConfig, FaultyObjectStore, RemoteStorage};
use stratakv::{FsyncPolicy, LayerKind, Lsn, SimpleRedo, Store, Timeline, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use common::backends::{Backend, fast_retry, node_options, unique_prefix};
use common::rng::{Rng, seed_from_env_or_clock};

// ---------------------------------------------------------------------------------------------
// A capturing subscriber: every span (name and fields, later records included) and event.

/// A span or an event: its name (an event's is its message) and its fields as text.
#[derive(Clone, Debug)]
struct Captured {
    name: String,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Capture {
    next_id: AtomicU64,
    spans: Mutex<HashMap<u64, Captured>>,
    closed_order: Mutex<Vec<u64>>,
    events: Mutex<Vec<Captured>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.0.insert(field.name().to_string(), s);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut c = Captured {
            name: attrs.metadata().name().to_string(),
            fields: BTreeMap::new(),
        };
        attrs.record(&mut Fields(&mut c.fields));
        self.spans.lock().unwrap().insert(id, c);
        self.closed_order.lock().unwrap().push(id);
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(c) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut c.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let name = fields.remove("message").unwrap_or_default();
        self.events.lock().unwrap().push(Captured { name, fields });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

impl Capture {
    /// Spans opened since the last call, in order, and forgets them.
    fn take_spans(&self) -> Vec<Captured> {
        let order = std::mem::take(&mut *self.closed_order.lock().unwrap());
        let mut spans = self.spans.lock().unwrap();
        order.iter().filter_map(|id| spans.remove(id)).collect()
    }

    fn take_events(&self) -> Vec<Captured> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

// ---------------------------------------------------------------------------------------------
// The process-wide recorder and subscriber, and a lock for the tests that read them.

struct Observed {
    snapshotter: Snapshotter,
    gauges: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
    capture: Arc<Capture>,
}

/// The debugging recorder, with each gauge's last value kept where a snapshot does not reset
/// it: a gauge set by the uploader before an earlier snapshot reads as its value, not 0.
struct Latest {
    inner: DebuggingRecorder,
    gauges: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
}

/// A gauge's bits before it is first set (a NaN no engine gauge carries).
const UNSET: u64 = u64::MAX;

struct LatestGauge {
    inner: metrics::Gauge,
    value: Arc<AtomicU64>,
}

impl LatestGauge {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .value
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |bits| {
                let old = if bits == UNSET {
                    0.0
                } else {
                    f64::from_bits(bits)
                };
                Some(f(old).to_bits())
            });
    }
}

impl metrics::GaugeFn for LatestGauge {
    fn increment(&self, v: f64) {
        self.inner.increment(v);
        self.update(|old| old + v);
    }
    fn decrement(&self, v: f64) {
        self.inner.decrement(v);
        self.update(|old| old - v);
    }
    fn set(&self, v: f64) {
        self.inner.set(v);
        self.update(|_| v);
    }
}

impl metrics::Recorder for Latest {
    fn describe_counter(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.inner.describe_counter(k, u, d)
    }
    fn describe_gauge(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.inner.describe_gauge(k, u, d)
    }
    fn describe_histogram(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.inner.describe_histogram(k, u, d)
    }
    fn register_counter(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        self.inner.register_counter(key, meta)
    }
    fn register_gauge(&self, key: &metrics::Key, meta: &metrics::Metadata<'_>) -> metrics::Gauge {
        let value = self
            .gauges
            .lock()
            .unwrap()
            .entry(display_key(key))
            .or_insert_with(|| Arc::new(AtomicU64::new(UNSET)))
            .clone();
        metrics::Gauge::from_arc(Arc::new(LatestGauge {
            inner: self.inner.register_gauge(key, meta),
            value,
        }))
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        self.inner.register_histogram(key, meta)
    }
}

/// A metric's name with `label=value` pairs after it, sorted: how the tests name it.
fn display_key(key: &metrics::Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    let mut name = key.name().to_string();
    for l in labels {
        name.push(' ');
        name.push_str(&l);
    }
    name
}

fn observed() -> &'static Observed {
    static OBSERVED: OnceLock<Observed> = OnceLock::new();
    OBSERVED.get_or_init(|| {
        let inner = DebuggingRecorder::new();
        let snapshotter = inner.snapshotter();
        let gauges = Arc::default();
        metrics::set_global_recorder(Latest {
            inner,
            gauges: Arc::clone(&gauges),
        })
        .expect("the only recorder of this process");
        let capture = Arc::new(Capture::default());
        tracing::subscriber::set_global_default(CaptureHandle(capture.clone()))
            .expect("the only subscriber of this process");
        Observed {
            snapshotter,
            gauges,
            capture,
        }
    })
}

/// The subscriber installed, sharing its captures with the tests.
struct CaptureHandle(Arc<Capture>);

impl Subscriber for CaptureHandle {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.0.enabled(m)
    }
    fn new_span(&self, a: &Attributes<'_>) -> Id {
        self.0.new_span(a)
    }
    fn record(&self, s: &Id, v: &Record<'_>) {
        self.0.record(s, v)
    }
    fn record_follows_from(&self, s: &Id, f: &Id) {
        self.0.record_follows_from(s, f)
    }
    fn event(&self, e: &Event<'_>) {
        self.0.event(e)
    }
    fn enter(&self, s: &Id) {
        self.0.enter(s)
    }
    fn exit(&self, s: &Id) {
        self.0.exit(s)
    }
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the recorder saw since the last call: name (with `label=value` pairs after it, sorted)
/// → value.
fn delta() -> HashMap<String, DebugValue> {
    let d = delta_only();
    let mut seen = UPLOADS_SEEN.lock().unwrap();
    seen.0 += counter(&d, m::REMOTE_UPLOADS);
    seen.1 += counter(&d, m::REMOTE_UPLOAD_BYTES);
    d
}

/// Uploads and their bytes seen by [`delta`] since the last [`take_uploads_seen`]: the
/// uploader runs in the background, so they fall into whichever delta is taken.
static UPLOADS_SEEN: Mutex<(u64, u64)> = Mutex::new((0, 0));

fn take_uploads_seen() -> (u64, u64) {
    delta();
    std::mem::take(&mut *UPLOADS_SEEN.lock().unwrap())
}

fn delta_only() -> HashMap<String, DebugValue> {
    observed()
        .snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, _, _, v)| (display_key(ck.key()), v))
        .collect()
}

fn counter(d: &HashMap<String, DebugValue>, name: &str) -> u64 {
    match d.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        Some(other) => panic!("{name} is not a counter: {other:?}"),
    }
}

/// A gauge's current value (its last `set`, with what was added since), whichever snapshot saw
/// it move.
fn gauge(name: &str) -> f64 {
    let gauges = observed().gauges.lock().unwrap();
    match gauges.get(name).map(|v| v.load(Ordering::SeqCst)) {
        Some(bits) if bits != UNSET => f64::from_bits(bits),
        other => panic!("{name} is not a gauge that was set: {other:?}"),
    }
}

fn histogram(d: &HashMap<String, DebugValue>, name: &str) -> Vec<f64> {
    match d.get(name) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.0).collect(),
        None => Vec::new(),
        Some(other) => panic!("{name} is not a histogram: {other:?}"),
    }
}

fn job(name: &str, job: &str) -> String {
    format!("{name} {}={job}", m::JOB_LABEL)
}

fn per_timeline(name: &str, tl: &Timeline) -> String {
    format!("{name} {}={}", m::TIMELINE_LABEL, tl.id())
}

// ---------------------------------------------------------------------------------------------
// A model of what was written: per key, its versions (an image, then appends).

/// A version: its LSN, whether it is an image (else an append), and its bytes.
type Version = (u64, bool, Vec<u8>);

#[derive(Default)]
struct Model {
    versions: BTreeMap<Vec<u8>, Vec<Version>>,
}

impl Model {
    /// The value of `key` at `lsn` and how many appends the redo hook applies to get it.
    fn get(&self, key: &[u8], lsn: u64) -> (Option<Vec<u8>>, u64) {
        let Some(vs) = self.versions.get(key) else {
            return (None, 0);
        };
        let upto: Vec<_> = vs.iter().filter(|(l, _, _)| *l <= lsn).collect();
        let Some(base) = upto.iter().rposition(|(_, image, _)| *image) else {
            return (None, 0);
        };
        let mut v = upto[base].2.clone();
        for (_, _, tail) in &upto[base + 1..] {
            v.extend_from_slice(tail);
        }
        (Some(v), (upto.len() - base - 1) as u64)
    }
}

fn rt() -> tokio::runtime::Runtime {
    common::fixture::rt()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn counters_and_gauges_move_as_the_table_says() {
    let _serial = serial();
    let obs = observed();
    let seed = seed_from_env_or_clock("STRATAKV_SEED");
    println!("seed {seed} (rerun with STRATAKV_SEED={seed})");
    let mut rng = Rng::new(seed);
    let backend = Backend::local(unique_prefix("metrics", "counters"));
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let options = node_options(dir.path(), backend.remote(), "n1")
            .freeze_bytes(64 << 20)
            .image_threshold_bytes(u64::MAX)
            .fsync_policy(FsyncPolicy::EveryCommit)
            .gc_horizon(Some(40));
        take_uploads_seen();
        obs.capture.take_spans();
        let store = Store::open(options).await.unwrap();
        let tl = store.create_timeline("main").await.unwrap();
        let mut w = tl.writer().unwrap();
        let mut model = Model::default();

        // Writes: two rounds, each flushed: two L0 layers.
        let (mut puts, mut put_bytes, mut commits, mut lsn) = (0u64, 0u64, 0u64, 0u64);
        for _round in 0..2 {
            for _ in 0..rng.range(20, 40) {
                lsn += 1;
                for _ in 0..rng.range(1, 4) {
                    let key = format!("key/{:03}", rng.below(50)).into_bytes();
                    let vs = model.versions.entry(key.clone()).or_default();
                    if vs.last().is_some_and(|(l, _, _)| *l == lsn) {
                        continue;
                    }
                    let len = rng.range(1, 40) as usize;
                    let bytes = rng.bytes(len);
                    let image = vs.is_empty() || rng.chance(30);
                    let value = if image {
                        Value::image(bytes.clone())
                    } else {
                        Value::delta(SimpleRedo::append(&bytes))
                    };
                    put_bytes += key.len() as u64
                        + match &value {
                            Value::Image(b) => b.len(),
                            Value::Delta { record, .. } => record.len(),
                            Value::Tombstone => 0,
                        } as u64;
                    w.put(&key, Lsn(lsn), value).unwrap();
                    vs.push((lsn, image, bytes));
                    puts += 1;
                }
                w.finish_write(Lsn(lsn)).unwrap();
                commits += 1;
            }
            tl.flush().await.unwrap();
        }
        let d = delta();
        assert_eq!(counter(&d, m::PUTS), puts);
        assert_eq!(counter(&d, m::PUT_BYTES), put_bytes);
        assert_eq!(counter(&d, m::COMMITS), commits);
        assert!(counter(&d, m::WAL_FSYNCS) >= commits, "{d:?}");
        assert!(counter(&d, m::WAL_BYTES) >= put_bytes, "{d:?}");
        let l0: Vec<_> = tl.layers();
        assert_eq!(l0.len(), 2, "{l0:?}");
        assert_eq!(counter(&d, &job(m::JOBS, "flush")), 2);
        assert_eq!(
            counter(&d, &job(m::JOB_BYTES_WRITTEN, "flush")),
            l0.iter().map(|l| l.file_size).sum::<u64>()
        );
        assert_eq!(histogram(&d, &job(m::JOB_DURATION, "flush")).len(), 2);
        let lrl = tl.last_record_lsn().0 as f64;
        assert_eq!(gauge(&per_timeline(m::TIMELINE_LAST_RECORD_LSN, &tl)), lrl);
        assert_eq!(
            gauge(&per_timeline(m::TIMELINE_DISK_CONSISTENT_LSN, &tl)),
            tl.disk_consistent_lsn().0 as f64
        );

        // Reads at random LSNs, checked against the model: every get counted, its layers
        // visited recorded, the appends the model says were applied counted.
        let gets = 200;
        let (mut redo, mut traces) = (0, Vec::new());
        for _ in 0..gets {
            let key = format!("key/{:03}", rng.below(60)).into_bytes();
            let at = rng.range(1, lsn);
            let (want, appends) = model.get(&key, at);
            let (got, trace) = tl.get_traced(&key, Lsn(at)).await.unwrap();
            assert_eq!(got.map(|b| b.to_vec()), want, "key {key:?} at {at}");
            assert_eq!(
                u64::from(trace.redo_records),
                appends,
                "key {key:?} at {at}"
            );
            if want.is_some() {
                assert!(trace.layers_visited >= 1, "key {key:?} at {at}: {trace:?}");
            }
            traces.push(f64::from(trace.layers_visited));
            redo += appends;
        }
        let d = delta();
        assert_eq!(counter(&d, m::READS), gets);
        assert_eq!(counter(&d, m::READ_REDO_RECORDS), redo);
        assert!(redo > 0, "the workload applies deltas");
        let visited = histogram(&d, m::READ_LAYERS_VISITED);
        // One value per get, as its trace said (the recorder keeps them in no set order).
        let sorted = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v
        };
        assert_eq!(sorted(visited.clone()), sorted(traces));
        assert!(
            visited.iter().any(|v| *v >= 2.0),
            "reads went past a layer: {visited:?}"
        );
        // Sampled: one get in READ_LATENCY_SAMPLE per thread, on the two runtime threads.
        let timed = histogram(&d, m::READ_DURATION).len() as u64;
        assert!(
            timed <= gets / u64::from(m::READ_LATENCY_SAMPLE) + 2,
            "{timed}"
        );
        assert!(counter(&d, m::BLOCK_CACHE_HITS) + counter(&d, m::BLOCK_CACHE_MISSES) >= 1);
        assert_eq!(counter(&d, m::SLOW_READS), 0);

        // The block cache: a block read once is a miss, then a hit.
        let key = model.versions.keys().next().unwrap().clone();
        tl.get(&key, Lsn(lsn)).await.unwrap();
        delta();
        tl.get(&key, Lsn(lsn)).await.unwrap();
        let d = delta();
        assert!(counter(&d, m::BLOCK_CACHE_HITS) >= 1, "{d:?}");
        assert_eq!(counter(&d, m::BLOCK_CACHE_MISSES), 0, "{d:?}");

        // Compaction, then an image layer, then GC.
        let report = tl.compact().await.unwrap();
        assert_eq!(report.l0_merged, 2);
        let l1: u64 = tl
            .layers()
            .iter()
            .filter(|l| l.level == 1)
            .map(|l| l.file_size)
            .sum();
        let image_lsn = tl.create_image_layer().await.unwrap();
        let image = tl
            .layers()
            .into_iter()
            .find(|l| l.kind == LayerKind::Image)
            .unwrap();
        assert_eq!(image.lsn_range.start, image_lsn);
        let gc = tl.gc().await.unwrap();
        assert!(gc.cutoff > Lsn(0), "{gc:?}");
        let d = delta();
        assert_eq!(counter(&d, &job(m::JOBS, "compaction")), 1);
        assert_eq!(counter(&d, &job(m::JOB_BYTES_WRITTEN, "compaction")), l1);
        assert_eq!(
            counter(&d, &job(m::JOBS, "image")),
            1 + gc.images_written as u64
        );
        assert!(counter(&d, &job(m::JOB_BYTES_WRITTEN, "image")) >= image.file_size);
        assert_eq!(counter(&d, &job(m::JOBS, "gc")), 1);
        assert_eq!(counter(&d, m::GC_BYTES_REMOVED), gc.bytes_removed);
        assert_eq!(
            gauge(&per_timeline(m::TIMELINE_GC_CUTOFF, &tl)),
            gc.cutoff.0 as f64
        );

        // Uploads: every layer the timeline names was uploaded by this node, and its index.
        store.wait_for_upload().await.unwrap();
        let (uploads, upload_bytes) = take_uploads_seen();
        let layer_bytes: u64 = tl.layers().iter().map(|l| l.file_size).sum();
        assert!(uploads > tl.layers().len() as u64, "{uploads} uploads");
        assert!(upload_bytes >= layer_bytes, "{upload_bytes} bytes uploaded");
        let rcl = tl.remote_consistent_lsn();
        assert_eq!(rcl, tl.disk_consistent_lsn());
        assert_eq!(
            gauge(&per_timeline(m::TIMELINE_REMOTE_CONSISTENT_LSN, &tl)),
            rcl.0 as f64
        );
        assert_eq!(
            gauge(&per_timeline(m::TIMELINE_REMOTE_LAG_LSN, &tl)),
            (tl.last_record_lsn().0 - rcl.0) as f64
        );
        assert_eq!(gauge(m::REMOTE_UPLOAD_QUEUE_DEPTH), 0.0);

        // Downloads: evict every layer, then a read brings back those it needs.
        let evicted = store.evict_layers(0);
        assert!(evicted.evicted_layers > 0, "{evicted:?}");
        delta();
        let (want, _) = model.get(&key, lsn);
        let got = tl.get(&key, Lsn(lsn)).await.unwrap();
        assert_eq!(got.map(|b| b.to_vec()), want);
        let d = delta();
        let resident: Vec<_> = tl
            .layer_status()
            .into_iter()
            .filter(|s| s.resident)
            .collect();
        assert!(!resident.is_empty());
        assert_eq!(
            counter(&d, m::LAYER_DOWNLOADS),
            resident.len() as u64,
            "{d:?}"
        );
        assert_eq!(
            counter(&d, m::LAYER_DOWNLOAD_BYTES),
            resident.iter().map(|s| s.desc.file_size).sum::<u64>()
        );
        assert_eq!(
            histogram(&d, m::LAYER_DOWNLOAD_DURATION).len(),
            resident.len()
        );

        // A branch and a restore open their spans too.
        let dev = store.branch("dev", &tl, Lsn(lsn)).await.unwrap();
        store
            .restore("main", stratakv::RestorePoint::Lsn(Lsn(lsn)))
            .await
            .unwrap();
        drop(w);
        store.close().await.unwrap();

        let spans = obs.capture.take_spans();
        let named =
            |name: &str| -> Vec<&Captured> { spans.iter().filter(|s| s.name == name).collect() };
        let id = tl.id().to_string();
        let flushes = named("flush");
        assert!(
            flushes
                .iter()
                .any(|s| s.fields.get("timeline_id") == Some(&id)
                    && s.fields.contains_key("lsn_start")
                    && s.fields.get("bytes").is_some_and(|b| b != "0")),
            "{flushes:?}"
        );
        for name in ["compaction", "image", "gc", "download", "upload"] {
            assert!(
                named(name)
                    .iter()
                    .any(|s| s.fields.get("timeline_id") == Some(&id)),
                "no {name} span of timeline {id}: {spans:?}"
            );
        }
        let branch = named("branch");
        assert!(
            branch.iter().any(
                |s| s.fields.get("timeline_id") == Some(&dev.id().to_string())
                    && s.fields.get("lsn") == Some(&Lsn(lsn).to_string())
            ),
            "{branch:?}"
        );
        assert_eq!(named("restore").len(), 1, "{spans:?}");
    });

    // Attach: a new node on the same bucket opens its span, with the layers it found.
    let dir2 = tempfile::tempdir().unwrap();
    rt().block_on(async {
        obs.capture.take_spans();
        let store = Store::open(node_options(dir2.path(), backend.remote(), "n2"))
            .await
            .unwrap();
        let spans = obs.capture.take_spans();
        let attach: Vec<_> = spans.iter().filter(|s| s.name == "attach").collect();
        assert_eq!(attach.len(), 1, "{spans:?}");
        assert!(
            attach[0].fields.get("timelines").is_some_and(|t| t != "0"),
            "{attach:?}"
        );
        store.close().await.unwrap();
    });
}

#[test]
fn retries_and_uploads_are_counted_per_request() {
    let _serial = serial();
    observed();
    let inner = Backend::local(unique_prefix("metrics", "retries"));
    let faulty = Arc::new(FaultyObjectStore::new(
        inner.store.clone(),
        FaultConfig::new(1).with_errors(1.0),
    ));
    let remote =
        RemoteStorage::new(faulty.clone(), Path::from("p")).with_retry_policy(fast_retry(4));
    rt().block_on(async {
        delta();
        remote
            .upload("a", Bytes::from_static(b"hello"))
            .await
            .expect_err("every attempt fails");
        let d = delta();
        assert_eq!(counter(&d, m::REMOTE_RETRIES), 3, "{d:?}");
        assert_eq!(counter(&d, m::REMOTE_UPLOADS), 0, "{d:?}");
        faulty.set_enabled(false);
        remote
            .upload("a", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        let d = delta();
        assert_eq!(counter(&d, m::REMOTE_RETRIES), 0, "{d:?}");
        assert_eq!(counter(&d, m::REMOTE_UPLOADS), 1, "{d:?}");
        // The payload and its 4-byte checksum trailer.
        assert_eq!(counter(&d, m::REMOTE_UPLOAD_BYTES), 5 + 4, "{d:?}");
    });
}

/// A store with a few flushed versions of `k`, its timeline, and the threshold it was opened
/// with.
fn slow_read_run(threshold: Option<Duration>) -> (Vec<Captured>, HashMap<String, DebugValue>) {
    let obs = observed();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(
            common::fixture::opts(dir.path())
                .background_period(None)
                .slow_read_threshold(threshold),
        )
        .await
        .unwrap();
        let tl = store.create_timeline("main").await.unwrap();
        let mut w = tl.writer().unwrap();
        w.put(b"k", Lsn(0x10), Value::image("a")).unwrap();
        w.finish_write(Lsn(0x10)).unwrap();
        w.put(b"k", Lsn(0x20), Value::delta(SimpleRedo::append(b"b")))
            .unwrap();
        w.finish_write(Lsn(0x20)).unwrap();
        tl.flush().await.unwrap();
        obs.capture.take_events();
        delta();
        for _ in 0..3 {
            assert_eq!(tl.get(b"k", Lsn(0x20)).await.unwrap().unwrap(), "ab");
        }
        assert_eq!(tl.get_blocking(b"k", Lsn(0x10)).unwrap().unwrap(), "a");
        let events = obs.capture.take_events();
        let d = delta();
        store.close().await.unwrap();
        let slow = events
            .into_iter()
            .filter(|e| e.name == "slow read")
            .collect();
        (slow, d)
    })
}

#[test]
fn a_read_over_the_slow_read_threshold_is_logged_with_its_trace() {
    let _serial = serial();
    let (slow, d) = slow_read_run(Some(Duration::ZERO));
    assert_eq!(slow.len(), 4, "{slow:?}");
    assert_eq!(counter(&d, m::SLOW_READS), 4);
    // With a threshold every get is timed.
    assert_eq!(histogram(&d, m::READ_DURATION).len(), 4);
    let first = &slow[0];
    assert_eq!(
        first.fields.get("key").map(String::as_str),
        Some("\"k\""),
        "{first:?}"
    );
    assert_eq!(first.fields.get("lsn"), Some(&Lsn(0x20).to_string()));
    assert_eq!(
        first.fields.get("timeline").map(String::as_str),
        Some("main")
    );
    assert_eq!(
        first.fields.get("redo_records").map(String::as_str),
        Some("1")
    );
    assert!(
        first
            .fields
            .get("layers_visited")
            .is_some_and(|n| n.parse::<u32>().unwrap() >= 1),
        "{first:?}"
    );
    assert!(first.fields.contains_key("elapsed_us"));
    assert_eq!(slow[3].fields.get("lsn"), Some(&Lsn(0x10).to_string()));
}

#[test]
fn without_a_threshold_no_read_is_logged() {
    let _serial = serial();
    let (slow, d) = slow_read_run(None);
    assert!(slow.is_empty(), "{slow:?}");
    assert_eq!(counter(&d, m::SLOW_READS), 0);
    assert_eq!(counter(&d, m::READS), 4);
}

#[test]
fn every_documented_name_is_in_the_table_and_unique() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for name in m::ALL {
        assert!(name.starts_with("stratakv_"), "{name}");
        assert!(seen.insert(*name), "{name} twice");
        assert!(
            doc.contains(&format!("//! | `{name}` |")),
            "{name} has no row in the table of src/metrics.rs"
        );
    }
    let rows = doc
        .lines()
        .filter(|l| l.starts_with("//! | `stratakv_"))
        .count();
    assert_eq!(rows, m::ALL.len(), "a row for a name not in metrics::ALL");
}
