//! ListPartitionReassignments (key 46, KIP-455): the ongoing reassignments this node's
//! metadata knows, per partition the full replica list (target first, then the replicas being
//! removed), the replicas being added and those being removed. `topics` null lists every
//! ongoing reassignment; listed topics or partitions that do not exist or are not being
//! reassigned are left out (as Kafka does).

use bytes::Bytes;
use freshet_engine::metadata::MetadataSnapshot;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::VersionRange;

use super::{topic_name, HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::ListPartitionReassignments;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

/// The ongoing reassignments of `snap`, for `asked` (topic, partitions) or all (`None`).
pub(crate) fn ongoing(
    snap: &MetadataSnapshot,
    asked: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<OngoingTopicReassignment> {
    let asked: Vec<(String, Option<Vec<i32>>)> = match asked {
        Some(a) => a.into_iter().map(|(t, ps)| (t, Some(ps))).collect(),
        None => snap.topics.keys().map(|t| (t.clone(), None)).collect(),
    };
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let mut out = Vec::new();
    for (name, parts) in asked {
        let Some(t) = snap.topic(&name) else { continue };
        let indexes: Vec<i32> = parts.unwrap_or_else(|| (0..t.partitions).collect());
        let partitions: Vec<OngoingPartitionReassignment> = indexes
            .into_iter()
            .filter_map(|p| t.assignment(p).map(|a| (p, a)))
            .filter(|(_, a)| a.target.is_some())
            .map(|(p, a)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(p)
                    .with_replicas(ids(a.all_replicas()))
                    .with_adding_replicas(ids(a.adding()))
                    .with_removing_replicas(ids(a.removing()))
            })
            .collect();
        if !partitions.is_empty() {
            out.push(
                OngoingTopicReassignment::default()
                    .with_name(topic_name(&name))
                    .with_partitions(partitions),
            );
        }
    }
    out
}

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: ListPartitionReassignmentsRequest = ctx.decode(body)?;
        let asked = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes))
                .collect()
        });
        let topics = ongoing(&ctx.shard().metadata(), asked);
        ctx.respond(&ListPartitionReassignmentsResponse::default().with_topics(topics))
    })
}

#[cfg(test)]
mod tests {
    use super::super::reassign_test_fixture::snapshot_with_one_partition_moving;
    use super::*;

    /// KIP-455: only partitions with a target are listed, with Kafka's replica sets (all =
    /// target then removing; adding = target − replicas; removing = replicas − target).
    #[test]
    fn only_ongoing_reassignments_are_listed_with_adding_and_removing_sets() {
        let s = snapshot_with_one_partition_moving();
        let all = ongoing(&s, None);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].partitions.len(), 1);
        let p = &all[0].partitions[0];
        assert_eq!(p.partition_index, 1);
        let b = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
        assert_eq!(b(&p.replicas), vec![3, 1, 2, 0]);
        assert_eq!(b(&p.adding_replicas), vec![3]);
        assert_eq!(b(&p.removing_replicas), vec![0]);
        // Asked by name: unknown topics and partitions, and idle ones, are left out.
        assert!(ongoing(&s, Some(vec![("t".into(), vec![0, 5])])).is_empty());
        assert!(ongoing(&s, Some(vec![("x".into(), vec![1])])).is_empty());
        assert_eq!(ongoing(&s, Some(vec![("t".into(), vec![1])])).len(), 1);
    }
}
