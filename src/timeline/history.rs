//! The history of one key: every version written within the retention window.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::TimelineInner;
use super::read::ReadTrace;
use crate::error::Result;
use crate::format::LayerKind;
use crate::lsn::Lsn;
use crate::value::Value;

/// One version of a key, from [`Timeline::history`](crate::Timeline::history).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyVersion {
    /// The LSN of the version.
    pub lsn: Lsn,
    /// What was written at `lsn`: an image, a delta record or a tombstone. `None` for an entry
    /// that stands for the value the window starts with: the key's value at the GC cutoff
    /// (`lsn`), written at or below it, perhaps by an ancestor.
    pub written: Option<Value>,
    /// The key's value as of `lsn`, as [`get`](crate::Timeline::get) returns it there (deltas
    /// applied); `None` where the key does not exist.
    pub value: Option<Bytes>,
}

impl TimelineInner {
    /// Every version of `key` in `[gc_cutoff, last_record_lsn]`, oldest first, led by the
    /// value at the cutoff when no version was written exactly there.
    pub(crate) async fn history(&self, key: &[u8]) -> Result<Vec<KeyVersion>> {
        self.check()?;
        let lsn = self.last_record_lsn();
        let (mut snap, written) = 'snapshot: loop {
            let snap = self.snapshot_at(lsn)?;
            let cutoff = self.gc_cutoff();
            let mut written = BTreeMap::new();
            for layer in std::iter::once(&snap.open).chain(snap.frozen.iter()) {
                written.extend(layer.versions_of(key));
            }
            for layer in snap.map.layers() {
                if layer.kind() != LayerKind::Delta
                    || !layer.key_range().contains(key)
                    || layer.lsn_range().end <= cutoff
                {
                    continue;
                }
                let file = match layer.file() {
                    Some(f) => f,
                    None => match self.download_on_store(layer).await? {
                        Some(f) => f,
                        // Replaced since the snapshot: the next one names what replaced it.
                        None => continue 'snapshot,
                    },
                };
                written.extend(file.versions_of(key)?);
            }
            written.retain(|l, _| *l >= cutoff && *l <= lsn);
            break (snap, (cutoff, written));
        };
        let (cutoff, written) = written;
        let mut trace = ReadTrace::default();
        let mut out = Vec::with_capacity(written.len() + 1);
        if written.first_key_value().is_none_or(|(l, _)| *l > cutoff) && cutoff > Lsn::ZERO {
            let value = self.read_value(&mut snap, key, cutoff, &mut trace).await?;
            if value.is_some() {
                out.push(KeyVersion {
                    lsn: cutoff,
                    written: None,
                    value,
                });
            }
        }
        for (at, w) in written {
            let value = self.read_value(&mut snap, key, at, &mut trace).await?;
            out.push(KeyVersion {
                lsn: at,
                written: Some(w),
                value,
            });
        }
        Ok(out)
    }
}
