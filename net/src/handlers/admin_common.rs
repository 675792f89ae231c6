//! Shared pieces of the admin handlers (CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, AlterConfigs, IncrementalAlterConfigs, DeleteRecords, OffsetForLeaderEpoch,
//! DescribeLogDirs): config descriptions with sources and synonyms, the broker's own (read-only)
//! config list, resource-type constants, and a helper that runs one step per partition on the
//! partitions' owning cores. Everything here runs on the connection's core (per core, `!Send`
//! values stay local; only plain data crosses cores inside `invoke_on`).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use freshet_engine::config::TOPIC_CONFIG_DEFAULTS;
use freshet_engine::{BrokerConfig, Shard, TopicConfig};
use kafka_protocol::protocol::StrBytes;

/// Kafka `ConfigResource.Type` codes.
pub(crate) mod resource_type {
    pub const TOPIC: i8 = 2;
    pub const BROKER: i8 = 4;
    pub const BROKER_LOGGER: i8 = 8;
}

/// Kafka `DescribeConfigsResponse.ConfigSource` codes.
pub(crate) mod config_source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// Kafka `DescribeConfigsResponse.ConfigType` codes (DescribeConfigs v3+).
pub(crate) mod config_type {
    pub const BOOLEAN: i8 = 1;
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const LONG: i8 = 5;
    pub const DOUBLE: i8 = 6;
    pub const LIST: i8 = 7;
}

pub(crate) fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// What clients learn about one topic config key: its type, the broker-level key that
/// supplies its default (Kafka's synonym), and a one-line description.
pub(crate) struct TopicConfigInfo {
    pub key: &'static str,
    pub config_type: i8,
    pub broker_key: &'static str,
    pub doc: &'static str,
}

/// Every topic config key the engine accepts (`TOPIC_CONFIG_DEFAULTS`), described. Keys the
/// engine adds later without an entry here are described as strings without documentation.
pub(crate) const TOPIC_CONFIG_INFO: &[TopicConfigInfo] = &[
    TopicConfigInfo {
        key: "cleanup.policy",
        config_type: config_type::LIST,
        broker_key: "log.cleanup.policy",
        doc: "delete: old segments are removed per retention.ms / retention.bytes; compact is \
              accepted and stored, but Freshet does not compact logs yet.",
    },
    TopicConfigInfo {
        key: "flush.messages",
        config_type: config_type::LONG,
        broker_key: "log.flush.interval.messages",
        doc: "Accepted and validated, but it does not delay durability: every partition is a \
              Raft group whose driver flushes (fdatasync) every log it wrote in each pass.",
    },
    TopicConfigInfo {
        key: "flush.ms",
        config_type: config_type::LONG,
        broker_key: "log.flush.interval.ms",
        doc: "Accepted and validated, but it does not delay durability: the Raft driver \
              flushes every log it wrote in each pass.",
    },
    TopicConfigInfo {
        key: "max.message.bytes",
        config_type: config_type::INT,
        broker_key: "message.max.bytes",
        doc: "Largest record batch the topic accepts (bytes); larger ones get MESSAGE_TOO_LARGE.",
    },
    TopicConfigInfo {
        key: "message.timestamp.type",
        config_type: config_type::STRING,
        broker_key: "log.message.timestamp.type",
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's \
              append time (KIP-32).",
    },
    TopicConfigInfo {
        key: "retention.bytes",
        config_type: config_type::LONG,
        broker_key: "log.retention.bytes",
        doc: "Delete old segments while a partition is larger than this (bytes); -1: no limit.",
    },
    TopicConfigInfo {
        key: "retention.ms",
        config_type: config_type::LONG,
        broker_key: "log.retention.ms",
        doc: "Delete segments whose newest record is older than this (ms); -1: no limit.",
    },
    TopicConfigInfo {
        key: "segment.bytes",
        config_type: config_type::INT,
        broker_key: "log.segment.bytes",
        doc: "Roll to a new segment file at this size (bytes).",
    },
    TopicConfigInfo {
        key: "segment.ms",
        config_type: config_type::LONG,
        broker_key: "log.roll.ms",
        doc: "Roll to a new segment after this long (ms), so retention can remove old data.",
    },
    TopicConfigInfo {
        key: "segment.index.bytes",
        config_type: config_type::INT,
        broker_key: "log.index.size.max.bytes",
        doc: "Accepted for compatibility; Freshet sizes its sparse indexes itself.",
    },
    TopicConfigInfo {
        key: "min.insync.replicas",
        config_type: config_type::INT,
        broker_key: "min.insync.replicas",
        doc: "Accepted for compatibility; at replication factor 1 only 1 is meaningful.",
    },
    TopicConfigInfo {
        key: "compression.type",
        config_type: config_type::STRING,
        broker_key: "compression.type",
        doc: "Accepted for compatibility; Freshet stores batches as the producer compressed \
              them (producer).",
    },
    TopicConfigInfo {
        key: "compression.gzip.level",
        config_type: config_type::INT,
        broker_key: "compression.gzip.level",
        doc: "Accepted and stored; Freshet does not recompress batches.",
    },
    TopicConfigInfo {
        key: "compression.lz4.level",
        config_type: config_type::INT,
        broker_key: "compression.lz4.level",
        doc: "Accepted and stored; Freshet does not recompress batches.",
    },
    TopicConfigInfo {
        key: "compression.zstd.level",
        config_type: config_type::INT,
        broker_key: "compression.zstd.level",
        doc: "Accepted and stored; Freshet does not recompress batches.",
    },
    TopicConfigInfo {
        key: "delete.retention.ms",
        config_type: config_type::LONG,
        broker_key: "log.cleaner.delete.retention.ms",
        doc: "Accepted and stored; applies to compaction, which Freshet does not do yet.",
    },
    TopicConfigInfo {
        key: "file.delete.delay.ms",
        config_type: config_type::LONG,
        broker_key: "log.segment.delete.delay.ms",
        doc: "Accepted and stored; Freshet deletes segment files at once.",
    },
    TopicConfigInfo {
        key: "follower.replication.throttled.replicas",
        config_type: config_type::LIST,
        broker_key: "follower.replication.throttled.replicas",
        doc: "Accepted and stored; no replication throttling yet.",
    },
    TopicConfigInfo {
        key: "index.interval.bytes",
        config_type: config_type::INT,
        broker_key: "log.index.interval.bytes",
        doc: "Accepted and stored; Freshet's index interval is a broker setting.",
    },
    TopicConfigInfo {
        key: "leader.replication.throttled.replicas",
        config_type: config_type::LIST,
        broker_key: "leader.replication.throttled.replicas",
        doc: "Accepted and stored; no replication throttling yet.",
    },
    TopicConfigInfo {
        key: "local.retention.bytes",
        config_type: config_type::LONG,
        broker_key: "log.local.retention.bytes",
        doc: "Accepted and stored; no tiered storage.",
    },
    TopicConfigInfo {
        key: "local.retention.ms",
        config_type: config_type::LONG,
        broker_key: "log.local.retention.ms",
        doc: "Accepted and stored; no tiered storage.",
    },
    TopicConfigInfo {
        key: "max.compaction.lag.ms",
        config_type: config_type::LONG,
        broker_key: "log.cleaner.max.compaction.lag.ms",
        doc: "Accepted and stored; no compaction yet.",
    },
    TopicConfigInfo {
        key: "message.timestamp.after.max.ms",
        config_type: config_type::LONG,
        broker_key: "log.message.timestamp.after.max.ms",
        doc: "Accepted and stored; not enforced on produce yet.",
    },
    TopicConfigInfo {
        key: "message.timestamp.before.max.ms",
        config_type: config_type::LONG,
        broker_key: "log.message.timestamp.before.max.ms",
        doc: "Accepted and stored; not enforced on produce yet.",
    },
    TopicConfigInfo {
        key: "min.cleanable.dirty.ratio",
        config_type: config_type::DOUBLE,
        broker_key: "log.cleaner.min.cleanable.ratio",
        doc: "Accepted and stored; no compaction yet.",
    },
    TopicConfigInfo {
        key: "min.compaction.lag.ms",
        config_type: config_type::LONG,
        broker_key: "log.cleaner.min.compaction.lag.ms",
        doc: "Accepted and stored; no compaction yet.",
    },
    TopicConfigInfo {
        key: "preallocate",
        config_type: config_type::BOOLEAN,
        broker_key: "log.preallocate",
        doc: "Accepted and stored; Freshet preallocates segments itself.",
    },
    TopicConfigInfo {
        key: "remote.storage.enable",
        config_type: config_type::BOOLEAN,
        broker_key: "remote.storage.enable",
        doc: "Accepted and stored; no tiered storage.",
    },
    TopicConfigInfo {
        key: "segment.jitter.ms",
        config_type: config_type::LONG,
        broker_key: "log.roll.jitter.ms",
        doc: "Accepted and stored; segments roll without jitter.",
    },
    TopicConfigInfo {
        key: "unclean.leader.election.enable",
        config_type: config_type::BOOLEAN,
        broker_key: "unclean.leader.election.enable",
        doc: "Accepted and stored; meaningful only with replication.",
    },
];

pub(crate) fn topic_config_info(key: &str) -> Option<&'static TopicConfigInfo> {
    TOPIC_CONFIG_INFO.iter().find(|i| i.key == key)
}

/// Whether `key` is a list-typed config (IncrementalAlterConfigs APPEND/SUBTRACT apply).
pub(crate) fn is_list_config(key: &str) -> bool {
    topic_config_info(key).is_some_and(|i| i.config_type == config_type::LIST)
}

/// One described config value (topic or broker), version-independent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DescribedConfig {
    pub name: String,
    pub value: String,
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
    /// (name, value, source), most specific first, the entry itself included (as Kafka).
    pub synonyms: Vec<(String, String, i8)>,
    pub config_type: i8,
    pub doc: Option<&'static str>,
}

/// Every topic config with its effective value and where it comes from: the topic's own
/// override (DYNAMIC_TOPIC_CONFIG), the broker's `[topic_defaults]` (STATIC_BROKER_CONFIG,
/// under the broker key) or Kafka's default (DEFAULT_CONFIG). Sorted by key.
pub(crate) fn describe_topic_config(
    topic: &TopicConfig,
    broker_defaults: &TopicConfig,
) -> Vec<DescribedConfig> {
    let mut out = Vec::with_capacity(TOPIC_CONFIG_DEFAULTS.len());
    for (key, kafka_default) in TOPIC_CONFIG_DEFAULTS {
        let info = topic_config_info(key);
        let broker_key = info.map(|i| i.broker_key).unwrap_or(key);
        let mut synonyms = Vec::new();
        if let Some(v) = topic.entries.get(*key) {
            synonyms.push((
                key.to_string(),
                v.clone(),
                config_source::DYNAMIC_TOPIC_CONFIG,
            ));
        }
        if let Some(v) = broker_defaults.entries.get(*key) {
            synonyms.push((
                broker_key.to_string(),
                v.clone(),
                config_source::STATIC_BROKER_CONFIG,
            ));
        }
        synonyms.push((
            broker_key.to_string(),
            kafka_default.to_string(),
            config_source::DEFAULT_CONFIG,
        ));
        let (_, value, source) = synonyms[0].clone();
        out.push(DescribedConfig {
            name: key.to_string(),
            value,
            source,
            read_only: false,
            sensitive: false,
            synonyms,
            config_type: info.map(|i| i.config_type).unwrap_or(config_type::STRING),
            doc: info.map(|i| i.doc),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The broker-level defaults of the topic configs: the `[topic_defaults]` table, plus
/// `min.insync.replicas` from the cluster settings (`ClusterConfig::min_insync_replicas`) when
/// the table does not set it and it differs from Kafka's default (1) — what a topic without its
/// own value gets, reported as STATIC_BROKER_CONFIG.
pub(crate) fn broker_topic_defaults(cfg: &BrokerConfig) -> std::borrow::Cow<'_, TopicConfig> {
    const KEY: &str = "min.insync.replicas";
    let min_isr = cfg.cluster.min_insync_replicas;
    if min_isr == 1 || cfg.topic_defaults.entries.contains_key(KEY) {
        return std::borrow::Cow::Borrowed(&cfg.topic_defaults);
    }
    let mut d = cfg.topic_defaults.clone();
    d.set(KEY.to_string(), min_isr.to_string())
        .expect("cluster min_insync_replicas is a valid min.insync.replicas");
    std::borrow::Cow::Owned(d)
}

/// The broker's own configuration as Kafka names it. All read-only (Freshet has no dynamic
/// broker configs); a value equal to Freshet's built-in default is DEFAULT_CONFIG, anything
/// set by flags or the config file STATIC_BROKER_CONFIG.
pub(crate) fn describe_broker_config(cfg: &BrokerConfig) -> Vec<DescribedConfig> {
    let builtin = BrokerConfig::new(
        cfg.data_dir.clone(),
        cfg.kafka_addr.clone(),
        cfg.node_id,
        cfg.cores,
    );
    let mut out = Vec::new();
    let mut push = |name: &str, value: String, builtin_value: Option<String>, ty: i8, doc| {
        let source = if builtin_value.as_deref() == Some(value.as_str()) {
            config_source::DEFAULT_CONFIG
        } else {
            config_source::STATIC_BROKER_CONFIG
        };
        out.push(DescribedConfig {
            name: name.to_string(),
            value: value.clone(),
            source,
            read_only: true,
            sensitive: false,
            synonyms: vec![(name.to_string(), value, source)],
            config_type: ty,
            doc: Some(doc),
        });
    };
    push(
        "node.id",
        cfg.node_id.to_string(),
        None,
        config_type::INT,
        "This broker's id.",
    );
    push(
        "broker.id",
        cfg.node_id.to_string(),
        None,
        config_type::INT,
        "This broker's id (same as node.id).",
    );
    push(
        "log.dirs",
        cfg.data_dir.join("kafka").display().to_string(),
        None,
        config_type::LIST,
        "Where partition logs live (<data-dir>/kafka).",
    );
    push(
        "listeners",
        format!("PLAINTEXT://{}", cfg.kafka_addr),
        None,
        config_type::LIST,
        "The Kafka listener every core binds (SO_REUSEPORT).",
    );
    push(
        "advertised.listeners",
        format!("PLAINTEXT://{}", cfg.advertised_addr()),
        None,
        config_type::LIST,
        "The address clients are told to connect to.",
    );
    push(
        "num.partitions",
        cfg.num_partitions.to_string(),
        Some(builtin.num_partitions.to_string()),
        config_type::INT,
        "Partitions of an auto-created topic, and of CreateTopics with num_partitions -1.",
    );
    push(
        "default.replication.factor",
        cfg.cluster.default_replication_factor.to_string(),
        Some(builtin.cluster.default_replication_factor.to_string()),
        config_type::INT,
        "Replication factor of auto-created topics and of CreateTopics with replication_factor \
         -1 (capped at the number of brokers).",
    );
    push(
        "auto.create.topics.enable",
        cfg.auto_create_topics_enable.to_string(),
        Some(builtin.auto_create_topics_enable.to_string()),
        config_type::BOOLEAN,
        "Create a missing topic when a client asks for its metadata.",
    );
    push(
        "delete.topic.enable",
        "true".to_string(),
        Some("true".to_string()),
        config_type::BOOLEAN,
        "DeleteTopics is always enabled.",
    );
    push(
        "socket.request.max.bytes",
        cfg.socket_request_max_bytes.to_string(),
        Some(builtin.socket_request_max_bytes.to_string()),
        config_type::INT,
        "Largest request frame; a larger one closes the connection.",
    );
    push(
        "max.connections",
        cfg.max_connections.to_string(),
        Some(builtin.max_connections.to_string()),
        config_type::INT,
        "Connections accepted by the whole broker (split evenly over cores).",
    );
    push(
        "log.retention.check.interval.ms",
        cfg.retention_check_interval_ms.to_string(),
        Some(builtin.retention_check_interval_ms.to_string()),
        config_type::LONG,
        "How often retention runs on each core.",
    );
    // Broker-level defaults of the topic configs, under their broker names.
    for c in describe_topic_config(&TopicConfig::default(), &broker_topic_defaults(cfg)) {
        let info = topic_config_info(&c.name);
        let name = info.map(|i| i.broker_key).unwrap_or(&c.name).to_string();
        if out.iter().any(|o| o.name == name) {
            continue;
        }
        out.push(DescribedConfig {
            name: name.clone(),
            read_only: true,
            synonyms: vec![(name, c.value.clone(), c.source)],
            ..c
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Keeps only the configs named in `keys` (DescribeConfigs' configuration_keys; null or empty
/// means all, as Kafka's `ConfigHelper` reads it).
pub(crate) fn filter_keys(
    configs: Vec<DescribedConfig>,
    keys: Option<&[StrBytes]>,
) -> Vec<DescribedConfig> {
    match keys {
        None => configs,
        Some([]) => configs,
        Some(keys) => configs
            .into_iter()
            .filter(|c| keys.iter().any(|k| k.as_str() == c.name))
            .collect(),
    }
}

/// Kafka's internal topics: clients may not delete them or change their partition count.
pub(crate) fn is_internal_topic(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

/// Kafka rejects a topic whose name equals an existing one after mapping '.' to '_' (the two
/// would collide in metric names). Returns the existing topic it collides with.
pub(crate) fn colliding_topic<'a>(
    existing: impl IntoIterator<Item = &'a String>,
    name: &str,
) -> Option<String> {
    let norm = |s: &str| s.replace('.', "_");
    let mine = norm(name);
    existing
        .into_iter()
        .find(|t| t.as_str() != name && norm(t) == mine)
        .cloned()
}

/// Whether `name` denotes this broker in a BROKER config resource: Kafka accepts the node id
/// or "" (the cluster-wide default).
pub(crate) fn is_this_broker(name: &str, node_id: i32) -> bool {
    name.is_empty() || name.parse::<i32>() == Ok(node_id)
}

/// Kafka accepts list values in any order and with spaces ("delete, compact"); the engine
/// stores the canonical form ("compact,delete"). Other keys pass unchanged.
pub(crate) fn normalize_config_value(key: &str, value: &str) -> String {
    if !is_list_config(key) {
        return value.to_string();
    }
    let mut items: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    items.sort_unstable();
    items.dedup();
    items.join(",")
}

/// IncrementalAlterConfigs (KIP-339) APPEND / SUBTRACT on a list config: the new value from the
/// current one. Only list-typed keys allow them (else INVALID_CONFIG, as Kafka).
pub(crate) fn apply_list_op(
    key: &str,
    current: &str,
    value: &str,
    append: bool,
) -> Result<String, (i16, String)> {
    if !is_list_config(key) {
        let op = if append { "append" } else { "subtract" };
        return Err((
            freshet_engine::code::INVALID_CONFIG,
            format!("Config value {op} is not allowed for config key: {key}"),
        ));
    }
    let mut items: Vec<String> = current
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for v in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if append {
            if !items.iter().any(|i| i == v) {
                items.push(v.to_string());
            }
        } else {
            items.retain(|i| i != v);
        }
    }
    Ok(normalize_config_value(key, &items.join(",")))
}

/// Validates a topic config change against the topic's current config and, unless
/// `validate_only`, applies it through core 0 (persisted, broadcast, applied to the live
/// partitions before this returns). Err is (Kafka error code, message).
pub(crate) async fn alter_topic_config(
    shard: &Rc<Shard>,
    name: &str,
    change: freshet_engine::TopicConfigChange,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    use freshet_engine::code;
    use freshet_engine::TopicConfigChange;
    let snap = shard.metadata();
    let Some(meta) = snap.topic(name) else {
        if freshet_engine::metadata::validate_topic_name(name).is_err() {
            return Err((
                code::INVALID_TOPIC_EXCEPTION,
                format!("Invalid topic name {name:?}."),
            ));
        }
        return Err((
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("Topic {name} does not exist."),
        ));
    };
    let invalid = |e: freshet_engine::config::ConfigError| (code::INVALID_CONFIG, e.to_string());
    match &change {
        TopicConfigChange::Replace(pairs) => {
            TopicConfig::from_pairs(pairs.iter().cloned()).map_err(invalid)?;
        }
        TopicConfigChange::Incremental(ops) => {
            let mut next = meta.config.clone();
            for (k, v) in ops {
                match v {
                    Some(v) => next.set(k.clone(), v.clone()).map_err(invalid)?,
                    None if TOPIC_CONFIG_DEFAULTS.iter().any(|(d, _)| d == k) => next.unset(k),
                    None => {
                        return Err((
                            code::INVALID_CONFIG,
                            format!("unknown topic config key {k:?}"),
                        ))
                    }
                }
            }
        }
    }
    if validate_only {
        return Ok(());
    }
    shard
        .set_topic_config(name.to_string(), change)
        .await
        .map(|_| tracing::info!(topic = name, "topic config changed"))
        .map_err(|e| (e.kafka_code(), e.to_string()))
}

/// Why broker configs cannot be altered.
const BROKER_CONFIGS_STATIC: &str =
    "Freshet broker configs are static: set them with `freshet start` flags or its config file.";

/// The outcome for one resource of AlterConfigs or IncrementalAlterConfigs (the two differ
/// only in how a TOPIC resource's configs become a change): a resource named twice in the
/// request is INVALID_REQUEST; a TOPIC gets `topic_change()` validated and applied
/// ([`alter_topic_config`]); this BROKER accepts only an empty change (its configs are
/// static: INVALID_CONFIG); another broker id or another resource type is INVALID_REQUEST.
/// Err is (Kafka error code, message).
pub(crate) async fn alter_config_resource(
    shard: &Rc<Shard>,
    resource_type: i8,
    name: &str,
    duplicate: bool,
    configs_empty: bool,
    validate_only: bool,
    topic_change: impl FnOnce() -> Result<freshet_engine::TopicConfigChange, (i16, String)>,
) -> Result<(), (i16, String)> {
    use freshet_engine::code;
    let node_id = shard.config().node_id;
    if duplicate {
        return Err((
            code::INVALID_REQUEST,
            format!("Resource {name} appears more than once in the request."),
        ));
    }
    match resource_type {
        resource_type::TOPIC => {
            alter_topic_config(shard, name, topic_change()?, validate_only).await
        }
        resource_type::BROKER if is_this_broker(name, node_id) => {
            if configs_empty {
                Ok(())
            } else {
                Err((code::INVALID_CONFIG, BROKER_CONFIGS_STATIC.to_string()))
            }
        }
        resource_type::BROKER => Err((
            code::INVALID_REQUEST,
            format!(
                "Unexpected broker id, expected {node_id} or empty string, but received {name}."
            ),
        )),
        other => Err((
            code::INVALID_REQUEST,
            format!("Unsupported resource type {other}."),
        )),
    }
}

/// Kafka refuses a request that names the same resource twice: the duplicates get
/// INVALID_REQUEST. Returns, per entry, whether it is such a duplicate.
pub(crate) fn duplicate_flags<K: Eq + std::hash::Hash>(keys: &[K]) -> Vec<bool> {
    let mut count: std::collections::HashMap<&K, usize> = std::collections::HashMap::new();
    for k in keys {
        *count.entry(k).or_default() += 1;
    }
    keys.iter().map(|k| count[k] > 1).collect()
}

/// The first of `keys` that is given more than once, if any.
pub(crate) fn first_duplicate<'a>(keys: &[&'a str]) -> Option<&'a str> {
    keys.iter()
        .zip(duplicate_flags(keys))
        .find_map(|(k, d)| d.then_some(*k))
}

/// The future of a step run on a partition's owning core (local to that core).
pub(crate) type StepFuture<R> = Pin<Box<dyn Future<Output = R>>>;
/// A step run on a partition's owning core: (shard there, topic, partition, argument).
pub(crate) type PartitionStep<A, R> = fn(Rc<Shard>, String, i32, A) -> StepFuture<R>;
/// One (topic, partition, argument) item with its position in the caller's list.
type Indexed<A> = (usize, (String, i32, A));

/// Runs `step` for every (topic, partition, arg) on the partition's owning core (one mesh call
/// per core, cores in parallel) and returns the results in input order; `unreachable` stands
/// in for the results of a core that cannot be reached (shutdown).
pub(crate) async fn on_owning_cores<A, R>(
    shard: &Rc<Shard>,
    items: Vec<(String, i32, A)>,
    step: PartitionStep<A, R>,
    unreachable: R,
) -> Vec<R>
where
    A: Send + 'static,
    R: Send + Clone + 'static,
{
    let n = items.len();
    let mut per_core: BTreeMap<usize, Vec<Indexed<A>>> = BTreeMap::new();
    for (i, item) in items.into_iter().enumerate() {
        per_core
            .entry(shard.owner_of(&item.0, item.1))
            .or_default()
            .push((i, item));
    }
    let mut tasks = Vec::with_capacity(per_core.len());
    for (core, work) in per_core {
        let shard = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            let slots: Vec<usize> = work.iter().map(|(i, _)| *i).collect();
            let work: Vec<(String, i32, A)> = work.into_iter().map(|(_, w)| w).collect();
            let r = shard
                .invoke_on(core, move |s| async move {
                    let mut out = Vec::with_capacity(work.len());
                    for (t, p, a) in work {
                        out.push(step(s.clone(), t, p, a).await);
                    }
                    out
                })
                .await;
            (slots, r)
        }));
    }
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    for t in tasks {
        let (slots, r) = t.await;
        match r {
            Ok(results) => {
                assert_eq!(results.len(), slots.len(), "one result per partition step");
                for (slot, v) in slots.into_iter().zip(results) {
                    out[slot] = Some(v);
                }
            }
            Err(_) => {
                for slot in slots {
                    out[slot] = Some(unreachable.clone());
                }
            }
        }
    }
    out.into_iter()
        .map(|v| v.expect("every partition step answered"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(cs: &'a [DescribedConfig], name: &str) -> &'a DescribedConfig {
        cs.iter().find(|c| c.name == name).expect(name)
    }

    #[test]
    fn a_topic_override_beats_the_broker_default_which_beats_kafkas_and_all_are_synonyms() {
        let broker =
            TopicConfig::from_pairs([("retention.ms", "1000"), ("segment.ms", "60000")]).unwrap();
        let topic = TopicConfig::from_pairs([("retention.ms", "5000")]).unwrap();
        let cs = describe_topic_config(&topic, &broker);
        assert_eq!(cs.len(), TOPIC_CONFIG_DEFAULTS.len());
        let r = find(&cs, "retention.ms");
        assert_eq!(
            (r.value.as_str(), r.source),
            ("5000", config_source::DYNAMIC_TOPIC_CONFIG)
        );
        assert_eq!(
            r.synonyms,
            vec![
                (
                    "retention.ms".into(),
                    "5000".into(),
                    config_source::DYNAMIC_TOPIC_CONFIG
                ),
                (
                    "log.retention.ms".into(),
                    "1000".into(),
                    config_source::STATIC_BROKER_CONFIG
                ),
                (
                    "log.retention.ms".into(),
                    "604800000".into(),
                    config_source::DEFAULT_CONFIG
                ),
            ]
        );
        let s = find(&cs, "segment.ms");
        assert_eq!(
            (s.value.as_str(), s.source),
            ("60000", config_source::STATIC_BROKER_CONFIG)
        );
        let c = find(&cs, "cleanup.policy");
        assert_eq!(
            (c.value.as_str(), c.source),
            ("delete", config_source::DEFAULT_CONFIG)
        );
        assert_eq!(c.config_type, config_type::LIST);
        assert!(cs
            .iter()
            .all(|c| !c.read_only && !c.sensitive && c.doc.is_some()));
    }

    #[test]
    fn every_engine_config_key_is_described_and_its_list_values_stay_valid() {
        for (k, v) in TOPIC_CONFIG_DEFAULTS {
            assert!(topic_config_info(k).is_some(), "{k} has no description");
            let normalized = normalize_config_value(k, v);
            assert!(
                TopicConfig::from_pairs([(*k, normalized.as_str())]).is_ok(),
                "{k}={normalized}"
            );
        }
    }

    /// Replication settings: a cluster-wide min.insync.replicas is what topics without their
    /// own value report (STATIC_BROKER_CONFIG, under the broker key), a topic's own value wins,
    /// and the broker lists it with default.replication.factor.
    #[test]
    fn min_insync_replicas_default_comes_from_the_cluster_settings() {
        let mut cfg = BrokerConfig::new("/d".into(), "127.0.0.1:9092".into(), 0, 1);
        let plain = describe_topic_config(&TopicConfig::default(), &broker_topic_defaults(&cfg));
        let m = find(&plain, "min.insync.replicas");
        assert_eq!(
            (m.value.as_str(), m.source),
            ("1", config_source::DEFAULT_CONFIG)
        );
        cfg.cluster.min_insync_replicas = 2;
        cfg.cluster.default_replication_factor = 3;
        let cs = describe_topic_config(&TopicConfig::default(), &broker_topic_defaults(&cfg));
        let m = find(&cs, "min.insync.replicas");
        assert_eq!(
            (m.value.as_str(), m.source),
            ("2", config_source::STATIC_BROKER_CONFIG)
        );
        let own = TopicConfig::from_pairs([("min.insync.replicas", "3")]).unwrap();
        let cs = describe_topic_config(&own, &broker_topic_defaults(&cfg));
        let m = find(&cs, "min.insync.replicas");
        assert_eq!(
            (m.value.as_str(), m.source),
            ("3", config_source::DYNAMIC_TOPIC_CONFIG)
        );
        assert_eq!(m.synonyms[1].1, "2", "the broker default is its synonym");
        let b = describe_broker_config(&cfg);
        assert_eq!(find(&b, "min.insync.replicas").value, "2");
        let rf = find(&b, "default.replication.factor");
        assert_eq!(
            (rf.value.as_str(), rf.source),
            ("3", config_source::STATIC_BROKER_CONFIG)
        );
    }

    #[test]
    fn broker_configs_are_read_only_and_name_their_source() {
        let mut cfg = BrokerConfig::new("/d".into(), "127.0.0.1:9092".into(), 7, 2);
        cfg.num_partitions = 3;
        cfg.topic_defaults = TopicConfig::from_pairs([("retention.ms", "1000")]).unwrap();
        let cs = describe_broker_config(&cfg);
        assert!(cs.iter().all(|c| c.read_only));
        assert_eq!(find(&cs, "node.id").value, "7");
        let np = find(&cs, "num.partitions");
        assert_eq!(
            (np.value.as_str(), np.source),
            ("3", config_source::STATIC_BROKER_CONFIG)
        );
        let ac = find(&cs, "auto.create.topics.enable");
        assert_eq!(ac.source, config_source::DEFAULT_CONFIG);
        let lr = find(&cs, "log.retention.ms");
        assert_eq!(
            (lr.value.as_str(), lr.source),
            ("1000", config_source::STATIC_BROKER_CONFIG)
        );
        assert_eq!(
            find(&cs, "log.roll.ms").source,
            config_source::DEFAULT_CONFIG
        );
        let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "sorted, no duplicates");
    }

    #[test]
    fn configuration_keys_filter_null_or_empty_means_all() {
        let all = describe_topic_config(&TopicConfig::default(), &TopicConfig::default());
        assert_eq!(filter_keys(all.clone(), None), all);
        assert_eq!(filter_keys(all.clone(), Some(&[])), all);
        let some = filter_keys(all, Some(&[sb("retention.ms"), sb("no.such")]));
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].name, "retention.ms");
    }

    #[test]
    fn dot_and_underscore_collide_in_topic_names() {
        let existing = vec!["orders.v1".to_string(), "clicks".to_string()];
        assert_eq!(
            colliding_topic(&existing, "orders_v1"),
            Some("orders.v1".into())
        );
        assert_eq!(
            colliding_topic(&existing, "orders.v1"),
            None,
            "the same name is not a collision"
        );
        assert_eq!(colliding_topic(&existing, "orders-v1"), None);
    }

    /// KIP-339: APPEND/SUBTRACT apply to list configs only; lists are stored canonically.
    #[test]
    fn list_config_operations_and_canonical_lists() {
        assert_eq!(
            normalize_config_value("cleanup.policy", "delete, compact"),
            "compact,delete"
        );
        assert_eq!(
            normalize_config_value("retention.ms", " 5"),
            " 5",
            "non-lists pass unchanged"
        );
        assert_eq!(
            apply_list_op("cleanup.policy", "delete", "compact", true),
            Ok("compact,delete".into())
        );
        assert_eq!(
            apply_list_op("cleanup.policy", "compact,delete", "delete", false),
            Ok("compact".into())
        );
        assert_eq!(
            apply_list_op("cleanup.policy", "delete", "delete", true),
            Ok("delete".into())
        );
        assert_eq!(
            apply_list_op("retention.ms", "1", "2", true).map_err(|e| e.0),
            Err(freshet_engine::code::INVALID_CONFIG)
        );
    }

    #[test]
    fn duplicates_are_flagged_everywhere_they_occur() {
        assert_eq!(
            duplicate_flags(&["a", "b", "a", "c"]),
            vec![true, false, true, false]
        );
    }

    /// AlterConfigs / IncrementalAlterConfigs: a config key given twice for one resource is
    /// INVALID_REQUEST, naming the key (Kafka's AdminManager duplicate-key check).
    #[test]
    fn first_repeated_config_key_is_named() {
        assert_eq!(first_duplicate(&["a", "b", "c"]), None);
        assert_eq!(first_duplicate(&["a", "b", "b", "a"]), Some("a"));
    }

    #[test]
    fn broker_resource_names_are_the_node_id_or_empty() {
        assert!(is_this_broker("", 1));
        assert!(is_this_broker("1", 1));
        assert!(!is_this_broker("2", 1));
        assert!(!is_this_broker("one", 1));
    }
}
