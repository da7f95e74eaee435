//! Every on-disk encoding, each with its byte layout beside its code.
//!
//! Little-endian throughout. Each structure carries a CRC32 (crc32fast) and is decoded with
//! bounds checks, so corrupt bytes are an error of kind
//! [`Corruption`](crate::ErrorKind::Corruption) naming the file and offset, never a panic.

mod block;
mod catalog;
mod cursor;
mod envelope;
mod data_block;
mod footer;
mod index;
mod manifest;

pub use block::{Compression, decode_block, encode_block};
pub use catalog::{Catalog, CatalogEntry};
pub use data_block::{DataBlock, DataBlockBuilder, Entry};
pub use footer::{FOOTER_TRAILER_LEN, Footer, LayerKind};
pub use index::{IndexEntry, decode_index, encode_index};
pub use manifest::{LayerDesc, Manifest};
