//! What a read collects on its way down the layers.

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result, show_key};
use crate::lsn::Lsn;
use crate::redo::{RedoRecord, WalRedo};
use crate::value::Value;

/// Where the walk down the layers ended.
#[derive(Debug, Default)]
enum Base {
    /// Not yet found.
    #[default]
    Missing,
    /// A full value.
    Image(Bytes),
    /// A tombstone, or an image layer that does not hold the key: the key does not exist.
    Absent,
    /// The oldest delta collected needs no base.
    Init,
}

/// The newest version a read collected: what a diff compares before it applies any delta.
#[derive(Debug)]
pub(crate) enum Newest<'a> {
    /// No version at all: the key never existed there.
    Nothing,
    /// An image layer covering the key does not hold it: it does not exist.
    AbsentInImage,
    Image(Lsn, &'a Bytes),
    Tombstone(Lsn),
    /// A delta record: the value needs the redo hook.
    Delta(Lsn),
}

impl Newest<'_> {
    /// The LSN of the stored version, if the read ended on one.
    pub(crate) fn lsn(&self) -> Option<Lsn> {
        match self {
            Newest::Image(l, _) | Newest::Tombstone(l) | Newest::Delta(l) => Some(*l),
            Newest::Nothing | Newest::AbsentInImage => None,
        }
    }

    /// The value when no redo is needed to know it.
    pub(crate) fn value_without_redo(&self) -> Option<Option<&Bytes>> {
        match self {
            Newest::Image(_, b) => Some(Some(b)),
            Newest::Nothing | Newest::AbsentInImage | Newest::Tombstone(_) => Some(None),
            Newest::Delta(_) => None,
        }
    }
}

/// The versions of one key a read has collected, newest first, until a base.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    base: Base,
    /// Deltas above the base, newest first.
    deltas: Vec<RedoRecord>,
    /// The LSN of the image or tombstone base.
    base_lsn: Lsn,
}

impl Versions {
    /// Adds the next older version; returns `true` once the base is found.
    pub(crate) fn push(&mut self, lsn: Lsn, value: Value) -> bool {
        match value {
            Value::Image(b) => (self.base, self.base_lsn) = (Base::Image(b), lsn),
            Value::Tombstone => (self.base, self.base_lsn) = (Base::Absent, lsn),
            Value::Delta { record, will_init } => {
                self.deltas.push(RedoRecord {
                    lsn,
                    record,
                    will_init,
                });
                if will_init {
                    self.base = Base::Init;
                }
            }
        }
        self.is_complete()
    }

    /// Records that an image layer covering the key does not hold it.
    pub(crate) fn mark_absent(&mut self) {
        self.base = Base::Absent;
    }

    /// Whether nothing was collected yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.deltas.is_empty() && matches!(self.base, Base::Missing)
    }

    /// The newest version collected, without applying anything.
    pub(crate) fn newest(&self) -> Newest<'_> {
        if let Some(d) = self.deltas.first() {
            return Newest::Delta(d.lsn);
        }
        match &self.base {
            Base::Image(b) => Newest::Image(self.base_lsn, b),
            Base::Absent if self.base_lsn != Lsn::ZERO => Newest::Tombstone(self.base_lsn),
            Base::Absent => Newest::AbsentInImage,
            Base::Missing | Base::Init => Newest::Nothing,
        }
    }

    /// Whether the base has been found.
    pub(crate) fn is_complete(&self) -> bool {
        !matches!(self.base, Base::Missing)
    }

    /// The versions collected, newest first, base included: for tests.
    #[cfg(test)]
    pub(crate) fn collected(&self) -> Vec<(Lsn, Value)> {
        let mut v: Vec<(Lsn, Value)> = self
            .deltas
            .iter()
            .map(|d| {
                (
                    d.lsn,
                    Value::Delta {
                        record: d.record.clone(),
                        will_init: d.will_init,
                    },
                )
            })
            .collect();
        match &self.base {
            Base::Image(b) => v.push((self.base_lsn, Value::Image(b.clone()))),
            Base::Absent if self.base_lsn != Lsn::ZERO => v.push((self.base_lsn, Value::Tombstone)),
            _ => {}
        }
        v
    }

    /// Delta records collected: what [`finish`](Self::finish) hands the redo hook.
    pub(crate) fn delta_count(&self) -> usize {
        self.deltas.len()
    }

    /// Turns the collected versions into the value, calling the redo hook if there are deltas.
    pub(crate) fn finish(mut self, key: &[u8], redo: &dyn WalRedo) -> Result<Option<Bytes>> {
        if self.deltas.is_empty() {
            return Ok(match self.base {
                Base::Image(b) => Some(b),
                _ => None,
            });
        }
        let base = match self.base {
            Base::Image(b) => Some(b),
            Base::Init => None,
            Base::Missing | Base::Absent => {
                let oldest = self.deltas.last().map(|d| d.lsn).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Redo,
                    format!(
                        "key {}: delta at LSN {oldest} has no base (no image, no will_init delta below it)",
                        show_key(key)
                    ),
                ));
            }
        };
        self.deltas.reverse();
        // The hook is the caller's code: a panic in it is a redo error of this key, and the
        // store (whose state the hook cannot touch) stays usable.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            redo.apply(key, base, &self.deltas)
        }));
        match applied {
            Ok(r) => r.map(Some),
            Err(p) => {
                let (oldest, newest) = (
                    self.deltas.first().map(|d| d.lsn).unwrap_or_default(),
                    self.deltas.last().map(|d| d.lsn).unwrap_or_default(),
                );
                Err(Error::new(
                    ErrorKind::Redo,
                    format!(
                        "key {}: the redo hook panicked applying {} delta(s) at LSN {oldest}..={newest}: {}",
                        show_key(key),
                        self.deltas.len(),
                        crate::error::panic_message(p.as_ref())
                    ),
                ))
            }
        }
    }
}
