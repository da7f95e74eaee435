//! The store inside a daemon: it owns its background work, opens and reads from plain threads
//! with no async runtime, and keeps uploading when the caller's runtime is gone.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::backends::{Backend, unique_prefix};
use common::rng::Rng;
use futures::executor::block_on;
use stratakv::{ErrorKind, Lsn, Store, StoreOptions, Value};

/// Runs `f` on a thread of its own and gives up after `secs`: a call that hangs fails the test
/// instead of hanging it.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not finish within {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

fn value(key: u32, lsn: u64) -> Vec<u8> {
    format!("k{key}@{lsn}").into_bytes().repeat(8)
}

fn key(k: u32) -> Vec<u8> {
    format!("key{k:04}").into_bytes()
}

/// Given a store opened with no runtime anywhere, when one thread writes and two others read
/// at random LSNs through the blocking calls, then every answer matches the model, and the
/// blocking `get_many` and `scan` agree with `get`.
#[test]
fn a_store_opens_and_serves_blocking_reads_from_plain_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_blocking(
        StoreOptions::new(dir.path())
            .freeze_bytes(16 << 10)
            .wait_lsn_timeout(Duration::from_millis(50)),
    )
    .unwrap();
    let main = block_on(store.create_timeline("main")).unwrap();
    let mut model: BTreeMap<(u32, u64), Vec<u8>> = BTreeMap::new();
    let mut w = main.writer().unwrap();
    let mut rng = Rng::new(0xda3_0001);
    for lsn in 1..=300u64 {
        for _ in 0..4 {
            let k = rng.below(50) as u32;
            if model.contains_key(&(k, lsn)) {
                continue;
            }
            w.put(&key(k), Lsn(lsn), Value::image(value(k, lsn)))
                .unwrap();
            model.insert((k, lsn), value(k, lsn));
        }
        w.finish_write(Lsn(lsn)).unwrap();
    }
    drop(w);
    let model = Arc::new(model);
    let expect = |m: &BTreeMap<(u32, u64), Vec<u8>>, k: u32, lsn: u64| {
        m.range((k, 0)..=(k, lsn))
            .next_back()
            .map(|(_, v)| v.clone())
    };
    let readers: Vec<_> = (0..2u64)
        .map(|t| {
            let (main, model) = (main.clone(), model.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(0xda3_0100 + t);
                for _ in 0..2_000 {
                    let (k, lsn) = (rng.below(50) as u32, rng.range(1, 300));
                    let got = main.get_blocking(&key(k), Lsn(lsn)).unwrap();
                    assert_eq!(
                        got.as_deref(),
                        expect(&model, k, lsn).as_deref(),
                        "key {k} at {lsn}"
                    );
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    for lsn in [1u64, 77, 150, 300] {
        let keys: Vec<_> = (0..50).map(key).collect();
        let many = main.get_many_blocking(&keys, Lsn(lsn)).unwrap();
        let scanned: BTreeMap<Bytes, Bytes> = main
            .scan_blocking::<&[u8]>(.., Lsn(lsn))
            .unwrap()
            .into_iter()
            .collect();
        for (k, got) in (0..50).zip(many) {
            assert_eq!(got.as_deref(), expect(&model, k, lsn).as_deref());
            assert_eq!(
                scanned.get(key(k).as_slice()).map(|v| v.to_vec()),
                expect(&model, k, lsn)
            );
        }
    }
    // A read that does not wait fails at once above what is published, and changes nothing.
    let e = main.get_now(&key(1), Lsn(301)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LsnNotYetAvailable, "{e}");
    assert!(
        e.to_string().contains("0/12C"),
        "names last_record_lsn: {e}"
    );
    let e = main.get_blocking(&key(1), Lsn(301)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LsnTimeout, "{e}");
    assert_eq!(
        main.get_now(&key(1), Lsn(300)).unwrap().as_deref(),
        expect(&model, 1, 300).as_deref()
    );
    block_on(main.flush()).unwrap();
    within(60, "close from a plain thread", move || {
        block_on(store.close()).unwrap()
    });
}

/// Given a store opened inside a caller's runtime that is then dropped, with uploads still
/// pending, when the caller waits for the upload and closes from a plain thread, then both
/// finish and a new node attaches and reads every write.
#[test]
fn uploads_go_on_after_the_callers_runtime_is_dropped() {
    let backend = Backend::local(unique_prefix("daemon", "dropped-runtime"));
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::new(dir.path())
        .remote(backend.remote())
        .background_period(None);
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (store, main) = caller.block_on(async {
        let store = Store::open(opts).await.unwrap();
        let main = store.create_timeline("main").await.unwrap();
        (store, main)
    });
    let mut w = main.writer().unwrap();
    for lsn in 1..=50u64 {
        w.put(
            &key(lsn as u32),
            Lsn(lsn),
            Value::image(value(lsn as u32, lsn)),
        )
        .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
    }
    drop(w);
    // The flush queues an upload; the runtime that opened the store goes away before it runs.
    caller.block_on(main.flush()).unwrap();
    drop(caller);
    let store = within(
        60,
        "wait_for_upload after the caller's runtime dropped",
        move || {
            block_on(store.wait_for_upload()).unwrap();
            store
        },
    );
    assert!(main.remote_consistent_lsn() >= Lsn(50));
    assert!(store.upload_error().is_none());
    within(60, "close after the caller's runtime dropped", move || {
        block_on(store.close()).unwrap()
    });

    let dir2 = tempfile::tempdir().unwrap();
    let other =
        Store::open_blocking(StoreOptions::new(dir2.path()).remote(backend.remote())).unwrap();
    let main = other.timeline("main").unwrap();
    for lsn in 1..=50u64 {
        assert_eq!(
            main.get_blocking(&key(lsn as u32), Lsn(50))
                .unwrap()
                .unwrap(),
            value(lsn as u32, lsn)
        );
    }
    block_on(other.close()).unwrap();
}

/// Given a current-thread runtime that nobody drives after the open, the store's own work
/// (uploads, flushes) still completes.
#[test]
fn background_work_needs_no_driven_runtime() {
    let backend = Backend::local(unique_prefix("daemon", "undriven"));
    let dir = tempfile::tempdir().unwrap();
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = caller
        .block_on(Store::open(
            StoreOptions::new(dir.path())
                .remote(backend.remote())
                .freeze_bytes(4 << 10),
        ))
        .unwrap();
    // From here on `caller` is alive but never driven again.
    let main = block_on(store.create_timeline("main")).unwrap();
    let mut w = main.writer().unwrap();
    for lsn in 1..=200u64 {
        w.put(&key(lsn as u32), Lsn(lsn), Value::image(vec![b'v'; 200]))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
    }
    drop(w);
    let m = main.clone();
    let store = within(
        60,
        "flush and upload with an undriven caller runtime",
        move || {
            block_on(m.flush()).unwrap();
            block_on(store.wait_for_upload()).unwrap();
            store
        },
    );
    assert!(main.remote_consistent_lsn() >= Lsn(200));
    within(60, "close", move || block_on(store.close()).unwrap());
    drop(caller);
}

/// A redo hook that panics on records holding `b"boom"` and appends otherwise.
#[derive(Debug)]
struct PanickyRedo;

impl stratakv::WalRedo for PanickyRedo {
    fn apply(
        &self,
        key: &[u8],
        base: Option<Bytes>,
        records: &[stratakv::RedoRecord],
    ) -> stratakv::Result<Bytes> {
        if records.iter().any(|r| r.record.as_ref() == b"boom") {
            panic!("the hook met a record it cannot apply");
        }
        stratakv::SimpleRedo.apply(key, base, records)
    }
}

/// Given a redo hook that panics on one key's record, when that key is read, then the read
/// fails with a redo error naming the key and the LSN, other keys still read, writes go on,
/// compaction and image layers report it without poisoning, and the store closes cleanly.
#[test]
fn a_panicking_redo_hook_is_a_redo_error_and_the_store_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_blocking(
        StoreOptions::new(dir.path())
            .redo(Arc::new(PanickyRedo))
            .background_period(None),
    )
    .unwrap();
    let main = block_on(store.create_timeline("main")).unwrap();
    let mut w = main.writer().unwrap();
    w.put(b"good", Lsn(0x10), Value::image("a")).unwrap();
    w.put(b"bad", Lsn(0x10), Value::image("a")).unwrap();
    w.finish_write(Lsn(0x10)).unwrap();
    w.put(
        b"good",
        Lsn(0x20),
        Value::delta(stratakv::SimpleRedo::append(b"b")),
    )
    .unwrap();
    w.put(b"bad", Lsn(0x20), Value::delta(Bytes::from_static(b"boom")))
        .unwrap();
    w.finish_write(Lsn(0x20)).unwrap();

    let hook_panics = || {
        let e = main.get_blocking(b"bad", Lsn(0x20)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Redo, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("bad") && msg.contains("0/20"),
            "names key and LSN: {msg}"
        );
        assert!(
            msg.contains("cannot apply"),
            "carries the panic's message: {msg}"
        );
    };
    hook_panics();
    assert_eq!(main.get_blocking(b"bad", Lsn(0x10)).unwrap().unwrap(), "a");
    assert_eq!(
        main.get_blocking(b"good", Lsn(0x20)).unwrap().unwrap(),
        "ab"
    );
    // Rebuilding the value in an image layer meets the same panic: an error, not a poison.
    block_on(main.flush()).unwrap();
    let e = block_on(main.create_image_layer()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Redo, "{e}");
    hook_panics();
    w.put(b"good", Lsn(0x30), Value::image("c")).unwrap();
    w.finish_write(Lsn(0x30)).unwrap();
    assert_eq!(main.get_blocking(b"good", Lsn(0x30)).unwrap().unwrap(), "c");
    drop(w);
    block_on(store.close()).unwrap();
}

fn wal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Given 8 MiB written through the log, when it is flushed, then the log keeps under 1 MiB;
/// when more is written and the store closed, then the log keeps only empty segments, and a
/// reopen reads every write from the layer files.
#[test]
fn the_log_is_trimmed_once_layers_cover_it_and_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::new(dir.path()).background_period(None);
    let store = Store::open_blocking(opts.clone()).unwrap();
    let main = block_on(store.create_timeline("main")).unwrap();
    let mut w = main.writer().unwrap();
    let page = |lsn: u64| vec![(lsn % 251) as u8; 8192];
    for lsn in 1..=1024u64 {
        w.put(&key(lsn as u32 % 300), Lsn(lsn), Value::image(page(lsn)))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
    }
    assert!(wal_bytes(dir.path()) > 8 << 20, "the log holds the writes");
    block_on(main.flush()).unwrap();
    let after_flush = wal_bytes(dir.path());
    assert!(
        after_flush < 1 << 20,
        "{after_flush} bytes of log after a flush"
    );
    for lsn in 1025..=1040u64 {
        w.put(&key(lsn as u32 % 300), Lsn(lsn), Value::image(page(lsn)))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
    }
    drop(w);
    block_on(store.close()).unwrap();
    let after_close = wal_bytes(dir.path());
    assert!(after_close <= 64, "{after_close} bytes of log after close");

    let store = Store::open_blocking(opts).unwrap();
    let main = store.timeline("main").unwrap();
    for lsn in 741..=1040u64 {
        assert_eq!(
            main.get_blocking(&key(lsn as u32 % 300), Lsn(1040))
                .unwrap()
                .unwrap(),
            page(lsn),
            "key {} at the last LSN",
            lsn % 300
        );
    }
    block_on(store.close()).unwrap();
}

/// Given a writer taken on "main", when "main" is restored (the name moves to a new timeline),
/// then the old writer's puts and commits fail with `Closed` naming both names and change
/// nothing, an old handle reads the backup and says so, and a new writer on "main" writes.
#[test]
fn a_writer_whose_name_a_restore_moved_refuses_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_blocking(StoreOptions::new(dir.path())).unwrap();
    let main = block_on(store.create_timeline("main")).unwrap();
    let mut w = main.writer().unwrap();
    for lsn in 1..=3u64 {
        w.put(b"k", Lsn(lsn), Value::image(format!("v{lsn}")))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
    }
    let restored = block_on(store.restore("main", stratakv::RestorePoint::Lsn(Lsn(2)))).unwrap();
    let backup = restored.backup_name.clone().unwrap();
    let e = w.put(b"k", Lsn(4), Value::image("late")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("\"main\"") && msg.contains(&backup),
        "names both: {msg}"
    );
    let e = w.finish_write(Lsn(4)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert_eq!(
        main.last_record_lsn(),
        Lsn(3),
        "the refused commit changed nothing"
    );
    // The old handle is bound to its timeline, now the backup.
    assert_eq!(main.name(), backup);
    assert_eq!(main.get_blocking(b"k", Lsn(3)).unwrap().unwrap(), "v3");
    drop(w);
    let new_main = store.timeline("main").unwrap();
    assert_eq!(new_main.get_blocking(b"k", Lsn(2)).unwrap().unwrap(), "v2");
    let mut w = new_main.writer().unwrap();
    w.put(b"k", Lsn(5), Value::image("after")).unwrap();
    w.finish_write(Lsn(5)).unwrap();
    assert_eq!(
        new_main.get_blocking(b"k", Lsn(5)).unwrap().unwrap(),
        "after"
    );
    drop(w);
    block_on(store.close()).unwrap();
}

/// Given layers on local disk, when eviction is asked to reach a budget of 0, then a store
/// without a remote reports every layer kept as not uploaded and removes nothing, and a store
/// whose layers are uploaded removes them all and reports nothing kept.
#[test]
fn eviction_reports_what_it_kept_and_why() {
    let backend = Backend::local(unique_prefix("daemon", "evict-report"));
    for remote in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StoreOptions::new(dir.path()).background_period(None);
        if remote {
            opts = opts.remote(backend.remote());
        }
        let store = Store::open_blocking(opts).unwrap();
        let main = block_on(store.create_timeline("main")).unwrap();
        let mut w = main.writer().unwrap();
        for lsn in 1..=20u64 {
            w.put(&key(lsn as u32), Lsn(lsn), Value::image(vec![7u8; 1000]))
                .unwrap();
            w.finish_write(Lsn(lsn)).unwrap();
        }
        drop(w);
        block_on(main.flush()).unwrap();
        let on_disk: u64 = main.layers().iter().map(|l| l.file_size).sum();
        assert!(on_disk > 0);
        if remote {
            block_on(store.wait_for_upload()).unwrap();
        }
        let r = store.evict_layers(0);
        if remote {
            assert_eq!(r.evicted_bytes, on_disk, "{r:?}");
            assert_eq!(r.resident_bytes, 0, "{r:?}");
            assert!(r.kept.is_empty(), "{r:?}");
            assert_eq!(
                main.get_blocking(&key(3), Lsn(20)).unwrap().unwrap(),
                vec![7u8; 1000]
            );
        } else {
            assert_eq!((r.evicted_bytes, r.evicted_layers), (0, 0), "{r:?}");
            assert_eq!(r.resident_bytes, on_disk, "{r:?}");
            assert_eq!(r.kept.len(), main.layers().len(), "{r:?}");
            assert!(
                r.kept
                    .iter()
                    .all(|k| k.reason == stratakv::KeepReason::NotUploaded
                        && k.timeline == main.id()),
                "{r:?}"
            );
        }
        block_on(store.close()).unwrap();
    }
}

/// Given writes that leave unflushed data and more L0 layers than the compaction threshold,
/// with the background period off (only the L0 trigger kicks compaction), when the store settles, then everything is flushed,
/// compacted below the threshold and uploaded.
#[test]
fn settle_waits_for_flush_compaction_and_upload() {
    let backend = Backend::local(unique_prefix("daemon", "settle"));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_blocking(
        StoreOptions::new(dir.path())
            .remote(backend.remote())
            .compaction_threshold(2)
            .background_period(None),
    )
    .unwrap();
    let main = block_on(store.create_timeline("main")).unwrap();
    let mut w = main.writer().unwrap();
    for round in 0..4u64 {
        for i in 1..=10u64 {
            let lsn = round * 10 + i;
            w.put(&key(i as u32), Lsn(lsn), Value::image(value(i as u32, lsn)))
                .unwrap();
            w.finish_write(Lsn(lsn)).unwrap();
        }
        if round < 3 {
            block_on(main.flush()).unwrap();
        }
    }
    let l0 = |tl: &stratakv::Timeline| tl.layers().iter().filter(|l| l.level == 0).count();
    // (Three flushes reach the L0 trigger, which kicks a background pass of its own: whether
    // it has run yet is a race, which settling ends.)
    assert!(main.disk_consistent_lsn() < Lsn(40));
    block_on(store.settle()).unwrap();
    assert_eq!(main.disk_consistent_lsn(), Lsn(40));
    assert!(l0(&main) < 2, "{} L0 layers after settling", l0(&main));
    assert_eq!(main.remote_consistent_lsn(), Lsn(40));
    assert!(store.background_error().is_none());
    drop(w);
    block_on(store.close()).unwrap();
}
