//! Shared plumbing of the consumer-group handlers (FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups,
//! OffsetDelete): the context they run with and string conversions.
//!
//! Per connection task (per core). Group work itself runs on the core owning the group, reached
//! through the [`GroupRouter`] (see `engine::group::call`).

use freshet_engine::group::{GroupCall, GroupReply, GroupRouter};

use super::cluster_view::Endpoint;
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
    /// The coordinator broker of a group (or transactional) key, for FindCoordinator: the
    /// leader of the key's `__consumer_offsets` partition; Err is a Kafka error code.
    pub coordinator: &'a dyn Fn(&str) -> Result<Endpoint, i16>,
    /// Partition count of a topic (`None`: no such topic), from this core's metadata.
    pub topic_partitions: &'a dyn Fn(&str) -> Option<i32>,
}

impl<'a> GroupCtx<'a> {
    /// The context of one request on this core.
    pub fn new(
        ctx: &'a RequestContext,
        router: &'a dyn GroupRouter,
        coordinator: &'a dyn Fn(&str) -> Result<Endpoint, i16>,
        topic_partitions: &'a dyn Fn(&str) -> Option<i32>,
    ) -> Self {
        GroupCtx {
            router,
            client_id: ctx.client_id.as_deref().unwrap_or(""),
            client_host: &ctx.client_host,
            coordinator,
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

/// This core's answer to "which broker coordinates key `k`": the leader of `__consumer_offsets`
/// partition `partition_for_group(k, offsets.topic.num.partitions)` (Kafka's placement), from
/// the newest metadata and leader table at the time of the call.
pub fn coordinator_lookup(
    shard: &std::rc::Rc<freshet_engine::Shard>,
) -> impl Fn(&str) -> Result<Endpoint, i16> + 'static {
    let shard = shard.clone();
    move |key: &str| {
        let snap = shard.metadata();
        let leader_of = super::cluster_view::leader_lookup(&shard);
        let down = shard.down_brokers();
        let view = super::cluster_view::ClusterView::this_node(&shard, &snap, &leader_of, &down);
        let n = shard.config().groups.offsets_topic_num_partitions;
        view.coordinator(
            freshet_engine::group::OFFSETS_TOPIC,
            freshet_engine::group::partition_for_group(key, n),
        )
    }
}

/// Defines `handle(ctx, body)` for a group API file whose logic is
/// `serve(&GroupCtx, version, request) -> response`.
macro_rules! group_entry {
    ($req:ty) => {
        pub fn handle(ctx: super::RequestContext, body: bytes::Bytes) -> super::HandlerFuture {
            Box::pin(async move {
                let req: $req = ctx.decode(body)?;
                let router = freshet_engine::group::wire::ShardRouter::new(ctx.shard().clone());
                let shard = ctx.shard().clone();
                let coordinator = super::group_common::coordinator_lookup(&shard);
                let lookup = move |t: &str| shard.metadata().topic(t).map(|m| m.partitions);
                let gctx = super::group_common::GroupCtx::new(&ctx, &router, &coordinator, &lookup);
                let resp = serve(&gctx, ctx.api_version, req).await;
                ctx.respond(&resp)
            })
        }
    };
}
pub(crate) use group_entry;
