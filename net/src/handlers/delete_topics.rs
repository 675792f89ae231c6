//! DeleteTopics (key 20): deletes topics by name (v1+) or by topic id (v6+, KIP-516) through
//! core 0, which removes the metadata durably and broadcasts it; every core then deletes the
//! logs of the partitions it owns before the answer goes out. Per-topic errors: unknown name
//! (UNKNOWN_TOPIC_OR_PARTITION), unknown id (UNKNOWN_TOPIC_ID), the same topic twice or both
//! name and id given (INVALID_REQUEST), Kafka's internal topics (POLICY_VIOLATION: the group
//! coordinator depends on `__consumer_offsets`).

use std::collections::HashMap;

use bytes::Bytes;
use freshet_engine::code;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::{is_internal_topic, sb};
use super::{topic_name, uuid_of, HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::DeleteTopics;
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 6 };

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: DeleteTopicsRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        // (name, topic id) as asked: v0-5 name only, v6+ either.
        let asked: Vec<(Option<String>, uuid::Uuid)> = if ctx.api_version >= 6 {
            req.topics
                .iter()
                .map(|t| {
                    (
                        t.name.as_ref().map(|n| n.0.as_str().to_string()),
                        t.topic_id,
                    )
                })
                .collect()
        } else {
            req.topic_names
                .iter()
                .map(|n| (Some(n.0.as_str().to_string()), uuid::Uuid::nil()))
                .collect()
        };
        let snap = shard.metadata();
        // Resolve ids to names first so duplicates are found whichever way they were named.
        let resolved: Vec<Result<String, (i16, String)>> = asked
            .iter()
            .map(|(name, id)| match (name, id.is_nil()) {
                (Some(_), false) => Err((
                    code::INVALID_REQUEST,
                    "Topic name and topic id cannot both be set.".to_string(),
                )),
                (Some(n), true) => Ok(n.clone()),
                (None, false) => snap
                    .topic_by_id(id.as_bytes())
                    .map(|t| t.name.clone())
                    .ok_or((code::UNKNOWN_TOPIC_ID, format!("Topic id {id} not found."))),
                (None, true) => Err((
                    code::INVALID_REQUEST,
                    "Neither topic name nor topic id given.".to_string(),
                )),
            })
            .collect();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for n in resolved.iter().flatten() {
            *seen.entry(n.as_str()).or_default() += 1;
        }
        let mut responses = Vec::with_capacity(asked.len());
        for ((name, id), res) in asked.iter().zip(&resolved) {
            let mut r = DeletableTopicResult::default()
                .with_name(name.as_deref().map(topic_name))
                .with_topic_id(*id);
            let outcome: Result<(), (i16, String)> = match res {
                Err(e) => Err(e.clone()),
                Ok(n) if seen[n.as_str()] > 1 => Err((
                    code::INVALID_REQUEST,
                    format!("Topic {n} is named more than once in the request."),
                )),
                Ok(n) if is_internal_topic(n) => Err((
                    code::POLICY_VIOLATION,
                    format!("Internal topic {n} cannot be deleted."),
                )),
                Ok(n) => {
                    if let Some(t) = shard.metadata().topic(n) {
                        r.name = Some(topic_name(n));
                        r.topic_id = uuid_of(&t.id);
                    }
                    match shard.delete_topic(n.clone()).await {
                        Ok(()) => {
                            tracing::info!(topic = %n, "topic deleted");
                            Ok(())
                        }
                        Err(e) => Err((e.kafka_code(), e.to_string())),
                    }
                }
            };
            if let Err((code, msg)) = outcome {
                r.error_code = code;
                r.error_message = Some(sb(msg));
            }
            responses.push(r);
        }
        ctx.respond(&DeleteTopicsResponse::default().with_responses(responses))
    })
}
