//! `verify`: every checksum of every file of a store directory, or of every object of a store
//! in object storage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::format::DataBlock;
use crate::format::{
    Catalog, Footer, KeyFilter, LayerDesc, Manifest, RemoteIndex, decode_block_ref, decode_index,
    decode_owner, decode_time_index, decode_wal_segment,
};
use crate::id::TimelineId;
use crate::layout::{
    CATALOG_FILE, MANIFEST_FILE, OWNER_FILE, TIME_INDEX_FILE, TIMELINES_DIR, WAL_DIR,
};
use crate::remote::{Generation, RemoteStorage, layer_object};

/// One damaged place found by [`verify_dir`] or [`verify_remote`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Damage {
    /// The file (its path) or object (its full name in the object store) that is damaged.
    pub file: String,
    /// The byte offset of the damage in it, where the check that failed knows one (the
    /// block, record or field whose checksum or structure is wrong).
    pub offset: Option<u64>,
    /// What is wrong, as an error of kind [`Corruption`](ErrorKind::Corruption) (or
    /// [`NotFound`](ErrorKind::NotFound) for a file the store needs that is missing), its
    /// message naming the file and offset.
    pub error: Error,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error.message())
    }
}

/// What a verification found.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Files or objects read and checked.
    pub files_checked: usize,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Every damaged place found, in the order checked. Empty when every checksum holds.
    pub damaged: Vec<Damage>,
    /// What is not damage but is worth knowing: a torn last record that an open would cut
    /// off as a write interrupted by a crash, files no manifest names (removed at the next
    /// open), layers not on local disk (in object storage only).
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// Whether nothing was found damaged.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
    }

    fn damage(&mut self, file: impl Into<String>, error: Error) {
        self.damaged.push(Damage {
            file: file.into(),
            offset: error.offset(),
            error,
        });
    }
}

/// How far a verification has got, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProgress {
    /// Files or objects checked so far.
    pub files_done: usize,
    /// Files or objects to check in all.
    pub files_total: usize,
    /// Bytes checked so far.
    pub bytes_done: u64,
    /// Bytes to check in all.
    pub bytes_total: u64,
}

/// What a file of a store is, and so how to check it.
#[derive(Clone, Debug)]
enum Kind {
    Catalog,
    Owner,
    Manifest,
    TimeIndex,
    Wal { last: bool },
    Layer(Option<LayerDesc>),
}

/// Checks every checksum of every file in the store directory `dir`: the catalog, the owner
/// record, every WAL segment, and per timeline its manifest, its time index and every layer
/// file the manifest names, each data block, the key filter, the index and the footer.
/// Checks go on past damage, so the report names every damaged file and offset. Reads only;
/// the store may be open meanwhile (files replaced under the check may be reported missing).
///
/// `progress` is called after each file.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] if `dir` is not a store (no `CATALOG` file);
/// [`ErrorKind::Io`] if a directory cannot be listed. Damage is not an error: it is in the
/// report.
pub fn verify_dir(dir: &Path, progress: &mut dyn FnMut(VerifyProgress)) -> Result<VerifyReport> {
    let catalog_path = dir.join(CATALOG_FILE);
    if !catalog_path.is_file() {
        return Err(Error::invalid(format!(
            "{} is not a StrataKV store: it has no {CATALOG_FILE} file",
            dir.display()
        )));
    }
    let mut report = VerifyReport::default();
    let mut plan: Vec<(PathBuf, Kind)> = vec![(catalog_path.clone(), Kind::Catalog)];
    let owner = dir.join(OWNER_FILE);
    let has_remote = owner.exists();
    if has_remote {
        plan.push((owner, Kind::Owner));
    }
    let wal_dir = dir.join(WAL_DIR);
    if wal_dir.is_dir() {
        let mut segs: Vec<PathBuf> = list(&wal_dir)?
            .into_iter()
            .filter(|n| n.ends_with(".seg"))
            .map(|n| wal_dir.join(n))
            .collect();
        segs.sort();
        let n = segs.len();
        plan.extend(
            segs.into_iter()
                .enumerate()
                .map(|(i, p)| (p, Kind::Wal { last: i + 1 == n })),
        );
    }
    // The catalog names the timelines; a damaged one still lets every directory be checked.
    let named: Option<BTreeMap<TimelineId, String>> = std::fs::read(&catalog_path)
        .ok()
        .and_then(|b| Catalog::decode(&b, &catalog_path).ok())
        .map(|c| c.timelines.into_iter().map(|e| (e.id, e.name)).collect());
    let tl_root = dir.join(TIMELINES_DIR);
    let mut dirs: Vec<String> = if tl_root.is_dir() {
        list(&tl_root)?
    } else {
        Vec::new()
    };
    dirs.sort();
    if let Some(named) = &named {
        for (id, name) in named {
            if !dirs.contains(&id.to_string()) {
                report.damage(
                    tl_root.join(id.to_string()).display().to_string(),
                    Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "{}: the catalog names timeline {name:?} but its directory is missing",
                            tl_root.join(id.to_string()).display()
                        ),
                    ),
                );
            }
        }
    }
    for d in dirs {
        let tdir = tl_root.join(&d);
        if let Some(named) = &named
            && !named.keys().any(|id| id.to_string() == d)
        {
            report.notes.push(format!(
                "{}: not named by the catalog (left by a crash; removed at the next open)",
                tdir.display()
            ));
            continue;
        }
        let mpath = tdir.join(MANIFEST_FILE);
        plan.push((mpath.clone(), Kind::Manifest));
        let tpath = tdir.join(TIME_INDEX_FILE);
        if tpath.exists() {
            plan.push((tpath, Kind::TimeIndex));
        }
        let manifest = std::fs::read(&mpath)
            .ok()
            .and_then(|b| Manifest::decode(&b, &mpath).ok());
        let files = list(&tdir)?;
        match &manifest {
            Some(m) => {
                for l in &m.layers {
                    let path = tdir.join(&l.file_name);
                    if path.exists() {
                        plan.push((path, Kind::Layer(Some(l.clone()))));
                    } else if has_remote {
                        report.notes.push(format!(
                            "{}: not on local disk (in object storage only; verify the remote to check it)",
                            path.display()
                        ));
                    } else {
                        report.damage(
                            path.display().to_string(),
                            Error::new(
                                ErrorKind::NotFound,
                                format!(
                                    "{}: named by the manifest but missing, and the store has no remote",
                                    path.display()
                                ),
                            ),
                        );
                    }
                }
                for f in files {
                    if f != MANIFEST_FILE
                        && f != TIME_INDEX_FILE
                        && !m.layers.iter().any(|l| l.file_name == f)
                    {
                        report.notes.push(format!(
                            "{}: not named by the manifest (left by a crash; removed at the next open)",
                            tdir.join(&f).display()
                        ));
                    }
                }
            }
            // The manifest is damaged (reported when it is checked): its layers are checked
            // on their own, without what it says of them.
            None => plan.extend(
                files
                    .into_iter()
                    .filter(|f| f.ends_with(".layer"))
                    .map(|f| (tdir.join(f), Kind::Layer(None))),
            ),
        }
    }
    let sizes: Vec<u64> = plan
        .iter()
        .map(|(p, _)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .collect();
    let mut at = VerifyProgress {
        files_done: 0,
        files_total: plan.len(),
        bytes_done: 0,
        bytes_total: sizes.iter().sum(),
    };
    progress(at);
    for ((path, kind), size) in plan.into_iter().zip(sizes) {
        let shown = path.display().to_string();
        match std::fs::read(&path) {
            Ok(bytes) => {
                for e in check(&bytes, &path, &kind, &mut report.notes) {
                    report.damage(shown.clone(), e);
                }
                report.files_checked += 1;
                report.bytes_checked += bytes.len() as u64;
            }
            Err(e) => report.damage(shown, Error::io("reading", &path, e)),
        }
        at.files_done += 1;
        at.bytes_done += size;
        progress(at);
    }
    Ok(report)
}

/// Checks every object of the store in `storage` that its newest catalog and indexes name:
/// the catalog, each timeline's newest index, every layer object an index names (its CRC32
/// trailer, then each block, the filter, the index and the footer inside it, so that the
/// report gives the offset of the damage), and every WAL chunk. Reads only.
///
/// `progress` is called after each object.
///
/// # Errors
/// [`ErrorKind::NotFound`] if there is no catalog under the prefix (not a store);
/// [`ErrorKind::Io`] if the objects cannot be listed.
pub async fn verify_remote(
    storage: &RemoteStorage,
    progress: &mut dyn FnMut(VerifyProgress),
) -> Result<VerifyReport> {
    let objects: BTreeMap<String, u64> = storage.list("").await?.into_iter().collect();
    let newest = |dir: &str, stem: &str| {
        objects
            .keys()
            .filter_map(|n| {
                let rest = n.strip_prefix(dir)?.strip_prefix(stem)?.strip_prefix('-')?;
                (rest.len() == 8)
                    .then(|| u32::from_str_radix(rest, 16).ok())
                    .flatten()
                    .map(|g| (g, n.clone()))
            })
            .max()
    };
    let Some((_, catalog)) = newest("", "catalog") else {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "no catalog in object storage under {:?}: not a StrataKV store",
                storage.prefix().as_ref()
            ),
        ));
    };
    let mut report = VerifyReport::default();
    let mut plan: Vec<(String, Kind)> = vec![(catalog, Kind::Catalog)];
    let mut ids: Vec<TimelineId> = objects
        .keys()
        .filter_map(|n| {
            n.strip_prefix("timelines/")?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    ids.dedup();
    let mut indexes = Vec::new();
    for id in ids {
        match newest(&format!("timelines/{id}/"), "index") {
            Some((g, name)) => indexes.push((id, g, name)),
            None => report.notes.push(format!(
                "timelines/{id}/: objects but no index (a timeline being created or deleted)"
            )),
        }
    }
    // The indexes first: they say which layer objects to check.
    let mut at = VerifyProgress {
        files_done: 0,
        files_total: 1 + indexes.len(),
        bytes_done: 0,
        bytes_total: 0,
    };
    for (id, _, name) in &indexes {
        let Some(body) = fetch(storage, name, &mut report).await? else {
            continue;
        };
        let shown = shown_name(storage, name);
        match RemoteIndex::decode(&body, Path::new(&shown)) {
            Ok(idx) => {
                for (layer, g) in &idx.layer_generations {
                    let object = layer_object(*id, layer, Generation(*g))?;
                    if objects.contains_key(&object) {
                        let desc = idx.manifest.layers.iter().find(|d| d.file_name == *layer);
                        plan.push((object, Kind::Layer(desc.cloned())));
                    } else {
                        report.damage(
                            shown_name(storage, &object),
                            Error::new(
                                ErrorKind::NotFound,
                                format!(
                                    "{}: named by index {shown} but missing",
                                    shown_name(storage, &object)
                                ),
                            ),
                        );
                    }
                }
            }
            Err(e) => report.damage(shown, e),
        }
        at.files_done += 1;
    }
    plan.extend(
        objects
            .keys()
            .filter(|n| n.starts_with("wal/"))
            .map(|n| (n.clone(), Kind::Wal { last: false })),
    );
    at.files_total = at.files_done + plan.len();
    at.bytes_total = plan.iter().map(|(n, _)| objects[n]).sum();
    progress(at);
    for (name, kind) in plan {
        if let Some(body) = fetch(storage, &name, &mut report).await? {
            let shown = shown_name(storage, &name);
            for e in check(&body, Path::new(&shown), &kind, &mut report.notes) {
                report.damage(shown.clone(), e);
            }
        }
        at.files_done += 1;
        at.bytes_done += objects[&name];
        progress(at);
    }
    Ok(report)
}

/// The full name of an object, as a damage report names it.
fn shown_name(storage: &RemoteStorage, name: &str) -> String {
    storage
        .location(name)
        .map_or_else(|_| name.to_string(), |l| l.to_string())
}

/// The bytes of object `name` before its CRC32 trailer, counted as checked. A trailer that
/// does not match is reported and the bytes are still returned, for the checks inside to
/// find where the damage is. `None` (reported) when the object is gone or too short.
async fn fetch(
    storage: &RemoteStorage,
    name: &str,
    report: &mut VerifyReport,
) -> Result<Option<Vec<u8>>> {
    let shown = shown_name(storage, name);
    let raw = match storage.get_raw(&storage.location(name)?, "verify").await {
        Ok(raw) => raw,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            report.damage(shown, e);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    report.files_checked += 1;
    report.bytes_checked += raw.len() as u64;
    let path = Path::new(&shown);
    let Some(body_len) = raw.len().checked_sub(4) else {
        report.damage(
            shown.clone(),
            Error::corruption(path, 0, "shorter than its 4-byte checksum trailer"),
        );
        return Ok(None);
    };
    let stored = u32::from_le_bytes(raw[body_len..].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&raw[..body_len]);
    if stored != computed {
        report.damage(
            shown.clone(),
            Error::corruption(
                path,
                body_len as u64,
                format!("object checksum trailer: stored {stored:08x}, computed {computed:08x}"),
            ),
        );
    }
    Ok(Some(raw[..body_len].to_vec()))
}

/// Lists the names in a directory.
fn list(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
        let e = e.map_err(|e| Error::io("listing", dir, e))?;
        out.push(e.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// Checks one file's bytes as what `kind` says it is; returns every damage found.
fn check(bytes: &[u8], path: &Path, kind: &Kind, notes: &mut Vec<String>) -> Vec<Error> {
    let one = |r: Result<()>| r.err().into_iter().collect();
    match kind {
        Kind::Catalog => one(Catalog::decode(bytes, path).map(drop)),
        Kind::Owner => one(decode_owner(bytes, path).map(drop)),
        Kind::Manifest => one(Manifest::decode(bytes, path).map(drop)),
        Kind::TimeIndex => match decode_time_index(bytes, path) {
            Ok(t) => {
                if t.torn_tail {
                    notes.push(format!(
                        "{} at offset {}: torn last record (a crash mid-append; the open drops that commit time)",
                        path.display(),
                        t.valid_len
                    ));
                }
                Vec::new()
            }
            Err(e) => vec![e],
        },
        Kind::Wal { last } => match decode_wal_segment(bytes, path) {
            Ok(s) if s.torn_tail && *last => {
                notes.push(format!(
                    "{} at offset {}: torn last record (a write cut short by a crash; the open drops it, it was never acknowledged)",
                    path.display(),
                    s.valid_len
                ));
                Vec::new()
            }
            Ok(s) if s.torn_tail => vec![Error::corruption(
                path,
                s.valid_len as u64,
                "damaged WAL record (not at the end of the last segment, so not a torn write)",
            )],
            Ok(_) => Vec::new(),
            Err(e) => vec![e],
        },
        Kind::Layer(desc) => check_layer(bytes, path, desc.as_ref()),
    }
}

/// Checks a layer file's bytes: its size against the manifest, the footer (and that it
/// matches the manifest), the index block, the key filter and every data block with every
/// entry in it. Goes on past a damaged data block to the next.
fn check_layer(bytes: &[u8], path: &Path, desc: Option<&LayerDesc>) -> Vec<Error> {
    let mut errs = Vec::new();
    if let Some(d) = desc
        && bytes.len() as u64 != d.file_size
    {
        errs.push(Error::corruption(
            path,
            0,
            format!(
                "file is {} bytes, the manifest says {}",
                bytes.len(),
                d.file_size
            ),
        ));
    }
    let footer = match Footer::decode(bytes, path) {
        Ok(f) => f,
        Err(e) => {
            errs.push(e);
            return errs;
        }
    };
    let index_at = footer.index_offset;
    let index_end = index_at.saturating_add(u64::from(footer.index_len));
    if let Some(d) = desc
        && (footer.kind != d.kind
            || footer.lsn_range != d.lsn_range
            || footer.key_range != d.key_range)
    {
        errs.push(Error::corruption(
            path,
            index_end,
            "footer does not match the manifest's description of the layer",
        ));
    }
    let slice = |at: u64, len: u32| -> Option<&[u8]> {
        let end = at.checked_add(u64::from(len))?;
        bytes.get(usize::try_from(at).ok()?..usize::try_from(end).ok()?)
    };
    let Some(framed) = slice(index_at, footer.index_len) else {
        errs.push(Error::corruption(
            path,
            index_at,
            "index block lies outside the file",
        ));
        return errs;
    };
    let index = match decode_block_ref(framed, path, index_at)
        .and_then(|raw| decode_index(&raw, path, index_at))
    {
        Ok(i) => i,
        Err(e) => {
            errs.push(e);
            return errs;
        }
    };
    if footer.filter_len > 0 {
        let at = footer.filter_offset;
        match slice(at, footer.filter_len) {
            Some(framed) => {
                if let Err(e) = decode_block_ref(framed, path, at)
                    .and_then(|raw| KeyFilter::decode(&raw, path, at).map(drop))
                {
                    errs.push(e);
                }
            }
            None => errs.push(Error::corruption(
                path,
                at,
                "key filter block lies outside the file",
            )),
        }
    }
    let mut entries = 0u64;
    for e in &index {
        let framed = match slice(e.offset, e.len) {
            Some(f) if e.offset.saturating_add(u64::from(e.len)) <= index_at => f,
            _ => {
                errs.push(Error::corruption(
                    path,
                    index_at,
                    format!(
                        "index names a block at {}+{} past the data",
                        e.offset, e.len
                    ),
                ));
                continue;
            }
        };
        let block = decode_block_ref(framed, path, e.offset)
            .and_then(|raw| DataBlock::parse(&raw, path, e.offset));
        match block {
            Ok(b) => {
                for i in 0..b.len() {
                    if let Err(what) = b.entry(i) {
                        errs.push(Error::corruption(
                            path,
                            e.offset,
                            format!("data block entry {i}: {what}"),
                        ));
                        break;
                    }
                }
                entries += b.len() as u64;
            }
            Err(err) => errs.push(err),
        }
    }
    if errs.is_empty() && entries != footer.entry_count {
        errs.push(Error::corruption(
            path,
            index_end,
            format!(
                "the footer counts {} versions, the blocks hold {entries}",
                footer.entry_count
            ),
        ));
    }
    errs
}
