//! Image layers: every live key's value at one LSN, written in one streaming pass.
//!
//! An image at `lsn` is the newest image layer at or below `lsn` (the floor) brought forward by
//! the delta layers above it: a k-way merge of those files in `(key, lsn)` order, which keeps
//! for each key only the versions since its newest base (an image, a tombstone or a `will_init`
//! delta) and rebuilds the value from them. Each block is read once. A key the floor image does
//! not hold and no delta above it writes does not exist, as for a read.
//!
//! When the merge would not see every version (the timeline reads through an ancestor, an
//! in-memory layer holds versions at or below `lsn`, or an image layer covers only part of the
//! key space), the image is built by listing the keys and reading each one, as `get` would.

use std::ops::Bound;
use std::sync::Arc;

use super::TimelineInner;
use super::compaction::Merge;
use super::read::Local;
use crate::error::Result;
use crate::format::{LayerDesc, LayerKind};
use crate::layer::{Layer, LayerFile, LayerWriter, Versions};
use crate::lsn::Lsn;
use crate::value::{KeyRange, Value};

/// The layer files an image at some LSN merges, or why it cannot merge.
enum Inputs {
    /// The newest image layers at or below the LSN (all at `floor`) and the delta layers that
    /// hold versions above `floor`, none above the LSN.
    Files {
        floor: Option<Lsn>,
        files: Vec<Arc<LayerFile>>,
    },
    /// A layer the merge needs is not on local disk.
    Missing(Arc<Layer>),
    /// Versions at or below the LSN live outside this timeline's layer files.
    NotMergeable,
}

impl TimelineInner {
    /// Writes (does not publish) an image layer of every key's value at `lsn`, as a read at
    /// `lsn` sees it.
    pub(crate) fn write_image(&self, lsn: Lsn) -> Result<LayerDesc> {
        let span = tracing::info_span!(
            "image",
            timeline_id = %self.id,
            lsn = %lsn,
            bytes = tracing::field::Empty,
        );
        let _entered = span.enter();
        let start = std::time::Instant::now();
        let desc = self.write_image_inner(lsn)?;
        span.record("bytes", desc.file_size);
        crate::metrics::Job::Image.done(start, desc.file_size);
        Ok(desc)
    }

    fn write_image_inner(&self, lsn: Lsn) -> Result<LayerDesc> {
        loop {
            match self.image_inputs(lsn) {
                Inputs::Files { floor, files } => {
                    return self.write_layer(
                        LayerKind::Image,
                        lsn..lsn.next(),
                        Some(KeyRange::ALL),
                        |w| self.merge_image(lsn, floor, &files, w),
                    );
                }
                Inputs::Missing(layer) => self.download_layer_blocking(&layer)?,
                Inputs::NotMergeable => return self.write_image_by_reads(lsn),
            }
        }
    }

    fn image_inputs(&self, lsn: Lsn) -> Inputs {
        let snap = self.snapshot();
        let in_memory = std::iter::once(&snap.open).chain(snap.frozen.iter());
        if snap.ancestor.is_some() || in_memory.clone().any(|l| l.start() <= lsn) {
            return Inputs::NotMergeable;
        }
        let layers = snap.map.layers();
        let images = || {
            layers
                .iter()
                .filter(|l| l.kind() == LayerKind::Image && l.lsn_range().start <= lsn)
        };
        if images().any(|l| *l.key_range() != KeyRange::ALL) {
            return Inputs::NotMergeable;
        }
        let floor = images().map(|l| l.lsn_range().start).max();
        let mut files = Vec::new();
        for l in layers {
            let range = l.lsn_range();
            let wanted = range.start <= lsn
                && match l.kind() {
                    LayerKind::Image => Some(range.start) == floor,
                    LayerKind::Delta => floor.is_none_or(|f| range.end > f.next()),
                };
            if wanted {
                match l.file() {
                    Some(f) => files.push(f),
                    None => return Inputs::Missing(l.clone()),
                }
            }
        }
        Inputs::Files { floor, files }
    }

    /// Merges `files` into `w`: each key's value at `lsn`, from the versions above `floor` and
    /// the floor image.
    fn merge_image(
        &self,
        lsn: Lsn,
        floor: Option<Lsn>,
        files: &[Arc<LayerFile>],
        w: &mut LayerWriter,
    ) -> Result<()> {
        let redo = self.env.options.redo.as_ref();
        let mut merged = Merge::new(files)?;
        // The current key and its versions since its newest base, oldest first.
        let mut key = None;
        let mut since_base: Vec<(Lsn, Value)> = Vec::new();
        let mut finish = |key: &[u8], since_base: &mut Vec<(Lsn, Value)>| -> Result<()> {
            let mut versions = Versions::default();
            let complete = since_base.drain(..).rev().any(|(l, v)| versions.push(l, v));
            if !complete && floor.is_some() {
                versions.mark_absent();
            }
            if let Some(v) = versions.finish(key, redo)? {
                w.add(key, lsn, &Value::Image(v))?;
            }
            Ok(())
        };
        while let Some((k, l, v, input)) = merged.next_entry_from()? {
            let from_floor = files[input].kind() == LayerKind::Image;
            // Versions at or below the floor are the floor image's to give.
            if l > lsn || (!from_floor && floor.is_some_and(|f| l <= f)) {
                continue;
            }
            if key.as_ref() != Some(&k) {
                if let Some(prev) = key.replace(k) {
                    finish(&prev, &mut since_base)?;
                }
            } else if since_base.last().is_some_and(|(prev, _)| *prev == l) {
                // The same version in two files: apply it once.
                continue;
            }
            if v.is_base() {
                since_base.clear();
            }
            since_base.push((l, v));
        }
        if let Some(prev) = key {
            finish(&prev, &mut since_base)?;
        }
        Ok(())
    }

    /// Writes the image by listing every key at `lsn` and reading each one through the
    /// snapshot and the ancestors.
    fn write_image_by_reads(&self, lsn: Lsn) -> Result<LayerDesc> {
        let keys = loop {
            let snap = self.snapshot();
            match self.keys_at(&snap, Bound::Unbounded, Bound::Unbounded, lsn)? {
                Local::Ready(keys) => break keys,
                Local::Missing(layer) => self.download_layer_blocking(&layer)?,
                Local::Stale => self.check()?,
            }
        };
        self.write_layer(
            LayerKind::Image,
            lsn..lsn.next(),
            Some(KeyRange::ALL),
            |w| {
                for k in &keys {
                    if let Some(v) = self.read_value_blocking(k, lsn)? {
                        w.add(k, lsn, &Value::Image(v))?;
                    }
                }
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use crate::layer::LayerFile;
    use crate::redo::SimpleRedo;
    use crate::{Lsn, Store, StoreOptions, Value};

    #[derive(Clone, Debug)]
    enum Op {
        /// A version of key `0`..`KEYS`.
        Put(u8, Kind),
        Flush,
        Image,
        Compact,
    }

    #[derive(Clone, Debug)]
    enum Kind {
        Image(Vec<u8>),
        Append(Vec<u8>),
        Init(Vec<u8>),
        Tombstone,
    }

    const KEYS: u8 = 12;

    fn op() -> impl Strategy<Value = Op> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..6);
        let kind = prop_oneof![
            3 => bytes().prop_map(Kind::Image),
            4 => bytes().prop_map(Kind::Append),
            1 => bytes().prop_map(Kind::Init),
            1 => Just(Kind::Tombstone),
        ];
        prop_oneof![
            30 => (0..KEYS, kind).prop_map(|(k, v)| Op::Put(k, v)),
            3 => Just(Op::Flush),
            1 => Just(Op::Image),
            1 => Just(Op::Compact),
        ]
    }

    fn key(k: u8) -> Vec<u8> {
        // Some keys longer than fit inline in the in-memory layer.
        let mut key = vec![b'k', k];
        key.resize(if k.is_multiple_of(3) { 40 } else { 2 }, k);
        key
    }

    /// Every `(key, lsn, value)` of an image layer file.
    fn contents(path: &Path, desc: &crate::format::LayerDesc) -> Vec<(Vec<u8>, Lsn, Value)> {
        let cache = std::sync::Arc::new(crate::layer::BlockCache::new(0));
        let file = LayerFile::open(path, desc, cache).expect("open image");
        let mut it = file.iter();
        let mut out = Vec::new();
        while let Some((k, l, v)) = it.next_entry().expect("read image") {
            out.push((k.to_vec(), l, v));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// The merged image holds what reading every key at the LSN gives, at every LSN.
        #[test]
        fn merged_image_matches_point_reads(ops in proptest::collection::vec(op(), 1..120)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            rt.block_on(async {
                let opts = StoreOptions::new(dir.path())
                    .wal(false)
                    .background_period(None)
                    .compaction_threshold(2)
                    .target_layer_size(512);
                let store = Store::open(opts).await.unwrap();
                let tl = store.create_timeline("main").await.unwrap();
                let mut w = tl.writer().unwrap();
                let mut lsn = 0;
                let mut live = [false; KEYS as usize];
                for op in &ops {
                    match op {
                        Op::Put(k, kind) => {
                            lsn += 1;
                            // A delta needs a base: on a key with no value it sets one.
                            let live = &mut live[usize::from(*k)];
                            let v = match kind {
                                Kind::Image(b) => Value::image(b.clone()),
                                Kind::Append(b) if *live => Value::delta(SimpleRedo::append(b)),
                                Kind::Append(b) => Value::init_delta(SimpleRedo::set(b)),
                                Kind::Init(b) => Value::init_delta(SimpleRedo::set(b)),
                                Kind::Tombstone => Value::Tombstone,
                            };
                            *live = !matches!(kind, Kind::Tombstone);
                            w.put(&key(*k), Lsn(lsn), v).unwrap();
                            w.finish_write(Lsn(lsn)).unwrap();
                        }
                        Op::Flush => {
                            tl.flush().await.unwrap();
                        }
                        Op::Image if lsn > 0 => {
                            tl.flush().await.unwrap();
                            tl.create_image_layer().await.unwrap();
                        }
                        Op::Image => {}
                        Op::Compact => {
                            tl.compact().await.unwrap();
                        }
                    }
                }
                tl.flush().await.unwrap();
                let inner = &tl.inner;
                let mut merged_any = false;
                for at in 1..=lsn {
                    let at = Lsn(at);
                    let mergeable = matches!(inner.image_inputs(at), super::Inputs::Files { .. });
                    merged_any |= mergeable;
                    let merged = inner.write_image(at);
                    let read = inner.write_image_by_reads(at);
                    match (merged, read) {
                        (Ok(m), Ok(r)) => {
                            let dir = &inner.dir;
                            assert_eq!(
                                contents(&dir.join(&m.file_name), &m),
                                contents(&dir.join(&r.file_name), &r),
                                "image at {at}"
                            );
                        }
                        (Err(m), Err(r)) => assert_eq!(m.kind(), r.kind(), "image at {at}: {m} / {r}"),
                        (m, r) => panic!("image at {at}: merged {m:?}, by reads {r:?}"),
                    }
                }
                assert!(merged_any || lsn == 0, "no LSN took the merged path");
            });
        }
    }
}
