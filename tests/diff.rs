//! Diff, change feed and three-way merge, against a `BTreeMap` model: random histories on a
//! parent and branches with flushes, compactions, image layers and GC in between.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use common::model::{MVal, Rec, Versions, model_get};
use proptest::prelude::*;
use stratakv::{ErrorKind, Lsn, Resolution, SimpleRedo, Store, StoreOptions, Timeline, Value};

fn opts(dir: &std::path::Path) -> StoreOptions {
    StoreOptions::new(dir)
        .freeze_bytes(2 << 10)
        .block_size(512)
        .compaction_threshold(2)
        .background_period(None)
        .pitr_interval(None)
        .gc_horizon(Some(6))
        .wait_lsn_timeout(std::time::Duration::from_millis(50))
        .redo(Arc::new(SimpleRedo))
}

fn key(i: u8) -> Vec<u8> {
    format!("k{i:02}").into_bytes()
}

/// One timeline of the model: what it reads (its ancestors' versions up to the branch point,
/// then its own) and what it wrote itself.
#[derive(Clone)]
struct ModelTl {
    tl: Timeline,
    visible: Versions,
    own: Versions,
    parent: Option<(usize, u64)>,
}

/// A step of a random history.
#[derive(Clone, Debug)]
enum Op {
    /// Writes on timeline `tl % n`: `(key, kind, byte)` each.
    Write(usize, Vec<(u8, u8, u8)>),
    Flush(usize),
    Compact(usize),
    Image(usize),
    Gc(usize),
    /// A branch off timeline `tl % n` at a point `p` of 256 between its cutoff and head.
    Branch(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<usize>(), proptest::collection::vec((0u8..12, 0u8..10, any::<u8>()), 1..6))
            .prop_map(|(t, w)| Op::Write(t, w)),
        1 => any::<usize>().prop_map(Op::Flush),
        1 => any::<usize>().prop_map(Op::Compact),
        1 => any::<usize>().prop_map(Op::Image),
        1 => any::<usize>().prop_map(Op::Gc),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(t, p)| Op::Branch(t, p)),
    ]
}

/// The value a model read gives, `None` for a redo error (never written by these tests).
fn mget(v: &Versions, k: &[u8], lsn: u64) -> Option<Vec<u8>> {
    model_get(v, k, lsn).expect("the tests write no junk")
}

/// A version of kind `kind` (0..10) for `k` on top of what `visible` holds at `lsn - 1`.
fn version(visible: &Versions, k: &[u8], lsn: u64, kind: u8, byte: u8) -> MVal {
    let cur = mget(visible, k, lsn - 1);
    match kind {
        0..=2 => MVal::Image(vec![byte; 1 + usize::from(byte % 5)]),
        3 | 4 if cur.is_some() => MVal::Delta(Rec::Append(vec![byte]), false),
        5 if cur.is_some() => MVal::Delta(Rec::Patch(0, vec![byte]), false),
        6 => MVal::Delta(Rec::Set(vec![byte, byte]), true),
        // The value it has: a write that changes nothing a read sees.
        7 if cur.is_some() => MVal::Image(cur.unwrap()),
        8 => MVal::Tombstone,
        _ => MVal::Image(vec![byte]),
    }
}

/// The store and the model after running `ops`, with the next free LSN.
struct World {
    store: Store,
    tls: Vec<ModelTl>,
    next_lsn: u64,
    _dir: tempfile::TempDir,
}

async fn run(ops: &[Op]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(opts(dir.path())).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let mut tls = vec![ModelTl {
        tl: main,
        visible: Versions::new(),
        own: Versions::new(),
        parent: None,
    }];
    let mut lsn = 1u64;
    for op in ops {
        match op {
            Op::Write(t, writes) => {
                let i = t % tls.len();
                lsn += 1;
                let m = &mut tls[i];
                let mut w = m.tl.writer().unwrap();
                let mut done = std::collections::BTreeSet::new();
                for (k, kind, byte) in writes {
                    let k = key(*k);
                    if !done.insert(k.clone()) {
                        continue;
                    }
                    let v = version(&m.visible, &k, lsn, *kind, *byte);
                    w.put(&k, Lsn(lsn), v.to_value()).unwrap();
                    m.visible.insert((k.clone(), lsn), v.clone());
                    m.own.insert((k, lsn), v);
                }
                w.finish_write(Lsn(lsn)).unwrap();
            }
            Op::Flush(t) => {
                tls[t % tls.len()].tl.flush().await.unwrap();
            }
            Op::Compact(t) => {
                tls[t % tls.len()].tl.compact().await.unwrap();
            }
            Op::Image(t) => {
                let tl = &tls[t % tls.len()].tl;
                if tl.flush().await.unwrap() > Lsn::ZERO {
                    tl.create_image_layer().await.unwrap();
                }
            }
            Op::Gc(t) => {
                // Retention of `gc_horizon` LSNs: GC moves the cutoff up to there.
                tls[t % tls.len()].tl.gc().await.unwrap();
            }
            Op::Branch(t, p) => {
                if tls.len() >= 5 {
                    continue;
                }
                let i = t % tls.len();
                let m = tls[i].clone();
                let lo = m.tl.gc_cutoff().0.max(m.parent.map_or(0, |(_, bp)| bp));
                let hi = m.tl.last_record_lsn().0;
                let at = lo + (hi - lo) * u64::from(*p) / 255;
                let name = format!("b{}", tls.len());
                let Some(b) =
                    unless_collected(store.branch(&name, &m.tl, Lsn(at)).await, &m.tl, at)
                else {
                    continue;
                };
                let visible = m
                    .visible
                    .iter()
                    .filter(|((_, l), _)| *l <= at)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                tls.push(ModelTl {
                    tl: b,
                    visible,
                    own: Versions::new(),
                    parent: Some((i, at)),
                });
            }
        }
    }
    World {
        store,
        tls,
        next_lsn: lsn + 1,
        _dir: dir,
    }
}

/// Background GC (every flush kicks a pass, here with a horizon of 6 LSNs) may move a
/// timeline's cutoff past an LSN the test picked from the cutoff it read a moment earlier. Such
/// a refusal is accepted, and that check skipped, only when the cutoff now really is above the
/// LSN; any other error fails the test.
fn unless_collected<T>(r: stratakv::Result<T>, tl: &Timeline, lsn: u64) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e)
            if lsn < tl.gc_cutoff().0
                && matches!(
                    e.kind(),
                    ErrorKind::BelowGcCutoff | ErrorKind::InvalidArgument
                ) =>
        {
            None
        }
        Err(e) => panic!("timeline {} at LSN {lsn}: {e}", tl.name()),
    }
}

/// The lowest LSN a diff may read on a model timeline.
fn lowest(m: &ModelTl) -> u64 {
    m.tl.gc_cutoff().0.max(m.parent.map_or(0, |(_, bp)| bp))
}

fn pick(m: &ModelTl, p: u8) -> u64 {
    let (lo, hi) = (lowest(m), m.tl.last_record_lsn().0);
    lo + (hi - lo) * u64::from(p) / 255
}

/// A diff entry as the tests compare it: key, old value, new value.
type DiffRow = (Bytes, Option<Bytes>, Option<Bytes>);

fn bytes(v: Option<Vec<u8>>) -> Option<Bytes> {
    v.map(Bytes::from)
}

/// Every key in `keys` whose model values differ, as diff entries.
fn model_diff(
    a: &ModelTl,
    la: u64,
    b: &ModelTl,
    lb: u64,
    keys: &[Vec<u8>],
) -> Vec<(Bytes, Option<Bytes>, Option<Bytes>)> {
    keys.iter()
        .filter_map(|k| {
            let (x, y) = (mget(&a.visible, k, la), mget(&b.visible, k, lb));
            (x != y).then(|| (Bytes::from(k.clone()), bytes(x), bytes(y)))
        })
        .collect()
}

/// The diff of `a` at `la` against `b` at `lb` over `bounds`: its candidate count and its
/// entries (keys only, values `None`, when `keys_only`).
async fn diff_rows(
    a: &Timeline,
    la: u64,
    b: &Timeline,
    lb: u64,
    bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    keys_only: bool,
) -> stratakv::Result<(usize, Vec<DiffRow>)> {
    let mut diff = a.diff(Lsn(la), b, Lsn(lb), bounds).await?;
    let candidates = diff.candidates();
    let mut got = Vec::new();
    if keys_only {
        while let Some(k) = diff.next_key().await? {
            got.push((k, None, None));
        }
    } else {
        while let Some(e) = diff.next().await? {
            got.push((e.key, e.old, e.new));
        }
    }
    Ok((candidates, got))
}

proptest! {
    // STRATAKV_DIFF_CASES sets the number of random histories per test (24 by default).
    #![proptest_config(ProptestConfig {
        cases: common::env::env_u64("STRATAKV_DIFF_CASES").map_or(24, |c| c as u32),
        ..ProptestConfig::default()
    })]

    /// Diff of random pairs of points (one timeline, branch and parent, siblings) equals the
    /// model's, in both modes, over the whole key space and a sub-range.
    #[test]
    fn diff_matches_the_model(
        ops in proptest::collection::vec(op(), 1..40),
        pairs in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<usize>(), any::<u8>(), 0u8..13, 0u8..13), 1..8),
    ) {
        let rt = common::fixture::rt();
        rt.block_on(async {
            let w = run(&ops).await;
            for (ta, pa, tb, pb, k1, k2) in pairs {
                let (a, b) = (&w.tls[ta % w.tls.len()], &w.tls[tb % w.tls.len()]);
                let (la, lb) = (pick(a, pa), pick(b, pb));
                let (k1, k2) = (k1.min(k2), k1.max(k2));
                let all: Vec<Vec<u8>> = (0..12).map(key).collect();
                let sub: Vec<Vec<u8>> = (k1..k2).map(key).collect();
                for (range, keys) in [((None, None), &all), ((Some(key(k1)), Some(key(k2))), &sub)] {
                    let want = model_diff(a, la, b, lb, keys);
                    let bounds = match &range {
                        (Some(lo), Some(hi)) => (Bound::Included(lo.clone()), Bound::Excluded(hi.clone())),
                        _ => (Bound::Unbounded, Bound::Unbounded),
                    };
                    // Background GC may pass `la` or `lb` meanwhile; any other error fails.
                    let collected = || la < a.tl.gc_cutoff().0 || lb < b.tl.gc_cutoff().0;
                    let (candidates, got) = match diff_rows(&a.tl, la, &b.tl, lb, bounds.clone(), false).await {
                        Ok(r) => r,
                        Err(e) if e.kind() == ErrorKind::BelowGcCutoff && collected() => continue,
                        Err(e) => panic!("diff {}@{la} -> {}@{lb}: {e}", a.tl.name(), b.tl.name()),
                    };
                    prop_assert!(candidates >= want.len());
                    prop_assert_eq!(&got, &want, "diff {}@{} -> {}@{}", a.tl.name(), la, b.tl.name(), lb);
                    let got_keys = match diff_rows(&a.tl, la, &b.tl, lb, bounds, true).await {
                        Ok((_, got)) => got.into_iter().map(|e| e.0).collect::<Vec<_>>(),
                        Err(e) if e.kind() == ErrorKind::BelowGcCutoff && collected() => continue,
                        Err(e) => panic!("keys-only diff {}@{la} -> {}@{lb}: {e}", a.tl.name(), b.tl.name()),
                    };
                    let want_keys: Vec<Bytes> = want.iter().map(|e| e.0.clone()).collect();
                    prop_assert_eq!(got_keys, want_keys);
                }
            }
            w.store.close().await.unwrap();
            Ok(())
        })?;
    }

    /// Merging a random branch into its parent (or a sibling) equals the model's three-way
    /// merge, conflicts included; an aborted merge changes nothing.
    #[test]
    fn merge_matches_the_model(
        ops in proptest::collection::vec(op(), 1..40),
        pick_tl in any::<usize>(),
        target_pick in any::<usize>(),
        resolve_seed in any::<u8>(),
        abort in any::<bool>(),
    ) {
        let rt = common::fixture::rt();
        rt.block_on(async {
            let mut w = run(&ops).await;
            if w.tls.len() < 2 {
                return Ok(());
            }
            let s = 1 + pick_tl % (w.tls.len() - 1);
            let t = if target_pick % 2 == 0 { w.tls[s].parent.unwrap().0 } else { target_pick % w.tls.len() };
            if t == s {
                return Ok(());
            }
            let (src, dst) = (w.tls[s].clone(), w.tls[t].clone());
            let (sl, tlsn) = (src.tl.last_record_lsn().0, dst.tl.last_record_lsn().0);
            let at = w.next_lsn;
            // The common point, from the model's ancestry.
            let chain = |mut i: usize, mut lim: u64| {
                let mut out = vec![(i, lim)];
                while let Some((p, bp)) = w.tls[i].parent {
                    lim = lim.min(bp);
                    i = p;
                    out.push((i, lim));
                }
                out
            };
            let (cs, ct) = (chain(s, sl), chain(t, tlsn));
            let (l, ps, pt) = cs.iter().find_map(|(i, ls)| ct.iter().find(|(j, _)| j == i).map(|(_, lt)| (*i, *ls, *lt))).unwrap();
            let c = ps.min(pt);
            let base_v = &w.tls[l].visible;
            let mut want_writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            let mut want_conflicts = Vec::new();
            let mut aborted = None;
            let decide = |k: &[u8]| -> u8 { (k[2].wrapping_add(resolve_seed)) % 4 };
            for k in (0..12).map(key) {
                let (base, ours, theirs) = (mget(base_v, &k, c), mget(&dst.visible, &k, tlsn), mget(&src.visible, &k, sl));
                if ours == theirs { continue; }
                if ours == base { want_writes.insert(k, theirs); continue; }
                if theirs == base { continue; }
                want_conflicts.push((k.clone(), base, ours.clone(), theirs.clone()));
                match decide(&k) {
                    0 => {}
                    1 => { want_writes.insert(k, theirs); }
                    2 => { want_writes.insert(k.clone(), Some(k.clone())); }
                    _ if abort => { aborted = Some(k); break; }
                    _ => { want_writes.insert(k, None); }
                }
            }
            let mut writer = dst.tl.writer().unwrap();
            let report = writer.merge_from(&src.tl, Lsn(sl), Lsn(at), |c| match decide(&c.key) {
                0 => Resolution::KeepOurs,
                1 => Resolution::TakeTheirs,
                2 => Resolution::Merged(Some(c.key.clone())),
                _ if abort => Resolution::Abort,
                _ => Resolution::Merged(None),
            }).await.unwrap();
            drop(writer);
            let got_conflicts: Vec<_> = report.conflicts.iter().map(|(c, _)| (
                c.key.to_vec(), c.base.as_ref().map(|b| b.to_vec()), c.ours.as_ref().map(|b| b.to_vec()), c.theirs.as_ref().map(|b| b.to_vec()),
            )).collect();
            prop_assert_eq!(got_conflicts, want_conflicts);
            prop_assert_eq!(report.aborted.as_ref().map(|k| k.to_vec()), aborted.clone());
            if aborted.is_some() || want_writes.is_empty() {
                prop_assert_eq!(report.written, 0);
                prop_assert_eq!(dst.tl.last_record_lsn().0, tlsn, "an aborted or empty merge commits nothing");
            } else {
                prop_assert_eq!(report.written, want_writes.len());
                prop_assert_eq!(dst.tl.last_record_lsn().0, at);
                let m = &mut w.tls[t];
                for (k, v) in &want_writes {
                    let mv = v.clone().map_or(MVal::Tombstone, MVal::Image);
                    m.visible.insert((k.clone(), at), mv.clone());
                    m.own.insert((k.clone(), at), mv);
                }
            }
            // Every read of the target, before and at the merge LSN, is the model's.
            let m = &w.tls[t];
            for k in (0..12).map(key) {
                for lsn in [tlsn, dst.tl.last_record_lsn().0] {
                    let Some(got) = unless_collected(m.tl.get(&k, Lsn(lsn)).await, &m.tl, lsn) else {
                        continue;
                    };
                    prop_assert_eq!(got, bytes(mget(&m.visible, &k, lsn)), "key {:?} at {}", k, lsn);
                }
            }
            w.store.close().await.unwrap();
            Ok(())
        })?;
    }

    /// A feed from a random LSN yields exactly the timeline's own writes from there, in LSN
    /// order; from the start, replayed into an empty timeline, it rebuilds every read.
    #[test]
    fn feed_matches_the_model_and_replays(
        ops in proptest::collection::vec(op(), 1..40),
        tl_pick in any::<usize>(),
        from_pick in any::<u8>(),
    ) {
        let rt = common::fixture::rt();
        rt.block_on(async {
            let w = run(&ops).await;
            let m = &w.tls[tl_pick % w.tls.len()];
            let (lo, hi) = (lowest(m) + 1, m.tl.last_record_lsn().0 + 1);
            let from = lo + (hi - lo) * u64::from(from_pick) / 255;
            if lo > 1 {
                let e = m.tl.subscribe(Lsn(lo - 1)).unwrap_err();
                prop_assert_eq!(e.kind(), ErrorKind::BelowGcCutoff);
                prop_assert!(e.to_string().contains(&Lsn(lo).to_string()), "{}", e);
            }
            let mut want: Vec<(u64, Vec<u8>, MVal)> = m.own.iter()
                .filter(|((_, l), _)| *l >= from)
                .map(|((k, l), v)| (*l, k.clone(), v.clone()))
                .collect();
            want.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            // Background GC may pass `from` before or while the feed reads history: then the
            // feed must say so (BelowGcCutoff), and only when the cutoff really passed it.
            let read_feed = || -> stratakv::Result<Vec<stratakv::ChangeRecord>> {
                let mut feed = m.tl.subscribe(Lsn(from))?;
                let mut got = Vec::new();
                while let Some(r) = feed.try_next()? {
                    got.push(r);
                }
                Ok(got)
            };
            let got = match read_feed() {
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::BelowGcCutoff && from <= m.tl.gc_cutoff().0 => {
                    w.store.close().await.unwrap();
                    return Ok(());
                }
                Err(e) => panic!("feed of {} from {from}: {e}", m.tl.name()),
            };
            let got_cmp: Vec<(u64, Vec<u8>, Value)> = got.iter().map(|r| (r.lsn.0, r.key.to_vec(), r.value.clone())).collect();
            let want_cmp: Vec<(u64, Vec<u8>, Value)> = want.iter().map(|(l, k, v)| (*l, k.clone(), v.to_value())).collect();
            prop_assert_eq!(got_cmp, want_cmp);
            if m.parent.is_none() && from == 1 {
                // Replay into an empty timeline: every read at every LSN is the same.
                let replica = w.store.create_timeline("replica").await.unwrap();
                let mut rw = replica.writer().unwrap();
                let mut last = None;
                for r in &got {
                    if last.is_some_and(|l| l != r.lsn) {
                        rw.finish_write(last.unwrap()).unwrap();
                    }
                    rw.put(&r.key, r.lsn, r.value.clone()).unwrap();
                    last = Some(r.lsn);
                }
                if let Some(l) = last {
                    rw.finish_write(l).unwrap();
                }
                for lsn in 1..=replica.last_record_lsn().0 {
                    for k in (0..12).map(key) {
                        let theirs = unless_collected(m.tl.get(&k, Lsn(lsn)).await, &m.tl, lsn);
                        let ours = unless_collected(replica.get(&k, Lsn(lsn)).await, &replica, lsn);
                        if let (Some(ours), Some(theirs)) = (ours, theirs) {
                            prop_assert_eq!(ours, theirs, "key {:?} at {}", k, lsn);
                        }
                    }
                }
            }
            w.store.close().await.unwrap();
            Ok(())
        })?;
    }
}

/// Bad input to diff, merge and subscribe is a clear error naming the timeline and LSN, and a
/// refused merge writes nothing.
#[tokio::test]
async fn bad_input_is_a_clear_error_that_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(opts(dir.path())).await.unwrap();
    let main = store.create_timeline("main").await.unwrap();
    let other = store.create_timeline("other").await.unwrap();
    let mut w = main.writer().unwrap();
    w.put(b"k", Lsn(10), Value::image("a")).unwrap();
    w.finish_write(Lsn(10)).unwrap();
    let dev = store.branch("dev", &main, Lsn(10)).await.unwrap();
    let e = main
        .diff::<&[u8]>(Lsn(11), &main, Lsn(10), ..)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LsnNotYetAvailable, "{e}");
    assert!(
        e.to_string().contains("main") && e.to_string().contains("0/B"),
        "{e}"
    );
    let e = main
        .diff::<&[u8]>(Lsn(10), &other, Lsn(0), ..)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("share no ancestor"), "{e}");
    let e = dev
        .diff::<&[u8]>(Lsn(5), &main, Lsn(10), ..)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BelowBranchPoint, "{e}");
    // Merge: an LSN not above the target's head, pending puts, itself.
    let mut d = dev.writer().unwrap();
    d.put(b"k", Lsn(20), Value::image("b")).unwrap();
    d.finish_write(Lsn(20)).unwrap();
    let take = |_: &stratakv::MergeConflict| Resolution::TakeTheirs;
    let e = w
        .merge_from(&dev, Lsn(20), Lsn(10), take)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("0/A"), "{e}");
    w.put(b"p", Lsn(30), Value::image("x")).unwrap();
    let e = w
        .merge_from(&dev, Lsn(20), Lsn(40), take)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not yet published"), "{e}");
    w.finish_write(Lsn(30)).unwrap();
    let e = d
        .merge_from(&dev, Lsn(20), Lsn(40), take)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("into itself"), "{e}");
    assert_eq!(main.last_record_lsn(), Lsn(30));
    assert_eq!(main.get(b"k", Lsn(30)).await.unwrap().unwrap(), "a");
    let r = w.merge_from(&dev, Lsn(20), Lsn(40), take).await.unwrap();
    assert_eq!(r.written, 1);
    assert_eq!(main.get(b"k", Lsn(40)).await.unwrap().unwrap(), "b");
    let e = main.subscribe(Lsn(0)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = dev.subscribe(Lsn(10)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BelowGcCutoff, "{e}");
    assert!(
        e.to_string().contains("0/B"),
        "names the oldest LSN available: {e}"
    );
    store.close().await.unwrap();
}

/// A feed followed on its own thread while a writer commits and flushes on another sees
/// every write once, in LSN order. (History is kept: a feed holds back no GC, and with the
/// 6-LSN horizon of the other tests a feed thread that falls behind on a loaded machine meets
/// the cutoff, as CI saw.)
#[test]
fn live_feed_follows_a_concurrent_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_blocking(opts(dir.path()).gc_horizon(None)).unwrap();
    let main = futures::executor::block_on(store.create_timeline("main")).unwrap();
    let mut feed = main.subscribe(Lsn(1)).unwrap();
    let n = 3000u64;
    let tl = main.clone();
    let writer = std::thread::spawn(move || {
        let mut w = tl.writer().unwrap();
        for i in 1..=n {
            for k in 0..(i % 3 + 1) {
                w.put(
                    &key(k as u8),
                    Lsn(i),
                    Value::image(i.to_be_bytes().to_vec()),
                )
                .unwrap();
            }
            w.finish_write(Lsn(i)).unwrap();
            if i % 500 == 0 {
                futures::executor::block_on(tl.flush()).unwrap();
            }
        }
    });
    let mut want = Vec::new();
    for i in 1..=n {
        for k in 0..(i % 3 + 1) {
            want.push((Lsn(i), key(k as u8)));
        }
    }
    let mut got = Vec::new();
    while got.len() < want.len() {
        let r = feed.next_blocking().unwrap();
        assert_eq!(r.value, Value::image(r.lsn.0.to_be_bytes().to_vec()));
        got.push((r.lsn, r.key.to_vec()));
    }
    writer.join().unwrap();
    assert_eq!(got, want);
    assert!(feed.try_next().unwrap().is_none());
    futures::executor::block_on(store.close()).unwrap();
}
