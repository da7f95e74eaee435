//! StrataKV against RocksDB, fjall and SlateDB, on the same data, in one run.
//!
//! ```text
//! cd benches/peers && nice -n 10 cargo run --release -- [--keys N] [--rounds R] [--gets G] [--only ENGINE,..]
//! ```
//!
//! It has to run from `benches/peers`: `.cargo/config.toml` there makes librocksdb-sys link
//! Debian's `librocksdb-dev` instead of compiling RocksDB's C++ sources (it needs
//! `apt-get install librocksdb-dev libclang-dev`). `--no-default-features`
//! leaves RocksDB and SlateDB out; `--features rocksdb` or `--features slatedb` takes one back.
//! A full run (no `--only`) writes `benches/BENCHMARKS.md` and `benches/get_latency.svg`.
//!
//! `--durable [SECS]` runs only the comparison of ingest acknowledged in object storage:
//! StrataKV at `Durability::Remote` beside SlateDB awaiting durability, on a local-folder
//! object store, 1 and 8 writers, a commit every 1, 10 and 100 puts, SECS (default 3) per case
//! (see `src/durable.rs`); it prints a Markdown table and writes it to
//! `target/partial/DURABLE.md`.
//!
//! Data (identical for every engine): N keys of 16 bytes (index big-endian, then `.` padding),
//! R rounds, each overwriting every key once in its own seeded shuffled order; every put has
//! its own LSN (round r takes LSNs FIRST + r·N .. FIRST + (r+1)·N); values of 100 bytes cut
//! from a seeded random pool (incompressible). One writer thread. Every engine is flushed to
//! disk after every round, so the versions of each round land in their own files.
//!
//! * StrataKV: `put(key, lsn, Value::image(..))`, `finish_write` every 1000 puts, WAL on without
//!   fsync (`FsyncPolicy::Never`: the peers' default writes do not sync either), no periodic
//!   background work (`background_period(None)`; a flush that leaves 4 L0 layers still kicks a
//!   compaction, as documented); `flush()` after each round; `get(key, lsn)`. How many layers a get visited is counted with `get_traced` (untimed);
//!   with `STRATAKV_PEERS_LAYERS=1` the harness also prints StrataKV's layers at read time and
//!   the trace of every traced get that visited more than one.
//! * Peers store versions as a user would: key ‖ big-endian (u64::MAX − lsn), so that a key's
//!   versions sort newest first; "get as of LSN" = seek to key ‖ inv(lsn) and take the first
//!   entry if it is still the same key (RocksDB: raw iterator with an upper bound; fjall:
//!   `range(..).next()`; SlateDB: `scan(..)` and the first item). Their background flushes and
//!   compactions run as configured by default; the harness waits for them to settle before
//!   timing reads.
//! * RocksDB also runs a second time with user-defined timestamps (LSN as an 8-byte timestamp,
//!   read with `ReadOptions::timestamp`), through the C API, as the Rust crate does not expose
//!   them.
//!
//! Reads: after the last round, for every round from the newest to the oldest, G random keys
//! (the same for every engine and round) are read as of that round's last LSN, once untimed
//! (warm-up) and once timed in batches of 100 (per-op latency = batch / 100; the p99 is the
//! 99th percentile of those batch means). Every answer is checked against the data. The
//! process CPU time (all threads) of each batch and of the put phases is recorded too: on a
//! shared machine it moves less than the wall clock.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratakv::{FsyncPolicy, Lsn, Store, StoreOptions, Timeline, TimelineWriter, Value};

mod durable;

const SEED: u64 = 0x5EED_57A7_A0C0_FFEE;
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
const POOL_LEN: usize = 1 << 20;
const FIRST_LSN: u64 = 0x1000;
const COMMIT_EVERY: u64 = 1000;
const BATCH: usize = 100;
const CACHE_BYTES: usize = 256 << 20;
/// Reads per round whose layer depth StrataKV reports (`get_traced`, untimed).
const TRACE_READS: usize = 1000;

const DEFAULT_KEYS: u64 = 1_000_000;
/// 10 rounds would take over 20 minutes for the five engines on 2 shared cores (estimated
/// from a run of 200,000 keys × 5 rounds).
const DEFAULT_ROUNDS: usize = 8;
const DEFAULT_GETS: usize = 50_000;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// splitmix64.
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

type Key = [u8; KEY_LEN];

fn key(i: u64) -> Key {
    let mut k = [b'.'; KEY_LEN];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

/// key ‖ big-endian (u64::MAX − lsn): a key's versions sort newest first.
fn vkey(k: &Key, lsn: u64) -> [u8; KEY_LEN + 8] {
    let mut v = [0u8; KEY_LEN + 8];
    v[..KEY_LEN].copy_from_slice(k);
    v[KEY_LEN..].copy_from_slice(&(u64::MAX - lsn).to_be_bytes());
    v
}

/// Exclusive upper bound of every version of `k`: the key with its last byte incremented
/// (the padding byte is `.`, so this never overflows).
fn upper(k: &Key) -> Key {
    let mut u = *k;
    u[KEY_LEN - 1] += 1;
    u
}

/// The workload, shared by all engines.
struct Data {
    n: u64,
    rounds: usize,
    pool: Vec<u8>,
    /// Per round, the order keys are written in.
    orders: Vec<Vec<u32>>,
    /// Keys read by the get benchmarks.
    reads: Vec<u32>,
}

impl Data {
    fn new(n: u64, rounds: usize, gets: usize) -> Data {
        let mut rng = Rng(SEED);
        let pool = (0..POOL_LEN).map(|_| rng.next() as u8).collect();
        let mut shuffled = || {
            let mut v: Vec<u32> = (0..n as u32).collect();
            for i in (1..v.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                v.swap(i, j);
            }
            v
        };
        let orders = (0..rounds).map(|_| shuffled()).collect();
        let reads = (0..gets).map(|_| rng.below(n) as u32).collect();
        Data {
            n,
            rounds,
            pool,
            orders,
            reads,
        }
    }

    fn value(&self, i: u64, round: usize) -> &[u8] {
        let at = (mix(SEED ^ i ^ ((round as u64) << 40)) % (POOL_LEN - VALUE_LEN) as u64) as usize;
        &self.pool[at..at + VALUE_LEN]
    }

    /// Every (key index, lsn) of `round`, in write order.
    fn round(&self, round: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
        let base = FIRST_LSN + round as u64 * self.n;
        self.orders[round]
            .iter()
            .enumerate()
            .map(move |(j, &i)| (u64::from(i), base + j as u64))
    }

    /// The last LSN of `round`: reading there sees every key's value of that round.
    fn last_lsn(&self, round: usize) -> u64 {
        FIRST_LSN + (round as u64 + 1) * self.n - 1
    }
}

fn check(d: &Data, got: Option<&[u8]>, i: u64, round: usize) -> usize {
    let v = got.unwrap_or_else(|| panic!("key {i} missing at round {round}"));
    assert_eq!(v, d.value(i, round), "key {i} round {round}: wrong value");
    v.len()
}

/// One engine under test.
trait Engine {
    /// Writes `value` for key `k` at `lsn`.
    fn put(&mut self, k: &Key, lsn: u64, value: &[u8]);
    /// Writes a whole round (the default calls [`Engine::put`] for each put).
    fn put_round(&mut self, d: &Data, round: usize) {
        for (i, lsn) in d.round(round) {
            self.put(&key(i), lsn, d.value(i, round));
        }
    }
    /// After a round: make everything up to `last_lsn` readable and flush it to disk.
    fn flush(&mut self, last_lsn: u64);
    /// Waits until background work has settled; returns what it waited for.
    fn settle(&mut self) -> String {
        String::new()
    }
    /// The files or layers a read can go through, as text.
    fn shape(&mut self) -> String;
    /// Reads `k` as of `lsn` and hands the value to `f`.
    fn get<R>(&mut self, k: &Key, lsn: u64, f: impl FnOnce(Option<&[u8]>) -> R) -> R;
    /// Layers a read of `k` as of `lsn` visits, where the engine can tell.
    fn depth(&mut self, _k: &Key, _lsn: u64) -> Option<u32> {
        None
    }
    /// Closes the engine.
    fn close(self);
}

#[derive(Clone, Copy, Default)]
struct Lat {
    median_ns: f64,
    p99_ns: f64,
    /// Median of the process CPU time (all threads) per get.
    cpu_median_ns: f64,
}

/// CPU time used so far by the whole process, every thread included, in nanoseconds. Unlike the
/// wall clock, it does not count time spent waiting for a core that another process holds.
fn cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time of the calling thread: the writer's own share of a put phase.
fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Row {
    /// Short name for the plot and the tables.
    engine: String,
    version: String,
    how: String,
    ingest_s: f64,
    /// Process CPU time (all threads) spent while the puts ran.
    ingest_cpu_s: f64,
    /// CPU time of the thread that called `put`, over the put phases.
    ingest_writer_cpu_s: f64,
    flush_s: f64,
    settle: String,
    shape: String,
    /// Get latency by LSN age: index 0 = the last round, R−1 = the first.
    lat: Vec<Lat>,
    /// Mean layers visited per get, by LSN age (StrataKV only).
    depth: Vec<f64>,
    disk_bytes: u64,
    wall_s: f64,
}

/// Runs `get` over `keys` once untimed, then once timed in batches of [`BATCH`].
/// `get` returns the value length (checked by the caller's closure) so nothing is optimised out.
fn time_gets(keys: &[u32], mut get: impl FnMut(u64) -> usize) -> Lat {
    let mut sink = 0usize;
    for &i in keys {
        sink += get(u64::from(i));
    }
    let mut per_op = Vec::with_capacity(keys.len() / BATCH + 1);
    let mut cpu_per_op = Vec::with_capacity(keys.len() / BATCH + 1);
    for chunk in keys.chunks(BATCH) {
        let c = cpu_ns();
        let t = Instant::now();
        for &i in chunk {
            sink += get(u64::from(i));
        }
        per_op.push(t.elapsed().as_nanos() as f64 / chunk.len() as f64);
        cpu_per_op.push((cpu_ns() - c) as f64 / chunk.len() as f64);
    }
    std::hint::black_box(sink);
    per_op.sort_by(f64::total_cmp);
    cpu_per_op.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Lat {
        median_ns: q(&per_op, 0.5),
        p99_ns: q(&per_op, 0.99),
        cpu_median_ns: q(&cpu_per_op, 0.5),
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Polls `shape` until it has not changed for `quiet`, at most `max`.
fn settle_by_shape(mut shape: impl FnMut() -> String, quiet: Duration, max: Duration) -> String {
    let t = Instant::now();
    let mut last = shape();
    let mut since = Instant::now();
    while t.elapsed() < max {
        std::thread::sleep(Duration::from_millis(250));
        let s = shape();
        if s != last {
            last = s;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    format!(
        "{:.1}s until its files stayed unchanged for {}s",
        t.elapsed().as_secs_f64(),
        quiet.as_secs()
    )
}

fn drive<E: Engine>(d: &Data, mut e: E, dir: &Path, name: &str, version: String, how: &str) -> Row {
    let t0 = Instant::now();
    let (mut ingest_s, mut ingest_cpu_s, mut flush_s) = (0.0, 0.0, 0.0);
    let mut ingest_writer_cpu_s = 0.0;
    for r in 0..d.rounds {
        let c = cpu_ns();
        let w = thread_cpu_ns();
        let t = Instant::now();
        e.put_round(d, r);
        let put = t.elapsed().as_secs_f64();
        ingest_s += put;
        let writer_cpu = (thread_cpu_ns() - w) as f64 / 1e9;
        ingest_writer_cpu_s += writer_cpu;
        ingest_cpu_s += (cpu_ns() - c) as f64 / 1e9;
        let t = Instant::now();
        e.flush(d.last_lsn(r));
        let fl = t.elapsed().as_secs_f64();
        flush_s += fl;
        eprintln!(
            "  {name}: round {}/{} {:.0} puts/s, writer thread {:.2} CPU µs per put, flush {fl:.2}s",
            r + 1,
            d.rounds,
            d.n as f64 / put,
            writer_cpu * 1e6 / d.n as f64
        );
    }
    let settle = e.settle();
    let shape = e.shape();
    eprintln!("  {name}: {shape}; settle: {settle}");
    let mut lat = Vec::with_capacity(d.rounds);
    let mut depth = Vec::new();
    for age in 0..d.rounds {
        let r = d.rounds - 1 - age;
        let lsn = d.last_lsn(r);
        let l = time_gets(&d.reads, |i| e.get(&key(i), lsn, |v| check(d, v, i, r)));
        let mut visited = Vec::new();
        for &i in d.reads.iter().take(TRACE_READS) {
            if let Some(v) = e.depth(&key(u64::from(i)), lsn) {
                visited.push(f64::from(v));
            }
        }
        if !visited.is_empty() {
            depth.push(visited.iter().sum::<f64>() / visited.len() as f64);
        }
        eprintln!(
            "  {name}: age {age} (round {}) median {} µs p99 {} µs",
            r + 1,
            us(l.median_ns),
            us(l.p99_ns)
        );
        lat.push(l);
    }
    e.close();
    Row {
        engine: name.into(),
        version,
        how: how.into(),
        ingest_s,
        ingest_cpu_s,
        ingest_writer_cpu_s,
        flush_s,
        settle,
        shape,
        lat,
        depth,
        disk_bytes: dir_bytes(dir),
        wall_s: t0.elapsed().as_secs_f64(),
    }
}

// ---------------------------------------------------------------------------------------------
// StrataKV

struct Strata {
    rt: tokio::runtime::Runtime,
    store: Store,
    tl: Timeline,
    w: TimelineWriter,
    count: u64,
}

impl Engine for Strata {
    fn put(&mut self, k: &Key, lsn: u64, value: &[u8]) {
        self.w
            .put(k, Lsn(lsn), Value::image(Bytes::copy_from_slice(value)))
            .expect("put");
        self.count += 1;
        if self.count.is_multiple_of(COMMIT_EVERY) {
            self.w.finish_write(Lsn(lsn)).expect("finish_write");
        }
    }
    fn flush(&mut self, last_lsn: u64) {
        self.w.finish_write(Lsn(last_lsn)).expect("finish_write");
        self.rt.block_on(self.tl.flush()).expect("flush");
    }
    fn settle(&mut self) -> String {
        // With `background_period(None)` there is no periodic work, but a flush that leaves
        // `compaction_threshold` (4) L0 layers still kicks a compaction.
        let tl = self.tl.clone();
        settle_by_shape(
            || {
                format!(
                    "{:?}",
                    tl.layers()
                        .iter()
                        .map(|l| l.file_name.clone())
                        .collect::<Vec<_>>()
                )
            },
            Duration::from_secs(5),
            Duration::from_secs(180),
        )
    }
    fn shape(&mut self) -> String {
        let layers = self.tl.layers();
        if std::env::var_os("STRATAKV_PEERS_LAYERS").is_some() {
            for l in &layers {
                eprintln!(
                    "    L{} {:?} LSN {}..{} keys {:?}..{:?} {} MB",
                    l.level,
                    l.kind,
                    l.lsn_range.start.0,
                    l.lsn_range.end.0,
                    l.key_range.start.get(..8),
                    l.key_range.end.as_ref().and_then(|k| k.get(..8)),
                    l.file_size >> 20
                );
            }
        }
        let count = |level: u8| layers.iter().filter(|l| l.level == level).count();
        format!(
            "{} layer files (L0 {}, L1 {}), {} in memory",
            layers.len(),
            count(0),
            count(1),
            self.tl.in_memory_layers()
        )
    }
    fn get<R>(&mut self, k: &Key, lsn: u64, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let v = self.rt.block_on(self.tl.get(k, Lsn(lsn))).expect("get");
        f(v.as_deref())
    }
    fn depth(&mut self, k: &Key, lsn: u64) -> Option<u32> {
        let (_, trace) = self
            .rt
            .block_on(self.tl.get_traced(k, Lsn(lsn)))
            .expect("get_traced");
        if std::env::var_os("STRATAKV_PEERS_LAYERS").is_some() && trace.layers_visited > 1 {
            eprintln!("    LSN {lsn} key {:?}: {trace:?}", &k[..8]);
        }
        Some(trace.layers_visited)
    }
    fn close(self) {
        drop(self.w);
        self.rt.block_on(self.store.close()).expect("close");
    }
}

fn run_stratakv(d: &Data, dir: &Path) -> Row {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (store, tl) = rt.block_on(async {
        let store = Store::open(
            StoreOptions::new(dir)
                .background_period(None)
                .fsync_policy(FsyncPolicy::Never)
                .block_cache_bytes(CACHE_BYTES),
        )
        .await
        .expect("open");
        let tl = store.create_timeline("main").await.expect("timeline");
        (store, tl)
    });
    let w = tl.writer().expect("writer");
    let e = Strata {
        rt,
        store,
        tl,
        w,
        count: 0,
    };
    drive(
        d,
        e,
        dir,
        "StrataKV",
        format!("stratakv {} ({})", lock_version("stratakv"), git_describe()),
        "`put` + `finish_write` every 1000; `flush()` per round; `get(key, lsn)`; no periodic background work",
    )
}

// ---------------------------------------------------------------------------------------------
// fjall

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Engine for Fjall {
    fn put(&mut self, k: &Key, lsn: u64, value: &[u8]) {
        self.ks.insert(vkey(k, lsn), value).expect("insert");
    }
    fn flush(&mut self, _last_lsn: u64) {
        self.ks.rotate_memtable_and_wait().expect("flush");
    }
    fn settle(&mut self) -> String {
        let ks = self.ks.clone();
        settle_by_shape(
            || format!("{} {}", ks.l0_table_count(), ks.table_count()),
            Duration::from_secs(5),
            Duration::from_secs(180),
        )
    }
    fn shape(&mut self) -> String {
        format!(
            "{} tables ({} in L0)",
            self.ks.table_count(),
            self.ks.l0_table_count()
        )
    }
    fn get<R>(&mut self, k: &Key, lsn: u64, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let lo = vkey(k, lsn);
        let hi = upper(k);
        let got = self
            .ks
            .range(lo.as_slice()..hi.as_slice())
            .next()
            .map(|g| g.value().expect("value"));
        f(got.as_deref())
    }
    fn close(self) {
        drop(self.ks);
        drop(self.db);
    }
}

fn run_fjall(d: &Data, dir: &Path) -> Row {
    let db = fjall::Database::builder(dir)
        .cache_size(CACHE_BYTES as u64)
        .open()
        .expect("open");
    let ks = db
        .keyspace("main", fjall::KeyspaceCreateOptions::default)
        .expect("keyspace");
    drive(
        d,
        Fjall { db, ks },
        dir,
        "fjall",
        format!("fjall {}", lock_version("fjall")),
        "key ‖ inv LSN; `insert`; `rotate_memtable_and_wait` per round; `range(..).next()`",
    )
}

// ---------------------------------------------------------------------------------------------
// RocksDB, key ‖ inverted LSN

#[cfg(feature = "rocksdb")]
fn rocksdb_shape(levels: impl Fn(usize) -> u64) -> String {
    let per: Vec<String> = (0..7).map(&levels).map(|n| n.to_string()).collect();
    let total: u64 = (0..7).map(&levels).sum();
    format!("{total} SST files (per level L0..L6: {})", per.join("/"))
}

/// The RocksDB version the linked library wrote into its LOG.
#[cfg(feature = "rocksdb")]
fn rocksdb_log_version(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("LOG"))
        .ok()
        .and_then(|log| {
            log.lines().find_map(|l| {
                l.split("RocksDB version: ")
                    .nth(1)
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(feature = "rocksdb")]
struct Rocks {
    db: rocksdb::DB,
}

#[cfg(feature = "rocksdb")]
impl Engine for Rocks {
    fn put(&mut self, k: &Key, lsn: u64, value: &[u8]) {
        self.db.put(vkey(k, lsn), value).expect("put");
    }
    fn flush(&mut self, _last_lsn: u64) {
        self.db.flush().expect("flush");
    }
    fn settle(&mut self) -> String {
        let t = Instant::now();
        let busy = |db: &rocksdb::DB| {
            [
                "rocksdb.compaction-pending",
                "rocksdb.num-running-compactions",
                "rocksdb.num-running-flushes",
            ]
            .iter()
            .any(|p| db.property_int_value(*p).ok().flatten().unwrap_or(0) > 0)
        };
        while busy(&self.db) && t.elapsed() < Duration::from_secs(300) {
            std::thread::sleep(Duration::from_millis(100));
        }
        format!(
            "{:.1}s until no compaction was pending or running",
            t.elapsed().as_secs_f64()
        )
    }
    fn shape(&mut self) -> String {
        rocksdb_shape(|l| {
            self.db
                .property_int_value(&format!("rocksdb.num-files-at-level{l}"))
                .ok()
                .flatten()
                .unwrap_or(0)
        })
    }
    fn get<R>(&mut self, k: &Key, lsn: u64, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(upper(k).to_vec());
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek(vkey(k, lsn));
        let got = if it.valid() { it.value() } else { None };
        f(got)
    }
    fn close(self) {}
}

#[cfg(feature = "rocksdb")]
fn run_rocksdb(d: &Data, dir: &Path) -> Row {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let mut bbo = rocksdb::BlockBasedOptions::default();
    let cache = rocksdb::Cache::new_lru_cache(CACHE_BYTES).expect("cache");
    bbo.set_block_cache(&cache);
    opts.set_block_based_table_factory(&bbo);
    let db = rocksdb::DB::open(&opts, dir).expect("open");
    let version = format!(
        "rocksdb crate {}, librocksdb {}",
        lock_version("rocksdb"),
        rocksdb_log_version(dir)
    );
    drive(
        d,
        Rocks { db },
        dir,
        "RocksDB",
        version,
        "key ‖ inv LSN; `put`; `flush()` per round; raw iterator with upper bound, `seek`",
    )
}

// ---------------------------------------------------------------------------------------------
// RocksDB with user-defined timestamps (C API: the rocksdb crate does not wrap them)

#[cfg(feature = "rocksdb")]
mod udt {
    //! The LSN is RocksDB's user-defined timestamp: 8 bytes, little-endian (RocksDB's own
    //! convention for u64 timestamps), compared as a number, newest first. RocksDB 7.8's C API
    //! has no handle on its built-in `BytewiseComparatorWithU64Ts`, so the comparator is made
    //! here from three callbacks (`rocksdb_comparator_with_ts_create`).

    use std::ffi::{CString, c_char, c_int, c_uchar, c_void};
    use std::path::Path;
    use std::ptr;

    use librocksdb_sys as ffi;

    const TS: usize = 8;

    unsafe fn bytes<'a>(p: *const c_char, len: usize) -> &'a [u8] {
        // SAFETY: RocksDB passes a pointer to `len` readable bytes.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
    }

    fn ts(b: &[u8]) -> u64 {
        u64::from_le_bytes(b.try_into().expect("8-byte timestamp"))
    }

    fn ord(o: std::cmp::Ordering) -> c_int {
        o as c_int
    }

    extern "C" fn compare(
        _: *mut c_void,
        a: *const c_char,
        alen: usize,
        b: *const c_char,
        blen: usize,
    ) -> c_int {
        // SAFETY: see `bytes`.
        let (a, b) = unsafe { (bytes(a, alen), bytes(b, blen)) };
        let (ak, at) = a.split_at(a.len() - TS);
        let (bk, bt) = b.split_at(b.len() - TS);
        // Same key: the larger timestamp first.
        ord(ak.cmp(bk).then_with(|| ts(bt).cmp(&ts(at))))
    }

    extern "C" fn compare_ts(
        _: *mut c_void,
        a: *const c_char,
        alen: usize,
        b: *const c_char,
        blen: usize,
    ) -> c_int {
        // SAFETY: see `bytes`.
        let (a, b) = unsafe { (bytes(a, alen), bytes(b, blen)) };
        ord(ts(a).cmp(&ts(b)))
    }

    extern "C" fn compare_without_ts(
        _: *mut c_void,
        a: *const c_char,
        alen: usize,
        a_has_ts: c_uchar,
        b: *const c_char,
        blen: usize,
        b_has_ts: c_uchar,
    ) -> c_int {
        let alen = if a_has_ts != 0 { alen - TS } else { alen };
        let blen = if b_has_ts != 0 { blen - TS } else { blen };
        // SAFETY: see `bytes`.
        let (a, b) = unsafe { (bytes(a, alen), bytes(b, blen)) };
        ord(a.cmp(b))
    }

    extern "C" fn name(_: *mut c_void) -> *const c_char {
        c"stratakv-peers.BytewiseU64TsLE".as_ptr()
    }

    extern "C" fn destroy(_: *mut c_void) {}

    /// Panics with RocksDB's message if `err` was set.
    fn ok(err: *mut c_char, what: &str) {
        if !err.is_null() {
            // SAFETY: RocksDB sets `err` to a NUL-terminated string it allocated.
            let msg = unsafe { std::ffi::CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: allocated by RocksDB, freed once.
            unsafe { ffi::rocksdb_free(err.cast()) };
            panic!("rocksdb {what}: {msg}");
        }
    }

    pub struct Db {
        db: *mut ffi::rocksdb_t,
        opts: *mut ffi::rocksdb_options_t,
        bbo: *mut ffi::rocksdb_block_based_table_options_t,
        cache: *mut ffi::rocksdb_cache_t,
        cmp: *mut ffi::rocksdb_comparator_t,
        wo: *mut ffi::rocksdb_writeoptions_t,
        ro: *mut ffi::rocksdb_readoptions_t,
        /// The read timestamp `ro` points at.
        read_ts: Box<[u8; TS]>,
    }

    impl Db {
        pub fn open(dir: &Path, cache_bytes: usize) -> Db {
            let path = CString::new(dir.to_str().expect("utf-8 path")).expect("path");
            // SAFETY: plain C API calls; every object is destroyed in `Drop`.
            unsafe {
                let opts = ffi::rocksdb_options_create();
                ffi::rocksdb_options_set_create_if_missing(opts, 1);
                let cmp = ffi::rocksdb_comparator_with_ts_create(
                    ptr::null_mut(),
                    Some(destroy),
                    Some(compare),
                    Some(compare_ts),
                    Some(compare_without_ts),
                    Some(name),
                    TS,
                );
                ffi::rocksdb_options_set_comparator(opts, cmp);
                let cache = ffi::rocksdb_cache_create_lru(cache_bytes);
                let bbo = ffi::rocksdb_block_based_options_create();
                ffi::rocksdb_block_based_options_set_block_cache(bbo, cache);
                ffi::rocksdb_options_set_block_based_table_factory(opts, bbo);
                let mut err = ptr::null_mut();
                let db = ffi::rocksdb_open(opts, path.as_ptr(), &mut err);
                ok(err, "open");
                let wo = ffi::rocksdb_writeoptions_create();
                let ro = ffi::rocksdb_readoptions_create();
                Db {
                    db,
                    opts,
                    bbo,
                    cache,
                    cmp,
                    wo,
                    ro,
                    read_ts: Box::new([0; TS]),
                }
            }
        }

        pub fn put(&mut self, k: &[u8], lsn: u64, value: &[u8]) {
            let ts = lsn.to_le_bytes();
            let mut err = ptr::null_mut();
            // SAFETY: all pointers valid for the call.
            unsafe {
                ffi::rocksdb_put_with_ts(
                    self.db,
                    self.wo,
                    k.as_ptr().cast(),
                    k.len(),
                    ts.as_ptr().cast(),
                    TS,
                    value.as_ptr().cast(),
                    value.len(),
                    &mut err,
                );
            }
            ok(err, "put_with_ts");
        }

        pub fn flush(&mut self) {
            let mut err = ptr::null_mut();
            // SAFETY: plain C API calls.
            unsafe {
                let fo = ffi::rocksdb_flushoptions_create();
                ffi::rocksdb_flushoptions_set_wait(fo, 1);
                ffi::rocksdb_flush(self.db, fo, &mut err);
                ffi::rocksdb_flushoptions_destroy(fo);
            }
            ok(err, "flush");
        }

        /// A numeric property, read through its text form (as the rocksdb crate does: some,
        /// such as `rocksdb.num-files-at-level<N>`, are not integer properties in RocksDB).
        pub fn property(&self, name: &str) -> u64 {
            let name = CString::new(name).expect("property name");
            // SAFETY: valid db and NUL-terminated name; the result is freed once.
            unsafe {
                let v = ffi::rocksdb_property_value(self.db, name.as_ptr());
                if v.is_null() {
                    return 0;
                }
                let n = std::ffi::CStr::from_ptr(v)
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                ffi::rocksdb_free(v.cast());
                n.unwrap_or(0)
            }
        }

        /// Reads `k` as of `lsn`: the newest version whose timestamp is at most `lsn`.
        pub fn get<R>(&mut self, k: &[u8], lsn: u64, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
            if u64::from_le_bytes(*self.read_ts) != lsn {
                *self.read_ts = lsn.to_le_bytes();
                // SAFETY: `read_ts` is boxed and lives as long as `ro`.
                unsafe {
                    ffi::rocksdb_readoptions_set_timestamp(
                        self.ro,
                        self.read_ts.as_ptr().cast(),
                        TS,
                    )
                };
            }
            let mut err = ptr::null_mut();
            // SAFETY: valid handles; the pinned slice is destroyed before returning.
            unsafe {
                let ps =
                    ffi::rocksdb_get_pinned(self.db, self.ro, k.as_ptr().cast(), k.len(), &mut err);
                ok(err, "get_pinned");
                if ps.is_null() {
                    return f(None);
                }
                let mut len = 0usize;
                let p = ffi::rocksdb_pinnableslice_value(ps, &mut len);
                let r = f(Some(bytes(p, len)));
                ffi::rocksdb_pinnableslice_destroy(ps);
                r
            }
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            // SAFETY: each handle was created in `open` and is destroyed once, the db first.
            unsafe {
                ffi::rocksdb_close(self.db);
                ffi::rocksdb_readoptions_destroy(self.ro);
                ffi::rocksdb_writeoptions_destroy(self.wo);
                ffi::rocksdb_options_destroy(self.opts);
                ffi::rocksdb_block_based_options_destroy(self.bbo);
                ffi::rocksdb_cache_destroy(self.cache);
                ffi::rocksdb_comparator_destroy(self.cmp);
            }
        }
    }
}

#[cfg(feature = "rocksdb")]
impl Engine for udt::Db {
    fn put(&mut self, k: &Key, lsn: u64, value: &[u8]) {
        udt::Db::put(self, k, lsn, value);
    }
    fn flush(&mut self, _last_lsn: u64) {
        udt::Db::flush(self);
    }
    fn settle(&mut self) -> String {
        let t = Instant::now();
        while [
            "rocksdb.compaction-pending",
            "rocksdb.num-running-compactions",
            "rocksdb.num-running-flushes",
        ]
        .iter()
        .any(|p| self.property(p) > 0)
            && t.elapsed() < Duration::from_secs(300)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        format!(
            "{:.1}s until no compaction was pending or running",
            t.elapsed().as_secs_f64()
        )
    }
    fn shape(&mut self) -> String {
        rocksdb_shape(|l| self.property(&format!("rocksdb.num-files-at-level{l}")))
    }
    fn get<R>(&mut self, k: &Key, lsn: u64, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        udt::Db::get(self, k, lsn, f)
    }
    fn close(self) {}
}

#[cfg(feature = "rocksdb")]
fn run_rocksdb_udt(d: &Data, dir: &Path) -> Row {
    let db = udt::Db::open(dir, CACHE_BYTES);
    let version = format!("librocksdb {} (C API)", rocksdb_log_version(dir));
    drive(
        d,
        db,
        dir,
        "RocksDB UDT",
        version,
        "user-defined timestamp = LSN; `put_with_ts`; `flush` per round; `get_pinned` with `ReadOptions::timestamp`",
    )
}

// ---------------------------------------------------------------------------------------------
// SlateDB on a local folder

#[cfg(feature = "slatedb")]
struct Slate {
    rt: tokio::runtime::Runtime,
    db: slatedb::Db,
}

#[cfg(feature = "slatedb")]
impl Slate {
    fn shape_now(db: &slatedb::Db) -> String {
        let m = db.manifest();
        format!(
            "{} L0 SSTs, {} sorted runs",
            m.l0().len(),
            m.compacted().len()
        )
    }
}

#[cfg(feature = "slatedb")]
impl Engine for Slate {
    fn put(&mut self, k: &Key, lsn: u64, value: &[u8]) {
        self.rt
            .block_on(self.db.put(vkey(k, lsn), value))
            .expect("put");
    }
    fn put_round(&mut self, d: &Data, round: usize) {
        // One `block_on` for the whole round, as an async caller would write it.
        let db = &self.db;
        self.rt.block_on(async {
            for (i, lsn) in d.round(round) {
                db.put(vkey(&key(i), lsn), d.value(i, round))
                    .await
                    .expect("put");
            }
        });
    }
    fn flush(&mut self, _last_lsn: u64) {
        let opts = slatedb::config::FlushOptions {
            flush_type: slatedb::config::FlushType::MemTable,
        };
        self.rt
            .block_on(self.db.flush_with_options(opts))
            .expect("flush");
    }
    fn settle(&mut self) -> String {
        let db = &self.db;
        settle_by_shape(
            || Slate::shape_now(db),
            Duration::from_secs(12),
            Duration::from_secs(240),
        )
    }
    fn shape(&mut self) -> String {
        Slate::shape_now(&self.db)
    }
    fn get<R>(&mut self, k: &Key, lsn: u64, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let lo = vkey(k, lsn).to_vec();
        let hi = upper(k).to_vec();
        let got = self.rt.block_on(async {
            let mut it = self.db.scan(lo..hi).await.expect("scan");
            it.next().await.expect("next")
        });
        f(got.as_ref().map(|kv| kv.value.as_ref()))
    }
    fn close(self) {
        self.rt.block_on(self.db.close()).expect("close");
    }
}

#[cfg(feature = "slatedb")]
fn run_slatedb(d: &Data, dir: &Path) -> Row {
    use std::sync::Arc;

    use slatedb::db_cache::foyer::{FoyerCache, FoyerCacheOptions};
    use slatedb::db_cache::{DbCache, SplitCache};
    use slatedb::object_store::ObjectStore;
    use slatedb::object_store::local::LocalFileSystem;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir).expect("local object store"));
    let block: Arc<dyn DbCache> = Arc::new(FoyerCache::new_with_opts(FoyerCacheOptions {
        max_capacity: CACHE_BYTES as u64,
        ..Default::default()
    }));
    let cache = SplitCache::new()
        .with_block_cache(Some(block))
        .with_meta_cache(Some(Arc::new(FoyerCache::new_with_opts(
            FoyerCacheOptions {
                max_capacity: slatedb::db_cache::DEFAULT_META_CACHE_CAPACITY,
                ..Default::default()
            },
        ))))
        .build();
    let db = rt
        .block_on(
            slatedb::Db::builder("db", store)
                .with_db_cache(Arc::new(cache), 1)
                .build(),
        )
        .expect("open");
    drive(
        d,
        Slate { rt, db },
        dir,
        "SlateDB",
        format!("slatedb {}", lock_version("slatedb")),
        "key ‖ inv LSN; `put` (not awaiting durability); memtable `flush` per round; `scan(..)` first item",
    )
}

// ---------------------------------------------------------------------------------------------
// Report

fn us(ns: f64) -> String {
    if ns >= 100_000.0 {
        format!("{:.0}", ns / 1000.0)
    } else {
        format!("{:.2}", ns / 1000.0)
    }
}

/// The version of `name` in this crate's Cargo.lock.
fn lock_version(name: &str) -> String {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .unwrap_or_default();
    let needle = format!("name = \"{name}\"\n");
    lock.split("[[package]]")
        .find(|p| p.contains(&needle))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_else(|| "?".into())
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The commit StrataKV was built from, "-dirty" if its sources had local changes.
fn git_describe() -> String {
    let head = sh("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !sh(
        "git",
        &[
            "status",
            "--porcelain",
            "--",
            "../../src",
            "../../Cargo.toml",
        ],
    )
    .is_empty();
    format!(
        "commit {head}{}",
        if dirty {
            ", src with uncommitted changes"
        } else {
            ""
        }
    )
}

const COLORS: [&str; 6] = [
    "#2b6cb0", "#dd6b20", "#c53030", "#38a169", "#805ad5", "#718096",
];

/// Median (solid) and p99 (dashed) get latency by LSN age, log scale.
fn svg(rows: &[Row], rounds: usize) -> String {
    let (w, h) = (760.0, 460.0);
    let (left, right, top, bottom) = (70.0, 190.0, 50.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let all = rows
        .iter()
        .flat_map(|r| r.lat.iter().flat_map(|l| [l.median_ns, l.p99_ns]));
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let lo = 10f64.powf((lo.max(1.0) / 1000.0).log10().floor());
    let hi = 10f64
        .powf((hi.max(1.0) / 1000.0).log10().ceil())
        .max(lo * 10.0);
    let y =
        |ns: f64| top + ph - ph * ((ns / 1000.0).log10() - lo.log10()) / (hi.log10() - lo.log10());
    let x = |age: usize| {
        left + if rounds > 1 {
            pw * age as f64 / (rounds - 1) as f64
        } else {
            pw / 2.0
        }
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="22" text-anchor="middle" font-size="14">get as of an LSN, by LSN age: median (solid) and p99 (dashed), µs, log scale</text>"#,
        w / 2.0
    );
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v > hi * 1.0001 {
                break;
            }
            let yy = y(v * 1000.0);
            let stroke = if m == 1.0 { "#bbb" } else { "#eee" };
            let _ = writeln!(
                s,
                r#"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{stroke}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left + pw,
                left - 6.0,
                yy + 4.0,
                if v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v}")
                }
            );
        }
        decade *= 10.0;
    }
    for age in 0..rounds {
        let xx = x(age);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#f3f3f3"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{age}</text>"##,
            top + ph,
            top + ph + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">LSN age (rounds before the latest; one flush per round)</text>"#,
        left + pw / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
    );
    for (n, r) in rows.iter().enumerate() {
        let c = COLORS[n % COLORS.len()];
        for (p99, dash) in [(false, ""), (true, r#" stroke-dasharray="5,4""#)] {
            let pts: Vec<String> = r
                .lat
                .iter()
                .enumerate()
                .map(|(age, l)| {
                    format!(
                        "{:.1},{:.1}",
                        x(age),
                        y(if p99 { l.p99_ns } else { l.median_ns })
                    )
                })
                .collect();
            let width = if p99 { 1.2 } else { 2.2 };
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="{width}"{dash}/>"#,
                pts.join(" ")
            );
        }
        for (age, l) in r.lat.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{} age {age}: median {} µs, p99 {} µs</title></circle>"#,
                x(age),
                y(l.median_ns),
                r.engine,
                us(l.median_ns),
                us(l.p99_ns)
            );
        }
        let ly = top + 14.0 + 20.0 * n as f64;
        let lx = left + pw + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="2.2"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 4.0,
            lx + 22.0,
            ly - 4.0,
            lx + 28.0,
            r.engine
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn machine(load_start: &str) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("?".into(), |v| v.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kb| kb.parse::<f64>().ok())
                })
        })
        .map_or(0.0, |kb| kb / (1024.0 * 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {mem_gib:.0} GiB RAM, Linux {}; shared: other builds were running \
         (load average {load_start} at the start, {} at the end); one writer / reader thread",
        kernel.trim(),
        loadavg()
    )
}

fn main() {
    let mut keys = DEFAULT_KEYS;
    let mut rounds = DEFAULT_ROUNDS;
    let mut gets = DEFAULT_GETS;
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    let usage = "usage: [--keys N] [--rounds R] [--gets G] [--only stratakv,rocksdb,rocksdb-udt,fjall,slatedb] | --durable [SECS]";
    while let Some(a) = args.next() {
        match a.as_str() {
            "--durable" => {
                let secs: f64 = args.next().map_or(3.0, |v| v.parse().expect(usage));
                let load_start = loadavg();
                let mut md = durable::run(Duration::from_secs_f64(secs));
                md.push_str(&format!(
                    "\nMachine: {}\n",
                    machine(&load_start).replace("; one writer / reader thread", "")
                ));
                println!("\n{md}");
                let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/partial");
                std::fs::create_dir_all(&out).expect("output folder");
                std::fs::write(out.join("DURABLE.md"), md).expect("write DURABLE.md");
                return;
            }
            "--keys" => keys = args.next().and_then(|v| v.parse().ok()).expect(usage),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).expect(usage),
            "--gets" => gets = args.next().and_then(|v| v.parse().ok()).expect(usage),
            "--only" => {
                only = args
                    .next()
                    .map(|v| v.split(',').map(str::to_string).collect())
            }
            _ => panic!("{usage}"),
        }
    }
    assert!(
        keys > 0 && keys <= u64::from(u32::MAX) && rounds > 0 && gets > 0,
        "{usage}"
    );
    let cmdline = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let puts = keys * rounds as u64;
    println!(
        "{keys} keys × {rounds} rounds = {puts} puts of {VALUE_LEN} B ({:.0} MB of values); {gets} gets per round and engine; seed {SEED:#x}",
        (puts * VALUE_LEN as u64) as f64 / 1e6
    );
    let d = Data::new(keys, rounds, gets);
    let load_start = loadavg();

    type Runner = fn(&Data, &Path) -> Row;
    #[allow(unused_mut)]
    let mut engines: Vec<(&str, Runner)> = vec![("stratakv", run_stratakv)];
    #[cfg(feature = "rocksdb")]
    {
        engines.push(("rocksdb", run_rocksdb));
        engines.push(("rocksdb-udt", run_rocksdb_udt));
    }
    engines.push(("fjall", run_fjall));
    #[cfg(feature = "slatedb")]
    engines.push(("slatedb", run_slatedb));

    let mut rows = Vec::new();
    for (name, f) in engines {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == name)) {
            continue;
        }
        eprintln!("{name} ...");
        let dir = tempfile::Builder::new()
            .prefix(&format!("peers-{name}-"))
            .tempdir()
            .unwrap();
        let row = f(&d, dir.path());
        let last = row.lat.len() - 1;
        println!(
            "{:<12} ingest {:>8.0} puts/s  flush {:.1}s  get latest {} µs (p99 {})  oldest {} µs (p99 {})  disk {:.0} MB  ({:.0}s)",
            row.engine,
            puts as f64 / row.ingest_s,
            row.flush_s,
            us(row.lat[0].median_ns),
            us(row.lat[0].p99_ns),
            us(row.lat[last].median_ns),
            us(row.lat[last].p99_ns),
            row.disk_bytes as f64 / 1e6,
            row.wall_s
        );
        rows.push(row);
    }

    let md = report(&rows, &d, puts, &cmdline, &load_start);
    println!("\n{md}");
    // A partial run (--only) leaves the committed results alone.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = if only.is_none() {
        manifest.join("..")
    } else {
        manifest.join("target/partial")
    };
    std::fs::create_dir_all(&out).expect("output folder");
    std::fs::write(out.join("get_latency.svg"), svg(&rows, rounds)).expect("write svg");
    std::fs::write(out.join("BENCHMARKS.md"), md).expect("write BENCHMARKS.md");
    println!(
        "wrote BENCHMARKS.md and get_latency.svg in {}",
        out.display()
    );
}

fn report(rows: &[Row], d: &Data, puts: u64, cmdline: &str, load_start: &str) -> String {
    let rounds = d.rounds;
    let old = rounds - 1;
    let mb = |row: &Row| (puts * VALUE_LEN as u64) as f64 / 1e6 / row.ingest_s;
    let puts_s = |row: &Row| puts as f64 / row.ingest_s;
    let mut summary = String::from(
        "| engine | ingest puts/s | MB/s of values | CPU µs per put | writer thread CPU µs per put | flush, all rounds (s) | get latest LSN median (µs) | p99 (µs) | CPU (µs) | get oldest LSN median (µs) | p99 (µs) | CPU (µs) | on disk (MB) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            summary,
            "| {} | {:.0}k | {:.1} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} | {:.0} |",
            r.engine,
            puts_s(r) / 1000.0,
            mb(r),
            r.ingest_cpu_s * 1e6 / puts as f64,
            r.ingest_writer_cpu_s * 1e6 / puts as f64,
            r.flush_s,
            us(r.lat[0].median_ns),
            us(r.lat[0].p99_ns),
            us(r.lat[0].cpu_median_ns),
            us(r.lat[old].median_ns),
            us(r.lat[old].p99_ns),
            us(r.lat[old].cpu_median_ns),
            r.disk_bytes as f64 / 1e6
        );
    }

    let strata = rows.iter().find(|r| r.engine == "StrataKV");
    let mut ratios = String::new();
    if let Some(s) = strata {
        ratios.push_str("| peer | get latest: peer ÷ StrataKV | get oldest: peer ÷ StrataKV | get, all ages (geometric mean) | get CPU, all ages (geometric mean) | ingest puts/s: StrataKV ÷ peer | ingest CPU per put: peer ÷ StrataKV |\n|---|---|---|---|---|---|---|\n");
        for r in rows.iter().filter(|r| r.engine != "StrataKV") {
            let geo = |f: fn(&Lat) -> f64| {
                (r.lat
                    .iter()
                    .zip(&s.lat)
                    .map(|(p, q)| (f(p) / f(q)).ln())
                    .sum::<f64>()
                    / rounds as f64)
                    .exp()
            };
            let _ = writeln!(
                ratios,
                "| {} | {:.2}× | {:.2}× | {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
                r.engine,
                r.lat[0].median_ns / s.lat[0].median_ns,
                r.lat[old].median_ns / s.lat[old].median_ns,
                geo(|l| l.median_ns),
                geo(|l| l.cpu_median_ns),
                puts_s(s) / puts_s(r),
                r.ingest_cpu_s / s.ingest_cpu_s
            );
        }
    }

    let mut by_age = String::from("| LSN age (round) |");
    for r in rows {
        let _ = write!(by_age, " {} median / p99 / CPU (µs) |", r.engine);
    }
    if strata.is_some_and(|s| !s.depth.is_empty()) {
        by_age.push_str(" StrataKV layers visited |");
    }
    by_age.push_str("\n|---|");
    for _ in rows {
        by_age.push_str("---|");
    }
    if strata.is_some_and(|s| !s.depth.is_empty()) {
        by_age.push_str("---|");
    }
    by_age.push('\n');
    for age in 0..rounds {
        let _ = write!(by_age, "| {age} ({}) |", rounds - age);
        for r in rows {
            let l = r.lat[age];
            let _ = write!(
                by_age,
                " {} / {} / {} |",
                us(l.median_ns),
                us(l.p99_ns),
                us(l.cpu_median_ns)
            );
        }
        if let Some(s) = strata.filter(|s| !s.depth.is_empty()) {
            let _ = write!(by_age, " {:.1} |", s.depth[age]);
        }
        by_age.push('\n');
    }

    let mut engines = String::new();
    for r in rows {
        let _ = writeln!(
            engines,
            "- **{}** — {}: {}. At read time: {}{}. Whole run {:.0} s.",
            r.engine,
            r.version,
            r.how,
            r.shape,
            if r.settle.is_empty() {
                String::new()
            } else {
                format!(" (waited {})", r.settle)
            },
            r.wall_s
        );
    }

    let all = ["stratakv", "rocksdb", "rocksdb-udt", "fjall", "slatedb"];
    let ran: Vec<&str> = all
        .iter()
        .zip(["StrataKV", "RocksDB", "RocksDB UDT", "fjall", "SlateDB"])
        .filter(|(_, e)| rows.iter().any(|r| r.engine == *e))
        .map(|(n, _)| *n)
        .collect();
    let mut features = String::new();
    match (cfg!(feature = "rocksdb"), cfg!(feature = "slatedb")) {
        (true, true) => {}
        (true, false) => features.push_str(" --no-default-features --features rocksdb"),
        (false, true) => features.push_str(" --no-default-features --features slatedb"),
        (false, false) => features.push_str(" --no-default-features"),
    }
    let cmdline = if cmdline.is_empty() {
        String::new()
    } else {
        format!(" -- {cmdline}")
    };
    let date = sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    format!(
        "# StrataKV vs peers — one run\n\n\
         Generated by `benches/peers` (a crate outside the main workspace, so the root `cargo test` never \
         builds RocksDB or SlateDB). Every engine gets the same keys, values and LSNs, in the same order.\n\n\
         **Not a comparison on equal terms.** StrataKV commits once per 1,000 puts (`finish_write`) while every peer writes each put on its own, with no write batch; RocksDB is Debian's 7.8.3 with default block options (no whole-key or prefix Bloom filter) in both variants; each engine keeps its own default compression; every round rewrites every key and reads come only at round ends. Read the figures as what this harness measured, not as ratios between the engines: a harness with the same commit granularity, durability, cache and compression for every engine, and RocksDB configured as its docs advise, is to replace it.\n\n\
         - command: `cd benches/peers && nice -n 10 cargo run --release{features}{cmdline}` \
         (from `benches/peers`, whose `.cargo/config.toml` links Debian's `librocksdb-dev`; \
         needs `apt-get install librocksdb-dev libclang-dev`)\n\
         - engines: {}\n\
         - date: {date}\n\
         - machine: {}\n\
         - data: {} keys of {KEY_LEN} B × {rounds} rounds = {puts} puts of {VALUE_LEN} B incompressible values \
         (seed {SEED:#x}); each round overwrites every key once in a new shuffled order, each put at its own LSN; \
         every engine is flushed to disk after every round\n\
         - reads: after the last round, for each round, {} random keys read as of that round's last LSN \
         (LSN age 0 = the last round, LSN {}; age {old} = the first, LSN {}); one untimed warm-up pass, then timed \
         in batches of {BATCH} (per-op = batch ÷ {BATCH}; p99 = 99th percentile of the batch means); every answer \
         checked against the data\n\
         - CPU columns: process CPU time (every thread, `CLOCK_PROCESS_CPUTIME_ID`) over the same batches \
         (median) or over the put phases (per put, background flushes and compactions included while they \
         overlap the puts). Time spent waiting for a core held by another process is not in it, so these \
         figures move less than the wall-clock ones when the machine is shared. The writer thread column is the \
         CPU time of the one thread that calls `put` (`CLOCK_THREAD_CPUTIME_ID`), over the put phases: the cost \
         of a put on its own core, without the background work it leaves to other threads\n\
         - caches: 256 MiB block cache per engine (SlateDB: 256 MiB block cache + its default 128 MiB metadata \
         cache); each engine's default compression; the OS page cache holds every file\n\
         - StrataKV: WAL on with `FsyncPolicy::Never`; no periodic background work (`background_period(None)`), \
         but a flush that leaves 4 L0 layers (`compaction_threshold`) still kicks a compaction into L1, as \
         documented, so the layers do not all pile up. Each layer covers an LSN range, so a read as of an old \
         LSN starts at the layers holding that LSN instead of passing through the newer ones: the last column \
         of the by-age table counts the layers a get visited (`get_traced`, {TRACE_READS} of the keys). Every \
         engine, StrataKV included, is left to settle (no flush or compaction running) before the reads. Peers: their default background flushes and compactions. No engine syncs its writes; SlateDB's `put` \
         returns without awaiting durability (its WAL goes to the local folder in the background, as by default)\n\
         - ratios: peer median ÷ StrataKV median for gets (above 1 = StrataKV faster); StrataKV puts/s ÷ \
         peer puts/s for ingest (above 1 = StrataKV faster)\n\n\
         ## Summary\n\n{summary}\n\
         ## Ratios against each peer\n\n{ratios}\n\
         ## Get as of an LSN, by LSN age\n\n{by_age}\n\
         ![get latency by LSN age](get_latency.svg)\n\n\
         ## Engines\n\n{engines}",
        ran.join(", "),
        machine(load_start),
        d.n,
        d.reads.len(),
        d.last_lsn(rounds - 1),
        d.last_lsn(0),
    )
}
