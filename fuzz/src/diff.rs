//! The `diff` target: the input is a history on up to three timelines (writes, flushes,
//! compactions, image layers, GC, branches), then pairs of points to diff and a merge. The
//! oracle is the store's own `get`, which the `ops` target and the model tests check: a diff
//! must report exactly the keys whose `get` differs, with those values, and a merge must leave
//! the target reading what the three-way rule says.
//!
//! Each operation is two bytes, `op % 8` and an argument:
//!
//! | op | does |
//! |----|------|
//! | 0–1 | write up to three distinct keys (image / append delta / tombstone by the argument) on a timeline |
//! | 2 | flush |
//! | 3 | compact |
//! | 4 | image layer |
//! | 5 | GC (retention: 4 LSNs) |
//! | 6–7 | branch a timeline at an LSN between its cutoff and head |
//!
//! Every flush kicks a background pass of compaction and GC on every timeline, so a cutoff can
//! move between the moment the harness reads it and the call that uses it. A refusal for that
//! reason (`BelowGcCutoff`, or `InvalidArgument` for a branch point) is accepted only when the
//! cutoff really is above the LSN by then; any other error is a finding.

use std::sync::Arc;

use stratakv::{ErrorKind, Lsn, Resolution, SimpleRedo, Store, StoreOptions, Timeline, Value};

const KEYS: u8 = 6;

fn key(k: u8) -> Vec<u8> {
    vec![b'k', k % KEYS]
}

/// Runs one input; panics on a finding.
pub fn diff(data: &[u8]) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(run(data));
    true
}

/// `r`'s value; `None` when it failed because background GC passed `lsn` on `tl`; panics on
/// any other error.
fn unless_collected<T>(r: stratakv::Result<T>, tl: &Timeline, lsn: Lsn, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e)
            if lsn < tl.gc_cutoff()
                && matches!(
                    e.kind(),
                    ErrorKind::BelowGcCutoff | ErrorKind::InvalidArgument
                ) =>
        {
            None
        }
        Err(e) => panic!("{what} of {} at {lsn}: {e}", tl.name()),
    }
}

/// An LSN between the lowest `tl` still reads (cutoff or branch point) and its head.
fn pick(tl: &Timeline, bp: Lsn, b: u8) -> Lsn {
    let lo = tl.gc_cutoff().max(bp).0;
    let hi = tl.last_record_lsn().0.max(lo);
    Lsn(lo + (hi - lo) * u64::from(b) / 255)
}

async fn run(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        StoreOptions::new(dir.path())
            .freeze_bytes(1 << 10)
            .block_size(512)
            .background_period(None)
            .pitr_interval(None)
            .gc_horizon(Some(4))
            .wait_lsn_timeout(std::time::Duration::from_millis(10))
            .redo(Arc::new(SimpleRedo)),
    )
    .await
    .unwrap();
    let mut tls: Vec<(Timeline, Lsn)> =
        vec![(store.create_timeline("main").await.unwrap(), Lsn::ZERO)];
    let mut lsn = 1u64;
    let mut bytes = data.iter().copied();
    let mut ops = 0;
    while let (Some(op), Some(arg)) = (bytes.next(), bytes.next()) {
        ops += 1;
        if ops > 64 {
            break;
        }
        let (tl, bp) = tls[usize::from(arg) % tls.len()].clone();
        match op % 8 {
            0 | 1 => {
                // The head of this timeline: the LSN just below the new one is another
                // timeline's when that one wrote last, and would not be published here.
                let head = tl.last_record_lsn();
                lsn += 1;
                let mut w = tl.writer().unwrap();
                let mut written = Vec::new();
                for i in 0..3u8 {
                    let k = key(arg.wrapping_add(i * 7) >> 2);
                    if written.contains(&k) {
                        continue;
                    }
                    let exists = tl.get(&k, head).await.unwrap().is_some();
                    let v = match (arg.wrapping_add(i)) % 4 {
                        0 | 1 => Value::image(vec![arg, i]),
                        2 if exists => Value::delta(SimpleRedo::append(&[i])),
                        _ => Value::Tombstone,
                    };
                    w.put(&k, Lsn(lsn), v).unwrap();
                    written.push(k);
                }
                w.finish_write(Lsn(lsn)).unwrap();
            }
            2 => drop(tl.flush().await.unwrap()),
            3 => drop(tl.compact().await.unwrap()),
            4 => {
                if tl.flush().await.unwrap() > Lsn::ZERO {
                    tl.create_image_layer().await.unwrap();
                }
            }
            5 => drop(tl.gc().await.unwrap()),
            _ => {
                if tls.len() < 3 {
                    let at = pick(&tl, bp, arg);
                    let name = format!("b{}", tls.len());
                    if let Some(b) =
                        unless_collected(store.branch(&name, &tl, at).await, &tl, at, "branch")
                    {
                        tls.push((b, at));
                    }
                }
            }
        }
    }
    // Diffs of pairs of points, checked against `get`.
    while let (Some(a), Some(b)) = (bytes.next(), bytes.next()) {
        let (sa, sb) = (
            &tls[usize::from(a) % tls.len()],
            &tls[usize::from(b) % tls.len()],
        );
        let (la, lb) = (pick(&sa.0, sa.1, b), pick(&sb.0, sb.1, a));
        let diffed: stratakv::Result<Vec<_>> = async {
            let mut d = sa.0.diff::<&[u8]>(la, &sb.0, lb, ..).await?;
            let mut got = Vec::new();
            while let Some(e) = d.next().await? {
                got.push((e.key.to_vec(), e.old, e.new));
            }
            Ok(got)
        }
        .await;
        let got = match diffed {
            Ok(got) => got,
            Err(e)
                if e.kind() == ErrorKind::BelowGcCutoff
                    && (la < sa.0.gc_cutoff() || lb < sb.0.gc_cutoff()) =>
            {
                continue;
            }
            Err(e) => panic!("diff {}@{la} -> {}@{lb}: {e}", sa.0.name(), sb.0.name()),
        };
        let mut want = Vec::new();
        let mut gone = false;
        for k in (0..KEYS).map(key) {
            let x = unless_collected(sa.0.get(&k, la).await, &sa.0, la, "get");
            let y = unless_collected(sb.0.get(&k, lb).await, &sb.0, lb, "get");
            let (Some(x), Some(y)) = (x, y) else {
                gone = true;
                break;
            };
            if x != y {
                want.push((k, x, y));
            }
        }
        if !gone {
            assert_eq!(
                got,
                want,
                "diff {}@{la} -> {}@{lb}",
                sa.0.name(),
                sb.0.name()
            );
        }
    }
    // A branch merged into its parent, taking theirs on conflicts.
    if let Some((src, bp)) = tls.get(1).cloned() {
        let dst = &tls[0].0;
        // The base: the branch at its branch point (the parent's history there), or the
        // parent itself when GC passed that point on the branch.
        let (ours, theirs) = (dst.last_record_lsn(), src.last_record_lsn());
        let mut expect = Vec::new();
        for k in (0..KEYS).map(key) {
            let base = match unless_collected(src.get(&k, bp).await, &src, bp, "get") {
                Some(v) => Some(v),
                None => unless_collected(dst.get(&k, bp).await, dst, bp, "get"),
            };
            let Some(base) = base else {
                store.close().await.unwrap();
                return;
            };
            let o = unless_collected(dst.get(&k, ours).await, dst, ours, "get");
            let t = unless_collected(src.get(&k, theirs).await, &src, theirs, "get");
            let (Some(o), Some(t)) = (o, t) else {
                store.close().await.unwrap();
                return;
            };
            let want = if o == base || (t != base && o != t) {
                t
            } else {
                o
            };
            expect.push((k, want));
        }
        let at = Lsn(lsn + 1);
        let mut w = dst.writer().unwrap();
        let report = w
            .merge_from(&src, theirs, at, |_| Resolution::TakeTheirs)
            .await
            .unwrap();
        let merged = dst.last_record_lsn();
        assert!(merged == at || (report.written == 0 && merged == ours));
        for (k, want) in expect {
            let now = dst.get(&k, merged).await.unwrap();
            assert_eq!(now, want, "merge of key {k:?}");
        }
    }
    store.close().await.unwrap();
}

/// Starting inputs: a history with every op on two timelines, then diff pairs.
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    vec![
        vec![
            0, 1, 1, 9, 0, 17, 2, 0, 0, 33, 6, 200, 0, 1, 1, 2, 3, 0, 4, 1, 0, 41, 5, 0, 1, 77, 0,
            3, 6, 100, 0, 2, 2, 0, 0, 1, 1, 2,
        ],
        (0..=255u8).collect(),
    ]
}
