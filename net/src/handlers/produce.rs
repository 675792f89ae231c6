//! Produce (key 0): appends record batches through `Partition::replicate` on each partition's
//! owning core (one mesh call per core), acks 0/1/-1, per-partition error codes. A partition
//! this broker holds no replica of is NOT_LEADER_OR_FOLLOWER without asking the engine; the
//! engine answers NOT_LEADER_OR_FOLLOWER on a follower and NOT_ENOUGH_REPLICAS when acks=all
//! finds too few in-sync replicas. v10+ (KIP-951): a NOT_LEADER_OR_FOLLOWER partition names
//! the current leader and the response carries its endpoint.

use std::collections::BTreeMap;

use bytes::Bytes;
use freshet_engine::metadata::TopicMeta;
use freshet_engine::{code, Acks, ReplicateOutcome};
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::cluster_view::{hosts_replica, leader_lookup, ClusterView, LeaderHints};
use super::{ensure_topic, topic_name, uuid_of, HandlerFuture, RequestContext};

/// First Produce version with KIP-951 leader hints (current_leader, node_endpoints).
const LEADER_HINTS_VERSION: i16 = 10;

pub const API_KEY: ApiKey = ApiKey::Produce;
pub const VERSIONS: VersionRange = VersionRange { min: 3, max: 13 };

/// Topics clients may not produce to (Kafka refuses them with INVALID_TOPIC_EXCEPTION).
const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// One partition's slice of the request, routed to its owning core.
struct Item {
    slot: (usize, usize),
    topic: String,
    partition: i32,
    records: Bytes,
}

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: ProduceRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let acks = Acks::from_kafka(req.acks);
        let node_id = shard.config().node_id;
        // The topic of each entry (for the leader hints).
        let mut topic_metas: Vec<Option<TopicMeta>> = Vec::with_capacity(req.topic_data.len());
        // Response skeleton in request order; filled per partition.
        let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
        let mut per_core: BTreeMap<usize, Vec<Item>> = BTreeMap::new();
        for (ti, td) in req.topic_data.into_iter().enumerate() {
            let by_id = ctx.api_version >= 13;
            let resolved = if by_id {
                shard
                    .metadata()
                    .topic_by_id(td.topic_id.as_bytes())
                    .cloned()
                    .ok_or(code::UNKNOWN_TOPIC_ID)
            } else {
                let name = td.name.0.as_str();
                match shard.metadata().topic(name) {
                    Some(t) => Ok(t.clone()),
                    None => ensure_topic(&shard, name, true).await,
                }
            };
            let mut tr = TopicProduceResponse::default()
                .with_name(td.name.clone())
                .with_topic_id(td.topic_id);
            for (pi, pd) in td.partition_data.into_iter().enumerate() {
                let mut pr = PartitionProduceResponse::default()
                    .with_index(pd.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let topic = match (&resolved, acks) {
                    (_, None) => Err(code::INVALID_REQUIRED_ACKS),
                    (Err(e), _) => Err(*e),
                    // Internal topics are written by the broker only (group state).
                    (Ok(t), _) if INTERNAL_TOPICS.contains(&t.name.as_str()) => {
                        Err(code::INVALID_TOPIC_EXCEPTION)
                    }
                    (Ok(t), _) if pd.index < 0 || pd.index >= t.partitions => {
                        Err(code::UNKNOWN_TOPIC_OR_PARTITION)
                    }
                    // Another broker holds this partition.
                    (Ok(t), _) if !hosts_replica(t, pd.index, node_id) => {
                        Err(code::NOT_LEADER_OR_FOLLOWER)
                    }
                    (Ok(t), _) => Ok(t),
                };
                match (topic, pd.records) {
                    (Err(e), _) => pr.error_code = e,
                    (Ok(_), None) => pr.error_code = code::INVALID_RECORD,
                    (Ok(t), Some(records)) => {
                        per_core
                            .entry(shard.owner_of(&t.name, pd.index))
                            .or_default()
                            .push(Item {
                                slot: (ti, pi),
                                topic: t.name.clone(),
                                partition: pd.index,
                                records,
                            });
                    }
                }
                tr.partition_responses.push(pr);
            }
            if let Ok(t) = &resolved {
                tr.name = topic_name(&t.name);
                tr.topic_id = uuid_of(&t.id);
            }
            responses.push(tr);
            topic_metas.push(resolved.ok());
        }
        if acks.is_none() {
            tracing::warn!(acks = req.acks, "produce with invalid acks");
        }
        let acks = acks.unwrap_or(Acks::Leader);
        // Dispatch: one task per owning core, started in request order.
        let mut tasks = Vec::new();
        for (core, items) in per_core {
            let shard = shard.clone();
            tasks.push(glommio::spawn_local(async move {
                let slots: Vec<(usize, usize)> = items.iter().map(|i| i.slot).collect();
                let work: Vec<(String, i32, Bytes)> = items
                    .into_iter()
                    .map(|i| (i.topic, i.partition, i.records))
                    .collect();
                let r = shard
                    .invoke_on(core, move |s| async move {
                        let mut running = Vec::with_capacity(work.len());
                        for (t, p, b) in work {
                            let s = s.clone();
                            running.push(glommio::spawn_local(async move {
                                s.local_replicate(&t, p, b, acks).await
                            }));
                        }
                        let mut out = Vec::with_capacity(running.len());
                        for r in running {
                            out.push(r.await);
                        }
                        out
                    })
                    .await;
                (slots, r)
            }));
        }
        for t in tasks {
            let (slots, r) = t.await;
            let outcomes: Vec<Result<ReplicateOutcome, i16>> = match r {
                Ok(v) => v,
                Err(_) => vec![Err(code::NOT_LEADER_OR_FOLLOWER); slots.len()],
            };
            for ((ti, pi), o) in slots.into_iter().zip(outcomes) {
                let pr = &mut responses[ti].partition_responses[pi];
                match o {
                    Ok(o) => {
                        pr.base_offset = o.base_offset;
                        pr.log_append_time_ms = o.log_append_time_ms;
                        pr.log_start_offset = o.log_start_offset;
                    }
                    Err(e) => pr.error_code = e,
                }
            }
        }
        if req.acks == 0 {
            return Ok(None);
        }
        let mut resp = ProduceResponse::default();
        if ctx.api_version >= LEADER_HINTS_VERSION {
            let snap = shard.metadata();
            let leader_of = leader_lookup(&shard);
            let down = shard.down_brokers();
            let view = ClusterView::this_node(&shard, &snap, &leader_of, &down);
            resp.node_endpoints = add_leader_hints(&view, &mut responses, &topic_metas);
        }
        ctx.respond(&resp.with_responses(responses))
    })
}

/// KIP-951: names the current leader in every NOT_LEADER_OR_FOLLOWER partition of
/// `responses` (`topics[i]` is the topic of `responses[i]`) and returns the leaders' endpoints.
fn add_leader_hints(
    view: &ClusterView<'_>,
    responses: &mut [TopicProduceResponse],
    topics: &[Option<TopicMeta>],
) -> Vec<NodeEndpoint> {
    let mut hints = LeaderHints::default();
    for (tr, t) in responses.iter_mut().zip(topics) {
        let Some(t) = t else { continue };
        for pr in &mut tr.partition_responses {
            if pr.error_code != code::NOT_LEADER_OR_FOLLOWER {
                continue;
            }
            if let Some((leader, epoch)) = hints.hint(view, t, pr.index) {
                pr.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
        }
    }
    hints
        .endpoints()
        .into_iter()
        .map(|e| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(e.id))
                .with_host(StrBytes::from_string(e.host))
                .with_port(e.port)
                .with_rack(e.rack.map(StrBytes::from_string))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::cluster_view::fixture;
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    /// KIP-951: a Produce answer's NOT_LEADER_OR_FOLLOWER partitions name the leader another
    /// broker holds (with its epoch) and the response lists that broker's endpoint once;
    /// other partitions and unknown leaders get nothing; it encodes from v10 (tagged fields)
    /// and is left out below.
    #[test]
    fn not_leader_answers_name_the_current_leader() {
        let (t, snap) = fixture::two_brokers();
        let view = fixture::view_of_broker_0(&snap);
        let part = |index: i32, error_code: i16| {
            PartitionProduceResponse::default()
                .with_index(index)
                .with_error_code(error_code)
        };
        let mut responses = vec![TopicProduceResponse::default()
            .with_name(topic_name("t"))
            .with_partition_responses(vec![
                part(0, code::NOT_LEADER_OR_FOLLOWER),
                part(1, code::NONE),
                part(2, code::NOT_LEADER_OR_FOLLOWER),
            ])];
        let endpoints = add_leader_hints(&view, &mut responses, &[Some(t)]);
        let parts = &responses[0].partition_responses;
        assert_eq!(
            (
                parts[0].current_leader.leader_id.0,
                parts[0].current_leader.leader_epoch
            ),
            (1, 7)
        );
        assert_eq!(parts[1].current_leader, LeaderIdAndEpoch::default());
        assert_eq!(
            parts[2].current_leader,
            LeaderIdAndEpoch::default(),
            "leader of group 12 unknown"
        );
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            (
                endpoints[0].node_id.0,
                endpoints[0].host.as_str(),
                endpoints[0].port
            ),
            (1, "h1", 9001)
        );
        let resp = ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(endpoints);
        for v in LEADER_HINTS_VERSION..=VERSIONS.max {
            resp.encode(&mut BytesMut::new(), v).unwrap();
        }
    }
}
