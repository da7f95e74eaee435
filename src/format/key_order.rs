//! Key order: bytes, compared a word at a time where it decides.

use std::cmp::Ordering;

/// A key compared as bytes, but first by its leading 8 bytes read as one big-endian integer
/// (zero-padded): the order is the same, since two keys that differ in their first 8 bytes
/// differ there as integers in the same direction and a key that is a prefix of another pads
/// with zeros no larger than the other's bytes; ties fall back to comparing the bytes. One
/// integer comparison decides most pairs, where `[u8]`'s order calls `memcmp` for each. The
/// in-memory layer's map and the binary searches in a layer file compare keys dozens of times
/// per put and per read.
#[derive(PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct OrdKey([u8]);

impl OrdKey {
    pub(crate) fn new(key: &[u8]) -> &OrdKey {
        // SAFETY: `OrdKey` is a `repr(transparent)` wrapper of `[u8]`, so the two references
        // have the same layout and metadata.
        unsafe { &*(key as *const [u8] as *const OrdKey) }
    }

    /// The first 8 bytes as a big-endian integer, zero-padded: ordered as the keys are, with
    /// ties where the keys share their first 8 bytes.
    pub(crate) fn head(&self) -> u64 {
        let k = &self.0;
        match k.first_chunk::<8>() {
            Some(h) => u64::from_be_bytes(*h),
            None => {
                let mut h = [0u8; 8];
                h[..k.len()].copy_from_slice(k);
                u64::from_be_bytes(h)
            }
        }
    }
}

impl Ord for OrdKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.head()
            .cmp(&other.head())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for OrdKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The order of `OrdKey` is the order of the bytes, on short keys, shared prefixes and
        /// zero bytes in particular.
        #[test]
        fn ord_key_orders_as_bytes(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xFFu8), any::<u8>()], 0..20),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xFFu8), any::<u8>()], 0..20),
            shared in 0usize..12,
        ) {
            let mut b2 = a[..shared.min(a.len())].to_vec();
            b2.extend_from_slice(&b);
            for b in [&b, &b2] {
                prop_assert_eq!(OrdKey::new(&a).cmp(OrdKey::new(b)), a.as_slice().cmp(b.as_slice()));
            }
        }
    }
}
