//! Timeline identifiers.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The 128-bit identity of a timeline, shown as 32 lowercase hexadecimal digits.
///
/// ```
/// use stratakv::TimelineId;
/// let id = TimelineId::from(0x0123_4567_89ab_cdef_u128);
/// assert_eq!(id.to_string(), "00000000000000000123456789abcdef");
/// assert_eq!(id.to_string().parse::<TimelineId>().unwrap(), id);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimelineId(u128);

impl TimelineId {
    /// A fresh identifier, unique with overwhelming probability, from
    /// [`SystemEntropy`](crate::SystemEntropy).
    pub fn generate() -> TimelineId {
        TimelineId::from_entropy(&crate::random::SystemEntropy)
    }

    /// A fresh identifier drawn from `entropy`: the store draws its timeline ids from the
    /// source in its options, so a seeded store repeats them.
    pub fn from_entropy(entropy: &dyn crate::random::Entropy) -> TimelineId {
        TimelineId((u128::from(entropy.next_u64()) << 64) | u128::from(entropy.next_u64()))
    }

    /// The identifier as 16 big-endian bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// An identifier from 16 big-endian bytes.
    pub fn from_bytes(b: [u8; 16]) -> TimelineId {
        TimelineId(u128::from_be_bytes(b))
    }
}

impl From<u128> for TimelineId {
    fn from(v: u128) -> Self {
        TimelineId(v)
    }
}

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for TimelineId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "invalid timeline id {s:?}: expected 32 hexadecimal digits"
            )));
        }
        u128::from_str_radix(s, 16)
            .map(TimelineId)
            .map_err(|e| Error::invalid(format!("invalid timeline id {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| TimelineId::generate()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn rejects_malformed_text() {
        for s in [
            "",
            "abc",
            &"g".repeat(32),
            &"0".repeat(33),
            "+0000000000000000000000000000001",
        ] {
            assert_eq!(
                s.parse::<TimelineId>().unwrap_err().kind(),
                crate::ErrorKind::InvalidArgument
            );
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(v in any::<u128>()) {
            let id = TimelineId(v);
            prop_assert_eq!(id.to_string().parse::<TimelineId>().unwrap(), id);
            prop_assert_eq!(TimelineId::from_bytes(id.to_bytes()), id);
        }
    }
}
