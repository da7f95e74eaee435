//! What several benches share: the moto (S3) object store, the machine's load, a temporary
//! folder and the figures' arithmetic. Each bench includes this with `mod common;` and uses
//! what it needs.
#![allow(dead_code)]

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

/// The S3 store named by `STRATAKV_S3_ENDPOINT` and `STRATAKV_S3_BUCKET` (moto on loopback,
/// started by `.ci/object-stores.sh`), or `None` when they are not set.
pub fn moto_from_env() -> Option<Arc<dyn ObjectStore>> {
    let endpoint = std::env::var("STRATAKV_S3_ENDPOINT").ok()?;
    let bucket = std::env::var("STRATAKV_S3_BUCKET").ok()?;
    Some(moto(&endpoint, &bucket))
}

/// An S3 store at `endpoint` (path-style, plain HTTP, any credentials), as moto serves it.
pub fn moto(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .with_access_key_id("stratakv")
            .with_secret_access_key("stratakv")
            .build()
            .unwrap(),
    )
}

/// A number from the environment variable `name`, or `default` when it is not set.
pub fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: expected a number")),
        Err(_) => default,
    }
}

/// The load average over 1, 5 and 15 minutes, as `/proc/loadavg` gives it.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

/// A temporary directory under `STRATAKV_BENCH_TMP`, or the system's.
pub fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("STRATAKV_BENCH_TMP") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// The `p` quantile (0 to 1) of `sorted`, rounding up; the default for an empty slice.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}
