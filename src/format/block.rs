//! Block framing: a checksum and optional compression around any block payload.
//!
//! | field     | size | meaning |
//! |-----------|------|---------|
//! | payload   | n    | the raw block, or its zstd frame |
//! | codec     | 1    | 0 = none, 1 = zstd |
//! | raw_len   | 4    | u32 length of the raw block after decompression; equals n for codec 0 |
//! | crc32     | 4    | CRC32 of payload ‖ codec ‖ raw_len |
//!
//! Data and index blocks of layer files are framed this way; the index records each block's
//! offset and framed length, so a reader can check one block without reading its neighbours.

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};

const CODEC_LEN: usize = 1;
const RAW_LEN_LEN: usize = 4;
const CRC_LEN: usize = 4;
/// Bytes a frame adds after the payload.
pub const TRAILER_LEN: usize = CODEC_LEN + RAW_LEN_LEN + CRC_LEN;

const CODEC_NONE: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// Blocks larger than this are refused on decode, so a corrupt length cannot ask for memory.
pub const MAX_RAW_BLOCK: usize = 64 << 20;

/// How blocks are compressed when written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored raw.
    None,
    /// zstd at the given level; a block is stored raw when compression saves less than a
    /// sixteenth of it, so that reading it costs no decompression.
    Zstd(i32),
}

thread_local! {
    /// One zstd compression context per thread and level, reused across blocks.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    /// One zstd decompression context per thread, reused across blocks.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// `raw` compressed with zstd at `level`, on this thread's reused context.
fn compress(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let c = match slot {
            Some((l, c)) if *l == level => c,
            _ => &mut slot.insert((level, zstd::bulk::Compressor::new(level)?)).1,
        };
        c.compress(raw)
    })
}

/// A zstd frame decompressed into exactly `raw_len` bytes at most, on this thread's reused
/// context.
fn decompress(payload: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let d = match slot {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(payload, raw_len)
    })
}

/// Appends the framed form of `raw` to `out`; returns whether it was stored zstd-compressed.
pub fn encode_block(raw: &[u8], compression: Compression, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let mut codec = CODEC_NONE;
    if let Compression::Zstd(level) = compression
        && let Ok(c) = compress(raw, level)
        && c.len() + raw.len() / 16 < raw.len()
    {
        out.extend_from_slice(&c);
        codec = CODEC_ZSTD;
    }
    if codec == CODEC_NONE {
        out.extend_from_slice(raw);
    }
    out.push(codec);
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    codec == CODEC_ZSTD
}

/// zstd attempts in a row that must end up stored raw before [`CompressionProbe`] skips blocks.
const SKIP_AFTER_MISSES: u32 = 8;
/// Blocks stored raw without trying zstd after the first `SKIP_AFTER_MISSES` misses.
const FIRST_SKIP: u32 = 32;
/// The longest skip: each probe that misses again doubles the skip up to this many blocks.
const MAX_SKIP: u32 = 256;

/// Spares a layer writer trying zstd on blocks that will not compress.
///
/// [`encode_block`] stores a block raw when zstd saves less than a sixteenth of it, but by then
/// the compression has been paid for; when the values are incompressible (random or already
/// compressed bytes) that is wasted on every block. One probe serves the data blocks of one
/// file, in order:
///
/// - after `SKIP_AFTER_MISSES` (8) blocks in a row that zstd did not shrink enough, the next
///   `FIRST_SKIP` (32) blocks are stored raw without trying;
/// - then one block is tried again (a probe); if it is stored raw too, the next skip is twice as
///   long, up to `MAX_SKIP` (256) blocks, so a file of incompressible data tries zstd on about
///   one block in 257;
/// - any block that compresses ends the streak and the skip length goes back to 32.
///
/// The cost: a compressible stretch that starts inside a skip is stored raw until the next
/// probe, at most 256 blocks (1 MiB at the default 4 KiB blocks). Skipped blocks are ordinary
/// raw blocks, so readers and the on-disk format are unaffected.
#[derive(Debug)]
pub struct CompressionProbe {
    /// zstd attempts in a row stored raw since the last block that compressed, saturating at
    /// `SKIP_AFTER_MISSES`.
    misses: u32,
    /// Blocks left to store raw without trying zstd.
    skip_left: u32,
    /// Length of the next skip.
    next_skip: u32,
}

impl Default for CompressionProbe {
    fn default() -> Self {
        CompressionProbe {
            misses: 0,
            skip_left: 0,
            next_skip: FIRST_SKIP,
        }
    }
}

impl CompressionProbe {
    /// Whether the next block will be tried with zstd (when compression is on).
    pub fn will_try(&self) -> bool {
        self.skip_left == 0
    }

    /// Appends the framed form of `raw` to `out` like [`encode_block`], but without trying zstd
    /// while a skip lasts; returns whether the block was stored zstd-compressed.
    pub fn encode(&mut self, raw: &[u8], compression: Compression, out: &mut Vec<u8>) -> bool {
        if compression == Compression::None {
            return encode_block(raw, compression, out);
        }
        if !self.will_try() {
            self.skip_left -= 1;
            return encode_block(raw, Compression::None, out);
        }
        let compressed = encode_block(raw, compression, out);
        if compressed {
            self.misses = 0;
            self.next_skip = FIRST_SKIP;
        } else {
            // Saturates at the threshold, so that after a skip one more miss starts the next.
            self.misses = (self.misses + 1).min(SKIP_AFTER_MISSES);
            if self.misses == SKIP_AFTER_MISSES {
                self.skip_left = self.next_skip;
                self.next_skip = (self.next_skip * 2).min(MAX_SKIP);
            }
        }
        compressed
    }
}

/// Checks and unpacks a framed block read from `path` at `offset`.
///
/// # Errors
/// [`Corruption`](crate::ErrorKind::Corruption) naming `path` and `offset` when the checksum does
/// not match, the codec is unknown, or decompression fails or yields the wrong length.
pub fn decode_block(framed: &[u8], path: &Path, offset: u64) -> Result<Bytes> {
    Ok(match decode_block_ref(framed, path, offset)? {
        Cow::Borrowed(raw) => Bytes::copy_from_slice(raw),
        Cow::Owned(raw) => Bytes::from(raw),
    })
}

/// [`decode_block`], borrowing an uncompressed block's bytes from `framed` rather than copying
/// them.
///
/// # Errors
/// As [`decode_block`].
pub fn decode_block_ref<'a>(framed: &'a [u8], path: &Path, offset: u64) -> Result<Cow<'a, [u8]>> {
    if framed.len() < TRAILER_LEN {
        return Err(Error::corruption(
            path,
            offset,
            format!("block of {} bytes is too short", framed.len()),
        ));
    }
    let body_len = framed.len() - CRC_LEN;
    let stored = u32::from_le_bytes(framed[body_len..].try_into().expect("4 bytes"));
    let actual = crc32fast::hash(&framed[..body_len]);
    if stored != actual {
        return Err(Error::corruption(
            path,
            offset,
            format!("block checksum mismatch (stored {stored:08x}, computed {actual:08x})"),
        ));
    }
    let payload_len = framed.len() - TRAILER_LEN;
    let payload = &framed[..payload_len];
    let codec = framed[payload_len];
    let raw_len = u32::from_le_bytes(
        framed[payload_len + 1..body_len]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    match codec {
        CODEC_NONE if raw_len == payload_len => Ok(Cow::Borrowed(payload)),
        CODEC_NONE => Err(Error::corruption(
            path,
            offset,
            format!("raw block length {raw_len} does not match payload length {payload_len}"),
        )),
        CODEC_ZSTD if raw_len <= MAX_RAW_BLOCK => match decompress(payload, raw_len) {
            Ok(v) if v.len() == raw_len => Ok(Cow::Owned(v)),
            Ok(v) => Err(Error::corruption(
                path,
                offset,
                format!(
                    "block decompressed to {} bytes, expected {raw_len}",
                    v.len()
                ),
            )),
            Err(e) => Err(Error::corruption(path, offset, format!("zstd: {e}"))),
        },
        CODEC_ZSTD => Err(Error::corruption(
            path,
            offset,
            format!("block length {raw_len} is too large"),
        )),
        c => Err(Error::corruption(
            path,
            offset,
            format!("unknown block codec {c}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(raw in proptest::collection::vec(any::<u8>(), 0..4096), zstd in any::<bool>(), rep in 1usize..4) {
            let raw: Vec<u8> = raw.iter().cycle().take(raw.len() * rep).copied().collect();
            let mut out = vec![0xAA; 3];
            encode_block(&raw, if zstd { Compression::Zstd(3) } else { Compression::None }, &mut out);
            let got = decode_block(&out[3..], Path::new("f"), 3).unwrap();
            prop_assert_eq!(&got[..], &raw[..]);
        }

        #[test]
        fn every_bit_flip_is_detected(raw in proptest::collection::vec(any::<u8>(), 0..512), zstd in any::<bool>(), pick in any::<usize>()) {
            let mut out = Vec::new();
            encode_block(&raw, if zstd { Compression::Zstd(1) } else { Compression::None }, &mut out);
            let bit = pick % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            let err = decode_block(&out, Path::new("layer.file"), 4096).unwrap_err();
            prop_assert_eq!(err.kind(), ErrorKind::Corruption);
            prop_assert!(err.to_string().contains("layer.file at offset 4096"), "{}", err);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_block(&bytes, Path::new("f"), 0);
        }
    }

    #[test]
    fn block_table_decodes_a_hand_built_example() {
        // Codec 0: the payload is the raw block itself.
        let raw = b"hello, block";
        let mut b = Vec::new();
        b.extend_from_slice(raw); // payload: the raw block
        b.push(0); // codec: 0 = none
        b.extend_from_slice(&12u32.to_le_bytes()); // raw_len
        let crc = crc32fast::hash(&b); // crc32: of payload ‖ codec ‖ raw_len
        b.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(b.len(), 12 + TRAILER_LEN);
        assert_eq!(&decode_block(&b, Path::new("f"), 0).unwrap()[..], raw);
        let mut encoded = Vec::new();
        assert!(!encode_block(raw, Compression::None, &mut encoded));
        assert_eq!(encoded, b);

        // Codec 1: the payload is a zstd frame of the raw block.
        let raw = vec![b'z'; 4096];
        let frame = zstd::bulk::compress(&raw, 3).unwrap();
        let mut b = Vec::new();
        b.extend_from_slice(&frame); // payload: the zstd frame
        b.push(1); // codec: 1 = zstd
        b.extend_from_slice(&4096u32.to_le_bytes()); // raw_len: after decompression
        let crc = crc32fast::hash(&b); // crc32: of payload ‖ codec ‖ raw_len
        b.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(&decode_block(&b, Path::new("f"), 0).unwrap()[..], &raw[..]);
        let mut encoded = Vec::new();
        assert!(encode_block(&raw, Compression::Zstd(3), &mut encoded));
        assert_eq!(encoded, b);
    }

    #[test]
    fn compressible_blocks_shrink() {
        let raw = vec![7u8; 8192];
        let mut out = Vec::new();
        encode_block(&raw, Compression::Zstd(3), &mut out);
        assert!(out.len() < 200, "{}", out.len());
        assert_eq!(
            &decode_block(&out, Path::new("f"), 0).unwrap()[..],
            &raw[..]
        );
    }

    /// 8 KiB of pseudo-random bytes, which zstd cannot shrink; `seed` makes each block differ.
    fn random_block(seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..1024)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect()
    }

    /// Encodes `raw` through `probe`, checks it reads back, and returns (tried zstd, compressed).
    fn step(probe: &mut CompressionProbe, raw: &[u8]) -> (bool, bool) {
        let tried = probe.will_try();
        let mut out = Vec::new();
        let compressed = probe.encode(raw, Compression::Zstd(1), &mut out);
        assert_eq!(&decode_block(&out, Path::new("f"), 0).unwrap()[..], raw);
        if !tried {
            let mut plain = Vec::new();
            encode_block(raw, Compression::None, &mut plain);
            assert_eq!(out, plain, "a skipped block is an ordinary raw block");
        }
        (tried, compressed)
    }

    #[test]
    fn probe_skips_zstd_after_misses_and_probes_again() {
        let compressible = vec![7u8; 8192];
        let mut p = CompressionProbe::default();
        let mut seed = 0;
        let mut random = || {
            seed += 1;
            random_block(seed)
        };
        // A compressible block in the middle of a streak of misses resets it.
        for _ in 0..SKIP_AFTER_MISSES - 1 {
            assert_eq!(step(&mut p, &random()), (true, false));
        }
        assert_eq!(step(&mut p, &compressible), (true, true));
        // Eight misses in a row start a skip of 32 blocks; each failed probe doubles it, to 256.
        for _ in 0..SKIP_AFTER_MISSES {
            assert_eq!(step(&mut p, &random()), (true, false));
        }
        for skip in [32, 64, 128, 256, 256] {
            for i in 0..skip {
                // Not even a compressible block is tried during a skip.
                let raw = if i == 0 {
                    compressible.clone()
                } else {
                    random()
                };
                assert_eq!(step(&mut p, &raw), (false, false), "block {i} of {skip}");
            }
            assert_eq!(step(&mut p, &random()), (true, false), "probe after {skip}");
        }
        // A probe that compresses resets the streak and the skip length.
        for _ in 0..256 {
            assert_eq!(step(&mut p, &random()), (false, false));
        }
        assert_eq!(step(&mut p, &compressible), (true, true));
        for _ in 0..SKIP_AFTER_MISSES {
            assert_eq!(step(&mut p, &random()), (true, false));
        }
        for _ in 0..FIRST_SKIP {
            assert_eq!(step(&mut p, &random()), (false, false));
        }
        assert_eq!(step(&mut p, &random()), (true, false));
    }

    #[test]
    fn probe_without_compression_never_skips() {
        let mut p = CompressionProbe::default();
        for seed in 0..100 {
            let mut out = Vec::new();
            assert!(!p.encode(&random_block(seed), Compression::None, &mut out));
            assert!(p.will_try());
        }
    }

    #[test]
    fn truncated_block_is_corruption() {
        let mut out = Vec::new();
        encode_block(b"hello", Compression::None, &mut out);
        for n in 0..out.len() {
            assert_eq!(
                decode_block(&out[..n], Path::new("f"), 0)
                    .unwrap_err()
                    .kind(),
                ErrorKind::Corruption
            );
        }
    }
}
