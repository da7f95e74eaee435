//! The single writer of a timeline.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{TimelineInner, WriteState};
use crate::error::{Error, ErrorKind, Result, show_key};
use crate::lsn::Lsn;
use crate::options::Durability;
use crate::value::Value;

/// The one writer of a timeline: puts versions at LSNs and publishes them with
/// [`finish_write`](TimelineWriter::finish_write).
///
/// Puts are invisible to readers until published. Dropping the writer releases the timeline for
/// another writer; puts not yet published stay pending for it.
///
/// A writer writes under the name its timeline had when it was taken. A
/// [`restore`](crate::Store::restore) moves that name to a new timeline and gives the old one a
/// backup name: from then on every `put` and `finish_write` of a writer taken before fails with
/// [`Closed`](crate::ErrorKind::Closed) naming both names, so that writes meant for the name
/// never land silently in the backup. Drop it and take a writer from
/// [`Store::timeline`](crate::Store::timeline) of the name you mean. (A [`Timeline`](crate::Timeline)
/// handle stays bound to its timeline: an old handle reads the backup, and says so in
/// [`name`](crate::Timeline::name).)
pub struct TimelineWriter {
    pub(super) tl: Arc<TimelineInner>,
    /// The timeline's name and rename count when the writer was taken.
    name: String,
    renames: u64,
}

impl std::fmt::Debug for TimelineWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimelineWriter")
            .field("timeline", &self.tl.name())
            .finish()
    }
}

impl TimelineWriter {
    pub(crate) fn new(tl: Arc<TimelineInner>) -> Self {
        // The count first: a rename between the two reads makes the writer refuse, never
        // write under a name it did not see.
        let renames = tl.renames.load(Ordering::Acquire);
        let name = tl.name();
        TimelineWriter { tl, name, renames }
    }

    /// Fails if a restore moved the writer's name to another timeline since it was taken.
    fn check_name(&self) -> Result<()> {
        if self.tl.renames.load(Ordering::Acquire) == self.renames {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Closed,
            format!(
                "a restore moved the name {:?} to another timeline; this writer's timeline {} is now {:?}, and writes through it are refused: take a new writer",
                self.name,
                self.tl.id,
                self.tl.name()
            ),
        ))
    }

    /// Writes `value` for `key` at `lsn`. Several keys may share an LSN.
    ///
    /// # Errors
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument), changing nothing, when the key is
    /// empty or longer than `max_key_len`, the value is longer than `max_value_len`, `lsn` is not
    /// above `last_record_lsn`, `lsn` is below an earlier put, or `(key, lsn)` was written before.
    pub fn put(&mut self, key: &[u8], lsn: Lsn, value: Value) -> Result<()> {
        let tl = &self.tl;
        tl.check()?;
        self.check_name()?;
        let opts = &tl.env.options;
        if key.is_empty() {
            return Err(Error::invalid(format!(
                "timeline {}: empty key at LSN {lsn}",
                tl.name()
            )));
        }
        if key.len() > opts.max_key_len {
            return Err(Error::invalid(format!(
                "timeline {}: key {} at LSN {lsn} is {} bytes, over the limit of {}",
                tl.name(),
                show_key(key),
                key.len(),
                opts.max_key_len
            )));
        }
        if value.payload_len() > opts.max_value_len {
            return Err(Error::invalid(format!(
                "timeline {}: value of key {} at LSN {lsn} is {} bytes, over the limit of {}",
                tl.name(),
                show_key(key),
                value.payload_len(),
                opts.max_value_len
            )));
        }
        if lsn == Lsn::MAX {
            return Err(Error::invalid(format!(
                "timeline {}: put of key {} at LSN {lsn}: the largest LSN is reserved",
                tl.name(),
                show_key(key)
            )));
        }
        let lrl = tl.last_record_lsn();
        if lsn <= lrl {
            return Err(Error::invalid(format!(
                "timeline {}: put of key {} at LSN {lsn} is not above last_record_lsn {lrl}",
                tl.name(),
                show_key(key)
            )));
        }
        let mut ws = tl.write.lock();
        if lsn < ws.last_put {
            return Err(Error::invalid(format!(
                "timeline {}: put of key {} at LSN {lsn} goes backwards from LSN {}",
                tl.name(),
                show_key(key),
                ws.last_put
            )));
        }
        if lsn == ws.last_put && ws.open.contains(key, lsn) {
            return Err(Error::invalid(format!(
                "timeline {}: key {} was already written at LSN {lsn}",
                tl.name(),
                show_key(key)
            )));
        }
        if tl.env.wal.is_some() {
            crate::format::encode_put(&mut ws.wal_puts, lsn, key, &value);
            ws.wal_put_count += 1;
        }
        let m = &tl.env.metrics;
        m.puts.increment(1);
        m.put_bytes
            .increment((key.len() + value.payload_len()) as u64);
        ws.open.put_pipelined(key, lsn, value);
        ws.last_put = lsn;
        Ok(())
    }

    /// Publishes every put at or below `lsn`: readers see them, waiting readers wake.
    ///
    /// May freeze the open layer for flushing, and waits if too many frozen layers are queued.
    ///
    /// # Errors
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument), changing nothing, when `lsn` is
    /// below `last_record_lsn` or below a pending put; [`Poisoned`](crate::ErrorKind::Poisoned)
    /// if a background flush failed.
    pub fn finish_write(&mut self, lsn: Lsn) -> Result<()> {
        let now = self.tl.env.options.clock.now();
        self.commit(lsn, now, self.tl.env.options.durability)
    }

    /// [`finish_write`](TimelineWriter::finish_write) with the commit time the caller knows
    /// (a WAL commit record's timestamp, say) instead of the store's clock. The time goes into
    /// the timeline's `lsn ↔ commit time` index.
    ///
    /// # Errors
    /// As [`finish_write`](TimelineWriter::finish_write).
    pub fn finish_write_at(&mut self, lsn: Lsn, commit_time: std::time::SystemTime) -> Result<()> {
        self.commit(lsn, commit_time, self.tl.env.options.durability)
    }

    /// [`finish_write`](TimelineWriter::finish_write) acknowledged at `durability` instead of
    /// the store's default ([`StoreOptions::durability`](crate::StoreOptions::durability)).
    ///
    /// At [`Durability::Remote`] it returns once the WAL chunk holding the commit is in object
    /// storage and the node still owns the store; it blocks the calling thread until then. On a
    /// timeline object storage does not hold whole yet — just created and not in the uploaded
    /// catalog, or (on a node restarted on its own directory) with layers above its index — it
    /// also waits for the upload that puts it there: before that, a node attaching would find
    /// the chunk without the commits below it.
    ///
    /// # Errors
    /// As [`finish_write`](TimelineWriter::finish_write); at [`Durability::Remote`] also
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument), changing nothing, without a
    /// remote or the WAL; [`Fenced`](crate::ErrorKind::Fenced) if another node took the store;
    /// the error of a failed upload ([`Io`](crate::ErrorKind::Io)). After such an error the
    /// commit is visible on this node but was not acknowledged: it may or may not survive the
    /// node.
    pub fn finish_write_with(&mut self, lsn: Lsn, durability: Durability) -> Result<()> {
        let now = self.tl.env.options.clock.now();
        self.commit(lsn, now, durability)
    }

    fn commit(
        &mut self,
        lsn: Lsn,
        commit_time: std::time::SystemTime,
        durability: Durability,
    ) -> Result<()> {
        let tl = &self.tl;
        tl.check()?;
        self.check_name()?;
        if lsn == Lsn::MAX {
            return Err(Error::invalid(format!(
                "timeline {}: finish_write at LSN {lsn}: the largest LSN is reserved",
                tl.name()
            )));
        }
        let shipper = tl
            .env
            .remote
            .as_ref()
            .filter(|r| !r.read_only && tl.env.wal.is_some());
        if durability == Durability::Remote && shipper.is_none() {
            return Err(Error::invalid(format!(
                "timeline {}: finish_write at LSN {lsn} with durability Remote needs a remote and the WAL",
                tl.name()
            )));
        }
        let lrl = tl.last_record_lsn();
        if lsn < lrl {
            return Err(Error::invalid(format!(
                "timeline {}: finish_write at LSN {lsn} is below last_record_lsn {lrl}",
                tl.name()
            )));
        }
        let mut ws = tl.write.lock();
        if lsn < ws.last_put {
            return Err(Error::invalid(format!(
                "timeline {}: finish_write at LSN {lsn} is below the pending put at LSN {}",
                tl.name(),
                ws.last_put
            )));
        }
        let mut shipped_at = None;
        if lsn > lrl
            && let Some(wal) = &tl.env.wal
        {
            let time = crate::clock::to_micros(commit_time);
            let wait_sync = durability != Durability::Memory;
            let logged = match shipper {
                Some(r) => {
                    // One encoding for both logs: the local one and the chunks shipped.
                    let mut record = std::mem::take(&mut ws.wal_record);
                    record.clear();
                    crate::format::encode_commit(
                        &mut record,
                        tl.id,
                        lsn,
                        time,
                        ws.wal_put_count,
                        &ws.wal_puts,
                    );
                    let logged = wal.commit_encoded(tl.id, lsn, &record, wait_sync);
                    if logged.is_ok() {
                        shipped_at = Some(r.wal().append(tl.id, lsn, &record));
                    }
                    ws.wal_record = record;
                    logged
                }
                None => wal.commit(tl.id, lsn, time, ws.wal_put_count, &ws.wal_puts, wait_sync),
            };
            if let Err(e) = logged {
                // The log may or may not hold the commit: nothing more can be acknowledged.
                tl.env.poison(&e);
                return Err(e);
            }
            ws.wal_puts.clear();
            ws.wal_put_count = 0;
        }
        let frozen = tl.publish_commit(&mut ws, lsn, commit_time);
        drop(ws);
        if lsn > lrl {
            tl.env.metrics.commits.increment(1);
        }
        if frozen {
            tl.wait_for_frozen_below(tl.env.options.max_frozen_layers)?;
        }
        if durability == Durability::Remote
            && let Some(r) = shipper
        {
            // First what lies below the commit: layers this node opened with above their
            // index, or a timeline object storage does not know yet (the WAL shipper holds
            // chunks for the former, and fails nobody while it does).
            let indexed = if tl.awaits_index() {
                tl.env.block_on(tl.wait_indexed())
            } else {
                Ok(())
            };
            let shipped = || match shipped_at {
                Some(pos) => tl.env.block_on(r.wait_shipped(pos)),
                // Nothing new: what was committed up to `lsn` is buffered or shipped already.
                None => tl.env.block_on(r.ship_now()),
            };
            indexed.and_then(|()| shipped()).map_err(|e| {
                e.context(format_args!(
                    "timeline {}: commit at LSN {lsn} not acknowledged at durability Remote",
                    tl.name()
                ))
            })?;
        }
        Ok(())
    }

    /// The timeline this writer writes.
    pub fn timeline_name(&self) -> String {
        self.tl.name()
    }
}

impl TimelineInner {
    /// Makes everything up to `lsn` visible, records its commit time, and freezes the open
    /// layer if it is full. Returns whether it froze.
    pub(crate) fn publish_commit(
        self: &Arc<Self>,
        ws: &mut WriteState,
        lsn: Lsn,
        commit_time: std::time::SystemTime,
    ) -> bool {
        // Readers read only published LSNs, and see every put below them.
        ws.open.apply_pending();
        if lsn > self.last_record_lsn() {
            self.record_commit(lsn, commit_time);
            self.gauges.last_record_lsn.set(lsn.0 as f64);
        }
        self.last_record_lsn.store(lsn.0, Ordering::Release);
        // Waking waiters costs a lock and a pass over the channel's wakers: only when some
        // task subscribed. A waiter subscribes, then reads `last_record_lsn`; with a SeqCst
        // fence on both sides, either it sees this store or this sees its subscription.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.lrl_tx.receiver_count() > 0 {
            self.lrl_tx.send_replace(lsn);
        }
        let opts = &self.env.options;
        let open = &ws.open;
        let full = open.size() >= opts.freeze_bytes
            || (lsn.0.saturating_sub(open.start().0) >= opts.freeze_lsn_distance
                && !open.is_empty());
        if full {
            self.freeze_locked(ws);
        }
        full
    }

    /// Replays a logged put: checked when it was logged.
    pub(crate) fn replay_put(&self, key: &[u8], lsn: Lsn, value: Value) {
        if lsn <= self.last_record_lsn() {
            return;
        }
        let mut ws = self.write.lock();
        if ws.open.contains(key, lsn) {
            return;
        }
        ws.open.put(key, lsn, value);
        ws.last_put = ws.last_put.max(lsn);
    }

    /// Replays a logged commit.
    pub(crate) fn replay_commit(self: &Arc<Self>, lsn: Lsn, time_micros: u64) {
        if lsn <= self.last_record_lsn() {
            return;
        }
        let mut ws = self.write.lock();
        self.publish_commit(&mut ws, lsn, crate::clock::from_micros(time_micros));
    }

    /// Drops replayed puts that no commit published: they were never acknowledged.
    pub(crate) fn discard_unpublished(&self) {
        let mut ws = self.write.lock();
        let lrl = self.last_record_lsn();
        if ws.last_put > lrl {
            // A layer takes no puts after a split (readers may be reading what it hid): a
            // copy of the published versions replaces it, and readers still in it finish there.
            let kept = Arc::new(ws.open.copy_up_to(lrl));
            self.replace_open(&mut ws, kept, None);
            ws.last_put = lrl;
            // Nor may the next commit log them.
            ws.wal_puts.clear();
            ws.wal_put_count = 0;
        }
    }
}

impl Drop for TimelineWriter {
    fn drop(&mut self) {
        self.tl.writer_taken.store(false, Ordering::Release);
    }
}
