//! IncrementalAlterConfigs (key 44, KIP-339): per TOPIC resource, SET / DELETE (back to the
//! default) / APPEND / SUBTRACT (list configs only: cleanup.policy) single keys, validated
//! against the topic's current config first (INVALID_CONFIG for unknown keys or bad values,
//! INVALID_REQUEST for unknown operations, null SET values or a key given twice) and applied
//! through core 0 to the live partitions, persisted. BROKER resources: Freshet's broker
//! configs are static, so any change is INVALID_CONFIG. `validate_only` changes nothing.

use bytes::Bytes;
use freshet_engine::{code, Shard, TopicConfigChange};
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::{
    alter_config_resource, apply_list_op, broker_topic_defaults, duplicate_flags, first_duplicate,
    normalize_config_value, sb,
};
use super::{HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::IncrementalAlterConfigs;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

/// Kafka `AlterConfigOp.OpType` codes.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: IncrementalAlterConfigsRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let keys: Vec<(i8, String)> = req
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str().to_string()))
            .collect();
        let dup = duplicate_flags(&keys);
        let mut responses = Vec::with_capacity(req.resources.len());
        for (res, dup) in req.resources.iter().zip(dup) {
            let outcome = alter_config_resource(
                &shard,
                res.resource_type,
                res.resource_name.as_str(),
                dup,
                res.configs.is_empty(),
                req.validate_only,
                || {
                    topic_ops(&shard, res.resource_name.as_str(), &res.configs)
                        .map(TopicConfigChange::Incremental)
                },
            )
            .await;
            let mut r = AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            if let Err((code, msg)) = outcome {
                r.error_code = code;
                r.error_message = Some(sb(msg));
            }
            responses.push(r);
        }
        ctx.respond(&IncrementalAlterConfigsResponse::default().with_responses(responses))
    })
}

/// One engine config operation: set `key` to `Some(value)` or back to its default (`None`).
type ConfigOp = (String, Option<String>);

/// The engine's (key, Some(value) | None) operations for one TOPIC resource; APPEND and
/// SUBTRACT resolve against the topic's current effective value.
fn topic_ops(
    shard: &Shard,
    topic: &str,
    configs: &[AlterableConfig],
) -> Result<Vec<ConfigOp>, (i16, String)> {
    let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
    if let Some(d) = first_duplicate(&names) {
        return Err((
            code::INVALID_REQUEST,
            format!("Error due to duplicate config keys: {d}"),
        ));
    }
    let snap = shard.metadata();
    let defaults = &*broker_topic_defaults(shard.config());
    let mut ops = Vec::with_capacity(configs.len());
    for c in configs {
        let key = c.name.as_str();
        let value = c.value.as_ref().map(|v| v.as_str());
        let op = match (c.config_operation, value) {
            (OP_SET, Some(v)) => Some(normalize_config_value(key, v)),
            (OP_SET, None) => {
                return Err((
                    code::INVALID_REQUEST,
                    format!("Null value not supported for: {key}"),
                ))
            }
            (OP_DELETE, _) => None,
            (op @ (OP_APPEND | OP_SUBTRACT), v) => {
                let current = snap
                    .topic(topic)
                    .and_then(|t| t.config.get(defaults, key))
                    .unwrap_or("");
                Some(apply_list_op(
                    key,
                    current,
                    v.unwrap_or(""),
                    op == OP_APPEND,
                )?)
            }
            (op, _) => {
                return Err((
                    code::INVALID_REQUEST,
                    format!("Unknown config operation {op} for {key}."),
                ))
            }
        };
        ops.push((key.to_string(), op));
    }
    Ok(ops)
}
