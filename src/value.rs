//! Values and key ranges.

use std::ops::Bound;

use bytes::Bytes;

/// A value borrowed from where a layer keeps it: what a layer file's writer copies from,
/// without a buffer of its own.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ValueRef<'a> {
    Image(&'a [u8]),
    Delta { record: &'a [u8], will_init: bool },
    Tombstone,
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(v: &'a Value) -> ValueRef<'a> {
        match v {
            Value::Image(b) => ValueRef::Image(b),
            Value::Delta { record, will_init } => ValueRef::Delta {
                record,
                will_init: *will_init,
            },
            Value::Tombstone => ValueRef::Tombstone,
        }
    }
}

impl ValueRef<'_> {
    /// The value, its bytes (if any) made by `bytes` from the borrowed ones.
    pub(crate) fn to_value_with(self, bytes: impl FnOnce(&[u8]) -> Bytes) -> Value {
        match self {
            ValueRef::Image(b) => Value::Image(bytes(b)),
            ValueRef::Delta { record, will_init } => Value::Delta {
                record: bytes(record),
                will_init,
            },
            ValueRef::Tombstone => Value::Tombstone,
        }
    }
}

/// One version of a key, as written at an LSN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// The whole value.
    Image(Bytes),
    /// A record the [`WalRedo`](crate::WalRedo) hook applies on top of the previous version.
    Delta {
        /// The record, opaque to the store.
        record: Bytes,
        /// `true` when the record needs no base: reconstruction stops here.
        will_init: bool,
    },
    /// The key is deleted as of this version.
    Tombstone,
}

impl Value {
    /// A whole value.
    pub fn image(bytes: impl Into<Bytes>) -> Value {
        Value::Image(bytes.into())
    }

    /// A delta that applies on top of the previous version.
    pub fn delta(record: impl Into<Bytes>) -> Value {
        Value::Delta {
            record: record.into(),
            will_init: false,
        }
    }

    /// A delta that needs no base.
    pub fn init_delta(record: impl Into<Bytes>) -> Value {
        Value::Delta {
            record: record.into(),
            will_init: true,
        }
    }

    /// Whether reconstruction can stop at this version (image, tombstone or `will_init` delta).
    pub fn is_base(&self) -> bool {
        match self {
            Value::Image(_) | Value::Tombstone => true,
            Value::Delta { will_init, .. } => *will_init,
        }
    }

    /// Bytes this version occupies in memory, for layer sizing.
    pub(crate) fn payload_len(&self) -> usize {
        match self {
            Value::Image(b) => b.len(),
            Value::Delta { record, .. } => record.len(),
            Value::Tombstone => 0,
        }
    }
}

/// A half-open range of keys, `[start, end)`; `end == None` is unbounded.
///
/// The empty key is the smallest key, so `KeyRange::ALL` covers every key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// The first key in the range.
    pub start: Bytes,
    /// The first key past the range, or `None` for no upper bound.
    pub end: Option<Bytes>,
}

impl KeyRange {
    /// Every key.
    pub const ALL: KeyRange = KeyRange {
        start: Bytes::new(),
        end: None,
    };

    /// The smallest range holding every key from `min` to `max`, both inclusive.
    pub fn covering(min: &[u8], max: &[u8]) -> KeyRange {
        let mut end = Vec::with_capacity(max.len() + 1);
        end.extend_from_slice(max);
        end.push(0);
        KeyRange {
            start: Bytes::copy_from_slice(min),
            end: Some(end.into()),
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= &self.start[..] && self.end.as_ref().is_none_or(|e| key < &e[..])
    }

    /// Whether the range shares a key with the bounds `(lo, hi)`.
    pub fn overlaps(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
        let below_end = match (&self.end, lo) {
            (None, _) | (_, Bound::Unbounded) => true,
            (Some(e), Bound::Included(l)) | (Some(e), Bound::Excluded(l)) => l < &e[..],
        };
        let above_start = match hi {
            Bound::Unbounded => true,
            Bound::Included(h) => h >= &self.start[..],
            Bound::Excluded(h) => h > &self.start[..],
        };
        below_end && above_start
    }
}

/// Whether `key` lies within the bounds.
pub(crate) fn bound_contains(lo: Bound<&[u8]>, hi: Bound<&[u8]>, key: &[u8]) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(l) => key >= l,
        Bound::Excluded(l) => key > l,
    };
    let below = match hi {
        Bound::Unbounded => true,
        Bound::Included(h) => key <= h,
        Bound::Excluded(h) => key < h,
    };
    above && below
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_range_holds_its_ends_and_nothing_past() {
        let r = KeyRange::covering(b"b", b"d");
        assert!(r.contains(b"b") && r.contains(b"c") && r.contains(b"d") && r.contains(b"cz"));
        assert!(!r.contains(b"a") && !r.contains(b"d\x00") && !r.contains(b"e"));
        assert!(KeyRange::ALL.contains(b"") && KeyRange::ALL.contains(&[0xff; 40]));
    }

    #[test]
    fn overlap_respects_bounds() {
        let r = KeyRange::covering(b"b", b"d");
        assert!(r.overlaps(Bound::Included(b"a"), Bound::Included(b"b")));
        assert!(!r.overlaps(Bound::Included(b"a"), Bound::Excluded(b"b")));
        assert!(r.overlaps(Bound::Included(b"d"), Bound::Unbounded));
        assert!(!r.overlaps(Bound::Excluded(b"d\x00"), Bound::Unbounded));
        assert!(r.overlaps(Bound::Unbounded, Bound::Unbounded));
    }
}
