//! FindCoordinator (key 10), v0–v4: a group's coordinator is the leader broker of the group's
//! `__consumer_offsets` partition (Kafka's `abs(hashCode) % offsets.topic.num.partitions`),
//! COORDINATOR_NOT_AVAILABLE while that leader is unknown; in a cluster of one, this broker
//! (the owning core is reached internally). Transactional ids are placed the same way (they
//! are refused later: no transactions). v4 answers each key of the batch (KIP-699).

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

use super::cluster_view::Endpoint;
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
                match locate(ctx, key_ok, k.as_str()) {
                    Ok(e) => {
                        c.node_id = BrokerId(e.id);
                        c.host = to_strbytes(e.host);
                        c.port = e.port;
                    }
                    Err(code) => {
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                        c.error_code = code;
                    }
                }
                c
            })
            .collect();
    } else {
        match locate(ctx, key_ok, req.key.as_str()) {
            Ok(e) => {
                resp.node_id = BrokerId(e.id);
                resp.host = to_strbytes(e.host);
                resp.port = e.port;
            }
            Err(code) => {
                resp.error_code = code;
                resp.node_id = BrokerId(-1);
                resp.port = -1;
            }
        }
    }
    resp
}

/// The coordinator of `key`, or the error code of its answer.
fn locate(ctx: &GroupCtx<'_>, key_ok: bool, key: &str) -> Result<Endpoint, i16> {
    if !key_ok {
        return Err(INVALID_REQUEST);
    }
    (ctx.coordinator)(key)
}
