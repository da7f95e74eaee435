//! The store catalog: which timelines exist and their names. Its presence marks a store.
//!
//! Wrapped in an [envelope](super::envelope) with magic `STRKVCAT`, version 1. Body:
//!
//! | field       | size | meaning |
//! |-------------|------|---------|
//! | count       | 4    | u32 number of timelines |
//! | per timeline: |    | |
//! | name        | 2 + n | u16 length and UTF-8 bytes |
//! | timeline_id | 16   | big-endian |

use std::path::Path;

use super::cursor::{Cursor, put_short_bytes};
use super::envelope::{BODY_OFFSET, seal, unseal};
use crate::error::{Error, Result};
use crate::id::TimelineId;

const MAGIC: &[u8; 8] = b"STRKVCAT";
const VERSION: u16 = 1;

/// One timeline in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The timeline's name.
    pub name: String,
    /// The timeline.
    pub id: TimelineId,
}

/// The store catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Every timeline, in creation order.
    pub timelines: Vec<CatalogEntry>,
}

impl Catalog {
    /// Encodes the catalog into the bytes of its file.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(self.timelines.len() as u32).to_le_bytes());
        for e in &self.timelines {
            put_short_bytes(&mut b, e.name.as_bytes());
            b.extend_from_slice(&e.id.to_bytes());
        }
        seal(MAGIC, VERSION, &b)
    }

    /// Decodes the catalog file at `path`.
    ///
    /// # Errors
    /// [`Corruption`](crate::ErrorKind::Corruption) naming `path` and the offset.
    pub fn decode(file: &[u8], path: &Path) -> Result<Catalog> {
        let body = unseal(MAGIC, VERSION, file, path)?;
        let mut c = Cursor::new(body);
        let bad = |c: &Cursor, what: String| {
            Error::corruption(
                path,
                BODY_OFFSET + c.pos() as u64,
                format!("catalog: {what}"),
            )
        };
        let count = c.u32().map_err(|e| bad(&c, e))? as usize;
        if count > c.remaining() / 18 {
            return Err(bad(&c, format!("count {count} does not fit")));
        }
        let mut timelines = Vec::with_capacity(count);
        for _ in 0..count {
            let name = c.short_bytes().map_err(|e| bad(&c, e))?;
            let name = std::str::from_utf8(name)
                .map_err(|e| bad(&c, format!("name is not UTF-8: {e}")))?
                .to_string();
            let id: [u8; 16] = c.take(16).map_err(|e| bad(&c, e))?.try_into().expect("16");
            timelines.push(CatalogEntry {
                name,
                id: TimelineId::from_bytes(id),
            });
        }
        c.expect_end().map_err(|e| bad(&c, e))?;
        Ok(Catalog { timelines })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    fn catalog() -> impl Strategy<Value = Catalog> {
        proptest::collection::vec(("\\PC{0,12}", any::<u128>()), 0..6).prop_map(|v| Catalog {
            timelines: v
                .into_iter()
                .map(|(name, id)| CatalogEntry {
                    name,
                    id: TimelineId::from(id),
                })
                .collect(),
        })
    }

    #[test]
    fn catalog_table_decodes_a_hand_built_example() {
        let mut body = Vec::new();
        body.extend_from_slice(&2u32.to_le_bytes()); // count
        // Timeline 1.
        body.extend_from_slice(&4u16.to_le_bytes()); // name: u16 length
        body.extend_from_slice(b"main"); // name: UTF-8 bytes
        body.extend_from_slice(&[
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]); // timeline_id, big-endian
        // Timeline 2: the length counts UTF-8 bytes, not characters.
        body.extend_from_slice(&5u16.to_le_bytes()); // name: u16 length
        body.extend_from_slice("café".as_bytes()); // name: UTF-8 bytes
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x02]); // timeline_id

        let mut b = Vec::new();
        b.extend_from_slice(b"STRKVCAT"); // envelope magic
        b.extend_from_slice(&1u16.to_le_bytes()); // envelope version
        b.extend_from_slice(&(body.len() as u32).to_le_bytes()); // envelope body_len
        b.extend_from_slice(&body);
        let crc = crc32fast::hash(&b); // envelope crc32
        b.extend_from_slice(&crc.to_le_bytes());

        let want = Catalog {
            timelines: vec![
                CatalogEntry {
                    name: "main".to_string(),
                    id: TimelineId::from(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
                },
                CatalogEntry {
                    name: "café".to_string(),
                    id: TimelineId::from(0x0102),
                },
            ],
        };
        assert_eq!(Catalog::decode(&b, Path::new("c")).unwrap(), want);
        assert_eq!(want.encode(), b);
    }

    proptest! {
        #[test]
        fn round_trip(c in catalog()) {
            prop_assert_eq!(Catalog::decode(&c.encode(), Path::new("c")).unwrap(), c);
        }

        #[test]
        fn every_bit_flip_is_detected(c in catalog(), pick in any::<usize>()) {
            let mut file = c.encode();
            let bit = pick % (file.len() * 8);
            file[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(Catalog::decode(&file, Path::new("c")).unwrap_err().kind(), ErrorKind::Corruption);
        }
    }
}
