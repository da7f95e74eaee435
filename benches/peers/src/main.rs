//! StrataKV against RocksDB, fjall and SlateDB, on the same data, in one run, at the same commit
//! granularity.
//!
//! ```text
//! cd benches/peers && cargo run --release -- [--keys N] [--gets G] [--secs S] [--only ENGINE,..]
//! ```
//!
//! The first build compiles RocksDB from the C++ sources the `librocksdb-sys` crate bundles
//! (15–25 minutes on 2 cores; needs `apt-get install libclang-dev` for bindgen); it stays in
//! `benches/peers/target`, so the harness is one command after that. `--no-default-features`
//! leaves RocksDB and SlateDB out; `--features rocksdb` or `--features slatedb` takes one back.
//! A full run (no `--only`) writes `benches/BENCHMARKS.md` (keeping its hand-written page-server
//! section); a partial one writes `target/partial/BENCHMARKS.md`.
//!
//! Each engine runs in its own child process (the binary re-executed with `--child ENGINE`), so
//! that its peak RSS (`VmHWM`) is its own.
//!
//! `--durable [SECS]` runs only the comparison of ingest acknowledged in object storage (see
//! `src/durable.rs`).
//!
//! Data (identical for every engine, from one seed): N keys of 16 bytes (index big-endian, then
//! `.` padding); rounds that either rewrite every key in a shuffled order ("full") or update a
//! random 10% of the keys, one in ten of those a delete ("10%"); the main rounds are full, 10%,
//! 10%, full, 10%, 10% (2.4·N puts), the rounds written while a reader reads ("tail") 10%, 10%,
//! full. Every put has its own LSN. Values of 100 bytes cut from a seeded random pool
//! (incompressible), derived from (key, LSN), so the model is a sorted list of LSNs per key.
//!
//! Every get names a random LSN (uniform over everything written so far; one in ten at the end
//! of a round) and a random key, one in ten of them never written; many of the others are absent
//! at that LSN too (not yet written, or deleted). Every answer is checked against the model.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratakv::{FsyncPolicy, Lsn, Store, StoreOptions, Timeline, TimelineWriter, Value};

mod durable;

const SEED: u64 = 0x5EED_57A7_A0C0_FFEE;
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
const POOL_LEN: usize = 1 << 20;
const FIRST_LSN: u64 = 0x1000;
/// Puts per commit in the batched mode.
const BATCH: usize = 1000;
/// The cache budget every engine gets (block cache; SlateDB's block cache, its metadata cache
/// at its default beside it). Larger than the data, so no engine is cache-bound.
const CACHE_BYTES: usize = 512 << 20;
/// One key in this many that a get names was never written.
const ABSENT_ONE_IN: u64 = 10;

const DEFAULT_KEYS: u64 = 1_000_000;
const DEFAULT_GETS: usize = 200_000;
const DEFAULT_SECS: f64 = 3.0;

/// A round: `true` rewrites every key, `false` updates a random 10% (one in ten a delete).
const MAIN_ROUNDS: [bool; 6] = [true, false, false, true, false, false];
const TAIL_ROUNDS: [bool; 3] = [false, false, true];

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
fn vkey(k: &[u8], lsn: u64) -> [u8; KEY_LEN + 8] {
    let mut v = [0u8; KEY_LEN + 8];
    v[..KEY_LEN].copy_from_slice(k);
    v[KEY_LEN..].copy_from_slice(&(u64::MAX - lsn).to_be_bytes());
    v
}

/// Exclusive upper bound of every version of `k`: the key with its last byte incremented
/// (the padding byte is `.`, so this never overflows).
fn upper(k: &[u8]) -> Key {
    let mut u: Key = k.try_into().expect("16-byte key");
    u[KEY_LEN - 1] += 1;
    u
}

/// One put: key index, LSN, and whether it deletes the key.
#[derive(Clone, Copy)]
struct Op {
    key: u32,
    lsn: u64,
    del: bool,
}

/// The workload and its model, shared by all engines.
struct Data {
    n: u64,
    pool: Vec<u8>,
    /// First LSN of every round (main, then tail), and one past the last.
    starts: Vec<u64>,
    /// Per key, its versions in LSN order: `lsn << 1 | deleted`.
    model: Vec<Vec<u64>>,
}

impl Data {
    fn new(n: u64) -> Data {
        let mut rng = Rng(SEED);
        let pool = (0..POOL_LEN).map(|_| rng.next() as u8).collect();
        let mut d = Data {
            n,
            pool,
            starts: vec![FIRST_LSN],
            model: vec![Vec::new(); n as usize],
        };
        for r in 0..MAIN_ROUNDS.len() + TAIL_ROUNDS.len() {
            let ops = d.round(r);
            for op in &ops {
                d.model[op.key as usize].push(op.lsn << 1 | u64::from(op.del));
            }
            d.starts.push(ops.last().expect("round").lsn + 1);
        }
        d
    }

    /// The puts of round `r` (counting main rounds, then tail rounds), in write order.
    fn round(&self, r: usize) -> Vec<Op> {
        let full = *MAIN_ROUNDS
            .iter()
            .chain(&TAIL_ROUNDS)
            .nth(r)
            .expect("round");
        let mut rng = Rng(SEED ^ mix(r as u64 + 1));
        let mut v: Vec<u32> = (0..self.n as u32).collect();
        let take = if full { v.len() } else { (v.len() / 10).max(1) };
        for i in 0..take {
            let j = i + rng.below((v.len() - i) as u64) as usize;
            v.swap(i, j);
        }
        v.truncate(take);
        let base = self.starts[r];
        v.into_iter()
            .enumerate()
            .map(|(j, key)| Op {
                key,
                lsn: base + j as u64,
                del: !full && rng.below(10) == 0,
            })
            .collect()
    }

    fn value(&self, i: u64, lsn: u64) -> &[u8] {
        let at = (mix(SEED ^ (i << 32) ^ lsn) % (POOL_LEN - VALUE_LEN) as u64) as usize;
        &self.pool[at..at + VALUE_LEN]
    }

    /// The last LSN of the main rounds.
    fn main_end(&self) -> u64 {
        self.starts[MAIN_ROUNDS.len()] - 1
    }

    /// What a get of key `i` as of `lsn` must return.
    fn expect(&self, i: u64, lsn: u64) -> Option<&[u8]> {
        let v = self.model.get(i as usize)?;
        let at = v.partition_point(|e| e >> 1 <= lsn);
        let e = *v.get(at.checked_sub(1)?)?;
        (e & 1 == 0).then(|| self.value(i, e >> 1))
    }

    /// A random (key index, LSN) at or below `hi`: one key in [`ABSENT_ONE_IN`] never written,
    /// one LSN in ten at the end of a round.
    fn pick(&self, rng: &mut Rng, hi: u64) -> (u64, u64) {
        let i = if rng.below(ABSENT_ONE_IN) == 0 {
            self.n + rng.below(self.n)
        } else {
            rng.below(self.n)
        };
        let lsn = if rng.below(10) == 0 {
            let done = self
                .starts
                .iter()
                .skip(1)
                .take_while(|&&s| s - 1 <= hi)
                .count();
            if done == 0 {
                hi
            } else {
                self.starts[1 + rng.below(done as u64) as usize] - 1
            }
        } else {
            FIRST_LSN + rng.below(hi - FIRST_LSN + 1)
        };
        (i, lsn)
    }

    /// Panics unless `got` is what the model says key `i` holds at `lsn`.
    fn check(&self, i: u64, lsn: u64, got: Option<&[u8]>) -> usize {
        let want = self.expect(i, lsn);
        assert!(
            got == want,
            "key {i} at LSN {lsn}: got {:?}, the model says {:?}",
            got.map(|v| &v[..v.len().min(8)]),
            want.map(|v| &v[..8])
        );
        got.map_or(0, <[u8]>::len)
    }
}

/// One engine under test. Every method takes `&self`, so that a reader thread can run beside
/// the writer; what each thread needs of its own is in `W` (the writer) and `R` (a reader).
trait Engine: Sync + Sized {
    /// The writer's state (a pending write batch, say).
    type W: Send;
    /// A reader's state.
    type R;
    /// A writer committing every `batch` puts.
    fn writer(&self, batch: usize) -> Self::W;
    /// Writes `ops` with a commit every `batch` puts (and after the last), storing the LSN of
    /// each commit into `published` once it returned.
    fn ingest(&self, w: &mut Self::W, d: &Data, ops: &[Op], batch: usize, published: &AtomicU64) {
        for chunk in ops.chunks(batch) {
            for op in chunk {
                let k = key(u64::from(op.key));
                let v = (!op.del).then(|| d.value(u64::from(op.key), op.lsn));
                self.put(w, &k, op.lsn, v);
            }
            let last = chunk.last().expect("chunk").lsn;
            self.commit(w, last);
            published.store(last, Ordering::Release);
        }
    }
    /// One put (`None` deletes); it takes effect by the next commit.
    fn put(&self, w: &mut Self::W, k: &[u8], lsn: u64, v: Option<&[u8]>);
    /// Commits the puts since the last commit; `lsn` is the last put's.
    fn commit(&self, w: &mut Self::W, lsn: u64);
    /// Writes everything to files on disk.
    fn flush(&self);
    /// Waits until background work has settled; returns what it waited for.
    fn settle(&self) -> String;
    /// The files or layers a read can go through, as text.
    fn shape(&self) -> String;
    /// A reader for the calling thread.
    fn reader(&self) -> Self::R;
    /// Reads `k` as of `lsn` and hands the value to `f`.
    fn get<T>(&self, r: &mut Self::R, k: &[u8], lsn: u64, f: impl FnOnce(Option<&[u8]>) -> T) -> T;
    /// Closes the engine.
    fn close(self);
}

/// What a child process measured of one engine, as `name=value` lines.
#[derive(Default)]
struct Row {
    fields: Vec<(String, String)>,
}

impl Row {
    fn set(&mut self, k: &str, v: impl ToString) {
        self.fields.push((k.into(), v.to_string()));
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    fn num(&self, k: &str) -> f64 {
        self.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
    }
    fn text(&self, k: &str) -> String {
        self.get(k).unwrap_or("?").to_string()
    }
}

fn quantile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    f64::from(sorted[((sorted.len() - 1) as f64 * p).round() as usize])
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

/// A field of `/proc/self/status` in kB (`VmHWM`, `VmRSS`).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Prints the process's RSS now and its peak so far.
fn phase_rss(name: &str, when: &str) {
    eprintln!(
        "  {name}: RSS {when}: {} MB (anonymous {} MB, file-backed {} MB; peak so far {} MB)",
        status_kb("VmRSS") / 1024,
        status_kb("RssAnon") / 1024,
        status_kb("RssFile") / 1024,
        status_kb("VmHWM") / 1024
    );
}

/// Polls `shape` until it has not changed for `quiet`, at most `max`.
fn settle_by_shape(shape: impl Fn() -> String, quiet: Duration, max: Duration) -> String {
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

/// The scheduling floor a reader thread meets: spins on the clock between gets and keeps the
/// largest gap between two consecutive clock reads.
#[derive(Default)]
struct Floor {
    max_gap_ns: u64,
    gaps_over_1ms: u64,
}

impl Floor {
    /// Spins for `d` (at least 1 µs), reading the clock.
    fn spin(&mut self, d: Duration) {
        let d = d.max(Duration::from_micros(1));
        let start = Instant::now();
        let mut last = start;
        loop {
            let now = Instant::now();
            let gap = (now - last).as_nanos() as u64;
            if gap > self.max_gap_ns {
                self.max_gap_ns = gap;
            }
            if gap > 1_000_000 {
                self.gaps_over_1ms += 1;
            }
            last = now;
            if now - start >= d {
                break;
            }
        }
    }
}

/// With `--rusage`, `getrusage(RUSAGE_THREAD)` around every get under ingest, to tell where
/// the slowest gets spent their time: on the CPU, off it after blocking (voluntary context
/// switches: a lock, I/O), or preempted (involuntary ones). It costs two system calls per get,
/// so it is off for the published figures.
struct Slowest {
    on: bool,
    /// (wall µs, CPU µs, of which in the kernel, voluntary switches, involuntary switches),
    /// the slowest few.
    worst: Vec<(f64, f64, f64, i64, i64)>,
}

impl Slowest {
    fn new(on: bool) -> Self {
        Slowest {
            on,
            worst: Vec::new(),
        }
    }

    fn usage(&self) -> Option<libc::rusage> {
        if !self.on {
            return None;
        }
        // SAFETY: getrusage writes a plain struct the call owns.
        unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            (libc::getrusage(libc::RUSAGE_THREAD, &mut u) == 0).then_some(u)
        }
    }

    fn record(&mut self, took: Duration, before: Option<libc::rusage>) {
        let (Some(a), Some(b)) = (before, self.usage()) else {
            return;
        };
        let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
        let cpu = us(b.ru_utime) + us(b.ru_stime) - us(a.ru_utime) - us(a.ru_stime);
        let sys = us(b.ru_stime) - us(a.ru_stime);
        let wall = took.as_secs_f64() * 1e6;
        if self.worst.len() < 10 || wall > self.worst[self.worst.len() - 1].0 {
            self.worst.push((
                wall,
                cpu,
                sys,
                b.ru_nvcsw - a.ru_nvcsw,
                b.ru_nivcsw - a.ru_nivcsw,
            ));
            self.worst.sort_by(|x, y| y.0.total_cmp(&x.0));
            self.worst.truncate(10);
        }
    }

    fn print(&self, name: &str) {
        for (wall, cpu, sys, vol, invol) in &self.worst {
            eprintln!(
                "  {name}: slow get under ingest: {wall:.0} µs wall, {cpu:.0} µs CPU ({sys:.0} in \
                 the kernel), {vol} voluntary and {invol} involuntary context switches"
            );
        }
    }
}

/// Settings of one measured run.
struct Cfg {
    gets: usize,
    secs: f64,
    /// `--rusage`: see [`Slowest`].
    rusage: bool,
}

/// Ingests the main rounds, committing every `batch` puts; returns puts/s.
fn ingest_main<E: Engine>(e: &E, d: &Data, batch: usize, name: &str) -> f64 {
    let published = AtomicU64::new(0);
    let mut w = e.writer(batch);
    let (mut puts, mut secs) = (0usize, 0.0);
    for r in 0..MAIN_ROUNDS.len() {
        let ops = d.round(r);
        let t = Instant::now();
        e.ingest(&mut w, d, &ops, batch, &published);
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "  {name}: commit every {batch}: round {} ({} puts) {:.0} puts/s",
            r + 1,
            ops.len(),
            ops.len() as f64 / s
        );
        puts += ops.len();
        secs += s;
    }
    drop(w);
    puts as f64 / secs
}

/// `threads` readers for `secs`, untimed per get; returns gets/s over all of them.
/// What a timed get does with the value: copies it out (as a caller keeps what it read), so
/// that the model's check, with its own cache misses, runs after the clock stops. Whether a
/// value was found.
fn copy_out(v: Option<&[u8]>, into: &mut Vec<u8>) -> bool {
    into.clear();
    if let Some(v) = v {
        into.extend_from_slice(v);
    }
    v.is_some()
}

fn throughput<E: Engine>(e: &E, d: &Data, threads: usize, secs: f64, hi: u64) -> f64 {
    let stop = AtomicBool::new(false);
    let t = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|n| {
                let stop = &stop;
                s.spawn(move || {
                    let mut rng = Rng(SEED ^ 0x7417 ^ n as u64);
                    let mut r = e.reader();
                    let mut count = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            let (i, lsn) = d.pick(&mut rng, hi);
                            e.get(&mut r, &key(i), lsn, |v| d.check(i, lsn, v));
                        }
                        count += 64;
                    }
                    count
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        hs.into_iter().map(|h| h.join().expect("reader")).sum()
    });
    total as f64 / t.elapsed().as_secs_f64()
}

fn measure<E: Engine>(open: impl Fn(&Path) -> E, d: &Data, cfg: &Cfg, name: &str, row: &mut Row) {
    row.set("rss_base_kb", status_kb("VmRSS"));
    // Batched mode: ingest only.
    {
        let dir = tempdir(name);
        let e = open(dir.path());
        let rate = ingest_main(&e, d, BATCH, name);
        row.set("ingest_batch", rate);
        phase_rss(name, "after the batched ingest");
        e.close();
        phase_rss(name, "after closing the batched instance");
    }
    // One commit per put: ingest, then reads, then reads under a further ingest.
    let dir = tempdir(name);
    let e = open(dir.path());
    let rate = ingest_main(&e, d, 1, name);
    row.set("ingest_put", rate);
    phase_rss(name, "after the per-put ingest");
    let t = Instant::now();
    e.flush();
    let settle = e.settle();
    row.set("flush_settle_s", t.elapsed().as_secs_f64());
    row.set("settle", settle);
    row.set("shape", e.shape());
    row.set("disk_bytes", dir_bytes(dir.path()));
    eprintln!(
        "  {name}: {}; settle {}",
        row.text("shape"),
        row.text("settle")
    );

    let hi = d.main_end();
    let mut rng = Rng(SEED ^ 0x6e7);
    let picks: Vec<(u64, u64)> = (0..cfg.gets).map(|_| d.pick(&mut rng, hi)).collect();
    let mut r = e.reader();
    // Warm-up pass, untimed, at most `secs`.
    let t = Instant::now();
    for &(i, lsn) in &picks {
        e.get(&mut r, &key(i), lsn, |v| d.check(i, lsn, v));
        if t.elapsed().as_secs_f64() > cfg.secs {
            break;
        }
    }
    // Timed pass: each get on its own, at most 3·`secs`.
    let mut lat = Vec::with_capacity(picks.len());
    let (mut absent, t) = (0usize, Instant::now());
    let mut got = Vec::with_capacity(VALUE_LEN);
    for &(i, lsn) in &picks {
        let k = key(i);
        let t0 = Instant::now();
        let found = e.get(&mut r, &k, lsn, |v| copy_out(v, &mut got));
        lat.push(t0.elapsed().as_nanos() as u32);
        let n = d.check(i, lsn, found.then_some(&got[..]));
        absent += usize::from(n == 0);
        if lat.len() % 1024 == 0 && t.elapsed().as_secs_f64() > 3.0 * cfg.secs {
            break;
        }
    }
    drop(r);
    lat.sort_unstable();
    row.set("get_n", lat.len());
    row.set("get_absent", absent);
    row.set("get_median_ns", quantile(&lat, 0.5));
    row.set("get_p99_ns", quantile(&lat, 0.99));
    row.set("get_p999_ns", quantile(&lat, 0.999));
    eprintln!(
        "  {name}: get at a random LSN: median {:.2} µs, p99 {:.2} µs ({} gets, {absent} absent)",
        quantile(&lat, 0.5) / 1e3,
        quantile(&lat, 0.99) / 1e3,
        lat.len()
    );
    let t1 = throughput(&e, d, 1, cfg.secs, hi);
    let t2 = throughput(&e, d, 2, cfg.secs, hi);
    row.set("tput1", t1);
    row.set("tput2", t2);
    eprintln!("  {name}: gets/s 1 thread {t1:.0}, 2 threads {t2:.0}");
    phase_rss(name, "after the reads");
    row.set("rss_anon_reads_kb", status_kb("RssAnon"));
    row.set("rss_file_reads_kb", status_kb("RssFile"));

    // Reads under ingest: the tail rounds, one commit per put, beside one reader.
    let published = AtomicU64::new(hi);
    let done = AtomicBool::new(false);
    let tail: Vec<Op> = (MAIN_ROUNDS.len()..MAIN_ROUNDS.len() + TAIL_ROUNDS.len())
        .flat_map(|r| d.round(r))
        .collect();
    // After each get the reader spins on the clock for as long as the get took (the floor
    // probe): no engine code runs there, so the largest gap between two clock reads in the
    // spins is the longest the OS kept this thread off a core, from a sample of the same size
    // as the gets' own time.
    let (ingest_s, (mut ulat, floor)) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut rng = Rng(SEED ^ 0x7a11);
            let mut r = e.reader();
            let mut lat = Vec::with_capacity(1 << 20);
            let mut floor = Floor::default();
            let mut slow = Slowest::new(cfg.rusage);
            let mut got = Vec::with_capacity(VALUE_LEN);
            while !done.load(Ordering::Acquire) {
                let (i, lsn) = d.pick(&mut rng, published.load(Ordering::Acquire));
                let k = key(i);
                let u0 = slow.usage();
                let t0 = Instant::now();
                let found = e.get(&mut r, &k, lsn, |v| copy_out(v, &mut got));
                let took = t0.elapsed();
                d.check(i, lsn, found.then_some(&got[..]));
                slow.record(took, u0);
                lat.push(took.as_nanos() as u32);
                floor.spin(took);
            }
            slow.print(name);
            (lat, floor)
        });
        let mut w = e.writer(1);
        let t = Instant::now();
        e.ingest(&mut w, d, &tail, 1, &published);
        let secs = t.elapsed().as_secs_f64();
        drop(w);
        done.store(true, Ordering::Release);
        (secs, reader.join().expect("reader"))
    });
    row.set("floor_max_ns", floor.max_gap_ns);
    row.set("floor_over_1ms", floor.gaps_over_1ms);
    ulat.sort_unstable();
    row.set("under_puts_s", tail.len() as f64 / ingest_s);
    row.set("under_n", ulat.len());
    row.set("under_p50_ns", quantile(&ulat, 0.5));
    row.set("under_p99_ns", quantile(&ulat, 0.99));
    row.set("under_p999_ns", quantile(&ulat, 0.999));
    row.set("under_max_ns", ulat.last().copied().unwrap_or(0));
    row.set(
        "under_over_1ms",
        ulat.len() - ulat.partition_point(|l| *l <= 1_000_000),
    );
    eprintln!(
        "  {name}: under ingest ({:.0} puts/s): {} gets p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.0} µs",
        tail.len() as f64 / ingest_s,
        ulat.len(),
        quantile(&ulat, 0.5) / 1e3,
        quantile(&ulat, 0.99) / 1e3,
        quantile(&ulat, 0.999) / 1e3,
        f64::from(ulat.last().copied().unwrap_or(0)) / 1e3
    );
    eprintln!(
        "  {name}: floor probe beside it: largest gap between clock reads {:.0} µs, {} gaps over 1 ms",
        floor.max_gap_ns as f64 / 1e3,
        floor.gaps_over_1ms
    );
    e.close();
    row.set("rss_peak_kb", status_kb("VmHWM"));
}

fn tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("peers-{name}-"))
        .tempdir()
        .expect("temp dir")
}

// ---------------------------------------------------------------------------------------------
// StrataKV

struct Strata {
    /// For the async calls outside the measured paths (flush, settle, close).
    rt: tokio::runtime::Runtime,
    store: Store,
    tl: Timeline,
}

impl Engine for Strata {
    type W = TimelineWriter;
    type R = ();
    fn writer(&self, _batch: usize) -> TimelineWriter {
        self.tl.writer().expect("writer")
    }
    fn put(&self, w: &mut TimelineWriter, k: &[u8], lsn: u64, v: Option<&[u8]>) {
        let v = match v {
            Some(v) => Value::image(Bytes::copy_from_slice(v)),
            None => Value::Tombstone,
        };
        w.put(k, Lsn(lsn), v).expect("put");
    }
    fn commit(&self, w: &mut TimelineWriter, lsn: u64) {
        w.finish_write(Lsn(lsn)).expect("finish_write");
    }
    fn flush(&self) {
        self.rt.block_on(self.tl.flush()).expect("flush");
    }
    fn settle(&self) -> String {
        let t = Instant::now();
        self.rt.block_on(self.store.settle()).expect("settle");
        format!(
            "{:.1}s for `Store::settle` (flushes and compactions it had queued)",
            t.elapsed().as_secs_f64()
        )
    }
    fn shape(&self) -> String {
        let layers = self.tl.layers();
        let count = |level: u8| layers.iter().filter(|l| l.level == level).count();
        let mb = |f: &dyn Fn(&stratakv::LayerDesc) -> bool| {
            layers
                .iter()
                .filter(|l| f(l))
                .map(|l| l.file_size)
                .sum::<u64>() as f64
                / 1e6
        };
        format!(
            "{} layer files (L0 {}, L1 {}; {:.0} MB of deltas in L0, {:.0} MB in L1, {:.0} MB of \
             images), {} in memory",
            layers.len(),
            count(0),
            count(1),
            mb(&|l| l.kind == stratakv::LayerKind::Delta && l.level == 0),
            mb(&|l| l.kind == stratakv::LayerKind::Delta && l.level == 1),
            mb(&|l| l.kind == stratakv::LayerKind::Image),
            self.tl.in_memory_layers()
        )
    }
    fn reader(&self) {}
    fn get<T>(&self, _: &mut (), k: &[u8], lsn: u64, f: impl FnOnce(Option<&[u8]>) -> T) -> T {
        let v = self.tl.get_now(k, Lsn(lsn)).expect("get_now");
        f(v.as_deref())
    }
    fn close(self) {
        drop(self.tl);
        self.rt.block_on(self.store.close()).expect("close");
    }
}

fn open_stratakv(dir: &Path) -> Strata {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = Store::open_blocking(
        StoreOptions::new(dir)
            .fsync_policy(FsyncPolicy::Never)
            .zstd_level(None)
            .block_cache_bytes(CACHE_BYTES),
    )
    .expect("open");
    let tl = rt
        .block_on(store.create_timeline("main"))
        .expect("timeline");
    Strata { rt, store, tl }
}

fn run_stratakv(d: &Data, cfg: &Cfg, row: &mut Row) {
    row.set(
        "version",
        format!("stratakv {} ({})", lock_version("stratakv"), git_describe()),
    );
    row.set(
        "how",
        "`put(key, lsn, Value::image | Value::Tombstone)`, `finish_write` every put or every 1000; \
         `Timeline::get_now` (synchronous, no async runtime on the read path); WAL on, \
         `FsyncPolicy::Never`, `zstd_level(None)`, `block_cache_bytes` = the budget, background \
         work (flush, and compaction every 10 s or at 4 L0 layers, writing image layers for deltas \
         needing redo or a deep stack of delta layers) as by default",
    );
    measure(open_stratakv, d, cfg, "StrataKV", row);
}

// ---------------------------------------------------------------------------------------------
// fjall

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Engine for Fjall {
    type W = Option<fjall::OwnedWriteBatch>;
    type R = ();
    fn writer(&self, batch: usize) -> Self::W {
        (batch > 1).then(|| self.db.batch())
    }
    fn put(&self, w: &mut Self::W, k: &[u8], lsn: u64, v: Option<&[u8]>) {
        // A delete is a version with an empty value.
        let v = v.unwrap_or(&[]);
        match w {
            Some(b) => b.insert(&self.ks, vkey(k, lsn), v),
            None => self.ks.insert(vkey(k, lsn), v).expect("insert"),
        }
    }
    fn commit(&self, w: &mut Self::W, _lsn: u64) {
        if let Some(b) = w {
            std::mem::replace(b, self.db.batch())
                .commit()
                .expect("commit");
        }
    }
    fn flush(&self) {
        self.ks.rotate_memtable_and_wait().expect("flush");
    }
    fn settle(&self) -> String {
        settle_by_shape(
            || self.shape(),
            Duration::from_secs(5),
            Duration::from_secs(180),
        )
    }
    fn shape(&self) -> String {
        format!(
            "{} tables ({} in L0)",
            self.ks.table_count(),
            self.ks.l0_table_count()
        )
    }
    fn reader(&self) {}
    fn get<T>(&self, _: &mut (), k: &[u8], lsn: u64, f: impl FnOnce(Option<&[u8]>) -> T) -> T {
        let lo = vkey(k, lsn);
        let hi = upper(k);
        let got = self
            .ks
            .range(lo.as_slice()..hi.as_slice())
            .next()
            .map(|g| g.value().expect("value"));
        f(got.as_deref().filter(|v| !v.is_empty()))
    }
    fn close(self) {
        drop(self.ks);
        drop(self.db);
    }
}

fn run_fjall(d: &Data, cfg: &Cfg, row: &mut Row) {
    row.set("version", format!("fjall {}", lock_version("fjall")));
    row.set(
        "how",
        "key ‖ inv LSN (a delete: an empty value); `insert` per put, or an `OwnedWriteBatch` of \
         1000; `range(key‖inv lsn .. next key).next()`; cache = the budget; no compression \
         (data and index blocks); its default Bloom filters; journal not synced",
    );
    measure(
        |dir| {
            let db = fjall::Database::builder(dir)
                .cache_size(CACHE_BYTES as u64)
                .open()
                .expect("open");
            let ks = db
                .keyspace("main", || {
                    fjall::KeyspaceCreateOptions::default()
                        .data_block_compression_policy(fjall::config::CompressionPolicy::all(
                            fjall::CompressionType::None,
                        ))
                        .index_block_compression_policy(fjall::config::CompressionPolicy::all(
                            fjall::CompressionType::None,
                        ))
                })
                .expect("keyspace");
            Fjall { db, ks }
        },
        d,
        cfg,
        "fjall",
        row,
    );
}

// ---------------------------------------------------------------------------------------------
// RocksDB, key ‖ inverted LSN

#[cfg(feature = "rocksdb")]
fn rocksdb_shape(levels: impl Fn(usize) -> u64) -> String {
    let per: Vec<String> = (0..7).map(&levels).map(|n| n.to_string()).collect();
    let total: u64 = (0..7).map(&levels).sum();
    format!("{total} SST files (per level L0..L6: {})", per.join("/"))
}

/// Waits until no flush or compaction is pending or running.
#[cfg(feature = "rocksdb")]
fn rocksdb_settle(prop: impl Fn(&str) -> u64) -> String {
    let t = Instant::now();
    while [
        "rocksdb.compaction-pending",
        "rocksdb.num-running-compactions",
        "rocksdb.num-running-flushes",
    ]
    .iter()
    .any(|p| prop(p) > 0)
        && t.elapsed() < Duration::from_secs(300)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    format!(
        "{:.1}s until no compaction was pending or running",
        t.elapsed().as_secs_f64()
    )
}

#[cfg(feature = "rocksdb")]
struct Rocks {
    db: rocksdb::DB,
}

#[cfg(feature = "rocksdb")]
impl Engine for Rocks {
    type W = Option<rocksdb::WriteBatch>;
    type R = ();
    fn writer(&self, batch: usize) -> Self::W {
        (batch > 1).then(rocksdb::WriteBatch::default)
    }
    fn put(&self, w: &mut Self::W, k: &[u8], lsn: u64, v: Option<&[u8]>) {
        // A delete is a version with an empty value.
        let v = v.unwrap_or(&[]);
        match w {
            Some(b) => b.put(vkey(k, lsn), v),
            None => self.db.put(vkey(k, lsn), v).expect("put"),
        }
    }
    fn commit(&self, w: &mut Self::W, _lsn: u64) {
        if let Some(b) = w {
            self.db.write(std::mem::take(b)).expect("write");
        }
    }
    fn flush(&self) {
        self.db.flush().expect("flush");
    }
    fn settle(&self) -> String {
        rocksdb_settle(|p| self.db.property_int_value(p).ok().flatten().unwrap_or(0))
    }
    fn shape(&self) -> String {
        rocksdb_shape(|l| {
            self.db
                .property_int_value(&format!("rocksdb.num-files-at-level{l}"))
                .ok()
                .flatten()
                .unwrap_or(0)
        })
    }
    fn reader(&self) {}
    fn get<T>(&self, _: &mut (), k: &[u8], lsn: u64, f: impl FnOnce(Option<&[u8]>) -> T) -> T {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(upper(k).to_vec());
        ro.set_prefix_same_as_start(true);
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek(vkey(k, lsn));
        let got = if it.valid() { it.value() } else { None };
        f(got.filter(|v| !v.is_empty()))
    }
    fn close(self) {}
}

#[cfg(feature = "rocksdb")]
fn run_rocksdb(d: &Data, cfg: &Cfg, row: &mut Row) {
    row.set(
        "how",
        "key ‖ inv LSN (a delete: an empty value); `put` per put, or a `WriteBatch` of 1000; raw \
         iterator with `prefix_same_as_start` and an upper bound, `seek(key‖inv lsn)`; a 16-byte \
         fixed prefix extractor with prefix Bloom filters in the SSTs (10 bits/key, whole-key \
         filtering on too) and in the memtable (`memtable_prefix_bloom_ratio` 0.1); LRU block \
         cache = the budget; no compression; WAL on, not synced",
    );
    measure(
        |dir| {
            let mut opts = rocksdb::Options::default();
            opts.create_if_missing(true);
            opts.set_compression_type(rocksdb::DBCompressionType::None);
            opts.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(KEY_LEN));
            opts.set_memtable_prefix_bloom_ratio(0.1);
            let mut bbo = rocksdb::BlockBasedOptions::default();
            let cache = rocksdb::Cache::new_lru_cache(CACHE_BYTES);
            bbo.set_block_cache(&cache);
            bbo.set_bloom_filter(10.0, false);
            bbo.set_whole_key_filtering(true);
            opts.set_block_based_table_factory(&bbo);
            Rocks {
                db: rocksdb::DB::open(&opts, dir).expect("open"),
            }
        },
        d,
        cfg,
        "RocksDB",
        row,
    );
    row.set(
        "version",
        format!(
            "rocksdb crate {}, librocksdb-sys {} (bundled build)",
            lock_version("rocksdb"),
            lock_version("librocksdb-sys")
        ),
    );
}

#[cfg(feature = "rocksdb")]
mod udt {
    //! The LSN is RocksDB's user-defined timestamp: 8 bytes, little-endian (RocksDB's own
    //! convention for u64 timestamps), compared as a number, newest first. The C API has no
    //! handle on RocksDB's built-in `BytewiseComparatorWithU64Ts`, so the comparator is made here
    //! from three callbacks (`rocksdb_comparator_with_ts_create`). The C API rather than the
    //! rocksdb crate's wrappers (0.25 has them): its `ReadOptions::set_timestamp` takes an owned
    //! `Vec` for every change of the read timestamp, a heap allocation per get here.

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
        cf: *mut ffi::rocksdb_column_family_handle_t,
    }

    // SAFETY: a RocksDB database handle may be used from several threads at once; the options
    // objects are only read after `open`.
    unsafe impl Send for Db {}
    // SAFETY: as for `Send`.
    unsafe impl Sync for Db {}

    /// A reader's read options and the timestamp they point at.
    pub struct Reader {
        ro: *mut ffi::rocksdb_readoptions_t,
        ts: Box<[u8; TS]>,
    }

    impl Drop for Reader {
        fn drop(&mut self) {
            // SAFETY: created in `Db::reader`, destroyed once.
            unsafe { ffi::rocksdb_readoptions_destroy(self.ro) };
        }
    }

    /// A write batch (with the default column family's handle its puts need).
    pub struct Batch(*mut ffi::rocksdb_writebatch_t);

    // SAFETY: owned by one writer thread at a time.
    unsafe impl Send for Batch {}

    impl Drop for Batch {
        fn drop(&mut self) {
            // SAFETY: created in `Db::batch`, destroyed once.
            unsafe { ffi::rocksdb_writebatch_destroy(self.0) };
        }
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
                ffi::rocksdb_options_set_compression(opts, ffi::rocksdb_no_compression as c_int);
                // Whole-key Bloom filters (the key without its timestamp), in the SSTs and
                // the memtable.
                ffi::rocksdb_options_set_memtable_whole_key_filtering(opts, 1);
                ffi::rocksdb_options_set_memtable_prefix_bloom_size_ratio(opts, 0.1);
                let cache = ffi::rocksdb_cache_create_lru(cache_bytes);
                let bbo = ffi::rocksdb_block_based_options_create();
                ffi::rocksdb_block_based_options_set_block_cache(bbo, cache);
                ffi::rocksdb_block_based_options_set_filter_policy(
                    bbo,
                    ffi::rocksdb_filterpolicy_create_bloom_full(10.0),
                );
                ffi::rocksdb_block_based_options_set_whole_key_filtering(bbo, 1);
                ffi::rocksdb_options_set_block_based_table_factory(opts, bbo);
                let mut err = ptr::null_mut();
                let db = ffi::rocksdb_open(opts, path.as_ptr(), &mut err);
                ok(err, "open");
                let wo = ffi::rocksdb_writeoptions_create();
                let cf = ffi::rocksdb_get_default_column_family_handle(db);
                Db {
                    db,
                    opts,
                    bbo,
                    cache,
                    cmp,
                    wo,
                    cf,
                }
            }
        }

        /// Writes `value` for `k` at `lsn` (`None`: deletes), into `batch` if there is one.
        pub fn put(&self, batch: Option<&mut Batch>, k: &[u8], lsn: u64, value: Option<&[u8]>) {
            let ts = lsn.to_le_bytes();
            let (kp, tp) = (k.as_ptr().cast(), ts.as_ptr().cast());
            let mut err = ptr::null_mut();
            // SAFETY: all pointers valid for the call.
            unsafe {
                match (batch, value) {
                    (Some(b), Some(v)) => ffi::rocksdb_writebatch_put_cf_with_ts(
                        b.0,
                        self.cf,
                        kp,
                        k.len(),
                        tp,
                        TS,
                        v.as_ptr().cast(),
                        v.len(),
                    ),
                    (Some(b), None) => {
                        ffi::rocksdb_writebatch_delete_cf_with_ts(b.0, self.cf, kp, k.len(), tp, TS)
                    }
                    (None, Some(v)) => ffi::rocksdb_put_with_ts(
                        self.db,
                        self.wo,
                        kp,
                        k.len(),
                        tp,
                        TS,
                        v.as_ptr().cast(),
                        v.len(),
                        &mut err,
                    ),
                    (None, None) => {
                        ffi::rocksdb_delete_with_ts(self.db, self.wo, kp, k.len(), tp, TS, &mut err)
                    }
                }
            }
            ok(err, "put/delete with ts");
        }

        /// An empty write batch.
        pub fn batch(&self) -> Batch {
            // SAFETY: plain C API call.
            Batch(unsafe { ffi::rocksdb_writebatch_create() })
        }

        /// Writes `batch` and empties it.
        pub fn write(&self, batch: &mut Batch) {
            let mut err = ptr::null_mut();
            // SAFETY: valid handles.
            unsafe {
                ffi::rocksdb_write(self.db, self.wo, batch.0, &mut err);
                ffi::rocksdb_writebatch_clear(batch.0);
            }
            ok(err, "write");
        }

        /// Read options of its own for a reader thread.
        pub fn reader(&self) -> Reader {
            let ts = Box::new([0u8; TS]);
            // SAFETY: `ts` is boxed and lives as long as the read options.
            let ro = unsafe {
                let ro = ffi::rocksdb_readoptions_create();
                ffi::rocksdb_readoptions_set_timestamp(ro, ts.as_ptr().cast(), TS);
                ro
            };
            Reader { ro, ts }
        }

        pub fn flush(&self) {
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
        pub fn get<R>(
            &self,
            r: &mut Reader,
            k: &[u8],
            lsn: u64,
            f: impl FnOnce(Option<&[u8]>) -> R,
        ) -> R {
            // The read options hold a slice pointing into the box, so changing the bytes
            // changes the read timestamp.
            *r.ts = lsn.to_le_bytes();
            let mut err = ptr::null_mut();
            // SAFETY: valid handles; the pinned slice is destroyed before returning.
            unsafe {
                let ps =
                    ffi::rocksdb_get_pinned(self.db, r.ro, k.as_ptr().cast(), k.len(), &mut err);
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
                ffi::rocksdb_column_family_handle_destroy(self.cf);
                ffi::rocksdb_close(self.db);
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
    type W = Option<udt::Batch>;
    type R = udt::Reader;
    fn writer(&self, batch: usize) -> Self::W {
        (batch > 1).then(|| self.batch())
    }
    fn put(&self, w: &mut Self::W, k: &[u8], lsn: u64, v: Option<&[u8]>) {
        udt::Db::put(self, w.as_mut(), k, lsn, v);
    }
    fn commit(&self, w: &mut Self::W, _lsn: u64) {
        if let Some(b) = w {
            self.write(b);
        }
    }
    fn flush(&self) {
        udt::Db::flush(self);
    }
    fn settle(&self) -> String {
        rocksdb_settle(|p| self.property(p))
    }
    fn shape(&self) -> String {
        rocksdb_shape(|l| self.property(&format!("rocksdb.num-files-at-level{l}")))
    }
    fn reader(&self) -> udt::Reader {
        udt::Db::reader(self)
    }
    fn get<T>(
        &self,
        r: &mut udt::Reader,
        k: &[u8],
        lsn: u64,
        f: impl FnOnce(Option<&[u8]>) -> T,
    ) -> T {
        udt::Db::get(self, r, k, lsn, f)
    }
    fn close(self) {}
}

#[cfg(feature = "rocksdb")]
fn run_rocksdb_udt(d: &Data, cfg: &Cfg, row: &mut Row) {
    row.set(
        "version",
        format!(
            "librocksdb-sys {} (bundled build, C API)",
            lock_version("librocksdb-sys")
        ),
    );
    row.set(
        "how",
        "user-defined timestamp = LSN; `put_with_ts` / `delete_with_ts` per put, or a write batch \
         of 1000 (`writebatch_put_cf_with_ts`); `get_pinned` with `ReadOptions::timestamp`; \
         whole-key Bloom filters (10 bits/key) in the SSTs and the memtable; LRU block cache = \
         the budget; no compression; WAL on, not synced",
    );
    measure(
        |dir| udt::Db::open(dir, CACHE_BYTES),
        d,
        cfg,
        "RocksDB UDT",
        row,
    );
}

// ---------------------------------------------------------------------------------------------
// SlateDB on a local folder

#[cfg(feature = "slatedb")]
struct Slate {
    rt: tokio::runtime::Runtime,
    db: slatedb::Db,
}

#[cfg(feature = "slatedb")]
impl Engine for Slate {
    type W = ();
    type R = ();
    fn writer(&self, _batch: usize) {}
    fn ingest(&self, _: &mut (), d: &Data, ops: &[Op], batch: usize, published: &AtomicU64) {
        // One `block_on` for the whole round, as an async caller would write it.
        let db = &self.db;
        self.rt.block_on(async {
            for chunk in ops.chunks(batch) {
                if batch == 1 {
                    let op = chunk[0];
                    let k = vkey(&key(u64::from(op.key)), op.lsn);
                    let v: &[u8] = if op.del {
                        &[]
                    } else {
                        d.value(u64::from(op.key), op.lsn)
                    };
                    db.put(k, v).await.expect("put");
                } else {
                    let mut b = slatedb::WriteBatch::new();
                    for op in chunk {
                        let k = vkey(&key(u64::from(op.key)), op.lsn);
                        let v: &[u8] = if op.del {
                            &[]
                        } else {
                            d.value(u64::from(op.key), op.lsn)
                        };
                        b.put(k, v);
                    }
                    db.write(b).await.expect("write");
                }
                published.store(chunk.last().expect("chunk").lsn, Ordering::Release);
            }
        });
    }
    fn put(&self, _: &mut (), _k: &[u8], _lsn: u64, _v: Option<&[u8]>) {
        unreachable!("SlateDB ingests through `ingest`")
    }
    fn commit(&self, _: &mut (), _lsn: u64) {}
    fn flush(&self) {
        let opts = slatedb::config::FlushOptions {
            flush_type: slatedb::config::FlushType::MemTable,
        };
        self.rt
            .block_on(self.db.flush_with_options(opts))
            .expect("flush");
    }
    fn settle(&self) -> String {
        settle_by_shape(
            || self.shape(),
            Duration::from_secs(12),
            Duration::from_secs(240),
        )
    }
    fn shape(&self) -> String {
        let m = self.db.manifest();
        format!(
            "{} L0 SSTs, {} sorted runs",
            m.l0().len(),
            m.compacted().len()
        )
    }
    fn reader(&self) {}
    fn get<T>(&self, _: &mut (), k: &[u8], lsn: u64, f: impl FnOnce(Option<&[u8]>) -> T) -> T {
        let lo = vkey(k, lsn).to_vec();
        let hi = upper(k).to_vec();
        let got = self.rt.block_on(async {
            let mut it = self.db.scan(lo..hi).await.expect("scan");
            it.next().await.expect("next")
        });
        f(got
            .as_ref()
            .map(|kv| kv.value.as_ref())
            .filter(|v| !v.is_empty()))
    }
    fn close(self) {
        self.rt.block_on(self.db.close()).expect("close");
    }
}

#[cfg(feature = "slatedb")]
fn open_slatedb(dir: &Path) -> Slate {
    use std::sync::Arc;

    use slatedb::db_cache::foyer::{FoyerCache, FoyerCacheOptions};
    use slatedb::db_cache::{DbCache, SplitCache};
    use slatedb::object_store::ObjectStore;
    use slatedb::object_store::local::LocalFileSystem;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
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
    Slate { rt, db }
}

#[cfg(feature = "slatedb")]
fn run_slatedb(d: &Data, cfg: &Cfg, row: &mut Row) {
    row.set("version", format!("slatedb {}", lock_version("slatedb")));
    row.set(
        "how",
        "key ‖ inv LSN (a delete: an empty value); `put` per put, or a `WriteBatch` of 1000 \
         (`write`), neither awaiting durability (its WAL goes to the local folder in the \
         background); `scan(..)` first item; foyer block cache = the budget plus its default \
         metadata cache; no compression (its default)",
    );
    measure(open_slatedb, d, cfg, "SlateDB", row);
}

// ---------------------------------------------------------------------------------------------
// Runner and report

/// Every engine: its `--only` name, its display name, and how to run it in this process.
type Runner = fn(&Data, &Cfg, &mut Row);
fn engines() -> Vec<(&'static str, &'static str, Runner)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&str, &str, Runner)> = vec![("stratakv", "StrataKV", run_stratakv)];
    #[cfg(feature = "rocksdb")]
    {
        v.push(("rocksdb", "RocksDB", run_rocksdb));
        v.push(("rocksdb-udt", "RocksDB UDT", run_rocksdb_udt));
    }
    v.push(("fjall", "fjall", run_fjall));
    #[cfg(feature = "slatedb")]
    v.push(("slatedb", "SlateDB", run_slatedb));
    v
}

fn main() {
    let mut keys = DEFAULT_KEYS;
    let mut gets = DEFAULT_GETS;
    let mut secs = DEFAULT_SECS;
    let mut only: Option<Vec<String>> = None;
    let mut child: Option<String> = None;
    let mut rusage = false;
    let mut args = std::env::args().skip(1);
    let usage = "usage: [--keys N] [--gets G] [--secs S] [--only stratakv,rocksdb,rocksdb-udt,fjall,slatedb] [--rusage] | --durable [SECS]";
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
            "--gets" => gets = args.next().and_then(|v| v.parse().ok()).expect(usage),
            "--secs" => secs = args.next().and_then(|v| v.parse().ok()).expect(usage),
            "--only" => {
                only = args
                    .next()
                    .map(|v| v.split(',').map(str::to_string).collect())
            }
            "--child" => child = args.next(),
            "--rusage" => rusage = true,
            _ => panic!("{usage}"),
        }
    }
    assert!(
        keys >= 10 && keys <= u64::from(u32::MAX) / 2 && gets > 0 && secs > 0.0,
        "{usage}"
    );
    let cfg = Cfg { gets, secs, rusage };

    if let Some(name) = child {
        let (_, _, run) = engines()
            .into_iter()
            .find(|(n, _, _)| *n == name)
            .unwrap_or_else(|| panic!("no engine {name} in this build; {usage}"));
        let d = Data::new(keys);
        let mut row = Row::default();
        run(&d, &cfg, &mut row);
        for (k, v) in &row.fields {
            println!("{k}={}", v.replace('\n', " "));
        }
        return;
    }

    let load_start = loadavg();
    let exe = std::env::current_exe().expect("current exe");
    let mut rows: Vec<(String, Row)> = Vec::new();
    let mut puts = 0u64;
    {
        let d = Data::new(keys);
        puts += d.starts[MAIN_ROUNDS.len()] - FIRST_LSN;
        eprintln!(
            "{keys} keys; main rounds {} puts, tail {} puts; seed {SEED:#x}",
            puts,
            d.starts[d.starts.len() - 1] - d.starts[MAIN_ROUNDS.len()]
        );
    }
    for (name, display, _) in engines() {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == name)) {
            continue;
        }
        eprintln!("{display} ...");
        let t = Instant::now();
        let out = std::process::Command::new(&exe)
            .args([
                "--child",
                name,
                "--keys",
                &keys.to_string(),
                "--gets",
                &gets.to_string(),
                "--secs",
                &secs.to_string(),
            ])
            .args(rusage.then_some("--rusage"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run child");
        assert!(
            out.status.success(),
            "{display} failed ({}); see its output above",
            out.status
        );
        let mut row = Row::default();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = l.split_once('=') {
                row.set(k, v);
            }
        }
        row.set("wall_s", t.elapsed().as_secs_f64());
        rows.push((display.to_string(), row));
    }
    let cmdline = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = if only.is_none() && !rusage {
        manifest.join("..")
    } else {
        manifest.join("target/partial")
    };
    let kept = std::fs::read_to_string(out.join("BENCHMARKS.md"))
        .ok()
        .and_then(|s| {
            s.find(KEEP)
                .map(|at| s[at + KEEP.len()..].trim_start().to_string())
        })
        .unwrap_or_default();
    let md = report(&rows, keys, puts, &cfg, &cmdline, &load_start) + &kept;
    println!("\n{md}");
    std::fs::create_dir_all(&out).expect("output folder");
    std::fs::write(out.join("BENCHMARKS.md"), md).expect("write BENCHMARKS.md");
    println!("wrote BENCHMARKS.md in {}", out.display());
}

/// Everything from this line on in BENCHMARKS.md is written by hand and kept by a new run.
const KEEP: &str = "<!-- kept: written by hand below this line -->";

fn us(ns: f64) -> String {
    if ns >= 100_000.0 {
        format!("{:.0}", ns / 1000.0)
    } else {
        format!("{:.2}", ns / 1000.0)
    }
}

fn report(
    rows: &[(String, Row)],
    keys: u64,
    puts: u64,
    cfg: &Cfg,
    cmdline: &str,
    load_start: &str,
) -> String {
    let strata = rows.iter().find(|(n, _)| n == "StrataKV").map(|(_, r)| r);
    let ratio = |a: f64, b: f64| format!("{:.2}×", a / b);
    let mut ingest = String::from(
        "| engine | commit per put (puts/s) | StrataKV ÷ engine | batches of 1,000 (puts/s) | StrataKV ÷ engine |\n|---|---|---|---|---|\n",
    );
    let mut gets = String::from(
        "| engine | median (µs) | p99 (µs) | p99.9 (µs) | engine ÷ StrataKV (median) | gets/s, 1 thread | gets/s, 2 threads | 2 ÷ 1 |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut under = String::from(
        "| engine | ingest beside the reader (puts/s) | gets | p50 (µs) | p99 (µs) | p99.9 (µs) | max (µs) | gets over 1 ms | floor probe: largest stall outside the engine (µs) | stalls over 1 ms outside the engine |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut mem = String::from(
        "| engine | peak RSS (MB) | harness before the engine opened (MB) | peak − harness (MB) | ÷ RocksDB | RSS after the reads: anonymous / file-backed (MB) | on disk after the main rounds (MB) | ÷ RocksDB | layout at read time |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let rocks = rows.iter().find(|(n, _)| n == "RocksDB").map(|(_, r)| r);
    let own = |r: &Row| (r.num("rss_peak_kb") - r.num("rss_base_kb")) / 1024.0;
    for (name, r) in rows {
        let s = |k: &str| strata.map_or(f64::NAN, |s| s.num(k));
        let _ = writeln!(
            ingest,
            "| {name} | {:.0}k | {} | {:.0}k | {} |",
            r.num("ingest_put") / 1e3,
            ratio(s("ingest_put"), r.num("ingest_put")),
            r.num("ingest_batch") / 1e3,
            ratio(s("ingest_batch"), r.num("ingest_batch")),
        );
        let _ = writeln!(
            gets,
            "| {name} | {} | {} | {} | {} | {:.0}k | {:.0}k | {:.2} |",
            us(r.num("get_median_ns")),
            us(r.num("get_p99_ns")),
            us(r.num("get_p999_ns")),
            ratio(r.num("get_median_ns"), s("get_median_ns")),
            r.num("tput1") / 1e3,
            r.num("tput2") / 1e3,
            r.num("tput2") / r.num("tput1"),
        );
        let _ = writeln!(
            under,
            "| {name} | {:.0}k | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.num("under_puts_s") / 1e3,
            r.text("under_n"),
            us(r.num("under_p50_ns")),
            us(r.num("under_p99_ns")),
            us(r.num("under_p999_ns")),
            us(r.num("under_max_ns")),
            r.text("under_over_1ms"),
            us(r.num("floor_max_ns")),
            r.text("floor_over_1ms"),
        );
        let _ = writeln!(
            mem,
            "| {name} | {:.0} | {:.0} | {:.0} | {} | {:.0} / {:.0} | {:.0} | {} | {} |",
            r.num("rss_peak_kb") / 1024.0,
            r.num("rss_base_kb") / 1024.0,
            own(r),
            rocks.map_or("—".into(), |k| ratio(own(r), own(k))),
            r.num("rss_anon_reads_kb") / 1024.0,
            r.num("rss_file_reads_kb") / 1024.0,
            r.num("disk_bytes") / 1e6,
            rocks.map_or("—".into(), |k| ratio(
                r.num("disk_bytes"),
                k.num("disk_bytes")
            )),
            r.text("shape"),
        );
    }

    let mut targets = String::new();
    if let Some(s) = strata {
        let udt = rows
            .iter()
            .find(|(n, _)| n == "RocksDB UDT")
            .map(|(_, r)| r);
        let peers: Vec<&Row> = rows
            .iter()
            .filter(|(n, _)| n != "StrataKV")
            .map(|(_, r)| r)
            .collect();
        let min_ratio = |k: &str| {
            peers
                .iter()
                .map(|p| s.num(k) / p.num(k))
                .fold(f64::INFINITY, f64::min)
        };
        let mut t = |what: &str, got: String, target: &str, met: bool| {
            let _ = writeln!(
                targets,
                "| {what} | {got} | {target} | {} |",
                if met { "met" } else { "**missed**" }
            );
        };
        let med = s.num("get_median_ns");
        t(
            "get at a random LSN, 1 thread, median",
            format!("{} µs", us(med)),
            "≤ 1 µs",
            med <= 1000.0,
        );
        if let Some(u) = udt {
            let x = u.num("get_median_ns") / med;
            t(
                "… against RocksDB UDT",
                format!("{x:.2}×"),
                "≥ 5×",
                x >= 5.0,
            );
        }
        let p = s.num("ingest_put");
        t(
            "ingest, commit per put",
            format!("{:.0}k puts/s", p / 1e3),
            "≥ 1M puts/s",
            p >= 1e6,
        );
        if !peers.is_empty() {
            let x = min_ratio("ingest_put");
            t(
                "… against the fastest peer",
                format!("{x:.2}×"),
                "≥ 5×",
                x >= 5.0,
            );
        }
        let b = s.num("ingest_batch");
        t(
            "ingest, batches of 1,000",
            format!("{:.0}k puts/s", b / 1e3),
            "≥ 2M puts/s",
            b >= 2e6,
        );
        let x = s.num("tput2") / s.num("tput1");
        t(
            "2 reader threads ÷ 1",
            format!("{x:.2}×"),
            "≥ 1.8×",
            x >= 1.8,
        );
        if let Some(k) = rocks {
            let m = own(s) / own(k);
            t(
                "peak RSS (less the harness) ÷ RocksDB",
                format!("{m:.2}×"),
                "≤ 1.2×",
                m <= 1.2,
            );
            let m = s.num("disk_bytes") / k.num("disk_bytes");
            t(
                "bytes on disk ÷ RocksDB",
                format!("{m:.2}×"),
                "≤ 1.2×",
                m <= 1.2,
            );
        }
        let p = s.num("under_p999_ns");
        t(
            "reads under ingest, p99.9",
            format!("{} µs", us(p)),
            "≤ 50 µs",
            p <= 50_000.0,
        );
        let m = s.num("under_max_ns");
        t(
            "reads under ingest, max",
            format!(
                "{} µs (floor probe beside it: {} µs)",
                us(m),
                us(s.num("floor_max_ns"))
            ),
            "≤ 1 ms, or no more than the floor probe's largest stall (the floor the machine sets)",
            m <= 1e6 || m <= s.num("floor_max_ns"),
        );
    }

    let mut engines = String::new();
    for (name, r) in rows {
        let _ = writeln!(
            engines,
            "- **{name}** — {}: {}. Flush and settle after the main rounds: {:.1} s ({}). Child process wall time {:.0} s.",
            r.text("version"),
            r.text("how"),
            r.num("flush_settle_s"),
            r.text("settle"),
            r.num("wall_s"),
        );
    }
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
    let tail_puts = keys / 10 * 2 + keys;
    format!(
        "# StrataKV vs peers — one run, same commit granularity\n\n\
         Generated by `benches/peers` (a crate outside the main workspace, so the root `cargo test` \
         never builds RocksDB or SlateDB). Every engine gets the same keys, values, deletes and LSNs, \
         in the same order, in its own child process.\n\n\
         - command: `cd benches/peers && cargo run --release{features}{cmdline}` (RocksDB is \
         built from the sources its crate bundles on the first run and cached in `benches/peers/target`; \
         needs `apt-get install libclang-dev`)\n\
         - date: {date}\n\
         - machine: {}\n\
         - data: {keys} keys of {KEY_LEN} B; main rounds full, 10%, 10%, full, 10%, 10% = {puts} puts \
         of {VALUE_LEN} B incompressible values (seed {SEED:#x}); a full round rewrites every key in a \
         shuffled order, a 10% round updates a random 10% of the keys, one in ten of those a delete; \
         every put at its own LSN. No flush between rounds: every engine flushes and compacts on its \
         own, by its defaults\n\
         - commit granularity, the same for every engine, two modes: **one commit per put** (each \
         engine's plain single write; StrataKV `put` + `finish_write`) and **batches of 1,000** (a \
         write batch for RocksDB, fjall and SlateDB; `finish_write` every 1,000 puts for StrataKV). \
         Each mode ingests into a fresh directory\n\
         - durability: no engine syncs its log on a commit (StrataKV WAL with `FsyncPolicy::Never`; \
         RocksDB WAL without `sync`; fjall's journal unsynced; SlateDB not awaiting durability, its \
         WAL written to the local folder in the background). Each keeps what the OS page cache has \
         once a write returns, none survives power loss. StrataKV still fsyncs a WAL segment when it \
         rolls over to the next (once per 64 MiB of log), a cost the peers' logs do not pay here; the \
         files flushes and compactions write are synced as each engine does by default\n\
         - cache: {} MiB for every engine (StrataKV `block_cache_bytes`, RocksDB LRU block cache, \
         fjall `cache_size`, SlateDB foyer block cache plus its default metadata cache), more than the \
         data; no compression anywhere; the OS page cache holds every file\n\
         - reads (after the main rounds, in the per-put instance, once it was flushed and settled): \
         {} gets or {:.0} s, after an untimed warm-up pass; each get names a random LSN (uniform over \
         the main rounds, one in ten at the end of a round) and a random key (one in {ABSENT_ONE_IN} \
         never written; many others absent at that LSN: not yet written or deleted), each timed on its \
         own (`Instant` around the call and a copy of the value out; every answer is then checked \
         against a model — per key, the sorted LSNs of its versions and deletes — after the clock \
         stopped, so that the model's own cache misses are not counted as the engine's; runs \
         before 2026-12-07 timed the check too, which added the same few hundred nanoseconds to \
         every engine). StrataKV reads with `Timeline::get_now`, synchronous, no \
         async runtime. Throughput: 1 then 2 reader threads for {:.0} s each, aggregate gets/s\n\
         - reads under ingest: the tail rounds (10%, 10%, full = {tail_puts} puts, one commit per put) \
         written by one thread while another reads at random LSNs up to the last commit, each get \
         timed (and checked after, as above); background flushes, compactions (and image layers, where an engine writes them) run as by default. \
         After each get the reader spins on the clock for as long as that get took (the floor \
         probe): the largest gap between two clock reads there, where no engine code runs, is the \
         longest this 2-core machine kept the reader off a core while the writer and the engine's \
         background threads ran; a get's max above it is the engine's own\n\
         - memory: peak RSS (`VmHWM`) of the engine's child process, which also holds the harness's \
         model and value pool (the column \"harness\": RSS just before the engine opened). RSS counts \
         file pages an engine maps as well as its own memory; every engine here reads its files with \
         `pread` (StrataKV since commit `847b6ae`; before, it mapped them, and the pages its reads \
         touched counted in its RSS), and the anonymous / file-backed split after the reads shows \
         how much is which; bytes on \
         disk: the directory after the main rounds (per-put instance), WAL included\n\n\
         ## Targets (StrataKV)\n\n| what | measured | target | |\n|---|---|---|---|\n{targets}\n\
         ## Ingest\n\n{ingest}\n\
         ## Get at a random LSN\n\n{gets}\n\
         ## Reads under ingest\n\n{under}\n\
         ## Memory and disk\n\n{mem}\n\
         ## Engines\n\n{engines}\n{KEEP}\n",
        machine(load_start),
        CACHE_BYTES >> 20,
        cfg.gets,
        3.0 * cfg.secs,
        cfg.secs,
    )
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
        "{cores} cores ({cpu}), {mem_gib:.0} GiB RAM, Linux {}; a VM whose speed drifts with \
         its neighbours, nothing else of ours running (one-minute load average {load_start} at the \
         start, {} at the end, the harness's own processes included); one writer / reader thread",
        kernel.trim(),
        loadavg()
    )
}
