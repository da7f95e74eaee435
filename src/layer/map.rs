//! The layer map: which layer file to read next for `(key, lsn)`, without visiting every layer.
//!
//! Layers are kept sorted by LSN start, newest first, with the largest LSN end of every suffix
//! precomputed. A search skips by binary search to the layers that start below the read's
//! LSN, then walks them newest first and stops as soon as no remaining layer can cover a newer
//! part of the key's history than the best one found.

use std::sync::Arc;

use std::ops::Range;

use super::file::LayerFile;
use super::handle::Layer;
use crate::format::{LayerDesc, LayerKind};
use crate::lsn::Lsn;
use crate::value::KeyRange;

/// The rectangle a layer covers; what the map needs to know of a layer.
pub(crate) trait Extent {
    fn desc(&self) -> &LayerDesc;
    fn lsn_range(&self) -> &Range<Lsn> {
        &self.desc().lsn_range
    }
    fn key_range(&self) -> &KeyRange {
        &self.desc().key_range
    }
    fn kind(&self) -> LayerKind {
        self.desc().kind
    }
}

impl Extent for LayerFile {
    fn desc(&self) -> &LayerDesc {
        &self.desc
    }
}

impl Extent for Layer {
    fn desc(&self) -> &LayerDesc {
        &self.desc
    }
}

impl Extent for LayerDesc {
    fn desc(&self) -> &LayerDesc {
        self
    }
}

/// An immutable set of layer files; a new one is built for every change and published whole.
pub(crate) struct LayerMap<L = Layer> {
    /// Sorted by `lsn_range.start`, descending.
    layers: Vec<Arc<L>>,
    /// `max_end[i]` is the largest `lsn_range.end` among `layers[i..]`.
    max_end: Vec<Lsn>,
}

impl<L> Clone for LayerMap<L> {
    fn clone(&self) -> Self {
        LayerMap {
            layers: self.layers.clone(),
            max_end: self.max_end.clone(),
        }
    }
}

/// The next layer a read visits, and the lowest LSN to read from it.
pub(crate) struct Hit<'a, L = Layer> {
    pub(crate) layer: &'a Arc<L>,
    pub(crate) lower: Lsn,
    /// At or below `lower`: below it only when an image sits inside a delta layer. The read
    /// goes on to that image from `lower`, but the delta layer holds every version of its own
    /// from `floor` on (its start, or just above the next older image), so a version there
    /// that needs nothing older may end the read one layer early.
    pub(crate) floor: Lsn,
}

impl<L: Extent> LayerMap<L> {
    pub(crate) fn new(mut layers: Vec<Arc<L>>) -> LayerMap<L> {
        layers.sort_by(|a, b| {
            b.lsn_range()
                .start
                .cmp(&a.lsn_range().start)
                .then_with(|| a.desc().file_name.cmp(&b.desc().file_name))
        });
        let mut max_end = vec![Lsn::ZERO; layers.len()];
        let mut m = Lsn::ZERO;
        for i in (0..layers.len()).rev() {
            m = m.max(layers[i].lsn_range().end);
            max_end[i] = m;
        }
        LayerMap { layers, max_end }
    }

    pub(crate) fn layers(&self) -> &[Arc<L>] {
        &self.layers
    }

    /// A new map with `added` and without the layers named in `removed`.
    pub(crate) fn with_changes(&self, added: Vec<Arc<L>>, removed: &[String]) -> LayerMap<L> {
        let mut all: Vec<_> = self
            .layers
            .iter()
            .filter(|l| !removed.contains(&l.desc().file_name))
            .cloned()
            .collect();
        all.extend(added);
        LayerMap::new(all)
    }

    /// The layer holding the newest part of `key`'s history below `cont`.
    ///
    /// An image layer wins over a delta layer that reaches no higher than the image's LSN; a
    /// delta layer that straddles an image is read only down to just above the image.
    pub(crate) fn search(&self, key: &[u8], cont: Lsn) -> Option<Hit<'_, L>> {
        let first = self.layers.partition_point(|l| l.lsn_range().start >= cont);
        let mut best_delta: Option<(usize, Lsn)> = None; // (index, effective end)
        let mut best_image: Option<usize> = None;
        // The newest image LSN below the best image's.
        let mut second_image: Option<Lsn> = None;
        for i in first..self.layers.len() {
            let l = &self.layers[i];
            let start = l.lsn_range().start;
            let delta_floor = best_delta.map(|(d, _)| self.layers[d].lsn_range().start);
            let bound = best_delta
                .map(|(_, e)| e)
                .max(best_image.map(|b| self.layers[b].lsn_range().start.next()));
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
                    let best = best_image.map(|b| self.layers[b].lsn_range().start);
                    if best.is_none_or(|b| b < start) {
                        second_image = second_image.max(best);
                        best_image = Some(i);
                    } else if best.is_some_and(|b| start < b) {
                        second_image = second_image.max(Some(start));
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
            (None, Some(img)) => Some(Hit {
                layer: &self.layers[img],
                lower: self.layers[img].lsn_range().start,
                floor: self.layers[img].lsn_range().start,
            }),
            (Some((d, eff)), img) => {
                let img_lsn = img.map(|i| self.layers[i].lsn_range().start);
                match img_lsn {
                    Some(il) if il.next() >= eff => {
                        let i = img.expect("image");
                        Some(Hit {
                            layer: &self.layers[i],
                            lower: il,
                            floor: il,
                        })
                    }
                    _ => {
                        let start = self.layers[d].lsn_range().start;
                        let lower = match img_lsn {
                            Some(il) if il >= start => il.next(),
                            _ => start,
                        };
                        // Below the image the history is this layer's only above any older
                        // image: an image may hold what no delta layer does (an ancestor's
                        // history, materialized when the timeline was detached from it).
                        let floor = second_image.map_or(start, |s| start.max(s.next()));
                        Some(Hit {
                            layer: &self.layers[d],
                            lower,
                            floor: floor.min(lower),
                        })
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    /// Every answer the rule the map implements allows, by looking at every layer. Equally
    /// good layers (same kind and reach) are all acceptable.
    fn brute_force(layers: &[Arc<LayerDesc>], key: &[u8], cont: Lsn) -> Vec<(String, Lsn)> {
        let holds: Vec<_> = layers
            .iter()
            .filter(|l| l.key_range.contains(key) && l.lsn_range.start < cont)
            .collect();
        let reach = |l: &LayerDesc| l.lsn_range.end.min(cont);
        let best_delta = holds
            .iter()
            .filter(|l| l.kind == LayerKind::Delta)
            .map(|l| reach(l))
            .max();
        let best_image = holds
            .iter()
            .filter(|l| l.kind == LayerKind::Image)
            .map(|l| l.lsn_range.start)
            .max();
        let images = || {
            holds
                .iter()
                .filter(|l| l.kind == LayerKind::Image && Some(l.lsn_range.start) == best_image)
                .map(|l| (l.file_name.clone(), l.lsn_range.start))
                .collect()
        };
        match (best_delta, best_image) {
            (None, None) => Vec::new(),
            (None, Some(_)) => images(),
            (Some(d), Some(i)) if i.next() >= d => images(),
            (Some(d), i) => holds
                .iter()
                .filter(|l| l.kind == LayerKind::Delta && reach(l) == d)
                .map(|l| {
                    let lower = match i {
                        Some(i) if i >= l.lsn_range.start => i.next(),
                        _ => l.lsn_range.start,
                    };
                    (l.file_name.clone(), lower)
                })
                .collect(),
        }
    }

    fn layers() -> impl Strategy<Value = Vec<Arc<LayerDesc>>> {
        let layer = (
            any::<bool>(),
            0u64..40,
            1u64..12,
            0u8..6,
            1u8..6,
            any::<bool>(),
        );
        proptest::collection::vec(layer, 0..14).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (img, start, width, k0, kw, unbounded))| {
                    let kind = if img {
                        LayerKind::Image
                    } else {
                        LayerKind::Delta
                    };
                    let end = if img { start + 1 } else { start + width };
                    Arc::new(LayerDesc {
                        file_name: format!("{i:03}"),
                        kind,
                        level: 0,
                        lsn_range: Lsn(start)..Lsn(end),
                        key_range: KeyRange {
                            start: Bytes::from(vec![k0]),
                            end: (!unbounded).then(|| Bytes::from(vec![k0 + kw])),
                        },
                        file_size: 0,
                    })
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn search_matches_brute_force(layers in layers(), key in 0u8..12, cont in 1u64..60) {
            // Distinct starts among overlapping layers of one kind are not required; ties are
            // broken by name in both.
            let map = LayerMap::new(layers.clone());
            let hit = map.search(&[key], Lsn(cont));
            if let Some(h) = &hit {
                // The floor is at or above the layer's own start, at or below where the read
                // goes on, and no image between it and there holds the key.
                prop_assert!(h.layer.lsn_range.start <= h.floor && h.floor <= h.lower);
                prop_assert!(!layers.iter().any(|l| l.kind == LayerKind::Image
                    && l.key_range.contains(&[key])
                    && h.floor <= l.lsn_range.start
                    && l.lsn_range.start.next() < h.lower));
            }
            let got = hit.map(|h| (h.layer.file_name.clone(), h.lower));
            let want = brute_force(&layers, &[key], Lsn(cont));
            match got {
                None => prop_assert!(want.is_empty(), "found nothing, expected one of {:?}", want),
                Some(g) => prop_assert!(want.contains(&g), "found {:?}, expected one of {:?}", g, want),
            }
        }
    }
}
