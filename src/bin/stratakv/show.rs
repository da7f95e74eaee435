//! How keys, values, LSNs, times and sizes are printed, for people and for `--json`.

use std::time::{Duration, SystemTime};

use serde_json::{Value as Json, json};
use stratakv::{KeyRange, LayerDesc, Lsn, Timeline, Value};

use crate::Failure;

/// Bytes as text when they are printable UTF-8, else as `0x…` hex.
pub fn bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => hex(b),
    }
}

/// `0x` and two lowercase hex digits a byte.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Bytes for `--json`: `{"utf8": …}` when they are UTF-8, else `{"hex": …}`.
pub fn bytes_json(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(s) => json!({ "utf8": s }),
        Err(_) => json!({ "hex": hex(b) }),
    }
}

/// A key as `"text"` (control characters escaped) when it is UTF-8, else `0x…`.
pub fn key(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => hex(b),
    }
}

/// A key range as `[start, end)`.
pub fn key_range(r: &KeyRange) -> String {
    let end = r.end.as_ref().map_or_else(|| "∞".to_string(), |e| key(e));
    format!("[{}, {end})", key(&r.start))
}

pub fn key_range_json(r: &KeyRange) -> Json {
    json!({ "start": bytes_json(&r.start), "end": r.end.as_ref().map(|e| bytes_json(e)) })
}

/// An LSN range as `start..end`.
pub fn lsn_range(r: &std::ops::Range<Lsn>) -> String {
    format!("{}..{}", r.start, r.end)
}

/// A size in bytes, with a binary unit.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A time as RFC 3339 in UTC, to the millisecond.
pub fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// What was written: `image (5 B)`, `delta (3 B)`, `delta, will_init (3 B)`, `tombstone`.
pub fn written(v: &Value) -> String {
    match v {
        Value::Image(b) => format!("image ({})", size(b.len() as u64)),
        Value::Delta { record, will_init } => {
            let init = if *will_init { ", will_init" } else { "" };
            format!("delta{init} ({})", size(record.len() as u64))
        }
        Value::Tombstone => "tombstone".to_string(),
    }
}

pub fn written_json(v: &Value) -> Json {
    match v {
        Value::Image(b) => json!({ "kind": "image", "bytes": bytes_json(b) }),
        Value::Delta { record, will_init } => {
            json!({ "kind": "delta", "will_init": will_init, "record": bytes_json(record) })
        }
        Value::Tombstone => json!({ "kind": "tombstone" }),
    }
}

pub fn layer_json(d: &LayerDesc) -> Json {
    json!({
        "file_name": d.file_name,
        "kind": format!("{:?}", d.kind).to_lowercase(),
        "level": d.level,
        "lsn_range": { "start": d.lsn_range.start.to_string(), "end": d.lsn_range.end.to_string() },
        "key_range": key_range_json(&d.key_range),
        "size": d.file_size,
    })
}

/// An LSN, or a time that the timeline's commit-time index turns into one.
pub fn point(tl: &Timeline, at: &str) -> Result<(Lsn, Option<SystemTime>), Failure> {
    if at.contains('/') {
        return at.parse::<Lsn>().map(|l| (l, None)).map_err(|_| {
            Failure::usage(format!(
                "{at:?} is not an LSN: write it as X/Y in hex, e.g. 0/16B3748"
            ))
        });
    }
    let t = parse_time(at)?;
    let lsn = tl
        .lsn_at(t)
        .map_err(|e| Failure::from(e).context(&format!("LSN of timeline {} at {at}", tl.name())))?;
    Ok((lsn, Some(t)))
}

/// A time as RFC 3339 (`2026-12-04T10:00:00Z`), or `@SECONDS` since the Unix epoch.
pub fn parse_time(s: &str) -> Result<SystemTime, Failure> {
    if let Some(secs) = s.strip_prefix('@') {
        let secs: f64 = secs
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| Failure::usage(format!("{s:?} is not @SECONDS since the Unix epoch")))?;
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    humantime::parse_rfc3339_weak(s).map_err(|e| {
        Failure::usage(format!(
            "{s:?} is neither an LSN (X/Y hex) nor a time (RFC 3339, e.g. 2026-12-04T10:00:00Z, or @SECONDS): {e}"
        ))
    })
}

/// A size like `1048576`, `512KiB`, `64MiB`, `2GiB` (also `K`, `M`, `G`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1048576, 512KiB, 64MiB)"))?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (B, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &Json) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}
