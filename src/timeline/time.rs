//! Commit times: recording them at `finish_write`, persisting them with flushes, and answering
//! "the LSN as of time T" by binary search.

use std::time::SystemTime;

use super::TimelineInner;
use super::time_index::{self, LsnAt, TimeIndex};
use crate::clock::to_micros;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::TIME_INDEX_FILE;
use crate::lsn::Lsn;

/// The in-memory index and how far it is on disk.
#[derive(Default)]
pub(crate) struct TimeState {
    pub(crate) index: TimeIndex,
    /// Entries at or below this LSN are in the file.
    pub(crate) persisted_upto: Lsn,
}

impl TimelineInner {
    fn time_index_path(&self) -> std::path::PathBuf {
        self.dir.join(TIME_INDEX_FILE)
    }

    /// Records that the commit at `lsn` happened at `time`.
    pub(crate) fn record_commit(&self, lsn: Lsn, time: SystemTime) {
        self.time.lock().index.record(lsn, to_micros(time));
    }

    /// Loads the persisted index at open, dropping entries past `disk_consistent_lsn`.
    pub(crate) fn load_time_index(&self) -> Result<()> {
        let path = self.time_index_path();
        let dcl = self.disk_consistent_lsn();
        let mut index = time_index::load(&self.env.io, &path, dcl)?;
        let before = index.len();
        index.truncate_above(dcl);
        if index.len() != before {
            time_index::rewrite(&self.env.io, &path, &index)?;
        }
        *self.time.lock() = TimeState {
            index,
            persisted_upto: dcl,
        };
        Ok(())
    }

    /// Appends the entries up to `dcl` that are not on disk yet. Called before the manifest
    /// that moves `disk_consistent_lsn` to `dcl` is written.
    ///
    /// Commits go on meanwhile: the `time` lock is held only to take the entries and to mark
    /// them persisted, not across the append and its fsync.
    pub(crate) fn persist_time_index(&self, dcl: Lsn) -> Result<()> {
        let _file = self.time_file.lock();
        let entries: Vec<_> = {
            let t = self.time.lock();
            t.index
                .entries_after(t.persisted_upto)
                .into_iter()
                .filter(|(l, _)| *l <= dcl)
                .collect()
        };
        if !entries.is_empty() {
            time_index::append_durably(&self.env.io, &self.time_index_path(), &entries)?;
        }
        let mut t = self.time.lock();
        t.persisted_upto = t.persisted_upto.max(dcl);
        Ok(())
    }

    /// Drops entries below the GC cutoff (keeping the one at or just below it) and rewrites
    /// the persisted part.
    pub(crate) fn trim_time_index(&self, cutoff: Lsn) -> Result<()> {
        let _file = self.time_file.lock();
        let on_disk = {
            let mut t = self.time.lock();
            let before = t.index.len();
            t.index.trim_below(cutoff);
            if t.index.len() == before {
                return Ok(());
            }
            let upto = t.persisted_upto;
            TimeIndex::from_entries(
                t.index
                    .to_vec()
                    .into_iter()
                    .filter(|(l, _)| *l <= upto)
                    .collect(),
            )
        };
        time_index::rewrite(&self.env.io, &self.time_index_path(), &on_disk)
    }

    /// Seeds a new branch's index with the parent's commit time `time` (microseconds) at the
    /// branch point `lsn` (as [`pin_branch_point`](Self::pin_branch_point) returned it), so
    /// that times between that commit and the branch's first commit map to the branch point.
    pub(crate) fn inherit_time_index(&self, lsn: Lsn, time: Option<u64>) -> Result<()> {
        let Some(time) = time else {
            return Ok(());
        };
        let _file = self.time_file.lock();
        let mut t = self.time.lock();
        t.index.record(lsn, time);
        time_index::append_durably(&self.env.io, &self.time_index_path(), &[(lsn, time)])?;
        t.persisted_upto = lsn;
        Ok(())
    }

    /// The LSN as of `time` for retention: zero when no commit is that old.
    pub(crate) fn lsn_at_or_zero(&self, time: SystemTime) -> Lsn {
        match self.time.lock().index.lsn_at(to_micros(time)) {
            LsnAt::At(l) | LsnAt::AtOrAfterLast { lsn: l, .. } => l,
            LsnAt::NoCommits | LsnAt::Before { .. } => Lsn::ZERO,
        }
    }

    /// The LSN of the last commit at or before `time`.
    pub(crate) fn lsn_at(&self, time: SystemTime) -> Result<Lsn> {
        self.check()?;
        let t = to_micros(time);
        let answer = self.time.lock().index.lsn_at(t);
        let name = self.name();
        let lsn = match answer {
            LsnAt::At(l) => l,
            LsnAt::AtOrAfterLast { lsn, last_time } => {
                let now = to_micros(self.env.options.clock.now());
                if t > now {
                    return Err(Error::invalid(format!(
                        "timeline {name}: time {} is in the future (now is {}); the last commit is LSN {lsn} at {}",
                        fmt_time(t),
                        fmt_time(now),
                        fmt_time(last_time)
                    )));
                }
                lsn
            }
            LsnAt::NoCommits => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("timeline {name} has no commit times recorded"),
                ));
            }
            LsnAt::Before {
                first_lsn,
                first_time,
            } => {
                return Err(Error::new(
                    ErrorKind::BelowGcCutoff,
                    format!(
                        "timeline {name}: time {} is before the first commit it knows, LSN {first_lsn} at {} (GC cutoff {})",
                        fmt_time(t),
                        fmt_time(first_time),
                        self.gc_cutoff()
                    ),
                ));
            }
        };
        let cutoff = self.gc_cutoff();
        if lsn < cutoff {
            return Err(Error::new(
                ErrorKind::BelowGcCutoff,
                format!(
                    "timeline {name}: time {} maps to LSN {lsn}, below the GC cutoff {cutoff}",
                    fmt_time(t)
                ),
            ));
        }
        Ok(lsn)
    }

    /// The commit time of the newest commit at or below `lsn`, if recorded.
    pub(crate) fn time_at(&self, lsn: Lsn) -> Option<SystemTime> {
        self.time
            .lock()
            .index
            .time_of(lsn)
            .map(crate::clock::from_micros)
    }
}

/// Formats microseconds since the Unix epoch as RFC 3339 UTC, e.g. `2026-11-21T10:00:00.000000Z`.
pub(crate) fn fmt_time(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian), by 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        micros % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::fmt_time;

    #[test]
    fn formats_known_instants() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(fmt_time(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(
            fmt_time(1_795_255_200_123_456),
            "2026-11-21T10:00:00.123456Z"
        );
    }
}
