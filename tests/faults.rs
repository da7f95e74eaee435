//! Fault injection through the I/O seam: every write, fsync, rename and file creation of a
//! workload fails in turn (and writes are torn at random lengths), each in a fresh store.
//!
//! The workload commits on two timelines and flushes, compacts, collects garbage, writes an
//! image layer, branches and reopens the store, all on the test's thread (no background work),
//! so a clean run performs the same operations in the same order every time. A clean run counts
//! the operations of each kind; then for each `i` (all of them, or a seeded sample where there
//! are many) a fresh store fails the `i`-th one. The store must then either
//! - report an error — after a failed fsync, every later call says `Poisoned` — and, reopened
//!   on the real file system, hold every commit acknowledged before the fault (and at most the
//!   one commit in flight), reading exactly as the model says at every LSN checked; or
//! - complete, reading exactly as the model says.
//!
//! After an error that does not poison the store, the workload goes on (the fault was a single
//! one): a transient failure must leave the store's last good state intact and usable.
//! Never wrong data, never a panic, never a hang.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stratakv::io::{FaultOp, FaultyFs, FileSystem, StdFs};
use stratakv::{
    Error, ErrorKind, FsyncPolicy, Lsn, SimpleRedo, Store, StoreOptions, Timeline, TimelineWriter,
    Value,
};

use common::rng::Rng;

const SEED: u64 = 0xFA17_5EED;
const KEYS: usize = 24;
/// Operations of one kind failed at most this many times per test (a seeded sample beyond).
const MAX_TRIALS: usize = 50;
/// A call that takes longer than this is a hang.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Works around the bug pinned by
/// `a_branch_that_fails_after_its_catalog_entry_is_written_is_half_created`: a branch whose
/// time index cannot be written returns an error but is already in the catalog, so it exists
/// after a reopen. While it stands, a failed branch may exist after reopen (and is then checked
/// like a created one). Set to `false` once the bug is fixed.
const TOLERATE_HALF_CREATED_BRANCH: bool = true;

fn key(i: usize) -> Vec<u8> {
    format!("k{i:02}").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// One timeline as the model knows it: its ancestor and its own committed versions.
#[derive(Clone, Debug, Default)]
struct TlModel {
    ancestor: Option<(String, u64)>,
    /// `(key, lsn) → value`, `None` for a tombstone.
    versions: BTreeMap<(Vec<u8>, u64), Option<Bytes>>,
    lrl: u64,
}

/// A commit that was asked for but not acknowledged: after a crash it may or may not be there.
#[derive(Clone, Debug)]
struct InFlight {
    timeline: String,
    lsn: u64,
    puts: Vec<(Vec<u8>, Option<Bytes>)>,
}

#[derive(Clone, Debug, Default)]
struct Model {
    timelines: BTreeMap<String, TlModel>,
    in_flight: Option<InFlight>,
    /// A branch whose creation failed: after a reopen it may or may not exist.
    maybe_branch: Option<(String, TlModel)>,
}

impl Model {
    fn get(&self, tl: &str, key: &[u8], lsn: u64) -> Option<Bytes> {
        let m = &self.timelines[tl];
        if let Some(((_, _), v)) = m
            .versions
            .range((key.to_vec(), 0)..=(key.to_vec(), lsn))
            .next_back()
        {
            return v.clone();
        }
        match &m.ancestor {
            Some((a, at)) => self.get(a, key, lsn.min(*at)),
            None => None,
        }
    }

    fn scan(&self, tl: &str, lsn: u64) -> Vec<(Bytes, Bytes)> {
        (0..KEYS)
            .filter_map(|k| Some((Bytes::from(key(k)), self.get(tl, &key(k), lsn)?)))
            .collect()
    }

    fn apply_in_flight(&mut self) {
        if let Some(f) = self.in_flight.take() {
            let m = self
                .timelines
                .get_mut(&f.timeline)
                .expect("in-flight timeline");
            for (k, v) in f.puts {
                m.versions.insert((k, f.lsn), v);
            }
            m.lrl = f.lsn;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Step {
    Commit(&'static str),
    Flush(&'static str),
    Compact(&'static str),
    Gc(&'static str),
    Image(&'static str),
    Branch,
    Reopen,
    Close,
}

fn steps() -> Vec<Step> {
    use Step::*;
    let mut s = Vec::new();
    for round in 0..4 {
        s.extend([Commit("main"); 5]);
        s.push(Flush("main"));
        s.extend([Commit("main"); 3]);
        if round == 1 {
            s.push(Branch);
        }
        if round >= 1 {
            s.extend([Commit("dev"); 3]);
            s.push(Flush("dev"));
        }
        s.push(Compact("main"));
        s.push(Gc("main"));
        if round == 2 {
            s.push(Image("main"));
            s.push(Gc("dev"));
        }
        if round == 1 || round == 3 {
            s.push(Reopen);
        }
    }
    s.extend([Commit("main"); 2]);
    s.push(Close);
    s
}

fn options(dir: &Path) -> StoreOptions {
    StoreOptions::new(dir)
        .background_period(None)
        .fsync_policy(FsyncPolicy::EveryCommit)
        .freeze_bytes(1 << 30)
        .block_size(512)
        .compaction_threshold(100)
        .target_layer_size(4 << 10)
        .image_threshold_bytes(1 << 30)
        .gc_horizon(Some(12))
        .pitr_interval(None)
        .wal_segment_size(2 << 10)
        .wait_lsn_timeout(Duration::from_millis(10))
}

/// A store with an empty `main`, made on the real file system (a crash during the very first
/// open is a known, separately pinned bug in `tests/errors.rs`).
async fn precreate(dir: &Path) {
    let store = Store::open(options(dir)).await.expect("precreate: open");
    store
        .create_timeline("main")
        .await
        .expect("precreate: main");
    store.close().await.expect("precreate: close");
}

struct Live {
    store: Store,
    writers: BTreeMap<String, TimelineWriter>,
}

impl Live {
    fn timeline(&self, name: &str) -> Result<Timeline, Error> {
        self.store.timeline(name)
    }

    fn writer(&mut self, name: &str) -> Result<&mut TimelineWriter, Error> {
        if !self.writers.contains_key(name) {
            let w = self.store.timeline(name)?.writer()?;
            self.writers.insert(name.to_string(), w);
        }
        Ok(self.writers.get_mut(name).expect("just inserted"))
    }
}

/// How a run of the workload ended.
#[derive(Debug)]
struct Outcome {
    /// The first error: the step index and the error.
    first_error: Option<(usize, Step, ErrorKind, String)>,
    /// Whether the store said `Poisoned` on every later call after the first error.
    poisoned: bool,
    /// The store is still open (nothing failed, or only transient failures).
    model: Model,
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} hung for {STEP_TIMEOUT:?}"),
    }
}

fn no_panic(e: &Error) {
    assert!(
        !e.to_string().contains("panicked"),
        "a store task panicked: {e}"
    );
}

async fn open(dir: &Path, fs: &Arc<FaultyFs>) -> Result<Live, Error> {
    let store = timed(
        "open",
        Store::open(options(dir).file_system(Arc::new(fs.clone()) as Arc<dyn FileSystem>)),
    )
    .await?;
    Ok(Live {
        store,
        writers: BTreeMap::new(),
    })
}

/// Runs one step against the store and, when it succeeds, the model.
async fn run_step(
    step: Step,
    live: &mut Option<Live>,
    model: &mut Model,
    dir: &Path,
    fs: &Arc<FaultyFs>,
    rng: &mut Rng,
) -> Result<(), Error> {
    if let Step::Reopen = step {
        // A crash: drop everything unflushed, then open again through the faulty file system.
        if let Some(l) = live.take() {
            drop(l);
        }
        *live = Some(open(dir, fs).await?);
        return Ok(());
    }
    let Some(l) = live.as_mut() else {
        return Ok(());
    };
    match step {
        Step::Commit(name) => {
            let Some(m) = model.timelines.get(name) else {
                return Ok(());
            };
            let lsn = m.lrl + 1 + rng.below(3);
            let n = 1 + rng.below(3) as usize;
            let mut puts = Vec::new();
            let mut used = Vec::new();
            while puts.len() < n {
                let k = rng.below(KEYS as u64) as usize;
                if used.contains(&k) {
                    continue;
                }
                used.push(k);
                let kb = key(k);
                let current = model.get(name, &kb, m.lrl);
                let roll = rng.below(10);
                let (value, after) = match current {
                    Some(cur) if roll < 4 => {
                        let n = 1 + rng.below(40) as usize;
                        let tail = rng.bytes(n);
                        let mut v = cur.to_vec();
                        v.extend_from_slice(&tail);
                        (
                            Value::delta(SimpleRedo::append(&tail)),
                            Some(Bytes::from(v)),
                        )
                    }
                    Some(_) if roll < 5 => (Value::Tombstone, None),
                    _ => {
                        let n = 8 + rng.below(300) as usize;
                        let b = rng.bytes(n);
                        (Value::image(b.clone()), Some(Bytes::from(b)))
                    }
                };
                puts.push((kb, value, after));
            }
            let w = l.writer(name)?;
            for (k, v, _) in &puts {
                w.put(k, Lsn(lsn), v.clone())?;
            }
            model.in_flight = Some(InFlight {
                timeline: name.to_string(),
                lsn,
                puts: puts.into_iter().map(|(k, _, a)| (k, a)).collect(),
            });
            w.finish_write(Lsn(lsn))?;
            model.apply_in_flight();
        }
        Step::Flush(name) => {
            if model.timelines.contains_key(name) {
                timed("flush", l.timeline(name)?.flush()).await?;
            }
        }
        Step::Compact(name) => {
            timed("compact", l.timeline(name)?.compact()).await?;
        }
        Step::Gc(name) => {
            if model.timelines.contains_key(name) {
                timed("gc", l.timeline(name)?.gc()).await?;
            }
        }
        Step::Image(name) => {
            timed("create_image_layer", l.timeline(name)?.create_image_layer()).await?;
        }
        Step::Branch => {
            let main = l.timeline("main")?;
            let m = &model.timelines["main"];
            let at = m.lrl.saturating_sub(2).max(main.gc_cutoff().0);
            let branch = TlModel {
                ancestor: Some(("main".to_string(), at)),
                versions: BTreeMap::new(),
                lrl: at,
            };
            model.maybe_branch = Some(("dev".to_string(), branch.clone()));
            timed("branch", l.store.branch("dev", &main, Lsn(at))).await?;
            model.maybe_branch = None;
            model.timelines.insert("dev".to_string(), branch);
        }
        Step::Close => {
            let l = live.take().expect("open");
            drop(l.writers);
            timed("close", l.store.close()).await?;
        }
        Step::Reopen => unreachable!(),
    }
    Ok(())
}

/// After an fsync failure: every call says `Poisoned`.
async fn assert_poisoned_everywhere(live: &mut Live, ctx: &str) {
    let poisoned = |what: &str, r: Result<(), Error>| match r {
        Err(e) if e.kind() == ErrorKind::Poisoned => {}
        other => panic!("{ctx}: after a failed fsync, {what} must say Poisoned, got {other:?}"),
    };
    let store = &live.store;
    poisoned("timeline", store.timeline("main").map(drop));
    poisoned(
        "create_timeline",
        store.create_timeline("x").await.map(drop),
    );
    if let Some(w) = live.writers.values_mut().next() {
        poisoned(
            "put",
            w.put(b"k00", Lsn(1 << 40), Value::image("x")).map(drop),
        );
        poisoned("finish_write", w.finish_write(Lsn(1 << 40)).map(drop));
    }
    for tl in live.store.timelines() {
        poisoned("get", tl.get(b"k00", tl.last_record_lsn()).await.map(drop));
        poisoned(
            "scan",
            tl.scan::<&[u8]>(.., tl.last_record_lsn()).await.map(drop),
        );
        poisoned("flush", timed("flush", tl.flush()).await.map(drop));
        poisoned("compact", tl.compact().await.map(drop));
        poisoned("gc", tl.gc().await.map(drop));
        poisoned("writer", tl.writer().map(drop));
    }
}

/// Reads every key of every timeline at `last_record_lsn`, and scans at every retained LSN,
/// comparing with the model. `live` store or reopened one alike.
async fn check_reads(store: &Store, model: &Model, ctx: &str) {
    for (name, m) in &model.timelines {
        let tl = store
            .timeline(name)
            .unwrap_or_else(|e| panic!("{ctx}: timeline {name}: {e}"));
        let lrl = tl.last_record_lsn().0;
        assert_eq!(lrl, m.lrl, "{ctx}: {name} last_record_lsn");
        let cutoff = tl.gc_cutoff().0;
        for lsn in cutoff.max(1)..=lrl {
            let got = tl
                .scan::<&[u8]>(.., Lsn(lsn))
                .await
                .unwrap_or_else(|e| panic!("{ctx}: {name}: scan at {lsn}: {e}"));
            assert!(
                got == model.scan(name, lsn),
                "{ctx}: {name}: scan at LSN {lsn} (cutoff {cutoff}) differs from the model:\n got {got:?}\nwant {:?}",
                model.scan(name, lsn)
            );
        }
        for k in 0..KEYS {
            let got = tl
                .get(&key(k), Lsn(lrl))
                .await
                .unwrap_or_else(|e| panic!("{ctx}: {name}: get k{k:02} at {lrl}: {e}"));
            assert_eq!(
                got,
                model.get(name, &key(k), lrl),
                "{ctx}: {name}: k{k:02} at {lrl}"
            );
        }
    }
}

/// Runs the workload on a fresh store with `fs`; returns how it ended.
async fn run(dir: &Path, fs: &Arc<FaultyFs>, ctx: &str) -> Outcome {
    let mut model = Model::default();
    model
        .timelines
        .insert("main".to_string(), TlModel::default());
    let mut rng = Rng(SEED);
    let mut live = None;
    let mut first_error = None;
    let mut poisoned = false;
    match open(dir, fs).await {
        Ok(l) => live = Some(l),
        Err(e) => {
            no_panic(&e);
            first_error = Some((0, Step::Reopen, e.kind(), e.to_string()));
        }
    }
    if live.is_some() {
        for (i, step) in steps().into_iter().enumerate() {
            let r = run_step(step, &mut live, &mut model, dir, fs, &mut rng).await;
            let Err(e) = r else { continue };
            no_panic(&e);
            if first_error.is_none() {
                first_error = Some((i, step, e.kind(), e.to_string()));
            }
            let Some(l) = live.as_mut() else { break };
            if l.store
                .timeline("main")
                .is_err_and(|e| e.kind() == ErrorKind::Poisoned)
            {
                poisoned = true;
                assert_poisoned_everywhere(l, ctx).await;
                break;
            }
            // A transient failure: the state is the last good one, and the store carries on.
            // An unacknowledged commit that failed without poisoning was refused whole.
            model.in_flight = None;
            if !(TOLERATE_HALF_CREATED_BRANCH && matches!(step, Step::Branch)) {
                model.maybe_branch = None;
            }
            check_reads(&l.store, &model, &format!("{ctx}, live after {e}")).await;
        }
    }
    if let Some(l) = live.take() {
        if first_error.is_none() && !poisoned {
            check_reads(&l.store, &model, &format!("{ctx}, live at the end")).await;
        }
        drop(l);
    }
    Outcome {
        first_error,
        poisoned,
        model,
    }
}

/// What a reopen found beyond the acknowledged state.
#[derive(Debug, Default)]
struct Reopened {
    in_flight_durable: bool,
    half_created_branch: bool,
}

/// Reopens on the real file system and checks the store against the model: every
/// acknowledged commit, at most the one in flight, and nothing else.
async fn verify_reopened(dir: &Path, mut model: Model, ctx: &str) -> Reopened {
    let mut found = Reopened::default();
    let store = timed("reopen", Store::open(options(dir)))
        .await
        .unwrap_or_else(|e| panic!("{ctx}: reopening on the real file system: {e}"));
    if let Some(f) = &model.in_flight {
        let lrl = store
            .timeline(&f.timeline)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"))
            .last_record_lsn()
            .0;
        let acked = model.timelines[&f.timeline].lrl;
        assert!(
            lrl == acked || lrl == f.lsn,
            "{ctx}: {} last_record_lsn {lrl}: acknowledged {acked}, in flight {}",
            f.timeline,
            f.lsn
        );
        if lrl == f.lsn {
            model.apply_in_flight();
            found.in_flight_durable = true;
        }
    }
    if let Some((name, b)) = model.maybe_branch.take()
        && store.timeline(&name).is_ok()
    {
        model.timelines.insert(name, b);
        found.half_created_branch = true;
    }
    let names: Vec<String> = store.timelines().iter().map(|t| t.name()).collect();
    let want: Vec<&String> = model.timelines.keys().collect();
    assert_eq!(
        names.iter().collect::<Vec<_>>(),
        want,
        "{ctx}: timelines after reopen"
    );
    check_reads(&store, &model, &format!("{ctx}, reopened")).await;
    store
        .close()
        .await
        .unwrap_or_else(|e| panic!("{ctx}: close after reopen: {e}"));
    found
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Operations of each kind a clean run performs.
fn clean_counts() -> [u64; 4] {
    let rt = runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        precreate(dir.path()).await;
        let fs = FaultyFs::new(Arc::new(StdFs));
        let out = run(dir.path(), &fs, "clean run").await;
        assert!(
            out.first_error.is_none(),
            "the clean run failed: {:?}",
            out.first_error
        );
        verify_reopened(dir.path(), out.model, "clean run").await;
        [
            FaultOp::Write,
            FaultOp::Sync,
            FaultOp::Rename,
            FaultOp::Create,
        ]
        .map(|op| fs.count(op))
    })
}

fn count_of(op: FaultOp) -> u64 {
    static COUNTS: std::sync::OnceLock<[u64; 4]> = std::sync::OnceLock::new();
    let c = COUNTS.get_or_init(clean_counts);
    match op {
        FaultOp::Write => c[0],
        FaultOp::Sync => c[1],
        FaultOp::Rename => c[2],
        FaultOp::Create => c[3],
    }
}

/// Which of `1..=count` to fail: all of them, or a seeded sample that keeps the first and last.
fn sample(count: u64, salt: u64) -> Vec<u64> {
    let all: Vec<u64> = (1..=count).collect();
    if all.len() <= MAX_TRIALS {
        return all;
    }
    let mut rng = Rng(SEED ^ salt);
    let mut picked = vec![1, count];
    while picked.len() < MAX_TRIALS {
        let i = 1 + rng.below(count);
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked.sort_unstable();
    picked
}

#[derive(Debug, Default)]
struct Tally {
    trials: u64,
    errored: u64,
    poisoned: u64,
    completed: u64,
    /// Commits whose finish_write failed but which were durable after all.
    in_flight_durable: u64,
    /// Branches that reported failure and existed after reopen (see
    /// `TOLERATE_HALF_CREATED_BRANCH`).
    half_created_branches: u64,
}

/// Fails the `i`-th operation of kind `op` (torn writes if `torn`) for every sampled `i`.
fn fail_each(op: FaultOp, torn: bool) -> Tally {
    let count = count_of(op);
    assert!(count > 0, "the workload performs no {op:?}");
    let rt = runtime();
    let mut tally = Tally::default();
    let mut rng = Rng(SEED ^ 0x7042 ^ op as u64);
    for i in sample(count, op as u64 + u64::from(torn)) {
        let tear = torn.then(|| {
            if rng.below(2) == 0 {
                rng.below(32) as usize
            } else {
                rng.below(4096) as usize
            }
        });
        let ctx = format!("{op:?} #{i} of {count} failed (torn: {tear:?})");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            precreate(dir.path()).await;
            let fs = FaultyFs::new(Arc::new(StdFs));
            fs.fail_at(op, i, tear);
            let out = run(dir.path(), &fs, &ctx).await;
            assert_eq!(fs.injected(), 1, "{ctx}: the fault did not fire");
            tally.trials += 1;
            match &out.first_error {
                None => tally.completed += 1,
                Some(_) => tally.errored += 1,
            }
            if out.poisoned {
                tally.poisoned += 1;
            }
            if op == FaultOp::Sync {
                // When open or close failed, no store is left to ask.
                assert!(
                    out.poisoned
                        || matches!(&out.first_error, Some((_, Step::Reopen | Step::Close, ..))),
                    "{ctx}: a failed fsync must poison the store, got {:?}",
                    out.first_error
                );
            }
            let r = verify_reopened(dir.path(), out.model, &ctx).await;
            tally.in_flight_durable += u64::from(r.in_flight_durable);
            tally.half_created_branches += u64::from(r.half_created_branch);
        });
    }
    println!("{op:?} faults (torn: {torn}): {count} in a clean run; {tally:?}");
    tally
}

#[test]
fn every_failed_write_is_reported_and_reopen_keeps_every_acknowledged_commit() {
    let t = fail_each(FaultOp::Write, false);
    assert!(t.errored > 0);
}

#[test]
fn every_torn_write_is_reported_and_reopen_keeps_every_acknowledged_commit() {
    let t = fail_each(FaultOp::Write, true);
    assert!(t.errored > 0);
}

#[test]
fn every_failed_fsync_poisons_the_store_and_reopen_keeps_every_acknowledged_commit() {
    let t = fail_each(FaultOp::Sync, false);
    assert_eq!(t.completed, 0, "a failed fsync went unreported");
}

#[test]
fn every_failed_rename_is_reported_and_reopen_keeps_every_acknowledged_commit() {
    let t = fail_each(FaultOp::Rename, false);
    assert!(t.errored > 0);
}

#[test]
fn every_failed_file_creation_is_reported_and_reopen_keeps_every_acknowledged_commit() {
    let t = fail_each(FaultOp::Create, false);
    assert!(t.errored > 0);
}

// ---------------------------------------------------------------------------------------------
// Bugs found by these sweeps and by the `ops` fuzz target, fixed since: regression tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn gc_keeps_the_base_of_later_deltas_when_two_images_share_an_lsn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(options(dir.path()).gc_horizon(Some(1)))
        .await
        .unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let mut w = main.writer().unwrap();
    w.put(b"k", Lsn(1), Value::image("a")).unwrap();
    w.finish_write(Lsn(1)).unwrap();
    // Given two image layers at LSN 1 (nothing was written between the two calls)...
    main.create_image_layer().await.unwrap();
    main.create_image_layer().await.unwrap();
    // ...and a delta above them, with the GC cutoff moved to LSN 1.
    w.put(b"k", Lsn(2), Value::delta(SimpleRedo::append(b"b")))
        .unwrap();
    w.finish_write(Lsn(2)).unwrap();
    let report = main.gc().await.unwrap();
    // Then GC keeps an image at LSN 1, and the delta still has its base.
    assert!(
        main.layers()
            .iter()
            .any(|l| l.kind == stratakv::LayerKind::Image),
        "GC removed every image: {report:?}"
    );
    assert_eq!(main.get(b"k", Lsn(2)).await.unwrap().unwrap(), "ab");
}

#[tokio::test]
async fn a_branch_that_fails_after_its_catalog_entry_is_written_is_half_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::new(Arc::new(StdFs));
    let store = Store::open(options(dir.path()).file_system(Arc::new(fs.clone())))
        .await
        .unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let mut w = main.writer().unwrap();
    w.put(b"k", Lsn(10), Value::image("v")).unwrap();
    w.finish_write(Lsn(10)).unwrap();
    // Given a branch's third file creation fails: its manifest and the catalog are written,
    // then the time index inherited from the parent is not.
    fs.fail_at(FaultOp::Create, 3, None);
    let err = store.branch("dev", &main, Lsn(10)).await.unwrap_err();
    assert_eq!(fs.injected(), 1);
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    // Then the branch does not exist, and the name is free to try again...
    assert_eq!(
        store.timeline("dev").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let retry = store.branch("dev", &main, Lsn(10)).await;
    assert!(
        retry.is_ok(),
        "retrying the failed branch: {:?}",
        retry.map(|t| t.name())
    );
    drop(retry);
    drop(w);
    drop(main);
    drop(store);
    // ...and a reopen agrees with what the live store said.
    let store = Store::open(options(dir.path())).await.unwrap();
    assert_eq!(
        store
            .timelines()
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>(),
        ["dev", "main"]
    );
}
