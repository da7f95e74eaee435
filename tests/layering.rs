//! The crate's top-level modules depend on each other in one direction only: no import cycle,
//! nothing reaching back up. Read from the sources: every `crate::<module>` named in code (not
//! in comments) of `src/<module>.rs` or `src/<module>/`.
//!
//! The order, top to bottom, is written beside `mod` in `src/lib.rs`; this test fails when a
//! change adds an edge that closes a cycle, and names it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The top-level module a source file belongs to (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// Every `crate::<name>` in the code of `text`, comments left out.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

/// The module graph: module → modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in rust_files(&src) {
        let Some(m) = module_of(&src, &f) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        let deps = g.entry(m.clone()).or_default();
        deps.extend(named_modules(&text).into_iter().filter(|d| *d != m));
    }
    g
}

/// A cycle through `node`, if the graph has one reachable from it.
fn find_cycle(
    g: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|p| p == node) {
        let mut cycle = path[i..].to_vec();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for d in g.get(node).into_iter().flatten() {
        if let Some(c) = find_cycle(g, d, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn the_top_level_modules_have_no_import_cycle() {
    let g = graph();
    assert!(
        g.contains_key("store") && g.contains_key("timeline"),
        "{g:?}"
    );
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(cycle) = find_cycle(&g, m, &mut Vec::new(), &mut done) {
            panic!(
                "import cycle between top-level modules: {}\nthe graph: {g:#?}",
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("store", vec!["timeline"]),
        ("timeline", vec!["layer", "store"]),
        ("layer", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    let cycle = find_cycle(&g, "store", &mut Vec::new(), &mut BTreeSet::new());
    assert_eq!(
        cycle,
        Some(vec!["store".into(), "timeline".into(), "store".into()])
    );
    assert_eq!(
        named_modules("use crate::timeline::Env; // crate::store\nlet x = crate::value::f();"),
        ["timeline", "value"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
