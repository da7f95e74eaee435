//! Quick start: a store in a local folder, one timeline, writes at several LSNs, reads as of
//! the newest and an older LSN, a scan, and a reopen.
//!
//! ```text
//! cargo run --example quickstart              # uses ./quickstart-data
//! cargo run --example quickstart -- /tmp/kv   # or a folder of your choice
//! ```
//!
//! The folder is removed first so the example can be run again; a folder that is neither empty
//! nor a StrataKV store is left alone and the example stops.

use std::error::Error;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use stratakv::{Lsn, SimpleRedo, Store, StoreOptions, Value};

/// How many accounts the example writes.
const ACCOUNTS: usize = 300;

fn key(i: usize) -> Vec<u8> {
    format!("account/{i:04}").into_bytes()
}

fn show(v: &Option<Bytes>) -> String {
    match v {
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
        None => "no value (the key does not exist at that LSN)".to_string(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("./quickstart-data"), PathBuf::from);
    prepare(&dir)?;

    // 1. Open a store on a local folder and create a timeline.
    let store = Store::open(StoreOptions::new(&dir)).await?;
    let main = store.create_timeline("main").await?;
    println!(
        "Opened a store in {} and created the timeline \"main\".",
        dir.display()
    );

    // 2. Write. Every put names an LSN; finish_write(lsn) makes everything up to it visible.
    let mut w = main.writer()?;

    // LSN 0/100: an opening balance for every account (full values, "images").
    let opened = Lsn(0x100);
    for i in 0..ACCOUNTS {
        w.put(&key(i), opened, Value::image("balance=100"))?;
    }
    w.finish_write(opened)?;
    println!("At LSN {opened}, wrote an opening balance for {ACCOUNTS} accounts.");

    // LSNs 0/200..: one deposit record per account, each at its own LSN. These are deltas:
    // the built-in SimpleRedo appends the record to the previous value when a reader asks.
    let first_deposit = Lsn(0x200);
    for i in 0..100 {
        let lsn = Lsn(first_deposit.0 + i as u64);
        w.put(
            &key(i),
            lsn,
            Value::delta(SimpleRedo::append(b"; deposit +25")),
        )?;
        w.finish_write(lsn)?;
    }
    let last_deposit = Lsn(first_deposit.0 + 99);
    println!(
        "At LSNs {first_deposit} to {last_deposit}, appended a deposit (a delta record) to accounts 0 to 99."
    );

    // LSN 0/400: accounts 100..199 get a new full value.
    let reset = Lsn(0x400);
    for i in 100..200 {
        w.put(&key(i), reset, Value::image("balance=0 (reset)"))?;
    }
    w.finish_write(reset)?;
    println!("At LSN {reset}, overwrote accounts 100 to 199 with a new value.");

    // LSN 0/500: account 42 is closed (a tombstone deletes the key from this LSN on).
    let closed = Lsn(0x500);
    w.put(&key(42), closed, Value::Tombstone)?;
    w.finish_write(closed)?;
    println!("At LSN {closed}, deleted account 42 with a tombstone.");
    drop(w);

    // 3. Flush: the in-memory layer goes to a layer file on disk.
    let on_disk = main.flush().await?;
    println!("Flushed: everything up to LSN {on_disk} is in layer files on disk:");
    for layer in main.layers() {
        println!(
            "  {} ({:?}, LSNs {} to {}, {} bytes)",
            layer.file_name,
            layer.kind,
            layer.lsn_range.start,
            layer.lsn_range.end,
            layer.file_size
        );
    }

    // 4. Read as of the newest LSN and as of an older one.
    let latest = main.last_record_lsn();
    let before = opened;
    println!("Reads as of the newest LSN {latest} and as of the older LSN {before}:");
    for i in [7, 42, 150, 250] {
        let k = key(i);
        let now = main.get(&k, latest).await?;
        let then = main.get(&k, before).await?;
        println!(
            "  {}: now {}; at {before} {}",
            String::from_utf8_lossy(&k),
            show(&now),
            show(&then)
        );
    }
    let at = Lsn(0x201);
    let many = main.get_many(&[key(0), key(1), key(2)], at).await?;
    println!(
        "  get_many of accounts 0, 1 and 2 at {at}: {}",
        many.iter().map(show).collect::<Vec<_>>().join(", ")
    );

    // 5. Scan a key range: the deleted account is missing now and present before LSN 0/500.
    let range = key(40)..key(45);
    for lsn in [latest, Lsn(0x4FF)] {
        let rows = main.scan(range.clone(), lsn).await?;
        let keys: Vec<_> = rows
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        println!(
            "Scan of account/0040..account/0045 at LSN {lsn}: {} keys: {}",
            rows.len(),
            keys.join(", ")
        );
    }

    // 6. Close, reopen, and read again from the layer files.
    store.close().await?;
    println!("Closed the store.");
    let store = Store::open(StoreOptions::new(&dir)).await?;
    let main = store.timeline("main")?;
    println!(
        "Reopened the store: timeline \"main\" is at LSN {} with {} layer file(s).",
        main.last_record_lsn(),
        main.layers().len()
    );
    let v = main.get(&key(7), main.last_record_lsn()).await?;
    println!("  account/0007 at {}: {}", main.last_record_lsn(), show(&v));
    let v = main.get(&key(42), before).await?;
    println!("  account/0042 at {before}: {}", show(&v));
    store.close().await?;
    println!("Done. The data is in {}.", dir.display());
    Ok(())
}

/// Removes a store left by an earlier run; refuses to touch a folder that is not one.
fn prepare(dir: &Path) -> Result<(), Box<dyn Error>> {
    if !dir.exists() {
        return Ok(());
    }
    let is_empty = std::fs::read_dir(dir)?.next().is_none();
    if dir.join("CATALOG").is_file() || is_empty {
        std::fs::remove_dir_all(dir)?;
        println!(
            "Removed the store left in {} by an earlier run.",
            dir.display()
        );
        Ok(())
    } else {
        Err(format!(
            "{} exists and is not a StrataKV store; pass another folder",
            dir.display()
        )
        .into())
    }
}
