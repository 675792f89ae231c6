//! OffsetDelete (key 47), v0 (KIP-496): deletes committed offsets of partitions the group does
//! not consume (GROUP_SUBSCRIBED_TO_TOPIC for the others).

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use freshet_engine::group::{GroupCall, GroupReply};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::group_common::{to_string, GroupCtx};

pub const API_KEY: ApiKey = ApiKey::OffsetDelete;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

super::group_common::group_entry!(OffsetDeleteRequest);

pub async fn serve(
    ctx: &GroupCtx<'_>,
    _version: i16,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (to_string(&t.name), p.partition_index))
        })
        .collect();
    let call = GroupCall::DeleteOffsets {
        group_id: to_string(&req.group_id),
        partitions,
    };
    let mut resp = OffsetDeleteResponse::default();
    let codes: Vec<i16> = match ctx.call(call).await {
        GroupReply::DeleteOffsets(Ok(v)) => v.into_iter().map(|(_, _, c)| c).collect(),
        GroupReply::DeleteOffsets(Err(e)) => {
            resp.error_code = e.code();
            return resp;
        }
        other => panic!("OffsetDelete got reply {other:?}"),
    };
    let mut codes = codes.into_iter();
    resp.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut rt = OffsetDeleteResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = OffsetDeleteResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = codes.next().expect("one result per partition");
                    rp
                })
                .collect();
            rt
        })
        .collect();
    resp
}
