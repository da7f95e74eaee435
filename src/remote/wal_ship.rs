//! The write-ahead log in object storage: every commit is shipped, in chunks, so that a commit
//! acknowledged at [`Durability::Remote`](crate::Durability::Remote) survives the loss of the
//! node, and a node that attaches replays what the indexes do not cover yet.
//!
//! # Chunks
//!
//! A chunk is `wal/{seq:016x}-{gen}`: a local WAL segment's bytes (its header carries `seq`,
//! then whole commit records, see [`crate::format::WalRecord`]) sealed with the object trailer.
//! Commits of every timeline go into one stream, so one request carries every commit waiting at
//! that moment (group commit). A chunk is shipped when a committer waits for it, when the
//! buffer reaches [`StoreOptions::remote_wal_chunk_bytes`](crate::StoreOptions::remote_wal_chunk_bytes),
//! or [`remote_wal_interval`](crate::StoreOptions::remote_wal_interval) after its first record
//! — but not before the uploader's first pass when a node restarted with layers above their
//! index (see `RemoteCtx::note_unindexed_at_open`): no chunk lands above commits object storage
//! does not hold. One chunk is in flight at a time, so sequence order is commit order. A chunk whose upload or
//! check failed is retried byte for byte under its name (a follower may have read it already);
//! later commits wait for the next chunk. Sequence numbers continue across generations: a new
//! owner starts one past the last valid chunk it listed (at 1 if none is left).
//!
//! # Acknowledgement and takeover
//!
//! A commit at the remote level is acknowledged only after (1) the chunk holding it was
//! uploaded and (2) a generation check *after* that upload found no newer claim. A new owner
//! claims, then lists the chunks. If the old owner's check passed, it happened before the
//! claim, so the upload had finished before the claim, and the new owner's listing (after the
//! claim, on a strongly consistent store) contains the chunk. If the check failed, the commit
//! fails with [`ErrorKind::Fenced`](crate::ErrorKind::Fenced) and was never acknowledged; the
//! new owner may or may not replay it, as with any commit whose acknowledgement was lost.
//!
//! Before its first chunk, an owner records where its chunks start: `walstart/{gen}/{seq}`,
//! one past the last valid chunk it listed. Every chunk the previous owner writes after that
//! listing has a number at or above it: the previous owner numbers its next chunk one past its
//! last confirmed one, which the listing holds (or which was deleted, covered, with every
//! chunk before it), and retries a failed chunk under its number. (Starting past every chunk
//! listed, stale ones of older owners included, could start above such a late chunk, which
//! then read as valid.) A chunk of generation `g` is valid unless a newer generation started at or below its sequence number (or wrote a chunk there): such a chunk
//! was written by a fenced owner after its successor listed, so none of it was acknowledged,
//! and it must not surface even when the successor has written no chunk yet. Valid chunks must form an unbroken run of
//! sequence numbers; a gap that five listings in a row show (one listing can show one: it is no
//! snapshot, and may list a chunk the owner deletes next and miss the one deleted after), a torn chunk (its trailer fails) or a chunk that does not decode is
//! [`ErrorKind::Corruption`](crate::ErrorKind::Corruption) naming the object.
//!
//! # Deletion
//!
//! A chunk is deleted once the uploaded index of every timeline it holds records of covers
//! them, oldest chunk first and never past one still needed, so that what remains is always an
//! unbroken run. A task of its own does it, so shipping never waits for deletions. A deletion validated by
//! an old owner just before a claim removes only records covered by an index that was uploaded
//! before its check, which the new owner reads; a chunk that vanishes between the listing and
//! its download was such a prefix, and the listing is read again.
//!
//! A follower (a read-only store) lists and reads the chunks *before* the indexes, so that
//! every chunk deleted before its listing is covered by an index it reads; afterwards it reads
//! only the chunks after the last one it applied (after where the newest owner started, when
//! none was left), and reloads from the indexes when the next one is gone or a newer owner has
//! started its WAL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::names::{
    WAL_DIR, WAL_STARTS_DIR, parse_wal_chunk, parse_wal_start, wal_chunk_object, wal_start_object,
};
use super::{Applied, Generation, RemoteCtx, RemoteStorage};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{WalRecord, decode_wal_segment, encode_wal_header};
use crate::id::TimelineId;
use crate::lsn::Lsn;

/// How many times a listing with a gap in its run of chunks is read again before the gap is
/// called corruption (a listing that ran beside the owner's deletions can show one).
const GAP_RELISTS: u32 = 5;

/// How many times a read-only store's open lists and reads the WAL chunks when one it listed
/// is gone before its download (the owner deleted it once an index covered it), pausing a
/// little longer before each: a busy owner deletes often, and an open on a loaded machine
/// can meet several deletions in a row.
const VANISHED_RELISTS: u32 = 20;

/// Covered chunks taken per pass of the deleter (each deleted after its own generation check).
const DELETE_BATCH: usize = 256;

/// How the shipper batches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShipOptions {
    /// Ship at most this long after the first record of a chunk was buffered.
    pub(crate) interval: Duration,
    /// Ship once the buffer holds this many bytes.
    pub(crate) chunk_bytes: usize,
}

/// A chunk in object storage that this node knows of and has not deleted.
struct Chunk {
    name: String,
    /// Per timeline, the highest LSN of its records in the chunk.
    max_lsn: BTreeMap<TimelineId, Lsn>,
}

#[derive(Default)]
struct ShipState {
    /// Commit records buffered since the last chunk.
    buf: Vec<u8>,
    /// Per timeline, the highest LSN in `buf`.
    buf_max: BTreeMap<TimelineId, Lsn>,
    /// When the first record in `buf` was buffered.
    first_at: Option<Instant>,
    /// Bytes ever buffered: the position just past `buf`.
    end: u64,
    /// The highest position a committer waits to see shipped.
    wanted: u64,
    /// The sequence number of the next chunk.
    next_seq: u64,
    /// Chunks in object storage, oldest first.
    chunks: Vec<Chunk>,
    /// Per timeline, the highest LSN in a shipped chunk (never lowered).
    shipped_lsn: BTreeMap<TimelineId, Lsn>,
    /// Per timeline, what its uploaded index covers; `Lsn::MAX` once its objects are gone.
    indexed: BTreeMap<TimelineId, Lsn>,
    /// The chunk being shipped, if its first try failed or is under way.
    inflight: Option<Inflight>,
}

/// A chunk being shipped: retried as it is until it is in object storage.
#[derive(Clone)]
struct Inflight {
    seq: u64,
    bytes: Bytes,
    max_lsn: BTreeMap<TimelineId, Lsn>,
    /// The buffer position just past it.
    end: u64,
}

/// The shipping half of [`RemoteCtx`].
pub(crate) struct WalShip {
    opts: ShipOptions,
    state: Mutex<ShipState>,
    wake: Notify,
    /// Woken when an index upload may have made chunks deletable.
    deletable: Notify,
    /// The position shipped and confirmed (its generation checked after the upload).
    shipped: watch::Sender<u64>,
    /// The number of failed ships and the last failure: a waiter learns its chunk failed.
    failed: watch::Sender<(u64, Option<Error>)>,
    /// Set when the store stops or is fenced: waiters stop waiting.
    closed: watch::Sender<bool>,
}

impl WalShip {
    pub(crate) fn new(opts: ShipOptions) -> WalShip {
        WalShip {
            opts,
            state: Mutex::new(ShipState {
                next_seq: 1,
                ..ShipState::default()
            }),
            wake: Notify::new(),
            deletable: Notify::new(),
            shipped: watch::Sender::new(0),
            failed: watch::Sender::new((0, None)),
            closed: watch::Sender::new(false),
        }
    }

    /// Buffers one encoded commit record of `tl` at `lsn`; returns the position a committer
    /// waits for. Called in commit order per timeline (under the timeline's write lock).
    pub(crate) fn append(&self, tl: TimelineId, lsn: Lsn, record: &[u8]) -> u64 {
        let mut s = self.state.lock();
        s.buf.extend_from_slice(record);
        s.end += record.len() as u64;
        let m = s.buf_max.entry(tl).or_insert(lsn);
        *m = (*m).max(lsn);
        if s.first_at.is_none() {
            s.first_at = Some(Instant::now());
        }
        let end = s.end;
        let full = s.buf.len() >= self.opts.chunk_bytes;
        drop(s);
        if full {
            self.wake.notify_one();
        }
        end
    }

    /// The highest LSN of `tl` in a shipped chunk.
    pub(crate) fn shipped_lsn(&self, tl: TimelineId) -> Lsn {
        self.state
            .lock()
            .shipped_lsn
            .get(&tl)
            .copied()
            .unwrap_or(Lsn::ZERO)
    }

    /// Per timeline, the highest LSN safe in object storage: in a shipped chunk or covered by
    /// an uploaded index.
    pub(crate) fn safe_lsns(&self) -> BTreeMap<TimelineId, Lsn> {
        let s = self.state.lock();
        let mut out = s.shipped_lsn.clone();
        for (tl, lsn) in &s.indexed {
            if *lsn != Lsn::MAX {
                let e = out.entry(*tl).or_insert(*lsn);
                *e = (*e).max(*lsn);
            }
        }
        out
    }

    /// The LSN `tl`'s uploaded index covers, if one was uploaded by this node or found at open.
    pub(crate) fn indexed_lsn(&self, tl: TimelineId) -> Option<Lsn> {
        self.state
            .lock()
            .indexed
            .get(&tl)
            .copied()
            .filter(|l| *l != Lsn::MAX)
    }

    /// Wakes every waiter for good: the store stops, or another node owns it.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Records that the uploaded index of `tl` covers everything up to `lsn` (`Lsn::MAX` for a
    /// deleted timeline), so chunks below can go.
    pub(crate) fn note_indexed(&self, tl: TimelineId, lsn: Lsn) {
        let mut s = self.state.lock();
        let e = s.indexed.entry(tl).or_insert(lsn);
        *e = (*e).max(lsn);
        drop(s);
        self.deletable.notify_one();
    }
}

/// Splits chunks listed as `(seq, generation, name)`, sorted, into the valid ones, as
/// `(seq, name)` in order, and the stale ones: a chunk is valid unless a newer generation wrote
/// a chunk at or below its sequence number or started its WAL (`starts`: generation → first
/// sequence number) at or below it. Such a chunk was written by a fenced owner after its
/// successor began, and nothing in it was acknowledged.
pub(super) fn valid_chunks(
    listed: &[(u64, Generation, String)],
    starts: &BTreeMap<Generation, u64>,
) -> (Vec<(u64, String)>, Vec<String>) {
    let mut valid: Vec<(u64, String)> = Vec::new();
    let mut stale = Vec::new();
    let mut newest_below = Generation(0);
    let mut i = 0;
    while i < listed.len() {
        let seq = listed[i].0;
        let group_end = listed[i..]
            .iter()
            .position(|(s, _, _)| *s != seq)
            .map_or(listed.len(), |n| i + n);
        let group_max = listed[i..group_end]
            .iter()
            .map(|(_, g, _)| *g)
            .max()
            .expect("a group");
        newest_below = newest_below.max(group_max);
        for (s, g, name) in &listed[i..group_end] {
            // A newer generation started its WAL at or below this chunk: written by a
            // fenced owner after its successor began, never acknowledged.
            let superseded = starts
                .range(g.next().unwrap_or(*g)..)
                .any(|(ng, start)| *ng > *g && *s >= *start);
            if *g == newest_below && !superseded {
                valid.push((*s, name.clone()));
            } else {
                stale.push(name.clone());
            }
        }
        i = group_end;
    }
    (valid, stale)
}

/// A chunk read back at open.
pub(crate) struct Tail {
    /// Records of every valid chunk, in order.
    pub(crate) records: Vec<WalRecord>,
    /// The chunks, for registration.
    chunks: Vec<Chunk>,
    /// Chunks a fenced owner wrote after its successor started: never acknowledged.
    stale: Vec<String>,
    /// The sequence number to continue from.
    next_seq: u64,
    /// The last valid chunk's sequence number (what a follower has applied after this).
    pub(crate) last_seq: Option<u64>,
    /// Bytes of the chunks read.
    pub(crate) bytes: u64,
    /// The newest generation whose WAL start was listed.
    pub(crate) newest_start: Generation,
}

impl Tail {
    /// How many chunks were read.
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

impl RemoteStorage {
    /// Whether `generation` has recorded where its WAL chunks start (an owner does, with a
    /// local WAL, once it has listed the chunks before it and before its first chunk).
    pub(crate) async fn wal_started(&self, generation: Generation) -> Result<bool> {
        Ok(self
            .list(WAL_STARTS_DIR)
            .await?
            .iter()
            .any(|(name, _)| parse_wal_start(name).is_some_and(|(g, _)| g == generation)))
    }
}

/// What a follower's read of the chunks after the ones it applied found.
pub(crate) enum Follow {
    /// The chunks after them, in order (perhaps none).
    Tail(Tail),
    /// The chunk after them is gone (covered by a newer index and deleted) or a newer owner
    /// numbered anew: the follower must reload from the indexes.
    Gap,
}

impl RemoteCtx {
    fn ship(&self) -> &WalShip {
        &self.wal
    }

    /// The WAL shipper's buffer and watermarks.
    pub(crate) fn wal(&self) -> &WalShip {
        &self.wal
    }

    /// Reads every valid WAL chunk at or below this node's generation, in order (see the
    /// module docs). Retries the listing when a chunk vanishes between listing and download
    /// (an old owner's deletion of a covered prefix).
    ///
    /// A read-only store reads the chunks before the indexes, so a chunk deleted while it read
    /// them is covered by an index it reads next: it lists and reads them again.
    pub(crate) async fn read_wal_tail(&self) -> Result<Tail> {
        let mut reads = 1;
        loop {
            match self.read_wal_after(None).await? {
                Follow::Tail(t) => return Ok(t),
                // Only a read-only store sees this: its owner indexed and deleted a chunk
                // while it read them.
                Follow::Gap if reads < VANISHED_RELISTS => {
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(reads))).await;
                    reads += 1;
                }
                Follow::Gap => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "a WAL chunk under {} was deleted while this read-only store read them (its owner indexed it meanwhile), {VANISHED_RELISTS} times in a row: open again",
                            self.storage.prefix()
                        ),
                    ));
                }
            }
        }
    }

    /// As [`read_wal_tail`](RemoteCtx::read_wal_tail), but only the chunks after the ones a
    /// follower applied (every valid chunk with `None`). A follower gets [`Follow::Gap`] once a
    /// generation newer than the newest start it listed has started its WAL (see
    /// [`Applied::start`](super::sync::Applied::start)).
    pub(crate) async fn read_wal_after(&self, applied: Option<Applied>) -> Result<Follow> {
        let after = applied.and_then(|a| a.seq);
        // Listings read again: for a gap in the run, and for an oldest chunk gone before
        // its download (each with its own budget).
        let (mut gap_relists, mut vanished_relists) = (0u32, 0u32);
        'list: loop {
            let mut listed: Vec<(u64, Generation, String)> = self
                .storage
                .list(WAL_DIR)
                .await?
                .into_iter()
                .filter_map(|(name, _)| {
                    let (seq, g) = parse_wal_chunk(&name)?;
                    (g <= self.generation).then_some((seq, g, name))
                })
                .collect();
            listed.sort();
            // Where each generation started its WAL (written before its first chunk).
            let starts: BTreeMap<Generation, u64> = self
                .storage
                .list(WAL_STARTS_DIR)
                .await?
                .into_iter()
                .filter_map(|(name, _)| parse_wal_start(&name))
                .filter(|(g, _)| *g <= self.generation)
                .collect();
            // (Its start is written before its first chunk, so it is listed when they are.)
            let newest_start = starts.keys().next_back().copied().unwrap_or(Generation(0));
            if applied.is_some_and(|a| newest_start > a.start) {
                return Ok(Follow::Gap);
            }
            let (mut valid, stale) = valid_chunks(&listed, &starts);
            // One past the last valid chunk, not past every chunk listed: a fenced owner's
            // chunk that lands after this listing is numbered above its last valid one (a
            // ship that fails is retried under the same number), so it is at or above this
            // owner's start, and never valid; a stale chunk numbered higher must not lift the
            // start above it.
            let next_seq = valid.last().map_or(1, |(seq, _)| seq + 1);
            if let Some(a) = after {
                // A chunk after `a` that is not listed any more was deleted unread. (With
                // nothing listed, chunks may have come and gone since: the follower compares
                // what it applied with the owner's heartbeat.) The chunks it applied do not
                // matter to it, gaps among them included.
                valid.retain(|(seq, _)| *seq > a);
                if valid.first().is_some_and(|(first, _)| *first > a + 1) {
                    return Ok(Follow::Gap);
                }
            }
            for w in valid.windows(2) {
                if w[1].0 != w[0].0 + 1 {
                    if gap_relists + 1 < GAP_RELISTS {
                        gap_relists += 1;
                        // A listing is no snapshot: it may show a chunk the owner deleted
                        // (covered, oldest first) while it ran, and miss the next one it
                        // deleted after. A second look shows an unbroken run.
                        tokio::time::sleep(Duration::from_millis(10 * u64::from(gap_relists)))
                            .await;
                        continue 'list;
                    }
                    return Err(Error::new(
                        ErrorKind::Corruption,
                        format!(
                            "WAL in object storage: chunk {:016x} is missing between {} and {} under {}",
                            w[0].0 + 1,
                            w[0].1,
                            w[1].1,
                            self.storage.prefix()
                        ),
                    ));
                }
            }
            let last_seq = valid.last().map(|(seq, _)| *seq);
            let mut records = Vec::new();
            let mut chunks = Vec::new();
            let mut bytes_read = 0u64;
            for (n, (seq, name)) in valid.iter().enumerate() {
                let bytes = match self.storage.download(name).await {
                    Ok(b) => b,
                    Err(e)
                        if e.kind() == ErrorKind::NotFound
                            && (after.is_some() || self.read_only) =>
                    {
                        // Deleted once an index covered it: reload from the indexes.
                        return Ok(Follow::Gap);
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound && n == 0 && vanished_relists < 4 => {
                        vanished_relists += 1;
                        // The oldest chunk went: an old owner deleted a covered prefix.
                        continue 'list;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        return Err(Error::new(
                            ErrorKind::Corruption,
                            format!(
                                "WAL in object storage: chunk {name} under {} was listed but is gone, after chunks before it were read",
                                self.storage.prefix()
                            ),
                        ));
                    }
                    Err(e) => return Err(e),
                };
                bytes_read += bytes.len() as u64;
                let path = std::path::PathBuf::from(name);
                let d = decode_wal_segment(&bytes, &path)?;
                if d.torn_tail || d.seq != *seq {
                    return Err(Error::corruption(
                        &path,
                        d.valid_len as u64,
                        if d.torn_tail {
                            "WAL chunk ends in a torn record".to_string()
                        } else {
                            format!("WAL chunk header says sequence {:016x}", d.seq)
                        },
                    ));
                }
                let mut max_lsn = BTreeMap::new();
                for r in &d.records {
                    let m = max_lsn.entry(r.timeline).or_insert(r.lsn);
                    *m = (*m).max(r.lsn);
                }
                records.extend(d.records);
                chunks.push(Chunk {
                    name: name.clone(),
                    max_lsn,
                });
            }
            return Ok(Follow::Tail(Tail {
                records,
                chunks,
                stale,
                next_seq,
                // With nothing listed, the chunks to come are numbered at or above where the
                // newest owner started: a follower expects the next one there, and reloads on
                // a gap (chunks shipped and deleted before it listed again, perhaps above what
                // its indexes cover).
                last_seq: last_seq.or(after).or_else(|| {
                    self.read_only.then(|| {
                        starts
                            .values()
                            .next_back()
                            .map_or(0, |s| s.saturating_sub(1))
                    })
                }),
                bytes: bytes_read,
                newest_start,
            }));
        }
    }

    /// Takes over the chunks read at open: they are deleted once indexes cover them (and the
    /// stale ones at once), and new chunks continue after them. `known` are the timelines the
    /// catalog names; records of any other can never be replayed.
    ///
    /// Returns the records, to replay.
    pub(crate) fn adopt_wal_tail(&self, tail: Tail, known: &[TimelineId]) -> Vec<WalRecord> {
        if self.read_only {
            *self.applied.lock() = Applied {
                seq: tail.last_seq,
                start: tail.newest_start,
            };
            return tail.records;
        }
        let mut s = self.ship().state.lock();
        s.next_seq = s.next_seq.max(tail.next_seq);
        for c in &tail.chunks {
            for (tl, lsn) in &c.max_lsn {
                let e = s.shipped_lsn.entry(*tl).or_insert(*lsn);
                *e = (*e).max(*lsn);
                if !known.contains(tl) {
                    s.indexed.insert(*tl, Lsn::MAX);
                }
            }
        }
        s.chunks.extend(tail.chunks);
        drop(s);
        *self.stale_chunks.lock() = tail.stale;
        self.ship().wake.notify_one();
        tail.records
    }

    /// Records where this generation's chunks start (`walstart/{gen}/{seq}`), before its first
    /// chunk: chunks of older generations at or after it are a fenced owner's and never valid.
    pub(crate) async fn mark_wal_start(&self) -> Result<()> {
        let seq = self.ship().state.lock().next_seq;
        self.storage
            .upload(&wal_start_object(self.generation, seq), Bytes::new())
            .await
    }

    /// Waits until everything buffered up to `pos` is shipped and confirmed.
    ///
    /// # Errors
    /// [`ErrorKind::Fenced`] once another node owns the store; the error of a ship that failed
    /// while this waited (the commit may or may not be in object storage; it is not
    /// acknowledged); [`ErrorKind::Closed`] if the store stops first.
    pub(crate) async fn wait_shipped(&self, pos: u64) -> Result<()> {
        let ship = self.ship();
        let mut shipped = ship.shipped.subscribe();
        let mut failed = ship.failed.subscribe();
        let mut closed = ship.closed.subscribe();
        let failures_before = failed.borrow_and_update().0;
        {
            let mut s = ship.state.lock();
            s.wanted = s.wanted.max(pos);
        }
        ship.wake.notify_one();
        loop {
            if *shipped.borrow_and_update() >= pos {
                return Ok(());
            }
            if self.is_fenced() {
                return Err(super::fenced_error(self.generation));
            }
            {
                let f = failed.borrow_and_update();
                if f.0 > failures_before {
                    return Err(f.1.clone().unwrap_or_else(|| {
                        Error::new(ErrorKind::Io, "shipping the WAL to object storage failed")
                    }));
                }
            }
            if self.stopped.load(Ordering::Acquire) || *closed.borrow_and_update() {
                return Err(Error::new(
                    ErrorKind::Closed,
                    "the store closed before the commit reached object storage",
                ));
            }
            // No timer: the wait must end even while the store's runtime shuts down.
            tokio::select! {
                _ = shipped.changed() => {}
                _ = failed.changed() => {}
                _ = closed.changed() => {}
            }
        }
    }

    /// Ships what is buffered now, whatever the interval says, and waits for it.
    pub(crate) async fn ship_now(&self) -> Result<()> {
        let end = self.ship().state.lock().end;
        self.wait_shipped(end).await
    }

    /// The WAL shipper: runs until stopped or fenced.
    pub(super) async fn run_wal_ship(self: Arc<Self>) {
        let ship = self.ship();
        let mut backoff = Duration::from_millis(20);
        let stale = std::mem::take(&mut *self.stale_chunks.lock());
        for name in stale {
            if self.stopped.load(Ordering::Acquire) || self.is_fenced() {
                return;
            }
            // Never acknowledged: the successor's chunks supersede them.
            let _ = self.delete_checked(&name).await;
        }
        loop {
            if self.stopped.load(Ordering::Acquire) || self.is_fenced() {
                return;
            }
            if self.shipping_held() {
                // Layers found above their index at open are not in object storage yet: a
                // chunk landing now would lie above commits no node attaching could read.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let wait = {
                let s = ship.state.lock();
                if s.inflight.is_some() {
                    Some(Duration::ZERO)
                } else if s.buf.is_empty() {
                    None
                } else if s.wanted > *ship.shipped.borrow() || s.buf.len() >= ship.opts.chunk_bytes
                {
                    Some(Duration::ZERO)
                } else {
                    let since = s.first_at.map_or(Duration::ZERO, |t| t.elapsed());
                    Some(ship.opts.interval.saturating_sub(since))
                }
            };
            match wait {
                Some(d) if d.is_zero() => match self.ship_once().await {
                    Ok(()) => backoff = Duration::from_millis(20),
                    Err(e) => {
                        if e.kind() == ErrorKind::Fenced {
                            self.fence();
                            ship.close();
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                },
                Some(d) => {
                    let _ = tokio::time::timeout(d, ship.wake.notified()).await;
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_millis(200), ship.wake.notified())
                        .await;
                }
            }
        }
    }

    /// Uploads the buffer as the next chunk, checks the generation, and only then reports it
    /// shipped. On failure the records go back to the front of the buffer.
    async fn ship_once(&self) -> Result<()> {
        let ship = self.ship();
        let chunk = {
            let mut s = ship.state.lock();
            match s.inflight.clone() {
                // A chunk whose upload or check failed is retried byte for byte: a follower
                // may have read it already, so a name never gets other content.
                Some(c) => c,
                None => {
                    let seq = s.next_seq;
                    let mut bytes = encode_wal_header(seq);
                    bytes.extend_from_slice(&std::mem::take(&mut s.buf));
                    s.first_at = None;
                    let c = Inflight {
                        seq,
                        bytes: Bytes::from(bytes),
                        max_lsn: std::mem::take(&mut s.buf_max),
                        end: s.end,
                    };
                    s.inflight = Some(c.clone());
                    c
                }
            }
        };
        let name = wal_chunk_object(chunk.seq, self.generation);
        let result = async {
            self.storage.upload(&name, chunk.bytes.clone()).await?;
            self.storage.check_generation(self.generation).await
        }
        .await;
        match result {
            Ok(()) => {
                let mut s = ship.state.lock();
                s.inflight = None;
                s.next_seq = chunk.seq + 1;
                for (tl, lsn) in &chunk.max_lsn {
                    let e = s.shipped_lsn.entry(*tl).or_insert(*lsn);
                    *e = (*e).max(*lsn);
                }
                s.chunks.push(Chunk {
                    name,
                    max_lsn: chunk.max_lsn,
                });
                drop(s);
                ship.shipped.send_replace(chunk.end);
                Ok(())
            }
            Err(e) => {
                if e.kind() == ErrorKind::Fenced {
                    // Before the waiters hear of it: whoever they tell finds the store fenced.
                    self.fence();
                }
                let e = e.context("shipping the WAL to object storage");
                *self.last_error.lock() = Some(e.clone());
                ship.failed.send_modify(|(n, last)| {
                    *n += 1;
                    *last = Some(e.clone());
                });
                Err(e)
            }
        }
    }

    /// Deletes the oldest chunks while every record in them is covered by an uploaded index.
    pub(crate) async fn delete_covered_chunks(&self) {
        loop {
            // The covered chunks at the front, oldest first.
            let names: Vec<String> = {
                let s = self.ship().state.lock();
                s.chunks
                    .iter()
                    .take_while(|c| {
                        c.max_lsn.iter().all(|(tl, lsn)| {
                            s.indexed.get(tl).is_some_and(|indexed| indexed >= lsn)
                        })
                    })
                    .take(DELETE_BATCH)
                    .map(|c| c.name.clone())
                    .collect()
            };
            if names.is_empty() {
                return;
            }
            // In order, each checked against the generation, so that what remains is always
            // an unbroken run.
            for name in names {
                if self.delete_checked(&name).await.is_err() {
                    return;
                }
                let mut s = self.ship().state.lock();
                if s.chunks.first().is_some_and(|c| c.name == name) {
                    s.chunks.remove(0);
                }
            }
        }
    }

    /// Deletes covered chunks in the background, apart from the shipper so that shipping
    /// never waits for deletions: woken when an index is uploaded.
    pub(super) async fn run_wal_deleter(self: Arc<Self>) {
        loop {
            if self.stopped.load(Ordering::Acquire) || self.is_fenced() {
                return;
            }
            self.delete_covered_chunks().await;
            let _ =
                tokio::time::timeout(Duration::from_millis(500), self.ship().deletable.notified())
                    .await;
        }
    }
}
