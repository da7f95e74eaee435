//! The block index of a layer file: where each data block starts and what it starts with.
//!
//! A raw index block (framed like every block):
//!
//! | field       | size | meaning |
//! |-------------|------|---------|
//! | count       | 4    | u32 number of data blocks |
//! | per block:  |      | |
//! | key_len     | 2    | u16 length of the block's first key |
//! | first_key   | key_len | |
//! | first_lsn   | 8    | u64 LSN of the block's first entry |
//! | offset      | 8    | u64 file offset of the framed block |
//! | len         | 4    | u32 framed length |

use std::path::Path;

use bytes::Bytes;

use super::cursor::{Cursor, put_short_bytes};
use crate::error::{Error, Result};
use crate::lsn::Lsn;

/// Where one data block lives and the first `(key, lsn)` it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The block's first key.
    pub first_key: Bytes,
    /// The LSN of the block's first entry.
    pub first_lsn: Lsn,
    /// File offset of the framed block.
    pub offset: u64,
    /// Framed length.
    pub len: u32,
}

/// Encodes the raw index block.
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * 40);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        put_short_bytes(&mut out, &e.first_key);
        out.extend_from_slice(&e.first_lsn.0.to_le_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
    }
    out
}

/// Decodes a raw index block read from `path` at `offset`.
///
/// # Errors
/// [`Corruption`](crate::ErrorKind::Corruption) when it is truncated, has trailing bytes, or is
/// not in `(key, lsn)` order.
pub fn decode_index(raw: &[u8], path: &Path, offset: u64) -> Result<Vec<IndexEntry>> {
    let bad = |what: String| Error::corruption(path, offset, format!("index block: {what}"));
    let mut c = Cursor::new(raw);
    let count = c.u32().map_err(bad)? as usize;
    // Each entry takes at least 22 bytes: refuse a count the block cannot hold before allocating.
    if count > c.remaining() / 22 {
        return Err(bad(format!(
            "count {count} does not fit {} bytes",
            raw.len()
        )));
    }
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(count);
    for _ in 0..count {
        let first_key = Bytes::copy_from_slice(c.short_bytes().map_err(bad)?);
        let first_lsn = Lsn(c.u64().map_err(bad)?);
        let off = c.u64().map_err(bad)?;
        let len = c.u32().map_err(bad)?;
        if let Some(prev) = entries.last()
            && (&prev.first_key, prev.first_lsn) > (&first_key, first_lsn)
        {
            return Err(bad(format!("entry {} is out of order", entries.len())));
        }
        entries.push(IndexEntry {
            first_key,
            first_lsn,
            offset: off,
            len,
        });
    }
    c.expect_end().map_err(bad)?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(keys in proptest::collection::btree_set((proptest::collection::vec(any::<u8>(), 0..8), any::<u64>()), 0..50)) {
            let entries: Vec<IndexEntry> = keys.into_iter().enumerate().map(|(i, (k, l))| IndexEntry {
                first_key: k.into(), first_lsn: Lsn(l), offset: i as u64 * 100, len: 99,
            }).collect();
            let raw = encode_index(&entries);
            prop_assert_eq!(decode_index(&raw, Path::new("f"), 0).unwrap(), entries);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_index(&bytes, Path::new("f"), 0);
        }
    }

    #[test]
    fn index_table_decodes_a_hand_built_example() {
        let mut b = Vec::new();
        b.extend_from_slice(&2u32.to_le_bytes()); // count
        // Block 1.
        b.extend_from_slice(&5u16.to_le_bytes()); // key_len
        b.extend_from_slice(b"apple"); // first_key
        b.extend_from_slice(&7u64.to_le_bytes()); // first_lsn
        b.extend_from_slice(&0u64.to_le_bytes()); // offset
        b.extend_from_slice(&4105u32.to_le_bytes()); // len
        // Block 2.
        b.extend_from_slice(&6u16.to_le_bytes()); // key_len
        b.extend_from_slice(b"banana"); // first_key
        b.extend_from_slice(&3u64.to_le_bytes()); // first_lsn
        b.extend_from_slice(&4105u64.to_le_bytes()); // offset
        b.extend_from_slice(&2000u32.to_le_bytes()); // len

        let want = vec![
            IndexEntry {
                first_key: Bytes::from_static(b"apple"),
                first_lsn: Lsn(7),
                offset: 0,
                len: 4105,
            },
            IndexEntry {
                first_key: Bytes::from_static(b"banana"),
                first_lsn: Lsn(3),
                offset: 4105,
                len: 2000,
            },
        ];
        assert_eq!(decode_index(&b, Path::new("f"), 0).unwrap(), want);
        assert_eq!(encode_index(&want), b);
    }

    #[test]
    fn truncation_and_disorder_are_corruption() {
        let e = |k: &'static [u8]| IndexEntry {
            first_key: Bytes::from_static(k),
            first_lsn: Lsn(1),
            offset: 0,
            len: 1,
        };
        let raw = encode_index(&[e(b"a"), e(b"b")]);
        for n in 0..raw.len() {
            assert_eq!(
                decode_index(&raw[..n], Path::new("f"), 0)
                    .unwrap_err()
                    .kind(),
                ErrorKind::Corruption
            );
        }
        let raw = encode_index(&[e(b"b"), e(b"a")]);
        assert_eq!(
            decode_index(&raw, Path::new("f"), 9).unwrap_err().kind(),
            ErrorKind::Corruption
        );
    }
}
