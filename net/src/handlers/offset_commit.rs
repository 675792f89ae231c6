//! OffsetCommit (key 8), v2–v9: validated against the member and generation on the group's
//! core, appended to `__consumer_offsets`, answered once durable. A group-level refusal
//! becomes every partition's error code.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use freshet_engine::group::{CommitPartition, CommitRequest, GroupCall, GroupReply};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::group_common::{opt_string, to_string, GroupCtx};

pub const API_KEY: ApiKey = ApiKey::OffsetCommit;
pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 9 };

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

super::group_common::group_entry!(OffsetCommitRequest);

pub async fn serve(
    ctx: &GroupCtx<'_>,
    version: i16,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    // Partitions of topics that do not exist are refused, as Kafka does, and not stored.
    let exists =
        |topic: &str, p: i32| (ctx.topic_partitions)(topic).is_some_and(|n| p >= 0 && p < n);
    let mut known = Vec::new();
    let mut partitions = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let ok = exists(&t.name, p.partition_index);
            known.push(ok);
            if ok {
                partitions.push(CommitPartition {
                    topic: to_string(&t.name),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: opt_string(&p.committed_metadata),
                });
            }
        }
    }
    let n_known = partitions.len();
    let call = CommitRequest {
        group_id: to_string(&req.group_id),
        generation_id: req.generation_id_or_member_epoch,
        member_id: to_string(&req.member_id),
        group_instance_id: if version >= 7 {
            opt_string(&req.group_instance_id)
        } else {
            None
        },
        partitions,
    };
    let known_codes: Vec<i16> = if n_known == 0 {
        Vec::new()
    } else {
        match ctx.call(GroupCall::Commit(call)).await {
            GroupReply::Commit(Ok(results)) => results.into_iter().map(|(_, _, c)| c).collect(),
            GroupReply::Commit(Err(e)) => vec![e.code(); n_known],
            other => panic!("OffsetCommit got reply {other:?}"),
        }
    };
    let mut known_codes = known_codes.into_iter();
    let codes: Vec<i16> = known
        .into_iter()
        .map(|ok| {
            if ok {
                known_codes.next().expect("one result per known partition")
            } else {
                UNKNOWN_TOPIC_OR_PARTITION
            }
        })
        .collect();
    let mut codes = codes.into_iter();
    let mut resp = OffsetCommitResponse::default();
    resp.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut rt = OffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = OffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = codes.next().expect("one result per requested partition");
                    rp
                })
                .collect();
            rt
        })
        .collect();
    resp
}
