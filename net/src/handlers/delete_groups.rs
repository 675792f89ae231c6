//! DeleteGroups (key 42), v0–v2: removes empty groups with their committed offsets
//! (tombstones in `__consumer_offsets`); NON_EMPTY_GROUP / GROUP_ID_NOT_FOUND otherwise.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use freshet_engine::group::{GroupCall, GroupReply};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::group_common::{to_string, GroupCtx};

pub const API_KEY: ApiKey = ApiKey::DeleteGroups;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

super::group_common::group_entry!(DeleteGroupsRequest);

pub async fn serve(
    ctx: &GroupCtx<'_>,
    _version: i16,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for gid in &req.groups_names {
        let call = GroupCall::DeleteGroup {
            group_id: to_string(gid),
        };
        let mut r = DeletableGroupResult::default();
        r.group_id = gid.clone();
        r.error_code = match ctx.call(call).await {
            GroupReply::DeleteGroup(code) => code,
            other => panic!("DeleteGroups got reply {other:?}"),
        };
        resp.results.push(r);
    }
    resp
}
