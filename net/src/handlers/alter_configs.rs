//! AlterConfigs (key 33, the legacy non-incremental form): a TOPIC resource's overrides
//! become exactly the given set (keys left out return to their defaults), validated first
//! (INVALID_CONFIG for unknown keys or bad values, INVALID_REQUEST for null values or a key
//! given twice) and applied through core 0 to the live partitions, persisted. BROKER
//! resources: Freshet's broker configs are static, so any change is INVALID_CONFIG.
//! `validate_only` checks and changes nothing.

use bytes::Bytes;
use freshet_engine::{code, TopicConfigChange};
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::{
    alter_config_resource, duplicate_flags, first_duplicate, normalize_config_value, sb,
};
use super::{HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::AlterConfigs;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: AlterConfigsRequest = ctx.decode(body)?;
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
                || topic_pairs(&res.configs).map(TopicConfigChange::Replace),
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
        ctx.respond(&AlterConfigsResponse::default().with_responses(responses))
    })
}

/// The (key, value) pairs of a TOPIC resource; null values and repeated keys are
/// INVALID_REQUEST.
fn topic_pairs(
    configs: &[kafka_protocol::messages::alter_configs_request::AlterableConfig],
) -> Result<Vec<(String, String)>, (i16, String)> {
    let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
    if let Some(d) = first_duplicate(&names) {
        return Err((
            code::INVALID_REQUEST,
            format!("Config {d} is given more than once."),
        ));
    }
    configs
        .iter()
        .map(|c| match &c.value {
            Some(v) => Ok((
                c.name.as_str().to_string(),
                normalize_config_value(c.name.as_str(), v.as_str()),
            )),
            None => Err((
                code::INVALID_REQUEST,
                format!("Null value not supported for: {}", c.name.as_str()),
            )),
        })
        .collect()
}
