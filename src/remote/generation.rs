//! The generation number a node owns the store under.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A generation: the number under which one node owns a store in object storage.
///
/// Claimed with a conditional write by [`RemoteStorage::claim_generation`]; carried in the name
/// of every object the owner writes. Shown as 8 lowercase hexadecimal digits, so object names
/// sort by generation.
///
/// ```
/// use stratakv::remote::Generation;
/// let g = Generation(0x2a);
/// assert_eq!(g.to_string(), "0000002a");
/// assert_eq!("0000002a".parse::<Generation>().unwrap(), g);
/// assert!("2a".parse::<Generation>().is_err());
/// ```
///
/// [`RemoteStorage::claim_generation`]: super::RemoteStorage::claim_generation
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u32);

impl Generation {
    /// The generation after this one, or `None` at `u32::MAX`.
    pub fn next(self) -> Option<Generation> {
        self.0.checked_add(1).map(Generation)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl FromStr for Generation {
    type Err = Error;

    /// Parses exactly 8 hexadecimal digits.
    fn from_str(s: &str) -> Result<Self> {
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "invalid generation {s:?}: expected 8 hexadecimal digits"
            )));
        }
        u32::from_str_radix(s, 16)
            .map(Generation)
            .map_err(|e| Error::invalid(format!("invalid generation {s:?}: {e}")))
    }
}
