//! Kafka API handlers: one file per API, and the registry mapping API key → handler.
//!
//! # How to add a handler
//! 1. Create `net/src/handlers/<api>.rs` with
//!    - `pub const API_KEY: ApiKey = ApiKey::<Api>;`
//!    - `pub const VERSIONS: VersionRange = VersionRange { min, max };` (within what
//!      kafka-protocol supports, `ApiKey::<Api>.valid_versions()`),
//!    - `pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture` — usually
//!      `Box::pin(async move { ... })`: decode with `ctx.decode::<XRequest>(body)?`, do the work
//!      through `ctx.shard()` (engine API; `invoke_on` to reach other cores, see
//!      `freshet_engine` docs), and finish with `ctx.respond(&response)` (returns the encoded
//!      frame) — or `Ok(None)` to send nothing (acks=0).
//! 2. Add `mod <api>;` and one `entry!(<api>)` line to `HANDLERS` below. ApiVersions answers
//!    from `HANDLERS`, so the new API is advertised automatically.
//! 3. Add a row to docs/compat.md.
//!
//! Every per-partition failure must become that partition's Kafka error code. Return `Err`
//! only for input that cannot be decoded: the connection is then closed with a warning.
//! Handlers of one connection run concurrently; the connection writes responses in request
//! order. Keep the part of a handler before its first `.await` free of routing decisions that
//! depend on earlier requests (produce ordering relies on handlers starting in request order).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use freshet_engine::Shard;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, VersionRange};
use thiserror::Error;

use crate::NetCore;

mod admin_common;
mod alter_configs;
mod alter_partition_reassignments;
mod api_versions;
mod cluster_view;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_log_dirs;
mod elect_leaders;
mod fetch;
mod incremental_alter_configs;
mod init_producer_id;
mod list_offsets;
mod list_partition_reassignments;
mod metadata;
mod offset_for_leader_epoch;
mod placement_checks;
mod produce;
#[cfg(test)]
mod reassign_test_fixture;
// Consumer groups (engine/src/group; shared plumbing in group_common.rs).
mod delete_groups;
mod describe_groups;
mod find_coordinator;
mod group_common;
#[cfg(test)]
mod group_tests;
mod heartbeat;
mod join_group;
mod leave_group;
mod list_groups;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod sync_group;

pub(crate) use api_versions::unsupported_version_response;

/// A handler failure that closes the connection (the request could not be understood).
#[derive(Debug, Error)]
pub enum HandlerError {
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot encode {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// What a handler returns: the encoded response frame, or `None` for no response.
pub type HandlerResult = Result<Option<Bytes>, HandlerError>;
/// The future of a running handler (runs on the connection's core; not `Send`).
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult>>>;

/// One API: key, versions served, entry point.
pub struct Handler {
    pub key: ApiKey,
    pub versions: VersionRange,
    pub handle: fn(RequestContext, Bytes) -> HandlerFuture,
}

macro_rules! entry {
    ($m:ident) => {
        Handler {
            key: $m::API_KEY,
            versions: $m::VERSIONS,
            handle: $m::handle,
        }
    };
}

/// The registry: every API this broker serves. ApiVersions' answer is built from it.
pub static HANDLERS: &[Handler] = &[
    entry!(produce),
    entry!(fetch),
    entry!(list_offsets),
    entry!(metadata),
    entry!(api_versions),
    entry!(create_topics),
    entry!(delete_topics),
    entry!(create_partitions),
    entry!(describe_configs),
    entry!(alter_configs),
    entry!(incremental_alter_configs),
    entry!(describe_cluster),
    entry!(delete_records),
    entry!(offset_for_leader_epoch),
    entry!(describe_log_dirs),
    entry!(init_producer_id),
    entry!(find_coordinator),
    entry!(join_group),
    entry!(sync_group),
    entry!(heartbeat),
    entry!(leave_group),
    entry!(offset_commit),
    entry!(offset_fetch),
    entry!(list_groups),
    entry!(describe_groups),
    entry!(delete_groups),
    entry!(offset_delete),
    entry!(alter_partition_reassignments),
    entry!(list_partition_reassignments),
    entry!(elect_leaders),
];

/// The handler for `key`, if served.
pub fn handler_for(key: ApiKey) -> Option<&'static Handler> {
    HANDLERS.iter().find(|h| h.key == key)
}

/// One request being handled. Per core (holds `Rc`s); lives for one request.
pub struct RequestContext {
    pub net: Rc<NetCore>,
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The client's IP address as text (e.g. `127.0.0.1`), shared by the connection.
    pub client_host: Rc<str>,
}

impl RequestContext {
    pub fn shard(&self) -> &Rc<Shard> {
        &self.net.shard
    }

    /// Decodes the request body at this request's version.
    pub fn decode<T: Decodable>(&self, mut body: Bytes) -> Result<T, HandlerError> {
        T::decode(&mut body, self.api_version).map_err(|e| HandlerError::Decode {
            api: self.api_key,
            version: self.api_version,
            reason: e.to_string(),
        })
    }

    /// Encodes `body` with the response header into a complete frame (size prefix included).
    pub fn respond<R: Encodable + HeaderVersion>(&self, body: &R) -> HandlerResult {
        let err = |reason: String| HandlerError::Encode {
            api: self.api_key,
            version: self.api_version,
            reason,
        };
        let header_version = R::header_version(self.api_version);
        let header = ResponseHeader::default().with_correlation_id(self.correlation_id);
        let size = header
            .compute_size(header_version)
            .map_err(|e| err(e.to_string()))?
            + body
                .compute_size(self.api_version)
                .map_err(|e| err(e.to_string()))?;
        let mut buf = BytesMut::with_capacity(4 + size);
        buf.put_i32(size as i32);
        header
            .encode(&mut buf, header_version)
            .map_err(|e| err(e.to_string()))?;
        body.encode(&mut buf, self.api_version)
            .map_err(|e| err(e.to_string()))?;
        assert_eq!(
            buf.len(),
            4 + size,
            "encoded size differs from computed size"
        );
        Ok(Some(buf.freeze()))
    }
}

/// Kafka `Uuid` from an engine topic id.
pub(crate) fn uuid_of(id: &[u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*id)
}

/// Kafka topic name value.
pub(crate) fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
        s.to_string(),
    ))
}

/// The topic `name`, auto-created (with `num.partitions` partitions) when missing and
/// `auto.create.topics.enable` and `allow` permit it. Err is a Kafka error code.
pub(crate) async fn ensure_topic(
    shard: &Rc<Shard>,
    name: &str,
    allow: bool,
) -> Result<freshet_engine::metadata::TopicMeta, i16> {
    if let Some(t) = shard.metadata().topic(name) {
        return Ok(t.clone());
    }
    if freshet_engine::metadata::validate_topic_name(name).is_err() {
        return Err(freshet_engine::code::INVALID_TOPIC_EXCEPTION);
    }
    if !(allow && shard.config().auto_create_topics_enable) {
        return Err(freshet_engine::code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    let partitions = shard.config().num_partitions;
    match shard
        .create_topic(name.to_string(), partitions, -1, None, Vec::new())
        .await
    {
        Ok(t) => {
            tracing::info!(topic = name, partitions, "topic auto-created");
            Ok(t)
        }
        // Another request created it meanwhile.
        Err(freshet_engine::TopicError::AlreadyExists(_)) => shard
            .metadata()
            .topic(name)
            .cloned()
            .ok_or(freshet_engine::code::LEADER_NOT_AVAILABLE),
        Err(e) => {
            tracing::warn!(topic = name, error = %e, "auto-create failed");
            Err(e.kafka_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_version_range_is_within_what_the_codec_supports() {
        for h in HANDLERS {
            let codec = h.key.valid_versions();
            assert!(!h.versions.is_empty(), "{:?} has an empty range", h.key);
            assert_eq!(h.versions.intersect(&codec), h.versions, "{:?}", h.key);
        }
    }

    #[test]
    fn each_api_key_is_registered_once() {
        for (i, a) in HANDLERS.iter().enumerate() {
            for b in &HANDLERS[i + 1..] {
                assert_ne!(a.key, b.key);
            }
        }
    }
}
