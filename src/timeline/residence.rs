//! Layers on local disk or only in object storage: downloading on demand.

use std::sync::Arc;

use super::TimelineInner;
use crate::error::{Error, ErrorKind, Result};
use crate::layer::{Layer, LayerFile};

impl TimelineInner {
    /// Makes `layer` resident, downloading it if needed; concurrent callers share one download.
    pub(crate) async fn download_layer(&self, layer: &Arc<Layer>) -> Result<()> {
        let _one = layer.download.lock().await;
        if layer.is_resident() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Corruption,
            format!(
                "timeline {}: layer {} is named by the manifest but not on local disk, and the store has no remote",
                self.name(),
                layer.desc.file_name
            ),
        ))
    }

    /// [`download_layer`](Self::download_layer) for threads outside the async runtime.
    pub(crate) fn download_layer_blocking(&self, layer: &Arc<Layer>) -> Result<()> {
        if layer.is_resident() {
            return Ok(());
        }
        futures_lite_block_on(self.download_layer(layer))
    }

    /// The layer's file, downloading it first if needed; for background threads.
    pub(crate) fn resident_file_blocking(&self, layer: &Arc<Layer>) -> Result<Arc<LayerFile>> {
        loop {
            if let Some(f) = layer.file() {
                return Ok(f);
            }
            self.download_layer_blocking(layer)?;
        }
    }
}

/// Runs a future to completion on the current thread.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}
