//! DescribeConfigs (key 32): every topic config with its effective value and source
//! (DYNAMIC_TOPIC_CONFIG for the topic's own override, STATIC_BROKER_CONFIG for the broker's
//! `[topic_defaults]`, DEFAULT_CONFIG for Kafka's default), synonyms when asked (KIP-226),
//! type and documentation from v3 (KIP-336). A BROKER resource named by this node's id
//! describes the broker's configuration (all read-only); the empty name (cluster-wide dynamic
//! defaults) has none. Answered from this core's metadata copy: no mesh hop.

use bytes::Bytes;
use freshet_engine::code;
use freshet_engine::metadata::validate_topic_name;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::{
    broker_topic_defaults, describe_broker_config, describe_topic_config, filter_keys,
    is_this_broker, resource_type, sb, DescribedConfig,
};
use super::{HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::DescribeConfigs;
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 4 };

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: DescribeConfigsRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let snap = shard.metadata();
        let cfg = shard.config();
        let mut results = Vec::with_capacity(req.resources.len());
        for res in &req.resources {
            let name = res.resource_name.as_str();
            let described: Result<Vec<DescribedConfig>, (i16, String)> = match res.resource_type {
                resource_type::TOPIC => match snap.topic(name) {
                    Some(t) => Ok(describe_topic_config(
                        &t.config,
                        &broker_topic_defaults(cfg),
                    )),
                    None if validate_topic_name(name).is_err() => Err((
                        code::INVALID_TOPIC_EXCEPTION,
                        format!("Invalid topic name {name:?}."),
                    )),
                    None => Err((
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("Topic {name} does not exist."),
                    )),
                },
                resource_type::BROKER if name.is_empty() => Ok(Vec::new()),
                resource_type::BROKER if is_this_broker(name, cfg.node_id) => {
                    Ok(describe_broker_config(cfg))
                }
                resource_type::BROKER => Err((
                    code::INVALID_REQUEST,
                    format!(
                        "Unexpected broker id, expected {} or empty string, but received {name}.",
                        cfg.node_id
                    ),
                )),
                resource_type::BROKER_LOGGER => Err((
                    code::INVALID_REQUEST,
                    "Broker logger configs are not supported.".to_string(),
                )),
                other => Err((
                    code::INVALID_REQUEST,
                    format!("Unsupported resource type {other}."),
                )),
            };
            let mut r = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match described {
                Ok(cs) => {
                    r.configs = filter_keys(cs, res.configuration_keys.as_deref())
                        .into_iter()
                        .map(|c| {
                            to_wire(
                                c,
                                req.include_synonyms,
                                req.include_documentation,
                                ctx.api_version,
                            )
                        })
                        .collect();
                }
                Err((code, msg)) => {
                    r.error_code = code;
                    r.error_message = Some(sb(msg));
                }
            }
            results.push(r);
        }
        ctx.respond(&DescribeConfigsResponse::default().with_results(results))
    })
}

fn to_wire(
    c: DescribedConfig,
    synonyms: bool,
    documentation: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut r = DescribeConfigsResourceResult::default()
        .with_name(sb(c.name))
        .with_value(Some(sb(c.value)))
        .with_read_only(c.read_only)
        .with_config_source(c.source)
        .with_is_sensitive(c.sensitive);
    if synonyms {
        r.synonyms = c
            .synonyms
            .into_iter()
            .map(|(n, v, s)| {
                DescribeConfigsSynonym::default()
                    .with_name(sb(n))
                    .with_value(Some(sb(v)))
                    .with_source(s)
            })
            .collect();
    }
    if version >= 3 {
        r.config_type = c.config_type;
        if documentation {
            r.documentation = c.doc.map(sb);
        }
    }
    r
}
