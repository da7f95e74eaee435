//! Compaction: L0 delta layers merged into key-partitioned L1 delta layers by a streaming k-way
//! merge, and image layers where the deltas above the newest image would make reads replay
//! too much.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::TimelineInner;
use super::flush::{Change, is_l0};
use crate::error::Result;
use crate::format::{LayerDesc, LayerKind};
use crate::layer::{Layer, LayerFile, LayerIter, LayerWriter};
use crate::lsn::Lsn;
use crate::value::{KeyRange, Value};

/// What one compaction pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// L0 layers merged.
    pub l0_merged: usize,
    /// L1 layers written.
    pub l1_written: usize,
    /// The LSN of the image layer written, if one was.
    pub image_at: Option<Lsn>,
    /// Bytes of delta layers above the newest image layer after the pass.
    pub delta_bytes_above_image: u64,
    /// Of those, the bytes of delta records needing redo, as far as compaction counted them
    /// (layers from before the store opened count in full until the next image).
    pub redo_bytes_above_image: u64,
    /// Delta layers stacked above the newest image layer after the pass: each L0 layer, and
    /// the L1 layers of each compaction pass.
    pub delta_layers_above_image: usize,
}

impl TimelineInner {
    /// Merges L0 layers once there are `compaction_threshold` of them (or any, if `force`),
    /// then writes an image layer if the delta records needing redo above the newest image
    /// exceed `image_threshold_bytes`, or the delta layers stacked there
    /// `image_threshold_layers`.
    pub(crate) fn compact(&self, force: bool) -> Result<CompactionReport> {
        let _gate = self.enter_gate()?;
        let _ops = self.layer_ops.lock();
        let span = tracing::info_span!(
            "compaction",
            timeline_id = %self.id,
            lsn_start = tracing::field::Empty,
            lsn_end = tracing::field::Empty,
            l0_merged = tracing::field::Empty,
            bytes = tracing::field::Empty,
        );
        let _entered = span.enter();
        let opts = &self.env.options;
        let mut report = CompactionReport::default();
        let mut l0: Vec<Arc<Layer>> = self
            .snapshot()
            .map
            .layers()
            .iter()
            .filter(|l| is_l0(l))
            .cloned()
            .collect();
        if l0.len() >= opts.compaction_threshold || (force && !l0.is_empty()) {
            l0.sort_by_key(|l| l.lsn_range().start);
            let start = std::time::Instant::now();
            if let (Some(first), Some(last)) = (l0.first(), l0.last()) {
                span.record(
                    "lsn_start",
                    tracing::field::display(first.lsn_range().start),
                );
                span.record("lsn_end", tracing::field::display(last.lsn_range().end));
            }
            let files = l0
                .iter()
                .map(|l| self.resident_file_blocking(l))
                .collect::<Result<Vec<_>>>()?;
            let (outputs, redo) = self.merge(&files)?;
            if let Some(r) = &mut *self.redo_above_image.lock() {
                *r += redo;
            }
            report.l0_merged = l0.len();
            report.l1_written = outputs.len();
            let bytes: u64 = outputs.iter().map(|d| d.file_size).sum();
            let removed = l0.iter().map(|l| l.desc.file_name.clone()).collect();
            self.publish(
                Change {
                    added: outputs,
                    removed,
                    ..Change::default()
                },
                |_| {},
            )?;
            span.record("l0_merged", report.l0_merged);
            span.record("bytes", bytes);
            crate::metrics::Job::Compaction.done(start, bytes);
        }
        let dcl = self.disk_consistent_lsn();
        let (redo, layers) = (
            self.redo_bytes_above_image(),
            self.delta_layers_above_image(),
        );
        if (redo >= opts.image_threshold_bytes || layers >= opts.image_threshold_layers)
            && dcl > self.newest_image_lsn().unwrap_or(Lsn::ZERO)
        {
            let desc = self.write_image(dcl)?;
            self.publish(
                Change {
                    added: vec![desc],
                    ..Change::default()
                },
                |_| {},
            )?;
            // Every delta record at or below `dcl` is under the image now.
            *self.redo_above_image.lock() = Some(0);
            report.image_at = Some(dcl);
        }
        report.delta_bytes_above_image = self.delta_bytes_above_image();
        report.redo_bytes_above_image = self.redo_bytes_above_image();
        report.delta_layers_above_image = self.delta_layers_above_image();
        Ok(report)
    }

    /// Bytes of delta records needing redo above the newest image, as compaction counted
    /// them; every delta layer's bytes there while they are not known.
    fn redo_bytes_above_image(&self) -> u64 {
        match *self.redo_above_image.lock() {
            Some(r) => r,
            None => self.delta_bytes_above_image(),
        }
    }

    /// Delta layers a read may pass through above the newest image: each L0 layer, and the
    /// L1 layers of each compaction pass (which share its LSN range).
    fn delta_layers_above_image(&self) -> usize {
        let img = self.newest_image_lsn();
        let snap = self.snapshot();
        let mut ranges: Vec<_> = snap
            .map
            .layers()
            .iter()
            .filter(|l| l.kind() == LayerKind::Delta && img.is_none_or(|i| l.lsn_range().start > i))
            .map(|l| (l.lsn_range().start, l.lsn_range().end))
            .collect();
        ranges.sort_unstable();
        ranges.dedup();
        ranges.len()
    }

    pub(crate) fn compact_if_needed(&self) -> Result<CompactionReport> {
        self.compact(false)
    }

    /// The LSN of the newest image layer over every key.
    fn newest_image_lsn(&self) -> Option<Lsn> {
        let snap = self.snapshot();
        snap.map
            .layers()
            .iter()
            .filter(|l| l.kind() == LayerKind::Image && *l.key_range() == KeyRange::ALL)
            .map(|l| l.lsn_range().start)
            .max()
    }

    /// Bytes of delta layers that start above the newest image: what reads may replay.
    pub(crate) fn delta_bytes_above_image(&self) -> u64 {
        let img = self.newest_image_lsn();
        let snap = self.snapshot();
        snap.map
            .layers()
            .iter()
            .filter(|l| l.kind() == LayerKind::Delta && img.is_none_or(|i| l.lsn_range().start > i))
            .map(|l| l.desc.file_size)
            .sum()
    }

    /// Streams the versions of `inputs` in `(key, lsn)` order into L1 layers of about
    /// `target_layer_size` bytes, cut only between keys. Holds one block per input in memory.
    /// Returns the layers and the bytes of the delta records needing redo among the versions.
    fn merge(&self, inputs: &[Arc<LayerFile>]) -> Result<(Vec<LayerDesc>, u64)> {
        let mut merged = Merge::new(inputs)?;
        let mut out = self.l1_writer(merged.lsn_range());
        let mut redo = 0;
        while let Some((key, lsn, value)) = merged.next_entry()? {
            if !value.is_base() {
                redo += value.payload_len() as u64;
            }
            out.add(&key, lsn, &value)?;
        }
        Ok((out.finish()?, redo))
    }

    /// A writer of L1 layers over `lsn_range`.
    pub(crate) fn l1_writer(&self, lsn_range: Range<Lsn>) -> L1Writer<'_> {
        L1Writer {
            tl: self,
            lsn_range,
            out: None,
            last_key: None,
            outputs: Vec::new(),
        }
    }
}

/// The versions of several layer files in `(key, lsn)` order: a k-way merge holding one block
/// per input.
pub(crate) struct Merge<'a> {
    iters: Vec<LayerIter<'a>>,
    heads: Vec<Option<Value>>,
    /// `(head, key, lsn, input)`: the key's [`OrdKey::head`](crate::format::OrdKey::head)
    /// first, which orders as the key does and settles most comparisons without reading it.
    heap: BinaryHeap<Reverse<(u64, Bytes, Lsn, usize)>>,
    lsn_range: Range<Lsn>,
}

impl<'a> Merge<'a> {
    pub(crate) fn new(inputs: &'a [Arc<LayerFile>]) -> Result<Merge<'a>> {
        let lsn_range = inputs
            .iter()
            .map(|l| l.lsn_range().start)
            .min()
            .unwrap_or_default()
            ..inputs
                .iter()
                .map(|l| l.lsn_range().end)
                .max()
                .unwrap_or_default();
        let mut m = Merge {
            iters: inputs.iter().map(|l| l.iter()).collect(),
            heads: vec![None; inputs.len()],
            heap: BinaryHeap::new(),
            lsn_range,
        };
        for i in 0..m.iters.len() {
            m.advance(i)?;
        }
        Ok(m)
    }

    /// The union of the inputs' LSN ranges.
    pub(crate) fn lsn_range(&self) -> Range<Lsn> {
        self.lsn_range.clone()
    }

    fn advance(&mut self, i: usize) -> Result<()> {
        if let Some((k, l, v)) = self.iters[i].next_entry()? {
            self.heads[i] = Some(v);
            let head = crate::format::OrdKey::new(&k).head();
            self.heap.push(Reverse((head, k, l, i)));
        }
        Ok(())
    }

    pub(crate) fn next_entry(&mut self) -> Result<Option<(Bytes, Lsn, Value)>> {
        Ok(self.next_entry_from()?.map(|(k, l, v, _)| (k, l, v)))
    }

    /// The next version and the index of the input it came from.
    pub(crate) fn next_entry_from(&mut self) -> Result<Option<(Bytes, Lsn, Value, usize)>> {
        // The smallest entry is replaced in place by its input's next one: one sift down,
        // where a pop and a push would take two passes over the heap.
        let Some(mut top) = self.heap.peek_mut() else {
            return Ok(None);
        };
        let i = top.0.3;
        let value = self.heads[i].take().expect("a head for every heap entry");
        let (key, lsn) = match self.iters[i].next_entry()? {
            Some((k, l, v)) => {
                self.heads[i] = Some(v);
                let head = crate::format::OrdKey::new(&k).head();
                let Reverse((_, key, lsn, _)) =
                    std::mem::replace(&mut *top, Reverse((head, k, l, i)));
                (key, lsn)
            }
            None => {
                let Reverse((_, key, lsn, _)) = PeekMut::pop(top);
                (key, lsn)
            }
        };
        Ok(Some((key, lsn, value, i)))
    }
}

/// Writes versions in `(key, lsn)` order into L1 layers of about `target_layer_size` bytes,
/// each over the whole LSN range, cut only between keys.
pub(crate) struct L1Writer<'a> {
    tl: &'a TimelineInner,
    lsn_range: Range<Lsn>,
    out: Option<LayerWriter>,
    /// The key of the previous version, reused across keys.
    last_key: Option<Vec<u8>>,
    outputs: Vec<LayerDesc>,
}

impl L1Writer<'_> {
    pub(crate) fn add(&mut self, key: &[u8], lsn: Lsn, value: &Value) -> Result<()> {
        let new_key = self.last_key.as_deref() != Some(key);
        let target = self.tl.env.options.target_layer_size;
        if new_key && let Some(w) = self.out.take_if(|w| w.bytes_written() >= target) {
            self.close(w)?;
        }
        let w = match &mut self.out {
            Some(w) => w,
            None => self.out.insert(self.tl.layer_writer(
                LayerKind::Delta,
                &self.lsn_range,
                self.tl.env.options.compression,
            )?),
        };
        w.add(key, lsn, value)?;
        if new_key {
            let last = self.last_key.get_or_insert_default();
            last.clear();
            last.extend_from_slice(key);
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<Vec<LayerDesc>> {
        if let Some(w) = self.out.take() {
            self.close(w)?;
        }
        Ok(self.outputs)
    }

    fn close(&mut self, w: LayerWriter) -> Result<()> {
        let desc = w.finish(LayerKind::Delta, self.lsn_range.clone(), None)?;
        self.outputs.push(l1(desc));
        Ok(())
    }
}

fn l1(mut desc: LayerDesc) -> LayerDesc {
    desc.level = 1;
    desc
}
