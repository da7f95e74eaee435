//! The model oracle `model.rs` and `model_history.rs` compare the store with: versions in a
//! `BTreeMap<(key, lsn), value>` whose values keep the *meaning* of every delta record, never
//! the bytes the engine is given, and the reads reconstructed from them.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use stratakv::{ErrorKind, SimpleRedo, Value};

/// What a delta record means; the engine gets its `SimpleRedo` encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rec {
    Set(Vec<u8>),
    Append(Vec<u8>),
    Patch(u32, Vec<u8>),
    /// Bytes `SimpleRedo` must refuse: empty, an unknown op byte, a patch without its offset.
    Junk(Vec<u8>),
}

impl Rec {
    pub fn encode(&self) -> Bytes {
        match self {
            Rec::Set(b) => SimpleRedo::set(b),
            Rec::Append(b) => SimpleRedo::append(b),
            Rec::Patch(off, b) => SimpleRedo::patch(*off, b),
            Rec::Junk(b) => Bytes::copy_from_slice(b),
        }
    }

    /// Applies the record's meaning; `Err` for a record the redo must refuse.
    pub fn apply(&self, v: &mut Vec<u8>) -> Result<(), ()> {
        match self {
            Rec::Set(b) => *v = b.clone(),
            Rec::Append(b) => v.extend_from_slice(b),
            Rec::Patch(off, b) => {
                let off = *off as usize;
                let end = off + b.len();
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[off..end].copy_from_slice(b);
            }
            Rec::Junk(_) => return Err(()),
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MVal {
    Image(Vec<u8>),
    /// A delta record and whether it is `will_init`.
    Delta(Rec, bool),
    Tombstone,
}

impl MVal {
    pub fn to_value(&self) -> Value {
        match self {
            MVal::Image(b) => Value::image(b.clone()),
            MVal::Delta(r, false) => Value::delta(r.encode()),
            MVal::Delta(r, true) => Value::init_delta(r.encode()),
            MVal::Tombstone => Value::Tombstone,
        }
    }
}

pub type Versions = BTreeMap<(Vec<u8>, u64), MVal>;
/// What a read returns, with the error reduced to its kind.
pub type Answer = Result<Option<Vec<u8>>, ErrorKind>;
/// What a scan returns, with the error reduced to its kind.
pub type Scanned = Result<Vec<(Vec<u8>, Vec<u8>)>, ErrorKind>;
pub type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The value of `key` at `lsn`: newest version at or below it, deltas applied oldest first on
/// the newest image, tombstone (nothing) or `will_init` delta (the empty value) under them.
pub fn model_get(versions: &Versions, key: &[u8], lsn: u64) -> Answer {
    let mut deltas: Vec<&Rec> = Vec::new(); // newest first
    // None: no base found; Some(None): the key does not exist; Some(Some(v)): a value.
    let mut base: Option<Option<Vec<u8>>> = None;
    for (_, v) in versions
        .range((key.to_vec(), 0)..=(key.to_vec(), lsn))
        .rev()
    {
        match v {
            MVal::Image(b) => {
                base = Some(Some(b.clone()));
                break;
            }
            MVal::Tombstone => {
                base = Some(None);
                break;
            }
            MVal::Delta(r, will_init) => {
                deltas.push(r);
                if *will_init {
                    base = Some(Some(Vec::new()));
                    break;
                }
            }
        }
    }
    if deltas.is_empty() {
        return Ok(base.flatten());
    }
    let Some(Some(mut value)) = base else {
        return Err(ErrorKind::Redo);
    };
    for r in deltas.iter().rev() {
        r.apply(&mut value).map_err(|()| ErrorKind::Redo)?;
    }
    Ok(Some(value))
}

/// `scan`: every key with a version at or below `lsn` in the bounds, in key order, without the
/// ones that do not exist there; the first failing key fails the whole scan.
pub fn model_scan(versions: &Versions, bounds: &KeyBounds, lsn: u64) -> Scanned {
    let keys: BTreeSet<&Vec<u8>> = versions
        .keys()
        .filter(|(k, l)| *l <= lsn && bounds.contains(k))
        .map(|(k, _)| k)
        .collect();
    let mut out = Vec::new();
    for k in keys {
        if let Some(v) = model_get(versions, k, lsn)? {
            out.push((k.clone(), v));
        }
    }
    Ok(out)
}

/// The engine's answer to a `get`, as the model gives it.
pub fn answer(r: stratakv::Result<Option<Bytes>>) -> Answer {
    r.map(|o| o.map(|b| b.to_vec())).map_err(|e| e.kind())
}

/// The engine's answer to a `scan`, as the model gives it.
pub fn scanned(r: stratakv::Result<Vec<(Bytes, Bytes)>>) -> Scanned {
    r.map(|v| {
        v.into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    })
    .map_err(|e| e.kind())
}

/// Random bytes, `len` of them.
pub fn bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), len)
}

/// A fresh directory, in memory where the system has one (`/dev/shm`): the model checks
/// semantics, not what survives power loss, and fsyncs to a real disk would make the run ~6×
/// slower for nothing. `errors.rs` runs on the ordinary temporary directory.
pub fn test_dir() -> Result<tempfile::TempDir, TestCaseError> {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    dir.map_err(|e| TestCaseError::fail(format!("creating a temporary directory: {e}")))
}
