//! Layers on local disk or only in object storage: downloading on demand.

use std::sync::Arc;

use super::TimelineInner;
use crate::error::{Error, ErrorKind, Result};
use crate::layer::{Layer, LayerFile};
use crate::remote::{Generation, layer_object};

impl TimelineInner {
    /// Makes `layer` resident, downloading it if needed; concurrent callers share one download.
    pub(crate) async fn download_layer(&self, layer: &Arc<Layer>) -> Result<()> {
        let _one = layer.download.lock().await;
        if layer.is_resident() {
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
        let object = layer_object(self.id, name, Generation(g))?;
        // The object's checksum is verified by the download; the footer and index when the
        // file is opened; every block when it is read.
        let bytes = remote.storage.download(&object).await?;
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
    pub(crate) fn resident_file_blocking(&self, layer: &Arc<Layer>) -> Result<Arc<LayerFile>> {
        loop {
            if let Some(f) = layer.file_quiet() {
                return Ok(f);
            }
            self.download_layer_blocking(layer)?;
        }
    }
}
