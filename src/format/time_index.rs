//! The per-timeline `lsn ↔ commit time` index file: an append-only log of checksummed records.
//!
//! Each flush appends the entries it made durable, so writing the index costs one small append
//! and one fsync; a crash in the middle of an append leaves a torn last record, which
//! [`decode_time_index`] reports as a [torn tail](DecodedTimeIndex::torn_tail) rather than as
//! corruption. Times are microseconds since the Unix epoch.
//!
//! | field        | size | meaning |
//! |--------------|------|---------|
//! | **header**   |      | written once, atomically, when the file is created |
//! | magic        | 8    | `STRKVTIX` |
//! | version      | 2    | u16 format version, currently 1 |
//! | **record**   |      | repeated to the end of the file |
//! | lsn          | 8    | u64 LSN of a commit |
//! | time_micros  | 8    | u64 commit time, microseconds since the Unix epoch |
//! | crc32        | 4    | CRC32 of `lsn ‖ time_micros` |
//!
//! Records are replayed in order. Each record's LSN must be above the previous record's
//! (otherwise the file is corrupt). A record whose time is not above the previous entry's time
//! *supersedes* that entry: the entry takes the record's LSN and keeps the larger time. This is
//! the rule the in-memory index applies when a commit shares the last entry's time slot (or the
//! clock went backwards), so an entry that was already appended can be moved forward by a later
//! append. The decoded entries are therefore strictly increasing in both LSN and time.

use std::path::Path;

use crate::error::{Error, Result};
use crate::lsn::Lsn;

const MAGIC: &[u8; 8] = b"STRKVTIX";
const VERSION: u16 = 1;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + MAGIC.len();
/// Size of the file header (magic and version) that precedes the records.
pub const TIME_INDEX_HEADER_LEN: usize = VERSION_AT + 2;

const LSN_AT: usize = 0;
const TIME_AT: usize = LSN_AT + 8;
const CRC_AT: usize = TIME_AT + 8;
/// Size of one record: LSN, time and CRC32.
pub const TIME_INDEX_RECORD_LEN: usize = CRC_AT + 4;

/// What [`decode_time_index`] found in an index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedTimeIndex {
    /// `(lsn, time_micros)` pairs, strictly increasing in both.
    pub entries: Vec<(Lsn, u64)>,
    /// Length of the file up to the end of the last good record: the length to truncate the
    /// file to when [`torn_tail`](DecodedTimeIndex::torn_tail) is set, the file's length otherwise.
    pub valid_len: usize,
    /// The last record was incomplete or failed its checksum: an append torn by a crash. The
    /// entries before it are kept; the torn record is not in
    /// [`entries`](DecodedTimeIndex::entries).
    pub torn_tail: bool,
}

/// The header that starts every index file.
pub fn encode_header() -> Vec<u8> {
    let mut out = Vec::with_capacity(TIME_INDEX_HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    debug_assert_eq!(out.len(), TIME_INDEX_HEADER_LEN);
    out
}

/// Appends one record per `(lsn, time_micros)` entry to `out`.
///
/// The LSNs must be strictly increasing, and above the LSN of the last record already in the
/// file the bytes are appended to; otherwise the file fails to decode.
pub fn encode_entries(entries: &[(Lsn, u64)], out: &mut Vec<u8>) {
    debug_assert!(
        entries.windows(2).all(|w| w[0].0 < w[1].0),
        "time index entries must have strictly increasing LSNs"
    );
    out.reserve(entries.len() * TIME_INDEX_RECORD_LEN);
    for &(lsn, time) in entries {
        let start = out.len();
        out.extend_from_slice(&lsn.0.to_le_bytes());
        out.extend_from_slice(&time.to_le_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
}

/// Decodes the index file `file`, read from `path`.
///
/// A last record that is incomplete or fails its checksum is a torn tail: decoding succeeds
/// with the entries before it and [`torn_tail`](DecodedTimeIndex::torn_tail) set.
///
/// # Errors
/// [`Corruption`](crate::ErrorKind::Corruption) naming `path` and the offset when the header is
/// short or wrong, when a record that is not the last one fails its checksum, or when a
/// record's LSN is not above the previous one's.
pub fn decode_time_index(file: &[u8], path: &Path) -> Result<DecodedTimeIndex> {
    if file.len() < TIME_INDEX_HEADER_LEN {
        return Err(Error::corruption(
            path,
            0,
            format!(
                "time index: {} bytes is too short for the header",
                file.len()
            ),
        ));
    }
    if &file[MAGIC_AT..VERSION_AT] != MAGIC {
        return Err(Error::corruption(
            path,
            MAGIC_AT as u64,
            format!(
                "time index: bad magic, expected {:?}",
                String::from_utf8_lossy(MAGIC)
            ),
        ));
    }
    let version = u16::from_le_bytes(
        file[VERSION_AT..TIME_INDEX_HEADER_LEN]
            .try_into()
            .expect("2 bytes"),
    );
    if version != VERSION {
        return Err(Error::corruption(
            path,
            VERSION_AT as u64,
            format!("time index: unknown format version {version}"),
        ));
    }

    let mut entries: Vec<(Lsn, u64)> =
        Vec::with_capacity((file.len() - TIME_INDEX_HEADER_LEN) / TIME_INDEX_RECORD_LEN);
    let mut at = TIME_INDEX_HEADER_LEN;
    while at < file.len() {
        let Some(rec) = file.get(at..at + TIME_INDEX_RECORD_LEN) else {
            // An incomplete record can only be the last one.
            return Ok(torn(entries, at));
        };
        let field = |from: usize| u64::from_le_bytes(rec[from..from + 8].try_into().expect("8"));
        let stored = u32::from_le_bytes(rec[CRC_AT..].try_into().expect("4 bytes"));
        let actual = crc32fast::hash(&rec[..CRC_AT]);
        if stored != actual {
            if at + TIME_INDEX_RECORD_LEN == file.len() {
                return Ok(torn(entries, at));
            }
            return Err(Error::corruption(
                path,
                (at + CRC_AT) as u64,
                format!(
                    "time index: record checksum mismatch (stored {stored:08x}, computed {actual:08x})"
                ),
            ));
        }
        let lsn = Lsn(field(LSN_AT));
        let time = field(TIME_AT);
        match entries.last_mut() {
            Some(last) if lsn <= last.0 => {
                return Err(Error::corruption(
                    path,
                    (at + LSN_AT) as u64,
                    format!(
                        "time index: LSN {lsn} does not follow the previous record's LSN {}",
                        last.0
                    ),
                ));
            }
            // Same time slot, or the clock went backwards: the record supersedes the entry.
            Some(last) if time <= last.1 => last.0 = lsn,
            _ => entries.push((lsn, time)),
        }
        at += TIME_INDEX_RECORD_LEN;
    }
    Ok(DecodedTimeIndex {
        entries,
        valid_len: file.len(),
        torn_tail: false,
    })
}

fn torn(entries: Vec<(Lsn, u64)>, valid_len: usize) -> DecodedTimeIndex {
    DecodedTimeIndex {
        entries,
        valid_len,
        torn_tail: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    /// Entries strictly increasing in both LSN and time.
    fn entries() -> impl Strategy<Value = Vec<(Lsn, u64)>> {
        proptest::collection::vec((1u64..1000, 1u64..1_000_000), 0..20).prop_map(|steps| {
            let (mut lsn, mut time) = (0u64, 1_700_000_000_000_000u64);
            steps
                .into_iter()
                .map(|(dl, dt)| {
                    lsn += dl;
                    time += dt;
                    (Lsn(lsn), time)
                })
                .collect()
        })
    }

    fn file(entries: &[(Lsn, u64)]) -> Vec<u8> {
        let mut f = encode_header();
        encode_entries(entries, &mut f);
        f
    }

    #[test]
    fn time_index_table_decodes_a_hand_built_example() {
        let mut b = Vec::new();
        b.extend_from_slice(b"STRKVTIX"); // header: magic
        b.extend_from_slice(&1u16.to_le_bytes()); // header: version
        for (lsn, time) in [
            (10u64, 1_700_000_000_000_000u64),
            (20, 1_700_000_000_000_500),
        ] {
            let at = b.len();
            b.extend_from_slice(&lsn.to_le_bytes()); // record: lsn
            b.extend_from_slice(&time.to_le_bytes()); // record: time_micros
            let crc = crc32fast::hash(&b[at..]); // record: crc32 of lsn ‖ time_micros
            b.extend_from_slice(&crc.to_le_bytes());
        }
        assert_eq!((TIME_INDEX_HEADER_LEN, TIME_INDEX_RECORD_LEN), (10, 20));
        assert_eq!(b.len(), 10 + 2 * 20);

        let entries = vec![
            (Lsn(10), 1_700_000_000_000_000),
            (Lsn(20), 1_700_000_000_000_500),
        ];
        assert_eq!(
            decode_time_index(&b, Path::new("t")).unwrap(),
            DecodedTimeIndex {
                entries: entries.clone(),
                valid_len: 50,
                torn_tail: false,
            }
        );
        let mut encoded = encode_header();
        encode_entries(&entries, &mut encoded);
        assert_eq!(encoded, b);
    }

    #[test]
    fn empty_file_is_just_the_header() {
        let f = file(&[]);
        assert_eq!(f.len(), TIME_INDEX_HEADER_LEN);
        let d = decode_time_index(&f, Path::new("t")).unwrap();
        assert_eq!(
            d,
            DecodedTimeIndex {
                entries: vec![],
                valid_len: TIME_INDEX_HEADER_LEN,
                torn_tail: false
            }
        );
    }

    #[test]
    fn later_record_in_the_same_time_slot_supersedes() {
        let mut f = file(&[(Lsn(10), 100), (Lsn(20), 200)]);
        // Same slot as the last entry, then a clock that went backwards.
        encode_entries(&[(Lsn(25), 200)], &mut f);
        encode_entries(&[(Lsn(30), 150), (Lsn(40), 300)], &mut f);
        let d = decode_time_index(&f, Path::new("t")).unwrap();
        assert_eq!(
            d.entries,
            vec![(Lsn(10), 100), (Lsn(30), 200), (Lsn(40), 300)]
        );
        assert!(!d.torn_tail);
    }

    #[test]
    fn lsn_going_backwards_is_corruption_naming_the_offset() {
        let mut f = encode_header();
        for rec in [(Lsn(10), 100), (Lsn(10), 200), (Lsn(30), 300)] {
            encode_entries(&[rec], &mut f);
        }
        let err = decode_time_index(&f, Path::new("tl/time_index")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        let at = TIME_INDEX_HEADER_LEN + TIME_INDEX_RECORD_LEN;
        assert!(err.to_string().contains(&format!("offset {at}")), "{err}");
        assert!(err.to_string().contains("tl/time_index"), "{err}");
    }

    #[test]
    fn bad_checksum_before_the_last_record_is_corruption() {
        let mut f = file(&[(Lsn(1), 1), (Lsn(2), 2), (Lsn(3), 3)]);
        let crc_at = TIME_INDEX_HEADER_LEN + TIME_INDEX_RECORD_LEN + CRC_AT;
        f[crc_at] ^= 0x40;
        let err = decode_time_index(&f, Path::new("tl/time_index")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(
            err.to_string().contains(&format!("offset {crc_at}")),
            "{err}"
        );
    }

    #[test]
    fn bad_header_is_corruption() {
        let good = file(&[(Lsn(1), 1)]);
        let mut wrong_version = good.clone();
        wrong_version[VERSION_AT] = 2;
        for bad in [
            &good[..5],
            &b"STRKVMAN\x01\x00"[..],
            &wrong_version[..],
            &[][..],
        ] {
            let err = decode_time_index(bad, Path::new("t")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption);
        }
    }

    proptest! {
        #[test]
        fn round_trip(e in entries()) {
            let f = file(&e);
            let d = decode_time_index(&f, Path::new("t")).unwrap();
            prop_assert_eq!(d.valid_len, f.len());
            prop_assert!(!d.torn_tail);
            prop_assert_eq!(d.entries, e);
        }

        #[test]
        fn appends_decode_as_one_file(e in entries(), split in any::<usize>()) {
            let split = split % (e.len() + 1);
            let mut f = file(&e[..split]);
            encode_entries(&e[split..], &mut f);
            prop_assert_eq!(decode_time_index(&f, Path::new("t")).unwrap().entries, e);
        }

        #[test]
        fn truncation_is_a_torn_tail_keeping_the_prefix(e in entries(), cut in any::<usize>()) {
            let f = file(&e);
            let cut = TIME_INDEX_HEADER_LEN + cut % (f.len() - TIME_INDEX_HEADER_LEN + 1);
            let d = decode_time_index(&f[..cut], Path::new("t")).unwrap();
            let whole = (cut - TIME_INDEX_HEADER_LEN) / TIME_INDEX_RECORD_LEN;
            prop_assert_eq!(&d.entries[..], &e[..whole]);
            prop_assert_eq!(d.valid_len, TIME_INDEX_HEADER_LEN + whole * TIME_INDEX_RECORD_LEN);
            prop_assert_eq!(d.torn_tail, d.valid_len != cut);
        }

        /// A flipped bit is corruption, except in the last record, where it is a torn tail that
        /// drops exactly that record.
        #[test]
        fn every_bit_flip_is_detected(e in entries(), pick in any::<usize>()) {
            let mut f = file(&e);
            let bit = pick % (f.len() * 8);
            f[bit / 8] ^= 1 << (bit % 8);
            match decode_time_index(&f, Path::new("tl/time_index")) {
                Err(err) => {
                    prop_assert_eq!(err.kind(), ErrorKind::Corruption);
                    prop_assert!(err.to_string().contains("tl/time_index"));
                }
                Ok(d) => {
                    let last_at = f.len() - TIME_INDEX_RECORD_LEN;
                    prop_assert!(!e.is_empty() && bit / 8 >= last_at, "flip at bit {} missed", bit);
                    prop_assert!(d.torn_tail);
                    prop_assert_eq!(d.valid_len, last_at);
                    prop_assert_eq!(&d.entries[..], &e[..e.len() - 1]);
                }
            }
        }

        /// Well-checksummed records in any order either decode to ordered entries or are
        /// corruption.
        #[test]
        fn arbitrary_records_decode_ordered_or_fail(
            recs in proptest::collection::vec((0u64..50, 0u64..50), 0..20),
        ) {
            let mut f = encode_header();
            for &(l, t) in &recs {
                encode_entries(&[(Lsn(l), t)], &mut f);
            }
            match decode_time_index(&f, Path::new("t")) {
                Ok(d) => {
                    prop_assert!(recs.windows(2).all(|w| w[0].0 < w[1].0));
                    prop_assert!(!d.torn_tail);
                    prop_assert!(d.entries.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
                    prop_assert_eq!(d.entries.last().map(|e| e.0.0), recs.last().map(|r| r.0));
                }
                Err(err) => prop_assert_eq!(err.kind(), ErrorKind::Corruption),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_time_index(&bytes, Path::new("t"));
            let mut f = encode_header();
            f.extend_from_slice(&bytes);
            if let Ok(d) = decode_time_index(&f, Path::new("t")) {
                prop_assert!(d.valid_len <= f.len());
                prop_assert!(d.entries.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
            }
        }
    }
}
