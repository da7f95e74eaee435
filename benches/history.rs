//! History benchmarks: branch creation at two data sizes, layers visited per get after a long
//! ingest with and without compaction, and bytes on disk after GC over the live data of the
//! retention window, with the time of every `compact()` and `gc()` pass on the way.
//!
//! ```text
//! cargo bench --bench history                              # N = 1M keys, ~5 minutes on 2 cores
//! STRATAKV_BENCH_KEYS=50000 cargo bench --bench history    # quick mode
//! cargo bench --bench history -- branch                    # only the matching parts
//! STRATAKV_BENCH_BIG=1 cargo bench --bench history -- 10GiB   # branch creation at 10 GiB
//! ```
//!
//! Keys are 16 bytes (a big-endian index, then padding), values 100 random (incompressible)
//! bytes, one writer thread, a fixed seed. Stores live in the ordinary temporary directory (a
//! real disk: branch creation fsyncs), with periodic background work off
//! (`background_period(None)`): compaction and GC run when the benchmark calls them, and
//! compaction also, as in any store, when flushes pile up `compaction_threshold` L0 layers
//! (which only the 10 GiB branch dataset and `space_after_gc` do).
//!
//! | part | what | how |
//! |---|---|---|
//! | `branch/create/<medium>/<n>` | time of `store.branch(name, &main, lsn)` (criterion) | `main` holds `n` keys flushed to layer files, for `n` = N/10 and N, on the temporary directory's disk and on tmpfs (`/dev/shm`, fsync free), and with `STRATAKV_BENCH_BIG=1` also `disk/10GiB`: 10 GiB of 8 KiB values (1,310,720 keys), built in about a minute into ~160 layer files of 14–19 GiB (L0 and L1 deltas and image layers, as background compaction got to them; it needs ~30 GB of free disk while it is built); once a dataset is built, `sync` writes the disk's dirty pages back (untimed), so that branch fsyncs do not queue behind them; each branch is deleted again outside the timed part, so the catalog stays at one or two entries; further figures show the cost with many branches alive and as deleted branches pile up without a reopen |
//! | `layers_visited` | layers a `get` visits (`get_traced`), p50 / p99 / max over random keys at the newest LSN, and the max every 10 rounds | N/10 keys imaged once, then 60 rounds each appending a 20-byte delta to a random 5% of keys, flushed each round; once with `compact()` whenever 4 L0 layers piled up (image layers sized to the data), once without compaction |
//! | `space_after_gc` | sum of layer file sizes / live data of the retention window | N/4 keys overwritten with 100-byte images in 12 rounds (one flush each, `compact()` once 4 L0 layers piled up, `gc()` after each), `gc_horizon` = 3 rounds of LSNs |
//!
//! "Live data of the retention window" is, precisely: for every key, the bytes of its value at
//! the GC cutoff, plus the bytes of every version written above the cutoff up to
//! `last_record_lsn` — value bytes only (the figure with 16 key bytes per version added is
//! printed too).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use stratakv::{FsyncPolicy, LayerKind, Lsn, SimpleRedo, Store, StoreOptions, Timeline, Value};
use tokio::runtime::Runtime;

const SEED: u64 = 0x5EED_0415_7041_0001;
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
/// Keys in the full run (the larger branch dataset).
const FULL_KEYS: u64 = 1_000_000;
/// Keys when the binary runs as a test (`cargo test --benches`).
const TEST_KEYS: u64 = 10_000;
/// Puts between two `finish_write` calls.
const BATCH: u64 = 1000;
const POOL_LEN: usize = 1 << 20;
const FIRST_LSN: u64 = 0x1000;
/// Rounds of sparse delta updates in the layers-visited dataset.
const DELTA_ROUNDS: u64 = 60;
/// Share of keys each of those rounds updates, in percent.
const DELTA_SHARE_PERCENT: u64 = 5;
const DELTA_LEN: usize = 20;
/// Rounds of full overwrites in the space dataset, and how many of them retention keeps.
const SPACE_ROUNDS: u64 = 12;
const RETAINED_ROUNDS: u64 = 3;
/// Branches kept alive for the "many branches" figure.
const MANY_BRANCHES: usize = 300;

/// splitmix64: a tiny deterministic PRNG.
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

fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [b'.'; KEY_LEN];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
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

    fn bytes(&self, salt: u64, len: usize) -> Bytes {
        let at = (mix(SEED ^ salt) % (POOL_LEN - len) as u64) as usize;
        Bytes::copy_from_slice(&self.0[at..at + len])
    }

    /// The value of key `i` in round `round`; the same every time.
    fn value(&self, i: u64, round: u64) -> Bytes {
        self.bytes(i ^ (round << 40), VALUE_LEN)
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An open store in a temporary directory on disk, and its timeline `main`.
struct Db {
    dir: tempfile::TempDir,
    store: Option<Store>,
    tl: Timeline,
}

impl Db {
    fn open(rt: &Runtime, options: impl FnOnce(&Path) -> StoreOptions) -> Db {
        Db::open_in(rt, &std::env::temp_dir(), options)
    }

    /// A store in a new directory under `parent`.
    fn open_in(rt: &Runtime, parent: &Path, options: impl FnOnce(&Path) -> StoreOptions) -> Db {
        let dir = tempfile::Builder::new()
            .prefix("stratakv-bench-history-")
            .tempdir_in(parent)
            .expect("temp dir");
        let (store, tl) = rt.block_on(async {
            let store = Store::open(options(dir.path())).await.expect("open store");
            let tl = store.create_timeline("main").await.expect("create main");
            (store, tl)
        });
        Db {
            dir,
            store: Some(store),
            tl,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    /// Closes and opens the store again (with `base_options`), refreshing the handle of `main`.
    fn reopen(&mut self, rt: &Runtime) {
        if let Some(store) = self.store.take() {
            rt.block_on(store.close()).expect("close store");
        }
        let store = rt
            .block_on(Store::open(base_options(self.dir.path())))
            .expect("reopen store");
        self.tl = store.timeline("main").expect("main");
        self.store = Some(store);
    }

    fn close(mut self, rt: &Runtime) {
        if let Some(store) = self.store.take() {
            rt.block_on(store.close()).expect("close store");
        }
    }
}

/// Options every dataset starts from: no background work (the benchmark runs compaction and
/// GC itself), retention by LSN only, no WAL fsync while building.
fn base_options(p: &Path) -> StoreOptions {
    StoreOptions::new(p)
        .background_period(None)
        .pitr_interval(None)
        .fsync_policy(FsyncPolicy::Never)
}

/// L0 layers that make the benchmark compact, as the background thread would (its default).
const COMPACTION_THRESHOLD: usize = 4;

/// Number of L0 delta layers (flush output not yet compacted).
fn l0_count(tl: &Timeline) -> usize {
    tl.layers()
        .iter()
        .filter(|l| l.kind == LayerKind::Delta && l.level == 0)
        .count()
}

/// Sum of the sizes of the layer files a timeline names.
fn layer_bytes(tl: &Timeline) -> u64 {
    tl.layers().iter().map(|l| l.file_size).sum()
}

/// Sum of the sizes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("dir entry");
        let md = e.metadata().expect("metadata");
        total += if md.is_dir() {
            dir_bytes(&e.path())
        } else {
            md.len()
        };
    }
    total
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Median, and the smallest and largest, of some durations.
fn spread(mut d: Vec<Duration>) -> String {
    if d.is_empty() {
        return "n=0".to_string();
    }
    d.sort();
    format!(
        "n={}, median {:.2?}, min {:.2?}, max {:.2?}",
        d.len(),
        d[d.len() / 2],
        d[0],
        d[d.len() - 1]
    )
}

// ---------------------------------------------------------------------------------------------
// (a) Branch creation
// ---------------------------------------------------------------------------------------------

/// Value length of the `disk/10GiB` branch dataset.
const BIG_VALUE_LEN: usize = 8 << 10;
/// Keys of that dataset: 10 GiB of values.
const BIG_KEYS: u64 = (10 << 30) / BIG_VALUE_LEN as u64;

/// `n` keys written once with images of `value_len` bytes at consecutive LSNs, flushed to
/// layer files.
fn build_branch_base(
    rt: &Runtime,
    parent: &Path,
    n: u64,
    value_len: usize,
    pool: &Pool,
) -> (Db, Lsn) {
    let started = Instant::now();
    let db = Db::open_in(rt, parent, base_options);
    let mut w = db.tl.writer().expect("writer");
    let mut lsn = Lsn(FIRST_LSN);
    for i in 0..n {
        lsn = Lsn(FIRST_LSN + i);
        w.put(&key(i), lsn, Value::Image(pool.bytes(i, value_len)))
            .expect("put");
        if (i + 1).is_multiple_of(BATCH) {
            w.finish_write(lsn).expect("finish_write");
        }
    }
    w.finish_write(lsn).expect("finish_write");
    drop(w);
    rt.block_on(db.tl.flush()).expect("flush");
    // Gigabytes of dirty pages would make the timed fsyncs wait for the disk's backlog.
    let synced = std::process::Command::new("sync").status();
    assert!(
        synced.as_ref().is_ok_and(|s| s.success()),
        "sync: {synced:?}"
    );
    println!(
        "  branch base in {}: {n} keys flushed into {} layer files, {:.1} MiB, in {:.2?}",
        parent.display(),
        db.tl.layers().len(),
        mib(layer_bytes(&db.tl)),
        started.elapsed()
    );
    (db, lsn)
}

/// Times `iters` branch creations of `main` at `lsn`; each branch is deleted again outside the
/// timed part so that the catalog does not grow with the iteration count.
fn time_branches(rt: &Runtime, db: &Db, lsn: Lsn, iters: u64, next: &mut u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        *next += 1;
        let name = format!("bench-{next}");
        let start = Instant::now();
        let b = rt
            .block_on(db.store().branch(&name, &db.tl, black_box(lsn)))
            .expect("branch");
        total += start.elapsed();
        drop(b);
        rt.block_on(db.store().delete_timeline(&name))
            .expect("delete branch");
    }
    total
}

/// Creates and deletes branches without reopening: the branch time as deleted timelines pile
/// up in the store's memory.
fn branch_churn(rt: &Runtime, db: &mut Db, lsn: Lsn, windows: u64, per_window: u64) {
    db.reopen(rt);
    let mut means = Vec::new();
    let mut next = 0;
    for _ in 0..windows {
        let mut total = Duration::ZERO;
        for _ in 0..per_window {
            next += 1;
            let name = format!("churn-{next}");
            let start = Instant::now();
            rt.block_on(db.store().branch(&name, &db.tl, lsn))
                .expect("branch");
            total += start.elapsed();
            rt.block_on(db.store().delete_timeline(&name))
                .expect("delete branch");
        }
        means.push(format!("{:.2?}", total / per_window as u32));
    }
    println!(
        "  mean branch time per {per_window} create+delete cycles since open, without reopening: {}",
        means.join(", ")
    );
}

/// Creates `count` branches and keeps them: the cost as the catalog grows.
fn many_branches(rt: &Runtime, db: &Db, lsn: Lsn, count: usize) {
    let mut took = Vec::with_capacity(count);
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let start = Instant::now();
        let b = rt
            .block_on(db.store().branch(&format!("kept-{i}"), &db.tl, lsn))
            .expect("branch");
        took.push(start.elapsed());
        handles.push(b);
    }
    let tenth = (count / 10).max(1);
    println!(
        "  with branches kept alive: the first {tenth} took {}; the last {tenth} (catalog of ~{count} timelines) took {}",
        spread(took[..tenth].to_vec()),
        spread(took[count - tenth..].to_vec())
    );
}

// ---------------------------------------------------------------------------------------------
// (b) Layers visited per get after a long ingest
// ---------------------------------------------------------------------------------------------

struct Visited {
    label: &'static str,
    p50: u32,
    p99: u32,
    max: u32,
    layers: usize,
    mean_get: Duration,
    compact_times: Vec<Duration>,
    /// Layers visited as ingest goes on (at the newest LSN then).
    checkpoints: Vec<String>,
}

/// Layers visited by `samples` gets of random keys at `lsn`, each checked to exist.
fn sample_visited(
    rt: &Runtime,
    tl: &Timeline,
    n: u64,
    lsn: Lsn,
    samples: u64,
    salt: u64,
) -> Vec<u32> {
    let mut rng = Rng(SEED ^ 0xC ^ (salt << 8));
    rt.block_on(async {
        let mut visited = Vec::with_capacity(samples as usize);
        for _ in 0..samples {
            let (v, trace) = tl.get_traced(&key(rng.below(n)), lsn).await.expect("get");
            assert!(v.is_some());
            visited.push(trace.layers_visited);
        }
        visited
    })
}

fn layers_visited(rt: &Runtime, n: u64, pool: &Pool, compaction: bool) -> Visited {
    let started = Instant::now();
    // Sized to the dataset: a new L1 layer every ~n/8 keys' worth of bytes, and an image
    // layer once the deltas above the newest image outweigh a fifth of the data.
    let data = n * (KEY_LEN + VALUE_LEN) as u64;
    let db = Db::open(rt, |p| {
        let o = base_options(p).wal(false);
        if compaction {
            o.compaction_threshold(COMPACTION_THRESHOLD)
                .target_layer_size((data / 8).max(64 << 10))
                .image_threshold_bytes((data / 5).max(64 << 10))
        } else {
            o.compaction_threshold(usize::MAX)
                .image_threshold_bytes(u64::MAX)
        }
    });
    if compaction {
        println!(
            "  options with compaction: compaction_threshold {COMPACTION_THRESHOLD}, target_layer_size {} B, \
             image_threshold_bytes {} B (a fifth of the {data} B of keys and values)",
            (data / 8).max(64 << 10),
            (data / 5).max(64 << 10)
        );
    }
    let mut w = db.tl.writer().expect("writer");
    let mut lsn = FIRST_LSN;
    for i in 0..n {
        w.put(&key(i), Lsn(lsn), Value::Image(pool.value(i, 0)))
            .expect("put");
        lsn += 1;
    }
    w.finish_write(Lsn(lsn - 1)).expect("finish_write");
    rt.block_on(db.tl.flush()).expect("flush");
    let mut rng = Rng(SEED ^ 0xB);
    let per_round = (n * DELTA_SHARE_PERCENT / 100).max(1);
    let mut compact_times = Vec::new();
    let mut checkpoints = Vec::new();
    for round in 1..=DELTA_ROUNDS {
        for _ in 0..per_round {
            let i = rng.below(n);
            let tail = pool.bytes(i ^ (round << 32), DELTA_LEN);
            w.put(&key(i), Lsn(lsn), Value::delta(SimpleRedo::append(&tail)))
                .expect("put");
            lsn += 1;
        }
        w.finish_write(Lsn(lsn - 1)).expect("finish_write");
        rt.block_on(db.tl.flush()).expect("flush");
        if compaction && l0_count(&db.tl) >= COMPACTION_THRESHOLD {
            let start = Instant::now();
            rt.block_on(db.tl.compact()).expect("compact");
            compact_times.push(start.elapsed());
        }
        if round % 10 == 0 {
            let v = sample_visited(rt, &db.tl, n, Lsn(lsn - 1), 1000, round);
            checkpoints.push(v.into_iter().max().expect("samples").to_string());
        }
    }
    drop(w);
    let last = Lsn(lsn - 1);
    let samples = n.min(20_000);
    let start = Instant::now();
    let mut visited = sample_visited(rt, &db.tl, n, last, samples, 0);
    let mean_get = start.elapsed() / samples as u32;
    visited.sort_unstable();
    let pct = |p: usize| visited[(visited.len() * p / 100).min(visited.len() - 1)];
    let r = Visited {
        label: if compaction {
            "with compaction"
        } else {
            "without compaction"
        },
        p50: pct(50),
        p99: pct(99),
        max: *visited.last().expect("samples"),
        layers: db.tl.layers().len(),
        mean_get,
        compact_times,
        checkpoints,
    };
    println!(
        "  {}: {n} keys + {DELTA_ROUNDS} rounds of {per_round} deltas ({} versions) built in {:.2?}; {} layer files",
        r.label,
        n + DELTA_ROUNDS * per_round,
        started.elapsed(),
        r.layers
    );
    db.close(rt);
    r
}

// ---------------------------------------------------------------------------------------------
// (c) Space after GC over the live data of the retention window
// ---------------------------------------------------------------------------------------------

fn space_after_gc(rt: &Runtime, n: u64, pool: &Pool) {
    let started = Instant::now();
    let horizon = RETAINED_ROUNDS * n;
    let db = Db::open(rt, |p| base_options(p).gc_horizon(Some(horizon)));
    println!(
        "  {n} keys overwritten with {VALUE_LEN}-byte images in {SPACE_ROUNDS} rounds, one LSN per put, \
         gc_horizon = {horizon} LSNs ({RETAINED_ROUNDS} rounds); one flush per round, compact() once \
         {COMPACTION_THRESHOLD} L0 layers piled up, gc() after every round; default options otherwise \
         (image_threshold_bytes 128 MiB, target_layer_size 64 MiB, gc_compaction_ratio 0.15)"
    );
    println!(
        "  {:>5} {:>8} {:>7} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "round", "layers", "MiB", "live MiB", "ratio", "with keys", "compact", "gc"
    );
    let mut w = db.tl.writer().expect("writer");
    let mut compact_times = Vec::new();
    let mut gc_times = Vec::new();
    let mut ratio = 0.0;
    // The ratio after every round once the window holds RETAINED_ROUNDS + 1 rounds.
    let mut steady = Vec::new();
    for round in 0..SPACE_ROUNDS {
        let first = FIRST_LSN + round * n;
        for i in 0..n {
            w.put(&key(i), Lsn(first + i), Value::Image(pool.value(i, round)))
                .expect("put");
            if (i + 1).is_multiple_of(BATCH) {
                w.finish_write(Lsn(first + i)).expect("finish_write");
            }
        }
        w.finish_write(Lsn(first + n - 1)).expect("finish_write");
        rt.block_on(db.tl.flush()).expect("flush");
        let compact = if l0_count(&db.tl) >= COMPACTION_THRESHOLD {
            let start = Instant::now();
            rt.block_on(db.tl.compact()).expect("compact");
            compact_times.push(start.elapsed());
            Some(start.elapsed())
        } else {
            None
        };
        let start = Instant::now();
        let report = rt.block_on(db.tl.gc()).expect("gc");
        let gc = start.elapsed();
        gc_times.push(gc);
        // Key i holds round r's value at LSN FIRST_LSN + r*n + i. The live data of the window:
        // each key's value at the cutoff, plus every version above the cutoff.
        let cutoff = report.cutoff.0;
        let lrl = db.tl.last_record_lsn().0;
        let mut versions = 0u64;
        for i in 0..n {
            let lsns = (0..=round).map(|r| FIRST_LSN + r * n + i);
            let at_cutoff = lsns.clone().filter(|l| *l <= cutoff).count().min(1) as u64;
            let above = lsns.filter(|l| *l > cutoff && *l <= lrl).count() as u64;
            versions += at_cutoff + above;
        }
        let live = versions * VALUE_LEN as u64;
        let on_disk = layer_bytes(&db.tl);
        ratio = on_disk as f64 / live as f64;
        let with_keys = on_disk as f64 / (versions * (KEY_LEN + VALUE_LEN) as u64) as f64;
        if round > RETAINED_ROUNDS {
            steady.push((ratio, with_keys));
        }
        let compact = compact.map_or("-".to_string(), |d| format!("{d:.2?}"));
        println!(
            "  {:>5} {:>8} {:>7.1} {:>10.1} {:>10.3} {:>10.3} {:>12} {:>12.2?}",
            round + 1,
            db.tl.layers().len(),
            mib(on_disk),
            mib(live),
            ratio,
            with_keys,
            compact,
            gc
        );
        if round + 1 == SPACE_ROUNDS {
            println!(
                "  space after GC: {:.1} MiB of layer files / {:.1} MiB live value bytes in the window \
                 ({versions} versions: each key's value at the cutoff {} plus every version up to {}) = {ratio:.3} \
                 (target <= 1.3); counting 16 key bytes per version too: {with_keys:.3}; whole store directory \
                 (WAL, manifests, time index included): {:.1} MiB",
                mib(on_disk),
                mib(live),
                report.cutoff,
                Lsn(lrl),
                mib(dir_bytes(db.dir.path()))
            );
            // Spot-check the window: the value at the cutoff and at the newest LSN.
            rt.block_on(async {
                for i in (0..n).step_by((n / 100).max(1) as usize) {
                    let newest = db.tl.get(&key(i), Lsn(lrl)).await.expect("get");
                    assert_eq!(newest.as_deref(), Some(&pool.value(i, round)[..]));
                    let old = db.tl.get(&key(i), report.cutoff).await.expect("get");
                    assert!(old.is_some(), "key {i} at the cutoff");
                }
            });
        }
    }
    drop(w);
    println!(
        "  compact() once {COMPACTION_THRESHOLD} L0 layers piled up: {}",
        spread(compact_times)
    );
    println!("  gc() after each round: {}", spread(gc_times));
    if !steady.is_empty() {
        let stats = |ratios: Vec<f64>| {
            let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
            let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let max = ratios.iter().copied().fold(0.0, f64::max);
            format!("min {min:.3}, mean {mean:.3}, max {max:.3}")
        };
        println!(
            "  space after GC once the window is full (rounds {}..={SPACE_ROUNDS}): {} (target <= 1.3); counting key bytes too: {}",
            RETAINED_ROUNDS + 2,
            stats(steady.iter().map(|r| r.0).collect()),
            stats(steady.iter().map(|r| r.1).collect()),
        );
    }
    println!(
        "  ({SPACE_ROUNDS} rounds of {n} puts, built in {:.2?}; final ratio {ratio:.3})",
        started.elapsed()
    );
    db.close(rt);
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let test_mode = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test");
    // A positional argument is criterion's filter; the figures run when it names them.
    let filter: Option<&String> = args.iter().skip(1).find(|a| !a.starts_with('-'));
    let wants = |part: &str| filter.is_none_or(|f| part.contains(f.as_str()));
    let n: u64 = match std::env::var("STRATAKV_BENCH_KEYS") {
        Ok(s) => s
            .trim()
            .replace('_', "")
            .parse()
            .expect("STRATAKV_BENCH_KEYS must be a number of keys"),
        Err(_) if test_mode => TEST_KEYS,
        Err(_) => FULL_KEYS,
    };
    assert!(
        (10_000..=u64::from(u32::MAX)).contains(&n),
        "STRATAKV_BENCH_KEYS must be in 10000..=2^32-1"
    );
    let quick = n < FULL_KEYS;
    println!(
        "StrataKV history benchmarks: N = {n} keys of {KEY_LEN} B, values of {VALUE_LEN} B, seed {SEED:#018x}{}",
        if quick { " (quick mode)" } else { "" }
    );
    let base = Criterion::default().without_plots();
    let base = if quick {
        base.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
    } else {
        base.sample_size(30)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(8))
    };
    let mut c = base.configure_from_args();
    let rt = runtime();
    let pool = Pool::new(SEED);

    // (a) Branch creation at two data sizes, N/10 and N keys, and at 10 GiB if asked.
    // On the temporary directory's disk (what a store pays: every branch fsyncs its directory,
    // manifest, time index and the catalog), and on tmpfs where fsync is free (the CPU cost).
    let big = match std::env::var("STRATAKV_BENCH_BIG").as_deref() {
        Ok("1") => true,
        Ok("0") | Err(_) => false,
        Ok(other) => panic!("STRATAKV_BENCH_BIG={other:?}: expected 1 or 0"),
    };
    {
        let mut g = c.benchmark_group("branch/create");
        let shm = Path::new("/dev/shm");
        let mut media = vec![("disk", std::env::temp_dir())];
        if shm.is_dir() {
            media.push(("tmpfs", shm.to_path_buf()));
        }
        for (medium, parent) in &media {
            let mut datasets = vec![
                (format!("{}_keys", n / 10), n / 10, VALUE_LEN),
                (format!("{n}_keys"), n, VALUE_LEN),
            ];
            // tmpfs keeps its files in RAM: 10 GiB of layers does not fit beside the rest on a
            // 24 GiB machine.
            if big && *medium == "disk" {
                datasets.push(("10GiB".to_string(), BIG_KEYS, BIG_VALUE_LEN));
            }
            for (name, size, value_len) in datasets {
                let mut base: Option<(Db, Lsn)> = None;
                let mut next = 0;
                g.bench_function(format!("{medium}/{name}"), |b| {
                    let (db, lsn) = base.get_or_insert_with(|| {
                        build_branch_base(&rt, parent, size, value_len, &pool)
                    });
                    b.iter_custom(|iters| time_branches(&rt, db, *lsn, iters, &mut next));
                });
                if let Some((mut db, lsn)) = base.take() {
                    if *medium == "tmpfs" && size == n / 10 {
                        let per_window = if quick { 500 } else { 2000 };
                        branch_churn(&rt, &mut db, lsn, 5, per_window);
                    }
                    db.reopen(&rt);
                    many_branches(&rt, &db, lsn, if quick { 50 } else { MANY_BRANCHES });
                    db.close(&rt);
                }
            }
        }
        g.finish();
    }

    // (b) Layers visited per get after a long ingest, with and without compaction.
    if wants("figures/layers_visited") {
        println!("figures/layers_visited");
        let k = (n / 10).max(1000);
        let with = layers_visited(&rt, k, &pool, true);
        let without = layers_visited(&rt, k, &pool, false);
        println!(
            "  compact() once {COMPACTION_THRESHOLD} L0 layers piled up (with compaction): {}",
            spread(with.compact_times.clone())
        );
        for v in [&with, &without] {
            println!(
                "  layers visited per get, {}: p50 {} / p99 {} / max {} ({} layer files; mean get_traced {:.2?}); max after 10, 20, .. rounds: {}",
                v.label,
                v.p50,
                v.p99,
                v.max,
                v.layers,
                v.mean_get,
                v.checkpoints.join(", ")
            );
        }
    }

    // (c) Bytes on disk after GC over the live data of the retention window.
    if wants("figures/space_after_gc") {
        println!("figures/space_after_gc");
        space_after_gc(&rt, (n / 4).max(1000), &pool);
    }

    c.final_summary();
}
