//! Layer files: writing them block by block, and reading versions out of them.
//!
//! Layout: `data blocks ‖ key filter block ‖ index block ‖ footer` — see [`crate::format`] for
//! each part.
//!
//! # Read, or mapped
//!
//! By default a layer file is read with `pread`: a block that misses the cache costs a system
//! call and a copy, the file's pages stay in the OS page cache and out of the process's
//! resident memory, and an I/O error of the device is an error naming the file, offset and
//! length. With [`StoreOptions::map_layer_files`](crate::StoreOptions::map_layer_files) it is
//! memory-mapped instead: such a read copies nothing and makes no system call (measured on this
//! project's 2-core VM: `get/latest/disk_cold` 1.28 µs mapped against 1.69 µs read), and the
//! price is a failure mode outside the error path: if the bytes under the mapping go away — the
//! file is truncated underneath, or the device fails a read of a page not yet cached — the
//! process gets `SIGBUS` instead of an error. So the mapping assumes, and the store keeps:
//!
//! - a layer file is immutable once renamed into place: written whole under a temporary name,
//!   fsynced, renamed; nothing in the store writes to, truncates or rewrites a layer file (the
//!   only truncations are of write-ahead log segments and time indexes, never mapped);
//! - a downloaded layer is written the same way, to a temporary name and renamed, so a mapping of
//!   an earlier copy keeps its own inode;
//! - a layer leaves only by unlinking (compaction, GC, eviction, delete), which keeps a mapped
//!   inode alive until the last reader drops it;
//! - nobody else writes into the store's directory while it is open (the `LOCK` file).
//!
//! Either way every block is checked against its checksum on every read from the file, and a
//! mismatch is an error naming the file and offset.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;
use parking_lot::MappedRwLockReadGuard;

use super::cache::{BlockCache, BlockSlots};
use super::heads::Heads;
use super::versions::Versions;
use crate::error::{Error, Result};
use crate::format::{
    Compression, CompressionProbe, DataBlock, DataBlockBuilder, FOOTER_MAX_LEN, Footer, IndexEntry,
    KeyFilter, LayerDesc, LayerKind, Side, common_prefix, decode_block, decode_block_ref,
    decode_index, encode_block, encode_index, key_hash, partition_near,
};
use crate::io::{Io, WritableFile, temp_path};
use crate::lsn::Lsn;
use crate::value::{KeyRange, Value, ValueRef};

/// The file name of a layer: sequence number, kind and LSN range, all fixed-width hex.
pub(crate) fn layer_file_name(seq: u64, kind: LayerKind, lsn_range: &Range<Lsn>) -> String {
    let k = match kind {
        LayerKind::Delta => 'd',
        LayerKind::Image => 'i',
    };
    format!(
        "{seq:016X}-{k}-{:016X}-{:016X}.layer",
        lsn_range.start.0, lsn_range.end.0
    )
}

/// Writes one layer file under a temporary name, then renames it into place.
pub(crate) struct LayerWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<Box<dyn WritableFile>>,
    io: Io,
    offset: u64,
    block: DataBlockBuilder,
    block_first: Option<(Bytes, Lsn)>,
    index: Vec<IndexEntry>,
    entries: u64,
    block_size: usize,
    compression: Compression,
    /// Stops trying zstd on this file's data blocks while they do not compress.
    probe: CompressionProbe,
    raw: Vec<u8>,
    framed: Vec<u8>,
    min_key: Option<Bytes>,
    /// The last key added, reused across keys.
    max_key: Vec<u8>,
    /// [`key_hash`] of every distinct key, for the key filter.
    key_hashes: Vec<u64>,
    finished: bool,
}

impl LayerWriter {
    pub(crate) fn create(
        io: &Io,
        path: PathBuf,
        block_size: usize,
        compression: Compression,
    ) -> Result<LayerWriter> {
        let tmp = temp_path(&path);
        let f = io.create(&tmp)?;
        Ok(LayerWriter {
            path,
            tmp,
            out: BufWriter::with_capacity(1 << 20, f),
            io: io.clone(),
            offset: 0,
            block: DataBlockBuilder::default(),
            block_first: None,
            index: Vec::new(),
            entries: 0,
            block_size,
            compression,
            probe: CompressionProbe::default(),
            raw: Vec::new(),
            framed: Vec::new(),
            min_key: None,
            max_key: Vec::new(),
            key_hashes: Vec::new(),
            finished: false,
        })
    }

    /// Adds a version; versions must come in `(key, lsn)` order.
    pub(crate) fn add(&mut self, key: &[u8], lsn: Lsn, value: &Value) -> Result<()> {
        self.add_ref(key, lsn, value.into())
    }

    /// As [`add`](Self::add), from a borrowed value.
    pub(crate) fn add_ref(&mut self, key: &[u8], lsn: Lsn, value: ValueRef<'_>) -> Result<()> {
        if self.block_first.is_none() {
            self.block_first = Some((Bytes::copy_from_slice(key), lsn));
        }
        if self.min_key.is_none() {
            self.min_key = Some(Bytes::copy_from_slice(key));
        }
        if self.max_key[..] != *key {
            self.max_key.clear();
            self.max_key.extend_from_slice(key);
            self.key_hashes.push(key_hash(key));
        }
        self.block.add_ref(key, lsn, value);
        self.entries += 1;
        if self.block.len() >= self.block_size {
            self.finish_block()?;
        }
        Ok(())
    }

    fn write(&mut self, bytes_from_framed: bool) -> Result<u64> {
        let buf = if bytes_from_framed {
            &self.framed
        } else {
            &self.raw
        };
        let at = self.offset;
        self.out
            .write_all(buf)
            .map_err(|e| Error::io("writing", &self.tmp, e))?;
        self.offset += buf.len() as u64;
        Ok(at)
    }

    fn finish_block(&mut self) -> Result<()> {
        let Some((first_key, first_lsn)) = self.block_first.take() else {
            return Ok(());
        };
        self.block.finish_into(&mut self.raw);
        self.framed.clear();
        self.probe
            .encode(&self.raw, self.compression, &mut self.framed);
        let offset = self.write(true)?;
        self.index.push(IndexEntry {
            first_key,
            first_lsn,
            offset,
            len: self.framed.len() as u32,
        });
        Ok(())
    }

    /// Bytes of data blocks written so far.
    pub(crate) fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Writes the index and footer, fsyncs and renames the file into place.
    ///
    /// `key_range` defaults to the range covering the keys written.
    pub(crate) fn finish(
        mut self,
        kind: LayerKind,
        lsn_range: Range<Lsn>,
        key_range: Option<KeyRange>,
    ) -> Result<LayerDesc> {
        self.finish_block()?;
        self.raw.clear();
        KeyFilter::build(&self.key_hashes).encode_into(&mut self.raw);
        self.framed.clear();
        encode_block(&self.raw, Compression::None, &mut self.framed);
        let filter_offset = self.write(true)?;
        let filter_len = self.framed.len() as u32;
        let raw = encode_index(&self.index);
        self.framed.clear();
        encode_block(&raw, Compression::None, &mut self.framed);
        let index_offset = self.write(true)?;
        let index_len = self.framed.len() as u32;
        let key_range = key_range.unwrap_or_else(|| match &self.min_key {
            Some(min) => KeyRange::covering(min, &self.max_key),
            None => KeyRange::ALL,
        });
        let footer = Footer {
            kind,
            lsn_range: lsn_range.clone(),
            key_range: key_range.clone(),
            index_offset,
            index_len,
            filter_offset,
            filter_len,
            entry_count: self.entries,
        };
        self.raw.clear();
        footer.encode_into(&mut self.raw);
        self.write(false)?;
        self.out
            .flush()
            .map_err(|e| Error::io("writing", &self.tmp, e))?;
        self.io.sync(self.out.get_mut().as_mut(), &self.tmp)?;
        self.io.rename_durably(&self.tmp, &self.path)?;
        self.finished = true;
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(LayerDesc {
            file_name,
            kind,
            level: 0,
            lsn_range,
            key_range,
            file_size: self.offset,
        })
    }
}

impl Drop for LayerWriter {
    fn drop(&mut self) {
        // An unfinished writer leaves a temp file; remove it (open sweeps it too).
        if !self.finished {
            let _ = self.io.remove_file(&self.tmp);
        }
    }
}

/// How an open layer file's bytes are reached: read with `pread` (the default), or through a
/// memory mapping (see [`StoreOptions::map_layer_files`](crate::StoreOptions::map_layer_files)).
enum Source {
    Read(File),
    Mapped(Mmap),
}

impl Source {
    /// `len` bytes at `offset` of the layer file at `path`: borrowed from the mapping, or read.
    fn bytes_at(&self, path: &Path, offset: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        match self {
            Source::Read(f) => read_at(f, path, offset, len).map(Cow::Owned),
            Source::Mapped(m) => usize::try_from(offset)
                .ok()
                .and_then(|at| m.get(at..at.checked_add(len)?))
                .map(Cow::Borrowed)
                .ok_or_else(|| {
                    Error::corruption(
                        path,
                        offset,
                        format!("the file ends within the {len} bytes read here"),
                    )
                }),
        }
    }
}

/// `len` bytes of `file` (the layer file at `path`) at `offset`.
fn read_at(file: &File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; len];
    read_into(file, path, offset, &mut buf)?;
    Ok(buf)
}

/// Fills `buf` from `file` (the layer file at `path`) at `offset`.
fn read_into(file: &File, path: &Path, offset: u64, buf: &mut [u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let len = buf.len();
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corruption(
                path,
                offset,
                format!("the file ends within the {len} bytes read here"),
            )
        } else {
            Error::io(format!("reading {len} bytes at {offset} of"), path, e)
        }
    })
}

/// Blocks up to this long are read on a cache miss into the thread's [`SCRATCH`] buffer.
const SCRATCH_MAX: usize = 1 << 20;

thread_local! {
    /// A reader's buffer for the blocks it reads on cache misses, kept from one miss to the
    /// next. A buffer allocated per miss now and then made the thread's malloc arena grow, and
    /// growing it (`mprotect`) waits for the process's memory-map lock, which the writer's
    /// mappings and other threads' page faults hold: measured in `benches/peers`, every time a
    /// get under ingest blocked, it blocked there, for up to tens of milliseconds.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// An open, immutable layer file.
pub(crate) struct LayerFile {
    pub(crate) desc: LayerDesc,
    path: PathBuf,
    source: Source,
    index: Vec<IndexEntry>,
    /// The prefix every key in the file shares (that of its first and last key).
    prefix: Box<[u8]>,
    /// The head of each index entry's first key after `prefix` (its next 8 bytes as one
    /// integer, see [`Side`]): a dense array a lookup searches first, where probing `index`
    /// would chase a pointer to each key.
    heads: Heads,
    filter: Option<KeyFilter>,
    /// The cached blocks, one slot per index entry.
    blocks: Arc<BlockSlots>,
    cache: Arc<BlockCache>,
}

impl Drop for LayerFile {
    fn drop(&mut self) {
        // Whoever drops the last reference (a reader's snapshot, often) hands the emptying of
        // the file's cached blocks over (see `super::reaper`).
        let (cache, blocks) = (self.cache.clone(), self.blocks.clone());
        super::reaper::later(move || cache.release(&blocks));
    }
}

impl LayerFile {
    /// Opens the file at `path`, checking it against what the manifest says of it.
    pub(crate) fn open(path: &Path, desc: &LayerDesc, cache: Arc<BlockCache>) -> Result<LayerFile> {
        let f = File::open(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                crate::ErrorKind::Corruption
            } else {
                crate::ErrorKind::Io
            };
            Error::new(
                kind,
                format!(
                    "opening layer {} named by the manifest: {e}",
                    path.display()
                ),
            )
        })?;
        let n = f
            .metadata()
            .map_err(|e| Error::io("reading the size of", path, e))?
            .len();
        if n != desc.file_size {
            return Err(Error::corruption(
                path,
                0,
                format!("file is {n} bytes, the manifest says {}", desc.file_size),
            ));
        }
        // A footer is small: one read of the file's end holds it, unless its keys are long.
        let mut tail = read_at(&f, path, n - n.min(4096), n.min(4096) as usize)?;
        if let Some(len) = Footer::len_from_trailer(&tail)
            && len > tail.len()
            && len <= FOOTER_MAX_LEN
            && len as u64 <= n
        {
            tail = read_at(&f, path, n - len as u64, len)?;
        }
        let footer = Footer::decode_end(&tail, n, path)?;
        let source = if cache.map_files {
            // SAFETY: layer files are immutable once renamed into place; the store never writes
            // to a layer file it has open, and removes them only by unlinking. What a mapping
            // cannot turn into an error is an I/O error of the device (see `map_layer_files`).
            Source::Mapped(unsafe { Mmap::map(&f) }.map_err(|e| Error::io("mapping", path, e))?)
        } else {
            Source::Read(f)
        };
        if footer.kind != desc.kind
            || footer.lsn_range != desc.lsn_range
            || footer.key_range != desc.key_range
        {
            return Err(Error::corruption(
                path,
                0,
                "footer does not match the manifest's description of the layer",
            ));
        }
        let io_at = footer.index_offset;
        let framed = source.bytes_at(path, io_at, footer.index_len as usize)?;
        let raw = decode_block(&framed, path, io_at)?;
        let index = decode_index(&raw, path, io_at)?;
        if let Some(bad) = index.iter().find(|e| {
            e.offset
                .checked_add(u64::from(e.len))
                .is_none_or(|end| end > io_at)
        }) {
            return Err(Error::corruption(
                path,
                io_at,
                format!(
                    "index names a block at {}+{} past the data",
                    bad.offset, bad.len
                ),
            ));
        }
        let filter = match footer.filter_len {
            0 => None,
            len => {
                let at = footer.filter_offset;
                let raw = decode_block(&source.bytes_at(path, at, len as usize)?, path, at)?;
                Some(KeyFilter::decode(&raw, path, at)?)
            }
        };
        let mut file = LayerFile {
            desc: desc.clone(),
            path: path.to_path_buf(),
            source,
            prefix: Box::default(),
            heads: Heads::default(),
            blocks: BlockCache::slots(index.len()),
            index,
            filter,
            cache,
        };
        if let Some(first) = file.index.first() {
            let last_block = file.block_uncached(file.index.len() - 1)?;
            let last = match last_block.len().checked_sub(1) {
                Some(i) => {
                    let at = file.index.len() - 1;
                    last_block.key_lsn(i).map_err(|e| file.corrupt(at, e))?.0
                }
                None => &first.first_key[..],
            };
            let p = common_prefix(&first.first_key, last);
            file.prefix = first.first_key[..p].into();
            let mut heads = Vec::with_capacity(file.index.len());
            for (i, e) in file.index.iter().enumerate() {
                match Side::of(&e.first_key, &file.prefix) {
                    Side::Within(h) if heads.last().is_none_or(|l| *l <= h) => heads.push(h),
                    _ => return Err(file.corrupt(i, "first key out of order".to_string())),
                }
            }
            file.heads = Heads::new(&heads);
        }
        Ok(file)
    }

    pub(crate) fn kind(&self) -> LayerKind {
        self.desc.kind
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file, for upload.
    pub(crate) fn read_all(&self) -> Result<Vec<u8>> {
        self.source
            .bytes_at(&self.path, 0, self.desc.file_size as usize)
            .map(Cow::into_owned)
    }

    pub(crate) fn lsn_range(&self) -> &Range<Lsn> {
        &self.desc.lsn_range
    }

    /// Block `i`, from the cache or read, checked and cached. Hold it briefly, and do not ask for
    /// another block while holding it: a cached block stays read-locked in its slot.
    fn block(&self, i: usize) -> Result<BlockRef<'_>> {
        match self.blocks.get(i) {
            Some(b) => {
                self.cache.hits.increment(1);
                Ok(BlockRef::Cached(b))
            }
            None => self.block_missed(i),
        }
    }

    /// [`block`](Self::block) for a block not in the cache: kept out of line, so that a read of
    /// a cached block runs a short function.
    #[inline(never)]
    fn block_missed(&self, i: usize) -> Result<BlockRef<'_>> {
        self.cache.misses.increment(1);
        let e = &self.index[i];
        let len = e.len as usize;
        match &self.source {
            Source::Read(f) if len <= SCRATCH_MAX => SCRATCH.with_borrow_mut(|buf| {
                if buf.len() < len {
                    buf.resize(len, 0);
                }
                let framed = &mut buf[..len];
                read_into(f, &self.path, e.offset, framed)?;
                let raw = decode_block_ref(framed, &self.path, e.offset)?;
                self.cache_block(i, &raw, e.offset)
            }),
            _ => {
                let (raw, offset) = self.raw_block(i)?;
                self.cache_block(i, &raw, offset)
            }
        }
    }

    /// Caches block `i`, whose checked and decompressed bytes are `raw`, and returns it.
    fn cache_block(&self, i: usize, raw: &[u8], offset: u64) -> Result<BlockRef<'_>> {
        // Checked and parsed straight into the cache, then read there: one copy of the block.
        let cached = self.cache.insert_with(&self.blocks, i, |alloc| {
            DataBlock::parse_with(raw, &self.path, offset, alloc)
        })?;
        // Unless the cache holds nothing, or already evicted it (a cache smaller than a block).
        if cached && let Some(b) = self.blocks.get(i) {
            return Ok(BlockRef::Cached(b));
        }
        Ok(BlockRef::Read(DataBlock::parse(raw, &self.path, offset)?))
    }

    /// Block `i` as stored, checked against its checksum and decompressed, and its offset.
    fn raw_block(&self, i: usize) -> Result<(Cow<'_, [u8]>, u64)> {
        let e = &self.index[i];
        let raw = match self.source.bytes_at(&self.path, e.offset, e.len as usize)? {
            Cow::Borrowed(framed) => decode_block_ref(framed, &self.path, e.offset)?,
            Cow::Owned(mut framed) => match decode_block_ref(&framed, &self.path, e.offset)? {
                // Stored uncompressed: the block is the start of what was read.
                Cow::Borrowed(raw) => {
                    let stored = raw.len();
                    framed.truncate(stored);
                    Cow::Owned(framed)
                }
                Cow::Owned(raw) => Cow::Owned(raw),
            },
        };
        Ok((raw, e.offset))
    }

    /// Reads and checks block `i` without the cache. Compaction reads blocks this way: it reads
    /// each once and should not push out what readers use.
    fn block_uncached(&self, i: usize) -> Result<DataBlock> {
        let (raw, offset) = self.raw_block(i)?;
        DataBlock::parse(&raw, &self.path, offset)
    }

    /// Every version in `(key, lsn)` order, one block in memory at a time.
    pub(crate) fn iter(&self) -> LayerIter<'_> {
        LayerIter {
            file: self,
            next_block: 0,
            block: None,
            pos: 0,
        }
    }

    fn corrupt(&self, i: usize, what: String) -> Error {
        Error::corruption(
            &self.path,
            self.index[i].offset,
            format!("data block: {what}"),
        )
    }

    /// Collects versions of `key` in `[lower, cont)` newest first; returns whether complete.
    ///
    /// In an image layer, a key in its range that it does not hold does not exist.
    #[cfg(test)]
    pub(crate) fn collect(
        &self,
        key: &[u8],
        lower: Lsn,
        cont: Lsn,
        out: &mut Versions,
    ) -> Result<bool> {
        let target = Lsn(cont.0 - 1);
        let blocks = self.blocks_at_or_below(key, target);
        self.collect_in(key, lower, lower, target, blocks, out)
    }

    /// [`collect`](Self::collect) after asking the key filter: `None` when the filter shows the
    /// key absent, and nothing was collected. The filter's cache line is fetched while the block
    /// index is searched; once the filter passes, the block's slot, search area and the lines
    /// where its key likely is are fetched together.
    pub(crate) fn collect_filtered(
        &self,
        key: &[u8],
        floor: Lsn,
        lower: Lsn,
        cont: Lsn,
        out: &mut Versions,
    ) -> Result<Option<bool>> {
        let hash = self.filter.as_ref().map(|f| f.prefetch(key));
        let target = Lsn(cont.0 - 1);
        let blocks = self.blocks_at_or_below(key, target);
        if let (Some(f), Some(h)) = (&self.filter, hash)
            && !f.may_contain_hash(h)
        {
            return Ok(None);
        }
        if let Some(last) = blocks.checked_sub(1) {
            self.blocks.prefetch(last, self.place_in(last, key));
        }
        self.collect_in(key, floor, lower, target, blocks, out)
            .map(Some)
    }

    /// Collects versions of `key` in `[lower, target]` newest first from the first `blocks`
    /// blocks, those starting at or below `(key, target)`; returns whether complete. If they
    /// are not, and the key's next older version is at or above `floor` and needs nothing older
    /// (an image, a tombstone, a `will_init` delta), it completes them: `lower` is above the
    /// layer's own start only when an image layer lies inside this one, and this version is
    /// where that image's value for the key comes from, so reading it here spares the read
    /// the image layer.
    fn collect_in(
        &self,
        key: &[u8],
        floor: Lsn,
        lower: Lsn,
        target: Lsn,
        blocks: usize,
        out: &mut Versions,
    ) -> Result<bool> {
        let mut bi = blocks;
        let mut pos = None;
        while bi > 0 {
            bi -= 1;
            let block = self.block(bi)?;
            let mut i = match pos.take() {
                None => match block
                    .seek_le(key, target)
                    .map_err(|e| self.corrupt(bi, e))?
                {
                    Some(i) => i + 1,
                    None => continue,
                },
                Some(()) => block.len(),
            };
            while i > 0 {
                i -= 1;
                let (k, lsn) = block.key_lsn(i).map_err(|e| self.corrupt(bi, e))?;
                if k != key || lsn < floor {
                    return Ok(self.absent_if_image(out));
                }
                let e = block.entry(i).map_err(|e| self.corrupt(bi, e))?;
                if lsn < lower {
                    return Ok(e.value.is_base() && out.push(e.lsn, e.value));
                }
                if out.push(e.lsn, e.value) {
                    return Ok(true);
                }
            }
            pos = Some(());
        }
        Ok(self.absent_if_image(out))
    }

    /// Every version of `key` in the file, oldest first, its blocks read past the cache.
    pub(crate) fn versions_of(&self, key: &[u8]) -> Result<Vec<(Lsn, Value)>> {
        let mut out = Vec::new();
        let mut bi = self.blocks_at_or_below(key, Lsn::MAX);
        let mut whole_block = false;
        'blocks: while bi > 0 {
            bi -= 1;
            let block = self.block_uncached(bi)?;
            let mut i = if whole_block {
                block.len()
            } else {
                match block
                    .seek_le(key, Lsn::MAX)
                    .map_err(|e| self.corrupt(bi, e))?
                {
                    Some(i) => i + 1,
                    None => continue,
                }
            };
            while i > 0 {
                i -= 1;
                let e = block.entry(i).map_err(|e| self.corrupt(bi, e))?;
                if e.key != key {
                    break 'blocks;
                }
                out.push((e.lsn, e.value));
            }
            whole_block = true;
        }
        out.reverse();
        Ok(out)
    }

    /// How many blocks start at or below `(key, lsn)`: blocks before the first whose head
    /// is above `key`'s, less those with `key`'s head that start above `(key, lsn)`.
    fn blocks_at_or_below(&self, key: &[u8], lsn: Lsn) -> usize {
        let h = match Side::of(key, &self.prefix) {
            Side::Below => return 0,
            Side::Above => return self.index.len(),
            Side::Within(h) => h,
        };
        let lo = match self.heads.group_below(h) {
            None => 0,
            Some(g) => {
                // The block is one of the group's: where its search starts is fetched beside
                // the group's heads.
                self.blocks.prefetch_areas(g);
                self.heads.below_in(g, h)
            }
        };
        // Few blocks share a head, most often none: the run is looked for next to `lo`.
        let same = partition_near(lo, self.heads.len(), |i| self.heads.get(i) == h) - lo;
        lo + self.index[lo..lo + same]
            .partition_point(|e| e.first_key[..].cmp(key).then(e.first_lsn.cmp(&lsn)).is_le())
    }

    /// A guess of how far into block `b`'s entries `key` lies, in 65,536ths: where its head
    /// falls between the block's head and the next block's, as if the heads in between were
    /// spread evenly. `None` when there is nothing to go by (the key outside the file's
    /// prefix, the last block, a run of blocks sharing a head).
    fn place_in(&self, b: usize, key: &[u8]) -> Option<u16> {
        let Side::Within(h) = Side::of(key, &self.prefix) else {
            return None;
        };
        if b + 1 >= self.heads.len() {
            return None;
        }
        let (lo, hi) = (self.heads.get(b), self.heads.get(b + 1));
        if h < lo || hi <= lo {
            return None;
        }
        let place = (u128::from(h - lo) << 16) / u128::from(hi - lo);
        Some(u16::try_from(place).unwrap_or(u16::MAX))
    }

    /// Ends a read that found no version of its key here: in an image layer the key does not
    /// exist, so the read is complete.
    pub(crate) fn absent_if_image(&self, out: &mut Versions) -> bool {
        if self.kind() == LayerKind::Image {
            out.mark_absent();
            true
        } else {
            false
        }
    }

    /// Appends the keys in the bounds that have a version below `cont`.
    pub(crate) fn keys_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        cont: Lsn,
        out: &mut Vec<Bytes>,
    ) -> Result<()> {
        self.keys_changed(lo, hi, Lsn::ZERO, cont, out)
    }

    /// Appends the keys in the bounds that have a version in `[from, cont)`.
    pub(crate) fn keys_changed(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        from: Lsn,
        cont: Lsn,
        out: &mut Vec<Bytes>,
    ) -> Result<()> {
        let start_block = match lo {
            Bound::Unbounded => 0,
            Bound::Included(k) | Bound::Excluded(k) => self
                .index
                .partition_point(|e| e.first_key[..] < *k)
                .saturating_sub(1),
        };
        for bi in start_block..self.index.len() {
            let block = self.block(bi)?;
            let first = match lo {
                Bound::Unbounded => 0,
                Bound::Included(k) | Bound::Excluded(k) => {
                    block.seek_key_ge(k).map_err(|e| self.corrupt(bi, e))?
                }
            };
            for i in first..block.len() {
                let (k, l) = block.key_lsn(i).map_err(|e| self.corrupt(bi, e))?;
                let past = match hi {
                    Bound::Unbounded => false,
                    Bound::Included(h) => k > h,
                    Bound::Excluded(h) => k >= h,
                };
                if past {
                    return Ok(());
                }
                if matches!(lo, Bound::Excluded(x) if k == x) || l >= cont || l < from {
                    continue;
                }
                if out.last().is_none_or(|p| p[..] != *k) {
                    out.push(Bytes::copy_from_slice(k));
                }
            }
        }
        Ok(())
    }

    /// Appends every version at LSNs in `[from, to]`, in `(key, lsn)` order, reading every
    /// block past the cache (like compaction: a feed reads each block once).
    pub(crate) fn versions_between(
        &self,
        from: Lsn,
        to: Lsn,
        out: &mut Vec<(Bytes, Lsn, Value)>,
    ) -> Result<()> {
        for bi in 0..self.index.len() {
            let block = self.block_uncached(bi)?;
            for i in 0..block.len() {
                let (_, l) = block.key_lsn(i).map_err(|e| self.corrupt(bi, e))?;
                if l < from || l > to {
                    continue;
                }
                let e = block.entry(i).map_err(|e| self.corrupt(bi, e))?;
                out.push((Bytes::copy_from_slice(e.key), e.lsn, e.value));
            }
        }
        Ok(())
    }

    /// Calls `f` for every version in `(key, lsn)` order, verifying every block.
    #[cfg(test)]
    pub(crate) fn for_each(
        &self,
        mut f: impl FnMut(&[u8], Lsn, Value) -> Result<()>,
    ) -> Result<()> {
        for bi in 0..self.index.len() {
            let block = self.block(bi)?;
            for i in 0..block.len() {
                let e = block.entry(i).map_err(|e| self.corrupt(bi, e))?;
                f(e.key, e.lsn, e.value)?;
            }
        }
        Ok(())
    }
}

/// A data block from [`LayerFile::block`]: read-locked in the cache, or just read.
enum BlockRef<'a> {
    Cached(MappedRwLockReadGuard<'a, DataBlock>),
    Read(DataBlock),
}

impl std::ops::Deref for BlockRef<'_> {
    type Target = DataBlock;

    fn deref(&self) -> &DataBlock {
        match self {
            BlockRef::Cached(b) => b,
            BlockRef::Read(b) => b,
        }
    }
}

/// A streaming iterator over a layer file's versions.
pub(crate) struct LayerIter<'a> {
    file: &'a LayerFile,
    next_block: usize,
    block: Option<DataBlock>,
    pos: usize,
}

impl LayerIter<'_> {
    /// The next version, or `None` at the end.
    pub(crate) fn next_entry(&mut self) -> Result<Option<(Bytes, Lsn, Value)>> {
        loop {
            if let Some(b) = &self.block
                && self.pos < b.len()
            {
                let bi = self.next_block - 1;
                let e = b.entry(self.pos).map_err(|e| self.file.corrupt(bi, e))?;
                self.pos += 1;
                return Ok(Some((Bytes::copy_from_slice(e.key), e.lsn, e.value)));
            }
            if self.next_block >= self.file.index.len() {
                return Ok(None);
            }
            self.block = Some(self.file.block_uncached(self.next_block)?);
            self.next_block += 1;
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    type Model = BTreeMap<(Vec<u8>, u64), Value>;

    fn versions() -> impl Strategy<Value = Model> {
        let value = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::image),
            proptest::collection::vec(any::<u8>(), 1..20).prop_map(Value::delta),
            proptest::collection::vec(any::<u8>(), 1..20).prop_map(Value::init_delta),
            Just(Value::Tombstone),
        ];
        proptest::collection::btree_map(
            (proptest::collection::vec(b'a'..b'f', 1..4), 1u64..40),
            value,
            1..200,
        )
    }

    fn write(dir: &Path, model: &Model, zstd: bool) -> (LayerDesc, PathBuf) {
        let path = dir.join("l.layer");
        let comp = if zstd {
            Compression::Zstd(1)
        } else {
            Compression::None
        };
        let mut w = LayerWriter::create(&Io::std(), path.clone(), 512, comp).unwrap();
        for ((k, l), v) in model {
            w.add(k, Lsn(*l), v).unwrap();
        }
        (
            w.finish(LayerKind::Delta, Lsn(1)..Lsn(40), None).unwrap(),
            path,
        )
    }

    /// What `collect` must gather: versions of `key` in `[lower, cont)`, newest first, to a base.
    fn expected(model: &Model, key: &[u8], lower: u64, cont: u64) -> (Vec<(Lsn, Value)>, bool) {
        let mut out = Vec::new();
        for ((_, l), v) in model
            .range((key.to_vec(), lower)..(key.to_vec(), cont))
            .rev()
        {
            out.push((Lsn(*l), v.clone()));
            if v.is_base() {
                return (out, true);
            }
        }
        (out, false)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn written_versions_read_back(
            model in versions(),
            zstd in any::<bool>(),
            lower in 1u64..20,
            prefix in proptest::collection::vec(b'a'..b'c', 0..10),
        ) {
            // Every key gets the same prefix, as the keys of one table do; reads look for keys
            // with and without it.
            let model: Model = model
                .into_iter()
                .map(|((k, l), v)| (([&prefix[..], &k[..]].concat(), l), v))
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let (desc, path) = write(dir.path(), &model, zstd);
            let file = LayerFile::open(&path, &desc, Arc::new(BlockCache::new(1 << 20))).unwrap();
            let mut all = Vec::new();
            file.for_each(|k, l, v| { all.push(((k.to_vec(), l.0), v)); Ok(()) }).unwrap();
            prop_assert_eq!(&all, &model.clone().into_iter().collect::<Vec<_>>());
            let mut it = file.iter();
            let mut streamed = Vec::new();
            while let Some((k, l, v)) = it.next_entry().unwrap() {
                streamed.push(((k.to_vec(), l.0), v));
            }
            prop_assert_eq!(&streamed, &all);
            let probes = [&b"a"[..], b"ab", b"abc", b"e", b"zz"];
            let prefixed: Vec<Vec<u8>> = probes.iter().map(|k| [&prefix[..], k].concat()).collect();
            for key in probes.into_iter().chain(prefixed.iter().map(|k| &k[..])) {
                for cont in [lower + 1, 10, 25, 40].into_iter().filter(|c| *c > lower) {
                    let mut got = Versions::default();
                    let complete = file.collect(key, Lsn(lower), Lsn(cont), &mut got).unwrap();
                    let (want, want_complete) = expected(&model, key, lower, cont);
                    prop_assert_eq!(complete, want_complete);
                    prop_assert_eq!(got.collected(), want);
                }
            }
            let mut keys = Vec::new();
            file.keys_in(Bound::Included(b"ab"), Bound::Excluded(b"d"), Lsn(20), &mut keys).unwrap();
            let mut want: Vec<Bytes> = model.keys().filter(|(k, l)| k[..] >= b"ab"[..] && k[..] < b"d"[..] && *l < 20).map(|(k, _)| Bytes::from(k.clone())).collect();
            want.dedup();
            prop_assert_eq!(keys, want);
        }
    }

    /// On keys spread evenly, with values of one size, the guess of where a key lies in its
    /// block (what a lookup prefetches around) is within an entry of where it is.
    #[test]
    fn a_keys_place_in_its_block_is_guessed_within_an_entry() {
        let model: Model = (0..5000u32)
            .map(|i| {
                let key = [&b"k"[..], &(i * 977).to_be_bytes()].concat();
                ((key, 5), Value::image(vec![7; 100]))
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.layer");
        let mut w = LayerWriter::create(&Io::std(), path.clone(), 4096, Compression::None).unwrap();
        for ((k, l), v) in &model {
            w.add(k, Lsn(*l), v).unwrap();
        }
        let desc = w.finish(LayerKind::Delta, Lsn(1)..Lsn(40), None).unwrap();
        let file = LayerFile::open(&path, &desc, Arc::new(BlockCache::new(1 << 20))).unwrap();
        assert!(file.index.len() > 100, "{} blocks", file.index.len());
        let mut guessed = 0;
        for (key, _) in model.keys() {
            let b = file.blocks_at_or_below(key, Lsn::MAX) - 1;
            let block = file.block(b).unwrap();
            let at = block.seek_le(key, Lsn::MAX).unwrap().unwrap();
            let Some(place) = file.place_in(b, key) else {
                assert_eq!(b + 1, file.index.len(), "no guess in block {b}");
                continue;
            };
            let guess = (usize::from(place) * block.len()) >> 16;
            assert!(
                guess.abs_diff(at) <= 1,
                "block {b}: guessed entry {guess} of {}, at {at}",
                block.len()
            );
            guessed += 1;
        }
        assert!(guessed > model.len() * 9 / 10, "{guessed} guesses");
        // Keys outside the file's prefix get no guess.
        assert_eq!(file.place_in(0, b"a"), None);
        assert_eq!(file.place_in(0, b"z"), None);
    }

    /// Readers on several threads, with a cache a few blocks large so that every read caches a
    /// block and evicts another, some of them while other readers hold them.
    #[test]
    fn readers_racing_evictions_read_right() {
        let model: Model = (0..3000u32)
            .flat_map(|i| {
                let key = format!("k{:05}", i * 7919 % 3000).into_bytes();
                (1..=(1 + u64::from(i % 3))).map(move |l| {
                    let v = Value::image(format!("{i}@{l}").repeat(1 + (i % 5) as usize));
                    ((key.clone(), l * 3), v)
                })
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let (desc, path) = write(dir.path(), &model, true);
        let file = LayerFile::open(&path, &desc, Arc::new(BlockCache::new(3 * 1024))).unwrap();
        assert!(file.index.len() > 100, "{} blocks", file.index.len());
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (file, model) = (&file, &model);
                s.spawn(move || {
                    let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for _ in 0..3000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let key = format!("k{:05}", x % 3000).into_bytes();
                        let cont = 1 + x % 12;
                        let mut got = Versions::default();
                        let complete = file.collect(&key, Lsn(1), Lsn(cont), &mut got).unwrap();
                        let (want, want_complete) = expected(model, &key, 1, cont);
                        assert_eq!((got.collected(), complete), (want, want_complete));
                    }
                });
            }
        });
    }

    #[test]
    fn flipped_byte_in_a_block_is_reported_with_file_and_offset() {
        let model: Model = (0..500u32)
            .map(|i| {
                (
                    (format!("key{i:05}").into_bytes(), 5),
                    Value::image(vec![i as u8; 50]),
                )
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let (desc, path) = write(dir.path(), &model, false);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1000] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let file = LayerFile::open(&path, &desc, Arc::new(BlockCache::new(1 << 20))).unwrap();
        let mut errors = 0;
        for (k, _) in model.keys() {
            let mut v = Versions::default();
            match file.collect(k, Lsn(1), Lsn(40), &mut v) {
                Ok(found) => assert!(found, "a key outside the damaged block must still read"),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Corruption);
                    assert!(e.to_string().contains("l.layer at offset"), "{e}");
                    errors += 1;
                }
            }
        }
        assert!(errors > 0 && errors < model.len(), "{errors}");
    }

    /// Writes versions of `n` keys with values from `value(i)` into 8 KiB zstd blocks, then
    /// checks that every data block is byte for byte what [`encode_block`] alone makes of it,
    /// and that the file reads back. Returns (data blocks, blocks stored zstd-compressed).
    fn blocks_as_encode_block_makes_them(n: u32, value: impl Fn(u32) -> Vec<u8>) -> (usize, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.layer");
        let mut w =
            LayerWriter::create(&Io::std(), path.clone(), 8 << 10, Compression::Zstd(1)).unwrap();
        for i in 0..n {
            w.add(&i.to_be_bytes(), Lsn(5), &Value::image(value(i)))
                .unwrap();
        }
        let desc = w.finish(LayerKind::Image, Lsn(5)..Lsn(6), None).unwrap();
        let file = LayerFile::open(&path, &desc, Arc::new(BlockCache::new(0))).unwrap();
        let mut zstd = 0;
        for e in &file.index {
            let framed = file
                .source
                .bytes_at(&path, e.offset, e.len as usize)
                .unwrap();
            let framed = &framed[..];
            let raw = decode_block(framed, &path, e.offset).unwrap();
            let mut plain = Vec::new();
            zstd += usize::from(encode_block(&raw, Compression::Zstd(1), &mut plain));
            assert_eq!(framed, &plain[..], "block at {}", e.offset);
        }
        let mut count = 0;
        file.for_each(|k, _, v| {
            let i = u32::from_be_bytes(k.try_into().unwrap());
            assert_eq!(v, Value::image(value(i)));
            count += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(count, n);
        (file.index.len(), zstd)
    }

    /// splitmix64 of `i`, for values zstd cannot shrink.
    fn noise(i: u64) -> [u8; 8] {
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).to_le_bytes()
    }

    #[test]
    fn compressible_blocks_are_written_as_before() {
        // Text-like values: every block compresses, none is skipped.
        let (blocks, zstd) = blocks_as_encode_block_makes_them(20_000, |i| {
            format!("value {i} of a layer file, {}", "text ".repeat(10)).into_bytes()
        });
        assert!(blocks > 50, "{blocks}");
        assert_eq!(zstd, blocks);
        // Random 100-byte values, as in the benchmarks: keys, LSNs and lengths still make the
        // blocks compress by more than a sixteenth, so they are all stored compressed.
        let (blocks, zstd) = blocks_as_encode_block_makes_them(20_000, |i| {
            (0..13)
                .flat_map(|j| noise(u64::from(i) << 8 | j))
                .take(100)
                .collect()
        });
        assert!(blocks > 50, "{blocks}");
        assert_eq!(zstd, blocks);
    }

    #[test]
    fn incompressible_blocks_are_raw_as_before() {
        // 1000-byte random values: no block compresses, most are never tried; all are raw.
        let (blocks, zstd) = blocks_as_encode_block_makes_them(5_000, |i| {
            (0..125)
                .flat_map(|j| noise(u64::from(i) << 8 | j))
                .collect()
        });
        assert!(blocks > 500, "{blocks}");
        assert_eq!(zstd, 0);
    }

    #[test]
    fn truncated_file_fails_open() {
        let model: Model = [((b"k".to_vec(), 3), Value::image("v"))].into();
        let dir = tempfile::tempdir().unwrap();
        let (desc, path) = write(dir.path(), &model, true);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = LayerFile::open(&path, &desc, Arc::new(BlockCache::new(0)))
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Corruption);
    }
}
