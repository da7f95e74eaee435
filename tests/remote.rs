//! The store on object storage: attach, kill mid-upload, split brain, injected faults and
//! eviction — on memory, the local file system, S3 (moto) and Azure Blob (Azurite).
//!
//! The S3 and Azure runs read their servers from the environment that
//! `source .ci/object-stores.sh start` exports; without it they fail, unless
//! `STRATAKV_SKIP_REMOTE_SERVERS=1` says to skip them.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use stratakv::internals::RemoteIndex;
use stratakv::remote::{FaultConfig, FaultyObjectStore, index_object};
use stratakv::{ErrorKind, Lsn, Store, Timeline, Value};

use common::backends::{Backend, azure_store, node_options, s3_store, unique_prefix};

/// `store` under a prefix of its own.
fn backend(name: &'static str, store: Arc<dyn ObjectStore>) -> Backend {
    Backend::new(name, store, unique_prefix("store-tests", name))
}

fn backends() -> Vec<(&'static str, Option<Arc<dyn ObjectStore>>)> {
    let local_dir = tempfile::tempdir().unwrap().keep();
    vec![
        (
            "memory",
            Some(Arc::new(InMemory::new()) as Arc<dyn ObjectStore>),
        ),
        (
            "local",
            Some(
                Arc::new(LocalFileSystem::new_with_prefix(local_dir).unwrap())
                    as Arc<dyn ObjectStore>,
            ),
        ),
        ("s3", s3_store()),
        ("azure", azure_store()),
    ]
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:04}").into_bytes()
}

/// Writes `rounds` rounds over `n` keys, a flush after each; returns the model of every
/// published version.
fn ingest(
    tl: &Timeline,
    n: u32,
    rounds: std::ops::Range<u64>,
    model: &mut BTreeMap<(Vec<u8>, u64), Vec<u8>>,
) {
    let mut w = tl.writer().unwrap();
    for r in rounds {
        let lsn = r * 10;
        for i in 0..n {
            if (i as u64 + r).is_multiple_of(3) {
                continue;
            }
            let v = format!("r{r}-k{i}").into_bytes();
            w.put(&key(i), Lsn(lsn), Value::image(v.clone())).unwrap();
            model.insert((key(i), lsn), v);
        }
        w.finish_write(Lsn(lsn)).unwrap();
    }
}

fn expected(model: &BTreeMap<(Vec<u8>, u64), Vec<u8>>, k: &[u8], lsn: u64) -> Option<Vec<u8>> {
    model
        .range((k.to_vec(), 0)..=(k.to_vec(), lsn))
        .next_back()
        .map(|(_, v)| v.clone())
}

async fn check_reads(tl: &Timeline, n: u32, upto: u64, model: &BTreeMap<(Vec<u8>, u64), Vec<u8>>) {
    for lsn in (10..=upto).step_by(10) {
        for i in 0..n {
            let got = tl.get(&key(i), Lsn(lsn)).await.unwrap().map(|b| b.to_vec());
            assert_eq!(got, expected(model, &key(i), lsn), "key {i} at LSN {lsn}");
        }
    }
}

fn layer_files(dir: &std::path::Path) -> usize {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "layer"))
        .count()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

async fn attach_reads_every_lsn_the_first_node_could(b: &Backend) {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut model = BTreeMap::new();
    let a = Store::open(node_options(d1.path(), b.remote(), "a"))
        .await
        .unwrap();
    let main = a.create_timeline("main").await.unwrap();
    ingest(&main, 40, 1..9, &mut model);
    main.flush().await.unwrap();
    a.wait_for_upload().await.unwrap();
    assert_eq!(main.remote_consistent_lsn(), Lsn(80));
    a.close().await.unwrap();

    let node_b = Store::open(node_options(d2.path(), b.remote(), "b"))
        .await
        .unwrap();
    assert!(node_b.generation().unwrap() > Default::default());
    assert_eq!(layer_files(d2.path()), 0, "attach downloads the index only");
    let main = node_b.timeline("main").unwrap();
    assert_eq!(main.last_record_lsn(), Lsn(80));
    check_reads(&main, 40, 80, &model).await;
    assert!(layer_files(d2.path()) > 0, "layers came on demand");
}

async fn a_node_killed_mid_upload_loses_nothing_acknowledged_remotely(b: &Backend) {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut model = BTreeMap::new();
    let a = Store::open(node_options(d1.path(), b.remote(), "a"))
        .await
        .unwrap();
    let main = a.create_timeline("main").await.unwrap();
    ingest(&main, 30, 1..5, &mut model);
    main.flush().await.unwrap();
    a.wait_for_upload().await.unwrap();
    ingest(&main, 30, 5..12, &mut model);
    main.flush().await.unwrap();
    let acknowledged = main.remote_consistent_lsn();
    assert!(acknowledged >= Lsn(40));
    drop(main);
    drop(a); // the node dies with uploads in flight

    let node_b = Store::open(node_options(d2.path(), b.remote(), "b"))
        .await
        .unwrap();
    let main = node_b.timeline("main").unwrap();
    let got = main.last_record_lsn();
    assert!(
        got >= acknowledged,
        "remote had {acknowledged}, attach found {got}"
    );
    check_reads(&main, 30, got.0, &model).await;
}

async fn split_brain_loses_nothing_and_fences_the_old_owner(b: &Backend) {
    let (d1, d2, d3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut model = BTreeMap::new();
    let a = Store::open(node_options(d1.path(), b.remote(), "a"))
        .await
        .unwrap();
    let a_main = a.create_timeline("main").await.unwrap();
    ingest(&a_main, 20, 1..4, &mut model);
    a_main.flush().await.unwrap();
    a.wait_for_upload().await.unwrap();

    // B takes over while A still runs.
    let node_b = Store::open(node_options(d2.path(), b.remote(), "b"))
        .await
        .unwrap();
    let b_main = node_b.timeline("main").unwrap();
    assert_eq!(
        b_main.last_record_lsn(),
        Lsn(30),
        "a={:?} b={:?}",
        a.generation(),
        node_b.generation()
    );
    // A keeps writing: its uploads (or its WAL shipper's check, whichever comes first) are
    // refused, it is fenced and stops; every refusal says so.
    let fenced = |r: stratakv::Result<()>| {
        if let Err(e) = r {
            assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
        }
    };
    fenced((|| {
        let mut w = a_main.writer()?;
        for lsn in [40u64, 50] {
            for i in 0..20 {
                w.put(&key(i), Lsn(lsn), Value::image(b"fenced".to_vec()))?;
            }
            w.finish_write(Lsn(lsn))?;
        }
        Ok(())
    })());
    fenced(a_main.flush().await.map(drop));
    let err = a.wait_for_upload().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    assert_eq!(a_main.writer().unwrap_err().kind(), ErrorKind::Fenced);
    // B's history goes on from what it attached.
    ingest(&b_main, 20, 4..7, &mut model);
    b_main.flush().await.unwrap();
    node_b.wait_for_upload().await.unwrap();
    check_reads(&b_main, 20, 60, &model).await;
    drop(a_main);
    drop(a);
    node_b.close().await.unwrap();
    // A third node sees B's history, not A's fenced writes.
    let c = Store::open(node_options(d3.path(), b.remote(), "c"))
        .await
        .unwrap();
    let c_main = c.timeline("main").unwrap();
    assert_eq!(c_main.last_record_lsn(), Lsn(60));
    check_reads(&c_main, 20, 60, &model).await;
}

async fn eviction_under_a_tiny_budget_keeps_answering(b: &Backend) {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut model = BTreeMap::new();
    let a = Store::open(node_options(d1.path(), b.remote(), "a"))
        .await
        .unwrap();
    let main = a.create_timeline("main").await.unwrap();
    ingest(&main, 40, 1..9, &mut model);
    main.flush().await.unwrap();
    a.close().await.unwrap();
    let node_b = Store::open(node_options(d2.path(), b.remote(), "b").local_disk_budget(Some(1)))
        .await
        .unwrap();
    let main = node_b.timeline("main").unwrap();
    // With more layers than the budget leaves on disk, every round of reads downloads. (The
    // background thread also evicts after each download, so what `evict_layers` finds left
    // to evict is a race, not a check.)
    let layers = main.layers().len();
    assert!(
        layers >= 2,
        "{layers} layers: reads would not need to download"
    );
    for round in 0..3 {
        check_reads(&main, 40, 80, &model).await;
        node_b.evict_layers(1);
        assert!(
            layer_files(d2.path()) <= 1,
            "round {round}: {} layer files",
            layer_files(d2.path())
        );
    }
}

async fn the_heatmap_warms_what_the_owner_read(b: &Backend) {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut model = BTreeMap::new();
    let a = Store::open(node_options(d1.path(), b.remote(), "a"))
        .await
        .unwrap();
    let main = a.create_timeline("main").await.unwrap();
    ingest(&main, 40, 1..9, &mut model);
    main.flush().await.unwrap();
    check_reads(&main, 40, 80, &model).await; // makes layers hot
    ingest(&main, 40, 9..10, &mut model); // a change, so an index with the heatmap goes up
    main.flush().await.unwrap();
    a.close().await.unwrap();
    let node_b = Store::open(node_options(d2.path(), b.remote(), "b"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while layer_files(d2.path()) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(layer_files(d2.path()) > 0, "no layer was prefetched");
    check_reads(&node_b.timeline("main").unwrap(), 40, 90, &model).await;
}

async fn run_all(name: &'static str, store: Arc<dyn ObjectStore>) {
    eprintln!("backend {name}");
    attach_reads_every_lsn_the_first_node_could(&backend(name, store.clone())).await;
    a_node_killed_mid_upload_loses_nothing_acknowledged_remotely(&backend(name, store.clone()))
        .await;
    split_brain_loses_nothing_and_fences_the_old_owner(&backend(name, store.clone())).await;
    eviction_under_a_tiny_budget_keeps_answering(&backend(name, store.clone())).await;
    the_heatmap_warms_what_the_owner_read(&backend(name, store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_scenarios_on_every_backend() {
    for (name, store) in backends() {
        if let Some(store) = store {
            run_all(name, store).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_never_leave_an_index_naming_a_missing_layer() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultyObjectStore::new(
        inner.clone(),
        FaultConfig::new(42)
            .with_errors(0.3)
            .with_dropped_responses(0.2),
    ));
    let b = backend("faulty", faulty.clone());
    let clean = Backend::new("clean", inner.clone(), b.prefix.clone());
    let d1 = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    faulty.set_enabled(false);
    let a = Store::open(node_options(d1.path(), b.remote(), "a").compaction_threshold(3))
        .await
        .unwrap();
    let main = a.create_timeline("main").await.unwrap();
    faulty.set_enabled(true);
    let mut round = 1;
    while (faulty.counts().errors_before + faulty.counts().dropped_responses) < 1500 && round < 2000
    {
        ingest(&main, 10, round..round + 1, &mut model);
        main.flush().await.unwrap();
        if round % 5 == 0 {
            main.compact().await.unwrap();
        }
        // Let the uploader work through the faults before the next round.
        a.wait_for_upload().await.unwrap();
        round += 1;
        // Whatever index is remote now names only layers that are there. An index is read,
        // then the objects listed, then the index read again: if it did not change, nothing
        // it names can have been deleted in between (deletions follow a newer index).
        let latest = || async {
            clean
                .remote()
                .latest_index(main.id(), stratakv::remote::Generation(u32::MAX))
                .await
                .unwrap()
        };
        let before = latest().await;
        let listing: Vec<String> = clean
            .remote()
            .list(&format!("timelines/{}", main.id()))
            .await
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if before != latest().await {
            continue;
        }
        if let Some((g, bytes)) = before {
            let idx =
                RemoteIndex::decode(&bytes, std::path::Path::new(&index_object(main.id(), g)))
                    .unwrap();
            for (layer, lg) in &idx.layer_generations {
                let object = stratakv::remote::layer_object(
                    main.id(),
                    layer,
                    stratakv::remote::Generation(*lg),
                )
                .unwrap();
                assert!(
                    listing.iter().any(|n| n.ends_with(&object) || *n == object),
                    "index names missing {object}; have {listing:?}"
                );
            }
        }
    }
    let faults = faulty.counts().errors_before + faulty.counts().dropped_responses;
    assert!(
        faults >= 1000,
        "only {faults} faults injected in {round} rounds: {:?}",
        faulty.counts()
    );
    faulty.set_enabled(false);
    a.wait_for_upload().await.unwrap();
    let last = main.last_record_lsn().0;
    a.close().await.unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let node_b = Store::open(node_options(d2.path(), clean.remote(), "b"))
        .await
        .unwrap();
    let main = node_b.timeline("main").unwrap();
    assert_eq!(main.last_record_lsn().0, last);
    check_reads(&main, 10, last, &model).await;
    eprintln!("{faults} object-store faults injected over {round} rounds");
}
