//! Topic metadata: the versioned snapshot every core reads, and its on-disk store.
//!
//! Core 0 owns the metadata: it is the only core that changes it, persists it (one small
//! checksummed file per topic under `<data-dir>/meta/`, written atomically: temp file, fsync,
//! rename, fsync of the directory) and broadcasts each new `MetadataSnapshot` over the mesh.
//! Every core keeps a read-only `Rc<MetadataSnapshot>` and replaces it only with a snapshot of a
//! higher revision, so a stale (reordered) update is ignored.
//!
//! The store uses blocking `std::fs`: metadata changes are rare (topic creation/deletion,
//! config changes) and happen on core 0 only; the data path never touches it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::{ConfigError, TopicConfig};

/// Errors of the metadata store.
#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("metadata I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt metadata file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid topic config in {path}: {source}")]
    Config { path: PathBuf, source: ConfigError },
}

/// A 16-byte topic id (Kafka `Uuid`), persisted with the topic.
pub type TopicId = [u8; 16];

/// Raft group id of the controller group; partition groups are numbered from 1.
pub const CONTROLLER_GROUP: u64 = 0;

/// The Raft node id of a Kafka broker id: raft-rs reserves 0, so node N is Raft peer N + 1.
pub fn raft_node_id(broker_id: i32) -> u64 {
    assert!(broker_id >= 0, "broker id {broker_id} must be >= 0");
    broker_id as u64 + 1
}

/// The Kafka broker id of a Raft node id (inverse of [`raft_node_id`]).
pub fn broker_id_of(raft_node: u64) -> i32 {
    assert!(raft_node >= 1, "raft node id 0 is reserved");
    (raft_node - 1) as i32
}

/// One broker (node) of the cluster. Crosses cores by value inside `MetadataSnapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Kafka broker id (`--node-id`).
    pub id: i32,
    /// Advertised Kafka listener host and port (what Metadata returns).
    pub host: String,
    pub port: i32,
    /// Internal RPC address (`--rpc-addr`) other nodes connect to.
    pub rpc_addr: String,
    pub rack: Option<String>,
}

/// Where one partition lives: its Raft group (the same id on every node) and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAssignment {
    /// Raft group id, unique in the cluster, never reused (≥ 1; 0 is the controller).
    pub group: u64,
    /// Broker ids holding a replica; `replicas[0]` is the preferred leader.
    pub replicas: Vec<i32>,
}

/// Assignments of `partitions` partitions with one replica each on `broker`, Raft groups
/// numbered from `first_group` (a cluster of one; the controller places replicas otherwise).
pub fn single_replica_assignments(
    first_group: u64,
    partitions: i32,
    broker: i32,
) -> Vec<PartitionAssignment> {
    (0..partitions.max(0) as u64)
        .map(|p| PartitionAssignment {
            group: first_group + p,
            replicas: vec![broker],
        })
        .collect()
}

/// One topic. Crosses cores by value inside `MetadataSnapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: TopicId,
    pub partitions: i32,
    pub config: TopicConfig,
    /// Snapshot revision at which this topic last changed.
    pub revision: u64,
    /// One entry per partition (`assignments.len() == partitions`).
    pub assignments: Vec<PartitionAssignment>,
}

impl TopicMeta {
    /// Partition `p`'s assignment, if `p` exists.
    pub fn assignment(&self, p: i32) -> Option<&PartitionAssignment> {
        usize::try_from(p)
            .ok()
            .and_then(|i| self.assignments.get(i))
    }

    /// Replication factor (replicas of partition 0).
    pub fn replication_factor(&self) -> usize {
        self.assignments.first().map_or(0, |a| a.replicas.len())
    }
}

/// All topics and brokers at one revision. Built on core 0, sent (cloned) to every core;
/// read-only there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataSnapshot {
    pub revision: u64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Every registered broker, by id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Next unused partition Raft group id (≥ 1).
    pub next_group: u64,
}

impl MetadataSnapshot {
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// (topic, partition) of a partition Raft group.
    pub fn partition_of_group(&self, group: u64) -> Option<(&TopicMeta, i32)> {
        self.topics.values().find_map(|t| {
            t.assignments
                .iter()
                .position(|a| a.group == group)
                .map(|i| (t, i as i32))
        })
    }

    pub fn topic_by_id(&self, id: &TopicId) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.id == id)
    }
}

/// Checks a topic name the way Kafka does: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.`/`..`.
pub fn validate_topic_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("topic name is empty");
    }
    if name.len() > 249 {
        return Err("topic name is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err("topic name may contain only ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

/// Fresh random topic id (from the OS random source).
pub fn random_topic_id() -> TopicId {
    let mut id = [0u8; 16];
    let mut f = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut f, &mut id).expect("read /dev/urandom");
    // RFC 4122 version 4 / variant bits, so clients printing it see a normal UUID.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    if id == [0u8; 16] {
        id[15] = 1; // the all-zero UUID means "no id" in Kafka
    }
    id
}

const FILE_MAGIC: &str = "freshet-topic v1";

/// Serialises a topic to its file text (last line: crc32c of everything before it).
pub fn encode_topic(t: &TopicMeta) -> String {
    let mut s = String::new();
    writeln!(s, "{FILE_MAGIC}").unwrap();
    writeln!(s, "name={}", t.name).unwrap();
    writeln!(s, "id={}", hex(&t.id)).unwrap();
    writeln!(s, "partitions={}", t.partitions).unwrap();
    writeln!(s, "revision={}", t.revision).unwrap();
    for (p, a) in t.assignments.iter().enumerate() {
        let replicas: Vec<String> = a.replicas.iter().map(|r| r.to_string()).collect();
        writeln!(s, "assignment.{p}={}:{}", a.group, replicas.join(",")).unwrap();
    }
    for (k, v) in &t.config.entries {
        writeln!(s, "config.{k}={v}").unwrap();
    }
    let crc = crc32c::crc32c(s.as_bytes());
    writeln!(s, "crc32c={crc:08x}").unwrap();
    s
}

/// Parses a topic file; any damage (bad checksum, missing field) is an error.
pub fn decode_topic(text: &str) -> Result<TopicMeta, String> {
    let body_end = text
        .rfind("crc32c=")
        .ok_or_else(|| "no checksum line".to_string())?;
    let (body, crc_line) = text.split_at(body_end);
    let want = u32::from_str_radix(crc_line.trim_end().trim_start_matches("crc32c="), 16)
        .map_err(|_| "unparsable checksum".to_string())?;
    if crc32c::crc32c(body.as_bytes()) != want {
        return Err("checksum mismatch".to_string());
    }
    let mut lines = body.lines();
    if lines.next() != Some(FILE_MAGIC) {
        return Err("bad header line".to_string());
    }
    let (mut name, mut id, mut partitions, mut revision) = (None, None, None, None);
    let mut config = TopicConfig::default();
    let mut assignments: BTreeMap<usize, PartitionAssignment> = BTreeMap::new();
    for line in lines {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("bad line {line:?}"))?;
        match k {
            "name" => name = Some(v.to_string()),
            "id" => id = Some(unhex(v).ok_or_else(|| "bad id".to_string())?),
            "partitions" => partitions = Some(v.parse().map_err(|_| "bad partitions")?),
            "revision" => revision = Some(v.parse().map_err(|_| "bad revision")?),
            _ if k.starts_with("assignment.") => {
                let p: usize = k["assignment.".len()..]
                    .parse()
                    .map_err(|_| format!("bad assignment key {k:?}"))?;
                let (group, replicas) = v
                    .split_once(':')
                    .ok_or_else(|| format!("bad assignment {v:?}"))?;
                let group = group.parse().map_err(|_| format!("bad group in {v:?}"))?;
                let replicas = replicas
                    .split(',')
                    .map(|r| r.parse::<i32>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| format!("bad replicas in {v:?}"))?;
                assignments.insert(p, PartitionAssignment { group, replicas });
            }
            _ => {
                let key = k
                    .strip_prefix("config.")
                    .ok_or_else(|| format!("unknown field {k:?}"))?;
                config
                    .set(key.to_string(), v.to_string())
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let partitions: i32 = partitions.ok_or("missing partitions")?;
    if assignments.len() != partitions as usize
        || assignments.keys().enumerate().any(|(i, p)| i != *p)
    {
        return Err(format!(
            "{} partition assignments for {partitions} partitions",
            assignments.len()
        ));
    }
    Ok(TopicMeta {
        name: name.ok_or("missing name")?,
        id: id.ok_or("missing id")?,
        partitions,
        config,
        revision: revision.ok_or("missing revision")?,
        assignments: assignments.into_values().collect(),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<TopicId> {
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// The on-disk metadata of all topics. Owned by core 0 only (per-core, `!Sync` by use).
#[derive(Debug)]
pub struct MetadataStore {
    dir: PathBuf,
}

impl MetadataStore {
    /// Opens (creating if needed) `<data_dir>/meta`.
    pub fn open(data_dir: &Path) -> Result<Self, MetadataError> {
        let dir = data_dir.join("meta");
        std::fs::create_dir_all(&dir).map_err(|source| MetadataError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(MetadataStore { dir })
    }

    fn topic_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.topic"))
    }

    /// Loads every topic; leftover temp files from an interrupted write are removed.
    pub fn load(&self) -> Result<MetadataSnapshot, MetadataError> {
        let io = |source| MetadataError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut snap = MetadataSnapshot {
            next_group: CONTROLLER_GROUP + 1,
            ..Default::default()
        };
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let fname = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
            if fname.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !fname.ends_with(".topic") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| MetadataError::Io {
                path: path.clone(),
                source,
            })?;
            let t = decode_topic(&text).map_err(|reason| MetadataError::Corrupt {
                path: path.clone(),
                reason,
            })?;
            snap.revision = snap.revision.max(t.revision);
            for a in &t.assignments {
                snap.next_group = snap.next_group.max(a.group + 1);
            }
            snap.topics.insert(t.name.clone(), t);
        }
        Ok(snap)
    }

    /// Writes one topic atomically (temp + fsync + rename + directory fsync).
    pub fn save_topic(&self, t: &TopicMeta) -> Result<(), MetadataError> {
        let path = self.topic_path(&t.name);
        let tmp = self.dir.join(format!("{}.topic.tmp", t.name));
        let io = |source| MetadataError::Io {
            path: path.clone(),
            source,
        };
        {
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(encode_topic(t).as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.sync_dir()
    }

    /// Removes a topic's file (durably).
    pub fn remove_topic(&self, name: &str) -> Result<(), MetadataError> {
        let path = self.topic_path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(MetadataError::Io { path, source }),
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), MetadataError> {
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| MetadataError::Io {
                path: self.dir.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let id = random_topic_id();
        let p = std::env::temp_dir().join(format!("freshet-meta-{tag}-{}", hex(&id[..4])));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn topic(name: &str, partitions: i32, revision: u64) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: random_topic_id(),
            partitions,
            config: TopicConfig::from_pairs([("retention.ms", "1000")]).unwrap(),
            revision,
            assignments: (0..partitions)
                .map(|p| PartitionAssignment {
                    group: 10 + p as u64,
                    replicas: vec![0, 1],
                })
                .collect(),
        }
    }

    #[test]
    fn topics_survive_a_restart_with_ids_configs_and_revision() {
        let dir = tmpdir("restart");
        let a = topic("orders", 3, 1);
        let b = topic("clicks.v2", 1, 2);
        {
            let store = MetadataStore::open(&dir).unwrap();
            store.save_topic(&a).unwrap();
            store.save_topic(&b).unwrap();
        }
        let snap = MetadataStore::open(&dir).unwrap().load().unwrap();
        assert_eq!(snap.revision, 2);
        assert_eq!(snap.topic("orders"), Some(&a));
        assert_eq!(snap.topic_by_id(&b.id), Some(&b));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_removed_topic_stays_removed_and_temp_files_are_discarded() {
        let dir = tmpdir("remove");
        let store = MetadataStore::open(&dir).unwrap();
        store.save_topic(&topic("gone", 1, 1)).unwrap();
        store.remove_topic("gone").unwrap();
        // A crash between writing the temp file and the rename leaves only the temp file.
        std::fs::write(
            dir.join("meta/half.topic.tmp"),
            "freshet-topic v1\nname=half",
        )
        .unwrap();
        let snap = store.load().unwrap();
        assert!(snap.topics.is_empty());
        assert!(!dir.join("meta/half.topic.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flipped_byte_is_detected_by_the_checksum() {
        let text = encode_topic(&topic("t", 4, 7));
        assert!(decode_topic(&text).is_ok());
        let damaged = text.replace("partitions=4", "partitions=5");
        assert_eq!(decode_topic(&damaged), Err("checksum mismatch".to_string()));
        let dir = tmpdir("corrupt");
        let store = MetadataStore::open(&dir).unwrap();
        std::fs::write(dir.join("meta/t.topic"), damaged).unwrap();
        assert!(matches!(store.load(), Err(MetadataError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }
}
