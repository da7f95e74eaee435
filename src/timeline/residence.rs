//! Layers on local disk or only in object storage: downloading on demand.

use std::sync::Arc;

use tracing::Instrument;

use super::TimelineInner;
use crate::error::{Error, ErrorKind, Result};
use crate::id::TimelineId;
use crate::layer::{Layer, LayerFile};
use crate::remote::{Generation, layer_object};

/// A layer file of a timeline and where its bytes are, from
/// [`Timeline::layer_status`](crate::Timeline::layer_status).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerStatus {
    /// The layer: file name, kind, level, LSN and key ranges, size.
    pub desc: crate::format::LayerDesc,
    /// Whether its file is on local disk. A layer that is not is downloaded when a read
    /// needs it.
    pub resident: bool,
    /// The generation of its object in object storage, once uploaded; `None` without a
    /// remote or before its upload.
    pub remote_generation: Option<Generation>,
}

impl TimelineInner {
    /// Makes `layer` resident, downloading it if needed; concurrent callers share one download.
    /// A layer compaction or GC has replaced is not downloaded: the caller takes a new snapshot.
    pub(crate) async fn download_layer(
        &self,
        layer: &Arc<Layer>,
    ) -> Result<Option<Arc<LayerFile>>> {
        let d = &layer.desc;
        let span = tracing::info_span!(
            "download",
            timeline_id = %self.id,
            layer = %d.file_name,
            lsn_start = %d.lsn_range.start,
            lsn_end = %d.lsn_range.end,
            bytes = d.file_size,
        );
        self.download_layer_in_span(layer).instrument(span).await
    }

    async fn download_layer_in_span(&self, layer: &Arc<Layer>) -> Result<Option<Arc<LayerFile>>> {
        let _one = layer.download.lock().await;
        if let Some(file) = layer.file_quiet() {
            return Ok(Some(file));
        }
        if layer.is_retired() {
            // Replaced since the caller's snapshot: its new snapshot reads the replacement, and
            // a file downloaded now would be named by no manifest.
            return Ok(None);
        }
        let name = &layer.desc.file_name;
        let (Some(remote), Some(g)) = (&self.env.remote, layer.remote_generation()) else {
            return Err(Error::new(
                ErrorKind::Corruption,
                format!(
                    "timeline {}: layer {name} is named by the manifest but is neither on local disk nor in object storage",
                    self.name()
                ),
            ));
        };
        // The layer may be an ancestor's, met by a read falling through: its object lives
        // under the timeline whose directory holds it, not under the reader's.
        let owner = layer
            .path()
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<TimelineId>().ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "layer {} is not in a timeline directory",
                        layer.path().display()
                    ),
                )
            })?;
        let object = layer_object(owner, name, Generation(g))?;
        // The object's checksum is verified by the download; the footer and index when the
        // file is opened; every block when it is read.
        // The timeline whose directory the file goes into: this one, or the ancestor a read
        // fell through to. Its gate, not the reader's, keeps its directory in place.
        let Some(holder) = self.in_lineage(owner) else {
            // A detach took the ancestor out of this timeline's lineage since the snapshot:
            // the caller's new snapshot reads without it.
            return Ok(None);
        };
        let holder_gone = || holder.id != self.id && holder.gate.is_closed();
        let start = std::time::Instant::now();
        let bytes = match remote.storage.download(&object).await {
            Ok(b) => b,
            // The ancestor is being deleted (so this timeline was detached from it first), and
            // its objects may be gone: the caller's new snapshot no longer reads it.
            Err(_) if holder_gone() => return Ok(None),
            // Compaction or GC replaced the layer after the caller took its snapshot, and the
            // uploader has deleted its object since: nothing to download. The caller takes a new
            // snapshot, which names the layers that replaced it (or refuses an LSN now below the
            // cutoff).
            Err(e) if e.kind() == ErrorKind::NotFound && layer.is_retired() => return Ok(None),
            Err(e) => return Err(e),
        };
        if bytes.len() as u64 != layer.desc.file_size {
            return Err(Error::new(
                ErrorKind::Corruption,
                format!(
                    "object {object} is {} bytes, the manifest says {}",
                    bytes.len(),
                    layer.desc.file_size
                ),
            ));
        }
        // Written inside the holder's gate, so a delete never removes the directory under it.
        let _gate = if holder.id == self.id {
            self.enter_gate()?
        } else {
            match holder.gate.enter() {
                Some(g) => g,
                None => return Ok(None),
            }
        };
        // Compaction or GC may retire the layer while it downloads, and removes its file when
        // it does: a retired layer is not written, and one retired between the write and the
        // open is not an error either. Either way the caller retries on a new snapshot. (A file
        // written just after the removal is swept at the next open.)
        if layer.is_retired() {
            return Ok(None);
        }
        self.env.io.write_atomic(layer.path(), &bytes)?;
        ::metrics::counter!(crate::metrics::LAYER_DOWNLOADS).increment(1);
        ::metrics::counter!(crate::metrics::LAYER_DOWNLOAD_BYTES).increment(bytes.len() as u64);
        ::metrics::histogram!(crate::metrics::LAYER_DOWNLOAD_DURATION)
            .record(start.elapsed().as_secs_f64());
        let file = match LayerFile::open(layer.path(), &layer.desc, self.env.cache.clone()) {
            Ok(f) => f,
            Err(_) if layer.is_retired() => return Ok(None),
            Err(e) => return Err(e),
        };
        let file = layer.set_resident(file);
        if remote.disk_budget.is_some() {
            self.env.kick_background();
        }
        Ok(Some(file))
    }

    /// This timeline or the ancestor with id `id`, if it is in this timeline's lineage now.
    fn in_lineage(&self, id: TimelineId) -> Option<Arc<TimelineInner>> {
        let mut t = self.me.upgrade();
        while let Some(tl) = t {
            if tl.id == id {
                return Some(tl);
            }
            t = tl.ancestor.read().as_ref().map(|(a, _)| a.clone());
        }
        None
    }

    /// [`download_layer`](Self::download_layer) run on the store's runtime, for a read on the
    /// caller's executor: the request needs the store's reactor, and the file write and fsync
    /// must not block the caller's executor.
    pub(crate) async fn download_on_store(
        &self,
        layer: &Arc<Layer>,
    ) -> Result<Option<Arc<LayerFile>>> {
        let Some(me) = self.me.upgrade() else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("timeline {} was dropped", self.id),
            ));
        };
        let layer = layer.clone();
        self.env
            .on_runtime("downloading a layer", async move {
                me.download_layer(&layer).await
            })
            .await
    }

    /// Downloads the named layers (a heatmap), skipping any no longer in the timeline; errors
    /// are left for the read that needs the layer to report.
    pub(crate) async fn prefetch(&self, names: &[String]) {
        for name in names {
            let layer = self
                .snapshot()
                .map
                .layers()
                .iter()
                .find(|l| l.desc.file_name == *name)
                .cloned();
            if let Some(layer) = layer
                && self.check().is_ok()
            {
                let _ = self.download_layer(&layer).await;
            }
        }
    }

    /// [`download_layer`](Self::download_layer) for threads outside the async runtime.
    pub(crate) fn download_layer_blocking(&self, layer: &Arc<Layer>) -> Result<()> {
        if layer.is_resident() {
            return Ok(());
        }
        self.env.rt.block_on(self.download_layer(layer)).map(|_| ())
    }

    /// The layer's file, downloading it first if needed; for background threads.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if the layer was replaced and its object deleted meanwhile (a
    /// job that holds `layer_ops` never sees its own timeline's layers replaced).
    pub(crate) fn resident_file_blocking(&self, layer: &Arc<Layer>) -> Result<Arc<LayerFile>> {
        loop {
            if let Some(f) = layer.file_quiet() {
                return Ok(f);
            }
            self.download_layer_blocking(layer)?;
            if !layer.is_resident() && layer.is_retired() {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "timeline {}: layer {} was replaced and its object deleted",
                        self.name(),
                        layer.desc.file_name
                    ),
                ));
            }
        }
    }
}
