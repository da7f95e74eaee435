//! Compaction: L0 delta layers merged into key-partitioned L1 delta layers by a streaming k-way
//! merge, and image layers where the deltas above the newest image would make reads replay
//! too much.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
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
}

impl TimelineInner {
    /// Merges L0 layers once there are `compaction_threshold` of them (or any, if `force`),
    /// then writes an image layer if the delta bytes above the newest image exceed
    /// `image_threshold_bytes`.
    pub(crate) fn compact(&self, force: bool) -> Result<CompactionReport> {
        let _ops = self.layer_ops.lock();
        self.check()?;
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
            let files = l0
                .iter()
                .map(|l| self.resident_file_blocking(l))
                .collect::<Result<Vec<_>>>()?;
            let outputs = self.merge(&files)?;
            report.l0_merged = l0.len();
            report.l1_written = outputs.len();
            let removed = l0.iter().map(|l| l.desc.file_name.clone()).collect();
            self.publish(
                Change {
                    added: outputs,
                    removed,
                    ..Change::default()
                },
                |_| {},
            )?;
        }
        let bytes = self.delta_bytes_above_image();
        let dcl = self.disk_consistent_lsn();
        if bytes >= opts.image_threshold_bytes && dcl > self.newest_image_lsn().unwrap_or(Lsn::ZERO)
        {
            let desc = self.write_image(dcl)?;
            self.publish(
                Change {
                    added: vec![desc],
                    ..Change::default()
                },
                |_| {},
            )?;
            report.image_at = Some(dcl);
        }
        report.delta_bytes_above_image = self.delta_bytes_above_image();
        Ok(report)
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
    fn merge(&self, inputs: &[Arc<LayerFile>]) -> Result<Vec<LayerDesc>> {
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
        let mut iters: Vec<LayerIter<'_>> = inputs.iter().map(|l| l.iter()).collect();
        let mut heads: Vec<Option<Value>> = vec![None; iters.len()];
        let mut heap = BinaryHeap::new();
        for (i, it) in iters.iter_mut().enumerate() {
            if let Some((k, l, v)) = it.next_entry()? {
                heads[i] = Some(v);
                heap.push(Reverse((k, l, i)));
            }
        }
        let target = self.env.options.target_layer_size;
        let mut outputs = Vec::new();
        let mut out: Option<LayerWriter> = None;
        let mut last_key: Option<Bytes> = None;
        while let Some(Reverse((key, lsn, i))) = heap.pop() {
            let value = heads[i].take().expect("a head for every heap entry");
            let new_key = last_key.as_ref() != Some(&key);
            if new_key && let Some(w) = out.take_if(|w| w.bytes_written() >= target) {
                outputs.push(l1(w.finish(LayerKind::Delta, lsn_range.clone(), None)?));
            }
            let w = match &mut out {
                Some(w) => w,
                None => out.insert(self.layer_writer(LayerKind::Delta, &lsn_range)?),
            };
            w.add(&key, lsn, &value)?;
            if new_key {
                last_key = Some(key);
            }
            if let Some((k, l, v)) = iters[i].next_entry()? {
                heads[i] = Some(v);
                heap.push(Reverse((k, l, i)));
            }
        }
        if let Some(w) = out {
            outputs.push(l1(w.finish(LayerKind::Delta, lsn_range, None)?));
        }
        Ok(outputs)
    }
}

fn l1(mut desc: LayerDesc) -> LayerDesc {
    desc.level = 1;
    desc
}
