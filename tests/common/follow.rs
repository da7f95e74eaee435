//! What the follower tests (`secondary.rs`, `mirror.rs`) share: keys and values that name
//! their timeline and LSN, a primary's options with small layers and busy background work,
//! the per-timeline model, and the pieces of a takeover (an idle primary, commits on "main",
//! a fenced owner's late commit).

use std::collections::BTreeMap;
use std::time::Duration;

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
