//! A primary and a readable secondary on a local-folder object store: the primary commits at
//! `Durability::Remote`, the secondary follows and serves reads; then the primary dies (dropped
//! without a close, as a crash leaves it), the secondary sees its heartbeat stop, is promoted,
//! and every acknowledged commit is there. Prints the status as it goes.
//!
//! `cargo run --example failover`

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use stratakv::remote::RemoteStorage;
use stratakv::{
    Durability, Lsn, PrimaryHealth, Promotion, Secondary, SecondaryOptions, SecondaryStatus, Store,
    StoreOptions, Value,
};

fn show(when: &str, s: &SecondaryStatus) {
    println!(
        "{when:<28} state {:?}, primary {:?}, applied {:?}, lag {} LSN ({} chunks, {} bytes)",
        s.state,
        s.primary,
        s.applied.get("main"),
        s.lag_lsn,
        s.lag_chunks,
        s.lag_bytes
    );
}

fn main() -> stratakv::Result<()> {
    let work = tempfile::tempdir().expect("a temporary folder");
    let bucket = work.path().join("bucket");
    std::fs::create_dir_all(&bucket).expect("the bucket folder");
    let remote = RemoteStorage::new(
        Arc::new(LocalFileSystem::new_with_prefix(&bucket).expect("a local object store")),
        Path::from("tenant"),
    );

    let primary = Store::open_blocking(
        StoreOptions::new(work.path().join("primary"))
            .remote(remote.clone())
            .node_id("node-a")
            .durability(Durability::Remote)
            .heartbeat_interval(Some(Duration::from_millis(100))),
    )?;
    let main = futures::executor::block_on(primary.create_timeline("main"))?;
    let secondary = Secondary::open(
        SecondaryOptions::new(
            StoreOptions::new(work.path().join("secondary"))
                .remote(remote)
                .node_id("node-b"),
        )
        .poll_interval(Duration::from_millis(50))
        .confirm_after(Duration::from_secs(1)),
    )?;

    // The primary commits; each commit returns once its WAL chunk is in object storage.
    let mut w = main.writer()?;
    for lsn in 1..=200u64 {
        let key = format!("page/{}", lsn % 20);
        w.put(key.as_bytes(), Lsn(lsn), Value::image(format!("v{lsn}")))?;
        w.finish_write(Lsn(lsn))?;
    }
    show("after 200 commits", &secondary.catch_up()?);
    let on_secondary = secondary.timeline("main")?;
    let v = on_secondary.get_blocking(b"page/7", Lsn(150))?;
    println!("secondary reads page/7 as of 0/96: {v:?}");
    assert_eq!(v.as_deref(), Some(&b"v147"[..]));

    // The primary dies: no close, no release, no last heartbeat.
    drop(w);
    drop(main);
    drop(primary);
    let died = Instant::now();
    let mut last = PrimaryHealth::Alive;
    loop {
        let s = secondary.catch_up()?;
        if s.primary != last {
            show(&format!("{:?} after the crash", died.elapsed()), &s);
            last = s.primary;
        }
        if s.primary == PrimaryHealth::Gone {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let new = secondary.promote(Promotion::default())?;
    let main = new.timeline("main")?;
    println!(
        "promoted after {:?}: generation {:?}, last_record_lsn {}",
        died.elapsed(),
        new.generation(),
        main.last_record_lsn()
    );
    assert_eq!(
        main.last_record_lsn(),
        Lsn(200),
        "every acknowledged commit is there"
    );
    let mut w = main.writer()?;
    w.put(b"page/0", Lsn(201), Value::image("after failover"))?;
    w.finish_write(Lsn(201))?;
    println!(
        "first commit on the new primary {:?} after the crash",
        died.elapsed()
    );
    drop(w);
    show("the secondary, promoted", &secondary.status());
    futures::executor::block_on(new.close())
}
