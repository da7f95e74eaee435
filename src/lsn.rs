//! Log sequence numbers.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A log sequence number: the position of a write in a timeline's history.
///
/// LSNs are monotonic within a timeline. They print Postgres-style as two
/// 32-bit hexadecimal halves, `X/Y`, and parse back from that form.
///
/// ```
/// use stratakv::Lsn;
/// let lsn: Lsn = "0/16B3748".parse().unwrap();
/// assert_eq!(lsn, Lsn(0x16B3748));
/// assert_eq!(Lsn(0x1_0000_0010).to_string(), "1/10");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The smallest LSN. No write can carry it: writes start above it.
    pub const ZERO: Lsn = Lsn(0);
    /// The largest LSN.
    pub const MAX: Lsn = Lsn(u64::MAX);

    /// The raw `u64`.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next LSN, saturating at [`Lsn::MAX`].
    pub const fn next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "invalid LSN {s:?}: expected X/Y with hexadecimal halves"
            ))
        };
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(bad());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn displays_postgres_style() {
        assert_eq!(Lsn(0x16B3748).to_string(), "0/16B3748");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        assert_eq!(Lsn(0).to_string(), "0/0");
    }

    #[test]
    fn rejects_malformed_text() {
        for s in [
            "",
            "/",
            "1/",
            "/1",
            "12",
            "g/1",
            "1/2/3",
            "123456789/0",
            "-1/0",
        ] {
            let err = s.parse::<Lsn>().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{s}");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(v in any::<u64>()) {
            prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
        }
    }
}
