//! Metadata (key 3): brokers (every live registered broker; this node alone in a cluster of
//! one), cluster id, controller (the controller group's leader while it is live, else this
//! node, which forwards), and topics with their partitions: leader and leader epoch from this
//! core's leader table, replicas from the assignment, ISR from the leader (down brokers left
//! out), offline replicas (v5+: replicas on brokers this node found down);
//! LEADER_NOT_AVAILABLE with leader -1 while a partition has no known live leader (see
//! `cluster_view`). Missing topics are auto-created when `auto.create.topics.enable`
//! (and, v4+, the request's allow_auto_topic_creation) allow it.

use bytes::Bytes;
use freshet_engine::code;
use freshet_engine::metadata::TopicMeta;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::cluster_view::{leader_lookup, ClusterView};
use super::{ensure_topic, topic_name, uuid_of, HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::Metadata;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 12 };

/// Kafka's "authorized operations not requested" sentinel.
const OPS_NOT_REQUESTED: i32 = i32::MIN;

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: MetadataRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        // v0: an empty list means all topics; v1+: null means all topics.
        let all = match &req.topics {
            None => true,
            Some(t) => t.is_empty() && ctx.api_version == 0,
        };
        let allow_auto = ctx.api_version < 4 || req.allow_auto_topic_creation;
        // Topics found or created first (auto-creation waits), described afterwards against
        // the newest snapshot and leader table.
        let mut found: Vec<Result<TopicMeta, MetadataResponseTopic>> = Vec::new();
        if all {
            found.extend(shard.metadata().topics.values().cloned().map(Ok));
        } else {
            for rt in req.topics.unwrap_or_default() {
                match rt.name {
                    Some(name) => {
                        let name = name.0.as_str().to_string();
                        found.push(match ensure_topic(&shard, &name, allow_auto).await {
                            Ok(t) => Ok(t),
                            Err(err) => Err(MetadataResponseTopic::default()
                                .with_error_code(err)
                                .with_name(Some(topic_name(&name)))
                                .with_topic_authorized_operations(OPS_NOT_REQUESTED)),
                        });
                    }
                    None => {
                        let snap = shard.metadata();
                        found.push(match snap.topic_by_id(rt.topic_id.as_bytes()) {
                            Some(t) => Ok(t.clone()),
                            None => Err(MetadataResponseTopic::default()
                                .with_error_code(code::UNKNOWN_TOPIC_ID)
                                .with_topic_id(rt.topic_id)
                                .with_topic_authorized_operations(OPS_NOT_REQUESTED)),
                        });
                    }
                }
            }
        }
        wait_for_new_leaders(&shard, &found).await;
        let snap = shard.metadata();
        let leader_of = leader_lookup(&shard);
        let down = shard.down_brokers();
        let view = ClusterView::this_node(&shard, &snap, &leader_of, &down);
        let topics = found
            .into_iter()
            .map(|t| match t {
                // A topic created by this request may be newer than `snap`; its entry is.
                Ok(t) => topic_entry(&view, snap.topic(&t.name).unwrap_or(&t)),
                Err(e) => e,
            })
            .collect();
        let brokers = view
            .brokers()
            .into_iter()
            .map(|b| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(b.host))
                    .with_port(b.port)
                    .with_rack(b.rack.map(StrBytes::from_string))
            })
            .collect();
        let resp = MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(StrBytes::from_string(
                shard.config().cluster_id.clone(),
            )))
            .with_controller_id(BrokerId(view.controller_id()))
            .with_cluster_authorized_operations(OPS_NOT_REQUESTED)
            .with_topics(topics);
        ctx.respond(&resp)
    })
}

/// How long Metadata waits, in a cluster of one, for the leaders of partitions the leader
/// table does not know yet (a topic created a moment ago: its single-replica groups lead before
/// the creation is answered, the table learns it a few milliseconds later).
const SINGLE_NODE_LEADER_WAIT_MS: u64 = 1000;

/// In a cluster of one, waits (bounded) until this core's leader table knows the leader of
/// every partition of `topics`, so a client asking right after a creation sees the leader
/// instead of a LEADER_NOT_AVAILABLE retry. In a real cluster a missing leader is news the
/// client must get at once.
async fn wait_for_new_leaders(
    shard: &std::rc::Rc<freshet_engine::Shard>,
    topics: &[Result<TopicMeta, MetadataResponseTopic>],
) {
    let me = shard.config().node_id;
    if !shard.metadata().brokers.keys().all(|id| *id == me) {
        return;
    }
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(SINGLE_NODE_LEADER_WAIT_MS);
    for t in topics.iter().flatten() {
        for a in &t.assignments {
            if shard.leader_of(a.group).is_some() {
                continue;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            freshet_engine::cluster::wait_for_leader(shard, a.group, left).await;
        }
    }
}

fn topic_entry(view: &ClusterView<'_>, t: &TopicMeta) -> MetadataResponseTopic {
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let partitions = (0..t.partitions)
        .map(|i| {
            let p = view.partition(t, i);
            MetadataResponsePartition::default()
                .with_error_code(p.error)
                .with_partition_index(i)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.epoch)
                .with_replica_nodes(ids(p.replicas))
                .with_isr_nodes(ids(p.isr))
                .with_offline_replicas(ids(p.offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(code::NONE)
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(uuid_of(&t.id))
        .with_is_internal(t.name.starts_with("__"))
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPS_NOT_REQUESTED)
}

/// Splits "host:port" (IPv6 hosts in brackets).
pub(crate) fn split_host_port(addr: &str) -> (String, i32) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse().unwrap_or(9092),
        ),
        None => (addr.to_string(), 9092),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_split_into_host_and_port() {
        assert_eq!(
            split_host_port("127.0.0.1:9092"),
            ("127.0.0.1".into(), 9092)
        );
        assert_eq!(split_host_port("[::1]:19092"), ("::1".into(), 19092));
        assert_eq!(
            split_host_port("broker.local:1"),
            ("broker.local".into(), 1)
        );
    }
}
