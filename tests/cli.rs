//! The `stratakv` command-line tool, run as a built binary on real stores made here: a store
//! directory, a store in a local-folder object store (`file://`), and one on the S3 server
//! (moto) when `.ci/object-stores.sh` has started it. Each verb's text output is checked,
//! its `--json` parsed; `verify` finds bits flipped in a layer file, a manifest and a remote
//! object and names each file and offset; refused input exits with its own code and changes
//! nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value as Json;
use stratakv::remote::RemoteStorage;
use stratakv::{Lsn, SimpleRedo, Store, StoreOptions, Value};

use common::backends::{Backend, server_env, unique_prefix};

/// What one run of the tool did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn json(&self) -> Json {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }

    #[track_caller]
    fn fails(self, code: i32, mentions: &[&str]) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        for m in mentions {
            assert!(
                self.stderr.contains(m),
                "stderr does not mention {m:?}:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// Runs the tool with `args`, the environment holding no store.
fn run(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_stratakv"))
        .args(args)
        .env_remove("STRATAKV_STORE")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .expect("running stratakv");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The commit time of the fixture's commit `i`: fixed, in the past.
fn at(i: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 10 * i)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The fixture: timeline `main` with commits at 0/10, 0/20, 0/30, 0/40 (commit times
/// `at(1..=4)`) in three L0 layers (two flushes and the close); `page/1` an image, then a delta, then
/// a tombstone, then an image again; `bin` holding bytes that are not UTF-8; and `dev`
/// branched from `main` at 0/30 with a write of its own at 0/50.
fn make_store(options: StoreOptions) -> (stratakv::TimelineId, stratakv::TimelineId) {
    tokio().block_on(async {
        let store = Store::open(options.background_period(None).pitr_interval(None))
            .await
            .unwrap();
        let main = store.create_timeline("main").await.unwrap();
        let mut w = main.writer().unwrap();
        w.put(b"page/1", Lsn(0x10), Value::image("one")).unwrap();
        w.put(b"page/2", Lsn(0x10), Value::image("two")).unwrap();
        w.put(b"bin", Lsn(0x10), Value::image(vec![0u8, 0xff, 0xfe]))
            .unwrap();
        w.finish_write_at(Lsn(0x10), at(1)).unwrap();
        w.put(
            b"page/1",
            Lsn(0x20),
            Value::delta(SimpleRedo::append(b"+1")),
        )
        .unwrap();
        w.finish_write_at(Lsn(0x20), at(2)).unwrap();
        main.flush().await.unwrap();
        w.put(b"page/1", Lsn(0x30), Value::Tombstone).unwrap();
        w.finish_write_at(Lsn(0x30), at(3)).unwrap();
        main.flush().await.unwrap();
        w.put(b"page/1", Lsn(0x40), Value::image("again")).unwrap();
        w.finish_write_at(Lsn(0x40), at(4)).unwrap();
        drop(w);
        let dev = store.branch("dev", &main, Lsn(0x30)).await.unwrap();
        let mut d = dev.writer().unwrap();
        d.put(b"page/2", Lsn(0x50), Value::image("dev two"))
            .unwrap();
        d.finish_write_at(Lsn(0x50), at(5)).unwrap();
        drop(d);
        dev.flush().await.unwrap();
        let ids = (main.id(), dev.id());
        store.close().await.unwrap();
        ids
    })
}

fn local_store() -> (
    tempfile::TempDir,
    stratakv::TimelineId,
    stratakv::TimelineId,
) {
    let dir = tempfile::tempdir().unwrap();
    let (main, dev) = make_store(StoreOptions::new(dir.path().join("store")));
    (dir, main, dev)
}

fn store_arg(dir: &tempfile::TempDir) -> String {
    dir.path().join("store").display().to_string()
}

/// The layer files of a timeline directory, sorted.
fn layer_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "layer"))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, offset: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[offset] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

#[test]
fn info_tree_and_layers_show_timelines_watermarks_and_layers() {
    let (dir, main_id, dev_id) = local_store();
    let s = store_arg(&dir);

    let info = run(&["--store", &s, "info"]).ok();
    for want in [
        "timeline main",
        "timeline dev",
        &main_id.to_string(),
        "ancestor               main",
        "at 0/30",
        "last record LSN        0/40",
        "disk consistent LSN    0/40",
        "GC cutoff              0/0",
        "generation   none (no remote)",
    ] {
        assert!(
            info.stdout.contains(want),
            "info lacks {want:?}:\n{}",
            info.stdout
        );
    }
    let j = run(&["--store", &s, "info", "--json"]).ok().json();
    let tls = j["timelines"].as_array().unwrap();
    let dev = tls.iter().find(|t| t["name"] == "dev").unwrap();
    assert_eq!(dev["id"], dev_id.to_string());
    assert_eq!(dev["ancestor"]["name"], "main");
    assert_eq!(dev["ancestor"]["branch_lsn"], "0/30");
    assert_eq!(dev["last_record_lsn"], "0/50");
    let main = tls.iter().find(|t| t["name"] == "main").unwrap();
    assert_eq!(main["layers"], 3, "two flushes and the close");
    assert_eq!(main["disk_consistent_lsn"], "0/40");
    assert!(main["layer_bytes"].as_u64().unwrap() > 0);
    assert_eq!(j["read_only"], false);
    assert_eq!(j["generation"], Json::Null);

    let tree = run(&["--store", &s, "tree"]).ok();
    assert!(
        tree.stdout.contains("main  (last record 0/40)"),
        "{}",
        tree.stdout
    );
    assert!(
        tree.stdout.contains("└── dev @ 0/30  (last record 0/50)"),
        "{}",
        tree.stdout
    );
    let t = run(&["--store", &s, "tree", "--json"]).ok().json();
    assert_eq!(t["timelines"][0]["children"][0]["name"], "dev");

    let layers = run(&["--store", &s, "layers", "main"]).ok();
    assert!(layers.stdout.contains("3 layer files"), "{}", layers.stdout);
    assert!(layers.stdout.contains("delta"), "{}", layers.stdout);
    assert!(layers.stdout.contains("0/21..0/31"), "{}", layers.stdout);
    let l = run(&["--store", &s, "layers", "main", "--json"])
        .ok()
        .json();
    let rows = l["layers"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["file_name"].as_str().unwrap())
        .collect();
    let on_disk: Vec<String> =
        layer_files(&dir.path().join("store/timelines").join(main_id.to_string()))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
    for n in &names {
        assert!(on_disk.iter().any(|d| d == n), "{n} not in {on_disk:?}");
    }
    assert!(
        rows.iter()
            .all(|r| r["resident"] == true && r["kind"] == "delta")
    );
}

#[test]
fn get_history_and_times_read_as_of_an_lsn_or_a_time() {
    let (dir, _, _) = local_store();
    let s = store_arg(&dir);

    let g = run(&["--store", &s, "get", "main", "page/1", "--at", "0/20"]).ok();
    assert!(g.stdout.contains("value (5 B): one+1"), "{}", g.stdout);
    assert!(g.stdout.contains("the read visited"), "{}", g.stdout);
    let j = run(&[
        "--store", &s, "get", "main", "page/1", "--at", "0/30", "--json",
    ])
    .ok()
    .json();
    assert_eq!(j["value"], Json::Null, "a tombstone at 0/30");
    let j = run(&["--store", &s, "get", "main", "page/1", "--json"])
        .ok()
        .json();
    assert_eq!(j["lsn"], "0/40");
    assert_eq!(j["value"]["utf8"], "again");
    assert!(j["layers_visited"].as_u64().unwrap() >= 1);
    // Not UTF-8: hex.
    let b = run(&["--store", &s, "get", "main", "bin"]).ok();
    assert!(b.stdout.contains("hex): 0x00fffe"), "{}", b.stdout);
    let j = run(&["--store", &s, "get", "main", "0x62696e", "--hex", "--json"])
        .ok()
        .json();
    assert_eq!(j["value"]["hex"], "0x00fffe");
    // By time: the last commit at or before it.
    let between = rfc3339(at(2) + Duration::from_secs(5));
    let j = run(&[
        "--store", &s, "get", "main", "page/1", "--at", &between, "--json",
    ])
    .ok()
    .json();
    assert_eq!(j["lsn"], "0/20");
    assert_eq!(j["value"]["utf8"], "one+1");
    // Through the branch: dev reads main's history at its branch point.
    let j = run(&[
        "--store", &s, "get", "dev", "page/2", "--at", "0/30", "--json",
    ])
    .ok()
    .json();
    assert_eq!(j["value"]["utf8"], "two");
    assert_eq!(j["ancestors_visited"], 1);

    let h = run(&["--store", &s, "history", "main", "page/1", "--json"])
        .ok()
        .json();
    let v = h["versions"].as_array().unwrap();
    let lsns: Vec<&str> = v.iter().map(|x| x["lsn"].as_str().unwrap()).collect();
    assert_eq!(lsns, ["0/10", "0/20", "0/30", "0/40"]);
    assert_eq!(v[1]["written"]["kind"], "delta");
    assert_eq!(v[1]["value"]["utf8"], "one+1");
    assert_eq!(v[2]["written"]["kind"], "tombstone");
    assert_eq!(v[2]["value"], Json::Null);
    assert_eq!(
        v[3]["time"],
        humantime::format_rfc3339_millis(at(4)).to_string()
    );
    let h = run(&["--store", &s, "history", "main", "page/1"]).ok();
    assert!(h.stdout.contains("4 versions"), "{}", h.stdout);
    assert!(h.stdout.contains("tombstone"), "{}", h.stdout);

    let l = run(&["--store", &s, "lsn-at", "main", &rfc3339(at(3))]).ok();
    assert_eq!(l.stdout.trim(), "0/30");
    let t = run(&["--store", &s, "time-at", "main", "0/2F"]).ok();
    assert_eq!(
        t.stdout.trim(),
        humantime::format_rfc3339_millis(at(2)).to_string()
    );
    let j = run(&["--store", &s, "time-at", "main", "0/40", "--json"])
        .ok()
        .json();
    assert_eq!(j["lsn"], "0/40");
}

#[test]
fn bad_input_gets_its_exit_code_names_what_was_wrong_and_changes_nothing() {
    let (dir, main_id, _) = local_store();
    let s = store_arg(&dir);
    let manifest = dir
        .path()
        .join("store/timelines")
        .join(main_id.to_string())
        .join("manifest");
    let before = std::fs::read(&manifest).unwrap();

    run(&["--store", &s, "get", "nope", "page/1"]).fails(3, &["\"nope\"", "dev, main"]);
    run(&["--store", &s, "get", "main", "page/1", "--at", "0/zz"]).fails(2, &["0/zz"]);
    run(&["--store", &s, "get", "main", "page/1", "--at", "yesterday"]).fails(2, &["yesterday"]);
    run(&["--store", &s, "get", "main", "page/1", "--at", "0/99"]).fails(6, &["0/99", "0/40"]);
    run(&["--store", &s, "get", "dev", "page/1", "--at", "0/20"]).fails(6, &["below branch point"]);
    run(&["--store", &s, "get", "main", "xyz", "--hex"]).fails(2, &["\"xyz\"", "hex"]);
    run(&["--store", &s, "branch", "main", "--from", "main"]).fails(2, &["already exists"]);
    run(&[
        "--store", &s, "branch", "b", "--from", "main", "--at", "0/99",
    ])
    .fails(2, &["0/99"]);
    run(&["--store", &s, "time-at", "main", "0/5"]).fails(3, &["0/5"]);
    run(&["--store", &s, "lsn-at", "main", &rfc3339(at(0))]).fails(6, &[]);
    run(&["--store", &s, "evict", "--budget", "12XB"]).fails(2, &["12XB"]);
    run(&["--store", dir.path().to_str().unwrap(), "info"]).fails(3, &["not a StrataKV store"]);
    run(&["info"]).fails(2, &["--store"]);
    run(&["dump", dir.path().join("missing").to_str().unwrap()]).fails(3, &["missing"]);
    run(&[
        "dump",
        manifest
            .parent()
            .unwrap()
            .join("timeindex")
            .to_str()
            .unwrap(),
    ])
    .fails(2, &["neither a layer file nor a manifest"]);
    assert!(
        !dir.path()
            .join("store/timelines")
            .read_dir()
            .unwrap()
            .any(|e| {
                let p = e.unwrap().path();
                std::fs::read(p.join("manifest")).is_err()
            })
    );
    assert_eq!(
        std::fs::read(&manifest).unwrap(),
        before,
        "the manifest changed"
    );
    let j = run(&["--store", &s, "info", "--json"]).ok().json();
    assert_eq!(
        j["timelines"].as_array().unwrap().len(),
        2,
        "a refused branch was created"
    );

    // A store another process holds is refused with its own code.
    let held = Store::open_blocking(StoreOptions::new(dir.path().join("store"))).unwrap();
    run(&["--store", &s, "info"]).fails(5, &["locked"]);
    drop(held);

    // Every verb has help with an example.
    for verb in [
        "info", "layers", "tree", "get", "history", "lsn-at", "time-at", "verify", "dump",
        "branch", "restore", "gc", "compact", "evict",
    ] {
        let h = run(&[verb, "--help"]).ok();
        assert!(
            h.stdout.contains("Example"),
            "{verb} --help has no example:\n{}",
            h.stdout
        );
    }
    assert!(run(&["--help"]).ok().stdout.contains("Exit codes"));
}

#[test]
fn maintenance_verbs_branch_restore_compact_gc_and_evict() {
    let (dir, _, _) = local_store();
    let s = store_arg(&dir);
    let b = run(&[
        "--store", &s, "branch", "feat", "--from", "main", "--at", "0/20",
    ])
    .ok();
    assert!(b.stdout.contains("created timeline feat"), "{}", b.stdout);
    let j = run(&["--store", &s, "get", "feat", "page/1", "--json"])
        .ok()
        .json();
    assert_eq!(j["lsn"], "0/20");
    assert_eq!(j["value"]["utf8"], "one+1");

    let r = run(&["--store", &s, "restore", "main", "--at", "0/20", "--json"])
        .ok()
        .json();
    assert_eq!(r["lsn"], "0/20");
    assert_eq!(r["backup_name"], "main@restore-1");
    let j = run(&["--store", &s, "get", "main", "page/1", "--json"])
        .ok()
        .json();
    assert_eq!(j["value"]["utf8"], "one+1", "main now reads as of 0/20");
    let t = run(&["--store", &s, "tree"]).ok();
    assert!(t.stdout.contains("main@restore-1"), "{}", t.stdout);

    let c = run(&["--store", &s, "compact", "main@restore-1", "--json"])
        .ok()
        .json();
    assert_eq!(c["l0_merged"], 3);
    let g = run(&["--store", &s, "gc", "main@restore-1"]).ok();
    assert!(
        g.stdout.contains("GC of main@restore-1: cutoff"),
        "{}",
        g.stdout
    );
    let e = run(&["--store", &s, "evict", "--budget", "0", "--json"])
        .ok()
        .json();
    assert_eq!(
        e["evicted_layers"], 0,
        "nothing is uploaded without a remote"
    );
    assert_eq!(e["kept"][0]["reason"], "NotUploaded");
    run(&["--store", &s, "verify"]).ok();
}

#[test]
fn verify_names_every_damaged_file_and_offset_and_dump_reads_them() {
    let (dir, main_id, dev_id) = local_store();
    let s = store_arg(&dir);
    let ok = run(&["--store", &s, "verify"]).ok();
    assert!(ok.stdout.contains("every checksum holds"), "{}", ok.stdout);

    let main_dir = dir.path().join("store/timelines").join(main_id.to_string());
    let layer = layer_files(&main_dir)[0].clone();
    // dump reads what verify checks.
    let d = run(&["dump", layer.to_str().unwrap(), "--json"])
        .ok()
        .json();
    let blocks = d["layer"]["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["offset"], 0);
    let keys: Vec<&str> = blocks
        .iter()
        .flat_map(|b| b["versions"].as_array().unwrap())
        .map(|v| v["key"]["utf8"].as_str().unwrap_or("(hex)"))
        .collect();
    assert!(keys.contains(&"page/1"), "{keys:?}");
    let text = run(&["dump", layer.to_str().unwrap()]).ok();
    assert!(text.stdout.contains("block at offset 0"), "{}", text.stdout);
    let m = run(&["dump", main_dir.join("manifest").to_str().unwrap()]).ok();
    assert!(
        m.stdout
            .contains(&format!("manifest of timeline {main_id}")),
        "{}",
        m.stdout
    );
    assert!(
        m.stdout.contains("disk consistent LSN  0/40"),
        "{}",
        m.stdout
    );
    assert!(m.stdout.contains("layers               3"), "{}", m.stdout);

    // One bit in the first data block of a layer, one in dev's manifest.
    flip(&layer, 12);
    let dev_manifest = dir
        .path()
        .join("store/timelines")
        .join(dev_id.to_string())
        .join("manifest");
    flip(&dev_manifest, 20);
    let bad = run(&["--store", &s, "verify"]);
    assert_eq!(bad.code, 4, "{}\n{}", bad.stdout, bad.stderr);
    assert!(
        bad.stdout.contains(&format!(
            "DAMAGED corruption: {} at offset 0:",
            layer.display()
        )),
        "{}",
        bad.stdout
    );
    assert!(
        bad.stdout.contains(&format!(
            "DAMAGED corruption: {} at offset",
            dev_manifest.display()
        )),
        "{}",
        bad.stdout
    );
    assert!(
        bad.stdout.contains("2 damaged places in 2 files"),
        "{}",
        bad.stdout
    );
    let j = run(&["--store", &s, "verify", "--json"]).json();
    assert_eq!(j["clean"], false);
    let damaged = j["checked"][0]["damaged"].as_array().unwrap();
    let layer_d = damaged
        .iter()
        .find(|d| d["file"] == layer.display().to_string())
        .unwrap();
    assert_eq!(layer_d["offset"], 0);
    let man_d = damaged
        .iter()
        .find(|d| d["file"] == dev_manifest.display().to_string())
        .unwrap();
    assert!(man_d["offset"].as_u64().is_some(), "{man_d}");
    // dump of the damaged layer names the offset too.
    run(&["dump", layer.to_str().unwrap()]).fails(4, &["at offset 0"]);
}

/// A store whose remote is a local folder, read through a `file://` URL.
#[test]
fn a_store_in_a_local_folder_object_store_reads_read_only_and_verifies() {
    let bucket = tempfile::tempdir().unwrap();
    let url = format!("file://{}/tenant", bucket.path().display());
    let remote = RemoteStorage::from_url(&url, Vec::new())
        .unwrap()
        .with_claim_grace(Duration::from_millis(10));
    let node = tempfile::tempdir().unwrap();
    let (main_id, _) = make_store(StoreOptions::new(node.path().join("store")).remote(remote));
    let s = store_arg(&node);

    let j = run(&["--store", &url, "info", "--json"]).ok().json();
    assert_eq!(j["read_only"], true);
    let main = j["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "main")
        .unwrap()
        .clone();
    assert_eq!(
        main["disk_consistent_lsn"], "0/40",
        "close flushed and uploaded"
    );
    assert_eq!(main["resident_bytes"], 0, "an attach downloads no layer");
    let l = run(&["--store", &url, "layers", "main"]).ok();
    assert!(l.stdout.contains("remote"), "{}", l.stdout);
    let g = run(&[
        "--store", &url, "get", "main", "page/1", "--at", "0/20", "--json",
    ])
    .ok()
    .json();
    assert_eq!(g["value"]["utf8"], "one+1");
    let h = run(&["--store", &url, "history", "main", "page/1", "--json"])
        .ok()
        .json();
    assert_eq!(h["versions"].as_array().unwrap().len(), 4);
    run(&["--store", &url, "gc", "main"]).fails(7, &["read-only"]);
    run(&["--store", &url, "--remote", &url, "info"]).fails(2, &["--remote"]);

    let ok = run(&["--store", &url, "verify"]).ok();
    assert!(ok.stdout.contains("every checksum holds"), "{}", ok.stdout);
    let both = run(&["--store", &s, "--remote", &url, "verify", "--json"])
        .ok()
        .json();
    assert_eq!(
        both["checked"].as_array().unwrap().len(),
        2,
        "local and remote"
    );

    // One bit in a layer object: the trailer and the block inside are both named.
    let objects = bucket
        .path()
        .join("tenant/timelines")
        .join(main_id.to_string());
    let mut layer_objects: Vec<PathBuf> = std::fs::read_dir(&objects)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".layer-"))
        .collect();
    layer_objects.sort();
    let object = &layer_objects[0];
    flip(object, 12);
    let bad = run(&["--store", &url, "verify", "--json"]);
    assert_eq!(bad.code, 4, "{}\n{}", bad.stdout, bad.stderr);
    let j = bad.json();
    let damaged = j["checked"][0]["damaged"].as_array().unwrap();
    let name = object.file_name().unwrap().to_string_lossy().into_owned();
    let offsets: Vec<u64> = damaged
        .iter()
        .filter(|d| d["file"].as_str().unwrap().ends_with(&name))
        .map(|d| d["offset"].as_u64().unwrap())
        .collect();
    let size = std::fs::metadata(object).unwrap().len();
    assert!(offsets.contains(&0), "the damaged block: {damaged:?}");
    assert!(offsets.contains(&(size - 4)), "the trailer: {damaged:?}");
    let text = run(&["--store", &url, "verify"]);
    assert_eq!(text.code, 4);
    assert!(text.stdout.contains(&name), "{}", text.stdout);
}

/// The same on the S3 server, when it runs.
#[test]
fn a_store_on_s3_reads_read_only_and_verifies() {
    let Some(endpoint) = server_env("STRATAKV_S3_ENDPOINT") else {
        return;
    };
    let Some(bucket) = server_env("STRATAKV_S3_BUCKET") else {
        return;
    };
    let prefix = unique_prefix("cli", "s3");
    let backend = Backend::s3(prefix.clone()).unwrap();
    let node = tempfile::tempdir().unwrap();
    let (main_id, _) =
        make_store(StoreOptions::new(node.path().join("store")).remote(backend.remote()));
    let url = format!("s3://{bucket}/{prefix}");
    let endpoint_opt = format!("aws_endpoint={endpoint}");
    let with = |args: &[&str]| {
        let mut a = vec![
            "--store",
            url.as_str(),
            "-o",
            endpoint_opt.as_str(),
            "-o",
            "aws_allow_http=true",
            "-o",
            "aws_virtual_hosted_style_request=false",
            "-o",
            "aws_region=us-east-1",
            "-o",
            "aws_access_key_id=stratakv",
            "-o",
            "aws_secret_access_key=stratakv",
        ];
        a.extend_from_slice(args);
        run(&a)
    };
    let j = with(&["info", "--json"]).ok().json();
    assert_eq!(j["timelines"].as_array().unwrap().len(), 2);
    let g = with(&["get", "main", "page/1", "--at", "0/20", "--json"])
        .ok()
        .json();
    assert_eq!(g["value"]["utf8"], "one+1");
    with(&["verify"]).ok();

    // Flip one bit of a layer object in the bucket.
    let remote = backend.remote();
    let layers: Vec<String> =
        common::backends::on_tokio(remote.list(&format!("timelines/{main_id}")))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.contains(".layer-"))
            .collect();
    let name = layers[0].clone();
    let location = remote.location(&name).unwrap();
    common::backends::on_tokio(async {
        use stratakv::object_store::ObjectStoreExt;
        let mut b = backend
            .store
            .get(&location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        b[12] ^= 0x10;
        backend.store.put(&location, b.into()).await.unwrap();
    });
    let bad = with(&["verify"]);
    assert_eq!(bad.code, 4, "{}\n{}", bad.stdout, bad.stderr);
    assert!(
        bad.stdout.contains(&format!("{location} at offset 0")),
        "{}",
        bad.stdout
    );
}
