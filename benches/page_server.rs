//! A page-server workload: Postgres-like 18-byte page keys, 8 KiB page images with runs of
//! small delta records (byte patches of about 100 bytes) between them, rebuilt by a redo hook of
//! this file's own (`PatchRedo`).
//!
//! ```text
//! cargo bench --bench page_server                               # 1,000 pages per group, ~1 minute
//! STRATAKV_BENCH_PAGES=100 cargo bench --bench page_server      # quick mode
//! ```
//!
//! | part | what | how |
//! |---|---|---|
//! | `get_page` | latency of `Timeline::get_now(page, lsn)`, p50 / p99 / mean, for 0, 1, 10 and 100 deltas to apply | four groups of P pages: each page one image then D deltas (D = the group's count), flushed to layer files; gets of random pages of a group at the page's newest LSN (so exactly D deltas apply), each timed on its own after an untimed pass, every page checked byte for byte against a copy rebuilt by the harness |
//! | `ingest` | MB/s of WAL ingested: the bytes of every record's key and payload | a stream where each page gets an image then 19 deltas (one image per 20 records, as a full-page write after a checkpoint), pages round-robin; `put` + `finish_write` every record, then every 100 records, each in a fresh store |
//!
//! Store options: WAL on with `FsyncPolicy::Never` (as in `benches/peers`), no compression
//! (`zstd_level(None)`), default block cache. For `get_page`, periodic background work is off
//! (`background_period(None)`), so that no image layer replaces the deltas being measured;
//! `ingest` runs with the defaults. One thread, no async runtime on the read path.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use stratakv::{
    Error, ErrorKind, FsyncPolicy, Lsn, RedoRecord, Result, Store, StoreOptions, Value, WalRedo,
};

const PAGE: usize = 8192;
/// Payload bytes of a patch: with its 4-byte header a record is 100 bytes.
const PATCH: usize = 96;
const DELTAS: [u64; 4] = [0, 1, 10, 100];
const SEED: u64 = 0x9A6E_5E77_0000_0001;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A Postgres-like page key: 1 byte kind, spcnode, dbnode, relnode (u32 each), fork (1 byte),
/// block number (u32), big-endian: 18 bytes. `group` picks the relation.
fn page_key(group: u32, block: u32) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[1..5].copy_from_slice(&1663u32.to_be_bytes());
    k[5..9].copy_from_slice(&16384u32.to_be_bytes());
    k[9..13].copy_from_slice(&(16385 + group).to_be_bytes());
    k[14..18].copy_from_slice(&block.to_be_bytes());
    k
}

/// The image of a page written at `lsn`: pseudo-random bytes, the LSN in its header.
fn image(seed: u64, lsn: u64) -> Bytes {
    let mut p = vec![0u8; PAGE];
    let mut x = mix(seed ^ lsn);
    for c in p.chunks_mut(8) {
        x = mix(x);
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    p[..8].copy_from_slice(&lsn.to_le_bytes());
    Bytes::from(p)
}

/// A delta record: offset (u16 LE), length (u16 LE), then the bytes to write there.
fn patch(seed: u64, lsn: u64) -> Bytes {
    let x = mix(seed ^ lsn ^ 0xDE17A);
    let off = 8 + (x as usize % (PAGE - 8 - PATCH));
    let mut r = Vec::with_capacity(4 + PATCH);
    r.extend_from_slice(&(off as u16).to_le_bytes());
    r.extend_from_slice(&(PATCH as u16).to_le_bytes());
    let mut y = x;
    while r.len() < 4 + PATCH {
        y = mix(y);
        r.push(y as u8);
    }
    Bytes::from(r)
}

/// The redo hook: copies the base page and applies each patch, stamping the record's LSN into
/// the header (bytes 0..8, like `pd_lsn`).
struct PatchRedo;

impl WalRedo for PatchRedo {
    fn apply(&self, key: &[u8], base: Option<Bytes>, recs: &[RedoRecord]) -> Result<Bytes> {
        let bad = |what: &str| Error::new(ErrorKind::Redo, format!("page {key:02x?}: {what}"));
        let base = base.ok_or_else(|| bad("no page image below the deltas"))?;
        if base.len() != PAGE {
            return Err(bad("base is not a page"));
        }
        let mut page = BytesMut::from(&base[..]);
        for r in recs {
            apply_patch(&mut page, &r.record, r.lsn.0).map_err(bad)?;
        }
        Ok(page.freeze())
    }
}

fn apply_patch(page: &mut [u8], rec: &[u8], lsn: u64) -> std::result::Result<(), &'static str> {
    if rec.len() < 4 {
        return Err("record shorter than its header");
    }
    let off = usize::from(u16::from_le_bytes([rec[0], rec[1]]));
    let len = usize::from(u16::from_le_bytes([rec[2], rec[3]]));
    if rec.len() != 4 + len || off + len > PAGE {
        return Err("patch out of the page");
    }
    page[off..off + len].copy_from_slice(&rec[4..]);
    page[..8].copy_from_slice(&lsn.to_le_bytes());
    Ok(())
}

fn options(dir: &std::path::Path) -> StoreOptions {
    StoreOptions::new(dir)
        .redo(Arc::new(PatchRedo))
        .fsync_policy(FsyncPolicy::Never)
        .zstd_level(None)
}

fn q(sorted: &[u32], p: f64) -> f64 {
    f64::from(sorted[((sorted.len() - 1) as f64 * p).round() as usize]) / 1e3
}

fn get_page(pages: u32, gets: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_blocking(options(dir.path()).background_period(None)).expect("open");
    let tl = futures::executor::block_on(store.create_timeline("main")).expect("timeline");
    let mut w = tl.writer().expect("writer");
    // Per group and page: the LSN of its newest record.
    let mut newest = vec![vec![0u64; pages as usize]; DELTAS.len()];
    let mut lsn = 0x100u64;
    for (g, &d) in DELTAS.iter().enumerate() {
        for b in 0..pages {
            let k = page_key(g as u32, b);
            let seed = u64::from(b) << 8 | g as u64;
            w.put(&k, Lsn(lsn), Value::image(image(seed, lsn)))
                .expect("put");
            w.finish_write(Lsn(lsn)).expect("finish_write");
            lsn += 1;
            for _ in 0..d {
                w.put(&k, Lsn(lsn), Value::delta(patch(seed, lsn)))
                    .expect("put");
                w.finish_write(Lsn(lsn)).expect("finish_write");
                lsn += 1;
            }
            newest[g][b as usize] = lsn - 1;
        }
    }
    drop(w);
    futures::executor::block_on(tl.flush()).expect("flush");
    println!(
        "get_page: {pages} pages per group, {} layer files; get_now at each page's newest LSN\n",
        tl.layers().len()
    );
    println!("| deltas to apply | gets | p50 (µs) | p99 (µs) | mean (µs) |\n|---|---|---|---|---|");
    let mut x = SEED;
    for (g, &d) in DELTAS.iter().enumerate() {
        // The expected page of block b: its image, then its patches, applied here.
        let expect = |b: u32| {
            let seed = u64::from(b) << 8 | g as u64;
            let last = newest[g][b as usize];
            let first = last - d;
            let mut p = image(seed, first).to_vec();
            for l in first + 1..=last {
                apply_patch(&mut p, &patch(seed, l), l).expect("patch");
            }
            p
        };
        let mut pick = || {
            x = mix(x);
            (x % u64::from(pages)) as u32
        };
        // Untimed pass, every answer checked.
        for _ in 0..gets.min(pages as usize * 2) {
            let b = pick();
            let got = tl
                .get_now(&page_key(g as u32, b), Lsn(newest[g][b as usize]))
                .expect("get")
                .expect("page present");
            assert!(got[..] == expect(b)[..], "group {d}: page {b} differs");
        }
        let mut lat = Vec::with_capacity(gets);
        for n in 0..gets {
            let b = pick();
            let k = page_key(g as u32, b);
            let at = Lsn(newest[g][b as usize]);
            let t = Instant::now();
            let got = tl.get_now(&k, at).expect("get").expect("page present");
            lat.push(t.elapsed().as_nanos() as u32);
            if n % 97 == 0 {
                assert!(got[..] == expect(b)[..], "group {d}: page {b} differs");
            }
        }
        lat.sort_unstable();
        let mean = lat.iter().map(|&v| f64::from(v)).sum::<f64>() / lat.len() as f64 / 1e3;
        println!(
            "| {d} | {gets} | {:.2} | {:.2} | {mean:.2} |",
            q(&lat, 0.5),
            q(&lat, 0.99)
        );
    }
    drop(tl);
    futures::executor::block_on(store.close()).expect("close");
}

fn ingest(pages: u32, records: u64, commit_every: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_blocking(options(dir.path())).expect("open");
    let tl = futures::executor::block_on(store.create_timeline("main")).expect("timeline");
    let mut w = tl.writer().expect("writer");
    // Pre-made payloads, so that the timed loop measures the store.
    let images: Vec<Bytes> = (0..64).map(|i| image(i, i)).collect();
    let patches: Vec<Bytes> = (0..1024).map(|i| patch(i, i)).collect();
    let mut bytes = 0u64;
    let t = Instant::now();
    for i in 0..records {
        let lsn = 0x100 + i;
        let b = (i % u64::from(pages)) as u32;
        let nth = i / u64::from(pages);
        let k = page_key(0, b);
        let v = if nth % 20 == 0 {
            Value::image(images[(i % 64) as usize].clone())
        } else {
            Value::delta(patches[(i % 1024) as usize].clone())
        };
        bytes += 18
            + match &v {
                Value::Image(b) => b.len(),
                Value::Delta { record, .. } => record.len(),
                Value::Tombstone => 0,
            } as u64;
        w.put(&k, Lsn(lsn), v).expect("put");
        if (i + 1) % commit_every == 0 {
            w.finish_write(Lsn(lsn)).expect("finish_write");
        }
    }
    w.finish_write(Lsn(0x100 + records - 1))
        .expect("finish_write");
    let secs = t.elapsed().as_secs_f64();
    // A page read back after the ingest: the last image of page 0 and its deltas.
    let got = tl
        .get_now(&page_key(0, 0), Lsn(0x100 + records - 1))
        .expect("get");
    assert_eq!(got.map(|p| p.len()), Some(PAGE), "page 0 after the ingest");
    drop(w);
    drop(tl);
    futures::executor::block_on(store.close()).expect("close");
    (bytes as f64 / 1e6 / secs, records as f64 / secs)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let pages: u32 = std::env::var("STRATAKV_BENCH_PAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .max(1);
    let gets = (pages as usize * 20).min(50_000);
    get_page(pages, gets);
    let records = u64::from(pages) * 200;
    println!(
        "\ningest: {records} records over {pages} pages (one image per 20 records)\n\n\
         | commit | MB/s of WAL | records/s |\n|---|---|---|"
    );
    for every in [1, 100] {
        let (mbs, rps) = ingest(pages, records, every);
        println!("| every {every} records | {mbs:.0} | {:.0}k |", rps / 1e3);
    }
}
