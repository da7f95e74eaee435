//! Seeded randomness: a small generator for the hand-written random tests, where seeds come
//! from, and the generator proptest runs the model tests with.

use std::time::{SystemTime, UNIX_EPOCH};

use proptest::test_runner::{RngAlgorithm, TestRng};

use super::env::env_u64;

/// SplitMix64: small, fast, seedable, and good enough to pick keys, sizes, operations and
/// timings. The same seed gives the same sequence on every machine.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n`; 0 if `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// Uniform in `lo..=hi` (`lo` if `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below(hi - lo + 1)
        }
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Uniform in `[0, 1)`, from 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `prefix` followed by random lowercase letters up to `len` bytes.
    pub fn letters(&mut self, prefix: &str, len: usize) -> Vec<u8> {
        let mut v = prefix.as_bytes().to_vec();
        while v.len() < len {
            v.push(b'a' + self.below(26) as u8);
        }
        v
    }
}

/// The seed in the environment variable `var`, or one from the clock when it is not set. The
/// caller prints it, with what else a rerun needs.
pub fn seed_from_env_or_clock(var: &str) -> u64 {
    env_u64(var).unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64
    })
}

/// The generator a proptest runner draws cases from: ChaCha with a fixed seed, so runs are
/// deterministic in what they generate, or with `seed` when one is given.
pub fn proptest_rng(seed: Option<u64>) -> TestRng {
    match seed {
        None => TestRng::deterministic_rng(RngAlgorithm::ChaCha),
        Some(seed) => {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&seed.to_le_bytes());
            TestRng::from_seed(RngAlgorithm::ChaCha, &s)
        }
    }
}
