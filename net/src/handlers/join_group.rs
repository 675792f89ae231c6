//! JoinGroup (key 11), v0–v9: classic rebalance protocol, KIP-394 member ids (v4+), static
//! membership (v5+), skip_assignment (v9, KIP-814). The call runs on the group's core and may
//! wait there until the join phase ends.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use freshet_engine::group::{GroupCall, GroupReply, JoinRequest};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::group_common::{opt_strbytes, opt_string, to_strbytes, to_string, GroupCtx};

pub const API_KEY: ApiKey = ApiKey::JoinGroup;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 9 };

super::group_common::group_entry!(JoinGroupRequest);

pub async fn serve(ctx: &GroupCtx<'_>, version: i16, req: JoinGroupRequest) -> JoinGroupResponse {
    let call = JoinRequest {
        group_id: to_string(&req.group_id),
        member_id: to_string(&req.member_id),
        group_instance_id: if version >= 5 {
            opt_string(&req.group_instance_id)
        } else {
            None
        },
        client_id: ctx.client_id.to_string(),
        client_host: ctx.client_host.to_string(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: to_string(&req.protocol_type),
        protocols: req
            .protocols
            .iter()
            .map(|p| (to_string(&p.name), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let r = match ctx.call(GroupCall::Join(call)).await {
        GroupReply::Join(r) => r,
        other => panic!("JoinGroup got reply {other:?}"),
    };
    let mut resp = JoinGroupResponse::default();
    resp.error_code = r.error_code;
    resp.generation_id = r.generation_id;
    if version >= 7 {
        resp.protocol_type = opt_strbytes(r.protocol_type);
    }
    // Non-nullable before v7: an absent protocol is "".
    resp.protocol_name = match (r.protocol_name, version >= 7) {
        (Some(p), _) => Some(to_strbytes(p)),
        (None, true) => None,
        (None, false) => Some(Default::default()),
    };
    resp.leader = to_strbytes(r.leader);
    resp.skip_assignment = version >= 9 && r.skip_assignment;
    resp.member_id = to_strbytes(r.member_id);
    resp.members = r
        .members
        .into_iter()
        .map(|m| {
            let mut jm = JoinGroupResponseMember::default();
            jm.member_id = to_strbytes(m.member_id);
            if version >= 5 {
                jm.group_instance_id = opt_strbytes(m.group_instance_id);
            }
            jm.metadata = m.metadata;
            jm
        })
        .collect();
    resp
}
