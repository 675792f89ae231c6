//! ListGroups (key 16), v0–v5: every core's groups, merged; states filter from v4 (KIP-518),
//! types filter from v5 (all Freshet groups are "classic").

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use freshet_engine::group::{GroupCall, GroupReply};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::group_common::{to_strbytes, to_string, GroupCtx};

pub const API_KEY: ApiKey = ApiKey::ListGroups;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

super::group_common::group_entry!(ListGroupsRequest);

pub async fn serve(ctx: &GroupCtx<'_>, version: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = if version >= 4 {
        req.states_filter.iter().map(to_string).collect()
    } else {
        Vec::new()
    };
    let types: Vec<String> = if version >= 5 {
        req.types_filter.iter().map(to_string).collect()
    } else {
        Vec::new()
    };
    let mut resp = ListGroupsResponse::default();
    for core in 0..ctx.router.cores() {
        let call = GroupCall::List {
            states: states.clone(),
            types: types.clone(),
        };
        match ctx.router.call(core, call).await {
            GroupReply::List(code, groups) => {
                if resp.error_code == 0 {
                    resp.error_code = code;
                }
                for g in groups {
                    let mut lg = ListedGroup::default();
                    lg.group_id = GroupId(to_strbytes(g.group_id));
                    lg.protocol_type = to_strbytes(g.protocol_type);
                    if version >= 4 {
                        lg.group_state = to_strbytes(g.state.to_string());
                    }
                    if version >= 5 {
                        lg.group_type = to_strbytes("classic".to_string());
                    }
                    resp.groups.push(lg);
                }
            }
            other => panic!("ListGroups got reply {other:?}"),
        }
    }
    resp
}
