//! Liveness in object storage: the owner renews `heartbeats/{gen}` every
//! [`StoreOptions::heartbeat_interval`](crate::StoreOptions::heartbeat_interval), with how far
//! each timeline is safe there, so that a secondary can tell how far behind it is and whether the
//! owner is still alive, with no server but object storage.
//!
//! The record is text, one field per line, sealed with the object trailer:
//!
//! ```text
//! generation 00000003
//! node node-a
//! beat 42
//! interval_ms 1000
//! catalog 7
//! stopped 0
//! timeline 0123456789abcdef0123456789abcdef 0/16B3748 0/16B3800
//! ```
//!
//! `beat` grows by one per renewal; a reader judges liveness by when it last saw `beat`
//! change on its own clock, never by comparing clocks. `catalog` counts the catalog uploads of
//! this generation (a secondary reloads when it changes). `stopped 1` is the last beat of an
//! owner that closed cleanly. Each `timeline` line is a timeline's `remote_wal_lsn` (safe in
//! object storage) and its `last_record_lsn` (committed on the owner, perhaps only locally).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::names::heartbeat_object_of;
use super::{Generation, RemoteCtx, RemoteStorage};
use crate::error::{Error, ErrorKind, Result};
use crate::id::TimelineId;
use crate::lsn::Lsn;

/// One renewal of an owner's liveness record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Heartbeat {
    /// The owner's generation.
    pub generation: Generation,
    /// The owner's node id.
    pub node: String,
    /// Renewals so far; grows by one each time.
    pub beat: u64,
    /// How often the owner renews it.
    pub interval: Duration,
    /// Catalog uploads of this generation so far.
    pub catalog_version: u64,
    /// Whether this is the last beat of an owner that closed cleanly.
    pub stopped: bool,
    /// Each timeline's `remote_wal_lsn` when the beat was written: safe in object storage.
    pub timelines: BTreeMap<TimelineId, Lsn>,
    /// Each timeline's `last_record_lsn` when the beat was written: committed on the owner,
    /// perhaps only locally.
    pub last_record: BTreeMap<TimelineId, Lsn>,
}

impl Heartbeat {
    pub(super) fn encode(&self) -> String {
        let mut out = format!(
            "generation {}\nnode {}\nbeat {}\ninterval_ms {}\ncatalog {}\nstopped {}\n",
            self.generation,
            self.node.replace('\n', " "),
            self.beat,
            self.interval.as_millis(),
            self.catalog_version,
            u8::from(self.stopped)
        );
        for (tl, lsn) in &self.timelines {
            match self.last_record.get(tl) {
                Some(lrl) => out.push_str(&format!("timeline {tl} {lsn} {lrl}\n")),
                None => out.push_str(&format!("timeline {tl} {lsn}\n")),
            }
        }
        out
    }

    pub(super) fn decode(name: &str, bytes: &[u8]) -> Result<Heartbeat> {
        let bad = |what: String| {
            Error::new(
                ErrorKind::Corruption,
                format!("heartbeat object {name}: {what}"),
            )
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let mut hb = Heartbeat {
            generation: Generation(0),
            node: String::new(),
            beat: 0,
            interval: Duration::ZERO,
            catalog_version: 0,
            stopped: false,
            timelines: BTreeMap::new(),
            last_record: BTreeMap::new(),
        };
        let mut seen_generation = false;
        for line in text.lines() {
            let (field, value) = line
                .split_once(' ')
                .ok_or_else(|| bad(format!("line {line:?}")))?;
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("{field}: {v:?} is not a number")))
            };
            match field {
                "generation" => {
                    hb.generation = value.parse().map_err(|e: Error| bad(e.to_string()))?;
                    seen_generation = true;
                }
                "node" => hb.node = value.to_string(),
                "beat" => hb.beat = number(value)?,
                "interval_ms" => hb.interval = Duration::from_millis(number(value)?),
                "catalog" => hb.catalog_version = number(value)?,
                "stopped" => hb.stopped = number(value)? != 0,
                "timeline" => {
                    let mut parts = value.split(' ');
                    let (Some(tl), Some(lsn)) = (parts.next(), parts.next()) else {
                        return Err(bad(format!("line {line:?}")));
                    };
                    let tl: TimelineId = tl.parse().map_err(|e: Error| bad(e.to_string()))?;
                    let lsn: Lsn = lsn.parse().map_err(|e: Error| bad(e.to_string()))?;
                    hb.timelines.insert(tl, lsn);
                    if let Some(lrl) = parts.next() {
                        let lrl: Lsn = lrl.parse().map_err(|e: Error| bad(e.to_string()))?;
                        hb.last_record.insert(tl, lrl);
                    }
                }
                // Fields a later version adds are skipped.
                _ => {}
            }
        }
        if !seen_generation {
            return Err(bad("no generation".into()));
        }
        Ok(hb)
    }
}

impl RemoteStorage {
    /// The heartbeat of `generation`'s owner, if it wrote one.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corruption`] if it is damaged or does not parse; [`ErrorKind::Io`] when the
    /// store fails.
    pub async fn read_heartbeat(&self, generation: Generation) -> Result<Option<Heartbeat>> {
        let name = heartbeat_object_of(generation);
        match self.download(&name).await {
            Ok(bytes) => Heartbeat::decode(&name, &bytes).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl RemoteCtx {
    /// This owner's heartbeat now.
    fn heartbeat(&self, beat: u64, interval: Duration, stopped: bool) -> Heartbeat {
        Heartbeat {
            generation: self.generation,
            node: self.node_id.clone(),
            beat,
            interval,
            catalog_version: self.catalog_uploads.load(Ordering::Acquire),
            stopped,
            timelines: self.safe_lsns(),
            last_record: self
                .last_record_lsns
                .lock()
                .as_ref()
                .map(|f| f())
                .unwrap_or_default(),
        }
    }

    /// Writes one heartbeat.
    pub(super) async fn beat(&self, beat: u64, interval: Duration, stopped: bool) -> Result<()> {
        let hb = self.heartbeat(beat, interval, stopped);
        self.storage
            .upload(
                &heartbeat_object_of(self.generation),
                Bytes::from(hb.encode()),
            )
            .await
    }

    /// Renews the heartbeat every `interval` until stopped or fenced.
    pub(super) async fn run_heartbeat(&self, interval: Duration) {
        let mut beat = 0u64;
        loop {
            if self.stopped.load(Ordering::Acquire) || self.is_fenced() {
                return;
            }
            beat += 1;
            if self.beat(beat, interval, false).await.is_ok() {
                self.beats.store(beat, Ordering::Release);
            }
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_round_trips_and_garbage_is_corruption() {
        let hb = Heartbeat {
            generation: Generation(3),
            node: "node-a".into(),
            beat: 42,
            interval: Duration::from_millis(1000),
            catalog_version: 7,
            stopped: true,
            timelines: [(TimelineId::from(5u128), Lsn(0x16B3748))].into(),
            last_record: [(TimelineId::from(5u128), Lsn(0x16B3800))].into(),
        };
        let text = hb.encode();
        assert!(text.contains("timeline 00000000000000000000000000000005 0/16B3748 0/16B3800"));
        assert_eq!(Heartbeat::decode("h", text.as_bytes()).unwrap(), hb);
        for bad in [&b"beat 1\n"[..], b"generation zz\n", b"generation", b"\xff"] {
            let e = Heartbeat::decode("heartbeats/x", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corruption, "{bad:?}");
            assert!(e.message().contains("heartbeats/x"));
        }
    }
}
