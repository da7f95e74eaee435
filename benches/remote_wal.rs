//! The WAL in object storage: commit latency at `Durability::Remote` against `Local`, ingest
//! throughput at `Remote` as a share of `Local`, and attach to first read after a node loss
//! with a tail of WAL chunks above the last index.
//!
//! ```text
//! cargo bench --bench remote_wal                  # the local-folder object store, ~1.5 minutes
//! eval "$(.ci/object-stores.sh start)"            # moto (S3) on loopback; then also on moto
//! cargo bench --bench remote_wal                  # both, ~3.5 minutes on 2 cores
//! .ci/object-stores.sh stop
//! ```
//!
//! Runs on the local-file-system object store, and on S3 (moto) when `STRATAKV_S3_ENDPOINT` and
//! `STRATAKV_S3_BUCKET` are set. Every choice is printed beside the figures.
//!
//! | section | what is measured |
//! |---|---|
//! | commit latency | the time of `finish_write` (puts untimed), median and p99, at `Local` and at `Remote`, for 1 timeline and for 8 committing at once (8 plain threads, one timeline and writer each), with a `finish_write` every 1, 10 and 100 puts of 100-byte incompressible values, each put at its own LSN; a fresh store on a fresh prefix per case; `STRATAKV_BENCH_SECS` (default 2) of measurement after 0.3 s of warm-up. Also the worst commit and the commits of 90 ms or more, puts/s, MB/s of values, and the commits per WAL chunk shipped (the highest chunk sequence number under `wal/` at the end) |
//! | ingest | 8 timelines, a `finish_write` every 10 puts: `Local`, `Remote`, `Local`, `Remote` in turn, `STRATAKV_BENCH_INGEST_SECS` (default 3) each; puts/s and MB/s of values, and `Remote` ÷ `Local` |
//! | commits across a flush | 1 timeline, `STRATAKV_BENCH_FLUSH_PUTS` puts (default 500,000: the default 64 MiB layer fills once, at about 410,000), a `finish_write` every 100 puts, at `Local` and at `Remote`: median, p99 and the worst commit, the commits of 90 ms or more and their sum, layer files flushed, chunks left under `wal/`. After the flush's index upload the chunks it covers are deleted |
//! | attach after a node loss | a writer builds a base of 10,000 keys, flushes it and waits for its upload (the index covers it and the chunks below it are deleted), then writes a tail of 0, 10 and 100 MB of WAL (`STRATAKV_BENCH_TAIL_MB`, default `0,10,100`) at `Local` with a `finish_write` every 100 puts, in steps each ended by `wait_remote_durable` and a listing, until the chunks hold the target, and is dropped without a close (nothing flushed past the index: `freeze_bytes` 1 GiB); the chunks under `wal/` are listed and printed; a node attaches on an empty directory and reads the newest key at its `last_record_lsn`: open (claim, claim wait, index, replay of the tail) to first read, `STRATAKV_BENCH_ATTACH_REPS` times (default 3; 1 for tails of 50 MB and more) |
//!
//! The commit section ends with a wake check: `Remote`, 1 timeline, a commit per put, with
//! `remote_wal_interval` 10 s; a committer that did not wake the shipper would wait seconds.
//! Each backend's figures start and end with the load average and an fsync probe of the disk
//! under the stores (128 B appends, each fsynced): the `Local` level is that fsync, and other
//! jobs writing to the same disk slow it.
//!
//! Scaling: `STRATAKV_BENCH_SECS`, `STRATAKV_BENCH_INGEST_SECS`, `STRATAKV_BENCH_TAIL_MB`,
//! `STRATAKV_BENCH_ATTACH_REPS`, `STRATAKV_BENCH_FLUSH_PUTS` (above);
//! `STRATAKV_BENCH_SECTIONS=commit,ingest,flush,attach` and
//! `STRATAKV_BENCH_BACKENDS=local,s3` pick sections and backends; `STRATAKV_BENCH_TMP` puts the
//! stores and the local-folder bucket in another directory (`/dev/shm`: fsync is free there).
//!
//! Options are the defaults of `StoreOptions` and `RemoteStorage` except where printed: the
//! fsync policy `EveryCommit`, `remote_wal_interval` 100 ms, `remote_wal_chunk_bytes` 4 MiB,
//! `freeze_bytes` 64 MiB, background compaction and GC every 10 s, the default retry policy and
//! claim grace (2 s).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use stratakv::remote::RemoteStorage;
use stratakv::{Durability, Lsn, Store, StoreOptions, Timeline, Value};

mod common;
use common::{env_f64, loadavg, percentile, tempdir};

const VALUE: usize = 100;
const POOL: usize = 1 << 20;
const WARMUP: Duration = Duration::from_millis(300);
const THREADS: [usize; 2] = [1, 8];
const PER_COMMIT: [u64; 3] = [1, 10, 100];
const BASE_KEYS: u64 = 10_000;
const TAIL_PER_COMMIT: u64 = 100;

/// The settings every section states.
const DEFAULTS: &str = "fsync EveryCommit (default), remote_wal_interval 100 ms (default), \
     remote_wal_chunk_bytes 4 MiB (default), freeze_bytes 64 MiB (default), background work \
     every 10 s (default), default retry policy and claim grace (2 s)";

/// A 16-byte key: `key/`, the writer's number, the put's number.
fn key(writer: u32, i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(b"key/");
    k[4..8].copy_from_slice(&writer.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// Incompressible bytes to cut values from (xorshift, seeded per writer).
fn pool(seed: u64) -> Bytes {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut v = vec![0u8; POOL];
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    Bytes::from(v)
}

fn value(pool: &Bytes, i: u64) -> Bytes {
    let off = (i as usize * 61) % (POOL - VALUE);
    pool.slice(off..off + VALUE)
}

struct Backend {
    name: &'static str,
    about: &'static str,
    store: Arc<dyn ObjectStore>,
}

impl Backend {
    fn remote(&self, prefix: &str) -> RemoteStorage {
        RemoteStorage::new(self.store.clone(), Path::from(prefix))
    }
}

fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench-wal-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Chunks under `wal/`: how many, and their bytes (without the object trailer).
fn list_wal(rt: &tokio::runtime::Runtime, remote: &RemoteStorage) -> (usize, u64) {
    let chunks = rt.block_on(remote.list("wal")).unwrap();
    (chunks.len(), chunks.iter().map(|(_, b)| b).sum())
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1e3;
    if m < 1.0 {
        format!("{m:.3} ms")
    } else if m < 100.0 {
        format!("{m:.2} ms")
    } else {
        format!("{m:.0} ms")
    }
}

/// What one committing run measured.
struct Run {
    /// `finish_write` times in the measured window, sorted.
    lat: Vec<Duration>,
    /// Puts in the measured window, over all writers.
    puts: u64,
    /// The measured window, from its start until the last writer stopped.
    window: Duration,
    /// Commits over the whole run, warm-up included.
    commits: u64,
    /// WAL chunks shipped: the highest sequence number under `wal/` at the end (a fresh
    /// prefix starts at 1; chunks that an index covers may have been deleted already).
    chunks: u64,
}

impl Run {
    fn puts_per_s(&self) -> f64 {
        self.puts as f64 / self.window.as_secs_f64()
    }
    fn mb_per_s(&self) -> f64 {
        self.puts_per_s() * VALUE as f64 / 1e6
    }
}

/// `threads` writers, one timeline each, commit every `per_commit` puts at `level` for
/// `WARMUP + secs`; a fresh store on a fresh prefix.
fn commit_run(
    rt: &tokio::runtime::Runtime,
    backend: &Backend,
    level: Durability,
    threads: usize,
    per_commit: u64,
    secs: Duration,
    interval: Option<Duration>,
) -> Run {
    let dir = tempdir();
    let prefix = unique("commit");
    let mut options = StoreOptions::new(dir.path())
        .remote(backend.remote(&prefix))
        .durability(level);
    if let Some(interval) = interval {
        options = options.remote_wal_interval(interval);
    }
    let store = Store::open_blocking(options).unwrap();
    let timelines: Vec<Timeline> = (0..threads)
        .map(|i| {
            rt.block_on(store.create_timeline(&format!("t{i}")))
                .unwrap()
        })
        .collect();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = timelines
        .into_iter()
        .enumerate()
        .map(|(n, tl)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let pool = pool(n as u64);
                let mut w = tl.writer().unwrap();
                let mut lat = Vec::with_capacity(1 << 16);
                let (mut puts, mut commits, mut lsn) = (0u64, 0u64, 0u64);
                barrier.wait();
                let start = Instant::now();
                let (measure_from, stop_at) = (start + WARMUP, start + WARMUP + secs);
                loop {
                    let now = Instant::now();
                    if now >= stop_at {
                        break;
                    }
                    let measuring = now >= measure_from;
                    for _ in 0..per_commit {
                        lsn += 1;
                        w.put(
                            &key(n as u32, lsn),
                            Lsn(lsn),
                            Value::image(value(&pool, lsn)),
                        )
                        .unwrap();
                    }
                    let t = Instant::now();
                    w.finish_write(Lsn(lsn)).unwrap();
                    let took = t.elapsed();
                    commits += 1;
                    if measuring {
                        lat.push(took);
                        puts += per_commit;
                    }
                }
                if level == Durability::Remote {
                    assert!(tl.remote_wal_lsn() >= Lsn(lsn), "acknowledged at Remote");
                }
                (
                    lat,
                    puts,
                    commits,
                    Instant::now().duration_since(measure_from),
                )
            })
        })
        .collect();
    barrier.wait();
    let mut run = Run {
        lat: Vec::new(),
        puts: 0,
        window: Duration::ZERO,
        commits: 0,
        chunks: 0,
    };
    for h in handles {
        let (lat, puts, commits, window) = h.join().unwrap();
        run.lat.extend(lat);
        run.puts += puts;
        run.commits += commits;
        run.window = run.window.max(window);
    }
    run.lat.sort();
    run.chunks = rt
        .block_on(backend.remote(&prefix).list("wal"))
        .unwrap()
        .iter()
        .filter_map(|(name, _)| {
            let seq = name.strip_prefix("wal/")?.split('-').next()?;
            u64::from_str_radix(seq, 16).ok()
        })
        .max()
        .unwrap_or(0);
    // Not closed: a close would flush and upload every timeline, which is no part of this.
    drop(store);
    run
}

fn level_name(level: Durability) -> String {
    format!("{level:?}")
}

const HEADER: [&str; 12] = [
    "level",
    "timelines",
    "puts/commit",
    "median",
    "p99",
    "max",
    ">=90ms",
    "commits",
    "puts/s",
    "MB/s",
    "commits/chunk",
    "Remote/Local",
];

fn print_row(level: &str, threads: usize, per_commit: u64, r: &Run, ratio: &str) {
    println!(
        "{:<8} {:>9} {:>11} {:>9} {:>9} {:>9} {:>6} {:>8} {:>9.0} {:>6.2} {:>13.1} {:>12}",
        level,
        threads,
        per_commit,
        ms(percentile(&r.lat, 0.5)),
        ms(percentile(&r.lat, 0.99)),
        ms(percentile(&r.lat, 1.0)),
        r.lat
            .iter()
            .filter(|l| **l >= Duration::from_millis(90))
            .count(),
        r.lat.len(),
        r.puts_per_s(),
        r.mb_per_s(),
        r.commits as f64 / r.chunks.max(1) as f64,
        ratio
    );
}

fn commit_latency(rt: &tokio::runtime::Runtime, backend: &Backend, secs: Duration) {
    println!(
        "\n## {}: commit latency (finish_write; puts untimed), {} B values, {:.1} s measured per case after {} ms warm-up, \
         a fresh store per case; default options except durability: {DEFAULTS}",
        backend.name,
        VALUE,
        secs.as_secs_f64(),
        WARMUP.as_millis()
    );
    println!(
        "{:<8} {:>9} {:>11} {:>9} {:>9} {:>9} {:>6} {:>8} {:>9} {:>6} {:>13} {:>12}",
        HEADER[0],
        HEADER[1],
        HEADER[2],
        HEADER[3],
        HEADER[4],
        HEADER[5],
        HEADER[6],
        HEADER[7],
        HEADER[8],
        HEADER[9],
        HEADER[10],
        HEADER[11]
    );
    for threads in THREADS {
        for per_commit in PER_COMMIT {
            let mut local_rate = 0.0;
            for level in [Durability::Local, Durability::Remote] {
                let r = commit_run(rt, backend, level, threads, per_commit, secs, None);
                let ratio = if level == Durability::Remote {
                    format!("{:.2}", r.puts_per_s() / local_rate)
                } else {
                    local_rate = r.puts_per_s();
                    "—".to_string()
                };
                print_row(&level_name(level), threads, per_commit, &r, &ratio);
            }
        }
    }
    // A committer at Remote must wake the shipper: with a 10 s interval, a commit that waited
    // for the interval instead would take seconds.
    let r = commit_run(
        rt,
        backend,
        Durability::Remote,
        1,
        1,
        secs / 2,
        Some(Duration::from_secs(10)),
    );
    println!(
        "wake check: Remote, 1 timeline, a finish_write every put, remote_wal_interval 10 s: median {}, p99 {}, max {} over {} commits",
        ms(percentile(&r.lat, 0.5)),
        ms(percentile(&r.lat, 0.99)),
        ms(percentile(&r.lat, 1.0)),
        r.lat.len()
    );
}

fn ingest(rt: &tokio::runtime::Runtime, backend: &Backend, secs: Duration) {
    let (threads, per_commit) = (8, 10);
    println!(
        "\n## {}: ingest, {threads} timelines on {threads} threads, a finish_write every {per_commit} puts of {VALUE} B, \
         {:.1} s each, Local and Remote in turn; default options except durability: {DEFAULTS}",
        backend.name,
        secs.as_secs_f64()
    );
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..2 {
        for (i, level) in [Durability::Local, Durability::Remote]
            .into_iter()
            .enumerate()
        {
            let r = commit_run(rt, backend, level, threads, per_commit, secs, None);
            println!(
                "round {round} {:<6}: {:>9.0} puts/s, {:>6.2} MB/s of values; commit median {}, p99 {}",
                level_name(level),
                r.puts_per_s(),
                r.mb_per_s(),
                ms(percentile(&r.lat, 0.5)),
                ms(percentile(&r.lat, 0.99))
            );
            rates[i].push(r.puts_per_s());
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (local, remote) = (mean(&rates[0]), mean(&rates[1]));
    println!(
        "{}: ingest at Remote = {:.2} of Local ({:.0} vs {:.0} puts/s, {:.2} vs {:.2} MB/s; means of 2 rounds)",
        backend.name,
        remote / local,
        remote,
        local,
        remote * VALUE as f64 / 1e6,
        local * VALUE as f64 / 1e6
    );
}

/// Commits across the first flushes, one timeline, a `finish_write` every 100 puts, default
/// options (64 MiB layers): after a flush's index upload the shipper deletes the chunks it
/// covers, one checked deletion each, before it ships the next chunk.
fn across_flush(rt: &tokio::runtime::Runtime, backend: &Backend, total: u64) {
    let per_commit = 100;
    println!(
        "\n## {}: commits across flushes: 1 timeline, {total} puts of {VALUE} B, a finish_write every {per_commit} puts, \
         default options except durability ({DEFAULTS}); the layer fills and is flushed and uploaded while the writer commits",
        backend.name
    );
    for level in [Durability::Local, Durability::Remote] {
        let dir = tempdir();
        let prefix = unique("flush");
        let store = Store::open_blocking(
            StoreOptions::new(dir.path())
                .remote(backend.remote(&prefix))
                .durability(level),
        )
        .unwrap();
        let tl = rt.block_on(store.create_timeline("main")).unwrap();
        let pool = pool(3);
        let mut w = tl.writer().unwrap();
        let mut lat = Vec::with_capacity((total / per_commit) as usize);
        let mut worst = (Duration::ZERO, Duration::ZERO);
        let start = Instant::now();
        let mut lsn = 0u64;
        while lsn < total {
            for _ in 0..per_commit {
                lsn += 1;
                w.put(&key(0, lsn), Lsn(lsn), Value::image(value(&pool, lsn)))
                    .unwrap();
            }
            let t = Instant::now();
            w.finish_write(Lsn(lsn)).unwrap();
            let took = t.elapsed();
            if took > worst.0 {
                worst = (took, t.duration_since(start));
            }
            lat.push(took);
        }
        let elapsed = start.elapsed();
        lat.sort();
        let slow: Vec<&Duration> = lat
            .iter()
            .filter(|l| **l >= Duration::from_millis(90))
            .collect();
        let (chunks, _) = list_wal(rt, &backend.remote(&prefix));
        println!(
            "{:<6}: {:.0} puts/s; commit median {}, p99 {}, max {} (at {:.1} s); {} commits of {} took 90 ms or more, {} in all; \
             {} layer files flushed, index at {}, {chunks} chunks under wal/ at the end",
            level_name(level),
            total as f64 / elapsed.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(worst.0),
            worst.1.as_secs_f64(),
            slow.len(),
            lat.len(),
            ms(slow.into_iter().sum()),
            tl.layers().len(),
            tl.remote_consistent_lsn(),
        );
        drop(w);
        drop(tl);
        drop(store);
    }
}

/// Options of the node that writes the tail and of the node that attaches after it.
fn attach_opts(dir: &std::path::Path, remote: RemoteStorage) -> StoreOptions {
    StoreOptions::new(dir).remote(remote).freeze_bytes(1 << 30)
}

/// One node loss and attach with about `tail_mb` MB of WAL chunks above the index.
fn attach_once(rt: &tokio::runtime::Runtime, backend: &Backend, tail_mb: u64) {
    let prefix = unique("attach");
    let d1 = tempdir();
    let store = Store::open_blocking(attach_opts(d1.path(), backend.remote(&prefix))).unwrap();
    let tl = rt.block_on(store.create_timeline("main")).unwrap();
    let pool = pool(7);
    let mut w = tl.writer().unwrap();
    let mut lsn = 0u64;
    let put = |w: &mut stratakv::TimelineWriter, lsn: &mut u64| {
        *lsn += 1;
        w.put(&key(0, *lsn), Lsn(*lsn), Value::image(value(&pool, *lsn)))
            .unwrap();
        if (*lsn).is_multiple_of(TAIL_PER_COMMIT) {
            w.finish_write(Lsn(*lsn)).unwrap();
        }
    };
    // The base: shipped, flushed and uploaded; then the chunks below the index are deleted.
    while lsn < BASE_KEYS {
        put(&mut w, &mut lsn);
    }
    w.finish_write(Lsn(lsn)).unwrap();
    rt.block_on(tl.wait_remote_durable(Lsn(lsn))).unwrap();
    rt.block_on(tl.flush()).unwrap();
    rt.block_on(store.wait_for_upload()).unwrap();
    let base_lsn = tl.remote_consistent_lsn();
    assert_eq!(base_lsn, Lsn(lsn), "the index covers the base");
    let t = Instant::now();
    while list_wal(rt, &backend.remote(&prefix)).0 > 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The tail: write, ship and list until the chunks hold the target, sizing each step by
    // the chunk bytes per put seen so far.
    let target = tail_mb * 1_000_000;
    let start_bytes = list_wal(rt, &backend.remote(&prefix)).1;
    let mut step = (target / 1000).clamp(1000, 20_000);
    while target > 0 && list_wal(rt, &backend.remote(&prefix)).1 < target {
        for _ in 0..step {
            put(&mut w, &mut lsn);
        }
        w.finish_write(Lsn(lsn)).unwrap();
        rt.block_on(tl.wait_remote_durable(Lsn(lsn))).unwrap();
        let bytes = list_wal(rt, &backend.remote(&prefix)).1;
        let per_put = bytes.saturating_sub(start_bytes).max(1) as f64 / (lsn - base_lsn.0) as f64;
        step = ((target.saturating_sub(bytes) as f64 / per_put) as u64).max(100);
    }
    assert_eq!(
        tl.remote_consistent_lsn(),
        base_lsn,
        "nothing was flushed past the index"
    );
    let (chunks, bytes) = list_wal(rt, &backend.remote(&prefix));
    drop(w);
    drop(tl);
    drop(store); // the node is lost: no close, no flush
    drop(d1);

    let d2 = tempdir();
    let t = Instant::now();
    let store = Store::open_blocking(attach_opts(d2.path(), backend.remote(&prefix))).unwrap();
    let tl = store.timeline("main").unwrap();
    let opened = t.elapsed();
    assert_eq!(tl.last_record_lsn(), Lsn(lsn), "every commit replayed");
    let got = tl.get_blocking(&key(0, lsn), tl.last_record_lsn()).unwrap();
    let first_read = t.elapsed();
    assert_eq!(got.as_deref(), Some(&value(&pool, lsn)[..]));
    let claim_wait = store.claim_wait();
    let tail = if lsn > base_lsn.0 {
        format!(
            "{}..={}, {} puts",
            Lsn(base_lsn.0 + 1),
            Lsn(lsn),
            lsn - base_lsn.0
        )
    } else {
        "none".to_string()
    };
    println!(
        "{:>7} MB tail: {chunks:>3} chunks, {:>7.2} MB under wal/ (index at LSN {base_lsn}, tail LSNs {tail}); \
         attach to first read {} = claim wait {} + the rest {} (open {}, read {})",
        tail_mb,
        bytes as f64 / 1e6,
        ms(first_read),
        ms(claim_wait),
        ms(first_read.saturating_sub(claim_wait)),
        ms(opened),
        ms(first_read - opened)
    );
    drop(tl);
    drop(store);
}

fn attach(rt: &tokio::runtime::Runtime, backend: &Backend) {
    let tails: Vec<u64> = std::env::var("STRATAKV_BENCH_TAIL_MB")
        .unwrap_or_else(|_| "0,10,100".to_string())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("STRATAKV_BENCH_TAIL_MB: MB, comma-separated")
        })
        .collect();
    let reps = std::env::var("STRATAKV_BENCH_ATTACH_REPS")
        .ok()
        .map(|v| v.parse::<usize>().expect("STRATAKV_BENCH_ATTACH_REPS"));
    println!(
        "\n## {}: attach to first read after a node loss; base {BASE_KEYS} keys of 16 B + {VALUE} B flushed and uploaded, \
         tail written at Local with a finish_write every {TAIL_PER_COMMIT} puts, then wait_remote_durable; \
         writer and attaching node: default options except freeze_bytes 1 GiB (nothing flushed past the index); \
         the writer is dropped without close; the new node opens an empty directory (default claim grace 2 s: \
         the previous owner did not release its generation) and reads the newest key",
        backend.name
    );
    for tail in tails {
        let n = reps.unwrap_or(if tail >= 50 { 1 } else { 3 });
        for _ in 0..n {
            attach_once(rt, backend, tail);
        }
    }
}

/// The local disk under the stores: 200 appends of 128 B, each followed by an fsync, median
/// and p99. Another job writing to the same disk slows these, and the `Local` level with them.
fn fsync_probe() -> String {
    use std::io::Write;
    let dir = tempdir();
    let mut f = std::fs::File::create(dir.path().join("probe")).unwrap();
    let mut t: Vec<Duration> = (0..200)
        .map(|_| {
            f.write_all(&[7u8; 128]).unwrap();
            let start = Instant::now();
            f.sync_all().unwrap();
            start.elapsed()
        })
        .collect();
    t.sort();
    format!(
        "fsync after a 128 B append in {}: median {}, p99 {}",
        dir.path()
            .parent()
            .map_or("?".into(), |p| p.display().to_string()),
        ms(percentile(&t, 0.5)),
        ms(percentile(&t, 0.99))
    )
}

fn run(rt: &tokio::runtime::Runtime, backend: &Backend) {
    let secs = Duration::from_secs_f64(env_f64("STRATAKV_BENCH_SECS", 2.0));
    let ingest_secs = Duration::from_secs_f64(env_f64("STRATAKV_BENCH_INGEST_SECS", 3.0));
    let flush_puts = env_f64("STRATAKV_BENCH_FLUSH_PUTS", 500_000.0) as u64;
    let sections = std::env::var("STRATAKV_BENCH_SECTIONS")
        .unwrap_or_else(|_| "commit,ingest,flush,attach".to_string());
    let t = Instant::now();
    println!(
        "\n# {} ({}): load average {} at the start; {}",
        backend.name,
        backend.about,
        loadavg(),
        fsync_probe()
    );
    for section in sections.split(',') {
        match section.trim() {
            "commit" => commit_latency(rt, backend, secs),
            "ingest" => ingest(rt, backend, ingest_secs),
            "attach" => attach(rt, backend),
            "flush" => across_flush(rt, backend, flush_puts),
            other => panic!(
                "STRATAKV_BENCH_SECTIONS: unknown section {other:?} (commit, ingest, flush, attach)"
            ),
        }
    }
    println!(
        "\n{}: took {:.0} s; load average {} at the end; {}",
        backend.name,
        t.elapsed().as_secs_f64(),
        loadavg(),
        fsync_probe()
    );
}

fn main() {
    // cargo passes flags such as --bench; this bench prints its figures itself.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "remote_wal bench: {} cores; values {VALUE} B incompressible, keys 16 B, every put at its own LSN",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let backends = std::env::var("STRATAKV_BENCH_BACKENDS").unwrap_or_else(|_| "local,s3".into());
    let dir = tempdir();
    if backends.split(',').any(|b| b.trim() == "local") {
        let local = Backend {
            name: "local-fs",
            about: "object_store's LocalFileSystem in a temporary directory on the same disk",
            store: Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap()),
        };
        run(&rt, &local);
    }
    if !backends.split(',').any(|b| b.trim() == "s3") {
        return;
    }
    if let Some(store) = common::moto_from_env() {
        let s3 = Backend {
            name: "s3-moto",
            about: "moto 5.2.5 (S3 API, in memory) on loopback, on the same 2 cores",
            store,
        };
        run(&rt, &s3);
    } else {
        println!("\n(s3-moto skipped: STRATAKV_S3_ENDPOINT / STRATAKV_S3_BUCKET not set)");
    }
}
