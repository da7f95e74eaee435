//! The on-disk formats are pinned: stores written by earlier code keep reading exactly.
//!
//! Each folder of `tests/fixtures/` is a store written by the code of one set of formats, with
//! the object-storage folder it uploaded to: layer files of each kind (L0 and L1 deltas, image
//! layers, raw and zstd blocks), manifests, the catalog, time indexes, write-ahead log segments
//! with commits never flushed, the owner record; layers, indexes, catalog and generation claims
//! in object storage.
//!
//! - `v1/`: layer footer version 2, every other structure version 1.
//! - `v2/`: as `v1/`, with the time index at version 2 (entries packed as deltas).
//! - `v3/`: as `v2/`, with the remote index at version 2 (commit times packed as deltas).
//!
//! For each folder:
//! - [`the_v1_store_reads_exactly`] (and `v2`, `v3`) opens a copy of the store and reads every key at
//!   every LSN of both timelines, including what only its write-ahead log holds, and the LSN of
//!   every commit time.
//! - [`the_v1_remote_attaches_and_reads_exactly`] (and `v2`, `v3`) attaches a new directory from a copy
//!   of the object-storage folder and reads what it holds.
//! - [`every_v1_file_re_encodes_to_its_bytes`] (and `v2`, `v3`) decodes every file with today's
//!   decoders and encodes it again with today's encoders: an encoder that changes its bytes
//!   without a new format version fails here. A structure of an older version than today's
//!   (the time index of `v1/`, the remote indexes of `v1/` and `v2/`) is decoded, and
//!   re-encoded as today's and decoded the same.
//!
//! A format change is a decision: bump the structure's version, keep decoding the old one (or
//! refuse it with an error naming the version), and add `tests/fixtures/v{N}/` beside these
//! with `STRATAKV_WRITE_FIXTURES=tests/fixtures/v{N} cargo test --test formats -- --ignored`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::local::LocalFileSystem;
use stratakv::internals::{
    Catalog, Footer, Manifest, RemoteIndex, TIME_INDEX_HEADER_LEN, TIME_INDEX_RECORD_OVERHEAD,
    decode_block, decode_index, decode_time_index, decode_wal_segment, encode_entries,
    encode_header, encode_index, encode_wal_header, encode_wal_record,
};
use stratakv::remote::RemoteStorage;
use stratakv::{Lsn, SimpleRedo, Store, StoreOptions, Timeline, Value};

const KEYS: u32 = 24;
/// The prefix of the store in the fixture's object-storage folder.
const PREFIX: &str = "tenant";

fn fixture_dir(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(version)
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:03}").into_bytes()
}

fn commit_time(lsn: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000) + Duration::from_millis(lsn)
}

/// One put of the fixture's history.
enum Put {
    Image(String),
    Append(String),
    Tombstone,
}

/// One commit: its timeline, its LSN and its puts by key number.
type Commit = (&'static str, u64, Vec<(u32, Put)>);

/// The history the fixture holds, timeline by timeline, in the order it was written:
/// `(timeline, lsn, puts)`, one commit each. `dev` branches off `main` at [`BRANCH_AT`].
fn history() -> Vec<Commit> {
    let mut out = Vec::new();
    for round in 0..6u64 {
        let lsn = 0x100 * (round + 1);
        let puts = (0..KEYS)
            .map(|i| {
                let put = match (round, i % 4) {
                    (0, _) | (3, 0) => {
                        Put::Image(format!("main-r{round}-k{i}-{}", "x".repeat(i as usize)))
                    }
                    (_, 1) => Put::Append(format!("+r{round}")),
                    (_, 2) if round % 2 == 1 => Put::Tombstone,
                    (_, 2) => Put::Image(format!("main-r{round}-k{i}")),
                    _ => Put::Append(format!("/{round}")),
                };
                (i, put)
            })
            .collect();
        out.push(("main", lsn, puts));
        if round == 2 {
            let dev = (0..KEYS)
                .step_by(3)
                .map(|i| (i, Put::Image(format!("dev-k{i}"))))
                .collect();
            out.push(("dev", BRANCH_AT + 0x10, dev));
        }
    }
    out
}

/// Where `dev` branches off `main`: between main's second and third commits.
const BRANCH_AT: u64 = 0x280;

/// The value of every key after every commit: `(timeline, key) → [(lsn, value)]`. `dev`'s
/// own list holds only what it wrote; reads at or below [`BRANCH_AT`] fall through to `main`.
type Model = BTreeMap<(&'static str, u32), Vec<(u64, Option<String>)>>;

fn model() -> Model {
    let mut m: Model = BTreeMap::new();
    for (tl, lsn, puts) in history() {
        for (i, put) in puts {
            let before = expected(&m, tl, i, lsn - 1);
            let v = match put {
                Put::Image(s) => Some(s),
                Put::Append(s) => Some(before.unwrap_or_default() + &s),
                Put::Tombstone => None,
            };
            m.entry((tl, i)).or_default().push((lsn, v));
        }
    }
    m
}

fn expected(m: &Model, tl: &'static str, i: u32, lsn: u64) -> Option<String> {
    let own = m
        .get(&(tl, i))
        .and_then(|v| v.iter().rev().find(|(l, _)| *l <= lsn));
    match (own, tl) {
        (Some((_, v)), _) => v.clone(),
        (None, "dev") => expected(m, "main", i, lsn.min(BRANCH_AT)),
        (None, _) => None,
    }
}

fn remote(dir: &Path) -> RemoteStorage {
    let store = Arc::new(LocalFileSystem::new_with_prefix(dir).expect("remote folder"));
    RemoteStorage::new(store, PREFIX.into()).with_claim_grace(Duration::from_millis(10))
}

fn options(dir: &Path) -> StoreOptions {
    StoreOptions::new(dir)
        .block_size(512)
        .freeze_bytes(1 << 20)
        .background_period(None)
        .pitr_interval(None)
        .image_threshold_bytes(u64::MAX)
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Every file below `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every key of `tl` at every LSN from `from` to `upto`, against the model.
async fn check_reads(tl: &Timeline, name: &'static str, from: u64, upto: u64, m: &Model) -> usize {
    let mut checked = 0;
    let lsns: Vec<u64> = (from..=upto).step_by(0x10).chain([upto]).collect();
    for lsn in lsns {
        for i in 0..KEYS {
            let got = tl.get(&key(i), Lsn(lsn)).await.unwrap_or_else(|e| {
                panic!("{name}: key {i} at {}: {e}", Lsn(lsn));
            });
            let got = got.map(|b| String::from_utf8(b.to_vec()).unwrap());
            assert_eq!(
                got,
                expected(m, name, i, lsn),
                "{name}: key {i} at {}",
                Lsn(lsn)
            );
            checked += 1;
        }
    }
    checked
}

/// The LSN of the last commit of the fixture's history on `main`.
fn last_main_lsn() -> u64 {
    history()
        .iter()
        .filter(|(tl, _, _)| *tl == "main")
        .map(|(_, l, _)| *l)
        .max()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v1_store_reads_exactly() {
    store_reads_exactly("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_store_reads_exactly() {
    store_reads_exactly("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v3_store_reads_exactly() {
    store_reads_exactly("v3").await;
}

async fn store_reads_exactly(version: &str) {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixture_dir(version).join("store"), tmp.path());
    // Without its remote: the local files alone hold everything, the log's tail included.
    let store = Store::open(options(tmp.path())).await.unwrap();
    let m = model();
    let main = store.timeline("main").unwrap();
    let dev = store.timeline("dev").unwrap();
    assert_eq!(main.last_record_lsn(), Lsn(last_main_lsn()));
    assert!(
        main.disk_consistent_lsn() < main.last_record_lsn(),
        "the fixture's last commits are in its write-ahead log only"
    );
    assert_eq!(dev.ancestor().map(|(_, l)| l), Some(Lsn(BRANCH_AT)));
    let mut kinds: Vec<_> = main.layers().iter().map(|d| (d.kind, d.level)).collect();
    kinds.sort_by_key(|(k, l)| (format!("{k:?}"), *l));
    kinds.dedup();
    assert!(kinds.len() >= 3, "layers of each kind: {kinds:?}");
    let n = check_reads(&main, "main", 0x100, last_main_lsn(), &m).await
        + check_reads(&dev, "dev", BRANCH_AT, dev.last_record_lsn().0, &m).await;
    assert!(n > 1000, "{n} reads");
    for (tl, lsn, _) in history() {
        let t = store.timeline(tl).unwrap();
        assert_eq!(
            t.time_at(Lsn(lsn)),
            Some(commit_time(lsn)),
            "{tl} at {lsn:#x}"
        );
        assert_eq!(t.lsn_at(commit_time(lsn)).unwrap(), Lsn(lsn), "{tl}");
    }
    store.close().await.unwrap();
    // Open again: what the first open rewrote (an older time index, say) reads the same.
    let store = Store::open(options(tmp.path())).await.unwrap();
    for (tl, lsn, _) in history() {
        let t = store.timeline(tl).unwrap();
        assert_eq!(
            t.lsn_at(commit_time(lsn)).unwrap(),
            Lsn(lsn),
            "{tl}, reopened"
        );
    }
    for f in files(tmp.path()) {
        if f.file_name().is_some_and(|n| n == "timeindex") {
            let d = decode_time_index(&std::fs::read(&f).unwrap(), &f).unwrap();
            assert!(d.is_current(), "{}: version {}", f.display(), d.version);
        }
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v1_remote_attaches_and_reads_exactly() {
    remote_attaches_and_reads_exactly("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_remote_attaches_and_reads_exactly() {
    remote_attaches_and_reads_exactly("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v3_remote_attaches_and_reads_exactly() {
    remote_attaches_and_reads_exactly("v3").await;
}

async fn remote_attaches_and_reads_exactly(version: &str) {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(
        &fixture_dir(version).join("remote"),
        &tmp.path().join("remote"),
    );
    let dir = tmp.path().join("node");
    let store = Store::open(options(&dir).remote(remote(&tmp.path().join("remote"))))
        .await
        .unwrap();
    let m = model();
    let main = store.timeline("main").unwrap();
    let dev = store.timeline("dev").unwrap();
    let upto = main.last_record_lsn().0;
    assert!(
        upto >= 0x400 && upto < last_main_lsn(),
        "the remote holds main up to its last flush, {}",
        Lsn(upto)
    );
    check_reads(&main, "main", 0x100, upto, &m).await;
    check_reads(&dev, "dev", BRANCH_AT, dev.last_record_lsn().0, &m).await;
    store.close().await.unwrap();
}

/// Re-encodes a layer file's footer and index block.
fn check_layer(bytes: &[u8], path: &Path) {
    let footer = Footer::decode(bytes, path).unwrap();
    let mut tail = Vec::new();
    footer.encode_into(&mut tail);
    assert!(
        bytes.ends_with(&tail),
        "{}: footer re-encodes to other bytes",
        path.display()
    );
    let at = footer.index_offset as usize;
    let framed = &bytes[at..at + footer.index_len as usize];
    let raw = decode_block(framed, path, footer.index_offset).unwrap();
    let entries = decode_index(&raw, path, footer.index_offset).unwrap();
    assert_eq!(
        encode_index(&entries),
        raw.to_vec(),
        "{}: index",
        path.display()
    );
    let mut off = 0usize;
    for e in &entries {
        let start = e.offset as usize;
        assert!(start >= off, "{}: blocks overlap", path.display());
        decode_block(&bytes[start..start + e.len as usize], path, e.offset).unwrap();
        off = start + e.len as usize;
    }
}

#[test]
fn every_v1_file_re_encodes_to_its_bytes() {
    every_file_re_encodes_to_its_bytes("v1");
}

#[test]
fn every_v2_file_re_encodes_to_its_bytes() {
    every_file_re_encodes_to_its_bytes("v2");
}

#[test]
fn every_v3_file_re_encodes_to_its_bytes() {
    every_file_re_encodes_to_its_bytes("v3");
}

fn every_file_re_encodes_to_its_bytes(version: &str) {
    let mut seen = BTreeMap::<&str, usize>::new();
    for path in files(&fixture_dir(version)) {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let in_remote = path.components().any(|c| c.as_os_str() == "remote");
        // Every object carries a CRC32 trailer over the bytes before it.
        let body = if in_remote {
            let (body, crc) = bytes.split_at(bytes.len() - 4);
            assert_eq!(
                crc32fast::hash(body).to_le_bytes(),
                crc,
                "{}: object trailer",
                path.display()
            );
            body
        } else {
            &bytes[..]
        };
        let kind = if name == "CATALOG" || name.starts_with("catalog-") {
            let c = Catalog::decode(body, &path).unwrap();
            assert_eq!(c.encode(), body, "{}", path.display());
            "catalog"
        } else if name == "manifest" {
            let m = Manifest::decode(body, &path).unwrap();
            assert_eq!(m.encode(), body, "{}", path.display());
            "manifest"
        } else if name.starts_with("index-") {
            let idx = RemoteIndex::decode(body, &path).unwrap();
            let again = idx.encode();
            if matches!(version, "v1" | "v2") {
                // Version 1 (commit times as fixed pairs), written as today's at each upload.
                assert_eq!(u16::from_le_bytes([body[8], body[9]]), 1);
                let today = RemoteIndex::decode(&again, &path).unwrap();
                assert_eq!(today, idx, "{}", path.display());
                assert!(again.len() <= body.len(), "{}", path.display());
            } else {
                assert_eq!(again, body, "{}", path.display());
            }
            "remote index"
        } else if name == "timeindex" {
            let t = decode_time_index(body, &path).unwrap();
            assert!(!t.torn_tail, "{}", path.display());
            let mut again = encode_header();
            encode_entries(&t.entries, &mut again);
            if t.is_current() {
                // Record by record (one per append): each decodes alone to the entries that
                // encode to its bytes.
                let mut at = TIME_INDEX_HEADER_LEN;
                while at < body.len() {
                    let len = u32::from_le_bytes(body[at..at + 4].try_into().unwrap()) as usize;
                    let record = &body[at..at + TIME_INDEX_RECORD_OVERHEAD + len];
                    let mut alone = encode_header();
                    alone.extend_from_slice(record);
                    let entries = decode_time_index(&alone, &path).unwrap().entries;
                    let mut again = Vec::new();
                    encode_entries(&entries, &mut again);
                    assert_eq!(again, record, "{} at {at}", path.display());
                    at += record.len();
                }
            } else {
                // The first version, rewritten as today's when a store opens it.
                assert_eq!((version, t.version), ("v1", 1), "{}", path.display());
                let today = decode_time_index(&again, &path).unwrap();
                assert_eq!(today.entries, t.entries, "{}", path.display());
                assert!(again.len() < body.len(), "{}", path.display());
            }
            "time index"
        } else if name.ends_with(".seg") {
            let seg = decode_wal_segment(body, &path).unwrap();
            assert!(
                !seg.torn_tail && !seg.records.is_empty(),
                "{}",
                path.display()
            );
            let mut again = encode_wal_header(seg.seq);
            for r in &seg.records {
                encode_wal_record(&mut again, r);
            }
            assert_eq!(again, body, "{}", path.display());
            "wal segment"
        } else if name.contains(".layer") {
            check_layer(body, &path);
            "layer"
        } else {
            // The owner record, the lock, generation claims: checked by opening.
            "other"
        };
        *seen.entry(kind).or_default() += 1;
    }
    for kind in [
        "catalog",
        "manifest",
        "remote index",
        "time index",
        "wal segment",
        "layer",
    ] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in the fixture: {seen:?}"
        );
    }
}

/// Writes the fixture with today's code into `$STRATAKV_WRITE_FIXTURES` (a folder that must not
/// exist yet). Only for a new format version: the files of an existing version never change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes fixtures; run by hand for a new format version"]
async fn write_fixtures() {
    let Ok(out) = std::env::var("STRATAKV_WRITE_FIXTURES") else {
        panic!("set STRATAKV_WRITE_FIXTURES to the folder to write, e.g. tests/fixtures/v2");
    };
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(out);
    assert!(
        !out.exists(),
        "{} exists: a version's fixture never changes",
        out.display()
    );
    let remote_dir = out.join("remote");
    std::fs::create_dir_all(&remote_dir).unwrap();
    let store = Store::open(
        options(&out.join("store"))
            .remote(remote(&remote_dir))
            .node_id("fixture"),
    )
    .await
    .unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let mut timelines = BTreeMap::from([("main", main.clone())]);
    for (tl, lsn, puts) in history() {
        if tl == "dev" && !timelines.contains_key("dev") {
            let dev = store.branch("dev", &main, Lsn(BRANCH_AT)).await.unwrap();
            timelines.insert("dev", dev);
        }
        let t = &timelines[tl];
        let mut w = t.writer().unwrap();
        for (i, put) in puts {
            let v = match put {
                Put::Image(s) => Value::image(s),
                Put::Append(s) => Value::delta(SimpleRedo::append(s.as_bytes())),
                Put::Tombstone => Value::Tombstone,
            };
            w.put(&key(i), Lsn(lsn), v).unwrap();
        }
        w.finish_write_at(Lsn(lsn), commit_time(lsn)).unwrap();
        drop(w);
        // Main's layers: L0 deltas, merged into L1 at 0x300, an image layer at 0x400; the
        // remote gets everything up to 0x500; the last commit stays in the log only.
        match (tl, lsn) {
            ("main", 0x300) => {
                t.flush().await.unwrap();
                t.compact().await.unwrap();
            }
            ("main", 0x400) => {
                t.create_image_layer().await.unwrap();
            }
            ("main", 0x600) => {}
            _ => {
                t.flush().await.unwrap();
            }
        }
        if lsn == 0x500 {
            store.wait_for_upload().await.unwrap();
        }
    }
    // Dropped, not closed: the last commit is in the write-ahead log only.
    drop(timelines);
    drop(main);
    drop(store);
    std::fs::remove_file(out.join("store/LOCK")).unwrap();
}
