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
//! or [`remote_wal_interval`](crate::StoreOptions::remote_wal_interval) after its first record;
//! one chunk is in flight at a time, so sequence order is commit order. Sequence numbers
//! continue across generations: a new owner starts above every chunk it listed.
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
//! A chunk of generation `g` is valid unless a chunk of a newer generation has a sequence
//! number at or below its own: such a chunk was written by a fenced owner after its successor
//! started writing, so none of it was acknowledged. Valid chunks must form an unbroken run of
//! sequence numbers; a gap, a torn chunk (its trailer fails) or a chunk that does not decode is
//! [`ErrorKind::Corruption`](crate::ErrorKind::Corruption) naming the object.
//!
//! # Deletion
//!
//! A chunk is deleted (checked against the generation, like every deletion) once the uploaded
//! index of every timeline it holds records of covers them, oldest chunk first and never past
//! one still needed, so that what remains is always an unbroken run. A deletion validated by
//! an old owner just before a claim removes only records covered by an index that was uploaded
//! before its check, which the new owner reads; a chunk that vanishes between the listing and
//! its download was such a prefix, and the listing is read again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::names::{WAL_DIR, parse_wal_chunk, wal_chunk_object};
use super::{Generation, RemoteCtx};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{WalRecord, decode_wal_segment, encode_wal_header};
use crate::id::TimelineId;
use crate::lsn::Lsn;

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
}

/// The shipping half of [`RemoteCtx`].
pub(crate) struct WalShip {
    opts: ShipOptions,
    state: Mutex<ShipState>,
    wake: Notify,
    /// The position shipped and confirmed (its generation checked after the upload).
    shipped: watch::Sender<u64>,
    /// The number of failed ships and the last failure: a waiter learns its chunk failed.
    failed: watch::Sender<(u64, Option<Error>)>,
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
            shipped: watch::Sender::new(0),
            failed: watch::Sender::new((0, None)),
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

    /// Records that the uploaded index of `tl` covers everything up to `lsn` (`Lsn::MAX` for a
    /// deleted timeline), so chunks below can go.
    pub(crate) fn note_indexed(&self, tl: TimelineId, lsn: Lsn) {
        let mut s = self.state.lock();
        let e = s.indexed.entry(tl).or_insert(lsn);
        *e = (*e).max(lsn);
        drop(s);
        self.wake.notify_one();
    }
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
    pub(crate) async fn read_wal_tail(&self) -> Result<Tail> {
        let mut attempts = 0;
        'list: loop {
            attempts += 1;
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
            let next_seq = listed.last().map_or(1, |(seq, _, _)| seq + 1);
            // Valid: no newer generation at or below its sequence number.
            let mut valid = Vec::new();
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
                    if *g == newest_below {
                        valid.push((*s, name.clone()));
                    } else {
                        stale.push(name.clone());
                    }
                }
                i = group_end;
            }
            for w in valid.windows(2) {
                if w[1].0 != w[0].0 + 1 {
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
            let mut records = Vec::new();
            let mut chunks = Vec::new();
            for (n, (seq, name)) in valid.iter().enumerate() {
                let bytes = match self.storage.download(name).await {
                    Ok(b) => b,
                    Err(e) if e.kind() == ErrorKind::NotFound && n == 0 && attempts < 5 => {
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
            return Ok(Tail {
                records,
                chunks,
                stale,
                next_seq,
            });
        }
    }

    /// Takes over the chunks read at open: they are deleted once indexes cover them (and the
    /// stale ones at once), and new chunks continue after them. `known` are the timelines the
    /// catalog names; records of any other can never be replayed.
    ///
    /// Returns the records, to replay.
    pub(crate) fn adopt_wal_tail(&self, tail: Tail, known: &[TimelineId]) -> Vec<WalRecord> {
        if self.read_only {
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
            if self.stopped.load(Ordering::Acquire) {
                return Err(Error::new(
                    ErrorKind::Closed,
                    "the store closed before the commit reached object storage",
                ));
            }
            let tick = {
                let _store_timer = self.runtime.enter();
                tokio::time::sleep(Duration::from_millis(100))
            };
            tokio::select! {
                _ = shipped.changed() => {}
                _ = failed.changed() => {}
                () = tick => {}
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
            let wait = {
                let s = ship.state.lock();
                if s.buf.is_empty() {
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
                    Ok(()) => {
                        backoff = Duration::from_millis(20);
                        self.delete_covered_chunks().await;
                    }
                    Err(e) => {
                        if e.kind() == ErrorKind::Fenced {
                            self.fenced.store(true, Ordering::Release);
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                },
                Some(d) => {
                    let _ = tokio::time::timeout(d, ship.wake.notified()).await;
                }
                None => {
                    self.delete_covered_chunks().await;
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
        let (bytes, buf_max, end, seq) = {
            let mut s = ship.state.lock();
            let bytes = std::mem::take(&mut s.buf);
            let buf_max = std::mem::take(&mut s.buf_max);
            s.first_at = None;
            (bytes, buf_max, s.end, s.next_seq)
        };
        let name = wal_chunk_object(seq, self.generation);
        let mut chunk = encode_wal_header(seq);
        chunk.extend_from_slice(&bytes);
        let result = async {
            self.storage.upload(&name, Bytes::from(chunk)).await?;
            self.storage.check_generation(self.generation).await
        }
        .await;
        let mut s = ship.state.lock();
        match result {
            Ok(()) => {
                s.next_seq = seq + 1;
                for (tl, lsn) in &buf_max {
                    let e = s.shipped_lsn.entry(*tl).or_insert(*lsn);
                    *e = (*e).max(*lsn);
                }
                s.chunks.push(Chunk {
                    name,
                    max_lsn: buf_max,
                });
                drop(s);
                ship.shipped.send_replace(end);
                Ok(())
            }
            Err(e) => {
                // Back in front of what came meanwhile; the same sequence number is retried
                // (an upload that did land is overwritten by a longer chunk of this generation).
                let mut merged = bytes;
                merged.extend_from_slice(&s.buf);
                s.buf = merged;
                for (tl, lsn) in buf_max {
                    let m = s.buf_max.entry(tl).or_insert(lsn);
                    *m = (*m).max(lsn);
                }
                s.first_at.get_or_insert_with(Instant::now);
                drop(s);
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
            let name = {
                let s = self.ship().state.lock();
                let Some(c) = s.chunks.first() else { return };
                let covered = c
                    .max_lsn
                    .iter()
                    .all(|(tl, lsn)| s.indexed.get(tl).is_some_and(|indexed| indexed >= lsn));
                if !covered {
                    return;
                }
                c.name.clone()
            };
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
