//! Engine benchmarks: get at an LSN (open layer, layer files with the block cache warm and off,
//! an old LSN, the tip of a 10-deep branch chain), `get_many`, `scan`, ingest, flush and
//! compaction.
//!
//! ```text
//! cargo bench --bench engine                                 # 1M keys, ~7 minutes on 2 cores
//! STRATAKV_BENCH_KEYS=20000 cargo bench --bench engine       # quick mode, shorter runs
//! cargo bench --bench engine -- get/latest                   # a subset (only its data is built)
//! STRATAKV_BENCH_CLOCK=thread-cpu cargo bench --bench engine # reads timed in thread CPU time
//! ```
//!
//! The dataset follows the targets' peer setup (README, "Benchmarks"): keys of 16 bytes (a big-endian index, then padding),
//! values of 100 bytes, one writer thread, a fixed seed. Every put gets its own LSN and
//! `finish_write` runs every 100 puts. Values are slices of a random pool copied into their own
//! allocation before the timer starts, so their bytes do not compress and the engine is not
//! charged for the caller's allocation. N is 1M keys (`STRATAKV_BENCH_KEYS` overrides it); every
//! size and seed is printed at the start and as each dataset is built.
//!
//! | benchmark | what is timed |
//! |---|---|
//! | `get/latest/open_layer` | `get` of a random key at the newest LSN; all N keys in the open in-memory layer |
//! | `get/latest/disk` | the same data after `flush()`: one layer file, block cache warm |
//! | `get/latest/disk_blocking` | as `get/latest/disk` (same data, same keys), through `Timeline::get_blocking` on the bench's thread instead of awaiting `get` on a runtime |
//! | `get/latest/disk_pgkeys` | as `get/latest/disk`, on its own N keys laid out as Postgres page keys: the first 9 bytes (kind, tablespace, database) the same for every key, then a relation number (a new one every 2^17 keys), a fork and the block number's low 3 bytes |
//! | `get/latest/disk_cold` | the same layer file with the block cache off (store reopened with `block_cache_bytes(0)`, which caches nothing): every `get` finds its block in the in-memory index, then checks its CRC and, if it was stored zstd-compressed, decompresses it, from the mmapped file, and parses it. The file is the flush's L0 layer, stored uncompressed by default (`StoreOptions::compress_l0`); before that default it was zstd level −1. "Cold" is the block cache only: the file's pages stay in the OS page cache, since dropping that needs root and would time the disk rather than the engine |
//! | `get/latest/disk_evicting` | the same layer file with a block cache of a quarter of its size: about three gets in four miss the cache, read their block as `disk_cold` does and cache it, evicting the oldest cached blocks; the cost of a read when the data outgrows the cache |
//! | `get/old_lsn/disk` | 2N versions written in two rounds, flushed into ~10 L0 layers (compaction off); `get` at an LSN in the middle of round 1, of keys that exist there |
//! | `get/branch_depth10` | N keys flushed on `main`, then a chain of 10 branches, each branched at its parent's newest LSN, overwriting a disjoint N/100 keys and flushed; `get` of a random key at the newest LSN of the deepest branch: 90% of reads fall through all 10 branches to `main`, the rest stop at the branch that wrote the key; block cache warm |
//! | `get_many/100` | `get_many` of 100 random keys at the newest LSN, on the flushed N-key layer file, block cache warm; reported as keys/s |
//! | `scan/1000` | `scan` of the 1,000 keys from a random key on, at the newest LSN, same data; reported as keys/s |
//! | `ingest/100B` | `put` of a 100-byte value, `finish_write` every 100 puts; default options (WAL, background flush and compaction on) except no fsync (`FsyncPolicy::Never`, as RocksDB's default `sync = false`); reported as puts/s |
//! | `ingest/100B_bytes` | the same, reported as value bytes/s |
//! | `ingest/100B_one_core` | as `ingest/100B_bytes` with nothing frozen, flushed or compacted (`background_period(None)`, `freeze_bytes` 4 GiB): the put path alone, WAL included, on the one core of the writer thread; a fresh store (untimed) once one holds 4Mi puts; reported as value bytes/s |
//! | `ingest/100B_fsync` | the same with the default `FsyncPolicy::EveryCommit`: one WAL fsync per 100 puts |
//! | `ingest/8KiB` | as `ingest/100B` with 8 KiB values; fewer, shorter samples, so a full run writes a few GB at most |
//! | `ingest/8KiB_bytes` | the same, reported as value bytes/s |
//! | `flush/100B` | `flush()` of an open layer holding min(N, 256Ki) puts of 100-byte values at distinct keys (write-ahead log and background work off), from the freeze to the L0 file being published; each iteration writes its data into a fresh store untimed; reported as key + value bytes/s |
//! | `compaction/l0_to_l1` | `compact()` merging 4 L0 layers of min(N, 64Ki) random keys each into L1 (image layers off, default 64 MiB target layer size); each iteration builds its layers in a fresh store untimed; reported as input layer file bytes/s |
//! | branch creation at two data sizes | see `benches/history.rs` (`branch/create/...`) |
//! | GC passes, space after GC | see `benches/history.rs` (`space_after_gc`) |
//!
//! Datasets are built once, before their benchmarks and outside the timed part, except the
//! inputs of `flush` and `compaction`, which each iteration consumes and rebuilds untimed (one
//! compaction input is built up front even when filtered out, to size its throughput). Answers
//! are checked once per dataset, outside the timed part. `flush` and `compaction` take 10 flat
//! samples of one iteration each in a full run; criterion warns that they overrun its target
//! time, which is expected: a longer target would only repeat the untimed rebuilds.
//!
//! The read benchmarks run on one thread with no background work, and so does
//! `ingest/100B_one_core` (its log writes included), so on a machine shared with other jobs
//! `STRATAKV_BENCH_CLOCK=thread-cpu` (Linux) times them in the CPU time of that thread, kernel
//! time included: time spent descheduled is not charged to the engine (caches shared with the
//! other jobs still are). The other ingest benchmarks, flush and compaction are always timed in
//! wall-clock time, since they run on other threads.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput};
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
/// Length of the values of `ingest/8KiB`.
const BIG_VALUE_LEN: usize = 8 << 10;
/// Keys per `get_many` call.
const GET_MANY_KEYS: usize = 100;
/// Keys per scan (at most N).
const SCAN_KEYS: u64 = 1000;
/// Branches in the chain `get/branch_depth10` reads through.
const BRANCH_DEPTH: u64 = 10;
/// Each branch of that chain overwrites N / this many keys.
const BRANCH_WRITE_DIVISOR: u64 = 100;
/// Keys read and checked after reopening with the block cache off (at most N).
const COLD_CHECK_KEYS: usize = 10_000;
/// Puts in the open layer each `flush/100B` iteration flushes (at most N).
const FLUSH_PUTS: u64 = 1 << 18;
/// L0 layers each `compaction/l0_to_l1` iteration merges, and distinct keys per layer (at most N).
const COMPACT_LAYERS: u64 = 4;
const COMPACT_LAYER_KEYS: u64 = 1 << 16;
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
    if PG_KEYS.load(Ordering::Relaxed) {
        // Laid out as a Postgres page key: kind, tablespace, database (the same for every
        // key), relation (a new one every 2^17 keys), fork, then the block number's low bytes.
        k[..9].copy_from_slice(&[0, 0, 0, 0x06, 0x7f, 0, 0, 0, 5]);
        k[9..13].copy_from_slice(&(16384 + (i >> 17) as u32).to_be_bytes());
        k[13..16].copy_from_slice(&(i as u32 & 0x1_FFFF).to_be_bytes()[1..]);
    } else {
        k[..8].copy_from_slice(&i.to_be_bytes());
    }
    k
}

/// Whether [`key`] lays keys out as Postgres page keys (`get/latest/disk_pgkeys`).
static PG_KEYS: AtomicBool = AtomicBool::new(false);

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
        self.value_of_len(i, round, VALUE_LEN)
    }

    /// [`value`](Pool::value), `len` bytes long.
    fn value_of_len(&self, i: u64, round: u64, len: usize) -> Bytes {
        let at = (mix(SEED ^ i ^ (round << 40)) % (POOL_LEN - len) as u64) as usize;
        Bytes::copy_from_slice(&self.0[at..at + len])
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
    dir: tempfile::TempDir,
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
            dir,
            store: Some(store),
            tl,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open store")
    }

    /// Closes the store and opens it again, from the same directory, with other options.
    fn reopen(&mut self, rt: &Runtime, options: impl FnOnce(&Path) -> StoreOptions) {
        let store = self.store.take().expect("open store");
        rt.block_on(store.close()).expect("close store");
        let (store, tl) = rt.block_on(async {
            let store = Store::open(options(self.dir.path()))
                .await
                .expect("reopen store");
            let tl = store.timeline("main").expect("timeline main");
            (store, tl)
        });
        self.store = Some(store);
        self.tl = tl;
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

/// The clock reads and the one-core put path are timed with: wall-clock time, or with
/// `STRATAKV_BENCH_CLOCK=thread-cpu` the CPU time of the calling thread (the current-thread
/// runtime polls the reads on it; the writer writes the log on it).
struct ReadClock {
    wall: Instant,
    cpu: Option<Duration>,
}

impl ReadClock {
    fn start() -> ReadClock {
        ReadClock {
            wall: Instant::now(),
            cpu: THREAD_CPU_CLOCK
                .load(Ordering::Relaxed)
                .then(thread_cpu_time),
        }
    }

    /// Wall-clock time whatever the setting: for work that runs on other threads too.
    fn wall() -> ReadClock {
        ReadClock {
            wall: Instant::now(),
            cpu: None,
        }
    }

    fn elapsed(&self) -> Duration {
        match self.cpu {
            Some(start) => thread_cpu_time() - start,
            None => self.wall.elapsed(),
        }
    }
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
    rt.block_on(async {
        let clock = ReadClock::start();
        for _ in 0..iters {
            let k = key(pick(rng));
            black_box(tl.get(black_box(&k), lsn).await.expect("get"));
        }
        clock.elapsed()
    })
}

/// Times `iters` calls of `get_many` of [`GET_MANY_KEYS`] random keys below `n` at `lsn`.
fn time_get_many(
    rt: &Runtime,
    tl: &Timeline,
    lsn: Lsn,
    iters: u64,
    rng: &mut Rng,
    n: u64,
) -> Duration {
    rt.block_on(async {
        let clock = ReadClock::start();
        for _ in 0..iters {
            let keys: [[u8; KEY_LEN]; GET_MANY_KEYS] = std::array::from_fn(|_| key(rng.below(n)));
            black_box(
                tl.get_many(black_box(&keys[..]), lsn)
                    .await
                    .expect("get_many"),
            );
        }
        clock.elapsed()
    })
}

/// Times `iters` scans of the `len` keys from a random key below `n - len` on, at `lsn`.
fn time_scans(
    rt: &Runtime,
    tl: &Timeline,
    lsn: Lsn,
    iters: u64,
    rng: &mut Rng,
    n: u64,
    len: u64,
) -> Duration {
    rt.block_on(async {
        let clock = ReadClock::start();
        for _ in 0..iters {
            let from = rng.below(n - len + 1);
            let range = key(from)..key(from + len);
            black_box(tl.scan(black_box(range), lsn).await.expect("scan"));
        }
        clock.elapsed()
    })
}

/// Reads every key once, checking its value (written in round `round_of(key)`), so the block
/// cache is warm and the data right.
fn warm_and_check(
    rt: &Runtime,
    tl: &Timeline,
    lsn: Lsn,
    keys: &[u32],
    round_of: impl Fn(u32) -> u64,
    pool: &Pool,
) {
    let started = Instant::now();
    rt.block_on(async {
        for &i in keys {
            let got = tl.get(&key(u64::from(i)), lsn).await.expect("get");
            assert_eq!(
                got.as_deref(),
                Some(&pool.value(u64::from(i), round_of(i))[..]),
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

/// Where the [`Latest`] dataset is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// In the open in-memory layer.
    Open,
    /// In one layer file, block cache warm.
    Warm,
    /// In one layer file, the store reopened with the block cache off.
    Cold,
    /// In one layer file, the store reopened with a block cache of a quarter of the file.
    Evicting,
}

/// N keys written once, in random order: first in the open layer, then flushed.
struct Latest {
    db: Db,
    lsn: Lsn,
    order: Vec<u32>,
    stage: Stage,
}

/// Options of the [`Latest`] store: a block cache of `cache` bytes and an open layer big enough
/// that nothing is frozen: all N keys stay in it until `flush()`.
fn latest_options(cache: usize) -> impl FnOnce(&Path) -> StoreOptions {
    move |p| {
        read_options(p)
            .freeze_bytes(1 << 30)
            .block_cache_bytes(cache)
    }
}

fn build_latest(rt: &Runtime, n: u64, pool: &Pool) -> Latest {
    let started = Instant::now();
    let db = Db::open(rt, latest_options(1 << 30));
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
        stage: Stage::Open,
    }
}

impl Latest {
    /// Brings the dataset to `stage`, checking it on the way: flushed, then with the block cache
    /// warm or off (by reopening the store). The open layer cannot come back once flushed.
    fn reach(&mut self, rt: &Runtime, stage: Stage, pool: &Pool) {
        if self.stage == stage {
            return;
        }
        assert_ne!(stage, Stage::Open, "the dataset was flushed already");
        let n = self.order.len();
        if self.stage == Stage::Open {
            let started = Instant::now();
            rt.block_on(self.db.tl.flush()).expect("flush");
            let layers = self.db.tl.layers();
            assert_eq!(
                layers.len(),
                1,
                "one flush of the open layer makes one layer file"
            );
            println!(
                "  flushed {n} keys to one layer file of {} bytes ({} of keys and values) in {:.2?}",
                layers[0].file_size,
                n * (KEY_LEN + VALUE_LEN),
                started.elapsed()
            );
            warm_and_check(rt, &self.db.tl, self.lsn, &self.order, |_| 1, pool);
            self.stage = Stage::Warm;
            if stage == Stage::Warm {
                return;
            }
        }
        let started = Instant::now();
        let cache = match stage {
            Stage::Cold => 0,
            Stage::Evicting => self.db.tl.layers()[0].file_size as usize / 4,
            Stage::Open | Stage::Warm => 1 << 30,
        };
        self.db.reopen(rt, latest_options(cache));
        assert_eq!(self.db.tl.last_record_lsn(), self.lsn);
        assert_eq!(self.db.tl.layers().len(), 1);
        println!(
            "  reopened the store with a block cache of {cache} bytes in {:.2?}",
            started.elapsed()
        );
        // Cold reads are slow: check a sample. Warm ones read every key, to fill the cache.
        let check = if stage != Stage::Warm {
            &self.order[..n.min(COLD_CHECK_KEYS)]
        } else {
            &self.order[..]
        };
        warm_and_check(rt, &self.db.tl, self.lsn, check, |_| 1, pool);
        self.stage = stage;
    }
}

/// Checks one `get_many` of [`GET_MANY_KEYS`] random keys below `n` against the pool.
fn check_get_many(rt: &Runtime, tl: &Timeline, lsn: Lsn, n: u64, pool: &Pool) {
    let mut rng = Rng(SEED ^ 12);
    let picked: Vec<u64> = (0..GET_MANY_KEYS).map(|_| rng.below(n)).collect();
    let keys: Vec<[u8; KEY_LEN]> = picked.iter().map(|&i| key(i)).collect();
    let got = rt.block_on(tl.get_many(&keys, lsn)).expect("get_many");
    assert_eq!(got.len(), GET_MANY_KEYS);
    for (&i, v) in picked.iter().zip(&got) {
        assert_eq!(
            v.as_deref(),
            Some(&pool.value(i, 1)[..]),
            "key {i} at {lsn}"
        );
    }
    println!("  checked a get_many of {GET_MANY_KEYS} keys at {lsn}");
}

/// Checks scans of `len` keys from the first key, the last `len` keys and a random key on.
fn check_scans(rt: &Runtime, tl: &Timeline, lsn: Lsn, n: u64, len: u64, pool: &Pool) {
    for from in [0, n - len, Rng(SEED ^ 13).below(n - len + 1)] {
        let got = rt
            .block_on(tl.scan(key(from)..key(from + len), lsn))
            .expect("scan");
        assert_eq!(
            got.len() as u64,
            len,
            "a scan of {len} keys from key {from} at {lsn}"
        );
        for (j, (k, v)) in got.iter().enumerate() {
            let i = from + j as u64;
            assert_eq!(&k[..], &key(i)[..], "key {j} of the scan from key {from}");
            assert_eq!(&v[..], &pool.value(i, 1)[..], "value of key {i}");
        }
    }
    println!("  checked 3 scans of {len} keys at {lsn}, each returning exactly {len} entries");
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
    warm_and_check(rt, &db.tl, read_lsn, &visible, |_| 1, pool);
    OldLsn {
        db,
        read_lsn,
        visible,
    }
}

/// N keys flushed on `main`, then a chain of [`BRANCH_DEPTH`] branches, each branched at its
/// parent's newest LSN and overwriting a disjoint N / [`BRANCH_WRITE_DIVISOR`] keys, flushed.
struct BranchChain {
    db: Db,
    /// The deepest branch, and its newest LSN.
    tip: Timeline,
    lsn: Lsn,
}

fn build_branch_chain(rt: &Runtime, n: u64, pool: &Pool) -> BranchChain {
    let started = Instant::now();
    let db = Db::open(rt, latest_options(1 << 30));
    let order = permutation(n, &mut Rng(SEED ^ 8));
    let mut w = db.tl.writer().expect("writer");
    let mut lsn = write_round(&mut w, &order, FIRST_LSN, 1, pool);
    drop(w);
    rt.block_on(db.tl.flush()).expect("flush");
    // The round each key's newest value was written in: 1 on `main`, 1 + d on branch d.
    let mut rounds = vec![1u8; n as usize];
    let per_branch = (n / BRANCH_WRITE_DIVISOR).max(1) as usize;
    let overwrite = permutation(n, &mut Rng(SEED ^ 9));
    let mut tip = db.tl.clone();
    for d in 1..=BRANCH_DEPTH {
        let keys = &overwrite[(d as usize - 1) * per_branch..d as usize * per_branch];
        let tl = rt
            .block_on(db.store().branch(&format!("branch{d}"), &tip, lsn))
            .expect("branch");
        let mut w = tl.writer().expect("writer");
        lsn = write_round(&mut w, keys, lsn.0 + 1, 1 + d, pool);
        drop(w);
        rt.block_on(tl.flush()).expect("flush");
        assert_eq!(tl.layers().len(), 1, "branch {d} has one layer file");
        for &i in keys {
            rounds[i as usize] = 1 + d as u8;
        }
        tip = tl;
    }
    println!(
        "  wrote {n} keys on main at LSNs {}..={}, then {BRANCH_DEPTH} branches each \
         overwriting {per_branch} keys, one layer file each, up to LSN {lsn}, in {:.2?}",
        Lsn(FIRST_LSN),
        Lsn(FIRST_LSN + n - 1),
        started.elapsed()
    );
    // A key no branch wrote goes down the whole chain.
    let untouched = overwrite[BRANCH_DEPTH as usize * per_branch];
    let (_, trace) = rt
        .block_on(tip.get_traced(&key(u64::from(untouched)), lsn))
        .expect("get");
    println!(
        "  a get of a key no branch wrote visits {} layers, descending into {} ancestors",
        trace.layers_visited, trace.ancestors_visited
    );
    warm_and_check(
        rt,
        &tip,
        lsn,
        &order,
        |i| u64::from(rounds[i as usize]),
        pool,
    );
    BranchChain { db, tip, lsn }
}

/// Times puts of `value_len`-byte values to one store, sample after sample.
struct Ingest {
    db: Db,
    w: TimelineWriter,
    next_lsn: u64,
    rng: Rng,
    n: u64,
    value_len: usize,
    fsync: FsyncPolicy,
    /// Puts only: nothing frozen, flushed or compacted; see `ingest/100B_one_core`.
    puts_only: bool,
    /// The LSN of the store's first put.
    store_first_lsn: u64,
}

/// Puts after which `ingest/100B_one_core` starts a fresh store before its next sample, so
/// that its open layer holds at most a few million versions (about 1 GiB).
const ONE_CORE_PUTS_PER_STORE: u64 = 4 << 20;

impl Ingest {
    fn new(rt: &Runtime, n: u64, value_len: usize, fsync: FsyncPolicy, puts_only: bool) -> Ingest {
        let (db, w) = Self::open(rt, fsync, puts_only);
        Ingest {
            db,
            w,
            next_lsn: FIRST_LSN,
            rng: Rng(SEED ^ 4),
            n,
            value_len,
            fsync,
            puts_only,
            store_first_lsn: FIRST_LSN,
        }
    }

    fn open(rt: &Runtime, fsync: FsyncPolicy, puts_only: bool) -> (Db, TimelineWriter) {
        let db = Db::open(rt, |p| {
            let o = StoreOptions::new(p).fsync_policy(fsync);
            if puts_only {
                o.background_period(None).freeze_bytes(4 << 30)
            } else {
                o
            }
        });
        let w = db.tl.writer().expect("writer");
        (db, w)
    }

    /// Untimed: a fresh store once this one's open layer holds enough (puts only).
    fn renew_if_full(&mut self, rt: &Runtime) {
        if self.puts_only && self.next_lsn - self.store_first_lsn >= ONE_CORE_PUTS_PER_STORE {
            let (db, w) = Self::open(rt, self.fsync, true);
            let old = std::mem::replace(&mut self.db, db);
            drop(std::mem::replace(&mut self.w, w));
            old.close(rt);
            self.store_first_lsn = self.next_lsn;
        }
    }

    fn run(&mut self, iters: u64, pool: &Pool) -> Duration {
        // Outside the timed part: choose keys and give each value its own allocation.
        let batch: Vec<(u64, Bytes)> = (0..iters)
            .map(|j| {
                let i = self.rng.below(self.n);
                (i, pool.value_of_len(i, self.next_lsn + j, self.value_len))
            })
            .collect();
        let first = self.next_lsn;
        // With nothing frozen, every put, commit and log write runs on this thread.
        let clock = if self.puts_only {
            ReadClock::start()
        } else {
            ReadClock::wall()
        };
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
        let took = clock.elapsed();
        self.next_lsn = first + iters;
        took
    }
}

/// Writes `keys` into the open layer of a fresh store (untimed), then times its `flush()`.
/// Returns the time and the size of the layer file written.
fn time_flush(rt: &Runtime, keys: &[u32], pool: &Pool) -> (Duration, u64) {
    let db = Db::open(rt, |p| read_options(p).freeze_bytes(1 << 30));
    let mut w = db.tl.writer().expect("writer");
    let lsn = write_round(&mut w, keys, FIRST_LSN, 1, pool);
    drop(w);
    assert!(db.tl.layers().is_empty());
    let start = Instant::now();
    let flushed = rt.block_on(db.tl.flush()).expect("flush");
    let took = start.elapsed();
    assert_eq!(flushed, lsn);
    let layers = db.tl.layers();
    assert_eq!(layers.len(), 1);
    let size = layers[0].file_size;
    db.close(rt);
    (took, size)
}

/// A store holding [`COMPACT_LAYERS`] L0 layers, layer `r` written in round `r + 1`.
struct CompactionInput {
    db: Db,
    /// Bytes of the L0 layer files.
    input_bytes: u64,
}

fn build_compaction_input(rt: &Runtime, layers: &[Vec<u32>], pool: &Pool) -> CompactionInput {
    let db = Db::open(rt, |p| {
        read_options(p)
            .freeze_bytes(1 << 30)
            .image_threshold_bytes(u64::MAX)
    });
    let mut w = db.tl.writer().expect("writer");
    let mut next = FIRST_LSN;
    for (r, keys) in layers.iter().enumerate() {
        next = write_round(&mut w, keys, next, r as u64 + 1, pool).0 + 1;
        rt.block_on(db.tl.flush()).expect("flush");
    }
    drop(w);
    let files = db.tl.layers();
    assert_eq!(files.len(), layers.len());
    assert!(files.iter().all(|l| l.level == 0), "flushes make L0 layers");
    let input_bytes = files.iter().map(|l| l.file_size).sum();
    CompactionInput { db, input_bytes }
}

/// Times `compact()` of `input`; the first time (`check`), reads back every key written.
fn time_compaction(
    rt: &Runtime,
    input: CompactionInput,
    layers: &[Vec<u32>],
    check: bool,
    pool: &Pool,
) -> Duration {
    let CompactionInput { db, input_bytes } = input;
    let start = Instant::now();
    let report = rt.block_on(db.tl.compact()).expect("compact");
    let took = start.elapsed();
    assert_eq!(report.l0_merged, layers.len(), "{report:?}");
    assert_eq!(report.image_at, None, "{report:?}");
    if check {
        let files = db.tl.layers();
        assert!(
            files.iter().all(|l| l.level == 1),
            "compaction makes L1 layers"
        );
        println!(
            "  compacted {} L0 layers of {input_bytes} bytes into {} L1 layers of {} bytes in {took:.2?}",
            layers.len(),
            files.len(),
            files.iter().map(|l| l.file_size).sum::<u64>()
        );
        let mut newest = std::collections::BTreeMap::new();
        for (r, keys) in layers.iter().enumerate() {
            for &i in keys {
                newest.insert(i, r as u64 + 1);
            }
        }
        let keys: Vec<u32> = newest.keys().copied().collect();
        let lsn = db.tl.last_record_lsn();
        warm_and_check(rt, &db.tl, lsn, &keys, |i| newest[&i], pool);
    }
    db.close(rt);
    took
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
    let scan_keys = SCAN_KEYS.min(n);
    let flush_puts = FLUSH_PUTS.min(n);
    let compact_keys = COMPACT_LAYER_KEYS.min(n);
    let per_branch = (n / BRANCH_WRITE_DIVISOR).max(1);
    println!(
        "  get_many of {GET_MANY_KEYS} keys; scans of {scan_keys} keys; {BRANCH_DEPTH} branches \
         overwriting {per_branch} keys each; ingest of {VALUE_LEN} B and {BIG_VALUE_LEN} B values \
         at keys below {n}; flush of {flush_puts} puts; compaction of {COMPACT_LAYERS} L0 layers \
         of {compact_keys} keys"
    );

    // (a), (b): N keys, first in the open layer, then in a layer file, block cache warm.
    let mut latest: Option<Latest> = None;
    {
        let mut g = c.benchmark_group("get/latest");
        g.throughput(Throughput::Elements(1));
        g.bench_function("open_layer", |b| {
            let d = latest.get_or_insert_with(|| build_latest(&rt, n, &pool));
            assert_eq!(d.stage, Stage::Open);
            let mut rng = Rng(SEED ^ 5);
            b.iter_custom(|iters| time_gets(&rt, &d.db.tl, d.lsn, iters, &mut rng, |r| r.below(n)));
        });
        g.bench_function("disk", |b| {
            let d = latest.get_or_insert_with(|| build_latest(&rt, n, &pool));
            d.reach(&rt, Stage::Warm, &pool);
            let mut rng = Rng(SEED ^ 6);
            b.iter_custom(|iters| time_gets(&rt, &d.db.tl, d.lsn, iters, &mut rng, |r| r.below(n)));
        });
        // The same reads through the blocking call, from the bench's own thread, no runtime.
        g.bench_function("disk_blocking", |b| {
            let d = latest.get_or_insert_with(|| build_latest(&rt, n, &pool));
            d.reach(&rt, Stage::Warm, &pool);
            let mut rng = Rng(SEED ^ 6);
            b.iter_custom(|iters| {
                let clock = ReadClock::start();
                for _ in 0..iters {
                    let k = key(rng.below(n));
                    black_box(d.db.tl.get_blocking(black_box(&k), d.lsn).expect("get"));
                }
                clock.elapsed()
            });
        });
        // The same with keys that share their first 9 bytes, as a table's keys do.
        let mut pg: Option<Latest> = None;
        g.bench_function("disk_pgkeys", |b| {
            PG_KEYS.store(true, Ordering::Relaxed);
            let d = pg.get_or_insert_with(|| build_latest(&rt, n, &pool));
            d.reach(&rt, Stage::Warm, &pool);
            let mut rng = Rng(SEED ^ 7);
            b.iter_custom(|iters| time_gets(&rt, &d.db.tl, d.lsn, iters, &mut rng, |r| r.below(n)));
            PG_KEYS.store(false, Ordering::Relaxed);
        });
        g.finish();
    }

    // get_many and scan on the same layer file, block cache warm.
    {
        let mut g = c.benchmark_group("get_many");
        g.throughput(Throughput::Elements(GET_MANY_KEYS as u64));
        let mut rng = Rng(SEED ^ 10);
        let mut checked = false;
        g.bench_function(GET_MANY_KEYS.to_string(), |b| {
            let d = latest.get_or_insert_with(|| build_latest(&rt, n, &pool));
            d.reach(&rt, Stage::Warm, &pool);
            if !checked {
                check_get_many(&rt, &d.db.tl, d.lsn, n, &pool);
                checked = true;
            }
            b.iter_custom(|iters| time_get_many(&rt, &d.db.tl, d.lsn, iters, &mut rng, n));
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("scan");
        g.throughput(Throughput::Elements(scan_keys));
        let mut rng = Rng(SEED ^ 11);
        let mut checked = false;
        g.bench_function(SCAN_KEYS.to_string(), |b| {
            let d = latest.get_or_insert_with(|| build_latest(&rt, n, &pool));
            d.reach(&rt, Stage::Warm, &pool);
            if !checked {
                check_scans(&rt, &d.db.tl, d.lsn, n, scan_keys, &pool);
                checked = true;
            }
            b.iter_custom(|iters| time_scans(&rt, &d.db.tl, d.lsn, iters, &mut rng, n, scan_keys));
        });
        g.finish();
    }

    // (b'): the same layer file with the block cache off, then with a quarter of its size.
    {
        let mut g = c.benchmark_group("get/latest");
        g.throughput(Throughput::Elements(1));
        let mut rng = Rng(SEED ^ 14);
        g.bench_function("disk_cold", |b| {
            let d = latest.get_or_insert_with(|| build_latest(&rt, n, &pool));
            d.reach(&rt, Stage::Cold, &pool);
            b.iter_custom(|iters| time_gets(&rt, &d.db.tl, d.lsn, iters, &mut rng, |r| r.below(n)));
        });
        g.bench_function("disk_evicting", |b| {
            let d = latest.get_or_insert_with(|| build_latest(&rt, n, &pool));
            d.reach(&rt, Stage::Evicting, &pool);
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

    // N keys on main read at the tip of a chain of 10 branches.
    let mut chain: Option<BranchChain> = None;
    {
        let mut g = c.benchmark_group("get");
        g.throughput(Throughput::Elements(1));
        let mut rng = Rng(SEED ^ 15);
        g.bench_function(format!("branch_depth{BRANCH_DEPTH}"), |b| {
            let d = chain.get_or_insert_with(|| build_branch_chain(&rt, n, &pool));
            b.iter_custom(|iters| time_gets(&rt, &d.tip, d.lsn, iters, &mut rng, |r| r.below(n)));
        });
        g.finish();
    }
    if let Some(d) = chain.take() {
        drop(d.tip);
        d.db.close(&rt);
    }

    // (d): ingest with the write-ahead log on, background flush and compaction on; reported
    // as puts/s and as bytes/s without fsync, and as puts/s with an fsync at every commit;
    // then the same without fsync with 8 KiB values.
    {
        let mut g = c.benchmark_group("ingest");
        if !quick {
            g.sample_size(20).measurement_time(Duration::from_secs(8));
        }
        let puts = Throughput::Elements(1);
        for (name, throughput, value_len, fsync, puts_only) in [
            ("100B", puts.clone(), VALUE_LEN, FsyncPolicy::Never, false),
            (
                "100B_bytes",
                Throughput::Bytes(VALUE_LEN as u64),
                VALUE_LEN,
                FsyncPolicy::Never,
                false,
            ),
            (
                "100B_one_core",
                Throughput::Bytes(VALUE_LEN as u64),
                VALUE_LEN,
                FsyncPolicy::Never,
                true,
            ),
            (
                "100B_fsync",
                puts.clone(),
                VALUE_LEN,
                FsyncPolicy::EveryCommit,
                false,
            ),
            ("8KiB", puts, BIG_VALUE_LEN, FsyncPolicy::Never, false),
            (
                "8KiB_bytes",
                Throughput::Bytes(BIG_VALUE_LEN as u64),
                BIG_VALUE_LEN,
                FsyncPolicy::Never,
                false,
            ),
        ] {
            if value_len == BIG_VALUE_LEN && !quick {
                // Bounds what a run writes: ~7 s at a few hundred MB/s, WAL included.
                g.sample_size(10)
                    .warm_up_time(Duration::from_secs(2))
                    .measurement_time(Duration::from_secs(5));
            }
            let mut ingest: Option<Ingest> = None;
            g.throughput(throughput);
            g.bench_function(name, |b| {
                let s =
                    ingest.get_or_insert_with(|| Ingest::new(&rt, n, value_len, fsync, puts_only));
                b.iter_custom(|iters| {
                    s.renew_if_full(&rt);
                    s.run(iters, &pool)
                });
            });
            if let Some(s) = ingest.take() {
                let Ingest {
                    db, w, next_lsn, ..
                } = s;
                drop(w);
                let puts = next_lsn - FIRST_LSN;
                let files = db.tl.layers();
                println!(
                    "  ingested {puts} puts ({} MiB of values) up to LSN {}; {} layer files of {} MiB",
                    (puts * value_len as u64) >> 20,
                    Lsn(next_lsn - 1),
                    files.len(),
                    files.iter().map(|l| l.file_size).sum::<u64>() >> 20
                );
                db.close(&rt);
            }
        }
        g.finish();
    }

    // Flush and compaction: each iteration consumes its input, built untimed; few, flat samples.
    let flush_keys = {
        let mut p = permutation(n, &mut Rng(SEED ^ 16));
        p.truncate(flush_puts as usize);
        p
    };
    {
        let mut g = c.benchmark_group("flush");
        g.sampling_mode(SamplingMode::Flat);
        if !quick {
            g.sample_size(10)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(2));
        }
        g.throughput(Throughput::Bytes(flush_puts * (KEY_LEN + VALUE_LEN) as u64));
        let mut printed = false;
        g.bench_function("100B", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (took, size) = time_flush(&rt, &flush_keys, &pool);
                    if !printed {
                        println!(
                            "  flushed {flush_puts} puts ({} bytes of keys and values) to a layer file of {size} bytes in {took:.2?}",
                            flush_puts * (KEY_LEN + VALUE_LEN) as u64
                        );
                        printed = true;
                    }
                    total += took;
                }
                total
            });
        });
        g.finish();
    }

    let compact_layers: Vec<Vec<u32>> = (0..COMPACT_LAYERS)
        .map(|r| {
            let mut p = permutation(n, &mut Rng(SEED ^ (17 + r)));
            p.truncate(compact_keys as usize);
            p
        })
        .collect();
    {
        // Built up front, even when filtered out: its file sizes are the throughput.
        let started = Instant::now();
        let mut first = Some(build_compaction_input(&rt, &compact_layers, &pool));
        let input_bytes = first.as_ref().map_or(0, |i| i.input_bytes);
        println!(
            "  wrote {COMPACT_LAYERS} L0 layers of {compact_keys} keys each ({input_bytes} bytes) in {:.2?}",
            started.elapsed()
        );
        let mut g = c.benchmark_group("compaction");
        g.sampling_mode(SamplingMode::Flat);
        if !quick {
            g.sample_size(10)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(3));
        }
        g.throughput(Throughput::Bytes(input_bytes));
        let mut checked = false;
        g.bench_function("l0_to_l1", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let input = first
                        .take()
                        .unwrap_or_else(|| build_compaction_input(&rt, &compact_layers, &pool));
                    assert_eq!(input.input_bytes, input_bytes, "the same input every time");
                    total += time_compaction(&rt, input, &compact_layers, !checked, &pool);
                    checked = true;
                }
                total
            });
        });
        g.finish();
        if let Some(input) = first.take() {
            input.db.close(&rt);
        }
    }

    c.final_summary();
}
