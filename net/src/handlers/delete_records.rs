//! DeleteRecords (key 21, KIP-107): moves each partition's log start offset up to the given
//! offset (-1: the high watermark) on the partition's owning core (one mesh call per core) and
//! answers the new low watermark once the partition's Raft group committed it (every replica
//! applies it and drops the whole batches below it, so it survives a restart and a leader
//! change; docs/design/replication.md, "DeleteRecords' log start"). Not done within the
//! request's `timeout_ms`: REQUEST_TIMED_OUT. Offsets above the high watermark (or negative other
//! than -1) get OFFSET_OUT_OF_RANGE; unknown partitions UNKNOWN_TOPIC_OR_PARTITION; internal
//! topics (`__consumer_offsets`: group state) INVALID_TOPIC_EXCEPTION, as in Kafka. Clients send
//! it to each partition's leader: a broker holding no replica answers NOT_LEADER_OR_FOLLOWER
//! (the engine answers the same on a follower).

use std::rc::Rc;

use bytes::Bytes;
use freshet_engine::{code, Shard};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::{is_internal_topic, on_owning_cores, StepFuture};
use super::cluster_view::hosts_replica;
use super::{HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::DeleteRecords;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

/// Runs on the owning core: Ok(new log start) or a Kafka error code. `work` carries the
/// offset and the request's timeout (ms, negative treated as 0).
fn delete_step(
    s: Rc<Shard>,
    topic: String,
    partition: i32,
    (offset, timeout_ms): (i64, i32),
) -> StepFuture<Result<i64, i16>> {
    Box::pin(async move {
        let Some(p) = s.partition(&topic, partition) else {
            return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
        };
        let timeout = std::time::Duration::from_millis(timeout_ms.max(0) as u64);
        p.delete_records(offset, timeout).await.map_err(|e| {
            tracing::info!(topic, partition, offset, error = %e, "delete records refused");
            e.kafka_code()
        })
    })
}

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: DeleteRecordsRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let snap = shard.metadata();
        let node_id = shard.config().node_id;
        let mut topics = Vec::with_capacity(req.topics.len());
        // (topic slot, partition slot) of every partition asked of a core.
        let mut slots = Vec::new();
        let mut work = Vec::new();
        for (ti, t) in req.topics.iter().enumerate() {
            let name = t.name.0.as_str();
            let meta = snap.topic(name);
            let mut tr = DeleteRecordsTopicResult::default().with_name(t.name.clone());
            for (pi, p) in t.partitions.iter().enumerate() {
                let mut pr = DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(-1);
                match meta {
                    // Kafka: "Cannot delete records of internal topic" (group state lives there).
                    Some(_) if is_internal_topic(name) => {
                        pr.error_code = code::INVALID_TOPIC_EXCEPTION
                    }
                    Some(m)
                        if p.partition_index >= 0
                            && p.partition_index < m.partitions
                            && !hosts_replica(m, p.partition_index, node_id) =>
                    {
                        pr.error_code = code::NOT_LEADER_OR_FOLLOWER
                    }
                    Some(m) if p.partition_index >= 0 && p.partition_index < m.partitions => {
                        slots.push((ti, pi));
                        work.push((
                            name.to_string(),
                            p.partition_index,
                            (p.offset, req.timeout_ms),
                        ));
                    }
                    _ => pr.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                }
                tr.partitions.push(pr);
            }
            topics.push(tr);
        }
        let results =
            on_owning_cores(&shard, work, delete_step, Err(code::NOT_LEADER_OR_FOLLOWER)).await;
        for ((ti, pi), res) in slots.into_iter().zip(results) {
            let pr: &mut DeleteRecordsPartitionResult = &mut topics[ti].partitions[pi];
            match res {
                Ok(low) => pr.low_watermark = low,
                Err(e) => pr.error_code = e,
            }
        }
        ctx.respond(&DeleteRecordsResponse::default().with_topics(topics))
    })
}
