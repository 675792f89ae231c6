//! LeaveGroup (key 13), v0–v5: one member (v0–v2) or a batch of members identified by member
//! id and/or group.instance.id (v3+, KIP-345).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use freshet_engine::group::{GroupCall, GroupReply, LeavingMember};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::group_common::{opt_strbytes, opt_string, to_strbytes, to_string, GroupCtx};

pub const API_KEY: ApiKey = ApiKey::LeaveGroup;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

super::group_common::group_entry!(LeaveGroupRequest);

pub async fn serve(ctx: &GroupCtx<'_>, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<LeavingMember> = if version >= 3 {
        req.members
            .iter()
            .map(|m| LeavingMember {
                member_id: to_string(&m.member_id),
                group_instance_id: opt_string(&m.group_instance_id),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: to_string(&req.member_id),
            group_instance_id: None,
        }]
    };
    let mut resp = LeaveGroupResponse::default();
    let call = GroupCall::Leave {
        group_id: to_string(&req.group_id),
        members,
    };
    match ctx.call(call).await {
        GroupReply::Leave(Ok(results)) => {
            if version >= 3 {
                resp.members = results
                    .into_iter()
                    .map(|r| {
                        let mut m = MemberResponse::default();
                        m.member_id = to_strbytes(r.member_id);
                        m.group_instance_id = opt_strbytes(r.group_instance_id);
                        m.error_code = r.error_code;
                        m
                    })
                    .collect();
            } else {
                resp.error_code = results.first().map(|r| r.error_code).unwrap_or(0);
            }
        }
        GroupReply::Leave(Err(e)) => resp.error_code = e.code(),
        other => panic!("LeaveGroup got reply {other:?}"),
    }
    resp
}
