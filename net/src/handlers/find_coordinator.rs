//! FindCoordinator (key 10), v0–v4: every group's coordinator is this broker (the owning core
//! is reached internally); v4 answers each key of the batch (KIP-699).

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::group_common::{to_strbytes, GroupCtx};

pub const API_KEY: ApiKey = ApiKey::FindCoordinator;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

super::group_common::group_entry!(FindCoordinatorRequest);

const INVALID_REQUEST: i16 = 42;
const GROUP_KEY_TYPE: i8 = 0;
const TRANSACTION_KEY_TYPE: i8 = 1;

pub async fn serve(
    ctx: &GroupCtx<'_>,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let key_ok = matches!(req.key_type, GROUP_KEY_TYPE | TRANSACTION_KEY_TYPE);
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let mut c = Coordinator::default();
                c.key = k.clone();
                if key_ok {
                    c.node_id = BrokerId(ctx.node_id);
                    c.host = to_strbytes(ctx.host.to_string());
                    c.port = ctx.port;
                } else {
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                    c.error_code = INVALID_REQUEST;
                }
                c
            })
            .collect();
    } else if key_ok {
        resp.node_id = BrokerId(ctx.node_id);
        resp.host = to_strbytes(ctx.host.to_string());
        resp.port = ctx.port;
    } else {
        resp.error_code = INVALID_REQUEST;
        resp.node_id = BrokerId(-1);
        resp.port = -1;
    }
    resp
}
