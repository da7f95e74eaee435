//! Concurrent model test: several threads run random public operations on shared timelines
//! while the store's flusher and background compaction / GC run with tiny thresholds and a 1 ms
//! period, so background jobs overlap user operations all the time.
//!
//! Each worker thread owns some timelines (the writer of each, and the model of what it wrote)
//! and publishes every commit into a shared model: per timeline its versions
//! `(key, lsn) → value` up to its `last_record_lsn`, its commit times, and its ancestor and
//! branch point. Every worker reads, branches, leases, runs GC, compaction and image layers on
//! any timeline, and writes, restores, detaches and deletes its own. The operations are puts
//! (images, tombstones, `SimpleRedo` deltas) and `finish_write_at`; `get`, `get_many` and `scan`
//! at random LSNs; `time_at` and `lsn_at`; `branch` (often at the parent's GC cutoff); a
//! "branch, write a few KiB, delete" pattern; "commit one LSN, GC" loops; `delete_timeline` of a
//! leaf; `restore` by LSN and by time; `detach_ancestor`; `lease`; `gc`; `compact`;
//! `create_image_layer`; `flush`; `evict_layers` (with a remote); and, between rounds, close and
//! reopen of the whole store.
//!
//! What is checked:
//! - every answer a read gives equals the model's at that LSN, through ancestors;
//! - every error is one the called method documents for the situation it is in: a read or lease
//!   is refused with `BelowGcCutoff` / `InvalidArgument` only below the cutoff read after the
//!   call, a branch with `InvalidArgument` only below the parent's cutoff, `NotFound` only for a
//!   timeline being deleted, `delete_timeline` refuses only while a child exists; an I/O error,
//!   `Poisoned`, or a call that hangs is always a failure, and so is a background error;
//! - a branch or restore at an LSN where the parent has a commit time carries that time
//!   (`time_at(branch_lsn)` equals the parent's), and `lsn_at` answers the model's LSN;
//! - the GC cutoff never moves back, never passes retention (`gc_horizon`) and never passes an
//!   unexpired lease;
//! - a branch and a delete of its parent never both succeed;
//! - after close and reopen, the catalog, every `last_record_lsn`, ancestor, read and commit
//!   time is as the model says (the WAL is on, so everything published survives).
//!
//! "Overlapping background jobs observed" counts reads during which the layer files of the
//! timeline read changed although no explicit `flush` / `compact` / `gc` / image / detach call
//! on that timeline ran: a change made by the store's own flusher or background thread while
//! the read was in flight.
//!
//! The seed comes from `STRATAKV_CONCURRENT_SEED` or the clock and is printed at the start and
//! in every failure; runs repeat what each worker generates, not how the threads interleave.
//! `STRATAKV_CONCURRENT_SECS` sets how long each variant runs (default 10 s; the two variants
//! run in parallel). `STRATAKV_CONCURRENT_SKIP=delete,branch+write+delete` (operation names as
//! the figures print them) leaves operations out, to look past a known failure. `.ci/soak` runs
//! both variants for 30 minutes in release mode.

#![allow(
    clippy::disallowed_methods,
    reason = "tests read the wall clock for seeds, unique names and commit times"
)]

mod common;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::memory::InMemory;
use stratakv::remote::{RemoteStorage, RetryPolicy};
use stratakv::{
    Error, ErrorKind, Lsn, RestorePoint, SimpleRedo, Store, StoreOptions, Timeline, TimelineId,
    TimelineWriter, Value,
};

use common::env::env_u64;
use common::rng::{Rng, seed_from_env_or_clock};

/// Worker threads per variant.
const WORKERS: usize = 3;
/// Keys written: prefixes of each other, a NUL and a 0xFF byte, so order is byte order.
const KEYS: [&[u8]; 7] = [b"a", b"ab", b"b", b"b\x00", b"k", b"m", b"\xff"];
/// Keys read but never written.
const ABSENT: [&[u8]; 2] = [b"0", b"z"];
/// LSNs behind `last_record_lsn` that GC keeps readable.
const HORIZON: u64 = 24;
/// Live timelines a worker owns at most; beyond it, it deletes and detaches instead of branching.
const MAX_OWN: usize = 6;
/// A call that takes longer than this is reported as hung.
const OP_TIMEOUT: Duration = Duration::from_secs(20);
/// Seconds each variant runs unless `STRATAKV_CONCURRENT_SECS` says otherwise.
const DEFAULT_SECS: u64 = 10;
/// Size of the values the "branch, write a few KiB, delete" pattern writes.
const BIG_VALUE: usize = 400;

/// Keys in byte order, written ones and absent ones.
fn read_keys() -> Vec<&'static [u8]> {
    let mut k: Vec<&[u8]> = KEYS.iter().chain(ABSENT.iter()).copied().collect();
    k.sort();
    k
}

fn show(v: &Option<Vec<u8>>) -> String {
    match v {
        None => "None".to_string(),
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
    }
}

fn show_key(k: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(k))
}

fn err(e: &Error) -> String {
    format!("{:?} error \"{e}\"", e.kind())
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

fn from_micros(m: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(m)
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// What was written; the engine gets `Value`s built from it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum MVal {
    Image(Vec<u8>),
    Tombstone,
    /// A delta appending bytes to the value below it.
    Append(Vec<u8>),
    /// A `will_init` delta setting the value.
    Set(Vec<u8>),
}

impl MVal {
    fn to_value(&self) -> Value {
        match self {
            MVal::Image(b) => Value::image(b.clone()),
            MVal::Tombstone => Value::Tombstone,
            MVal::Append(b) => Value::delta(SimpleRedo::append(b)),
            MVal::Set(b) => Value::init_delta(SimpleRedo::set(b)),
        }
    }

    fn is_base(&self) -> bool {
        !matches!(self, MVal::Append(_))
    }

    /// The value after this version, given the one below it.
    fn apply(&self, below: Option<Vec<u8>>) -> Option<Vec<u8>> {
        match self {
            MVal::Image(b) | MVal::Set(b) => Some(b.clone()),
            MVal::Tombstone => None,
            MVal::Append(b) => below.map(|mut v| {
                v.extend_from_slice(b);
                v
            }),
        }
    }
}

type Versions = BTreeMap<(Vec<u8>, u64), MVal>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Live,
    /// `delete_timeline` is running: reads may fail with `NotFound`.
    Deleting,
    Deleted,
}

/// Explicit layer operations (flush, compact, GC, image, detach) started and running on a
/// timeline: a layer change seen while none ran was made by background work.
#[derive(Default)]
struct Activity {
    started: AtomicU64,
    running: AtomicU64,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
        ActivityGuard(self.clone())
    }

    fn state(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::SeqCst),
            self.running.load(Ordering::SeqCst),
        )
    }
}

struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One timeline's model.
struct TlM {
    name: String,
    id: TimelineId,
    /// `None` once reopened without it (deleted) or dropped from the model.
    handle: Option<Timeline>,
    /// The worker that owns its writer.
    owner: usize,
    /// Ancestor index and branch LSN, kept after a detach (reads still see the same data).
    parent: Option<(usize, u64)>,
    /// Whether the engine still has the ancestor (no completed detach).
    attached: bool,
    /// A `detach_ancestor` is running.
    detaching: bool,
    /// The branch LSN (0 for a root): the cutoff it starts with.
    start: u64,
    /// Its own published versions, all above `start`.
    own: Versions,
    lrl: u64,
    /// `(lsn, commit time in µs)`, as the engine's index keeps them (the branch point's first).
    times: Vec<(u64, u64)>,
    /// The largest GC cutoff seen.
    cutoff: u64,
    life: Life,
    /// Branch calls running with this timeline as the parent.
    branching: u32,
    /// Bumped whenever a child appears or detaches, or a branch of it starts or ends.
    child_events: u64,
    /// `(lsn, expiry)` of leases taken since the last open.
    leases: Vec<(u64, SystemTime)>,
    activity: Arc<Activity>,
}

impl TlM {
    fn new(
        name: String,
        tl: &Timeline,
        owner: usize,
        parent: Option<(usize, u64)>,
        time: Option<u64>,
    ) -> TlM {
        let start = parent.map_or(0, |(_, l)| l);
        TlM {
            name,
            id: tl.id(),
            handle: Some(tl.clone()),
            owner,
            parent,
            attached: parent.is_some(),
            detaching: false,
            start,
            own: Versions::new(),
            lrl: start,
            times: time.map(|t| vec![(start, t)]).unwrap_or_default(),
            cutoff: start,
            life: Life::Live,
            branching: 0,
            child_events: 0,
            leases: Vec::new(),
            activity: Arc::new(Activity::default()),
        }
    }

    fn is_root_name(&self) -> bool {
        self.name.starts_with('r') && !self.name.contains('@')
    }
}

#[derive(Default)]
struct Model {
    tls: Vec<TlM>,
}

/// How `lsn_at` should answer.
enum WantLsn {
    Before,
    At(u64),
}

impl Model {
    /// The value of `key` at `lsn` on timeline `i`: its own versions, then its ancestors' at or
    /// below each branch point, deltas applied on the newest base.
    fn value(&self, mut i: usize, key: &[u8], mut lsn: u64) -> Result<Option<Vec<u8>>, String> {
        let mut deltas: Vec<&MVal> = Vec::new();
        let mut base: Option<&MVal> = None;
        'walk: loop {
            let t = &self.tls[i];
            for (_, v) in t.own.range((key.to_vec(), 0)..=(key.to_vec(), lsn)).rev() {
                if v.is_base() {
                    base = Some(v);
                    break 'walk;
                }
                deltas.push(v);
            }
            match t.parent {
                Some((p, b)) => {
                    i = p;
                    lsn = lsn.min(b);
                }
                None => break,
            }
        }
        let mut value = base.and_then(|b| b.apply(None));
        if value.is_none() && !deltas.is_empty() {
            return Err(format!(
                "test bug: the model has a delta of key {} with no base under it",
                show_key(key)
            ));
        }
        for d in deltas.iter().rev() {
            value = d.apply(value);
        }
        Ok(value)
    }

    /// The timeline's state and ancestry, for a failure message.
    fn state(&self, mut i: usize) -> String {
        let mut out = Vec::new();
        loop {
            let t = &self.tls[i];
            let cutoff = t.handle.as_ref().map(|h| h.gc_cutoff().0);
            out.push(format!(
                "{:?} is {:?}{}, GC cutoff {cutoff:?}",
                t.name,
                t.life,
                if t.parent.is_some() && !t.attached {
                    ", detached"
                } else {
                    ""
                }
            ));
            match t.parent {
                Some((p, b)) => {
                    out.push(format!("branched at {b} from"));
                    i = p;
                }
                None => break,
            }
        }
        format!("model: {}", out.join(" "))
    }

    /// The commit time of the newest commit at or below `lsn`.
    fn time_of(&self, i: usize, lsn: u64) -> Option<u64> {
        self.tls[i]
            .times
            .iter()
            .rev()
            .find(|(l, _)| *l <= lsn)
            .map(|e| e.1)
    }

    fn lsn_at(&self, i: usize, t: u64) -> WantLsn {
        match self.tls[i].times.iter().rev().find(|(_, time)| *time <= t) {
            None => WantLsn::Before,
            Some((l, _)) => WantLsn::At(*l),
        }
    }

    /// Children the engine should know about: attached, not being detached or deleted.
    fn firm_children(&self, i: usize) -> Vec<String> {
        self.tls
            .iter()
            .filter(|c| {
                c.parent.is_some_and(|(p, _)| p == i)
                    && c.attached
                    && !c.detaching
                    && c.life == Life::Live
            })
            .map(|c| c.name.clone())
            .collect()
    }

    fn has_any_child(&self, i: usize) -> bool {
        self.tls
            .iter()
            .any(|c| c.parent.is_some_and(|(p, _)| p == i) && c.attached && c.life != Life::Deleted)
    }

    fn live(&self) -> Vec<usize> {
        (0..self.tls.len())
            .filter(|i| self.tls[*i].life == Life::Live && self.tls[*i].handle.is_some())
            .collect()
    }

    /// Drops what no read at or above each timeline's cutoff (or a child's branch point) needs,
    /// and deleted timelines no live one reads through. Run between rounds only: a read in
    /// flight may have picked an LSN below a cutoff seen now. Returns each old index's new one.
    fn prune(&mut self) -> Vec<Option<usize>> {
        let n = self.tls.len();
        let mut needed = vec![false; n];
        for i in 0..n {
            if self.tls[i].life == Life::Deleted {
                continue;
            }
            let mut j = Some(i);
            while let Some(x) = j {
                needed[x] = true;
                j = self.tls[x].parent.map(|(p, _)| p);
            }
        }
        let mut low = vec![u64::MAX; n];
        for i in 0..n {
            if !needed[i] {
                continue;
            }
            if self.tls[i].life != Life::Deleted {
                low[i] = low[i].min(self.tls[i].cutoff);
            }
            if let Some((p, b)) = self.tls[i].parent {
                low[p] = low[p].min(b);
            }
        }
        for (i, t) in self.tls.iter_mut().enumerate() {
            let low = low[i];
            if low == u64::MAX {
                continue;
            }
            for key in KEYS {
                let base = t
                    .own
                    .range((key.to_vec(), 0)..=(key.to_vec(), low))
                    .rev()
                    .find(|(_, v)| v.is_base())
                    .map(|((_, l), _)| *l);
                if let Some(b) = base {
                    let old: Vec<_> = t
                        .own
                        .range((key.to_vec(), 0)..(key.to_vec(), b))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in old {
                        t.own.remove(&k);
                    }
                }
            }
            if let Some(keep) = t.times.iter().rposition(|(l, _)| *l <= low) {
                t.times.drain(..keep);
            }
        }
        let mut map = vec![None; n];
        let mut kept = Vec::new();
        for (i, t) in std::mem::take(&mut self.tls).into_iter().enumerate() {
            if needed[i] {
                map[i] = Some(kept.len());
                kept.push(t);
            }
        }
        for t in kept.iter_mut() {
            if let Some((p, b)) = t.parent {
                t.parent = Some((map[p].expect("an ancestor of a kept timeline is kept"), b));
            }
        }
        self.tls = kept;
        map
    }
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

#[derive(Default, Clone)]
struct Stats {
    ops: BTreeMap<&'static str, u64>,
    /// Answers compared with the model: values (one per key), scans, commit times, `lsn_at`.
    reads_checked: u64,
    /// Reads, leases and branches refused below the cutoff (checked against the cutoff).
    refused_below_cutoff: u64,
    /// Reads during which the timeline's layer files changed.
    reads_during_layer_change: u64,
    /// ... and no explicit layer operation on it ran: background work overlapped the read.
    reads_during_background_change: u64,
    branch_times_checked: u64,
    branches_at_cutoff: u64,
    branches_refused: u64,
    deletes: u64,
    deletes_refused: u64,
    commits: u64,
    puts: u64,
    evicted_bytes: u64,
    rounds: u64,
    reopens: u64,
}

impl Stats {
    fn merge(&mut self, o: &Stats) {
        for (k, v) in &o.ops {
            *self.ops.entry(*k).or_default() += v;
        }
        self.reads_checked += o.reads_checked;
        self.refused_below_cutoff += o.refused_below_cutoff;
        self.reads_during_layer_change += o.reads_during_layer_change;
        self.reads_during_background_change += o.reads_during_background_change;
        self.branch_times_checked += o.branch_times_checked;
        self.branches_at_cutoff += o.branches_at_cutoff;
        self.branches_refused += o.branches_refused;
        self.deletes += o.deletes;
        self.deletes_refused += o.deletes_refused;
        self.commits += o.commits;
        self.puts += o.puts;
        self.evicted_bytes += o.evicted_bytes;
        self.rounds += o.rounds;
        self.reopens += o.reopens;
    }

    fn total_ops(&self) -> u64 {
        self.ops.values().sum()
    }

    fn report(&self) -> String {
        let ops: Vec<String> = self.ops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!(
            "operations {} ({}); commits {}, puts {}; reads checked {} ({} refused below the \
             cutoff, as checked); branch commit times checked {} ({} branches at the cutoff, {} \
             refused); deletes {} ({} refused for a child); reads overlapping a layer change {}, \
             of which overlapping background jobs {}; evicted {} bytes; rounds {}, reopens {}",
            self.total_ops(),
            ops.join(", "),
            self.commits,
            self.puts,
            self.reads_checked,
            self.refused_below_cutoff,
            self.branch_times_checked,
            self.branches_at_cutoff,
            self.branches_refused,
            self.deletes,
            self.deletes_refused,
            self.reads_during_layer_change,
            self.reads_during_background_change,
            self.evicted_bytes,
            self.rounds,
            self.reopens,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// What the workers of one variant share.
struct Run {
    seed: u64,
    variant: &'static str,
    remote: bool,
    start: Instant,
    rt: tokio::runtime::Runtime,
    model: Mutex<Model>,
    failure: Mutex<Option<String>>,
    stop: AtomicBool,
    /// The last commit time handed out, in µs: commit times are strictly increasing.
    last_time: AtomicU64,
    stats: Mutex<Stats>,
    /// Operation names from `STRATAKV_CONCURRENT_SKIP`, to look past a known failure.
    skip: Vec<String>,
}

impl Run {
    fn skips(&self, op: Op) -> bool {
        self.skip.iter().any(|s| s == op.name())
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A commit time after every one handed out before, close to the clock.
    fn next_time(&self) -> (u64, SystemTime) {
        let mut last = self.last_time.load(Ordering::SeqCst);
        loop {
            let t = micros(SystemTime::now()).max(last + 1);
            match self
                .last_time
                .compare_exchange(last, t, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return (t, from_micros(t)),
                Err(now) => last = now,
            }
        }
    }

    fn context(&self, round: u64, who: &str, op: &str) -> String {
        format!(
            "seed {} (variant {}, round {round}, {:.1} s in, {who}, op {op}; rerun with \
             STRATAKV_CONCURRENT_SEED={})",
            self.seed,
            self.variant,
            self.start.elapsed().as_secs_f64(),
            self.seed
        )
    }

    /// Records a failure and stops the workers; the first is the one to look at, later ones
    /// (other workers meeting the aftermath) are kept as notes.
    fn record_failure(&self, msg: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *f {
            None => *f = Some(msg),
            Some(first) => first.push_str(&format!("\nthen also: {msg}")),
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Runs `f` on the runtime, failing if it does not finish within [`OP_TIMEOUT`].
    fn call<F: Future>(&self, what: &str, f: F) -> Result<F::Output, String> {
        self.rt
            .block_on(async { tokio::time::timeout(OP_TIMEOUT, f).await })
            .map_err(|_| format!("{what} did not return within {OP_TIMEOUT:?}"))
    }
}

/// One worker's view of the store for a round.
struct Cx<'a> {
    run: &'a Run,
    store: &'a Store,
}

/// A timeline picked for an operation.
#[derive(Clone)]
struct View {
    i: usize,
    h: Timeline,
    name: String,
    lrl: u64,
    activity: Arc<Activity>,
}

impl View {
    fn desc(&self) -> String {
        format!("timeline {:?} ({})", self.name, self.h.id())
    }
}

fn layer_sig(h: &Timeline) -> u64 {
    let mut names: Vec<String> = h.layers().into_iter().map(|d| d.file_name).collect();
    names.sort();
    let mut s = DefaultHasher::new();
    names.hash(&mut s);
    s.finish()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Write,
    Read,
    Time,
    Branch,
    BranchWriteDelete,
    CommitAndGc,
    Delete,
    Restore,
    Detach,
    Gc,
    Compact,
    Image,
    Lease,
    Flush,
    Evict,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Read => "read",
            Op::Time => "time_at/lsn_at",
            Op::Branch => "branch",
            Op::BranchWriteDelete => "branch+write+delete",
            Op::CommitAndGc => "commit+gc",
            Op::Delete => "delete",
            Op::Restore => "restore",
            Op::Detach => "detach",
            Op::Gc => "gc",
            Op::Compact => "compact",
            Op::Image => "image",
            Op::Lease => "lease",
            Op::Flush => "flush",
            Op::Evict => "evict",
        }
    }
}

/// Weights in percent.
const MIX: [(Op, u64); 15] = [
    (Op::Write, 24),
    (Op::Read, 30),
    (Op::Time, 6),
    (Op::Branch, 6),
    (Op::BranchWriteDelete, 4),
    (Op::CommitAndGc, 5),
    (Op::Delete, 4),
    (Op::Restore, 2),
    (Op::Detach, 2),
    (Op::Gc, 3),
    (Op::Compact, 3),
    (Op::Image, 2),
    (Op::Lease, 3),
    (Op::Flush, 2),
    (Op::Evict, 4),
];

/// How a commit is shaped.
#[derive(Clone, Copy)]
enum Shape {
    /// 1–2 new LSNs with 1–3 keys each, of every kind of value.
    Random,
    /// One key at the next LSN.
    One,
    /// `n` images of [`BIG_VALUE`] bytes at consecutive LSNs, one `finish_write`.
    Big(u64),
}

struct Worker {
    id: usize,
    rng: Rng,
    writers: HashMap<usize, TimelineWriter>,
    seq: u64,
    stats: Stats,
    op: &'static str,
}

impl Worker {
    fn new(id: usize, seed: u64) -> Worker {
        Worker {
            id,
            rng: Rng(seed ^ (id as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)),
            writers: HashMap::new(),
            seq: 0,
            stats: Stats::default(),
            op: "setup",
        }
    }

    fn who(&self) -> String {
        if self.id == WORKERS {
            "checker".to_string()
        } else {
            format!("worker {}", self.id)
        }
    }

    fn view(m: &Model, i: usize) -> Option<View> {
        let t = &m.tls[i];
        Some(View {
            i,
            h: t.handle.clone()?,
            name: t.name.clone(),
            lrl: t.lrl,
            activity: t.activity.clone(),
        })
    }

    /// Any live timeline, half the time one carrying a root name (the busiest).
    fn pick_any(&mut self, cx: &Cx) -> Option<View> {
        let m = cx.run.model();
        let live = m.live();
        let roots: Vec<usize> = live
            .iter()
            .copied()
            .filter(|i| m.tls[*i].is_root_name())
            .collect();
        let from = if !roots.is_empty() && self.rng.chance(50) {
            &roots
        } else {
            &live
        };
        if from.is_empty() {
            return None;
        }
        let i = self.rng.pick(from);
        Self::view(&m, i)
    }

    fn own(&self, m: &Model) -> Vec<usize> {
        m.live()
            .into_iter()
            .filter(|i| m.tls[*i].owner == self.id)
            .collect()
    }

    /// One of this worker's live timelines; with `prefer_root`, usually the one with its root's
    /// name.
    fn pick_own(&mut self, cx: &Cx, prefer_root: bool) -> Option<View> {
        let m = cx.run.model();
        let own = self.own(&m);
        if own.is_empty() {
            return None;
        }
        let root = own.iter().copied().find(|i| m.tls[*i].is_root_name());
        let i = match root {
            Some(r) if prefer_root && self.rng.chance(60) => r,
            _ => self.rng.pick(&own),
        };
        Self::view(&m, i)
    }

    /// An LSN to read at: mostly in `[cutoff, lrl]`, sometimes at `lrl`, sometimes just below
    /// the cutoff.
    fn read_lsn(&mut self, cutoff: u64, lrl: u64) -> u64 {
        match self.rng.below(20) {
            0..=13 => self.rng.range(cutoff.min(lrl), lrl),
            14..=16 => lrl,
            _ if cutoff > 0 => cutoff.saturating_sub(1 + self.rng.below(3)),
            _ => lrl,
        }
    }

    fn run_round(&mut self, cx: &Cx, until: Instant) -> Result<(), String> {
        let total: u64 = MIX.iter().map(|(_, w)| w).sum();
        while Instant::now() < until && !cx.run.stop.load(Ordering::SeqCst) {
            let mut r = self.rng.below(total);
            let mut op = Op::Read;
            for (o, w) in MIX {
                if r < w {
                    op = o;
                    break;
                }
                r -= w;
            }
            if (op == Op::Evict && !cx.run.remote) || cx.run.skips(op) {
                op = Op::Read;
            }
            self.op = op.name();
            *self.stats.ops.entry(op.name()).or_default() += 1;
            match op {
                Op::Write => self.op_write(cx)?,
                Op::Read => self.op_read(cx)?,
                Op::Time => self.op_time(cx)?,
                Op::Branch => self.op_branch(cx)?,
                Op::BranchWriteDelete => self.op_branch_write_delete(cx)?,
                Op::CommitAndGc => self.op_commit_and_gc(cx)?,
                Op::Delete => self.op_delete(cx)?,
                Op::Restore => self.op_restore(cx)?,
                Op::Detach => self.op_detach(cx)?,
                Op::Gc => self.op_layer(cx, Op::Gc)?,
                Op::Compact => self.op_layer(cx, Op::Compact)?,
                Op::Image => self.op_layer(cx, Op::Image)?,
                Op::Flush => self.op_layer(cx, Op::Flush)?,
                Op::Lease => self.op_lease(cx)?,
                Op::Evict => {
                    let budget = self.rng.below(64 << 10);
                    self.stats.evicted_bytes += cx.store.evict_layers(budget).evicted_bytes;
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Checks shared by operations
    // -----------------------------------------------------------------------------------------

    /// Reads the cutoff (under the model lock, so observations are ordered) and checks it never
    /// moved back and never passed retention or an unexpired lease.
    fn observe(&self, cx: &Cx, v: &View) -> Result<(), String> {
        let mut m = cx.run.model();
        let t = &mut m.tls[v.i];
        if t.life != Life::Live || t.handle.is_none() {
            return Ok(());
        }
        let c = v.h.gc_cutoff().0;
        let lrl = v.h.last_record_lsn().0;
        let now = SystemTime::now();
        if c < t.cutoff {
            return Err(format!(
                "{}: the GC cutoff moved back from {} to {c}",
                v.desc(),
                t.cutoff
            ));
        }
        let allowed = t.start.max(lrl.saturating_sub(HORIZON));
        if c > allowed {
            return Err(format!(
                "{}: the GC cutoff {c} passed what retention allows: at most {allowed} \
                 (last_record_lsn {lrl}, gc_horizon {HORIZON}, branch point {})",
                v.desc(),
                t.start
            ));
        }
        t.leases.retain(|(_, expiry)| *expiry > now);
        if let Some((l, expiry)) = t.leases.iter().find(|(l, _)| c > *l) {
            return Err(format!(
                "{}: the GC cutoff {c} passed LSN {l}, leased until {:?} (now {:?})",
                v.desc(),
                expiry,
                now
            ));
        }
        t.cutoff = c;
        Ok(())
    }

    /// Judges a read-like call at `lsn`: `Ok(Some)` to compare with the model, `Ok(None)` for a
    /// refusal the docs promise (below the cutoff read after the call, or a timeline being
    /// deleted), `Err` for anything else.
    fn judged<T>(
        &mut self,
        cx: &Cx,
        v: &View,
        what: &str,
        lsn: u64,
        cutoff_before: u64,
        res: stratakv::Result<T>,
    ) -> Result<Option<T>, String> {
        match res {
            Ok(_) if lsn < cutoff_before => Err(format!(
                "{what} on {} at LSN {lsn} answered, although the GC cutoff was already \
                     {cutoff_before}: expected BelowGcCutoff",
                v.desc()
            )),
            Ok(x) => Ok(Some(x)),
            Err(e) => {
                let cutoff_after = v.h.gc_cutoff().0;
                match e.kind() {
                    // A branch's cutoff is never below its branch point.
                    ErrorKind::BelowGcCutoff | ErrorKind::BelowBranchPoint
                        if lsn < cutoff_after =>
                    {
                        self.stats.refused_below_cutoff += 1;
                        self.stats.reads_checked += 1;
                        Ok(None)
                    }
                    ErrorKind::NotFound if cx.run.model().tls[v.i].life != Life::Live => Ok(None),
                    _ => Err(format!(
                        "{what} on {} at LSN {lsn}: expected an answer (GC cutoff {cutoff_after}, \
                         published last_record_lsn {}), got {}",
                        v.desc(),
                        v.lrl,
                        err(&e)
                    )),
                }
            }
        }
    }

    /// An error that is fine for a layer operation only on a timeline being deleted.
    fn not_found_while_deleting(
        &self,
        cx: &Cx,
        v: &View,
        what: &str,
        e: &Error,
    ) -> Result<(), String> {
        if e.kind() == ErrorKind::NotFound && cx.run.model().tls[v.i].life != Life::Live {
            return Ok(());
        }
        Err(format!(
            "{what} on {}: expected Ok, got {}",
            v.desc(),
            err(e)
        ))
    }

    fn check_value(
        &mut self,
        cx: &Cx,
        v: &View,
        what: &str,
        key: &[u8],
        lsn: u64,
        got: Option<Vec<u8>>,
    ) -> Result<(), String> {
        let want = cx.run.model().value(v.i, key, lsn)?;
        self.stats.reads_checked += 1;
        if got != want {
            return Err(format!(
                "{what} of key {} on {} at LSN {lsn}: expected {}, got {} (GC cutoff now {}, \
                 published last_record_lsn {}; {})",
                show_key(key),
                v.desc(),
                show(&want),
                show(&got),
                v.h.gc_cutoff(),
                v.lrl,
                cx.run.model().state(v.i)
            ));
        }
        Ok(())
    }

    /// `time_at(lsn)` must be the model's time when `lsn` is at or above the cutoff.
    fn check_time_at(&mut self, cx: &Cx, v: &View, lsn: u64, what: &str) -> Result<(), String> {
        let got = v.h.time_at(Lsn(lsn)).map(micros);
        let cutoff = v.h.gc_cutoff().0;
        let m = cx.run.model();
        if lsn < cutoff || m.tls[v.i].life != Life::Live {
            return Ok(());
        }
        let want = m.time_of(v.i, lsn);
        self.stats.reads_checked += 1;
        if got != want {
            return Err(format!(
                "{what}: time_at({lsn}) on {}: expected {want:?} µs, got {got:?} µs (GC cutoff \
                 {cutoff})",
                v.desc()
            ));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Writes
    // -----------------------------------------------------------------------------------------

    fn writer(&mut self, v: &View) -> Result<TimelineWriter, String> {
        match self.writers.remove(&v.i) {
            Some(w) => Ok(w),
            None => v.h.writer().map_err(|e| {
                format!(
                    "writer() of {}: expected a writer, got {}",
                    v.desc(),
                    err(&e)
                )
            }),
        }
    }

    fn gen_value(&mut self, lsn: u64, cur: &Option<Vec<u8>>) -> MVal {
        let tag = format!("w{}@{lsn}:", self.id);
        let len = self.rng.range(1, 24) as usize;
        match self.rng.below(100) {
            0..=44 => MVal::Image(self.rng.letters(&tag, tag.len() + len)),
            45..=59 => MVal::Tombstone,
            60..=84 if cur.as_ref().is_some_and(|c| c.len() < 160) => {
                let l = self.rng.range(1, 8) as usize;
                MVal::Append(self.rng.letters("+", l))
            }
            _ => MVal::Set(self.rng.letters(&tag, tag.len() + len)),
        }
    }

    /// One commit on an own timeline: puts, `finish_write_at`, then the model. Returns the LSN.
    fn commit(&mut self, cx: &Cx, v: &View, shape: Shape) -> Result<u64, String> {
        let mut w = self.writer(v)?;
        let r = self.commit_with(cx, v, &mut w, shape);
        self.writers.insert(v.i, w);
        r
    }

    fn commit_with(
        &mut self,
        cx: &Cx,
        v: &View,
        w: &mut TimelineWriter,
        shape: Shape,
    ) -> Result<u64, String> {
        let mut lsn = cx.run.model().tls[v.i].lrl;
        let mut overlay: HashMap<&[u8], Option<Vec<u8>>> = HashMap::new();
        let mut puts: Vec<(&[u8], u64, MVal)> = Vec::new();
        let steps = match shape {
            Shape::Random => self.rng.range(1, 2),
            Shape::One => 1,
            Shape::Big(n) => n,
        };
        for _ in 0..steps {
            lsn += match shape {
                Shape::Random => self.rng.range(1, 2),
                _ => 1,
            };
            let mut keys: Vec<&[u8]> = match shape {
                Shape::Random => (0..self.rng.range(1, 3))
                    .map(|_| self.rng.pick(&KEYS))
                    .collect(),
                _ => vec![self.rng.pick(&KEYS)],
            };
            keys.sort();
            keys.dedup();
            for key in keys {
                let cur = match overlay.get(key) {
                    Some(c) => c.clone(),
                    None => cx.run.model().value(v.i, key, u64::MAX)?,
                };
                let mv = match shape {
                    Shape::Big(_) => {
                        MVal::Image(self.rng.letters(&format!("big@{lsn}:"), BIG_VALUE))
                    }
                    _ => self.gen_value(lsn, &cur),
                };
                w.put(key, Lsn(lsn), mv.to_value()).map_err(|e| {
                    format!(
                        "put of key {} at LSN {lsn} on {}: expected Ok, got {}",
                        show_key(key),
                        v.desc(),
                        err(&e)
                    )
                })?;
                overlay.insert(key, mv.apply(cur));
                puts.push((key, lsn, mv));
            }
        }
        let (t_micros, t) = cx.run.next_time();
        w.finish_write_at(Lsn(lsn), t).map_err(|e| {
            format!(
                "finish_write_at({lsn}) on {}: expected Ok, got {}",
                v.desc(),
                err(&e)
            )
        })?;
        self.stats.commits += 1;
        self.stats.puts += puts.len() as u64;
        let mut m = cx.run.model();
        let tl = &mut m.tls[v.i];
        for (k, l, mv) in puts {
            tl.own.insert((k.to_vec(), l), mv);
        }
        tl.lrl = lsn;
        tl.times.push((lsn, t_micros));
        let engine = v.h.last_record_lsn().0;
        if engine != lsn {
            return Err(format!(
                "{}: last_record_lsn is {engine} right after its only writer committed LSN {lsn}",
                v.desc()
            ));
        }
        Ok(lsn)
    }

    fn op_write(&mut self, cx: &Cx) -> Result<(), String> {
        let Some(v) = self.pick_own(cx, true) else {
            return Ok(());
        };
        for _ in 0..self.rng.range(1, 3) {
            self.commit(cx, &v, Shape::Random)?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Reads
    // -----------------------------------------------------------------------------------------

    fn op_read(&mut self, cx: &Cx) -> Result<(), String> {
        let Some(v) = self.pick_any(cx) else {
            return Ok(());
        };
        let cutoff = v.h.gc_cutoff().0;
        let lsn = self.read_lsn(cutoff, v.lrl);
        let sig0 = layer_sig(&v.h);
        let act0 = v.activity.state();
        let keys = read_keys();
        match self.rng.below(4) {
            0 | 1 => {
                let key = self.rng.pick(&keys);
                let res = cx.run.call("get", v.h.get(key, Lsn(lsn)))?;
                if let Some(got) = self.judged(cx, &v, "get", lsn, cutoff, res)? {
                    self.check_value(cx, &v, "get", key, lsn, got.map(|b| b.to_vec()))?;
                }
            }
            2 => {
                let n = self.rng.range(2, keys.len() as u64) as usize;
                let ks: Vec<&[u8]> = (0..n).map(|_| self.rng.pick(&keys)).collect();
                let res = cx.run.call("get_many", v.h.get_many(&ks, Lsn(lsn)))?;
                if let Some(got) = self.judged(cx, &v, "get_many", lsn, cutoff, res)? {
                    if got.len() != ks.len() {
                        return Err(format!(
                            "get_many of {} keys on {} at LSN {lsn} answered {} values",
                            ks.len(),
                            v.desc(),
                            got.len()
                        ));
                    }
                    for (k, g) in ks.iter().zip(got) {
                        self.check_value(cx, &v, "get_many", k, lsn, g.map(|b| b.to_vec()))?;
                    }
                }
            }
            _ => self.scan(cx, &v, lsn, cutoff)?,
        }
        let sig1 = layer_sig(&v.h);
        let act1 = v.activity.state();
        if sig0 != sig1 {
            self.stats.reads_during_layer_change += 1;
            if act0 == act1 && act0.1 == 0 {
                self.stats.reads_during_background_change += 1;
            }
        }
        self.observe(cx, &v)
    }

    fn scan(&mut self, cx: &Cx, v: &View, lsn: u64, cutoff: u64) -> Result<(), String> {
        let keys = read_keys();
        let a = self.rng.pick(&keys).to_vec();
        let b = self.rng.pick(&keys).to_vec();
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>) = match self.rng.below(4) {
            0 => (Bound::Unbounded, Bound::Unbounded),
            1 => (Bound::Included(lo), Bound::Excluded(hi)),
            2 => (Bound::Included(lo), Bound::Included(hi)),
            _ => (Bound::Excluded(lo), Bound::Unbounded),
        };
        let res = cx.run.call("scan", v.h.scan(bounds.clone(), Lsn(lsn)))?;
        let Some(got) = self.judged(cx, v, "scan", lsn, cutoff, res)? else {
            return Ok(());
        };
        let got: Vec<(Vec<u8>, Vec<u8>)> = got
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let inside = |k: &[u8]| {
            (match &bounds.0 {
                Bound::Unbounded => true,
                Bound::Included(l) => k >= l.as_slice(),
                Bound::Excluded(l) => k > l.as_slice(),
            }) && (match &bounds.1 {
                Bound::Unbounded => true,
                Bound::Included(h) => k <= h.as_slice(),
                Bound::Excluded(h) => k < h.as_slice(),
            })
        };
        let mut want = Vec::new();
        {
            let m = cx.run.model();
            for k in keys.iter().filter(|k| inside(k)) {
                if let Some(val) = m.value(v.i, k, lsn)? {
                    want.push((k.to_vec(), val));
                }
            }
        }
        self.stats.reads_checked += 1;
        if got != want {
            let fmt = |xs: &[(Vec<u8>, Vec<u8>)]| -> String {
                xs.iter()
                    .map(|(k, v)| format!("{}={}", show_key(k), show(&Some(v.clone()))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "scan {bounds:?} on {} at LSN {lsn}: expected [{}], got [{}] (GC cutoff now {}; {})",
                v.desc(),
                fmt(&want),
                fmt(&got),
                v.h.gc_cutoff(),
                cx.run.model().state(v.i)
            ));
        }
        Ok(())
    }

    fn op_time(&mut self, cx: &Cx) -> Result<(), String> {
        let Some(v) = self.pick_any(cx) else {
            return Ok(());
        };
        let cutoff = v.h.gc_cutoff().0;
        if self.rng.chance(50) {
            let lsn = self.read_lsn(cutoff, v.lrl);
            return self.check_time_at(cx, &v, lsn, "time_at");
        }
        // lsn_at of a time the model knows: a recorded one, one between two, or one before all.
        let (t, want) = {
            let m = cx.run.model();
            let times = &m.tls[v.i].times;
            if times.is_empty() {
                return Ok(());
            }
            let k = self.rng.below(times.len() as u64) as usize;
            let t = if self.rng.chance(10) {
                times[0].1 - 1
            } else if k + 1 < times.len() {
                self.rng.range(times[k].1, times[k + 1].1 - 1)
            } else {
                times[k].1
            };
            (t, m.lsn_at(v.i, t))
        };
        let res = v.h.lsn_at(from_micros(t));
        let cutoff_after = v.h.gc_cutoff().0;
        self.stats.reads_checked += 1;
        match (res, want) {
            (Ok(got), WantLsn::At(l)) if got.0 == l && l >= cutoff => Ok(()),
            (Err(e), WantLsn::Before) if e.kind() == ErrorKind::BelowGcCutoff => {
                self.stats.refused_below_cutoff += 1;
                Ok(())
            }
            (Err(e), WantLsn::At(l))
                if e.kind() == ErrorKind::BelowGcCutoff && l < cutoff_after =>
            {
                self.stats.refused_below_cutoff += 1;
                Ok(())
            }
            (Err(e), _)
                if e.kind() == ErrorKind::NotFound
                    && cx.run.model().tls[v.i].life != Life::Live =>
            {
                Ok(())
            }
            (res, want) => Err(format!(
                "lsn_at({t} µs) on {}: expected {}, got {} (GC cutoff {cutoff} before, \
                 {cutoff_after} after)",
                v.desc(),
                match want {
                    WantLsn::Before => "BelowGcCutoff (before the first commit)".to_string(),
                    WantLsn::At(l) => format!("LSN {l}, or BelowGcCutoff if below the cutoff"),
                },
                match res {
                    Ok(l) => format!("LSN {l}"),
                    Err(e) => err(&e),
                }
            )),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Branches, restores, deletes, detaches
    // -----------------------------------------------------------------------------------------

    /// Branches `parent` at `lsn` as `name`, owned by this worker; checks the outcome and, for a
    /// new branch, its ancestor, watermarks and commit time. Returns its index.
    fn branch(
        &mut self,
        cx: &Cx,
        parent: &View,
        lsn: u64,
        name: String,
    ) -> Result<Option<usize>, String> {
        {
            let mut m = cx.run.model();
            let p = &mut m.tls[parent.i];
            p.branching += 1;
            p.child_events += 1;
        }
        let res = cx
            .run
            .call("branch", cx.store.branch(&name, &parent.h, Lsn(lsn)));
        let mut m = cx.run.model();
        {
            let p = &mut m.tls[parent.i];
            p.branching -= 1;
            p.child_events += 1;
        }
        let res = res?;
        let tl = match res {
            Ok(tl) => tl,
            Err(e) => {
                let cutoff = parent.h.gc_cutoff().0;
                return match e.kind() {
                    ErrorKind::InvalidArgument if lsn < cutoff => {
                        self.stats.branches_refused += 1;
                        self.stats.refused_below_cutoff += 1;
                        Ok(None)
                    }
                    ErrorKind::NotFound if m.tls[parent.i].life != Life::Live => Ok(None),
                    _ => Err(format!(
                        "branch {name:?} of {} at LSN {lsn}: expected a branch (parent's GC \
                         cutoff {cutoff}, published last_record_lsn {}), got {}",
                        parent.desc(),
                        parent.lrl,
                        err(&e)
                    )),
                };
            }
        };
        if m.tls[parent.i].life == Life::Deleted {
            return Err(format!(
                "branch {name:?} of {} at LSN {lsn} succeeded, but so did deleting the parent",
                parent.desc()
            ));
        }
        let ctx = format!("branch {name:?} of {} at LSN {lsn}", parent.desc());
        match tl.ancestor() {
            Some((a, l)) if a.id() == parent.h.id() && l.0 == lsn => {}
            other => {
                return Err(format!(
                    "{ctx}: ancestor() is {:?}, expected ({}, {lsn})",
                    other.map(|(a, l)| (a.id(), l)),
                    parent.h.id()
                ));
            }
        }
        if tl.last_record_lsn().0 != lsn || tl.gc_cutoff().0 != lsn {
            return Err(format!(
                "{ctx}: last_record_lsn {} and GC cutoff {}, expected both {lsn}",
                tl.last_record_lsn(),
                tl.gc_cutoff()
            ));
        }
        let want = m.time_of(parent.i, lsn);
        let got = tl.time_at(Lsn(lsn)).map(micros);
        self.stats.branch_times_checked += 1;
        if got != want {
            return Err(format!(
                "{ctx}: time_at({lsn}) on the branch is {got:?} µs, expected the parent's commit \
                 time there, {want:?} µs (parent's time_at({lsn}) now {:?}, GC cutoff now {}); \
                 lsn_at on the branch answers {:?}",
                parent.h.time_at(Lsn(lsn)).map(micros),
                parent.h.gc_cutoff(),
                tl.lsn_at(SystemTime::now()).map_err(|e| err(&e))
            ));
        }
        m.tls
            .push(TlM::new(name, &tl, self.id, Some((parent.i, lsn)), want));
        m.tls[parent.i].child_events += 1;
        Ok(Some(m.tls.len() - 1))
    }

    fn own_count(&self, cx: &Cx) -> usize {
        self.own(&cx.run.model()).len()
    }

    fn op_branch(&mut self, cx: &Cx) -> Result<(), String> {
        if self.own_count(cx) >= MAX_OWN {
            return self.op_delete(cx);
        }
        let Some(parent) = self.pick_any(cx) else {
            return Ok(());
        };
        let cutoff = parent.h.gc_cutoff().0;
        let lsn = if self.rng.chance(50) {
            self.stats.branches_at_cutoff += 1;
            cutoff.min(parent.lrl)
        } else {
            self.rng.range(cutoff.min(parent.lrl), parent.lrl)
        };
        self.seq += 1;
        let name = format!("w{}-b{}", self.id, self.seq);
        self.branch(cx, &parent, lsn, name)?;
        self.observe(cx, &parent)
    }

    /// Branch an own timeline at its cutoff, write four images of 400 bytes at consecutive
    /// LSNs (past `freeze_bytes`, so a frozen layer is being flushed), drop the writer, delete
    /// the branch, and look the root up again.
    fn op_branch_write_delete(&mut self, cx: &Cx) -> Result<(), String> {
        let Some(parent) = self.pick_own(cx, true) else {
            return Ok(());
        };
        let lsn = parent.h.gc_cutoff().0.min(parent.lrl);
        self.seq += 1;
        let name = format!("w{}-x{}", self.id, self.seq);
        let Some(i) = self.branch(cx, &parent, lsn, name)? else {
            return Ok(());
        };
        let v = Self::view(&cx.run.model(), i).expect("a new branch has a handle");
        let top = self.commit(cx, &v, Shape::Big(4))?;
        if self.rng.chance(30) {
            let key = self.rng.pick(&KEYS);
            let res = cx.run.call("get", v.h.get(key, Lsn(top)))?;
            if let Some(got) = self.judged(cx, &v, "get", top, lsn, res)? {
                self.check_value(cx, &v, "get", key, top, got.map(|b| b.to_vec()))?;
            }
        }
        self.delete(cx, &v)?;
        let root = format!("r{}", self.id);
        cx.store.timeline(&root).map_err(|e| {
            format!(
                "timeline({root:?}) right after deleting {}: expected it, got {}",
                v.desc(),
                err(&e)
            )
        })?;
        Ok(())
    }

    /// Deletes an own timeline (its writer dropped first): it must succeed unless a child
    /// appeared meanwhile, and must not succeed while the engine should see a child.
    fn delete(&mut self, cx: &Cx, v: &View) -> Result<(), String> {
        self.writers.remove(&v.i);
        // A child being deleted counts as a child event of its parent, before and after the
        // call: a delete of the parent overlapping it may be refused (the engine still saw the
        // child) and then find the child already gone from the model.
        let (name, events, parent) = {
            let mut m = cx.run.model();
            let t = &mut m.tls[v.i];
            t.life = Life::Deleting;
            let parent = t.parent.filter(|_| t.attached).map(|(p, _)| p);
            let out = (t.name.clone(), t.child_events, parent);
            if let Some(p) = parent {
                m.tls[p].child_events += 1;
            }
            out
        };
        let res = cx
            .run
            .call("delete_timeline", cx.store.delete_timeline(&name))?;
        let mut m = cx.run.model();
        if let Some(p) = parent {
            m.tls[p].child_events += 1;
        }
        match res {
            Ok(()) => {
                let kids = m.firm_children(v.i);
                if !kids.is_empty() {
                    return Err(format!(
                        "delete_timeline({name:?}) succeeded although it has child timelines \
                         {kids:?}: expected InvalidArgument"
                    ));
                }
                m.tls[v.i].life = Life::Deleted;
                self.stats.deletes += 1;
                Ok(())
            }
            Err(e)
                if e.kind() == ErrorKind::InvalidArgument
                    && (m.tls[v.i].child_events != events
                        || m.tls[v.i].branching > 0
                        || m.has_any_child(v.i)) =>
            {
                m.tls[v.i].life = Life::Live;
                self.stats.deletes_refused += 1;
                Ok(())
            }
            Err(e) => Err(format!(
                "delete_timeline({name:?}) of a leaf ({}, last_record_lsn {}, disk_consistent_lsn \
                 {}): expected Ok, got {}",
                v.desc(),
                v.h.last_record_lsn(),
                v.h.disk_consistent_lsn(),
                err(&e)
            )),
        }
    }

    fn op_delete(&mut self, cx: &Cx) -> Result<(), String> {
        if cx.run.skips(Op::Delete) {
            return Ok(());
        }
        let v = {
            let m = cx.run.model();
            let leaves: Vec<usize> = self
                .own(&m)
                .into_iter()
                .filter(|i| {
                    !m.tls[*i].is_root_name() && !m.has_any_child(*i) && m.tls[*i].branching == 0
                })
                .collect();
            if leaves.is_empty() {
                None
            } else {
                Self::view(&m, self.rng.pick(&leaves))
            }
        };
        match v {
            Some(v) => self.delete(cx, &v),
            None => self.op_detach(cx),
        }
    }

    fn op_detach(&mut self, cx: &Cx) -> Result<(), String> {
        let v = {
            let m = cx.run.model();
            let attached: Vec<usize> = self
                .own(&m)
                .into_iter()
                .filter(|i| m.tls[*i].attached)
                .collect();
            if attached.is_empty() {
                return Ok(());
            }
            Self::view(&m, self.rng.pick(&attached))
        };
        let Some(v) = v else { return Ok(()) };
        let parent = {
            let mut m = cx.run.model();
            m.tls[v.i].detaching = true;
            let p = m.tls[v.i].parent.expect("attached means a parent").0;
            m.tls[p].child_events += 1;
            p
        };
        let _g = v.activity.begin();
        let res = cx
            .run
            .call("detach_ancestor", cx.store.detach_ancestor(&v.name))?;
        let mut m = cx.run.model();
        m.tls[v.i].detaching = false;
        m.tls[parent].child_events += 1;
        if let Err(e) = res {
            return Err(format!(
                "detach_ancestor({:?}) of {}: expected Ok, got {}",
                v.name,
                v.desc(),
                err(&e)
            ));
        }
        if let Some((a, l)) = v.h.ancestor() {
            return Err(format!(
                "{}: ancestor() is ({}, {l}) after detach_ancestor",
                v.desc(),
                a.id()
            ));
        }
        m.tls[v.i].attached = false;
        Ok(())
    }

    fn op_restore(&mut self, cx: &Cx) -> Result<(), String> {
        if self.own_count(cx) >= MAX_OWN {
            return self.op_delete(cx);
        }
        let Some(v) = self.pick_own(cx, true) else {
            return Ok(());
        };
        let cutoff = v.h.gc_cutoff().0;
        let (point, want) = {
            let m = cx.run.model();
            let times = &m.tls[v.i].times;
            if times.is_empty() || self.rng.chance(50) {
                let l = self.rng.range(cutoff.min(v.lrl), v.lrl);
                (RestorePoint::Lsn(Lsn(l)), WantLsn::At(l))
            } else {
                let k = self.rng.below(times.len() as u64) as usize;
                let t = times[k].1;
                (RestorePoint::Time(from_micros(t)), m.lsn_at(v.i, t))
            }
        };
        let res = cx.run.call("restore", cx.store.restore(&v.name, point))?;
        let cutoff_after = v.h.gc_cutoff().0;
        let ctx = format!("restore({:?}, {point:?}) of {}", v.name, v.desc());
        let r = match (res, &want) {
            (Ok(r), _) => r,
            (Err(e), WantLsn::At(l))
                if matches!(
                    e.kind(),
                    ErrorKind::InvalidArgument | ErrorKind::BelowGcCutoff
                ) && *l < cutoff_after =>
            {
                self.stats.refused_below_cutoff += 1;
                return Ok(());
            }
            (Err(e), WantLsn::Before) if e.kind() == ErrorKind::BelowGcCutoff => {
                self.stats.refused_below_cutoff += 1;
                return Ok(());
            }
            (Err(e), _) => {
                return Err(format!(
                    "{ctx}: expected a restore (GC cutoff {cutoff} before, {cutoff_after} after), \
                     got {}",
                    err(&e)
                ));
            }
        };
        let WantLsn::At(lsn) = want else {
            return Err(format!(
                "{ctx}: restored at LSN {}, expected BelowGcCutoff (before the first commit)",
                r.lsn
            ));
        };
        if r.lsn.0 != lsn {
            return Err(format!("{ctx}: restored at LSN {}, expected {lsn}", r.lsn));
        }
        if lsn < cutoff {
            return Err(format!(
                "{ctx}: restored at LSN {lsn}, below the GC cutoff {cutoff} read before"
            ));
        }
        let Some(backup) = r
            .backup_name
            .clone()
            .filter(|b| b.starts_with(&format!("{}@restore-", v.name)))
        else {
            return Err(format!("{ctx}: backup name {:?}", r.backup_name));
        };
        let tl = r.timeline;
        let mut m = cx.run.model();
        match tl.ancestor() {
            Some((a, l)) if a.id() == v.h.id() && l.0 == lsn => {}
            other => {
                return Err(format!(
                    "{ctx}: ancestor() is {:?}, expected ({}, {lsn})",
                    other.map(|(a, l)| (a.id(), l)),
                    v.h.id()
                ));
            }
        }
        let want_time = m.time_of(v.i, lsn);
        let got_time = tl.time_at(Lsn(lsn)).map(micros);
        self.stats.branch_times_checked += 1;
        if got_time != want_time {
            return Err(format!(
                "{ctx}: time_at({lsn}) on the restored timeline is {got_time:?} µs, expected the \
                 source's commit time there, {want_time:?} µs"
            ));
        }
        if v.h.name() != backup {
            return Err(format!(
                "{ctx}: the old timeline is called {:?}, expected the backup name {backup:?}",
                v.h.name()
            ));
        }
        // A writer taken under the name before the restore refuses to write from now on.
        if let Some(mut w) = self.writers.remove(&v.i) {
            let next = Lsn(v.h.last_record_lsn().0 + 1);
            match w.finish_write(next) {
                Err(e) if e.kind() == ErrorKind::Closed => {}
                other => {
                    return Err(format!(
                        "{ctx}: a writer taken before the restore committed through the old \
                         name: {other:?}"
                    ));
                }
            }
        }
        m.tls[v.i].name = backup;
        m.tls.push(TlM::new(
            v.name.clone(),
            &tl,
            self.id,
            Some((v.i, lsn)),
            want_time,
        ));
        m.tls[v.i].child_events += 1;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // GC, compaction, images, flush, leases
    // -----------------------------------------------------------------------------------------

    /// Commits one LSN at a time on an own timeline, running GC after each: its cutoff moves
    /// while other workers branch at it.
    fn op_commit_and_gc(&mut self, cx: &Cx) -> Result<(), String> {
        let Some(v) = self.pick_own(cx, true) else {
            return Ok(());
        };
        for _ in 0..self.rng.range(3, 8) {
            self.commit(cx, &v, Shape::One)?;
            self.layer_op(cx, &v, Op::Gc)?;
        }
        Ok(())
    }

    fn op_layer(&mut self, cx: &Cx, op: Op) -> Result<(), String> {
        let Some(v) = self.pick_any(cx) else {
            return Ok(());
        };
        self.layer_op(cx, &v, op)
    }

    fn layer_op(&mut self, cx: &Cx, v: &View, op: Op) -> Result<(), String> {
        let _g = v.activity.begin();
        let lrl = v.lrl;
        let what = op.name();
        let call = format!("{what} on {}", v.desc());
        let res: Result<stratakv::Result<u64>, String> = match op {
            Op::Gc => cx.run.call(&call, v.h.gc()).map(|r| r.map(|r| r.cutoff.0)),
            Op::Compact => cx.run.call(&call, v.h.compact()).map(|r| r.map(|_| 0)),
            Op::Image => cx
                .run
                .call(&call, v.h.create_image_layer())
                .map(|r| r.map(|l| l.0)),
            Op::Flush => cx.run.call(&call, v.h.flush()).map(|r| r.map(|l| l.0)),
            _ => unreachable!("not a layer operation: {op:?}"),
        };
        let res = res.map_err(|e| format!("{e} ({})", cx.run.model().state(v.i)))?;
        match res {
            // Not in `create_image_layer`'s docs, but what it answers before anything was
            // flushed: a root or a branch at LSN 0 with nothing written.
            Err(e)
                if op == Op::Image
                    && e.kind() == ErrorKind::InvalidArgument
                    && v.h.disk_consistent_lsn() == Lsn::ZERO => {}
            Err(e) => self.not_found_while_deleting(cx, v, what, &e)?,
            Ok(l) => match op {
                Op::Gc if l > v.h.gc_cutoff().0 => {
                    return Err(format!(
                        "gc on {}: reported cutoff {l}, but gc_cutoff() is {}",
                        v.desc(),
                        v.h.gc_cutoff()
                    ));
                }
                Op::Image | Op::Flush if l < lrl => {
                    return Err(format!(
                        "{what} on {}: returned LSN {l}, below the last_record_lsn {lrl} \
                         published before the call",
                        v.desc()
                    ));
                }
                _ => {}
            },
        }
        self.observe(cx, v)
    }

    fn op_lease(&mut self, cx: &Cx) -> Result<(), String> {
        let Some(v) = self.pick_any(cx) else {
            return Ok(());
        };
        let cutoff = v.h.gc_cutoff().0;
        let lsn = self.read_lsn(cutoff, v.lrl);
        let ttl = Duration::from_millis(self.rng.range(1, 20));
        let res = v.h.lease(Lsn(lsn), ttl);
        match res {
            Ok(expiry) => {
                if lsn < cutoff {
                    return Err(format!(
                        "lease of LSN {lsn} on {} granted below the GC cutoff {cutoff}",
                        v.desc()
                    ));
                }
                cx.run.model().tls[v.i].leases.push((lsn, expiry));
            }
            Err(e) => {
                let cutoff_after = v.h.gc_cutoff().0;
                match e.kind() {
                    ErrorKind::InvalidArgument if lsn < cutoff_after => {
                        self.stats.refused_below_cutoff += 1;
                    }
                    _ => self.not_found_while_deleting(cx, &v, "lease", &e)?,
                }
            }
        }
        self.observe(cx, &v)
    }

    // -----------------------------------------------------------------------------------------
    // Whole-store checks (between rounds, nothing else running)
    // -----------------------------------------------------------------------------------------

    /// Every live timeline: the catalog, watermarks, ancestor, and reads and commit times at a
    /// sample of LSNs from the cutoff to `last_record_lsn`.
    fn check_everything(&mut self, cx: &Cx) -> Result<(), String> {
        let live: Vec<View> = {
            let m = cx.run.model();
            m.live()
                .into_iter()
                .filter_map(|i| Self::view(&m, i))
                .collect()
        };
        let mut names: Vec<String> = live.iter().map(|v| v.name.clone()).collect();
        names.sort();
        let catalog: Vec<String> = cx.store.timelines().iter().map(|t| t.name()).collect();
        if names != catalog {
            return Err(format!(
                "the store's timelines are {catalog:?}, expected {names:?}"
            ));
        }
        for v in live {
            let (parent, attached, lrl) = {
                let m = cx.run.model();
                let t = &m.tls[v.i];
                (t.parent.map(|(p, b)| (m.tls[p].id, b)), t.attached, t.lrl)
            };
            let engine_lrl = v.h.last_record_lsn().0;
            if engine_lrl != lrl {
                return Err(format!(
                    "{}: last_record_lsn {engine_lrl}, expected {lrl}",
                    v.desc()
                ));
            }
            let got_parent = v.h.ancestor().map(|(a, l)| (a.id(), l.0));
            let want_parent = if attached { parent } else { None };
            if got_parent != want_parent {
                return Err(format!(
                    "{}: ancestor() {got_parent:?}, expected {want_parent:?}",
                    v.desc()
                ));
            }
            let cutoff = v.h.gc_cutoff().0;
            let mut lsns = vec![cutoff.min(lrl), lrl];
            for _ in 0..6 {
                lsns.push(self.rng.range(cutoff.min(lrl), lrl));
            }
            let keys = read_keys();
            for lsn in lsns {
                let res = cx.run.call("get_many", v.h.get_many(&keys, Lsn(lsn)))?;
                if let Some(got) = self.judged(cx, &v, "get_many", lsn, cutoff, res)? {
                    for (k, g) in keys.iter().zip(got) {
                        self.check_value(cx, &v, "get_many", k, lsn, g.map(|b| b.to_vec()))?;
                    }
                }
                self.check_time_at(cx, &v, lsn, "after reopen")?;
            }
            self.scan(cx, &v, lrl, cutoff)?;
            self.observe(cx, &v)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Variants
// ---------------------------------------------------------------------------------------------

fn options(dir: &Path, remote: Option<RemoteStorage>) -> StoreOptions {
    let opts = StoreOptions::new(dir)
        .freeze_bytes(1 << 10)
        .block_size(512)
        .compaction_threshold(2)
        .image_threshold_bytes(2 << 10)
        .image_threshold_layers(2)
        .target_layer_size(4 << 10)
        .gc_compaction_ratio(0.1)
        .gc_horizon(Some(HORIZON))
        .pitr_interval(None)
        .background_period(Some(Duration::from_millis(1)))
        .wait_lsn_timeout(Duration::from_secs(5));
    match remote {
        Some(r) => opts.remote(r).local_disk_budget(Some(32 << 10)),
        None => opts,
    }
}

/// Closes the store; anything but `Ok` fails the run.
fn close_store(run: &Run, round: u64, store: Store) {
    match run.call("close", store.close()) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => die(
            run,
            round,
            "main",
            "close",
            format!("close: expected Ok, got {}", err(&e)),
        ),
        Err(e) => die(run, round, "main", "close", e),
    }
}

/// Fails the test with the run's context and figures so far.
fn die(run: &Run, round: u64, who: &str, op: &str, msg: String) -> ! {
    let stats = run.stats.lock().unwrap_or_else(|e| e.into_inner()).report();
    panic!("{}: {msg}\nso far: {stats}", run.context(round, who, op));
}

fn open_store(run: &Run, opts: &StoreOptions, round: u64) -> Store {
    match run.call("Store::open", Store::open(opts.clone())) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => die(
            run,
            round,
            "main",
            "open",
            format!("Store::open: expected Ok, got {}", err(&e)),
        ),
        Err(e) => die(run, round, "main", "open", e),
    }
}

fn run_variant(variant: &'static str, remote: bool) {
    let seed = seed_from_env_or_clock("STRATAKV_CONCURRENT_SEED");
    let secs = env_u64("STRATAKV_CONCURRENT_SECS").unwrap_or(DEFAULT_SECS);
    let skip: Vec<String> = std::env::var("STRATAKV_CONCURRENT_SKIP")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = skip
        .iter()
        .find(|s| !MIX.iter().any(|(o, _)| o.name() == s.as_str()))
    {
        panic!(
            "STRATAKV_CONCURRENT_SKIP: unknown operation {bad:?}; the operations are {:?}",
            MIX.iter().map(|(o, _)| o.name()).collect::<Vec<_>>()
        );
    }
    eprintln!(
        "concurrent model test, variant {variant}: seed {seed}, {secs} s, {WORKERS} workers, \
         skipping {skip:?} (rerun with STRATAKV_CONCURRENT_SEED={seed})"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let storage = remote.then(|| {
        RemoteStorage::new(
            Arc::new(InMemory::new()),
            object_store::path::Path::from("concurrent"),
        )
        .with_retry_policy(RetryPolicy {
            max_attempts: 50,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(20),
            max_elapsed: Duration::from_secs(30),
        })
        .with_claim_grace(Duration::from_millis(10))
    });
    let opts = options(dir.path(), storage);
    let run = Run {
        seed,
        variant,
        remote,
        start: Instant::now(),
        rt,
        model: Mutex::new(Model::default()),
        failure: Mutex::new(None),
        stop: AtomicBool::new(false),
        last_time: AtomicU64::new(0),
        stats: Mutex::new(Stats::default()),
        skip,
    };
    let mut store = open_store(&run, &opts, 0);
    for w in 0..WORKERS {
        let name = format!("r{w}");
        let tl = run
            .call("create_timeline", store.create_timeline(&name))
            .unwrap()
            .unwrap();
        run.model().tls.push(TlM::new(name, &tl, w, None, None));
    }
    let mut workers: Vec<Worker> = (0..WORKERS).map(|w| Worker::new(w, seed)).collect();
    let mut checker = Worker::new(WORKERS, seed);
    let mut rng = Rng(seed ^ 0x5eed);
    let deadline = run.start + Duration::from_secs(secs);
    let mut round = 0;
    loop {
        round += 1;
        let now = Instant::now();
        let last = now >= deadline;
        if !last {
            let until = (now + Duration::from_millis(rng.range(300, 1500))).min(deadline);
            let cx = Cx {
                run: &run,
                store: &store,
            };
            std::thread::scope(|s| {
                for w in workers.iter_mut() {
                    let cx = &cx;
                    s.spawn(move || {
                        if let Err(e) = w.run_round(cx, until) {
                            cx.run.record_failure(format!(
                                "{}: {e}",
                                cx.run.context(round, &w.who(), w.op)
                            ));
                        }
                    });
                }
            });
            {
                let mut st = run.stats.lock().unwrap_or_else(|e| e.into_inner());
                for w in workers.iter_mut() {
                    st.merge(&std::mem::take(&mut w.stats));
                }
                st.rounds += 1;
            }
            if let Some(f) = run.failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let stats = run.stats.lock().unwrap_or_else(|e| e.into_inner()).report();
                panic!("{f}\nso far: {stats}");
            }
        }
        if let Some(e) = store.background_error() {
            die(
                &run,
                round,
                "main",
                "between rounds",
                format!("background work failed: {e}"),
            );
        }
        if let Err(e) = store.timeline("r0") {
            die(
                &run,
                round,
                "main",
                "between rounds",
                format!("timeline(\"r0\"): expected it, got {}", err(&e)),
            );
        }
        let map = run.model().prune();
        for w in workers.iter_mut() {
            w.writers = std::mem::take(&mut w.writers)
                .into_iter()
                .filter_map(|(i, wr)| map[i].map(|j| (j, wr)))
                .collect();
        }
        if last || rng.chance(40) {
            for w in workers.iter_mut() {
                w.writers.clear();
            }
            close_store(&run, round, store);
            store = open_store(&run, &opts, round);
            {
                let mut m = run.model();
                for t in m.tls.iter_mut() {
                    t.leases.clear();
                    if t.life != Life::Live {
                        t.handle = None;
                        continue;
                    }
                    match store.timeline(&t.name) {
                        Ok(h) if h.id() == t.id => t.handle = Some(h),
                        Ok(h) => die(
                            &run,
                            round,
                            "main",
                            "reopen",
                            format!(
                                "after reopen timeline({:?}) is {}, expected {}",
                                t.name,
                                h.id(),
                                t.id
                            ),
                        ),
                        Err(e) => die(
                            &run,
                            round,
                            "main",
                            "reopen",
                            format!(
                                "after reopen timeline({:?}): expected {}, got {}",
                                t.name,
                                t.id,
                                err(&e)
                            ),
                        ),
                    }
                }
            }
            run.stats.lock().unwrap_or_else(|e| e.into_inner()).reopens += 1;
            let cx = Cx {
                run: &run,
                store: &store,
            };
            if let Err(e) = checker.check_everything(&cx) {
                die(&run, round, "checker", "check after reopen", e);
            }
            let mut st = run.stats.lock().unwrap_or_else(|e| e.into_inner());
            st.merge(&std::mem::take(&mut checker.stats));
        }
        if last {
            break;
        }
    }
    close_store(&run, round, store);
    let stats = run.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
    eprintln!(
        "concurrent model test, variant {variant}, seed {seed}, {:.1} s: {}",
        run.start.elapsed().as_secs_f64(),
        stats.report()
    );
    assert!(stats.reads_checked > 0, "no read was checked");
}

#[test]
fn concurrent_operations_on_local_disk_match_the_model_and_never_poison_the_store() {
    run_variant("local", false);
}

#[test]
fn concurrent_operations_with_a_remote_and_eviction_match_the_model() {
    run_variant("remote", true);
}
