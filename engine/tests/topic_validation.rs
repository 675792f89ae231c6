//! Scenarios for the checks behind CreateTopics / AlterConfigs: Kafka's topic-name rules
//! (`org.apache.kafka.common.internals.Topic.validate`: 1..=249 chars of `[a-zA-Z0-9._-]`, not
//! `.` or `..`) and the value rules of each topic config key (Kafka's `LogConfig` ranges), as
//! the engine's public API exposes them to the handlers.

use freshet_engine::config::{ConfigError, TOPIC_CONFIG_DEFAULTS};
use freshet_engine::metadata::{validate_topic_name, MetadataSnapshot, TopicMeta};
use freshet_engine::shard::validate_new_topic;
use freshet_engine::{code, TopicConfig, TopicError};

#[test]
fn topic_names_follow_kafkas_legal_characters_and_length() {
    for ok in [
        "a",
        "orders",
        "Orders.V1",
        "a_b-c.d",
        "...",
        "-",
        "_",
        "__consumer_offsets",
        &"x".repeat(249),
    ] {
        assert_eq!(validate_topic_name(ok), Ok(()), "{ok:?} is a legal name");
    }
    for bad in [
        "",
        ".",
        "..",
        &"x".repeat(250),
        "a b",
        "a/b",
        "a\\b",
        "a:b",
        "a,b",
        "tópico",
        "a\0b",
        "a\nb",
        "*",
    ] {
        assert!(validate_topic_name(bad).is_err(), "{bad:?} must be refused");
    }
}

fn value_ok(key: &str, value: &str) -> bool {
    TopicConfig::from_pairs([(key, value)]).is_ok()
}

#[test]
fn every_default_value_passes_its_own_validation() {
    for (k, v) in TOPIC_CONFIG_DEFAULTS {
        assert!(value_ok(k, v), "default {k}={v} must validate");
    }
}

#[test]
fn numeric_configs_follow_kafkas_ranges() {
    // retention.*: -1 means unlimited; anything below is invalid.
    for k in ["retention.ms", "retention.bytes"] {
        assert!(value_ok(k, "-1"));
        assert!(value_ok(k, "0"));
        assert!(value_ok(k, "9223372036854775807"));
        assert!(!value_ok(k, "-2"), "{k}=-2");
        assert!(!value_ok(k, "9223372036854775808"), "{k} overflows i64");
        assert!(!value_ok(k, "1e3"));
        assert!(!value_ok(k, ""));
        assert!(!value_ok(k, " 5"));
    }
    // Sizes, counts and roll times must be positive.
    for k in [
        "segment.bytes",
        "segment.ms",
        "max.message.bytes",
        "flush.messages",
        "min.insync.replicas",
        "segment.index.bytes",
    ] {
        assert!(value_ok(k, "1"), "{k}=1");
        assert!(!value_ok(k, "0"), "{k}=0");
        assert!(!value_ok(k, "-1"), "{k}=-1");
        assert!(!value_ok(k, "lots"), "{k}=lots");
    }
    // flush.ms 0 means "flush at once".
    assert!(value_ok("flush.ms", "0"));
    assert!(!value_ok("flush.ms", "-1"));
}

#[test]
fn enumerated_configs_accept_only_kafkas_names() {
    assert!(value_ok("message.timestamp.type", "CreateTime"));
    assert!(value_ok("message.timestamp.type", "LogAppendTime"));
    assert!(
        !value_ok("message.timestamp.type", "createtime"),
        "case matters, as in Kafka"
    );
    assert!(!value_ok("message.timestamp.type", "Now"));
    for ok in ["delete", "compact", "compact,delete"] {
        assert!(value_ok("cleanup.policy", ok), "{ok}");
    }
    assert!(!value_ok("cleanup.policy", "shred"));
    for ok in ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"] {
        assert!(value_ok("compression.type", ok), "{ok}");
    }
    assert!(!value_ok("compression.type", "brotli"));
}

#[test]
fn unknown_keys_are_named_in_the_error() {
    assert_eq!(
        TopicConfig::from_pairs([("retention.hours", "1")]),
        Err(ConfigError::UnknownKey("retention.hours".into()))
    );
}

fn snapshot_with(name: &str) -> MetadataSnapshot {
    let mut s = MetadataSnapshot::default();
    s.topics.insert(
        name.to_string(),
        TopicMeta {
            name: name.to_string(),
            id: [7; 16],
            partitions: 2,
            config: TopicConfig::default(),
            revision: 1,
            assignments: freshet_engine::metadata::single_replica_assignments(1, 2, 0),
        },
    );
    s
}

/// validate_new_topic is what CreateTopics with validate_only runs: each failure maps to the
/// Kafka error code the client sees.
#[test]
fn validate_new_topic_maps_each_failure_to_its_kafka_code() {
    let snap = snapshot_with("orders");
    let code_of = |name: &str, partitions: i32, cfg: &[(&str, &str)]| {
        let cfg: Vec<(String, String)> = cfg
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        validate_new_topic(&snap, name, partitions, &cfg)
            .map(|_| code::NONE)
            .unwrap_or_else(|e: TopicError| e.kafka_code())
    };
    assert_eq!(code_of("fresh", 3, &[("retention.ms", "1000")]), code::NONE);
    assert_eq!(code_of("orders", 3, &[]), code::TOPIC_ALREADY_EXISTS);
    assert_eq!(code_of("bad name", 3, &[]), code::INVALID_TOPIC_EXCEPTION);
    assert_eq!(code_of("fresh", 0, &[]), code::INVALID_PARTITIONS);
    assert_eq!(code_of("fresh", 100_001, &[]), code::INVALID_PARTITIONS);
    assert_eq!(code_of("fresh", 100_000, &[]), code::NONE);
    assert_eq!(
        code_of("fresh", 1, &[("retention.ms", "-5")]),
        code::INVALID_CONFIG
    );
    assert_eq!(code_of("fresh", 1, &[("nope", "1")]), code::INVALID_CONFIG);
}

/// Kafka's remaining topic configs are accepted within Kafka's ranges (stored, not acted on).
#[test]
fn kafkas_other_topic_configs_are_accepted_within_their_ranges() {
    let ok = [
        ("delete.retention.ms", "0"),
        ("min.compaction.lag.ms", "1000"),
        ("max.compaction.lag.ms", "1"),
        ("min.cleanable.dirty.ratio", "0.1"),
        ("unclean.leader.election.enable", "true"),
        ("preallocate", "false"),
        ("local.retention.ms", "-2"),
        ("compression.gzip.level", "-1"),
        ("compression.zstd.level", "-5"),
        ("leader.replication.throttled.replicas", "0:1,1:1"),
        ("follower.replication.throttled.replicas", "*"),
        ("follower.replication.throttled.replicas", ""),
        ("message.timestamp.before.max.ms", "86400000"),
    ];
    for (k, v) in ok {
        assert!(value_ok(k, v), "{k}={v}");
    }
    let bad = [
        ("delete.retention.ms", "-1"),
        ("max.compaction.lag.ms", "0"),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("min.cleanable.dirty.ratio", "half"),
        ("unclean.leader.election.enable", "yes"),
        ("local.retention.bytes", "-3"),
        ("compression.gzip.level", "0"),
        ("compression.lz4.level", "18"),
        ("leader.replication.throttled.replicas", "0-1"),
    ];
    for (k, v) in bad {
        assert!(!value_ok(k, v), "{k}={v} must be refused");
    }
}
