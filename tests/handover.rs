//! Multi-node model test: two or three stores on one bucket take the prefix from each other at
//! random moments — on an empty directory or on one of their old, non-empty ones — while they
//! write; every read on the new owner must match a model of what was remote-consistent at each
//! handover. Runs on the local-folder object store and on S3 (moto).
//!
//! # The model
//!
//! One history `(key, lsn) → value` of timeline `main`, as the owners wrote it. Across a
//! handover from an old owner to a new one:
//!
//! - `safe` is the LSN the owners made remote-consistent with certainty: after `flush` and a
//!   successful `wait_for_upload` (or a successful `close`), everything up to the flushed LSN.
//! - The old owner is stopped: dropped without close, closed while it is still the owner, or
//!   kept running while the new owner opens ("overlap") — it then writes on, is fenced
//!   ([`ErrorKind::Fenced`] from its writer, flush or `wait_for_upload`) and leaves stale layers
//!   in its directory. Its writes after the new owner opened never enter the model.
//! - The new owner opens a fresh empty directory (attach) or a node's old directory: the old
//!   owner's own (a restart, which keeps its local state) or a stale one, whose local state is
//!   older than the remote or diverges from it. Its `last_record_lsn` (`got`) must lie in
//!   `safe ..= old owner's last_record_lsn` — an upload still in flight may have landed more
//!   than `safe` — and every read of every key at every LSN from its GC cutoff to `got` must
//!   match the history. Versions above `got` were never acknowledged remotely: the model drops
//!   them and the new owner writes on from `got`.
//!
//! Each new owner waits for its first upload (the index it opened with) before anything else,
//! so an old owner's upload landing late, under its older generation, can never be the newest
//! index a later node finds.
//!
//! After the last handover a fresh node attaches and reads everything once more.
//!
//! The random choices come from a seed: `STRATAKV_HANDOVER_SEED=<u64>` repeats them (the seed
//! is printed either way), though not the uploader's timing, so a repeat may fail at another
//! handover; `STRATAKV_HANDOVER_ROUNDS=<n>` sets the handovers per backend.
//!
//! A focused, deterministic test pins the bug the model finds: a fenced node that reopens its
//! old directory must come up with the newer remote history, not upload its stale local state
//! over it.
//!
//! The S3 runs read their server from the environment `source .ci/object-stores.sh start`
//! exports; without it they fail, unless `STRATAKV_SKIP_REMOTE_SERVERS=1` says to skip them.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratakv::remote::{FaultConfig, FaultyObjectStore, RemoteStorage};
use stratakv::{ErrorKind, Lsn, Store, StoreOptions, Timeline, Value};
use tempfile::TempDir;

use common::backends::{Backend, node_options, unique_prefix};
use common::env::env_u64;
use common::rng::{Rng, seed_from_env_or_clock};

/// Keys `key0000` … `key0049`.
const KEYS: u32 = 50;
/// Handovers per backend unless `STRATAKV_HANDOVER_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 24;
/// History kept readable behind `last_record_lsn`, so GC moves the cutoff now and then.
const GC_HORIZON: u64 = 200;

fn opts(dir: &std::path::Path, remote: RemoteStorage, node: &str) -> StoreOptions {
    node_options(dir, remote, node)
        .gc_horizon(Some(GC_HORIZON))
        .compaction_threshold(3)
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:04}").into_bytes()
}

/// `(key index, lsn) → value`: every version of `main` the model expects.
type History = BTreeMap<(u32, u64), Vec<u8>>;

fn expected(history: &History, k: u32, lsn: u64) -> Option<&Vec<u8>> {
    history.range((k, 0)..=(k, lsn)).next_back().map(|(_, v)| v)
}

fn show(v: Option<&[u8]>) -> String {
    match v {
        Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
        None => "nothing".into(),
    }
}

/// `n` distinct keys.
fn distinct_keys(rng: &mut Rng, n: u32) -> Vec<u32> {
    let mut ks: Vec<u32> = Vec::new();
    while ks.len() < n as usize {
        let k = rng.below(KEYS as u64) as u32;
        if !ks.contains(&k) {
            ks.push(k);
        }
    }
    ks
}

/// How the old owner stops at a handover.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// Dropped without close: the node dies, uploads maybe in flight.
    Drop,
    /// Closed while still the owner: flushed and uploaded.
    Close,
    /// Kept running while the new owner opens; writes on, is fenced, then dropped.
    Overlap,
}

/// Where the new owner opens.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dir {
    /// A fresh empty directory: attach.
    Empty,
    /// The old owner's own directory: a restart of the newest owner.
    OwnOld,
    /// Another node's old directory, behind the remote.
    StaleOld,
}

struct Owner {
    store: Store,
    main: Timeline,
    node: usize,
}

#[derive(Default, Debug)]
struct Figures {
    handovers: usize,
    on_empty: usize,
    on_own_old: usize,
    on_stale_old: usize,
    drops: usize,
    closes: usize,
    overlaps: usize,
    fenced_commits: usize,
    commits: usize,
    reads: u64,
    lost: usize,
    last_lsn: u64,
}

struct Run<'a> {
    b: &'a Backend,
    seed: u64,
    rng: Rng,
    /// Each node's directory, once it has one.
    dirs: Vec<Option<TempDir>>,
    history: History,
    safe: u64,
    handover: usize,
    figures: Figures,
}

fn node_name(n: usize) -> String {
    format!("node{n}")
}

impl Run<'_> {
    fn ctx(&self, node: &str) -> String {
        format!(
            "seed {} ({} backend), handover {}, node {node}",
            self.seed, self.b.name, self.handover
        )
    }

    fn value(&mut self, node: &str, k: u32, lsn: u64, fenced: bool) -> Vec<u8> {
        let pad = "x".repeat(self.rng.below(40) as usize);
        let tag = if fenced { "fenced-" } else { "" };
        format!("{tag}h{}-{node}-k{k}-l{lsn}-{pad}", self.handover).into_bytes()
    }

    /// The owner writes a few commits, flushing (and waiting for the upload) now and then.
    async fn write_term(&mut self, o: &Owner) {
        let node = node_name(o.node);
        let ctx = self.ctx(&node);
        let commits = 2 + self.rng.below(9);
        let mut w = o
            .main
            .writer()
            .unwrap_or_else(|e| panic!("{ctx}: writer: {e}"));
        for _ in 0..commits {
            let lsn = o.main.last_record_lsn().0 + 1 + self.rng.below(3);
            let n = 1 + self.rng.below(8) as u32;
            for k in distinct_keys(&mut self.rng, n) {
                let v = self.value(&node, k, lsn, false);
                w.put(&key(k), Lsn(lsn), Value::image(v.clone()))
                    .unwrap_or_else(|e| panic!("{ctx}: put of key {k} at LSN {lsn}: {e}"));
                self.history.insert((k, lsn), v);
            }
            w.finish_write(Lsn(lsn))
                .unwrap_or_else(|e| panic!("{ctx}: finish_write at LSN {lsn}: {e}"));
            self.figures.commits += 1;
            self.figures.last_lsn = self.figures.last_lsn.max(lsn);
            match self.rng.below(10) {
                0 => self.flush_and_upload(o).await,
                1 | 2 => self.flush_locally(o).await,
                _ => {}
            }
        }
        drop(w);
        // What the node leaves behind: uploaded, flushed only, or in memory (and its log).
        match self.rng.below(3) {
            0 => self.flush_and_upload(o).await,
            1 => self.flush_locally(o).await,
            _ => {}
        }
    }

    async fn flush_locally(&self, o: &Owner) {
        let ctx = self.ctx(&node_name(o.node));
        o.main
            .flush()
            .await
            .unwrap_or_else(|e| panic!("{ctx}: flush: {e}"));
    }

    async fn flush_and_upload(&mut self, o: &Owner) {
        let ctx = self.ctx(&node_name(o.node));
        let flushed = o
            .main
            .flush()
            .await
            .unwrap_or_else(|e| panic!("{ctx}: flush: {e}"));
        o.store
            .wait_for_upload()
            .await
            .unwrap_or_else(|e| panic!("{ctx}: wait_for_upload: {e}"));
        self.safe = self.safe.max(flushed.0);
    }

    /// The old owner, superseded, writes on: nothing it writes may count. It must learn that
    /// it is fenced, and its directory keeps stale layers beyond the remote.
    async fn write_fenced(&mut self, o: &Owner) {
        let node = node_name(o.node);
        let ctx = format!("{} (fenced old owner)", self.ctx(&node));
        let fenced = |what: &str, e: stratakv::Error| {
            assert_eq!(e.kind(), ErrorKind::Fenced, "{ctx}: {what}: {e}");
        };
        match o.main.writer() {
            Err(e) => fenced("writer", e),
            Ok(mut w) => {
                let mut lsn = o.main.last_record_lsn().0;
                'commits: for _ in 0..1 + self.rng.below(4) {
                    lsn += 1 + self.rng.below(3);
                    let n = 1 + self.rng.below(8) as u32;
                    for k in distinct_keys(&mut self.rng, n) {
                        let v = self.value(&node, k, lsn, true);
                        if let Err(e) = w.put(&key(k), Lsn(lsn), Value::image(v)) {
                            fenced("put", e);
                            break 'commits;
                        }
                    }
                    if let Err(e) = w.finish_write(Lsn(lsn)) {
                        fenced("finish_write", e);
                        break;
                    }
                    self.figures.fenced_commits += 1;
                }
            }
        }
        if let Err(e) = o.main.flush().await {
            fenced("flush", e);
        }
        match tokio::time::timeout(Duration::from_secs(60), o.store.wait_for_upload()).await {
            Err(_) => panic!("{ctx}: wait_for_upload did not end within 60 s"),
            Ok(Ok(())) => panic!("{ctx}: wait_for_upload succeeded after another node claimed"),
            Ok(Err(e)) => fenced("wait_for_upload", e),
        }
        match o.main.writer() {
            Ok(_) => panic!("{ctx}: writer still granted after fencing"),
            Err(e) => fenced("writer after fencing", e),
        }
    }

    /// Opens `node` on `dir` as the new owner and waits for its first upload, so that what it
    /// came up with is the newest remote index before anything else happens.
    async fn open(&mut self, node: usize, name: &str, path: &std::path::Path) -> Owner {
        let ctx = self.ctx(name);
        let store = Store::open(opts(path, self.b.remote(), name))
            .await
            .unwrap_or_else(|e| panic!("{ctx}: open of {}: {e}", path.display()));
        let main = store
            .timeline("main")
            .unwrap_or_else(|e| panic!("{ctx}: timeline main: {e}"));
        store
            .wait_for_upload()
            .await
            .unwrap_or_else(|e| panic!("{ctx}: first upload after open: {e}"));
        Owner { store, main, node }
    }

    /// Every key at every LSN from the cutoff to `got` against the model.
    async fn check_reads(&mut self, o: &Owner, name: &str, got: u64) {
        let ctx = self.ctx(name);
        let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
        let mut lsn = o.main.gc_cutoff().0;
        while lsn <= got {
            let values = match o.main.get_many(&keys, Lsn(lsn)).await {
                Ok(v) => v,
                // Background GC (kicked by flushes) may have moved the cutoff meanwhile.
                Err(e) if e.kind() == ErrorKind::BelowGcCutoff && o.main.gc_cutoff().0 > lsn => {
                    lsn = o.main.gc_cutoff().0;
                    continue;
                }
                Err(e) => panic!("{ctx}: read of every key at LSN {lsn} (got {got}): {e}"),
            };
            for (k, v) in (0..KEYS).zip(values) {
                let want = expected(&self.history, k, lsn);
                assert!(
                    v.as_deref() == want.map(|w| &w[..]),
                    "{ctx}: key {k} at LSN {lsn}: expected {}, got {} (the new owner came up at LSN {got}, safe {})",
                    show(want.map(|w| &w[..])),
                    show(v.as_deref()),
                    self.safe
                );
            }
            self.figures.reads += u64::from(KEYS);
            lsn += 1;
        }
    }

    /// One handover from `old` to a node the seed picks (or the one given).
    async fn handover(&mut self, old: Owner, forced: Option<(usize, Stop, Dir)>) -> Owner {
        self.handover += 1;
        self.figures.handovers += 1;
        let nodes = self.dirs.len();
        let old_lrl = old.main.last_record_lsn().0;
        let (target, stop, dir) = match forced {
            Some(f) => f,
            None => {
                let stop = match self.rng.below(10) {
                    0..=4 => Stop::Drop,
                    5 | 6 => Stop::Close,
                    _ => Stop::Overlap,
                };
                let mut target = self.rng.below(nodes as u64) as usize;
                if stop == Stop::Overlap && target == old.node {
                    target = (target + 1 + self.rng.below(nodes as u64 - 1) as usize) % nodes;
                }
                let dir = if self.dirs[target].is_none() || self.rng.unit() <= 0.4 {
                    Dir::Empty
                } else if target == old.node {
                    Dir::OwnOld
                } else {
                    Dir::StaleOld
                };
                (target, stop, dir)
            }
        };
        let name = node_name(target);
        let ctx = self.ctx(&name);
        let old_node = old.node;
        let still_running = match stop {
            Stop::Drop => {
                self.figures.drops += 1;
                drop(old);
                None
            }
            Stop::Close => {
                self.figures.closes += 1;
                drop(old.main);
                old.store.close().await.unwrap_or_else(|e| {
                    panic!("{ctx}: close of the old owner node{old_node}: {e}")
                });
                self.safe = old_lrl;
                None
            }
            Stop::Overlap => {
                self.figures.overlaps += 1;
                Some(old)
            }
        };
        match dir {
            Dir::Empty => self.figures.on_empty += 1,
            Dir::OwnOld => self.figures.on_own_old += 1,
            Dir::StaleOld => self.figures.on_stale_old += 1,
        }
        if dir == Dir::Empty {
            self.dirs[target] = Some(tempfile::tempdir().unwrap());
        }
        let path = self.dirs[target].as_ref().unwrap().path().to_path_buf();
        let new = self.open(target, &name, &path).await;
        if let Some(old) = still_running {
            self.write_fenced(&old).await;
            drop(old);
        }
        let got = new.main.last_record_lsn().0;
        assert!(
            self.safe <= got && got <= old_lrl,
            "{ctx}: opened on {dir:?} directory after a {stop:?} of the old owner: main is at LSN {got}, \
             expected between {} (remote-consistent for sure) and {old_lrl} (the old owner's last LSN)",
            self.safe
        );
        self.check_reads(&new, &name, got).await;
        let before = self.history.len();
        self.history.retain(|&(_, lsn), _| lsn <= got);
        self.figures.lost += before - self.history.len();
        new
    }
}

async fn handovers_keep_the_remote_history(b: &Backend) {
    let seed = seed_from_env_or_clock("STRATAKV_HANDOVER_SEED");
    let rounds = env_u64("STRATAKV_HANDOVER_ROUNDS").map_or(DEFAULT_ROUNDS, |n| n as usize);
    eprintln!(
        "{} backend: STRATAKV_HANDOVER_SEED={seed}, {rounds} handovers",
        b.name
    );
    let started = Instant::now();
    let mut rng = Rng(seed);
    let nodes = 2 + rng.below(2) as usize;
    let mut run = Run {
        b,
        seed,
        rng,
        dirs: (0..nodes).map(|_| None).collect(),
        history: BTreeMap::new(),
        safe: 0,
        handover: 0,
        figures: Figures::default(),
    };
    run.dirs[0] = Some(tempfile::tempdir().unwrap());
    let path = run.dirs[0].as_ref().unwrap().path().to_path_buf();
    let store = Store::open(opts(&path, b.remote(), &node_name(0)))
        .await
        .unwrap();
    let main = store.create_timeline("main").await.unwrap();
    // The timeline exists remotely before anyone can take over.
    store.wait_for_upload().await.unwrap();
    let mut owner = Owner {
        store,
        main,
        node: 0,
    };
    for _ in 0..rounds {
        run.write_term(&owner).await;
        owner = run.handover(owner, None).await;
    }
    run.write_term(&owner).await;
    // Finally a node that never held the store attaches from scratch after a clean close.
    run.dirs.push(None);
    let last = run.dirs.len() - 1;
    let owner = run
        .handover(owner, Some((last, Stop::Close, Dir::Empty)))
        .await;
    owner.store.close().await.unwrap();
    let f = &run.figures;
    eprintln!(
        "{} backend, seed {seed}, {nodes} nodes: {} handovers ({} on empty directories, {} on the old \
         owner's own directory, {} on a stale directory; old owner dropped {}, closed {}, kept \
         writing {}), {} commits up to LSN {}, {} commits by fenced owners, {} reads checked, {} \
         versions lost at handovers, {:.1} s",
        b.name,
        f.handovers,
        f.on_empty,
        f.on_own_old,
        f.on_stale_old,
        f.drops,
        f.closes,
        f.overlaps,
        f.commits,
        f.last_lsn,
        f.fenced_commits,
        f.reads,
        f.lost,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handovers_keep_the_remote_history_on_the_local_folder_store() {
    handovers_keep_the_remote_history(&Backend::local(unique_prefix(
        "handover-tests",
        "random-local",
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handovers_keep_the_remote_history_on_s3() {
    if let Some(b) = Backend::s3(unique_prefix("handover-tests", "random-s3")) {
        handovers_keep_the_remote_history(&b).await;
    }
}

/// Commits `lsns` on `main`, each writing every key with a value naming `tag`; records them in
/// `history`.
fn write_all_keys(tl: &Timeline, tag: &str, lsns: &[u64], history: &mut History) {
    let mut w = tl.writer().unwrap();
    for &lsn in lsns {
        for k in 0..KEYS {
            let v = format!("{tag}-k{k}-l{lsn}").into_bytes();
            w.put(&key(k), Lsn(lsn), Value::image(v.clone())).unwrap();
            history.insert((k, lsn), v);
        }
        w.finish_write(Lsn(lsn)).unwrap();
    }
}

async fn assert_reads(tl: &Timeline, who: &str, upto: u64, history: &History) {
    for lsn in tl.gc_cutoff().0..=upto {
        for k in 0..KEYS {
            let got = tl.get(&key(k), Lsn(lsn)).await.unwrap_or_else(|e| {
                panic!("{who}: read of key {k} at LSN {lsn}: {e}");
            });
            let want = expected(history, k, lsn);
            assert!(
                got.as_deref() == want.map(|w| &w[..]),
                "{who}: key {k} at LSN {lsn}: expected {}, got {}",
                show(want.map(|w| &w[..])),
                show(got.as_deref())
            );
        }
    }
}

/// A writes and uploads up to LSN 30, then writes and flushes 40 and 50 locally while its
/// uploads fail; B attaches on an empty directory (A is fenced), writes 40–60 and uploads;
/// A's process reopens its old directory. A must come up with B's history, and a node
/// attaching afterwards must find B's LSN 60 and B's values, plus what A wrote as owner.
async fn a_fenced_node_reopening_its_old_directory_keeps_the_newer_remote_history(b: &Backend) {
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let who = |node: &str| format!("{} backend, node {node}", b.name);
    // A's remote goes through a switch that makes every request fail before reaching the
    // store, so what A flushes next stays local for certain.
    let faulty = Arc::new(FaultyObjectStore::new(
        b.store.clone(),
        FaultConfig::new(7).with_errors(1.0),
    ));
    faulty.set_enabled(false);
    let mut history = History::new();
    let a = Store::open(opts(da.path(), b.remote_on(faulty.clone()), "a"))
        .await
        .unwrap();
    let a_main = a.create_timeline("main").await.unwrap();
    write_all_keys(&a_main, "a", &[10, 20, 30], &mut history);
    a_main.flush().await.unwrap();
    a.wait_for_upload().await.unwrap();
    assert_eq!(a_main.remote_consistent_lsn(), Lsn(30));

    faulty.set_enabled(true);
    let mut a_only = history.clone();
    write_all_keys(&a_main, "a-local", &[40, 50], &mut a_only);
    assert_eq!(a_main.flush().await.unwrap(), Lsn(50));
    assert_eq!(a_main.remote_consistent_lsn(), Lsn(30));

    let node_b = Store::open(opts(db.path(), b.remote(), "b")).await.unwrap();
    let b_main = node_b.timeline("main").unwrap();
    assert_eq!(b_main.last_record_lsn(), Lsn(30), "{}", who("b"));
    write_all_keys(&b_main, "b", &[40, 50, 60], &mut history);
    b_main.flush().await.unwrap();
    node_b.wait_for_upload().await.unwrap();
    assert_eq!(b_main.remote_consistent_lsn(), Lsn(60));
    assert_reads(&b_main, &who("b"), 60, &history).await;
    drop(b_main);
    node_b.close().await.unwrap();

    // A's uploads get through again: it finds itself fenced; then its process goes away.
    faulty.set_enabled(false);
    let err = tokio::time::timeout(Duration::from_secs(60), a.wait_for_upload())
        .await
        .expect("A's uploader ends within 60 s")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    drop(a_main);
    drop(a);

    // A's process comes back on its old directory: 40 and 50 there are stale.
    let a = Store::open(opts(da.path(), b.remote(), "a")).await.unwrap();
    let a_main = a.timeline("main").unwrap();
    assert_eq!(
        a_main.last_record_lsn(),
        Lsn(60),
        "{}: reopened its old directory at the wrong LSN (B made LSN 60 remote-consistent; \
         A had flushed LSN 50 locally, 30 remotely)",
        who("a")
    );
    assert_reads(&a_main, &who("a after reopening"), 60, &history).await;
    // What A held and lost is reported: LSN 50 locally, against B's 60 in the remote.
    let discarded = a
        .discarded_on_open()
        .unwrap_or_else(|| panic!("{}: the stale local state was not reported", who("a")));
    assert!(
        discarded.remote_generation > discarded.local_generation.expect("A recorded its claim"),
        "{}: {discarded:?}",
        who("a")
    );
    let tl = &discarded.timelines[..];
    assert_eq!(tl.len(), 1, "{}: {discarded:?}", who("a"));
    assert_eq!(
        (tl[0].name.as_str(), tl[0].local_lsn, tl[0].remote_lsn),
        ("main", Lsn(50), Some(Lsn(60))),
        "{}: {discarded:?}",
        who("a")
    );
    write_all_keys(&a_main, "a-again", &[70], &mut history);
    a_main.flush().await.unwrap();
    a.wait_for_upload().await.unwrap();
    drop(a_main);
    a.close().await.unwrap();

    let c = Store::open(opts(dc.path(), b.remote(), "c")).await.unwrap();
    let c_main = c.timeline("main").unwrap();
    assert_eq!(
        c_main.last_record_lsn(),
        Lsn(70),
        "{}: a fresh attach after A's reopen",
        who("c")
    );
    assert_reads(&c_main, &who("c (fresh attach)"), 70, &history).await;
    drop(c_main);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_node_reopening_its_old_directory_keeps_the_newer_remote_history_on_the_local_folder_store()
 {
    a_fenced_node_reopening_its_old_directory_keeps_the_newer_remote_history(&Backend::local(
        unique_prefix("handover-tests", "reopen-local"),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_node_reopening_its_old_directory_keeps_the_newer_remote_history_on_s3() {
    if let Some(b) = Backend::s3(unique_prefix("handover-tests", "reopen-s3")) {
        a_fenced_node_reopening_its_old_directory_keeps_the_newer_remote_history(&b).await;
    }
}
