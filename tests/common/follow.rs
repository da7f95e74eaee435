//! What the follower tests (`secondary.rs`, `mirror.rs`) share: keys and values that name
//! their timeline and LSN, a primary's options with small layers and busy background work,
//! the per-timeline model, and the pieces of a takeover (an idle primary, commits on "main",
//! a fenced owner's late commit).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::backends::Backend;
use super::hooked::{HookAt, Hooked};

use stratakv::remote::RemoteStorage;
use stratakv::{Durability, ErrorKind, Lsn, Store, StoreOptions, Value};

/// The key of number `k`.
pub fn key(k: u64) -> Vec<u8> {
    format!("key{k:04}").into_bytes()
}

/// The value key `k` of timeline `tl` gets at `lsn`.
pub fn value(tl: &str, k: u64, lsn: u64) -> Vec<u8> {
    format!("{tl}/{k}@{lsn}").into_bytes()
}

/// A primary on `remote` in `dir`: WAL shipped every 5 ms, a heartbeat every 50 ms, 8 KiB
/// layers, compaction at 2 layers, GC keeping 200 LSNs, background work every 20 ms.
pub fn primary_options(dir: &std::path::Path, remote: RemoteStorage) -> StoreOptions {
    StoreOptions::new(dir)
        .remote(remote)
        .node_id("primary")
        .remote_wal_interval(Duration::from_millis(5))
        .heartbeat_interval(Some(Duration::from_millis(50)))
        .freeze_bytes(8 << 10)
        .compaction_threshold(2)
        .gc_horizon(Some(200))
        .pitr_interval(None)
        .background_period(Some(Duration::from_millis(20)))
}

/// `(key, lsn) → value` per timeline name: each timeline's own history.
pub type Model = BTreeMap<String, BTreeMap<(u64, u64), Vec<u8>>>;

/// The newest value of `k` at or below `lsn` in `versions`.
pub fn model_get(versions: &BTreeMap<(u64, u64), Vec<u8>>, k: u64, lsn: u64) -> Option<Vec<u8>> {
    versions
        .range((k, 0)..=(k, lsn))
        .next_back()
        .map(|(_, v)| v.clone())
}

/// A primary for the chunk-deletion and takeover tests: commits at the remote level, no
/// background work, layers only when flushed.
pub fn idle_primary(dir: &std::path::Path, remote: RemoteStorage) -> Store {
    Store::open_blocking(
        primary_options(dir, remote)
            .durability(Durability::Remote)
            .freeze_bytes(64 << 20)
            .background_period(None),
    )
    .unwrap()
}

/// Commits `lsns` on `w`, each writing key `lsn % 3`, into `model`.
pub fn commit_each(
    w: &mut stratakv::TimelineWriter,
    lsns: std::ops::RangeInclusive<u64>,
    model: &mut BTreeMap<(u64, u64), Vec<u8>>,
) {
    for lsn in lsns {
        let k = lsn % 3;
        w.put(&key(k), Lsn(lsn), Value::image(value("main", k, lsn)))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
        model.insert((k, lsn), value("main", k, lsn));
    }
}

/// A fenced owner's commit at LSN 4: its chunk lands, then the commit fails, never
/// acknowledged (it stays out of the model).
pub fn late_fenced_commit(w: &mut stratakv::TimelineWriter) {
    w.put(&key(1), Lsn(4), Value::image(b"late".to_vec()))
        .unwrap();
    let err = w.finish_write(Lsn(4)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
}

/// Every key (0-2) of `tl` at every LSN up to `upto` matches `model`, and `tl` holds exactly
/// `upto`.
pub fn check_timeline(
    tl: &stratakv::Timeline,
    model: &BTreeMap<(u64, u64), Vec<u8>>,
    upto: u64,
    what: &str,
) {
    assert_eq!(tl.last_record_lsn(), Lsn(upto), "{what}");
    for at in 1..=upto {
        for k in 0..3 {
            assert_eq!(
                tl.get_blocking(&key(k), Lsn(at))
                    .unwrap()
                    .map(|b| b.to_vec()),
                model_get(model, k, at),
                "{what}: key {k} at {at}"
            );
        }
    }
}

/// One timeline's versions: `(key, lsn)` → value.
pub type MainModel = BTreeMap<(u64, u64), Vec<u8>>;

/// An owner of "main" with commits 1-3 (a chunk each): the store, the timeline, its writer and
/// the model.
pub fn owner_with_three_commits(
    dir: &std::path::Path,
    remote: RemoteStorage,
) -> (
    Store,
    stratakv::Timeline,
    stratakv::TimelineWriter,
    MainModel,
) {
    let owner = idle_primary(dir, remote);
    let tl = futures::executor::block_on(owner.create_timeline("main")).unwrap();
    let mut w = tl.writer().unwrap();
    let mut model = BTreeMap::new();
    commit_each(&mut w, 1..=3, &mut model);
    (owner, tl, w, model)
}

/// A takeover that straddles a follower's read of the claim and its listing of the WAL
/// chunks. Its hook ([`Straddle::new`]), run between the two, starts a new owner in
/// `new_owner_dir`, which claims the store, lists chunks 1-3 and stops just before it records
/// where its chunks start; meanwhile the old owner's next commit lands as chunk 4 of the old
/// generation and fails, fenced (never acknowledged). [`Straddle::new_owner`] lets the new
/// owner go on.
pub struct Straddle {
    go: std::sync::mpsc::Sender<()>,
    next: Arc<Mutex<Option<std::thread::JoinHandle<Store>>>>,
}

impl Straddle {
    /// The hook and the straddle; `old` is the old owner of "main" (store, timeline, writer).
    pub fn new(
        backend: &Backend,
        new_owner_dir: &std::path::Path,
        old: (Store, stratakv::Timeline, stratakv::TimelineWriter),
    ) -> (impl FnOnce() + Send + 'static, Straddle) {
        let (landed_tx, landed_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let next: Arc<Mutex<Option<std::thread::JoinHandle<Store>>>> = Arc::default();
        let (first, tl, mut w) = old;
        let remote = backend.remote_on(Hooked::around(
            backend.store.clone(),
            HookAt::WalStartUpload,
            move || {
                // The new owner claimed and listed chunks 1-3; the old owner's next commit
                // lands as chunk 4 of its generation, then fails.
                late_fenced_commit(&mut w);
                landed_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                drop((w, tl, first));
            },
        ));
        let dir = new_owner_dir.to_path_buf();
        let started = next.clone();
        let hook = move || {
            let h = std::thread::spawn(move || idle_primary(&dir, remote));
            *started.lock().unwrap() = Some(h);
            landed_rx.recv().unwrap();
        };
        (hook, Straddle { go: go_tx, next })
    }

    /// Whether the hook ran.
    pub fn ran(&self) -> bool {
        self.next.lock().unwrap().is_some()
    }

    /// Lets the new owner record its start (over the late chunk) and finish opening.
    pub fn new_owner(self) -> Store {
        self.go.send(()).unwrap();
        let h = self.next.lock().unwrap().take().expect("the hook ran");
        h.join().unwrap()
    }
}
