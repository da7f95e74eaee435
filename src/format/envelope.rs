//! The envelope of small whole-file records (manifest, catalog).
//!
//! | field    | size | meaning |
//! |----------|------|---------|
//! | magic    | 8    | names the record kind |
//! | version  | 2    | u16 format version |
//! | body_len | 4    | u32 |
//! | body     | body_len | |
//! | crc32    | 4    | CRC32 of everything before it |

use std::path::Path;

use crate::error::{Error, Result};

const MAGIC_LEN: usize = 8;
const VERSION_AT: usize = MAGIC_LEN;
const BODY_LEN_AT: usize = VERSION_AT + 2;
const BODY_AT: usize = BODY_LEN_AT + 4;
const CRC_LEN: usize = 4;

/// Wraps `body` in an envelope.
pub(crate) fn seal(magic: &[u8; 8], version: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BODY_AT + body.len() + CRC_LEN);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks the envelope of `file` (read from `path`) and returns its body.
pub(crate) fn unseal<'a>(
    magic: &[u8; 8],
    version: u16,
    file: &'a [u8],
    path: &Path,
) -> Result<&'a [u8]> {
    unseal_versions(magic, version..=version, file, path).map(|(_, body)| body)
}

/// Checks the envelope of `file` (read from `path`), of any version in `versions`, and returns
/// its version and body.
pub(crate) fn unseal_versions<'a>(
    magic: &[u8; 8],
    versions: std::ops::RangeInclusive<u16>,
    file: &'a [u8],
    path: &Path,
) -> Result<(u16, &'a [u8])> {
    if file.len() < BODY_AT + CRC_LEN {
        return Err(Error::corruption(
            path,
            0,
            format!("{} bytes is too short", file.len()),
        ));
    }
    if &file[..MAGIC_LEN] != magic {
        return Err(Error::corruption(
            path,
            0,
            format!("bad magic, expected {:?}", String::from_utf8_lossy(magic)),
        ));
    }
    let body_len = u32::from_le_bytes(file[BODY_LEN_AT..BODY_AT].try_into().expect("4")) as usize;
    if BODY_AT + body_len + CRC_LEN != file.len() {
        return Err(Error::corruption(
            path,
            BODY_LEN_AT as u64,
            format!(
                "body length {body_len} does not match file length {}",
                file.len()
            ),
        ));
    }
    let crc_at = BODY_AT + body_len;
    let stored = u32::from_le_bytes(file[crc_at..].try_into().expect("4"));
    if crc32fast::hash(&file[..crc_at]) != stored {
        return Err(Error::corruption(path, crc_at as u64, "checksum mismatch"));
    }
    let v = u16::from_le_bytes(file[VERSION_AT..BODY_LEN_AT].try_into().expect("2"));
    if !versions.contains(&v) {
        return Err(Error::corruption(
            path,
            VERSION_AT as u64,
            format!("unknown format version {v}"),
        ));
    }
    Ok((v, &file[BODY_AT..crc_at]))
}

/// Offset of the body inside an envelope, for error messages.
pub(crate) const BODY_OFFSET: u64 = BODY_AT as u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_table_decodes_a_hand_built_example() {
        let body = b"any body";
        let mut b = Vec::new();
        b.extend_from_slice(b"STRKVTST"); // magic: names the record kind
        b.extend_from_slice(&3u16.to_le_bytes()); // version
        b.extend_from_slice(&8u32.to_le_bytes()); // body_len
        b.extend_from_slice(body); // body
        let crc = crc32fast::hash(&b); // crc32: of everything before it
        b.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(BODY_OFFSET, 14);
        assert_eq!(unseal(b"STRKVTST", 3, &b, Path::new("e")).unwrap(), body);
        assert_eq!(seal(b"STRKVTST", 3, body), b);
    }
}
