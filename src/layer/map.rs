//! The layer map: which layer file to read next for `(key, lsn)`, without visiting every layer.
//!
//! Layers are kept sorted by LSN start, newest first, with the largest LSN end of every suffix
//! precomputed. A search skips by binary search to the layers that start below the read's
//! LSN, then walks them newest first and stops as soon as no remaining layer can cover a newer
//! part of the key's history than the best one found.

use std::sync::Arc;

use super::file::LayerFile;
use crate::format::LayerKind;
use crate::lsn::Lsn;

/// An immutable set of layer files; a new one is built for every change and published whole.
#[derive(Default, Clone)]
pub(crate) struct LayerMap {
    /// Sorted by `lsn_range.start`, descending.
    layers: Vec<Arc<LayerFile>>,
    /// `max_end[i]` is the largest `lsn_range.end` among `layers[i..]`.
    max_end: Vec<Lsn>,
}

/// The next layer a read visits, and the lowest LSN to read from it.
pub(crate) struct Hit<'a> {
    pub(crate) layer: &'a Arc<LayerFile>,
    pub(crate) lower: Lsn,
}

impl LayerMap {
    pub(crate) fn new(mut layers: Vec<Arc<LayerFile>>) -> LayerMap {
        layers.sort_by(|a, b| b.lsn_range().start.cmp(&a.lsn_range().start).then(a.desc.file_name.cmp(&b.desc.file_name)));
        let mut max_end = vec![Lsn::ZERO; layers.len()];
        let mut m = Lsn::ZERO;
        for i in (0..layers.len()).rev() {
            m = m.max(layers[i].lsn_range().end);
            max_end[i] = m;
        }
        LayerMap { layers, max_end }
    }

    pub(crate) fn layers(&self) -> &[Arc<LayerFile>] {
        &self.layers
    }

    /// A new map with `added` and without the layers named in `removed`.
    pub(crate) fn with_changes(&self, added: Vec<Arc<LayerFile>>, removed: &[String]) -> LayerMap {
        let mut all: Vec<_> = self
            .layers
            .iter()
            .filter(|l| !removed.contains(&l.desc.file_name))
            .cloned()
            .collect();
        all.extend(added);
        LayerMap::new(all)
    }

    /// The layer holding the newest part of `key`'s history below `cont`.
    ///
    /// An image layer wins over a delta layer that reaches no higher than the image's LSN; a
    /// delta layer that straddles an image is read only down to just above the image.
    pub(crate) fn search(&self, key: &[u8], cont: Lsn) -> Option<Hit<'_>> {
        let first = self.layers.partition_point(|l| l.lsn_range().start >= cont);
        let mut best_delta: Option<(usize, Lsn)> = None; // (index, effective end)
        let mut best_image: Option<usize> = None;
        for i in first..self.layers.len() {
            let l = &self.layers[i];
            let start = l.lsn_range().start;
            let delta_floor = best_delta.map(|(d, _)| self.layers[d].lsn_range().start);
            let bound = best_delta.map(|(_, e)| e).max(best_image.map(|b| self.layers[b].lsn_range().start.next()));
            // Nothing further can end higher than what we have, and no image further can sit
            // inside the best delta layer.
            if let Some(bound) = bound
                && self.max_end[i].min(cont) <= bound
                && delta_floor.is_none_or(|f| start < f)
            {
                break;
            }
            if !l.key_range().contains(key) {
                continue;
            }
            match l.kind() {
                LayerKind::Image => {
                    if best_image.is_none_or(|b| self.layers[b].lsn_range().start < start) {
                        best_image = Some(i);
                    }
                }
                LayerKind::Delta => {
                    let eff = l.lsn_range().end.min(cont);
                    if best_delta.is_none_or(|(_, e)| e < eff) {
                        best_delta = Some((i, eff));
                    }
                }
            }
        }
        match (best_delta, best_image) {
            (None, None) => None,
            (None, Some(img)) => Some(Hit { layer: &self.layers[img], lower: self.layers[img].lsn_range().start }),
            (Some((d, eff)), img) => {
                let img_lsn = img.map(|i| self.layers[i].lsn_range().start);
                match img_lsn {
                    Some(il) if il.next() >= eff => {
                        let i = img.expect("image");
                        Some(Hit { layer: &self.layers[i], lower: il })
                    }
                    _ => {
                        let start = self.layers[d].lsn_range().start;
                        let lower = match img_lsn {
                            Some(il) if il >= start => il.next(),
                            _ => start,
                        };
                        Some(Hit { layer: &self.layers[d], lower })
                    }
                }
            }
        }
    }
}
