//! Looking inside a store without opening it: checking every checksum, and showing a layer
//! file or a manifest in readable form. For operators' tools (the `stratakv` command-line
//! tool is built on this module) and for a daemon that wants to check a store it is about to
//! open.
//!
//! Nothing here takes the store's lock, writes or deletes a file or an object: it reads the
//! files of a store directory ([`verify_dir`], [`dump_file`]) or the objects of a store in
//! object storage ([`verify_remote`]) as they are.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use stratakv::{Lsn, Store, StoreOptions, Value, inspect};
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(StoreOptions::new(dir.path())).await?;
//! let main = store.create_timeline("main").await?;
//! let mut w = main.writer()?;
//! w.put(b"k", Lsn(0x10), Value::image("v"))?;
//! w.finish_write(Lsn(0x10))?;
//! main.flush().await?;
//! store.close().await?;
//!
//! let report = inspect::verify_dir(dir.path(), &mut |_| {})?;
//! assert!(report.is_clean(), "{:?}", report.damaged);
//! let layer = dir.path().join("timelines").join(main.id().to_string()).join(&main.layers()[0].file_name);
//! match inspect::dump_file(&layer)? {
//!     inspect::Dump::Layer(l) => assert_eq!(l.blocks[0].entries[0].key, "k"),
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), stratakv::Error>(())
//! # }).unwrap();
//! ```

mod dump;
mod verify;

pub use dump::{BlockDump, Dump, DumpEntry, LayerDump, ManifestDump, dump_file};
pub use verify::{Damage, VerifyProgress, VerifyReport, verify_dir, verify_remote};
