//! StrataKV: a versioned key-value store.
#![deny(missing_docs)]

mod error;
pub mod format;
mod id;
mod lsn;
mod redo;
mod value;

pub use error::{Error, ErrorKind, Result};
pub use id::TimelineId;
pub use lsn::Lsn;
pub use redo::{RedoRecord, SimpleRedo, WalRedo};
pub use value::{KeyRange, Value};
