//! Diff, change feed and merge figures (a plain `main` that prints them).
//!
//! Diff of a branch against its parent after 1,000 changed keys, over a parent of `N` keys
//! (16 B keys, 100 B values, flushed to layer files), keys-only and with values: the time
//! should not grow with `N`. Then the change feed's throughput from history and live, and a
//! merge of the 1,000 keys back into the parent.
//!
//! `cargo bench --bench diff` (sizes from `DIFF_BENCH_KEYS`, default `100000,1000000`).

use std::time::Instant;

use stratakv::{Lsn, Resolution, Store, StoreOptions, Value};

fn key(i: u64) -> Vec<u8> {
    format!("key{i:013}").into_bytes()
}

fn main() {
    let sizes: Vec<u64> = std::env::var("DIFF_BENCH_KEYS")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("a number of keys"))
        .collect();
    for n in sizes {
        run(n);
    }
}

fn run(n: u64) {
    let dir = tempfile::tempdir().unwrap();
    // No local WAL: the live feed figure is then the feed's, not the fsync rate of commits.
    let store = Store::open_blocking(
        StoreOptions::new(dir.path())
            .background_period(None)
            .wal(false),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let main = rt.block_on(store.create_timeline("main")).unwrap();
    let value = Value::image(vec![7u8; 100]);
    let mut w = main.writer().unwrap();
    let started = Instant::now();
    for chunk in 0..n.div_ceil(10_000) {
        let lsn = Lsn(chunk + 1);
        for i in chunk * 10_000..((chunk + 1) * 10_000).min(n) {
            w.put(&key(i), lsn, value.clone()).unwrap();
        }
        w.finish_write(lsn).unwrap();
    }
    let base = main.last_record_lsn();
    rt.block_on(main.flush()).unwrap();
    let ingest = started.elapsed();
    let dev = rt.block_on(store.branch("dev", &main, base)).unwrap();
    let mut d = dev.writer().unwrap();
    let changed = 1000u64;
    for i in 0..changed {
        d.put(
            &key(i * (n / changed)),
            Lsn(base.0 + 1 + i),
            Value::image(vec![9u8; 100]),
        )
        .unwrap();
        d.finish_write(Lsn(base.0 + 1 + i)).unwrap();
    }
    rt.block_on(dev.flush()).unwrap();
    let head = dev.last_record_lsn();
    let time = |keys_only: bool| {
        let rounds = 20;
        let t = Instant::now();
        for _ in 0..rounds {
            let mut diff = rt
                .block_on(main.diff::<&[u8]>(base, &dev, head, ..))
                .unwrap();
            let mut found = 0;
            if keys_only {
                while rt.block_on(diff.next_key()).unwrap().is_some() {
                    found += 1;
                }
            } else {
                while rt.block_on(diff.next()).unwrap().is_some() {
                    found += 1;
                }
            }
            assert_eq!(found, changed);
        }
        t.elapsed() / rounds
    };
    // An untimed pass first, so that neither mode pays for reading the blocks into the cache.
    time(true);
    let (k, v) = (time(true), time(false));
    println!(
        "diff, {n} keys ({ingest:.1?} to load), branch with {changed} changed keys: keys-only {k:.2?}, with values {v:.2?}"
    );
    // Feed from history: every write of the parent.
    let t = Instant::now();
    let mut feed = main.subscribe(Lsn(1)).unwrap();
    let (mut records, mut bytes) = (0u64, 0u64);
    while let Some(r) = feed.try_next().unwrap() {
        records += 1;
        bytes += (r.key.len() + 100) as u64;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "feed from history: {records} records in {s:.2}s: {:.0} records/s, {:.1} MB/s",
        records as f64 / s,
        bytes as f64 / s / 1e6
    );
    // Live: a writer thread commits one put at a time while the feed follows.
    let live = 200_000u64;
    let mut feed = dev.subscribe(head.next()).unwrap();
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        for i in 0..live {
            let lsn = Lsn(head.0 + 1 + i);
            d.put(&key(i), lsn, Value::image(vec![1u8; 100])).unwrap();
            d.finish_write(lsn).unwrap();
        }
        d
    });
    for _ in 0..live {
        feed.next_blocking().unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    let d = writer.join().unwrap();
    drop(d);
    println!(
        "feed live: {live} records in {s:.2}s: {:.0} records/s, {:.1} MB/s",
        live as f64 / s,
        (live * 116) as f64 / s / 1e6
    );
    // Merge the branch's changes back into the parent.
    let t = Instant::now();
    let report = rt
        .block_on(w.merge_from(
            &dev,
            dev.last_record_lsn(),
            Lsn(dev.last_record_lsn().0 + 1),
            |_| Resolution::TakeTheirs,
        ))
        .unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "merge: {} keys written in {s:.3}s: {:.0} keys/s",
        report.written,
        report.written as f64 / s
    );
    rt.block_on(store.close()).unwrap();
}
