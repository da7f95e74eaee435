//! The cross-region mirror: a second object store kept as an asynchronous copy of the first.
//!
//! - While a primary writes, flushes, compacts and runs GC and the mirror copies in the
//!   background (with faults injected into the destination, so that passes stop at random
//!   steps), a store attached read-only from the destination is a consistent store at every
//!   checkpoint and reads what a model says at every LSN it holds; after a pass that finished,
//!   its `last_record_lsn` is exactly the mirrored LSN the pass reported (local folder to
//!   local folder, local folder to S3 on moto, S3 to local folder).
//! - A paused mirror reports its lag growing and catches up once resumed; a restarted mirror
//!   carries on, one with another node id is fenced; the source is never written.
//! - A secondary follows the primary through the mirror and is promoted there after the
//!   primary is gone; the mirror is fenced by it.
//! - A store promoted in the destination while the primary still writes fences the mirror,
//!   which copies nothing more.
//! - A corrupt layer or WAL chunk in the source is reported, naming it, and not copied.
//! - A pass during a takeover never copies the fenced owner's late WAL chunk (never
//!   acknowledged) where a store attached from the destination would read it.

mod common;
use common::follow::{
    Model, Straddle, check_timeline, commit_each, key, model_get, owner_with_three_commits,
    primary_options, value,
};
use common::hooked::{HookAt, Hooked};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backends::{Backend, on_tokio, unique_prefix};
use common::rng::{Rng, seed_from_env_or_clock};
use futures::executor::block_on;
use object_store::{ObjectStore, ObjectStoreExt};
use stratakv::remote::{FaultConfig, FaultyObjectStore, RemoteStorage};
use stratakv::{
    Durability, ErrorKind, Lsn, Mirror, MirrorOptions, MirrorState, PrimaryHealth, Promotion,
    Secondary, SecondaryOptions, Store, StoreOptions, TimelineId, Value,
};

fn read_only(dir: &std::path::Path, remote: RemoteStorage) -> Store {
    Store::open_blocking(
        StoreOptions::new(dir)
            .remote(remote)
            .read_only(true)
            .wait_lsn_timeout(Duration::from_secs(5)),
    )
    .unwrap()
}

/// Writes `commits` commits of 1–3 keys to timelines `a` and `b`, in the model too.
fn write(
    rng: &mut Rng,
    writers: &mut BTreeMap<String, stratakv::TimelineWriter>,
    model: &mut Model,
    lsn: &mut u64,
    commits: u64,
) {
    for _ in 0..commits {
        *lsn += 1;
        let name = if rng.chance(50) { "a" } else { "b" };
        let w = writers.get_mut(name).unwrap();
        let mut keys = std::collections::BTreeSet::new();
        for _ in 0..rng.range(1, 4) {
            keys.insert(rng.below(40));
        }
        for k in keys {
            w.put(&key(k), Lsn(*lsn), Value::image(value(name, k, *lsn)))
                .unwrap();
            model
                .get_mut(name)
                .unwrap()
                .insert((k, *lsn), value(name, k, *lsn));
        }
        w.finish_write(Lsn(*lsn)).unwrap();
    }
}

/// A primary with timelines `a` and `b` on `remote`, their writers and an empty model.
fn primary_with_two_timelines(
    dir: &std::path::Path,
    remote: RemoteStorage,
) -> (Store, BTreeMap<String, stratakv::TimelineWriter>, Model) {
    let primary = Store::open_blocking(primary_options(dir, remote)).unwrap();
    let mut writers = BTreeMap::new();
    let mut model = Model::new();
    for name in ["a", "b"] {
        let tl = block_on(primary.create_timeline(name)).unwrap();
        writers.insert(name.to_string(), tl.writer().unwrap());
        model.insert(name.to_string(), BTreeMap::new());
    }
    (primary, writers, model)
}

/// Waits until every timeline's last commit is in the primary's object storage.
fn wait_shipped(primary: &Store) {
    for tl in primary.timelines() {
        block_on(tl.wait_remote_durable(tl.last_record_lsn())).unwrap();
    }
}

/// Checks every timeline of `store` (attached from a mirror) against the model: a scan of
/// every key at every LSN from its GC cutoff up to what it holds (so a gap anywhere in its
/// history shows), and random point reads; returns the reads checked.
fn check_against_model(store: &Store, model: &Model, rng: &mut Rng, what: &str) -> u64 {
    let mut checked = 0;
    for tl in store.timelines() {
        let name = tl.name();
        let held = tl.last_record_lsn().0;
        let from = tl.gc_cutoff().0.max(1);
        let versions = &model[&name];
        for at in from..=held {
            let got = tl
                .scan_blocking(..key(40), Lsn(at))
                .unwrap_or_else(|e| panic!("{what}: {name} scan at {at}: {e}"));
            let want: Vec<(Vec<u8>, Vec<u8>)> = (0..40)
                .filter_map(|k| Some((key(k), model_get(versions, k, at)?)))
                .collect();
            let got: Vec<(Vec<u8>, Vec<u8>)> = got
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            assert_eq!(got, want, "{what}: {name} scan at {at} (held {held})");
            checked += 1;
        }
        for _ in 0..if held >= from { 20 } else { 0 } {
            let at = rng.range(from, held);
            let k = rng.below(40);
            let got = tl
                .get_blocking(&key(k), Lsn(at))
                .unwrap_or_else(|e| panic!("{what}: {name} key {k} at {at}: {e}"));
            assert_eq!(
                got.map(|b| b.to_vec()),
                model_get(versions, k, at),
                "{what}: {name} key {k} at {at}"
            );
            checked += 1;
        }
    }
    checked
}

/// Given a primary that writes two timelines, flushes, compacts and runs GC, and a mirror
/// copying it in the background into a destination that fails some requests, when the test
/// pauses the mirror at checkpoints and runs one more pass, then a store attached read-only
/// from the destination opens, reads what the model says at every LSN it holds, holds exactly
/// the mirrored LSNs after a pass that finished, never more than the primary committed and
/// never less than at an earlier checkpoint (even after a pass cut short); and in the end the
/// mirror catches up with the primary.
fn a_store_attached_from_the_mirror_reads_the_mirrored_lsns(source: &Backend, dest: &Backend) {
    let seed = seed_from_env_or_clock("STRATAKV_MIRROR_SEED");
    let what = format!("{} to {}", source.name, dest.name);
    eprintln!("{what}: STRATAKV_MIRROR_SEED={seed}");
    let mut rng = Rng::new(seed);
    let pdir = tempfile::tempdir().unwrap();
    let (primary, mut writers, mut model) =
        primary_with_two_timelines(pdir.path(), source.remote());
    let faulty = Arc::new(FaultyObjectStore::new(
        dest.store.clone(),
        FaultConfig::new(seed).with_errors(0.15),
    ));
    faulty.set_enabled(false);
    // A grace of 500 ms gives a checked deletion 250 ms: the 25 ms of the backends' default
    // abandoned a deletion on a loaded machine, and a pass without faults failed.
    let dest_remote = dest
        .remote_on(faulty.clone())
        .with_retry_policy(common::backends::fast_retry(1))
        .with_claim_grace(Duration::from_millis(500));
    let mirror = Mirror::start(
        source.remote(),
        dest_remote,
        MirrorOptions::new().interval(Some(Duration::from_millis(10))),
    )
    .unwrap();
    let mut lsn = 0u64;
    let (mut checked, mut exact, mut partial) = (0u64, 0u64, 0u64);
    let mut last_mirrored: BTreeMap<TimelineId, Lsn> = BTreeMap::new();
    for round in 0..30 {
        let commits = rng.range(5, 40);
        write(&mut rng, &mut writers, &mut model, &mut lsn, commits);
        if rng.chance(30) {
            let name = if rng.chance(50) { "a" } else { "b" };
            let tl = primary.timeline(name).unwrap();
            block_on(tl.flush()).unwrap();
            if rng.chance(50) {
                block_on(tl.compact()).unwrap();
            } else {
                block_on(tl.gc()).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, 30)));
        if round % 3 != 2 {
            continue;
        }
        // A checkpoint. No background copying while the destination is read; the primary
        // moves on (new commits, a flush that indexes and deletes WAL chunks, compaction) and
        // passes with faults stop at random steps of catching up with that, each state left
        // being checked, until one finishes.
        mirror.pause();
        write(&mut rng, &mut writers, &mut model, &mut lsn, 20);
        for tl in primary.timelines() {
            block_on(tl.flush()).unwrap();
            if rng.chance(50) {
                block_on(tl.compact()).unwrap();
            }
        }
        block_on(primary.wait_for_upload()).unwrap();
        // Commits above the new indexes, so that WAL chunks stay after the deleted ones.
        write(&mut rng, &mut writers, &mut model, &mut lsn, 10);
        wait_shipped(&primary);
        std::thread::sleep(Duration::from_millis(30));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let faults = attempts < 10 && rng.chance(75);
            faulty.set_enabled(faults);
            let pass = mirror.sync_now();
            faulty.set_enabled(false);
            let cache = tempfile::tempdir().unwrap();
            let ro = read_only(cache.path(), dest.remote());
            checked += check_against_model(&ro, &model, &mut rng, &what);
            for tl in ro.timelines() {
                let held = tl.last_record_lsn();
                assert!(
                    held <= primary.timeline(&tl.name()).unwrap().last_record_lsn(),
                    "{what}: the mirror holds more than the primary committed"
                );
                // Every state, even one a failed pass left, holds at least what the one
                // before did.
                assert!(
                    last_mirrored.get(&tl.id()).is_none_or(|l| *l <= held),
                    "{what}: the mirror went back on {} from {:?} to {held}",
                    tl.name(),
                    last_mirrored.get(&tl.id())
                );
                last_mirrored.insert(tl.id(), held);
                if let Ok(pass) = &pass {
                    assert_eq!(
                        Some(&held),
                        pass.mirrored.get(&tl.id()),
                        "{what}: {} attached from the mirror holds exactly the mirrored LSN",
                        tl.name()
                    );
                }
            }
            match pass {
                Ok(_) => {
                    exact += 1;
                    break;
                }
                Err(e) => {
                    assert!(faults, "{what}: a pass failed without faults: {e}");
                    partial += 1;
                }
            }
        }
        mirror.resume();
    }
    // The primary stops writing; the mirror catches up with everything it shipped.
    wait_shipped(&primary);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = mirror.status();
        let caught_up = writers.keys().all(|name| {
            let tl = primary.timeline(name).unwrap();
            status
                .timelines
                .get(&tl.id())
                .is_some_and(|t| t.mirrored == tl.last_record_lsn())
        });
        if caught_up && status.state == MirrorState::InSync {
            assert_eq!(status.lag_lsn, 0, "{what}: {status:?}");
            assert_eq!(status.lag_chunks, 0, "{what}: {status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the mirror never caught up: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    mirror.stop();
    let cache = tempfile::tempdir().unwrap();
    let ro = read_only(cache.path(), dest.remote());
    for name in writers.keys() {
        assert_eq!(
            ro.timeline(name).unwrap().last_record_lsn(),
            primary.timeline(name).unwrap().last_record_lsn(),
            "{what}: {name}"
        );
    }
    checked += check_against_model(&ro, &model, &mut rng, &what);
    eprintln!(
        "{what}: {checked} reads checked from the mirror; {exact} checkpoints after a finished pass, {partial} after a pass cut short; {} faults injected",
        faulty.counts().errors_before
    );
    assert!(exact > 0 && checked > 200, "{what}");
    drop(writers);
    block_on(primary.close()).unwrap();
}

#[test]
fn a_store_attached_from_the_mirror_reads_the_mirrored_lsns_local() {
    a_store_attached_from_the_mirror_reads_the_mirrored_lsns(
        &Backend::local(unique_prefix("mirror", "source")),
        &Backend::local(unique_prefix("mirror", "copy")),
    );
}

#[test]
fn a_store_attached_from_the_mirror_reads_the_mirrored_lsns_local_to_s3() {
    if let Some(dest) = Backend::s3(unique_prefix("mirror", "copy")) {
        a_store_attached_from_the_mirror_reads_the_mirrored_lsns(
            &Backend::local(unique_prefix("mirror", "source")),
            &dest,
        );
    }
}

#[test]
fn a_store_attached_from_the_mirror_reads_the_mirrored_lsns_s3_to_local() {
    if let Some(source) = Backend::s3(unique_prefix("mirror", "source")) {
        a_store_attached_from_the_mirror_reads_the_mirrored_lsns(
            &source,
            &Backend::local(unique_prefix("mirror", "copy")),
        );
    }
}

/// Every object under a storage's prefix, with its size.
fn objects(storage: &RemoteStorage) -> Vec<(String, u64)> {
    on_tokio(storage.list("")).unwrap()
}

/// Given a mirror in sync, when it is paused while the primary writes on, then it reports a
/// lag in LSN, chunks and bytes that grows and a time since its last complete pass that grows;
/// once resumed it is in sync again with no lag. A mirror restarted with the same node id
/// carries on; one with another id is refused as fenced. The source is never written.
#[test]
fn a_paused_mirror_reports_its_lag_and_catches_up_after() {
    let (source, dest) = (
        Backend::local(unique_prefix("mirror", "source")),
        Backend::local(unique_prefix("mirror", "copy")),
    );
    let mut rng = Rng::new(seed_from_env_or_clock("STRATAKV_MIRROR_SEED"));
    let pdir = tempfile::tempdir().unwrap();
    let (primary, mut writers, mut model) =
        primary_with_two_timelines(pdir.path(), source.remote());
    let mut lsn = 0;
    write(&mut rng, &mut writers, &mut model, &mut lsn, 50);
    wait_shipped(&primary);
    let mirror = Mirror::start(
        source.remote(),
        dest.remote(),
        MirrorOptions::new().interval(Some(Duration::from_millis(20))),
    )
    .unwrap();
    let pass = mirror.sync_now().unwrap();
    assert!(pass.complete, "{pass:?}");
    let status = mirror.status();
    assert_eq!(status.state, MirrorState::InSync, "{status:?}");
    assert_eq!(status.lag_lsn, 0, "{status:?}");

    mirror.pause();
    let mut lags = Vec::new();
    for _ in 0..3 {
        write(&mut rng, &mut writers, &mut model, &mut lsn, 30);
        wait_shipped(&primary);
        std::thread::sleep(Duration::from_millis(60));
        // The lag in LSN moves with what the source reports (its heartbeat, every 50 ms, or
        // its index): measured again until it does, should the source's beat be late.
        let deadline = Instant::now() + Duration::from_secs(20);
        let s = loop {
            let s = mirror.measure().unwrap();
            let grew = lags
                .last()
                .is_none_or(|l: &(u64, Duration, Duration)| s.lag_lsn > l.0);
            if grew || Instant::now() > deadline {
                break s;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(s.state, MirrorState::Paused, "{s:?}");
        // Behind in chunks, or (once the primary flushed, uploaded and deleted the chunks its
        // index covers) in layer objects: bytes either way.
        assert!(s.lag_lsn > 0 && s.lag_bytes > 0, "{s:?}");
        lags.push((s.lag_lsn, s.since_complete_pass.unwrap(), s.lag));
    }
    eprintln!("paused: (lag in LSN, since the last complete pass, behind for) = {lags:?}");
    assert!(
        lags.windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1 && w[0].2 < w[1].2),
        "the lag grows while paused: {lags:?}"
    );
    let resumed = Instant::now();
    mirror.resume();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = mirror.status();
        if s.state == MirrorState::InSync && s.lag_lsn == 0 {
            assert_eq!(s.lag, Duration::ZERO, "{s:?}");
            assert_eq!(s.lag_chunks, 0, "{s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {s:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("resumed: in sync again after {:?}", resumed.elapsed());

    // Restarts: the same node id carries on, another one finds the destination taken.
    mirror.stop();
    drop(writers);
    block_on(primary.close()).unwrap();
    let before = objects(&source.remote());
    let again = Mirror::start(
        source.remote(),
        dest.remote(),
        MirrorOptions::new().interval(None),
    )
    .unwrap();
    let pass = again.sync_now().unwrap();
    assert!(pass.complete, "{pass:?}");
    again.stop();
    let other = Mirror::start(
        source.remote(),
        dest.remote(),
        MirrorOptions::new().interval(None).node_id("other"),
    )
    .unwrap();
    let e = other.sync_now().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    assert!(e.message().contains("mirror:mirror"), "{e}");
    assert_eq!(other.status().state, MirrorState::Fenced);
    other.stop();
    assert_eq!(
        objects(&source.remote()),
        before,
        "the mirror wrote to its source"
    );
    let cache = tempfile::tempdir().unwrap();
    let ro = read_only(cache.path(), dest.remote());
    assert_eq!(
        ro.timeline("a")
            .unwrap()
            .last_record_lsn()
            .0
            .max(ro.timeline("b").unwrap().last_record_lsn().0),
        lsn
    );
}

/// Given a primary and a mirror copying it in the background, when a secondary follows the
/// destination, then it catches up with what the primary shipped and reads what the model
/// says, and sees the primary alive through the mirror; when the primary closes and the
/// mirror has copied its last state, the secondary promotes in the destination, holds every
/// commit, takes new ones, and the mirror is fenced and copies nothing more.
#[test]
fn a_secondary_follows_from_the_mirror_and_is_promoted_there() {
    let (source, dest) = (
        Backend::local(unique_prefix("mirror", "source")),
        Backend::local(unique_prefix("mirror", "copy")),
    );
    let mut rng = Rng::new(seed_from_env_or_clock("STRATAKV_MIRROR_SEED"));
    let (pdir, sdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (primary, mut writers, mut model) =
        primary_with_two_timelines(pdir.path(), source.remote());
    let mirror = Mirror::start(
        source.remote(),
        dest.remote(),
        MirrorOptions::new().interval(Some(Duration::from_millis(10))),
    )
    .unwrap();
    mirror.sync_now().unwrap();
    let secondary = Secondary::open(
        SecondaryOptions::new(
            StoreOptions::new(sdir.path())
                .remote(dest.remote())
                .node_id("secondary")
                .wait_lsn_timeout(Duration::from_secs(5)),
        )
        .poll_interval(Duration::from_millis(20))
        .confirm_after(Duration::from_secs(5)),
    )
    .unwrap();
    let mut lsn = 0;
    for _ in 0..6 {
        write(&mut rng, &mut writers, &mut model, &mut lsn, 40);
        let tl = primary.timeline("a").unwrap();
        block_on(tl.flush()).unwrap();
        block_on(tl.compact()).unwrap();
        wait_shipped(&primary);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            let s = secondary.catch_up().unwrap();
            if writers.keys().all(|n| {
                s.applied.get(n.as_str()) == Some(&primary.timeline(n).unwrap().last_record_lsn())
            }) {
                break s;
            }
            assert!(Instant::now() < deadline, "never caught up: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            matches!(
                status.primary,
                PrimaryHealth::Alive | PrimaryHealth::Suspected
            ),
            "{status:?}"
        );
        for name in writers.keys() {
            let tl = secondary.timeline(name).unwrap();
            for _ in 0..20 {
                let at = rng.range(tl.gc_cutoff().0.max(1), tl.last_record_lsn().0);
                let k = rng.below(40);
                let got = match tl.get_blocking(&key(k), Lsn(at)) {
                    Ok(v) => v,
                    // A layer the mirror removed after the primary compacted: as documented.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => panic!("{name} key {k} at {at}: {e}"),
                };
                assert_eq!(
                    got.map(|b| b.to_vec()),
                    model_get(&model[name], k, at),
                    "{name} key {k} at {at}"
                );
            }
        }
    }
    // The source region goes: the primary closes, the mirror copies its last state.
    let last: BTreeMap<String, Lsn> = writers
        .keys()
        .map(|n| (n.clone(), primary.timeline(n).unwrap().last_record_lsn()))
        .collect();
    drop(writers);
    block_on(primary.close()).unwrap();
    let pass = mirror.sync_now().unwrap();
    assert!(pass.complete, "{pass:?}");
    let new = secondary.promote(Promotion::default()).unwrap();
    for (name, at) in &last {
        let tl = new.timeline(name).unwrap();
        assert_eq!(tl.last_record_lsn(), *at, "{name}");
        for k in 0..40 {
            assert_eq!(
                tl.get_blocking(&key(k), *at).unwrap().map(|b| b.to_vec()),
                model_get(&model[name], k, at.0),
                "{name} key {k}"
            );
        }
    }
    let a = new.timeline("a").unwrap();
    let mut w = a.writer().unwrap();
    let next = Lsn(a.last_record_lsn().0 + 1);
    w.put(&key(0), next, Value::image(b"after".to_vec()))
        .unwrap();
    w.finish_write_with(next, Durability::Remote).unwrap();
    let e = mirror.sync_now().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    let status = mirror.status();
    assert_eq!(status.state, MirrorState::Fenced, "{status:?}");
    assert!(
        status.mirror_generation < new.generation(),
        "{status:?} against {:?}",
        new.generation()
    );
    drop(w);
    block_on(new.close()).unwrap();
    mirror.stop();
}

/// Given a mirror in sync with a primary that goes on writing, when a store opens writable
/// on the destination (a promotion in the mirror's region), then it holds exactly what was
/// mirrored, the mirror's next pass is refused as fenced, and however much the primary writes
/// afterwards the destination does not change.
#[test]
fn a_promotion_in_the_mirror_fences_the_mirror() {
    let (source, dest) = (
        Backend::local(unique_prefix("mirror", "source")),
        Backend::local(unique_prefix("mirror", "copy")),
    );
    let mut rng = Rng::new(seed_from_env_or_clock("STRATAKV_MIRROR_SEED"));
    let (pdir, ndir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (primary, mut writers, mut model) =
        primary_with_two_timelines(pdir.path(), source.remote());
    let mut lsn = 0;
    write(&mut rng, &mut writers, &mut model, &mut lsn, 80);
    wait_shipped(&primary);
    let mirror = Mirror::start(
        source.remote(),
        dest.remote(),
        MirrorOptions::new().interval(Some(Duration::from_millis(10))),
    )
    .unwrap();
    let pass = mirror.sync_now().unwrap();
    assert!(pass.complete);
    mirror.pause();
    let pass = mirror.sync_now().unwrap();
    let new = Store::open_blocking(
        StoreOptions::new(ndir.path())
            .remote(dest.remote())
            .node_id("promoted"),
    )
    .unwrap();
    assert!(
        new.claim_wait() > Duration::ZERO,
        "the mirror never releases"
    );
    for tl in new.timelines() {
        assert_eq!(Some(&tl.last_record_lsn()), pass.mirrored.get(&tl.id()));
    }
    check_against_model(&new, &model, &mut rng, "promoted");
    block_on(new.close()).unwrap();
    let after_promotion = objects(&dest.remote());
    mirror.resume();
    write(&mut rng, &mut writers, &mut model, &mut lsn, 80);
    for tl in primary.timelines() {
        block_on(tl.flush()).unwrap();
    }
    wait_shipped(&primary);
    block_on(primary.wait_for_upload()).unwrap();
    let e = mirror.sync_now().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    std::thread::sleep(Duration::from_millis(100));
    let status = mirror.status();
    assert_eq!(status.state, MirrorState::Fenced, "{status:?}");
    assert_eq!(status.last_error.map(|e| e.kind()), Some(ErrorKind::Fenced));
    // Measuring still works, and says fenced.
    let measured = mirror.measure().unwrap();
    assert_eq!(measured.state, MirrorState::Fenced, "{measured:?}");
    assert!(measured.lag_lsn > 0, "{measured:?}");
    assert_eq!(
        objects(&dest.remote()),
        after_promotion,
        "the fenced mirror changed the destination"
    );
    mirror.stop();
    drop(writers);
    block_on(primary.close()).unwrap();
}

/// Flips one byte of `name` in `backend`, through the object store itself; returns the
/// original bytes.
fn corrupt(backend: &Backend, name: &str) -> bytes::Bytes {
    let path = object_store::path::Path::from(format!("{}/{name}", backend.prefix));
    let store: &Arc<dyn ObjectStore> = &backend.store;
    on_tokio(async {
        let original = store.get(&path).await.unwrap().bytes().await.unwrap();
        let mut bad = original.to_vec();
        bad[original.len() / 2] ^= 0x10;
        store.put(&path, bad.into()).await.unwrap();
        original
    })
}

fn restore(backend: &Backend, name: &str, original: bytes::Bytes) {
    let path = object_store::path::Path::from(format!("{}/{name}", backend.prefix));
    on_tokio(backend.store.put(&path, original.into())).unwrap();
}

/// Given a source with a corrupt layer object (then a corrupt WAL chunk), when the mirror
/// runs a pass, then the pass fails with `Corruption` naming the object, the status says
/// `Failing` with that error, the object is not in the destination, and what the destination
/// holds still opens; once the object is repaired the next pass completes.
#[test]
fn a_corrupt_source_object_is_reported_and_not_copied() {
    let (source, dest) = (
        Backend::local(unique_prefix("mirror", "source")),
        Backend::local(unique_prefix("mirror", "copy")),
    );
    let mut rng = Rng::new(seed_from_env_or_clock("STRATAKV_MIRROR_SEED"));
    let pdir = tempfile::tempdir().unwrap();
    let (primary, mut writers, mut model) =
        primary_with_two_timelines(pdir.path(), source.remote());
    let mut lsn = 0;
    write(&mut rng, &mut writers, &mut model, &mut lsn, 60);
    for tl in primary.timelines() {
        block_on(tl.flush()).unwrap();
    }
    block_on(primary.wait_for_upload()).unwrap();
    // Commits above the indexes: WAL chunks stay in the source while the primary idles.
    write(&mut rng, &mut writers, &mut model, &mut lsn, 10);
    wait_shipped(&primary);
    let mirror = Mirror::start(
        source.remote(),
        dest.remote(),
        MirrorOptions::new().interval(None),
    )
    .unwrap();

    let listed = objects(&source.remote());
    let layer = listed
        .iter()
        .map(|(n, _)| n.clone())
        .find(|n| n.starts_with("timelines/") && !n.contains("/index-"))
        .expect("a layer object");
    let original = corrupt(&source, &layer);
    let e = mirror.sync_now().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(e.message().contains(&layer), "{e}");
    let status = mirror.status();
    assert_eq!(status.state, MirrorState::Failing, "{status:?}");
    assert_eq!(
        status.last_error.as_ref().map(|e| e.kind()),
        Some(ErrorKind::Corruption)
    );
    assert!(
        !objects(&dest.remote()).iter().any(|(n, _)| *n == layer),
        "a corrupt layer was copied"
    );
    let cache = tempfile::tempdir().unwrap();
    drop(read_only(cache.path(), dest.remote()));
    restore(&source, &layer, original);
    assert!(mirror.sync_now().unwrap().complete);

    // A torn WAL chunk: reported; the destination keeps none of it.
    let chunk = listed
        .iter()
        .map(|(n, _)| n.clone())
        .rfind(|n| n.starts_with("wal/"))
        .expect("a WAL chunk above the indexes");
    {
        // The chunk is in the destination already: mirror into a fresh one.
        let fresh = Backend::local(unique_prefix("mirror", "fresh"));
        let m2 = Mirror::start(
            source.remote(),
            fresh.remote(),
            MirrorOptions::new().interval(None),
        )
        .unwrap();
        let original = corrupt(&source, &chunk);
        let e = m2.sync_now().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
        assert!(e.message().contains(&chunk), "{e}");
        assert!(
            !objects(&fresh.remote()).iter().any(|(n, _)| *n == chunk),
            "a corrupt WAL chunk was copied"
        );
        restore(&source, &chunk, original);
        assert!(m2.sync_now().unwrap().complete);
        m2.stop();
    }
    mirror.stop();
    drop(writers);
    block_on(primary.close()).unwrap();
}

/// The chunk names under `wal/` in `storage`.
fn wal_chunks(storage: &RemoteStorage) -> BTreeSet<String> {
    on_tokio(storage.list("wal"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// A store attached read-only from `dest` holds exactly `upto` on "main", every key at every
/// LSN matching `model`.
fn check_attached(dest: &Backend, model: &BTreeMap<(u64, u64), Vec<u8>>, upto: u64, what: &str) {
    let cache = tempfile::tempdir().unwrap();
    let ro = read_only(cache.path(), dest.remote());
    check_timeline(&ro.timeline("main").unwrap(), model, upto, what);
    block_on(ro.close()).unwrap();
}

/// Given a mirror in sync with an owner of "main" (commits 1-3, a chunk each), when, between
/// a pass's read of the source's claim and its listing of the WAL chunks, a new owner claims
/// the source and lists chunks 1-3, and the old owner's next commit lands as chunk 4 of the
/// old generation and then fails, fenced (never acknowledged), then that pass copies no chunk
/// (it reads the claim again after the listings and finds it moved): the destination does not
/// hold the late chunk, and a store attached from it and a secondary following it hold LSN 3.
/// Once the new owner has recorded where its chunks start and committed 4 and 5, the mirror
/// copies them, and both read the new owner's commits, never the late one.
#[test]
fn a_pass_straddling_a_new_owners_claim_does_not_copy_the_late_chunk() {
    let (source, dest) = (
        Backend::local(unique_prefix("mirror", "source")),
        Backend::local(unique_prefix("mirror", "copy")),
    );
    let (adir, bdir, sdir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (first, tl, w, mut model) = owner_with_three_commits(adir.path(), source.remote());
    // Between this pass's claim read and its listing: the new owner opens up to its start
    // record, and the late chunk lands.
    let (hook, straddle) = Straddle::new(&source, bdir.path(), (first, tl, w));
    let mirror_source = source.remote_on(Hooked::around(
        source.store.clone(),
        // The first pass's listing; the hook runs in the second one's.
        HookAt::WalListing(1.into()),
        hook,
    ));
    let mirror = Mirror::start(
        mirror_source,
        dest.remote(),
        MirrorOptions::new().interval(None),
    )
    .unwrap();
    let pass = mirror.sync_now().unwrap();
    assert!(pass.complete, "{pass:?}");
    let acknowledged = wal_chunks(&dest.remote());
    assert_eq!(acknowledged, wal_chunks(&source.remote()));
    let secondary = Secondary::open(
        SecondaryOptions::new(
            StoreOptions::new(sdir.path())
                .remote(dest.remote())
                .node_id("secondary")
                .wait_lsn_timeout(Duration::from_secs(5)),
        )
        .poll_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    check_timeline(
        &secondary.timeline("main").unwrap(),
        &model,
        3,
        "secondary at open",
    );

    // The pass that straddles the new owner's claim.
    let pass = mirror.sync_now().unwrap();
    assert!(straddle.ran(), "the hook ran");
    let late: Vec<String> = wal_chunks(&source.remote())
        .difference(&acknowledged)
        .cloned()
        .collect();
    assert_eq!(late.len(), 1, "the late chunk landed: {late:?}");
    let in_dest = wal_chunks(&dest.remote());
    assert!(
        !in_dest.contains(&late[0]),
        "the mirror copied the fenced owner's late chunk {} (never acknowledged) to the destination: {in_dest:?}, {pass:?}",
        late[0]
    );
    assert!(!pass.complete, "{pass:?}");
    assert_eq!(mirror.status().state, MirrorState::CatchingUp);
    check_attached(&dest, &model, 3, "attached after the straddling pass");
    let status = secondary.catch_up().unwrap();
    assert_eq!(status.applied.get("main"), Some(&Lsn(3)), "{status:?}");

    // The new owner records its start (at 4, over the late chunk) and commits 4 and 5.
    let next = straddle.new_owner();
    let mut w = next.timeline("main").unwrap().writer().unwrap();
    commit_each(&mut w, 4..=5, &mut model);
    let mut passes = 0;
    while !mirror.sync_now().unwrap().complete {
        passes += 1;
        assert!(passes < 10, "{:?}", mirror.status());
    }
    // The late chunk is copied now, but after the new owner's start record at its number,
    // which makes every reader of the destination skip it.
    let starts = |r: RemoteStorage| on_tokio(r.list("walstart")).unwrap();
    assert_eq!(starts(dest.remote()), starts(source.remote()));
    check_attached(&dest, &model, 5, "attached after the takeover");
    let status = secondary.catch_up().unwrap();
    assert_eq!(status.applied.get("main"), Some(&Lsn(5)), "{status:?}");
    check_timeline(
        &secondary.timeline("main").unwrap(),
        &model,
        5,
        "secondary after the takeover",
    );
    secondary.close();
    mirror.stop();
    drop(w);
    block_on(next.close()).unwrap();
}

/// Bad options and a destination that is the source are refused with a clear error.
#[test]
fn bad_mirror_options_are_refused() {
    let b = Backend::local(unique_prefix("mirror", "bad"));
    let inside = RemoteStorage::new(
        b.store.clone(),
        object_store::path::Path::from(format!("{}/copy", b.prefix)),
    );
    let cases: Vec<(stratakv::Result<Mirror>, &str)> = vec![
        (
            Mirror::start(b.remote(), inside, MirrorOptions::new()),
            "overlaps",
        ),
        (
            Mirror::start(b.remote(), b.remote(), MirrorOptions::new()),
            "overlaps",
        ),
        (
            Mirror::start(
                b.remote(),
                Backend::local(unique_prefix("mirror", "x")).remote(),
                MirrorOptions::new().interval(Some(Duration::ZERO)),
            ),
            "interval",
        ),
        (
            Mirror::start(
                b.remote(),
                Backend::local(unique_prefix("mirror", "x")).remote(),
                MirrorOptions::new().node_id(""),
            ),
            "node id",
        ),
    ];
    for (result, says) in cases {
        let e = result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains(says), "{e}");
    }
}
