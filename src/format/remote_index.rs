//! The remote index of a timeline: what object storage holds for it.
//!
//! Wrapped in an [envelope](super::envelope) with magic `STRKVRIX`, version 1. Body:
//!
//! | field          | size | meaning |
//! |----------------|------|---------|
//! | manifest_len   | 4    | u32 |
//! | manifest       | manifest_len | the timeline's [manifest](super::Manifest) file, as on disk |
//! | layer_count    | 4    | u32 |
//! | per layer:     |      | |
//! | file_name      | 2 + n | u16 length and UTF-8 bytes |
//! | generation     | 4    | u32: the generation in the layer object's name |
//! | time_count     | 4    | u32 |
//! | per commit:    |      | |
//! | lsn, time      | 8 + 8 | u64 each: the `lsn ↔ commit time` index up to `disk_consistent_lsn`, time in microseconds since the Unix epoch |
//! | hot_count      | 4    | u32 |
//! | per hot layer: | 2 + n | file name, u16 length and UTF-8 bytes: the heatmap, most recently read first, for prefetching |

use std::path::Path;

use super::cursor::{Cursor, put_short_bytes};
use super::envelope::{BODY_OFFSET, seal, unseal};
use super::manifest::Manifest;
use crate::error::{Error, Result};
use crate::lsn::Lsn;

const MAGIC: &[u8; 8] = b"STRKVRIX";
const VERSION: u16 = 1;

/// A timeline's index in object storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteIndex {
    /// The manifest: layers and watermarks.
    pub manifest: Manifest,
    /// For each layer of the manifest, the generation of the object holding it.
    pub layer_generations: Vec<(String, u32)>,
    /// Commit times up to `disk_consistent_lsn`: `(lsn, microseconds since the Unix epoch)`.
    pub commit_times: Vec<(Lsn, u64)>,
    /// The heatmap: layers the owner read most recently, most recent first. A node attaching
    /// prefetches them.
    pub hot_layers: Vec<String>,
}

impl RemoteIndex {
    /// Encodes the index.
    pub fn encode(&self) -> Vec<u8> {
        let m = self.manifest.encode();
        let mut b = Vec::with_capacity(m.len() + 16 + self.layer_generations.len() * 64);
        b.extend_from_slice(&(m.len() as u32).to_le_bytes());
        b.extend_from_slice(&m);
        b.extend_from_slice(&(self.layer_generations.len() as u32).to_le_bytes());
        for (name, g) in &self.layer_generations {
            put_short_bytes(&mut b, name.as_bytes());
            b.extend_from_slice(&g.to_le_bytes());
        }
        b.extend_from_slice(&(self.commit_times.len() as u32).to_le_bytes());
        for (lsn, t) in &self.commit_times {
            b.extend_from_slice(&lsn.0.to_le_bytes());
            b.extend_from_slice(&t.to_le_bytes());
        }
        b.extend_from_slice(&(self.hot_layers.len() as u32).to_le_bytes());
        for name in &self.hot_layers {
            put_short_bytes(&mut b, name.as_bytes());
        }
        seal(MAGIC, VERSION, &b)
    }

    /// Decodes an index downloaded from `name` (shown as a path in errors).
    ///
    /// # Errors
    /// [`Corruption`](crate::ErrorKind::Corruption) naming the object and offset.
    pub fn decode(file: &[u8], name: &Path) -> Result<RemoteIndex> {
        let body = unseal(MAGIC, VERSION, file, name)?;
        let mut c = Cursor::new(body);
        let bad = |c: &Cursor, what: String| {
            Error::corruption(
                name,
                BODY_OFFSET + c.pos() as u64,
                format!("remote index: {what}"),
            )
        };
        let mlen = c.u32().map_err(|e| bad(&c, e))? as usize;
        let mbytes = c.take(mlen).map_err(|e| bad(&c, e))?;
        let manifest = Manifest::decode(mbytes, name)?;
        let n = c.u32().map_err(|e| bad(&c, e))? as usize;
        if n > c.remaining() / 6 {
            return Err(bad(&c, format!("layer count {n} does not fit")));
        }
        let mut layer_generations = Vec::with_capacity(n);
        for _ in 0..n {
            let nm = c.short_bytes().map_err(|e| bad(&c, e))?;
            let nm = std::str::from_utf8(nm)
                .map_err(|e| bad(&c, e.to_string()))?
                .to_string();
            let g = c.u32().map_err(|e| bad(&c, e))?;
            layer_generations.push((nm, g));
        }
        let t = c.u32().map_err(|e| bad(&c, e))? as usize;
        if t > c.remaining() / 16 {
            return Err(bad(&c, format!("commit count {t} does not fit")));
        }
        let mut commit_times = Vec::with_capacity(t);
        for _ in 0..t {
            let lsn = Lsn(c.u64().map_err(|e| bad(&c, e))?);
            let time = c.u64().map_err(|e| bad(&c, e))?;
            commit_times.push((lsn, time));
        }
        let h = c.u32().map_err(|e| bad(&c, e))? as usize;
        if h > c.remaining() / 2 {
            return Err(bad(&c, format!("hot layer count {h} does not fit")));
        }
        let mut hot_layers = Vec::with_capacity(h);
        for _ in 0..h {
            let nm = c.short_bytes().map_err(|e| bad(&c, e))?;
            hot_layers.push(
                std::str::from_utf8(nm)
                    .map_err(|e| bad(&c, e.to_string()))?
                    .to_string(),
            );
        }
        c.expect_end().map_err(|e| bad(&c, e))?;
        for l in &manifest.layers {
            if !layer_generations.iter().any(|(n, _)| *n == l.file_name) {
                return Err(bad(&c, format!("no generation for layer {}", l.file_name)));
            }
        }
        Ok(RemoteIndex {
            manifest,
            layer_generations,
            commit_times,
            hot_layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::format::{LayerDesc, LayerKind};
    use crate::id::TimelineId;
    use crate::value::KeyRange;

    fn index() -> RemoteIndex {
        let layers: Vec<LayerDesc> = (0..3)
            .map(|i| LayerDesc {
                file_name: format!("l{i}"),
                kind: LayerKind::Delta,
                level: 0,
                lsn_range: Lsn(i)..Lsn(i + 1),
                key_range: KeyRange::ALL,
                file_size: 100,
            })
            .collect();
        RemoteIndex {
            manifest: Manifest {
                timeline_id: TimelineId::from(7),
                ancestor: None,
                disk_consistent_lsn: Lsn(3),
                gc_cutoff: Lsn(0),
                next_layer_seq: 4,
                layers,
            },
            layer_generations: (0..3).map(|i| (format!("l{i}"), i as u32)).collect(),
            commit_times: vec![(Lsn(1), 10), (Lsn(3), 30)],
            hot_layers: vec!["l2".into(), "l0".into()],
        }
    }

    #[test]
    fn remote_index_table_decodes_a_hand_built_example() {
        // The manifest file, as on disk: one delta layer named "l1".
        let mut m = Vec::new();
        m.extend_from_slice(b"STRKVMAN"); // manifest envelope magic
        m.extend_from_slice(&1u16.to_le_bytes()); // manifest envelope version
        m.extend_from_slice(&78u32.to_le_bytes()); // manifest envelope body_len
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07]); // timeline_id
        m.push(0); // ancestor: none
        m.extend_from_slice(&3u64.to_le_bytes()); // disk_consistent_lsn
        m.extend_from_slice(&0u64.to_le_bytes()); // gc_cutoff
        m.extend_from_slice(&2u64.to_le_bytes()); // next_layer_seq
        m.extend_from_slice(&1u32.to_le_bytes()); // layer_count
        m.extend_from_slice(&2u16.to_le_bytes()); // file_name: u16 length
        m.extend_from_slice(b"l1"); // file_name: UTF-8 bytes
        m.push(0); // kind: delta
        m.push(0); // level: L0
        m.extend_from_slice(&1u64.to_le_bytes()); // lsn_start
        m.extend_from_slice(&4u64.to_le_bytes()); // lsn_end
        m.extend_from_slice(&100u64.to_le_bytes()); // file_size
        m.extend_from_slice(&0u16.to_le_bytes()); // key_start: empty
        m.push(0); // key_end: absent
        let crc = crc32fast::hash(&m); // manifest envelope crc32
        m.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(m.len(), 14 + 78 + 4);

        let mut body = Vec::new();
        body.extend_from_slice(&(m.len() as u32).to_le_bytes()); // manifest_len
        body.extend_from_slice(&m); // manifest
        body.extend_from_slice(&1u32.to_le_bytes()); // layer_count
        body.extend_from_slice(&2u16.to_le_bytes()); // file_name: u16 length
        body.extend_from_slice(b"l1"); // file_name: UTF-8 bytes
        body.extend_from_slice(&5u32.to_le_bytes()); // generation
        body.extend_from_slice(&2u32.to_le_bytes()); // time_count
        body.extend_from_slice(&1u64.to_le_bytes()); // lsn
        body.extend_from_slice(&1_700_000_000_000_000u64.to_le_bytes()); // time
        body.extend_from_slice(&3u64.to_le_bytes()); // lsn
        body.extend_from_slice(&1_700_000_000_000_250u64.to_le_bytes()); // time
        body.extend_from_slice(&2u32.to_le_bytes()); // hot_count
        body.extend_from_slice(&2u16.to_le_bytes()); // hot layer: u16 length
        body.extend_from_slice(b"l1"); // hot layer: UTF-8 bytes
        body.extend_from_slice(&2u16.to_le_bytes()); // hot layer: u16 length
        body.extend_from_slice(b"l0"); // hot layer: UTF-8 bytes

        let mut b = Vec::new();
        b.extend_from_slice(b"STRKVRIX"); // envelope magic
        b.extend_from_slice(&1u16.to_le_bytes()); // envelope version
        b.extend_from_slice(&(body.len() as u32).to_le_bytes()); // envelope body_len
        b.extend_from_slice(&body);
        let crc = crc32fast::hash(&b); // envelope crc32
        b.extend_from_slice(&crc.to_le_bytes());

        let want = RemoteIndex {
            manifest: Manifest {
                timeline_id: TimelineId::from(7),
                ancestor: None,
                disk_consistent_lsn: Lsn(3),
                gc_cutoff: Lsn(0),
                next_layer_seq: 2,
                layers: vec![LayerDesc {
                    file_name: "l1".to_string(),
                    kind: LayerKind::Delta,
                    level: 0,
                    lsn_range: Lsn(1)..Lsn(4),
                    key_range: KeyRange::ALL,
                    file_size: 100,
                }],
            },
            layer_generations: vec![("l1".to_string(), 5)],
            commit_times: vec![
                (Lsn(1), 1_700_000_000_000_000),
                (Lsn(3), 1_700_000_000_000_250),
            ],
            hot_layers: vec!["l1".to_string(), "l0".to_string()],
        };
        assert_eq!(RemoteIndex::decode(&b, Path::new("x")).unwrap(), want);
        assert_eq!(want.encode(), b);
    }

    #[test]
    fn round_trip() {
        let i = index();
        assert_eq!(RemoteIndex::decode(&i.encode(), Path::new("x")).unwrap(), i);
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let bytes = index().encode();
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let err = RemoteIndex::decode(&b, Path::new("idx")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "bit {bit}");
        }
    }

    #[test]
    fn a_layer_without_a_generation_is_corruption() {
        let mut i = index();
        i.layer_generations.pop();
        assert_eq!(
            RemoteIndex::decode(&i.encode(), Path::new("x"))
                .unwrap_err()
                .kind(),
            ErrorKind::Corruption
        );
    }
}
