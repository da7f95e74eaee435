//! The WAL in object storage: nothing acknowledged at `Durability::Remote` is lost when a node
//! dies or is taken over.
//!
//! - A takeover model: an owner commits at the remote level from three threads (one timeline
//!   each) while another node claims the store at a random moment and attaches on an empty
//!   directory; every commit the old owner acknowledged must read back on the new one, and the
//!   old owner's threads must end with `Fenced`. Several handovers in a row, each new owner
//!   writing on from what it replayed. On the local-folder object store, S3 (moto) and Azure
//!   Blob (Azurite).
//! - Faults: the object store fails and delays requests and loses responses, with few retries;
//!   every commit either fails or is readable by a node that attaches after the writer is
//!   dropped without a close.
//! - A crash loop from outside: a child process committing at the remote level is killed with
//!   SIGKILL at a random moment; a fresh directory attaches and reads every LSN the child
//!   reported acknowledged. `STRATAKV_CRASH_CYCLES` sets the cycles (default 4; the script
//!   `.ci/crashloop` runs 200).
//!
//! Seeds: `STRATAKV_REMOTE_WAL_SEED=<u64>` repeats the random timings' choices (printed).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::backends::{Backend, fast_retry, on_tokio, unique_prefix};
use common::env::env_u64;
use common::rng::{Rng, seed_from_env_or_clock};
use futures::executor::block_on;
use object_store::ObjectStoreExt;
use stratakv::remote::{FaultConfig, FaultyObjectStore, RemoteStorage};
use stratakv::{Durability, ErrorKind, Lsn, Store, StoreOptions, Timeline, Value};

const TIMELINES: usize = 3;

/// `(timeline name, lsn)` → value, of every commit acknowledged at the remote level.
type Acked = BTreeMap<(String, u64), Vec<u8>>;

fn tl_name(i: usize) -> String {
    format!("t{i}")
}

/// Each commit writes one key of its own, so a read at any later LSN must find it.
fn key(lsn: u64) -> Vec<u8> {
    format!("k{lsn:012}").into_bytes()
}

fn value(tl: &str, lsn: u64) -> Vec<u8> {
    format!("{tl}@{lsn}").into_bytes().repeat(4)
}

fn options(dir: &std::path::Path, remote: RemoteStorage, node: &str) -> StoreOptions {
    StoreOptions::new(dir)
        .remote(remote)
        .node_id(node)
        .durability(Durability::Remote)
        .remote_wal_interval(Duration::from_millis(5))
        .freeze_bytes(16 << 10)
        .background_period(Some(Duration::from_millis(50)))
        .pitr_interval(None)
}

/// Commits at the remote level on `tl` until a commit fails; records what was acknowledged.
/// Returns the error that stopped it.
fn commit_until_error(tl: Timeline, acked: Arc<Mutex<Acked>>, pause: Duration) -> stratakv::Error {
    let name = tl.name();
    let mut w = match tl.writer() {
        Ok(w) => w,
        Err(e) => return e,
    };
    let mut lsn = tl.last_record_lsn().0;
    let mut remote_wal_lsn = tl.remote_wal_lsn();
    loop {
        lsn += 1;
        if let Err(e) = w.put(&key(lsn), Lsn(lsn), Value::image(value(&name, lsn))) {
            return e;
        }
        match w.finish_write(Lsn(lsn)) {
            Ok(()) => {
                // Acknowledged at the remote level: the watermark says so, and never goes back.
                let now = tl.remote_wal_lsn();
                assert!(
                    now >= Lsn(lsn) && now >= remote_wal_lsn && now >= tl.remote_consistent_lsn(),
                    "{name}: remote_wal_lsn {now} after the commit at {lsn} (before: {remote_wal_lsn}, remote_consistent_lsn {})",
                    tl.remote_consistent_lsn()
                );
                remote_wal_lsn = now;
                acked
                    .lock()
                    .unwrap()
                    .insert((name.clone(), lsn), value(&name, lsn));
            }
            Err(e) => return e,
        }
        std::thread::sleep(pause);
    }
}

/// Checks that every acknowledged commit reads back on `store`.
fn check_acked(store: &Store, acked: &Acked, ctx: &str) {
    for ((tl, lsn), want) in acked {
        let t = store
            .timeline(tl)
            .unwrap_or_else(|e| panic!("{ctx}: timeline {tl}: {e}"));
        assert!(
            t.last_record_lsn() >= Lsn(*lsn),
            "{ctx}: {tl} acknowledged LSN {lsn} at the remote level, but the new owner's last_record_lsn is {}",
            t.last_record_lsn()
        );
        let got = t
            .get_blocking(&key(*lsn), t.last_record_lsn())
            .unwrap_or_else(|e| panic!("{ctx}: {tl} read of LSN {lsn}: {e}"));
        assert_eq!(
            got.as_deref(),
            Some(&want[..]),
            "{ctx}: {tl}: the commit at LSN {lsn}"
        );
    }
}

/// Given an owner committing at the remote level from three threads, when another node claims
/// the store at a random moment and attaches on an empty directory, then the old owner's
/// threads end with `Fenced`, and every commit it acknowledged reads back on the new owner,
/// which writes on; repeated for several handovers.
fn takeover_keeps_every_acknowledged_commit(backend: &Backend) {
    let seed = seed_from_env_or_clock("STRATAKV_REMOTE_WAL_SEED");
    eprintln!("{}: STRATAKV_REMOTE_WAL_SEED={seed}", backend.name);
    let mut rng = Rng::new(seed);
    let acked = Arc::new(Mutex::new(Acked::new()));
    // A checked deletion must finish within half the claim grace or it is abandoned (and the
    // chunk stays); with the common 50 ms grace, a loaded machine abandoned some at the final
    // close and the check for no chunk left failed. Each takeover waits the grace once.
    let remote = || backend.remote().with_claim_grace(Duration::from_secs(1));
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut owner = Store::open_blocking(options(dirs[0].path(), remote(), "n0")).unwrap();
    for i in 0..TIMELINES {
        block_on(owner.create_timeline(&tl_name(i))).unwrap();
    }
    for (round, dir) in dirs.iter().enumerate().skip(1) {
        let ctx = format!("{} round {round} (seed {seed})", backend.name);
        let writers: Vec<_> = (0..TIMELINES)
            .map(|i| {
                let tl = owner.timeline(&tl_name(i)).unwrap();
                let acked = acked.clone();
                std::thread::spawn(move || commit_until_error(tl, acked, Duration::ZERO))
            })
            .collect();
        // Every timeline has something acknowledged before the takeover (a loaded machine may
        // take longer than the random pause for a timeline's first remote commit).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            let acked_now = acked.lock().unwrap().clone();
            if (0..TIMELINES).all(|t| acked_now.keys().any(|(n, _)| *n == tl_name(t))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.range(50, 400)));
        let next = Store::open_blocking(options(dir.path(), remote(), &format!("n{round}")))
            .unwrap_or_else(|e| panic!("{ctx}: attach: {e}"));
        for w in writers {
            let e = w.join().unwrap();
            assert_eq!(
                e.kind(),
                ErrorKind::Fenced,
                "{ctx}: the old owner's commits must end fenced: {e}"
            );
        }
        let acked_now = acked.lock().unwrap().clone();
        let per_tl = |t: usize| acked_now.keys().filter(|(n, _)| *n == tl_name(t)).count();
        assert!(
            (0..TIMELINES).all(|t| per_tl(t) > 0),
            "{ctx}: every timeline acknowledged something"
        );
        check_acked(&next, &acked_now, &ctx);
        drop(owner); // dies without a close
        owner = next;
    }
    // The last owner commits a little more and closes cleanly; a fresh node reads everything.
    let tl = owner.timeline(&tl_name(0)).unwrap();
    let mut w = tl.writer().unwrap();
    let lsn = tl.last_record_lsn().0 + 1;
    w.put(&key(lsn), Lsn(lsn), Value::image(value(&tl_name(0), lsn)))
        .unwrap();
    w.finish_write(Lsn(lsn)).unwrap();
    acked
        .lock()
        .unwrap()
        .insert((tl_name(0), lsn), value(&tl_name(0), lsn));
    drop(w);
    assert_eq!(tl.remote_wal_lsn(), Lsn(lsn));
    block_on(owner.close()).unwrap();
    let last = tempfile::tempdir().unwrap();
    let reader = Store::open_blocking(options(last.path(), remote(), "reader")).unwrap();
    check_acked(
        &reader,
        &acked.lock().unwrap(),
        &format!("{} after close", backend.name),
    );
    block_on(reader.close()).unwrap();
    // Closed cleanly with everything indexed: no WAL chunk is left behind.
    let chunks = on_tokio(backend.remote().list("wal")).unwrap();
    assert!(
        chunks.is_empty(),
        "{}: chunks left: {chunks:?}",
        backend.name
    );
}

#[test]
fn takeover_keeps_every_acknowledged_commit_local() {
    takeover_keeps_every_acknowledged_commit(&Backend::local(unique_prefix("wal", "takeover")));
}

#[test]
fn takeover_keeps_every_acknowledged_commit_s3() {
    if let Some(b) = Backend::s3(unique_prefix("wal", "takeover")) {
        takeover_keeps_every_acknowledged_commit(&b);
    }
}

#[test]
fn takeover_keeps_every_acknowledged_commit_azure() {
    if let Some(b) = Backend::azure(unique_prefix("wal", "takeover")) {
        takeover_keeps_every_acknowledged_commit(&b);
    }
}

/// Given an object store that fails a third of the requests before they happen, loses a tenth
/// of the responses after, and delays some, with only three tries per request, when a node
/// commits at the remote level, then some commits fail, and every commit that succeeded reads
/// back on a node that attaches (without faults) after the writer was dropped without a close.
#[test]
fn a_commit_at_the_remote_level_succeeds_only_when_its_chunk_is_there() {
    let backend = Backend::local(unique_prefix("wal", "faults"));
    let seed = seed_from_env_or_clock("STRATAKV_REMOTE_WAL_SEED");
    eprintln!("STRATAKV_REMOTE_WAL_SEED={seed}");
    let faulty = Arc::new(FaultyObjectStore::new(
        backend.store.clone(),
        FaultConfig::new(seed)
            .with_errors(0.3)
            .with_dropped_responses(0.1)
            .with_latency(0.2, Duration::from_millis(20)),
    ));
    faulty.set_enabled(false);
    let dir = tempfile::tempdir().unwrap();
    let remote = backend
        .remote_on(faulty.clone())
        .with_retry_policy(fast_retry(3));
    let store = Store::open_blocking(options(dir.path(), remote, "writer")).unwrap();
    let tl = block_on(store.create_timeline("t0")).unwrap();
    faulty.set_enabled(true);
    let mut w = tl.writer().unwrap();
    let mut acked = Acked::new();
    let mut failed = 0;
    for lsn in 1..=300u64 {
        w.put(&key(lsn), Lsn(lsn), Value::image(value("t0", lsn)))
            .unwrap();
        match w.finish_write(Lsn(lsn)) {
            Ok(()) => {
                acked.insert(("t0".to_string(), lsn), value("t0", lsn));
            }
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::Io),
                    "a failed remote commit is an I/O error: {e}"
                );
                failed += 1;
            }
        }
    }
    eprintln!("{} acknowledged, {failed} failed", acked.len());
    assert!(
        failed > 0,
        "the faults failed no commit: the test proves nothing"
    );
    assert!(!acked.is_empty(), "no commit succeeded");
    drop(w);
    drop(store); // a crash: what is in object storage is all that is left
    let other = tempfile::tempdir().unwrap();
    let reader = Store::open_blocking(options(other.path(), backend.remote(), "reader")).unwrap();
    check_acked(&reader, &acked, "after faults");
    block_on(reader.close()).unwrap();
}

/// The child half of the crash loop: commits at the remote level on `t0` forever, printing
/// each acknowledged LSN, until it is killed.
#[test]
#[ignore = "run by crash_loop as a child process"]
fn crash_loop_child() {
    let Ok(dir) = std::env::var("STRATAKV_CRASH_CHILD_DIR") else {
        return;
    };
    let bucket = std::env::var("STRATAKV_CRASH_CHILD_BUCKET").unwrap();
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&bucket).unwrap());
    let remote = RemoteStorage::new(store, object_store::path::Path::from("crash"))
        .with_retry_policy(fast_retry(50))
        .with_claim_grace(Duration::from_millis(50));
    let store = Store::open_blocking(options(std::path::Path::new(&dir), remote, "child")).unwrap();
    let tl = match store.timeline("t0") {
        Ok(t) => t,
        Err(_) => block_on(store.create_timeline("t0")).unwrap(),
    };
    println!("ready {}", tl.last_record_lsn().0);
    let mut w = tl.writer().unwrap();
    let mut lsn = tl.last_record_lsn().0;
    loop {
        lsn += 1;
        w.put(&key(lsn), Lsn(lsn), Value::image(value("t0", lsn)))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
        println!("acked {lsn}");
    }
}

/// Given a child process committing at the remote level, when it is killed with SIGKILL at a
/// random moment, then a fresh directory attaches and reads every LSN the child reported
/// acknowledged; each cycle's child starts from what the last one left.
#[test]
fn crash_loop() {
    let cycles = env_u64("STRATAKV_CRASH_CYCLES").unwrap_or(4);
    let seed = seed_from_env_or_clock("STRATAKV_REMOTE_WAL_SEED");
    eprintln!("crash loop: {cycles} cycles, STRATAKV_REMOTE_WAL_SEED={seed}");
    let mut rng = Rng::new(seed);
    let bucket = tempfile::tempdir().unwrap();
    let mut acked = Acked::new();
    let exe = std::env::current_exe().unwrap();
    for cycle in 0..cycles {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "crash_loop_child", "--ignored", "--nocapture"])
            .env("STRATAKV_CRASH_CHILD_DIR", dir.path())
            .env("STRATAKV_CRASH_CHILD_BUCKET", bucket.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<u64>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(lsn) = line.strip_prefix("acked ") {
                        lines.lock().unwrap().push(lsn.trim().parse().unwrap());
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(rng.range(300, 900)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let got = lines.lock().unwrap().clone();
        for lsn in &got {
            acked.insert(("t0".to_string(), *lsn), value("t0", *lsn));
        }
        let check = tempfile::tempdir().unwrap();
        let store: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(bucket.path()).unwrap());
        let remote = RemoteStorage::new(store, object_store::path::Path::from("crash"))
            .with_retry_policy(fast_retry(50))
            .with_claim_grace(Duration::from_millis(50));
        let reader = Store::open_blocking(options(check.path(), remote, "checker").read_only(true))
            .unwrap_or_else(|e| panic!("cycle {cycle}: read-only attach: {e}"));
        check_acked(&reader, &acked, &format!("cycle {cycle} (seed {seed})"));
        block_on(reader.close()).unwrap();
        eprintln!(
            "cycle {cycle}: the child acknowledged {} commits; {} checked in all",
            got.len(),
            acked.len()
        );
    }
    assert!(!acked.is_empty(), "no child acknowledged anything");
}

/// A writer on `backend` commits LSNs 1 to 5 of timeline `t0` at the remote level, one chunk
/// per commit (each waits for its own), and is dropped without a close.
fn five_chunks_of_a_dead_writer(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_blocking(
        options(dir.path(), backend.remote(), "writer").background_period(None),
    )
    .unwrap();
    let tl = block_on(store.create_timeline("t0")).unwrap();
    let mut w = tl.writer().unwrap();
    for lsn in 1..=5u64 {
        w.put(&key(lsn), Lsn(lsn), Value::image(value("t0", lsn)))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
    }
}

/// The commits 1 to `n` of timeline `t0`, one key each, as the tests below write them.
fn commits_of_t0(n: u64) -> Acked {
    (1..=n)
        .map(|lsn| (("t0".to_string(), lsn), value("t0", lsn)))
        .collect()
}

/// Given a node that shipped several chunks and died, when a chunk in the middle is missing or
/// one is damaged, then attaching fails with `Corruption` naming it, never a silent gap.
#[test]
fn a_missing_or_damaged_chunk_fails_the_attach_naming_it() {
    for damage in ["missing", "torn"] {
        let backend = Backend::local(unique_prefix("wal", damage));
        five_chunks_of_a_dead_writer(&backend);
        let remote = backend.remote();
        let chunks = on_tokio(remote.list("wal")).unwrap();
        assert!(chunks.len() >= 3, "{damage}: chunks {chunks:?}");
        let victim = chunks[chunks.len() / 2].0.clone();
        match damage {
            "missing" => on_tokio(remote.delete(&victim)).unwrap(),
            _ => {
                let bytes = on_tokio(remote.download(&victim)).unwrap();
                let location = remote.location(&victim).unwrap();
                let mut raw = bytes.to_vec();
                raw.truncate(raw.len() - 3); // torn: the trailer no longer matches
                on_tokio(backend.store.put(&location, raw.into())).unwrap();
            }
        }
        let other = tempfile::tempdir().unwrap();
        let e =
            Store::open_blocking(options(other.path(), backend.remote(), "reader")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{damage}: {e}");
        let name = victim.rsplit('/').next().unwrap();
        let seq = &name[..16];
        assert!(e.to_string().contains(seq), "{damage}: {e} names {victim}");
    }
}

/// An object store that meddles: its listings miss `hidden` while `misses` lasts, as a
/// listing that ran beside the owner's deletions can (it showed a chunk deleted after it was
/// listed and missed the next one, deleted before the listing reached it); and its puts of
/// objects named `meddled_stem-…` (timeline indexes unless told) pass, wait or fail as
/// `index_puts` says; the first download of `gone_once` finds it missing, as a download just
/// after the owner deleted a chunk it had listed does.
#[derive(Debug)]
struct Meddling {
    inner: Arc<dyn object_store::ObjectStore>,
    hidden: Option<object_store::path::Path>,
    gone_once: Mutex<Option<object_store::path::Path>>,
    misses: std::sync::atomic::AtomicU32,
    meddled_stem: &'static str,
    index_puts: Arc<std::sync::atomic::AtomicU8>,
}

/// What [`Meddling`] does with a put of a meddled object.
const INDEX_PASSES: u8 = 0;
const INDEX_WAITS: u8 = 1;
const INDEX_FAILS: u8 = 2;

impl Meddling {
    fn new(inner: Arc<dyn object_store::ObjectStore>) -> Meddling {
        Meddling {
            inner,
            hidden: None,
            gone_once: Mutex::default(),
            misses: std::sync::atomic::AtomicU32::new(0),
            meddled_stem: "index-",
            index_puts: Arc::default(),
        }
    }
}

impl std::fmt::Display for Meddling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Meddling({})", self.inner)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Meddling {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        use std::sync::atomic::Ordering;
        let is_index = location
            .filename()
            .is_some_and(|f| f.starts_with(self.meddled_stem));
        // One reading of `index_puts` decides each step: waiting, then failing or passing.
        if is_index {
            loop {
                match self.index_puts.load(Ordering::Acquire) {
                    INDEX_WAITS => tokio::time::sleep(Duration::from_millis(5)).await,
                    INDEX_FAILS => {
                        return Err(object_store::Error::Generic {
                            store: "Meddling",
                            source: format!("index puts fail: {location}").into(),
                        });
                    }
                    _ => break,
                }
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        let gone = {
            let mut g = self.gone_once.lock().unwrap();
            g.take_if(|p| p == location).is_some()
        };
        if gone {
            return Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: "deleted after it was listed".into(),
            });
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        use futures::StreamExt;
        use std::sync::atomic::Ordering;
        let Some(hidden) = self.hidden.clone() else {
            return self.inner.list(prefix);
        };
        let covers = prefix.is_none_or(|p| hidden.prefix_matches(p));
        let miss = covers
            && self
                .misses
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
        self.inner
            .list(prefix)
            .filter(move |m| {
                let keep = !(miss && m.as_ref().is_ok_and(|m| m.location == hidden));
                std::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// The name of a chunk in the middle of [`five_chunks_of_a_dead_writer`]'s.
fn a_middle_chunk_of_a_dead_writer(backend: &Backend) -> String {
    five_chunks_of_a_dead_writer(backend);
    let chunks = on_tokio(backend.remote().list("wal")).unwrap();
    assert!(chunks.len() >= 3, "chunks {chunks:?}");
    chunks[chunks.len() / 2].0.clone()
}

/// Given a node that shipped several chunks and died, when the WAL listings of the node that
/// attaches miss a chunk in the middle (a listing is no snapshot: beside the owner's deletions
/// it can), then the attach reads the chunks again and replays every commit while the miss
/// is passing; and when every listing misses it, the attach fails with `Corruption` naming it.
#[test]
fn a_listing_that_misses_a_chunk_is_read_again() {
    for (misses, passes) in [(1, true), (3, true), (u32::MAX, false)] {
        let backend = Backend::local(unique_prefix("wal", "listing"));
        let victim = a_middle_chunk_of_a_dead_writer(&backend);
        let wrapped = Arc::new(Meddling {
            hidden: Some(backend.remote().location(&victim).unwrap()),
            misses: std::sync::atomic::AtomicU32::new(misses),
            ..Meddling::new(backend.store.clone())
        });
        let other = tempfile::tempdir().unwrap();
        let opened =
            Store::open_blocking(options(other.path(), backend.remote_on(wrapped), "reader"));
        if !passes {
            let e = opened.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
            let seq = &victim.rsplit('/').next().unwrap()[..16];
            assert!(e.to_string().contains(seq), "{e} names {victim}");
            continue;
        }
        let reader = opened.unwrap_or_else(|e| panic!("{misses} missed listings: {e}"));
        check_acked(
            &reader,
            &commits_of_t0(5),
            &format!("{misses} missed listings"),
        );
        block_on(reader.close()).unwrap();
    }
}

/// Given a dead writer's chunks, when a read-only open finds one it listed gone at its
/// download (as when the owner deletes a chunk an index covers while the open reads them),
/// then the open lists and reads the chunks again and serves every commit; it used to fail
/// with `NotFound` ("open again"), and a secondary's few quick tries at opening could each meet
/// one of a busy owner's deletions (CI's forced-failover test did).
#[test]
fn a_read_only_open_that_finds_a_listed_chunk_gone_lists_again() {
    let backend = Backend::local(unique_prefix("wal", "vanished"));
    let victim = a_middle_chunk_of_a_dead_writer(&backend);
    let wrapped = Arc::new(Meddling {
        gone_once: Mutex::new(Some(backend.remote().location(&victim).unwrap())),
        ..Meddling::new(backend.store.clone())
    });
    let other = tempfile::tempdir().unwrap();
    let reader = Store::open_blocking(
        options(other.path(), backend.remote_on(wrapped.clone()), "reader").read_only(true),
    )
    .unwrap_or_else(|e| panic!("a read-only open beside a deleted chunk: {e}"));
    assert!(
        wrapped.gone_once.lock().unwrap().is_none(),
        "the download found {victim} gone"
    );
    check_acked(&reader, &commits_of_t0(5), "a chunk gone once");
    block_on(reader.close()).unwrap();
}

/// Given an owner `z` whose chunk lands after its successor `a` listed (stale: `a` started at
/// its number), and `a`, itself superseded by `b`, whose chunk lands after `b` listed, when a
/// fourth node attaches, then neither late chunk is replayed: `b` started at the first number
/// after the last *valid* chunk, so `a`'s late chunk (numbered like `z`'s stale one) is below no
/// start and counts as written after `b` began. (Starting above every chunk listed, stale ones
/// included, `b` began above `a`'s late chunk, which then read as valid: CI's handover model
/// saw an owner come up with a fenced node's commits.)
#[test]
fn a_fenced_owners_late_chunk_is_never_replayed_even_beside_an_older_stale_one() {
    let backend = Backend::local(unique_prefix("wal", "late"));
    let quiet = |dir: &std::path::Path, node: &str| {
        options(dir, backend.remote(), node)
            .background_period(None)
            .remote_wal_interval(Duration::from_secs(3600))
    };
    let commit = |w: &mut stratakv::TimelineWriter, lsn: u64| {
        w.put(&key(lsn), Lsn(lsn), Value::image(value("t0", lsn)))
            .unwrap();
        w.finish_write_with(Lsn(lsn), Durability::Remote)
    };
    let (zdir, adir, bdir, cdir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let z = Store::open_blocking(quiet(zdir.path(), "z")).unwrap();
    let ztl = block_on(z.create_timeline("t0")).unwrap();
    let mut zw = ztl.writer().unwrap();
    for lsn in 1..=2 {
        commit(&mut zw, lsn).unwrap();
    }
    block_on(z.wait_for_upload()).unwrap();
    let a = Store::open_blocking(quiet(adir.path(), "a")).unwrap();
    block_on(a.wait_for_upload()).unwrap();
    // z's next chunk lands after a's listing; z learns it is fenced.
    assert_eq!(commit(&mut zw, 3).unwrap_err().kind(), ErrorKind::Fenced);
    let b = Store::open_blocking(quiet(bdir.path(), "b")).unwrap();
    block_on(b.wait_for_upload()).unwrap();
    // a's first chunk lands after b's listing; a learns it is fenced.
    let atl = a.timeline("t0").unwrap();
    let mut aw = atl.writer().unwrap();
    assert_eq!(commit(&mut aw, 100).unwrap_err().kind(), ErrorKind::Fenced);
    let chunks = on_tokio(backend.remote().list("wal")).unwrap();
    // (b deleted z's stale chunk when it started shipping.)
    assert!(
        chunks.iter().any(|(n, _)| n.ends_with("-00000002")),
        "a's late chunk: {chunks:?}"
    );
    let blrl = b.timeline("t0").unwrap().last_record_lsn();
    assert_eq!(blrl, Lsn(2));
    drop((zw, aw));
    drop((z, a, b));
    let c = Store::open_blocking(quiet(cdir.path(), "c")).unwrap();
    let ctl = c.timeline("t0").unwrap();
    assert_eq!(ctl.last_record_lsn(), blrl, "chunks {chunks:?}");
    assert_eq!(
        ctl.get_blocking(&key(2), Lsn(2)).unwrap().as_deref(),
        Some(&value("t0", 2)[..])
    );
    block_on(c.close()).unwrap();
}

/// Given a node whose commits at the local level never reached object storage, restarted on
/// its own directory (it replays them from its local log), when it commits at the remote level
/// and dies, then a node that attaches holds the earlier commits too: an acknowledged remote
/// commit means everything before it is in object storage. (The restart shipped only its new
/// commits, and the attach came up with a hole below the acknowledged one — seen in CI's
/// handover model on S3 as an older value read at an LSN the new owner claimed to hold.)
#[test]
fn commits_replayed_from_the_local_log_are_shipped_before_new_ones() {
    let backend = Backend::local(unique_prefix("wal", "replayed"));
    let dir = tempfile::tempdir().unwrap();
    let quiet = || {
        options(dir.path(), backend.remote(), "n")
            .durability(Durability::Local)
            .background_period(None)
            .remote_wal_interval(Duration::from_secs(3600))
    };
    {
        let store = Store::open_blocking(quiet()).unwrap();
        let tl = block_on(store.create_timeline("t0")).unwrap();
        block_on(store.wait_for_upload()).unwrap();
        let mut w = tl.writer().unwrap();
        for lsn in 1..=3u64 {
            w.put(&key(lsn), Lsn(lsn), Value::image(value("t0", lsn)))
                .unwrap();
            w.finish_write(Lsn(lsn)).unwrap();
        }
        // Dropped without a close: 1 to 3 are in the local log only.
    }
    {
        let store = Store::open_blocking(quiet()).unwrap();
        let tl = store.timeline("t0").unwrap();
        assert_eq!(tl.last_record_lsn(), Lsn(3), "replayed from the local log");
        block_on(store.wait_for_upload()).unwrap();
        let mut w = tl.writer().unwrap();
        w.put(&key(4), Lsn(4), Value::image(value("t0", 4)))
            .unwrap();
        w.finish_write_with(Lsn(4), Durability::Remote).unwrap();
        // Dropped without a close: the node is gone.
    }
    let other = tempfile::tempdir().unwrap();
    let attached =
        Store::open_blocking(options(other.path(), backend.remote(), "m").background_period(None))
            .unwrap();
    assert_eq!(attached.timeline("t0").unwrap().last_record_lsn(), Lsn(4));
    check_acked(&attached, &commits_of_t0(4), "attached after the restart");
    block_on(attached.close()).unwrap();
}

/// Given a node that flushed commits 1 to 3 into layers whose index never reached object
/// storage (its index puts failed) and stopped, when it restarts on its directory, then a
/// commit at the remote level is acknowledged only once the opening upload has put those
/// layers there: while that upload fails, the commit fails; while it waits, so does the
/// commit; and a node that attaches after the restarted one dies reads every commit.
/// (Acknowledged as soon as its own chunk landed, the attach came up with the new commits and
/// without 1 to 3: a hole below an acknowledged commit.) `wait_remote_durable` fails as the
/// commit does, instead of waiting for good.
#[test]
fn a_remote_commit_after_a_restart_waits_for_the_layers_it_opened_with() {
    use std::sync::atomic::Ordering;
    let backend = Backend::local(unique_prefix("wal", "opening"));
    let dir = tempfile::tempdir().unwrap();
    let meddling = Arc::new(Meddling::new(backend.store.clone()));
    let index_puts = meddling.index_puts.clone();
    let quiet = || {
        options(dir.path(), backend.remote_on(meddling.clone()), "n")
            .durability(Durability::Local)
            .background_period(None)
            .remote_wal_interval(Duration::from_secs(3600))
    };
    let commit = |w: &mut stratakv::TimelineWriter, lsn: u64, durability| {
        w.put(&key(lsn), Lsn(lsn), Value::image(value("t0", lsn)))
            .unwrap();
        w.finish_write_with(Lsn(lsn), durability)
    };
    {
        let store = Store::open_blocking(quiet()).unwrap();
        let tl = block_on(store.create_timeline("t0")).unwrap();
        block_on(store.wait_for_upload()).unwrap();
        index_puts.store(INDEX_FAILS, Ordering::Release);
        let mut w = tl.writer().unwrap();
        for lsn in 1..=3 {
            commit(&mut w, lsn, Durability::Local).unwrap();
        }
        block_on(tl.flush()).unwrap();
        // Dropped without a close: 1 to 3 are in local layers only.
    }
    {
        let store = Store::open_blocking(quiet()).unwrap();
        let tl = store.timeline("t0").unwrap();
        assert_eq!(tl.disk_consistent_lsn(), Lsn(3));
        let mut w = tl.writer().unwrap();
        let e = commit(&mut w, 4, Durability::Remote).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io, "{e}");
        assert!(e.to_string().contains("index puts fail"), "{e}");
        assert_eq!(tl.remote_wal_lsn(), Lsn(0), "1 to 3 are not safe");
        let e = block_on(tl.wait_remote_durable(Lsn(4))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io, "{e}");

        index_puts.store(INDEX_WAITS, Ordering::Release);
        // A put that read "fail" just before may still be reporting its pass's failure.
        std::thread::sleep(Duration::from_millis(200));
        std::thread::scope(|s| {
            let acked = s.spawn(|| commit(&mut w, 5, Durability::Remote));
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                !acked.is_finished(),
                "acknowledged while the opening upload waits"
            );
            index_puts.store(INDEX_PASSES, Ordering::Release);
            acked.join().unwrap().unwrap();
        });
        assert!(tl.remote_wal_lsn() >= Lsn(5));
        // Dropped without a close: the node is gone.
    }
    let other = tempfile::tempdir().unwrap();
    let attached =
        Store::open_blocking(options(other.path(), backend.remote(), "m").background_period(None))
            .unwrap();
    assert_eq!(attached.timeline("t0").unwrap().last_record_lsn(), Lsn(5));
    check_acked(&attached, &commits_of_t0(5), "attached after the restart");
    block_on(attached.close()).unwrap();
}

/// Given a store whose index puts wait, when a timeline is created at the local level and a
/// commit on it asks for the remote level, then the commit is acknowledged only once the
/// timeline's index and the catalog naming it are in object storage, and a node attaching
/// after the first one dies finds the timeline and the commit. (Acknowledged when its chunk
/// landed, the attach did not know the timeline and skipped the chunk.)
#[test]
fn a_remote_commit_on_a_new_timeline_waits_for_the_catalog_naming_it() {
    use std::sync::atomic::Ordering;
    let backend = Backend::local(unique_prefix("wal", "fresh"));
    let dir = tempfile::tempdir().unwrap();
    let meddling = Arc::new(Meddling::new(backend.store.clone()));
    {
        let store = Store::open_blocking(
            options(dir.path(), backend.remote_on(meddling.clone()), "n")
                .durability(Durability::Local)
                .background_period(None),
        )
        .unwrap();
        meddling.index_puts.store(INDEX_WAITS, Ordering::Release);
        let tl = block_on(store.create_timeline("t0")).unwrap();
        let mut w = tl.writer().unwrap();
        w.put(&key(1), Lsn(1), Value::image(value("t0", 1)))
            .unwrap();
        std::thread::scope(|s| {
            let acked = s.spawn(|| w.finish_write_with(Lsn(1), Durability::Remote));
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                !acked.is_finished(),
                "acknowledged before object storage knew the timeline"
            );
            meddling.index_puts.store(INDEX_PASSES, Ordering::Release);
            acked.join().unwrap().unwrap();
        });
        // Dropped without a close: the node is gone.
    }
    let other = tempfile::tempdir().unwrap();
    let attached =
        Store::open_blocking(options(other.path(), backend.remote(), "m").background_period(None))
            .unwrap();
    check_acked(
        &attached,
        &commits_of_t0(1),
        "attached after the creator died",
    );
    block_on(attached.close()).unwrap();
}

/// Given a restarted node whose opening upload waits, when another node takes the store while
/// a commit at the remote level waits for that upload, then the commit fails as fenced (at
/// once, or once the upload goes on), instead of waiting for good.
#[test]
fn a_commit_waiting_for_the_opening_upload_fails_when_the_node_is_fenced() {
    use std::sync::atomic::Ordering;
    let backend = Backend::local(unique_prefix("wal", "fenced-wait"));
    let dir = tempfile::tempdir().unwrap();
    let meddling = Arc::new(Meddling::new(backend.store.clone()));
    let quiet = || {
        options(dir.path(), backend.remote_on(meddling.clone()), "n")
            .durability(Durability::Local)
            .background_period(None)
    };
    {
        let store = Store::open_blocking(quiet()).unwrap();
        let tl = block_on(store.create_timeline("t0")).unwrap();
        block_on(store.wait_for_upload()).unwrap();
        meddling.index_puts.store(INDEX_FAILS, Ordering::Release);
        let mut w = tl.writer().unwrap();
        w.put(&key(1), Lsn(1), Value::image(value("t0", 1)))
            .unwrap();
        w.finish_write(Lsn(1)).unwrap();
        block_on(tl.flush()).unwrap();
    }
    meddling.index_puts.store(INDEX_WAITS, Ordering::Release);
    let store = Store::open_blocking(quiet()).unwrap();
    let tl = store.timeline("t0").unwrap();
    let mut w = tl.writer().unwrap();
    w.put(&key(2), Lsn(2), Value::image(value("t0", 2)))
        .unwrap();
    std::thread::scope(|s| {
        let acked = s.spawn(|| w.finish_write_with(Lsn(2), Durability::Remote));
        let other = tempfile::tempdir().unwrap();
        let taker = Store::open_blocking(
            options(other.path(), backend.remote(), "m").background_period(None),
        )
        .unwrap();
        // The commit may already have failed (the uploader checked the generation before
        // the index put and found the taker's); it must never be acknowledged.
        meddling.index_puts.store(INDEX_PASSES, Ordering::Release);
        let e = acked.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
        block_on(taker.close()).unwrap();
    });
}

/// Given a node whose catalog puts failed after it created a timeline (the timeline's index
/// is in object storage, the catalog naming it is not) and that then stopped, when it restarts
/// on its directory, then a commit at the remote level on that timeline waits for the catalog
/// upload, and a node attaching after it dies finds the timeline and both commits. (The
/// timeline had an index as new as its layers, so the restart did not count it as missing:
/// the commit was acknowledged while a node attaching would skip its chunk.)
#[test]
fn a_timeline_the_uploaded_catalog_does_not_name_waits_after_a_restart() {
    use std::sync::atomic::Ordering;
    let backend = Backend::local(unique_prefix("wal", "unnamed"));
    let dir = tempfile::tempdir().unwrap();
    let meddling = Arc::new(Meddling {
        meddled_stem: "catalog-",
        ..Meddling::new(backend.store.clone())
    });
    let quiet = || {
        options(dir.path(), backend.remote_on(meddling.clone()), "n")
            .durability(Durability::Local)
            .background_period(None)
    };
    {
        let store = Store::open_blocking(quiet()).unwrap();
        block_on(store.wait_for_upload()).unwrap();
        meddling.index_puts.store(INDEX_FAILS, Ordering::Release);
        let tl = block_on(store.create_timeline("t0")).unwrap();
        let mut w = tl.writer().unwrap();
        w.put(&key(1), Lsn(1), Value::image(value("t0", 1)))
            .unwrap();
        w.finish_write(Lsn(1)).unwrap();
        block_on(tl.flush()).unwrap();
        // The index (uploaded before the catalog in each pass) holds the flushed layer.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tl.remote_consistent_lsn() < Lsn(1) {
            assert!(
                std::time::Instant::now() < deadline,
                "the index never caught up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Dropped without a close: the node is gone.
    }
    meddling.index_puts.store(INDEX_WAITS, Ordering::Release);
    {
        let store = Store::open_blocking(quiet()).unwrap();
        let tl = store.timeline("t0").unwrap();
        let mut w = tl.writer().unwrap();
        w.put(&key(2), Lsn(2), Value::image(value("t0", 2)))
            .unwrap();
        std::thread::scope(|s| {
            let acked = s.spawn(|| w.finish_write_with(Lsn(2), Durability::Remote));
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                !acked.is_finished(),
                "acknowledged before the catalog named the timeline"
            );
            meddling.index_puts.store(INDEX_PASSES, Ordering::Release);
            acked.join().unwrap().unwrap();
        });
    }
    let other = tempfile::tempdir().unwrap();
    let attached =
        Store::open_blocking(options(other.path(), backend.remote(), "m").background_period(None))
            .unwrap();
    check_acked(&attached, &commits_of_t0(2), "attached after the restart");
    block_on(attached.close()).unwrap();
}
