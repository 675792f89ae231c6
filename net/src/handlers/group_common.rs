//! Shared plumbing of the consumer-group handlers (FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups,
//! OffsetDelete): the context they run with and string conversions.
//!
//! Per connection task (per core). Group work itself runs on the core owning the group, reached
//! through the [`GroupRouter`] (see `engine::group::call`).

use freshet_engine::group::{GroupCall, GroupReply, GroupRouter};

use super::RequestContext;
use kafka_protocol::protocol::StrBytes;

/// What a group handler needs from its connection and core.
pub struct GroupCtx<'a> {
    /// Runs group calls on the owning core.
    pub router: &'a dyn GroupRouter,
    /// The request header's client id.
    pub client_id: &'a str,
    /// The peer's IP address, reported in DescribeGroups.
    pub client_host: &'a str,
    /// This broker's id and advertised address (FindCoordinator).
    pub node_id: i32,
    pub host: &'a str,
    pub port: i32,
    /// Partition count of a topic (`None`: no such topic), from this core's metadata.
    pub topic_partitions: &'a dyn Fn(&str) -> Option<i32>,
}

impl<'a> GroupCtx<'a> {
    /// The context of one request on this core.
    pub fn new(
        ctx: &'a RequestContext,
        router: &'a dyn GroupRouter,
        host: &'a str,
        port: i32,
        topic_partitions: &'a dyn Fn(&str) -> Option<i32>,
    ) -> Self {
        GroupCtx {
            router,
            client_id: ctx.client_id.as_deref().unwrap_or(""),
            client_host: &ctx.client_host,
            node_id: ctx.shard().config().node_id,
            host,
            port,
            topic_partitions,
        }
    }

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

/// Defines `handle(ctx, body)` for a group API file whose logic is
/// `serve(&GroupCtx, version, request) -> response`.
macro_rules! group_entry {
    ($req:ty) => {
        pub fn handle(ctx: super::RequestContext, body: bytes::Bytes) -> super::HandlerFuture {
            Box::pin(async move {
                let req: $req = ctx.decode(body)?;
                let router = freshet_engine::group::wire::ShardRouter::new(ctx.shard().clone());
                let (host, port) =
                    super::metadata::split_host_port(ctx.shard().config().advertised_addr());
                let shard = ctx.shard().clone();
                let lookup = move |t: &str| shard.metadata().topic(t).map(|m| m.partitions);
                let gctx = super::group_common::GroupCtx::new(&ctx, &router, &host, port, &lookup);
                let resp = serve(&gctx, ctx.api_version, req).await;
                ctx.respond(&resp)
            })
        }
    };
}
pub(crate) use group_entry;
