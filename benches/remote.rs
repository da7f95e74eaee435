//! Object-storage figures: upload throughput, cold attach to first read at two data sizes
//! 10× apart (with default options, and read-only), and the latency of a read that has to
//! download its layer.
//!
//! Runs on the local-file-system object store by default; with `STRATAKV_S3_ENDPOINT` and
//! `STRATAKV_S3_BUCKET` set (`source .ci/object-stores.sh start`) it also runs on S3 (moto).
//! `STRATAKV_BENCH_KEYS` sets the smaller data size (default 100,000 keys; the larger is 10×).
//!
//! `cargo bench --bench remote`

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use stratakv::remote::RemoteStorage;
use stratakv::{Lsn, Store, StoreOptions, Value};

mod common;

const VALUE: usize = 100;

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(b"key/");
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn remote(store: &Arc<dyn ObjectStore>, prefix: &str) -> RemoteStorage {
    RemoteStorage::new(store.clone(), Path::from(prefix))
        .with_claim_grace(Duration::from_millis(10))
}

fn opts(dir: &std::path::Path, r: RemoteStorage) -> StoreOptions {
    StoreOptions::new(dir)
        .remote(r)
        .background_period(None)
        .pitr_interval(None)
        .wal(false)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn run(name: &str, store: Arc<dyn ObjectStore>, small: u64) {
    let mut attach = Vec::new();
    for n in [small, small * 10] {
        let prefix = format!("bench-{name}-{n}-{}", std::process::id());
        let d1 = tempfile::tempdir().unwrap();
        // Build the data locally first, so that the upload can be timed on its own.
        let local = StoreOptions::new(d1.path())
            .background_period(None)
            .pitr_interval(None)
            .freeze_bytes(4 << 20);
        let a = Store::open(local).await.unwrap();
        let main = a.create_timeline("main").await.unwrap();
        let mut w = main.writer().unwrap();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..n {
            let mut value = vec![0u8; VALUE];
            for chunk in value.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            w.put(&key(i), Lsn(i / 1000 + 1), Value::image(value))
                .unwrap();
            if (i + 1) % 1000 == 0 {
                w.finish_write(Lsn(i / 1000 + 1)).unwrap();
            }
        }
        w.finish_write(Lsn(n / 1000 + 1)).unwrap();
        drop(w);
        main.flush().await.unwrap();
        let bytes: u64 = main.layers().iter().map(|l| l.file_size).sum();
        let layers = main.layers().len();
        a.close().await.unwrap();
        let t = Instant::now();
        let a = Store::open(opts(d1.path(), remote(&store, &prefix)))
            .await
            .unwrap();
        a.wait_for_upload().await.unwrap();
        let up = t.elapsed();
        println!(
            "{name}: {n} keys of 16 B, 100 B values: upload of {layers} layers, {:.1} MB, took {up:?}: {:.1} MB/s",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / up.as_secs_f64()
        );
        a.close().await.unwrap();

        // Cold attach to first read with default options (the default 2 s claim grace, which a
        // handover from a node that closed cleanly does not wait), five times on fresh
        // directories; and a read-only open, which claims nothing.
        let default_remote = || RemoteStorage::new(store.clone(), Path::from(prefix.as_str()));
        let mut times = Vec::new();
        let mut read_only = Vec::new();
        let mut downloads = Vec::new();
        let mut resident = Vec::new();
        for _ in 0..5 {
            let d3 = tempfile::tempdir().unwrap();
            let t = Instant::now();
            let r = Store::open(
                StoreOptions::new(d3.path())
                    .remote(default_remote())
                    .read_only(true),
            )
            .await
            .unwrap();
            let tl = r.timeline("main").unwrap();
            let v = tl.get(&key(0), tl.last_record_lsn()).await.unwrap();
            read_only.push(t.elapsed());
            assert_eq!(v.unwrap().len(), VALUE);
            r.close().await.unwrap();

            let d2 = tempfile::tempdir().unwrap();
            let t = Instant::now();
            let b = Store::open(StoreOptions::new(d2.path()).remote(default_remote()))
                .await
                .unwrap();
            let tl = b.timeline("main").unwrap();
            let v = tl.get(&key(0), tl.last_record_lsn()).await.unwrap();
            times.push(t.elapsed());
            assert_eq!(v.unwrap().len(), VALUE);
            assert_eq!(
                b.claim_wait(),
                Duration::ZERO,
                "the previous owner closed cleanly"
            );
            // A read in each layer not on local disk yet downloads it; a second read does not.
            let lsn = tl.last_record_lsn();
            for j in 1..layers as u64 {
                let k = key(j * n / layers as u64 + 1);
                let t = Instant::now();
                tl.get(&k, lsn).await.unwrap().unwrap();
                downloads.push(t.elapsed());
                let t = Instant::now();
                tl.get(&k, lsn).await.unwrap().unwrap();
                resident.push(t.elapsed());
            }
            b.close().await.unwrap();
        }
        let m = median(times);
        println!(
            "{name}: {n} keys: cold attach to first read, default options: median {m:?} (no claim wait: the previous owner closed cleanly); read-only: median {:?}; read that downloads its layer (~{} KB): median {:?}; the same read once resident: median {:?}",
            median(read_only),
            bytes / layers as u64 / 1000,
            median(downloads),
            median(resident)
        );
        attach.push(m);
    }
    println!(
        "{name}: attach at 10x the data took {:.2}x as long",
        attach[1].as_secs_f64() / attach[0].as_secs_f64()
    );
}

fn main() {
    // criterion's harness passes flags such as --bench; this bench prints figures itself.
    let small: u64 = std::env::var("STRATAKV_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        run("local-fs", local, small).await;
        if let Some(s3) = common::moto_from_env() {
            run("s3-moto", s3, small).await;
        }
    });
}
