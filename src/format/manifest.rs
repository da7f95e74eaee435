//! The per-timeline manifest: the one root of consistency for a timeline's files.
//!
//! Wrapped in an [envelope](super::envelope) with magic `STRKVMAN`, version 1. Body:
//!
//! | field               | size | meaning |
//! |---------------------|------|---------|
//! | timeline_id         | 16   | big-endian |
//! | ancestor            | 1 (+ 16 + 8) | presence byte (0 = none, 1 = present), then the ancestor's id (big-endian) and the u64 branch LSN |
//! | disk_consistent_lsn | 8    | u64: every write at or below it is in the named layers |
//! | gc_cutoff           | 8    | u64: oldest readable LSN |
//! | next_layer_seq      | 8    | u64: sequence number for the next layer file name |
//! | layer_count         | 4    | u32 |
//! | per layer:          |      | |
//! | file_name           | 2 + n | u16 length and UTF-8 bytes |
//! | kind                | 1    | 0 = delta, 1 = image |
//! | level               | 1    | 0 = flush output (L0), 1 = compaction output (L1); 0 for images |
//! | lsn_start, lsn_end  | 8 + 8 | u64 each: `[start, end)` |
//! | file_size           | 8    | u64 bytes |
//! | key_start           | 2 + n | u16 length and bytes, inclusive |
//! | key_end             | 1 (+ 2 + n) | presence byte, then u16 length and bytes, exclusive; absent = unbounded |

use std::ops::Range;
use std::path::Path;

use bytes::Bytes;

use super::cursor::{Cursor, put_opt_short_bytes, put_short_bytes};
use super::envelope::{BODY_OFFSET, seal, unseal};
use super::footer::LayerKind;
use crate::error::{Error, Result};
use crate::id::TimelineId;
use crate::lsn::Lsn;
use crate::value::KeyRange;

const MAGIC: &[u8; 8] = b"STRKVMAN";
const VERSION: u16 = 1;

/// One layer file of a timeline, as its manifest names it: what
/// [`Timeline::layers`](crate::Timeline::layers) lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDesc {
    /// File name inside the timeline's directory.
    pub file_name: String,
    /// Delta or image.
    pub kind: LayerKind,
    /// 0 for a flush's output (L0), 1 for compaction's (L1); 0 for images.
    pub level: u8,
    /// LSNs covered, `[start, end)`.
    pub lsn_range: Range<Lsn>,
    /// Keys covered.
    pub key_range: KeyRange,
    /// Size of the file in bytes.
    pub file_size: u64,
}

/// A timeline's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The timeline.
    pub timeline_id: TimelineId,
    /// The ancestor timeline and the LSN this one branched at.
    pub ancestor: Option<(TimelineId, Lsn)>,
    /// Every write at or below this LSN is in the named layers.
    pub disk_consistent_lsn: Lsn,
    /// The oldest readable LSN.
    pub gc_cutoff: Lsn,
    /// Sequence number for the next layer file name.
    pub next_layer_seq: u64,
    /// The layers, in no particular order.
    pub layers: Vec<LayerDesc>,
}

impl Manifest {
    /// Encodes the manifest into the bytes of its file.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.layers.len() * 96);
        b.extend_from_slice(&self.timeline_id.to_bytes());
        match self.ancestor {
            None => b.push(0),
            Some((id, lsn)) => {
                b.push(1);
                b.extend_from_slice(&id.to_bytes());
                b.extend_from_slice(&lsn.0.to_le_bytes());
            }
        }
        b.extend_from_slice(&self.disk_consistent_lsn.0.to_le_bytes());
        b.extend_from_slice(&self.gc_cutoff.0.to_le_bytes());
        b.extend_from_slice(&self.next_layer_seq.to_le_bytes());
        b.extend_from_slice(&(self.layers.len() as u32).to_le_bytes());
        for l in &self.layers {
            put_short_bytes(&mut b, l.file_name.as_bytes());
            b.push(l.kind.code());
            b.push(l.level);
            b.extend_from_slice(&l.lsn_range.start.0.to_le_bytes());
            b.extend_from_slice(&l.lsn_range.end.0.to_le_bytes());
            b.extend_from_slice(&l.file_size.to_le_bytes());
            put_short_bytes(&mut b, &l.key_range.start);
            put_opt_short_bytes(&mut b, l.key_range.end.as_ref());
        }
        seal(MAGIC, VERSION, &b)
    }

    /// Decodes the manifest file at `path`.
    ///
    /// # Errors
    /// [`Corruption`](crate::ErrorKind::Corruption) naming `path` and the offset when the envelope
    /// or any field is wrong.
    pub fn decode(file: &[u8], path: &Path) -> Result<Manifest> {
        let body = unseal(MAGIC, VERSION, file, path)?;
        let mut c = Cursor::new(body);
        let bad = |c: &Cursor, what: String| {
            Error::corruption(
                path,
                BODY_OFFSET + c.pos() as u64,
                format!("manifest: {what}"),
            )
        };
        macro_rules! rd {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(what) => return Err(bad(&c, what)),
                }
            };
        }
        let id_bytes: [u8; 16] = rd!(c.take(16)).try_into().expect("16");
        let timeline_id = TimelineId::from_bytes(id_bytes);
        let ancestor = match rd!(c.u8()) {
            0 => None,
            1 => {
                let a: [u8; 16] = rd!(c.take(16)).try_into().expect("16");
                Some((TimelineId::from_bytes(a), Lsn(rd!(c.u64()))))
            }
            x => return Err(bad(&c, format!("bad ancestor presence byte {x}"))),
        };
        let disk_consistent_lsn = Lsn(rd!(c.u64()));
        let gc_cutoff = Lsn(rd!(c.u64()));
        let next_layer_seq = rd!(c.u64());
        let count = rd!(c.u32()) as usize;
        if count > c.remaining() / 32 {
            return Err(bad(
                &c,
                format!("layer count {count} does not fit the manifest"),
            ));
        }
        let mut layers = Vec::with_capacity(count);
        for _ in 0..count {
            let name = rd!(c.short_bytes());
            let file_name = match std::str::from_utf8(name) {
                Ok(s) if is_plain_file_name(s) => s.to_string(),
                _ => {
                    return Err(bad(
                        &c,
                        format!("bad layer file name {:?}", String::from_utf8_lossy(name)),
                    ));
                }
            };
            let code = rd!(c.u8());
            let kind = LayerKind::from_code(code)
                .ok_or_else(|| bad(&c, format!("unknown layer kind {code}")))?;
            let level = rd!(c.u8());
            if level > 1 {
                return Err(bad(
                    &c,
                    format!("layer {file_name} has unknown level {level}"),
                ));
            }
            let lsn_range = Lsn(rd!(c.u64()))..Lsn(rd!(c.u64()));
            let file_size = rd!(c.u64());
            let start = Bytes::copy_from_slice(rd!(c.short_bytes()));
            let end = rd!(c.opt_short_bytes()).map(Bytes::copy_from_slice);
            if lsn_range.start >= lsn_range.end {
                return Err(bad(&c, format!("layer {file_name} has an empty LSN range")));
            }
            layers.push(LayerDesc {
                file_name,
                kind,
                level,
                lsn_range,
                key_range: KeyRange { start, end },
                file_size,
            });
        }
        rd!(c.expect_end());
        Ok(Manifest {
            timeline_id,
            ancestor,
            disk_consistent_lsn,
            gc_cutoff,
            next_layer_seq,
            layers,
        })
    }
}

/// A name that stays inside its directory: no separators, not `.` or `..`.
pub(crate) fn is_plain_file_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    fn manifest() -> impl Strategy<Value = Manifest> {
        let layer = (
            "[a-z0-9_.-]{1,20}".prop_filter("plain", |s| is_plain_file_name(s)),
            any::<bool>(),
            0u64..1000,
            1u64..1000,
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..5),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 1..5)),
        )
            .prop_map(|(name, img, s, w, size, ks, ke)| LayerDesc {
                file_name: name,
                level: u8::from(!img && size % 2 == 0),
                kind: if img {
                    LayerKind::Image
                } else {
                    LayerKind::Delta
                },
                lsn_range: Lsn(s)..Lsn(s + w),
                key_range: KeyRange {
                    start: ks.into(),
                    end: ke.map(Bytes::from),
                },
                file_size: size,
            });
        (
            any::<u128>(),
            proptest::option::of((any::<u128>(), any::<u64>())),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(layer, 0..8),
        )
            .prop_map(|(id, anc, dcl, gc, seq, layers)| Manifest {
                timeline_id: TimelineId::from(id),
                ancestor: anc.map(|(a, l)| (TimelineId::from(a), Lsn(l))),
                disk_consistent_lsn: Lsn(dcl),
                gc_cutoff: Lsn(gc),
                next_layer_seq: seq,
                layers,
            })
    }

    #[test]
    fn manifest_table_decodes_a_hand_built_example() {
        let mut body = Vec::new();
        body.extend_from_slice(&[
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]); // timeline_id, big-endian
        body.push(1); // ancestor: presence byte
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x0b]); // ancestor id
        body.extend_from_slice(&500u64.to_le_bytes()); // ancestor: branch LSN
        body.extend_from_slice(&900u64.to_le_bytes()); // disk_consistent_lsn
        body.extend_from_slice(&450u64.to_le_bytes()); // gc_cutoff
        body.extend_from_slice(&17u64.to_le_bytes()); // next_layer_seq
        body.extend_from_slice(&2u32.to_le_bytes()); // layer_count
        // Layer 1: a compacted delta with both key bounds.
        body.extend_from_slice(&7u16.to_le_bytes()); // file_name: u16 length
        body.extend_from_slice(b"d-00015"); // file_name: UTF-8 bytes
        body.push(0); // kind: 0 = delta
        body.push(1); // level: 1 = compaction output
        body.extend_from_slice(&501u64.to_le_bytes()); // lsn_start
        body.extend_from_slice(&800u64.to_le_bytes()); // lsn_end
        body.extend_from_slice(&65536u64.to_le_bytes()); // file_size
        body.extend_from_slice(&1u16.to_le_bytes()); // key_start: u16 length
        body.extend_from_slice(b"a"); // key_start: bytes
        body.push(1); // key_end: presence byte
        body.extend_from_slice(&1u16.to_le_bytes()); // key_end: u16 length
        body.extend_from_slice(b"m"); // key_end: bytes
        // Layer 2: an image over every key.
        body.extend_from_slice(&7u16.to_le_bytes()); // file_name: u16 length
        body.extend_from_slice(b"i-00016"); // file_name: UTF-8 bytes
        body.push(1); // kind: 1 = image
        body.push(0); // level: 0 for images
        body.extend_from_slice(&800u64.to_le_bytes()); // lsn_start
        body.extend_from_slice(&801u64.to_le_bytes()); // lsn_end
        body.extend_from_slice(&4096u64.to_le_bytes()); // file_size
        body.extend_from_slice(&0u16.to_le_bytes()); // key_start: empty
        body.push(0); // key_end: absent = unbounded

        let mut b = Vec::new();
        b.extend_from_slice(b"STRKVMAN"); // envelope magic
        b.extend_from_slice(&1u16.to_le_bytes()); // envelope version
        b.extend_from_slice(&(body.len() as u32).to_le_bytes()); // envelope body_len
        b.extend_from_slice(&body);
        let crc = crc32fast::hash(&b); // envelope crc32
        b.extend_from_slice(&crc.to_le_bytes());

        let want = Manifest {
            timeline_id: TimelineId::from(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
            ancestor: Some((TimelineId::from(0x0a0b), Lsn(500))),
            disk_consistent_lsn: Lsn(900),
            gc_cutoff: Lsn(450),
            next_layer_seq: 17,
            layers: vec![
                LayerDesc {
                    file_name: "d-00015".to_string(),
                    kind: LayerKind::Delta,
                    level: 1,
                    lsn_range: Lsn(501)..Lsn(800),
                    key_range: KeyRange {
                        start: Bytes::from_static(b"a"),
                        end: Some(Bytes::from_static(b"m")),
                    },
                    file_size: 65536,
                },
                LayerDesc {
                    file_name: "i-00016".to_string(),
                    kind: LayerKind::Image,
                    level: 0,
                    lsn_range: Lsn(800)..Lsn(801),
                    key_range: KeyRange::ALL,
                    file_size: 4096,
                },
            ],
        };
        assert_eq!(Manifest::decode(&b, Path::new("m")).unwrap(), want);
        assert_eq!(want.encode(), b);
    }

    proptest! {
        #[test]
        fn round_trip(m in manifest()) {
            prop_assert_eq!(Manifest::decode(&m.encode(), Path::new("m")).unwrap(), m);
        }

        #[test]
        fn every_bit_flip_is_detected(m in manifest(), pick in any::<usize>()) {
            let mut file = m.encode();
            let bit = pick % (file.len() * 8);
            file[bit / 8] ^= 1 << (bit % 8);
            let err = Manifest::decode(&file, Path::new("tl/manifest")).unwrap_err();
            prop_assert_eq!(err.kind(), ErrorKind::Corruption);
            prop_assert!(err.to_string().contains("tl/manifest"));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Manifest::decode(&bytes, Path::new("m"));
        }
    }
}
