//! The injected source of randomness: timeline ids and generation-claim nonces come from here,
//! so that a seeded run repeats itself exactly, ids and nonces included.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of random 64-bit numbers for identities and nonces (not for cryptography).
pub trait Entropy: Send + Sync + std::fmt::Debug + 'static {
    /// The next number.
    fn next_u64(&self) -> u64;
}

/// Numbers no other process or call repeats, with overwhelming probability: the standard
/// library's per-process random hasher keys, the time, the process id and a counter, mixed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemEntropy;

impl Entropy for SystemEntropy {
    #[expect(
        clippy::disallowed_methods,
        reason = "system entropy is the one place that reads the OS's randomness and the clock"
    )]
    fn next_u64(&self) -> u64 {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish()
    }
}

/// A repeatable sequence from a seed (SplitMix64): two stores opened with the same seed, the
/// same clock and the same calls write the same bytes.
///
/// ```
/// use stratakv::{Entropy, SeededEntropy};
/// let (a, b) = (SeededEntropy::new(7), SeededEntropy::new(7));
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert_ne!(a.next_u64(), SeededEntropy::new(8).next_u64());
/// ```
#[derive(Debug)]
pub struct SeededEntropy {
    state: AtomicU64,
}

impl SeededEntropy {
    /// The sequence of `seed`.
    pub fn new(seed: u64) -> SeededEntropy {
        SeededEntropy {
            state: AtomicU64::new(seed),
        }
    }
}

impl Entropy for SeededEntropy {
    fn next_u64(&self) -> u64 {
        const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .state
            .fetch_add(GOLDEN, Ordering::Relaxed)
            .wrapping_add(GOLDEN);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sequences_repeat_and_differ_by_seed() {
        let a: Vec<u64> = (0..4)
            .map({
                let e = SeededEntropy::new(1);
                move |_| e.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let e = SeededEntropy::new(1);
                move |_| e.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_eq!(a.iter().collect::<std::collections::BTreeSet<_>>().len(), 4);
        assert_ne!(a[0], SeededEntropy::new(2).next_u64());
        assert_ne!(SystemEntropy.next_u64(), SystemEntropy.next_u64());
    }
}
