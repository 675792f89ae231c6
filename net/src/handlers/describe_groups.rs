//! DescribeGroups (key 15), v0–v6: state, protocol and members (with subscription metadata and
//! assignment when Stable) of each group, each asked on its own core. An unknown group is
//! "Dead" with no members; from v6 it also carries GROUP_ID_NOT_FOUND.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use freshet_engine::group::{GroupCall, GroupReply};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::group_common::{opt_strbytes, to_strbytes, to_string, GroupCtx};

pub const API_KEY: ApiKey = ApiKey::DescribeGroups;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 6 };

super::group_common::group_entry!(DescribeGroupsRequest);

const GROUP_ID_NOT_FOUND: i16 = 69;

pub async fn serve(
    ctx: &GroupCtx<'_>,
    version: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for gid in &req.groups {
        let mut dg = DescribedGroup::default();
        dg.group_id = gid.clone();
        let call = GroupCall::Describe {
            group_id: to_string(gid),
        };
        match ctx.call(call).await {
            GroupReply::Describe(Ok(d)) => {
                dg.error_code = d.error_code;
                if version >= 6 && d.state == "Dead" && d.members.is_empty() {
                    dg.error_code = GROUP_ID_NOT_FOUND;
                }
                dg.group_state = to_strbytes(d.state.to_string());
                dg.protocol_type = to_strbytes(d.protocol_type);
                dg.protocol_data = to_strbytes(d.protocol_name);
                dg.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = to_strbytes(m.member_id);
                        if version >= 4 {
                            dm.group_instance_id = opt_strbytes(m.group_instance_id);
                        }
                        dm.client_id = to_strbytes(m.client_id);
                        dm.client_host = to_strbytes(m.client_host);
                        dm.member_metadata = m.metadata;
                        dm.member_assignment = m.assignment;
                        dm
                    })
                    .collect();
            }
            GroupReply::Describe(Err(e)) => {
                dg.error_code = e.code();
                dg.group_state = to_strbytes(String::new());
            }
            other => panic!("DescribeGroups got reply {other:?}"),
        }
        resp.groups.push(dg);
    }
    resp
}
