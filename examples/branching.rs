//! Branching and point-in-time restore.
//!
//! ```text
//! cargo run --example branching
//! ```
//!
//! Writes a short history on "main", each commit with its own commit time; branches "dev" off
//! an older LSN and writes there without touching "main"; then makes a bad write on "main" and
//! undoes it by restoring "main" to a time just before it. The old "main" is kept under a
//! backup name, so nothing is lost. Everything lives in a temporary folder.

use std::error::Error;
use std::time::Duration;

use stratakv::{Clock, Lsn, RestorePoint, Store, StoreOptions, SystemClock, Timeline, Value};

/// One commit: its LSN, its commit time in minutes after the start, and its (key, value) puts.
type Commit = (u64, u64, &'static [(&'static str, &'static str)]);

/// The value of `key` as of `lsn`, as text ("-" when the key does not exist there).
async fn read(tl: &Timeline, key: &str, lsn: Lsn) -> Result<String, Box<dyn Error>> {
    Ok(match tl.get(key.as_bytes(), lsn).await? {
        Some(v) => String::from_utf8_lossy(&v).into_owned(),
        None => "-".to_string(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(StoreOptions::new(dir.path())).await?;
    let main = store.create_timeline("main").await?;

    // 1. History on "main". A database would take each commit time from its WAL commit record;
    //    here commit k happened k × 10 minutes after a start one hour ago. Commit times must not
    //    be in the future: a restore by time asks which commit came last before that time.
    let start = SystemClock.now() - Duration::from_secs(3600);
    let at = |minutes: u64| start + Duration::from_secs(minutes * 60);
    let mut w = main.writer()?;
    let history: [Commit; 4] = [
        (0x10, 0, &[("plan", "free"), ("user/alice", "100")]),
        (0x20, 10, &[("user/bob", "50")]),
        (0x30, 20, &[("plan", "pro"), ("user/alice", "80")]),
        (0x40, 30, &[("user/carol", "10")]),
    ];
    for (lsn, minutes, puts) in history {
        for (key, value) in puts {
            w.put(key.as_bytes(), Lsn(lsn), Value::image(*value))?;
        }
        w.finish_write_at(Lsn(lsn), at(minutes))?; // publishes the LSN with its commit time
        println!(
            "main: commit at LSN {} (T+{minutes} min): {puts:?}",
            Lsn(lsn)
        );
    }
    assert_eq!(main.lsn_at(at(25))?, Lsn(0x30)); // the last commit at or before T+25 min

    // 2. Branch "dev" off main at the older LSN 0/20: it sees main as it was then, copies no
    //    data, and takes its own writes above 0/20.
    let dev = store.branch("dev", &main, Lsn(0x20)).await?;
    let mut dw = dev.writer()?;
    dw.put(b"plan", Lsn(0x21), Value::image("experimental"))?;
    dw.put(b"user/bob", Lsn(0x21), Value::Tombstone)?;
    dw.finish_write(Lsn(0x21))?;
    drop(dw);
    println!("dev: branched off main at LSN 0/20, then set plan and deleted user/bob at 0/21");

    assert_eq!(read(&dev, "plan", Lsn(0x20)).await?, "free"); // main's history, as of 0/20
    assert_eq!(read(&dev, "plan", Lsn(0x21)).await?, "experimental");
    assert_eq!(read(&dev, "user/bob", Lsn(0x21)).await?, "-");
    assert_eq!(read(&dev, "user/carol", Lsn(0x21)).await?, "-"); // written on main after 0/20
    // main is unaffected by what dev wrote.
    assert_eq!(read(&main, "plan", Lsn(0x40)).await?, "pro");
    assert_eq!(read(&main, "user/bob", Lsn(0x40)).await?, "50");
    for key in ["plan", "user/bob"] {
        println!(
            "  {key}: on dev {:?}, on main {:?}",
            read(&dev, key, Lsn(0x21)).await?,
            read(&main, key, Lsn(0x40)).await?
        );
    }

    // 3. A bad write on main at T+40 min: every user deleted, the plan overwritten.
    let bad = Lsn(0x50);
    for key in ["user/alice", "user/bob", "user/carol"] {
        w.put(key.as_bytes(), bad, Value::Tombstone)?;
    }
    w.put(b"plan", bad, Value::image("oops"))?;
    w.finish_write_at(bad, at(40))?;
    drop(w);
    let users = main.scan(&b"user/"[..]..&b"user0"[..], bad).await?;
    assert!(users.is_empty());
    println!("main: bad write at LSN {bad} (T+40 min): all users deleted, plan = \"oops\"");

    // 4. Restore "main" as of T+35 min, between the last good commit and the bad one. The
    //    name "main" moves to a new timeline branched at the LSN of that time; the timeline it
    //    named before keeps all its history under a backup name.
    let restored = store.restore("main", RestorePoint::Time(at(35))).await?;
    let backup = restored
        .backup_name
        .clone()
        .expect("main existed, so it gets a backup name");
    assert_eq!(restored.lsn, Lsn(0x40));
    assert_eq!(backup, "main@restore-1");
    assert_eq!(main.name(), backup); // our old handle now names the backup
    println!(
        "restore(\"main\", T+35 min): main is now branched at LSN {}; the old main is kept as {backup:?}",
        restored.lsn
    );

    let new_main = store.timeline("main")?;
    let old_main = store.timeline(&backup)?;
    let (now, old) = (new_main.last_record_lsn(), old_main.last_record_lsn());
    println!("  key: main (restored, at {now}) / {backup} (at {old})");
    for (key, good, broken) in [
        ("plan", "pro", "oops"),
        ("user/alice", "80", "-"),
        ("user/bob", "50", "-"),
        ("user/carol", "10", "-"),
    ] {
        let (after, before) = (
            read(&new_main, key, now).await?,
            read(&old_main, key, old).await?,
        );
        assert_eq!((after.as_str(), before.as_str()), (good, broken), "{key}");
        println!("  {key}: {after:?} / {before:?}");
    }

    // The restored main takes new writes above its branch point, like any timeline.
    let mut w = new_main.writer()?;
    w.put(b"user/dave", Lsn(0x60), Value::image("5"))?;
    w.finish_write(Lsn(0x60))?;
    drop(w);
    assert_eq!(read(&new_main, "user/dave", Lsn(0x60)).await?, "5");
    assert_eq!(read(&old_main, "user/dave", old).await?, "-");

    let names: Vec<String> = store.timelines().iter().map(Timeline::name).collect();
    assert_eq!(names, ["dev", "main", "main@restore-1"]);
    println!("timelines: {names:?}");
    store.close().await?;
    Ok(())
}
