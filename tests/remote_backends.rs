//! The remote layer's conformance checks, run against every backend: memory, the local file
//! system, S3 (moto on loopback) and Azure Blob (Azurite on loopback).
//!
//! The S3 and Azure tests read their servers from the environment that
//! `source .ci/object-stores.sh start` exports (`STRATAKV_S3_ENDPOINT`, `STRATAKV_S3_BUCKET`,
//! `STRATAKV_AZURE_ENDPOINT`, `STRATAKV_AZURE_CONTAINER`). Without them they fail, unless
//! `STRATAKV_SKIP_REMOTE_SERVERS=1` says to skip them.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use stratakv::remote::{
    FaultConfig, FaultyObjectStore, Generation, RemoteStorage, catalog_object, index_object,
    layer_object,
};
use stratakv::{ErrorKind, TimelineId};

use common::backends::{azure_store, fast_retry, s3_store, server_env, unique_prefix};

/// Whether a backend honours `PutMode::Update` (the local file system does not).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Update {
    Supported,
    NotImplemented,
}

fn remote(store: &Arc<dyn ObjectStore>, prefix: &Path) -> RemoteStorage {
    RemoteStorage::new(Arc::clone(store), prefix.clone())
        .with_retry_policy(fast_retry(30))
        .with_claim_grace(Duration::from_millis(100))
}

/// Every check, against one backend.
async fn conformance(name: &str, store: Arc<dyn ObjectStore>, update: Update) {
    let prefix = unique_prefix("conformance", name);
    conditional_puts_behave(&store, &prefix, update).await;
    objects_round_trip(&store, &prefix).await;
    tampering_is_detected(&store, &prefix).await;
    newest_index_and_catalog_are_found(&store, &prefix).await;
    claims_fence_older_generations(&store, &prefix.clone().join("claims"), update).await;
    concurrent_claims_are_distinct_and_consecutive(&store, &prefix.clone().join("race")).await;
    faults_are_survived(&store, &prefix.clone().join("faults")).await;
    eprintln!("{name}: all conformance checks passed under {prefix}");
}

/// `Create` twice: the second fails; `Update` with a stale e-tag fails.
async fn conditional_puts_behave(store: &Arc<dyn ObjectStore>, prefix: &Path, update: Update) {
    let path = prefix.clone().join("conditional");
    let create = || PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let first = store
        .put_opts(&path, PutPayload::from_static(b"1"), create())
        .await
        .expect("first Create");
    let second = store
        .put_opts(&path, PutPayload::from_static(b"2"), create())
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "second Create must fail with AlreadyExists, got {second:?}"
    );

    let stale = UpdateVersion {
        e_tag: first.e_tag.clone(),
        version: first.version.clone(),
    };
    let updated = store
        .put_opts(
            &path,
            PutPayload::from_static(b"3"),
            PutOptions {
                mode: PutMode::Update(stale.clone()),
                ..PutOptions::default()
            },
        )
        .await;
    match update {
        Update::NotImplemented => {
            assert!(
                matches!(updated, Err(object_store::Error::NotImplemented { .. })),
                "{updated:?}"
            );
            return;
        }
        Update::Supported => {
            updated.expect("Update matching the current version");
        }
    }
    let again = store
        .put_opts(
            &path,
            PutPayload::from_static(b"4"),
            PutOptions {
                mode: PutMode::Update(stale),
                ..PutOptions::default()
            },
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::Precondition { .. })),
        "stale Update must fail with Precondition, got {again:?}"
    );
    let body = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(body, "3");
}

async fn objects_round_trip(store: &Arc<dyn ObjectStore>, prefix: &Path) {
    let r = remote(store, prefix);
    let big = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    r.upload("data/big", big.clone()).await.unwrap();
    r.upload("data/empty", Bytes::new()).await.unwrap();
    assert_eq!(r.download("data/big").await.unwrap(), big);
    assert!(r.download("data/empty").await.unwrap().is_empty());
    assert_eq!(
        r.list("data").await.unwrap(),
        vec![
            ("data/big".to_string(), 300_000),
            ("data/empty".to_string(), 0)
        ]
    );
    r.delete("data/big").await.unwrap();
    r.delete("data/big").await.unwrap(); // missing: Ok on every backend
    r.delete("data/never-existed").await.unwrap();
    let e = r.download("data/big").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(r.list("data").await.unwrap().len(), 1);
}

async fn tampering_is_detected(store: &Arc<dyn ObjectStore>, prefix: &Path) {
    let r = remote(store, prefix);
    r.upload("t/obj", Bytes::from("some layer bytes"))
        .await
        .unwrap();
    let location = r.location("t/obj").unwrap();
    let mut raw = store
        .get(&location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    raw[0] ^= 1;
    store.put(&location, PutPayload::from(raw)).await.unwrap();
    let e = r.download("t/obj").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(e.message().contains(location.as_ref()), "{e}");
}

async fn newest_index_and_catalog_are_found(store: &Arc<dyn ObjectStore>, prefix: &Path) {
    let r = remote(store, prefix);
    let t = TimelineId::from(0x51_u128);
    for g in [2, 5, 9] {
        r.upload(
            &index_object(t, Generation(g)),
            Bytes::from(format!("i{g}")),
        )
        .await
        .unwrap();
        r.upload(
            &layer_object(t, "L0", Generation(g)).unwrap(),
            Bytes::from("x"),
        )
        .await
        .unwrap();
        r.upload(&catalog_object(Generation(g)), Bytes::from(format!("c{g}")))
            .await
            .unwrap();
    }
    let got = r.latest_index(t, Generation(8)).await.unwrap();
    assert_eq!(got, Some((Generation(5), Bytes::from("i5"))));
    let got = r.latest_index(t, Generation(u32::MAX)).await.unwrap();
    assert_eq!(got, Some((Generation(9), Bytes::from("i9"))));
    assert_eq!(r.latest_index(t, Generation(1)).await.unwrap(), None);
    let got = r.latest_catalog(Generation(4)).await.unwrap();
    assert_eq!(got, Some((Generation(2), Bytes::from("c2"))));
}

async fn claims_fence_older_generations(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    update: Update,
) {
    let a = remote(store, prefix);
    let b = remote(store, prefix);
    let ga = a.claim_generation("node-a").await.unwrap();
    assert_eq!(ga, Generation(1));
    a.check_generation(ga).await.unwrap();
    let gb = b.claim_generation("node-b").await.unwrap();
    assert_eq!(gb, Generation(2));
    b.check_generation(gb).await.unwrap();
    let e = a.check_generation(ga).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");

    b.upload("kept", Bytes::from("x")).await.unwrap();
    let e = a.delete_checked(ga, "kept").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    assert_eq!(b.download("kept").await.unwrap(), "x");

    // The claim protocol the backend was found to support.
    let names: Vec<String> = b
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let want = match update {
        Update::Supported => vec!["generation", "kept"],
        Update::NotImplemented => vec!["generations/00000001", "generations/00000002", "kept"],
    };
    assert_eq!(names, want);
}

async fn concurrent_claims_are_distinct_and_consecutive(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let r = remote(store, prefix);
        tasks.push(tokio::spawn(async move {
            r.claim_generation(&format!("node-{i}")).await
        }));
    }
    let mut got = BTreeSet::new();
    for t in tasks {
        let g = t.await.unwrap().unwrap();
        assert!(got.insert(g), "generation {g} claimed twice");
    }
    assert_eq!(got, (1..=16).map(Generation).collect::<BTreeSet<_>>());
    let last = remote(store, prefix);
    last.check_generation(Generation(16)).await.unwrap();
    assert_eq!(
        last.check_generation(Generation(15))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Fenced
    );
}

async fn faults_are_survived(store: &Arc<dyn ObjectStore>, prefix: &Path) {
    let faulty = Arc::new(FaultyObjectStore::new(
        Arc::clone(store),
        FaultConfig::new(0x5eed)
            .with_errors(0.2)
            .with_dropped_responses(0.2)
            .with_latency(0.2, Duration::from_millis(3)),
    ));
    let as_store: Arc<dyn ObjectStore> = faulty.clone();
    let r = remote(&as_store, prefix);
    for i in 0..20 {
        let name = format!("f/{i}");
        r.upload(&name, Bytes::from(name.clone())).await.unwrap();
        assert_eq!(r.download(&name).await.unwrap(), name);
    }
    for want in 1..=5 {
        assert_eq!(r.claim_generation("n").await.unwrap(), Generation(want));
    }
    let c = faulty.counts();
    assert!(
        c.errors_before > 0 && c.dropped_responses > 0 && c.delays > 0,
        "{c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_backend_conforms() {
    conformance("memory", Arc::new(InMemory::new()), Update::Supported).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_file_system_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    conformance("local", Arc::new(store), Update::NotImplemented).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_backend_conforms() {
    let Some(store) = s3_store() else {
        return;
    };
    conformance("s3", store, Update::Supported).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_backend_conforms() {
    let Some(store) = azure_store() else {
        return;
    };
    conformance("azure", store, Update::Supported).await;
}

#[tokio::test]
async fn storage_from_url_reaches_the_s3_server() {
    let (Some(endpoint), Some(bucket)) = (
        server_env("STRATAKV_S3_ENDPOINT"),
        server_env("STRATAKV_S3_BUCKET"),
    ) else {
        return;
    };
    let opts = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_virtual_hosted_style_request", "false"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "stratakv"),
        ("aws_secret_access_key", "stratakv"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let prefix = unique_prefix("conformance", "s3-url");
    let r = RemoteStorage::from_url(&format!("s3://{bucket}/{prefix}"), opts).unwrap();
    assert_eq!(r.prefix(), &prefix);
    r.upload("x", Bytes::from("y")).await.unwrap();
    assert_eq!(r.download("x").await.unwrap(), "y");
    assert_eq!(r.claim_generation("n").await.unwrap(), Generation(1));
}
