//! Which store a command works on, opening it, and the progress bars.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use stratakv::remote::RemoteStorage;
use stratakv::{Store, StoreOptions};

use crate::Failure;

/// The store a command names: a directory (with its remote, if given), or a store in object
/// storage, read-only.
pub enum Target {
    Dir {
        path: PathBuf,
        remote: Option<RemoteStorage>,
    },
    Url {
        url: String,
        remote: RemoteStorage,
    },
}

impl Target {
    /// Parses `--store` (a directory, or a URL with a scheme) and `--remote`.
    pub fn parse(
        store: &str,
        remote: Option<&str>,
        options: &[(String, String)],
    ) -> Result<Target, Failure> {
        if looks_like_url(store) {
            if remote.is_some() {
                return Err(Failure::usage(format!(
                    "--remote goes with a store directory; {store:?} is already a URL"
                )));
            }
            return Ok(Target::Url {
                url: store.to_string(),
                remote: storage(store, options)?,
            });
        }
        let path = PathBuf::from(store);
        if !path.join("CATALOG").is_file() {
            return Err(Failure::new(
                crate::EXIT_NOT_FOUND,
                format!(
                    "{} is not a StrataKV store (no CATALOG file there); a store in object storage is given as a URL (file:///abs/dir, s3://bucket/prefix, az://container/prefix, gs://bucket/prefix)",
                    path.display()
                ),
            ));
        }
        let remote = remote.map(|r| storage(r, options)).transpose()?;
        Ok(Target::Dir { path, remote })
    }

    /// How the store is shown in messages.
    pub fn describe(&self) -> String {
        match self {
            Target::Dir { path, remote: None } => path.display().to_string(),
            Target::Dir {
                path,
                remote: Some(r),
            } => format!("{} (remote {})", path.display(), describe_remote(r)),
            Target::Url { url, .. } => format!("{url} (read-only)"),
        }
    }

    /// Whether the store is opened read-only.
    pub fn read_only(&self) -> bool {
        matches!(self, Target::Url { .. })
    }

    /// Refuses a maintenance verb on a store opened read-only.
    pub fn writable(&self, verb: &str) -> Result<(), Failure> {
        match self {
            Target::Url { url, .. } => Err(Failure::new(
                crate::EXIT_READ_ONLY,
                format!(
                    "`{verb}` changes the store, and a store given as a URL ({url}) is opened read-only; run it on the owner's directory (--store DIR --remote {url})"
                ),
            )),
            Target::Dir { .. } => Ok(()),
        }
    }

    /// Opens the store: the directory as its owner (recovering it as the engine does at
    /// every open, with no background compaction or GC), or the URL read-only into a
    /// temporary folder (an attach: the catalog and indexes are downloaded, layers when a
    /// read needs them).
    pub async fn open(&self, quiet: bool) -> Result<Opened, Failure> {
        let (options, cache, what) = match self {
            Target::Dir { path, remote } => {
                let mut o = StoreOptions::new(path);
                if let Some(r) = remote {
                    o = o.remote(r.clone());
                }
                (o, None, "opening")
            }
            Target::Url { remote, .. } => {
                let cache = tempfile::Builder::new()
                    .prefix("stratakv-cli-")
                    .tempdir()
                    .map_err(|e| {
                        Failure::new(
                            crate::EXIT_FAILURE,
                            format!("creating a temporary folder to attach into: {e}"),
                        )
                    })?;
                let o = StoreOptions::new(cache.path().join("store"))
                    .remote(remote.clone())
                    .read_only(true)
                    .node_id("stratakv-cli");
                (o, Some(cache), "attaching")
            }
        };
        let options = options
            .background_period(None)
            .wait_lsn_timeout(Duration::from_millis(1));
        let bar = spinner(quiet, format!("{what} {}", self.describe()));
        let store = Store::open(options).await;
        bar.finish_and_clear();
        Ok(Opened {
            store: store.map_err(|e| Failure::from(e).context(&self.describe()))?,
            cache,
        })
    }
}

/// An open store, and the temporary folder a read-only one lives in.
pub struct Opened {
    pub store: Store,
    cache: Option<tempfile::TempDir>,
}

impl Opened {
    /// Closes the store, then removes the temporary folder of a read-only one.
    pub async fn close(self) -> Result<(), Failure> {
        let closed = self.store.close().await;
        drop(self.cache);
        closed.map_err(|e| Failure::from(e).context("closing the store"))
    }
}

fn looks_like_url(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
    })
}

/// The prefix of the environment variables each scheme's backend reads, as object_store's
/// `from_env` builders do.
fn env_prefix(url: &str) -> Option<&'static str> {
    let scheme = url.split_once("://")?.0;
    match scheme {
        "s3" | "s3a" => Some("AWS_"),
        "az" | "adl" | "azure" | "abfs" | "abfss" => Some("AZURE_"),
        "gs" => Some("GOOGLE_"),
        _ => None,
    }
}

/// Storage at `url`, configured from the environment (`AWS_*`, `AZURE_*`, `GOOGLE_*`) and
/// then from the `-o KEY=VALUE` options.
fn storage(url: &str, options: &[(String, String)]) -> Result<RemoteStorage, Failure> {
    let mut opts: Vec<(String, String)> = match env_prefix(url) {
        Some(p) => std::env::vars()
            .filter(|(k, _)| k.starts_with(p))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        None => Vec::new(),
    };
    opts.extend(options.iter().cloned());
    RemoteStorage::from_url(url, opts).map_err(Failure::from)
}

fn describe_remote(r: &RemoteStorage) -> String {
    format!("{} {}", r.store(), r.prefix().as_ref())
}

/// Whether progress is drawn: only on a terminal, and never with `--json`.
pub fn draw(json: bool) -> bool {
    !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// A spinner with `message`, drawn to stderr unless `quiet`.
pub fn spinner(quiet: bool, message: String) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A bar over `total` bytes, drawn to stderr unless `quiet`.
pub fn bytes_bar(quiet: bool, total: u64, message: String) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_message(message);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The directory a local store's path names, for `verify`.
pub fn dir_of(target: &Target) -> Option<&Path> {
    match target {
        Target::Dir { path, .. } => Some(path),
        Target::Url { .. } => None,
    }
}

/// The remote of a target, if any.
pub fn remote_of(target: &Target) -> Option<&RemoteStorage> {
    match target {
        Target::Dir { remote, .. } => remote.as_ref(),
        Target::Url { remote, .. } => Some(remote),
    }
}
