//! A stable-toolchain fuzz driver: runs the targets of `stratakv_fuzz` on mutated inputs
//! without libFuzzer.
//!
//! It starts from each target's seeds (and any files in `corpus/<target>/`), applies random
//! mutations (bit flips, byte sets, inserts, deletes, duplications, splices, truncations), keeps
//! mutants that decoded as new starting points, and catches panics. There is no coverage
//! feedback: it is the fallback for machines without a nightly toolchain, and a fast smoke run.
//!
//! ```text
//! cargo run --release --no-default-features --bin drive -- [TARGET|all] [--secs N] [--iters N] [--seed S]
//! cargo run --release --no-default-features --bin drive -- --write-seeds corpus
//! ```
//!
//! A panicking input is written to `artifacts/<target>/crash-<hash>`; replay one with
//! `drive TARGET --replay FILE`. Exits non-zero if any input panicked.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stratakv_fuzz::{TARGETS, Target, seeds};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const POOL_MAX: usize = 4096;
const MAX_LEN: usize = 1 << 16;

/// Interesting byte values: boundaries of the integer widths the formats use.
const MAGIC_BYTES: [u8; 8] = [0, 1, 2, 3, 0x7F, 0x80, 0xFE, 0xFF];

fn mutate(input: &mut Vec<u8>, pool: &[Vec<u8>], rng: &mut Rng) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = input.len();
        match rng.below(10) {
            0 | 1 if len > 0 => {
                let bit = rng.below(len * 8);
                input[bit / 8] ^= 1 << (bit % 8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                input[i] = if rng.below(2) == 0 {
                    MAGIC_BYTES[rng.below(MAGIC_BYTES.len())]
                } else {
                    rng.next() as u8
                };
            }
            3 if len >= 4 => {
                // An interesting 16- or 32-bit value, little-endian.
                let i = rng.below(len - 3);
                let v: u32 = match rng.below(5) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => u32::from(u16::MAX),
                    3 => (len as u32).wrapping_sub(i as u32),
                    _ => rng.next() as u32 % 512,
                };
                let w = if rng.below(2) == 0 { 2 } else { 4 };
                input[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
            4 if len < MAX_LEN => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(i..i, bytes);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                input.drain(i..i + n);
            }
            6 if len > 0 && len < MAX_LEN => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let chunk = input[i..i + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            7 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let i = rng.below(len + 1);
                    let j = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - j).min(128));
                    input.truncate(i);
                    input.extend_from_slice(&other[j..j + n]);
                }
            }
            8 if len > 1 => input.truncate(rng.below(len)),
            _ if len > 0 => {
                let i = rng.below(len);
                input[i] = input[i].wrapping_add(1 + rng.below(3) as u8);
            }
            _ => input.push(rng.next() as u8),
        }
    }
}

fn corpus_files(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect()
}

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn run_one(f: Target, input: &[u8]) -> Result<bool, String> {
    std::panic::catch_unwind(|| f(input)).map_err(|_| {
        LAST_PANIC
            .lock()
            .expect("panic message")
            .take()
            .unwrap_or_else(|| "panic".to_string())
    })
}

fn save_crash(target: &str, input: &[u8]) -> PathBuf {
    let mut h = DefaultHasher::new();
    input.hash(&mut h);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("artifacts")
        .join(target);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    let p = dir.join(format!("crash-{:016x}", h.finish()));
    std::fs::write(&p, input).expect("writing the crash input");
    p
}

struct Stats {
    execs: u64,
    decoded: u64,
    crashes: Vec<(String, PathBuf)>,
}

fn fuzz(name: &str, f: Target, budget: Duration, iters: u64, seed: u64) -> Stats {
    let mut rng = Rng(seed ^ name.len() as u64 ^ u64::from(name.as_bytes()[0]) << 32);
    let mut pool: Vec<Vec<u8>> = seeds(name);
    pool.extend(corpus_files(name));
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut stats = Stats {
        execs: 0,
        decoded: 0,
        crashes: Vec::new(),
    };
    let mut seen_messages: Vec<String> = Vec::new();
    let started = Instant::now();
    // Seeds first, unmutated.
    for s in pool.clone() {
        stats.execs += 1;
        if let Err(msg) = run_one(f, &s) {
            let p = save_crash(name, &s);
            stats.crashes.push((msg, p));
        }
    }
    while started.elapsed() < budget && stats.execs < iters {
        let mut input = pool[rng.below(pool.len())].clone();
        if rng.below(20) == 0 {
            // Now and then, plain random bytes.
            let n = rng.below(256);
            input = (0..n).map(|_| rng.next() as u8).collect();
        }
        mutate(&mut input, &pool, &mut rng);
        stats.execs += 1;
        match run_one(f, &input) {
            Ok(true) => {
                stats.decoded += 1;
                if pool.len() < POOL_MAX {
                    pool.push(input);
                } else {
                    let i = rng.below(pool.len());
                    pool[i] = input;
                }
            }
            Ok(false) => {}
            Err(msg) => {
                // Report each distinct message once (the first line, without numbers).
                let shape: String = msg
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .collect();
                if !seen_messages.contains(&shape) {
                    seen_messages.push(shape);
                    let p = save_crash(name, &input);
                    eprintln!("{name}: FINDING: {msg}\n  input saved to {}", p.display());
                    stats.crashes.push((msg, p));
                }
            }
        }
    }
    stats
}

fn usage() -> ! {
    eprintln!(
        "usage: drive [TARGET|all] [--secs N] [--iters N] [--seed S]\n       drive TARGET --replay FILE\n       drive TARGET --minimize FILE\n       drive --write-seeds DIR\ntargets: {}",
        TARGETS.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
    );
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut which = "all".to_string();
    let mut secs = 60u64;
    let mut iters = u64::MAX;
    let mut seed = 0x5EED_F022u64;
    let mut replay = None;
    let mut minimize = None;
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--secs" => secs = val().parse().unwrap_or_else(|_| usage()),
            "--iters" => iters = val().parse().unwrap_or_else(|_| usage()),
            "--seed" => seed = val().parse().unwrap_or_else(|_| usage()),
            "--replay" => replay = Some(PathBuf::from(val())),
            "--minimize" => minimize = Some(PathBuf::from(val())),
            "--write-seeds" => {
                let dir = PathBuf::from(val());
                for (name, _) in TARGETS {
                    let d = dir.join(name);
                    std::fs::create_dir_all(&d).expect("seed dir");
                    for (i, s) in seeds(name).iter().enumerate() {
                        std::fs::write(d.join(format!("seed-{i}")), s).expect("seed file");
                    }
                }
                println!("wrote seeds under {}", dir.display());
                return;
            }
            "-h" | "--help" => usage(),
            t if !t.starts_with('-') => which = t.to_string(),
            _ => usage(),
        }
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = match info.payload().downcast_ref::<String>() {
            Some(s) => s.clone(),
            None => info
                .payload()
                .downcast_ref::<&str>()
                .map_or_else(|| "panic".to_string(), |s| s.to_string()),
        };
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        *LAST_PANIC.lock().expect("panic message") = Some(format!("{msg}{at}"));
    }));
    let targets: Vec<_> = TARGETS
        .iter()
        .filter(|(n, _)| which == "all" || *n == which)
        .collect();
    if targets.is_empty() {
        usage();
    }
    if let Some(file) = minimize {
        let [(name, f)] = targets[..] else { usage() };
        let input = std::fs::read(&file).expect("reading the input");
        let Err(first) = run_one(*f, &input) else {
            println!("{name}: the input does not fail");
            return;
        };
        let shape = |m: &str| -> String {
            m.lines()
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect()
        };
        let want = shape(&first);
        let mut best = input;
        let mut chunk = best.len() / 2;
        while chunk >= 1 {
            let mut i = 0;
            while i + chunk <= best.len() {
                let mut cand = best.clone();
                cand.drain(i..i + chunk);
                match run_one(*f, &cand) {
                    Err(m) if shape(&m) == want => best = cand,
                    _ => i += chunk,
                }
            }
            chunk /= 2;
        }
        let p = file.with_extension("min");
        std::fs::write(&p, &best).expect("writing the minimized input");
        println!(
            "{name}: minimized to {} bytes: {best:?}\n  {}\n  saved to {}",
            best.len(),
            first,
            p.display()
        );
        return;
    }
    if let Some(file) = replay {
        let input = std::fs::read(&file).expect("reading the input");
        for (name, f) in &targets {
            match run_one(*f, &input) {
                Ok(d) => println!("{name}: no finding (decoded: {d})"),
                Err(m) => {
                    println!("{name}: FINDING: {m}");
                    std::process::exit(1);
                }
            }
        }
        return;
    }
    let mut failed = false;
    println!("| target | seconds | executions | execs/s | decoded | findings |");
    println!("|---|---|---|---|---|---|");
    for (name, f) in targets {
        let started = Instant::now();
        let s = fuzz(name, *f, Duration::from_secs(secs), iters, seed);
        let took = started.elapsed().as_secs_f64();
        println!(
            "| {name} | {took:.0} | {} | {:.0} | {} | {} |",
            s.execs,
            s.execs as f64 / took.max(1e-9),
            s.decoded,
            s.crashes.len()
        );
        for (m, p) in &s.crashes {
            println!("  finding: {m}\n    input: {}", p.display());
        }
        failed |= !s.crashes.is_empty();
    }
    if failed {
        std::process::exit(1);
    }
}
