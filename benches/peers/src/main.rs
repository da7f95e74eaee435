//! StrataKV against fjall and RocksDB, on the same data, in one run.
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- [--keys N] [--gets G] [--only ENGINE]
//! # without RocksDB (its C++ build takes well over 15 minutes on 2 shared cores):
//! cargo run --release --manifest-path benches/peers/Cargo.toml --no-default-features -- --keys N
//! ```
//!
//! Writes `RESULTS.md` and `get_latency.svg` next to this crate's Cargo.toml.
//!
//! Data (identical for every engine): N keys of 16 bytes (index big-endian, then `.` padding),
//! two rounds over all keys in a seeded shuffled order, every put at its own LSN
//! (round 1: LSN FIRST..FIRST+N, round 2: the next N LSNs), values of 100 bytes cut from a
//! seeded random pool (incompressible). One writer thread.
//!
//! * StrataKV: `put(key, lsn, Value::image(..))`, `finish_write` every 1000 puts, WAL on without
//!   fsync (`FsyncPolicy::Never`, as the peers' default writes do not sync), background
//!   compaction off; `get(key, lsn)`.
//! * Peers: key ‖ big-endian (u64::MAX - lsn), single puts with default (non-syncing) write
//!   options; "get as of LSN" = seek to key ‖ inv(lsn), take the first entry if it has the same
//!   key (RocksDB: raw iterator with an upper bound; fjall: `range(..).next()`).
//!
//! Every engine gets a 256 MiB block cache (StrataKV's default). After ingest, each engine
//! flushes to disk; reads then run one untimed warm-up pass and one timed pass over the same
//! G random keys, timed in batches of 100 (per-op latency = batch / 100).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use stratakv::{FsyncPolicy, Lsn, Store, StoreOptions, Value};

const SEED: u64 = 0x5EED_57A7_A0C0_FFEE;
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
const POOL_LEN: usize = 1 << 20;
const FIRST_LSN: u64 = 0x1000;
const COMMIT_EVERY: u64 = 1000;
const BATCH: usize = 100;
const CACHE_BYTES: usize = 256 << 20;

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

fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [b'.'; KEY_LEN];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

fn vkey(k: &[u8; KEY_LEN], lsn: u64) -> [u8; KEY_LEN + 8] {
    let mut v = [0u8; KEY_LEN + 8];
    v[..KEY_LEN].copy_from_slice(k);
    v[KEY_LEN..].copy_from_slice(&(u64::MAX - lsn).to_be_bytes());
    v
}

/// Exclusive upper bound of every version of `k`: the key with its last byte incremented
/// (the padding byte is `.`, so this never overflows).
fn upper(k: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut u = *k;
    u[KEY_LEN - 1] += 1;
    u
}

/// The workload, shared by all engines.
struct Data {
    n: u64,
    pool: Vec<u8>,
    /// Per round, the order keys are written in.
    orders: [Vec<u32>; 2],
    /// Keys read by the get benchmarks.
    reads: Vec<u32>,
}

impl Data {
    fn new(n: u64, gets: usize) -> Data {
        let mut rng = Rng(SEED);
        let pool = (0..POOL_LEN).map(|_| rng.next() as u8).collect();
        let shuffled = |rng: &mut Rng| {
            let mut v: Vec<u32> = (0..n as u32).collect();
            for i in (1..v.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                v.swap(i, j);
            }
            v
        };
        let orders = [shuffled(&mut rng), shuffled(&mut rng)];
        let reads = (0..gets).map(|_| rng.below(n) as u32).collect();
        Data { n, pool, orders, reads }
    }

    fn value(&self, i: u64, round: u64) -> &[u8] {
        let at = (mix(SEED ^ i ^ (round << 40)) % (POOL_LEN - VALUE_LEN) as u64) as usize;
        &self.pool[at..at + VALUE_LEN]
    }

    /// Every (key index, round, lsn) in write order.
    fn puts(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        (0..2u64).flat_map(move |r| {
            self.orders[r as usize]
                .iter()
                .enumerate()
                .map(move |(j, &i)| (u64::from(i), r, FIRST_LSN + r * self.n + j as u64))
        })
    }

    /// The last LSN of round 1: every key's first version.
    fn old_lsn(&self) -> u64 {
        FIRST_LSN + self.n - 1
    }

    /// The last LSN written.
    fn latest_lsn(&self) -> u64 {
        FIRST_LSN + 2 * self.n - 1
    }
}

#[derive(Clone, Copy, Default)]
struct Lat {
    median_ns: f64,
    p99_ns: f64,
}

struct Row {
    engine: String,
    ingest_puts_s: f64,
    flush_s: f64,
    latest: Lat,
    old: Lat,
}

/// Runs `get` over `keys` once untimed, then once timed in batches of [`BATCH`].
/// `get` returns the value length (checked by the caller's closure) so nothing is optimised out.
fn time_gets(keys: &[u32], mut get: impl FnMut(u64) -> usize) -> Lat {
    let mut sink = 0usize;
    for &i in keys {
        sink += get(u64::from(i));
    }
    let mut per_op = Vec::with_capacity(keys.len() / BATCH + 1);
    for chunk in keys.chunks(BATCH) {
        let t = Instant::now();
        for &i in chunk {
            sink += get(u64::from(i));
        }
        per_op.push(t.elapsed().as_nanos() as f64 / chunk.len() as f64);
    }
    std::hint::black_box(sink);
    per_op.sort_by(f64::total_cmp);
    let q = |p: f64| per_op[((per_op.len() - 1) as f64 * p).round() as usize];
    Lat { median_ns: q(0.5), p99_ns: q(0.99) }
}

fn check(d: &Data, got: Option<&[u8]>, i: u64, round: u64) -> usize {
    let v = got.unwrap_or_else(|| panic!("key {i} missing at round {round}"));
    assert_eq!(v, d.value(i, round), "key {i} round {round}: wrong value");
    v.len()
}

fn run_stratakv(d: &Data, dir: &Path) -> Row {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (store, tl) = rt.block_on(async {
        let store = Store::open(
            StoreOptions::new(dir)
                .background_period(None)
                .fsync_policy(FsyncPolicy::Never),
        )
        .await
        .expect("open");
        let tl = store.create_timeline("main").await.expect("timeline");
        (store, tl)
    });
    let mut w = tl.writer().expect("writer");
    let t = Instant::now();
    let mut count = 0u64;
    let mut last = 0;
    for (i, r, lsn) in d.puts() {
        w.put(&key(i), Lsn(lsn), Value::image(Bytes::copy_from_slice(d.value(i, r))))
            .expect("put");
        count += 1;
        last = lsn;
        if count.is_multiple_of(COMMIT_EVERY) {
            w.finish_write(Lsn(lsn)).expect("finish_write");
        }
    }
    w.finish_write(Lsn(last)).expect("finish_write");
    let ingest = t.elapsed().as_secs_f64();
    let t = Instant::now();
    rt.block_on(tl.flush()).expect("flush");
    let flush_s = t.elapsed().as_secs_f64();
    let mut lat = [Lat::default(); 2];
    for (slot, (lsn, round)) in [(d.latest_lsn(), 1), (d.old_lsn(), 0)].into_iter().enumerate() {
        lat[slot] = time_gets(&d.reads, |i| {
            let v = rt.block_on(tl.get(&key(i), Lsn(lsn))).expect("get");
            check(d, v.as_deref(), i, round)
        });
    }
    drop(w);
    rt.block_on(store.close()).expect("close");
    Row {
        engine: "StrataKV".into(),
        ingest_puts_s: (2 * d.n) as f64 / ingest,
        flush_s,
        latest: lat[0],
        old: lat[1],
    }
}

fn run_fjall(d: &Data, dir: &Path) -> Row {
    let db = fjall::Database::builder(dir).cache_size(CACHE_BYTES as u64).open().expect("open");
    let ks = db.keyspace("main", fjall::KeyspaceCreateOptions::default).expect("keyspace");
    let t = Instant::now();
    for (i, r, lsn) in d.puts() {
        ks.insert(vkey(&key(i), lsn), d.value(i, r)).expect("insert");
    }
    let ingest = t.elapsed().as_secs_f64();
    let t = Instant::now();
    ks.rotate_memtable_and_wait().expect("flush");
    let flush_s = t.elapsed().as_secs_f64();
    let mut lat = [Lat::default(); 2];
    for (slot, (lsn, round)) in [(d.latest_lsn(), 1), (d.old_lsn(), 0)].into_iter().enumerate() {
        lat[slot] = time_gets(&d.reads, |i| {
            let k = key(i);
            let lo = vkey(&k, lsn);
            let hi = upper(&k);
            let got = ks
                .range(lo.as_slice()..hi.as_slice())
                .next()
                .map(|g| g.value().expect("value"));
            check(d, got.as_deref(), i, round)
        });
    }
    Row {
        engine: "fjall 3.1".into(),
        ingest_puts_s: (2 * d.n) as f64 / ingest,
        flush_s,
        latest: lat[0],
        old: lat[1],
    }
}

#[cfg(feature = "rocksdb")]
fn run_rocksdb(d: &Data, dir: &Path) -> Row {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let mut bbo = rocksdb::BlockBasedOptions::default();
    let cache = rocksdb::Cache::new_lru_cache(CACHE_BYTES);
    bbo.set_block_cache(&cache);
    opts.set_block_based_table_factory(&bbo);
    let db = rocksdb::DB::open(&opts, dir).expect("open");
    let t = Instant::now();
    for (i, r, lsn) in d.puts() {
        db.put(vkey(&key(i), lsn), d.value(i, r)).expect("put");
    }
    let ingest = t.elapsed().as_secs_f64();
    let t = Instant::now();
    db.flush().expect("flush");
    let flush_s = t.elapsed().as_secs_f64();
    let mut lat = [Lat::default(); 2];
    for (slot, (lsn, round)) in [(d.latest_lsn(), 1), (d.old_lsn(), 0)].into_iter().enumerate() {
        lat[slot] = time_gets(&d.reads, |i| {
            let k = key(i);
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_iterate_upper_bound(upper(&k).to_vec());
            let mut it = db.raw_iterator_opt(ro);
            it.seek(vkey(&k, lsn));
            let got = if it.valid() { it.value() } else { None };
            check(d, got, i, round)
        });
    }
    Row {
        engine: "RocksDB 10.4 (key‖inv LSN, seek + upper bound)".into(),
        ingest_puts_s: (2 * d.n) as f64 / ingest,
        flush_s,
        latest: lat[0],
        old: lat[1],
    }
}

fn us(ns: f64) -> String {
    format!("{:.2}", ns / 1000.0)
}

fn svg(rows: &[Row]) -> String {
    let (w, h) = (720.0, 380.0);
    let (left, top, bottom) = (70.0, 40.0, 70.0);
    let plot_h = h - top - bottom;
    let max = rows
        .iter()
        .flat_map(|r| [r.latest.median_ns, r.old.median_ns, r.latest.p99_ns, r.old.p99_ns])
        .fold(0.0f64, f64::max)
        / 1000.0;
    let ymax = (max * 1.1).max(0.1);
    let group_w = (w - left - 20.0) / rows.len() as f64;
    let bar_w = group_w / 3.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">get as of an LSN: median latency (µs; whisker = p99)</text>"#,
        w / 2.0
    );
    for t in 0..=4 {
        let v = ymax * t as f64 / 4.0;
        let y = top + plot_h - plot_h * t as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
            w - 20.0,
            left - 6.0,
            y + 4.0
        );
    }
    for (g, r) in rows.iter().enumerate() {
        let x0 = left + g as f64 * group_w + bar_w / 2.0;
        for (b, (lat, color, label)) in
            [(r.latest, "#2b6cb0", "latest"), (r.old, "#dd6b20", "old")].into_iter().enumerate()
        {
            let x = x0 + b as f64 * bar_w;
            let bh = plot_h * (lat.median_ns / 1000.0) / ymax;
            let y = top + plot_h - bh;
            let yp = top + plot_h - plot_h * (lat.p99_ns / 1000.0) / ymax;
            let cx = x + bar_w * 0.45;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"><title>{} {label}: median {} µs, p99 {} µs</title></rect>"#,
                bar_w * 0.9,
                r.engine,
                us(lat.median_ns),
                us(lat.p99_ns)
            );
            let _ = writeln!(
                s,
                r#"<line x1="{cx:.1}" y1="{yp:.1}" x2="{cx:.1}" y2="{y:.1}" stroke="black"/><line x1="{:.1}" y1="{yp:.1}" x2="{:.1}" y2="{yp:.1}" stroke="black"/>"#,
                cx - 5.0,
                cx + 5.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                y - 3.0,
                us(lat.median_ns)
            );
        }
        let name = r.engine.split(" (").next().unwrap_or(&r.engine);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{name}</text>"#,
            x0 + bar_w,
            top + plot_h + 18.0
        );
    }
    let ly = h - 22.0;
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{}" width="12" height="12" fill="#2b6cb0"/><text x="{}" y="{ly}">latest LSN</text><rect x="{}" y="{}" width="12" height="12" fill="#dd6b20"/><text x="{}" y="{ly}">old LSN (each key's first version)</text>"##,
        ly - 10.0,
        left + 16.0,
        left + 110.0,
        ly - 10.0,
        left + 126.0
    );
    s.push_str("</svg>\n");
    s
}

fn main() {
    let mut keys = 1_000_000u64;
    let mut gets = 200_000usize;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--keys" => keys = args.next().and_then(|v| v.parse().ok()).expect("--keys N"),
            "--gets" => gets = args.next().and_then(|v| v.parse().ok()).expect("--gets G"),
            "--only" => only = args.next(),
            _ => panic!("usage: [--keys N] [--gets G] [--only stratakv|fjall|rocksdb]"),
        }
    }
    let cmdline = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    println!("{keys} keys x 2 versions = {} puts; {gets} gets per figure; seed {SEED:#x}", 2 * keys);
    let d = Data::new(keys, gets);
    let mut rows = Vec::new();
    type Runner = fn(&Data, &Path) -> Row;
    #[allow(unused_mut)]
    let mut engines: Vec<(&str, Runner)> = vec![("stratakv", run_stratakv), ("fjall", run_fjall)];
    #[cfg(feature = "rocksdb")]
    engines.push(("rocksdb", run_rocksdb));
    for (name, f) in engines {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let dir = tempfile::Builder::new().prefix(&format!("peers-{name}-")).tempdir().unwrap();
        let t = Instant::now();
        let row = f(&d, dir.path());
        println!(
            "{:<50} ingest {:>9.0} puts/s  flush {:.2}s  latest median {} µs p99 {} µs  old median {} µs p99 {} µs  ({:.1}s)",
            row.engine,
            row.ingest_puts_s,
            row.flush_s,
            us(row.latest.median_ns),
            us(row.latest.p99_ns),
            us(row.old.median_ns),
            us(row.old.p99_ns),
            t.elapsed().as_secs_f64()
        );
        rows.push(row);
    }

    let strata = rows.iter().find(|r| r.engine == "StrataKV").map(|r| (r.latest.median_ns, r.old.median_ns, r.ingest_puts_s));
    let mut table = String::new();
    table.push_str("| engine | ingest puts/s | get latest LSN median (µs) | p99 (µs) | get old LSN median (µs) | p99 (µs) | StrataKV ratio latest / old / ingest |\n|---|---|---|---|---|---|---|\n");
    for r in &rows {
        let ratio = strata.map_or("—".to_string(), |(l, o, ing)| {
            format!(
                "{:.2}× / {:.2}× / {:.2}×",
                r.latest.median_ns / l,
                r.old.median_ns / o,
                ing / r.ingest_puts_s
            )
        });
        let _ = writeln!(
            table,
            "| {} | {:.0}k | {} | {} | {} | {} | {} |",
            r.engine,
            r.ingest_puts_s / 1000.0,
            us(r.latest.median_ns),
            us(r.latest.p99_ns),
            us(r.old.median_ns),
            us(r.old.p99_ns),
            ratio
        );
    }
    println!("\n{table}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(out.join("get_latency.svg"), svg(&rows)).expect("write svg");
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let feat = if cfg!(feature = "rocksdb") { "" } else { " --no-default-features" };
    let rocks_note = if cfg!(feature = "rocksdb") {
        String::new()
    } else {
        "- RocksDB left out of this run (built without the `rocksdb` feature: its C++ build did not finish within ~15 min niced on 2 shared cores); SlateDB not implemented\n".to_string()
    };
    let md = format!(
        "# StrataKV vs peers — one run\n\n\
         - command: `nice -n 19 cargo run --release --manifest-path benches/peers/Cargo.toml{feat} -- {cmdline}`\n\
         {rocks_note}\
         - date: {date}\n\
         - machine: {cores} cores ({cpu}), shared with other builds; one writer / reader thread\n\
         - data: {keys} keys of 16 B × 2 versions = {} puts of 100 B incompressible values (seed {SEED:#x}); each put at its own LSN\n\
         - reads: {gets} random keys, one untimed warm-up pass, then timed in batches of {BATCH} (per-op = batch/{BATCH}); data flushed to disk, 256 MiB block cache per engine\n\
         - latest LSN = {} (round 2 values), old LSN = {} (end of round 1: each key's first version)\n\
         - StrataKV: `background_period(None)`, WAL on with `FsyncPolicy::Never`, `finish_write` every {COMMIT_EVERY} puts. Peers: key ‖ BE(u64::MAX − lsn), default write options (no sync), seek to key ‖ inv(lsn) bounded by the key's range\n\
         - ratio column: peer median ÷ StrataKV median (above 1 = StrataKV faster) for gets; StrataKV puts/s ÷ peer puts/s for ingest\n\n\
         {table}\n![get latency](get_latency.svg)\n",
        2 * keys,
        d.latest_lsn(),
        d.old_lsn()
    );
    std::fs::write(out.join("RESULTS.md"), md).expect("write RESULTS.md");
    println!("wrote {}", out.join("RESULTS.md").display());
}
