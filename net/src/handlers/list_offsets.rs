//! ListOffsets (key 2): earliest (-2), latest (-1, the high watermark), max timestamp (-3) and
//! by timestamp, asked of each partition's owning core (one mesh call per core). A partition
//! this broker holds no replica of is NOT_LEADER_OR_FOLLOWER (the engine answers the same on a
//! follower); v4+ `current_leader_epoch` is checked first on the owning core (KIP-320:
//! FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH, -1 unchecked).

use std::collections::BTreeMap;

use bytes::Bytes;
use freshet_engine::code;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::protocol::VersionRange;

use super::cluster_view::hosts_replica;
use super::offset_for_leader_epoch::fencing_error;
use super::{HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::ListOffsets;
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 10 };

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: ListOffsetsRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let snap = shard.metadata();
        let node_id = shard.config().node_id;
        let mut topics = Vec::with_capacity(req.topics.len());
        // Per owning core: (response slot, topic, partition, timestamp, current leader epoch).
        type Ask = ((usize, usize), String, i32, i64, i32);
        let mut per_core: BTreeMap<usize, Vec<Ask>> = BTreeMap::new();
        for (ti, t) in req.topics.into_iter().enumerate() {
            let name = t.name.0.as_str().to_string();
            let meta = snap.topic(&name);
            let mut tr = ListOffsetsTopicResponse::default().with_name(t.name.clone());
            for (pi, p) in t.partitions.into_iter().enumerate() {
                let mut pr = ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_leader_epoch(-1);
                let current_epoch = if ctx.api_version >= 4 {
                    p.current_leader_epoch
                } else {
                    -1
                };
                match meta {
                    Some(m) if p.partition_index >= 0 && p.partition_index < m.partitions => {
                        if !hosts_replica(m, p.partition_index, node_id) {
                            pr.error_code = code::NOT_LEADER_OR_FOLLOWER;
                        } else {
                            per_core
                                .entry(shard.owner_of(&name, p.partition_index))
                                .or_default()
                                .push((
                                    (ti, pi),
                                    name.clone(),
                                    p.partition_index,
                                    p.timestamp,
                                    current_epoch,
                                ));
                        }
                    }
                    _ => pr.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                }
                tr.partitions.push(pr);
            }
            topics.push(tr);
        }
        let mut tasks = Vec::new();
        for (core, items) in per_core {
            let shard = shard.clone();
            tasks.push(glommio::spawn_local(async move {
                let slots: Vec<(usize, usize)> = items.iter().map(|i| i.0).collect();
                let work: Vec<(String, i32, i64, i32)> =
                    items.into_iter().map(|i| (i.1, i.2, i.3, i.4)).collect();
                let r = shard
                    .invoke_on(core, move |s| async move {
                        let mut out = Vec::with_capacity(work.len());
                        for (t, p, ts, current_epoch) in work {
                            let fenced = s
                                .partition(&t, p)
                                .map(|part| fencing_error(current_epoch, part.leader_epoch()))
                                .unwrap_or(code::NONE);
                            if fenced != code::NONE {
                                out.push(Err(fenced));
                                continue;
                            }
                            out.push(s.local_list_offset(&t, p, ts).await);
                        }
                        out
                    })
                    .await;
                (slots, r)
            }));
        }
        for t in tasks {
            let (slots, r) = t.await;
            let n = slots.len();
            let results = r.unwrap_or_else(|_| vec![Err(code::NOT_LEADER_OR_FOLLOWER); n]);
            for ((ti, pi), res) in slots.into_iter().zip(results) {
                let pr = &mut topics[ti].partitions[pi];
                match res {
                    Ok((ts, off, epoch)) => {
                        pr.timestamp = ts;
                        pr.offset = off;
                        // leader_epoch exists from v4 on.
                        if ctx.api_version >= 4 && off >= 0 {
                            pr.leader_epoch = epoch;
                        }
                    }
                    Err(e) => pr.error_code = e,
                }
            }
        }
        ctx.respond(&ListOffsetsResponse::default().with_topics(topics))
    })
}
