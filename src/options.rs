//! Options for opening a store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::Compression;
use crate::redo::{SimpleRedo, WalRedo};

/// How to open a [`Store`](crate::Store): the directory, the redo hook, and tuning.
///
/// Every setting has a default suited to a storage daemon; change only what you measured.
///
/// ```
/// use stratakv::StoreOptions;
/// let opts = StoreOptions::new("./data").freeze_bytes(8 << 20).max_key_len(128);
/// assert_eq!(opts.path(), std::path::Path::new("./data"));
/// ```
#[derive(Clone)]
pub struct StoreOptions {
    pub(crate) path: PathBuf,
    pub(crate) redo: Arc<dyn WalRedo>,
    pub(crate) max_key_len: usize,
    pub(crate) max_value_len: usize,
    pub(crate) freeze_bytes: usize,
    pub(crate) freeze_lsn_distance: u64,
    pub(crate) max_frozen_layers: usize,
    pub(crate) block_size: usize,
    pub(crate) compression: Compression,
    pub(crate) block_cache_bytes: usize,
    pub(crate) wait_lsn_timeout: Duration,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("path", &self.path)
            .field("max_key_len", &self.max_key_len)
            .field("max_value_len", &self.max_value_len)
            .field("freeze_bytes", &self.freeze_bytes)
            .field("freeze_lsn_distance", &self.freeze_lsn_distance)
            .field("max_frozen_layers", &self.max_frozen_layers)
            .field("block_size", &self.block_size)
            .field("compression", &self.compression)
            .field("block_cache_bytes", &self.block_cache_bytes)
            .field("wait_lsn_timeout", &self.wait_lsn_timeout)
            .finish_non_exhaustive()
    }
}

/// The largest key any store accepts: keys are stored with a 16-bit length.
pub const MAX_KEY_LEN_LIMIT: usize = u16::MAX as usize;

impl StoreOptions {
    /// Options for a store in the directory `path`, with every default.
    pub fn new(path: impl AsRef<Path>) -> StoreOptions {
        StoreOptions {
            path: path.as_ref().to_path_buf(),
            redo: Arc::new(SimpleRedo),
            max_key_len: 1024,
            max_value_len: 16 << 20,
            freeze_bytes: 64 << 20,
            freeze_lsn_distance: 1 << 30,
            max_frozen_layers: 4,
            block_size: 8 << 10,
            compression: Compression::Zstd(1),
            block_cache_bytes: 256 << 20,
            wait_lsn_timeout: Duration::from_secs(10),
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The WAL-redo hook that turns delta records into values. Default: [`SimpleRedo`].
    pub fn redo(mut self, redo: Arc<dyn WalRedo>) -> Self {
        self.redo = redo;
        self
    }

    /// The longest key accepted, in bytes (default 1024, at most 65535).
    pub fn max_key_len(mut self, n: usize) -> Self {
        self.max_key_len = n;
        self
    }

    /// The longest value or delta record accepted, in bytes (default 16 MiB).
    pub fn max_value_len(mut self, n: usize) -> Self {
        self.max_value_len = n;
        self
    }

    /// The open in-memory layer is frozen and flushed once it holds this many bytes
    /// (default 64 MiB).
    pub fn freeze_bytes(mut self, n: usize) -> Self {
        self.freeze_bytes = n;
        self
    }

    /// The open in-memory layer is frozen once it spans this many LSNs (default 2^30).
    pub fn freeze_lsn_distance(mut self, n: u64) -> Self {
        self.freeze_lsn_distance = n;
        self
    }

    /// Frozen layers waiting for flush beyond which the writer waits (default 4).
    pub fn max_frozen_layers(mut self, n: usize) -> Self {
        self.max_frozen_layers = n;
        self
    }

    /// Target size of a data block before compression (default 8 KiB).
    pub fn block_size(mut self, n: usize) -> Self {
        self.block_size = n;
        self
    }

    /// zstd level for new blocks, or `None` to store them raw (default level 1).
    pub fn zstd_level(mut self, level: Option<i32>) -> Self {
        self.compression = level.map_or(Compression::None, Compression::Zstd);
        self
    }

    /// Bytes of decoded blocks kept in memory (default 256 MiB).
    pub fn block_cache_bytes(mut self, n: usize) -> Self {
        self.block_cache_bytes = n;
        self
    }

    /// How long a read above `last_record_lsn` waits for it (default 10 s).
    pub fn wait_lsn_timeout(mut self, t: Duration) -> Self {
        self.wait_lsn_timeout = t;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::invalid(what));
        if self.max_key_len == 0 || self.max_key_len > MAX_KEY_LEN_LIMIT {
            return bad(format!(
                "max_key_len {} must be in 1..={MAX_KEY_LEN_LIMIT}",
                self.max_key_len
            ));
        }
        if self.max_value_len > crate::format::MAX_VALUE_LEN {
            return bad(format!(
                "max_value_len {} must be at most {}",
                self.max_value_len,
                crate::format::MAX_VALUE_LEN
            ));
        }
        if self.block_size < 512 || self.block_size > (16 << 20) {
            return bad(format!(
                "block_size {} must be in 512..=16 MiB",
                self.block_size
            ));
        }
        if self.max_frozen_layers == 0 {
            return bad("max_frozen_layers must be at least 1".to_string());
        }
        if self.freeze_lsn_distance == 0 {
            return bad("freeze_lsn_distance must be at least 1".to_string());
        }
        if let Compression::Zstd(level) = self.compression
            && !zstd::compression_level_range().contains(&level)
        {
            return bad(format!("zstd level {level} is out of range"));
        }
        Ok(())
    }
}
