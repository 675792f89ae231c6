//! CreateTopics (key 19): creates topics through core 0 (the metadata owner), which persists
//! them and broadcasts the new metadata to every core before answering. Errors are per topic,
//! checked in Kafka's order: duplicate entries in the request (INVALID_REQUEST), bad names
//! (INVALID_TOPIC_EXCEPTION), existing topics (TOPIC_ALREADY_EXISTS), partition count
//! (INVALID_PARTITIONS), replication factor other than -1 or 1..=registered brokers
//! (INVALID_REPLICATION_FACTOR), manual assignments: partitions 0..n-1, registered brokers
//! each once, one length (INVALID_REPLICA_ASSIGNMENT), configs (INVALID_CONFIG), and names
//! colliding after '.'→'_' (INVALID_TOPIC_EXCEPTION). `validate_only` checks everything and
//! creates nothing.

use std::collections::HashMap;

use bytes::Bytes;
use freshet_engine::code;
use freshet_engine::metadata::{validate_topic_name, MetadataSnapshot};
use freshet_engine::shard::validate_new_topic;
use freshet_engine::TopicConfig;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::{
    broker_topic_defaults, colliding_topic, describe_topic_config, normalize_config_value, sb,
};
use super::cluster_view::{leader_lookup, ClusterView};
use super::placement_checks::{
    check_replication_factor, check_topic_assignment, effective_replication_factor,
};
use super::{uuid_of, HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::CreateTopics;
pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 7 };

/// A request entry that passed the checks the engine does not do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TopicPlan {
    pub partitions: i32,
    /// As requested: -1 = the broker default (`default.replication.factor`).
    pub replication_factor: i16,
    /// Manual placement: partition p's replicas (preferred leader first); `None` lets the
    /// controller place them.
    pub assignments: Option<Vec<Vec<i32>>>,
    pub configs: Vec<(String, String)>,
}

/// Checks one CreateTopics entry against `snap`, the registered `brokers` (ids) and
/// `default_partitions` (for num_partitions -1). Err is (Kafka error code, message).
pub(crate) fn plan_topic(
    snap: &MetadataSnapshot,
    t: &CreatableTopic,
    brokers: &[i32],
    default_partitions: i32,
) -> Result<TopicPlan, (i16, String)> {
    let name = t.name.0.as_str();
    validate_topic_name(name).map_err(|e| (code::INVALID_TOPIC_EXCEPTION, e.to_string()))?;
    if snap.topic(name).is_some() {
        return Err((
            code::TOPIC_ALREADY_EXISTS,
            format!("Topic '{name}' already exists."),
        ));
    }
    let (partitions, assignments) = if t.assignments.is_empty() {
        let partitions = match t.num_partitions {
            -1 => default_partitions,
            n => n,
        };
        if partitions <= 0 {
            return Err((
                code::INVALID_PARTITIONS,
                format!(
                    "Number of partitions was set to an invalid non-positive value ({partitions})."
                ),
            ));
        }
        check_replication_factor(t.replication_factor, brokers.len())?;
        (partitions, None)
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((
                code::INVALID_REQUEST,
                "Both numPartitions or replicationFactor and replicasAssignments were set. \
                 Both cannot be used at the same time."
                    .to_string(),
            ));
        }
        let entries: Vec<(i32, Vec<i32>)> = t
            .assignments
            .iter()
            .map(|a| {
                (
                    a.partition_index,
                    a.broker_ids.iter().map(|b| b.0).collect(),
                )
            })
            .collect();
        let lists = check_topic_assignment(&entries, brokers)?;
        (lists.len() as i32, Some(lists))
    };
    let mut configs = Vec::with_capacity(t.configs.len());
    for c in &t.configs {
        match &c.value {
            Some(v) => configs.push((
                c.name.as_str().to_string(),
                normalize_config_value(c.name.as_str(), v.as_str()),
            )),
            None => {
                return Err((
                    code::INVALID_CONFIG,
                    format!(
                        "Null value not supported for topic config {}.",
                        c.name.as_str()
                    ),
                ))
            }
        }
    }
    validate_new_topic(snap, name, partitions, &configs)
        .map_err(|e| (e.kafka_code(), e.to_string()))?;
    if let Some(other) = colliding_topic(snap.topics.keys(), name) {
        return Err((
            code::INVALID_TOPIC_EXCEPTION,
            format!("Topic '{name}' collides with existing topic '{other}' ('.' and '_' are the same in metric names)."),
        ));
    }
    Ok(TopicPlan {
        partitions,
        replication_factor: t.replication_factor,
        assignments,
        configs,
    })
}

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: CreateTopicsRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let default_partitions = shard.config().num_partitions;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for t in &req.topics {
            *seen.entry(t.name.0.as_str().to_string()).or_default() += 1;
        }
        let mut results = Vec::with_capacity(req.topics.len());
        for t in &req.topics {
            let name = t.name.0.as_str().to_string();
            let mut r = CreatableTopicResult::default().with_name(t.name.clone());
            let fail = |mut r: CreatableTopicResult, (code, msg): (i16, String)| {
                r.error_code = code;
                r.error_message = Some(sb(msg));
                r
            };
            if seen[&name] > 1 {
                results.push(fail(
                    r,
                    (
                        code::INVALID_REQUEST,
                        format!(
                            "Create topics request contains multiple entries for topic {name}."
                        ),
                    ),
                ));
                continue;
            }
            let snap = shard.metadata();
            let leader_of = leader_lookup(&shard);
            let brokers = ClusterView::this_node(&shard, &snap, &leader_of, &shard.down_brokers())
                .broker_ids();
            let plan = match plan_topic(&snap, t, &brokers, default_partitions) {
                Ok(p) => p,
                Err(e) => {
                    results.push(fail(r, e));
                    continue;
                }
            };
            let config = TopicConfig::from_pairs(plan.configs.iter().cloned())
                .expect("configs were validated by plan_topic");
            // The replication factor the topic gets (v5+ answers it).
            r.replication_factor = match &plan.assignments {
                Some(lists) => lists.first().map_or(1, |l| l.len() as i16),
                None => effective_replication_factor(
                    plan.replication_factor,
                    shard.config().cluster.default_replication_factor,
                    brokers.len(),
                ),
            };
            if !req.validate_only {
                match shard
                    .create_topic(
                        name.clone(),
                        plan.partitions,
                        plan.replication_factor,
                        plan.assignments,
                        plan.configs,
                    )
                    .await
                {
                    Ok(meta) => {
                        tracing::info!(topic = %name, partitions = meta.partitions, "topic created");
                        r.topic_id = uuid_of(&meta.id);
                        r.replication_factor = meta.replication_factor() as i16;
                    }
                    Err(e) => {
                        results.push(fail(r, (e.kafka_code(), e.to_string())));
                        continue;
                    }
                }
            }
            // v5+: the topic's partitions, replication factor and configs.
            r.num_partitions = plan.partitions;
            if ctx.api_version >= 5 {
                let described =
                    describe_topic_config(&config, &broker_topic_defaults(shard.config()));
                r.configs = Some(
                    described
                        .into_iter()
                        .map(|c| {
                            CreatableTopicConfigs::default()
                                .with_name(sb(c.name))
                                .with_value(Some(sb(c.value)))
                                .with_read_only(c.read_only)
                                .with_config_source(c.source)
                                .with_is_sensitive(c.sensitive)
                        })
                        .collect(),
                );
            }
            results.push(r);
        }
        ctx.respond(&CreateTopicsResponse::default().with_topics(results))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshet_engine::metadata::TopicMeta;
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopicConfig,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};

    fn snap_with(names: &[&str]) -> MetadataSnapshot {
        let mut s = MetadataSnapshot::default();
        for n in names {
            s.topics.insert(
                n.to_string(),
                TopicMeta {
                    name: n.to_string(),
                    id: [1; 16],
                    partitions: 1,
                    config: TopicConfig::default(),
                    revision: 1,
                    assignments: freshet_engine::metadata::single_replica_assignments(1, 1, 0),
                },
            );
        }
        s
    }

    fn topic(name: &str, partitions: i32, rf: i16) -> CreatableTopic {
        CreatableTopic::default()
            .with_name(TopicName(sb(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
    }

    fn code_of(r: Result<TopicPlan, (i16, String)>) -> i16 {
        r.map(|_| 0).unwrap_or_else(|(c, _)| c)
    }

    /// The per-topic error codes of Kafka's CreateTopics (KIP-4) on a one-node cluster.
    #[test]
    fn create_topics_entries_get_kafkas_error_codes() {
        let snap = snap_with(&["orders", "a.b"]);
        let plan = |t: &CreatableTopic| code_of(plan_topic(&snap, t, &[1], 1));
        assert_eq!(plan(&topic("fresh", 3, 1)), code::NONE);
        assert_eq!(
            plan(&topic("fresh", -1, -1)),
            code::NONE,
            "-1: broker defaults"
        );
        assert_eq!(plan(&topic("orders", 1, 1)), code::TOPIC_ALREADY_EXISTS);
        assert_eq!(
            plan(&topic("bad/name", 1, 1)),
            code::INVALID_TOPIC_EXCEPTION
        );
        assert_eq!(plan(&topic("..", 1, 1)), code::INVALID_TOPIC_EXCEPTION);
        assert_eq!(
            plan(&topic(&"x".repeat(250), 1, 1)),
            code::INVALID_TOPIC_EXCEPTION
        );
        assert_eq!(
            plan(&topic("a_b", 1, 1)),
            code::INVALID_TOPIC_EXCEPTION,
            "collides with a.b"
        );
        assert_eq!(plan(&topic("zero", 0, 1)), code::INVALID_PARTITIONS);
        assert_eq!(plan(&topic("neg", -5, 1)), code::INVALID_PARTITIONS);
        assert_eq!(plan(&topic("huge", 100_001, 1)), code::INVALID_PARTITIONS);
        assert_eq!(plan(&topic("rf3", 1, 3)), code::INVALID_REPLICATION_FACTOR);
        assert_eq!(plan(&topic("rf0", 1, 0)), code::INVALID_REPLICATION_FACTOR);
        let cfg = |k: &str, v: Option<&str>| {
            topic("cfg", 1, 1).with_configs(vec![CreatableTopicConfig::default()
                .with_name(sb(k))
                .with_value(v.map(sb))])
        };
        assert_eq!(plan(&cfg("retention.ms", Some("86400000"))), code::NONE);
        assert_eq!(
            plan(&cfg("retention.ms", Some("soon"))),
            code::INVALID_CONFIG
        );
        assert_eq!(plan(&cfg("no.such.key", Some("1"))), code::INVALID_CONFIG);
        assert_eq!(plan(&cfg("retention.ms", None)), code::INVALID_CONFIG);
    }

    /// In a three-broker cluster: RF up to 3 places (and -1 leaves it to the controller),
    /// RF 4 is INVALID_REPLICATION_FACTOR.
    #[test]
    fn replication_factor_is_bounded_by_the_registered_brokers() {
        let snap = snap_with(&[]);
        let plan = |rf: i16| plan_topic(&snap, &topic("r", 2, rf), &[0, 1, 2], 1);
        assert_eq!(plan(3).map(|p| p.replication_factor), Ok(3));
        assert_eq!(
            plan(-1).map(|p| (p.replication_factor, p.assignments)),
            Ok((-1, None))
        );
        assert_eq!(code_of(plan(4)), code::INVALID_REPLICATION_FACTOR);
    }

    /// Manual assignments (KIP-4 replica_assignment): partitions 0..n-1, registered brokers
    /// each once per partition, one replica count; they replace num_partitions and RF.
    #[test]
    fn manual_assignments_name_registered_brokers() {
        let snap = snap_with(&[]);
        let brokers = [1, 2, 3];
        let assign = |p: i32, brokers: &[i32]| {
            CreatableReplicaAssignment::default()
                .with_partition_index(p)
                .with_broker_ids(brokers.iter().map(|b| BrokerId(*b)).collect())
        };
        let ok = topic("m", -1, -1).with_assignments(vec![assign(1, &[3, 1]), assign(0, &[1, 2])]);
        assert_eq!(
            plan_topic(&snap, &ok, &brokers, 1),
            Ok(TopicPlan {
                partitions: 2,
                replication_factor: -1,
                assignments: Some(vec![vec![1, 2], vec![3, 1]]),
                configs: vec![]
            })
        );
        let code = |t: &CreatableTopic| code_of(plan_topic(&snap, t, &brokers, 1));
        let unknown_broker = topic("m", -1, -1).with_assignments(vec![assign(0, &[4])]);
        assert_eq!(code(&unknown_broker), code::INVALID_REPLICA_ASSIGNMENT);
        let twice = topic("m", -1, -1).with_assignments(vec![assign(0, &[2, 2])]);
        assert_eq!(code(&twice), code::INVALID_REPLICA_ASSIGNMENT);
        let uneven = topic("m", -1, -1).with_assignments(vec![assign(0, &[1, 2]), assign(1, &[3])]);
        assert_eq!(code(&uneven), code::INVALID_REPLICA_ASSIGNMENT);
        let gap = topic("m", -1, -1).with_assignments(vec![assign(0, &[1]), assign(2, &[1])]);
        assert_eq!(code(&gap), code::INVALID_REPLICA_ASSIGNMENT);
        let both = topic("m", 2, -1).with_assignments(vec![assign(0, &[1])]);
        assert_eq!(code(&both), code::INVALID_REQUEST);
    }
}
