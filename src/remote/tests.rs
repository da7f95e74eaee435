//! Unit tests of the remote layer against `InMemory` and `LocalFileSystem`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::*;
use crate::{ErrorKind, TimelineId};

/// Fast retries so that tests with injected faults stay quick.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 30,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        max_elapsed: Duration::from_secs(20),
    }
}

/// A backend under test; the temporary directory lives as long as it.
struct Backend {
    name: &'static str,
    store: Arc<dyn ObjectStore>,
    _dir: Option<tempfile::TempDir>,
}

fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    vec![
        Backend {
            name: "memory",
            store: Arc::new(InMemory::new()),
            _dir: None,
        },
        Backend {
            name: "local",
            store: Arc::new(local),
            _dir: Some(dir),
        },
    ]
}

fn storage(store: &Arc<dyn ObjectStore>) -> RemoteStorage {
    RemoteStorage::new(Arc::clone(store), Path::from("tenants/acme"))
        .with_retry_policy(fast_retry())
        .with_claim_grace(Duration::from_millis(200))
}

#[test]
fn generation_display_and_parse_round_trip() {
    for g in [0, 1, 0x2a, u32::MAX] {
        let s = Generation(g).to_string();
        assert_eq!(s.len(), 8);
        assert_eq!(s.parse::<Generation>().unwrap(), Generation(g));
    }
    for bad in ["", "1", "0000000g", "000000001", "+0000001", " 0000001"] {
        let e = bad.parse::<Generation>().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
    }
    assert_eq!(Generation(u32::MAX).next(), None);
}

#[test]
fn object_names_follow_the_layout_and_refuse_ambiguous_layer_names() {
    let t = TimelineId::from(0xab_u128);
    let dir = format!("timelines/{t}");
    assert_eq!(
        layer_object(t, "L1", Generation(2)).unwrap(),
        format!("{dir}/L1-00000002")
    );
    assert_eq!(
        index_object(t, Generation(2)),
        format!("{dir}/index-00000002")
    );
    assert_eq!(catalog_object(Generation(16)), "catalog-00000010");
    for bad in ["", "index", "a/b", "a b", "ä", "a\nb"] {
        let e = layer_object(t, bad, Generation(1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
    }
}

#[tokio::test]
async fn upload_download_list_delete_round_trip() {
    for b in backends() {
        let remote = storage(&b.store);
        let data = Bytes::from(vec![7u8; 10_000]);
        remote.upload("timelines/x/a", data.clone()).await.unwrap();
        remote.upload("timelines/x/b", Bytes::new()).await.unwrap();
        remote
            .upload("catalog-00000001", Bytes::from("c"))
            .await
            .unwrap();
        assert_eq!(
            remote.download("timelines/x/a").await.unwrap(),
            data,
            "{}",
            b.name
        );
        assert!(remote.download("timelines/x/b").await.unwrap().is_empty());
        assert_eq!(
            remote.list("timelines").await.unwrap(),
            vec![
                ("timelines/x/a".to_string(), 10_000),
                ("timelines/x/b".to_string(), 0)
            ],
            "{}",
            b.name
        );
        assert_eq!(remote.list("").await.unwrap().len(), 3);
        // Segment-wise prefixes: `timelines/x` is not a prefix of `timelines/xy`.
        remote
            .upload("timelines/xy/c", Bytes::from("c"))
            .await
            .unwrap();
        assert_eq!(remote.list("timelines/x").await.unwrap().len(), 2);

        remote.delete("timelines/x/a").await.unwrap();
        remote.delete("timelines/x/a").await.unwrap(); // missing: still fine
        let e = remote.download("timelines/x/a").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{}", b.name);
        assert!(e.message().contains("tenants/acme/timelines/x/a"), "{e}");
    }
}

#[tokio::test]
async fn bad_object_names_are_invalid_arguments() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let remote = storage(&store);
    for bad in ["", "/", "a//b", "a/../b", "./a"] {
        let e = remote.upload(bad, Bytes::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
    }
    assert_eq!(
        remote.list("a//b").await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[tokio::test]
async fn download_detects_a_tampered_object() {
    for b in backends() {
        let remote = storage(&b.store);
        remote
            .upload("timelines/x/L-00000001", Bytes::from("layer bytes"))
            .await
            .unwrap();
        let location = remote.location("timelines/x/L-00000001").unwrap();
        let mut raw = b
            .store
            .get(&location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        raw[3] ^= 0x20;
        b.store.put(&location, PutPayload::from(raw)).await.unwrap();
        let e = remote.download("timelines/x/L-00000001").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{}", b.name);
        assert!(
            e.message().contains("tenants/acme/timelines/x/L-00000001"),
            "{e}"
        );

        b.store
            .put(&location, PutPayload::from_static(b"abc"))
            .await
            .unwrap();
        let e = remote.download("timelines/x/L-00000001").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{}", b.name);
    }
}

#[tokio::test]
async fn latest_index_picks_the_newest_at_or_below_the_generation() {
    for b in backends() {
        let remote = storage(&b.store);
        let t = TimelineId::from(5u128);
        assert!(
            remote
                .latest_index(t, Generation(9))
                .await
                .unwrap()
                .is_none()
        );
        for g in [1, 3, 7] {
            let body = Bytes::from(format!("index {g}"));
            remote
                .upload(&index_object(t, Generation(g)), body)
                .await
                .unwrap();
            let layer = layer_object(t, "L", Generation(g + 100)).unwrap();
            remote.upload(&layer, Bytes::from("layer")).await.unwrap();
        }
        // Another timeline's newer index does not count.
        let other = TimelineId::from(6u128);
        remote
            .upload(&index_object(other, Generation(5)), Bytes::from("other"))
            .await
            .unwrap();
        let pick = |max| {
            let remote = remote.clone();
            async move { remote.latest_index(t, Generation(max)).await.unwrap() }
        };
        assert_eq!(
            pick(9).await,
            Some((Generation(7), Bytes::from("index 7"))),
            "{}",
            b.name
        );
        assert_eq!(pick(7).await, Some((Generation(7), Bytes::from("index 7"))));
        assert_eq!(pick(6).await, Some((Generation(3), Bytes::from("index 3"))));
        assert_eq!(pick(1).await, Some((Generation(1), Bytes::from("index 1"))));
        assert_eq!(pick(0).await, None);
    }
}

#[tokio::test]
async fn latest_catalog_ignores_objects_below_the_top_level() {
    for b in backends() {
        let remote = storage(&b.store);
        remote
            .upload(&catalog_object(Generation(2)), Bytes::from("c2"))
            .await
            .unwrap();
        remote
            .upload(&catalog_object(Generation(4)), Bytes::from("c4"))
            .await
            .unwrap();
        remote
            .upload("timelines/t/catalog-00000009", Bytes::from("no"))
            .await
            .unwrap();
        remote
            .upload("catalog-zz", Bytes::from("no"))
            .await
            .unwrap();
        assert_eq!(
            remote.latest_catalog(Generation(8)).await.unwrap(),
            Some((Generation(4), Bytes::from("c4"))),
            "{}",
            b.name
        );
        assert_eq!(
            remote.latest_catalog(Generation(3)).await.unwrap(),
            Some((Generation(2), Bytes::from("c2")))
        );
    }
}

#[tokio::test]
async fn claims_increment_and_fence_the_previous_owner() {
    for b in backends() {
        let a = storage(&b.store);
        let g1 = a.claim_generation("node-a").await.unwrap();
        assert_eq!(g1, Generation(1), "{}", b.name);
        a.check_generation(g1).await.unwrap();

        // Another node, another RemoteStorage over the same objects.
        let other = storage(&b.store);
        let g2 = other.claim_generation("node-b").await.unwrap();
        assert_eq!(g2, Generation(2), "{}", b.name);
        other.check_generation(g2).await.unwrap();

        let e = a.check_generation(g1).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced, "{}", b.name);
        assert!(e.message().contains("00000002"), "{e}");

        // A fenced node deletes nothing.
        other
            .upload("timelines/t/L-00000002", Bytes::from("x"))
            .await
            .unwrap();
        let e = a
            .delete_checked(g1, "timelines/t/L-00000002")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced);
        assert!(other.download("timelines/t/L-00000002").await.is_ok());
        other
            .delete_checked(g2, "timelines/t/L-00000002")
            .await
            .unwrap();
        assert_eq!(
            other
                .download("timelines/t/L-00000002")
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );

        assert_eq!(a.claim_generation("node-a").await.unwrap(), Generation(3));
        assert_eq!(
            other.check_generation(g2).await.unwrap_err().kind(),
            ErrorKind::Fenced
        );
    }
}

#[tokio::test]
async fn local_file_system_claims_by_creating_one_object_per_generation() {
    let b = backends().pop().unwrap();
    assert_eq!(b.name, "local");
    let remote = storage(&b.store);
    for _ in 0..3 {
        remote.claim_generation("n").await.unwrap();
    }
    let names: Vec<String> = remote
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "generations/00000001",
            "generations/00000002",
            "generations/00000003"
        ]
    );

    let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let remote = storage(&memory);
    remote.claim_generation("n").await.unwrap();
    let names: Vec<String> = remote
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["generation"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_take_each_generation_exactly_once() {
    for b in backends() {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let remote = storage(&b.store);
            tasks.push(tokio::spawn(async move {
                remote.claim_generation(&format!("node-{i}")).await
            }));
        }
        let mut got = BTreeSet::new();
        for t in tasks {
            let g = t.await.unwrap().unwrap();
            assert!(got.insert(g), "{}: generation {g} claimed twice", b.name);
        }
        let want: BTreeSet<Generation> = (1..=16).map(Generation).collect();
        assert_eq!(got, want, "{}", b.name);
    }
}

#[tokio::test]
async fn claims_survive_lost_responses_without_skipping_or_repeating() {
    for b in backends() {
        let faulty: Arc<dyn ObjectStore> = Arc::new(FaultyObjectStore::new(
            Arc::clone(&b.store),
            FaultConfig::new(3).with_dropped_responses(1.0),
        ));
        let remote = storage(&faulty);
        for want in 1..=4 {
            assert_eq!(
                remote.claim_generation("n").await.unwrap(),
                Generation(want),
                "{}",
                b.name
            );
        }
    }
}

#[tokio::test]
async fn transient_faults_are_retried_and_permanent_ones_are_not() {
    for b in backends() {
        let faulty = Arc::new(FaultyObjectStore::new(
            Arc::clone(&b.store),
            FaultConfig::new(11)
                .with_errors(0.3)
                .with_dropped_responses(0.3)
                .with_latency(0.3, Duration::from_millis(2)),
        ));
        let remote = storage(&(faulty.clone() as Arc<dyn ObjectStore>));
        for i in 0..40 {
            let name = format!("o/{i}");
            remote
                .upload(&name, Bytes::from(name.clone()))
                .await
                .unwrap();
            assert_eq!(remote.download(&name).await.unwrap(), name, "{}", b.name);
            remote.delete(&name).await.unwrap();
        }
        let c = faulty.counts();
        assert!(
            c.errors_before > 0 && c.dropped_responses > 0 && c.delays > 0,
            "{c:?}"
        );

        // A missing object is a permanent failure: one call, no retry.
        faulty.set_enabled(false);
        let before = faulty.counts().calls;
        let e = remote.download("missing").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(faulty.counts().calls, before + 1);
    }
}

#[tokio::test]
async fn retries_stop_when_the_policy_is_used_up() {
    let faulty = Arc::new(FaultyObjectStore::new(
        Arc::new(InMemory::new()),
        FaultConfig::new(1).with_errors(1.0),
    ));
    let policy = RetryPolicy {
        max_attempts: 4,
        ..fast_retry()
    };
    let remote = RemoteStorage::new(faulty.clone(), Path::from("p")).with_retry_policy(policy);
    let e = remote.upload("a", Bytes::from("x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.message().contains("p/a"), "{e}");
    assert_eq!(faulty.counts().calls, 4);
    assert_eq!(faulty.counts().errors_before, 4);

    assert_eq!(policy.backoff(1), Duration::from_millis(1));
    assert_eq!(policy.backoff(3), Duration::from_millis(4));
    assert_eq!(policy.backoff(40), Duration::from_millis(4));
}

#[tokio::test]
async fn fault_wrapper_injects_what_it_says() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let path = Path::from("a");

    // Errors before the call: nothing reaches the inner store.
    let failing = FaultyObjectStore::new(Arc::clone(&inner), FaultConfig::new(1).with_errors(1.0));
    assert!(failing.put(&path, "x".into()).await.is_err());
    assert!(first_is_err(failing.list(None)).await);
    assert!(inner.head(&path).await.is_err());
    assert_eq!(failing.counts().errors_before, 2);

    // Lost responses: the write happened.
    let dropping = FaultyObjectStore::new(
        Arc::clone(&inner),
        FaultConfig::new(1).with_dropped_responses(1.0),
    );
    assert!(dropping.put(&path, "x".into()).await.is_err());
    assert!(inner.head(&path).await.is_ok());
    assert!(dropping.get(&path).await.is_ok()); // reads are never "dropped"
    assert!(dropping.delete(&path).await.is_err());
    assert!(inner.head(&path).await.is_err());
    assert_eq!(
        dropping.counts(),
        FaultCounts {
            calls: 3,
            errors_before: 0,
            delays: 0,
            dropped_responses: 2
        }
    );

    // Latency.
    let slow = FaultyObjectStore::new(
        Arc::clone(&inner),
        FaultConfig::new(1).with_latency(1.0, Duration::from_millis(5)),
    );
    assert!(slow.put(&path, "x".into()).await.is_ok());
    assert_eq!(slow.counts().delays, 1);

    // Disabled: counted, not injected.
    failing.set_enabled(false);
    assert!(failing.put(&path, "x".into()).await.is_ok());
    assert_eq!(failing.counts().calls, 3);

    // One seed, one sequence of choices.
    let run = |seed| {
        let inner = Arc::clone(&inner);
        async move {
            let f = FaultyObjectStore::new(inner, FaultConfig::new(seed).with_errors(0.5));
            let mut outcomes = Vec::new();
            for _ in 0..64 {
                outcomes.push(f.head(&Path::from("a")).await.is_ok());
            }
            outcomes
        }
    };
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    assert_ne!(a, run(43).await);
    assert!(a.iter().any(|ok| *ok) && a.iter().any(|ok| !*ok));
}

#[tokio::test]
async fn from_url_builds_memory_and_file_storage() {
    let remote = RemoteStorage::from_url("memory:///t/acme", Vec::new()).unwrap();
    assert_eq!(remote.prefix().as_ref(), "t/acme");
    remote.upload("x", Bytes::from("y")).await.unwrap();
    assert_eq!(remote.download("x").await.unwrap(), "y");

    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/store", dir.path().display());
    let remote = RemoteStorage::from_url(&url, Vec::new()).unwrap();
    remote.upload("x", Bytes::from("y")).await.unwrap();
    assert!(dir.path().join("store/x").exists());
    assert_eq!(remote.claim_generation("n").await.unwrap(), Generation(1));

    for bad in ["", "not a url", "unknown://x/y"] {
        let e = RemoteStorage::from_url(bad, Vec::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
    }
    let e = RemoteStorage::from_url(
        "s3://bucket/p",
        vec![("aws_allow_http".to_string(), "not a bool".to_string())],
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

/// Without the `gcp` feature a `gs://` URL is refused, and the error names the feature. (The
/// tests turn S3 and Azure on in `object_store` for the server tests, so GCS is the backend
/// that stays off here.)
#[cfg(not(feature = "gcp"))]
#[test]
fn from_url_without_the_backend_feature_names_it() {
    let e = RemoteStorage::from_url("gs://bucket/tenants/acme", Vec::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("`gcp` feature"), "{e}");
}

/// Whether a listing's first item is an error.
async fn first_is_err(
    mut s: futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>,
) -> bool {
    use futures::StreamExt;
    matches!(s.next().await, Some(Err(_)))
}

/// A store that drops every write condition, like an S3 server that ignores `If-Match`.
#[derive(Debug)]
struct IgnoresConditions(InMemory);

impl std::fmt::Display for IgnoresConditions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IgnoresConditions")
    }
}

#[async_trait::async_trait]
impl ObjectStore for IgnoresConditions {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        _opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.0.put(location, payload).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn a_store_that_ignores_write_conditions_is_refused_for_claims() {
    let store: Arc<dyn ObjectStore> = Arc::new(IgnoresConditions(InMemory::new()));
    let remote = storage(&store);
    let e = remote.claim_generation("n").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.message().contains("ignored a write condition"), "{e}");
    assert_eq!(
        remote
            .check_generation(Generation(1))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Io
    );
    // The probe left nothing behind.
    assert!(remote.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn extreme_settings_do_not_panic() {
    let faulty = Arc::new(FaultyObjectStore::new(
        Arc::new(InMemory::new()),
        FaultConfig::new(0)
            .with_errors(f64::NAN)
            .with_dropped_responses(-1.0)
            .with_latency(f64::INFINITY, Duration::ZERO),
    ));
    let policy = RetryPolicy {
        max_attempts: 0,
        initial_backoff: Duration::MAX,
        max_backoff: Duration::MAX,
        max_elapsed: Duration::MAX,
    };
    let remote = RemoteStorage::new(faulty.clone(), Path::from(""))
        .with_retry_policy(policy)
        .with_claim_grace(Duration::ZERO)
        .with_max_claim_conflicts(0);
    remote.upload("a", Bytes::from("b")).await.unwrap();
    assert_eq!(remote.download("a").await.unwrap(), "b");
    assert_eq!(remote.list("").await.unwrap(), vec![("a".to_string(), 1)]);
    let g = remote.claim_generation("n").await.unwrap();
    remote.delete_checked(g, "a").await.unwrap();
    let c = faulty.counts();
    assert_eq!((c.errors_before, c.dropped_responses), (0, 0));
    assert!(c.delays > 0);
    assert_eq!(policy.backoff(u32::MAX), Duration::MAX);
}
