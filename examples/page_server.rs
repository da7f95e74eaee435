//! A toy page server: 8 KiB pages, a redo hook of its own, one ingest thread and two readers
//! on plain threads with no async runtime (`cargo run --example page_server`).
//!
//! A page starts with a u64 counter (bytes 0..8) and the LSN of its last change (8..16, like
//! Postgres' `pd_lsn`). The ingest thread writes either a whole page (an image) or an 8-byte
//! delta "add N to the counter", which `CounterRedo` applies when a reader asks. The readers
//! read random pages at random published LSNs and check every byte against a formula.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::executor::block_on;
use stratakv::{Error, ErrorKind, FsyncPolicy, Lsn, RedoRecord, Result, Store, StoreOptions};
use stratakv::{Value, WalRedo};

const PAGE_SIZE: usize = 8192;
const PAGES: u64 = 64;
/// Record `i` (from 1) is at LSN `i * LSN_STEP` and changes page `(i - 1) % PAGES`.
const RECORDS: u64 = PAGES * 50;
const LSN_STEP: u64 = 0x10;
/// Every fifth write of a page is a whole page (an image); the others are deltas.
const IMAGE_EVERY: u64 = 5;

/// The redo hook: a delta record is an i64 (little-endian) to add to the page's counter; it
/// also stamps the record's LSN into the page header. The base is the newest image below.
struct CounterRedo;

impl WalRedo for CounterRedo {
    fn apply(&self, key: &[u8], base: Option<Bytes>, recs: &[RedoRecord]) -> Result<Bytes> {
        let bad = |what: &str| Error::new(ErrorKind::Redo, format!("{key:?}: {what}"));
        let mut page = BytesMut::from(&base.ok_or_else(|| bad("no page image below"))?[..]);
        for r in recs {
            let delta = r.record[..].try_into().map_err(|_| bad("not 8 bytes"))?;
            let counter = header(&page)
                .0
                .wrapping_add_signed(i64::from_le_bytes(delta));
            page[0..8].copy_from_slice(&counter.to_le_bytes());
            page[8..16].copy_from_slice(&r.lsn.0.to_le_bytes());
        }
        Ok(page.freeze())
    }
}

/// A page's header: its counter and the LSN of its last change.
fn header(page: &[u8]) -> (u64, Lsn) {
    let word = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"));
    (word(0), Lsn(word(8)))
}

// The workload as formulas, so that a reader can work out any page at any LSN by itself.
// Write `n` (from 0) of page `p` is record `p + 1 + n * PAGES`.
fn lsn_of(p: u64, n: u64) -> Lsn {
    Lsn((p + 1 + n * PAGES) * LSN_STEP)
}
fn image_counter(p: u64, n: u64) -> u64 {
    p * 1_000_000 + n * 1_000
}
fn delta(p: u64, n: u64) -> i64 {
    ((p * 31 + n * 17) % 21) as i64 - 10
}
fn page(counter: u64, lsn: Lsn, fill: u8) -> Vec<u8> {
    let mut page = vec![fill; PAGE_SIZE];
    page[0..8].copy_from_slice(&counter.to_le_bytes());
    page[8..16].copy_from_slice(&lsn.0.to_le_bytes());
    page
}
/// Page `p` as of `lsn`: its newest write at or below `lsn` and the image it builds on.
fn expected(p: u64, lsn: Lsn) -> Option<Vec<u8>> {
    let last = (lsn.0 / LSN_STEP).checked_sub(p + 1)? / PAGES; // None: not written yet
    let image = last - last % IMAGE_EVERY;
    let counter = (image + 1..=last).fold(image_counter(p, image), |c, n| {
        c.wrapping_add_signed(delta(p, n))
    });
    Some(page(counter, lsn_of(p, last), (p + image) as u8))
}
fn key(p: u64) -> Vec<u8> {
    format!("rel/16384/page/{p:06}").into_bytes()
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = Store::open_blocking(
        StoreOptions::new(dir.path())
            .redo(Arc::new(CounterRedo))
            .freeze_bytes(1 << 20) // small in-memory layers: flushes happen while readers read
            .fsync_policy(FsyncPolicy::Interval(Duration::from_millis(100))),
    )?;
    let tl = block_on(store.create_timeline("main"))?; // async calls need no runtime either
    let (started, end) = (Instant::now(), Lsn(RECORDS * LSN_STEP));

    // The ingest thread: one WAL record at a time, each published as soon as it is written.
    let writer = tl.clone();
    let ingest = std::thread::spawn(move || -> Result<()> {
        let mut w = writer.writer()?;
        for i in 1..=RECORDS {
            let (p, n) = ((i - 1) % PAGES, (i - 1) / PAGES);
            let lsn = lsn_of(p, n);
            let value = if n % IMAGE_EVERY == 0 {
                Value::image(page(image_counter(p, n), lsn, (p + n) as u8))
            } else {
                Value::delta(delta(p, n).to_le_bytes().to_vec())
            };
            w.put(&key(p), lsn, value)?;
            w.finish_write(lsn)?; // readers see `lsn` from here on
        }
        Ok(())
    });

    // Two readers: a random page at a random LSN up to what is published, checked against the
    // formula; they stop 2,000 reads after the last LSN is published.
    let readers: Vec<_> = (0..2u64)
        .map(|t| {
            let tl = tl.clone();
            std::thread::spawn(move || -> Result<u64> {
                let mut rng = t; // a linear congruential generator: enough for a demo
                let mut next = move || {
                    rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    rng >> 16
                };
                let (mut reads, mut after_end) = (0, 0);
                while after_end < 2_000 {
                    // At first nothing is published: a read at LSN 1 waits until it is.
                    let published = tl.last_record_lsn().max(Lsn(1));
                    after_end += u64::from(published == end);
                    let (p, lsn) = (next() % PAGES, Lsn(1 + next() % published.0));
                    let (got, want) = (tl.get_blocking(&key(p), lsn)?, expected(p, lsn));
                    assert!(
                        got.as_deref() == want.as_deref(),
                        "page {p} at {lsn}: got (counter, page LSN) {:?}, expected {:?}",
                        got.as_deref().map(header),
                        want.as_deref().map(header)
                    );
                    reads += 1;
                }
                Ok(reads)
            })
        })
        .collect();

    ingest.join().expect("the ingest thread panicked")?;
    let (last, took) = (tl.last_record_lsn(), started.elapsed());
    println!("ingested {RECORDS} records (images and deltas) up to LSN {last} in {took:.2?}");
    for (t, r) in readers.into_iter().enumerate() {
        let reads = r.join().expect("a reader panicked")?;
        println!("reader {t}: {reads} reads at random LSNs, each equal to the model's page");
    }

    // After a flush everything is in layer files; check the newest version of every page.
    let on_disk = block_on(tl.flush())?;
    for p in 0..PAGES {
        let got = tl.get_blocking(&key(p), on_disk)?;
        assert_eq!(got.as_deref(), expected(p, on_disk).as_deref(), "page {p}");
    }
    let layers = tl.layers();
    let bytes: u64 = layers.iter().map(|l| l.file_size).sum();
    println!(
        "flushed up to {on_disk}: {} layer file(s), {bytes} bytes; all pages checked",
        layers.len()
    );
    block_on(store.close())
}
