//! The per-timeline `lsn ↔ commit time` index: "the LSN as of this time" is a binary search,
//! never a scan.
//!
//! Each commit (`finish_write` with a timestamp) is [recorded](TimeIndex::record); the index keeps
//! one entry per distinct commit time, holding the newest LSN committed at that time, so it is
//! sparse yet exact per commit. It is persisted as an append-only log (see
//! [`crate::format::decode_time_index`]): each flush [appends](append_durably) the entries it
//! made durable, GC [rewrites](rewrite) it after [trimming](TimeIndex::trim_below), and open
//! [loads](load) it, repairing a torn tail.
//!
//! Times are microseconds since the Unix epoch.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::format::varint::{get_uvarint, put_uvarint};
use crate::format::{decode_time_index, encode_entries, encode_header};
use crate::io::Io;
use crate::lsn::Lsn;

/// What [`TimeIndex::lsn_at`] found for a time `t`.
///
/// Each variant carries what a caller needs to answer clearly: the LSN to read at, or why there
/// is none and where the recorded history starts or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LsnAt {
    /// No commit time has been recorded: the timeline has no timestamped commit (yet).
    NoCommits,
    /// `t` is before the first entry: before the first timestamped commit, or (after GC trimmed
    /// the index) before the retained window. No LSN is known for `t`.
    Before {
        /// The LSN of the first entry.
        first_lsn: Lsn,
        /// The commit time of the first entry.
        first_time: u64,
    },
    /// The LSN of the last commit at or before `t`; a later commit exists, so the answer is
    /// exact.
    At(Lsn),
    /// `t` is at or after the last recorded commit, whose LSN this is. Reading at it is correct
    /// for `t`, but `t` may also lie in the future or past the timeline's last timestamped
    /// commit; a caller that must not extrapolate can refuse with `last_time`.
    AtOrAfterLast {
        /// The LSN of the last recorded commit.
        lsn: Lsn,
        /// Its commit time.
        last_time: u64,
    },
}

/// Entries packed into one block once the unpacked tail holds this many and one more (a few
/// in unit tests, so that their short histories span blocks).
const BLOCK: usize = if cfg!(test) { 4 } else { 128 };

/// A timeline's `lsn ↔ commit time` entries, strictly increasing in both LSN and time.
///
/// An entry is recorded per commit time, which at a million commits a second is a million
/// entries a second: kept as 16-byte pairs they were, in the peer benchmark, ~40 MB of the
/// store's memory. Older entries are packed instead, [`BLOCK`] to a block: the first whole,
/// then each as the LEB128 varints of its LSN and time above the one before (a byte or two
/// each for busy commits). A search finds the block by its first entry, then reads it in order.
/// The newest entries stay unpacked in `tail`, which always holds the last one (a commit in the
/// same time slot moves it).
#[derive(Clone, Debug, Default)]
pub(crate) struct TimeIndex {
    blocks: Vec<Packed>,
    tail: Vec<(Lsn, u64)>,
    len: usize,
}

/// Entries in a block.
#[derive(Clone, Debug)]
struct Packed {
    /// Entries in the block.
    n: usize,
    first: (Lsn, u64),
    /// The entries after the first, as deltas.
    rest: Box<[u8]>,
}

impl Packed {
    /// Packs `entries` (at least one, strictly increasing).
    fn new(entries: &[(Lsn, u64)]) -> Packed {
        let mut rest = Vec::new();
        for w in entries.windows(2) {
            put_uvarint(&mut rest, w[1].0.0 - w[0].0.0);
            put_uvarint(&mut rest, w[1].1 - w[0].1);
        }
        Packed {
            n: entries.len(),
            first: entries[0],
            rest: rest.into_boxed_slice(),
        }
    }

    /// The entries, in order.
    fn iter(&self) -> impl Iterator<Item = (Lsn, u64)> + '_ {
        let mut at = 0;
        let mut e = self.first;
        std::iter::once(self.first).chain(std::iter::from_fn(move || {
            if at == self.rest.len() {
                return None;
            }
            let mut next = || get_uvarint(&self.rest, &mut at).expect("packed by put_uvarint");
            e.0 = Lsn(e.0.0 + next());
            e.1 += next();
            Some(e)
        }))
    }
}

impl PartialEq for TimeIndex {
    fn eq(&self, other: &TimeIndex) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for TimeIndex {}

impl TimeIndex {
    /// An empty index.
    pub(crate) fn new() -> TimeIndex {
        TimeIndex::default()
    }

    /// An index of `entries`, which must be strictly increasing in both LSN and time (as
    /// [`decode_time_index`] returns them).
    pub(crate) fn from_entries(entries: Vec<(Lsn, u64)>) -> TimeIndex {
        debug_assert!(
            entries
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
            "time index entries must be strictly increasing in LSN and time"
        );
        let mut index = TimeIndex::new();
        for e in entries {
            index.push(e);
        }
        index
    }

    /// Appends an entry above the last, packing the tail when it is full.
    fn push(&mut self, e: (Lsn, u64)) {
        if self.tail.len() > BLOCK {
            self.blocks.push(Packed::new(&self.tail[..BLOCK]));
            self.tail.drain(..BLOCK);
        }
        self.tail.push(e);
        self.len += 1;
    }

    /// Every entry, oldest first.
    fn iter(&self) -> impl Iterator<Item = (Lsn, u64)> + '_ {
        self.blocks
            .iter()
            .flat_map(Packed::iter)
            .chain(self.tail.iter().copied())
    }

    /// The newest entry for which `at_or_below` holds, where it holds for a prefix of the
    /// entries (an LSN or a time at most some bound); with whether it is the last entry.
    fn newest_where(
        &self,
        at_or_below: impl Fn(&(Lsn, u64)) -> bool,
    ) -> Option<((Lsn, u64), bool)> {
        if self.tail.first().is_some_and(&at_or_below) {
            let n = self.tail.partition_point(&at_or_below);
            return Some((self.tail[n - 1], n == self.tail.len()));
        }
        let b = self.blocks.partition_point(|p| at_or_below(&p.first));
        let e = self.blocks[b.checked_sub(1)?]
            .iter()
            .take_while(|e| at_or_below(e))
            .last()?;
        // The tail is never empty when there are blocks, so a block's entry is not the last.
        Some((e, false))
    }

    /// Records that everything up to `lsn` was committed at `time_micros`.
    ///
    /// A commit at or before the last entry's time (the same time slot, or a clock that went
    /// backwards) moves the last entry up to `lsn` and keeps its time, so every commit stays
    /// exactly findable by time and the entries stay strictly increasing. An `lsn` at or below
    /// the last entry's is ignored.
    pub(crate) fn record(&mut self, lsn: Lsn, time_micros: u64) {
        match self.tail.last_mut() {
            Some(last) if lsn <= last.0 => {}
            Some(last) if time_micros <= last.1 => last.0 = lsn,
            _ => self.push((lsn, time_micros)),
        }
    }

    /// The LSN of the last commit at or before `time_micros`, found by binary search.
    pub(crate) fn lsn_at(&self, time_micros: u64) -> LsnAt {
        let Some(&(last_lsn, last_time)) = self.tail.last() else {
            return LsnAt::NoCommits;
        };
        match self.newest_where(|e| e.1 <= time_micros) {
            None => {
                let (first_lsn, first_time) = self.iter().next().expect("an entry");
                LsnAt::Before {
                    first_lsn,
                    first_time,
                }
            }
            Some((_, true)) => LsnAt::AtOrAfterLast {
                lsn: last_lsn,
                last_time,
            },
            Some(((lsn, _), false)) => LsnAt::At(lsn),
        }
    }

    /// The commit time of the newest entry at or below `lsn`; `None` if there is none.
    pub(crate) fn time_of(&self, lsn: Lsn) -> Option<u64> {
        self.newest_where(|e| e.0 <= lsn).map(|(e, _)| e.1)
    }

    /// The entries with an LSN above `lsn`: what a flush that made everything up to its new
    /// `disk_consistent_lsn` durable appends, given the LSN of the last entry it appended
    /// before.
    pub(crate) fn entries_after(&self, lsn: Lsn) -> Vec<(Lsn, u64)> {
        let b = self.blocks.partition_point(|p| p.first.0 <= lsn);
        self.blocks[b.saturating_sub(1)..]
            .iter()
            .flat_map(Packed::iter)
            .chain(self.tail.iter().copied())
            .filter(|e| e.0 > lsn)
            .collect()
    }

    /// Drops the entries with an LSN above `lsn` (at open: commits past `disk_consistent_lsn`
    /// were lost). The file must then be [rewritten](rewrite) if anything was dropped, or a
    /// later append would not follow its last record.
    pub(crate) fn truncate_above(&mut self, lsn: Lsn) {
        if self.tail.first().is_some_and(|e| e.0 <= lsn) {
            let n = self.tail.partition_point(|e| e.0 <= lsn);
            self.len -= self.tail.len() - n;
            self.tail.truncate(n);
            return;
        }
        // Keep the blocks that start at or below `lsn`; the last of them, cut at `lsn`,
        // becomes the tail.
        let b = self.blocks.partition_point(|p| p.first.0 <= lsn);
        self.tail = match b.checked_sub(1) {
            Some(last) => self.blocks[last]
                .iter()
                .take_while(|e| e.0 <= lsn)
                .collect(),
            None => Vec::new(),
        };
        self.blocks.truncate(b.saturating_sub(1));
        self.count();
    }

    /// Sets `len` from the blocks and the tail.
    fn count(&mut self) {
        self.len = self.blocks.iter().map(|p| p.n).sum::<usize>() + self.tail.len();
    }

    /// Drops the entries below `lsn` but keeps the newest one at or below it, so a time inside
    /// the retained window still finds its LSN (for GC, with `lsn` the GC cutoff).
    pub(crate) fn trim_below(&mut self, lsn: Lsn) {
        if self.tail.first().is_some_and(|e| e.0 <= lsn) {
            let n = self.tail.partition_point(|e| e.0 <= lsn);
            self.blocks.clear();
            self.tail.drain(..n - 1);
            self.count();
            return;
        }
        let b = self.blocks.partition_point(|p| p.first.0 <= lsn);
        if b == 0 {
            return;
        }
        // The block holding the kept entry is packed again from it; those before go.
        let from: Vec<_> = self.blocks[b - 1].iter().collect();
        // The block's first entry is at or below `lsn`.
        let keep = from.partition_point(|e| e.0 <= lsn) - 1;
        self.blocks.drain(..b - 1);
        self.blocks[0] = Packed::new(&from[keep..]);
        self.count();
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no commit time has been recorded.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The newest entry.
    #[cfg(test)]
    pub(crate) fn last(&self) -> Option<(Lsn, u64)> {
        self.tail.last().copied()
    }

    /// All entries, oldest first.
    pub(crate) fn to_vec(&self) -> Vec<(Lsn, u64)> {
        self.iter().collect()
    }
}

/// Loads the index file at `path`, of a timeline whose layers hold everything up to `durable`.
/// A missing file is an empty index. A torn tail (an append cut short by a crash, so of entries
/// above `durable`) is cut off the file, durably, and the entries before it are kept; an older
/// format version is rewritten as today's.
///
/// # Errors
/// [`ErrorKind::Corruption`] naming the file and offset if the header or a record before the
/// last is bad, or the last is damaged and its head says it starts at or below `durable`;
/// [`ErrorKind::Io`] if reading or repairing the file fails.
pub(crate) fn load(io: &Io, path: &Path, durable: Lsn) -> Result<TimeIndex> {
    let file = match io.read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(TimeIndex::new()),
        Err(e) => return Err(e),
    };
    let decoded = decode_time_index(&file, path)?;
    if let Some(first) = decoded.torn_first_lsn.filter(|l| *l <= durable) {
        // A crash tears only an append whose flush never finished, of entries above what
        // the manifest says is durable: this is damage.
        return Err(Error::corruption(
            path,
            decoded.valid_len as u64,
            format!(
                "time index: the record of commit times from LSN {first} fails its checksum, yet the timeline's layers hold up to LSN {durable}"
            ),
        ));
    }
    let (current, torn, valid_len) = (decoded.is_current(), decoded.torn_tail, decoded.valid_len);
    let index = TimeIndex::from_entries(decoded.entries);
    if !current {
        // Appends are of today's version: the file becomes one first.
        rewrite(io, path, &index)?;
    } else if torn {
        io.truncate(path, valid_len as u64)?;
    }
    Ok(index)
}

/// Appends `entries` to the index file at `path` and fsyncs it, creating the file (header
/// written atomically) if it is missing. Nothing is done for no entries.
///
/// The entries' LSNs must be above the last record's already in the file (pass
/// [`TimeIndex::entries_after`] the LSN of the last entry appended before).
///
/// # Errors
/// [`ErrorKind::Io`] if a write or fsync fails.
pub(crate) fn append_durably(io: &Io, path: &Path, entries: &[(Lsn, u64)]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut f = match io.open_append(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::Io && !path.exists() => {
            io.write_atomic(path, &encode_header())?;
            io.open_append(path)?
        }
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    encode_entries(entries, &mut buf);
    f.write_all(&buf)
        .map_err(|e| Error::io("appending to", path, e))?;
    io.sync(f.as_mut(), path)
}

/// Replaces the index file at `path` with `index`, atomically (after GC or a truncation).
///
/// # Errors
/// [`ErrorKind::Io`] if writing, fsyncing or renaming fails.
pub(crate) fn rewrite(io: &Io, path: &Path, index: &TimeIndex) -> Result<()> {
    let mut bytes = encode_header();
    encode_entries(&index.to_vec(), &mut bytes);
    io.write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::TIME_INDEX_HEADER_LEN;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Record(u64, u64),
        TruncateAbove(u64),
        TrimBelow(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u64..200, 0u64..100).prop_map(|(l, t)| Op::Record(l, t)),
            1 => (0u64..200).prop_map(Op::TruncateAbove),
            1 => (0u64..200).prop_map(Op::TrimBelow),
        ]
    }

    /// The naive model: the same entries, kept and searched by linear scans.
    #[derive(Default)]
    struct Model(Vec<(Lsn, u64)>);

    impl Model {
        fn apply(&mut self, op: &Op) {
            match *op {
                Op::Record(l, t) => match self.0.last_mut() {
                    None => self.0.push((Lsn(l), t)),
                    Some(last) if Lsn(l) <= last.0 => {}
                    Some(last) if t <= last.1 => last.0 = Lsn(l),
                    Some(_) => self.0.push((Lsn(l), t)),
                },
                Op::TruncateAbove(l) => self.0.retain(|e| e.0 <= Lsn(l)),
                Op::TrimBelow(l) => {
                    let keep_from = self.0.iter().rposition(|e| e.0 <= Lsn(l));
                    if let Some(i) = keep_from {
                        self.0 = self.0[i..].to_vec();
                    }
                }
            }
        }

        fn lsn_at(&self, t: u64) -> LsnAt {
            let Some(&(last_lsn, last_time)) = self.0.last() else {
                return LsnAt::NoCommits;
            };
            match self.0.iter().rev().find(|e| e.1 <= t) {
                None => LsnAt::Before {
                    first_lsn: self.0[0].0,
                    first_time: self.0[0].1,
                },
                Some(&(l, _)) if l == last_lsn => LsnAt::AtOrAfterLast { lsn: l, last_time },
                Some(&(l, _)) => LsnAt::At(l),
            }
        }

        fn time_of(&self, lsn: Lsn) -> Option<u64> {
            self.0.iter().rev().find(|e| e.0 <= lsn).map(|e| e.1)
        }

        fn entries_after(&self, lsn: Lsn) -> Vec<(Lsn, u64)> {
            self.0.iter().copied().filter(|e| e.0 > lsn).collect()
        }
    }

    fn apply(index: &mut TimeIndex, op: &Op) {
        match *op {
            Op::Record(l, t) => index.record(Lsn(l), t),
            Op::TruncateAbove(l) => index.truncate_above(Lsn(l)),
            Op::TrimBelow(l) => index.trim_below(Lsn(l)),
        }
    }

    fn strictly_increasing(e: &[(Lsn, u64)]) -> bool {
        e.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
    }

    proptest! {
        #[test]
        fn matches_naive_model(ops in proptest::collection::vec(op(), 0..60)) {
            let mut index = TimeIndex::new();
            let mut model = Model::default();
            for op in &ops {
                apply(&mut index, op);
                model.apply(op);
                prop_assert_eq!(index.to_vec(), model.0.clone());
                prop_assert!(strictly_increasing(&index.to_vec()));
                prop_assert_eq!(index.len(), model.0.len());
                prop_assert_eq!(index.is_empty(), model.0.is_empty());
                prop_assert_eq!(index.last(), model.0.last().copied());
            }
            for t in 0..=101 {
                prop_assert_eq!(index.lsn_at(t), model.lsn_at(t), "lsn_at({})", t);
            }
            for l in 0..=201 {
                prop_assert_eq!(index.time_of(Lsn(l)), model.time_of(Lsn(l)), "time_of({})", l);
                prop_assert_eq!(index.entries_after(Lsn(l)), model.entries_after(Lsn(l)));
            }
        }

        /// With commits only, `lsn_at(t)` is exactly the last commit at or before `t`, where a
        /// commit whose clock went backwards counts at the newest time seen before it.
        #[test]
        fn lsn_at_is_exact_per_commit(
            commits in proptest::collection::vec((1u64..10, 0u64..60), 1..40),
        ) {
            let mut index = TimeIndex::new();
            let mut seen: Vec<(Lsn, u64)> = Vec::new();
            let mut lsn = 0;
            for &(dl, t) in &commits {
                lsn += dl;
                index.record(Lsn(lsn), t);
                let effective = seen.last().map_or(t, |&(_, prev)| t.max(prev));
                seen.push((Lsn(lsn), effective));
            }
            for t in 0..=61 {
                let expected = seen.iter().rev().find(|c| c.1 <= t).map(|c| c.0);
                let got = match index.lsn_at(t) {
                    LsnAt::NoCommits | LsnAt::Before { .. } => None,
                    LsnAt::At(l) | LsnAt::AtOrAfterLast { lsn: l, .. } => Some(l),
                };
                prop_assert_eq!(got, expected, "t = {}", t);
            }
            let (last_lsn, last_time) = *seen.last().unwrap();
            prop_assert_eq!(index.last(), Some((last_lsn, last_time)));
            prop_assert_eq!(index.time_of(last_lsn), Some(last_time));
        }

        /// Appending what each flush made durable, then loading, gives the index in memory,
        /// even when a commit moved an entry that was already appended.
        #[test]
        fn appends_load_back_as_the_index(
            ops in proptest::collection::vec(
                prop_oneof![
                    6 => (1u64..10, 0u64..30).prop_map(Some),
                    1 => Just(None),
                ],
                0..40,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("time_index");
            let mut index = TimeIndex::new();
            let mut appended = Lsn::ZERO;
            let mut lsn = 0;
            let flush = |index: &TimeIndex, appended: &mut Lsn| {
                append_durably(&Io::std(), &path, &index.entries_after(*appended)).unwrap();
                *appended = index.last().map_or(Lsn::ZERO, |e| e.0);
            };
            for op in &ops {
                match *op {
                    Some((dl, t)) => {
                        lsn += dl;
                        index.record(Lsn(lsn), t);
                    }
                    None => flush(&index, &mut appended),
                }
            }
            flush(&index, &mut appended);
            prop_assert_eq!(load(&Io::std(), &path, Lsn::ZERO).unwrap(), index);
        }
    }

    #[test]
    fn lsn_at_answers_before_between_and_after() {
        let mut index = TimeIndex::new();
        assert_eq!(index.lsn_at(5), LsnAt::NoCommits);
        index.record(Lsn(0x10), 100);
        index.record(Lsn(0x20), 200);
        index.record(Lsn(0x30), 300);
        assert_eq!(
            index.lsn_at(99),
            LsnAt::Before {
                first_lsn: Lsn(0x10),
                first_time: 100
            }
        );
        assert_eq!(index.lsn_at(100), LsnAt::At(Lsn(0x10)));
        assert_eq!(index.lsn_at(299), LsnAt::At(Lsn(0x20)));
        let after = LsnAt::AtOrAfterLast {
            lsn: Lsn(0x30),
            last_time: 300,
        };
        assert_eq!(index.lsn_at(300), after);
        assert_eq!(index.lsn_at(u64::MAX), after);
    }

    #[test]
    fn same_time_slot_and_backwards_clock_move_the_last_entry() {
        let mut index = TimeIndex::from_entries(vec![(Lsn(10), 100)]);
        index.record(Lsn(20), 100); // same slot
        index.record(Lsn(30), 50); // clock went backwards
        index.record(Lsn(25), 500); // LSN not above the last: ignored
        assert_eq!(index.to_vec(), &[(Lsn(30), 100)]);
        assert_eq!(
            index.lsn_at(100),
            LsnAt::AtOrAfterLast {
                lsn: Lsn(30),
                last_time: 100
            }
        );
    }

    #[test]
    fn trim_keeps_the_newest_entry_at_or_below_the_cutoff() {
        let entries = vec![(Lsn(10), 1), (Lsn(20), 2), (Lsn(30), 3)];
        let mut index = TimeIndex::from_entries(entries.clone());
        index.trim_below(Lsn(5));
        assert_eq!(index.to_vec(), &entries[..]);
        index.trim_below(Lsn(25));
        assert_eq!(index.to_vec(), &entries[1..]);
        index.trim_below(Lsn(30));
        assert_eq!(index.to_vec(), &entries[2..]);
        index.trim_below(Lsn::MAX);
        assert_eq!(index.to_vec(), &entries[2..]);
    }

    #[test]
    fn persistence_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("time_index");
        assert_eq!(
            load(&Io::std(), &path, Lsn::ZERO).unwrap(),
            TimeIndex::new()
        );
        append_durably(&Io::std(), &path, &[]).unwrap();
        assert!(!path.exists(), "no entries, no file");

        let mut index = TimeIndex::new();
        for i in 1..=10u64 {
            index.record(Lsn(i * 0x10), 1_700_000_000_000_000 + i * 1000);
        }
        append_durably(&Io::std(), &path, &index.entries_after(Lsn::ZERO)).unwrap();
        assert_eq!(load(&Io::std(), &path, Lsn::ZERO).unwrap(), index);

        index.record(Lsn(0x200), 1_800_000_000_000_000);
        append_durably(&Io::std(), &path, &index.entries_after(Lsn(0xA0))).unwrap();
        assert_eq!(load(&Io::std(), &path, Lsn::ZERO).unwrap(), index);

        index.trim_below(Lsn(0x55));
        rewrite(&Io::std(), &path, &index).unwrap();
        assert_eq!(load(&Io::std(), &path, Lsn::ZERO).unwrap(), index);
        assert_eq!(index.time_of(Lsn(0x55)), Some(1_700_000_000_005_000));
        assert_eq!(index.time_of(Lsn(0x4F)), None);

        index.truncate_above(Lsn(0x80));
        rewrite(&Io::std(), &path, &index).unwrap();
        let loaded = load(&Io::std(), &path, Lsn::ZERO).unwrap();
        assert_eq!(loaded.last(), Some((Lsn(0x80), 1_700_000_000_008_000)));
        assert_eq!(loaded, index);
    }

    #[test]
    fn torn_tail_is_cut_and_the_prefix_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("time_index");
        let entries: Vec<_> = (1..=3u64).map(|i| (Lsn(i), i * 10)).collect();
        append_durably(&Io::std(), &path, &entries[..2]).unwrap();
        let two = std::fs::metadata(&path).unwrap().len();
        append_durably(&Io::std(), &path, &entries[2..]).unwrap();

        // A crash mid-append leaves part of the third record.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(two + 7).unwrap();
        drop(f);
        let loaded = load(&Io::std(), &path, Lsn::ZERO).unwrap();
        assert_eq!(loaded.to_vec(), &entries[..2]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), two);

        // Appending after the repair continues the log.
        append_durably(&Io::std(), &path, &[(Lsn(4), 40)]).unwrap();
        assert_eq!(
            load(&Io::std(), &path, Lsn::ZERO).unwrap().to_vec(),
            &[entries[0], entries[1], (Lsn(4), 40)]
        );
    }

    #[test]
    fn a_damaged_last_record_of_durable_entries_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("time_index");
        append_durably(&Io::std(), &path, &[(Lsn(1), 10)]).unwrap();
        append_durably(&Io::std(), &path, &[(Lsn(5), 50), (Lsn(6), 60)]).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01; // the last record's body checksum
        std::fs::write(&path, &bytes).unwrap();
        // Its entries are durable (the flush that appended them finished): damage.
        let err = load(&Io::std(), &path, Lsn(6)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(
            err.to_string().contains(&format!("LSN {}", Lsn(5))),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "left for inspection");
        // Above what is durable: a torn append, cut.
        let loaded = load(&Io::std(), &path, Lsn(4)).unwrap();
        assert_eq!(loaded.to_vec(), &[(Lsn(1), 10)]);
    }

    #[test]
    fn corruption_in_the_middle_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("time_index");
        append_durably(&Io::std(), &path, &[(Lsn(1), 10), (Lsn(2), 20)]).unwrap();
        append_durably(&Io::std(), &path, &[(Lsn(3), 30)]).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // In the first record's body.
        let at = TIME_INDEX_HEADER_LEN + 8 + 2;
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = load(&Io::std(), &path, Lsn::ZERO).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.to_string().contains("time_index"), "{err}");
        assert!(err.to_string().contains("offset"), "{err}");
        // The file is left as it was for inspection.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
