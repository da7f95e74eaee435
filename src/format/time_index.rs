//! The per-timeline `lsn ↔ commit time` index file: an append-only log of checksummed records.
//!
//! Each flush appends the entries it made durable, so writing the index costs one small append
//! and one fsync; a crash in the middle of an append leaves a torn last record, which
//! [`decode_time_index`] reports as a [torn tail](DecodedTimeIndex::torn_tail) rather than as
//! corruption. Times are microseconds since the Unix epoch.
//!
//! # Version 2 (written today)
//!
//! An append is one record of up to 4,096 entries (more entries, more records), packed as
//! deltas: a commit a microsecond after the one before takes two bytes.
//!
//! | field        | size | meaning |
//! |--------------|------|---------|
//! | **header**   |      | written once, atomically, when the file is created |
//! | magic        | 8    | `STRKVTIX` |
//! | version      | 2    | u16 format version, 2 |
//! | **record**   |      | repeated to the end of the file |
//! | body_len     | 4    | u32 length of the body |
//! | first_lsn    | 8    | u64 LSN of the record's first entry |
//! | head_crc     | 4    | CRC32 of `body_len ‖ first_lsn` |
//! | body         | body_len | the entries, below |
//! | crc32        | 4    | CRC32 of the body |
//! | **body**     |      | LEB128 varints |
//! | count        | 1–10 | entries in the record, at least one |
//! | time         | 1–10 | the first entry's time |
//! | Δlsn, Δtime  | 2–20 | each further entry: its LSN less the one before (at least 1), and its time less the one before, zigzag-encoded (wrapping) |
//!
//! A torn append leaves the last record incomplete or failing a checksum. A record that is
//! incomplete or fails either checksum is a torn tail when no intact record follows it (its
//! length cannot be trusted, so the bytes after it are searched), and corruption otherwise.
//! A torn record whose head is intact names its first LSN
//! ([`torn_first_lsn`](DecodedTimeIndex::torn_first_lsn)): the store appends only entries it is
//! about to make durable, so a torn tail at or below what a manifest says is durable is damage,
//! not a crash.
//!
//! # Version 1 (read; a store rewrites it as version 2 when it opens it)
//!
//! After the same header (version 1), fixed records of 20 bytes: `lsn` u64, `time_micros` u64,
//! and the CRC32 of both; only the last record may be torn.
//!
//! # Entries
//!
//! Entries are replayed in order. Each entry's LSN must be above the previous one's (otherwise
//! the file is corrupt). An entry whose time is not above the previous entry's time
//! *supersedes* that entry: the entry takes the new LSN and keeps the larger time. This is the
//! rule the in-memory index applies when a commit shares the last entry's time slot (or the
//! clock went backwards), so an entry that was already appended can be moved forward by a later
//! append. The decoded entries are therefore strictly increasing in both LSN and time.

use std::path::Path;

use super::varint::{get_uvarint, put_uvarint, unzigzag, zigzag};
use crate::error::{Error, Result};
use crate::lsn::Lsn;

const MAGIC: &[u8; 8] = b"STRKVTIX";
/// The version written.
const VERSION: u16 = 2;
/// The version of fixed 20-byte records, still read.
const VERSION_FIXED: u16 = 1;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + MAGIC.len();
/// Size of the file header (magic and version) that precedes the records.
pub const TIME_INDEX_HEADER_LEN: usize = VERSION_AT + 2;

/// Bytes of a version 2 record besides its body: length, first LSN, head checksum, body
/// checksum.
pub const TIME_INDEX_RECORD_OVERHEAD: usize = HEAD_LEN + 4;
/// A version 2 record's head: body length, first LSN, and their checksum.
const HEAD_LEN: usize = 16;
/// Entries in one version 2 record at most.
const RECORD_ENTRIES: usize = 4096;

/// Size of one version 1 record: LSN, time and CRC32.
const FIXED_RECORD_LEN: usize = 20;

/// What [`decode_time_index`] found in an index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedTimeIndex {
    /// `(lsn, time_micros)` pairs, strictly increasing in both.
    pub entries: Vec<(Lsn, u64)>,
    /// Length of the file up to the end of the last good record: the length to truncate the
    /// file to when [`torn_tail`](DecodedTimeIndex::torn_tail) is set, the file's length otherwise.
    pub valid_len: usize,
    /// The last record was incomplete or failed its checksum: an append torn by a crash. The
    /// entries before it are kept; the torn record's are not in
    /// [`entries`](DecodedTimeIndex::entries).
    pub torn_tail: bool,
    /// The file's format version: 2, or 1 for a file to rewrite before appending to it.
    pub version: u16,
    /// The first LSN of the torn record, when its head is intact (version 2).
    pub torn_first_lsn: Option<Lsn>,
}

impl DecodedTimeIndex {
    /// Whether the file is of the version written today (appends to it may follow).
    pub fn is_current(&self) -> bool {
        self.version == VERSION
    }
}

/// The header that starts every index file.
pub fn encode_header() -> Vec<u8> {
    let mut out = Vec::with_capacity(TIME_INDEX_HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    debug_assert_eq!(out.len(), TIME_INDEX_HEADER_LEN);
    out
}

/// Appends `(lsn, time_micros)` entries to `out` as version 2 records (none for no entries).
///
/// The LSNs must be strictly increasing, and above the LSN of the last entry already in the
/// file the bytes are appended to; otherwise the file fails to decode.
pub fn encode_entries(entries: &[(Lsn, u64)], out: &mut Vec<u8>) {
    debug_assert!(
        entries.windows(2).all(|w| w[0].0 < w[1].0),
        "time index entries must have strictly increasing LSNs"
    );
    for record in entries.chunks(RECORD_ENTRIES) {
        let start = out.len();
        out.extend_from_slice(&[0; HEAD_LEN]);
        put_uvarint(out, record.len() as u64);
        let (mut lsn, mut time) = record[0];
        put_uvarint(out, time);
        for &(l, t) in &record[1..] {
            put_uvarint(out, l.0.wrapping_sub(lsn.0));
            put_uvarint(out, zigzag(t.wrapping_sub(time) as i64));
            (lsn, time) = (l, t);
        }
        let body_len =
            u32::try_from(out.len() - start - HEAD_LEN).expect("a record is under 4 GiB");
        out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
        out[start + 4..start + 12].copy_from_slice(&record[0].0.0.to_le_bytes());
        let head_crc = crc32fast::hash(&out[start..start + 12]);
        out[start + 12..start + HEAD_LEN].copy_from_slice(&head_crc.to_le_bytes());
        let crc = crc32fast::hash(&out[start + HEAD_LEN..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
}

/// Decodes the index file `file`, read from `path` (version 2 or 1).
///
/// A last record that is incomplete or fails its checksum is a torn tail: decoding succeeds
/// with the entries before it and [`torn_tail`](DecodedTimeIndex::torn_tail) set.
///
/// # Errors
/// [`Corruption`](crate::ErrorKind::Corruption) naming `path` and the offset when the header is
/// short or wrong, when a record that is not the last one fails its checksum, when a record's
/// body does not decode, or when an entry's LSN is not above the previous one's.
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
    let mut entries = Vec::new();
    let torn_at = match version {
        VERSION => decode_records(file, path, &mut entries)?,
        VERSION_FIXED => decode_fixed_records(file, path, &mut entries)?.map(|at| (at, None)),
        _ => {
            return Err(Error::corruption(
                path,
                VERSION_AT as u64,
                format!("time index: unknown format version {version}"),
            ));
        }
    };
    Ok(DecodedTimeIndex {
        entries,
        valid_len: torn_at.map_or(file.len(), |(at, _)| at),
        torn_tail: torn_at.is_some(),
        version,
        torn_first_lsn: torn_at.and_then(|(_, lsn)| lsn),
    })
}

/// Adds the entry at `offset` to `entries` by the rules of the module docs.
fn apply(
    entries: &mut Vec<(Lsn, u64)>,
    (lsn, time): (Lsn, u64),
    path: &Path,
    offset: usize,
) -> Result<()> {
    match entries.last_mut() {
        Some(last) if lsn <= last.0 => {
            return Err(Error::corruption(
                path,
                offset as u64,
                format!(
                    "time index: LSN {lsn} does not follow the previous entry's LSN {}",
                    last.0
                ),
            ));
        }
        // Same time slot, or the clock went backwards: the entry supersedes the last.
        Some(last) if time <= last.1 => last.0 = lsn,
        _ => entries.push((lsn, time)),
    }
    Ok(())
}

/// Version 2 records into `entries`; the offset of a torn tail, if any, and its first LSN if
/// its head is intact.
fn decode_records(
    file: &[u8],
    path: &Path,
    entries: &mut Vec<(Lsn, u64)>,
) -> Result<Option<(usize, Option<Lsn>)>> {
    let mut at = TIME_INDEX_HEADER_LEN;
    while at < file.len() {
        let Some(end) = intact_record_at(file, at) else {
            // Torn by a crash, unless an intact record follows (the length of a damaged record
            // cannot be trusted, so the bytes after it are searched).
            let head = record_head(file, at);
            if (at + 1..file.len()).any(|o| intact_record_at(file, o).is_some()) {
                let (offset, what) = match head {
                    Some((body_len, _)) => (
                        at.saturating_add(HEAD_LEN).saturating_add(body_len),
                        "record checksum mismatch",
                    ),
                    None => (at, "record header checksum mismatch"),
                };
                return Err(Error::corruption(
                    path,
                    offset as u64,
                    format!("time index: {what} before an intact record"),
                ));
            }
            return Ok(Some((at, head.map(|(_, lsn)| lsn))));
        };
        let first = record_head(file, at).expect("an intact record").1;
        let body_at = at + HEAD_LEN;
        let body = &file[body_at..end - 4];
        let bad = |offset: usize, what: &str| {
            Error::corruption(
                path,
                (body_at + offset) as u64,
                format!("time index: record body {what}"),
            )
        };
        let mut pos = 0;
        let count = get_uvarint(body, &mut pos).ok_or_else(|| bad(pos, "ends in its count"))?;
        if count == 0 {
            return Err(bad(0, "holds no entries"));
        }
        let time = get_uvarint(body, &mut pos).ok_or_else(|| bad(pos, "ends in its first time"))?;
        let mut e = (first, time);
        apply(entries, e, path, at + 4)?;
        for _ in 1..count {
            let entry_at = pos;
            let mut next =
                || get_uvarint(body, &mut pos).ok_or_else(|| bad(entry_at, "ends in an entry"));
            let (dl, dt) = (next()?, next()?);
            e = (
                Lsn(e.0.0.wrapping_add(dl)),
                e.1.wrapping_add(unzigzag(dt) as u64),
            );
            apply(entries, e, path, body_at + entry_at)?;
        }
        if pos != body.len() {
            return Err(bad(pos, "has bytes after its entries"));
        }
        at = end;
    }
    Ok(None)
}

/// The body length and first LSN of the version 2 record at `at`, if its head is whole and
/// its checksum holds.
fn record_head(file: &[u8], at: usize) -> Option<(usize, Lsn)> {
    let head = file.get(at..at.checked_add(HEAD_LEN)?)?;
    if crc32fast::hash(&head[..12]).to_le_bytes() != head[12..] {
        return None;
    }
    let body_len = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
    Some((
        body_len,
        Lsn(u64::from_le_bytes(head[4..12].try_into().expect("8"))),
    ))
}

/// The end of the version 2 record at `at` if it is whole and both its checksums hold.
fn intact_record_at(file: &[u8], at: usize) -> Option<usize> {
    let (body_len, _) = record_head(file, at)?;
    let end = at
        .checked_add(TIME_INDEX_RECORD_OVERHEAD)?
        .checked_add(body_len)?;
    let body = file.get(at + HEAD_LEN..end - 4)?;
    let stored = file.get(end - 4..end)?;
    (crc32fast::hash(body).to_le_bytes() == stored).then_some(end)
}

/// Version 1 records into `entries`; the offset of a torn tail, if any.
fn decode_fixed_records(
    file: &[u8],
    path: &Path,
    entries: &mut Vec<(Lsn, u64)>,
) -> Result<Option<usize>> {
    const CRC_AT: usize = 16;
    let mut at = TIME_INDEX_HEADER_LEN;
    while at < file.len() {
        let Some(rec) = file.get(at..at + FIXED_RECORD_LEN) else {
            // An incomplete record can only be the last one.
            return Ok(Some(at));
        };
        let field = |from: usize| u64::from_le_bytes(rec[from..from + 8].try_into().expect("8"));
        let stored = u32::from_le_bytes(rec[CRC_AT..].try_into().expect("4 bytes"));
        let actual = crc32fast::hash(&rec[..CRC_AT]);
        if stored != actual {
            if at + FIXED_RECORD_LEN == file.len() {
                return Ok(Some(at));
            }
            return Err(Error::corruption(
                path,
                (at + CRC_AT) as u64,
                format!(
                    "time index: record checksum mismatch (stored {stored:08x}, computed {actual:08x})"
                ),
            ));
        }
        apply(entries, (Lsn(field(0)), field(8)), path, at)?;
        at += FIXED_RECORD_LEN;
    }
    Ok(None)
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

    /// A file of one record per entry (as appends of one entry each write it).
    fn file_of_single_records(entries: &[(Lsn, u64)]) -> Vec<u8> {
        let mut f = encode_header();
        for e in entries {
            encode_entries(std::slice::from_ref(e), &mut f);
        }
        f
    }

    /// Where each record of a version 2 file starts.
    fn record_starts(f: &[u8]) -> Vec<usize> {
        let mut at = TIME_INDEX_HEADER_LEN;
        let mut starts = Vec::new();
        while at < f.len() {
            starts.push(at);
            let len = u32::from_le_bytes(f[at..at + 4].try_into().unwrap()) as usize;
            at += TIME_INDEX_RECORD_OVERHEAD + len;
        }
        starts
    }

    fn decode(f: &[u8]) -> Result<DecodedTimeIndex> {
        decode_time_index(f, Path::new("tl/time_index"))
    }

    #[test]
    fn time_index_table_decodes_a_hand_built_example() {
        let mut b = Vec::new();
        b.extend_from_slice(b"STRKVTIX"); // header: magic
        b.extend_from_slice(&2u16.to_le_bytes()); // header: version
        let body: &[u8] = &[
            3, // count
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, // first time: 2^57
            10, 0x80, 0x08, // lsn + 10, time + 512 (zigzag 1024)
            1, 3, // lsn + 1, time - 2 (zigzag 3): supersedes the entry before
        ];
        let head_at = b.len();
        b.extend_from_slice(&(body.len() as u32).to_le_bytes()); // record: body_len
        b.extend_from_slice(&10u64.to_le_bytes()); // record: first_lsn
        let head_crc = crc32fast::hash(&b[head_at..]); // record: crc32 of body_len ‖ first_lsn
        b.extend_from_slice(&head_crc.to_le_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&crc32fast::hash(body).to_le_bytes()); // record: crc32 of the body
        assert_eq!(
            (TIME_INDEX_HEADER_LEN, TIME_INDEX_RECORD_OVERHEAD),
            (10, 20)
        );
        assert_eq!(b.len(), 10 + 20 + body.len());

        let t0 = 1u64 << 57;
        assert_eq!(
            decode(&b).unwrap(),
            DecodedTimeIndex {
                entries: vec![(Lsn(10), t0), (Lsn(21), t0 + 512)],
                valid_len: b.len(),
                torn_tail: false,
                version: 2,
                torn_first_lsn: None,
            }
        );
        let mut encoded = encode_header();
        encode_entries(
            &[(Lsn(10), t0), (Lsn(20), t0 + 512), (Lsn(21), t0 + 510)],
            &mut encoded,
        );
        assert_eq!(encoded, b);
    }

    /// The records of version 1, as the first pinned stores hold them.
    fn version_1(entries: &[(u64, u64)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"STRKVTIX");
        b.extend_from_slice(&1u16.to_le_bytes());
        for &(lsn, time) in entries {
            let at = b.len();
            b.extend_from_slice(&lsn.to_le_bytes()); // record: lsn
            b.extend_from_slice(&time.to_le_bytes()); // record: time_micros
            let crc = crc32fast::hash(&b[at..]); // record: crc32 of lsn ‖ time_micros
            b.extend_from_slice(&crc.to_le_bytes());
        }
        b
    }

    #[test]
    fn version_1_decodes_with_its_torn_tail_and_corruption_rules() {
        let b = version_1(&[(10, 1_000), (20, 1_500), (25, 1_500)]);
        assert_eq!(b.len(), 10 + 3 * FIXED_RECORD_LEN);
        let d = decode(&b).unwrap();
        assert_eq!(d.entries, vec![(Lsn(10), 1_000), (Lsn(25), 1_500)]);
        assert!(!d.torn_tail && !d.is_current() && d.version == 1);
        let torn = decode(&b[..b.len() - 3]).unwrap();
        assert!(torn.torn_tail);
        assert_eq!(torn.valid_len, 10 + 2 * FIXED_RECORD_LEN);
        let mut flipped = b.clone();
        flipped[10 + FIXED_RECORD_LEN + 16] ^= 1;
        let e = decode(&flipped).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption);
        assert!(
            e.to_string()
                .contains(&format!("offset {}", 10 + FIXED_RECORD_LEN + 16)),
            "{e}"
        );
    }

    #[test]
    fn empty_file_is_just_the_header() {
        let f = file(&[]);
        assert_eq!(f.len(), TIME_INDEX_HEADER_LEN);
        let d = decode(&f).unwrap();
        assert_eq!(
            d,
            DecodedTimeIndex {
                entries: vec![],
                valid_len: TIME_INDEX_HEADER_LEN,
                torn_tail: false,
                version: 2,
                torn_first_lsn: None,
            }
        );
        assert!(d.is_current());
    }

    #[test]
    fn a_commit_a_microsecond_takes_two_bytes() {
        let e: Vec<_> = (1..=1000u64)
            .map(|l| (Lsn(l), 1_700_000_000_000_000 + l))
            .collect();
        let f = file(&e);
        assert!(
            f.len() < TIME_INDEX_HEADER_LEN + 40 + 2 * 1000,
            "{} bytes",
            f.len()
        );
        assert_eq!(decode(&f).unwrap().entries, e);
    }

    #[test]
    fn many_entries_split_into_records() {
        let e: Vec<_> = (1..=10_000u64).map(|l| (Lsn(l * 3), l * 7)).collect();
        let f = file(&e);
        assert_eq!(record_starts(&f).len(), 3);
        assert_eq!(decode(&f).unwrap().entries, e);
    }

    #[test]
    fn later_record_in_the_same_time_slot_supersedes() {
        let mut f = file(&[(Lsn(10), 100), (Lsn(20), 200)]);
        // Same slot as the last entry, then a clock that went backwards.
        encode_entries(&[(Lsn(25), 200)], &mut f);
        encode_entries(&[(Lsn(30), 150), (Lsn(40), 300)], &mut f);
        let d = decode(&f).unwrap();
        assert_eq!(
            d.entries,
            vec![(Lsn(10), 100), (Lsn(30), 200), (Lsn(40), 300)]
        );
        assert!(!d.torn_tail);
    }

    #[test]
    fn lsn_going_backwards_is_corruption_naming_the_offset() {
        let f = file_of_single_records(&[(Lsn(10), 100), (Lsn(10), 200), (Lsn(30), 300)]);
        let err = decode(&f).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        // The second record's entry: its LSN is in the record's head.
        let at = record_starts(&f)[1] + 4;
        assert!(err.to_string().contains(&format!("offset {at}")), "{err}");
        assert!(err.to_string().contains("tl/time_index"), "{err}");
    }

    #[test]
    fn bad_checksum_before_the_last_record_is_corruption() {
        let mut f = file_of_single_records(&[(Lsn(1), 1), (Lsn(2), 2), (Lsn(3), 3)]);
        let second = record_starts(&f)[1];
        let crc_at = record_starts(&f)[2] - 4;
        f[crc_at] ^= 0x40;
        let err = decode(&f).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(
            err.to_string().contains(&format!("offset {crc_at}")),
            "{err}"
        );
        f[crc_at] ^= 0x40;
        f[second] ^= 0x01; // its length
        let err = decode(&f).unwrap_err();
        assert!(
            err.to_string().contains(&format!("offset {second}")),
            "{err}"
        );
    }

    #[test]
    fn a_torn_record_with_an_intact_head_names_its_first_lsn() {
        let mut f = file_of_single_records(&[(Lsn(1), 1)]);
        let second = f.len();
        encode_entries(&[(Lsn(7), 70), (Lsn(8), 80)], &mut f);
        let last = f.len() - 1;
        f[last] ^= 0x10; // the body's checksum
        let d = decode(&f).unwrap();
        assert!(d.torn_tail);
        assert_eq!((d.valid_len, d.torn_first_lsn), (second, Some(Lsn(7))));
        f.truncate(second + 5); // within the head: its first LSN is not known
        let d = decode(&f).unwrap();
        assert_eq!((d.valid_len, d.torn_first_lsn), (second, None));
    }

    #[test]
    fn a_zeroed_tail_is_torn() {
        let mut f = file_of_single_records(&[(Lsn(1), 1), (Lsn(2), 2)]);
        let len = f.len();
        f.extend_from_slice(&[0; 64]);
        let d = decode(&f).unwrap();
        assert!(d.torn_tail);
        assert_eq!((d.valid_len, d.entries.len()), (len, 2));
    }

    #[test]
    fn malformed_bodies_with_good_checksums_are_corruption() {
        for body in [
            &[][..],
            &[0][..],
            &[2, 1][..],
            &[1, 1, 9][..],
            &[1, 0xff][..],
        ] {
            let mut f = encode_header();
            let head_at = f.len();
            f.extend_from_slice(&(body.len() as u32).to_le_bytes());
            f.extend_from_slice(&7u64.to_le_bytes());
            let head_crc = crc32fast::hash(&f[head_at..]);
            f.extend_from_slice(&head_crc.to_le_bytes());
            f.extend_from_slice(body);
            f.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            let e = decode(&f).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corruption, "{body:?}");
            assert!(e.to_string().contains("record body"), "{body:?}: {e}");
        }
    }

    #[test]
    fn bad_header_is_corruption() {
        let good = file(&[(Lsn(1), 1)]);
        let mut wrong_version = good.clone();
        wrong_version[VERSION_AT] = 3;
        for bad in [
            &good[..5],
            &b"STRKVMAN\x02\x00"[..],
            &wrong_version[..],
            &[][..],
        ] {
            let err = decode(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption);
        }
    }

    proptest! {
        #[test]
        fn round_trip(e in entries()) {
            let f = file(&e);
            let d = decode(&f).unwrap();
            prop_assert_eq!(d.valid_len, f.len());
            prop_assert!(!d.torn_tail);
            prop_assert_eq!(d.entries, e);
        }

        #[test]
        fn appends_decode_as_one_file(e in entries(), split in any::<usize>()) {
            let split = split % (e.len() + 1);
            let mut f = file(&e[..split]);
            encode_entries(&e[split..], &mut f);
            prop_assert_eq!(decode(&f).unwrap().entries, e);
        }

        #[test]
        fn truncation_is_a_torn_tail_keeping_the_prefix(e in entries(), cut in any::<usize>()) {
            let f = file_of_single_records(&e);
            let cut = TIME_INDEX_HEADER_LEN + cut % (f.len() - TIME_INDEX_HEADER_LEN + 1);
            let d = decode(&f[..cut]).unwrap();
            let starts = record_starts(&f);
            let ends: Vec<usize> = starts
                .iter()
                .skip(1)
                .copied()
                .chain((!starts.is_empty()).then_some(f.len()))
                .collect();
            let whole = ends.iter().filter(|end| **end <= cut).count();
            prop_assert_eq!(&d.entries[..], &e[..whole]);
            let valid = if whole == 0 { TIME_INDEX_HEADER_LEN } else { ends[whole - 1] };
            prop_assert_eq!(d.valid_len, valid);
            prop_assert_eq!(d.torn_tail, d.valid_len != cut);
        }

        /// A flipped bit is corruption, except in the last record, where it is a torn tail that
        /// drops exactly that record.
        #[test]
        fn every_bit_flip_is_detected(e in entries(), split in any::<usize>(), pick in any::<usize>()) {
            // Two appends, so that there is a record before the last.
            let split = split % (e.len() + 1);
            let mut f = file(&e[..split]);
            encode_entries(&e[split..], &mut f);
            let intact = f.clone();
            let bit = pick % (f.len() * 8);
            f[bit / 8] ^= 1 << (bit % 8);
            match decode(&f) {
                Err(err) => {
                    prop_assert_eq!(err.kind(), ErrorKind::Corruption);
                    prop_assert!(err.to_string().contains("tl/time_index"));
                }
                Ok(d) => {
                    let last_at = record_starts(&intact).last().copied();
                    prop_assert!(
                        last_at.is_some_and(|l| bit / 8 >= l),
                        "flip at bit {} missed",
                        bit
                    );
                    let last_at = last_at.unwrap();
                    prop_assert!(d.torn_tail);
                    prop_assert_eq!(d.valid_len, last_at);
                    let kept = decode(&intact[..last_at]).unwrap().entries;
                    prop_assert_eq!(&d.entries[..], &kept[..]);
                    prop_assert!(kept.len() < e.len());
                }
            }
        }

        /// Well-checksummed records in any order either decode to ordered entries or are
        /// corruption.
        #[test]
        fn arbitrary_records_decode_ordered_or_fail(
            recs in proptest::collection::vec((0u64..50, 0u64..50), 0..20),
        ) {
            let f = file_of_single_records(
                &recs.iter().map(|&(l, t)| (Lsn(l), t)).collect::<Vec<_>>(),
            );
            match decode(&f) {
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
            let _ = decode(&bytes);
            let mut f = encode_header();
            f.extend_from_slice(&bytes);
            if let Ok(d) = decode(&f) {
                prop_assert!(d.valid_len <= f.len());
                prop_assert!(d.entries.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
            }
        }
    }
}
