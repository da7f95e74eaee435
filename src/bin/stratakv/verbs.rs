//! What each verb does and prints.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value as Json, json};
use stratakv::inspect::{self, Dump, VerifyReport};
use stratakv::{Lsn, RestorePoint, Store, Timeline};

use crate::show::{self, print_json};
use crate::target::{self, Target};
use crate::{Cli, EXIT_DAMAGED, EXIT_LSN, EXIT_NOT_FOUND, EXIT_OK, Failure, Verb};

/// Runs the verb; returns the exit code.
pub async fn run(cli: &Cli) -> Result<i32, Failure> {
    let quiet = !target::draw(cli.json);
    if let Verb::Dump { file, limit } = &cli.verb {
        return dump(file, *limit, cli.json);
    }
    let store = cli.store.as_deref().ok_or_else(|| {
        Failure::usage("no store given: pass --store DIR|URL or set STRATAKV_STORE")
    })?;
    let target = Target::parse(store, cli.remote.as_deref(), &cli.remote_options)?;
    if let Verb::Verify = cli.verb {
        return verify(&target, cli.json, quiet).await;
    }
    let changes = match &cli.verb {
        Verb::Branch { .. } => Some("branch"),
        Verb::Restore { .. } => Some("restore"),
        Verb::Gc { .. } => Some("gc"),
        Verb::Compact { .. } => Some("compact"),
        Verb::Evict { .. } => Some("evict"),
        _ => None,
    };
    if let Some(verb) = changes {
        target.writable(verb)?;
    }
    let opened = target.open(quiet).await?;
    let result = on_store(&opened.store, &target, cli, quiet).await;
    let closed = opened.close().await;
    let code = result?;
    closed?;
    Ok(code)
}

async fn on_store(store: &Store, target: &Target, cli: &Cli, quiet: bool) -> Result<i32, Failure> {
    let json = cli.json;
    match &cli.verb {
        Verb::Info => info(store, target, json),
        Verb::Layers { timeline } => layers(&find(store, timeline)?, json),
        Verb::Tree => tree(store, json),
        Verb::Get {
            timeline,
            key,
            at,
            hex,
        } => {
            get(
                &find(store, timeline)?,
                &key_arg(key, *hex)?,
                at.as_deref(),
                json,
                quiet,
            )
            .await
        }
        Verb::History { timeline, key, hex } => {
            history(&find(store, timeline)?, &key_arg(key, *hex)?, json, quiet).await
        }
        Verb::LsnAt { timeline, time } => {
            let tl = find(store, timeline)?;
            let t = show::parse_time(time)?;
            let lsn = tl.lsn_at(t).map_err(|e| {
                Failure::from(e).context(&format!("LSN of timeline {timeline} at {time}"))
            })?;
            if json {
                print_json(
                    &json!({ "timeline": timeline, "time": show::time(t), "lsn": lsn.to_string() }),
                );
            } else {
                println!("{lsn}");
            }
            Ok(EXIT_OK)
        }
        Verb::TimeAt { timeline, lsn } => {
            let tl = find(store, timeline)?;
            let lsn = parse_lsn(lsn)?;
            let t = tl.time_at(lsn).ok_or_else(|| {
                Failure::new(
                    EXIT_NOT_FOUND,
                    format!(
                        "timeline {timeline} has no commit time recorded at or below {lsn} (its index starts at the GC cutoff {})",
                        tl.gc_cutoff()
                    ),
                )
            })?;
            if json {
                print_json(
                    &json!({ "timeline": timeline, "lsn": lsn.to_string(), "time": show::time(t) }),
                );
            } else {
                println!("{}", show::time(t));
            }
            Ok(EXIT_OK)
        }
        Verb::Branch { name, from, at } => {
            let parent = find(store, from)?;
            let lsn = match at {
                Some(a) => show::point(&parent, a)?.0,
                None => parent.last_record_lsn(),
            };
            let tl = store.branch(name, &parent, lsn).await.map_err(|e| {
                Failure::from(e).context(&format!("branching {name} from {from} at {lsn}"))
            })?;
            if json {
                print_json(
                    &json!({ "name": name, "id": tl.id().to_string(), "parent": from, "lsn": lsn.to_string() }),
                );
            } else {
                println!(
                    "created timeline {name} ({}) branched from {from} at {lsn}",
                    tl.id()
                );
            }
            Ok(EXIT_OK)
        }
        Verb::Restore { name, at, from } => {
            let source = from.as_deref().unwrap_or(name);
            let (lsn, _) = show::point(&find(store, source)?, at)?;
            let restored = match from {
                Some(src) => store.restore_from(name, src, RestorePoint::Lsn(lsn)).await,
                None => store.restore(name, RestorePoint::Lsn(lsn)).await,
            }
            .map_err(|e| Failure::from(e).context(&format!("restoring {name} to {lsn}")))?;
            let backup = restored.backup_name.clone();
            if json {
                print_json(&json!({
                    "name": name,
                    "id": restored.timeline.id().to_string(),
                    "lsn": restored.lsn.to_string(),
                    "source": source,
                    "backup_name": backup,
                }));
            } else {
                println!(
                    "{name} is now timeline {} branched from {source} at {}",
                    restored.timeline.id(),
                    restored.lsn
                );
                if let Some(b) = backup {
                    println!("the timeline {name} named before is kept as {b}");
                }
            }
            Ok(EXIT_OK)
        }
        Verb::Gc { timeline } => {
            let tl = find(store, timeline)?;
            let bar = target::spinner(quiet, format!("GC of {timeline}"));
            let r = tl.gc().await;
            bar.finish_and_clear();
            let r = r.map_err(|e| Failure::from(e).context(&format!("GC of {timeline}")))?;
            if json {
                print_json(&json!({
                    "timeline": timeline,
                    "gc_cutoff": r.cutoff.to_string(),
                    "layers_removed": r.layers_removed,
                    "layers_rewritten": r.layers_rewritten,
                    "bytes_removed": r.bytes_removed,
                    "images_written": r.images_written,
                }));
            } else {
                println!(
                    "GC of {timeline}: cutoff {}, {} layers removed, {} rewritten, {} images written, {} freed",
                    r.cutoff,
                    r.layers_removed,
                    r.layers_rewritten,
                    r.images_written,
                    show::size(r.bytes_removed)
                );
            }
            Ok(EXIT_OK)
        }
        Verb::Compact { timeline } => {
            let tl = find(store, timeline)?;
            let bar = target::spinner(quiet, format!("compacting {timeline}"));
            let r = tl.compact().await;
            bar.finish_and_clear();
            let r = r.map_err(|e| Failure::from(e).context(&format!("compacting {timeline}")))?;
            if json {
                print_json(&json!({
                    "timeline": timeline,
                    "l0_merged": r.l0_merged,
                    "l1_written": r.l1_written,
                    "image_at": r.image_at.map(|l| l.to_string()),
                    "delta_bytes_above_image": r.delta_bytes_above_image,
                    "redo_bytes_above_image": r.redo_bytes_above_image,
                    "delta_layers_above_image": r.delta_layers_above_image,
                }));
            } else {
                let image = r.image_at.map_or_else(
                    || "no image layer".to_string(),
                    |l| format!("an image layer at {l}"),
                );
                println!(
                    "compaction of {timeline}: {} L0 layers merged into {} L1 layers; {image}; {} of deltas in {} stacked layers above the newest image ({} of records needing redo)",
                    r.l0_merged,
                    r.l1_written,
                    show::size(r.delta_bytes_above_image),
                    r.delta_layers_above_image,
                    show::size(r.redo_bytes_above_image)
                );
            }
            Ok(EXIT_OK)
        }
        Verb::Evict { budget } => {
            let r = store.evict_layers(*budget);
            let names: BTreeMap<_, _> = store
                .timelines()
                .iter()
                .map(|t| (t.id(), t.name()))
                .collect();
            let kept: Vec<Json> = r
                .kept
                .iter()
                .map(|k| {
                    json!({
                        "timeline": names.get(&k.timeline).cloned().unwrap_or_else(|| k.timeline.to_string()),
                        "layer": k.layer,
                        "bytes": k.bytes,
                        "reason": format!("{:?}", k.reason),
                    })
                })
                .collect();
            if json {
                print_json(&json!({
                    "budget": budget,
                    "evicted_layers": r.evicted_layers,
                    "evicted_bytes": r.evicted_bytes,
                    "resident_bytes": r.resident_bytes,
                    "kept": kept,
                }));
            } else {
                println!(
                    "evicted {} layers ({}); {} of layers stay on local disk (budget {})",
                    r.evicted_layers,
                    show::size(r.evicted_bytes),
                    show::size(r.resident_bytes),
                    show::size(*budget)
                );
                for k in &r.kept {
                    let why = match k.reason {
                        stratakv::KeepReason::NotUploaded => {
                            "not in object storage (the store has no remote, or it is not uploaded yet)"
                        }
                        stratakv::KeepReason::InUse => "in use",
                        _ => "kept",
                    };
                    println!("  kept {} ({}): {why}", k.layer, show::size(k.bytes));
                }
            }
            Ok(EXIT_OK)
        }
        Verb::Verify | Verb::Dump { .. } => unreachable!("handled before the store is opened"),
    }
}

/// The timeline called `name`, or a failure listing the names there are.
fn find(store: &Store, name: &str) -> Result<Timeline, Failure> {
    store.timeline(name).map_err(|e| {
        let names: Vec<String> = store.timelines().iter().map(Timeline::name).collect();
        Failure::from(e).context(&format!(
            "timeline {name:?} (the store has: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    })
}

fn parse_lsn(s: &str) -> Result<Lsn, Failure> {
    s.parse::<Lsn>().map_err(|_| {
        Failure::usage(format!(
            "{s:?} is not an LSN: write it as X/Y in hex, e.g. 0/16B3748"
        ))
    })
}

/// The key argument as bytes: text, or hex with `--hex`.
fn key_arg(key: &str, hex: bool) -> Result<Vec<u8>, Failure> {
    let bytes = if hex {
        let digits = key.strip_prefix("0x").unwrap_or(key);
        if !digits.len().is_multiple_of(2) || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Failure::usage(format!(
                "key {key:?} is not hex: an even number of digits 0-9, a-f, with or without 0x"
            )));
        }
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("checked hex digits"))
            .collect()
    } else {
        key.as_bytes().to_vec()
    };
    if bytes.is_empty() {
        return Err(Failure::usage("the key is empty"));
    }
    Ok(bytes)
}

fn info(store: &Store, target: &Target, json: bool) -> Result<i32, Failure> {
    let generation = store.generation().map(|g| g.to_string());
    let mut rows = Vec::new();
    for tl in store.timelines() {
        let layers = tl.layer_status();
        let bytes: u64 = layers.iter().map(|l| l.desc.file_size).sum();
        let resident: u64 = layers
            .iter()
            .filter(|l| l.resident)
            .map(|l| l.desc.file_size)
            .sum();
        let ancestor = tl.ancestor().map(|(a, lsn)| (a.name(), a.id(), lsn));
        rows.push((
            tl.clone(),
            layers.len(),
            bytes,
            resident,
            ancestor,
            tl.leases(),
        ));
    }
    if json {
        let timelines: Vec<Json> = rows
            .iter()
            .map(|(tl, n, bytes, resident, anc, leases)| {
                json!({
                    "name": tl.name(),
                    "id": tl.id().to_string(),
                    "ancestor": anc.as_ref().map(|(name, id, lsn)| json!({ "name": name, "id": id.to_string(), "branch_lsn": lsn.to_string() })),
                    "last_record_lsn": tl.last_record_lsn().to_string(),
                    "disk_consistent_lsn": tl.disk_consistent_lsn().to_string(),
                    "remote_consistent_lsn": tl.remote_consistent_lsn().to_string(),
                    "remote_wal_lsn": tl.remote_wal_lsn().to_string(),
                    "gc_cutoff": tl.gc_cutoff().to_string(),
                    "leases": leases.iter().map(|(l, t)| json!({ "lsn": l.to_string(), "expires": show::time(*t) })).collect::<Vec<_>>(),
                    "layers": n,
                    "layer_bytes": bytes,
                    "resident_bytes": resident,
                    "in_memory_layers": tl.in_memory_layers(),
                })
            })
            .collect();
        print_json(&json!({
            "store": target.describe(),
            "read_only": target.read_only(),
            "generation": generation,
            "wal_segments": store.wal_segments(),
            "timelines": timelines,
        }));
        return Ok(EXIT_OK);
    }
    println!("store        {}", target.describe());
    println!(
        "generation   {}",
        generation.unwrap_or_else(|| if target.read_only() {
            "none (read-only: claims none)".to_string()
        } else {
            "none (no remote)".to_string()
        })
    );
    if target.read_only() {
        println!(
            "             read-only: the watermarks are those of the newest indexes and WAL chunks in object storage"
        );
    }
    println!("WAL segments {}", store.wal_segments());
    let total: u64 = rows.iter().map(|r| r.2).sum();
    println!(
        "timelines    {} ({} of layer files)",
        rows.len(),
        show::size(total)
    );
    for (tl, n, bytes, resident, anc, leases) in &rows {
        println!();
        println!("timeline {} ({})", tl.name(), tl.id());
        match anc {
            Some((name, id, lsn)) => println!("  ancestor               {name} ({id}) at {lsn}"),
            None => println!("  ancestor               none"),
        }
        println!("  last record LSN        {}", tl.last_record_lsn());
        println!("  disk consistent LSN    {}", tl.disk_consistent_lsn());
        println!("  remote consistent LSN  {}", tl.remote_consistent_lsn());
        println!("  remote WAL LSN         {}", tl.remote_wal_lsn());
        println!("  GC cutoff              {}", tl.gc_cutoff());
        if leases.is_empty() {
            println!("  leases                 none held by this process");
        } else {
            for (l, t) in leases {
                println!("  lease                  {l} until {}", show::time(*t));
            }
        }
        println!(
            "  layers                 {n} files, {} ({} on local disk)",
            show::size(*bytes),
            show::size(*resident)
        );
    }
    Ok(EXIT_OK)
}

fn layers(tl: &Timeline, json: bool) -> Result<i32, Failure> {
    let layers = tl.layer_status();
    if json {
        let rows: Vec<Json> = layers
            .iter()
            .map(|l| {
                let mut j = show::layer_json(&l.desc);
                j["resident"] = json!(l.resident);
                j["remote_generation"] = json!(l.remote_generation.map(|g| g.to_string()));
                j
            })
            .collect();
        print_json(&json!({ "timeline": tl.name(), "layers": rows }));
        return Ok(EXIT_OK);
    }
    println!(
        "timeline {}: {} layer files, newest first",
        tl.name(),
        layers.len()
    );
    println!(
        "{:<6} {:>2} {:<25} {:<32} {:>10}  {:<14} FILE",
        "KIND", "L", "LSN RANGE", "KEY RANGE", "SIZE", "RESIDENCE"
    );
    for l in &layers {
        let d = &l.desc;
        let residence = match (l.resident, l.remote_generation) {
            (true, Some(_)) => "local+remote",
            (true, None) => "local",
            (false, Some(_)) => "remote",
            (false, None) => "missing",
        };
        println!(
            "{:<6} {:>2} {:<25} {:<32} {:>10}  {:<14} {}",
            format!("{:?}", d.kind).to_lowercase(),
            d.level,
            show::lsn_range(&d.lsn_range),
            show::key_range(&d.key_range),
            show::size(d.file_size),
            residence,
            d.file_name
        );
    }
    Ok(EXIT_OK)
}

fn tree(store: &Store, json: bool) -> Result<i32, Failure> {
    let all = store.timelines();
    let mut children: BTreeMap<Option<stratakv::TimelineId>, Vec<(Timeline, Option<Lsn>)>> =
        BTreeMap::new();
    for tl in &all {
        let (parent, at) = match tl.ancestor() {
            Some((a, lsn)) => (Some(a.id()), Some(lsn)),
            None => (None, None),
        };
        children.entry(parent).or_default().push((tl.clone(), at));
    }
    fn node(
        tl: &Timeline,
        at: Option<Lsn>,
        children: &BTreeMap<Option<stratakv::TimelineId>, Vec<(Timeline, Option<Lsn>)>>,
    ) -> Json {
        let kids: Vec<Json> = children
            .get(&Some(tl.id()))
            .map(|v| v.iter().map(|(c, a)| node(c, *a, children)).collect())
            .unwrap_or_default();
        json!({
            "name": tl.name(),
            "id": tl.id().to_string(),
            "branch_lsn": at.map(|l| l.to_string()),
            "last_record_lsn": tl.last_record_lsn().to_string(),
            "children": kids,
        })
    }
    fn draw(
        tl: &Timeline,
        at: Option<Lsn>,
        prefix: &str,
        last: bool,
        root: bool,
        children: &BTreeMap<Option<stratakv::TimelineId>, Vec<(Timeline, Option<Lsn>)>>,
    ) {
        let branch = match at {
            Some(l) => format!(" @ {l}"),
            None => String::new(),
        };
        let joint = if root {
            ""
        } else if last {
            "└── "
        } else {
            "├── "
        };
        println!(
            "{prefix}{joint}{}{branch}  (last record {})",
            tl.name(),
            tl.last_record_lsn()
        );
        let below = if root {
            String::new()
        } else {
            format!("{prefix}{}", if last { "    " } else { "│   " })
        };
        if let Some(kids) = children.get(&Some(tl.id())) {
            for (i, (c, a)) in kids.iter().enumerate() {
                draw(c, *a, &below, i + 1 == kids.len(), false, children);
            }
        }
    }
    let roots = children.get(&None).cloned().unwrap_or_default();
    if json {
        let trees: Vec<Json> = roots.iter().map(|(t, a)| node(t, *a, &children)).collect();
        print_json(&json!({ "timelines": trees }));
    } else if roots.is_empty() {
        println!("no timelines");
    } else {
        for (t, a) in &roots {
            draw(t, *a, "", true, true, &children);
        }
    }
    Ok(EXIT_OK)
}

async fn get(
    tl: &Timeline,
    key: &[u8],
    at: Option<&str>,
    json: bool,
    quiet: bool,
) -> Result<i32, Failure> {
    let lrl = tl.last_record_lsn();
    let (lsn, time) = match at {
        Some(a) => show::point(tl, a)?,
        None => (lrl, None),
    };
    if lsn > lrl {
        return Err(Failure::new(
            EXIT_LSN,
            format!(
                "LSN {lsn} is above the last record LSN {lrl} of timeline {}",
                tl.name()
            ),
        ));
    }
    let bar = target::spinner(quiet, format!("reading {} at {lsn}", show::key(key)));
    let r = tl.get_traced(key, lsn).await;
    bar.finish_and_clear();
    let (value, trace) = r.map_err(|e| {
        Failure::from(e).context(&format!(
            "reading key {} of timeline {} at {lsn}",
            show::key(key),
            tl.name()
        ))
    })?;
    if json {
        print_json(&json!({
            "timeline": tl.name(),
            "key": show::bytes_json(key),
            "lsn": lsn.to_string(),
            "time": time.map(show::time),
            "value": value.as_ref().map(|v| show::bytes_json(v)),
            "layers_visited": trace.layers_visited,
            "ancestors_visited": trace.ancestors_visited,
            "filter_skips": trace.filter_skips,
        }));
        return Ok(EXIT_OK);
    }
    let when = time.map_or_else(String::new, |t| {
        format!(" (the last commit at or before {})", show::time(t))
    });
    println!(
        "timeline {}, key {}, at {lsn}{when}",
        tl.name(),
        show::key(key)
    );
    match &value {
        Some(v) => match std::str::from_utf8(v) {
            Ok(s) => println!("value ({}): {s}", show::size(v.len() as u64)),
            Err(_) => println!(
                "value ({}, hex): {}",
                show::size(v.len() as u64),
                show::hex(v)
            ),
        },
        None => println!("no value: the key does not exist at {lsn}"),
    }
    println!(
        "the read visited {} layers, descended into {} ancestor timelines, and passed {} layer files by their key filter",
        trace.layers_visited, trace.ancestors_visited, trace.filter_skips
    );
    Ok(EXIT_OK)
}

async fn history(tl: &Timeline, key: &[u8], json: bool, quiet: bool) -> Result<i32, Failure> {
    let bar = target::spinner(quiet, format!("reading the history of {}", show::key(key)));
    let r = tl.history(key).await;
    bar.finish_and_clear();
    let versions = r.map_err(|e| {
        Failure::from(e).context(&format!(
            "history of key {} in timeline {}",
            show::key(key),
            tl.name()
        ))
    })?;
    if json {
        let rows: Vec<Json> = versions
            .iter()
            .map(|v| {
                json!({
                    "lsn": v.lsn.to_string(),
                    "time": tl.time_at(v.lsn).map(show::time),
                    "written": v.written.as_ref().map(show::written_json),
                    "value": v.value.as_ref().map(|b| show::bytes_json(b)),
                })
            })
            .collect();
        print_json(&json!({
            "timeline": tl.name(),
            "key": show::bytes_json(key),
            "gc_cutoff": tl.gc_cutoff().to_string(),
            "last_record_lsn": tl.last_record_lsn().to_string(),
            "versions": rows,
        }));
        return Ok(EXIT_OK);
    }
    println!(
        "timeline {}, key {}: {} versions in the window {}..={}",
        tl.name(),
        show::key(key),
        versions.iter().filter(|v| v.written.is_some()).count(),
        tl.gc_cutoff(),
        tl.last_record_lsn()
    );
    println!(
        "{:<14} {:<25} {:<24} VALUE",
        "LSN", "COMMIT TIME", "WRITTEN"
    );
    for v in &versions {
        let written = v
            .written
            .as_ref()
            .map_or_else(|| "(value at GC cutoff)".to_string(), show::written);
        let value = v
            .value
            .as_ref()
            .map_or_else(|| "(none)".to_string(), |b| show::bytes(b));
        let time = tl
            .time_at(v.lsn)
            .map_or_else(|| "-".to_string(), show::time);
        println!(
            "{:<14} {:<25} {:<24} {value}",
            v.lsn.to_string(),
            time,
            written
        );
    }
    Ok(EXIT_OK)
}

async fn verify(target: &Target, json: bool, quiet: bool) -> Result<i32, Failure> {
    let mut parts: Vec<(String, VerifyReport)> = Vec::new();
    if let Some(dir) = target::dir_of(target) {
        let bar = target::bytes_bar(quiet, 0, format!("verifying {}", dir.display()));
        let r = inspect::verify_dir(dir, &mut |p| {
            bar.set_length(p.bytes_total);
            bar.set_position(p.bytes_done);
        });
        bar.finish_and_clear();
        parts.push((dir.display().to_string(), r?));
    }
    if let Some(remote) = target::remote_of(target) {
        let shown = match target {
            Target::Url { url, .. } => url.clone(),
            Target::Dir { .. } => format!("{} {}", remote.store(), remote.prefix().as_ref()),
        };
        let bar = target::bytes_bar(quiet, 0, format!("verifying {shown}"));
        let r = inspect::verify_remote(remote, &mut |p| {
            bar.set_length(p.bytes_total);
            bar.set_position(p.bytes_done);
        })
        .await;
        bar.finish_and_clear();
        parts.push((shown, r?));
    }
    let damaged: usize = parts.iter().map(|(_, r)| r.damaged.len()).sum();
    if json {
        let rows: Vec<Json> = parts
            .iter()
            .map(|(what, r)| {
                json!({
                    "where": what,
                    "files_checked": r.files_checked,
                    "bytes_checked": r.bytes_checked,
                    "damaged": r.damaged.iter().map(|d| json!({
                        "file": d.file,
                        "offset": d.offset,
                        "error": d.error.to_string(),
                    })).collect::<Vec<_>>(),
                    "notes": r.notes,
                })
            })
            .collect();
        print_json(&json!({ "clean": damaged == 0, "checked": rows }));
    } else {
        for (what, r) in &parts {
            println!(
                "{what}: {} files, {} checked",
                r.files_checked,
                show::size(r.bytes_checked)
            );
            for d in &r.damaged {
                println!("  DAMAGED {}", d.error);
            }
            for n in &r.notes {
                println!("  note: {n}");
            }
        }
        if damaged == 0 {
            println!("every checksum holds");
        } else {
            let files: std::collections::BTreeSet<&str> = parts
                .iter()
                .flat_map(|(_, r)| r.damaged.iter().map(|d| d.file.as_str()))
                .collect();
            println!("{damaged} damaged places in {} files", files.len());
        }
    }
    Ok(if damaged == 0 { EXIT_OK } else { EXIT_DAMAGED })
}

fn dump(file: &Path, limit: Option<usize>, json: bool) -> Result<i32, Failure> {
    let d = inspect::dump_file(file).map_err(Failure::from)?;
    match d {
        Dump::Manifest(m) => {
            if json {
                print_json(&json!({
                    "manifest": {
                        "timeline": m.timeline.to_string(),
                        "ancestor": m.ancestor.map(|(id, lsn)| json!({ "id": id.to_string(), "branch_lsn": lsn.to_string() })),
                        "disk_consistent_lsn": m.disk_consistent_lsn.to_string(),
                        "gc_cutoff": m.gc_cutoff.to_string(),
                        "next_layer_seq": m.next_layer_seq,
                        "layers": m.layers.iter().map(show::layer_json).collect::<Vec<_>>(),
                    }
                }));
                return Ok(EXIT_OK);
            }
            println!("manifest of timeline {}", m.timeline);
            match m.ancestor {
                Some((id, lsn)) => println!("ancestor             {id} at {lsn}"),
                None => println!("ancestor             none"),
            }
            println!("disk consistent LSN  {}", m.disk_consistent_lsn);
            println!("GC cutoff            {}", m.gc_cutoff);
            println!("next layer sequence  {}", m.next_layer_seq);
            println!("layers               {}", m.layers.len());
            for l in &m.layers {
                println!(
                    "  {:<6} L{} {:<25} {:<32} {:>10}  {}",
                    format!("{:?}", l.kind).to_lowercase(),
                    l.level,
                    show::lsn_range(&l.lsn_range),
                    show::key_range(&l.key_range),
                    show::size(l.file_size),
                    l.file_name
                );
            }
        }
        Dump::Layer(l) => {
            let limit = limit.unwrap_or(usize::MAX);
            if json {
                let mut left = limit;
                let blocks: Vec<Json> = l
                    .blocks
                    .iter()
                    .map(|b| {
                        let take = b.entries.len().min(left);
                        left -= take;
                        json!({
                            "offset": b.offset,
                            "framed_len": b.framed_len,
                            "entries": b.entries.len(),
                            "versions": b.entries[..take].iter().map(|e| json!({
                                "key": show::bytes_json(&e.key),
                                "lsn": e.lsn.to_string(),
                                "value": show::written_json(&e.value),
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                print_json(&json!({
                    "layer": {
                        "kind": format!("{:?}", l.kind).to_lowercase(),
                        "lsn_range": { "start": l.lsn_range.start.to_string(), "end": l.lsn_range.end.to_string() },
                        "key_range": show::key_range_json(&l.key_range),
                        "file_size": l.file_size,
                        "entry_count": l.entry_count,
                        "filter_len": l.filter_len,
                        "blocks": blocks,
                    }
                }));
                return Ok(EXIT_OK);
            }
            println!("{:?} layer, {} bytes", l.kind, l.file_size);
            println!("LSN range   {}", show::lsn_range(&l.lsn_range));
            println!("key range   {}", show::key_range(&l.key_range));
            println!("versions    {}", l.entry_count);
            println!(
                "blocks      {} (key filter {} bytes)",
                l.blocks.len(),
                l.filter_len
            );
            let mut shown = 0usize;
            for b in &l.blocks {
                println!(
                    "block at offset {} ({} bytes framed, {} versions)",
                    b.offset,
                    b.framed_len,
                    b.entries.len()
                );
                for e in &b.entries {
                    if shown == limit {
                        println!("… (--limit {limit} reached)");
                        return Ok(EXIT_OK);
                    }
                    shown += 1;
                    let value = match &e.value {
                        stratakv::Value::Image(v) => format!(": {}", show::bytes(v)),
                        stratakv::Value::Delta { record, .. } => {
                            format!(": {}", show::bytes(record))
                        }
                        stratakv::Value::Tombstone => String::new(),
                    };
                    println!(
                        "  {:<24} {:<12} {}{value}",
                        show::key(&e.key),
                        e.lsn.to_string(),
                        show::written(&e.value)
                    );
                }
            }
        }
        _ => {
            return Err(Failure::new(
                crate::EXIT_FAILURE,
                "a file of a kind this tool does not know",
            ));
        }
    }
    Ok(EXIT_OK)
}
