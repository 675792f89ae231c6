//! OffsetForLeaderEpoch (key 23; KIP-101, KIP-279, KIP-320): for each partition, the largest
//! leader epoch <= the requested one and the offset where it ends, from the partition's
//! leader-epoch cache on its owning core (one mesh call per core). `current_leader_epoch`
//! (KIP-320 fencing) must match the partition's epoch: a newer one is UNKNOWN_LEADER_EPOCH, an
//! older one FENCED_LEADER_EPOCH; -1 skips the check. A partition this broker holds no replica
//! of is NOT_LEADER_OR_FOLLOWER (the engine answers the same on a follower).

use std::rc::Rc;

use bytes::Bytes;
use freshet_engine::{code, Shard};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::{on_owning_cores, StepFuture};
use super::cluster_view::hosts_replica;
use super::{HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::OffsetForLeaderEpoch;
pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 4 };

/// "No current epoch given": skip the fencing check.
const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// KIP-320: how a request's `current_leader_epoch` compares with the partition's epoch.
pub(crate) fn fencing_error(current_leader_epoch: i32, partition_epoch: i32) -> i16 {
    if current_leader_epoch == NO_PARTITION_LEADER_EPOCH {
        code::NONE
    } else if current_leader_epoch > partition_epoch {
        code::UNKNOWN_LEADER_EPOCH
    } else if current_leader_epoch < partition_epoch {
        code::FENCED_LEADER_EPOCH
    } else {
        code::NONE
    }
}

/// Runs on the owning core: Ok((epoch, end offset)) or a Kafka error code (the engine checks
/// leadership first, then the KIP-320 epoch by the rules of `fencing_error`).
fn epoch_step(
    s: Rc<Shard>,
    topic: String,
    partition: i32,
    (current_leader_epoch, leader_epoch): (i32, i32),
) -> StepFuture<Result<(i32, i64), i16>> {
    Box::pin(async move {
        s.local_end_offset_for_epoch(&topic, partition, current_leader_epoch, leader_epoch)
    })
}

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: OffsetForLeaderEpochRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let snap = shard.metadata();
        let node_id = shard.config().node_id;
        let mut topics = Vec::with_capacity(req.topics.len());
        let mut slots = Vec::new();
        let mut work = Vec::new();
        for (ti, t) in req.topics.iter().enumerate() {
            let name = t.topic.0.as_str();
            let meta = snap.topic(name);
            let mut tr = OffsetForLeaderTopicResult::default().with_topic(t.topic.clone());
            for (pi, p) in t.partitions.iter().enumerate() {
                let mut pr = EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
                match meta {
                    Some(m) if p.partition >= 0 && p.partition < m.partitions => {
                        if !hosts_replica(m, p.partition, node_id) {
                            pr.error_code = code::NOT_LEADER_OR_FOLLOWER;
                            tr.partitions.push(pr);
                            continue;
                        }
                        slots.push((ti, pi));
                        work.push((
                            name.to_string(),
                            p.partition,
                            (p.current_leader_epoch, p.leader_epoch),
                        ));
                    }
                    _ => pr.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                }
                tr.partitions.push(pr);
            }
            topics.push(tr);
        }
        let results =
            on_owning_cores(&shard, work, epoch_step, Err(code::NOT_LEADER_OR_FOLLOWER)).await;
        for ((ti, pi), res) in slots.into_iter().zip(results) {
            let pr: &mut EpochEndOffset = &mut topics[ti].partitions[pi];
            match res {
                Ok((epoch, end)) => {
                    pr.leader_epoch = epoch;
                    pr.end_offset = end;
                }
                Err(e) => pr.error_code = e,
            }
        }
        ctx.respond(&OffsetForLeaderEpochResponse::default().with_topics(topics))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KIP-320: a client's current epoch newer than the leader's is UNKNOWN_LEADER_EPOCH (the
    /// broker is behind), older is FENCED_LEADER_EPOCH (the client is behind), -1 skips.
    #[test]
    fn current_leader_epoch_fencing() {
        assert_eq!(fencing_error(-1, 0), code::NONE);
        assert_eq!(fencing_error(0, 0), code::NONE);
        assert_eq!(fencing_error(1, 0), code::UNKNOWN_LEADER_EPOCH);
        assert_eq!(fencing_error(3, 5), code::FENCED_LEADER_EPOCH);
    }
}
