//! Data blocks: the versions of a layer file, sorted by `(key, lsn)`.
//!
//! A raw data block (before [framing](super::block)) is a run of entries, then an offset table
//! that lets a reader binary-search the block:
//!
//! | field        | size          | meaning |
//! |--------------|---------------|---------|
//! | entry 0..n   | variable      | see below, sorted by key then LSN |
//! | offsets      | 4 × n         | u32 offset of each entry from the block start |
//! | n            | 4             | u32 entry count |
//!
//! An entry:
//!
//! | field     | size | meaning |
//! |-----------|------|---------|
//! | key_len   | 2    | u16 |
//! | key       | key_len | |
//! | lsn       | 8    | u64 |
//! | tag       | 1    | 0 = image, 1 = delta, 2 = delta with `will_init`, 3 = tombstone |
//! | value_len | 4    | u32; 0 for a tombstone |
//! | value     | value_len | image bytes or delta record |

use std::cmp::Ordering;
use std::path::Path;

use bytes::Bytes;

use super::cursor::{Cursor, put_short_bytes};
use super::key_order::OrdKey;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::value::Value;

const TAG_IMAGE: u8 = 0;
const TAG_DELTA: u8 = 1;
const TAG_DELTA_INIT: u8 = 2;
const TAG_TOMBSTONE: u8 = 3;

const COUNT_LEN: usize = 4;
const OFFSET_LEN: usize = 4;

/// Builds one raw data block.
#[derive(Default)]
pub struct DataBlockBuilder {
    buf: Vec<u8>,
    offsets: Vec<u32>,
}

impl DataBlockBuilder {
    /// Appends an entry; entries must come in `(key, lsn)` order.
    pub fn add(&mut self, key: &[u8], lsn: Lsn, value: &Value) {
        self.offsets.push(self.buf.len() as u32);
        put_short_bytes(&mut self.buf, key);
        self.buf.extend_from_slice(&lsn.0.to_le_bytes());
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
        self.buf.push(tag);
        self.buf
            .extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(body);
    }

    /// Bytes the finished block will take, before framing.
    pub fn len(&self) -> usize {
        self.buf.len() + self.offsets.len() * OFFSET_LEN + COUNT_LEN
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Finishes the block into `out` and resets the builder.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.buf);
        for o in &self.offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        out.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        self.buf.clear();
        self.offsets.clear();
    }
}

/// One decoded entry; its key and value borrow the block's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The LSN of this version.
    pub lsn: Lsn,
    /// The version.
    pub value: Value,
}

/// Where one entry of a [`DataBlock`] is, with its key's [`OrdKey::head`]: a search probes
/// these, a dense array, and lands on its entry without reading the block's offset table.
#[derive(Clone, Copy, Debug)]
struct Probe {
    head: u64,
    start: u32,
    end: u32,
}

/// A checked, decoded data block.
///
/// Every key in a block shares the first and last key's common prefix, often most of the key
/// (a table, a relation); the heads the search probes are taken after it, so that they tell
/// the keys apart.
#[derive(Clone, Debug)]
pub struct DataBlock {
    data: Bytes,
    /// One probe per entry, in entry order.
    table: Box<[Probe]>,
    /// Length of the prefix every key in the block shares.
    prefix_len: u32,
}

/// Where a searched key falls against the prefix every key of a block or file shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Below every key: it is smaller than the prefix, or a proper prefix of it.
    Below,
    /// It starts with the prefix; its head after the prefix is this.
    Within(u64),
    /// Above every key.
    Above,
}

impl Side {
    /// Where `key` falls against `prefix`, knowing only the bytes of `prefix`.
    pub(crate) fn of(key: &[u8], prefix: &[u8]) -> Side {
        let n = prefix.len().min(key.len());
        match key[..n].cmp(&prefix[..n]) {
            Ordering::Less => Side::Below,
            Ordering::Greater => Side::Above,
            Ordering::Equal if key.len() < prefix.len() => Side::Below,
            Ordering::Equal => Side::Within(OrdKey::new(&key[prefix.len()..]).head()),
        }
    }
}

/// The key and LSN of entry `i`, whose bytes are `e`: the binary searches' inner step, so
/// decoded by hand rather than with a `Cursor`.
fn key_lsn_of(e: &[u8], i: usize) -> std::result::Result<(&[u8], Lsn), String> {
    if let Some((len, rest)) = e.split_first_chunk::<2>() {
        let n = usize::from(u16::from_le_bytes(*len));
        if let (Some(key), Some(lsn)) = (
            rest.get(..n),
            rest.get(n..).and_then(<[u8]>::first_chunk::<8>),
        ) {
            return Ok((key, Lsn(u64::from_le_bytes(*lsn))));
        }
    }
    Err(format!(
        "entry {i}: {} bytes, too short for its key and LSN",
        e.len()
    ))
}

/// Length of the prefix `a` and `b` share.
pub(crate) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl DataBlock {
    /// Parses the offset table of a raw block that came from `path` at `offset`.
    ///
    /// # Errors
    /// [`Corruption`](crate::ErrorKind::Corruption) when the table does not fit the block.
    pub fn parse(data: Bytes, path: &Path, offset: u64) -> Result<DataBlock> {
        let bad = |what: String| Error::corruption(path, offset, format!("data block: {what}"));
        if data.len() < COUNT_LEN {
            return Err(bad(format!("{} bytes is too short", data.len())));
        }
        let count =
            u32::from_le_bytes(data[data.len() - COUNT_LEN..].try_into().expect("4")) as usize;
        let table_len = count
            .checked_mul(OFFSET_LEN)
            .filter(|t| t + COUNT_LEN <= data.len())
            .ok_or_else(|| {
                bad(format!(
                    "entry count {count} does not fit {} bytes",
                    data.len()
                ))
            })?;
        let offsets_at = data.len() - COUNT_LEN - table_len;
        let entries_end = u32::try_from(offsets_at)
            .map_err(|_| bad(format!("{} bytes is too long", data.len())))?;
        let offsets = &data[offsets_at..offsets_at + table_len];
        // Every offset must point inside the entry area, in increasing order; each entry ends
        // where the next begins, the last where the offset table begins.
        let mut table = Vec::with_capacity(count);
        for (i, o) in offsets.chunks_exact(OFFSET_LEN).enumerate() {
            let start = u32::from_le_bytes(o.try_into().expect("4"));
            if start as usize >= offsets_at
                || table.last().is_some_and(|p: &Probe| start <= p.start)
            {
                return Err(bad(format!(
                    "entry {i} offset {start} out of order or past {offsets_at}"
                )));
            }
            if let Some(prev) = table.last_mut() {
                prev.end = start;
            }
            table.push(Probe {
                head: 0,
                start,
                end: entries_end,
            });
        }
        let mut block = DataBlock {
            data,
            table: table.into_boxed_slice(),
            prefix_len: 0,
        };
        if count == 0 {
            return Ok(block);
        }
        let first = block.key_lsn(0).map_err(&bad)?.0;
        let last = block.key_lsn(count - 1).map_err(&bad)?.0;
        let p = common_prefix(first, last);
        block.prefix_len = p as u32;
        let DataBlock { data, table, .. } = &mut block;
        let entry = |e: &Probe| &data[e.start as usize..e.end as usize];
        let prefix = &key_lsn_of(entry(&table[0]), 0).map_err(&bad)?.0[..p];
        for (i, e) in table.iter_mut().enumerate() {
            let key = key_lsn_of(entry(e), i).map_err(&bad)?.0;
            // Sorted keys between two with a common prefix have it too; a block whose keys do
            // not is out of order, and a search in it would answer wrong.
            if !key.starts_with(prefix) {
                return Err(bad(format!("entry {i}: key out of order")));
            }
            e.head = OrdKey::new(&key[p..]).head();
        }
        Ok(block)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the block has no entries.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The bytes of entry `i`.
    fn entry_bytes(&self, i: usize) -> &[u8] {
        let p = self.table[i];
        &self.data[p.start as usize..p.end as usize]
    }

    /// The key and LSN of entry `i`, without decoding its value.
    pub fn key_lsn(&self, i: usize) -> std::result::Result<(&[u8], Lsn), String> {
        key_lsn_of(self.entry_bytes(i), i)
    }

    /// Decodes entry `i` (`i < len()`); the value shares the block's memory.
    pub fn entry(&self, i: usize) -> std::result::Result<Entry<'_>, String> {
        let start = self.table[i].start as usize;
        let mut c = Cursor::new(self.entry_bytes(i));
        let key = c.short_bytes()?;
        let lsn = Lsn(c.u64()?);
        let tag = c.u8()?;
        let len = c.u32()? as usize;
        let at = start + c.pos();
        c.take(len)?;
        c.expect_end()?;
        let body = || self.data.slice(at..at + len);
        let value = match tag {
            TAG_IMAGE => Value::Image(body()),
            TAG_DELTA => Value::Delta {
                record: body(),
                will_init: false,
            },
            TAG_DELTA_INIT => Value::Delta {
                record: body(),
                will_init: true,
            },
            TAG_TOMBSTONE if len == 0 => Value::Tombstone,
            t => return Err(format!("entry {i}: bad tag {t} with {len} value bytes")),
        };
        Ok(Entry { key, lsn, value })
    }

    /// Index of the last entry at or below `(key, lsn)`, or `None` if every entry is above it.
    pub fn seek_le(&self, key: &[u8], lsn: Lsn) -> std::result::Result<Option<usize>, String> {
        let (mut lo, mut hi) = self.same_head(key);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (k, l) = self.key_lsn(mid)?;
            match k.cmp(key).then(l.cmp(&lsn)) {
                Ordering::Greater => hi = mid,
                _ => lo = mid + 1,
            }
        }
        // The entry found is the one the caller reads next: checking the prefix against it
        // costs no further cache line.
        Ok(match self.side(key, lo.saturating_sub(1))? {
            Side::Below => None,
            Side::Above => self.len().checked_sub(1),
            Side::Within(_) => lo.checked_sub(1),
        })
    }

    /// Index of the first entry at or above `key` (any LSN), or `len()` if none.
    pub fn seek_key_ge(&self, key: &[u8]) -> std::result::Result<usize, String> {
        let (mut lo, mut hi) = self.same_head(key);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key_lsn(mid)?.0 < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(
            match self.side(key, lo.min(self.len().saturating_sub(1)))? {
                Side::Below => 0,
                Side::Above => self.len(),
                Side::Within(_) => lo,
            },
        )
    }

    /// The entries whose head (after the block's shared prefix) is `key`'s, as `lo..hi`,
    /// supposing `key` has that prefix: every entry before `lo` has a smaller key, every entry
    /// from `hi` on a larger one. A search checks the supposition with [`side`](Self::side).
    fn same_head(&self, key: &[u8]) -> (usize, usize) {
        let p = self.prefix_len as usize;
        let h = OrdKey::new(key.get(p..).unwrap_or_default()).head();
        // The binary search's probes depend on each other; fetching the table's lines at once
        // overlaps their misses (a 4 KiB block's table is about 8 lines).
        crate::hint::prefetch_slice(&self.table, 16);
        let lo = self.table.partition_point(|e| e.head < h);
        (lo, lo + self.table[lo..].partition_point(|e| e.head == h))
    }

    /// Where `key` falls against the block's shared prefix, read from entry `i`'s key.
    fn side(&self, key: &[u8], i: usize) -> std::result::Result<Side, String> {
        if self.is_empty() {
            return Ok(Side::Below);
        }
        let p = self.prefix_len as usize;
        Ok(Side::of(key, &self.key_lsn(i)?.0[..p]))
    }

    /// Bytes of the decoded block, for cache accounting.
    pub fn byte_len(&self) -> usize {
        self.data.len() + std::mem::size_of_val(&*self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    fn value_strategy() -> impl Strategy<Value = Value> {
        let body = proptest::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            body.clone().prop_map(Value::image),
            body.clone().prop_map(Value::delta),
            body.prop_map(Value::init_delta),
            Just(Value::Tombstone),
        ]
    }

    /// Keys from a small alphabet, up to 12 bytes: many share their first 8 bytes (the
    /// searches' integer heads) or are prefixes of each other.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![4 => Just(0u8), 4 => Just(1u8), 1 => Just(0xFFu8), 1 => any::<u8>()];
        proptest::collection::vec(byte, 0..12)
    }

    fn entries() -> impl Strategy<Value = Vec<(Vec<u8>, u64, Value)>> {
        proptest::collection::btree_map((key(), 0..8u64), value_strategy(), 0..60)
            .prop_map(|m| m.into_iter().map(|((k, l), v)| (k, l, v)).collect())
    }

    fn build(entries: &[(Vec<u8>, u64, Value)]) -> Bytes {
        let mut b = DataBlockBuilder::default();
        for (k, l, v) in entries {
            b.add(k, Lsn(*l), v);
        }
        let mut out = Vec::new();
        let expect_len = b.len();
        b.finish_into(&mut out);
        assert_eq!(out.len(), expect_len);
        out.into()
    }

    proptest! {
        #[test]
        fn round_trip_and_seek(
            entries in entries(),
            prefix in key(),
            probe_key in key(),
            probe_prefixed in any::<bool>(),
            probe_lsn in 0..9u64,
        ) {
            // Every key gets the same prefix, as keys of one table do; probes with and without
            // it land inside, before and after the block.
            let with_prefix = |k: &[u8]| [&prefix[..], k].concat();
            let entries: Vec<_> = entries.into_iter().map(|(k, l, v)| (with_prefix(&k), l, v)).collect();
            let probe_key = if probe_prefixed { with_prefix(&probe_key) } else { probe_key };
            let block = DataBlock::parse(build(&entries), Path::new("f"), 0).unwrap();
            prop_assert_eq!(block.len(), entries.len());
            for (i, (k, l, v)) in entries.iter().enumerate() {
                let e = block.entry(i).unwrap();
                prop_assert_eq!(e.key, &k[..]);
                prop_assert_eq!(e.lsn, Lsn(*l));
                prop_assert_eq!(&e.value, v);
            }
            let want = entries.iter().rposition(|(k, l, _)| (&k[..], *l) <= (&probe_key[..], probe_lsn));
            prop_assert_eq!(block.seek_le(&probe_key, Lsn(probe_lsn)).unwrap(), want);
            let want_ge = entries.iter().position(|(k, _, _)| k[..] >= probe_key[..]).unwrap_or(entries.len());
            prop_assert_eq!(block.seek_key_ge(&probe_key).unwrap(), want_ge);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(block) = DataBlock::parse(bytes.into(), Path::new("f"), 0) {
                for i in 0..block.len() {
                    let _ = block.entry(i);
                }
                let _ = block.seek_le(b"k", Lsn(5));
            }
        }
    }

    #[test]
    fn bad_offset_table_is_corruption() {
        let mut raw = build(&[
            (b"a".to_vec(), 1, Value::Tombstone),
            (b"b".to_vec(), 1, Value::Tombstone),
        ])
        .to_vec();
        let n = raw.len();
        raw[n - 4] = 200; // entry count far past the block
        let err = DataBlock::parse(raw.into(), Path::new("x.layer"), 77).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.to_string().contains("x.layer at offset 77"), "{err}");
    }
}
