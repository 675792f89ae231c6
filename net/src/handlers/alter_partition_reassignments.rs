//! AlterPartitionReassignments (key 45, KIP-455; v1 KIP-860): starts, replaces or cancels
//! (`replicas` null) the reassignment of each listed partition through the controller
//! (`Shard::alter_reassignment`); the partition's leader then moves the replicas
//! (engine/src/reassign.rs) and the reassignment shows in ListPartitionReassignments until it
//! completes. Per-partition errors: unknown topic or partition (UNKNOWN_TOPIC_OR_PARTITION),
//! an empty list, a repeated or unregistered broker (INVALID_REPLICA_ASSIGNMENT), a changed
//! replica count when v1's `allow_replication_factor_change` is false
//! (INVALID_REPLICATION_FACTOR), cancelling nothing (NO_REASSIGNMENT_IN_PROGRESS), the same
//! partition twice in one request (INVALID_REQUEST). The controller checks again against its
//! own state; its answer is what the client gets.

use std::collections::HashSet;

use bytes::Bytes;
use freshet_engine::code;
use freshet_engine::metadata::MetadataSnapshot;
use kafka_protocol::messages::alter_partition_reassignments_request::ReassignablePartition;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey,
};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::sb;
use super::placement_checks::check_replica_list;
use super::{topic_name, HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::AlterPartitionReassignments;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

/// Checks one partition's request against this node's metadata; `Ok` is the target to hand
/// to the controller (`None` = cancel).
pub(crate) fn check(
    snap: &MetadataSnapshot,
    topic: &str,
    p: &ReassignablePartition,
    allow_replication_factor_change: bool,
) -> Result<Option<Vec<i32>>, (i16, String)> {
    let unknown = || {
        (
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("Partition {topic}-{} does not exist.", p.partition_index),
        )
    };
    let a = snap
        .topic(topic)
        .and_then(|t| t.assignment(p.partition_index))
        .ok_or_else(unknown)?;
    let Some(replicas) = &p.replicas else {
        if a.target.is_none() {
            return Err((
                code::NO_REASSIGNMENT_IN_PROGRESS,
                format!(
                    "No reassignment of {topic}-{} is in progress.",
                    p.partition_index
                ),
            ));
        }
        return Ok(None);
    };
    let target: Vec<i32> = replicas.iter().map(|b| b.0).collect();
    let brokers: Vec<i32> = snap.brokers.keys().copied().collect();
    check_replica_list(p.partition_index, &target, &brokers, None)?;
    if !allow_replication_factor_change && target.len() != a.replicas.len() {
        return Err((
            code::INVALID_REPLICATION_FACTOR,
            format!(
                "The replication factor is changed from {} to {} but allowReplicationFactorChange is false.",
                a.replicas.len(),
                target.len()
            ),
        ));
    }
    Ok(Some(target))
}

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: AlterPartitionReassignmentsRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        // v0 has no flag: changing the replica count is allowed (as before KIP-860).
        let allow_rf_change = ctx.api_version < 1 || req.allow_replication_factor_change;
        let mut seen = HashSet::new();
        let mut responses = Vec::with_capacity(req.topics.len());
        for t in &req.topics {
            let name = t.name.0.as_str().to_string();
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let outcome = if !seen.insert((name.clone(), p.partition_index)) {
                    Err((
                        code::INVALID_REQUEST,
                        format!(
                            "Partition {name}-{} is named more than once.",
                            p.partition_index
                        ),
                    ))
                } else {
                    match check(&shard.metadata(), &name, p, allow_rf_change) {
                        Err(e) => Err(e),
                        Ok(target) => shard
                            .alter_reassignment(name.clone(), p.partition_index, target.clone())
                            .await
                            .map(|rev| {
                                tracing::info!(topic = %name, partition = p.partition_index, ?target, revision = rev, "partition reassignment altered");
                            })
                            .map_err(|e| (e.kafka_code(), e.to_string())),
                    }
                };
                let mut r = ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index);
                if let Err((code, msg)) = outcome {
                    r.error_code = code;
                    r.error_message = Some(sb(msg));
                }
                parts.push(r);
            }
            responses.push(
                ReassignableTopicResponse::default()
                    .with_name(topic_name(&name))
                    .with_partitions(parts),
            );
        }
        ctx.respond(
            &AlterPartitionReassignmentsResponse::default()
                .with_allow_replication_factor_change(allow_rf_change)
                .with_responses(responses),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::reassign_test_fixture::snapshot_with_one_partition_moving;
    use super::*;
    use kafka_protocol::messages::BrokerId;

    fn part(p: i32, replicas: Option<&[i32]>) -> ReassignablePartition {
        ReassignablePartition::default()
            .with_partition_index(p)
            .with_replicas(replicas.map(|r| r.iter().map(|b| BrokerId(*b)).collect()))
    }

    /// KIP-455 / KIP-860: each bad partition request gets Kafka's error code, and a good one
    /// the target (or `None` to cancel) for the controller.
    #[test]
    fn reassignment_requests_are_checked_with_kafkas_codes() {
        let s = snapshot_with_one_partition_moving();
        let code_of = |topic: &str, p: ReassignablePartition, allow: bool| {
            check(&s, topic, &p, allow)
                .map(|_| 0)
                .unwrap_or_else(|e| e.0)
        };
        assert_eq!(
            check(&s, "t", &part(0, Some(&[3, 1, 2])), false),
            Ok(Some(vec![3, 1, 2]))
        );
        assert_eq!(check(&s, "t", &part(1, None), true), Ok(None));
        assert_eq!(
            code_of("nope", part(0, Some(&[1])), true),
            code::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            code_of("t", part(2, Some(&[1])), true),
            code::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            code_of("t", part(-1, Some(&[1])), true),
            code::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            code_of("t", part(0, None), true),
            code::NO_REASSIGNMENT_IN_PROGRESS
        );
        assert_eq!(
            code_of("t", part(0, Some(&[])), true),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code_of("t", part(0, Some(&[1, 1, 2])), true),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code_of("t", part(0, Some(&[7, 1, 2])), true),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code_of("t", part(0, Some(&[3, 1])), false),
            code::INVALID_REPLICATION_FACTOR
        );
        assert_eq!(code_of("t", part(0, Some(&[3, 1])), true), code::NONE);
    }
}
