//! The remote index of a timeline: what object storage holds for it.
//!
//! Wrapped in an [envelope](super::envelope) with magic `STRKVRIX`, version 2 (version 1 still
//! decodes). Body:
//!
//! | field          | size | meaning |
//! |----------------|------|---------|
//! | manifest_len   | 4    | u32 |
//! | manifest       | manifest_len | the timeline's [manifest](super::Manifest) file, as on disk |
//! | layer_count    | 4    | u32 |
//! | per layer:     |      | |
//! | file_name      | 2 + n | u16 length and UTF-8 bytes |
//! | generation     | 4    | u32: the generation in the layer object's name |
//! | time_count     | 4    | u32: the `lsn ↔ commit time` index up to `disk_consistent_lsn`, times in microseconds since the Unix epoch |
//! | per commit:    | varints | its LSN minus the previous commit's, then its time minus the previous commit's: unsigned LEB128 in its shortest form, each after the first commit at least 1 (LSNs and times strictly increase); the first commit's "previous" is LSN 0 at time 0 |
//! | hot_count      | 4    | u32 |
//! | per hot layer: | 2 + n | file name, u16 length and UTF-8 bytes: the heatmap, most recently read first, for prefetching |
//!
//! Version 1 differs only in the commit times: after `time_count`, each commit as two u64
//! (LSN, time), 16 bytes a commit, strictly increasing too; a version 2 commit a microsecond after the one before takes
//! two bytes. Every upload of an index carries the commit times of the whole retention window,
//! so their size is paid at each flush.

use std::path::Path;

use super::cursor::{Cursor, put_short_bytes};
use super::envelope::{BODY_OFFSET, seal, unseal_versions};
use super::manifest::Manifest;
use super::varint::put_uvarint;
use crate::error::{Error, Result};
use crate::lsn::Lsn;

const MAGIC: &[u8; 8] = b"STRKVRIX";
const VERSION: u16 = 2;
/// The first version: commit times as fixed 16-byte pairs.
const VERSION_FIXED_TIMES: u16 = 1;

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
        debug_assert!(
            self.commit_times
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
            "commit times must strictly increase"
        );
        // The first commit as itself, each next one as the difference from the one before.
        let mut previous = (0u64, 0u64);
        for &(Lsn(lsn), time) in &self.commit_times {
            put_uvarint(&mut b, lsn.wrapping_sub(previous.0));
            put_uvarint(&mut b, time.wrapping_sub(previous.1));
            previous = (lsn, time);
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
        let (version, body) = unseal_versions(MAGIC, VERSION_FIXED_TIMES..=VERSION, file, name)?;
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
        let per_commit = if version == VERSION_FIXED_TIMES {
            16
        } else {
            2
        };
        if t > c.remaining() / per_commit {
            return Err(bad(&c, format!("commit count {t} does not fit")));
        }
        // Bounded by what the body holds, not by the count alone: 16 bytes an entry in memory.
        let mut commit_times = Vec::with_capacity(t.min(c.remaining() / 16));
        for i in 0..t {
            let (lsn, time) = if version == VERSION_FIXED_TIMES {
                let lsn = c.u64().map_err(|e| bad(&c, e))?;
                (lsn, c.u64().map_err(|e| bad(&c, e))?)
            } else {
                let (l0, t0) = commit_times
                    .last()
                    .map_or((0, 0), |&(l, t): &(Lsn, u64)| (l.0, t));
                let dl = c.uvarint().map_err(|e| bad(&c, e))?;
                let dt = c.uvarint().map_err(|e| bad(&c, e))?;
                let sum = l0.checked_add(dl).zip(t0.checked_add(dt));
                sum.ok_or_else(|| bad(&c, format!("commit {i} overflows 64 bits")))?
            };
            if let Some(&(Lsn(l0), t0)) = commit_times.last()
                && (lsn <= l0 || time <= t0)
            {
                return Err(bad(
                    &c,
                    format!(
                        "commit {i} (LSN {}, time {time}) does not follow LSN {} at time {t0}",
                        Lsn(lsn),
                        Lsn(l0)
                    ),
                ));
            }
            commit_times.push((Lsn(lsn), time));
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

    /// The hand-built index of the table: one delta layer named "l1", two commits (LSN 1 at
    /// `t1`, LSN 3 at `t3`) whose bytes `times` gives in the envelope `version`'s encoding.
    fn hand_built(version: u16, times: &[u8]) -> (Vec<u8>, RemoteIndex) {
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
        body.extend_from_slice(times); // the two commits
        body.extend_from_slice(&2u32.to_le_bytes()); // hot_count
        body.extend_from_slice(&2u16.to_le_bytes()); // hot layer: u16 length
        body.extend_from_slice(b"l1"); // hot layer: UTF-8 bytes
        body.extend_from_slice(&2u16.to_le_bytes()); // hot layer: u16 length
        body.extend_from_slice(b"l0"); // hot layer: UTF-8 bytes

        let mut b = Vec::new();
        b.extend_from_slice(b"STRKVRIX"); // envelope magic
        b.extend_from_slice(&version.to_le_bytes()); // envelope version
        b.extend_from_slice(&(body.len() as u32).to_le_bytes()); // envelope body_len
        b.extend_from_slice(&body);
        let crc = crc32fast::hash(&b); // envelope crc32
        b.extend_from_slice(&crc.to_le_bytes());

        let index = |t1, t3| RemoteIndex {
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
            commit_times: vec![(Lsn(1), t1), (Lsn(3), t3)],
            hot_layers: vec!["l1".to_string(), "l0".to_string()],
        };
        let want = if version == 1 {
            index(1_700_000_000_000_000, 1_700_000_000_000_250)
        } else {
            index(1_000, 1_250)
        };
        (b, want)
    }

    #[test]
    fn remote_index_table_decodes_a_hand_built_example() {
        let times = [
            0x01, // LSN 1: 1 above LSN 0
            0xE8, 0x07, // time 1000 = 0x3E8, LEB128: low seven bits first, high bit = more
            0x02, // LSN 3: 2 above LSN 1
            0xFA, 0x01, // time 1250: 250 = 0xFA later
        ];
        let (b, want) = hand_built(2, &times);
        assert_eq!(RemoteIndex::decode(&b, Path::new("x")).unwrap(), want);
        assert_eq!(want.encode(), b);
    }

    #[test]
    fn version_1_decodes_and_re_encodes_as_version_2() {
        let mut times = Vec::new();
        times.extend_from_slice(&1u64.to_le_bytes()); // lsn
        times.extend_from_slice(&1_700_000_000_000_000u64.to_le_bytes()); // time
        times.extend_from_slice(&3u64.to_le_bytes()); // lsn
        times.extend_from_slice(&1_700_000_000_000_250u64.to_le_bytes()); // time
        let (b, want) = hand_built(1, &times);
        let got = RemoteIndex::decode(&b, Path::new("x")).unwrap();
        assert_eq!(got, want);
        let again = got.encode();
        assert_eq!(u16::from_le_bytes([again[8], again[9]]), VERSION);
        assert_eq!(RemoteIndex::decode(&again, Path::new("x")).unwrap(), want);
        // Two commits a quarter of a millisecond apart: 12 bytes instead of 32 (the first
        // time takes 8, LSN 1 and the second commit 1 + 1 + 2).
        assert_eq!(b.len() - again.len(), 32 - 12);
    }

    #[test]
    fn a_version_after_today_is_corruption_naming_it() {
        let (b, _) = hand_built(VERSION + 1, &[0x01, 0x02, 0x02, 0x02]);
        let e = RemoteIndex::decode(&b, Path::new("x")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption);
        assert!(e.to_string().contains("unknown format version 3"), "{e}");
    }

    #[test]
    fn a_commit_a_microsecond_takes_two_bytes() {
        let mut i = index();
        i.commit_times.clear();
        let empty = i.encode().len();
        let t0 = 1_700_000_000_000_000;
        i.commit_times = (1..=10_000u64).map(|n| (Lsn(n * 100), t0 + n)).collect();
        // The first commit's absolute LSN and time take 1 + 8 bytes, every other one 2 (16 in
        // version 1).
        assert_eq!(i.encode().len() - empty, 9 + 2 * 9_999);
    }

    #[test]
    fn a_varint_longer_than_its_value_is_corruption() {
        // LSN 1 as 0x81 0x00: the same value, one byte too many.
        let (b, _) = hand_built(2, &[0x81, 0x00, 0xE8, 0x07, 0x02, 0xFA, 0x01]);
        let e = RemoteIndex::decode(&b, Path::new("x")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
        assert!(e.to_string().contains("longer than its value needs"), "{e}");
    }

    #[test]
    fn a_varint_past_64_bits_is_corruption() {
        let (b, _) = hand_built(
            2,
            &[
                0x01, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F,
            ],
        );
        let e = RemoteIndex::decode(&b, Path::new("x")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
        assert!(e.to_string().contains("too large varint"), "{e}");
    }

    #[test]
    fn commit_times_that_do_not_increase_are_corruption() {
        for (times, what) in [
            (&[0x01, 0x01, 0x00, 0x01][..], "the same LSN"),
            (&[0x01, 0x01, 0x01, 0x00][..], "the same time"),
        ] {
            let (b, _) = hand_built(2, times);
            let e = RemoteIndex::decode(&b, Path::new("x")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corruption, "{what}: {e}");
            assert!(e.to_string().contains("does not follow"), "{what}: {e}");
        }
        let mut v1 = Vec::new();
        for (lsn, time) in [(3u64, 10u64), (2, 20)] {
            v1.extend_from_slice(&lsn.to_le_bytes());
            v1.extend_from_slice(&time.to_le_bytes());
        }
        let (b, _) = hand_built(1, &v1);
        let e = RemoteIndex::decode(&b, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("does not follow"), "version 1: {e}");
    }

    #[test]
    fn a_commit_past_64_bits_is_corruption() {
        let mut times = vec![0x01];
        times.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        times.extend_from_slice(&[0x01, 0x01]);
        let (b, _) = hand_built(2, &times);
        let e = RemoteIndex::decode(&b, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("overflows 64 bits"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn increasing_commit_times_round_trip(
            steps in proptest::collection::vec((1u64..1 << 40, 1u64..1 << 40), 0..50),
            first in (0u64..1 << 62, 0u64..1 << 62),
        ) {
            let mut i = index();
            let (mut l, mut t) = first;
            i.commit_times = steps
                .into_iter()
                .map(|(dl, dt)| {
                    (l, t) = (l + dl, t + dt);
                    (Lsn(l), t)
                })
                .collect();
            proptest::prop_assert_eq!(RemoteIndex::decode(&i.encode(), Path::new("x")).unwrap(), i);
        }
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
