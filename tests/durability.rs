//! Durability: the write-ahead log, replay after a crash, torn tails and damaged segments.

use std::path::{Path, PathBuf};

use stratakv::{ErrorKind, FsyncPolicy, Lsn, Store, StoreOptions, Value};

fn opts(dir: &Path) -> StoreOptions {
    StoreOptions::new(dir)
        .background_period(None)
        .freeze_bytes(1 << 30)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn acknowledged_writes_survive_a_crash_and_unpublished_ones_vanish() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(opts(dir.path())).await.unwrap();
        let main = store.create_timeline("main").await.unwrap();
        let mut w = main.writer().unwrap();
        for lsn in 1..=100u64 {
            w.put(
                format!("k{}", lsn % 7).as_bytes(),
                Lsn(lsn),
                Value::image(format!("v{lsn}")),
            )
            .unwrap();
            w.finish_write(Lsn(lsn)).unwrap();
        }
        w.put(b"pending", Lsn(101), Value::image("never committed"))
            .unwrap();
        assert_eq!(main.disk_consistent_lsn(), Lsn(0), "nothing was flushed");
        // Dropping without close is the crash: nothing in memory reaches a layer file.
        drop(w);
        drop(store);
    }
    let store = Store::open(opts(dir.path())).await.unwrap();
    let main = store.timeline("main").unwrap();
    assert_eq!(main.last_record_lsn(), Lsn(100));
    assert_eq!(main.disk_consistent_lsn(), Lsn(0));
    for lsn in 1..=100u64 {
        let v = main
            .get(format!("k{}", lsn % 7).as_bytes(), Lsn(lsn))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, format!("v{lsn}"));
    }
    assert_eq!(main.get(b"pending", Lsn(100)).await.unwrap(), None);
    assert!(
        main.time_at(Lsn(100)).is_some(),
        "commit times come back with the log"
    );
    // The writer carries on above the replayed commits; the unpublished put is gone.
    let mut w = main.writer().unwrap();
    w.put(b"pending", Lsn(101), Value::image("now")).unwrap();
    w.finish_write(Lsn(101)).unwrap();
    assert_eq!(
        main.get(b"pending", Lsn(101)).await.unwrap().unwrap(),
        "now"
    );
}

#[tokio::test]
async fn without_the_log_a_caller_restarts_from_disk_consistent_lsn() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(opts(dir.path()).wal(false)).await.unwrap();
        let main = store.create_timeline("main").await.unwrap();
        let mut w = main.writer().unwrap();
        w.put(b"a", Lsn(10), Value::image("flushed")).unwrap();
        w.finish_write(Lsn(10)).unwrap();
        main.flush().await.unwrap();
        w.put(b"a", Lsn(20), Value::image("lost")).unwrap();
        w.finish_write(Lsn(20)).unwrap();
        drop(w);
        drop(store);
    }
    assert!(!dir.path().join("wal").exists());
    let store = Store::open(opts(dir.path()).wal(false)).await.unwrap();
    let main = store.timeline("main").unwrap();
    assert_eq!(main.disk_consistent_lsn(), Lsn(10));
    assert_eq!(main.last_record_lsn(), Lsn(10));
    assert_eq!(main.get(b"a", Lsn(10)).await.unwrap().unwrap(), "flushed");
}

#[tokio::test]
async fn a_torn_tail_ends_replay_and_keeps_every_whole_commit() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(opts(dir.path())).await.unwrap();
        let main = store.create_timeline("main").await.unwrap();
        let mut w = main.writer().unwrap();
        for lsn in 1..=10u64 {
            w.put(b"k", Lsn(lsn), Value::image(vec![b'x'; 100]))
                .unwrap();
            w.finish_write(Lsn(lsn)).unwrap();
        }
    }
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 30).unwrap(); // into the last commit record
    let store = Store::open(opts(dir.path())).await.unwrap();
    let main = store.timeline("main").unwrap();
    assert_eq!(
        main.last_record_lsn(),
        Lsn(9),
        "the torn commit is gone, the rest stays"
    );
    assert_eq!(main.get(b"k", Lsn(9)).await.unwrap().unwrap().len(), 100);
}

#[tokio::test]
async fn a_damaged_record_before_the_tail_fails_open_naming_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(opts(dir.path())).await.unwrap();
        let main = store.create_timeline("main").await.unwrap();
        let mut w = main.writer().unwrap();
        for lsn in 1..=10u64 {
            w.put(b"k", Lsn(lsn), Value::image(vec![b'x'; 100]))
                .unwrap();
            w.finish_write(Lsn(lsn)).unwrap();
        }
    }
    let seg = segments(dir.path())
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 200)
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Store::open(opts(dir.path())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(
        err.to_string()
            .contains(&seg.file_name().unwrap().to_string_lossy().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn flushed_segments_are_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        opts(dir.path())
            .wal_segment_size(4096)
            .fsync_policy(FsyncPolicy::Never),
    )
    .await
    .unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let mut w = main.writer().unwrap();
    for lsn in 1..=200u64 {
        w.put(b"k", Lsn(lsn), Value::image(vec![b'x'; 100]))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
    }
    assert!(store.wal_segments() > 3, "{}", store.wal_segments());
    main.flush().await.unwrap();
    assert_eq!(store.wal_segments(), 1, "only the active segment is left");
    assert_eq!(segments(dir.path()).len(), 1);
    drop(w);
    store.close().await.unwrap();
    let store = Store::open(opts(dir.path())).await.unwrap();
    assert_eq!(
        store
            .timeline("main")
            .unwrap()
            .get(b"k", Lsn(200))
            .await
            .unwrap()
            .unwrap()
            .len(),
        100
    );
}
