//! Write-ahead log records.
//!
//! A WAL segment is a header, then records back to back:
//!
//! | field   | size | meaning |
//! |---------|------|---------|
//! | magic   | 8    | `STRKVWAL` |
//! | version | 2    | u16, currently 1 |
//! | seq     | 8    | u64 segment sequence number, also in the file name |
//!
//! A record:
//!
//! | field    | size | meaning |
//! |----------|------|---------|
//! | body_len | 4    | u32 |
//! | crc32    | 4    | CRC32 of body_len ‖ body |
//! | body     | body_len | see below |
//!
//! Body — one record is one `finish_write`, with every put it publishes, so that a crash keeps
//! or loses a commit whole and no put reaches the log without its commit:
//!
//! | field       | size | meaning |
//! |-------------|------|---------|
//! | kind        | 1    | 2 = commit |
//! | timeline_id | 16   | big-endian |
//! | lsn         | 8    | u64: the LSN published |
//! | time_micros | 8    | u64: commit time, microseconds since the Unix epoch |
//! | put_count   | 4    | u32 |
//! | puts        | …    | each: `lsn u64, key_len u16, key, tag u8 (as in data blocks), value_len u32, value` |

use std::path::Path;

use bytes::Bytes;

use super::cursor::{Cursor, put_short_bytes};
use crate::error::{Error, Result};
use crate::id::TimelineId;
use crate::lsn::Lsn;
use crate::value::Value;

const MAGIC: &[u8; 8] = b"STRKVWAL";
const VERSION: u16 = 1;
/// Bytes of a segment header.
pub const WAL_HEADER_LEN: usize = 8 + 2 + 8;
const LEN_LEN: usize = 4;
const CRC_LEN: usize = 4;
/// Bytes a record adds around its body.
pub const WAL_RECORD_OVERHEAD: usize = LEN_LEN + CRC_LEN;
const KIND_COMMIT: u8 = 2;

const TAG_IMAGE: u8 = 0;
const TAG_DELTA: u8 = 1;
const TAG_DELTA_INIT: u8 = 2;
const TAG_TOMBSTONE: u8 = 3;

/// One logged `finish_write`: the LSN it published, its commit time, and its puts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// The timeline published.
    pub timeline: TimelineId,
    /// The LSN published.
    pub lsn: Lsn,
    /// Commit time, microseconds since the Unix epoch.
    pub time_micros: u64,
    /// The puts published, in the order written: `(key, lsn, value)`.
    pub puts: Vec<(Bytes, Lsn, Value)>,
}

/// The header of segment `seq`.
pub fn encode_wal_header(seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(WAL_HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out
}

/// Appends one put entry to a timeline's pending puts (see [`encode_commit`]).
pub fn encode_put(out: &mut Vec<u8>, lsn: Lsn, key: &[u8], value: &Value) {
    let (tag, body): (u8, &[u8]) = match value {
        Value::Image(b) => (TAG_IMAGE, b),
        Value::Delta {
            record,
            will_init: false,
        } => (TAG_DELTA, record),
        Value::Delta {
            record,
            will_init: true,
        } => (TAG_DELTA_INIT, record),
        Value::Tombstone => (TAG_TOMBSTONE, &[]),
    };
    out.extend_from_slice(&lsn.0.to_le_bytes());
    put_short_bytes(out, key);
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// Appends a commit record holding `put_count` puts already encoded by [`encode_put`].
pub fn encode_commit(
    out: &mut Vec<u8>,
    timeline: TimelineId,
    lsn: Lsn,
    time_micros: u64,
    put_count: u32,
    puts: &[u8],
) {
    let start = begin(out);
    out.push(KIND_COMMIT);
    out.extend_from_slice(&timeline.to_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(&time_micros.to_le_bytes());
    out.extend_from_slice(&put_count.to_le_bytes());
    out.extend_from_slice(puts);
    seal(out, start);
}

/// Appends `record` to `out`.
#[cfg_attr(
    not(any(test, feature = "internals")),
    expect(
        dead_code,
        reason = "used by the fuzz targets and tests through `stratakv::internals`"
    )
)]
pub fn encode_wal_record(out: &mut Vec<u8>, record: &WalRecord) {
    let mut puts = Vec::new();
    for (key, lsn, value) in &record.puts {
        encode_put(&mut puts, *lsn, key, value);
    }
    encode_commit(
        out,
        record.timeline,
        record.lsn,
        record.time_micros,
        record.puts.len() as u32,
        &puts,
    );
}

fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_LEN + CRC_LEN]);
    start
}

fn seal(out: &mut [u8], start: usize) {
    let body_len = (out.len() - start - LEN_LEN - CRC_LEN) as u32;
    out[start..start + LEN_LEN].copy_from_slice(&body_len.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start..start + LEN_LEN]);
    h.update(&out[start + LEN_LEN + CRC_LEN..]);
    out[start + LEN_LEN..start + LEN_LEN + CRC_LEN].copy_from_slice(&h.finalize().to_le_bytes());
}

/// What reading a segment found.
#[derive(Debug)]
pub struct DecodedSegment {
    /// The segment's sequence number from its header.
    pub seq: u64,
    /// Every whole, checked record, in order.
    pub records: Vec<WalRecord>,
    /// Bytes up to the end of the last good record. Less than the file's length when it
    /// ends in zeros (allocated ahead of the writes, not written: the end, not a tear) as well
    /// as when it is torn.
    pub valid_len: usize,
    /// Whether the segment ends in a torn record: one cut short, or the last record with a
    /// bad checksum — what a crash mid-write leaves. Replay stops there.
    pub torn_tail: bool,
}

/// Decodes a whole segment file read from `path`.
///
/// # Errors
/// [`Corruption`](crate::ErrorKind::Corruption) naming `path` and the offset for a bad header,
/// a record that fails its checksum or does not parse while more records follow it.
pub fn decode_wal_segment(file: &[u8], path: &Path) -> Result<DecodedSegment> {
    if file.len() < WAL_HEADER_LEN {
        // A crash while creating the segment leaves it short: nothing in it was acknowledged.
        return Ok(DecodedSegment {
            seq: 0,
            records: Vec::new(),
            valid_len: 0,
            torn_tail: true,
        });
    }
    if &file[..8] != MAGIC {
        return Err(Error::corruption(path, 0, "bad WAL segment magic"));
    }
    let version = u16::from_le_bytes(file[8..10].try_into().expect("2"));
    if version != VERSION {
        return Err(Error::corruption(
            path,
            8,
            format!("unknown WAL format version {version}"),
        ));
    }
    let seq = u64::from_le_bytes(file[10..18].try_into().expect("8"));
    let mut at = WAL_HEADER_LEN;
    let mut records = Vec::new();
    while at < file.len() {
        let rest = &file[at..];
        if rest.iter().all(|b| *b == 0) {
            // Allocated ahead of the writes and not written yet (see `FileSystem::open_log`):
            // the end of the segment. (No record starts with a zero length and checksum.)
            break;
        }
        // A crash tears only the last write: if any whole record follows the bad spot, the bad
        // spot is damage, not a tear.
        let torn = |records| {
            if let Some(next) = whole_record_after(file, at + 1) {
                return Err(Error::corruption(
                    path,
                    at as u64,
                    format!("bad WAL record followed by a good one at offset {next}"),
                ));
            }
            Ok(DecodedSegment {
                seq,
                records,
                valid_len: at,
                torn_tail: true,
            })
        };
        if rest.len() < WAL_RECORD_OVERHEAD {
            return torn(records);
        }
        let body_len = u32::from_le_bytes(rest[..LEN_LEN].try_into().expect("4")) as usize;
        let end = WAL_RECORD_OVERHEAD + body_len;
        if end > rest.len() {
            // Cut short by a crash, or a length torn with it: nothing after can be trusted
            // either way, and nothing after was acknowledged before this record was.
            return torn(records);
        }
        let stored = u32::from_le_bytes(rest[LEN_LEN..LEN_LEN + CRC_LEN].try_into().expect("4"));
        let mut h = crc32fast::Hasher::new();
        h.update(&rest[..LEN_LEN]);
        h.update(&rest[WAL_RECORD_OVERHEAD..end]);
        if h.finalize() != stored {
            return torn(records)
                .map_err(|_| Error::corruption(path, at as u64, "WAL record checksum mismatch"));
        }
        let body = &rest[WAL_RECORD_OVERHEAD..end];
        let rec = decode_body(body)
            .map_err(|e| Error::corruption(path, at as u64, format!("WAL record: {e}")))?;
        records.push(rec);
        at += end;
    }
    Ok(DecodedSegment {
        seq,
        records,
        valid_len: at,
        torn_tail: false,
    })
}

/// The offset of the first whole record with a good checksum at or after `from`, if any.
fn whole_record_after(file: &[u8], from: usize) -> Option<usize> {
    (from..file.len().saturating_sub(WAL_RECORD_OVERHEAD)).find(|&pos| {
        let rest = &file[pos..];
        let body_len = u32::from_le_bytes(rest[..LEN_LEN].try_into().expect("4")) as usize;
        let end = WAL_RECORD_OVERHEAD + body_len;
        if body_len == 0 || end > rest.len() {
            return false;
        }
        let stored = u32::from_le_bytes(rest[LEN_LEN..LEN_LEN + CRC_LEN].try_into().expect("4"));
        let mut h = crc32fast::Hasher::new();
        h.update(&rest[..LEN_LEN]);
        h.update(&rest[WAL_RECORD_OVERHEAD..end]);
        h.finalize() == stored && decode_body(&rest[WAL_RECORD_OVERHEAD..end]).is_ok()
    })
}

fn decode_body(body: &[u8]) -> std::result::Result<WalRecord, String> {
    let mut c = Cursor::new(body);
    let kind = c.u8()?;
    if kind != KIND_COMMIT {
        return Err(format!("unknown record kind {kind}"));
    }
    let id: [u8; 16] = c.take(16)?.try_into().expect("16");
    let timeline = TimelineId::from_bytes(id);
    let lsn = Lsn(c.u64()?);
    let time_micros = c.u64()?;
    let count = c.u32()? as usize;
    // Each put takes at least 15 bytes: refuse a count the body cannot hold before allocating.
    if count > c.remaining() / 15 {
        return Err(format!("put count {count} does not fit"));
    }
    let mut puts = Vec::with_capacity(count);
    for _ in 0..count {
        let put_lsn = Lsn(c.u64()?);
        let key = Bytes::copy_from_slice(c.short_bytes()?);
        let tag = c.u8()?;
        let len = c.u32()? as usize;
        let v = Bytes::copy_from_slice(c.take(len)?);
        let value = match tag {
            TAG_IMAGE => Value::Image(v),
            TAG_DELTA => Value::Delta {
                record: v,
                will_init: false,
            },
            TAG_DELTA_INIT => Value::Delta {
                record: v,
                will_init: true,
            },
            TAG_TOMBSTONE if len == 0 => Value::Tombstone,
            t => return Err(format!("bad value tag {t}")),
        };
        if put_lsn > lsn {
            return Err(format!("put at LSN {put_lsn} above its commit at {lsn}"));
        }
        puts.push((key, put_lsn, value));
    }
    c.expect_end()?;
    Ok(WalRecord {
        timeline,
        lsn,
        time_micros,
        puts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = WalRecord> {
        let value = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..50).prop_map(Value::image),
            proptest::collection::vec(any::<u8>(), 0..50).prop_map(Value::delta),
            proptest::collection::vec(any::<u8>(), 0..50).prop_map(Value::init_delta),
            Just(Value::Tombstone),
        ];
        let put = (
            proptest::collection::vec(any::<u8>(), 1..20),
            0u64..1000,
            value,
        );
        (
            any::<u128>(),
            1000u64..2000,
            any::<u64>(),
            proptest::collection::vec(put, 0..4),
        )
            .prop_map(|(t, l, time, puts)| WalRecord {
                timeline: TimelineId::from(t),
                lsn: Lsn(l),
                time_micros: time,
                puts: puts
                    .into_iter()
                    .map(|(k, pl, v)| (Bytes::from(k), Lsn(pl), v))
                    .collect(),
            })
    }

    fn segment(records: &[WalRecord]) -> Vec<u8> {
        let mut f = encode_wal_header(7);
        for r in records {
            encode_wal_record(&mut f, r);
        }
        f
    }

    proptest! {
        #[test]
        fn round_trip(records in proptest::collection::vec(record(), 0..20)) {
            let f = segment(&records);
            let d = decode_wal_segment(&f, Path::new("w")).unwrap();
            prop_assert_eq!(d.seq, 7);
            prop_assert!(!d.torn_tail);
            prop_assert_eq!(d.valid_len, f.len());
            prop_assert_eq!(d.records, records);
        }

        #[test]
        fn a_cut_anywhere_is_a_torn_tail_keeping_whole_records(records in proptest::collection::vec(record(), 1..10), cut in any::<usize>()) {
            let f = segment(&records);
            let cut = WAL_HEADER_LEN + cut % (f.len() - WAL_HEADER_LEN);
            let d = decode_wal_segment(&f[..cut], Path::new("w")).unwrap();
            prop_assert!(d.records.len() < records.len());
            prop_assert_eq!(&d.records[..], &records[..d.records.len()]);
            prop_assert!(d.valid_len <= cut);
        }

        #[test]
        fn a_flipped_bit_is_never_read_as_a_record(records in proptest::collection::vec(record(), 1..10), pick in any::<usize>()) {
            let mut f = segment(&records);
            let bit = pick % (f.len() * 8);
            f[bit / 8] ^= 1 << (bit % 8);
            match decode_wal_segment(&f, Path::new("w")) {
                Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Corruption),
                Ok(d) => {
                    // Only a flip in the last record may pass, as a torn tail that drops just
                    // that record (a flip in the header's sequence number reads as another seq).
                    if bit / 8 >= 18 {
                        prop_assert!(d.torn_tail, "flip at byte {} decoded cleanly", bit / 8);
                        prop_assert_eq!(d.records.len(), records.len() - 1);
                        prop_assert_eq!(&d.records[..], &records[..d.records.len()]);
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut f = encode_wal_header(1);
            f.extend_from_slice(&bytes);
            let _ = decode_wal_segment(&f, Path::new("w"));
        }
    }

    #[test]
    fn wal_table_decodes_a_hand_built_example() {
        let mut b = Vec::new();
        b.extend_from_slice(b"STRKVWAL"); // header: magic
        b.extend_from_slice(&1u16.to_le_bytes()); // header: version
        b.extend_from_slice(&7u64.to_le_bytes()); // header: seq
        assert_eq!(b.len(), WAL_HEADER_LEN);

        let mut body = Vec::new();
        body.push(2); // kind: 2 = commit
        body.extend_from_slice(&[
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]); // timeline_id, big-endian
        body.extend_from_slice(&100u64.to_le_bytes()); // lsn
        body.extend_from_slice(&1_700_000_000_000_000u64.to_le_bytes()); // time_micros
        body.extend_from_slice(&4u32.to_le_bytes()); // put_count
        // puts, each `lsn u64, key_len u16, key, tag u8, value_len u32, value`, one per tag.
        for (lsn, key, tag, value) in [
            (97u64, &b"k1"[..], 0u8, &b"image"[..]),
            (98, b"k2", 1, b"delta"),
            (99, b"k3", 2, b"init"),
            (100, b"k4", 3, b""),
        ] {
            body.extend_from_slice(&lsn.to_le_bytes()); // lsn
            body.extend_from_slice(&(key.len() as u16).to_le_bytes()); // key_len
            body.extend_from_slice(key); // key
            body.push(tag); // tag: 0 image, 1 delta, 2 delta with will_init, 3 tombstone
            body.extend_from_slice(&(value.len() as u32).to_le_bytes()); // value_len
            body.extend_from_slice(value); // value
        }

        let body_len = (body.len() as u32).to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&body_len);
        crc.update(&body);
        b.extend_from_slice(&body_len); // record: body_len
        b.extend_from_slice(&crc.finalize().to_le_bytes()); // record: crc32 of body_len ‖ body
        b.extend_from_slice(&body); // record: body

        let want = WalRecord {
            timeline: TimelineId::from(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
            lsn: Lsn(100),
            time_micros: 1_700_000_000_000_000,
            puts: vec![
                (
                    Bytes::from_static(b"k1"),
                    Lsn(97),
                    Value::image(&b"image"[..]),
                ),
                (
                    Bytes::from_static(b"k2"),
                    Lsn(98),
                    Value::delta(&b"delta"[..]),
                ),
                (
                    Bytes::from_static(b"k3"),
                    Lsn(99),
                    Value::init_delta(&b"init"[..]),
                ),
                (Bytes::from_static(b"k4"), Lsn(100), Value::Tombstone),
            ],
        };
        let d = decode_wal_segment(&b, Path::new("w")).unwrap();
        assert_eq!(d.seq, 7);
        assert_eq!(d.records, vec![want.clone()]);
        assert_eq!(d.valid_len, b.len());
        assert!(!d.torn_tail);

        let mut encoded = encode_wal_header(7);
        encode_wal_record(&mut encoded, &want);
        assert_eq!(encoded, b);
    }

    #[test]
    fn corruption_before_the_last_record_is_an_error_naming_the_offset() {
        let recs: Vec<_> = (0..3)
            .map(|i| WalRecord {
                timeline: TimelineId::from(1),
                lsn: Lsn(i),
                time_micros: i,
                puts: Vec::new(),
            })
            .collect();
        let mut f = segment(&recs);
        f[WAL_HEADER_LEN + 12] ^= 1;
        let err = decode_wal_segment(&f, Path::new("wal/0001.seg")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(
            err.to_string()
                .contains(&format!("wal/0001.seg at offset {WAL_HEADER_LEN}")),
            "{err}"
        );
    }
}
