//! Topic metadata: the versioned snapshot every core reads.
//!
//! The controller (`crate::controller`, a Raft group on core 0 of every founding node) is the
//! only writer: it applies the committed metadata commands in order and broadcasts each new
//! `MetadataSnapshot` over the core mesh. Every core keeps a read-only `Rc<MetadataSnapshot>`
//! and replaces it only with a snapshot of a higher revision, so a stale (reordered) update is
//! ignored. (The per-topic files under `<data-dir>/meta/` of earlier versions are no longer
//! read; see docs/design/controller.md.)

use std::collections::BTreeMap;
use std::path::PathBuf;

use thiserror::Error;

use crate::config::{ConfigError, TopicConfig};

/// Errors of metadata persistence.
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

/// Where one partition lives: its Raft group (the same id on every node), its replicas and an
/// ongoing reassignment (KIP-455).
///
/// While `target` is set, the replicas being added are `target − replicas` and those being
/// removed are `replicas − target`; the partition's leader moves the Raft configuration to
/// `target` (engine/src/reassign.rs) and then reports it (CompleteReassignment), which makes
/// `replicas = target`. `retiring` lists brokers that may still be in the group's Raft
/// configuration although no longer wanted (a cancelled or replaced target): they keep their
/// replica until the leader reports a configuration without them, so no change of the
/// metadata can take away a replica the group still counts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAssignment {
    /// Raft group id, unique in the cluster, never reused (≥ 1; 0 is the controller).
    pub group: u64,
    /// Broker ids holding a replica; `replicas[0]` is the preferred leader.
    pub replicas: Vec<i32>,
    /// The replica list an ongoing reassignment moves to (`None`: no reassignment).
    pub target: Option<Vec<i32>>,
    /// Brokers neither in `replicas` nor in `target` that may still be Raft members.
    pub retiring: Vec<i32>,
}

impl PartitionAssignment {
    /// An assignment without a reassignment.
    pub fn new(group: u64, replicas: Vec<i32>) -> Self {
        PartitionAssignment {
            group,
            replicas,
            target: None,
            retiring: Vec::new(),
        }
    }

    /// The replica list clients see (Kafka's merged list while reassigning: the target
    /// first, then the replicas being removed).
    pub fn all_replicas(&self) -> Vec<i32> {
        match &self.target {
            None => self.replicas.clone(),
            Some(t) => {
                let mut all = t.clone();
                all.extend(self.replicas.iter().filter(|b| !t.contains(b)));
                all
            }
        }
    }

    /// Replicas an ongoing reassignment adds (`target − replicas`, in target order).
    pub fn adding(&self) -> Vec<i32> {
        self.target.as_ref().map_or_else(Vec::new, |t| {
            t.iter()
                .filter(|b| !self.replicas.contains(b))
                .copied()
                .collect()
        })
    }

    /// Replicas an ongoing reassignment removes (`replicas − target`).
    pub fn removing(&self) -> Vec<i32> {
        self.target.as_ref().map_or_else(Vec::new, |t| {
            self.replicas
                .iter()
                .filter(|b| !t.contains(b))
                .copied()
                .collect()
        })
    }

    /// The replica list the partition is heading for: the target, else the replicas.
    pub fn desired(&self) -> &[i32] {
        self.target.as_deref().unwrap_or(&self.replicas)
    }

    /// Every broker that must hold a replica now: replicas, target and retiring ones.
    pub fn holders(&self) -> Vec<i32> {
        let mut all = self.all_replicas();
        all.extend(
            self.retiring
                .iter()
                .filter(|b| !all.contains(b))
                .copied()
                .collect::<Vec<_>>(),
        );
        all
    }

    /// Whether `broker` must hold a replica (see [`PartitionAssignment::holders`]).
    pub fn is_holder(&self, broker: i32) -> bool {
        self.replicas.contains(&broker)
            || self.target.as_ref().is_some_and(|t| t.contains(&broker))
            || self.retiring.contains(&broker)
    }
}

/// Assignments of `partitions` partitions with one replica each on `broker`, Raft groups
/// numbered from `first_group` (a cluster of one; the controller places replicas otherwise).
pub fn single_replica_assignments(
    first_group: u64,
    partitions: i32,
    broker: i32,
) -> Vec<PartitionAssignment> {
    (0..partitions.max(0) as u64)
        .map(|p| PartitionAssignment::new(first_group + p, vec![broker]))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn raft_node_ids_are_broker_ids_plus_one() {
        assert_eq!(raft_node_id(0), 1);
        assert_eq!(broker_id_of(raft_node_id(41)), 41);
    }
}
