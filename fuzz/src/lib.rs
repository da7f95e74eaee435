//! Fuzz targets for StrataKV: one per on-disk decoder, and `ops`, which drives a store.
//!
//! Each target is a plain function of the input bytes, so that it runs under libFuzzer
//! (`fuzz_targets/*.rs`, `cargo fuzz run <target>` on nightly) and under the stable driver
//! (`src/bin/drive.rs`) alike. A target panics on a finding: a decoder that panics, an error of
//! a kind other than corruption or one that does not name the file, a value that does not
//! survive re-encoding, a store read that disagrees with the model. It returns whether the
//! input decoded (the driver keeps such inputs to mutate further).
//!
//! Checksums would stop almost every mutated input at the first check, so the decoders of
//! checksummed formats take a mode byte first: even, the rest is the file as is; odd, the rest
//! is the content the checksums cover, and the target frames it with correct checksums, so the
//! fuzzer reaches the parsing behind them. See the README.

use std::path::Path;

use bytes::Bytes;
use stratakv::internals::{
    Catalog, CatalogEntry, Compression, DataBlock, DataBlockBuilder, FOOTER_TRAILER_LEN, Footer,
    IndexEntry, KeyFilter, Manifest, RemoteIndex, TIME_INDEX_HEADER_LEN, WAL_HEADER_LEN, WalRecord,
    decode_block, decode_index, decode_time_index, decode_wal_segment, encode_block,
    encode_entries, encode_header, encode_index, encode_wal_header, encode_wal_record, key_hash,
};
use stratakv::{ErrorKind, KeyRange, LayerDesc, LayerKind, Lsn, TimelineId, Value};

mod diff;
mod ops;
pub use diff::diff;
pub use ops::ops;

/// A target: input bytes in, whether they decoded out; panics on a finding.
pub type Target = fn(&[u8]) -> bool;

/// Every target, by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("data_block", data_block),
    ("block", block),
    ("index", index),
    ("footer", footer),
    ("filter", filter),
    ("manifest", manifest),
    ("catalog", catalog),
    ("remote_index", remote_index),
    ("wal_segment", wal_segment),
    ("time_index", time_index),
    ("ops", ops),
    ("diff", diff),
];

/// The path decoders are told the bytes came from; every error must name it.
const PATH: &str = "fuzz/input.bin";

fn path() -> &'static Path {
    Path::new(PATH)
}

/// A decode error must be corruption naming the file.
fn corruption(e: &stratakv::Error) {
    assert_eq!(
        e.kind(),
        ErrorKind::Corruption,
        "decode error of the wrong kind: {e}"
    );
    assert!(
        e.to_string().contains(PATH),
        "corruption error not naming the file: {e}"
    );
}

fn mode(data: &[u8]) -> Option<(bool, &[u8])> {
    data.split_first().map(|(m, rest)| (m & 1 == 1, rest))
}

/// The envelope of the manifest and catalog: magic, version 1, body length, body, CRC32.
fn envelope(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    envelope_of_version(magic, 1, body)
}

/// [`envelope`] of another version.
fn envelope_of_version(magic: &[u8; 8], version: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// Remote index
// ---------------------------------------------------------------------------------------------

/// `RemoteIndex::decode`. Odd mode: the next byte's low bit picks the version (1 or 2), the
/// rest is the body; the envelope is added. A decoded index's commits strictly increase in LSN
/// and time; version 2 re-encodes to the same bytes; version 1 re-encodes as version 2 and
/// decodes to the same index.
pub fn remote_index(data: &[u8]) -> bool {
    let Some((structured, rest)) = mode(data) else {
        return false;
    };
    let file = if structured {
        let Some((v, body)) = rest.split_first() else {
            return false;
        };
        envelope_of_version(b"STRKVRIX", 1 + u16::from(v & 1), body)
    } else {
        rest.to_vec()
    };
    match RemoteIndex::decode(&file, path()) {
        Ok(idx) => {
            assert!(
                idx.commit_times
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
                "commit times decoded out of order"
            );
            let again = idx.encode();
            if file[8..10] == 2u16.to_le_bytes() {
                assert_eq!(again, file, "remote index does not re-encode to its bytes");
            } else {
                let today = RemoteIndex::decode(&again, path()).expect("today's encoding decodes");
                assert_eq!(today, idx, "version 1 index changed through version 2");
            }
            true
        }
        Err(e) => {
            corruption(&e);
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Layer files: data blocks, block framing, index, footer
// ---------------------------------------------------------------------------------------------

/// `DataBlock::parse`, then every entry, and seeks. Where every entry decodes and they are in
/// `(key, lsn)` order, seeks must agree with a linear search and the entries must survive a
/// rebuild with `DataBlockBuilder`.
pub fn data_block(data: &[u8]) -> bool {
    let block = match DataBlock::parse(data, path(), 7) {
        Ok(b) => b,
        Err(e) => {
            corruption(&e);
            return false;
        }
    };
    assert!(
        block.len() * 4 + 4 <= data.len(),
        "entry count past the block"
    );
    let mut entries = Vec::with_capacity(block.len());
    let mut whole = true;
    for i in 0..block.len() {
        let kl = block.key_lsn(i);
        match block.entry(i) {
            Ok(e) => {
                let (k, l) = kl.expect("key_lsn fails where entry succeeds");
                assert_eq!((k, l), (e.key, e.lsn));
                entries.push((e.key.to_vec(), e.lsn, e.value));
            }
            Err(_) => whole = false,
        }
    }
    // Probes: every key in the block, its neighbours, and a few from the input.
    let mut probes: Vec<(Vec<u8>, Lsn)> = Vec::new();
    for (k, l, _) in &entries {
        probes.push((k.clone(), *l));
        probes.push((k.clone(), Lsn(l.0.saturating_sub(1))));
        probes.push((k.clone(), Lsn(l.0.saturating_add(1))));
        let mut longer = k.clone();
        longer.push(0);
        probes.push((longer, Lsn(0)));
    }
    for w in data.chunks(5).take(8) {
        probes.push((w.to_vec(), Lsn(u64::from(w[0]))));
    }
    probes.push((Vec::new(), Lsn::MAX));
    for (k, l) in &probes {
        let le = block.seek_le(k, *l);
        let ge = block.seek_key_ge(k);
        let sorted = entries
            .windows(2)
            .all(|w| (&w[0].0, w[0].1) < (&w[1].0, w[1].1));
        if whole && sorted {
            let want_le = entries
                .iter()
                .rposition(|(ek, el, _)| (&ek[..], *el) <= (&k[..], *l));
            assert_eq!(le.expect("seek_le on a whole block"), want_le, "seek_le");
            let want_ge = entries
                .iter()
                .position(|(ek, _, _)| ek[..] >= k[..])
                .unwrap_or(entries.len());
            assert_eq!(
                ge.expect("seek_key_ge on a whole block"),
                want_ge,
                "seek_key_ge"
            );
        }
    }
    if !whole {
        return false;
    }
    let mut b = DataBlockBuilder::default();
    for (k, l, v) in &entries {
        b.add(k, *l, v);
    }
    let expect_len = b.len();
    let mut out = Vec::new();
    b.finish_into(&mut out);
    assert_eq!(out.len(), expect_len);
    let again = DataBlock::parse(&out, path(), 0).expect("a rebuilt block parses");
    assert_eq!(again.len(), entries.len());
    for (i, (k, l, v)) in entries.iter().enumerate() {
        let e = again.entry(i).expect("a rebuilt entry decodes");
        assert_eq!((e.key, e.lsn, &e.value), (&k[..], *l, v));
    }
    !entries.is_empty()
}

/// `decode_block`. Odd mode: the input is `payload ‖ codec ‖ raw_len` and the CRC is added.
/// A decoded block re-encodes (raw and zstd) and decodes to the same bytes.
pub fn block(data: &[u8]) -> bool {
    let Some((structured, rest)) = mode(data) else {
        return false;
    };
    let mut framed = rest.to_vec();
    if structured {
        let crc = crc32fast::hash(&framed);
        framed.extend_from_slice(&crc.to_le_bytes());
    }
    match decode_block(&framed, path(), 42) {
        Ok(raw) => {
            let codec_at = framed.len() - 9;
            if framed[codec_at] == 0 {
                assert_eq!(&raw[..], &framed[..codec_at], "a raw block is its payload");
            }
            for c in [Compression::None, Compression::Zstd(1)] {
                let mut out = Vec::new();
                encode_block(&raw, c, &mut out);
                let again = decode_block(&out, path(), 0).expect("a re-encoded block decodes");
                assert_eq!(again, raw);
            }
            true
        }
        Err(e) => {
            corruption(&e);
            false
        }
    }
}

/// `decode_index`: a decoded index re-encodes to the same bytes.
pub fn index(data: &[u8]) -> bool {
    match decode_index(data, path(), 9) {
        Ok(entries) => {
            assert!(
                entries
                    .windows(2)
                    .all(|w| (&w[0].first_key, w[0].first_lsn) <= (&w[1].first_key, w[1].first_lsn)),
                "index entries out of order"
            );
            assert_eq!(
                encode_index(&entries),
                data,
                "index does not re-encode to its bytes"
            );
            !entries.is_empty()
        }
        Err(e) => {
            corruption(&e);
            false
        }
    }
}

const LAYER_MAGIC: &[u8; 8] = b"STRKVLYR";

/// `Footer::decode`. Odd mode: the input is a filler length (× 3) and the footer body; the
/// trailer (length, CRC, magic) is added. A decoded footer re-encodes and decodes the same.
pub fn footer(data: &[u8]) -> bool {
    let Some((structured, rest)) = mode(data) else {
        return false;
    };
    let file = if structured {
        let Some((&filler, body)) = rest.split_first() else {
            return false;
        };
        let mut f = vec![0u8; usize::from(filler) * 3];
        f.extend_from_slice(body);
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        f.extend_from_slice(LAYER_MAGIC);
        f
    } else {
        rest.to_vec()
    };
    match Footer::decode(&file, path()) {
        Ok(f) => {
            assert!(f.lsn_range.start < f.lsn_range.end);
            let t = file.len() - FOOTER_TRAILER_LEN;
            let body_len = u32::from_le_bytes(file[t..t + 4].try_into().expect("4")) as usize;
            let start = t - body_len;
            assert!(f.index_offset + u64::from(f.index_len) <= start as u64);
            let mut out = file[..start].to_vec();
            f.encode_into(&mut out);
            assert_eq!(out.len(), file.len(), "footer re-encodes to another length");
            let again = Footer::decode(&out, path()).expect("a re-encoded footer decodes");
            assert_eq!(again, f);
            true
        }
        Err(e) => {
            corruption(&e);
            false
        }
    }
}

/// `KeyFilter::decode`: a decoded filter re-encodes to the same bytes and answers without
/// panicking for any key.
pub fn filter(data: &[u8]) -> bool {
    match KeyFilter::decode(data, path(), 9) {
        Ok(f) => {
            let mut out = Vec::new();
            f.encode_into(&mut out);
            assert_eq!(out, data, "key filter does not re-encode to its bytes");
            for k in data.chunks(7).take(64) {
                let _ = f.may_contain(k);
            }
            true
        }
        Err(e) => {
            corruption(&e);
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Manifest and catalog
// ---------------------------------------------------------------------------------------------

/// `Manifest::decode`. Odd mode: the input is the body; the envelope is added. A decoded
/// manifest re-encodes to the same bytes.
pub fn manifest(data: &[u8]) -> bool {
    let Some((structured, rest)) = mode(data) else {
        return false;
    };
    let file = if structured {
        envelope(b"STRKVMAN", rest)
    } else {
        rest.to_vec()
    };
    match Manifest::decode(&file, path()) {
        Ok(m) => {
            assert_eq!(m.encode(), file, "manifest does not re-encode to its bytes");
            true
        }
        Err(e) => {
            corruption(&e);
            false
        }
    }
}

/// `Catalog::decode`, as [`manifest`].
pub fn catalog(data: &[u8]) -> bool {
    let Some((structured, rest)) = mode(data) else {
        return false;
    };
    let file = if structured {
        envelope(b"STRKVCAT", rest)
    } else {
        rest.to_vec()
    };
    match Catalog::decode(&file, path()) {
        Ok(c) => {
            assert_eq!(c.encode(), file, "catalog does not re-encode to its bytes");
            true
        }
        Err(e) => {
            corruption(&e);
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WAL segments and time indexes
// ---------------------------------------------------------------------------------------------

/// Builds a WAL segment from a structured input: 8 bytes of sequence number, then records as
/// a length byte and that many body bytes, each given its real length and CRC; a length byte
/// of 255 appends the rest of the input raw (a torn or damaged tail).
fn wal_from_structured(rest: &[u8]) -> Vec<u8> {
    let (seq, mut rest) = rest.split_at(rest.len().min(8));
    let mut seq8 = [0u8; 8];
    seq8[..seq.len()].copy_from_slice(seq);
    let mut f = encode_wal_header(u64::from_le_bytes(seq8));
    while let Some((&n, r)) = rest.split_first() {
        if n == 255 {
            f.extend_from_slice(r);
            break;
        }
        let (body, r) = r.split_at(r.len().min(usize::from(n)));
        let len = (body.len() as u32).to_le_bytes();
        let mut h = crc32fast::Hasher::new();
        h.update(&len);
        h.update(body);
        f.extend_from_slice(&len);
        f.extend_from_slice(&h.finalize().to_le_bytes());
        f.extend_from_slice(body);
        rest = r;
    }
    f
}

/// `decode_wal_segment`. The records decoded re-encode to exactly the bytes up to
/// `valid_len`, which decode again without a torn tail; past it, without a torn tail, only
/// zeros.
pub fn wal_segment(data: &[u8]) -> bool {
    let Some((structured, rest)) = mode(data) else {
        return false;
    };
    let file = if structured {
        wal_from_structured(rest)
    } else {
        rest.to_vec()
    };
    match decode_wal_segment(&file, path()) {
        Ok(d) => {
            assert!(d.valid_len <= file.len());
            if !d.torn_tail {
                // Only zeros may be left: allocated ahead of the writes, the segment's end.
                assert!(
                    file[d.valid_len..].iter().all(|b| *b == 0),
                    "no torn tail, yet bytes other than zeros left over"
                );
            }
            if file.len() < WAL_HEADER_LEN {
                assert!(d.records.is_empty() && d.torn_tail);
                return false;
            }
            let mut out = encode_wal_header(d.seq);
            for r in &d.records {
                encode_wal_record(&mut out, r);
            }
            assert_eq!(
                out,
                &file[..d.valid_len],
                "records do not re-encode to the bytes they came from"
            );
            let again = decode_wal_segment(&out, path()).expect("the valid prefix decodes");
            assert!(!again.torn_tail);
            assert_eq!(again.records, d.records);
            !d.records.is_empty()
        }
        Err(e) => {
            corruption(&e);
            false
        }
    }
}

/// Builds a time index from a structured input: 16-byte `(lsn, time)` chunks, up to four to a
/// record (both checksums right); a last partial chunk is appended raw (a torn append).
fn time_index_from_structured(rest: &[u8]) -> Vec<u8> {
    let mut f = encode_header();
    let whole = rest.len() / 16 * 16;
    let entries: Vec<(Lsn, u64)> = rest[..whole]
        .chunks(16)
        .map(|c| {
            let word = |at: usize| u64::from_le_bytes(c[at..at + 8].try_into().unwrap());
            (Lsn(word(0)), word(8))
        })
        .collect();
    for record in entries.chunks(4) {
        // Not through `encode_entries`: its LSNs must increase, these may not.
        let mut body = Vec::new();
        put_uvarint(&mut body, record.len() as u64);
        let (mut lsn, mut time) = (0u64, 0u64);
        for (i, &(l, t)) in record.iter().enumerate() {
            if i == 0 {
                put_uvarint(&mut body, t);
            } else {
                put_uvarint(&mut body, l.0.wrapping_sub(lsn));
                let d = t.wrapping_sub(time) as i64;
                put_uvarint(&mut body, ((d << 1) ^ (d >> 63)) as u64);
            }
            (lsn, time) = (l.0, t);
        }
        let mut head = (body.len() as u32).to_le_bytes().to_vec();
        head.extend_from_slice(&record[0].0.0.to_le_bytes());
        f.extend_from_slice(&head);
        f.extend_from_slice(&crc32fast::hash(&head).to_le_bytes());
        f.extend_from_slice(&body);
        f.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    }
    f.extend_from_slice(&rest[whole..]);
    f
}

/// LEB128, as the time index writes it.
fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `decode_time_index`: entries strictly increasing in LSN and time; they re-encode and decode
/// the same; the bytes up to `valid_len` decode without a torn tail.
pub fn time_index(data: &[u8]) -> bool {
    let Some((structured, rest)) = mode(data) else {
        return false;
    };
    let file = if structured {
        time_index_from_structured(rest)
    } else {
        rest.to_vec()
    };
    match decode_time_index(&file, path()) {
        Ok(d) => {
            assert!(d.valid_len >= TIME_INDEX_HEADER_LEN && d.valid_len <= file.len());
            assert_eq!(d.torn_tail, d.valid_len != file.len());
            assert!(
                d.entries
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
                "time index entries not strictly increasing"
            );
            let mut out = encode_header();
            encode_entries(&d.entries, &mut out);
            let again = decode_time_index(&out, path()).expect("re-encoded entries decode");
            assert!(!again.torn_tail);
            assert_eq!(again.entries, d.entries);
            let prefix =
                decode_time_index(&file[..d.valid_len], path()).expect("the valid prefix decodes");
            assert!(!prefix.torn_tail);
            assert_eq!(prefix.entries, d.entries);
            !d.entries.is_empty()
        }
        Err(e) => {
            corruption(&e);
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------

fn sample_values() -> Vec<Value> {
    vec![
        Value::image("hello"),
        Value::delta(&b"\x02 world"[..]),
        Value::init_delta(&b"\x01set"[..]),
        Value::Tombstone,
        Value::image(vec![b'z'; 300]),
    ]
}

fn sample_block() -> Vec<u8> {
    let mut b = DataBlockBuilder::default();
    let vals = sample_values();
    for (i, k) in [&b"a"[..], b"a", b"ab", b"b\x00", b"k07", b"\xff"]
        .iter()
        .enumerate()
    {
        b.add(
            k,
            Lsn(10 + i as u64 * (i as u64 % 2)),
            &vals[i % vals.len()],
        );
    }
    let mut out = Vec::new();
    b.finish_into(&mut out);
    out
}

fn sample_manifest() -> Manifest {
    Manifest {
        timeline_id: TimelineId::from(0x0123_4567_89AB_CDEF_0011_2233_4455_6677),
        ancestor: Some((TimelineId::from(42), Lsn(0x100))),
        disk_consistent_lsn: Lsn(0x180),
        gc_cutoff: Lsn(0x120),
        next_layer_seq: 7,
        layers: vec![
            LayerDesc {
                file_name: "0000000000000001-d-0000000000000101-0000000000000181.layer".to_string(),
                kind: LayerKind::Delta,
                level: 1,
                lsn_range: Lsn(0x101)..Lsn(0x181),
                key_range: KeyRange {
                    start: Bytes::from_static(b"a"),
                    end: Some(Bytes::from_static(b"m")),
                },
                file_size: 4096,
            },
            LayerDesc {
                file_name: "0000000000000002-i-0000000000000180-0000000000000181.layer".to_string(),
                kind: LayerKind::Image,
                level: 0,
                lsn_range: Lsn(0x180)..Lsn(0x181),
                key_range: KeyRange::ALL,
                file_size: 8192,
            },
        ],
    }
}

/// Valid inputs for `target`, in its input format: where fuzzing starts from.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let with_mode = |m: u8, b: &[u8]| {
        let mut v = vec![m];
        v.extend_from_slice(b);
        v
    };
    match target {
        "data_block" => {
            let mut empty = Vec::new();
            DataBlockBuilder::default().finish_into(&mut empty);
            vec![sample_block(), empty]
        }
        "block" => {
            let raw = sample_block();
            let mut out = Vec::new();
            for c in [Compression::None, Compression::Zstd(3)] {
                let mut f = Vec::new();
                encode_block(&raw, c, &mut f);
                out.push(with_mode(0, &f));
                out.push(with_mode(1, &f[..f.len() - 4]));
            }
            out
        }
        "index" => {
            let e = |k: &'static [u8], l: u64, o: u64| IndexEntry {
                first_key: Bytes::from_static(k),
                first_lsn: Lsn(l),
                offset: o,
                len: 100,
            };
            vec![
                encode_index(&[e(b"a", 1, 0), e(b"a", 9, 100), e(b"q", 2, 200)]),
                encode_index(&[]),
            ]
        }
        "filter" => {
            let keys: Vec<u64> = (0u32..100).map(|i| key_hash(&i.to_be_bytes())).collect();
            let mut raw = Vec::new();
            KeyFilter::build(&keys).encode_into(&mut raw);
            let mut empty = Vec::new();
            KeyFilter::build(&[]).encode_into(&mut empty);
            vec![raw, empty]
        }
        "footer" => {
            let f = Footer {
                kind: LayerKind::Delta,
                lsn_range: Lsn(0x10)..Lsn(0x20),
                key_range: KeyRange {
                    start: Bytes::from_static(b"a"),
                    end: Some(Bytes::from_static(b"z")),
                },
                index_offset: 40,
                index_len: 20,
                filter_offset: 10,
                filter_len: 30,
                entry_count: 12,
            };
            let mut file = vec![0u8; 60];
            f.encode_into(&mut file);
            let body = &file[60..file.len() - FOOTER_TRAILER_LEN];
            let mut structured = vec![1, 20];
            structured.extend_from_slice(body);
            vec![with_mode(0, &file), structured]
        }
        "manifest" => {
            let mut plain = sample_manifest();
            plain.ancestor = None;
            plain.layers.clear();
            let mut out = Vec::new();
            for m in [sample_manifest(), plain] {
                let f = m.encode();
                out.push(with_mode(0, &f));
                out.push(with_mode(1, &f[14..f.len() - 4]));
            }
            out
        }
        "catalog" => {
            let c = Catalog {
                timelines: vec![
                    CatalogEntry {
                        name: "main".to_string(),
                        id: TimelineId::from(1),
                    },
                    CatalogEntry {
                        name: "dév@restore-1".to_string(),
                        id: TimelineId::from(u128::MAX),
                    },
                ],
            };
            let f = c.encode();
            vec![with_mode(0, &f), with_mode(1, &f[14..f.len() - 4])]
        }
        "remote_index" => {
            let manifest = sample_manifest();
            let idx = RemoteIndex {
                layer_generations: manifest
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (l.file_name.clone(), i as u32 + 1))
                    .collect(),
                hot_layers: manifest
                    .layers
                    .iter()
                    .map(|l| l.file_name.clone())
                    .collect(),
                manifest,
                commit_times: vec![
                    (Lsn(0x121), 1_700_000_000_000_000),
                    (Lsn(0x150), 1_700_000_000_000_250),
                    (Lsn(0x180), 1_700_000_000_000_251),
                ],
            };
            let f = idx.encode();
            let mut structured = vec![1, 1];
            structured.extend_from_slice(&f[14..f.len() - 4]);
            vec![with_mode(0, &f), structured]
        }
        "wal_segment" => {
            let tl = TimelineId::from(7);
            let mut recs = Vec::new();
            for (i, v) in sample_values().into_iter().take(4).enumerate() {
                recs.push(WalRecord {
                    timeline: tl,
                    lsn: Lsn(20 + i as u64),
                    time_micros: 1_700_000_000_000_000 + i as u64,
                    puts: vec![(Bytes::from(format!("key{i}")), Lsn(20 + i as u64), v)],
                });
            }
            recs.push(WalRecord {
                timeline: tl,
                lsn: Lsn(30),
                time_micros: 1_700_000_000_000_100,
                puts: Vec::new(),
            });
            let mut file = encode_wal_header(3);
            let mut structured = vec![1];
            structured.extend_from_slice(&3u64.to_le_bytes());
            for r in &recs {
                let mut one = Vec::new();
                encode_wal_record(&mut one, r);
                file.extend_from_slice(&one);
                assert!(
                    one.len() - 8 < 255,
                    "a seed record too long for a length byte"
                );
                structured.push((one.len() - 8) as u8);
                structured.extend_from_slice(&one[8..]);
            }
            vec![with_mode(0, &file), structured]
        }
        "time_index" => {
            let entries = [(Lsn(10), 100u64), (Lsn(20), 200), (Lsn(35), 300)];
            let mut file = encode_header();
            encode_entries(&entries, &mut file);
            let mut structured = vec![1];
            for (l, t) in entries {
                structured.extend_from_slice(&l.0.to_le_bytes());
                structured.extend_from_slice(&t.to_le_bytes());
            }
            vec![with_mode(0, &file), structured]
        }
        "ops" => ops::seeds(),
        "diff" => diff::seeds(),
        _ => Vec::new(),
    }
}
