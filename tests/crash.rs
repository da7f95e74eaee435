//! Crash loop: a child process ingests with flushes, compaction and GC running, is killed with
//! SIGKILL at a random moment, and the store it leaves behind is checked against a model of
//! what the child had acknowledged.
//!
//! The child is this test binary itself, run with `STRATAKV_CRASH_CHILD=1` and filtered to
//! [`crash_child_process`]. What it writes at LSN `n` is a pure function of the seed and `n`
//! (see [`Model`]), so the parent rebuilds the expected state at any LSN without talking to
//! the child. After each acknowledged `finish_write` the child appends the LSN to an ack file
//! and fsyncs it: every LSN in that file was acknowledged as durable. Every other child commits
//! with `FsyncPolicy::Never`: a process crash loses nothing acknowledged under it either (the
//! WAL's pages, written or mapped, are the file's page cache).
//!
//! After each kill the parent reopens the store and checks that
//! - nothing acknowledged is lost: every acknowledged LSN is at or below `last_record_lsn`;
//! - nothing unacknowledged is half-visible: `last_record_lsn` is the end of a batch, at most
//!   the one batch in flight past the last acknowledged one, the whole key space read at it
//!   matches the model exactly, and nothing above it can be read;
//! - every read at every retained LSN (`gc_cutoff..=last_record_lsn`) of a sample of keys, and
//!   scans at a few of them, match the model.
//!
//! `STRATAKV_CRASH_CYCLES` (default 20) sets the number of kills; `STRATAKV_CRASH_SEED` the
//! seed. `.ci/crash-loop.sh` runs 1,000 cycles in release.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratakv::{ErrorKind, FsyncPolicy, LayerKind, Lsn, SimpleRedo, Store, StoreOptions, Value};

use common::env::env_u64;
use common::rng::Rng;

const CHILD_ENV: &str = "STRATAKV_CRASH_CHILD";
const DIR_ENV: &str = "STRATAKV_CRASH_DIR";
const ACK_ENV: &str = "STRATAKV_CRASH_ACK";
const SEED_ENV: &str = "STRATAKV_CRASH_SEED";
const CYCLES_ENV: &str = "STRATAKV_CRASH_CYCLES";
/// Set for the child to commit without fsyncs (`FsyncPolicy::Never`): a process crash must
/// lose nothing even so, the WAL's pages being the file's.
const NO_FSYNC_ENV: &str = "STRATAKV_CRASH_NO_FSYNC";
const DEFAULT_SEED: u64 = 0x5EED_C0DE_2024;
const DEFAULT_CYCLES: u64 = 20;
/// What the child prints once the store is open and it starts writing.
const READY: &str = "STRATAKV-CRASH-CHILD-READY";
/// A child still running this long after it started was orphaned: it exits.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// Keys the child writes: `key/0000` to `key/0299`.
const KEYS: usize = 300;
/// History kept readable behind `last_record_lsn`.
const GC_HORIZON: u64 = 1200;
/// Keys read at every retained LSN after each kill.
const SAMPLED_KEYS: usize = 6;

const SALT_BATCH: u64 = 0xBA7C_4E4D;
const SALT_OPS: u64 = 0x0975_1DEA;

// ---------------------------------------------------------------------------------------------
// Deterministic generator and model
// ---------------------------------------------------------------------------------------------

fn lsn_rng(seed: u64, lsn: u64, salt: u64) -> Rng {
    let mut r = Rng::new(seed ^ salt ^ lsn.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    r.next();
    r
}

/// Whether the child calls `finish_write` after its puts at `lsn`: batches span 1 to a few LSNs.
fn is_batch_end(seed: u64, lsn: u64) -> bool {
    lsn_rng(seed, lsn, SALT_BATCH).below(3) == 0
}

/// The first batch end after `lsn`.
fn next_batch_end(seed: u64, lsn: u64) -> u64 {
    (lsn + 1..)
        .find(|&l| is_batch_end(seed, l))
        .expect("a batch end")
}

fn key(i: usize) -> Vec<u8> {
    format!("key/{i:04}").into_bytes()
}

/// One put the child makes.
#[derive(Debug)]
enum Op {
    Image(Vec<u8>),
    /// A delta appending bytes (`SimpleRedo::append`) on top of the live value.
    Append(Vec<u8>),
    /// A `will_init` delta setting the value (`SimpleRedo::set`).
    InitSet(Vec<u8>),
    Tombstone,
}

impl Op {
    fn value(&self) -> Value {
        match self {
            Op::Image(b) => Value::image(b.clone()),
            Op::Append(b) => Value::delta(SimpleRedo::append(b)),
            Op::InitSet(b) => Value::init_delta(SimpleRedo::set(b)),
            Op::Tombstone => Value::Tombstone,
        }
    }

    fn apply(&self, current: Option<&Bytes>) -> Option<Bytes> {
        match self {
            Op::Image(b) | Op::InitSet(b) => Some(Bytes::copy_from_slice(b)),
            Op::Append(b) => {
                let mut v = current.expect("appends only to live keys").to_vec();
                v.extend_from_slice(b);
                Some(v.into())
            }
            Op::Tombstone => None,
        }
    }
}

/// One key's versions, `(lsn, value)` oldest first; `None` for a tombstone.
type KeyHistory = Vec<(u64, Option<Bytes>)>;

/// The expected contents of the store: what the child writes at each LSN, derived from the seed
/// and the LSN alone (the choice between a delta and an image depends on whether the key is
/// live, which is itself a function of the earlier LSNs).
struct Model {
    seed: u64,
    /// The last LSN generated.
    lsn: u64,
    current: Vec<Option<Bytes>>,
    /// Per key: `(lsn, value)` oldest first; `None` when history is not kept (in the child).
    history: Option<Vec<KeyHistory>>,
}

impl Model {
    fn new(seed: u64, keep_history: bool) -> Model {
        Model {
            seed,
            lsn: 0,
            current: vec![None; KEYS],
            history: keep_history.then(|| vec![Vec::new(); KEYS]),
        }
    }

    fn ops_for(&self, lsn: u64) -> Vec<(usize, Op)> {
        let mut r = lsn_rng(self.seed, lsn, SALT_OPS);
        let n = 1 + r.below(4) as usize;
        let mut keys: Vec<usize> = Vec::with_capacity(n);
        while keys.len() < n {
            let k = r.below(KEYS as u64) as usize;
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys.into_iter()
            .map(|k| {
                let live = self.current[k].as_ref();
                let roll = r.below(100);
                let op = if roll < 8 && live.is_some() {
                    Op::Tombstone
                } else if roll < 50 && live.is_some_and(|v| v.len() < 2048) {
                    let n = 4 + r.below(28) as usize;
                    Op::Append(r.bytes(n))
                } else if roll < 58 {
                    let n = 8 + r.below(120) as usize;
                    Op::InitSet(r.bytes(n))
                } else {
                    let n = if r.below(40) == 0 {
                        3000
                    } else {
                        16 + r.below(240) as usize
                    };
                    Op::Image(r.bytes(n))
                };
                (k, op)
            })
            .collect()
    }

    /// Generates and applies the puts of the next LSN; returns it and them.
    fn advance(&mut self) -> (u64, Vec<(usize, Op)>) {
        let lsn = self.lsn + 1;
        let ops = self.ops_for(lsn);
        for (k, op) in &ops {
            let v = op.apply(self.current[*k].as_ref());
            if let Some(h) = &mut self.history {
                h[*k].push((lsn, v.clone()));
            }
            self.current[*k] = v;
        }
        self.lsn = lsn;
        (lsn, ops)
    }

    fn advance_to(&mut self, lsn: u64) {
        assert!(
            lsn >= self.lsn,
            "the model cannot go back from {} to {lsn}",
            self.lsn
        );
        while self.lsn < lsn {
            self.advance();
        }
    }

    fn value_at(&self, k: usize, lsn: u64) -> Option<&Bytes> {
        let h = &self.history.as_ref().expect("history")[k];
        let i = h.partition_point(|(l, _)| *l <= lsn);
        i.checked_sub(1).and_then(|i| h[i].1.as_ref())
    }

    /// Every live key and its value at `lsn`, in key order.
    fn scan_at(&self, lsn: u64) -> Vec<(Bytes, Bytes)> {
        (0..KEYS)
            .filter_map(|k| Some((Bytes::from(key(k)), self.value_at(k, lsn)?.clone())))
            .collect()
    }

    /// Forgets history no read at or above `cutoff` needs.
    fn prune_below(&mut self, cutoff: u64) {
        for h in self.history.as_mut().expect("history") {
            let i = h.partition_point(|(l, _)| *l <= cutoff);
            if i > 1 {
                h.drain(..i - 1);
            }
        }
    }
}

fn options(dir: &Path) -> StoreOptions {
    StoreOptions::new(dir)
        .fsync_policy(FsyncPolicy::EveryCommit)
        .freeze_bytes(64 << 10)
        .block_size(2048)
        .background_period(Some(Duration::from_millis(50)))
        .compaction_threshold(3)
        .target_layer_size(96 << 10)
        .image_threshold_bytes(192 << 10)
        .image_threshold_layers(3)
        .gc_horizon(Some(GC_HORIZON))
        .pitr_interval(None)
        .wal_segment_size(128 << 10)
}

// ---------------------------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------------------------

/// The child's side of the crash loop. Does nothing unless `STRATAKV_CRASH_CHILD` is set; then
/// it opens the store, resumes writing at `last_record_lsn + 1` and never returns: the parent
/// kills it.
#[test]
fn crash_child_process() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("STRATAKV_CRASH_DIR"));
    let ack_path = PathBuf::from(std::env::var_os(ACK_ENV).expect("STRATAKV_CRASH_ACK"));
    let seed = env_u64(SEED_ENV).expect("STRATAKV_CRASH_SEED");
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut opts = options(&dir);
        if std::env::var_os(NO_FSYNC_ENV).is_some() {
            opts = opts.fsync_policy(FsyncPolicy::Never);
        }
        let store = Store::open(opts).await.expect("child: open");
        let tl = match store.timeline("main") {
            Ok(tl) => tl,
            Err(e) if e.kind() == ErrorKind::NotFound => store
                .create_timeline("main")
                .await
                .expect("child: create_timeline"),
            Err(e) => panic!("child: timeline: {e}"),
        };
        let mut w = tl.writer().expect("child: writer");
        let mut model = Model::new(seed, false);
        model.advance_to(tl.last_record_lsn().0);
        let mut ack = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ack_path)
            .expect("child: ack file");
        println!("{READY}");
        std::io::stdout().flush().expect("child: stdout");
        loop {
            if started.elapsed() > CHILD_DEADLINE {
                eprintln!("child: deadline passed without being killed; exiting");
                std::process::exit(3);
            }
            let (lsn, ops) = model.advance();
            for (k, op) in ops {
                w.put(&key(k), Lsn(lsn), op.value())
                    .unwrap_or_else(|e| panic!("child: put at {lsn}: {e}"));
            }
            if is_batch_end(seed, lsn) {
                w.finish_write(Lsn(lsn))
                    .unwrap_or_else(|e| panic!("child: finish_write at {lsn}: {e}"));
                // One write of a whole line, then fsync: a line in the file is an ack.
                ack.write_all(format!("{lsn}\n").as_bytes())
                    .expect("child: ack write");
                ack.sync_data().expect("child: ack fsync");
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Figures {
    cycles: u64,
    /// Kills before the child said it was ready (during open and recovery).
    early_kills: u64,
    acked_commits: u64,
    /// Times the reopened store held the batch in flight at the kill (durable, not yet acked).
    in_flight_recovered: u64,
    /// The most acknowledged LSNs missing after one reopen (must be 0).
    max_lost_acked: u64,
    reads_verified: u64,
    scans_verified: u64,
    max_l0: usize,
    max_l1: usize,
    max_images: usize,
    max_wal_segments: usize,
    last_record_lsn: u64,
    disk_consistent_lsn: u64,
    gc_cutoff: u64,
}

/// Spawns the child: this binary, filtered to `crash_child_process`.
fn spawn_child(
    dir: &Path,
    ack: &Path,
    seed: u64,
    stderr: &Path,
    no_fsync: bool,
) -> (Child, mpsc::Receiver<()>) {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr)
        .expect("child stderr file");
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    if no_fsync {
        command.env(NO_FSYNC_ENV, "1");
    }
    let mut child = command
        .args([
            "crash_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env(DIR_ENV, dir)
        .env(ACK_ENV, ack)
        .env(SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("spawning the crash child");
    let out = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            match line {
                Ok(l) if l.contains(READY) => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (child, rx)
}

/// The acknowledged LSNs: whole lines of the ack file.
fn read_acks(path: &Path) -> Vec<u64> {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        f.read_to_string(&mut s).expect("reading the ack file");
    }
    let whole = s.rfind('\n').map_or("", |i| &s[..i]);
    whole
        .lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("bad ack line {l:?}")))
        .collect()
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Reopens the store the child left and checks it against the model.
async fn verify(
    dir: &Path,
    model: &mut Model,
    acks: &[u64],
    prev: (u64, u64),
    rng: &mut Rng,
    figures: &mut Figures,
    cycle: u64,
) -> (u64, u64) {
    let seed = model.seed;
    let (prev_lrl, prev_cutoff) = prev;
    let store = Store::open(
        // No background work (a flush during replay kicks compaction and GC once there are
        // `compaction_threshold` L0 layers): the store must not change under the checks.
        options(dir)
            .background_period(None)
            .compaction_threshold(usize::MAX)
            .wait_lsn_timeout(Duration::from_millis(20)),
    )
    .await
    .unwrap_or_else(|e| panic!("cycle {cycle}: reopening after the kill: {e}"));
    let tl = match store.timeline("main") {
        Ok(tl) => tl,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            assert!(
                acks.is_empty(),
                "cycle {cycle}: the timeline is gone but {} commits were acknowledged",
                acks.len()
            );
            return (0, 0);
        }
        Err(e) => panic!("cycle {cycle}: timeline: {e}"),
    };
    let lrl = tl.last_record_lsn().0;
    let max_acked = acks.last().copied().unwrap_or(0);

    // Nothing acknowledged is lost.
    let lost = acks.iter().filter(|&&a| a > lrl).count() as u64;
    figures.max_lost_acked = figures.max_lost_acked.max(lost);
    assert_eq!(
        lost, 0,
        "cycle {cycle}: {lost} acknowledged commits lost: acknowledged up to {max_acked}, last_record_lsn {lrl}"
    );
    assert!(
        lrl >= prev_lrl,
        "cycle {cycle}: last_record_lsn went back from {prev_lrl} to {lrl}"
    );
    // Nothing unacknowledged is half-visible: only whole batches, at most the one in flight.
    assert!(
        lrl == 0 || is_batch_end(seed, lrl),
        "cycle {cycle}: last_record_lsn {lrl} is inside a batch"
    );
    // Past both the last ack and what an earlier reopen found, at most the one batch in flight.
    let base = max_acked.max(prev_lrl);
    let in_flight = next_batch_end(seed, base);
    assert!(
        lrl == base || lrl == in_flight,
        "cycle {cycle}: last_record_lsn {lrl} is past the batch in flight ({in_flight}) after the last ack {max_acked}"
    );
    if lrl > base {
        figures.in_flight_recovered += 1;
    }
    model.advance_to(lrl);

    let cutoff = tl.gc_cutoff().0;
    assert!(
        cutoff <= lrl,
        "cycle {cycle}: cutoff {cutoff} above last_record_lsn {lrl}"
    );
    assert!(
        cutoff >= prev_cutoff,
        "cycle {cycle}: the GC cutoff went back from {prev_cutoff} to {cutoff}"
    );

    // The whole key space at last_record_lsn, and nothing above it.
    let got = tl
        .scan::<&[u8]>(.., Lsn(lrl))
        .await
        .unwrap_or_else(|e| panic!("cycle {cycle}: scan at {lrl}: {e}"));
    let want = model.scan_at(lrl);
    if got != want {
        let gk: BTreeSet<_> = got.iter().map(|(k, _)| k.clone()).collect();
        let wk: BTreeSet<_> = want.iter().map(|(k, _)| k.clone()).collect();
        let differ: Vec<_> = got
            .iter()
            .filter(|(k, v)| want.iter().any(|(wk, wv)| wk == k && wv != v))
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        panic!(
            "cycle {cycle}: scan at last_record_lsn {lrl} differs from the model: extra keys {:?}, missing keys {:?}, other values at {:?}",
            gk.difference(&wk).collect::<Vec<_>>(),
            wk.difference(&gk).collect::<Vec<_>>(),
            differ
        );
    }
    figures.scans_verified += 1;
    let above = tl.get(&key(0), Lsn(lrl + 1)).await;
    assert!(
        matches!(&above, Err(e) if e.kind() == ErrorKind::LsnTimeout),
        "cycle {cycle}: a read above last_record_lsn {lrl} must wait and time out, got {above:?}"
    );

    // Every retained LSN for a sample of keys, and scans at a few of them.
    let lo = cutoff.max(1);
    if lrl >= lo {
        for _ in 0..SAMPLED_KEYS {
            let k = rng.below(KEYS as u64) as usize;
            let kb = key(k);
            for lsn in lo..=lrl {
                let v = tl
                    .get(&kb, Lsn(lsn))
                    .await
                    .unwrap_or_else(|e| panic!("cycle {cycle}: get key/{k:04} at {lsn}: {e}"));
                assert_eq!(
                    v.as_ref(),
                    model.value_at(k, lsn),
                    "cycle {cycle}: key/{k:04} at LSN {lsn} (cutoff {cutoff}, last_record_lsn {lrl})"
                );
                figures.reads_verified += 1;
            }
        }
        for _ in 0..2 {
            let lsn = lo + rng.below(lrl - lo + 1);
            let got = tl
                .scan::<&[u8]>(.., Lsn(lsn))
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: scan at {lsn}: {e}"));
            assert!(
                got == model.scan_at(lsn),
                "cycle {cycle}: scan at LSN {lsn} differs from the model"
            );
            figures.scans_verified += 1;
        }
    }
    if cutoff > 1 {
        let below = tl.get(&key(0), Lsn(cutoff - 1)).await;
        assert!(
            matches!(&below, Err(e) if e.kind() == ErrorKind::BelowGcCutoff),
            "cycle {cycle}: a read below the cutoff {cutoff} must be refused, got {below:?}"
        );
    }

    let layers = tl.layers();
    let count = |f: &dyn Fn(&stratakv::LayerDesc) -> bool| layers.iter().filter(|l| f(l)).count();
    figures.max_l0 = figures
        .max_l0
        .max(count(&|l| l.kind == LayerKind::Delta && l.level == 0));
    figures.max_l1 = figures
        .max_l1
        .max(count(&|l| l.kind == LayerKind::Delta && l.level == 1));
    figures.max_images = figures
        .max_images
        .max(count(&|l| l.kind == LayerKind::Image));
    figures.max_wal_segments = figures.max_wal_segments.max(store.wal_segments());
    figures.last_record_lsn = lrl;
    figures.disk_consistent_lsn = tl.disk_consistent_lsn().0;
    figures.gc_cutoff = cutoff;
    // Dropped without close, like the child: nothing is flushed on the way out.
    drop(tl);
    drop(store);
    model.prune_below(cutoff);
    (lrl, cutoff)
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_commit_and_exposes_no_partial_batch() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let cycles = env_u64(CYCLES_ENV).unwrap_or(DEFAULT_CYCLES);
    let seed = env_u64(SEED_ENV).unwrap_or(DEFAULT_SEED);
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("store");
    let ack = work.path().join("acks");
    let stderr = work.path().join("child-stderr.log");
    let mut rng = Rng::new(seed ^ 0xC4A5_11E5);
    let mut model = Model::new(seed, true);
    let mut figures = Figures::default();
    let mut prev = (0, 0);
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    for cycle in 0..cycles {
        // Every other child commits without fsyncs: a kill is a process crash, which loses
        // nothing acknowledged under either policy.
        let (mut child, ready) = spawn_child(&dir, &ack, seed, &stderr, cycle % 2 == 1);
        // One kill in ten lands during open and WAL replay; the rest while ingesting.
        let early = rng.below(10) == 0;
        if early {
            std::thread::sleep(Duration::from_millis(rng.below(40)));
            figures.early_kills += 1;
        } else {
            if ready.recv_timeout(Duration::from_secs(60)).is_err() {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "cycle {cycle}: the child never became ready ({status:?}); its stderr:\n{}",
                    tail(&stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20 + rng.below(480)));
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "cycle {cycle}: the child exited on its own ({status}); its stderr:\n{}",
                tail(&stderr)
            );
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaping the child");
        figures.cycles += 1;
        let acks = read_acks(&ack);
        figures.acked_commits = acks.len() as u64;
        assert!(
            acks.windows(2).all(|w| w[0] < w[1]),
            "cycle {cycle}: acknowledged LSNs are not increasing"
        );
        prev = rt.block_on(verify(
            &dir,
            &mut model,
            &acks,
            prev,
            &mut rng,
            &mut figures,
            cycle,
        ));
        if cycles > DEFAULT_CYCLES && (cycle + 1) % 50 == 0 {
            eprintln!(
                "crash loop: {} of {cycles} cycles, {} acknowledged commits, {} reads, {:.0} s",
                cycle + 1,
                figures.acked_commits,
                figures.reads_verified,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "crash loop: seed {seed:#x}, {} cycles ({} killed during open/replay) in {secs:.1} s\n\
         acknowledged commits: {}\n\
         max lost acknowledged commits: {}\n\
         in-flight batches found durable after the kill: {}\n\
         reads verified: {} gets + {} full scans\n\
         final: last_record_lsn {}, disk_consistent_lsn {}, gc_cutoff {}\n\
         max layers seen: {} L0, {} L1, {} image; max WAL segments {}",
        figures.cycles,
        figures.early_kills,
        figures.acked_commits,
        figures.max_lost_acked,
        figures.in_flight_recovered,
        figures.reads_verified,
        figures.scans_verified,
        figures.last_record_lsn,
        figures.disk_consistent_lsn,
        figures.gc_cutoff,
        figures.max_l0,
        figures.max_l1,
        figures.max_images,
        figures.max_wal_segments,
    );
    assert_eq!(figures.max_lost_acked, 0);
    assert!(figures.acked_commits > 0, "the child acknowledged nothing");
    if cycles >= DEFAULT_CYCLES {
        // The loop must have crashed the store through the paths it is meant to test.
        assert!(
            figures.disk_consistent_lsn > 0,
            "no flush happened: {figures:?}"
        );
        assert!(figures.max_l1 > 0, "no compaction happened: {figures:?}");
        assert!(figures.gc_cutoff > 0, "GC never advanced: {figures:?}");
    }
}
