//! `stratakv`: inspect, verify and maintain a StrataKV store from the command line.
//!
//! Built with the crate's `cli` feature: `cargo install --path . --features cli`, or
//! `cargo run --features cli -- --store DIR info`.

mod show;
mod target;
mod verbs;

use clap::{Parser, Subcommand};

/// Success.
pub const EXIT_OK: i32 = 0;
/// A failure of another kind: I/O, object storage, redo.
pub const EXIT_FAILURE: i32 = 1;
/// Bad usage or a refused argument.
pub const EXIT_USAGE: i32 = 2;
/// No such store, timeline or file.
pub const EXIT_NOT_FOUND: i32 = 3;
/// Damage: `verify` found some, or a read met a checksum that failed.
pub const EXIT_DAMAGED: i32 = 4;
/// Another process has the store open.
pub const EXIT_LOCKED: i32 = 5;
/// The LSN or time is outside what the timeline can read.
pub const EXIT_LSN: i32 = 6;
/// A verb that changes the store, on a store opened read-only.
pub const EXIT_READ_ONLY: i32 = 7;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure of another kind (I/O, object storage, redo)
  2  bad usage or a refused argument
  3  no such store, timeline or file
  4  damage: verify found some, or a read met a failed checksum
  5  the store is open in another process (locked)
  6  the LSN or time is outside what the timeline can read
  7  a verb that changes the store, on a store given as a URL (read-only)

The store is --store DIR (or $STRATAKV_STORE): a store directory, opened as its owner (a
daemon holding it makes this fail with exit code 5); with --remote URL, that directory's
object storage. Or --store URL (file:///abs/dir, s3://bucket/prefix, az://container/prefix,
gs://bucket/prefix): a store in object storage, attached read-only into a temporary folder.
Object-store settings come from the environment (AWS_*, AZURE_*, GOOGLE_*) and -o KEY=VALUE
(object_store's keys: aws_endpoint, aws_allow_http, azure_storage_account_name, ...).";

/// Inspect, verify and maintain a StrataKV store.
#[derive(Parser, Debug)]
#[command(name = "stratakv", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The store: a directory, or the URL of a store in object storage (read-only).
    #[arg(
        short,
        long,
        env = "STRATAKV_STORE",
        global = true,
        value_name = "DIR|URL"
    )]
    store: Option<String>,
    /// With a store directory: the URL of its object storage. The store is opened as its
    /// owner, which claims a new generation as a restarted daemon does.
    #[arg(long, global = true, value_name = "URL")]
    remote: Option<String>,
    /// An object-store setting KEY=VALUE (repeatable), e.g. aws_endpoint=http://127.0.0.1:9000.
    #[arg(short = 'o', long = "remote-option", global = true, value_name = "KEY=VALUE", value_parser = parse_kv)]
    remote_options: Vec<(String, String)>,
    /// Print JSON for scripts instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: Verb,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Verb {
    /// The store, its generation, and every timeline with its ancestor, branch point,
    /// watermarks, leases and sizes.
    #[command(
        after_help = "Example:\n  stratakv --store ./data info\n  stratakv --store s3://bucket/tenants/acme info --json"
    )]
    Info,
    /// The layer files of a timeline: kind, level, key range, LSN range, size, residence.
    #[command(after_help = "Example:\n  stratakv --store ./data layers main")]
    Layers {
        /// The timeline's name.
        timeline: String,
    },
    /// The timelines as a tree of branches, with their branch points.
    #[command(after_help = "Example:\n  stratakv --store ./data tree")]
    Tree,
    /// The value of a key as of an LSN or a time, and how many layers the read visited.
    #[command(
        after_help = "Examples:\n  stratakv --store ./data get main page/42 --at 0/180\n  stratakv --store ./data get main page/42 --at 2026-12-04T10:00:00Z\n  stratakv --store ./data get main 0x00ff --hex"
    )]
    Get {
        /// The timeline's name.
        timeline: String,
        /// The key (text; with --hex, hex digits with or without 0x).
        key: String,
        /// An LSN (X/Y hex) or a time (RFC 3339, or @SECONDS); the newest LSN if left out.
        #[arg(long, value_name = "LSN|TIME")]
        at: Option<String>,
        /// The key is given in hex.
        #[arg(long)]
        hex: bool,
    },
    /// Every version of a key within the retention window, with the value after each.
    #[command(after_help = "Example:\n  stratakv --store ./data history main page/42")]
    History {
        /// The timeline's name.
        timeline: String,
        /// The key (text; with --hex, hex digits).
        key: String,
        /// The key is given in hex.
        #[arg(long)]
        hex: bool,
    },
    /// The LSN of the last commit at or before a time.
    #[command(
        name = "lsn-at",
        after_help = "Example:\n  stratakv --store ./data lsn-at main 2026-12-04T10:00:00Z"
    )]
    LsnAt {
        /// The timeline's name.
        timeline: String,
        /// A time: RFC 3339 (2026-12-04T10:00:00Z) or @SECONDS since the Unix epoch.
        time: String,
    },
    /// The commit time of the newest commit at or below an LSN.
    #[command(
        name = "time-at",
        after_help = "Example:\n  stratakv --store ./data time-at main 0/180"
    )]
    TimeAt {
        /// The timeline's name.
        timeline: String,
        /// An LSN, X/Y in hex.
        lsn: String,
    },
    /// Checks every checksum of every local file and, with a remote, of every object the
    /// newest indexes name; exits with 4 and names each damaged file and offset.
    #[command(
        after_help = "Examples:\n  stratakv --store ./data verify\n  stratakv --store ./data --remote s3://bucket/tenants/acme verify\n  stratakv --store file:///srv/bucket/tenants/acme verify --json"
    )]
    Verify,
    /// A layer file or a manifest in readable form.
    #[command(
        after_help = "Examples:\n  stratakv dump ./data/timelines/<id>/manifest\n  stratakv dump ./data/timelines/<id>/<layer file> --json"
    )]
    Dump {
        /// The file.
        file: std::path::PathBuf,
        /// Show at most this many versions of a layer file (all by default).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Creates a branch of a timeline at an LSN or a time.
    #[command(after_help = "Example:\n  stratakv --store ./data branch dev --from main --at 0/180")]
    Branch {
        /// The new timeline's name.
        name: String,
        /// The timeline to branch from.
        #[arg(long, value_name = "TIMELINE")]
        from: String,
        /// The branch point: an LSN or a time; the parent's newest LSN if left out.
        #[arg(long, value_name = "LSN|TIME")]
        at: Option<String>,
    },
    /// Point-in-time restore: moves a name to a new timeline branched at an LSN or a time;
    /// the timeline it named keeps a backup name.
    #[command(
        after_help = "Example:\n  stratakv --store ./data restore main --at 2026-12-04T10:00:00Z"
    )]
    Restore {
        /// The name to move.
        name: String,
        /// The point to restore to: an LSN or a time.
        #[arg(long, value_name = "LSN|TIME")]
        at: String,
        /// Branch from this timeline instead of the one `name` names.
        #[arg(long, value_name = "TIMELINE")]
        from: Option<String>,
    },
    /// Runs one GC pass on a timeline.
    #[command(after_help = "Example:\n  stratakv --store ./data gc main")]
    Gc {
        /// The timeline's name.
        timeline: String,
    },
    /// Runs compaction on a timeline now.
    #[command(after_help = "Example:\n  stratakv --store ./data compact main")]
    Compact {
        /// The timeline's name.
        timeline: String,
    },
    /// Removes uploaded layer files from local disk until they fit a budget.
    #[command(
        after_help = "Example:\n  stratakv --store ./data --remote s3://bucket/acme evict --budget 1GiB"
    )]
    Evict {
        /// The local disk budget for layer files: bytes, or with KiB, MiB, GiB.
        #[arg(long, value_parser = show::parse_size)]
        budget: u64,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_ascii_lowercase(), v.to_string()))
}

/// Why a command failed, and the exit code that says so.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(EXIT_USAGE, message)
    }

    /// The same failure with `what` before its message.
    pub fn context(mut self, what: &str) -> Failure {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl From<stratakv::Error> for Failure {
    fn from(e: stratakv::Error) -> Failure {
        use stratakv::ErrorKind as K;
        let code = match e.kind() {
            K::InvalidArgument | K::AlreadyExists => EXIT_USAGE,
            K::NotFound => EXIT_NOT_FOUND,
            K::Corruption => EXIT_DAMAGED,
            K::Locked => EXIT_LOCKED,
            K::BelowGcCutoff | K::BelowBranchPoint | K::LsnNotYetAvailable | K::LsnTimeout => {
                EXIT_LSN
            }
            K::ReadOnly => EXIT_READ_ONLY,
            _ => EXIT_FAILURE,
        };
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        Failure::new(code, message)
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stratakv: starting a runtime: {e}");
            std::process::exit(EXIT_FAILURE);
        }
    };
    let code = match runtime.block_on(verbs::run(&cli)) {
        Ok(code) => code,
        Err(f) => {
            if cli.json {
                show::print_json(&serde_json::json!({ "error": f.message, "exit_code": f.code }));
            }
            eprintln!("stratakv: {}", f.message);
            f.code
        }
    };
    drop(runtime);
    std::process::exit(code);
}
