//! Engine benchmarks: get at an LSN (open layer, layer files, an old LSN) and ingest.
//!
//! ```text
//! cargo bench --bench engine                                 # 1M keys, ~2.5 minutes on 2 cores
//! STRATAKV_BENCH_KEYS=20000 cargo bench --bench engine       # quick mode, shorter runs
//! cargo bench --bench engine -- get/latest                   # a subset (only its data is built)
//! STRATAKV_BENCH_CLOCK=thread-cpu cargo bench --bench engine # gets timed in thread CPU time
//! ```
//!
//! The dataset follows DESIGN.md "Targets": keys of 16 bytes (a big-endian index, then padding),
//! values of 100 bytes, one writer thread, a fixed seed. Every put gets its own LSN and
//! `finish_write` runs every 100 puts. Values are slices of a random pool copied into their own
//! allocation before the timer starts, so their bytes do not compress and the engine is not
//! charged for the caller's allocation.
//!
//! | benchmark | what is timed |
//! |---|---|
//! | `get/latest/open_layer` | `get` of a random key at the newest LSN; all N keys in the open in-memory layer |
//! | `get/latest/disk` | the same data after `flush()`: one layer file, block cache warm |
//! | `get/old_lsn/disk` | 2N versions written in two rounds, flushed into ~10 L0 layers (compaction off); `get` at an LSN in the middle of round 1, of keys that exist there |
//! | `ingest/100B` | `put` of a 100-byte value, `finish_write` every 100 puts; default options (WAL, background flush and compaction on) except no fsync (`FsyncPolicy::Never`, as RocksDB's default `sync = false`); reported as puts/s |
//! | `ingest/100B_bytes` | the same, reported as value bytes/s |
//! | `ingest/100B_fsync` | the same with the default `FsyncPolicy::EveryCommit`: one WAL fsync per 100 puts |
//!
//! Datasets are built once, before their benchmarks and outside the timed part.
//!
//! The get benchmarks run on one thread with no background work, so on a machine shared with
//! other jobs `STRATAKV_BENCH_CLOCK=thread-cpu` (Linux) times them in the CPU time of that thread:
//! time spent descheduled is not charged to the engine (caches shared with the other jobs still
//! are). Ingest is always timed in wall-clock time, since flush and compaction run on other threads.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use stratakv::{FsyncPolicy, Lsn, Store, StoreOptions, Timeline, TimelineWriter, Value};
use tokio::runtime::Runtime;

const SEED: u64 = 0x5EED_57A7_A0C0_FFEE;
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
/// Keys in the full run.
const FULL_KEYS: u64 = 1_000_000;
/// Keys when the binary runs as a test (`cargo test --benches`), unless the env var says otherwise.
const TEST_KEYS: u64 = 10_000;
/// Puts between two `finish_write` calls.
const BATCH: u64 = 100;
/// Random bytes the values are cut from.
const POOL_LEN: usize = 1 << 20;
/// The LSN of the first put.
const FIRST_LSN: u64 = 0x1000;
/// What the in-memory layer counts per version on top of key and value (see `layer/inmemory.rs`);
/// used only to size the layers of the old-LSN dataset.
const VERSION_OVERHEAD: usize = 48;

/// splitmix64: a tiny deterministic PRNG, so the benchmark needs no extra dependency.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Key `i`: the index big-endian, then fixed padding.
fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [b'.'; KEY_LEN];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

/// A shuffled `0..n`.
fn permutation(n: u64, rng: &mut Rng) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..p.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        p.swap(i, j);
    }
    p
}

/// Random bytes that values are cut from.
struct Pool(Vec<u8>);

impl Pool {
    fn new(seed: u64) -> Pool {
        let mut rng = Rng(seed);
        Pool(
            (0..POOL_LEN / 8)
                .flat_map(|_| rng.next().to_le_bytes())
                .collect(),
        )
    }

    /// The value of key `i` in round `round`, in its own allocation; the same every time.
    fn value(&self, i: u64, round: u64) -> Bytes {
        let at = (mix(SEED ^ i ^ (round << 40)) % (POOL_LEN - VALUE_LEN) as u64) as usize;
        Bytes::copy_from_slice(&self.0[at..at + VALUE_LEN])
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An open store in a temporary directory, and its timeline `main`.
struct Db {
    _dir: tempfile::TempDir,
    store: Option<Store>,
    tl: Timeline,
}

impl Db {
    fn open(rt: &Runtime, options: impl FnOnce(&Path) -> StoreOptions) -> Db {
        let dir = tempfile::Builder::new()
            .prefix("stratakv-bench-")
            .tempdir()
            .expect("temp dir");
        let (store, tl) = rt.block_on(async {
            let store = Store::open(options(dir.path())).await.expect("open store");
            let tl = store
                .create_timeline("main")
                .await
                .expect("create timeline");
            (store, tl)
        });
        Db {
            _dir: dir,
            store: Some(store),
            tl,
        }
    }

    fn close(mut self, rt: &Runtime) {
        if let Some(store) = self.store.take() {
            rt.block_on(store.close()).expect("close store");
        }
    }
}

/// Writes every key of `order` once, each at its own LSN from `first`, publishing every
/// [`BATCH`] puts. Returns the last LSN.
fn write_round(w: &mut TimelineWriter, order: &[u32], first: u64, round: u64, pool: &Pool) -> Lsn {
    let mut lsn = Lsn(first);
    for (j, &i) in order.iter().enumerate() {
        lsn = Lsn(first + j as u64);
        w.put(
            &key(u64::from(i)),
            lsn,
            Value::Image(pool.value(u64::from(i), round)),
        )
        .expect("put");
        if (j as u64 + 1).is_multiple_of(BATCH) {
            w.finish_write(lsn).expect("finish_write");
        }
    }
    w.finish_write(lsn).expect("finish_write");
    lsn
}

/// Whether the get benchmarks are timed in thread CPU time (`STRATAKV_BENCH_CLOCK=thread-cpu`).
static THREAD_CPU_CLOCK: AtomicBool = AtomicBool::new(false);

/// The CPU time the calling thread has used.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_time() -> Duration {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` only writes one `struct timespec` (two 64-bit integers on 64-bit
    // Linux, as declared) through the pointer, which points to a live, writable `Timespec`.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_time() -> Duration {
    unreachable!("STRATAKV_BENCH_CLOCK=thread-cpu is refused at start off 64-bit Linux")
}

/// Times `iters` gets of random keys from `pick` at `lsn`.
fn time_gets(
    rt: &Runtime,
    tl: &Timeline,
    lsn: Lsn,
    iters: u64,
    rng: &mut Rng,
    pick: impl Fn(&mut Rng) -> u64,
) -> Duration {
    let cpu_clock = THREAD_CPU_CLOCK.load(Ordering::Relaxed);
    // The current-thread runtime polls the gets on this thread.
    rt.block_on(async {
        let start = Instant::now();
        let cpu_start = if cpu_clock {
            thread_cpu_time()
        } else {
            Duration::ZERO
        };
        for _ in 0..iters {
            let k = key(pick(rng));
            black_box(tl.get(black_box(&k), lsn).await.expect("get"));
        }
        if cpu_clock {
            thread_cpu_time() - cpu_start
        } else {
            start.elapsed()
        }
    })
}

/// Reads every key once, checking the value, so the block cache is warm and the data right.
fn warm_and_check(rt: &Runtime, tl: &Timeline, lsn: Lsn, keys: &[u32], round: u64, pool: &Pool) {
    let started = Instant::now();
    rt.block_on(async {
        for &i in keys {
            let got = tl.get(&key(u64::from(i)), lsn).await.expect("get");
            assert_eq!(
                got.as_deref(),
                Some(&pool.value(u64::from(i), round)[..]),
                "key {i} at {lsn}"
            );
        }
    });
    println!(
        "  read and checked {} keys at {lsn} in {:.2?}",
        keys.len(),
        started.elapsed()
    );
}

/// Options for the read datasets: no background compaction or GC, so the layers a read
/// goes through are the ones the dataset was built with, and nothing competes for the CPU;
/// no write-ahead log, which reads never touch and which would only slow the build.
fn read_options(p: &Path) -> StoreOptions {
    StoreOptions::new(p)
        .wal(false)
        .background_period(None)
        .compaction_threshold(usize::MAX)
}

/// N keys written once, in random order: first in the open layer, then flushed.
struct Latest {
    db: Db,
    lsn: Lsn,
    order: Vec<u32>,
    flushed: bool,
}

fn build_latest(rt: &Runtime, n: u64, pool: &Pool) -> Latest {
    let started = Instant::now();
    // Big enough that nothing is frozen: all N keys stay in the open in-memory layer.
    let db = Db::open(rt, |p| {
        read_options(p)
            .freeze_bytes(1 << 30)
            .block_cache_bytes(1 << 30)
    });
    let order = permutation(n, &mut Rng(SEED ^ 1));
    let mut w = db.tl.writer().expect("writer");
    let lsn = write_round(&mut w, &order, FIRST_LSN, 1, pool);
    drop(w);
    assert_eq!(
        db.tl.in_memory_layers(),
        1,
        "the dataset must stay in the open layer"
    );
    assert!(
        db.tl.layers().is_empty(),
        "the dataset must not be flushed yet"
    );
    println!(
        "  wrote {n} keys at LSNs {}..={lsn} into the open layer in {:.2?}",
        Lsn(FIRST_LSN),
        started.elapsed()
    );
    Latest {
        db,
        lsn,
        order,
        flushed: false,
    }
}

/// Every key written at round-1 LSNs, then again at round-2 LSNs, flushed into ~10 layers.
struct OldLsn {
    db: Db,
    read_lsn: Lsn,
    /// Keys with a version at or below `read_lsn`.
    visible: Vec<u32>,
}

fn build_old_lsn(rt: &Runtime, n: u64, pool: &Pool) -> OldLsn {
    let started = Instant::now();
    let versions = 2 * n as usize;
    let freeze = (versions * (KEY_LEN + VALUE_LEN + VERSION_OVERHEAD)).div_ceil(10);
    let db = Db::open(rt, |p| {
        read_options(p)
            .freeze_bytes(freeze)
            .block_cache_bytes(1 << 30)
    });
    let round1 = permutation(n, &mut Rng(SEED ^ 2));
    let round2 = permutation(n, &mut Rng(SEED ^ 3));
    let mut w = db.tl.writer().expect("writer");
    let end1 = write_round(&mut w, &round1, FIRST_LSN, 1, pool);
    let end2 = write_round(&mut w, &round2, end1.0 + 1, 2, pool);
    drop(w);
    rt.block_on(db.tl.flush()).expect("flush");
    let read_lsn = Lsn(FIRST_LSN + n / 2);
    let visible = round1[..=(n / 2) as usize].to_vec();
    let layers = db.tl.layers();
    let below = layers
        .iter()
        .filter(|l| l.lsn_range.start <= read_lsn)
        .count();
    println!(
        "  wrote {versions} versions (round 1 at {}..={end1}, round 2 to {end2}) into {} layer files \
         ({below} start at or below the read LSN {read_lsn}) in {:.2?}",
        Lsn(FIRST_LSN),
        layers.len(),
        started.elapsed()
    );
    warm_and_check(rt, &db.tl, read_lsn, &visible, 1, pool);
    OldLsn {
        db,
        read_lsn,
        visible,
    }
}

/// Times puts of 100-byte values to one store, sample after sample.
struct Ingest {
    db: Db,
    w: TimelineWriter,
    next_lsn: u64,
    rng: Rng,
    n: u64,
}

impl Ingest {
    fn new(rt: &Runtime, n: u64, fsync: FsyncPolicy) -> Ingest {
        let db = Db::open(rt, |p| StoreOptions::new(p).fsync_policy(fsync));
        let w = db.tl.writer().expect("writer");
        Ingest {
            db,
            w,
            next_lsn: FIRST_LSN,
            rng: Rng(SEED ^ 4),
            n,
        }
    }

    fn run(&mut self, iters: u64, pool: &Pool) -> Duration {
        // Outside the timed part: choose keys and give each value its own allocation.
        let batch: Vec<(u64, Bytes)> = (0..iters)
            .map(|j| {
                let i = self.rng.below(self.n);
                (i, pool.value(i, self.next_lsn + j))
            })
            .collect();
        let first = self.next_lsn;
        let start = Instant::now();
        for (j, (i, v)) in batch.into_iter().enumerate() {
            let lsn = Lsn(first + j as u64);
            self.w.put(&key(i), lsn, Value::Image(v)).expect("put");
            if (j as u64 + 1).is_multiple_of(BATCH) {
                self.w.finish_write(lsn).expect("finish_write");
            }
        }
        self.w
            .finish_write(Lsn(first + iters - 1))
            .expect("finish_write");
        let took = start.elapsed();
        self.next_lsn = first + iters;
        took
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // As criterion decides: without --bench (cargo test --benches), this is a quick test run.
    let test_mode = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test");
    let from_env = std::env::var("STRATAKV_BENCH_KEYS").ok();
    let n: u64 = match &from_env {
        Some(s) => s
            .trim()
            .replace('_', "")
            .parse()
            .expect("STRATAKV_BENCH_KEYS must be a number of keys"),
        None if test_mode => TEST_KEYS,
        None => FULL_KEYS,
    };
    assert!(
        (2 * BATCH..=u64::from(u32::MAX)).contains(&n),
        "STRATAKV_BENCH_KEYS must be in 200..=2^32-1"
    );
    let quick = n < FULL_KEYS;
    let cpu_clock = match std::env::var("STRATAKV_BENCH_CLOCK").as_deref() {
        Err(_) | Ok("wall") => false,
        Ok("thread-cpu") if cfg!(all(target_os = "linux", target_pointer_width = "64")) => true,
        Ok(other) => {
            panic!("STRATAKV_BENCH_CLOCK={other:?}: expected wall, or thread-cpu on 64-bit Linux")
        }
    };
    THREAD_CPU_CLOCK.store(cpu_clock, Ordering::Relaxed);
    println!(
        "StrataKV engine benchmarks: {n} keys of {KEY_LEN} B, values of {VALUE_LEN} B, seed {SEED:#018x}, \
         finish_write every {BATCH} puts, one thread{}; gets timed in {}",
        if quick { " (quick mode)" } else { "" },
        if cpu_clock {
            "thread CPU time"
        } else {
            "wall-clock time"
        }
    );

    let base = Criterion::default().without_plots();
    let base = if quick {
        base.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(1))
    } else {
        base.sample_size(50)
            .warm_up_time(Duration::from_secs(3))
            .measurement_time(Duration::from_secs(10))
    };
    let mut c = base.configure_from_args();

    let rt = runtime();
    let pool = Pool::new(SEED);

    // (a), (b): N keys, first in the open layer, then in a layer file.
    let mut latest: Option<Latest> = None;
    {
        let mut g = c.benchmark_group("get/latest");
        g.throughput(Throughput::Elements(1));
        g.bench_function("open_layer", |b| {
            let d = latest.get_or_insert_with(|| build_latest(&rt, n, &pool));
            assert!(!d.flushed);
            let mut rng = Rng(SEED ^ 5);
            b.iter_custom(|iters| time_gets(&rt, &d.db.tl, d.lsn, iters, &mut rng, |r| r.below(n)));
        });
        g.bench_function("disk", |b| {
            let d = latest.get_or_insert_with(|| build_latest(&rt, n, &pool));
            if !d.flushed {
                let started = Instant::now();
                rt.block_on(d.db.tl.flush()).expect("flush");
                assert_eq!(
                    d.db.tl.layers().len(),
                    1,
                    "one flush of the open layer makes one layer file"
                );
                println!(
                    "  flushed {n} keys to one layer file in {:.2?}",
                    started.elapsed()
                );
                warm_and_check(&rt, &d.db.tl, d.lsn, &d.order, 1, &pool);
                d.flushed = true;
            }
            let mut rng = Rng(SEED ^ 6);
            b.iter_custom(|iters| time_gets(&rt, &d.db.tl, d.lsn, iters, &mut rng, |r| r.below(n)));
        });
        g.finish();
    }
    if let Some(d) = latest.take() {
        d.db.close(&rt);
    }

    // (c): 2N versions in ~10 layers, read at an LSN in the middle of round 1.
    let mut old: Option<OldLsn> = None;
    {
        let mut g = c.benchmark_group("get/old_lsn");
        g.throughput(Throughput::Elements(1));
        g.bench_function("disk", |b| {
            let d = old.get_or_insert_with(|| build_old_lsn(&rt, n, &pool));
            let visible = &d.visible;
            let mut rng = Rng(SEED ^ 7);
            b.iter_custom(|iters| {
                time_gets(&rt, &d.db.tl, d.read_lsn, iters, &mut rng, |r| {
                    u64::from(visible[r.below(visible.len() as u64) as usize])
                })
            });
        });
        g.finish();
    }
    if let Some(d) = old.take() {
        d.db.close(&rt);
    }

    // (d): ingest with the write-ahead log on, background flush and compaction on; reported
    // as puts/s and as bytes/s without fsync, and as puts/s with an fsync at every commit.
    {
        let mut g = c.benchmark_group("ingest");
        if !quick {
            g.sample_size(20).measurement_time(Duration::from_secs(8));
        }
        let puts = Throughput::Elements(1);
        let bytes = Throughput::Bytes(VALUE_LEN as u64);
        for (name, throughput, fsync) in [
            ("100B", puts.clone(), FsyncPolicy::Never),
            ("100B_bytes", bytes, FsyncPolicy::Never),
            ("100B_fsync", puts, FsyncPolicy::EveryCommit),
        ] {
            let mut ingest: Option<Ingest> = None;
            g.throughput(throughput);
            g.bench_function(name, |b| {
                let s = ingest.get_or_insert_with(|| Ingest::new(&rt, n, fsync));
                b.iter_custom(|iters| s.run(iters, &pool));
            });
            if let Some(s) = ingest.take() {
                let Ingest {
                    db, w, next_lsn, ..
                } = s;
                drop(w);
                println!(
                    "  ingested {} puts up to LSN {}",
                    next_lsn - FIRST_LSN,
                    Lsn(next_lsn - 1)
                );
                db.close(&rt);
            }
        }
        g.finish();
    }

    c.final_summary();
}
