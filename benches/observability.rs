//! What metrics and tracing cost a warm read: a get at a random LSN on stores holding the same
//! data, in one run:
//!
//! - `no recorder`: opened before any recorder is installed, no `tracing` subscriber: every
//!   metric handle of the read path is a no-op. Measured first and again last, after the
//!   recorder went in (its handles were registered at open, so it stays without one).
//! - `slow-read threshold`: the same, with `slow_read_threshold` set (never reached): every get
//!   reads the clock twice and records its latency.
//! - `debugging recorder`: opened after metrics-util's debugging recorder was installed
//!   globally: every counter and histogram of the read path records.
//!
//! The read path with no recorder does strictly less than with one, so if the recorder's
//! figure is within noise of `no recorder`, so is the cost of the instrumentation itself.
//!
//! `cargo bench --bench observability`; `STRATAKV_BENCH_KEYS` sets the number of keys
//! (default 100,000; 5,000 in the quick run of `cargo test --benches`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use metrics_util::debugging::DebuggingRecorder;
use stratakv::{Lsn, Store, StoreOptions, Timeline, Value};
use tokio::runtime::Runtime;

const VERSIONS: u64 = 4;
const VALUE_LEN: usize = 100;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(b"key/\0\0\0\0");
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// A store of `n` keys, each written `VERSIONS` times (round `r` at LSNs `r*n+1..=(r+1)*n`),
/// flushed once per round and compacted, its block cache warmed by reading every key.
struct Warm {
    _dir: tempfile::TempDir,
    store: Option<Store>,
    tl: Timeline,
    n: u64,
}

impl Warm {
    fn build(rt: &Runtime, n: u64, threshold: Option<Duration>) -> Warm {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::new(dir.path())
            .wal(false)
            .background_period(None)
            .freeze_bytes(1 << 30)
            .slow_read_threshold(threshold);
        let (store, tl) = rt.block_on(async {
            let store = Store::open(options).await.unwrap();
            let tl = store.create_timeline("main").await.unwrap();
            let mut w = tl.writer().unwrap();
            for round in 0..VERSIONS {
                for i in 0..n {
                    let lsn = Lsn(round * n + i + 1);
                    let mut v = vec![b'v'; VALUE_LEN];
                    v[..8].copy_from_slice(&lsn.0.to_le_bytes());
                    w.put(&key(i), lsn, Value::image(v)).unwrap();
                    if i % 100 == 99 || i == n - 1 {
                        w.finish_write(lsn).unwrap();
                    }
                }
                tl.flush().await.unwrap();
            }
            tl.compact().await.unwrap();
            for i in 0..n {
                tl.get(&key(i), Lsn(VERSIONS * n)).await.unwrap().unwrap();
            }
            (store, tl)
        });
        Warm {
            _dir: dir,
            store: Some(store),
            tl,
            n,
        }
    }

    /// Times `iters` gets of random keys at random LSNs, each checked.
    fn time_gets(&self, rt: &Runtime, iters: u64, rng: &mut Rng) -> Duration {
        let n = self.n;
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let (i, lsn) = (rng.next() % n, n + rng.next() % ((VERSIONS - 1) * n));
                let v = self.tl.get(black_box(&key(i)), Lsn(lsn)).await.unwrap();
                black_box(v.unwrap());
            }
            start.elapsed()
        })
    }

    fn close(mut self, rt: &Runtime) {
        if let Some(s) = self.store.take() {
            rt.block_on(s.close()).unwrap();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let test_mode = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test");
    let n: u64 = match std::env::var("STRATAKV_BENCH_KEYS") {
        Ok(s) => s
            .trim()
            .replace('_', "")
            .parse()
            .expect("STRATAKV_BENCH_KEYS: a number"),
        Err(_) if test_mode => 5_000,
        Err(_) => 100_000,
    };
    let base = Criterion::default().without_plots();
    let base = if test_mode {
        base.sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500))
    } else {
        base.sample_size(50)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(8))
    };
    let mut c = base.configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "observability: get at a random LSN, {n} keys × {VERSIONS} versions of {VALUE_LEN} B, \
         compacted, block cache warm, one thread"
    );

    let plain = Warm::build(&rt, n, None);
    let timed = Warm::build(&rt, n, Some(Duration::from_secs(1)));
    let mut rng = Rng(0x5EED);
    let mut g = c.benchmark_group("observability/get");
    g.bench_function("no recorder", |b| {
        b.iter_custom(|iters| plain.time_gets(&rt, iters, &mut rng))
    });
    g.bench_function("slow-read threshold", |b| {
        b.iter_custom(|iters| timed.time_gets(&rt, iters, &mut rng))
    });

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this process");
    let recorded = Warm::build(&rt, n, None);
    // Drained between samples, so that its histograms do not grow without bound.
    g.bench_function("debugging recorder", |b| {
        b.iter_custom(|iters| {
            let t = recorded.time_gets(&rt, iters, &mut rng);
            drop(snapshotter.snapshot());
            t
        })
    });
    g.bench_function("no recorder, again", |b| {
        b.iter_custom(|iters| plain.time_gets(&rt, iters, &mut rng))
    });
    g.finish();
    drop(snapshotter.snapshot());
    recorded.time_gets(&rt, 10, &mut rng);
    let reads = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(k, ..)| k.key().name() == stratakv::metrics::READS)
        .map(|(.., v)| v);
    assert_eq!(
        reads,
        Some(metrics_util::debugging::DebugValue::Counter(10)),
        "the recorder saw the reads"
    );
    for w in [plain, timed, recorded] {
        w.close(&rt);
    }
    c.final_summary();
}
