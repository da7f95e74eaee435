//! The object stores the remote tests run on: memory and the local file system always, S3
//! (moto) and Azure Blob (Azurite) on loopback when `source .ci/object-stores.sh start` has
//! exported their servers (`STRATAKV_S3_ENDPOINT`, `STRATAKV_S3_BUCKET`,
//! `STRATAKV_AZURE_ENDPOINT`, `STRATAKV_AZURE_CONTAINER`). Without them the tests that need a
//! server fail, unless `STRATAKV_SKIP_REMOTE_SERVERS=1` says to skip them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use stratakv::StoreOptions;
use stratakv::remote::{RemoteStorage, RetryPolicy};
use tempfile::TempDir;

/// The Azure storage emulator's well-known development account key (public, not a secret).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The value of `var`, or `None` if the remote-server tests are to be skipped; panics with
/// instructions if it is missing and skipping was not asked for.
pub fn server_env(var: &str) -> Option<String> {
    if let Ok(v) = std::env::var(var)
        && !v.is_empty()
    {
        return Some(v);
    }
    if std::env::var("STRATAKV_SKIP_REMOTE_SERVERS").as_deref() == Ok("1") {
        eprintln!("skipped: {var} is not set and STRATAKV_SKIP_REMOTE_SERVERS=1");
        return None;
    }
    panic!(
        "{var} is not set: start the object-store servers first with \
         `source .ci/object-stores.sh start` (or set STRATAKV_SKIP_REMOTE_SERVERS=1 to skip \
         the S3 and Azure tests)"
    );
}

/// A client for the S3 server (moto), or `None` if the server tests are skipped.
pub fn s3_store() -> Option<Arc<dyn ObjectStore>> {
    let endpoint = server_env("STRATAKV_S3_ENDPOINT")?;
    let bucket = server_env("STRATAKV_S3_BUCKET")?;
    let store = AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_bucket_name(&bucket)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_region("us-east-1")
        .with_access_key_id("stratakv")
        .with_secret_access_key("stratakv")
        .build()
        .unwrap_or_else(|e| panic!("S3 client for {endpoint}: {e}"));
    Some(Arc::new(store))
}

/// A client for the Azure Blob server (Azurite), or `None` if the server tests are skipped.
pub fn azure_store() -> Option<Arc<dyn ObjectStore>> {
    let endpoint = server_env("STRATAKV_AZURE_ENDPOINT")?;
    let container = server_env("STRATAKV_AZURE_CONTAINER")?;
    let store = MicrosoftAzureBuilder::new()
        .with_account(AZURITE_ACCOUNT)
        .with_access_key(AZURITE_KEY)
        .with_container_name(&container)
        .with_endpoint(endpoint.clone())
        .with_allow_http(true)
        .build()
        .unwrap_or_else(|e| panic!("Azure client for {endpoint}: {e}"));
    Some(Arc::new(store))
}

/// `{folder}/{name}-{process id}-{nanoseconds}`: a prefix no other run or test uses, so tests
/// can share a server.
pub fn unique_prefix(folder: &str, name: &str) -> Path {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Path::from(format!("{folder}/{name}-{}-{nanos}", std::process::id()))
}

/// Retries quick enough for tests: from 2 ms up to 20 ms between attempts, 30 s in all.
pub fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(30),
    }
}

/// A backend and a prefix on it no other test uses.
pub struct Backend {
    pub name: &'static str,
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The local folder standing in for a bucket, removed with the backend.
    _bucket_dir: Option<TempDir>,
}

impl Backend {
    pub fn new(name: &'static str, store: Arc<dyn ObjectStore>, prefix: Path) -> Backend {
        Backend {
            name,
            store,
            prefix,
            _bucket_dir: None,
        }
    }

    /// The local file system, in a fresh temporary folder.
    pub fn local(prefix: Path) -> Backend {
        let bucket = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalFileSystem::new_with_prefix(bucket.path()).unwrap());
        Backend {
            _bucket_dir: Some(bucket),
            ..Backend::new("local", store, prefix)
        }
    }

    /// The S3 server, or `None` if the server tests are skipped.
    pub fn s3(prefix: Path) -> Option<Backend> {
        Some(Backend::new("s3", s3_store()?, prefix))
    }

    /// The Azure Blob server, or `None` if the server tests are skipped.
    pub fn azure(prefix: Path) -> Option<Backend> {
        Some(Backend::new("azure", azure_store()?, prefix))
    }

    /// Remote storage on `store` (this backend's, or one wrapping it) under this prefix, with
    /// 50 fast retries and a 50 ms claim grace.
    pub fn remote_on(&self, store: Arc<dyn ObjectStore>) -> RemoteStorage {
        RemoteStorage::new(store, self.prefix.clone())
            .with_retry_policy(fast_retry(50))
            .with_claim_grace(Duration::from_millis(50))
    }

    pub fn remote(&self) -> RemoteStorage {
        self.remote_on(self.store.clone())
    }
}

/// Options for one node of a multi-node test in `dir`, on `remote`: small layers and blocks,
/// no background work, no PITR.
pub fn node_options(dir: &std::path::Path, remote: RemoteStorage, node: &str) -> StoreOptions {
    StoreOptions::new(dir)
        .remote(remote)
        .node_id(node)
        .freeze_bytes(8 << 10)
        .block_size(1024)
        .background_period(None)
        .pitr_interval(None)
}

/// Runs a request of the storage itself from a plain test thread (the S3 and Azure clients
/// need a tokio reactor).
pub fn on_tokio<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
