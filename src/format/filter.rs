//! The key filter of a layer file: a blocked Bloom filter over the layer's distinct keys, so a
//! read skips a layer that cannot hold its key without touching a data block.
//!
//! Each key is hashed once to 64 bits `h` ([`key_hash`]); the high 32 bits pick one 512-bit
//! block (block `(h >> 32) · blocks >> 32`), and `k` bits inside it are set or tested: bits
//! `a + i·b mod 512` for `i < k`, with `a` the low 32 bits of `h` and `b` the low 32 bits of `h`
//! rotated left by 21, with its lowest bit set (so odd). A lookup costs one cache line. At
//! [`BITS_PER_KEY`] bits per key and `k` = 6 about 1% of absent keys pass.
//!
//! The filter is stored raw (never compressed) in a framed block of its own, with the block's
//! CRC, between the data blocks and the index; the footer gives its offset and length.
//!
//! | field    | size       | meaning |
//! |----------|------------|---------|
//! | k        | 1          | u8 bits set per key, 1..=16 |
//! | blocks   | 4          | u32 number of 512-bit blocks, at least 1 |
//! | bits     | 64 × blocks | each block as eight u64 words, little-endian; bit `j` of a block is bit `j % 64` of word `j / 64` |
//!
//! The hash is part of the format: files written with one must be read with the same.

use std::path::Path;

use crate::error::{Error, Result};

/// Bits of filter per distinct key.
pub const BITS_PER_KEY: usize = 10;
/// Bits set per key.
const PROBES: u8 = 6;
const BLOCK_BITS: u32 = 512;
const WORDS: usize = (BLOCK_BITS / 64) as usize;
const HEADER_LEN: usize = 5;

/// The 64-bit hash of a key that filters use; fixed by the format.
pub fn key_hash(key: &[u8]) -> u64 {
    const P: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (key.len() as u64).wrapping_mul(P);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(P).rotate_left(27);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(P).rotate_left(27);
    }
    // The splitmix64 finalizer spreads every input bit over the output.
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// A blocked Bloom filter over a set of keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFilter {
    probes: u8,
    blocks: Vec<[u64; WORDS]>,
}

impl KeyFilter {
    /// A filter holding the keys whose [`key_hash`]es are given.
    pub fn build(hashes: &[u64]) -> KeyFilter {
        let bits = hashes.len().saturating_mul(BITS_PER_KEY);
        let n = bits
            .div_ceil(BLOCK_BITS as usize)
            .clamp(1, u32::MAX as usize);
        let mut f = KeyFilter {
            probes: PROBES,
            blocks: vec![[0; WORDS]; n],
        };
        for &h in hashes {
            let (block, a, b) = f.place(h);
            for i in 0..u32::from(f.probes) {
                let bit = a.wrapping_add(i.wrapping_mul(b)) % BLOCK_BITS;
                f.blocks[block][(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        f
    }

    fn place(&self, h: u64) -> (usize, u32, u32) {
        let block = (((h >> 32) * self.blocks.len() as u64) >> 32) as usize;
        (block, h as u32, (h.rotate_left(21) as u32) | 1)
    }

    /// Whether the key with hash `h` may be in the set: `false` means it is not.
    pub fn may_contain_hash(&self, h: u64) -> bool {
        let (block, a, b) = self.place(h);
        let words = &self.blocks[block];
        (0..u32::from(self.probes)).all(|i| {
            let bit = a.wrapping_add(i.wrapping_mul(b)) % BLOCK_BITS;
            words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    /// Hashes `key` for [`may_contain_hash`](Self::may_contain_hash) and starts fetching the
    /// cache line that will answer it.
    pub fn prefetch(&self, key: &[u8]) -> u64 {
        let h = key_hash(key);
        crate::hint::prefetch(&self.blocks[self.place(h).0]);
        h
    }

    /// Whether `key` may be in the set: `false` means it is not.
    #[cfg_attr(
        not(any(test, feature = "internals")),
        expect(
            dead_code,
            reason = "used by the fuzz targets and tests through `stratakv::internals`"
        )
    )]
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(key_hash(key))
    }

    /// Bytes the filter takes encoded.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.blocks.len() * WORDS * 8
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(self.probes);
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for w in self.blocks.iter().flatten() {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Decodes a filter read from the block at `offset` of the file at `path`.
    ///
    /// # Errors
    /// [`Corruption`](crate::ErrorKind::Corruption) naming the file and offset when the length or
    /// the header does not make sense.
    pub fn decode(raw: &[u8], path: &Path, offset: u64) -> Result<KeyFilter> {
        let bad = |what: String| Error::corruption(path, offset, format!("key filter: {what}"));
        if raw.len() < HEADER_LEN {
            return Err(bad(format!("{} bytes is too short", raw.len())));
        }
        let probes = raw[0];
        if !(1..=16).contains(&probes) {
            return Err(bad(format!("{probes} probes per key is out of range")));
        }
        let n = u32::from_le_bytes(raw[1..HEADER_LEN].try_into().expect("4 bytes")) as usize;
        let want = (n as u64) * (WORDS as u64) * 8 + HEADER_LEN as u64;
        if n == 0 || want != raw.len() as u64 {
            return Err(bad(format!(
                "{n} blocks do not fit its {} bytes",
                raw.len()
            )));
        }
        let blocks = raw[HEADER_LEN..]
            .chunks_exact(WORDS * 8)
            .map(|b| {
                std::array::from_fn(|i| {
                    u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
                })
            })
            .collect();
        Ok(KeyFilter { probes, blocks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    fn keys(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range.map(|i| format!("key{i:08}").into_bytes()).collect()
    }

    #[test]
    fn every_member_passes_and_about_one_percent_of_others_do() {
        let members = keys(0..20_000);
        let f = KeyFilter::build(&members.iter().map(|k| key_hash(k)).collect::<Vec<_>>());
        assert!(members.iter().all(|k| f.may_contain(k)));
        let others = keys(1_000_000..1_100_000);
        let passed = others.iter().filter(|k| f.may_contain(k)).count();
        let rate = passed as f64 / others.len() as f64;
        assert!(rate < 0.02, "false positive rate {rate}");
        assert!(f.encoded_len() <= 20_000 * BITS_PER_KEY / 8 + 64 + HEADER_LEN);
    }

    #[test]
    fn filter_table_decodes_a_hand_built_example() {
        // One key, "stratakv", of hash 0x72df_3d4c_825c_f0f7 (pinned by `the_hash_is_fixed`):
        // a = 0x825c_f0f7, b = 0x1eee_5be7, and a + i·b mod 512 for i < 6 gives these bits of
        // the only block.
        let set = [247u32, 222, 197, 172, 147, 122];
        let mut words = [0u64; 8];
        for j in set {
            words[(j / 64) as usize] |= 1 << (j % 64); // bit j is bit j % 64 of word j / 64
        }
        let mut b = Vec::new();
        b.push(6); // k
        b.extend_from_slice(&1u32.to_le_bytes()); // blocks
        for w in words {
            b.extend_from_slice(&w.to_le_bytes()); // bits: eight u64 words per block
        }
        assert_eq!(b.len(), 1 + 4 + 64);

        let f = KeyFilter::decode(&b, Path::new("f"), 0).unwrap();
        assert_eq!(f.probes, 6);
        assert_eq!(f.blocks, vec![words]);
        assert!(f.may_contain(b"stratakv"));
        assert_eq!(
            f,
            KeyFilter::build(&[key_hash(b"stratakv")]),
            "the placement rule above is the one build uses"
        );
        let mut encoded = Vec::new();
        KeyFilter {
            probes: 6,
            blocks: vec![words],
        }
        .encode_into(&mut encoded);
        assert_eq!(encoded, b);
    }

    #[test]
    fn an_empty_filter_refuses_everything() {
        let f = KeyFilter::build(&[]);
        assert!(keys(0..1000).iter().all(|k| !f.may_contain(k)));
    }

    #[test]
    fn the_hash_is_fixed() {
        // Files on disk depend on these values: changing the hash is a format change. The
        // expected values were computed by an independent script from the definition above.
        assert_eq!(key_hash(b"stratakv"), 0x72df_3d4c_825c_f0f7);
        assert_eq!(key_hash(b"key00000001"), 0xf711_bff7_b47e_5822);
        assert_ne!(key_hash(b"a"), key_hash(b"a\0"));
        assert_ne!(key_hash(b"12345678"), key_hash(b"123456789"));
    }

    #[test]
    fn bad_headers_and_lengths_are_corruption() {
        let mut raw = Vec::new();
        KeyFilter::build(&[1, 2, 3]).encode_into(&mut raw);
        let p = Path::new("f.layer");
        for bad in [
            raw[..4].to_vec(),
            raw[..raw.len() - 1].to_vec(),
            [&[0u8][..], &raw[1..]].concat(),
            [&[17u8][..], &raw[1..]].concat(),
            [&raw[..1], &0u32.to_le_bytes()[..]].concat(),
            [&raw[..1], &u32::MAX.to_le_bytes()[..], &raw[5..]].concat(),
        ] {
            let err = KeyFilter::decode(&bad, p, 77).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption);
            assert!(err.to_string().contains("f.layer"), "{err}");
            assert!(err.to_string().contains("77"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn round_trip_and_no_false_negatives(
            ks in proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 1..24), 0..300)
        ) {
            let hashes: Vec<u64> = ks.iter().map(|k| key_hash(k)).collect();
            let f = KeyFilter::build(&hashes);
            for k in &ks {
                prop_assert!(f.may_contain(k));
            }
            let mut raw = Vec::new();
            f.encode_into(&mut raw);
            prop_assert_eq!(raw.len(), f.encoded_len());
            prop_assert_eq!(KeyFilter::decode(&raw, Path::new("f"), 0).unwrap(), f);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = KeyFilter::decode(&bytes, Path::new("f"), 0);
        }
    }
}
