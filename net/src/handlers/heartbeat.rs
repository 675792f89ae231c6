//! Heartbeat (key 12), v0–v4: keeps a member's session alive (KIP-62); REBALANCE_IN_PROGRESS
//! tells it to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use freshet_engine::group::{self, GroupCall, GroupReply};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::group_common::{opt_string, to_string, GroupCtx};

pub const API_KEY: ApiKey = ApiKey::Heartbeat;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

super::group_common::group_entry!(HeartbeatRequest);

pub async fn serve(ctx: &GroupCtx<'_>, version: i16, req: HeartbeatRequest) -> HeartbeatResponse {
    let call = group::HeartbeatRequest {
        group_id: to_string(&req.group_id),
        generation_id: req.generation_id,
        member_id: to_string(&req.member_id),
        group_instance_id: if version >= 3 {
            opt_string(&req.group_instance_id)
        } else {
            None
        },
    };
    let mut resp = HeartbeatResponse::default();
    resp.error_code = match ctx.call(GroupCall::Heartbeat(call)).await {
        GroupReply::Heartbeat(code) => code,
        other => panic!("Heartbeat got reply {other:?}"),
    };
    resp
}
