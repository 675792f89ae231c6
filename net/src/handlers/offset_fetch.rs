//! OffsetFetch (key 9), v1–v9: committed offsets of one group (v1–v7) or of several groups
//! in one request (v8+, KIP-709); no topic list means every committed partition (v2+).
//! Partitions without a commit read offset -1.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use freshet_engine::group::{FetchedOffset, GroupCall, GroupReply};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::group_common::{to_strbytes, to_string, GroupCtx};

pub const API_KEY: ApiKey = ApiKey::OffsetFetch;
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 9 };

super::group_common::group_entry!(OffsetFetchRequest);

/// Fetches one group's offsets: Ok(per partition) or a group-level error code.
async fn fetch_group(
    ctx: &GroupCtx<'_>,
    group_id: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<FetchedOffset>, i16> {
    match ctx.call(GroupCall::Fetch { group_id, topics }).await {
        GroupReply::Fetch(r) => r.map_err(|e| e.code()),
        other => panic!("OffsetFetch got reply {other:?}"),
    }
}

/// Groups fetched offsets by topic, keeping first-seen topic order.
fn by_topic(v: Vec<FetchedOffset>) -> Vec<(String, Vec<FetchedOffset>)> {
    let mut out: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for o in v {
        match out.iter_mut().find(|(t, _)| *t == o.topic) {
            Some((_, ps)) => ps.push(o),
            None => out.push((o.topic.clone(), vec![o])),
        }
    }
    out
}

/// Per-partition answers for a group-level error before v2 (no group error field).
fn error_partitions(topics: &Option<Vec<(String, Vec<i32>)>>, code: i16) -> Vec<FetchedOffset> {
    topics
        .iter()
        .flatten()
        .flat_map(|(t, ps)| {
            ps.iter().map(move |p| FetchedOffset {
                topic: t.clone(),
                partition: *p,
                offset: -1,
                leader_epoch: -1,
                metadata: Some(String::new()),
                error_code: code,
            })
        })
        .collect()
}

pub async fn serve(
    ctx: &GroupCtx<'_>,
    version: i16,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version >= 8 {
        for g in &req.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (to_string(&t.name), t.partition_indexes.clone()))
                    .collect::<Vec<_>>()
            });
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            match fetch_group(ctx, to_string(&g.group_id), topics).await {
                Ok(v) => {
                    rg.topics = by_topic(v)
                        .into_iter()
                        .map(|(t, ps)| {
                            let mut rt = OffsetFetchResponseTopics::default();
                            rt.name = TopicName(to_strbytes(t));
                            rt.partitions = ps
                                .into_iter()
                                .map(|o| {
                                    let mut rp = OffsetFetchResponsePartitions::default();
                                    rp.partition_index = o.partition;
                                    rp.committed_offset = o.offset;
                                    rp.committed_leader_epoch = o.leader_epoch;
                                    rp.metadata = o.metadata.map(to_strbytes);
                                    rp.error_code = o.error_code;
                                    rp
                                })
                                .collect();
                            rt
                        })
                        .collect();
                }
                Err(code) => rg.error_code = code,
            }
            resp.groups.push(rg);
        }
        return resp;
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (to_string(&t.name), t.partition_indexes.clone()))
            .collect::<Vec<_>>()
    });
    let result = fetch_group(ctx, to_string(&req.group_id), topics.clone()).await;
    let offsets = match result {
        Ok(v) => v,
        Err(code) => {
            if version >= 2 {
                resp.error_code = code;
            }
            error_partitions(&topics, code)
        }
    };
    resp.topics = by_topic(offsets)
        .into_iter()
        .map(|(t, ps)| {
            let mut rt = OffsetFetchResponseTopic::default();
            rt.name = TopicName(to_strbytes(t));
            rt.partitions = ps
                .into_iter()
                .map(|o| {
                    let mut rp = OffsetFetchResponsePartition::default();
                    rp.partition_index = o.partition;
                    rp.committed_offset = o.offset;
                    rp.committed_leader_epoch = if version >= 5 { o.leader_epoch } else { -1 };
                    rp.metadata = o.metadata.map(to_strbytes);
                    rp.error_code = o.error_code;
                    rp
                })
                .collect();
            rt
        })
        .collect();
    resp
}
