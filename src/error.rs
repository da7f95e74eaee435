//! The one public error type.

use std::fmt;
use std::path::Path;

/// A `Result` whose error defaults to the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is: the part a caller can act on.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller passed something the store refuses: an empty or oversized key, an LSN
    /// that goes backwards, a duplicate `(key, lsn)`, a malformed name. Nothing changed.
    InvalidArgument,
    /// The named timeline, branch or file does not exist.
    NotFound,
    /// The named timeline or branch exists already.
    AlreadyExists,
    /// A read asked for an LSN the timeline has not reached, and the wait timed out.
    LsnTimeout,
    /// A read that does not wait ([`Timeline::get_now`](crate::Timeline::get_now)) asked for
    /// an LSN above the timeline's `last_record_lsn`.
    LsnNotYetAvailable,
    /// A read asked for an LSN below the timeline's GC cutoff.
    BelowGcCutoff,
    /// A read of a branch asked for an LSN below its branch point: that history belongs to
    /// the ancestor (read it there, [`Timeline::ancestor`](crate::Timeline::ancestor) names
    /// it), not to the branch.
    BelowBranchPoint,
    /// Bytes on disk or in object storage failed their checksum or do not parse.
    Corruption,
    /// This node lost its generation: another node owns the store now.
    Fenced,
    /// The WAL-redo hook failed, or reconstruction found no base for a delta.
    Redo,
    /// The directory is locked by another open store.
    Locked,
    /// A local I/O operation failed.
    Io,
    /// The store failed in a way that makes carrying on unsafe (a failed fsync); reopen it.
    Poisoned,
    /// The store or timeline is closed.
    Closed,
    /// The store was opened read-only ([`StoreOptions::read_only`](crate::StoreOptions::read_only)):
    /// it writes, uploads and deletes nothing, so it refuses every call that would.
    ReadOnly,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::LsnTimeout => "LSN wait timed out",
            ErrorKind::LsnNotYetAvailable => "LSN not yet available",
            ErrorKind::BelowGcCutoff => "below GC cutoff",
            ErrorKind::BelowBranchPoint => "below branch point",
            ErrorKind::Corruption => "corruption",
            ErrorKind::Fenced => "fenced",
            ErrorKind::Redo => "redo failed",
            ErrorKind::Locked => "locked",
            ErrorKind::Io => "I/O error",
            ErrorKind::Poisoned => "poisoned",
            ErrorKind::Closed => "closed",
            ErrorKind::ReadOnly => "read-only",
        })
    }
}

/// An error from the store: a [`kind`](Error::kind) to act on and a message that names the
/// key, LSN, file and offset involved.
///
/// Cheap to clone (the cause is shared), so the store can keep the last failure of its
/// background work and hand out copies ([`Store::background_error`](crate::Store::background_error)).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The byte offset in the file named by the message, for corruption found at one.
    offset: Option<u64>,
    #[source]
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            offset: None,
            source: None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The detail: which key, LSN, file and offset.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For a [`Corruption`](ErrorKind::Corruption) error found at a place in a file or object
    /// (the one the message names): the byte offset of that place, as the message gives it.
    /// `None` for errors that name no offset.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// Attaches the underlying cause.
    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        self.source = Some(std::sync::Arc::new(source));
        self
    }

    /// The same error (kind and cause) with `context` before its message: where it happened.
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn corruption(path: &Path, offset: u64, what: impl fmt::Display) -> Error {
        let mut e = Error::new(
            ErrorKind::Corruption,
            format!("{} at offset {offset}: {what}", path.display()),
        );
        e.offset = Some(offset);
        e
    }

    pub(crate) fn io(what: impl fmt::Display, path: &Path, err: std::io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("{what} {}: {err}", path.display())).with_source(err)
    }
}

/// Shows a key for an error message: printable ASCII as text, anything else as hex.
pub(crate) fn show_key(key: &[u8]) -> String {
    const MAX: usize = 64;
    let shown = &key[..key.len().min(MAX)];
    let mut s = if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(shown))
    } else {
        let mut h = String::from("0x");
        for b in shown {
            h.push_str(&format!("{b:02x}"));
        }
        h
    };
    if key.len() > MAX {
        s.push_str(&format!("… ({} bytes)", key.len()));
    }
    s
}

/// The text a caught panic carried, if it was a string.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_string())
}
