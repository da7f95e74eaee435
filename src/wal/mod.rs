//! The local write-ahead log: puts and commits are logged before they are acknowledged, and
//! replayed at open above what the layer files hold.
//!
//! One log serves every timeline of a store, so that commits of several timelines share an
//! fsync (group commit). It is a sequence of segment files `wal/<seq>.seg`
//! ([format](crate::format::WalRecord)); a segment is removed once every timeline's flushed
//! layers cover every record in it.
//!
//! Group commit: puts and commits are appended to an in-memory buffer under a short lock; a
//! committer then takes the file lock and, unless an earlier committer already wrote (and
//! synced) past its record, writes out everything buffered so far and syncs it once for all.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::format::{WalRecord, decode_wal_segment, encode_commit, encode_wal_header};
use crate::id::TimelineId;
use crate::io::{Io, WritableFile};
use crate::lsn::Lsn;

/// When the write-ahead log is fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every `finish_write` returns only once its records are fsynced (group commit shares
    /// one fsync among concurrent committers). The default.
    EveryCommit,
    /// Records are written at each `finish_write` and fsynced at most this often; a crash
    /// can lose the commits of the last interval.
    Interval(Duration),
    /// Records are written at each `finish_write` and never fsynced by the store: a process
    /// crash loses nothing, a power loss can lose what the OS had not written back.
    Never,
}

/// Max LSN written per timeline.
type MaxLsns = BTreeMap<TimelineId, Lsn>;

struct Pending {
    bytes: Vec<u8>,
    /// Logical log position just past `bytes`.
    end: u64,
    max_lsn: MaxLsns,
}

struct Segment {
    seq: u64,
    path: PathBuf,
    max_lsn: MaxLsns,
}

/// Buffered bytes of commits that did not wait (`Durability::Memory`) beyond which one of them
/// writes the buffer out (without an fsync).
const MEMORY_COMMITS_MAX: usize = 1 << 20;

/// The largest buffer kept for reuse after a write; a burst's larger one is freed.
const SPARE_MAX: usize = 4 << 20;

struct Active {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    len: u64,
    /// Logical position written to the OS.
    written: u64,
    last_sync: Instant,
    /// Closed segments, oldest first, then the active one last.
    segments: Vec<Segment>,
    /// The buffer last written, emptied: it becomes the pending buffer at the next write, so
    /// that commits append into memory already grown to a commit's size.
    spare: Vec<u8>,
}

/// The active segment is replaced by a new one, so that it can be removed, once flushed layers
/// cover all of it and it holds at least this many bytes (and at close, whatever it holds).
const ACTIVE_TRIM_MIN: u64 = 1 << 20;

pub(crate) struct Wal {
    io: Io,
    dir: PathBuf,
    policy: FsyncPolicy,
    segment_size: u64,
    pending: Mutex<Pending>,
    active: Mutex<Active>,
    synced: AtomicU64,
    /// What each timeline has in layer files; segments below it for every timeline can go.
    durable: Mutex<MaxLsns>,
    /// Bytes written and fsyncs (see [`crate::metrics`]).
    bytes_written: ::metrics::Counter,
    fsyncs: ::metrics::Counter,
}

impl Wal {
    /// Reads every segment in `dir` (creating `dir` if missing), cuts a torn tail off the last
    /// one, and starts a new segment for new records. Returns the log and the records to
    /// replay, in order.
    pub(crate) fn open(
        io: &Io,
        dir: &Path,
        policy: FsyncPolicy,
        segment_size: u64,
    ) -> Result<(Wal, Vec<WalRecord>)> {
        io.create_dir_durably(dir)?;
        let mut seqs: Vec<(u64, String)> = Vec::new();
        for name in io.list_dir(dir)? {
            match name
                .strip_suffix(".seg")
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            {
                Some(seq) => seqs.push((seq, name)),
                None => io.remove_file(&dir.join(&name))?,
            }
        }
        seqs.sort();
        let mut records = Vec::new();
        let mut segments = Vec::new();
        let count = seqs.len();
        for (i, (seq, name)) in seqs.into_iter().enumerate() {
            let path = dir.join(&name);
            let bytes = io.read(&path)?;
            let d = decode_wal_segment(&bytes, &path)?;
            if d.torn_tail {
                if i + 1 != count {
                    return Err(Error::corruption(
                        &path,
                        d.valid_len as u64,
                        "torn record in a WAL segment that is not the last",
                    ));
                }
                // The one expected damage: a crash mid-write. Nothing past it was acknowledged.
                // Reported through `tracing` (the daemon picks the subscriber): the library
                // writes nothing to stderr itself.
                tracing::warn!(
                    segment = %path.display(),
                    offset = d.valid_len,
                    "the write-ahead log ends in a torn record; replay stops there"
                );
                io.truncate(&path, d.valid_len as u64)?;
            } else if d.valid_len < bytes.len() {
                // Zeros allocated ahead of the writes (a crash before the segment was cut to
                // its length): cut now, so the tail never lies between records.
                io.truncate(&path, d.valid_len as u64)?;
            }
            let mut max_lsn = MaxLsns::new();
            for r in &d.records {
                note(&mut max_lsn, r.timeline, r.lsn);
            }
            records.extend(d.records);
            segments.push(Segment { seq, path, max_lsn });
        }
        let next_seq = segments.last().map_or(1, |s| s.seq + 1);
        let (file, path) = create_segment(io, dir, next_seq)?;
        segments.push(Segment {
            seq: next_seq,
            path: path.clone(),
            max_lsn: MaxLsns::new(),
        });
        let len = crate::format::WAL_HEADER_LEN as u64;
        let wal = Wal {
            io: io.clone(),
            dir: dir.to_path_buf(),
            policy,
            segment_size,
            pending: Mutex::new(Pending {
                bytes: Vec::new(),
                end: 0,
                max_lsn: MaxLsns::new(),
            }),
            active: Mutex::new(Active {
                file,
                path,
                len,
                written: 0,
                last_sync: Instant::now(),
                segments,
                spare: Vec::new(),
            }),
            synced: AtomicU64::new(0),
            durable: Mutex::new(MaxLsns::new()),
            bytes_written: ::metrics::counter!(crate::metrics::WAL_BYTES),
            fsyncs: ::metrics::counter!(crate::metrics::WAL_FSYNCS),
        };
        Ok((wal, records))
    }

    /// Logs a commit with the puts it publishes (`put_count` of them, encoded by
    /// [`crate::format::encode_put`]) as one record and, per the fsync policy, waits until it
    /// is durable. Puts never reach the log without their commit.
    ///
    /// With `wait_sync` false (a commit at `Durability::Memory`) it only buffers the record:
    /// the next commit that waits, the interval sync or close writes it.
    pub(crate) fn commit(
        &self,
        tl: TimelineId,
        lsn: Lsn,
        time_micros: u64,
        put_count: u32,
        puts: &[u8],
        wait_sync: bool,
    ) -> Result<()> {
        let end = {
            let mut p = self.pending.lock();
            let before = p.bytes.len();
            encode_commit(&mut p.bytes, tl, lsn, time_micros, put_count, puts);
            p.end += (p.bytes.len() - before) as u64;
            note(&mut p.max_lsn, tl, lsn);
            p.end
        };
        self.after_append(end, wait_sync)
    }

    /// [`commit`](Wal::commit) of a record already encoded by [`encode_commit`].
    pub(crate) fn commit_encoded(
        &self,
        tl: TimelineId,
        lsn: Lsn,
        record: &[u8],
        wait_sync: bool,
    ) -> Result<()> {
        let end = {
            let mut p = self.pending.lock();
            p.bytes.extend_from_slice(record);
            p.end += record.len() as u64;
            note(&mut p.max_lsn, tl, lsn);
            p.end
        };
        self.after_append(end, wait_sync)
    }

    fn after_append(&self, end: u64, wait_sync: bool) -> Result<()> {
        if !wait_sync {
            // Bounded: a long run of commits that do not wait is written out now and then.
            if self.pending.lock().bytes.len() < MEMORY_COMMITS_MAX {
                return Ok(());
            }
            return self.write_upto(end, false);
        }
        let sync = match self.policy {
            FsyncPolicy::EveryCommit => true,
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => false,
        };
        self.write_upto(end, sync)
    }

    /// Writes everything buffered up to at least `pos`, and fsyncs it if `sync`.
    fn write_upto(&self, pos: u64, sync: bool) -> Result<()> {
        if sync && self.synced.load(Ordering::Acquire) >= pos {
            return Ok(());
        }
        let mut guard = self.active.lock();
        let a = &mut *guard;
        if a.written < pos {
            let (mut bytes, end, max_lsn) = {
                let mut p = self.pending.lock();
                (
                    std::mem::replace(&mut p.bytes, std::mem::take(&mut a.spare)),
                    p.end,
                    std::mem::take(&mut p.max_lsn),
                )
            };
            if a.len >= self.segment_size {
                self.roll(a)?;
            }
            a.file
                .write_all(&bytes)
                .map_err(|e| Error::io("writing WAL segment", &a.path, e))?;
            a.len += bytes.len() as u64;
            self.bytes_written.increment(bytes.len() as u64);
            a.written = end;
            if bytes.capacity() <= SPARE_MAX {
                bytes.clear();
                a.spare = bytes;
            }
            let seg = a.segments.last_mut().expect("an active segment");
            for (tl, lsn) in max_lsn {
                note(&mut seg.max_lsn, tl, lsn);
            }
        }
        let interval_due =
            matches!(self.policy, FsyncPolicy::Interval(d) if a.last_sync.elapsed() >= d);
        if (sync || interval_due) && self.synced.load(Ordering::Acquire) < a.written {
            self.io.sync(a.file.as_mut(), &a.path)?;
            self.fsyncs.increment(1);
            a.last_sync = Instant::now();
            self.synced.store(a.written, Ordering::Release);
        }
        Ok(())
    }

    /// Writes and fsyncs everything buffered: for the interval policy's timer and for close.
    pub(crate) fn sync(&self) -> Result<()> {
        let end = self.pending.lock().end;
        self.write_upto(end, true)
    }

    fn roll(&self, a: &mut Active) -> Result<()> {
        self.io.sync(a.file.as_mut(), &a.path)?;
        self.fsyncs.increment(1);
        self.synced.store(a.written, Ordering::Release);
        let seq = a.segments.last().map_or(1, |s| s.seq + 1);
        let (file, path) = create_segment(&self.io, &self.dir, seq)?;
        a.file = file;
        a.path = path.clone();
        a.len = crate::format::WAL_HEADER_LEN as u64;
        a.segments.push(Segment {
            seq,
            path,
            max_lsn: MaxLsns::new(),
        });
        Ok(())
    }

    /// Records that `tl` has everything up to `dcl` in layer files, and removes segments that
    /// hold nothing any timeline still needs.
    pub(crate) fn set_durable(&self, tl: TimelineId, dcl: Lsn) {
        self.durable.lock().insert(tl, dcl);
        self.recycle();
    }

    /// Sets what every timeline has in layer files, at open; timelines with records in the
    /// log but not in `known` were deleted, and their records are needed no more.
    pub(crate) fn init_durable(&self, known: impl IntoIterator<Item = (TimelineId, Lsn)>) {
        let mut d: MaxLsns = known.into_iter().collect();
        for s in &self.active.lock().segments {
            for tl in s.max_lsn.keys() {
                d.entry(*tl).or_insert(Lsn::MAX);
            }
        }
        *self.durable.lock() = d;
        self.recycle();
    }

    /// Forgets a deleted timeline: its records are needed no more.
    pub(crate) fn forget(&self, tl: TimelineId) {
        self.durable.lock().insert(tl, Lsn::MAX);
        self.recycle();
    }

    fn recycle(&self) {
        if let Err(e) = self.recycle_rolling_over(ACTIVE_TRIM_MIN) {
            // The new segment could not be made durable: the store's state is uncertain.
            self.io.poison(e.to_string());
        }
    }

    /// Removes every segment that flushed layers cover, the active one too once it holds no
    /// record still needed: at close, and whenever that would free at least
    /// [`ACTIVE_TRIM_MIN`] bytes (a new, empty segment takes its place).
    pub(crate) fn trim(&self) -> Result<()> {
        self.recycle_rolling_over(crate::format::WAL_HEADER_LEN as u64 + 1)
    }

    fn recycle_rolling_over(&self, active_min: u64) -> Result<()> {
        let mut durable = self.durable.lock();
        let mut a = self.active.lock();
        let needed = |s: &Segment| {
            // A timeline not registered yet keeps its records: nothing can be dropped unseen.
            s.max_lsn
                .iter()
                .any(|(tl, lsn)| durable.get(tl).is_none_or(|d| lsn > d))
        };
        // Records still in the pending buffer go to whichever segment is active when they
        // are written, so they never keep an old one.
        if a.len >= active_min && a.segments.last().is_some_and(|s| !needed(s)) {
            self.roll(&mut a)?;
        }
        let last = a.segments.len().saturating_sub(1);
        let mut keep = Vec::with_capacity(a.segments.len());
        for (i, s) in std::mem::take(&mut a.segments).into_iter().enumerate() {
            if i == last || needed(&s) || self.io.remove_file(&s.path).is_err() {
                keep.push(s);
            }
        }
        a.segments = keep;
        // A deleted timeline whose records are in no segment and no buffer needs no entry:
        // keeping it would grow the map, and this pass, with every timeline ever deleted.
        let pending = self.pending.lock();
        durable.retain(|tl, d| {
            *d != Lsn::MAX
                || pending.max_lsn.contains_key(tl)
                || a.segments.iter().any(|s| s.max_lsn.contains_key(tl))
        });
        Ok(())
    }

    /// Timelines the log keeps an entry for, for tests.
    #[cfg(test)]
    pub(crate) fn tracked_timelines(&self) -> usize {
        self.durable.lock().len()
    }

    /// Number of segment files, for tests and statistics.
    pub(crate) fn segment_count(&self) -> usize {
        self.active.lock().segments.len()
    }
}

fn note(m: &mut MaxLsns, tl: TimelineId, lsn: Lsn) {
    let e = m.entry(tl).or_insert(lsn);
    *e = (*e).max(lsn);
}

fn create_segment(io: &Io, dir: &Path, seq: u64) -> Result<(Box<dyn WritableFile>, PathBuf)> {
    let path = dir.join(format!("{seq:016X}.seg"));
    io.write_atomic(&path, &encode_wal_header(seq))?;
    let file = io.open_log(&path)?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a process killed mid-run leaves of a segment written through a map — its records,
    /// then zeros allocated ahead, perhaps with a newer segment after it — replays every
    /// record, and the zeros are cut.
    #[test]
    fn a_segment_left_with_zeros_allocated_ahead_replays_whole() {
        let (dir, copy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (wal, _) = Wal::open(&Io::std(), dir.path(), FsyncPolicy::Never, 64 << 20).unwrap();
        let tl = TimelineId::generate();
        for lsn in 1..=100 {
            wal.commit(tl, Lsn(lsn), lsn, 0, &[], true).unwrap();
        }
        // Copied while open: the file as a kill would leave it.
        let mut longer = false;
        for name in Io::std().list_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(dir.path().join(&name)).unwrap();
            longer |= bytes.ends_with(&[0; 64]);
            std::fs::write(copy.path().join(&name), bytes).unwrap();
        }
        if cfg!(target_os = "linux") {
            assert!(longer, "the segment is allocated ahead of its writes");
        }
        // Killed as it rolled over: the next segment was made before this one was cut.
        std::fs::write(
            copy.path().join(format!("{:016X}.seg", 2)),
            encode_wal_header(2),
        )
        .unwrap();
        let (_, records) =
            Wal::open(&Io::std(), copy.path(), FsyncPolicy::Never, 64 << 20).unwrap();
        let lsns: Vec<u64> = records.iter().map(|r| r.lsn.0).collect();
        assert_eq!(lsns, (1..=100).collect::<Vec<_>>());
        // Dropped, the writer cuts its file to what it wrote: the copy is cut to the same.
        drop(wal);
        let len = |p: &Path| std::fs::metadata(p).unwrap().len();
        let first = format!("{:016X}.seg", 1);
        assert_eq!(
            len(&copy.path().join(&first)),
            len(&dir.path().join(&first)),
            "the zeros are cut"
        );
    }

    /// Deleted timelines leave the log's bookkeeping once no segment holds their records, and
    /// segments go once nothing needs them.
    #[test]
    fn forgets_deleted_timelines_once_their_records_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        // One byte: every write after the first starts a new segment.
        let (wal, records) = Wal::open(&Io::std(), dir.path(), FsyncPolicy::Never, 1).unwrap();
        assert!(records.is_empty());
        let live = TimelineId::generate();
        wal.set_durable(live, Lsn(0));
        // Branches created and deleted without a write: nothing to keep.
        for _ in 0..100 {
            let tl = TimelineId::generate();
            wal.set_durable(tl, Lsn(0));
            wal.forget(tl);
        }
        assert_eq!(wal.tracked_timelines(), 1);

        // A timeline with records is remembered while a segment holds them.
        let gone = TimelineId::generate();
        wal.set_durable(gone, Lsn(0));
        wal.commit(gone, Lsn(10), 0, 0, &[], true).unwrap();
        wal.forget(gone);
        assert_eq!(
            wal.tracked_timelines(),
            2,
            "its records are in the last segment"
        );
        // The live timeline's commits move the log on to new segments.
        for lsn in 1..=3 {
            wal.commit(live, Lsn(lsn), 0, 0, &[], true).unwrap();
        }
        assert!(wal.segment_count() > 1);
        wal.set_durable(live, Lsn(3));
        assert_eq!(wal.segment_count(), 1, "only the last segment is left");
        assert_eq!(
            wal.tracked_timelines(),
            1,
            "the deleted timeline is forgotten"
        );

        // A live timeline's unflushed records keep their segment.
        wal.commit(live, Lsn(4), 0, 0, &[], true).unwrap();
        wal.commit(live, Lsn(5), 0, 0, &[], true).unwrap();
        wal.set_durable(live, Lsn(3));
        assert_eq!(wal.segment_count(), 2);
    }
}
