//! The incarnation marker of a partition directory: `<data>/kafka/<topic>-<p>/replica.id`
//! records which topic incarnation (`TopicMeta::id`) and which Raft group the log in that
//! directory belongs to. A topic deleted and re-created under the same name maps to the same
//! directory name with a new topic id and a new group (group ids are never reused); a node that
//! missed the delete still holds the dead incarnation's log there, and opening the new group
//! over it would serve the old records. `Shard::apply_metadata` checks the marker before it
//! opens a replica (see docs/design/replication.md, "Data directory").
//!
//! Layout (34 bytes, little-endian): `magic "FRRI"`, `version: u16 = 1`,
//! `topic_id: [u8; 16]`, `group: u64`, `crc32c: u32` (Castagnoli, over the 30 bytes before it).
//! Written to `replica.id.tmp`, fsynced, renamed, directory fsynced (the log's open removes a
//! left-over `*.tmp`). Blocking std::fs: used only while applying metadata, like the other
//! small files of the data directory. Plain functions, no state (usable on any core).

use std::io::Write;
use std::path::Path;

use freshet_raft::transport::GroupId;

use crate::metadata::TopicId;

/// File name of the marker inside a partition directory.
pub const MARKER_FILE: &str = "replica.id";
const MARKER_TMP_FILE: &str = "replica.id.tmp";
const MAGIC: &[u8; 4] = b"FRRI";
const VERSION: u16 = 1;
/// Encoded size: magic 4 + version 2 + topic id 16 + group 8 + crc 4.
pub const MARKER_BYTES: usize = 34;

/// Which topic incarnation and Raft group a partition directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaMarker {
    pub topic_id: TopicId,
    pub group: GroupId,
}

/// Why a marker could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("replica marker {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("replica marker {path} is damaged: {reason}")]
    Damaged { path: String, reason: &'static str },
}

impl ReplicaMarker {
    /// The marker's bytes (layout in the module doc).
    pub fn encode(&self) -> [u8; MARKER_BYTES] {
        let mut b = [0u8; MARKER_BYTES];
        b[0..4].copy_from_slice(MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..22].copy_from_slice(&self.topic_id);
        b[22..30].copy_from_slice(&self.group.to_le_bytes());
        let crc = crc32c::crc32c(&b[..30]);
        b[30..34].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a marker; `Err` names what is wrong (length, magic, version, checksum).
    pub fn decode(b: &[u8]) -> Result<ReplicaMarker, &'static str> {
        if b.len() != MARKER_BYTES {
            return Err("wrong length");
        }
        if &b[0..4] != MAGIC {
            return Err("bad magic");
        }
        if u16::from_le_bytes([b[4], b[5]]) != VERSION {
            return Err("unknown version");
        }
        let crc = u32::from_le_bytes([b[30], b[31], b[32], b[33]]);
        if crc32c::crc32c(&b[..30]) != crc {
            return Err("checksum mismatch");
        }
        let mut topic_id = [0u8; 16];
        topic_id.copy_from_slice(&b[6..22]);
        let mut g = [0u8; 8];
        g.copy_from_slice(&b[22..30]);
        Ok(ReplicaMarker {
            topic_id,
            group: u64::from_le_bytes(g),
        })
    }
}

/// Reads the marker of partition directory `dir`: `Ok(None)` when it has none.
pub fn read(dir: &Path) -> Result<Option<ReplicaMarker>, MarkerError> {
    let path = dir.join(MARKER_FILE);
    match std::fs::read(&path) {
        Ok(b) => ReplicaMarker::decode(&b)
            .map(Some)
            .map_err(|reason| MarkerError::Damaged {
                path: path.display().to_string(),
                reason,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MarkerError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Writes `marker` into `dir` (created if missing) durably: temp file, fsync, rename, fsync
/// of the directory.
pub fn write(dir: &Path, marker: &ReplicaMarker) -> Result<(), MarkerError> {
    let io = |source| MarkerError::Io {
        path: dir.join(MARKER_FILE).display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(MARKER_TMP_FILE);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&marker.encode()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, dir.join(MARKER_FILE)).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_detects_damage() {
        let m = ReplicaMarker {
            topic_id: [7u8; 16],
            group: 0x0102_0304_0506_0708,
        };
        let b = m.encode();
        assert_eq!(ReplicaMarker::decode(&b), Ok(m));
        // Little-endian group id right after the topic id.
        assert_eq!(b[22], 0x08);
        let mut bad = b;
        bad[10] ^= 1;
        assert_eq!(ReplicaMarker::decode(&bad), Err("checksum mismatch"));
        assert_eq!(ReplicaMarker::decode(&b[..33]), Err("wrong length"));
        let mut magic = b;
        magic[0] = b'X';
        assert_eq!(ReplicaMarker::decode(&magic), Err("bad magic"));
    }

    #[test]
    fn marker_file_is_written_and_read_back() {
        let dir = std::env::temp_dir().join(format!("freshet-marker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(read(&dir).unwrap().is_none());
        let m = ReplicaMarker {
            topic_id: [1u8; 16],
            group: 42,
        };
        write(&dir, &m).unwrap();
        assert_eq!(read(&dir).unwrap(), Some(m));
        assert!(!dir.join(MARKER_TMP_FILE).exists());
        std::fs::write(dir.join(MARKER_FILE), b"short").unwrap();
        assert!(matches!(read(&dir), Err(MarkerError::Damaged { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
