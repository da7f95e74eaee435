//! Readable secondaries and failover, on object storage alone.
//!
//! - A secondary reads exactly what a model says at every applied LSN while the primary
//!   writes, flushes, compacts, runs GC and branches (local folder, S3 on moto, Azure on
//!   Azurite); it never writes an object.
//! - Planned switchover with a writer running loses no acknowledged commit; how long commits
//!   were refused is printed.
//! - Forced failover after the primary's process is killed with SIGKILL (a child process):
//!   the secondary sees the heartbeat stop (suspected, then gone), promotes, and every commit
//!   acknowledged at `Durability::Remote` is there.
//! - Promotion past the maximum lag is refused, naming what would be lost; forced, it goes
//!   through and the old primary, still running, is fenced and changes nothing.

mod common;
use common::follow::{
    MainModel, Model, Straddle, check_timeline, commit_each, idle_primary, key, late_fenced_commit,
    model_get, owner_with_three_commits, primary_options, value,
};
use common::hooked::{HookAt, Hooked};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::backends::{Backend, fast_retry, unique_prefix};
use common::rng::{Rng, seed_from_env_or_clock};
use futures::executor::block_on;
use stratakv::remote::RemoteStorage;
use stratakv::{
    Durability, ErrorKind, Lsn, PrimaryHealth, Promotion, Secondary, SecondaryOptions,
    SecondaryState, Store, StoreOptions, Value,
};

fn secondary_options(dir: &std::path::Path, remote: RemoteStorage) -> SecondaryOptions {
    SecondaryOptions::new(
        StoreOptions::new(dir)
            .remote(remote)
            .node_id("secondary")
            .wait_lsn_timeout(Duration::from_secs(5)),
    )
    .poll_interval(Duration::from_millis(30))
    .confirm_after(Duration::from_millis(600))
}

/// Given a primary that writes two timelines, flushes, compacts, runs GC and branches, when a
/// secondary follows it, then at every poll every read on the secondary at an applied LSN at
/// or above the primary's GC cutoff matches the model, the secondary ends caught up with the
/// primary's safe LSN, and it wrote no object.
fn a_secondary_reads_what_the_model_says(backend: &Backend) {
    let seed = seed_from_env_or_clock("STRATAKV_SECONDARY_SEED");
    eprintln!("{}: STRATAKV_SECONDARY_SEED={seed}", backend.name);
    let mut rng = Rng::new(seed);
    let (pdir, sdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Store::open_blocking(primary_options(pdir.path(), backend.remote())).unwrap();
    let mut model = Model::new();
    let mut writers = BTreeMap::new();
    for name in ["a", "b"] {
        let tl = block_on(primary.create_timeline(name)).unwrap();
        writers.insert(name.to_string(), tl.writer().unwrap());
        model.insert(name.to_string(), BTreeMap::new());
    }
    block_on(primary.wait_for_upload()).unwrap();
    let secondary = Secondary::open(secondary_options(sdir.path(), backend.remote())).unwrap();
    let mut lsn = 0u64;
    let mut checked = 0u64;
    let mut reloads = 0u64;
    let mut stale = 0u64;
    for round in 0..30 {
        for _ in 0..rng.range(5, 40) {
            lsn += 1;
            let name = if rng.chance(50) { "a" } else { "b" };
            let w = writers.get_mut(name).unwrap();
            let mut keys = std::collections::BTreeSet::new();
            for _ in 0..rng.range(1, 4) {
                keys.insert(rng.below(40));
            }
            for k in keys {
                w.put(&key(k), Lsn(lsn), Value::image(value(name, k, lsn)))
                    .unwrap();
                model
                    .get_mut(name)
                    .unwrap()
                    .insert((k, lsn), value(name, k, lsn));
            }
            w.finish_write(Lsn(lsn)).unwrap();
        }
        if rng.chance(20) {
            let name = if rng.chance(50) { "a" } else { "b" };
            let tl = primary.timeline(name).unwrap();
            block_on(tl.flush()).unwrap();
            if rng.chance(50) {
                block_on(tl.compact()).unwrap();
            } else {
                block_on(tl.gc()).unwrap();
            }
        }
        if round == 15 {
            // A branch at the parent's newest commit, which may not be shipped yet: the
            // secondary picks up the new catalog, and reads on the branch wait for the parent.
            let a = primary.timeline("a").unwrap();
            let at = a.last_record_lsn().0;
            let br = block_on(primary.branch("br", &a, Lsn(at))).unwrap();
            let mut versions: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
            for k in 0..40 {
                if let Some(v) = model_get(&model["a"], k, at) {
                    versions.insert((k, at), v);
                }
            }
            model.insert("br".to_string(), versions);
            writers.insert("br".to_string(), br.writer().unwrap());
        }
        let status = secondary.catch_up().unwrap();
        // (A beat late on a loaded machine is only "suspected".)
        assert!(
            matches!(
                status.primary,
                PrimaryHealth::Alive | PrimaryHealth::Suspected
            ),
            "{}: {status:?}",
            backend.name
        );
        for (name, applied) in &status.applied {
            let Ok(mut tl) = secondary.timeline(name) else {
                continue;
            };
            let from = primary.timeline(name).unwrap().gc_cutoff().0.max(1);
            if applied.0 < from {
                continue;
            }
            'reads: for _ in 0..10 {
                let at = rng.range(from, applied.0);
                let k = rng.below(40);
                let got = match tl.get_blocking(&key(k), Lsn(at)) {
                    Ok(v) => v,
                    // GC on the primary moved past it since the cutoff was read.
                    Err(e) if matches!(e.kind(), ErrorKind::BelowGcCutoff) => continue,
                    // The poller reloaded since the handle was taken, and the read (on a
                    // branch whose parent was behind) would have had to wait: a new handle.
                    Err(e) if e.kind() == ErrorKind::Closed => {
                        tl = secondary.timeline(name).unwrap();
                        stale += 1;
                        continue;
                    }
                    // A layer the primary removed since: reload and retry, as documented.
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        // The primary compacts every few milliseconds here: a few tries.
                        let mut tries = 0;
                        loop {
                            tries += 1;
                            reloads += 1;
                            secondary.reload().unwrap();
                            tl = secondary.timeline(name).unwrap();
                            match tl.get_blocking(&key(k), Lsn(at)) {
                                Ok(v) => break v,
                                Err(e) if matches!(e.kind(), ErrorKind::BelowGcCutoff) => {
                                    continue 'reads;
                                }
                                Err(e) if e.kind() == ErrorKind::NotFound && tries < 10 => {}
                                Err(e) => panic!(
                                    "{}: {name} key {k} at {at} after {tries} reloads: {e}",
                                    backend.name
                                ),
                            }
                        }
                    }
                    Err(e) => panic!("{}: {name} key {k} at {at}: {e}", backend.name),
                };
                assert_eq!(
                    got.map(|b| b.to_vec()),
                    model_get(&model[name], k, at),
                    "{}: {name} key {k} at {at} (seed {seed})",
                    backend.name
                );
                checked += 1;
            }
        }
    }
    // Everything shipped; the secondary catches up to it.
    for name in writers.keys() {
        let tl = primary.timeline(name).unwrap();
        block_on(tl.wait_remote_durable(tl.last_record_lsn())).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = secondary.catch_up().unwrap();
        let caught_up = writers.keys().all(|n| {
            status.applied.get(n.as_str()).copied()
                == Some(primary.timeline(n).unwrap().last_record_lsn())
        });
        if caught_up {
            assert_eq!(status.state, SecondaryState::Healthy, "{status:?}");
            assert_eq!(status.lag_lsn, 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: never caught up: {status:?}",
            backend.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{}: {checked} reads checked on the secondary; {reloads} reloads after a layer was removed, {} in all; {stale} waits on a handle a reload replaced",
        backend.name,
        secondary.status().reloads
    );
    assert!(
        checked > 100,
        "{}: only {checked} reads checked",
        backend.name
    );
    drop(writers);
    secondary.close();
    block_on(primary.close()).unwrap();
}

#[test]
fn a_secondary_reads_what_the_model_says_local() {
    a_secondary_reads_what_the_model_says(&Backend::local(unique_prefix("secondary", "model")));
}

#[test]
fn a_secondary_reads_what_the_model_says_s3() {
    if let Some(b) = Backend::s3(unique_prefix("secondary", "model")) {
        a_secondary_reads_what_the_model_says(&b);
    }
}

#[test]
fn a_secondary_reads_what_the_model_says_azure() {
    if let Some(b) = Backend::azure(unique_prefix("secondary", "model")) {
        a_secondary_reads_what_the_model_says(&b);
    }
}

/// Given a writer committing at the remote level, when the primary closes (a planned
/// switchover) and the secondary promotes, then every acknowledged commit is on the new
/// primary, which takes commits at once without the claim grace, and the old writer was told
/// `Closed`.
#[test]
fn planned_switchover_loses_nothing() {
    let backend = Backend::local(unique_prefix("secondary", "switchover"));
    let remote = backend.remote().with_claim_grace(Duration::from_secs(30));
    let (pdir, sdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Store::open_blocking(
        primary_options(pdir.path(), remote.clone()).durability(Durability::Remote),
    )
    .unwrap();
    let tl = block_on(primary.create_timeline("main")).unwrap();
    let secondary = Secondary::open(secondary_options(sdir.path(), remote)).unwrap();
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let writer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            let mut w = tl.writer().unwrap();
            let mut lsn = 0;
            loop {
                lsn += 1;
                let r = w
                    .put(
                        &key(lsn % 50),
                        Lsn(lsn),
                        Value::image(value("main", lsn % 50, lsn)),
                    )
                    .and_then(|()| w.finish_write(Lsn(lsn)));
                match r {
                    Ok(()) => acked.lock().unwrap().push(lsn),
                    Err(e) => return (e, Instant::now()),
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    block_on(primary.close()).unwrap();
    let (err, refused_from) = writer.join().unwrap();
    assert!(
        matches!(err.kind(), ErrorKind::Closed),
        "the old primary's writer is told to retry elsewhere: {err}"
    );
    let status = secondary.catch_up().unwrap();
    assert_eq!(status.primary, PrimaryHealth::Stopped, "{status:?}");
    let new = secondary.promote(Promotion::default()).unwrap();
    assert_eq!(
        new.claim_wait(),
        Duration::ZERO,
        "a clean close released the generation"
    );
    let main = new.timeline("main").unwrap();
    let mut w = main.writer().unwrap();
    let next = main.last_record_lsn().0 + 1;
    w.put(&key(0), Lsn(next), Value::image(b"new".to_vec()))
        .unwrap();
    w.finish_write(Lsn(next)).unwrap();
    let refused = refused_from.elapsed();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    let last = *acked.iter().max().unwrap();
    assert!(next > last, "the new primary holds every acknowledged LSN");
    // Each key's newest acknowledged version, read as of the last one (GC keeps that).
    for k in 0..50 {
        let Some(newest) = acked.iter().filter(|l| **l % 50 == k).max() else {
            continue;
        };
        assert_eq!(
            main.get_blocking(&key(k), Lsn(last)).unwrap().unwrap(),
            value("main", k, *newest),
            "key {k}, acknowledged last at {newest}"
        );
    }
    eprintln!(
        "switchover: {} commits acknowledged, none lost; commits refused for {refused:?} (close, promote, first commit)",
        acked.len()
    );
    drop(w);
    block_on(new.close()).unwrap();
}

/// The child half of the forced failover: a primary committing at the remote level, printing
/// each acknowledged LSN, until it is killed.
#[test]
#[ignore = "run by forced_failover_after_sigkill_loses_nothing as a child process"]
fn failover_child() {
    let Ok(bucket) = std::env::var("STRATAKV_FAILOVER_BUCKET") else {
        return;
    };
    let dir = std::env::var("STRATAKV_FAILOVER_DIR").unwrap();
    let remote = local_remote(&bucket);
    let store = Store::open_blocking(
        primary_options(std::path::Path::new(&dir), remote).durability(Durability::Remote),
    )
    .unwrap();
    let tl = match store.timeline("main") {
        Ok(tl) => tl,
        Err(_) => block_on(store.create_timeline("main")).unwrap(),
    };
    println!("ready");
    let mut w = tl.writer().unwrap();
    for lsn in tl.last_record_lsn().0 + 1.. {
        w.put(&key(lsn), Lsn(lsn), Value::image(value("main", lsn, lsn)))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
        println!("acked {lsn}");
    }
}

fn local_remote(bucket: &str) -> RemoteStorage {
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(bucket).unwrap());
    RemoteStorage::new(store, object_store::path::Path::from("failover"))
        .with_retry_policy(fast_retry(50))
        .with_claim_grace(Duration::from_millis(50))
}

/// A child process running `failover_child` on `bucket`: the process and the thread reading
/// its output, the LSNs it reported acknowledged, and a signal once it is ready.
#[allow(clippy::type_complexity)]
fn spawn_primary(
    bucket: &std::path::Path,
    dir: &std::path::Path,
) -> (
    (std::process::Child, std::thread::JoinHandle<()>),
    Arc<Mutex<Vec<u64>>>,
    std::sync::mpsc::Receiver<()>,
) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "failover_child", "--ignored", "--nocapture"])
        .env("STRATAKV_FAILOVER_BUCKET", bucket)
        .env("STRATAKV_FAILOVER_DIR", dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
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
    ((child, reader), acked, ready_rx)
}

/// Given a primary process committing at the remote level and a secondary following it, when
/// the primary is killed with SIGKILL, then the secondary reports it suspected and then gone,
/// promotes, and every commit the child acknowledged is on the new primary.
#[test]
fn forced_failover_after_sigkill_loses_nothing() {
    let bucket = tempfile::tempdir().unwrap();
    let pdir = tempfile::tempdir().unwrap();
    let ((mut child, reader), acked, ready_rx) = spawn_primary(bucket.path(), pdir.path());
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the child primary started");
    let sdir = tempfile::tempdir().unwrap();
    let bucket_path = bucket.path().to_str().unwrap().to_string();
    let secondary =
        Secondary::open(secondary_options(sdir.path(), local_remote(&bucket_path))).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let before = secondary.catch_up().unwrap().primary;
    assert!(
        matches!(before, PrimaryHealth::Alive | PrimaryHealth::Suspected),
        "{before:?}"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    let killed = Instant::now();
    let mut seen_suspected = false;
    loop {
        let status = secondary.catch_up().unwrap();
        match status.primary {
            PrimaryHealth::Suspected => seen_suspected = true,
            PrimaryHealth::Gone => break,
            _ => {}
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "never gone: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen_suspected, "suspected before gone");
    let detected = killed.elapsed();
    let new = secondary.promote(Promotion::default()).unwrap();
    let main = new.timeline("main").unwrap();
    let mut w = main.writer().unwrap();
    let next = main.last_record_lsn().0 + 1;
    w.put(&key(next), Lsn(next), Value::image(b"after".to_vec()))
        .unwrap();
    w.finish_write(Lsn(next)).unwrap();
    let recovered = killed.elapsed();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the child acknowledged nothing");
    let newest = main.last_record_lsn();
    for lsn in &acked {
        assert_eq!(
            main.get_blocking(&key(*lsn), newest).unwrap().unwrap(),
            value("main", *lsn, *lsn),
            "acknowledged commit {lsn}"
        );
    }
    eprintln!(
        "forced failover: {} acknowledged commits, none lost; gone after {detected:?} (window 600 ms), first commit on the new primary {recovered:?} after the kill",
        acked.len()
    );
    drop(w);
    block_on(new.close()).unwrap();
}

/// Given a primary whose commits are not shipped (a long interval), when the secondary is
/// promoted with a maximum lag of 10 LSN, then it is refused, naming the timeline; forced, the
/// promotion goes through and the old primary, still running, is fenced: its uploads and its
/// next remote-level commit fail with `Fenced`, and nothing it does reaches the new primary.
/// Given a branch whose parent's WAL up to the branch point is not shipped yet, when a
/// secondary that has the branch from the catalog reads it above the branch point, then the
/// read waits for the parent (and `get_now` says it is behind) instead of answering the
/// parent's older version; once the parent's chunk is there, it reads the branch point's.
#[test]
fn a_branch_read_on_a_secondary_waits_for_its_parent() {
    let backend = Backend::local(unique_prefix("secondary", "branch-parent"));
    let (pdir, sdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Store::open_blocking(
        primary_options(pdir.path(), backend.remote())
            .remote_wal_interval(Duration::from_secs(3600))
            .background_period(None),
    )
    .unwrap();
    let a = block_on(primary.create_timeline("a")).unwrap();
    let mut w = a.writer().unwrap();
    w.put(&key(1), Lsn(10), Value::image(b"old".to_vec()))
        .unwrap();
    w.finish_write_with(Lsn(10), Durability::Remote).unwrap();
    w.put(&key(1), Lsn(20), Value::image(b"new".to_vec()))
        .unwrap();
    w.finish_write(Lsn(20)).unwrap(); // Local: acknowledged, not shipped
    let br = block_on(primary.branch("br", &a, Lsn(20))).unwrap();
    block_on(primary.wait_for_upload()).unwrap();
    assert_eq!(a.remote_wal_lsn(), Lsn(10));

    let secondary = Secondary::open(
        SecondaryOptions::new(
            StoreOptions::new(sdir.path())
                .remote(backend.remote())
                .node_id("secondary")
                .wait_lsn_timeout(Duration::from_millis(300)),
        )
        .poll_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    let status = secondary.catch_up().unwrap();
    assert_eq!(status.applied.get("a"), Some(&Lsn(10)), "{status:?}");
    assert_eq!(status.applied.get("br"), Some(&Lsn(20)), "{status:?}");
    let sbr = secondary.timeline("br").unwrap();
    let e = sbr
        .get_blocking(&key(1), Lsn(20))
        .expect_err("a read on the branch answered before its parent reached the branch point");
    assert_eq!(e.kind(), ErrorKind::LsnTimeout, "{e}");
    assert!(
        e.message().contains("timeline a:"),
        "the wait names the parent: {e}"
    );
    let e = sbr.get_now(&key(1), Lsn(20)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LsnNotYetAvailable, "{e}");
    // After a reload the old handle applies nothing more: it says so instead of waiting.
    secondary.reload().unwrap();
    let e = sbr.get_blocking(&key(1), Lsn(20)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert!(e.message().contains("reloaded"), "{e}");
    // Below the parent's applied LSN nothing waits: the branch point bounds only reads above.
    let sa = secondary.timeline("a").unwrap();
    assert_eq!(
        sa.get_blocking(&key(1), Lsn(10)).unwrap().as_deref(),
        Some(&b"old"[..])
    );

    block_on(a.wait_remote_durable(Lsn(20))).unwrap();
    secondary.catch_up().unwrap();
    let sbr = secondary.timeline("br").unwrap();
    assert_eq!(
        sbr.get_blocking(&key(1), Lsn(20)).unwrap().as_deref(),
        Some(&b"new"[..])
    );
    drop((w, br, sbr, sa));
    // Closing does not wait out the poll interval (an hour here).
    let closing = Instant::now();
    secondary.close();
    assert!(
        closing.elapsed() < Duration::from_secs(60),
        "close waited for the poll interval"
    );
    block_on(primary.close()).unwrap();
}

#[test]
fn promotion_past_the_maximum_lag_is_refused_and_a_forced_one_fences_the_old_primary() {
    let backend = Backend::local(unique_prefix("secondary", "lag"));
    let (pdir, sdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Store::open_blocking(
        primary_options(pdir.path(), backend.remote())
            .remote_wal_interval(Duration::from_secs(3600))
            .background_period(None)
            // Nothing may reach the remote: no layer is frozen and flushed either.
            .freeze_bytes(1 << 20),
    )
    .unwrap();
    let tl = block_on(primary.create_timeline("main")).unwrap();
    block_on(primary.wait_for_upload()).unwrap();
    let mut w = tl.writer().unwrap();
    for lsn in 1..=100u64 {
        w.put(&key(lsn), Lsn(lsn), Value::image(value("main", lsn, lsn)))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap(); // Local: acknowledged, not shipped
    }
    let secondary = Secondary::open(secondary_options(sdir.path(), backend.remote())).unwrap();
    // Until a heartbeat reports the commits (one is due every 50 ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = secondary.catch_up().unwrap();
        if status.primary_committed.get("main") == Some(&Lsn(100)) || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.primary_committed.get("main"),
        Some(&Lsn(100)),
        "{status:?}"
    );
    assert_eq!(status.applied.get("main"), Some(&Lsn(0)), "{status:?}");
    let strict = Promotion {
        max_lag_lsn: 10,
        ..Promotion::default()
    };
    let e = secondary
        .promote(strict)
        .expect_err("a promotion 100 LSN behind with a maximum of 10 went through");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.message().contains("\"main\"") && e.message().contains("0/64"),
        "{e}"
    );
    // Refused: the old primary still owns the store, and the secondary follows on.
    block_on(primary.wait_for_upload()).unwrap();
    assert_ne!(secondary.status().state, SecondaryState::Promoting);
    secondary.catch_up().unwrap();
    let new = secondary
        .promote(Promotion {
            forced: true,
            ..strict
        })
        .unwrap();
    assert_eq!(new.timeline("main").unwrap().last_record_lsn(), Lsn(0));
    // The old primary is fenced: a remote-level commit and its uploads fail, and change nothing.
    w.put(&key(101), Lsn(101), Value::image(b"stale".to_vec()))
        .unwrap();
    let e = w
        .finish_write_with(Lsn(101), Durability::Remote)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    let e = block_on(primary.wait_for_upload()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    drop(w);
    drop(primary);
    let other = tempfile::tempdir().unwrap();
    let check = Store::open_blocking(
        StoreOptions::new(other.path())
            .remote(backend.remote())
            .read_only(true),
    )
    .unwrap();
    assert_eq!(check.timeline("main").unwrap().last_record_lsn(), Lsn(0));
    block_on(check.close()).unwrap();
    block_on(new.close()).unwrap();
}

/// The failover loop: each cycle a child process takes the store over as primary and commits
/// at the remote level, a secondary follows it, the child is killed with SIGKILL, the
/// secondary's supervisor promotes it once the heartbeat is gone, every commit any child
/// acknowledged is checked on the new primary, which then closes cleanly for the next cycle's
/// child. `STRATAKV_FAILOVER_CYCLES` sets the cycles (default 2; `.ci/failoverloop` runs 100).
#[test]
fn failover_loop() {
    let cycles = common::env::env_u64("STRATAKV_FAILOVER_CYCLES").unwrap_or(2);
    let seed = seed_from_env_or_clock("STRATAKV_SECONDARY_SEED");
    eprintln!("failover loop: {cycles} cycles, STRATAKV_SECONDARY_SEED={seed}");
    let mut rng = Rng::new(seed);
    let bucket = tempfile::tempdir().unwrap();
    let bucket_path = bucket.path().to_str().unwrap().to_string();
    let mut acked: Vec<u64> = Vec::new();
    let mut recoveries = Vec::new();
    for cycle in 0..cycles {
        let pdir = tempfile::tempdir().unwrap();
        let (mut child, acked_now, ready) = spawn_primary(bucket.path(), pdir.path());
        ready
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("cycle {cycle}: the child primary started"));
        let sdir = tempfile::tempdir().unwrap();
        let secondary =
            Secondary::open(secondary_options(sdir.path(), local_remote(&bucket_path))).unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(100, 500)));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        child.1.join().unwrap();
        let killed = Instant::now();
        acked.extend(acked_now.lock().unwrap().iter().copied());
        let new = secondary
            .promote_when_gone(Promotion::default())
            .unwrap_or_else(|e| panic!("cycle {cycle}: promotion: {e}"));
        recoveries.push(killed.elapsed());
        let main = new.timeline("main").unwrap();
        let newest = main.last_record_lsn();
        for lsn in &acked {
            assert_eq!(
                main.get_blocking(&key(*lsn), newest)
                    .unwrap_or_else(|e| panic!("cycle {cycle}: LSN {lsn}: {e}"))
                    .as_deref(),
                Some(&value("main", *lsn, *lsn)[..]),
                "cycle {cycle} (seed {seed}): acknowledged commit {lsn}"
            );
        }
        block_on(new.close()).unwrap();
        eprintln!(
            "cycle {cycle}: {} acknowledged in all, none lost; promoted {:?} after the kill",
            acked.len(),
            recoveries.last().unwrap()
        );
    }
    assert!(!acked.is_empty(), "no child acknowledged anything");
    recoveries.sort();
    eprintln!(
        "failover loop: {cycles} cycles, {} acknowledged commits checked, recovery median {:?} (confirmation window 600 ms)",
        acked.len(),
        recoveries[recoveries.len() / 2]
    );
}

/// Flushes `tl`, uploads, and waits until the owner has deleted every WAL chunk (all covered).
fn flush_until_no_chunk_is_left(primary: &Store, tl: &stratakv::Timeline, remote: &RemoteStorage) {
    block_on(tl.flush()).unwrap();
    block_on(primary.wait_for_upload()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !common::backends::on_tokio(remote.list("wal"))
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the covered chunks were never deleted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every key at every LSN up to `upto` on the secondary's `main` matches `model`.
fn check_main(secondary: &Secondary, model: &BTreeMap<(u64, u64), Vec<u8>>, upto: u64) {
    check_timeline(
        &secondary.timeline("main").unwrap(),
        model,
        upto,
        "secondary",
    );
}

/// Given a secondary opening while its owner flushes, uploads the index and deletes the chunks
/// it covers between the secondary's reads, when the secondary has opened, then it reads every
/// commit: it never lays the chunks left after a deletion on an index older than it.
#[test]
fn a_secondary_opening_beside_a_chunk_deletion_misses_no_commit() {
    let backend = Backend::local(unique_prefix("secondary", "open-beside-deletion"));
    let (pdir, sdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Arc::new(idle_primary(pdir.path(), backend.remote()));
    let tl = block_on(primary.create_timeline("main")).unwrap();
    let w = Arc::new(Mutex::new(tl.writer().unwrap()));
    let model = Arc::new(Mutex::new(BTreeMap::new()));
    commit_each(&mut w.lock().unwrap(), 1..=5, &mut model.lock().unwrap());
    block_on(primary.wait_for_upload()).unwrap();
    let hook = {
        let (primary, tl, w, model, remote) = (
            primary.clone(),
            tl.clone(),
            w.clone(),
            model.clone(),
            backend.remote(),
        );
        move || {
            // Commits 1–5 go into the layers and their chunks are deleted; 6–7 are shipped.
            flush_until_no_chunk_is_left(&primary, &tl, &remote);
            commit_each(&mut w.lock().unwrap(), 6..=7, &mut model.lock().unwrap());
        }
    };
    let store = Hooked::around(backend.store.clone(), HookAt::WalListing(0.into()), hook);
    let secondary = Secondary::open(
        secondary_options(sdir.path(), backend.remote_on(store))
            .poll_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    check_main(&secondary, &model.lock().unwrap(), 7);
    secondary.close();
    drop(w);
    block_on(Arc::into_inner(primary).unwrap().close()).unwrap();
}

/// Given a secondary that opened when no chunk was left (all covered and deleted), when its
/// owner ships chunks, indexes and deletes them, then ships one more before the next poll,
/// then the poll reloads instead of laying that last chunk on the index it opened with.
#[test]
fn a_secondary_that_opened_on_no_chunk_misses_no_commit_deleted_before_its_poll() {
    let backend = Backend::local(unique_prefix("secondary", "opened-on-no-chunk"));
    let (pdir, sdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = idle_primary(pdir.path(), backend.remote());
    let tl = block_on(primary.create_timeline("main")).unwrap();
    let mut w = tl.writer().unwrap();
    let mut model = BTreeMap::new();
    commit_each(&mut w, 1..=5, &mut model);
    flush_until_no_chunk_is_left(&primary, &tl, &backend.remote());
    let secondary = Secondary::open(
        secondary_options(sdir.path(), backend.remote()).poll_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    check_main(&secondary, &model, 5);
    commit_each(&mut w, 6..=7, &mut model);
    flush_until_no_chunk_is_left(&primary, &tl, &backend.remote());
    commit_each(&mut w, 8..=8, &mut model);
    let status = secondary.catch_up().unwrap();
    assert_eq!(status.applied.get("main"), Some(&Lsn(8)), "{status:?}");
    check_main(&secondary, &model, 8);
    secondary.close();
    drop(w);
    block_on(primary.close()).unwrap();
}

/// Given a secondary following an owner whose chunks were all covered and deleted, when a new
/// owner takes over between the secondary's reading of the owner and its listing of the chunks
/// (numbering its chunks from 1 again, below the last one the secondary applied), then the
/// secondary reloads instead of reading only the new chunks numbered above it.
#[test]
fn a_secondary_reloads_when_a_new_owner_numbers_its_chunks_anew() {
    let backend = Backend::local(unique_prefix("secondary", "numbered-anew"));
    let (pdir, qdir, sdir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let first = idle_primary(pdir.path(), backend.remote());
    let tl = block_on(first.create_timeline("main")).unwrap();
    let mut w = tl.writer().unwrap();
    let model = Arc::new(Mutex::new(BTreeMap::new()));
    commit_each(&mut w, 1..=3, &mut model.lock().unwrap());
    let second = Arc::new(Mutex::new(None));
    let hook = {
        let (remote, model, second) = (backend.remote(), model.clone(), second.clone());
        let qdir = qdir.path().to_path_buf();
        move || {
            // The first owner's chunks are all deleted; it closes; the next owner lists none,
            // starts at 1 and ships five chunks, two above the last the secondary applied.
            flush_until_no_chunk_is_left(&first, &tl, &remote);
            drop((w, tl));
            block_on(first.close()).unwrap();
            let next = idle_primary(&qdir, remote);
            let mut w = next.timeline("main").unwrap().writer().unwrap();
            commit_each(&mut w, 4..=8, &mut model.lock().unwrap());
            drop(w);
            *second.lock().unwrap() = Some(next);
        }
    };
    let store = Hooked::around(
        backend.store.clone(),
        // The open's listing and its first catch-up's pass; the hook runs in the next one.
        HookAt::WalListing(2.into()),
        hook,
    );
    let secondary = Secondary::open(
        secondary_options(sdir.path(), backend.remote_on(store))
            .poll_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    check_main(&secondary, &model.lock().unwrap(), 3);
    let status = secondary.catch_up().unwrap();
    assert!(second.lock().unwrap().is_some(), "the hook ran");
    assert_eq!(status.applied.get("main"), Some(&Lsn(8)), "{status:?}");
    check_main(&secondary, &model.lock().unwrap(), 8);
    secondary.close();
    let next = second.lock().unwrap().take().unwrap();
    block_on(next.close()).unwrap();
}

/// The new owner commits 4 and 5; the secondary's next poll applies them and reads every
/// commit as the model says, none of the late one.
fn new_owner_commits_and_secondary_follows(
    next: &Store,
    secondary: &Secondary,
    model: &mut MainModel,
) {
    let mut w = next.timeline("main").unwrap().writer().unwrap();
    commit_each(&mut w, 4..=5, model);
    let status = secondary.catch_up().unwrap();
    assert_eq!(status.applied.get("main"), Some(&Lsn(5)), "{status:?}");
    check_main(secondary, model, 5);
}

/// Given an owner that dies (without releasing) and a new owner that claims and lists the
/// chunks, when the old owner ships a chunk after that listing (its commit fails, fenced) and
/// the secondary polls before the new owner records where its chunks start, then it holds what
/// it had (never shows the late chunk) and, once the new owner commits, reads the new owner's
/// commits.
#[test]
fn a_secondary_polling_during_a_takeover_holds_until_the_new_owner_starts() {
    takeover_poll(false);
}

/// As above, with no wait for the new owner (`confirm_after` zero): the secondary reloads in
/// the window and reads the late chunk; once the new owner commits, it reads the new owner's
/// commits, not the late chunk the new owner numbered over, and not without the new owner's
/// chunk of the same number.
#[test]
fn a_secondary_that_reloaded_during_a_takeover_follows_the_new_owner() {
    takeover_poll(true);
}

fn takeover_poll(reload_at_once: bool) {
    let backend = Backend::local(unique_prefix("secondary", "takeover-poll"));
    let (adir, bdir, sdir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (first, tl, mut w, mut model) = owner_with_three_commits(adir.path(), backend.remote());
    let mut options =
        secondary_options(sdir.path(), backend.remote()).poll_interval(Duration::from_secs(3600));
    if reload_at_once {
        options = options.confirm_after(Duration::ZERO);
    }
    let secondary = Arc::new(Secondary::open(options).unwrap());
    check_main(&secondary, &model, 3);
    let seen = Arc::new(Mutex::new(None));
    let hook = {
        let (secondary, seen, model) = (secondary.clone(), seen.clone(), model.clone());
        move || {
            // The new owner listed chunks 1-3 and is about to record its own start at 4.
            // The old owner's next commit lands as chunk 4 of generation 1, then fails.
            late_fenced_commit(&mut w);
            secondary.catch_up().unwrap();
            let main = secondary.timeline("main").unwrap();
            *seen.lock().unwrap() = Some(main.last_record_lsn());
            if reload_at_once {
                // It reloaded and read the late chunk.
                assert_eq!(
                    main.get_blocking(&key(1), Lsn(4)).unwrap().as_deref(),
                    Some(&b"late"[..])
                );
            } else {
                check_main(&secondary, &model, 3);
            }
            drop((w, tl, first));
        }
    };
    let store = Hooked::around(backend.store.clone(), HookAt::WalStartUpload, hook);
    let next = idle_primary(bdir.path(), backend.remote_on(store));
    let expect_seen = if reload_at_once { Lsn(4) } else { Lsn(3) };
    assert_eq!(*seen.lock().unwrap(), Some(expect_seen), "the hook ran");
    new_owner_commits_and_secondary_follows(&next, &secondary, &mut model);
    Arc::try_unwrap(secondary)
        .unwrap_or_else(|_| panic!("the hook is gone"))
        .close();
    block_on(next.close()).unwrap();
}

/// Given a poll that reads the owner before a new owner's claim but lists the WAL after the
/// old owner's late chunk landed (the new owner claimed, listed chunks 1-3, and the old
/// owner's next commit landed as chunk 4, then failed, fenced), when the poll runs, then it
/// applies nothing (it finds the claim newer than every WAL start listed); once the new owner
/// has started and committed, the secondary reads the new owner's commits.
#[test]
fn a_poll_straddling_a_new_owners_claim_does_not_apply_the_late_chunk() {
    let backend = Backend::local(unique_prefix("secondary", "straddle"));
    let (adir, bdir, sdir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (first, tl, w, mut model) = owner_with_three_commits(adir.path(), backend.remote());
    // Between this poll's owner read and its listing: the new owner opens up to its start
    // record, and the late chunk lands.
    let (hook, straddle) = Straddle::new(&backend, bdir.path(), (first, tl, w));
    let store = Hooked::around(
        backend.store.clone(),
        // The open's listing and its first catch-up's; the hook runs in the next one.
        HookAt::WalListing(2.into()),
        hook,
    );
    let secondary = Secondary::open(
        secondary_options(sdir.path(), backend.remote_on(store))
            .poll_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    check_main(&secondary, &model, 3);
    secondary.catch_up().unwrap();
    let status = secondary.catch_up().unwrap();
    assert_eq!(status.applied.get("main"), Some(&Lsn(3)), "{status:?}");
    check_main(&secondary, &model, 3);
    let next = straddle.new_owner();
    new_owner_commits_and_secondary_follows(&next, &secondary, &mut model);
    secondary.close();
    block_on(next.close()).unwrap();
}
