//! CreatePartitions (key 37, KIP-195): grows a topic to `count` partitions through core 0; the
//! new partitions open on their owning cores before the answer. Counts can only increase
//! (INVALID_PARTITIONS), manual assignments need one replica list per new partition, each of
//! the topic's replication factor and naming registered brokers once
//! (INVALID_REPLICA_ASSIGNMENT), unknown topics get UNKNOWN_TOPIC_OR_PARTITION, the
//! same topic twice INVALID_REQUEST, internal topics POLICY_VIOLATION (their partition count
//! decides where groups live). `validate_only` changes nothing.

use std::collections::HashMap;

use bytes::Bytes;
use freshet_engine::code;
use freshet_engine::metadata::MetadataSnapshot;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::{is_internal_topic, sb};
use super::cluster_view::{leader_lookup, ClusterView};
use super::placement_checks::check_replica_list;
use super::{HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::CreatePartitions;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

/// Largest partition count of a topic (as `validate_new_topic`).
const PARTITIONS_MAX: i32 = 100_000;

/// What a valid entry asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Growth {
    /// The new total partition count.
    pub total: i32,
    /// Manual placement of each new partition (preferred leader first); `None` lets the
    /// controller place them.
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// Checks one entry against `snap` and the registered `brokers` (ids).
pub(crate) fn check(
    snap: &MetadataSnapshot,
    t: &CreatePartitionsTopic,
    brokers: &[i32],
) -> Result<Growth, (i16, String)> {
    let name = t.name.0.as_str();
    let meta = snap.topic(name).ok_or((
        code::UNKNOWN_TOPIC_OR_PARTITION,
        format!("Topic {name} does not exist."),
    ))?;
    if is_internal_topic(name) {
        return Err((
            code::POLICY_VIOLATION,
            format!("The partition count of internal topic {name} cannot be changed."),
        ));
    }
    let current = meta.partitions;
    if t.count == current {
        return Err((
            code::INVALID_PARTITIONS,
            format!("Topic already has {current} partitions."),
        ));
    }
    if t.count < current {
        return Err((
            code::INVALID_PARTITIONS,
            format!(
                "Topic currently has {current} partitions, which is higher than the requested {}.",
                t.count
            ),
        ));
    }
    if t.count > PARTITIONS_MAX {
        return Err((
            code::INVALID_PARTITIONS,
            format!(
                "{} partitions requested; at most {PARTITIONS_MAX}.",
                t.count
            ),
        ));
    }
    let Some(assignments) = &t.assignments else {
        return Ok(Growth {
            total: t.count,
            assignments: None,
        });
    };
    let added = t.count - current;
    if assignments.len() as i32 != added {
        return Err((
            code::INVALID_REPLICA_ASSIGNMENT,
            format!(
                "{} replica assignments given for {added} new partitions.",
                assignments.len()
            ),
        ));
    }
    let rf = meta.replication_factor();
    let mut lists = Vec::with_capacity(assignments.len());
    for (i, a) in assignments.iter().enumerate() {
        let replicas: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
        check_replica_list(current + i as i32, &replicas, brokers, Some(rf))?;
        lists.push(replicas);
    }
    Ok(Growth {
        total: t.count,
        assignments: Some(lists),
    })
}

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: CreatePartitionsRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for t in &req.topics {
            *seen.entry(t.name.0.as_str().to_string()).or_default() += 1;
        }
        let mut results = Vec::with_capacity(req.topics.len());
        for t in &req.topics {
            let name = t.name.0.as_str().to_string();
            let outcome = if seen[&name] > 1 {
                Err((
                    code::INVALID_REQUEST,
                    format!("Topic {name} appears more than once in the request."),
                ))
            } else {
                let snap = shard.metadata();
                let leader_of = leader_lookup(&shard);
                let brokers =
                    ClusterView::this_node(&shard, &snap, &leader_of, &shard.down_brokers())
                        .broker_ids();
                match check(&snap, t, &brokers) {
                    Ok(_) if req.validate_only => Ok(()),
                    Ok(growth) => shard
                        .add_partitions(name.clone(), growth.total, growth.assignments)
                        .await
                        .map(|m| {
                            tracing::info!(topic = %name, partitions = m.partitions, "partitions added");
                        })
                        .map_err(|e| (e.kafka_code(), e.to_string())),
                    Err(e) => Err(e),
                }
            };
            let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if let Err((code, msg)) = outcome {
                r.error_code = code;
                r.error_message = Some(sb(msg));
            }
            results.push(r);
        }
        ctx.respond(&CreatePartitionsResponse::default().with_results(results))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshet_engine::metadata::TopicMeta;
    use freshet_engine::TopicConfig;
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
    use kafka_protocol::messages::{BrokerId, TopicName};

    fn snap() -> MetadataSnapshot {
        let mut s = MetadataSnapshot::default();
        for (n, p) in [("orders", 3), ("__consumer_offsets", 16)] {
            s.topics.insert(
                n.to_string(),
                TopicMeta {
                    name: n.to_string(),
                    id: [2; 16],
                    partitions: p,
                    config: TopicConfig::default(),
                    revision: 1,
                    assignments: freshet_engine::metadata::single_replica_assignments(1, p, 0),
                },
            );
        }
        s
    }

    fn req(name: &str, count: i32) -> CreatePartitionsTopic {
        CreatePartitionsTopic::default()
            .with_name(TopicName(sb(name)))
            .with_count(count)
            .with_assignments(None)
    }

    /// KIP-195: the partition count only grows; each error is Kafka's code.
    #[test]
    fn partition_counts_only_grow() {
        let s = snap();
        let code_of =
            |t: &CreatePartitionsTopic| check(&s, t, &[1]).map(|_| 0).unwrap_or_else(|e| e.0);
        assert_eq!(
            check(&s, &req("orders", 5), &[1]),
            Ok(Growth {
                total: 5,
                assignments: None
            })
        );
        assert_eq!(code_of(&req("orders", 3)), code::INVALID_PARTITIONS);
        assert_eq!(code_of(&req("orders", 2)), code::INVALID_PARTITIONS);
        assert_eq!(code_of(&req("orders", 100_001)), code::INVALID_PARTITIONS);
        assert_eq!(code_of(&req("nope", 5)), code::UNKNOWN_TOPIC_OR_PARTITION);
        assert_eq!(
            code_of(&req("__consumer_offsets", 20)),
            code::POLICY_VIOLATION
        );
        let assign =
            |b: i32| CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(b)]);
        assert_eq!(
            code_of(&req("orders", 5).with_assignments(Some(vec![assign(1), assign(1)]))),
            code::NONE
        );
        assert_eq!(
            code_of(&req("orders", 5).with_assignments(Some(vec![assign(1)]))),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code_of(&req("orders", 4).with_assignments(Some(vec![assign(2)]))),
            code::INVALID_REPLICA_ASSIGNMENT
        );
    }

    /// New partitions of a replicated topic: each list names registered brokers once and has
    /// the topic's replication factor (KRaft's consistency rule).
    #[test]
    fn new_partition_assignments_keep_the_topics_replication_factor() {
        let mut s = snap();
        let orders = s.topics.get_mut("orders").unwrap();
        for a in &mut orders.assignments {
            a.replicas = vec![0, 1];
        }
        let brokers = [0, 1, 2];
        let assign = |b: &[i32]| {
            CreatePartitionsAssignment::default()
                .with_broker_ids(b.iter().map(|x| BrokerId(*x)).collect())
        };
        let grow = |lists: &[&[i32]]| {
            check(
                &s,
                &req("orders", 3 + lists.len() as i32)
                    .with_assignments(Some(lists.iter().map(|l| assign(l)).collect())),
                &brokers,
            )
        };
        assert_eq!(
            grow(&[&[2, 0], &[1, 2]]),
            Ok(Growth {
                total: 5,
                assignments: Some(vec![vec![2, 0], vec![1, 2]])
            })
        );
        let code = |r: Result<Growth, (i16, String)>| r.map(|_| 0).unwrap_or_else(|e| e.0);
        assert_eq!(code(grow(&[&[2]])), code::INVALID_REPLICA_ASSIGNMENT);
        assert_eq!(code(grow(&[&[2, 3]])), code::INVALID_REPLICA_ASSIGNMENT);
        assert_eq!(code(grow(&[&[2, 2]])), code::INVALID_REPLICA_ASSIGNMENT);
        let (_, msg) = grow(&[&[0, 1], &[0]]).unwrap_err();
        assert!(msg.contains("partition 4"), "{msg}");
    }
}
