//! Layers on local disk or only in object storage: downloading on demand.

use std::sync::Arc;

use super::TimelineInner;
use crate::error::{Error, ErrorKind, Result};
use crate::id::TimelineId;
use crate::layer::{Layer, LayerFile};
use crate::remote::{Generation, layer_object};

impl TimelineInner {
    /// Makes `layer` resident, downloading it if needed; concurrent callers share one download.
    /// A layer compaction or GC has replaced is not downloaded: the caller takes a new snapshot.
    pub(crate) async fn download_layer(&self, layer: &Arc<Layer>) -> Result<()> {
        let _one = layer.download.lock().await;
        if layer.is_resident() {
            return Ok(());
        }
        if layer.is_retired() {
            // Replaced since the caller's snapshot: its new snapshot reads the replacement, and
            // a file downloaded now would be named by no manifest.
            return Ok(());
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
        let bytes = match remote.storage.download(&object).await {
            Ok(b) => b,
            // Compaction or GC replaced the layer after the caller took its snapshot, and the
            // uploader has deleted its object since: nothing to download. The caller takes a new
            // snapshot, which names the layers that replaced it (or refuses an LSN now below the
            // cutoff).
            Err(e) if e.kind() == ErrorKind::NotFound && layer.is_retired() => return Ok(()),
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
        // Written inside the gate, so a delete never removes the directory under it.
        let _gate = self.enter_gate()?;
        self.env.io.write_atomic(layer.path(), &bytes)?;
        let file = LayerFile::open(layer.path(), &layer.desc, self.env.cache.clone())?;
        layer.set_resident(file);
        if remote.disk_budget.is_some() {
            self.env.kick_background();
        }
        Ok(())
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
        match &self.env.remote {
            Some(r) => r.runtime.block_on(self.download_layer(layer)),
            None => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::new(ErrorKind::Io, format!("runtime: {e}")))?
                .block_on(self.download_layer(layer)),
        }
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
