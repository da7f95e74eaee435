//! Mirror lag under a steady ingest: a primary commits at a fixed rate on a local-folder object
//! store while a [`Mirror`] copies it into a second folder; for each commit, the time from its
//! acknowledgement until a mirror pass reports it mirrored, and the lag in LSN at each pass.
//! Printed as median and p99, for two mirror intervals.
//!
//! `cargo bench --bench mirror` (`STRATAKV_BENCH_SECONDS`, default 5, per interval;
//! `STRATAKV_BENCH_RATE`, default 2,000 commits per second).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use stratakv::remote::RemoteStorage;
use stratakv::{FsyncPolicy, Lsn, Mirror, MirrorOptions, Store, StoreOptions, Value};

fn folder_remote(dir: &std::path::Path) -> RemoteStorage {
    RemoteStorage::new(
        Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap()),
        Path::from("tenant"),
    )
}

fn percentile<T: Copy + Ord>(mut v: Vec<T>, p: f64) -> T {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn run(interval: Duration, seconds: u64, rate: u64) {
    let (src, dst, pdir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let primary = Store::open_blocking(
        StoreOptions::new(pdir.path())
            .remote(folder_remote(src.path()))
            .remote_wal_interval(Duration::from_millis(10))
            // The figure is the mirror's lag, not the local disk's fsync rate.
            .fsync_policy(FsyncPolicy::Never)
            .heartbeat_interval(Some(Duration::from_millis(100)))
            .pitr_interval(None)
            .gc_horizon(Some(100_000)),
    )
    .unwrap();
    let main = futures::executor::block_on(primary.create_timeline("main")).unwrap();
    let id = main.id();
    let mirror = Mirror::start(
        folder_remote(src.path()),
        folder_remote(dst.path()),
        MirrorOptions::new().interval(Some(interval)),
    )
    .unwrap();
    // Each pass's report: when, and what was mirrored.
    let passes: Arc<Mutex<Vec<(Instant, Lsn)>>> = Arc::default();
    let mut rx = mirror.subscribe();
    let recorder = {
        let passes = passes.clone();
        std::thread::spawn(move || {
            while futures::executor::block_on(rx.changed()).is_ok() {
                let m = rx
                    .borrow_and_update()
                    .timelines
                    .get(&id)
                    .map(|t| t.mirrored);
                if let Some(m) = m {
                    passes.lock().unwrap().push((Instant::now(), m));
                }
            }
        })
    };
    let mut commits: Vec<(Instant, Lsn)> = Vec::new();
    let mut w = main.writer().unwrap();
    let start = Instant::now();
    let every = Duration::from_secs(1) / rate as u32;
    let total = seconds * rate;
    for i in 1..=total {
        let due = start + every * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let lsn = Lsn(i);
        w.put(
            &(i % 10_000).to_be_bytes(),
            lsn,
            Value::image(vec![7u8; 100]),
        )
        .unwrap();
        w.finish_write(lsn).unwrap();
        commits.push((Instant::now(), lsn));
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    // Let the mirror catch up before reading the figures.
    std::thread::sleep(interval * 3 + Duration::from_millis(200));
    let status = mirror.status();
    // Dropping the mirror closes its status channel: the recorder returns.
    drop(mirror);
    recorder.join().unwrap();
    let passes = passes.lock().unwrap().clone();
    let mut delays = Vec::new();
    for (at, lsn) in commits.iter().step_by(10) {
        if let Some((seen, _)) = passes.iter().find(|(t, m)| t >= at && m >= lsn) {
            delays.push(seen.duration_since(*at));
        }
    }
    let mut lsn_lag = Vec::new();
    for (t, m) in &passes {
        let committed = commits.iter().take_while(|(c, _)| c <= t).last();
        if let Some((_, c)) = committed {
            lsn_lag.push(c.0.saturating_sub(m.0));
        }
    }
    println!(
        "mirror interval {interval:?}, {achieved:.0} commits/s (asked {rate}) for {seconds} s: commit → mirrored median {:?}, p99 {:?} ({} commits sampled); lag in LSN (commits) at a pass median {}, p99 {}; {} passes, {} objects / {} KiB copied",
        percentile(delays.clone(), 0.5),
        percentile(delays.clone(), 0.99),
        delays.len(),
        percentile(lsn_lag.clone(), 0.5),
        percentile(lsn_lag, 0.99),
        status.passes,
        status.copied_objects,
        status.copied_bytes >> 10
    );
    drop(w);
    futures::executor::block_on(primary.close()).unwrap();
}

fn main() {
    // criterion's harness passes flags such as --bench; this bench prints figures itself.
    let seconds = std::env::var("STRATAKV_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rate = std::env::var("STRATAKV_BENCH_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    for interval in [Duration::from_millis(50), Duration::from_millis(250)] {
        run(interval, seconds, rate);
    }
}
