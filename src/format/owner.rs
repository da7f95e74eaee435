//! The owner record: the newest generation under which this local directory owned its remote.
//!
//! Written after every claim, before anything is uploaded under the new generation. At the next
//! open it tells whether the local state is the newest owner's (no newer generation has written
//! to the remote since) or stale (another node took the store over and wrote). See the remote
//! module's docs, "Reopening a directory".
//!
//! Wrapped in an [envelope](super::envelope) with magic `STRKVOWN`, version 1. Body:
//!
//! | field      | size | meaning |
//! |------------|------|---------|
//! | generation | 4    | u32, the generation this directory last claimed |

use std::path::Path;

use super::envelope::{BODY_OFFSET, seal, unseal};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"STRKVOWN";
const VERSION: u16 = 1;
const GENERATION_LEN: usize = 4;

/// Encodes the owner record of `generation`.
pub(crate) fn encode_owner(generation: u32) -> Vec<u8> {
    seal(MAGIC, VERSION, &generation.to_le_bytes())
}

/// Decodes the owner record in `file`, read from `path`.
///
/// # Errors
/// [`Corruption`](crate::ErrorKind::Corruption) naming `path` and the offset.
pub(crate) fn decode_owner(file: &[u8], path: &Path) -> Result<u32> {
    let body = unseal(MAGIC, VERSION, file, path)?;
    let bytes: [u8; GENERATION_LEN] = body.try_into().map_err(|_| {
        Error::corruption(
            path,
            BODY_OFFSET,
            format!(
                "owner record body is {} bytes, expected {GENERATION_LEN}",
                body.len()
            ),
        )
    })?;
    Ok(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    #[test]
    fn owner_table_decodes_a_hand_built_example() {
        let mut b = Vec::new();
        b.extend_from_slice(b"STRKVOWN"); // envelope magic
        b.extend_from_slice(&1u16.to_le_bytes()); // envelope version
        b.extend_from_slice(&4u32.to_le_bytes()); // envelope body_len
        b.extend_from_slice(&0x0102_0304u32.to_le_bytes()); // generation
        let crc = crc32fast::hash(&b); // envelope crc32
        b.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_owner(&b, Path::new("o")).unwrap(), 0x0102_0304);
        assert_eq!(encode_owner(0x0102_0304), b);
    }

    proptest! {
        #[test]
        fn round_trip(g in any::<u32>()) {
            prop_assert_eq!(decode_owner(&encode_owner(g), Path::new("o")).unwrap(), g);
        }

        #[test]
        fn every_bit_flip_is_detected(g in any::<u32>(), pick in any::<usize>()) {
            let mut file = encode_owner(g);
            let bit = pick % (file.len() * 8);
            file[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(decode_owner(&file, Path::new("o")).unwrap_err().kind(), ErrorKind::Corruption);
        }
    }
}
