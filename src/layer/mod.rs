//! Layers: the open and frozen in-memory layers, layer files, the block cache and the layer map.

mod append_vec;
mod cache;
mod file;
mod handle;
mod heads;
mod inmemory;
mod key_index;
mod map;
mod reaper;
mod value_arena;
mod versions;

pub(crate) use cache::BlockCache;
pub(crate) use file::{LayerFile, LayerIter, LayerWriter, layer_file_name};
pub(crate) use handle::{Layer, advance_clock};
pub(crate) use inmemory::InMemoryLayer;
pub(crate) use map::LayerMap;
pub(crate) use versions::Versions;
