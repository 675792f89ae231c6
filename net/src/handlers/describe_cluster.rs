//! DescribeCluster (key 60, KIP-700): cluster id, controller (the controller group's leader,
//! -1 while unknown; a one-node cluster is its own controller) and the brokers (every registered
//! broker, this node at its advertised address). Endpoint type 2 (controllers, KIP-919) is
//! UNSUPPORTED_ENDPOINT_TYPE when asked of a broker, as in Kafka.

use bytes::Bytes;
use freshet_engine::code;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::sb;
use super::cluster_view::{leader_lookup, ClusterView};
use super::{HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::DescribeCluster;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

/// `DescribeClusterRequest.endpoint_type`: brokers.
const ENDPOINT_BROKERS: i8 = 1;

/// Kafka's "authorized operations not requested" sentinel.
const OPS_NOT_REQUESTED: i32 = i32::MIN;

/// Cluster operations a client may perform (Freshet has no ACLs: all of them), as Kafka's
/// bit field of `AclOperation` codes: CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9,
/// DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
const CLUSTER_OPS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: DescribeClusterRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let cfg = shard.config();
        let snap = shard.metadata();
        let leader_of = leader_lookup(&shard);
        let down = shard.down_brokers();
        let view = ClusterView::this_node(&shard, &snap, &leader_of, &down);
        let endpoint_type = if ctx.api_version >= 1 {
            req.endpoint_type
        } else {
            ENDPOINT_BROKERS
        };
        let mut resp = DescribeClusterResponse::default()
            .with_cluster_id(sb(cfg.cluster_id.clone()))
            .with_controller_id(BrokerId(view.controller_id()))
            .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
                CLUSTER_OPS
            } else {
                OPS_NOT_REQUESTED
            });
        if ctx.api_version >= 1 {
            resp.endpoint_type = endpoint_type;
        }
        if endpoint_type == ENDPOINT_BROKERS {
            resp.brokers = view
                .brokers()
                .into_iter()
                .map(|b| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.id))
                        .with_host(sb(b.host))
                        .with_port(b.port)
                        .with_rack(b.rack.map(sb))
                })
                .collect();
        } else {
            resp.error_code = code::UNSUPPORTED_ENDPOINT_TYPE;
            resp.error_message = Some(sb(format!(
                "Endpoint type {endpoint_type} is not served by a broker; only brokers (1)."
            )));
            resp.controller_id = BrokerId(-1);
        }
        ctx.respond(&resp)
    })
}
