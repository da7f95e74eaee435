//! Freezing the open layer, flushing frozen layers to L0 delta files, and writing image layers.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Snapshot, TimelineInner, WriteState};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{LayerDesc, LayerKind};
use crate::io;
use crate::layer::{InMemoryLayer, LayerFile, LayerWriter, layer_file_name};
use crate::lsn::Lsn;
use crate::value::{KeyRange, Value};

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
        let new = Arc::new(new);
        {
            let mut snap = self.snapshot.write();
            let mut frozen = Vec::with_capacity(snap.frozen.len() + 1);
            frozen.push(old);
            frozen.extend(snap.frozen.iter().cloned());
            *snap = Arc::new(Snapshot {
                open: new.clone(),
                frozen,
                map: snap.map.clone(),
            });
        }
        ws.open = new;
        self.env.request_flush(self.clone());
    }

    /// Blocks the writer while more than `max` frozen layers wait for flushing.
    pub(crate) fn wait_for_frozen_below(&self, max: usize) -> Result<()> {
        let (m, cv) = &self.flushed;
        let mut g = m.lock();
        while self.snapshot.read().frozen.len() > max {
            self.env.check()?;
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
            self.env.check()?;
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), rx.changed()).await;
        }
    }

    /// Flushes frozen layers oldest first until none is left. Runs on the flusher thread.
    pub(crate) fn flush_frozen(&self) -> Result<()> {
        loop {
            let Some(layer) = self.snapshot.read().frozen.last().cloned() else {
                return Ok(());
            };
            let end = layer.end();
            let new_dcl = Lsn(end.0 - 1);
            let written = if layer.is_empty() {
                None
            } else {
                let lsn_range = layer.start()..end;
                let desc = self.write_layer(LayerKind::Delta, lsn_range, None, |w| {
                    layer.for_each(|k, l, v| w.add(k, l, v))
                })?;
                Some(desc)
            };
            let added = self.publish_layers(written, Some(new_dcl), |snap| {
                snap.frozen.retain(|f| !Arc::ptr_eq(f, &layer));
            })?;
            drop(added);
            let (m, cv) = &self.flushed;
            let _g = m.lock();
            cv.notify_all();
        }
    }

    /// Writes one layer file with a fresh sequence number; `fill` adds the versions.
    fn write_layer(
        &self,
        kind: LayerKind,
        lsn_range: std::ops::Range<Lsn>,
        key_range: Option<KeyRange>,
        fill: impl FnOnce(&mut LayerWriter) -> Result<()>,
    ) -> Result<LayerDesc> {
        let seq = {
            let mut m = self.manifest.lock();
            let s = m.next_layer_seq;
            m.next_layer_seq += 1;
            s
        };
        let path = self.dir.join(layer_file_name(seq, kind, &lsn_range));
        let opts = &self.env.options;
        let mut w = LayerWriter::create(path, opts.block_size, opts.compression)?;
        fill(&mut w)?;
        w.finish(kind, lsn_range, key_range)
    }

    /// Persists a manifest naming `desc` (and the new `disk_consistent_lsn`), then publishes a
    /// snapshot with the layer added and `edit` applied.
    fn publish_layers(
        &self,
        desc: Option<LayerDesc>,
        new_dcl: Option<Lsn>,
        edit: impl FnOnce(&mut Snapshot),
    ) -> Result<Option<Arc<LayerFile>>> {
        let file = match &desc {
            Some(d) => Some(Arc::new(LayerFile::open(
                &self.dir.join(&d.file_name),
                d,
                self.env.cache.clone(),
            )?)),
            None => None,
        };
        let mut m = self.manifest.lock();
        let mut next = m.clone();
        if let Some(d) = desc {
            next.layers.push(d);
        }
        if let Some(dcl) = new_dcl {
            next.disk_consistent_lsn = next.disk_consistent_lsn.max(dcl);
        }
        if let Err(e) =
            io::write_atomic(&self.dir.join(crate::store::MANIFEST_FILE), &next.encode())
        {
            // The manifest on disk may or may not be the new one: carrying on is unsafe.
            self.env.poison(&e);
            return Err(e);
        }
        *m = next;
        {
            let mut snap = self.snapshot.write();
            let mut s = Snapshot {
                open: snap.open.clone(),
                frozen: snap.frozen.clone(),
                map: snap.map.clone(),
            };
            if let Some(f) = &file {
                s.map = s.map.with_changes(vec![f.clone()], &[]);
            }
            edit(&mut s);
            *snap = Arc::new(s);
        }
        if let Some(dcl) = new_dcl {
            let dcl = m.disk_consistent_lsn.max(dcl);
            self.disk_consistent_lsn.store(dcl.0, Ordering::Release);
            self.dcl_tx.send_replace(dcl);
        }
        Ok(file)
    }

    /// Writes an image layer of every live key at `disk_consistent_lsn`.
    pub(crate) fn create_image_layer(&self) -> Result<Lsn> {
        self.env.check()?;
        let lsn = self.disk_consistent_lsn();
        if lsn == Lsn::ZERO {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("timeline {} has no data to image", self.name),
            ));
        }
        let snap = self.snapshot();
        let keys = self.keys_at(&snap, Bound::Unbounded, Bound::Unbounded, lsn)?;
        let desc = self.write_layer(
            LayerKind::Image,
            lsn..lsn.next(),
            Some(KeyRange::ALL),
            |w| {
                for k in &keys {
                    if let Some(v) = self.reconstruct(&snap, k, lsn)? {
                        w.add(k, lsn, &Value::Image(v))?;
                    }
                }
                Ok(())
            },
        )?;
        self.publish_layers(Some(desc), None, |_| {})?;
        Ok(lsn)
    }
}
