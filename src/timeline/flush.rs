//! Freezing the open layer, flushing frozen layers to L0 delta files, and writing image layers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Snapshot, TimelineInner, WriteState};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{Compression, LayerDesc, LayerKind};
use crate::layer::{InMemoryLayer, Layer, LayerWriter, layer_file_name};
use crate::layout::MANIFEST_FILE;
use crate::lsn::Lsn;
use crate::metrics::Job;
use crate::value::KeyRange;

impl TimelineInner {
    /// Freezes the published part of the open layer and queues it for flushing.
    ///
    /// Puts above `last_record_lsn` move to the new open layer. Does nothing when nothing was
    /// published since the last freeze.
    pub(crate) fn freeze_locked(self: &Arc<Self>, ws: &mut WriteState) {
        let lrl = self.last_record_lsn();
        let old = ws.open.clone();
        if lrl < old.start() {
            return;
        }
        let new = if ws.last_put > lrl {
            old.split_off_above(lrl)
        } else {
            InMemoryLayer::new(lrl.next())
        };
        old.freeze(lrl.next());
        self.replace_open(ws, Arc::new(new), Some(old));
        self.env.request_flush(self.clone());
    }

    /// Makes `new` the open layer, for the writer and in the snapshot readers load; `frozen`,
    /// the layer it replaces once frozen, goes first among the frozen layers.
    pub(crate) fn replace_open(
        &self,
        ws: &mut WriteState,
        new: Arc<InMemoryLayer>,
        frozen: Option<Arc<InMemoryLayer>>,
    ) {
        {
            let _change = self.snapshot_change.lock();
            let snap = self.snapshot.load();
            let mut layers = Vec::with_capacity(snap.frozen.len() + 1);
            layers.extend(frozen);
            layers.extend(snap.frozen.iter().cloned());
            self.snapshot.store(Arc::new(Snapshot {
                ancestor: snap.ancestor.clone(),
                open: new.clone(),
                frozen: layers,
                map: snap.map.clone(),
            }));
        }
        ws.open = new;
    }

    /// Blocks the writer while more than `max` frozen layers wait for flushing.
    pub(crate) fn wait_for_frozen_below(&self, max: usize) -> Result<()> {
        let (m, cv) = &self.flushed;
        let mut g = m.lock();
        while self.snapshot.load().frozen.len() > max {
            self.check()?;
            cv.wait_for(&mut g, std::time::Duration::from_millis(100));
        }
        Ok(())
    }

    /// Freezes the open layer and waits until everything published is on disk.
    pub(crate) async fn flush(self: &Arc<Self>) -> Result<Lsn> {
        self.env.check()?;
        let target = {
            let mut ws = self.write.lock();
            self.freeze_locked(&mut ws);
            self.last_record_lsn()
        };
        let mut rx = self.dcl_tx.subscribe();
        loop {
            if *rx.borrow_and_update() >= target {
                return Ok(self.disk_consistent_lsn());
            }
            // A deleted timeline's frozen layers are never flushed: stop waiting for them.
            self.check()?;
            let _ = self
                .env
                .timeout(std::time::Duration::from_millis(100), rx.changed())
                .await;
        }
    }

    /// Flushes frozen layers oldest first until none is left. Runs on the flusher thread.
    ///
    /// Each layer is flushed inside the timeline's gate: a delete waits for the layer being
    /// written, and once it has closed the gate the rest are dropped with the timeline.
    pub(crate) fn flush_frozen(&self) -> Result<()> {
        loop {
            let Some(_gate) = self.gate.enter() else {
                return Ok(());
            };
            let Some(layer) = self.snapshot.load().frozen.last().cloned() else {
                return Ok(());
            };
            let end = layer.end();
            let span = tracing::info_span!(
                "flush",
                timeline_id = %self.id,
                lsn_start = %layer.start(),
                lsn_end = %end,
                bytes = tracing::field::Empty,
            );
            let _entered = span.enter();
            let start = Instant::now();
            let mut change = Change {
                new_dcl: Some(Lsn(end.0 - 1)),
                ..Change::default()
            };
            if !layer.is_empty() {
                let lsn_range = layer.start()..end;
                let opts = &self.env.options;
                let compression = if opts.compress_l0 {
                    opts.compression
                } else {
                    Compression::None
                };
                change.added.push(self.write_layer_with(
                    LayerKind::Delta,
                    lsn_range,
                    None,
                    compression,
                    |w| layer.for_each(|k, l, v| w.add_ref(k, l, v)),
                )?);
            }
            let bytes: u64 = change.added.iter().map(|d| d.file_size).sum();
            let job = Job::Flush.handles();
            self.publish(change, |snap| {
                snap.frozen.retain(|f| !Arc::ptr_eq(f, &layer));
                // Counted once the manifest is written, before `disk_consistent_lsn` moves: a
                // caller whose `flush()` returned sees this flush counted.
                job.done(start, bytes);
            })?;
            self.update_gauges();
            span.record("bytes", bytes);
            let (m, cv) = &self.flushed;
            let _g = m.lock();
            cv.notify_all();
            if self.l0_count() >= self.env.options.compaction_threshold {
                self.env.kick_background();
            }
        }
    }

    /// Number of L0 delta layers (flush output, covering every key).
    pub(crate) fn l0_count(&self) -> usize {
        self.snapshot
            .load()
            .map
            .layers()
            .iter()
            .filter(|l| is_l0(l))
            .count()
    }

    /// Writes one layer file with a fresh sequence number; `fill` adds the versions.
    pub(crate) fn write_layer(
        &self,
        kind: LayerKind,
        lsn_range: std::ops::Range<Lsn>,
        key_range: Option<KeyRange>,
        fill: impl FnOnce(&mut LayerWriter) -> Result<()>,
    ) -> Result<LayerDesc> {
        let compression = self.env.options.compression;
        self.write_layer_with(kind, lsn_range, key_range, compression, fill)
    }

    /// [`write_layer`](Self::write_layer) with its blocks compressed as `compression` says.
    pub(crate) fn write_layer_with(
        &self,
        kind: LayerKind,
        lsn_range: std::ops::Range<Lsn>,
        key_range: Option<KeyRange>,
        compression: Compression,
        fill: impl FnOnce(&mut LayerWriter) -> Result<()>,
    ) -> Result<LayerDesc> {
        let mut w = self.layer_writer(kind, &lsn_range, compression)?;
        fill(&mut w)?;
        w.finish(kind, lsn_range, key_range)
    }

    /// A writer for a new layer file with a fresh sequence number.
    pub(crate) fn layer_writer(
        &self,
        kind: LayerKind,
        lsn_range: &std::ops::Range<Lsn>,
        compression: Compression,
    ) -> Result<LayerWriter> {
        let seq = {
            let mut m = self.manifest.lock();
            let s = m.next_layer_seq;
            m.next_layer_seq += 1;
            s
        };
        let path = self.dir.join(layer_file_name(seq, kind, lsn_range));
        let block_size = self.env.options.block_size;
        LayerWriter::create(&self.env.io, path, block_size, compression)
    }

    /// Persists a manifest with `change` applied, then publishes a snapshot with the layers
    /// swapped and `edit` applied, then removes the files no longer named.
    ///
    /// A failure to write the manifest poisons the store: the manifest on disk may be either.
    pub(crate) fn publish(&self, change: Change, edit: impl FnOnce(&mut Snapshot)) -> Result<()> {
        let mut added = Vec::with_capacity(change.added.len());
        for d in &change.added {
            added.push(Arc::new(Layer::open(
                &self.dir.join(&d.file_name),
                d,
                self.env.cache.clone(),
            )?));
        }
        let mut m = self.manifest.lock();
        let mut next = m.clone();
        next.layers
            .retain(|l| !change.removed.contains(&l.file_name));
        next.layers.extend(change.added);
        if let Some(dcl) = change.new_dcl {
            next.disk_consistent_lsn = next.disk_consistent_lsn.max(dcl);
            self.persist_time_index(next.disk_consistent_lsn)?;
        }
        if let Some(cutoff) = change.gc_cutoff {
            next.gc_cutoff = next.gc_cutoff.max(cutoff);
        }
        if change.detach {
            next.ancestor = None;
        }
        if let Err(e) = self
            .env
            .io
            .write_atomic(&self.dir.join(MANIFEST_FILE), &next.encode())
        {
            self.env.poison(&e);
            return Err(e);
        }
        *m = next;
        {
            let _change = self.snapshot_change.lock();
            let snap = self.snapshot.load();
            let mut s = Snapshot {
                ancestor: if change.detach {
                    None
                } else {
                    snap.ancestor.clone()
                },
                open: snap.open.clone(),
                frozen: snap.frozen.clone(),
                map: snap.map.with_changes(added, &change.removed),
            };
            edit(&mut s);
            // Before the uploader can learn of the change (and delete the removed layers'
            // objects): a reader that then fails to download one retries on a new snapshot.
            if !change.removed.is_empty() {
                for l in snap.map.layers() {
                    if change.removed.contains(&l.desc.file_name) {
                        l.retire();
                    }
                }
            }
            self.snapshot.store(Arc::new(s));
        }
        // Before anyone waiting on the new watermark wakes: a wait for upload that follows a
        // flush must see this request.
        if let Some(r) = &self.env.remote {
            r.mark_dirty(self.id, self.me.clone());
        }
        if change.new_dcl.is_some() {
            let dcl = m.disk_consistent_lsn;
            drop(m);
            if let Some(wal) = &self.env.wal {
                wal.set_durable(self.id, dcl);
            }
            self.gauges.disk_consistent_lsn.set(dcl.0 as f64);
            self.disk_consistent_lsn.store(dcl.0, Ordering::Release);
            self.dcl_tx.send_replace(dcl);
        } else {
            drop(m);
        }
        for name in &change.removed {
            // A file left behind is swept at the next open.
            let _ = self.env.io.remove_file(&self.dir.join(name));
        }
        Ok(())
    }

    /// Writes an image layer of every live key at `disk_consistent_lsn`.
    pub(crate) fn create_image_layer(&self) -> Result<Lsn> {
        let _gate = self.enter_gate()?;
        let _ops = self.layer_ops.lock();
        let lsn = self.disk_consistent_lsn();
        if lsn == Lsn::ZERO {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("timeline {} has no data to image", self.name()),
            ));
        }
        let desc = self.write_image(lsn)?;
        self.publish(
            Change {
                added: vec![desc],
                ..Change::default()
            },
            |_| {},
        )?;
        Ok(lsn)
    }
}

/// A change to a timeline's layers and watermarks, persisted and published as one.
#[derive(Default)]
pub(crate) struct Change {
    pub(crate) added: Vec<LayerDesc>,
    pub(crate) removed: Vec<String>,
    pub(crate) new_dcl: Option<Lsn>,
    pub(crate) gc_cutoff: Option<Lsn>,
    pub(crate) detach: bool,
}

/// Whether a layer is L0: a flush's output.
pub(crate) fn is_l0(l: &Layer) -> bool {
    l.kind() == LayerKind::Delta && l.desc.level == 0
}

#[cfg(test)]
mod tests {
    use crate::{Lsn, Store, StoreOptions, Value};

    /// Bytes of the L0 layers two flushes write, and of the L1 layers compaction makes of them,
    /// for compressible values.
    fn layer_bytes(compress_l0: bool) -> (u64, u64) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let opts = StoreOptions::new(dir.path())
                .wal(false)
                .background_period(None)
                .compaction_threshold(usize::MAX)
                .compress_l0(compress_l0);
            let store = Store::open(opts).await.unwrap();
            let tl = store.create_timeline("main").await.unwrap();
            let mut w = tl.writer().unwrap();
            let mut lsn = 0;
            for _ in 0..2 {
                for i in 0..2000u32 {
                    lsn += 1;
                    let value = format!("{i:>100}");
                    w.put(&i.to_be_bytes(), Lsn(lsn), Value::image(value))
                        .unwrap();
                }
                w.finish_write(Lsn(lsn)).unwrap();
                tl.flush().await.unwrap();
            }
            let size = |level| {
                let layers = tl.layers().into_iter().filter(|d| d.level == level);
                layers.map(|d| d.file_size).sum::<u64>()
            };
            let l0 = size(0);
            assert_eq!(tl.compact().await.unwrap().l0_merged, 2);
            assert_eq!(size(0), 0);
            (l0, size(1))
        })
    }

    #[test]
    fn l0_layers_are_raw_unless_asked_and_l1_layers_compressed() {
        let (raw_l0, l1) = layer_bytes(false);
        let (compressed_l0, l1_again) = layer_bytes(true);
        // 4000 versions of 104 bytes of key and value at least, stored raw.
        assert!(raw_l0 > 4000 * 104, "L0 of {raw_l0} bytes");
        assert!(compressed_l0 * 2 < raw_l0, "{compressed_l0} vs {raw_l0}");
        assert!(l1 * 2 < raw_l0, "L1 of {l1} bytes from L0 of {raw_l0}");
        assert_eq!(l1, l1_again, "L1 does not depend on how L0 was stored");
    }
}
