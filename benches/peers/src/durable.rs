//! Ingest acknowledged only once it is in object storage: StrataKV at `Durability::Remote`
//! beside SlateDB awaiting durability, both on a local-folder object store, at the same commit
//! granularity, in one run (`--durable`).
//!
//! * StrataKV: `put(key, lsn, Value::image(..))` with its own LSN per put, and `finish_write`
//!   every C puts at `Durability::Remote` (it returns once the WAL chunk holding the commit is
//!   uploaded and the generation checked); W writers on W plain threads, one timeline each.
//!   Default options otherwise: the local WAL fsynced at every commit (`EveryCommit`),
//!   `remote_wal_interval` 100 ms (a waiting committer ships at once), chunks of up to 4 MiB,
//!   background work every 10 s, default retry policy.
//! * SlateDB: a `WriteBatch` of C puts, `Db::write`, then `WriteHandle::await_durable` on the
//!   handle (in 0.18 this replaces `WriteOptions { await_durable: true }`; its README gives it
//!   as the way to wait for a write); W writer tasks on a multi-threaded tokio runtime, one
//!   shared `Db`. Default `Settings`: the WAL is flushed to object storage every
//!   `flush_interval` (100 ms, the value its docs work their cost estimate from) or when its
//!   buffer fills; a waiting writer does not flush it sooner. A second SlateDB column runs
//!   with `flush_interval` 10 ms (not its default: ten times the PUT requests).
//!
//! Both: no compression (SlateDB's default `compression_codec: None`; StrataKV set to
//! `zstd_level(None)`, its default compresses compacted layers); the workload only writes, so
//! no engine reads a block and the cache budget does not enter (each at its default).
//! StrataKV also fsyncs its local WAL at every commit, which SlateDB has no counterpart of.
//! 16-byte keys unique per writer and put, 100-byte incompressible values, `secs` of
//! measurement after 0.3 s of warm-up. The commit latency is StrataKV's `finish_write` (its
//! puts untimed) and SlateDB's `write` + `await_durable` (the batch's puts included).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use stratakv::remote::RemoteStorage;
use stratakv::{Durability, Lsn, Store, StoreOptions, Value};

use crate::{VALUE_LEN, lock_version};

const WARMUP: Duration = Duration::from_millis(300);
const POOL: usize = 1 << 20;

/// SlateDB's default `flush_interval` (`Settings::default()`).
const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A shorter `flush_interval`, for a second SlateDB column: what its latency is made of.
const TUNED: Duration = Duration::from_millis(10);

/// Writers and puts per commit of each case.
pub const CASES: [(usize, u64); 6] = [(1, 1), (1, 10), (1, 100), (8, 1), (8, 10), (8, 100)];

fn key(writer: u32, i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(b"key/");
    k[4..8].copy_from_slice(&writer.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

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
    let off = (i as usize * 61) % (POOL - VALUE_LEN);
    pool.slice(off..off + VALUE_LEN)
}

/// What one writer measured: commit latencies and puts in the window, and when it stopped.
struct Part {
    lat: Vec<Duration>,
    puts: u64,
    window: Duration,
}

/// One engine on one case.
struct Measured {
    lat: Vec<Duration>,
    puts: u64,
    window: Duration,
}

impl Measured {
    fn of(parts: Vec<Part>) -> Measured {
        let mut m = Measured {
            lat: Vec::new(),
            puts: 0,
            window: Duration::ZERO,
        };
        for p in parts {
            m.lat.extend(p.lat);
            m.puts += p.puts;
            m.window = m.window.max(p.window);
        }
        m.lat.sort();
        m
    }
    fn puts_per_s(&self) -> f64 {
        self.puts as f64 / self.window.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        if self.lat.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.lat.len() as f64 * p).ceil() as usize).clamp(1, self.lat.len()) - 1;
        self.lat[i]
    }
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1e3;
    if m < 10.0 {
        format!("{m:.2}")
    } else {
        format!("{m:.0}")
    }
}

fn stratakv(dir: &Path, writers: usize, per_commit: u64, secs: Duration) -> Measured {
    let bucket = dir.join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let os: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&bucket).unwrap());
    let remote = RemoteStorage::new(os, object_store::path::Path::from("strata"));
    let store = Store::open_blocking(
        StoreOptions::new(dir.join("store"))
            .remote(remote)
            .durability(Durability::Remote)
            // Uncompressed, as SlateDB's default (`compression_codec: None`).
            .zstd_level(None),
    )
    .expect("open");
    let timelines: Vec<_> = (0..writers)
        .map(|i| futures_block_on(store.create_timeline(&format!("t{i}"))).unwrap())
        .collect();
    let barrier = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = timelines
        .into_iter()
        .enumerate()
        .map(|(n, tl)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let pool = pool(n as u64);
                let mut w = tl.writer().unwrap();
                let mut part = Part {
                    lat: Vec::new(),
                    puts: 0,
                    window: Duration::ZERO,
                };
                let mut lsn = 0u64;
                barrier.wait();
                let start = Instant::now();
                let (from, stop) = (start + WARMUP, start + WARMUP + secs);
                while Instant::now() < stop {
                    let measuring = Instant::now() >= from;
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
                    if measuring {
                        part.lat.push(t.elapsed());
                        part.puts += per_commit;
                    }
                }
                part.window = Instant::now().duration_since(from);
                part
            })
        })
        .collect();
    barrier.wait();
    let m = Measured::of(handles.into_iter().map(|h| h.join().unwrap()).collect());
    drop(store); // not closed: a close would flush and upload, which is no part of this
    m
}

/// Runs a future to completion on this thread (StrataKV's async calls run on any executor).
fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[cfg(feature = "slatedb")]
fn slatedb(
    dir: &Path,
    writers: usize,
    per_commit: u64,
    secs: Duration,
    flush_interval: Duration,
) -> Measured {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let os: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
    let db = Arc::new(
        rt.block_on(
            slatedb::Db::builder("db", os)
                .with_settings(slatedb::config::Settings {
                    flush_interval: Some(flush_interval),
                    ..slatedb::config::Settings::default()
                })
                .build(),
        )
        .expect("open"),
    );
    let parts = rt.block_on(async {
        let start = Instant::now();
        let (from, stop) = (start + WARMUP, start + WARMUP + secs);
        let tasks: Vec<_> = (0..writers)
            .map(|n| {
                let db = db.clone();
                tokio::spawn(async move {
                    let pool = pool(n as u64);
                    let mut part = Part {
                        lat: Vec::new(),
                        puts: 0,
                        window: Duration::ZERO,
                    };
                    let mut i = 0u64;
                    while Instant::now() < stop {
                        let measuring = Instant::now() >= from;
                        let t = Instant::now();
                        let mut batch = slatedb::WriteBatch::new();
                        for _ in 0..per_commit {
                            i += 1;
                            batch.put(key(n as u32, i), value(&pool, i));
                        }
                        let handle = db.write(batch).await.expect("write");
                        handle.await_durable().await.expect("await_durable");
                        if measuring {
                            part.lat.push(t.elapsed());
                            part.puts += per_commit;
                        }
                    }
                    part.window = Instant::now().duration_since(from);
                    part
                })
            })
            .collect();
        let mut parts = Vec::new();
        for t in tasks {
            parts.push(t.await.unwrap());
        }
        parts
    });
    let m = Measured::of(parts);
    rt.block_on(db.close()).expect("close");
    m
}

/// Runs every case on both engines and returns the report (Markdown).
pub fn run(secs: Duration) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "## Ingest acknowledged in object storage (local-folder object store)\n\n\
         StrataKV {} at `Durability::Remote` (default options but no compression: WAL fsync \
         `EveryCommit`, `remote_wal_interval` 100 ms, chunks up to 4 MiB, `zstd_level(None)`) \
         against SlateDB {} with \
         `write(batch)` + `WriteHandle::await_durable()` (default `Settings`: `flush_interval` \
         100 ms, `compression_codec: None`). Neither engine compresses; the workload only writes, \
         so no block is read and the cache budget does not enter (each at its default). 16 B keys, {VALUE_LEN} B incompressible values, {:.1} s measured per case after \
         {} ms of warm-up; W writers = W threads with a timeline each (StrataKV) or W tasks on \
         one `Db` (SlateDB); commit = `finish_write` every C puts (StrataKV) or one batch of C \
         puts (SlateDB). Latency in ms.\n",
        crate::git_describe(),
        lock_version("slatedb"),
        secs.as_secs_f64(),
        WARMUP.as_millis()
    )
    .unwrap();
    writeln!(
        out,
        "| writers W | puts per commit C | StrataKV puts/s | MB/s | commit median / p99 | SlateDB puts/s | MB/s | commit median / p99 | StrataKV ÷ SlateDB | SlateDB, `flush_interval` {} ms: puts/s | commit median / p99 |\n|---|---|---|---|---|---|---|---|---|---|---|",
        TUNED.as_millis()
    )
    .unwrap();
    for (writers, per_commit) in CASES {
        eprintln!("durable: {writers} writers, a commit every {per_commit} puts ...");
        let dir = tempfile::Builder::new()
            .prefix("peers-durable-")
            .tempdir()
            .unwrap();
        let s = stratakv(&dir.path().join("s"), writers, per_commit, secs);
        #[cfg(feature = "slatedb")]
        let slate_cols = {
            let run = |name: &str, interval: Duration| {
                let p = dir.path().join(name);
                std::fs::create_dir_all(&p).unwrap();
                slatedb(&p, writers, per_commit, secs, interval)
            };
            let d = run("slate", DEFAULT_FLUSH_INTERVAL);
            let t = run("slate-tuned", TUNED);
            format!(
                "{:.0} | {:.2} | {} / {} | {:.1}× | {:.0} | {} / {}",
                d.puts_per_s(),
                d.puts_per_s() * VALUE_LEN as f64 / 1e6,
                ms(d.pct(0.5)),
                ms(d.pct(0.99)),
                s.puts_per_s() / d.puts_per_s(),
                t.puts_per_s(),
                ms(t.pct(0.5)),
                ms(t.pct(0.99)),
            )
        };
        #[cfg(not(feature = "slatedb"))]
        let slate_cols = "— | — | — | — | — | —".to_string();
        let row = format!(
            "| {writers} | {per_commit} | {:.0} | {:.2} | {} / {} | {slate_cols} |",
            s.puts_per_s(),
            s.puts_per_s() * VALUE_LEN as f64 / 1e6,
            ms(s.pct(0.5)),
            ms(s.pct(0.99)),
        );
        println!("{row}");
        writeln!(out, "{row}").unwrap();
    }
    out
}
