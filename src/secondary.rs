//! Readable secondaries and failover; the protocol is in the docs of [`Secondary`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::{Error, ErrorKind, Result};
use crate::id::TimelineId;
use crate::lsn::Lsn;
use crate::options::StoreOptions;
use crate::remote::{Generation, Heartbeat, RemoteStorage};
use crate::store::{Followed, Store};
use crate::timeline::Timeline;

/// How a [`Secondary`] follows.
#[derive(Debug, Clone)]
pub struct SecondaryOptions {
    store: StoreOptions,
    poll_interval: Duration,
    confirm_after: Duration,
}

impl SecondaryOptions {
    /// Follow the owner of `store`'s [remote](StoreOptions::remote); `store`'s path is the
    /// secondary's folder (its caches go in subfolders), its other options (block cache,
    /// redo hook, timeouts) apply to the reads.
    pub fn new(store: StoreOptions) -> SecondaryOptions {
        SecondaryOptions {
            store,
            poll_interval: Duration::from_secs(1),
            confirm_after: Duration::from_secs(120),
        }
    }

    /// How often the secondary reads the heartbeat and new WAL chunks (default 1 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long the owner's heartbeat must stay unchanged before the owner counts as gone
    /// (default 120 s); before that, a missed beat only makes it *suspected*.
    pub fn confirm_after(mut self, window: Duration) -> Self {
        self.confirm_after = window;
        self
    }
}

/// Where a secondary is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecondaryState {
    /// Opening: nothing applied yet.
    Initializing,
    /// Behind the owner's last heartbeat.
    CatchingUp,
    /// Applied everything the owner's last heartbeat reported safe.
    Healthy,
    /// [`promote`](Secondary::promote) is running.
    Promoting,
    /// Promoted: it is the owner now (the store [`promote`](Secondary::promote) returned).
    Promoted,
    /// Closed, or a promotion failed.
    Stopped,
}

/// The owner's liveness as the secondary sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrimaryHealth {
    /// No heartbeat seen yet (or the owner writes none).
    Unknown,
    /// Its heartbeat changed within its interval plus one poll.
    Alive,
    /// A beat was missed: not changed for longer than that, but less than the confirmation
    /// window.
    Suspected,
    /// Not changed for the whole confirmation window.
    Gone,
    /// Its last beat says it closed cleanly.
    Stopped,
}

/// A secondary's replication status.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SecondaryStatus {
    /// Where the secondary is.
    pub state: SecondaryState,
    /// The owner's liveness.
    pub primary: PrimaryHealth,
    /// The owner's generation and node, if any node owns the store.
    pub primary_generation: Option<(Generation, String)>,
    /// Per timeline name, the newest LSN applied here (`last_record_lsn`).
    pub applied: BTreeMap<String, Lsn>,
    /// Per timeline name, what the owner's last heartbeat reported safe in object storage.
    pub primary_safe: BTreeMap<String, Lsn>,
    /// Per timeline name, what the owner's last heartbeat reported committed.
    pub primary_committed: BTreeMap<String, Lsn>,
    /// The largest gap, over the timelines, between what the owner reported safe and what is
    /// applied here.
    pub lag_lsn: u64,
    /// WAL chunks, and their bytes, that the last catch-up found to apply.
    pub lag_chunks: u64,
    /// See `lag_chunks`.
    pub lag_bytes: u64,
    /// How long the secondary has been behind the owner's heartbeat (zero when it is not).
    pub lag: Duration,
    /// How long ago the owner's heartbeat last changed.
    pub heartbeat_age: Option<Duration>,
    /// Reloads from the indexes so far.
    pub reloads: u64,
}

/// How [`Secondary::promote`] judges the lag.
#[derive(Clone, Copy, Debug)]
pub struct Promotion {
    /// The most the owner's last heartbeat may show committed beyond what object storage holds,
    /// on any timeline, in LSN units (default 160 MiB: ten 16 MiB WAL segments).
    pub max_lag_lsn: u64,
    /// Promote whatever the lag (default `false`).
    pub forced: bool,
}

impl Default for Promotion {
    fn default() -> Promotion {
        Promotion {
            max_lag_lsn: 160 << 20,
            forced: false,
        }
    }
}

/// The store being followed and the folder it caches into.
struct Cache {
    store: Option<Store>,
    dir: PathBuf,
}

impl Drop for Cache {
    fn drop(&mut self) {
        drop(self.store.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cache {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("open until dropped")
    }
}

/// What the follower knows of the owner.
struct Follower {
    cache: Arc<Cache>,
    /// The generation and catalog version the cache was opened under.
    opened_under: Option<(Generation, u64)>,
    /// The last heartbeat's `beat` and when it was first seen.
    beat: Option<(u64, Instant)>,
    /// Since when the secondary has been behind, if it is.
    behind_since: Option<Instant>,
    /// A new owner seen that has not started (see [`Shared::catch_up`]), and since when.
    new_owner_since: Option<(Generation, Instant)>,
}

struct Shared {
    options: SecondaryOptions,
    storage: RemoteStorage,
    follower: Mutex<Follower>,
    status: watch::Sender<SecondaryStatus>,
    caches: AtomicU64,
    stop: AtomicBool,
}

/// A readable secondary: follows the owner of a store through object storage alone, serves
/// reads at every LSN it has applied, reports its lag and the owner's liveness, and can be
/// promoted to owner (planned or forced failover).
///
/// A [`Secondary`] is a [read-only](crate::StoreOptions::read_only) store that keeps up: every
/// [`poll_interval`](SecondaryOptions::poll_interval) (or at [`Secondary::catch_up`]) it reads
/// the owner's [heartbeat](crate::remote::Heartbeat) and the WAL chunks after the last one it
/// applied, and applies them to its timelines, so reads see new commits in place. It reloads —
/// opens a fresh read-only store from the newest indexes in a new cache folder and switches to
/// it — when it cannot continue from what it applied: a chunk it had not read was deleted (an
/// index covers it now), the owner's heartbeat is ahead while no chunk is left to read, a
/// timeline it does not know appears, the catalog changed (a branch, a delete, a restore), or
/// another generation owns the store. Handles taken before a reload keep the state they were
/// taken from open and answer from it (applying nothing more) until they are dropped; a read
/// on one that would wait for an LSN fails at once with [`ErrorKind::Closed`] instead of
/// waiting in vain. Take new ones with [`Secondary::timeline`].
///
/// Between reloads, a read that needs a layer the owner's compaction or GC removed from object
/// storage (one this secondary had not downloaded yet) fails with
/// [`ErrorKind::NotFound`] naming the object, never with wrong data: call
/// [`Secondary::reload`], take the timeline again and retry.
///
/// It never writes, uploads or deletes anything in object storage, and never fences the owner.
///
/// During a takeover — between a new owner's claim and its record of where its WAL chunks
/// start (`walstart`, written once it has listed the chunks before it) — a fenced owner's last
/// chunk can land after the new owner listed the chunks. That chunk's commits were never
/// acknowledged (the old owner's generation check after the upload fails) and the new owner
/// does not replay them. So a secondary holds — keeps what it has applied and applies nothing —
/// while the newest claim is newer than every start record it lists and (for a reload) the new
/// owner has written no heartbeat: a poll checks the claim again after listing the chunks, so
/// one that read the old owner before the claim holds too. It holds for at most
/// [`confirm_after`](SecondaryOptions::confirm_after) per new owner (an owner without a WAL
/// writes no start record), then reloads. A secondary that reads the WAL in that window
/// anyway — one opening then, or one whose hold ran out — may apply such a commit; when the
/// record appears it reloads, and the commit is gone from it. No acknowledged commit is ever
/// missed or hidden.
///
/// A branch the owner makes is picked up by a reload. Its branch point may be above what the
/// secondary has applied of the parent (the parent's last commits not shipped yet): a read on
/// the branch then waits for the parent as a read above `last_record_lsn` waits, and
/// [`Timeline::get_now`](crate::Timeline::get_now) says the parent is behind.
///
/// # The owner's liveness
///
/// Judged on the secondary's own clock by when the heartbeat's `beat` last changed: *alive*
/// while it changes within the owner's interval plus one poll, *suspected* after that, *gone*
/// once it has not changed for [`confirm_after`](SecondaryOptions::confirm_after) (default 120 s,
/// so that a blip triggers nothing); *stopped* when its last beat says it closed cleanly.
///
/// # Promotion
///
/// [`Secondary::promote`] catches up, refuses when the owner's last heartbeat shows more
/// committed than object storage holds by more than
/// [`max_lag_lsn`](Promotion::max_lag_lsn) (unless [`forced`](Promotion::forced)), then opens
/// a writable store: it claims the next generation (fencing the old owner: its next commit at
/// [`Durability::Remote`](crate::Durability::Remote), upload or deletion fails with
/// [`ErrorKind::Fenced`]), replays every shipped chunk and takes commits. What was acknowledged
/// at the remote level is never lost; what the old owner committed only locally and never
/// shipped is what the refusal reports. A planned switchover is [`Store::close`] on the owner
/// (which ships, uploads and releases its generation, so the promotion does not wait the claim
/// grace) followed by `promote`; commits on the old owner meanwhile fail with
/// [`ErrorKind::Closed`] and are to be retried on the new one.
pub struct Secondary {
    shared: Arc<Shared>,
    /// The poller thread, and the sender whose drop stops it.
    poller: Mutex<Option<(JoinHandle<()>, std::sync::mpsc::Sender<()>)>>,
}

impl std::fmt::Debug for Secondary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secondary")
            .field("path", &self.shared.options.store.path)
            .finish_non_exhaustive()
    }
}

impl Secondary {
    /// Opens a secondary in `options`' folder (created if missing; what an earlier secondary
    /// left there is cleared) and starts following. Blocking; it claims nothing.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] without a remote or for bad options; errors of reading
    /// object storage.
    pub fn open(options: SecondaryOptions) -> Result<Secondary> {
        let Some(storage) = options.store.remote.clone() else {
            return Err(Error::invalid(
                "a secondary needs a remote (StoreOptions::remote)",
            ));
        };
        if options.poll_interval.is_zero() {
            return Err(Error::invalid("poll_interval must not be zero"));
        }
        let base = options.store.path.clone();
        std::fs::create_dir_all(&base).map_err(|e| Error::io("creating", &base, e))?;
        for entry in std::fs::read_dir(&base).map_err(|e| Error::io("listing", &base, e))? {
            let entry = entry.map_err(|e| Error::io("listing", &base, e))?;
            if entry.file_name().to_string_lossy().starts_with("cache-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let shared = Arc::new(Shared {
            storage,
            follower: Mutex::new(Follower {
                cache: Arc::new(Cache {
                    store: None,
                    dir: PathBuf::new(),
                }),
                opened_under: None,
                beat: None,
                behind_since: None,
                new_owner_since: None,
            }),
            status: watch::Sender::new(SecondaryStatus {
                state: SecondaryState::Initializing,
                primary: PrimaryHealth::Unknown,
                primary_generation: None,
                applied: BTreeMap::new(),
                primary_safe: BTreeMap::new(),
                primary_committed: BTreeMap::new(),
                lag_lsn: 0,
                lag_chunks: 0,
                lag_bytes: 0,
                lag: Duration::ZERO,
                heartbeat_age: None,
                reloads: 0,
            }),
            caches: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            options,
        });
        // What the open runs under, read before it (as every reload does), so that the first
        // catch-up does not open again.
        let (_, _, under) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting a runtime for the secondary in", &base, e))?
            .block_on(owner(&shared.storage))?;
        shared.reload(under)?;
        shared.catch_up()?;
        let poll = shared.clone();
        // Dropping the sender wakes the poller at once, however long its interval.
        let (wake, woken) = std::sync::mpsc::channel::<()>();
        let poller = std::thread::Builder::new()
            .name("stratakv-secondary".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) =
                    woken.recv_timeout(poll.options.poll_interval)
                {
                    if poll.stop.load(Ordering::Acquire) {
                        break;
                    }
                    // A failed poll is retried at the next one; the status keeps its last state.
                    let _ = poll.catch_up();
                }
            })
            .map_err(|e| Error::io("starting the secondary's poller in", &base, e))?;
        Ok(Secondary {
            shared,
            poller: Mutex::new(Some((poller, wake))),
        })
    }

    /// Reads the owner's heartbeat and new WAL chunks now and applies them (reloading if it
    /// must), instead of waiting for the next poll. Returns the status after.
    ///
    /// # Errors
    /// Errors of reading object storage; [`ErrorKind::Corruption`] for damaged chunks.
    pub fn catch_up(&self) -> Result<SecondaryStatus> {
        self.shared.catch_up()?;
        Ok(self.status())
    }

    /// Opens afresh from the newest indexes now and switches to them (what a catch-up does
    /// when it cannot continue). For a read that failed with [`ErrorKind::NotFound`] naming a
    /// layer object: the owner's compaction or GC removed it after this secondary's indexes
    /// were read; reload, take the timeline again and retry.
    ///
    /// # Errors
    /// Errors of reading object storage.
    pub fn reload(&self) -> Result<SecondaryStatus> {
        let cache = self.shared.follower.lock().cache.clone();
        let Some(store) = cache.store.as_ref() else {
            return Err(Error::new(ErrorKind::Closed, "the secondary is stopped"));
        };
        let (_, _, under) = store.block_on(owner(&self.shared.storage))?;
        self.shared.reload(under)?;
        self.shared.catch_up()?;
        Ok(self.status())
    }

    /// The status as of the last catch-up.
    pub fn status(&self) -> SecondaryStatus {
        self.shared.status.borrow().clone()
    }

    /// The status, and every change of it (each catch-up publishes one).
    pub fn subscribe(&self) -> watch::Receiver<SecondaryStatus> {
        self.shared.status.subscribe()
    }

    /// The timeline called `name`, as applied now. Reads at an LSN above what is applied wait
    /// for it (up to the store's `wait_lsn_timeout`); [`Timeline::get_now`] says at once.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if the secondary does not know it (yet).
    ///
    /// The handle keeps the state it was taken from open: after a reload it goes on answering
    /// from that state (and applies nothing more) until it and its clones are dropped.
    pub fn timeline(&self, name: &str) -> Result<Timeline> {
        let cache = self.shared.follower.lock().cache.clone();
        let tl = cache.store().timeline(name)?;
        Ok(tl.keeping(cache))
    }

    /// Every timeline, as applied now (handles as [`timeline`](Secondary::timeline)'s).
    pub fn timelines(&self) -> Vec<Timeline> {
        let cache = self.shared.follower.lock().cache.clone();
        cache
            .store()
            .timelines()
            .into_iter()
            .map(|t| t.keeping(cache.clone()))
            .collect()
    }

    /// Promotes this secondary to owner (see [`Secondary`]): catches up, checks the
    /// lag against `promotion`, stops following, and opens a writable store in the folder
    /// `{path}/primary` with the secondary's store options, which claims the next generation
    /// and replays every shipped chunk. Blocking.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming each timeline and what would be lost when the lag
    /// is over `promotion.max_lag_lsn` and the promotion is not forced (the secondary goes on
    /// following); the open's errors (the secondary is stopped then).
    pub fn promote(&self, promotion: Promotion) -> Result<Store> {
        let shared = self.shared.clone();
        let set_state = |state| shared.status.send_modify(|s| s.state = state);
        self.shared.catch_up()?;
        let status = self.status();
        let mut at_risk = Vec::new();
        for (name, committed) in &status.primary_committed {
            let safe = status.primary_safe.get(name).copied().unwrap_or(Lsn::ZERO);
            let applied = status.applied.get(name).copied().unwrap_or(Lsn::ZERO);
            let have = safe.max(applied);
            if *committed > have && committed.0 - have.0 > promotion.max_lag_lsn {
                at_risk.push(format!(
                    "timeline {name:?}: the owner committed up to {committed}, object storage holds up to {have}"
                ));
            }
        }
        if !at_risk.is_empty() && !promotion.forced {
            return Err(Error::invalid(format!(
                "promotion refused: more than {} LSN would be lost ({}); promote with Promotion {{ forced: true, .. }} to accept it",
                promotion.max_lag_lsn,
                at_risk.join("; ")
            )));
        }
        set_state(SecondaryState::Promoting);
        self.stop_polling();
        let options = {
            let mut o = self.shared.options.store.clone();
            o.read_only = false;
            o.path = self.shared.options.store.path.join("primary");
            o
        };
        {
            let mut f = self.shared.follower.lock();
            f.cache = Arc::new(Cache {
                store: None,
                dir: PathBuf::new(),
            });
        }
        let _ = std::fs::remove_dir_all(&options.path);
        match Store::open_blocking(options) {
            Ok(store) => {
                set_state(SecondaryState::Promoted);
                Ok(store)
            }
            Err(e) => {
                set_state(SecondaryState::Stopped);
                Err(e.context("promoting the secondary"))
            }
        }
    }

    /// The supervisor: waits until the owner counts as gone (its heartbeat unchanged for the
    /// whole [`confirm_after`](SecondaryOptions::confirm_after) window), then
    /// [`promote`](Secondary::promote)s. Blocking: run it on a thread of its own for the whole
    /// failover loop. An owner that closed cleanly is not gone (it may be restarting); promote
    /// explicitly for a planned switchover.
    ///
    /// # Errors
    /// As [`promote`](Secondary::promote); [`ErrorKind::Closed`] if the secondary stops first.
    pub fn promote_when_gone(&self, promotion: Promotion) -> Result<Store> {
        let mut status = self.subscribe();
        loop {
            let (state, primary) = {
                let s = status.borrow_and_update();
                (s.state, s.primary)
            };
            if primary == PrimaryHealth::Gone {
                return self.promote(promotion);
            }
            if self.shared.stop.load(Ordering::Acquire) || state == SecondaryState::Stopped {
                return Err(Error::new(ErrorKind::Closed, "the secondary is stopped"));
            }
            // The poller publishes after every poll.
            if futures::executor::block_on(status.changed()).is_err() {
                return Err(Error::new(ErrorKind::Closed, "the secondary is stopped"));
            }
        }
    }

    /// Stops following and removes the caches.
    pub fn close(self) {
        self.stop_polling();
        self.shared
            .status
            .send_modify(|s| s.state = SecondaryState::Stopped);
    }

    fn stop_polling(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some((h, wake)) = self.poller.lock().take() {
            drop(wake);
            let _ = h.join();
        }
    }
}

impl Drop for Secondary {
    fn drop(&mut self) {
        self.stop_polling();
    }
}

/// Who owns the store now, what its heartbeat says, and the generation and catalog version a
/// store opened after this read runs under.
type Owner = (
    Option<(Generation, String)>,
    Option<Heartbeat>,
    Option<(Generation, u64)>,
);

/// Reads the owner's generation and heartbeat (see [`Owner`]).
async fn owner(storage: &RemoteStorage) -> Result<Owner> {
    let current = storage.current_generation().await?;
    let heartbeat = match &current {
        Some((g, _)) => storage.read_heartbeat(*g).await?,
        None => None,
    };
    let under = current
        .as_ref()
        .map(|(g, _)| (*g, heartbeat.as_ref().map_or(0, |h| h.catalog_version)));
    Ok((current, heartbeat, under))
}

impl Shared {
    /// Opens a fresh read-only store from the newest indexes and switches to it. `under` is
    /// the generation and catalog version read before the open.
    fn reload(&self, under: Option<(Generation, u64)>) -> Result<()> {
        let n = self.caches.fetch_add(1, Ordering::AcqRel);
        let dir = self.options.store.path.join(format!("cache-{n}"));
        let mut options = self.options.store.clone();
        options.path = dir.clone();
        options.read_only = true;
        // The owner may delete a WAL chunk (indexed meanwhile) while the open reads them:
        // open again, from the newer indexes.
        let mut tries = 0;
        let store = loop {
            tries += 1;
            match Store::open_blocking(options.clone()) {
                Err(e) if e.kind() == ErrorKind::NotFound && tries < 5 => {}
                r => break r?,
            }
        };
        let mut f = self.follower.lock();
        let old = std::mem::replace(
            &mut f.cache,
            Arc::new(Cache {
                store: Some(store),
                dir,
            }),
        );
        if let Some(old) = old.store.as_ref() {
            old.supersede();
        }
        f.opened_under = under;
        f.new_owner_since = None;
        drop(f);
        if n > 0 {
            self.status.send_modify(|s| s.reloads += 1);
        }
        Ok(())
    }

    /// One poll: the owner's generation and heartbeat, then the chunks after the applied ones.
    fn catch_up(&self) -> Result<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "the secondary is stopped"));
        }
        let cache = self.follower.lock().cache.clone();
        let Some(store) = cache.store.as_ref() else {
            return Err(Error::new(ErrorKind::Closed, "the secondary is stopped"));
        };
        let (current, heartbeat, under) = store.block_on(owner(&self.storage))?;
        let opened_under = self.follower.lock().opened_under;
        // A new owner that has neither recorded where its chunks start nor written a
        // heartbeat is still opening: a fenced owner's late chunk (never acknowledged) may
        // still land and read as valid until that start record exists. The secondary keeps
        // what it has until then, for at most `confirm_after` (an owner without a WAL or a
        // heartbeat writes neither).
        if let Some((g, _)) = under
            && opened_under.is_none_or(|(a, _)| g > a)
            && heartbeat.is_none()
            && !store.block_on(self.storage.wal_started(g))?
            && self.holds_for(g)
        {
            self.publish(current, heartbeat.as_ref(), 0, 0);
            return Ok(());
        }
        let (mut lag_chunks, mut lag_bytes) = (0u64, 0u64);
        let mut reload = opened_under.is_none() && under.is_some()
            || matches!((opened_under, under), (Some(a), Some(b)) if a != b);
        if !reload {
            match store.follow_wal()? {
                Followed::Reload => reload = true,
                // The owner changed while the chunks were listed (the poll read the old one).
                Followed::Hold(g) if self.holds_for(g) => {
                    self.publish(current, heartbeat.as_ref(), 0, 0);
                    return Ok(());
                }
                Followed::Hold(_) => reload = true,
                Followed::Applied { chunks, bytes } => {
                    lag_chunks = chunks as u64;
                    lag_bytes = bytes;
                }
            }
        }
        if !reload && let Some(hb) = &heartbeat {
            // Nothing left to read, yet the owner has more safe: its chunks were indexed and
            // deleted before this secondary read them.
            let behind = hb.timelines.iter().any(|(id, safe)| {
                store
                    .timeline_by_id(*id)
                    .is_some_and(|t| t.last_record_lsn() < *safe)
            });
            if behind && lag_chunks == 0 {
                reload = true;
            }
        }
        if reload {
            self.reload(under)?;
        }
        self.publish(current, heartbeat.as_ref(), lag_chunks, lag_bytes);
        Ok(())
    }

    /// Whether to keep holding for new owner `g`, which has not started: until
    /// `confirm_after` has passed since it was first seen.
    fn holds_for(&self, g: Generation) -> bool {
        let mut f = self.follower.lock();
        let since = match f.new_owner_since {
            Some((h, since)) if h == g => since,
            _ => {
                let now = Instant::now();
                f.new_owner_since = Some((g, now));
                now
            }
        };
        since.elapsed() < self.options.confirm_after
    }

    /// Publishes the status after a poll.
    fn publish(
        &self,
        current: Option<(Generation, String)>,
        heartbeat: Option<&Heartbeat>,
        lag_chunks: u64,
        lag_bytes: u64,
    ) {
        let now = Instant::now();
        let mut f = self.follower.lock();
        let store = f.cache.clone();
        let store = store.store();
        let timelines = store.timelines();
        let names: BTreeMap<TimelineId, String> =
            timelines.iter().map(|t| (t.id(), t.name())).collect();
        let applied: BTreeMap<String, Lsn> = timelines
            .iter()
            .map(|t| (t.name(), t.last_record_lsn()))
            .collect();
        let by_name = |m: &BTreeMap<TimelineId, Lsn>| -> BTreeMap<String, Lsn> {
            m.iter()
                .filter_map(|(id, lsn)| Some((names.get(id)?.clone(), *lsn)))
                .collect()
        };
        let primary_safe = heartbeat.map(|h| by_name(&h.timelines)).unwrap_or_default();
        let primary_committed = heartbeat
            .map(|h| by_name(&h.last_record))
            .unwrap_or_default();
        let lag_lsn = primary_safe
            .iter()
            .map(|(name, safe)| safe.0.saturating_sub(applied.get(name).map_or(0, |l| l.0)))
            .max()
            .unwrap_or(0);
        if let Some(hb) = heartbeat {
            match f.beat {
                Some((beat, _)) if beat == hb.beat => {}
                _ => f.beat = Some((hb.beat, now)),
            }
        }
        let heartbeat_age = f.beat.map(|(_, at)| now - at);
        let primary = match (heartbeat, heartbeat_age) {
            (Some(hb), _) if hb.stopped => PrimaryHealth::Stopped,
            (Some(hb), Some(age)) => {
                if age >= self.options.confirm_after {
                    PrimaryHealth::Gone
                } else if age > hb.interval + self.options.poll_interval {
                    PrimaryHealth::Suspected
                } else {
                    PrimaryHealth::Alive
                }
            }
            _ => PrimaryHealth::Unknown,
        };
        if lag_lsn > 0 {
            f.behind_since.get_or_insert(now);
        } else {
            f.behind_since = None;
        }
        let lag = f.behind_since.map_or(Duration::ZERO, |since| now - since);
        drop(f);
        self.status.send_modify(|s| {
            s.state = match s.state {
                SecondaryState::Promoting | SecondaryState::Promoted | SecondaryState::Stopped => {
                    s.state
                }
                _ if lag_lsn > 0 => SecondaryState::CatchingUp,
                _ => SecondaryState::Healthy,
            };
            s.primary = primary;
            s.primary_generation = current;
            s.applied = applied;
            s.primary_safe = primary_safe;
            s.primary_committed = primary_committed;
            s.lag_lsn = lag_lsn;
            s.lag_chunks = lag_chunks;
            s.lag_bytes = lag_bytes;
            s.lag = lag;
            s.heartbeat_age = heartbeat_age;
        });
    }
}
