//! The `diff` target: the input is a history on up to three timelines (writes, flushes,
//! compactions, image layers, GC, branches), then pairs of points to diff and a merge. The
//! oracle is the store's own `get`, which the `ops` target and the model tests check: a diff
//! must report exactly the keys whose `get` differs, with those values, and a merge must leave
//! the target reading what the three-way rule says.
//!
//! Each operation is a byte (`op % 7`) and its arguments, bytes read as needed:
//!
//! | op | does |
//! |----|------|
//! | 0–1 | write three keys (image / append delta / tombstone by the argument) on a timeline |
//! | 2 | flush |
//! | 3 | compact |
//! | 4 | image layer |
//! | 5 | GC (retention: 4 LSNs) |
//! | 6 | branch a timeline at an LSN between its cutoff and head |

use std::sync::Arc;

use stratakv::{Lsn, Resolution, SimpleRedo, Store, StoreOptions, Timeline, Value};

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

async fn run(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        StoreOptions::new(dir.path())
            .freeze_bytes(1 << 10)
            .block_size(256)
            .background_period(None)
            .pitr_interval(None)
            .gc_horizon(Some(4))
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
                lsn += 1;
                let mut w = tl.writer().unwrap();
                for i in 0..3u8 {
                    let k = key(arg.wrapping_add(i * 7) >> 2);
                    let exists = tl.get(&k, Lsn(lsn - 1)).await.unwrap().is_some();
                    let v = match (arg.wrapping_add(i)) % 4 {
                        0 | 1 => Value::image(vec![arg, i]),
                        2 if exists => Value::delta(SimpleRedo::append(&[i])),
                        _ => Value::Tombstone,
                    };
                    w.put(&k, Lsn(lsn), v).unwrap();
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
                    let lo = tl.gc_cutoff().max(bp).0;
                    let hi = tl.last_record_lsn().0;
                    let at = Lsn(lo + (hi - lo) * u64::from(arg) / 255);
                    let name = format!("b{}", tls.len());
                    let b = store.branch(&name, &tl, at).await.unwrap();
                    tls.push((b, at));
                }
            }
        }
    }
    // Diffs of pairs of points, checked against `get`.
    let pick = |(tl, bp): &(Timeline, Lsn), b: u8| {
        let lo = tl.gc_cutoff().max(*bp).0;
        let hi = tl.last_record_lsn().0;
        Lsn(lo + (hi - lo) * u64::from(b) / 255)
    };
    while let (Some(a), Some(b)) = (bytes.next(), bytes.next()) {
        let (sa, sb) = (
            &tls[usize::from(a) % tls.len()],
            &tls[usize::from(b) % tls.len()],
        );
        let (la, lb) = (pick(sa, b), pick(sb, a));
        let mut d = sa.0.diff::<&[u8]>(la, &sb.0, lb, ..).await.unwrap();
        let mut got = Vec::new();
        while let Some(e) = d.next().await.unwrap() {
            got.push((e.key.to_vec(), e.old, e.new));
        }
        let mut want = Vec::new();
        for k in (0..KEYS).map(key) {
            let (x, y) = (
                sa.0.get(&k, la).await.unwrap(),
                sb.0.get(&k, lb).await.unwrap(),
            );
            if x != y {
                want.push((k, x, y));
            }
        }
        assert_eq!(
            got,
            want,
            "diff {}@{la} -> {}@{lb}",
            sa.0.name(),
            sb.0.name()
        );
    }
    // A branch merged into its parent, taking theirs on conflicts.
    if let Some((src, bp)) = tls.get(1).cloned() {
        let dst = &tls[0].0;
        // The base is read where GC still keeps it readable by `get`.
        let base_tl = if dst.gc_cutoff() <= bp {
            dst.clone()
        } else if src.gc_cutoff() <= bp {
            src.clone()
        } else {
            store.close().await.unwrap();
            return;
        };
        let (ours, theirs) = (dst.last_record_lsn(), src.last_record_lsn());
        let at = Lsn(lsn + 1);
        let mut w = dst.writer().unwrap();
        let report = w
            .merge_from(&src, theirs, at, |_| Resolution::TakeTheirs)
            .await
            .unwrap();
        let merged = dst.last_record_lsn();
        assert!(merged == at || (report.written == 0 && merged == ours));
        for k in (0..KEYS).map(key) {
            let base = base_tl.get(&k, bp).await.unwrap();
            let o = dst.get(&k, ours).await.unwrap();
            let t = src.get(&k, theirs).await.unwrap();
            let now = dst.get(&k, merged).await.unwrap();
            let want = if o == base || (t != base && o != t) {
                t
            } else {
                o
            };
            assert_eq!(now, want, "merge of key {k:?}");
        }
    }
    store.close().await.unwrap();
}
