//! Opening on object storage without waiting: a fresh store, a clean restart, a restart after a
//! crash and a read-only open take no claim grace; only a takeover from a node that did not
//! release its generation waits it. And a read-only open claims nothing, writes nothing and
//! leaves the owner writing. Each runs on the local-folder object store and on S3 (moto).

mod common;

use std::time::{Duration, Instant};

use common::backends::{Backend, on_tokio, unique_prefix};
use futures::executor::block_on;
use stratakv::remote::{Generation, RemoteStorage};
use stratakv::{ErrorKind, Lsn, RestorePoint, Store, StoreOptions, Value};

fn value(key: u32, lsn: u64) -> Vec<u8> {
    format!("k{key}@{lsn}").into_bytes()
}

fn key(k: u32) -> Vec<u8> {
    format!("key{k:04}").into_bytes()
}

/// `backend`'s storage with a claim grace of `grace`.
fn remote(backend: &Backend, grace: Duration) -> RemoteStorage {
    backend.remote().with_claim_grace(grace)
}

fn options(dir: &std::path::Path, remote: RemoteStorage, node: &str) -> StoreOptions {
    StoreOptions::new(dir)
        .remote(remote)
        .node_id(node)
        .background_period(None)
}

/// Opens and reports how long the open took.
fn timed_open(options: StoreOptions) -> (Store, Duration) {
    let start = Instant::now();
    let store = Store::open_blocking(options).unwrap();
    (store, start.elapsed())
}

/// Writes `keys` keys at LSNs `from..from+keys` on `main`, flushes and waits for the upload.
fn write_and_upload(store: &Store, from: u64, keys: u32) {
    let main = match store.timeline("main") {
        Ok(t) => t,
        Err(_) => block_on(store.create_timeline("main")).unwrap(),
    };
    let mut w = main.writer().unwrap();
    for i in 0..keys {
        let lsn = from + u64::from(i);
        w.put(&key(i), Lsn(lsn), Value::image(value(i, lsn)))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
    }
    drop(w);
    block_on(main.flush()).unwrap();
    block_on(store.wait_for_upload()).unwrap();
}

/// Given a grace long enough to be seen (3 s), when a store opens fresh, restarts after a clean
/// close, is taken over by another node after a clean close, and restarts after a crash (a
/// drop without close) on its own directory, then none of those opens waits; when a third node
/// takes over from one that crashed, it waits the full grace — the one case where a deletion
/// validated under the old generation may still land.
fn claim_waits_only_when_taking_over_from_a_node_that_did_not_release(backend: &Backend) {
    let long = Duration::from_secs(3);
    let (a_dir, b_dir, c_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let storage = remote(backend, long);

    // A fresh store: no earlier generation at all.
    let (a, took) = timed_open(options(a_dir.path(), storage.clone(), "a"));
    assert_eq!(a.generation(), Some(Generation(1)));
    assert_eq!(
        a.claim_wait(),
        Duration::ZERO,
        "{}: fresh store",
        backend.name
    );
    assert!(took < long, "{}: a fresh open took {took:?}", backend.name);
    write_and_upload(&a, 1, 20);
    block_on(a.close()).unwrap();
    assert!(on_tokio(storage.is_released(Generation(1))).unwrap());

    // The same node again, after a clean close.
    let (a, took) = timed_open(options(a_dir.path(), storage.clone(), "a"));
    assert_eq!(
        a.claim_wait(),
        Duration::ZERO,
        "{}: clean restart",
        backend.name
    );
    assert!(
        took < long,
        "{}: a clean restart took {took:?}",
        backend.name
    );
    block_on(a.close()).unwrap();

    // Another node, after a clean close: the release says nothing is in flight.
    let (b, took) = timed_open(options(b_dir.path(), storage.clone(), "b"));
    assert_eq!(
        b.claim_wait(),
        Duration::ZERO,
        "{}: clean handover",
        backend.name
    );
    assert!(
        took < long,
        "{}: a clean handover took {took:?}",
        backend.name
    );
    write_and_upload(&b, 21, 20);
    let crashed = b.generation().unwrap();
    drop(b); // a crash: no close, no release
    assert!(!on_tokio(storage.is_released(crashed)).unwrap());

    // That node restarts on its own directory: its crashed process is gone (the lock is free).
    let (b, took) = timed_open(options(b_dir.path(), storage.clone(), "b"));
    assert_eq!(
        b.claim_wait(),
        Duration::ZERO,
        "{}: crash restart",
        backend.name
    );
    assert!(
        took < long,
        "{}: a crash restart took {took:?}",
        backend.name
    );
    assert_eq!(
        b.timeline("main").unwrap().last_record_lsn(),
        Lsn(40),
        "{}",
        backend.name
    );
    drop(b); // crashes again

    // A third node takes over from the crashed one: it cannot know the deletions are done.
    let short = Duration::from_millis(700);
    let (c, took) = timed_open(options(c_dir.path(), remote(backend, short), "c"));
    assert_eq!(
        c.claim_wait(),
        short,
        "{}: takeover after a crash",
        backend.name
    );
    assert!(
        took >= short,
        "{}: the takeover took only {took:?}",
        backend.name
    );
    let main = c.timeline("main").unwrap();
    for i in 0..20 {
        assert_eq!(
            main.get_blocking(&key(i), Lsn(40)).unwrap().unwrap(),
            value(i, 21 + u64::from(i)),
            "{}: key {i}",
            backend.name
        );
    }
    block_on(c.close()).unwrap();
}

#[test]
fn claim_waits_only_when_taking_over_from_a_node_that_did_not_release_local() {
    claim_waits_only_when_taking_over_from_a_node_that_did_not_release(&Backend::local(
        unique_prefix("open", "claim-wait"),
    ));
}

#[test]
fn claim_waits_only_when_taking_over_from_a_node_that_did_not_release_s3() {
    if let Some(b) = Backend::s3(unique_prefix("open", "claim-wait")) {
        claim_waits_only_when_taking_over_from_a_node_that_did_not_release(&b);
    }
}

/// Every object under the backend's prefix, with its size, but the owner's WAL chunks (its
/// shipper deletes them in the background once indexes cover them) and its heartbeat (which it
/// rewrites every second, larger once it has timelines to report).
fn objects(storage: &RemoteStorage, owner: Generation) -> Vec<(String, u64)> {
    let beat = format!("heartbeats/{owner}");
    let mut all = on_tokio(storage.list("")).unwrap();
    all.retain(|(name, _)| !name.starts_with("wal/") && *name != beat);
    all
}

/// Given an owner that has uploaded 50 commits, when a read-only store opens on an empty
/// directory while the owner keeps writing, then the open claims nothing, waits nothing and
/// writes no object; it reads every key at every uploaded LSN and refuses every call that
/// would write with `ReadOnly`; the owner keeps its generation, uploads on unfenced, and a
/// second read-only open on the same cache sees the owner's newer state.
fn a_read_only_open_leaves_the_owner_untouched(backend: &Backend) {
    let long = Duration::from_secs(3);
    let storage = remote(backend, long);
    let (owner_dir, ro_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let owner = Store::open_blocking(options(owner_dir.path(), storage.clone(), "owner")).unwrap();
    write_and_upload(&owner, 1, 50);
    let owner_generation = owner.generation().unwrap();
    let before = objects(&storage, owner_generation);

    let ro_options = || options(ro_dir.path(), storage.clone(), "reader").read_only(true);
    let (ro, took) = timed_open(ro_options());
    assert_eq!(ro.generation(), None, "{}", backend.name);
    assert_eq!(ro.claim_wait(), Duration::ZERO, "{}", backend.name);
    assert!(
        took < long,
        "{}: a read-only open took {took:?}",
        backend.name
    );
    let main = ro.timeline("main").unwrap();
    assert_eq!(main.last_record_lsn(), Lsn(50), "{}", backend.name);
    for lsn in [1u64, 25, 50] {
        for i in 0..50u32 {
            let want = (u64::from(i) < lsn).then(|| value(i, u64::from(i) + 1));
            let got = main.get_blocking(&key(i), Lsn(lsn)).unwrap();
            assert_eq!(
                got.as_deref(),
                want.as_deref(),
                "{}: key {i} at {lsn}",
                backend.name
            );
        }
    }
    let e = main.get_now(&key(0), Lsn(51)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LsnNotYetAvailable, "{e}");

    // Everything that would write is refused, and names what it refused.
    let read_only = |r: stratakv::Result<()>, what: &str| {
        let e = r.unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::ReadOnly,
            "{}: {what}: {e}",
            backend.name
        );
    };
    read_only(main.writer().map(drop), "writer");
    read_only(block_on(ro.create_timeline("other")).map(drop), "create");
    read_only(block_on(ro.branch("b", &main, Lsn(10))).map(drop), "branch");
    read_only(block_on(ro.delete_timeline("main")), "delete");
    read_only(
        block_on(ro.restore("main", RestorePoint::Lsn(Lsn(10)))).map(drop),
        "restore",
    );
    read_only(block_on(main.gc()).map(drop), "gc");
    read_only(block_on(main.compact()).map(drop), "compact");
    read_only(block_on(main.create_image_layer()).map(drop), "image");
    read_only(
        main.lease(Lsn(10), Duration::from_secs(60)).map(drop),
        "lease",
    );
    assert_eq!(block_on(main.flush()).unwrap(), Lsn(50), "{}", backend.name);
    block_on(ro.settle()).unwrap();
    assert_eq!(
        objects(&storage, owner_generation),
        before,
        "{}: the read-only open wrote",
        backend.name
    );

    // The owner writes on, unfenced.
    write_and_upload(&owner, 51, 50);
    assert_eq!(owner.generation(), Some(owner_generation));
    assert!(owner.upload_error().is_none(), "{}", backend.name);
    on_tokio(storage.check_generation(owner_generation)).unwrap();
    // The reader still serves what it opened with.
    assert_eq!(
        main.get_blocking(&key(3), Lsn(50)).unwrap().unwrap(),
        value(3, 4)
    );
    block_on(ro.close()).unwrap();
    assert!(
        objects(&storage, owner_generation)
            .iter()
            .all(|(n, _)| !n.contains("ffffffff")),
        "{}: the read-only store wrote under its reading generation",
        backend.name
    );

    // Its cache opens read-only again, with the owner's newer state.
    let ro = Store::open_blocking(ro_options()).unwrap();
    let main = ro.timeline("main").unwrap();
    assert_eq!(main.last_record_lsn(), Lsn(100), "{}", backend.name);
    assert_eq!(
        main.get_blocking(&key(3), Lsn(100)).unwrap().unwrap(),
        value(3, 54)
    );
    block_on(ro.close()).unwrap();
    block_on(owner.close()).unwrap();

    // What a read-only open refuses, changing nothing.
    let e =
        Store::open_blocking(options(owner_dir.path(), storage.clone(), "reader").read_only(true))
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("empty directory"), "{e}");
    let e = Store::open_blocking(options(ro_dir.path(), storage.clone(), "writer")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("read-only"), "{e}");
    let e = Store::open_blocking(StoreOptions::new(ro_dir.path()).read_only(true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("needs a remote"), "{e}");
    // The owner's directory still opens as the owner's.
    let owner = Store::open_blocking(options(owner_dir.path(), storage, "owner")).unwrap();
    assert_eq!(owner.timeline("main").unwrap().last_record_lsn(), Lsn(100));
    block_on(owner.close()).unwrap();
}

#[test]
fn a_read_only_open_leaves_the_owner_untouched_local() {
    a_read_only_open_leaves_the_owner_untouched(&Backend::local(unique_prefix(
        "open",
        "read-only",
    )));
}

#[test]
fn a_read_only_open_leaves_the_owner_untouched_s3() {
    if let Some(b) = Backend::s3(unique_prefix("open", "read-only")) {
        a_read_only_open_leaves_the_owner_untouched(&b);
    }
}
