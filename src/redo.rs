//! The WAL-redo hook and the crate's built-in record format.

use bytes::{Bytes, BytesMut};

use crate::error::{Error, ErrorKind, Result, show_key};
use crate::lsn::Lsn;

/// One delta record handed to a [`WalRedo`] hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedoRecord {
    /// The LSN the delta was written at.
    pub lsn: Lsn,
    /// The record, as written.
    pub record: Bytes,
    /// Whether the record needs no base.
    pub will_init: bool,
}

/// Rebuilds a value from a base and the delta records written on top of it.
///
/// The store calls [`apply`](WalRedo::apply) with the newest image at or below the read's LSN
/// (`base`, or `None` when the oldest record is a `will_init` delta) and every delta above it,
/// oldest first. The store never calls the hook with `base == None` unless
/// `records[0].will_init` is set: a delta with no base is reported as an error of kind
/// [`ErrorKind::Redo`] before the hook is reached.
///
/// A panic in the hook is caught: the read (or the compaction or image creation rebuilding the
/// value) fails with [`ErrorKind::Redo`] naming the key, the LSNs of the records and the panic's
/// message, and the store stays usable. The hook may be called from several threads at once.
pub trait WalRedo: Send + Sync + 'static {
    /// Returns the value of `key` after applying `records` (oldest first) to `base`.
    ///
    /// # Errors
    /// Any error the hook reports is returned to the reader; use [`ErrorKind::Redo`].
    fn apply(&self, key: &[u8], base: Option<Bytes>, records: &[RedoRecord]) -> Result<Bytes>;
}

/// The built-in redo for a simple record format, used by tests and examples.
///
/// Each record is one operation; the first byte says which:
///
/// | op byte | name | rest of the record | effect on the value |
/// |---|---|---|---|
/// | `0x01` | set | the new value | replaces the value |
/// | `0x02` | append | bytes | appends them |
/// | `0x03` | patch | offset: u32 LE, then bytes | overwrites `[offset, offset + len)`, padding with zeros if the value is shorter |
///
/// A `will_init` record applies to the empty value.
///
/// ```
/// use stratakv::{SimpleRedo, WalRedo, RedoRecord, Lsn};
/// let recs = [
///     RedoRecord { lsn: Lsn(2), record: SimpleRedo::append(b" world"), will_init: false },
///     RedoRecord { lsn: Lsn(3), record: SimpleRedo::patch(0, b"H"), will_init: false },
/// ];
/// let v = SimpleRedo.apply(b"k", Some("hello".into()), &recs).unwrap();
/// assert_eq!(&v[..], b"Hello world");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SimpleRedo;

const OP_SET: u8 = 0x01;
const OP_APPEND: u8 = 0x02;
const OP_PATCH: u8 = 0x03;

impl SimpleRedo {
    /// A record that sets the value to `value`.
    pub fn set(value: &[u8]) -> Bytes {
        Self::record(OP_SET, &[], value)
    }

    /// A record that appends `tail` to the value.
    pub fn append(tail: &[u8]) -> Bytes {
        Self::record(OP_APPEND, &[], tail)
    }

    /// A record that overwrites the value at `offset` with `bytes`.
    pub fn patch(offset: u32, bytes: &[u8]) -> Bytes {
        Self::record(OP_PATCH, &offset.to_le_bytes(), bytes)
    }

    fn record(op: u8, header: &[u8], body: &[u8]) -> Bytes {
        let mut r = Vec::with_capacity(1 + header.len() + body.len());
        r.push(op);
        r.extend_from_slice(header);
        r.extend_from_slice(body);
        r.into()
    }

    /// Applies one record to `value` in place.
    pub fn apply_one(value: &mut BytesMut, record: &[u8]) -> std::result::Result<(), String> {
        match record.split_first() {
            Some((&OP_SET, rest)) => {
                value.clear();
                value.extend_from_slice(rest);
            }
            Some((&OP_APPEND, rest)) => value.extend_from_slice(rest),
            Some((&OP_PATCH, rest)) => {
                if rest.len() < 4 {
                    return Err(format!(
                        "patch record of {} bytes has no offset",
                        record.len()
                    ));
                }
                let off = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
                let bytes = &rest[4..];
                let end = off + bytes.len();
                if value.len() < end {
                    value.resize(end, 0);
                }
                value[off..end].copy_from_slice(bytes);
            }
            Some((op, _)) => return Err(format!("unknown op byte 0x{op:02x}")),
            None => return Err("empty record".to_string()),
        }
        Ok(())
    }
}

impl WalRedo for SimpleRedo {
    fn apply(&self, key: &[u8], base: Option<Bytes>, records: &[RedoRecord]) -> Result<Bytes> {
        if base.is_none() && !records.first().is_some_and(|r| r.will_init) {
            return Err(Error::new(
                ErrorKind::Redo,
                format!("key {}: delta with no base and no will_init", show_key(key)),
            ));
        }
        let mut value = BytesMut::from(base.as_deref().unwrap_or_default());
        for r in records {
            if r.will_init {
                value.clear();
            }
            Self::apply_one(&mut value, &r.record).map_err(|e| {
                Error::new(
                    ErrorKind::Redo,
                    format!("key {} at LSN {}: {e}", show_key(key), r.lsn),
                )
            })?;
        }
        Ok(value.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(lsn: u64, record: Bytes, will_init: bool) -> RedoRecord {
        RedoRecord {
            lsn: Lsn(lsn),
            record,
            will_init,
        }
    }

    #[test]
    fn applies_set_append_patch_in_order() {
        let recs = [
            rec(1, SimpleRedo::set(b"abc"), true),
            rec(2, SimpleRedo::append(b"def"), false),
            rec(3, SimpleRedo::patch(8, b"xy"), false),
        ];
        let v = SimpleRedo.apply(b"k", None, &recs).unwrap();
        assert_eq!(&v[..], b"abcdef\0\0xy");
    }

    #[test]
    fn missing_base_is_reported() {
        let err = SimpleRedo
            .apply(b"k", None, &[rec(5, SimpleRedo::append(b"x"), false)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Redo);
        assert!(err.to_string().contains("\"k\""), "{err}");
    }

    #[test]
    fn malformed_records_are_reported_with_their_lsn() {
        for bad in [
            Bytes::new(),
            Bytes::from_static(&[9, 1]),
            Bytes::from_static(&[OP_PATCH, 1]),
        ] {
            let err = SimpleRedo
                .apply(b"k", Some(Bytes::new()), &[rec(7, bad, false)])
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Redo);
            assert!(err.to_string().contains("0/7"), "{err}");
        }
    }
}
