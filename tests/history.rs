//! History: branches, named branches and restore, the time index, retention, GC, compaction.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use stratakv::{
    ErrorKind, Lsn, ManualClock, RestorePoint, SimpleRedo, Store, StoreOptions, Timeline, Value,
};

fn opts(dir: &std::path::Path) -> StoreOptions {
    StoreOptions::new(dir)
        .freeze_bytes(16 << 10)
        .block_size(1024)
        .background_period(None)
        .pitr_interval(None)
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

/// Writes `value(i)` for keys `0..n` at one LSN and publishes it.
fn write_all(tl: &Timeline, n: u32, lsn: u64, tag: &str) {
    let mut w = tl.writer().unwrap();
    for i in 0..n {
        w.put(&key(i), Lsn(lsn), Value::image(format!("{tag}-{i}")))
            .unwrap();
    }
    w.finish_write(Lsn(lsn)).unwrap();
}

async fn read(tl: &Timeline, i: u32, lsn: u64) -> Option<Bytes> {
    tl.get(&key(i), Lsn(lsn)).await.unwrap()
}

/// Bytes of the timeline's layer files.
fn layer_bytes(tl: &Timeline) -> u64 {
    tl.layers().iter().map(|l| l.file_size).sum()
}

/// Keys `0..n` read at each of `lsns`.
async fn read_all(tl: &Timeline, n: u32, lsns: &[u64]) -> Vec<Option<Bytes>> {
    let mut out = Vec::new();
    for &lsn in lsns {
        for i in 0..n {
            out.push(read(tl, i, lsn).await);
        }
    }
    out
}

#[tokio::test]
async fn branch_reads_the_parent_at_the_branch_point_and_writes_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(opts(dir.path())).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    write_all(&main, 50, 10, "a");
    write_all(&main, 50, 20, "b");
    let dev = store.branch("dev", &main, Lsn(15)).await.unwrap();
    assert_eq!(dev.last_record_lsn(), Lsn(15));
    assert_eq!(dev.gc_cutoff(), Lsn(15));
    assert_eq!(read(&dev, 3, 15).await.unwrap(), "a-3");
    write_all(&dev, 10, 30, "dev");
    write_all(&main, 10, 30, "main");
    assert_eq!(read(&dev, 3, 30).await.unwrap(), "dev-3");
    assert_eq!(
        read(&dev, 30, 30).await.unwrap(),
        "a-30",
        "unwritten keys fall through at the branch point"
    );
    assert_eq!(read(&main, 3, 30).await.unwrap(), "main-3");
    assert_eq!(read(&main, 30, 30).await.unwrap(), "b-30");
    // Below the branch point the child refuses with a kind of its own, naming the branch
    // point and the ancestor that holds that history, which reads it.
    let err = dev.get(&key(3), Lsn(12)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BelowBranchPoint, "{err}");
    assert!(err.to_string().contains("0/F"), "{err}");
    assert!(err.to_string().contains("main"), "{err}");
    for r in [
        dev.get_many(&[key(3)], Lsn(12)).await.map(drop),
        dev.scan::<&[u8]>(.., Lsn(12)).await.map(drop),
    ] {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::BelowBranchPoint);
    }
    assert_eq!(read(&main, 3, 12).await.unwrap(), "a-3");
    store.close().await.unwrap();

    let store = Store::open(opts(dir.path())).await.unwrap();
    let dev = store.timeline("dev").unwrap();
    assert_eq!(dev.ancestor().unwrap().1, Lsn(15));
    assert_eq!(read(&dev, 3, 30).await.unwrap(), "dev-3");
    assert_eq!(read(&dev, 30, 30).await.unwrap(), "a-30");
}

#[tokio::test]
async fn branch_outside_the_readable_range_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(opts(dir.path()).gc_horizon(Some(5)))
        .await
        .unwrap();
    let main = store.create_timeline("main").await.unwrap();
    write_all(&main, 5, 10, "a");
    write_all(&main, 5, 20, "b");
    let err = store.branch("dev", &main, Lsn(21)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("0/0 (GC cutoff) to 0/14"), "{err}");
    main.gc().await.unwrap();
    assert_eq!(main.gc_cutoff(), Lsn(15));
    let err = store.branch("dev", &main, Lsn(14)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("0/F (GC cutoff)"), "{err}");
    assert!(
        store.timeline("dev").is_err(),
        "a refused branch leaves nothing behind"
    );
    assert_eq!(store.timelines().len(), 1);
    store.branch("dev", &main, Lsn(15)).await.unwrap();
}

#[tokio::test]
async fn branches_of_branches_read_through_ten_levels() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(opts(dir.path())).await.unwrap();
    let mut tl = store.create_timeline("level0").await.unwrap();
    write_all(&tl, 20, 10, "l0");
    let mut chain = vec![tl.clone()];
    for level in 1..=10u32 {
        let lsn = tl.last_record_lsn().0;
        tl = store
            .branch(&format!("level{level}"), &tl, Lsn(lsn))
            .await
            .unwrap();
        let mut w = tl.writer().unwrap();
        w.put(&key(level), Lsn(lsn + 5), Value::image(format!("l{level}")))
            .unwrap();
        w.finish_write(Lsn(lsn + 5)).unwrap();
        drop(w);
        if level % 3 == 0 {
            tl.flush().await.unwrap();
        }
        chain.push(tl.clone());
    }
    let deepest = chain.last().unwrap();
    let at = deepest.last_record_lsn().0;
    for i in 0..20u32 {
        let want = if (1..=10).contains(&i) {
            format!("l{i}")
        } else {
            format!("l0-{i}")
        };
        assert_eq!(read(deepest, i, at).await.unwrap(), want, "key {i}");
    }
    let (_, trace) = deepest.get_traced(&key(15), Lsn(at)).await.unwrap();
    assert_eq!(trace.ancestors_visited, 10);
}

#[tokio::test]
async fn delete_with_children_is_refused_until_detached() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(opts(dir.path())).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    write_all(&main, 40, 10, "a");
    main.flush().await.unwrap();
    write_all(&main, 20, 20, "b");
    let dev = store.branch("dev", &main, Lsn(20)).await.unwrap();
    {
        let mut w = dev.writer().unwrap();
        w.put(&key(0), Lsn(25), Value::Tombstone).unwrap();
        w.finish_write(Lsn(25)).unwrap();
    }
    let before: Vec<_> = dev.scan(..b"z".to_vec(), Lsn(25)).await.unwrap();
    let before_at_20 = dev.scan(..b"z".to_vec(), Lsn(20)).await.unwrap();
    let err = store.delete_timeline("main").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("dev"), "{err}");
    assert_eq!(
        read(&main, 1, 20).await.unwrap(),
        "b-1",
        "the refused delete changed nothing"
    );

    store.detach_ancestor("dev").await.unwrap();
    assert!(dev.ancestor().is_none());
    store.delete_timeline("main").await.unwrap();
    assert_eq!(
        store.timeline("main").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        main.get(&key(1), Lsn(20)).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(dev.scan(..b"z".to_vec(), Lsn(25)).await.unwrap(), before);
    assert_eq!(
        dev.scan(..b"z".to_vec(), Lsn(20)).await.unwrap(),
        before_at_20
    );
    store.close().await.unwrap();
    let store = Store::open(opts(dir.path())).await.unwrap();
    let dev = store.timeline("dev").unwrap();
    assert_eq!(dev.scan(..b"z".to_vec(), Lsn(25)).await.unwrap(), before);
    assert_eq!(store.timelines().len(), 1);
}

fn clocked(dir: &std::path::Path) -> (StoreOptions, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    (opts(dir).clock(clock.clone()), clock)
}

#[tokio::test]
async fn lsn_at_time_is_exact_per_commit_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (o, clock) = clocked(dir.path());
    let store = Store::open(o.clone()).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let t0 = clock.now_for_test();
    let mut times = Vec::new();
    {
        let mut w = main.writer().unwrap();
        for i in 1..=50u64 {
            clock.advance(Duration::from_millis(10 * i));
            w.put(b"k", Lsn(i * 16), Value::image(format!("v{i}")))
                .unwrap();
            w.finish_write(Lsn(i * 16)).unwrap();
            times.push((clock.now_for_test(), Lsn(i * 16)));
        }
    }
    clock.advance(Duration::from_secs(1));
    let check = |tl: Timeline, times: Vec<(SystemTime, Lsn)>| async move {
        for (t, lsn) in &times {
            assert_eq!(tl.lsn_at(*t).unwrap(), *lsn);
            assert_eq!(
                tl.lsn_at(*t + Duration::from_millis(1)).unwrap(),
                *lsn,
                "between commits"
            );
            assert_eq!(tl.time_at(*lsn), Some(*t));
        }
    };
    check(main.clone(), times.clone()).await;
    let err = main.lsn_at(t0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BelowGcCutoff);
    let err = main
        .lsn_at(clock.now_for_test() + Duration::from_secs(60))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("future"), "{err}");
    store.close().await.unwrap();
    let store = Store::open(o).await.unwrap();
    check(store.timeline("main").unwrap(), times).await;
}

trait NowForTest {
    fn now_for_test(&self) -> SystemTime;
}
impl NowForTest for ManualClock {
    fn now_for_test(&self) -> SystemTime {
        stratakv::Clock::now(self)
    }
}

#[tokio::test]
async fn restore_moves_the_name_keeps_a_backup_and_can_be_undone() {
    let dir = tempfile::tempdir().unwrap();
    let (o, clock) = clocked(dir.path());
    let store = Store::open(o.clone()).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    write_all(&main, 10, 10, "good");
    clock.advance(Duration::from_secs(60));
    let good_time = clock.now_for_test();
    clock.advance(Duration::from_secs(60));
    write_all(&main, 10, 20, "oops");
    let restored = store
        .restore("main", RestorePoint::Time(good_time))
        .await
        .unwrap();
    assert_eq!(restored.lsn, Lsn(10));
    let backup = restored.backup_name.clone().unwrap();
    assert_eq!(backup, "main@restore-1");
    let now_main = store.timeline("main").unwrap();
    assert_eq!(now_main.id(), restored.timeline.id());
    assert_eq!(read(&now_main, 1, 10).await.unwrap(), "good-1");
    assert_eq!(main.name(), backup, "the old handle follows its timeline");
    assert_eq!(
        read(&store.timeline(&backup).unwrap(), 1, 20)
            .await
            .unwrap(),
        "oops-1"
    );

    // Undo: point the name back at the backup's latest state.
    let undo = store
        .restore_from("main", &backup, RestorePoint::Lsn(Lsn(20)))
        .await
        .unwrap();
    assert_eq!(undo.backup_name.as_deref(), Some("main@restore-2"));
    assert_eq!(
        read(&store.timeline("main").unwrap(), 1, 20).await.unwrap(),
        "oops-1"
    );
    store.close().await.unwrap();

    let store = Store::open(o).await.unwrap();
    let names: Vec<_> = store.timelines().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["main", "main@restore-1", "main@restore-2"]);
    assert_eq!(
        read(&store.timeline("main@restore-2").unwrap(), 1, 10)
            .await
            .unwrap(),
        "good-1"
    );
}

#[tokio::test]
async fn gc_cutoff_follows_retention_never_moves_back_and_respects_leases() {
    let dir = tempfile::tempdir().unwrap();
    let (o, clock) = clocked(dir.path());
    let store = Store::open(
        o.gc_horizon(Some(100))
            .pitr_interval(Some(Duration::from_secs(3600))),
    )
    .await
    .unwrap();
    let main = store.create_timeline("main").await.unwrap();
    for round in 1..=10u64 {
        write_all(&main, 5, round * 100, &format!("r{round}"));
        clock.advance(Duration::from_secs(600));
    }
    // Time window (1 h = 6 rounds back) is longer than 100 LSNs: it wins.
    let r = main.gc().await.unwrap();
    let by_time = main
        .lsn_at(clock.now_for_test() - Duration::from_secs(3600))
        .unwrap();
    assert_eq!(r.cutoff, by_time);
    assert_eq!(main.gc_cutoff(), by_time);
    let err = main.get(&key(1), Lsn(by_time.0 - 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BelowGcCutoff);
    assert!(err.to_string().contains(&by_time.to_string()), "{err}");
    assert_eq!(
        read(&main, 1, by_time.0).await.unwrap(),
        format!("r{}-1", by_time.0 / 100)
    );

    // A lease holds the cutoff; it expires on the store's clock.
    let leased = Lsn(by_time.0 + 100);
    main.lease(leased, Duration::from_secs(1800)).unwrap();
    let err = main
        .lease(Lsn(by_time.0 - 1), Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    clock.advance(Duration::from_secs(1200));
    assert_eq!(main.gc().await.unwrap().cutoff, leased);
    clock.advance(Duration::from_secs(1200));
    let after = main.gc().await.unwrap().cutoff;
    assert!(after > leased, "{after} after the lease expired");
    store.close().await.unwrap();

    // The cutoff survives reopen and never moves back, even with a longer window.
    let store = Store::open(opts(dir.path()).pitr_interval(Some(Duration::from_secs(1 << 30))))
        .await
        .unwrap();
    let main = store.timeline("main").unwrap();
    assert_eq!(main.gc_cutoff(), after);
    assert_eq!(main.gc().await.unwrap().cutoff, after);
}

#[tokio::test]
async fn gc_removes_history_no_read_needs_and_keeps_a_childs_branch_point() {
    let dir = tempfile::tempdir().unwrap();
    // No compaction: piled-up L0 layers would start background compaction and GC, racing
    // the GC pass this test makes.
    let o = opts(dir.path())
        .gc_horizon(Some(50))
        .compaction_threshold(usize::MAX);
    let store = Store::open(o).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let n = 200;
    for round in 1..=20u64 {
        write_all(&main, n, round * 100, &format!("r{round}"));
        main.flush().await.unwrap();
        if round == 5 {
            store
                .branch("child", &main, Lsn(round * 100))
                .await
                .unwrap();
        }
    }
    let before: u64 = main.layers().iter().map(|l| l.file_size).sum();
    let report = main.gc().await.unwrap();
    assert_eq!(report.cutoff, Lsn(1950));
    assert!(report.images_written >= 1, "{report:?}");
    assert!(report.layers_removed > 0, "{report:?}");
    let after: u64 = main.layers().iter().map(|l| l.file_size).sum();
    assert!(after < before, "{after} !< {before}");
    for i in (0..n).step_by(7) {
        assert_eq!(read(&main, i, 2000).await.unwrap(), format!("r20-{i}"));
        assert_eq!(read(&main, i, 1950).await.unwrap(), format!("r19-{i}"));
    }
    let child = store.timeline("child").unwrap();
    for i in (0..n).step_by(7) {
        assert_eq!(
            read(&child, i, 500).await.unwrap(),
            format!("r5-{i}"),
            "child reads its branch point"
        );
    }
}

/// Compaction writes an image layer for deltas a read must replay, or for a deep stack of
/// delta layers; not for whole values under the stack's limit, however many bytes they hold.
#[tokio::test]
async fn compaction_writes_images_for_redo_or_depth_not_for_bytes_of_whole_values() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path())
        .compaction_threshold(2)
        .image_threshold_bytes(4 << 10)
        .image_threshold_layers(6)
        .redo(Arc::new(SimpleRedo));
    let store = Store::open(o).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    // Five passes of whole values, each far over the byte threshold: no image.
    let mut lsn = 0;
    for round in 1..=5u64 {
        lsn = round * 10;
        write_all(&main, 500, lsn, &format!("r{round}"));
        main.flush().await.unwrap();
        let r = main.compact().await.unwrap();
        assert_eq!(r.image_at, None, "round {round}: {r:?}");
        assert!(r.delta_bytes_above_image > 4 << 10, "{r:?}");
        assert_eq!(r.redo_bytes_above_image, 0, "{r:?}");
        assert_eq!(r.delta_layers_above_image, round as usize, "{r:?}");
    }
    // A sixth stacked pass reaches the depth limit.
    lsn += 10;
    write_all(&main, 500, lsn, "r6");
    main.flush().await.unwrap();
    let r = main.compact().await.unwrap();
    assert_eq!(r.image_at, Some(Lsn(lsn)), "{r:?}");
    assert_eq!(r.delta_layers_above_image, 0, "{r:?}");
    // Deltas needing redo: an image once their bytes pass the threshold, long before the depth.
    let mut passes = 0;
    let image = loop {
        lsn += 10;
        passes += 1;
        let mut w = main.writer().unwrap();
        for i in 0..500 {
            w.put(&key(i), Lsn(lsn), Value::delta(SimpleRedo::append(b"+x")))
                .unwrap();
        }
        w.finish_write(Lsn(lsn)).unwrap();
        drop(w);
        main.flush().await.unwrap();
        let r = main.compact().await.unwrap();
        if let Some(at) = r.image_at {
            break at;
        }
        assert!(
            r.redo_bytes_above_image > 0 && r.redo_bytes_above_image < 4 << 10,
            "{r:?}"
        );
    };
    assert_eq!(image, Lsn(lsn));
    assert!(passes < 6, "{passes} passes of deltas before an image");
    for i in [0u32, 250, 499] {
        let want = format!("r6-{i}{}", "+x".repeat(passes));
        assert_eq!(read(&main, i, lsn).await.unwrap(), want);
    }
    store.close().await.unwrap();
    // Reopened, the records above the newest image are not known: its layers count in full.
    let store = Store::open(
        opts(dir.path())
            .compaction_threshold(2)
            .image_threshold_bytes(4 << 10)
            .image_threshold_layers(6)
            .redo(Arc::new(SimpleRedo)),
    )
    .await
    .unwrap();
    let main = store.timeline("main").unwrap();
    lsn += 10;
    write_all(&main, 500, lsn, "r-last");
    main.flush().await.unwrap();
    let r = main.compact().await.unwrap();
    assert_eq!(r.image_at, Some(Lsn(lsn)), "{r:?}");
    store.close().await.unwrap();
}

#[tokio::test]
async fn compaction_bounds_the_layers_a_read_visits() {
    let dir = tempfile::tempdir().unwrap();
    // Whole values only: images come from the stack of delta layers, not from redo.
    let o = opts(dir.path())
        .compaction_threshold(4)
        .image_threshold_layers(4)
        .target_layer_size(32 << 10);
    let store = Store::open(o).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let mut worst = 0;
    for round in 1..=40u64 {
        write_all(&main, 100, round * 10, &format!("r{round}"));
        main.flush().await.unwrap();
        main.compact().await.unwrap();
        for i in [0u32, 50, 99] {
            let (v, trace) = main.get_traced(&key(i), Lsn(round * 10)).await.unwrap();
            assert_eq!(v.unwrap(), format!("r{round}-{i}"));
            worst = worst.max(trace.layers_visited);
        }
    }
    assert!(worst <= 8, "a read visited {worst} layers");
    // Without compaction the oldest key of a long history goes through every flush.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = Store::open(
        opts(dir2.path())
            .compaction_threshold(1 << 20)
            .image_threshold_bytes(u64::MAX),
    )
    .await
    .unwrap();
    let raw = store2.create_timeline("main").await.unwrap();
    {
        let mut w = raw.writer().unwrap();
        w.put(&key(5), Lsn(1), Value::image("v")).unwrap();
        w.finish_write(Lsn(1)).unwrap();
    }
    for round in 1..=40u64 {
        let mut w = raw.writer().unwrap();
        for i in (0..10).filter(|i| *i != 5) {
            w.put(&key(i), Lsn(round * 10), Value::image("x")).unwrap();
        }
        w.finish_write(Lsn(round * 10)).unwrap();
        drop(w);
        raw.flush().await.unwrap();
    }
    let (v, trace) = raw.get_traced(&key(5), Lsn(400)).await.unwrap();
    assert_eq!(v.unwrap(), "v");
    assert!(trace.layers_visited >= 40, "{trace:?}");
    // Key filters rule key 5 out of the layers that do not hold it, without reading a block.
    assert!(trace.filter_skips >= 39, "{trace:?}");
}

/// A delta layer that straddles the cutoff keeps its place, but GC rewrites it without the
/// versions no read can reach — and every read at the cutoff, above it and at a child's branch
/// point answers as before.
#[tokio::test]
async fn gc_rewrites_a_straddling_layer_without_unreachable_versions() {
    use stratakv::SimpleRedo;
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path())
        .gc_horizon(Some(150))
        .compaction_threshold(1 << 20)
        .image_threshold_bytes(u64::MAX)
        .target_layer_size(u64::MAX);
    let store = Store::open(o).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let n = 60u32;
    // Rounds of images, and between them append deltas on every third key: the chain below
    // the cutoff must keep its base.
    for round in 1..=20u64 {
        let mut w = main.writer().unwrap();
        for i in 0..n {
            let lsn = Lsn(round * 100);
            w.put(&key(i), lsn, Value::image(format!("r{round}-{i}")))
                .unwrap();
        }
        w.finish_write(Lsn(round * 100)).unwrap();
        for i in (0..n).step_by(3) {
            w.put(
                &key(i),
                Lsn(round * 100 + 50),
                Value::delta(SimpleRedo::append(b"+")),
            )
            .unwrap();
        }
        w.finish_write(Lsn(round * 100 + 50)).unwrap();
        drop(w);
        main.flush().await.unwrap();
        if round == 4 {
            store.branch("child", &main, Lsn(450)).await.unwrap();
        }
    }
    // One L1 layer holding the whole history.
    main.compact().await.unwrap();
    assert_eq!(main.layers().len(), 1, "{:?}", main.layers());
    let points: Vec<u64> = (1900..=2050).step_by(25).collect();
    let before = read_all(&main, n, &points).await;
    let child = store.timeline("child").unwrap();
    let mut child_before = Vec::new();
    for i in 0..n {
        child_before.push(read(&child, i, 450).await);
    }
    let size_before = layer_bytes(&main);
    let report = main.gc().await.unwrap();
    assert_eq!(report.cutoff, Lsn(1900));
    assert_eq!(report.layers_rewritten, 1, "{report:?}");
    let size_after = layer_bytes(&main);
    assert!(
        size_after * 3 < size_before,
        "{size_after} bytes after GC, {size_before} before"
    );
    let after = read_all(&main, n, &points).await;
    assert_eq!(before, after, "reads at and above the cutoff changed");
    for i in 0..n {
        assert_eq!(read(&child, i, 450).await, child_before[i as usize]);
    }
    assert_eq!(child_before[3].as_deref(), Some(&b"r4-3+"[..]));
    assert_eq!(
        main.get(&key(0), Lsn(1850)).await.unwrap_err().kind(),
        ErrorKind::BelowGcCutoff
    );
    // Reopen: the rewritten layer is what the manifest names.
    store.close().await.unwrap();
    let store = Store::open(opts(dir.path()).gc_horizon(Some(150)))
        .await
        .unwrap();
    let main = store.timeline("main").unwrap();
    let reopened = read_all(&main, n, &points).await;
    assert_eq!(before, reopened);
}

/// Delta layers below the cutoff are rewritten together: a version shadowed by a newer image in
/// another layer goes too, and reads at and above the cutoff answer as before.
#[tokio::test]
async fn gc_rewrites_delta_layers_together_dropping_versions_shadowed_across_layers() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path())
        .gc_horizon(Some(50))
        // Rounds 1–2 are a fifth of the bytes: under this ratio GC does not write an image
        // to remove them, and the rewrite has to find their garbage.
        .gc_compaction_ratio(0.3)
        .compaction_threshold(usize::MAX)
        .image_threshold_bytes(u64::MAX)
        .target_layer_size(u64::MAX);
    let store = Store::open(o).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let n = 50u32;
    for round in 1..=10u64 {
        write_all(&main, n, round * 100, &format!("r{round}"));
        main.flush().await.unwrap();
        if round == 2 || round == 10 {
            main.compact().await.unwrap();
        }
    }
    // Two L1 layers: rounds 1–2, wholly below the cutoff (950), and rounds 3–10 across it.
    assert_eq!(main.layers().len(), 2, "{:?}", main.layers());
    let points: Vec<u64> = (950..=1000).step_by(10).collect();
    let before = read_all(&main, n, &points).await;
    let size_before = layer_bytes(&main);
    let report = main.gc().await.unwrap();
    assert_eq!(report.cutoff, Lsn(950));
    assert_eq!(report.layers_rewritten, 2, "{report:?}");
    let size_after = layer_bytes(&main);
    // Rounds 9 and 10 of 10 are live; allow for per-file overhead.
    assert!(
        size_after * 3 < size_before,
        "{size_after} bytes after GC, {size_before} before"
    );
    let after = read_all(&main, n, &points).await;
    assert_eq!(before, after, "reads at and above the cutoff changed");
    assert_eq!(after[0].as_deref(), Some(&b"r9-0"[..]));
}

/// A delta layer that an image layer sits inside holds the history below the image too: a read
/// whose key's next older version there needs nothing older (an image, a tombstone) ends in the
/// delta layer; one whose next older version is a delta goes on to the image, as before.
#[tokio::test]
async fn a_read_ends_in_a_delta_layer_that_holds_the_base_below_an_image() {
    use stratakv::SimpleRedo;
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path())
        .compaction_threshold(1 << 20)
        .image_threshold_bytes(u64::MAX)
        .target_layer_size(u64::MAX);
    let store = Store::open(o).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let (image, base, delta, gone, later) = (key(1), key(2), key(3), key(4), key(5));
    let mut w = main.writer().unwrap();
    w.put(&image, Lsn(8), Value::image("image@8")).unwrap();
    w.put(&base, Lsn(8), Value::image("base@8")).unwrap();
    w.put(&gone, Lsn(8), Value::image("gone@8")).unwrap();
    w.finish_write(Lsn(8)).unwrap();
    w.put(&base, Lsn(0x10), Value::delta(SimpleRedo::append(b"+16")))
        .unwrap();
    w.put(&gone, Lsn(0x10), Value::Tombstone).unwrap();
    w.put(&later, Lsn(0x10), Value::image("later@16")).unwrap();
    w.finish_write(Lsn(0x10)).unwrap();
    drop(w);
    main.flush().await.unwrap();
    assert_eq!(main.create_image_layer().await.unwrap(), Lsn(0x10));
    let mut w = main.writer().unwrap();
    for k in [&image, &base, &gone, &later] {
        w.put(k, Lsn(0x20), Value::image("new@32")).unwrap();
    }
    w.put(&delta, Lsn(0x20), Value::image("delta@32")).unwrap();
    w.finish_write(Lsn(0x20)).unwrap();
    drop(w);
    main.flush().await.unwrap();
    // The two L0 layers become one L1 layer up to LSN 0x21, with the image at 0x10 inside.
    main.compact().await.unwrap();
    let layers = main.layers();
    assert_eq!(layers.len(), 2, "{layers:?}");
    assert!(
        layers
            .iter()
            .any(|l| l.level == 1 && l.lsn_range.start <= Lsn(8) && l.lsn_range.end == Lsn(0x21)),
        "{layers:?}"
    );
    // (key, value at 0x18, layers visited): the image at 8 and the tombstone at 0x10 end the
    // read in the delta layer; the append at 0x10 needs its base, from the image layer.
    let want: [(&[u8], Option<&str>, u32); 5] = [
        (&image, Some("image@8"), 1),
        (&base, Some("base@8+16"), 2),
        (&delta, None, 2),
        (&gone, None, 1),
        (&later, Some("later@16"), 1),
    ];
    for (k, value, visited) in want {
        let (v, trace) = main.get_traced(k, Lsn(0x18)).await.unwrap();
        assert_eq!(v.as_deref(), value.map(str::as_bytes), "{k:?}");
        assert_eq!(trace.layers_visited, visited, "{k:?}: {trace:?}");
    }
    for (k, _, _) in want {
        let (v, _) = main.get_traced(k, Lsn(0x20)).await.unwrap();
        let v = v.unwrap();
        assert!(v == "new@32" || v == "delta@32", "{k:?}");
    }
}
