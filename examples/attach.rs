//! Attach on a new node from object storage: a node is disposable.
//!
//! ```text
//! cargo run --example attach
//! ```
//!
//! Node A keeps its store in a local folder and in object storage (here a local folder standing
//! in for a bucket, through `object_store::local::LocalFileSystem`; S3, Azure or GCS work the
//! same way, with the crate's `aws`, `azure` or `gcp` feature). It names `object_store` through
//! the re-export `stratakv::object_store`, so it needs no dependency of its own on that crate.
//! It writes, flushes, waits for the upload and closes; then its local folder is deleted, as if
//! the machine were gone. Node B opens an empty folder with the same remote: it downloads the
//! catalog and the timeline indexes at open, and each layer file the first time a read needs
//! it. Every value is read back and checked.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use stratakv::object_store::local::LocalFileSystem;
use stratakv::remote::RemoteStorage;
use stratakv::{Lsn, Store, StoreOptions, Value};

const KEYS: u64 = 2_000;
const ROUNDS: u64 = 3;

fn key(k: u64) -> Vec<u8> {
    format!("customer/{k:05}").into_bytes()
}

/// The value written for key `k` in round `r`.
fn value(k: u64, r: u64) -> Vec<u8> {
    format!("customer {k}, version {r}: {}", "x".repeat(100)).into_bytes()
}

/// The store's layer files on a node's local disk.
fn local_layer_files(dir: &Path) -> usize {
    let Ok(timelines) = std::fs::read_dir(dir.join("timelines")) else {
        return 0;
    };
    timelines
        .flatten()
        .flat_map(|t| std::fs::read_dir(t.path()).into_iter().flatten().flatten())
        .filter(|f| f.file_name().to_string_lossy().ends_with(".layer"))
        .count()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // The "bucket": every node that should see the store gets the same remote, with the same
    // prefix (one prefix per store, say one per tenant).
    let bucket = tempfile::tempdir()?;
    let remote = || -> Result<RemoteStorage, Box<dyn Error>> {
        let store = LocalFileSystem::new_with_prefix(bucket.path())?;
        Ok(RemoteStorage::new(Arc::new(store), "tenants/acme".into()))
    };

    // Node A: writes ROUNDS versions of every key, one round per LSN, flushing each round into a
    // layer file, and waits until everything flushed is in object storage.
    let dir_a = tempfile::tempdir()?;
    let a = Store::open(
        StoreOptions::new(dir_a.path())
            .remote(remote()?)
            .node_id("node-a"),
    )
    .await?;
    let main = a.create_timeline("main").await?;
    let mut w = main.writer()?;
    for r in 1..=ROUNDS {
        for k in 0..KEYS {
            w.put(&key(k), Lsn(r * 0x100), Value::image(value(k, r)))?;
        }
        w.finish_write(Lsn(r * 0x100))?;
        main.flush().await?;
    }
    drop(w);
    a.wait_for_upload().await?;
    let last = main.last_record_lsn();
    assert_eq!(main.remote_consistent_lsn(), last); // all of it survives losing node A
    println!(
        "node A: wrote {KEYS} keys × {ROUNDS} versions up to LSN {last}, {} layer files, all uploaded (generation {})",
        main.layers().len(),
        a.generation()
            .expect("a store with a remote has a generation")
    );
    a.close().await?;

    // Node A is gone: its local folder with it.
    let gone = dir_a.path().to_path_buf();
    dir_a.close()?;
    assert!(!gone.exists());
    println!(
        "node A: closed, and its local folder {} deleted",
        gone.display()
    );

    // Node B: an empty folder and the same remote. Opening claims a newer generation (fencing
    // node A, were it still alive), waits the claim grace (2 s by default, see
    // `RemoteStorage::claim_grace`), then brings the catalog and indexes down, but no layer.
    let dir_b = tempfile::tempdir()?;
    let opening = Instant::now();
    let b = Store::open(
        StoreOptions::new(dir_b.path())
            .remote(remote()?)
            .node_id("node-b"),
    )
    .await?;
    let open_took = opening.elapsed();
    let main = b.timeline("main")?;
    assert_eq!(main.last_record_lsn(), last);
    println!(
        "node B: opened an empty folder in {open_took:.2?} (generation {}), {} layer file(s) on its disk",
        b.generation().expect("a generation"),
        local_layer_files(dir_b.path())
    );

    // The first read downloads the layer files it needs.
    let first = main.get(&key(0), last).await?;
    let first_read = opening.elapsed();
    assert_eq!(first.as_deref(), Some(&value(0, ROUNDS)[..]));
    println!(
        "node B: first read answered {first_read:.2?} after the open began (the read itself {:.2?}), {} layer file(s) on its disk",
        first_read - open_took,
        local_layer_files(dir_b.path())
    );

    // Every value, newest and as of each older round.
    for r in 1..=ROUNDS {
        let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
        let values = main.get_many(&keys, Lsn(r * 0x100)).await?;
        for (k, v) in (0..KEYS).zip(values) {
            assert_eq!(v.as_deref(), Some(&value(k, r)[..]), "key {k} at round {r}");
        }
    }
    println!(
        "node B: read back all {} values ({KEYS} keys at {ROUNDS} LSNs), {} layer file(s) on its disk now",
        KEYS * ROUNDS,
        local_layer_files(dir_b.path())
    );

    // Node B now owns the store and can write on.
    let mut w = main.writer()?;
    w.put(&key(0), Lsn(0x1000), Value::image("written by node B"))?;
    w.finish_write(Lsn(0x1000))?;
    drop(w);
    assert_eq!(
        main.get(&key(0), Lsn(0x1000)).await?.as_deref(),
        Some(&b"written by node B"[..])
    );
    b.close().await?;
    println!("node B: wrote on at LSN {} and closed", Lsn(0x1000));
    Ok(())
}
