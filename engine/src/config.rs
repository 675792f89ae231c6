//! Broker and per-topic configuration.
//!
//! `BrokerConfig` is built once by `freshet start` and cloned into every core (it is `Send`,
//! each core owns its copy). `TopicConfig` is the per-topic override map; it travels inside
//! metadata snapshots (see `metadata.rs`) and each core keeps a read-only copy.

use std::collections::BTreeMap;
use std::path::PathBuf;

use thiserror::Error;

/// Errors from parsing or validating configuration values.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown topic config key {0:?}")]
    UnknownKey(String),
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: &'static str,
    },
}

/// Process-wide settings. Cloned into each core at start; never mutated afterwards.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// Address every core binds (SO_REUSEPORT) for the Kafka protocol.
    pub kafka_addr: String,
    /// host:port announced in Metadata; defaults to `kafka_addr`.
    pub advertise_kafka_addr: Option<String>,
    pub node_id: i32,
    /// Number of cores (executors) the broker runs on.
    pub cores: usize,
    pub cluster_id: String,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of an auto-created topic.
    pub num_partitions: i32,
    /// `socket.request.max.bytes`: frames larger than this close the connection.
    pub socket_request_max_bytes: usize,
    /// Connections accepted by the whole broker (split evenly over cores).
    pub max_connections: usize,
    /// Requests read from one connection before its oldest response has been written.
    pub max_in_flight_requests_per_connection: usize,
    /// Cross-core requests in flight from one core to one peer (mesh budget).
    pub mesh_in_flight_per_peer: usize,
    /// Capacity of each SPSC mesh channel.
    pub mesh_channel_capacity: usize,
    /// Incremental fetch sessions (KIP-227) kept per core; 0 disables sessions.
    pub fetch_session_cache_slots: usize,
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval_ms: u64,
    /// Bytes of each partition's log tail (newest segments, at least the active one) whose
    /// batch headers are scanned on open to rebuild idempotent producers' sequence state
    /// (KIP-98). Producers whose batches all lie before it are unknown after a restart: their
    /// next batch is accepted at any sequence (KIP-360).
    pub producer_state_scan_bytes: u64,
    /// Defaults applied to every topic unless the topic overrides them.
    pub topic_defaults: TopicConfig,
    /// Consumer group coordinator settings (group.*, offsets.*).
    pub groups: crate::group::GroupConfig,
    /// Cluster membership and replication settings (`--rpc-addr`, `--seeds`, Raft timing).
    pub cluster: ClusterConfig,
}

/// Cluster membership and replication settings. Cloned into each core at start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Internal RPC listener (`--rpc-addr`): Raft traffic and node-to-node requests.
    pub rpc_addr: String,
    /// RPC address other nodes are told to use; defaults to `rpc_addr`.
    pub advertise_rpc_addr: Option<String>,
    /// RPC addresses of the founding nodes (`--seeds`); empty = a cluster of one.
    pub seeds: Vec<String>,
    /// Raft logical clock period.
    pub raft_tick_ms: u64,
    /// Leader heartbeat interval, in ticks.
    pub raft_heartbeat_ticks: usize,
    /// Base election timeout E in ticks (a follower campaigns after (E, 2E] ticks).
    pub raft_election_ticks: usize,
    /// `default.replication.factor`: replicas of auto-created topics and of CreateTopics
    /// requests that leave it at -1 (capped at the number of brokers).
    pub default_replication_factor: i16,
    /// `min.insync.replicas` default: acks=all produce fails with NOT_ENOUGH_REPLICAS when
    /// fewer replicas (leader included) are in sync.
    pub min_insync_replicas: i32,
    /// Largest internal RPC frame accepted (bigger ones close the connection).
    pub rpc_frame_bytes_max: usize,
    /// Frames queued per peer connection before new ones are dropped (Raft retransmits).
    pub rpc_send_queue_frames_max: usize,
    /// How often each core moves leadership of the groups it leads back to their preferred
    /// replica (`replicas[0]`) when that replica is in sync; 0 disables.
    pub leader_rebalance_interval_ms: u64,
    /// The controller writes a snapshot of the metadata state every this many applied
    /// commands (`<data>/controller/snapshot`); a restart replays only newer commands.
    pub controller_snapshot_commands: u64,
    /// How long a metadata change (CreateTopics, ...) waits for a controller leader to accept
    /// and apply it before failing with REQUEST_TIMED_OUT (retriable).
    pub controller_request_timeout_ms: u64,
    /// `offsets.topic.replication.factor`: replicas of `__consumer_offsets`, capped at the
    /// number of registered brokers.
    pub offsets_topic_replication_factor: i16,
    /// Internal RPC calls (HELLO, LEADERS, controller forwarding) outstanding per peer.
    pub rpc_calls_in_flight_per_peer_max: usize,
    /// Discovery: a seed that did not answer HELLO is asked again after this long.
    pub discovery_retry_ms: u64,
    /// Each node sends its LEADERS list to every peer at least this often (and on change).
    pub leaders_report_interval_ms: u64,
    /// A peer's LEADERS list is dropped after this long without a new one.
    pub leaders_expiry_ms: u64,
    /// A peer that leaves a liveness probe unanswered this long is considered down (Kafka's
    /// `broker.session.timeout.ms`); a peer whose connection fails is down at once. Down
    /// brokers are not named as leaders, leave the ISRs and are left out of Metadata's broker
    /// list (see `cluster::liveness`).
    pub broker_session_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            rpc_addr: "127.0.0.1:33145".to_string(),
            advertise_rpc_addr: None,
            seeds: Vec::new(),
            raft_tick_ms: 10,
            raft_heartbeat_ticks: 15,
            raft_election_ticks: 150,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            rpc_frame_bytes_max: 64 * 1024 * 1024,
            rpc_send_queue_frames_max: 1024,
            leader_rebalance_interval_ms: 5000,
            controller_snapshot_commands: 1000,
            controller_request_timeout_ms: 10_000,
            offsets_topic_replication_factor: 3,
            rpc_calls_in_flight_per_peer_max: 64,
            discovery_retry_ms: 200,
            leaders_report_interval_ms: 1000,
            leaders_expiry_ms: 5000,
            broker_session_timeout_ms: 3000,
        }
    }
}

impl ClusterConfig {
    /// The RPC address other nodes are told to connect to.
    pub fn advertised_rpc_addr(&self) -> &str {
        self.advertise_rpc_addr.as_deref().unwrap_or(&self.rpc_addr)
    }
}

impl BrokerConfig {
    /// Defaults for everything but the process-level flags.
    pub fn new(data_dir: PathBuf, kafka_addr: String, node_id: i32, cores: usize) -> Self {
        BrokerConfig {
            data_dir,
            kafka_addr,
            advertise_kafka_addr: None,
            node_id,
            cores,
            cluster_id: "freshet-cluster".to_string(),
            auto_create_topics_enable: true,
            num_partitions: 1,
            socket_request_max_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            max_in_flight_requests_per_connection: 64,
            mesh_in_flight_per_peer: 1024,
            mesh_channel_capacity: 1024,
            fetch_session_cache_slots: 1000,
            retention_check_interval_ms: 300_000,
            producer_state_scan_bytes: 64 * 1024 * 1024,
            topic_defaults: TopicConfig::default(),
            groups: crate::group::GroupConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }

    /// The host:port clients are told to connect to.
    pub fn advertised_addr(&self) -> &str {
        self.advertise_kafka_addr
            .as_deref()
            .unwrap_or(&self.kafka_addr)
    }
}

/// `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Per-topic configuration: only the keys explicitly set on the topic are stored; typed
/// accessors fall back to Kafka's defaults. Crosses cores by value inside metadata snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfig {
    pub entries: BTreeMap<String, String>,
}

/// Topic config keys Freshet understands, with their Kafka default values.
pub const TOPIC_CONFIG_DEFAULTS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("flush.messages", "9223372036854775807"),
    ("flush.ms", "9223372036854775807"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.type", "CreateTime"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "134217728"),
    ("segment.ms", "604800000"),
    ("segment.index.bytes", "10485760"),
    ("min.insync.replicas", "1"),
    ("compression.type", "producer"),
    // Kafka's other topic configs: accepted, validated, stored and described so that clients
    // and tools setting them work unchanged; Freshet does not act on them (yet).
    ("compression.gzip.level", "-1"),
    ("compression.lz4.level", "9"),
    ("compression.zstd.level", "3"),
    ("delete.retention.ms", "86400000"),
    ("file.delete.delay.ms", "60000"),
    ("follower.replication.throttled.replicas", ""),
    ("index.interval.bytes", "4096"),
    ("leader.replication.throttled.replicas", ""),
    ("local.retention.bytes", "-2"),
    ("local.retention.ms", "-2"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("message.timestamp.after.max.ms", "9223372036854775807"),
    ("message.timestamp.before.max.ms", "9223372036854775807"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.compaction.lag.ms", "0"),
    ("preallocate", "false"),
    ("remote.storage.enable", "false"),
    ("segment.jitter.ms", "0"),
    ("unclean.leader.election.enable", "false"),
];

/// Sentinel used by Kafka for "never" in flush.messages / flush.ms.
pub const KAFKA_LONG_MAX: i64 = i64::MAX;

impl TopicConfig {
    /// Builds a config from key/value pairs, validating each.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut cfg = TopicConfig::default();
        for (k, v) in pairs {
            cfg.set(k.into(), v.into())?;
        }
        Ok(cfg)
    }

    /// Sets one key after validating its value.
    pub fn set(&mut self, key: String, value: String) -> Result<(), ConfigError> {
        validate_topic_config(&key, &value)?;
        self.entries.insert(key, value);
        Ok(())
    }

    /// Removes an override (back to the default).
    pub fn unset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Value of `key`: the override, else `defaults`' override, else Kafka's default.
    pub fn get<'a>(&'a self, defaults: &'a TopicConfig, key: &str) -> Option<&'a str> {
        self.entries
            .get(key)
            .or_else(|| defaults.entries.get(key))
            .map(|s| s.as_str())
            .or_else(|| {
                TOPIC_CONFIG_DEFAULTS
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| *v)
            })
    }

    fn get_i64(&self, defaults: &TopicConfig, key: &str) -> i64 {
        let v = self
            .get(defaults, key)
            .unwrap_or_else(|| panic!("no default for topic config {key}"));
        v.parse()
            .unwrap_or_else(|_| panic!("topic config {key}={v} passed validation but is not i64"))
    }

    /// The effective, typed settings of a topic.
    pub fn effective(&self, defaults: &TopicConfig) -> EffectiveTopicConfig {
        let ts = self
            .get(defaults, "message.timestamp.type")
            .unwrap_or("CreateTime");
        EffectiveTopicConfig {
            flush_messages: self.get_i64(defaults, "flush.messages"),
            flush_ms: self.get_i64(defaults, "flush.ms"),
            max_message_bytes: self.get_i64(defaults, "max.message.bytes"),
            retention_bytes: self.get_i64(defaults, "retention.bytes"),
            retention_ms: self.get_i64(defaults, "retention.ms"),
            segment_bytes: self.get_i64(defaults, "segment.bytes"),
            segment_ms: self.get_i64(defaults, "segment.ms"),
            timestamp_type: if ts == "LogAppendTime" {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
        }
    }
}

/// Typed view of a topic's configuration (per core, computed from `TopicConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveTopicConfig {
    /// `flush.messages` (`i64::MAX` = no count trigger). Accepted and reported only: the
    /// Raft driver flushes every log it wrote in each pass, so it never delays durability.
    pub flush_messages: i64,
    /// `flush.ms` (`i64::MAX` = no time trigger). Accepted and reported only, like
    /// `flush_messages`.
    pub flush_ms: i64,
    pub max_message_bytes: i64,
    /// -1 = unlimited.
    pub retention_bytes: i64,
    /// -1 = unlimited.
    pub retention_ms: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub timestamp_type: TimestampType,
}

impl EffectiveTopicConfig {
    /// Neither flush.messages nor flush.ms is set: flush as soon as data is pending.
    pub fn flush_asap(&self) -> bool {
        self.flush_messages == KAFKA_LONG_MAX && self.flush_ms == KAFKA_LONG_MAX
    }
}

fn validate_topic_config(key: &str, value: &str) -> Result<(), ConfigError> {
    let invalid = |reason| ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    match key {
        "flush.messages"
        | "segment.bytes"
        | "max.message.bytes"
        | "segment.ms"
        | "segment.index.bytes"
        | "min.insync.replicas" => {
            let v: i64 = value.parse().map_err(|_| invalid("not an integer"))?;
            if v < 1 {
                return Err(invalid("must be >= 1"));
            }
        }
        "flush.ms" => {
            let v: i64 = value.parse().map_err(|_| invalid("not an integer"))?;
            if v < 0 {
                return Err(invalid("must be >= 0"));
            }
        }
        "retention.bytes" | "retention.ms" => {
            let v: i64 = value.parse().map_err(|_| invalid("not an integer"))?;
            if v < -1 {
                return Err(invalid("must be >= -1"));
            }
        }
        "message.timestamp.type" => {
            if value != "CreateTime" && value != "LogAppendTime" {
                return Err(invalid("must be CreateTime or LogAppendTime"));
            }
        }
        "cleanup.policy" => {
            if value != "delete" && value != "compact" && value != "compact,delete" {
                return Err(invalid("must be delete, compact or compact,delete"));
            }
        }
        "compression.type" => {
            if !["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"].contains(&value) {
                return Err(invalid("unknown compression type"));
            }
        }
        "compression.gzip.level" => {
            let v: i64 = value.parse().map_err(|_| invalid("not an integer"))?;
            if v != -1 && !(1..=9).contains(&v) {
                return Err(invalid("must be -1 or 1..=9"));
            }
        }
        "compression.lz4.level" => {
            let v: i64 = value.parse().map_err(|_| invalid("not an integer"))?;
            if !(1..=17).contains(&v) {
                return Err(invalid("must be 1..=17"));
            }
        }
        "compression.zstd.level" => {
            let v: i64 = value.parse().map_err(|_| invalid("not an integer"))?;
            if !(-131_072..=22).contains(&v) {
                return Err(invalid("must be -131072..=22"));
            }
        }
        "delete.retention.ms"
        | "file.delete.delay.ms"
        | "index.interval.bytes"
        | "message.timestamp.after.max.ms"
        | "message.timestamp.before.max.ms"
        | "min.compaction.lag.ms"
        | "segment.jitter.ms" => {
            let v: i64 = value.parse().map_err(|_| invalid("not an integer"))?;
            if v < 0 {
                return Err(invalid("must be >= 0"));
            }
        }
        "max.compaction.lag.ms" => {
            let v: i64 = value.parse().map_err(|_| invalid("not an integer"))?;
            if v < 1 {
                return Err(invalid("must be >= 1"));
            }
        }
        "local.retention.bytes" | "local.retention.ms" => {
            let v: i64 = value.parse().map_err(|_| invalid("not an integer"))?;
            if v < -2 {
                return Err(invalid("must be >= -2"));
            }
        }
        "min.cleanable.dirty.ratio" => {
            let v: f64 = value.parse().map_err(|_| invalid("not a number"))?;
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid("must be between 0 and 1"));
            }
        }
        "preallocate" | "remote.storage.enable" | "unclean.leader.election.enable" => {
            if value != "true" && value != "false" {
                return Err(invalid("must be true or false"));
            }
        }
        "follower.replication.throttled.replicas" | "leader.replication.throttled.replicas" => {
            let pair_ok = |p: &str| {
                p.split_once(':').is_some_and(|(a, b)| {
                    a.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                })
            };
            if !(value.is_empty() || value.trim() == "*" || value.split(',').all(pair_ok)) {
                return Err(invalid(
                    "must be empty, * or partition:broker pairs separated by commas",
                ));
            }
        }
        _ => return Err(ConfigError::UnknownKey(key.to_string())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_override_beats_broker_default_which_beats_kafka_default() {
        let broker = TopicConfig::from_pairs([("retention.ms", "1000")]).unwrap();
        let topic = TopicConfig::from_pairs([("flush.ms", "5")]).unwrap();
        let eff = topic.effective(&broker);
        assert_eq!(eff.retention_ms, 1000);
        assert_eq!(eff.flush_ms, 5);
        assert_eq!(eff.segment_bytes, 134_217_728);
        assert!(!eff.flush_asap());
        assert!(TopicConfig::default().effective(&broker).flush_asap());
    }

    #[test]
    fn invalid_values_and_unknown_keys_are_rejected() {
        assert!(matches!(
            TopicConfig::from_pairs([("retention.ms", "soon")]),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert_eq!(
            TopicConfig::from_pairs([("no.such.key", "1")]),
            Err(ConfigError::UnknownKey("no.such.key".into()))
        );
        assert!(TopicConfig::from_pairs([("message.timestamp.type", "LogAppendTime")]).is_ok());
    }
}
