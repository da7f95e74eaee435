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
use crate::value::{Value, ValueRef};

const TAG_IMAGE: u8 = 0;
const TAG_DELTA: u8 = 1;
const TAG_DELTA_INIT: u8 = 2;
const TAG_TOMBSTONE: u8 = 3;

const COUNT_LEN: usize = 4;
const OFFSET_LEN: usize = 4;
/// Bytes of one search head.
const HEAD_LEN: usize = 8;

/// Builds one raw data block.
#[derive(Default)]
pub struct DataBlockBuilder {
    buf: Vec<u8>,
    offsets: Vec<u32>,
}

impl DataBlockBuilder {
    /// Appends an entry; entries must come in `(key, lsn)` order. (The store's writers pass
    /// borrowed values, [`add_ref`](Self::add_ref); this is for tests and `internals`.)
    #[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
    pub fn add(&mut self, key: &[u8], lsn: Lsn, value: &Value) {
        self.add_ref(key, lsn, value.into());
    }

    /// As [`add`](Self::add), from a borrowed value.
    pub(crate) fn add_ref(&mut self, key: &[u8], lsn: Lsn, value: ValueRef<'_>) {
        self.offsets.push(self.buf.len() as u32);
        put_short_bytes(&mut self.buf, key);
        self.buf.extend_from_slice(&lsn.0.to_le_bytes());
        let (tag, body): (u8, &[u8]) = match value {
            ValueRef::Image(b) => (TAG_IMAGE, b),
            ValueRef::Delta {
                record,
                will_init: false,
            } => (TAG_DELTA, record),
            ValueRef::Delta {
                record,
                will_init: true,
            } => (TAG_DELTA_INIT, record),
            ValueRef::Tombstone => (TAG_TOMBSTONE, &[]),
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
    #[cfg_attr(
        not(any(test, feature = "internals")),
        expect(
            dead_code,
            reason = "used by the fuzz targets and tests through `stratakv::internals`"
        )
    )]
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

/// A block whose entries are all at most this many bytes goes into the block cache's arena (see
/// [`DataBlock::parse_with`]); values read from it are copied out, so that a value a caller
/// keeps never pins arena memory.
pub const SMALL_VALUE: usize = 1024;

/// A checked, decoded data block.
///
/// Its memory is the raw block followed by one search head per entry: the entry's key's
/// `OrdKey::head` taken after the prefix every key in the block shares (often most of the
/// key: a table, a relation), so that the heads tell the keys apart. A search probes the heads,
/// a dense array beside the entries, and lands on its entry; keeping both in one allocation
/// keeps a read to few pages.
#[derive(Clone, Debug)]
pub struct DataBlock {
    /// The raw block (entries, offset table, count), then a native-endian `u64` head per entry.
    buf: BlockBuf,
    /// Where the entries end and the offset table begins.
    entries_end: u32,
    /// Number of entries.
    count: u32,
    /// Length of the prefix every key in the block shares.
    prefix_len: u32,
    /// Whether `buf` is in the cache's arena: values are then copied out, never lent.
    in_arena: bool,
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

/// The bytes of entry `i` of the raw block `raw`, whose offset table starts at `entries_end` and
/// holds `count` offsets, checked in increasing order and inside the entries.
fn raw_entry(raw: &[u8], entries_end: usize, count: usize, i: usize) -> &[u8] {
    let at = entries_end + OFFSET_LEN * i;
    let offset =
        |at: usize| u32::from_le_bytes(raw[at..at + OFFSET_LEN].try_into().expect("4")) as usize;
    let end = if i + 1 < count {
        offset(at + OFFSET_LEN)
    } else {
        entries_end
    };
    &raw[offset(at)..end]
}

/// The first index in `lo..hi` for which `pred` is false, `pred` being true before it and
/// false from it on.
fn partition(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// As [`partition`], for a `pred` that usually holds for few indexes from `lo` on: probes
/// `lo`, `lo + 1`, `lo + 2`, `lo + 4`, ... until `pred` fails, then searches between the last
/// two probes, so that the common answer reads neighbouring lines rather than lines all over
/// `lo..hi`.
pub(crate) fn partition_near(lo: usize, hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    // `pred` holds below `held`.
    let (mut held, mut probe, mut step) = (lo, lo, 1);
    while probe < hi && pred(probe) {
        held = probe + 1;
        probe = lo + step;
        step *= 2;
    }
    partition(held, probe.min(hi), pred)
}

/// Memory for a block in the block cache: given a length and a function that fills that
/// many bytes, returns them.
pub type Alloc<'a> = dyn FnMut(usize, &mut dyn FnMut(&mut [u8])) -> BlockBuf + 'a;

/// The memory of a decoded block: shared bytes, or bytes another owner keeps alive (a chunk of
/// the block cache's arena), reached without an allocation of their own.
#[derive(Clone)]
pub enum BlockBuf {
    /// Bytes values can be lent from.
    Shared(Bytes),
    /// Bytes inside memory that `owner` keeps alive; values are copied out of them.
    Pinned(Pinned),
}

impl From<Bytes> for BlockBuf {
    fn from(b: Bytes) -> BlockBuf {
        BlockBuf::Shared(b)
    }
}

impl std::fmt::Debug for BlockBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockBuf::Shared(b) => write!(f, "Shared({} bytes)", b.len()),
            BlockBuf::Pinned(p) => write!(f, "Pinned({} bytes)", p.len),
        }
    }
}

impl std::ops::Deref for BlockBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            BlockBuf::Shared(b) => b,
            BlockBuf::Pinned(p) => p.bytes(),
        }
    }
}

/// Bytes inside memory an owner keeps alive. Making one allocates nothing: the owner is an
/// `Arc` the caller holds already (a block cache chunk), cloned. A thread that cached a block
/// used to allocate a `Bytes` owner for it, which grew that thread's heap now and then: an
/// `mprotect`, waiting on the process's memory-map lock (see `crate::pages`).
#[derive(Clone)]
pub struct Pinned {
    /// Keeps the bytes alive; never read.
    _owner: std::sync::Arc<dyn Send + Sync>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the bytes are never written while a `Pinned` covers them (see `Pinned::new`), and
// the owner, which keeps them alive, is `Send + Sync`.
unsafe impl Send for Pinned {}
// SAFETY: as for `Send`.
unsafe impl Sync for Pinned {}

impl Pinned {
    /// The `len` bytes at `ptr`.
    ///
    /// # Safety
    /// They are initialised, stay valid as long as `owner` lives, and no one writes them while
    /// this or a clone of it lives.
    pub unsafe fn new(
        owner: std::sync::Arc<dyn Send + Sync>,
        ptr: *const u8,
        len: usize,
    ) -> Pinned {
        Pinned {
            _owner: owner,
            ptr,
            len,
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: as `new` requires, for as long as `self` holds `owner`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// What checking a raw block found: where its parts are and what its keys share.
struct Layout {
    entries_end: u32,
    count: u32,
    prefix_len: u32,
    small_entries: bool,
}

impl Layout {
    /// Checks the raw block that came from `path` at `offset`: its offset table, that each
    /// entry holds a key and an LSN, and that the keys share the first and last keys' prefix.
    fn check(raw: &[u8], path: &Path, offset: u64) -> Result<Layout> {
        let bad = |what: String| Error::corruption(path, offset, format!("data block: {what}"));
        if raw.len() < COUNT_LEN {
            return Err(bad(format!("{} bytes is too short", raw.len())));
        }
        let count =
            u32::from_le_bytes(raw[raw.len() - COUNT_LEN..].try_into().expect("4")) as usize;
        let table_len = count
            .checked_mul(OFFSET_LEN)
            .filter(|t| t + COUNT_LEN <= raw.len())
            .ok_or_else(|| {
                bad(format!(
                    "entry count {count} does not fit {} bytes",
                    raw.len()
                ))
            })?;
        let entries_end = raw.len() - COUNT_LEN - table_len;
        let entries_end_u32 = u32::try_from(entries_end)
            .map_err(|_| bad(format!("{} bytes is too long", raw.len())))?;
        // Every offset must point inside the entry area, in increasing order; each entry ends
        // where the next begins, the last where the offset table begins.
        let mut prev = None;
        for (i, o) in raw[entries_end..entries_end + table_len]
            .chunks_exact(OFFSET_LEN)
            .enumerate()
        {
            let start = u32::from_le_bytes(o.try_into().expect("4"));
            if start >= entries_end_u32 || prev.is_some_and(|p| start <= p) {
                return Err(bad(format!(
                    "entry {i} offset {start} out of order or past {entries_end}"
                )));
            }
            prev = Some(start);
        }
        let entry = |i| raw_entry(raw, entries_end, count, i);
        let mut prefix_len = 0;
        let mut small_entries = true;
        if count > 0 {
            let first = key_lsn_of(entry(0), 0).map_err(&bad)?.0;
            let last = key_lsn_of(entry(count - 1), count - 1).map_err(&bad)?.0;
            prefix_len = common_prefix(first, last);
            let prefix = &first[..prefix_len];
            for i in 0..count {
                let e = entry(i);
                small_entries &= e.len() <= SMALL_VALUE;
                let key = key_lsn_of(e, i).map_err(&bad)?.0;
                // Sorted keys between two with a common prefix have it too; a block whose keys
                // do not is out of order, and a search in it would answer wrong.
                if !key.starts_with(prefix) {
                    return Err(bad(format!("entry {i}: key out of order")));
                }
            }
        }
        Ok(Layout {
            entries_end: entries_end_u32,
            count: count as u32,
            // A key is at most `u16::MAX` bytes.
            prefix_len: prefix_len as u32,
            small_entries,
        })
    }

    /// Bytes of the decoded block: the raw block and a head per entry.
    fn buf_len(&self, raw: &[u8]) -> usize {
        raw.len() + HEAD_LEN * self.count as usize
    }

    /// The search head of each entry of the checked block `raw`, in order.
    fn heads<'a>(&'a self, raw: &'a [u8]) -> impl Iterator<Item = u64> + 'a {
        let (end, count, p) = (
            self.entries_end as usize,
            self.count as usize,
            self.prefix_len as usize,
        );
        (0..count).map(move |i| {
            let key = key_lsn_of(raw_entry(raw, end, count, i), i)
                .expect("checked")
                .0;
            OrdKey::new(&key[p..]).head()
        })
    }

    /// The checked block `raw`, with its heads, in memory of its own.
    fn owned(&self, raw: &[u8]) -> DataBlock {
        let mut buf = Vec::with_capacity(self.buf_len(raw));
        buf.extend_from_slice(raw);
        for h in self.heads(raw) {
            buf.extend_from_slice(&h.to_ne_bytes());
        }
        self.block(Bytes::from(buf).into(), false)
    }

    /// The block over `buf`, the raw block and its heads.
    fn block(&self, buf: BlockBuf, in_arena: bool) -> DataBlock {
        DataBlock {
            buf,
            entries_end: self.entries_end,
            count: self.count,
            prefix_len: self.prefix_len,
            in_arena,
        }
    }
}

impl DataBlock {
    /// Checks a raw block that came from `path` at `offset` (its offset table and key order)
    /// and copies it, with its search heads, into a buffer of its own.
    ///
    /// # Errors
    /// [`Corruption`](crate::ErrorKind::Corruption) when the table does not fit the block or the
    /// keys are out of order.
    pub fn parse(raw: &[u8], path: &Path, offset: u64) -> Result<DataBlock> {
        Ok(Layout::check(raw, path, offset)?.owned(raw))
    }

    /// As [`parse`](Self::parse), for the block cache: if no entry is longer than
    /// `SMALL_VALUE` (1024) bytes, the block is built in memory from `alloc` (the cache's
    /// arena), which is given the length and a function that fills it, and values read from
    /// it are copied out.
    ///
    /// # Errors
    /// As [`parse`](Self::parse).
    pub fn parse_with(
        raw: &[u8],
        path: &Path,
        offset: u64,
        alloc: &mut Alloc<'_>,
    ) -> Result<DataBlock> {
        let layout = Layout::check(raw, path, offset)?;
        if !layout.small_entries {
            return Ok(layout.owned(raw));
        }
        let buf = alloc(layout.buf_len(raw), &mut |dst| {
            let (body, heads) = dst.split_at_mut(raw.len());
            body.copy_from_slice(raw);
            for (d, h) in heads.chunks_exact_mut(HEAD_LEN).zip(layout.heads(raw)) {
                d.copy_from_slice(&h.to_ne_bytes());
            }
        });
        Ok(layout.block(buf, true))
    }

    /// A copy of this block for the block cache. If no entry is larger than `SMALL_VALUE`
    /// bytes, its memory is a copy made by `alloc` (the cache's arena) and values read from it
    /// are copied out; otherwise it shares this block's memory. The cache builds its blocks
    /// with [`parse_with`](Self::parse_with); tests compare the two.
    #[cfg(test)]
    pub(crate) fn cached_copy(&self, alloc: &mut Alloc<'_>) -> DataBlock {
        let small = (0..self.len()).all(|i| self.entry_bytes(i).len() <= SMALL_VALUE);
        let (buf, in_arena) = if small {
            let src = &self.buf[..];
            (alloc(src.len(), &mut |dst| dst.copy_from_slice(src)), true)
        } else {
            (self.buf.clone(), false)
        };
        DataBlock {
            buf,
            in_arena,
            ..*self
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the block has no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes of entry `i`.
    fn entry_bytes(&self, i: usize) -> &[u8] {
        raw_entry(&self.buf, self.entries_end as usize, self.len(), i)
    }

    /// The search heads, one per entry, as bytes.
    /// Where a search of the block starts reading (its offset table, then its heads): for a
    /// prefetch.
    pub fn search_area(&self) -> *const u8 {
        self.buf[self.entries_end as usize..].as_ptr()
    }

    /// Bytes of the block's entries (they start the block).
    pub fn entries_len(&self) -> usize {
        self.entries_end as usize
    }

    fn heads(&self) -> &[u8] {
        let at = self.entries_end as usize + OFFSET_LEN * self.len() + COUNT_LEN;
        &self.buf[at..]
    }

    /// The key and LSN of entry `i`, without decoding its value.
    pub fn key_lsn(&self, i: usize) -> std::result::Result<(&[u8], Lsn), String> {
        key_lsn_of(self.entry_bytes(i), i)
    }

    /// Decodes entry `i` (`i < len()`); the value shares the block's memory, unless the block
    /// is in the cache's arena.
    pub fn entry(&self, i: usize) -> std::result::Result<Entry<'_>, String> {
        let bytes = self.entry_bytes(i);
        let start = bytes.as_ptr() as usize - self.buf.as_ptr() as usize;
        let mut c = Cursor::new(bytes);
        let key = c.short_bytes()?;
        let lsn = Lsn(c.u64()?);
        let tag = c.u8()?;
        let len = c.u32()? as usize;
        let at = start + c.pos();
        c.take(len)?;
        c.expect_end()?;
        let body = || match &self.buf {
            BlockBuf::Shared(b) if !self.in_arena => b.slice(at..at + len),
            _ => Bytes::copy_from_slice(&self.buf[at..at + len]),
        };
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
        // The newest entry with the key's head is the likeliest answer, and a read goes on to
        // its value: its lines are fetched together rather than one after another.
        if let Some(last) = hi.checked_sub(1).filter(|&l| l >= lo) {
            crate::hint::prefetch_slice(self.entry_bytes(last), 4);
        }
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
        let heads = self.heads();
        // The binary search's probes depend on each other; fetching the heads' lines at once
        // overlaps their misses (a 4 KiB block's heads take about 5 lines). The offset table
        // the search reads next is fetched with them.
        crate::hint::prefetch_slice(heads, 16);
        let end = self.entries_end as usize;
        crate::hint::prefetch_slice(&self.buf[end..end + OFFSET_LEN * self.len()], 8);
        let head = |i: usize| {
            u64::from_ne_bytes(
                heads[HEAD_LEN * i..HEAD_LEN * (i + 1)]
                    .try_into()
                    .expect("8"),
            )
        };
        let n = self.len();
        let lo = partition(0, n, |i| head(i) < h);
        (lo, partition_near(lo, n, |i| head(i) == h))
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
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    fn value_strategy() -> impl Strategy<Value = Value> {
        // Now and then a body too large for the cache's arena.
        let body = prop_oneof![
            20 => proptest::collection::vec(any::<u8>(), 0..40),
            1 => proptest::collection::vec(any::<u8>(), SMALL_VALUE - 20..SMALL_VALUE + 20),
        ];
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

    fn body(v: &Value) -> &[u8] {
        match v {
            Value::Image(b) | Value::Delta { record: b, .. } => b,
            Value::Tombstone => &[],
        }
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
        /// The galloping search finds what the binary search finds, for every split point.
        #[test]
        fn partition_near_agrees_with_partition(n in 0usize..300, lo in 0usize..300, k in 0usize..320) {
            let lo = lo.min(n);
            let pred = |i: usize| i < k;
            prop_assert_eq!(partition_near(lo, n, pred), partition(lo, n, pred));
        }
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
            let raw = build(&entries);
            let block = DataBlock::parse(&raw, Path::new("f"), 0).unwrap();
            prop_assert_eq!(block.len(), entries.len());
            for (i, (k, l, v)) in entries.iter().enumerate() {
                let e = block.entry(i).unwrap();
                prop_assert_eq!(e.key, &k[..]);
                prop_assert_eq!(e.lsn, Lsn(*l));
                prop_assert_eq!(&e.value, v);
            }
            // The cache's copies, of a parsed block or parsed straight into the cache, answer
            // the same; from the arena, values are copies that do not point into the block's
            // memory. The arena's memory is not zeroed: it may hold an earlier block's bytes.
            let mut alloc = |len: usize, fill: &mut dyn FnMut(&mut [u8])| {
                let mut v = vec![0xa5; len];
                fill(&mut v);
                BlockBuf::from(Bytes::from(v))
            };
            let cached = block.cached_copy(&mut alloc);
            let direct = DataBlock::parse_with(&raw, Path::new("f"), 0, &mut alloc).unwrap();
            for c in [&cached, &direct] {
                prop_assert_eq!(c.in_arena, entries.iter().all(|(k, _, v)| 15 + k.len() + body(v).len() <= SMALL_VALUE));
                prop_assert_eq!(&c.buf[..], &block.buf[..]);
                let memory = c.buf.as_ptr_range();
                for (i, (k, l, v)) in entries.iter().enumerate() {
                    let e = c.entry(i).unwrap();
                    prop_assert_eq!((e.key, e.lsn, &e.value), (&k[..], Lsn(*l), v));
                    let body = body(&e.value);
                    if c.in_arena && !body.is_empty() {
                        prop_assert!(!memory.contains(&body.as_ptr()));
                    }
                }
            }
            for b in [&block, &cached, &direct] {
                let want = entries.iter().rposition(|(k, l, _)| (&k[..], *l) <= (&probe_key[..], probe_lsn));
                prop_assert_eq!(b.seek_le(&probe_key, Lsn(probe_lsn)).unwrap(), want);
                let want_ge = entries.iter().position(|(k, _, _)| k[..] >= probe_key[..]).unwrap_or(entries.len());
                prop_assert_eq!(b.seek_key_ge(&probe_key).unwrap(), want_ge);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(block) = DataBlock::parse(&bytes, Path::new("f"), 0) {
                for i in 0..block.len() {
                    let _ = block.entry(i);
                }
                let _ = block.seek_le(b"k", Lsn(5));
            }
        }
    }

    #[test]
    fn data_block_table_decodes_a_hand_built_example() {
        let mut b = Vec::new();
        // Entry 0 (23 bytes, at 0).
        b.extend_from_slice(&5u16.to_le_bytes()); // key_len
        b.extend_from_slice(b"apple"); // key
        b.extend_from_slice(&3u64.to_le_bytes()); // lsn
        b.push(0); // tag: 0 = image
        b.extend_from_slice(&3u32.to_le_bytes()); // value_len
        b.extend_from_slice(b"red"); // value
        // Entry 1 (20 bytes, at 23).
        b.extend_from_slice(&5u16.to_le_bytes()); // key_len
        b.extend_from_slice(b"apple"); // key
        b.extend_from_slice(&7u64.to_le_bytes()); // lsn
        b.push(3); // tag: 3 = tombstone
        b.extend_from_slice(&0u32.to_le_bytes()); // value_len: 0 for a tombstone
        // Entry 2 (24 bytes, at 43).
        b.extend_from_slice(&7u16.to_le_bytes()); // key_len
        b.extend_from_slice(b"apricot"); // key
        b.extend_from_slice(&2u64.to_le_bytes()); // lsn
        b.push(1); // tag: 1 = delta
        b.extend_from_slice(&2u32.to_le_bytes()); // value_len
        b.extend_from_slice(b"+1"); // value
        // Entry 3 (24 bytes, at 67).
        b.extend_from_slice(&7u16.to_le_bytes()); // key_len
        b.extend_from_slice(b"apricot"); // key
        b.extend_from_slice(&5u64.to_le_bytes()); // lsn
        b.push(2); // tag: 2 = delta with will_init
        b.extend_from_slice(&2u32.to_le_bytes()); // value_len
        b.extend_from_slice(b"=9"); // value
        assert_eq!(b.len(), 91);
        for offset in [0u32, 23, 43, 67] {
            b.extend_from_slice(&offset.to_le_bytes()); // offsets: from the block start
        }
        b.extend_from_slice(&4u32.to_le_bytes()); // n

        let want = [
            (&b"apple"[..], Lsn(3), Value::image(&b"red"[..])),
            (b"apple", Lsn(7), Value::Tombstone),
            (b"apricot", Lsn(2), Value::delta(&b"+1"[..])),
            (b"apricot", Lsn(5), Value::init_delta(&b"=9"[..])),
        ];
        let block = DataBlock::parse(&b, Path::new("f"), 0).unwrap();
        assert_eq!(block.len(), 4);
        for (i, (key, lsn, value)) in want.iter().enumerate() {
            assert_eq!(
                block.entry(i).unwrap(),
                Entry {
                    key,
                    lsn: *lsn,
                    value: value.clone()
                }
            );
        }

        let mut builder = DataBlockBuilder::default();
        for (key, lsn, value) in &want {
            builder.add(key, *lsn, value);
        }
        let mut encoded = Vec::new();
        builder.finish_into(&mut encoded);
        assert_eq!(encoded, b);
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
        let err = DataBlock::parse(&raw, Path::new("x.layer"), 77).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.to_string().contains("x.layer at offset 77"), "{err}");
    }
}
