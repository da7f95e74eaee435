//! Secondaries: replication lag under steady ingest, recovery time after the primary's death,
//! how long a planned switchover refuses commits, and read latency on a secondary against the
//! primary's.
//!
//! ```text
//! cargo bench --bench secondary                   # the local-folder object store, ~4 minutes
//! eval "$(.ci/object-stores.sh start)"            # moto (S3) on loopback; then also on moto
//! cargo bench --bench secondary
//! .ci/object-stores.sh stop
//! ```
//!
//! Runs on the local-file-system object store, and on S3 (moto) when `STRATAKV_S3_ENDPOINT` and
//! `STRATAKV_S3_BUCKET` are set. Every choice is printed beside the figures.
//!
//! | section | what is measured |
//! |---|---|
//! | lag | a primary commits 10 puts of 100-byte values (each put at its own LSN, so one LSN is one put) every 2 ms at `Durability::Local`, `STRATAKV_BENCH_SECS` (default 5) after 1 s of warm-up; a secondary follows with a poll interval of 100 ms and of 1 s (the default). Per commit, the time from its acknowledgement to the first status the secondary published with that LSN applied (median, p99, max); every 10 ms, the primary's `last_record_lsn` less the secondary's applied LSN (median, p99, max) |
//! | recovery | a child process commits a put at a time at `Durability::Remote` until it is killed with SIGKILL; a secondary (poll 100 ms) runs the supervisor (`promote_when_gone`); the time from the kill to the first commit acknowledged on the new primary, with the confirmation window at zero (the supervisor is started after the kill: a zero window calls a live owner gone too) and at its default (120 s, once: `STRATAKV_BENCH_DEFAULT_WINDOW=0` skips it). The promotion waits the claim grace (2 s by default) because the dead owner did not release its generation. Every LSN the child acknowledged is read back on the new primary |
//! | switchover | a primary commits a put at a time at `Durability::Remote` from a writer thread; `close` is called on it, the secondary promotes at once, and a commit is made on the new primary: the time from the first refused commit to the new primary's first acknowledged one (the writes refused), and the close and the promotion alone |
//! | reads | 50,000 keys written 4 times (200,000 puts, 100-byte values), flushed and uploaded, the secondary caught up, every key read once on both to warm them; then `get_blocking` at a random LSN of the last two rounds on a random key, 200,000 times on each, in alternating blocks of 10,000: median, p99 and mean |
//!
//! Options are the defaults of `StoreOptions`, `RemoteStorage` and `SecondaryOptions` except where
//! printed: `heartbeat_interval` 1 s, `remote_wal_interval` 100 ms, the fsync policy
//! `EveryCommit`, the claim grace 2 s, the confirmation window 120 s.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use stratakv::remote::RemoteStorage;
use stratakv::{
    Durability, ErrorKind, Lsn, Promotion, Secondary, SecondaryOptions, Store, StoreOptions, Value,
};

mod common;
use common::{env_f64, loadavg, percentile, tempdir};

const VALUE: usize = 100;
const PUTS_PER_COMMIT: u64 = 10;
const COMMIT_EVERY: Duration = Duration::from_millis(2);
const READ_KEYS: u64 = 50_000;
const READ_ROUNDS: u64 = 4;
const READS: usize = 200_000;
const READ_BLOCK: usize = 10_000;

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(b"key/0000");
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// A 100-byte value that names its key and LSN, so a read can be checked.
fn value(i: u64, lsn: u64) -> Vec<u8> {
    let mut v = format!("{i}@{lsn}/").into_bytes();
    v.resize(VALUE, b'.');
    v
}

/// xorshift64*: the bench's random numbers, seeded.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Where the object store is: a child process builds the same one from this.
#[derive(Clone)]
enum Where {
    Local(std::path::PathBuf),
    S3 { endpoint: String, bucket: String },
}

impl Where {
    fn name(&self) -> &'static str {
        match self {
            Where::Local(_) => "local-fs",
            Where::S3 { .. } => "s3-moto",
        }
    }

    fn about(&self) -> &'static str {
        match self {
            Where::Local(_) => {
                "object_store's LocalFileSystem in a temporary directory on the same disk"
            }
            Where::S3 { .. } => "moto (S3 API, in memory) on loopback, on the same 2 cores",
        }
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        match self {
            Where::Local(dir) => Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap()),
            Where::S3 { endpoint, bucket } => common::moto(endpoint, bucket),
        }
    }

    fn remote(&self, prefix: &str) -> RemoteStorage {
        RemoteStorage::new(self.store(), Path::from(prefix))
    }

    /// The environment a child process reads it back from.
    fn to_env(&self) -> Vec<(&'static str, String)> {
        match self {
            Where::Local(dir) => vec![("STRATAKV_BENCH_CHILD_LOCAL", dir.display().to_string())],
            Where::S3 { endpoint, bucket } => vec![
                ("STRATAKV_BENCH_CHILD_S3_ENDPOINT", endpoint.clone()),
                ("STRATAKV_BENCH_CHILD_S3_BUCKET", bucket.clone()),
            ],
        }
    }

    fn from_env() -> Where {
        match std::env::var("STRATAKV_BENCH_CHILD_LOCAL") {
            Ok(dir) => Where::Local(dir.into()),
            Err(_) => Where::S3 {
                endpoint: std::env::var("STRATAKV_BENCH_CHILD_S3_ENDPOINT").unwrap(),
                bucket: std::env::var("STRATAKV_BENCH_CHILD_S3_BUCKET").unwrap(),
            },
        }
    }
}

fn unique(what: &str) -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench-secondary-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1e3;
    if m < 10.0 {
        format!("{m:.2} ms")
    } else {
        format!("{m:.0} ms")
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// Replication lag under steady ingest, for one poll interval.
fn lag(place: &Where, poll: Duration, secs: Duration) {
    let remote = place.remote(&unique("lag"));
    let (pdir, sdir) = (tempdir(), tempdir());
    let primary =
        Store::open_blocking(StoreOptions::new(pdir.path()).remote(remote.clone())).unwrap();
    let tl = block_on(primary.create_timeline("main")).unwrap();
    let secondary = Secondary::open(
        SecondaryOptions::new(StoreOptions::new(sdir.path()).remote(remote)).poll_interval(poll),
    )
    .unwrap();

    // Every status the secondary publishes: the applied LSN and when.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let watcher = {
        let mut rx = secondary.subscribe();
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let applied = rx
                    .borrow_and_update()
                    .applied
                    .get("main")
                    .map_or(0, |l| l.0);
                seen.lock().unwrap().push((applied, Instant::now()));
                if block_on(rx.changed()).is_err() {
                    break;
                }
            }
        })
    };
    // The primary's newest LSN less the secondary's, every 10 ms.
    let gaps: Arc<Mutex<Vec<u64>>> = Arc::default();
    let measuring = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, gaps, measuring, tl) =
            (stop.clone(), gaps.clone(), measuring.clone(), tl.clone());
        let seen = seen.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10));
                if measuring.load(Ordering::Acquire) {
                    let head = tl.last_record_lsn().0;
                    let applied = seen.lock().unwrap().last().map_or(0, |s| s.0);
                    gaps.lock().unwrap().push(head.saturating_sub(applied));
                }
            }
        })
    };

    let warmup = Duration::from_secs(1);
    let mut commits: Vec<(u64, Instant)> = Vec::new();
    let mut w = tl.writer().unwrap();
    let mut lsn = 0u64;
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < warmup + secs {
        if start.elapsed() >= warmup {
            measuring.store(true, Ordering::Release);
        }
        for _ in 0..PUTS_PER_COMMIT {
            lsn += 1;
            w.put(&key(lsn % 10_000), Lsn(lsn), Value::image(value(lsn, lsn)))
                .unwrap();
        }
        w.finish_write(Lsn(lsn)).unwrap();
        if start.elapsed() >= warmup {
            commits.push((lsn, Instant::now()));
        }
        next += COMMIT_EVERY;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    measuring.store(false, Ordering::Release);
    let last = lsn;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().last().map_or(0, |s| s.0) < last {
        assert!(
            Instant::now() < deadline,
            "the secondary did not reach LSN {last} within 30 s of the last commit"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Release);
    let seen = seen.lock().unwrap().clone();
    // Per commit: the first status at or after it with its LSN applied.
    let mut lags = Vec::with_capacity(commits.len());
    let mut j = 0;
    for (lsn, at) in &commits {
        while j < seen.len() && (seen[j].0 < *lsn || seen[j].1 < *at) {
            j += 1;
        }
        let (_, applied_at) = seen[j.min(seen.len() - 1)];
        lags.push(applied_at.saturating_duration_since(*at));
    }
    lags.sort();
    let mut gaps = gaps.lock().unwrap().clone();
    gaps.sort();
    println!(
        "| {} | {} | {} | {} / {} / {} | {} / {} / {} |",
        place.name(),
        ms(poll),
        commits.len(),
        ms(percentile(&lags, 0.5)),
        ms(percentile(&lags, 0.99)),
        ms(*lags.last().unwrap()),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.last().copied().unwrap_or(0),
    );
    drop(w);
    secondary.close();
    watcher.join().unwrap();
    sampler.join().unwrap();
    block_on(primary.close()).unwrap();
}

/// The child process of the recovery section: a primary committing at the remote level, a
/// put per commit, printing each acknowledged LSN, until it is killed.
fn child() {
    let place = Where::from_env();
    let prefix = std::env::var("STRATAKV_BENCH_CHILD_PREFIX").unwrap();
    let dir = std::env::var("STRATAKV_BENCH_CHILD_DIR").unwrap();
    let store = Store::open_blocking(
        StoreOptions::new(&dir)
            .remote(place.remote(&prefix))
            .node_id("primary")
            .durability(Durability::Remote),
    )
    .unwrap();
    let tl = block_on(store.create_timeline("main")).unwrap();
    println!("ready");
    let mut w = tl.writer().unwrap();
    for lsn in 1.. {
        w.put(&key(lsn), Lsn(lsn), Value::image(value(lsn, lsn)))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
        println!("acked {lsn}");
    }
}

/// One failover: a child primary killed, the secondary's supervisor promoting. Returns the
/// time from the kill to the first commit on the new primary and the claim wait.
fn recover_once(place: &Where, window: Duration) -> (Duration, Duration, usize) {
    let prefix = unique("recovery");
    let (pdir, sdir) = (tempdir(), tempdir());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .envs(place.to_env())
        .env("STRATAKV_BENCH_CHILD_PREFIX", &prefix)
        .env("STRATAKV_BENCH_CHILD_DIR", pdir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for line in lines {
                let Ok(line) = line else { break };
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if let Some(lsn) = line.strip_prefix("acked ") {
                    acked.lock().unwrap().push(lsn.trim().parse().unwrap());
                }
            }
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the child primary started");
    let secondary = Arc::new(
        Secondary::open(
            SecondaryOptions::new(
                StoreOptions::new(sdir.path())
                    .remote(place.remote(&prefix))
                    .node_id("secondary"),
            )
            .poll_interval(Duration::from_millis(100))
            .confirm_after(window),
        )
        .unwrap(),
    );
    let supervise = {
        let secondary = secondary.clone();
        move || secondary.promote_when_gone(Promotion::default())
    };
    // A zero window calls a live owner gone: that supervisor starts after the kill.
    let early = (!window.is_zero()).then(|| std::thread::spawn(supervise.clone()));
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    child.wait().unwrap();
    reader.join().unwrap();
    let supervisor = early.unwrap_or_else(|| std::thread::spawn(supervise));
    let new = supervisor.join().unwrap().expect("promotion");
    let main = new.timeline("main").unwrap();
    let mut w = main.writer().unwrap();
    let next = main.last_record_lsn().0 + 1;
    w.put(&key(next), Lsn(next), Value::image(value(next, next)))
        .unwrap();
    w.finish_write_with(Lsn(next), Durability::Remote).unwrap();
    let recovered = killed.elapsed();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the child acknowledged nothing");
    for lsn in &acked {
        assert_eq!(
            main.get_blocking(&key(*lsn), Lsn(next)).unwrap().as_deref(),
            Some(&value(*lsn, *lsn)[..]),
            "acknowledged LSN {lsn} is on the new primary"
        );
    }
    let claim_wait = new.claim_wait();
    drop(w);
    block_on(new.close()).unwrap();
    (recovered, claim_wait, acked.len())
}

fn recovery(place: &Where) {
    let reps = env_f64("STRATAKV_BENCH_RECOVERY_REPS", 5.0) as usize;
    let mut windows = vec![(Duration::ZERO, reps)];
    if env_f64("STRATAKV_BENCH_DEFAULT_WINDOW", 1.0) != 0.0 {
        windows.push((Duration::from_secs(120), 1));
    }
    for (window, reps) in windows {
        let mut runs: Vec<(Duration, Duration, usize)> =
            (0..reps).map(|_| recover_once(place, window)).collect();
        runs.sort();
        let all: Vec<String> = runs.iter().map(|r| ms(r.0)).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            place.name(),
            ms(window),
            reps,
            ms(runs[runs.len() / 2].0),
            all.join(", "),
            runs.iter()
                .map(|r| format!("{} ({} acked)", ms(r.1), r.2))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// One planned switchover with a writer committing at the remote level.
fn switchover_once(place: &Where) -> (Duration, Duration, Duration, usize) {
    let remote = place.remote(&unique("switchover"));
    let (pdir, sdir) = (tempdir(), tempdir());
    let primary = Store::open_blocking(
        StoreOptions::new(pdir.path())
            .remote(remote.clone())
            .durability(Durability::Remote),
    )
    .unwrap();
    let tl = block_on(primary.create_timeline("main")).unwrap();
    let secondary = Secondary::open(
        SecondaryOptions::new(StoreOptions::new(sdir.path()).remote(remote))
            .poll_interval(Duration::from_millis(100)),
    )
    .unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = tl.writer().unwrap();
        let mut acked = BTreeSet::new();
        for lsn in 1.. {
            let r = w
                .put(&key(lsn), Lsn(lsn), Value::image(value(lsn, lsn)))
                .and_then(|()| w.finish_write(Lsn(lsn)));
            match r {
                Ok(()) => {
                    acked.insert(lsn);
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
                    return (Instant::now(), acked);
                }
            }
        }
        unreachable!()
    });
    std::thread::sleep(Duration::from_secs(1));
    let closing = Instant::now();
    block_on(primary.close()).unwrap();
    let closed = closing.elapsed();
    let (refused_from, acked) = writer.join().unwrap();
    let promoting = Instant::now();
    let new = secondary.promote(Promotion::default()).unwrap();
    let promoted = promoting.elapsed();
    let main = new.timeline("main").unwrap();
    let mut w = main.writer().unwrap();
    let next = main.last_record_lsn().0 + 1;
    w.put(&key(next), Lsn(next), Value::image(value(next, next)))
        .unwrap();
    w.finish_write_with(Lsn(next), Durability::Remote).unwrap();
    let refused = refused_from.elapsed();
    for lsn in &acked {
        assert_eq!(
            main.get_blocking(&key(*lsn), Lsn(next)).unwrap().as_deref(),
            Some(&value(*lsn, *lsn)[..]),
            "acknowledged LSN {lsn} is on the new primary"
        );
    }
    drop(w);
    block_on(new.close()).unwrap();
    (refused, closed, promoted, acked.len())
}

fn switchover(place: &Where) {
    let reps = env_f64("STRATAKV_BENCH_RECOVERY_REPS", 5.0) as usize;
    let mut runs: Vec<_> = (0..reps).map(|_| switchover_once(place)).collect();
    runs.sort();
    let m = &runs[runs.len() / 2];
    println!(
        "| {} | {} | {} | {} | {} | {} |",
        place.name(),
        reps,
        ms(m.0),
        runs.iter().map(|r| ms(r.0)).collect::<Vec<_>>().join(", "),
        ms(m.1),
        ms(m.2),
    );
}

/// Hot reads on the primary and on a caught-up secondary, same data, same run.
fn reads(place: &Where) {
    let remote = place.remote(&unique("reads"));
    let (pdir, sdir) = (tempdir(), tempdir());
    let primary =
        Store::open_blocking(StoreOptions::new(pdir.path()).remote(remote.clone())).unwrap();
    let tl = block_on(primary.create_timeline("main")).unwrap();
    let mut w = tl.writer().unwrap();
    let mut lsn = 0;
    for _ in 0..READ_ROUNDS {
        for i in 0..READ_KEYS {
            lsn += 1;
            w.put(&key(i), Lsn(lsn), Value::image(value(i, lsn)))
                .unwrap();
            if lsn % 1000 == 0 {
                w.finish_write(Lsn(lsn)).unwrap();
            }
        }
    }
    w.finish_write(Lsn(lsn)).unwrap();
    block_on(tl.flush()).unwrap();
    block_on(primary.wait_for_upload()).unwrap();
    let secondary = Secondary::open(
        SecondaryOptions::new(StoreOptions::new(sdir.path()).remote(remote))
            .poll_interval(Duration::from_millis(100)),
    )
    .unwrap();
    let status = secondary.catch_up().unwrap();
    assert_eq!(status.applied.get("main"), Some(&Lsn(lsn)), "{status:?}");
    let stl = secondary.timeline("main").unwrap();
    let last = Lsn(lsn);
    for i in 0..READ_KEYS {
        let want = value(i, (READ_ROUNDS - 1) * READ_KEYS + i + 1);
        assert_eq!(tl.get_blocking(&key(i), last).unwrap().unwrap(), want);
        assert_eq!(stl.get_blocking(&key(i), last).unwrap().unwrap(), want);
    }
    // Reads at a random LSN of the last two rounds: the version of round r of key i is at
    // r * READ_KEYS + i + 1.
    let from = (READ_ROUNDS - 2) * READ_KEYS + 1;
    let mut rng = Rng(0x5eed);
    let mut times = [Vec::with_capacity(READS), Vec::with_capacity(READS)];
    for block in 0..(2 * READS / READ_BLOCK) {
        let side = block % 2;
        let t = if side == 0 { &tl } else { &stl };
        for _ in 0..READ_BLOCK {
            let i = rng.below(READ_KEYS);
            let at = from + rng.below(lsn - from + 1);
            let start = Instant::now();
            let got = t.get_blocking(&key(i), Lsn(at)).unwrap();
            times[side].push(start.elapsed());
            // The newest version of key i at or below `at`.
            let round = (at - i - 1) / READ_KEYS;
            assert_eq!(
                got.as_deref(),
                Some(&value(i, round * READ_KEYS + i + 1)[..])
            );
        }
    }
    let ns = |d: Duration| format!("{:.2} µs", d.as_secs_f64() * 1e6);
    for (side, name) in ["primary", "secondary"].iter().enumerate() {
        let t = &mut times[side];
        t.sort();
        let mean = t.iter().sum::<Duration>() / t.len() as u32;
        println!(
            "| {} | {name} | {} | {} | {} | {} |",
            place.name(),
            t.len(),
            ns(percentile(t, 0.5)),
            ns(percentile(t, 0.99)),
            ns(mean)
        );
    }
    drop(stl);
    secondary.close();
    drop(w);
    block_on(primary.close()).unwrap();
}

fn run(place: &Where) {
    let secs = Duration::from_secs_f64(env_f64("STRATAKV_BENCH_SECS", 5.0));
    let sections = std::env::var("STRATAKV_BENCH_SECTIONS")
        .unwrap_or_else(|_| "lag,recovery,switchover,reads".to_string());
    let t = Instant::now();
    println!(
        "\n# {} ({}): load average {} at the start",
        place.name(),
        place.about(),
        loadavg()
    );
    for section in sections.split(',') {
        match section.trim() {
            "lag" => {
                println!(
                    "\n## lag: a commit of {PUTS_PER_COMMIT} puts every {} at Local for {}\n\n| backend | poll | commits | commit → applied: median / p99 / max | primary − applied (LSN = puts): median / p99 / max |\n|---|---|---|---|---|",
                    ms(COMMIT_EVERY),
                    ms(secs)
                );
                for poll in [Duration::from_millis(100), Duration::from_secs(1)] {
                    lag(place, poll, secs);
                }
            }
            "recovery" => {
                println!(
                    "\n## recovery: SIGKILL of the primary → first commit on the promoted secondary\n\n| backend | confirmation window | runs | median | each run | claim wait of the promotion |\n|---|---|---|---|---|---|"
                );
                recovery(place);
            }
            "switchover" => {
                println!(
                    "\n## switchover: close the primary, promote, commit\n\n| backend | runs | writes refused: median | each run | close | promote |\n|---|---|---|---|---|---|"
                );
                switchover(place);
            }
            "reads" => {
                println!(
                    "\n## reads: get_blocking at a random LSN, hot, {READ_KEYS} keys × {READ_ROUNDS} versions\n\n| backend | on | gets | median | p99 | mean |\n|---|---|---|---|---|---|"
                );
                reads(place);
            }
            other => panic!(
                "STRATAKV_BENCH_SECTIONS: unknown section {other:?} (lag, recovery, switchover, reads)"
            ),
        }
    }
    println!(
        "\n{}: took {:.0} s; load average {} at the end",
        place.name(),
        t.elapsed().as_secs_f64(),
        loadavg()
    );
}

fn main() {
    if std::env::var_os("STRATAKV_BENCH_CHILD_PREFIX").is_some() {
        child();
        return;
    }
    println!(
        "secondary bench: {} cores; values {VALUE} B, keys 16 B, every put at its own LSN; defaults: heartbeat 1 s, remote_wal_interval 100 ms, fsync EveryCommit, claim grace 2 s",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let backends = std::env::var("STRATAKV_BENCH_BACKENDS").unwrap_or_else(|_| "local,s3".into());
    let dir = tempdir();
    if backends.split(',').any(|b| b.trim() == "local") {
        run(&Where::Local(dir.path().to_path_buf()));
    }
    if !backends.split(',').any(|b| b.trim() == "s3") {
        return;
    }
    match (
        std::env::var("STRATAKV_S3_ENDPOINT"),
        std::env::var("STRATAKV_S3_BUCKET"),
    ) {
        (Ok(endpoint), Ok(bucket)) => run(&Where::S3 { endpoint, bucket }),
        _ => println!("\n(s3-moto skipped: STRATAKV_S3_ENDPOINT / STRATAKV_S3_BUCKET not set)"),
    }
}
