//! A small store with history on disk and in memory, what a reader observes of a timeline,
//! and what a store's files look like: shared by `errors.rs` (refused input changes nothing)
//! and `bitflips.rs` (a damaged file is reported and changes nothing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use stratakv::{
    Error, ErrorKind, Lsn, SimpleRedo, Store, StoreOptions, Timeline, TimelineWriter, Value,
};

/// How long a read waits for an LSN that has not arrived.
pub const WAIT: Duration = Duration::from_millis(50);

/// A runtime with two worker threads.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Default options, but reads wait only [`WAIT`] for an LSN.
pub fn opts(dir: &Path) -> StoreOptions {
    StoreOptions::new(dir).wait_lsn_timeout(WAIT)
}

/// Asserts that `r` failed with `kind` and an error naming every one of `mentions`.
#[track_caller]
pub fn assert_err<T: std::fmt::Debug>(
    r: stratakv::Result<T>,
    kind: ErrorKind,
    mentions: &[&str],
) -> Error {
    let e = r.expect_err("expected an error");
    assert_eq!(e.kind(), kind, "wrong kind for: {e}");
    for m in mentions {
        assert!(
            e.to_string().contains(m),
            "error {:?} does not mention {m:?}",
            e.to_string()
        );
    }
    e
}

/// What `get_many` of some keys and `scan(..)` return at one LSN.
#[derive(Debug, PartialEq)]
pub struct ReadsAt {
    pub lsn: u64,
    pub get_many: Result<Vec<Option<Bytes>>, ErrorKind>,
    pub scan: Result<Vec<(Bytes, Bytes)>, ErrorKind>,
}

/// Everything a reader can observe of a timeline: `last_record_lsn`, and `get_many` of `keys`
/// and `scan(..)` at every LSN from 0 to it (the tests keep LSNs small).
#[derive(Debug, PartialEq)]
pub struct Observed {
    pub last_record_lsn: Lsn,
    pub reads: Vec<ReadsAt>,
}

pub async fn observe(tl: &Timeline, keys: &[&[u8]]) -> Observed {
    let last_record_lsn = tl.last_record_lsn();
    assert!(last_record_lsn.0 < 4096, "keep test LSNs small");
    let mut reads = Vec::new();
    for lsn in 0..=last_record_lsn.0 {
        let get_many = tl.get_many(keys, Lsn(lsn)).await.map_err(|e| e.kind());
        let scan = tl.scan::<&[u8]>(.., Lsn(lsn)).await.map_err(|e| e.kind());
        reads.push(ReadsAt {
            lsn,
            get_many,
            scan,
        });
    }
    Observed {
        last_record_lsn,
        reads,
    }
}

/// The keys [`seeded`] writes, and one it does not.
pub const SEEDED_KEYS: [&[u8]; 4] = [b"page/a", b"page/b", b"page/c", b"page/new"];

/// A timeline with history on disk and in memory:
///
/// | LSN  | page/a            | page/b    | page/c              |
/// |------|-------------------|-----------|---------------------|
/// | 0x10 | image "a1"        | image "b1"|                     |
/// | 0x18 | append "+"        |           | will_init set "c1"  |
/// | 0x20 |                   | tombstone |                     |
/// | 0x28 | image "a2"        |           | append "!"          |
///
/// Published up to 0x28; everything up to 0x20 is flushed to a layer file.
pub async fn seeded(options: StoreOptions) -> (Store, Timeline, TimelineWriter) {
    let store = Store::open(options).await.unwrap();
    let tl = store.create_timeline("main").await.unwrap();
    let mut w = tl.writer().unwrap();
    w.put(b"page/a", Lsn(0x10), Value::image("a1")).unwrap();
    w.put(b"page/b", Lsn(0x10), Value::image("b1")).unwrap();
    w.finish_write(Lsn(0x10)).unwrap();
    w.put(b"page/a", Lsn(0x18), Value::delta(SimpleRedo::append(b"+")))
        .unwrap();
    w.put(
        b"page/c",
        Lsn(0x18),
        Value::init_delta(SimpleRedo::set(b"c1")),
    )
    .unwrap();
    w.put(b"page/b", Lsn(0x20), Value::Tombstone).unwrap();
    w.finish_write(Lsn(0x20)).unwrap();
    tl.flush().await.unwrap();
    w.put(b"page/a", Lsn(0x28), Value::image("a2")).unwrap();
    w.put(b"page/c", Lsn(0x28), Value::delta(SimpleRedo::append(b"!")))
        .unwrap();
    w.finish_write(Lsn(0x28)).unwrap();
    assert_eq!(tl.get(b"page/a", Lsn(0x1f)).await.unwrap().unwrap(), "a1+");
    assert_eq!(tl.get(b"page/c", Lsn(0x28)).await.unwrap().unwrap(), "c1!");
    assert_eq!(tl.get(b"page/b", Lsn(0x20)).await.unwrap(), None);
    (store, tl, w)
}

/// Every path under `dir` with its contents (`None` for a directory).
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), None);
                todo.push(p);
            } else {
                out.insert(p.clone(), Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// What changed between two [`tree`]s, one line per path.
pub fn changes(
    before: &BTreeMap<PathBuf, Option<Vec<u8>>>,
    after: &BTreeMap<PathBuf, Option<Vec<u8>>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => out.push(format!("removed {}", p.display())),
            Some(a) if a != b => out.push(format!("changed {}", p.display())),
            Some(_) => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("added {}", p.display()));
    }
    out
}

/// The directory of `tl`'s files in the store at `dir`.
pub fn timeline_dir(dir: &Path, tl: &Timeline) -> PathBuf {
    dir.join("timelines").join(tl.id().to_string())
}
