//! Three-way merge of one timeline's changes into another that shares its ancestor.
//!
//! The base is the two timelines' common point (see [`Diff`]); *ours* is the target (the
//! writer's timeline) at its `last_record_lsn`, *theirs* the source at the LSN the caller
//! names. One diff of ours against theirs lists every key whose values differ; for each, the
//! base value is read from the common ancestor at the common point, and:
//!
//! | ours vs base | theirs vs base | outcome |
//! |---|---|---|
//! | same | differs | theirs is written to the target |
//! | differs | same | nothing: only the target changed it |
//! | differs | differs | a conflict, given to the resolver |
//!
//! "Changed" means a different value after redo: a key rewritten to the value it had is not a
//! change, and a key both sides changed to the same value is not a conflict. Everything is
//! read and resolved before anything is written; the writes then go in at one LSN and are
//! published by one `finish_write`, so readers see all of the merge or none of it.

use bytes::Bytes;

use super::diff::Diff;
use super::writer::TimelineWriter;
use super::{Timeline, TimelineInner};
use crate::error::{Error, Result, show_key};
use crate::layer::Versions;
use crate::lsn::Lsn;
use crate::value::Value;

/// A key both sides of a merge changed to different values since the common point.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MergeConflict {
    /// The key.
    pub key: Bytes,
    /// Its value at the common point (`None`: absent).
    pub base: Option<Bytes>,
    /// Its value on the target, the timeline merged into.
    pub ours: Option<Bytes>,
    /// Its value on the source, the timeline merged from.
    pub theirs: Option<Bytes>,
}

/// What the resolver decides for one [`MergeConflict`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Keep the target's value: nothing is written for the key.
    KeepOurs,
    /// Write the source's value (a tombstone if it is absent there).
    TakeTheirs,
    /// Write this value (`None`: delete the key).
    Merged(Option<Bytes>),
    /// Abort the whole merge: nothing is written.
    Abort,
}

/// What a merge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MergeReport {
    /// Keys written to the target at the merge LSN (theirs, or a resolved value).
    pub written: usize,
    /// Every conflict met, in key order, with the resolver's decision.
    pub conflicts: Vec<(MergeConflict, Resolution)>,
    /// The key whose conflict the resolver aborted on; then nothing was written.
    pub aborted: Option<Bytes>,
}

impl TimelineWriter {
    /// Merges into this writer's timeline (ours) every change the `source` timeline (theirs)
    /// made between the two timelines' common point and `source_lsn`, as one commit at `at`.
    /// Keys both changed are given to `resolver`; a [`Resolution::Abort`] aborts the merge,
    /// which then writes nothing and says so in [`MergeReport::aborted`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use stratakv::{Lsn, Resolution, Store, StoreOptions, Value};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(StoreOptions::new(dir.path())).await?;
    /// let main = store.create_timeline("main").await?;
    /// let mut w = main.writer()?;
    /// w.put(b"k", Lsn(0x10), Value::image("base"))?;
    /// w.finish_write(Lsn(0x10))?;
    /// let dev = store.branch("dev", &main, Lsn(0x10)).await?;
    /// let mut d = dev.writer()?;
    /// d.put(b"k", Lsn(0x20), Value::image("dev"))?;
    /// d.put(b"new", Lsn(0x20), Value::image("x"))?;
    /// d.finish_write(Lsn(0x20))?;
    /// w.put(b"k", Lsn(0x30), Value::image("main"))?;
    /// w.finish_write(Lsn(0x30))?;
    /// let report = w
    ///     .merge_from(&dev, Lsn(0x20), Lsn(0x40), |c| {
    ///         assert_eq!(c.base.as_deref(), Some(&b"base"[..]));
    ///         Resolution::Merged(Some("main+dev".into()))
    ///     })
    ///     .await?;
    /// assert_eq!((report.written, report.conflicts.len()), (2, 1));
    /// assert_eq!(main.get(b"k", Lsn(0x40)).await?.unwrap(), "main+dev");
    /// assert_eq!(main.get(b"new", Lsn(0x40)).await?.unwrap(), "x");
    /// store.close().await?;
    /// # Ok::<(), stratakv::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument), changing nothing, when `at` is
    /// not above the target's `last_record_lsn`, the writer has puts not yet published, the
    /// source is the target, the two share no ancestor, or a merged value is over
    /// `max_value_len`; the errors of [`Timeline::diff`] and of reads.
    pub async fn merge_from(
        &mut self,
        source: &Timeline,
        source_lsn: Lsn,
        at: Lsn,
        mut resolver: impl FnMut(&MergeConflict) -> Resolution,
    ) -> Result<MergeReport> {
        let tl = self.tl.clone();
        tl.check()?;
        let ours_lsn = tl.last_record_lsn();
        if std::sync::Arc::ptr_eq(&tl, &source.inner) {
            return Err(Error::invalid(format!(
                "merge: timeline {} cannot be merged into itself",
                tl.name()
            )));
        }
        let pending = tl.write.lock().last_put;
        if pending > ours_lsn {
            return Err(Error::invalid(format!(
                "merge into timeline {}: the writer has puts up to LSN {pending} not yet published (last_record_lsn {ours_lsn}); finish_write them first",
                tl.name()
            )));
        }
        if at <= ours_lsn || at == Lsn::MAX {
            return Err(Error::invalid(format!(
                "merge into timeline {}: LSN {at} must be above last_record_lsn {ours_lsn} (and below the reserved largest LSN)",
                tl.name()
            )));
        }
        let mut diff = Diff::new(
            &tl,
            ours_lsn,
            &source.inner,
            source_lsn,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
        )
        .await?;
        let (common, c) = diff.common();
        let common = common.clone();
        let mut report = MergeReport::default();
        let mut writes: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        while let Some(e) = diff.next().await? {
            let base = read_base(&common, &e.key, c).await?;
            if e.old == base {
                writes.push((e.key, e.new));
                continue;
            }
            if e.new == base {
                continue;
            }
            let conflict = MergeConflict {
                key: e.key,
                base,
                ours: e.old,
                theirs: e.new,
            };
            let r = resolver(&conflict);
            match &r {
                Resolution::KeepOurs => {}
                Resolution::TakeTheirs => {
                    writes.push((conflict.key.clone(), conflict.theirs.clone()))
                }
                Resolution::Merged(v) => writes.push((conflict.key.clone(), v.clone())),
                Resolution::Abort => {
                    report.aborted = Some(conflict.key.clone());
                    report.conflicts.push((conflict, r));
                    return Ok(report);
                }
            }
            report.conflicts.push((conflict, r));
        }
        let max = tl.env.options.max_value_len;
        if let Some((k, v)) = writes
            .iter()
            .find(|(_, v)| v.as_ref().is_some_and(|v| v.len() > max))
        {
            return Err(Error::invalid(format!(
                "merge into timeline {}: the value for key {} is {} bytes, over the limit of {max}; nothing was written",
                tl.name(),
                show_key(k),
                v.as_ref().map_or(0, |v| v.len())
            )));
        }
        if writes.is_empty() {
            return Ok(report);
        }
        let written = writes.len();
        let applied = (|| {
            for (k, v) in writes {
                let value = v.map_or(Value::Tombstone, Value::Image);
                self.put(&k, at, value)?;
            }
            self.finish_write(at)
        })();
        if let Err(e) = applied {
            // Puts not yet published are dropped: the merge writes all or nothing.
            if tl.last_record_lsn() < at {
                tl.discard_unpublished();
            }
            return Err(e.context(format_args!("merge into timeline {}", tl.name())));
        }
        report.written = written;
        Ok(report)
    }

    /// [`merge_from`](TimelineWriter::merge_from) for a caller on its own thread.
    ///
    /// # Errors
    /// As [`merge_from`](TimelineWriter::merge_from).
    pub fn merge_from_blocking(
        &mut self,
        source: &Timeline,
        source_lsn: Lsn,
        at: Lsn,
        resolver: impl FnMut(&MergeConflict) -> Resolution,
    ) -> Result<MergeReport> {
        let env = self.tl.env.clone();
        env.block_on(self.merge_from(source, source_lsn, at, resolver))
    }
}

/// The value of `key` on the common ancestor at the common point. Its GC keeps what a read
/// there needs: the point is a child's branch point or an LSN a side of the diff reads.
async fn read_base(common: &TimelineInner, key: &[u8], c: Lsn) -> Result<Option<Bytes>> {
    let mut pinned = Vec::new();
    loop {
        let snap = common.snapshot();
        let mut trace = super::ReadTrace::default();
        match common.collect_traced(&snap, key, c, &mut trace)? {
            super::read::Local::Ready((v, _)) => {
                let v: Versions = v;
                return v.finish(key, common.env.options.redo.as_ref());
            }
            super::read::Local::Missing(layer) => {
                pinned.extend(common.download_on_store(&layer).await?);
            }
            super::read::Local::Stale => common.check()?,
        }
    }
}
