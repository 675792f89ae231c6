//! The controller snapshot file: the whole metadata state with its applied position, so a
//! restart replays only the commands after it (KIP-630 describes Kafka's equivalent for the
//! KRaft metadata log).
//!
//! `<data>/controller/snapshot`, replaced atomically (write `snapshot.tmp`, fsync, rename, fsync
//! the directory). Layout (little-endian):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | magic | `[u8; 4]` = `FRCS` | file type |
//! | version | u16 = 2 | layout version (1: before reassignment; refused, the log is replayed) |
//! | reserved | u16 = 0 | |
//! | body_len | u64 | bytes of the body |
//! | body_crc | u32 | CRC32C of the body |
//! | body | | rkyv 0.8 archive of [`SnapshotImage`] (default format: little-endian, 32-bit relative pointers) |
//!
//! Ownership: blocking `std::fs`, called on core 0 only (rare: every
//! `controller_snapshot_commands` commands).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rkyv::rancor::Error as RkyvError;
use thiserror::Error;

use crate::config::TopicConfig;
use crate::metadata::{BrokerInfo, MetadataSnapshot, PartitionAssignment, TopicMeta};

/// File magic.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"FRCS";
/// File layout version (2: assignments carry the reassignment target and retiring brokers).
pub const SNAPSHOT_VERSION: u16 = 2;
const HEADER_BYTES: usize = 20;
/// File name inside the controller directory.
pub const SNAPSHOT_FILE: &str = "snapshot";

/// Errors reading or writing the snapshot.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("controller snapshot I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt controller snapshot: {0}")]
    Corrupt(String),
}

/// What the snapshot body holds.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
pub struct SnapshotImage {
    /// Revision = commands applied = Kafka offset of the next command to apply.
    pub revision: u64,
    /// Kafka end offset of the applied commands (equal to `revision`, stored to check it).
    pub applied_kafka_end: i64,
    pub next_group: u64,
    pub brokers: Vec<BrokerImage>,
    pub topics: Vec<TopicImage>,
}

/// A broker in the snapshot.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
pub struct BrokerImage {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rpc_addr: String,
    pub rack: Option<String>,
}

/// A topic in the snapshot.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
pub struct TopicImage {
    pub name: String,
    pub id: [u8; 16],
    pub revision: u64,
    /// Config overrides as (key, value).
    pub config: Vec<ConfigEntryImage>,
    /// One per partition, partition 0 first.
    pub assignments: Vec<AssignmentImage>,
}

/// One config override.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
pub struct ConfigEntryImage {
    pub key: String,
    pub value: String,
}

/// One partition's Raft group, replicas and ongoing reassignment (version 2).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
pub struct AssignmentImage {
    pub group: u64,
    pub replicas: Vec<i32>,
    pub target: Option<Vec<i32>>,
    pub retiring: Vec<i32>,
}

impl SnapshotImage {
    pub fn of(s: &MetadataSnapshot) -> Self {
        SnapshotImage {
            revision: s.revision,
            applied_kafka_end: s.revision as i64,
            next_group: s.next_group,
            brokers: s
                .brokers
                .values()
                .map(|b| BrokerImage {
                    id: b.id,
                    host: b.host.clone(),
                    port: b.port,
                    rpc_addr: b.rpc_addr.clone(),
                    rack: b.rack.clone(),
                })
                .collect(),
            topics: s
                .topics
                .values()
                .map(|t| TopicImage {
                    name: t.name.clone(),
                    id: t.id,
                    revision: t.revision,
                    config: t
                        .config
                        .entries
                        .iter()
                        .map(|(k, v)| ConfigEntryImage {
                            key: k.clone(),
                            value: v.clone(),
                        })
                        .collect(),
                    assignments: t
                        .assignments
                        .iter()
                        .map(|a| AssignmentImage {
                            group: a.group,
                            replicas: a.replicas.clone(),
                            target: a.target.clone(),
                            retiring: a.retiring.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn into_snapshot(self) -> Result<MetadataSnapshot, SnapshotError> {
        if self.applied_kafka_end != self.revision as i64 {
            return Err(SnapshotError::Corrupt(format!(
                "revision {} but applied offset {}",
                self.revision, self.applied_kafka_end
            )));
        }
        let brokers: BTreeMap<i32, BrokerInfo> = self
            .brokers
            .into_iter()
            .map(|b| {
                (
                    b.id,
                    BrokerInfo {
                        id: b.id,
                        host: b.host,
                        port: b.port,
                        rpc_addr: b.rpc_addr,
                        rack: b.rack,
                    },
                )
            })
            .collect();
        let mut topics = BTreeMap::new();
        for t in self.topics {
            let config = TopicConfig::from_pairs(t.config.into_iter().map(|c| (c.key, c.value)))
                .map_err(|e| SnapshotError::Corrupt(format!("topic {}: {e}", t.name)))?;
            let assignments: Vec<PartitionAssignment> = t
                .assignments
                .into_iter()
                .map(|a| PartitionAssignment {
                    group: a.group,
                    replicas: a.replicas,
                    target: a.target,
                    retiring: a.retiring,
                })
                .collect();
            topics.insert(
                t.name.clone(),
                TopicMeta {
                    partitions: assignments.len() as i32,
                    name: t.name,
                    id: t.id,
                    config,
                    revision: t.revision,
                    assignments,
                },
            );
        }
        Ok(MetadataSnapshot {
            revision: self.revision,
            topics,
            brokers,
            next_group: self.next_group,
        })
    }
}

/// The file's bytes for `snap`.
pub fn encode_snapshot(snap: &MetadataSnapshot) -> Vec<u8> {
    let body = rkyv::to_bytes::<RkyvError>(&SnapshotImage::of(snap))
        .expect("serialising plain owned values cannot fail");
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Parses a snapshot file; any damage is an error (checked before rkyv sees the body, and
/// rkyv validates the archive too).
pub fn decode_snapshot(b: &[u8]) -> Result<MetadataSnapshot, SnapshotError> {
    let bad = |m: String| Err(SnapshotError::Corrupt(m));
    if b.len() < HEADER_BYTES {
        return bad(format!("{} bytes, shorter than the header", b.len()));
    }
    if b[0..4] != SNAPSHOT_MAGIC {
        return bad("bad magic".into());
    }
    let version = u16::from_le_bytes([b[4], b[5]]);
    if version != SNAPSHOT_VERSION {
        return bad(format!("unsupported version {version}"));
    }
    let body_len = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(b[16..20].try_into().expect("4 bytes"));
    let body = &b[HEADER_BYTES..];
    if body.len() as u64 != body_len {
        return bad(format!("body {} bytes, header says {body_len}", body.len()));
    }
    if crc32c::crc32c(body) != crc {
        return bad("checksum mismatch".into());
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    let image = rkyv::from_bytes::<SnapshotImage, RkyvError>(&aligned)
        .map_err(|e| SnapshotError::Corrupt(format!("archive: {e}")))?;
    image.into_snapshot()
}

/// Writes `snap` to `<dir>/snapshot` atomically.
pub fn write_snapshot(dir: &Path, snap: &MetadataSnapshot) -> Result<(), SnapshotError> {
    let path = dir.join(SNAPSHOT_FILE);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SnapshotError::Io { path: p, source }
    };
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&encode_snapshot(snap)).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Reads `<dir>/snapshot` (None if there is none); a leftover temp file is removed.
pub fn read_snapshot(dir: &Path) -> Result<Option<MetadataSnapshot>, SnapshotError> {
    let _ = std::fs::remove_file(dir.join(format!("{SNAPSHOT_FILE}.tmp")));
    let path = dir.join(SNAPSHOT_FILE);
    match std::fs::read(&path) {
        // A version-1 file (before reassignment) predates controller log truncation, so the
        // whole log is still there: replay it instead.
        Ok(b) if b.len() >= 6 && b[0..4] == SNAPSHOT_MAGIC && b[4..6] == 1u16.to_le_bytes() => {
            tracing::warn!(path = %path.display(), "controller snapshot version 1 ignored; replaying the controller log");
            Ok(None)
        }
        Ok(b) => decode_snapshot(&b).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SnapshotError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::command::Command;
    use crate::controller::state::{apply, initial_snapshot};

    fn state() -> MetadataSnapshot {
        let mut s = initial_snapshot();
        for id in 0..2 {
            apply(
                &mut s,
                &Command::RegisterBroker(BrokerInfo {
                    id,
                    host: "localhost".into(),
                    port: 9092,
                    rpc_addr: "127.0.0.1:33145".into(),
                    rack: (id == 1).then(|| "r1".into()),
                }),
            )
            .unwrap();
        }
        apply(
            &mut s,
            &Command::CreateTopic {
                name: "orders".into(),
                id: [3; 16],
                config: [("retention.ms".to_string(), "1000".to_string())]
                    .into_iter()
                    .collect(),
                assignments: vec![
                    PartitionAssignment::new(1, vec![0, 1]),
                    PartitionAssignment::new(2, vec![1, 0]),
                ],
            },
        )
        .unwrap();
        // An ongoing reassignment (KIP-455) is part of the state.
        apply(
            &mut s,
            &Command::AlterReassignment {
                name: "orders".into(),
                id: [3; 16],
                partition: 1,
                target: Some(vec![0]),
            },
        )
        .unwrap();
        assert_eq!(s.topics["orders"].assignments[1].target, Some(vec![0]));
        s
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "freshet-ctl-snap-{tag}-{}",
            crate::metadata::random_topic_id()[0..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// KIP-630: a snapshot restores the exact state at its applied offset.
    #[test]
    fn the_state_survives_a_snapshot_round_trip_on_disk() {
        let dir = tmpdir("rt");
        assert!(read_snapshot(&dir).unwrap().is_none());
        let s = state();
        write_snapshot(&dir, &s).unwrap();
        // A crash during a later write leaves only its temp file: the last snapshot stands.
        std::fs::write(dir.join("snapshot.tmp"), b"half").unwrap();
        let back = read_snapshot(&dir).unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(back.revision, 4);
        assert!(!dir.join("snapshot.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_snapshots_are_detected() {
        let b = encode_snapshot(&state());
        assert!(decode_snapshot(&b).is_ok());
        for cut in [0, 10, HEADER_BYTES, b.len() - 1] {
            assert!(decode_snapshot(&b[..cut]).is_err(), "cut at {cut}");
        }
        for at in [0, 4, 9, 17, HEADER_BYTES + 3, b.len() - 2] {
            let mut d = b.clone();
            d[at] ^= 0x40;
            assert!(decode_snapshot(&d).is_err(), "flip at {at}");
        }
    }
}
