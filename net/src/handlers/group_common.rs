//! Shared plumbing of the consumer-group handlers (FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups,
//! OffsetDelete): the context they run with and string conversions.
//!
//! Per connection task (per core). Group work itself runs on the core owning the group, reached
//! through the [`GroupRouter`] (see `engine::group::call`).

use freshet_engine::group::{GroupCall, GroupReply, GroupRouter};
use kafka_protocol::protocol::StrBytes;

/// What a group handler needs from its connection and core.
pub struct GroupCtx<'a> {
    /// Runs group calls on the owning core.
    pub router: &'a dyn GroupRouter,
    /// The request header's client id.
    pub client_id: &'a str,
    /// The peer as Kafka reports it in DescribeGroups (`/127.0.0.1`).
    pub client_host: &'a str,
    /// This broker's id and advertised address (FindCoordinator).
    pub node_id: i32,
    pub host: &'a str,
    pub port: i32,
}

impl GroupCtx<'_> {
    /// Runs `call` on the core owning its group.
    pub async fn call(&self, call: GroupCall) -> GroupReply {
        let core = match call.group_id() {
            Some(g) => self.router.core_of_group(g),
            None => 0,
        };
        self.router.call(core, call).await
    }
}

pub fn to_string(s: &StrBytes) -> String {
    s.as_str().to_string()
}

pub fn to_strbytes(s: String) -> StrBytes {
    StrBytes::from_string(s)
}

pub fn opt_string(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(to_string)
}

pub fn opt_strbytes(s: Option<String>) -> Option<StrBytes> {
    s.map(to_strbytes)
}
