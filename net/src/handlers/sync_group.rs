//! SyncGroup (key 14), v0–v5: followers wait for the leader's assignment; protocol type/name
//! are checked from v5.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use freshet_engine::group::{GroupCall, GroupReply, SyncRequest};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::group_common::{opt_strbytes, opt_string, to_string, GroupCtx};

pub const API_KEY: ApiKey = ApiKey::SyncGroup;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

super::group_common::group_entry!(SyncGroupRequest);

pub async fn serve(ctx: &GroupCtx<'_>, version: i16, req: SyncGroupRequest) -> SyncGroupResponse {
    let call = SyncRequest {
        group_id: to_string(&req.group_id),
        generation_id: req.generation_id,
        member_id: to_string(&req.member_id),
        group_instance_id: if version >= 3 {
            opt_string(&req.group_instance_id)
        } else {
            None
        },
        protocol_type: if version >= 5 {
            opt_string(&req.protocol_type)
        } else {
            None
        },
        protocol_name: if version >= 5 {
            opt_string(&req.protocol_name)
        } else {
            None
        },
        assignments: req
            .assignments
            .iter()
            .map(|a| (to_string(&a.member_id), a.assignment.clone()))
            .collect(),
    };
    let r = match ctx.call(GroupCall::Sync(call)).await {
        GroupReply::Sync(r) => r,
        other => panic!("SyncGroup got reply {other:?}"),
    };
    let mut resp = SyncGroupResponse::default();
    resp.error_code = r.error_code;
    if version >= 5 {
        resp.protocol_type = opt_strbytes(r.protocol_type);
        resp.protocol_name = opt_strbytes(r.protocol_name);
    }
    resp.assignment = r.assignment;
    resp
}
