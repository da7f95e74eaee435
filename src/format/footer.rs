//! The footer of a layer file: what the file is and where its index lives.
//!
//! A layer file is `data blocks ‖ key filter block ‖ index block ‖ footer body ‖ trailer`. The trailer has a fixed
//! size, so a reader finds the body from the end of the file:
//!
//! | field          | size | meaning |
//! |----------------|------|---------|
//! | **body**       |      | |
//! | version        | 2    | u16 format version, currently 2; any other (1 had no key filter) is refused as corruption naming the version |
//! | kind           | 1    | 0 = delta, 1 = image |
//! | reserved       | 1    | 0 |
//! | lsn_start      | 8    | u64, inclusive |
//! | lsn_end        | 8    | u64, exclusive (an image at LSN L has `[L, L+1)`) |
//! | index_offset   | 8    | u64 file offset of the framed index block |
//! | index_len      | 4    | u32 framed length of the index block |
//! | filter_offset  | 8    | u64 file offset of the framed key filter block |
//! | filter_len     | 4    | u32 framed length of the key filter block; 0 = no filter |
//! | entry_count    | 8    | u64 number of versions in the file |
//! | key_start      | 2 + n | u16 length and bytes, inclusive |
//! | key_end        | 1 (+ 2 + n) | presence byte, then u16 length and bytes, exclusive; absent = unbounded |
//! | **trailer**    |      | |
//! | body_len       | 4    | u32 |
//! | body_crc       | 4    | CRC32 of the body |
//! | magic          | 8    | `STRKVLYR` |

use std::ops::Range;
use std::path::Path;

use bytes::Bytes;

use super::cursor::{Cursor, put_opt_short_bytes, put_short_bytes};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::value::KeyRange;

/// The magic that ends every layer file.
pub(crate) const MAGIC: &[u8; 8] = b"STRKVLYR";
const VERSION: u16 = 2;
const BODY_LEN_AT: usize = 0;
const BODY_CRC_AT: usize = BODY_LEN_AT + 4;
const MAGIC_AT: usize = BODY_CRC_AT + 4;
/// Fixed size of the trailer that ends every layer file.
pub const FOOTER_TRAILER_LEN: usize = MAGIC_AT + MAGIC.len();
/// The most bytes a footer can take, trailer included: its fixed fields and two keys of at most
/// `u16::MAX` bytes each, with their lengths and presence byte.
pub const FOOTER_MAX_LEN: usize = 64 + 2 * (2 + u16::MAX as usize) + FOOTER_TRAILER_LEN;

/// Whether a layer holds every version in its rectangle or full values at one LSN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// Every version of its key range × LSN range.
    Delta,
    /// The full value of every live key of its key range at one LSN.
    Image,
}

impl LayerKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            LayerKind::Delta => 0,
            LayerKind::Image => 1,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<LayerKind> {
        match c {
            0 => Some(LayerKind::Delta),
            1 => Some(LayerKind::Image),
            _ => None,
        }
    }
}

/// What the footer of a layer file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Delta or image.
    pub kind: LayerKind,
    /// LSNs the layer covers, `[start, end)`.
    pub lsn_range: Range<Lsn>,
    /// Keys the layer covers.
    pub key_range: KeyRange,
    /// File offset of the framed index block.
    pub index_offset: u64,
    /// Framed length of the index block.
    pub index_len: u32,
    /// File offset of the framed key filter block (see [`KeyFilter`](super::KeyFilter)).
    pub filter_offset: u64,
    /// Framed length of the key filter block; 0 when the layer has none.
    pub filter_len: u32,
    /// Number of versions in the file.
    pub entry_count: u64,
}

impl Footer {
    /// Appends the footer body and trailer to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(self.kind.code());
        out.push(0);
        out.extend_from_slice(&self.lsn_range.start.0.to_le_bytes());
        out.extend_from_slice(&self.lsn_range.end.0.to_le_bytes());
        out.extend_from_slice(&self.index_offset.to_le_bytes());
        out.extend_from_slice(&self.index_len.to_le_bytes());
        out.extend_from_slice(&self.filter_offset.to_le_bytes());
        out.extend_from_slice(&self.filter_len.to_le_bytes());
        out.extend_from_slice(&self.entry_count.to_le_bytes());
        put_short_bytes(out, &self.key_range.start);
        put_opt_short_bytes(out, self.key_range.end.as_ref());
        let body_len = (out.len() - start) as u32;
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&body_len.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(MAGIC);
    }

    /// Decodes the footer at the end of `file`, the whole contents of the layer file at `path`.
    ///
    /// # Errors
    /// [`Corruption`](crate::ErrorKind::Corruption) naming `path` and the offset of the part that
    /// is wrong: bad magic, unknown version or kind, checksum mismatch, ranges that make no sense.
    pub fn decode(file: &[u8], path: &Path) -> Result<Footer> {
        Footer::decode_end(file, file.len() as u64, path)
    }

    /// How many bytes at the end of a layer file its footer takes, trailer included, as the
    /// trailer at the end of `tail` (the file's last bytes) says; `None` if `tail` is shorter
    /// than a trailer. Not checked: [`decode_end`](Footer::decode_end) checks it.
    pub fn len_from_trailer(tail: &[u8]) -> Option<usize> {
        let t = tail.len().checked_sub(FOOTER_TRAILER_LEN)?;
        let at = t + BODY_LEN_AT;
        let body_len = u32::from_le_bytes(tail[at..at + 4].try_into().expect("4"));
        Some(body_len as usize + FOOTER_TRAILER_LEN)
    }

    /// Decodes the footer from `tail`, the last bytes of the `file_len`-byte layer file at
    /// `path`, which must hold the whole footer (see
    /// [`len_from_trailer`](Footer::len_from_trailer)).
    ///
    /// # Errors
    /// As [`decode`](Footer::decode); also when the footer does not fit in `tail`.
    pub fn decode_end(tail: &[u8], file_len: u64, path: &Path) -> Result<Footer> {
        let n = usize::try_from(file_len).unwrap_or(usize::MAX);
        if n < FOOTER_TRAILER_LEN || tail.len() < FOOTER_TRAILER_LEN || tail.len() > n {
            return Err(Error::corruption(
                path,
                0,
                format!("file of {n} bytes is too short for a layer footer"),
            ));
        }
        // Offsets below are in the file; `tail` starts at `base`.
        let base = n - tail.len();
        let t = n - FOOTER_TRAILER_LEN;
        let trailer = &tail[t - base..];
        if &trailer[MAGIC_AT..] != MAGIC {
            return Err(Error::corruption(
                path,
                (t + MAGIC_AT) as u64,
                "bad layer magic",
            ));
        }
        let body_len =
            u32::from_le_bytes(trailer[BODY_LEN_AT..BODY_CRC_AT].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(trailer[BODY_CRC_AT..MAGIC_AT].try_into().expect("4"));
        if body_len > t {
            return Err(Error::corruption(
                path,
                t as u64,
                format!("footer length {body_len} exceeds the file"),
            ));
        }
        let b = t - body_len;
        if b < base {
            return Err(Error::corruption(
                path,
                t as u64,
                format!("footer length {body_len} exceeds the largest a footer can have"),
            ));
        }
        let body = &tail[b - base..t - base];
        if crc32fast::hash(body) != crc {
            return Err(Error::corruption(
                path,
                b as u64,
                "footer checksum mismatch",
            ));
        }
        let bad = |what: String| Error::corruption(path, b as u64, format!("footer: {what}"));
        let mut c = Cursor::new(body);
        let version = c.u16().map_err(bad)?;
        if version != VERSION {
            return Err(bad(format!("unknown format version {version}")));
        }
        let kind_code = c.u8().map_err(bad)?;
        let kind = LayerKind::from_code(kind_code)
            .ok_or_else(|| bad(format!("unknown layer kind {kind_code}")))?;
        c.u8().map_err(bad)?;
        let lsn_range = Lsn(c.u64().map_err(bad)?)..Lsn(c.u64().map_err(bad)?);
        let index_offset = c.u64().map_err(bad)?;
        let index_len = c.u32().map_err(bad)?;
        let filter_offset = c.u64().map_err(bad)?;
        let filter_len = c.u32().map_err(bad)?;
        let entry_count = c.u64().map_err(bad)?;
        let start = Bytes::copy_from_slice(c.short_bytes().map_err(bad)?);
        let end = c
            .opt_short_bytes()
            .map_err(bad)?
            .map(Bytes::copy_from_slice);
        c.expect_end().map_err(bad)?;
        if lsn_range.start >= lsn_range.end {
            return Err(bad(format!(
                "empty LSN range {}..{}",
                lsn_range.start, lsn_range.end
            )));
        }
        if end.as_ref().is_some_and(|e| *e <= start) {
            return Err(bad("empty key range".to_string()));
        }
        if index_offset
            .checked_add(u64::from(index_len))
            .is_none_or(|e| e > b as u64)
        {
            return Err(bad(format!(
                "index at {index_offset}+{index_len} overlaps the footer at {b}"
            )));
        }
        if filter_len > 0
            && filter_offset
                .checked_add(u64::from(filter_len))
                .is_none_or(|e| e > b as u64)
        {
            return Err(bad(format!(
                "key filter at {filter_offset}+{filter_len} overlaps the footer at {b}"
            )));
        }
        Ok(Footer {
            kind,
            lsn_range,
            key_range: KeyRange { start, end },
            index_offset,
            index_len,
            filter_offset,
            filter_len,
            entry_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    fn footer() -> impl Strategy<Value = Footer> {
        (
            any::<bool>(),
            0u64..u64::MAX - 10,
            1u64..10,
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 1..8)),
            0u64..1000,
            0u32..1000,
            (0u64..1000, 0u32..1000),
            any::<u64>(),
        )
            .prop_map(|(img, s, w, ks, ke, io, il, (fo, fl), n)| Footer {
                kind: if img {
                    LayerKind::Image
                } else {
                    LayerKind::Delta
                },
                lsn_range: Lsn(s)..Lsn(s + w),
                key_range: KeyRange {
                    end: ke.map(|mut e| {
                        let mut e2 = ks.clone();
                        e2.append(&mut e);
                        Bytes::from(e2)
                    }),
                    start: ks.into(),
                },
                index_offset: io,
                index_len: il,
                filter_offset: fo,
                filter_len: fl,
                entry_count: n,
            })
    }

    #[test]
    fn footer_table_decodes_a_hand_built_example() {
        // 100 bytes standing for the data blocks, key filter block and index block.
        let mut file = vec![0xEE; 100];
        let mut body = Vec::new();
        body.extend_from_slice(&2u16.to_le_bytes()); // version
        body.push(1); // kind: 1 = image
        body.push(0); // reserved
        body.extend_from_slice(&41u64.to_le_bytes()); // lsn_start
        body.extend_from_slice(&42u64.to_le_bytes()); // lsn_end: an image at 41 has [41, 42)
        body.extend_from_slice(&60u64.to_le_bytes()); // index_offset
        body.extend_from_slice(&40u32.to_le_bytes()); // index_len
        body.extend_from_slice(&10u64.to_le_bytes()); // filter_offset
        body.extend_from_slice(&50u32.to_le_bytes()); // filter_len
        body.extend_from_slice(&3u64.to_le_bytes()); // entry_count
        body.extend_from_slice(&5u16.to_le_bytes()); // key_start: u16 length
        body.extend_from_slice(b"apple"); // key_start: bytes
        body.push(1); // key_end: presence byte
        body.extend_from_slice(&3u16.to_le_bytes()); // key_end: u16 length
        body.extend_from_slice(b"fig"); // key_end: bytes
        file.extend_from_slice(&body);
        file.extend_from_slice(&(body.len() as u32).to_le_bytes()); // body_len
        file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes()); // body_crc
        file.extend_from_slice(b"STRKVLYR"); // magic
        assert_eq!(FOOTER_TRAILER_LEN, 16);

        let want = Footer {
            kind: LayerKind::Image,
            lsn_range: Lsn(41)..Lsn(42),
            key_range: KeyRange {
                start: Bytes::from_static(b"apple"),
                end: Some(Bytes::from_static(b"fig")),
            },
            index_offset: 60,
            index_len: 40,
            filter_offset: 10,
            filter_len: 50,
            entry_count: 3,
        };
        assert_eq!(Footer::decode(&file, Path::new("f")).unwrap(), want);
        let mut encoded = vec![0xEE; 100];
        want.encode_into(&mut encoded);
        assert_eq!(encoded, file);

        // A delta without a filter and with no upper key bound.
        let mut file = vec![0xEE; 100];
        let mut body = Vec::new();
        body.extend_from_slice(&2u16.to_le_bytes()); // version
        body.push(0); // kind: 0 = delta
        body.push(0); // reserved
        body.extend_from_slice(&10u64.to_le_bytes()); // lsn_start
        body.extend_from_slice(&20u64.to_le_bytes()); // lsn_end
        body.extend_from_slice(&90u64.to_le_bytes()); // index_offset
        body.extend_from_slice(&10u32.to_le_bytes()); // index_len
        body.extend_from_slice(&0u64.to_le_bytes()); // filter_offset
        body.extend_from_slice(&0u32.to_le_bytes()); // filter_len: 0 = no filter
        body.extend_from_slice(&9u64.to_le_bytes()); // entry_count
        body.extend_from_slice(&0u16.to_le_bytes()); // key_start: empty
        body.push(0); // key_end: absent = unbounded
        file.extend_from_slice(&body);
        file.extend_from_slice(&(body.len() as u32).to_le_bytes()); // body_len
        file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes()); // body_crc
        file.extend_from_slice(b"STRKVLYR"); // magic

        let want = Footer {
            kind: LayerKind::Delta,
            lsn_range: Lsn(10)..Lsn(20),
            key_range: KeyRange {
                start: Bytes::new(),
                end: None,
            },
            index_offset: 90,
            index_len: 10,
            filter_offset: 0,
            filter_len: 0,
            entry_count: 9,
        };
        assert_eq!(Footer::decode(&file, Path::new("f")).unwrap(), want);
        let mut encoded = vec![0xEE; 100];
        want.encode_into(&mut encoded);
        assert_eq!(encoded, file);
    }

    proptest! {
        #[test]
        fn round_trip(f in footer()) {
            let mut file = vec![0u8; 2000];
            f.encode_into(&mut file);
            prop_assert_eq!(Footer::decode(&file, Path::new("f")).unwrap(), f);
        }

        /// Decoding from the file's last bytes, as a layer file is opened: any tail that holds
        /// the footer gives it, the length the trailer names is the footer's, and a tail that
        /// cuts the footer is an error, never a wrong footer.
        #[test]
        fn decodes_from_the_tail_of_the_file(f in footer(), cut in 0usize..2000) {
            let mut file = vec![0u8; 2000];
            f.encode_into(&mut file);
            let len = file.len() - 2000;
            prop_assert_eq!(Footer::len_from_trailer(&file), Some(len));
            prop_assert!(len <= FOOTER_MAX_LEN);
            let n = file.len() as u64;
            let tail = &file[cut.min(file.len() - len)..];
            prop_assert_eq!(Footer::decode_end(tail, n, Path::new("f")).unwrap(), f);
            let short = &file[file.len() - len + 1..];
            prop_assert_eq!(
                Footer::decode_end(short, n, Path::new("f")).unwrap_err().kind(),
                ErrorKind::Corruption
            );
        }

        #[test]
        fn bit_flips_in_footer_are_detected(f in footer(), pick in any::<usize>()) {
            let mut file = vec![0u8; 2000];
            f.encode_into(&mut file);
            let footer_bits = (file.len() - 2000) * 8;
            let bit = 2000 * 8 + pick % footer_bits;
            file[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(Footer::decode(&file, Path::new("f")).unwrap_err().kind(), ErrorKind::Corruption);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Footer::decode(&bytes, Path::new("f"));
        }
    }
}
