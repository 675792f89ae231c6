//! Metadata (key 3): brokers (this node), cluster id, controller, and topics with their
//! partitions (leader = this node). Missing topics are auto-created when
//! `auto.create.topics.enable` (and, v4+, the request's allow_auto_topic_creation) allow it.

use bytes::Bytes;
use freshet_engine::code;
use freshet_engine::metadata::TopicMeta;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::{ensure_topic, topic_name, uuid_of, HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::Metadata;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 12 };

/// Kafka's "authorized operations not requested" sentinel.
const OPS_NOT_REQUESTED: i32 = i32::MIN;

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: MetadataRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let node_id = shard.config().node_id;
        let (host, port) = split_host_port(shard.config().advertised_addr());
        // v0: an empty list means all topics; v1+: null means all topics.
        let all = match &req.topics {
            None => true,
            Some(t) => t.is_empty() && ctx.api_version == 0,
        };
        let allow_auto = ctx.api_version < 4 || req.allow_auto_topic_creation;
        let mut topics = Vec::new();
        if all {
            for t in shard.metadata().topics.values() {
                topics.push(topic_entry(t, node_id));
            }
        } else {
            for rt in req.topics.unwrap_or_default() {
                match rt.name {
                    Some(name) => {
                        let name = name.0.as_str().to_string();
                        match ensure_topic(&shard, &name, allow_auto).await {
                            Ok(t) => topics.push(topic_entry(&t, node_id)),
                            Err(err) => topics.push(
                                MetadataResponseTopic::default()
                                    .with_error_code(err)
                                    .with_name(Some(topic_name(&name)))
                                    .with_topic_authorized_operations(OPS_NOT_REQUESTED),
                            ),
                        }
                    }
                    None => {
                        let snap = shard.metadata();
                        match snap.topic_by_id(rt.topic_id.as_bytes()) {
                            Some(t) => topics.push(topic_entry(t, node_id)),
                            None => topics.push(
                                MetadataResponseTopic::default()
                                    .with_error_code(code::UNKNOWN_TOPIC_ID)
                                    .with_topic_id(rt.topic_id)
                                    .with_topic_authorized_operations(OPS_NOT_REQUESTED),
                            ),
                        }
                    }
                }
            }
        }
        let resp = MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(node_id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)])
            .with_cluster_id(Some(StrBytes::from_string(
                shard.config().cluster_id.clone(),
            )))
            .with_controller_id(BrokerId(node_id))
            .with_cluster_authorized_operations(OPS_NOT_REQUESTED)
            .with_topics(topics);
        ctx.respond(&resp)
    })
}

fn topic_entry(t: &TopicMeta, node_id: i32) -> MetadataResponseTopic {
    let partitions = (0..t.partitions)
        .map(|i| {
            MetadataResponsePartition::default()
                .with_error_code(code::NONE)
                .with_partition_index(i)
                .with_leader_id(BrokerId(node_id))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node_id)])
                .with_isr_nodes(vec![BrokerId(node_id)])
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
