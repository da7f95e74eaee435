//! Knobs read from the environment.

/// The number in the environment variable `name` (decimal, or hexadecimal after `0x`), `None`
/// if it is not set; panics if it is set to anything else, so a mistyped seed is not run as
/// the default.
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let t = v.trim();
    let n = match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    Some(n.unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")))
}
