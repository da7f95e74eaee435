//! Bit flips: one random bit of one file of a store flipped, thousands of times, and the store
//! opened and read all over.
//!
//! The fixture store has three timelines (`main`, a branch `dev`, and `feat` branched from
//! `dev`), L0 and L1 delta layers, image layers, manifests, the catalog, time indexes and WAL
//! segments holding commits not yet in layers. Each trial copies it, flips one bit in a file of
//! the kind its turn picks, opens the copy and reads every timeline at several LSNs (a scan,
//! which reads every block of every layer below the LSN, and a get of every key), and its
//! commit times. Each trial ends in one of:
//! - **detected**: the open or a read reported [`ErrorKind::Corruption`] naming the file;
//! - **torn tail**: the flip was in the last record of the last WAL segment, or in the head of
//!   the last record of a time index (whose first LSN the head names: with it intact, a damaged
//!   record of durable entries is detected), which the torn-tail rule drops as a write cut short
//!   by a crash (the one tolerated loss: that commit, or that flush's commit times); everything
//!   still read matches the model up to the new `last_record_lsn`;
//! - **harmless**: the flip touched bytes nothing reads (a WAL segment header's sequence number,
//!   which the file name carries), and every read returned exactly what it should;
//! - **wrong**: anything else — a wrong value, another error kind, a corruption error that does
//!   not name the file, a panic. There must be none.
//!
//! `STRATAKV_BITFLIP_TRIALS` (default 6000) and `STRATAKV_BITFLIP_SEED` change the run.
//!
//! Targeted cases follow: bits flipped at positions spread over each layer file (the reads that
//! touch a damaged block fail, and only those), at every byte of a manifest and of the catalog
//! (the open fails naming the file and changes nothing), and layer files cut short or missing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use stratakv::internals::{TIME_INDEX_HEADER_LEN, TIME_INDEX_RECORD_OVERHEAD, WAL_HEADER_LEN};
use stratakv::{
    ErrorKind, FsyncPolicy, LayerKind, Lsn, SimpleRedo, Store, StoreOptions, Timeline,
    TimelineWriter, Value,
};

use common::env::env_u64;
use common::fixture::{
    SEEDED_KEYS, assert_err, changes, observe, opts, rt, seeded, timeline_dir, tree,
};
use common::rng::Rng;

const DEFAULT_TRIALS: u64 = 6000;
const DEFAULT_SEED: u64 = 0xB17F_11B5;
const KEYS: usize = 40;

fn key(i: usize) -> Vec<u8> {
    format!("key{i:02}").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The model and the fixture
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct TlModel {
    ancestor: Option<(String, u64)>,
    versions: BTreeMap<(Vec<u8>, u64), Option<Bytes>>,
    lrl: u64,
}

#[derive(Clone, Debug, Default)]
struct Model {
    timelines: BTreeMap<String, TlModel>,
}

impl Model {
    fn get(&self, tl: &str, key: &[u8], lsn: u64) -> Option<Bytes> {
        let m = &self.timelines[tl];
        if let Some((_, v)) = m
            .versions
            .range((key.to_vec(), 0)..=(key.to_vec(), lsn))
            .next_back()
        {
            return v.clone();
        }
        match &m.ancestor {
            Some((a, at)) => self.get(a, key, lsn.min(*at)),
            None => None,
        }
    }

    fn scan(&self, tl: &str, lsn: u64) -> Vec<(Bytes, Bytes)> {
        (0..KEYS)
            .filter_map(|k| Some((Bytes::from(key(k)), self.get(tl, &key(k), lsn)?)))
            .collect()
    }
}

fn options(dir: &Path) -> StoreOptions {
    StoreOptions::new(dir)
        .background_period(None)
        .fsync_policy(FsyncPolicy::EveryCommit)
        .freeze_bytes(1 << 30)
        .block_size(512)
        .compaction_threshold(100)
        .target_layer_size(3 << 10)
        .image_threshold_bytes(1 << 30)
        .gc_horizon(Some(50))
        .pitr_interval(None)
        .wal_segment_size(4 << 10)
        .wait_lsn_timeout(Duration::from_millis(1))
}

/// Commits `n` batches of 1–3 puts on `name`.
fn commit(w: &mut TimelineWriter, model: &mut Model, name: &str, n: usize, rng: &mut Rng) {
    for _ in 0..n {
        let lrl = model.timelines[name].lrl;
        let lsn = lrl + 1 + rng.below(2);
        let mut used = Vec::new();
        let puts = 1 + rng.below(3) as usize;
        while used.len() < puts {
            let k = rng.below(KEYS as u64) as usize;
            if used.contains(&k) {
                continue;
            }
            used.push(k);
            let kb = key(k);
            let current = model.get(name, &kb, lrl);
            let roll = rng.below(10);
            let (value, after) = match current {
                Some(cur) if roll < 4 => {
                    let n = 1 + rng.below(30) as usize;
                    let tail = rng.bytes(n);
                    let mut v = cur.to_vec();
                    v.extend_from_slice(&tail);
                    (
                        Value::delta(SimpleRedo::append(&tail)),
                        Some(Bytes::from(v)),
                    )
                }
                Some(_) if roll < 5 => (Value::Tombstone, None),
                _ => {
                    let n = 16 + rng.below(200) as usize;
                    // Half compressible, so that blocks are stored both raw and as zstd.
                    let b = if rng.below(2) == 0 {
                        vec![b'a' + (k % 26) as u8; n]
                    } else {
                        rng.bytes(n)
                    };
                    (Value::image(b.clone()), Some(Bytes::from(b)))
                }
            };
            w.put(&kb, Lsn(lsn), value).expect("fixture put");
            model
                .timelines
                .get_mut(name)
                .expect("timeline")
                .versions
                .insert((kb, lsn), after);
        }
        w.finish_write(Lsn(lsn)).expect("fixture finish_write");
        model.timelines.get_mut(name).expect("timeline").lrl = lsn;
    }
}

/// Builds the fixture store in `dir` and returns its model. The store is dropped without
/// close, so the WAL holds the commits not yet in layer files.
async fn build_fixture(dir: &Path) -> Model {
    let mut rng = Rng(0xF1C5_7E5E);
    let mut model = Model::default();
    let store = Store::open(options(dir)).await.expect("fixture open");
    let main = store.create_timeline("main").await.expect("main");
    model
        .timelines
        .insert("main".to_string(), TlModel::default());
    let mut wm = main.writer().expect("writer");
    for _ in 0..3 {
        commit(&mut wm, &mut model, "main", 25, &mut rng);
        main.flush().await.expect("flush");
    }
    main.compact().await.expect("compact");
    main.create_image_layer().await.expect("image");
    commit(&mut wm, &mut model, "main", 25, &mut rng);
    main.flush().await.expect("flush");
    main.gc().await.expect("gc");

    let at = model.timelines["main"].lrl - 10;
    let dev = store.branch("dev", &main, Lsn(at)).await.expect("dev");
    model.timelines.insert(
        "dev".to_string(),
        TlModel {
            ancestor: Some(("main".to_string(), at)),
            lrl: at,
            ..TlModel::default()
        },
    );
    let mut wd = dev.writer().expect("writer");
    commit(&mut wd, &mut model, "dev", 20, &mut rng);
    dev.flush().await.expect("flush");
    dev.create_image_layer().await.expect("image");
    commit(&mut wd, &mut model, "dev", 10, &mut rng);

    let at = model.timelines["dev"].lrl - 3;
    let feat = store.branch("feat", &dev, Lsn(at)).await.expect("feat");
    model.timelines.insert(
        "feat".to_string(),
        TlModel {
            ancestor: Some(("dev".to_string(), at)),
            lrl: at,
            ..TlModel::default()
        },
    );
    let mut wf = feat.writer().expect("writer");
    commit(&mut wf, &mut model, "feat", 12, &mut rng);
    commit(&mut wm, &mut model, "main", 15, &mut rng);
    // A crash: what is not flushed is only in the WAL.
    drop((wm, wd, wf, main, dev, feat));
    drop(store);
    model
}

// ---------------------------------------------------------------------------------------------
// Files and their kinds
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Catalog,
    Manifest,
    TimeIndex,
    DeltaLayer,
    ImageLayer,
    WalSegment,
}

const KINDS: [Kind; 6] = [
    Kind::Catalog,
    Kind::Manifest,
    Kind::TimeIndex,
    Kind::DeltaLayer,
    Kind::ImageLayer,
    Kind::WalSegment,
];

fn kind_of(rel: &Path) -> Option<Kind> {
    let name = rel.file_name()?.to_str()?;
    let s = rel.to_str()?;
    Some(if name == "CATALOG" {
        Kind::Catalog
    } else if name == "manifest" {
        Kind::Manifest
    } else if name == "timeindex" {
        Kind::TimeIndex
    } else if name.ends_with(".layer") && name.contains("-d-") {
        Kind::DeltaLayer
    } else if name.ends_with(".layer") && name.contains("-i-") {
        Kind::ImageLayer
    } else if s.starts_with("wal/") && name.ends_with(".seg") {
        Kind::WalSegment
    } else {
        return None;
    })
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).expect("prefix").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for rel in files(from) {
        let dst = to.join(&rel);
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from.join(&rel), dst).expect("copy");
    }
}

// ---------------------------------------------------------------------------------------------
// Trials
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    DetectedAtOpen,
    DetectedOnRead,
    TornTail,
    Harmless,
    Wrong,
}

/// What the undamaged fixture answers beyond the model: per timeline, the cutoff, the LSNs read
/// and the commit times at them.
#[derive(Clone, Debug)]
struct Reference {
    model: Model,
    cutoffs: BTreeMap<String, u64>,
    lsns: BTreeMap<String, Vec<u64>>,
    times: BTreeMap<String, Vec<Option<SystemTime>>>,
}

struct Flip<'a> {
    rel: &'a Path,
    kind: Kind,
    byte: usize,
    len: usize,
    /// Where the file's last record starts (time indexes only).
    last_record_at: usize,
}

/// A time index record's head: body length, first LSN, checksum.
const TIME_INDEX_RECORD_HEAD_LEN: usize = TIME_INDEX_RECORD_OVERHEAD - 4;

/// Where the last record of a time index file starts (its header's end if it has none).
fn last_time_index_record(bytes: &[u8]) -> usize {
    let mut at = TIME_INDEX_HEADER_LEN;
    let mut last = at;
    while at + 4 <= bytes.len() {
        last = at;
        let body = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += TIME_INDEX_RECORD_OVERHEAD + body;
    }
    last
}

impl Flip<'_> {
    /// Whether the torn-tail rule may drop the record the flip is in: the last record of a
    /// time index, or a record of the last WAL segment (only its last record may go; that the
    /// rest is kept is checked by the reads).
    fn may_be_torn_tail(&self, last_wal: &Path) -> bool {
        match self.kind {
            Kind::TimeIndex => (self.last_record_at
                ..self.last_record_at + TIME_INDEX_RECORD_HEAD_LEN)
                .contains(&self.byte),
            Kind::WalSegment => self.rel == last_wal && self.byte >= WAL_HEADER_LEN,
            _ => false,
        }
    }

    /// Bytes nothing reads: the sequence number in a WAL segment's header.
    fn in_unread_bytes(&self) -> bool {
        self.kind == Kind::WalSegment && (10..WAL_HEADER_LEN).contains(&self.byte)
    }
}

/// Opens the damaged copy and reads everything; returns the verdict and a note for a wrong one.
async fn judge(
    dir: &Path,
    flip: &Flip<'_>,
    reference: &Reference,
    last_wal: &Path,
) -> (Verdict, String) {
    let named = |e: &stratakv::Error| {
        e.kind() == ErrorKind::Corruption
            && e.to_string().contains(flip.rel.to_str().expect("utf-8"))
    };
    let store = match Store::open(options(dir)).await {
        Ok(s) => s,
        Err(e) if named(&e) => return (Verdict::DetectedAtOpen, String::new()),
        Err(e) => return (Verdict::Wrong, format!("open: {e}")),
    };
    let mut differs = Vec::new();
    for (name, lsns) in &reference.lsns {
        let tl: Timeline = match store.timeline(name) {
            Ok(t) => t,
            Err(e) => return (Verdict::Wrong, format!("timeline {name}: {e}")),
        };
        let lrl = tl.last_record_lsn().0;
        let want_lrl = reference.model.timelines[name].lrl;
        if lrl != want_lrl {
            differs.push(format!("{name}: last_record_lsn {lrl}, want {want_lrl}"));
        }
        if lrl > want_lrl {
            return (Verdict::Wrong, differs.join("; "));
        }
        if tl.gc_cutoff().0 != reference.cutoffs[name] {
            return (
                Verdict::Wrong,
                format!(
                    "{name}: gc_cutoff {} want {}",
                    tl.gc_cutoff(),
                    reference.cutoffs[name]
                ),
            );
        }
        for (i, &lsn) in lsns.iter().enumerate() {
            if lsn > lrl {
                continue;
            }
            let got = match tl.scan::<&[u8]>(.., Lsn(lsn)).await {
                Ok(v) => v,
                Err(e) if named(&e) => return (Verdict::DetectedOnRead, String::new()),
                Err(e) => return (Verdict::Wrong, format!("{name}: scan at {lsn}: {e}")),
            };
            if got != reference.model.scan(name, lsn) {
                return (
                    Verdict::Wrong,
                    format!("{name}: scan at {lsn} returned wrong data"),
                );
            }
            let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
            let got = match tl.get_many(&keys, Lsn(lsn)).await {
                Ok(v) => v,
                Err(e) if named(&e) => return (Verdict::DetectedOnRead, String::new()),
                Err(e) => return (Verdict::Wrong, format!("{name}: get_many at {lsn}: {e}")),
            };
            for (k, v) in keys.iter().zip(got) {
                if v != reference.model.get(name, k, lsn) {
                    return (
                        Verdict::Wrong,
                        format!("{name}: {} at {lsn} is wrong", String::from_utf8_lossy(k)),
                    );
                }
            }
            let t = tl.time_at(Lsn(lsn));
            if t != reference.times[name][i] {
                differs.push(format!("{name}: time_at({lsn}) {t:?}"));
            }
        }
    }
    drop(store);
    if flip.may_be_torn_tail(last_wal) {
        // The record was dropped (whatever it held is gone from the reads, which otherwise
        // matched the model) or, for a flip the rule leaves unread, nothing changed at all.
        (Verdict::TornTail, String::new())
    } else if differs.is_empty() && flip.in_unread_bytes() {
        (Verdict::Harmless, String::new())
    } else if differs.is_empty() {
        (
            Verdict::Wrong,
            "an undetected flip in bytes that are read".to_string(),
        )
    } else {
        (Verdict::Wrong, differs.join("; "))
    }
}

#[derive(Default, Clone, Copy)]
struct Row {
    files: u64,
    flipped: u64,
    at_open: u64,
    on_read: u64,
    torn_tail: u64,
    harmless: u64,
    wrong: u64,
}

#[test]
fn every_flipped_bit_is_reported_as_corruption_or_provably_harmless_never_wrong_data() {
    let trials = env_u64("STRATAKV_BITFLIP_TRIALS").unwrap_or(DEFAULT_TRIALS);
    let seed = env_u64("STRATAKV_BITFLIP_SEED").unwrap_or(DEFAULT_SEED);
    let scratch_root = Path::new("/dev/shm");
    let scratch = if scratch_root.is_dir() {
        tempfile::tempdir_in(scratch_root).expect("tempdir")
    } else {
        tempfile::tempdir().expect("tempdir")
    };
    let fixture = scratch.path().join("fixture");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let model = rt.block_on(build_fixture(&fixture));

    // The undamaged fixture reads as the model says; what it answers beyond the model (commit
    // times, cutoffs) is the reference for the trials.
    let check = scratch.path().join("check");
    copy_dir(&fixture, &check);
    let mut reference = Reference {
        model,
        cutoffs: BTreeMap::new(),
        lsns: BTreeMap::new(),
        times: BTreeMap::new(),
    };
    rt.block_on(async {
        let store = Store::open(options(&check))
            .await
            .expect("open the fixture");
        for (name, m) in &reference.model.timelines {
            let tl = store.timeline(name).expect("timeline");
            assert_eq!(tl.last_record_lsn().0, m.lrl, "{name}");
            let cutoff = tl.gc_cutoff().0;
            let lo = cutoff.max(m.ancestor.as_ref().map_or(1, |a| a.1));
            let mut lsns: Vec<u64> = (0..6).map(|i| lo + (m.lrl - lo) * i / 5).collect();
            lsns.dedup();
            let mut times = Vec::new();
            for &lsn in &lsns {
                let got = tl.scan::<&[u8]>(.., Lsn(lsn)).await.expect("scan");
                assert_eq!(got, reference.model.scan(name, lsn), "{name} at {lsn}");
                times.push(tl.time_at(Lsn(lsn)));
            }
            reference.cutoffs.insert(name.clone(), cutoff);
            reference.lsns.insert(name.clone(), lsns);
            reference.times.insert(name.clone(), times);
        }
    });
    let all = files(&fixture);
    let by_kind: BTreeMap<Kind, Vec<&PathBuf>> = KINDS
        .iter()
        .map(|&k| (k, all.iter().filter(|p| kind_of(p) == Some(k)).collect()))
        .collect();
    for (k, v) in &by_kind {
        assert!(!v.is_empty(), "the fixture has no {k:?} file: {all:?}");
    }
    let last_wal = by_kind[&Kind::WalSegment]
        .iter()
        .filter(|p| {
            std::fs::metadata(fixture.join(p))
                .map(|m| m.len())
                .unwrap_or(0)
                > WAL_HEADER_LEN as u64
        })
        .max()
        .map(|p| p.to_path_buf())
        .expect("a WAL segment with records");

    let table: Mutex<BTreeMap<Kind, Row>> = Mutex::new(BTreeMap::new());
    let wrongs: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4) as u64;
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for w in 0..workers {
            let (fixture, by_kind, reference, table, wrongs, last_wal) =
                (&fixture, &by_kind, &reference, &table, &wrongs, &last_wal);
            let scratch = scratch.path();
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                for t in (w..trials).step_by(workers as usize) {
                    let mut rng = Rng(seed ^ t.wrapping_mul(0x2545_F491_4F6C_DD1D));
                    let kind = KINDS[(t % KINDS.len() as u64) as usize];
                    let candidates = &by_kind[&kind];
                    let rel = candidates[rng.below(candidates.len() as u64) as usize];
                    let dir = scratch.join(format!("trial-{t}"));
                    copy_dir(fixture, &dir);
                    let path = dir.join(rel);
                    let mut bytes = std::fs::read(&path).expect("read");
                    let last_record_at = last_time_index_record(&bytes);
                    let bit = rng.below(bytes.len() as u64 * 8) as usize;
                    bytes[bit / 8] ^= 1 << (bit % 8);
                    std::fs::write(&path, &bytes).expect("write");
                    let flip = Flip {
                        rel,
                        kind,
                        byte: bit / 8,
                        len: bytes.len(),
                        last_record_at,
                    };
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        rt.block_on(async {
                            tokio::time::timeout(
                                Duration::from_secs(30),
                                judge(&dir, &flip, reference, last_wal),
                            )
                            .await
                            .unwrap_or((Verdict::Wrong, "hung".to_string()))
                        })
                    }));
                    let (verdict, note) = run.unwrap_or((Verdict::Wrong, "panicked".to_string()));
                    std::fs::remove_dir_all(&dir).expect("cleanup");
                    let mut tab = table.lock().expect("table");
                    let row = tab.entry(kind).or_default();
                    row.flipped += 1;
                    match verdict {
                        Verdict::DetectedAtOpen => row.at_open += 1,
                        Verdict::DetectedOnRead => row.on_read += 1,
                        Verdict::TornTail => row.torn_tail += 1,
                        Verdict::Harmless => row.harmless += 1,
                        Verdict::Wrong => {
                            row.wrong += 1;
                            wrongs.lock().expect("wrongs").push(format!(
                                "trial {t}: bit {bit} (byte {} of {}) of {}: {note}",
                                bit / 8,
                                flip.len,
                                rel.display()
                            ));
                        }
                    }
                }
            });
        }
    });
    let mut table = table.into_inner().expect("table");
    for (k, v) in &by_kind {
        table.entry(*k).or_default().files = v.len() as u64;
    }
    let mut total = Row::default();
    println!(
        "bit flips: {trials} trials, seed {seed:#x}, {:.1} s\n\
         | file kind  | files | flipped | detected at open | detected on read | torn tail | harmless | wrong |\n\
         |------------|-------|---------|------------------|------------------|-----------|----------|-------|",
        started.elapsed().as_secs_f64()
    );
    let line = |name: &str, r: &Row| {
        println!(
            "| {name:<10} | {:>5} | {:>7} | {:>16} | {:>16} | {:>9} | {:>8} | {:>5} |",
            r.files, r.flipped, r.at_open, r.on_read, r.torn_tail, r.harmless, r.wrong
        )
    };
    for (k, r) in &table {
        line(&format!("{k:?}"), r);
        total.files += r.files;
        total.flipped += r.flipped;
        total.at_open += r.at_open;
        total.on_read += r.on_read;
        total.torn_tail += r.torn_tail;
        total.harmless += r.harmless;
        total.wrong += r.wrong;
    }
    line("total", &total);
    let wrongs = wrongs.into_inner().expect("wrongs");
    assert!(
        wrongs.is_empty(),
        "{} flips led to wrong data or the wrong error:\n{}",
        wrongs.len(),
        wrongs[..wrongs.len().min(20)].join("\n")
    );
    assert_eq!(total.flipped, trials);
}

// ---------------------------------------------------------------------------------------------
// Targeted damage: bits spread over every layer file, every byte of a manifest and of the
// catalog, and layer files cut short or missing
// ---------------------------------------------------------------------------------------------

/// Flips bit `bit` of byte `at` of the file at `path`.
fn flip_bit(path: &Path, at: usize, bit: u8) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 1 << bit;
    std::fs::write(path, b).unwrap();
}

/// 120 keys over three layer files: a delta layer, an image layer on top of it, and a delta
/// layer above the image. Returns the expected values at the image LSN and at the end.
async fn three_layers(
    dir: &Path,
) -> (
    Vec<Vec<u8>>,
    BTreeMap<Vec<u8>, Vec<u8>>,
    BTreeMap<Vec<u8>, Vec<u8>>,
) {
    let store = Store::open(opts(dir).block_size(512).zstd_level(None))
        .await
        .unwrap();
    let tl = store.create_timeline("main").await.unwrap();
    let mut w = tl.writer().unwrap();
    let keys: Vec<Vec<u8>> = (0..120)
        .map(|i| format!("key/{i:03}").into_bytes())
        .collect();
    let mut at_image = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let v = format!("value {i} {}", "x".repeat(i % 50)).into_bytes();
        w.put(k, Lsn(0x10 + i as u64), Value::image(v.clone()))
            .unwrap();
        at_image.insert(k.clone(), v);
    }
    w.finish_write(Lsn(0x100)).unwrap();
    assert_eq!(tl.create_image_layer().await.unwrap(), Lsn(0x100));
    let mut at_end = at_image.clone();
    for k in keys.iter().step_by(2) {
        w.put(k, Lsn(0x200), Value::delta(SimpleRedo::append(b" more")))
            .unwrap();
        at_end.get_mut(k).unwrap().extend_from_slice(b" more");
    }
    for k in keys.iter().step_by(4) {
        w.put(k, Lsn(0x201), Value::Tombstone).unwrap();
        at_end.remove(k);
    }
    w.finish_write(Lsn(0x201)).unwrap();
    drop(w);
    store.close().await.unwrap();
    (keys, at_image, at_end)
}

/// Reads every key and `scan(..)` at `lsn`: `Ok` answers must be right, errors must be
/// `Corruption` naming `file`. Returns how many gets failed and whether the scan did.
async fn read_all_checked(
    tl: &Timeline,
    keys: &[Vec<u8>],
    want: &BTreeMap<Vec<u8>, Vec<u8>>,
    lsn: Lsn,
    file: &str,
) -> (usize, bool) {
    let mut failed_gets = 0;
    for k in keys {
        match tl.get(k, lsn).await {
            Ok(v) => assert_eq!(
                v.map(|b| b.to_vec()),
                want.get(k).cloned(),
                "wrong data for {k:?} at {lsn}"
            ),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
                assert!(e.to_string().contains(file), "{e} does not name {file}");
                failed_gets += 1;
            }
        }
    }
    let scan_failed = match tl.scan::<&[u8]>(.., lsn).await {
        Ok(all) => {
            let got: BTreeMap<Vec<u8>, Vec<u8>> = all
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            assert_eq!(&got, want, "wrong scan at {lsn}");
            false
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
            assert!(e.to_string().contains(file), "{e} does not name {file}");
            true
        }
    };
    (failed_gets, scan_failed)
}

#[test]
fn a_flipped_bit_anywhere_in_a_layer_file_fails_the_open_or_the_reads_that_touch_it_with_corruption()
 {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (keys, at_image, at_end) = three_layers(dir.path()).await;
        let store = Store::open(opts(dir.path())).await.unwrap();
        let tl_dir = timeline_dir(dir.path(), &store.timeline("main").unwrap());
        let layers = store.timeline("main").unwrap().layers();
        assert_eq!(layers.len(), 3, "{layers:?}");
        drop(store);

        for layer in &layers {
            let path = tl_dir.join(&layer.file_name);
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            assert!(len > 1024, "{} is only {len} bytes", layer.file_name);
            // The LSN at which gets are answered from this layer.
            let serves = if layer.kind == LayerKind::Image {
                Lsn(0x100)
            } else if layer.lsn_range.start < Lsn(0x100) {
                Lsn(0x90)
            } else {
                Lsn(0x201)
            };
            let mut positions: Vec<usize> = (0..len).step_by(len / 24).collect();
            positions.extend([
                len / 2,
                len - 1,
                len - 8,
                len - 12,
                len - 16,
                len - 20,
                len - 30,
            ]);
            for (n, at) in positions.into_iter().enumerate() {
                let bit = (n % 8) as u8;
                flip_bit(&path, at, bit);
                let what = format!("{} byte {at} of {len}, bit {bit}", layer.file_name);
                match Store::open(opts(dir.path())).await {
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Corruption, "{what}: {e}");
                        assert!(e.to_string().contains(&layer.file_name), "{what}: {e}");
                    }
                    Ok(store) => {
                        let tl = store.timeline("main").unwrap();
                        let f = &layer.file_name;
                        let (gets_low, scan_low) =
                            read_all_checked(&tl, &keys, &at_image, Lsn(0x90), f).await;
                        let (gets_image, scan_image) =
                            read_all_checked(&tl, &keys, &at_image, Lsn(0x100), f).await;
                        let (gets_top, scan_top) =
                            read_all_checked(&tl, &keys, &at_end, Lsn(0x201), f).await;
                        // A scan reads every block of every layer at or below its LSN: the
                        // flip never goes unnoticed.
                        assert!(scan_top, "{what}: a flipped bit went unnoticed");
                        if layer.lsn_range.start <= Lsn(0x90) {
                            assert!(
                                scan_low && scan_image,
                                "{what}: a flipped bit went unnoticed"
                            );
                        }
                        if at == len / 2 {
                            // One damaged block fails the gets that read it, and only those.
                            let failed = match serves.0 {
                                0x90 => gets_low,
                                0x100 => gets_image,
                                _ => gets_top,
                            };
                            assert!(
                                failed >= 1 && failed < keys.len(),
                                "{what}: {failed} gets failed at {serves}"
                            );
                        }
                        drop(tl);
                        drop(store);
                    }
                }
                flip_bit(&path, at, bit);
            }
        }
        // Restored, everything reads again.
        let store = Store::open(opts(dir.path())).await.unwrap();
        let tl = store.timeline("main").unwrap();
        assert_eq!(
            read_all_checked(&tl, &keys, &at_image, Lsn(0x90), "-").await,
            (0, false)
        );
        assert_eq!(
            read_all_checked(&tl, &keys, &at_image, Lsn(0x100), "-").await,
            (0, false)
        );
        assert_eq!(
            read_all_checked(&tl, &keys, &at_end, Lsn(0x201), "-").await,
            (0, false)
        );
    });
}

#[test]
fn a_layer_file_missing_or_truncated_fails_open_with_corruption_naming_it() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, _) = three_layers(dir.path()).await;
        let store = Store::open(opts(dir.path())).await.unwrap();
        let tl = store.timeline("main").unwrap();
        let tl_dir = timeline_dir(dir.path(), &tl);
        let layer = tl.layers()[1].file_name.clone();
        drop(tl);
        store.close().await.unwrap();
        let path = tl_dir.join(&layer);
        let original = std::fs::read(&path).unwrap();

        std::fs::write(&path, &original[..original.len() - 1]).unwrap();
        assert_err(
            Store::open(opts(dir.path())).await,
            ErrorKind::Corruption,
            &[&layer],
        );
        std::fs::write(&path, &original[..100]).unwrap();
        assert_err(
            Store::open(opts(dir.path())).await,
            ErrorKind::Corruption,
            &[&layer],
        );
        std::fs::write(&path, b"").unwrap();
        assert_err(
            Store::open(opts(dir.path())).await,
            ErrorKind::Corruption,
            &[&layer],
        );
        std::fs::remove_file(&path).unwrap();
        assert_err(
            Store::open(opts(dir.path())).await,
            ErrorKind::Corruption,
            &[&layer],
        );
        let others = tree(&tl_dir);

        std::fs::write(&path, &original).unwrap();
        assert_eq!(
            others.len() + 1,
            tree(&tl_dir).len(),
            "the failed opens removed nothing"
        );
        let store = Store::open(opts(dir.path())).await.unwrap();
        assert_eq!(store.timeline("main").unwrap().layers().len(), 3);
    });
}

#[test]
fn a_manifest_with_a_flipped_bit_fails_open_with_corruption_naming_it_and_damages_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (store, tl, w) = seeded(opts(dir.path())).await;
        let other = store.create_timeline("other").await.unwrap();
        let mut ow = other.writer().unwrap();
        ow.put(b"o", Lsn(5), Value::image("o5")).unwrap();
        ow.finish_write(Lsn(5)).unwrap();
        let before = observe(&tl, &SEEDED_KEYS).await;
        let manifest = timeline_dir(dir.path(), &tl).join("manifest");
        drop((tl, w, other, ow));
        store.close().await.unwrap();
        let files = tree(dir.path());
        let len = std::fs::metadata(&manifest).unwrap().len() as usize;

        for at in 0..len {
            let bit = (at % 8) as u8;
            flip_bit(&manifest, at, bit);
            let e = assert_err(
                Store::open(opts(dir.path())).await,
                ErrorKind::Corruption,
                &[&manifest.display().to_string()],
            );
            flip_bit(&manifest, at, bit);
            // The log is opened before the manifests are read: a failed open may leave a new,
            // empty WAL segment behind (the next open recycles it). Nothing else may change.
            let new_segment = format!("added {}", dir.path().join("wal").display());
            let changed: Vec<String> = changes(&files, &tree(dir.path()))
                .into_iter()
                .filter(|c| !c.starts_with(&new_segment))
                .collect();
            assert!(
                changed.is_empty(),
                "byte {at}: the failed open changed files: {changed:?} ({e})"
            );
        }

        let store = Store::open(opts(dir.path())).await.unwrap();
        assert!(
            store.wal_segments() <= 2,
            "{} WAL segments",
            store.wal_segments()
        );
        assert_eq!(
            observe(&store.timeline("main").unwrap(), &SEEDED_KEYS).await,
            before
        );
        assert_eq!(
            store
                .timeline("other")
                .unwrap()
                .get(b"o", Lsn(5))
                .await
                .unwrap()
                .unwrap(),
            "o5"
        );
    });
}

#[test]
fn a_catalog_with_a_flipped_bit_fails_open_with_corruption_and_damages_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (store, tl, w) = seeded(opts(dir.path())).await;
        store.create_timeline("other").await.unwrap();
        let before = observe(&tl, &SEEDED_KEYS).await;
        drop((tl, w));
        store.close().await.unwrap();
        let catalog = dir.path().join("CATALOG");
        let files = tree(dir.path());
        let len = std::fs::metadata(&catalog).unwrap().len() as usize;

        for at in 0..len {
            let bit = (at % 8) as u8;
            flip_bit(&catalog, at, bit);
            assert_err(
                Store::open(opts(dir.path())).await,
                ErrorKind::Corruption,
                &["CATALOG"],
            );
            flip_bit(&catalog, at, bit);
            let changed = changes(&files, &tree(dir.path()));
            assert!(
                changed.is_empty(),
                "byte {at}: the failed open changed files: {changed:?}"
            );
        }

        let store = Store::open(opts(dir.path())).await.unwrap();
        assert_eq!(store.timelines().len(), 2);
        assert_eq!(
            observe(&store.timeline("main").unwrap(), &SEEDED_KEYS).await,
            before
        );
    });
}
