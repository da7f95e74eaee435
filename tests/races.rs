//! User operations racing the store's own background work, one regression test per race found:
//! each reproduced the bug within a few iterations before its fix.
//!
//! The concurrent model test (`tests/concurrent.rs`) looks for the next one at random; these pin
//! the ones already found, in the order that broke.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use stratakv::{ErrorKind, Lsn, Store, StoreOptions, Value};

/// A timeline deleted while the flusher writes its frozen layer: the delete waits for the flush
/// (or drops what is not started), succeeds, removes the directory, and poisons nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_timeline_while_its_frozen_layer_flushes_never_fails_or_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        StoreOptions::new(dir.path())
            .freeze_bytes(1024)
            .block_size(1024)
            .pitr_interval(None),
    )
    .await
    .unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let mut w = main.writer().unwrap();
    for lsn in 1..=10u64 {
        w.put(b"k", Lsn(lsn), Value::image(vec![b'm'; 100]))
            .unwrap();
        w.finish_write(Lsn(lsn)).unwrap();
    }
    drop(w);
    for n in 0..40u64 {
        let name = format!("b{n}");
        let b = store.branch(&name, &main, Lsn(2)).await.unwrap();
        let mut w = b.writer().unwrap();
        for i in 0..4u64 {
            let lsn = Lsn(100 + i);
            w.put(
                format!("key{i}").as_bytes(),
                lsn,
                Value::image(vec![b'x'; 400]),
            )
            .unwrap();
            w.finish_write(lsn).unwrap();
        }
        drop(w);
        let id = b.id();
        store
            .delete_timeline(&name)
            .await
            .unwrap_or_else(|e| panic!("iteration {n}: delete_timeline({name:?}) failed: {e}"));
        let tl_dir = dir.path().join("timelines").join(id.to_string());
        assert!(
            !tl_dir.exists(),
            "iteration {n}: {} is still there after the delete",
            tl_dir.display()
        );
        let err = b.get(b"key0", Lsn(100)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "iteration {n}: {err}");
        let main = store
            .timeline("main")
            .unwrap_or_else(|e| panic!("iteration {n}: the store after the delete: {e}"));
        assert_eq!(
            main.get(b"k", Lsn(10)).await.unwrap().unwrap(),
            vec![b'm'; 100]
        );
    }
    store.close().await.unwrap();
}

/// Branches at the moving GC cutoff while another thread commits and collects: every branch
/// that succeeds carries its branch point's commit time, so time lookups on it work; every one
/// that fails says the LSN was below the cutoff.
#[test]
fn a_branch_at_the_gc_cutoff_racing_gc_keeps_its_branch_points_commit_time() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(Store::open(
            StoreOptions::new(dir.path())
                .gc_horizon(Some(3))
                .pitr_interval(None)
                .background_period(None),
        ))
        .unwrap();
    let store = Arc::new(store);
    let main = rt.block_on(store.create_timeline("main")).unwrap();
    let base = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let time_of = move |lsn: u64| base + Duration::from_millis(lsn);
    // The commit time of every LSN, as committed.
    let committed: Arc<Mutex<BTreeMap<u64, SystemTime>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(0));
    let mut w = main.writer().unwrap();
    for lsn in 1..=5u64 {
        w.put(b"k", Lsn(lsn), Value::image(lsn.to_string()))
            .unwrap();
        w.finish_write_at(Lsn(lsn), time_of(lsn)).unwrap();
        committed.lock().insert(lsn, time_of(lsn));
    }
    let writer = {
        let (main, committed, stop, last) =
            (main.clone(), committed.clone(), stop.clone(), last.clone());
        let handle = rt.handle().clone();
        std::thread::spawn(move || {
            let mut lsn = 5u64;
            while !stop.load(Ordering::Acquire) && lsn < 20_000 {
                lsn += 1;
                w.put(b"k", Lsn(lsn), Value::image(lsn.to_string()))
                    .unwrap();
                committed.lock().insert(lsn, time_of(lsn));
                w.finish_write_at(Lsn(lsn), time_of(lsn)).unwrap();
                last.store(lsn, Ordering::Release);
                handle.block_on(main.gc()).unwrap();
            }
        })
    };
    let (mut ok, mut refused) = (0u32, 0u32);
    for n in 0..300u32 {
        let at = main.gc_cutoff();
        let name = format!("b{n}");
        match rt.block_on(store.branch(&name, &main, at)) {
            Ok(b) => {
                ok += 1;
                let want = committed.lock().range(..=at.0).next_back().map(|(_, t)| *t);
                assert_eq!(
                    b.time_at(at),
                    want,
                    "branch {name} at {at}: the commit time of its branch point"
                );
                if let Some(t) = want {
                    assert_eq!(
                        b.lsn_at(t).unwrap(),
                        at,
                        "branch {name}: lsn_at its branch time"
                    );
                }
                rt.block_on(store.delete_timeline(&name)).unwrap();
            }
            Err(e) => {
                refused += 1;
                assert_eq!(e.kind(), ErrorKind::InvalidArgument, "branch {name}: {e}");
                assert!(main.gc_cutoff() > at, "branch {name} refused at {at}: {e}");
            }
        }
    }
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    eprintln!(
        "branches: {ok} made, {refused} refused; main committed up to {}",
        last.load(Ordering::Acquire)
    );
    assert!(ok > 0, "no branch succeeded");
    let store = Arc::into_inner(store).expect("one handle");
    rt.block_on(store.close()).unwrap();
}

/// A file system whose fsyncs of the time index file wait while `held` is set.
struct HeldTimeIndexSync {
    held: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    waiting: Arc<AtomicBool>,
}

struct HeldFile {
    inner: Box<dyn stratakv::io::WritableFile>,
    held: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    waiting: Arc<AtomicBool>,
}

impl std::io::Write for HeldFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl stratakv::io::WritableFile for HeldFile {
    fn sync(&mut self) -> std::io::Result<()> {
        let (lock, cv) = &*self.held;
        let mut held = lock.lock().unwrap();
        while *held {
            self.waiting.store(true, Ordering::Release);
            held = cv.wait(held).unwrap();
        }
        drop(held);
        self.inner.sync()
    }
}

impl stratakv::io::FileSystem for HeldTimeIndexSync {
    fn create(&self, p: &std::path::Path) -> std::io::Result<Box<dyn stratakv::io::WritableFile>> {
        stratakv::io::StdFs.create(p)
    }
    fn open_append(
        &self,
        p: &std::path::Path,
    ) -> std::io::Result<Box<dyn stratakv::io::WritableFile>> {
        let inner = stratakv::io::StdFs.open_append(p)?;
        if p.file_name().is_some_and(|n| n == "timeindex") {
            return Ok(Box::new(HeldFile {
                inner,
                held: self.held.clone(),
                waiting: self.waiting.clone(),
            }));
        }
        Ok(inner)
    }
    fn read(&self, p: &std::path::Path) -> std::io::Result<Vec<u8>> {
        stratakv::io::StdFs.read(p)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        stratakv::io::StdFs.rename(from, to)
    }
    fn remove_file(&self, p: &std::path::Path) -> std::io::Result<()> {
        stratakv::io::StdFs.remove_file(p)
    }
    fn remove_dir_all(&self, p: &std::path::Path) -> std::io::Result<()> {
        stratakv::io::StdFs.remove_dir_all(p)
    }
    fn create_dir_all(&self, p: &std::path::Path) -> std::io::Result<()> {
        stratakv::io::StdFs.create_dir_all(p)
    }
    fn sync_dir(&self, p: &std::path::Path) -> std::io::Result<()> {
        stratakv::io::StdFs.sync_dir(p)
    }
    fn list_dir(&self, p: &std::path::Path) -> std::io::Result<Vec<String>> {
        stratakv::io::StdFs.list_dir(p)
    }
    fn truncate(&self, p: &std::path::Path, len: u64) -> std::io::Result<()> {
        stratakv::io::StdFs.truncate(p, len)
    }
}

/// A flush whose fsync of the time index file is slow: commits go on meanwhile (they record
/// their times in the index the flush persists, and once waited for its fsync).
#[test]
fn a_commit_does_not_wait_for_the_time_index_fsync_of_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let held = Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new()));
    let waiting = Arc::new(AtomicBool::new(false));
    let fs = HeldTimeIndexSync {
        held: held.clone(),
        waiting: waiting.clone(),
    };
    let store = Store::open_blocking(
        StoreOptions::new(dir.path())
            .file_system(Arc::new(fs))
            .background_period(None)
            .pitr_interval(None),
    )
    .unwrap();
    let main = futures::executor::block_on(store.create_timeline("main")).unwrap();
    let mut w = main.writer().unwrap();
    w.put(b"k1", Lsn(1), Value::image(b"one".to_vec())).unwrap();
    w.finish_write(Lsn(1)).unwrap();
    let flusher = {
        let main = main.clone();
        std::thread::spawn(move || futures::executor::block_on(main.flush()))
    };
    let start = std::time::Instant::now();
    while !waiting.load(Ordering::Acquire) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the flush never reached the time index fsync"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // The flush waits in the fsync; a commit on another thread must finish regardless.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let committer = std::thread::spawn(move || {
        let r = w
            .put(b"k2", Lsn(2), Value::image(b"two".to_vec()))
            .and_then(|()| w.finish_write(Lsn(2)));
        done_tx.send(r).unwrap();
    });
    let committed = done_rx.recv_timeout(Duration::from_secs(20));
    {
        let (lock, cv) = &*held;
        *lock.lock().unwrap() = false;
        cv.notify_all();
    }
    committer.join().unwrap();
    flusher.join().unwrap().unwrap();
    committed
        .expect("the commit waited for the flush's time index fsync")
        .unwrap();
    assert_eq!(
        main.get_blocking(b"k2", Lsn(2)).unwrap().as_deref(),
        Some(&b"two"[..])
    );
    futures::executor::block_on(store.close()).unwrap();
}
