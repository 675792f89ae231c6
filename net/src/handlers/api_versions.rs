//! ApiVersions (key 18): the APIs and versions this broker serves, from the handler registry.
//! A request at a version we do not serve gets UNSUPPORTED_VERSION with a v0 body listing our
//! versions, so the client can downgrade (KIP-511).

use bytes::{BufMut, Bytes, BytesMut};
use freshet_engine::code;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Encodable, VersionRange};

use super::{HandlerFuture, RequestContext, HANDLERS};

pub const API_KEY: ApiKey = ApiKey::ApiVersions;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

fn api_keys() -> Vec<ApiVersion> {
    HANDLERS
        .iter()
        .map(|h| {
            ApiVersion::default()
                .with_api_key(h.key as i16)
                .with_min_version(h.versions.min)
                .with_max_version(h.versions.max)
        })
        .collect()
}

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let _req: ApiVersionsRequest = ctx.decode(body)?;
        let resp = ApiVersionsResponse::default()
            .with_error_code(code::NONE)
            .with_api_keys(api_keys());
        ctx.respond(&resp)
    })
}

/// The KIP-511 answer to an ApiVersions request at a version we do not serve: error 35 and
/// our version list, encoded as v0 (header v0 is just the correlation id).
pub(crate) fn unsupported_version_response(correlation_id: i32) -> Bytes {
    let resp = ApiVersionsResponse::default()
        .with_error_code(code::UNSUPPORTED_VERSION)
        .with_api_keys(api_keys());
    let size = 4 + resp.compute_size(0).expect("v0 ApiVersions size");
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    buf.put_i32(correlation_id);
    resp.encode(&mut buf, 0).expect("v0 ApiVersions encodes");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn kip_511_unsupported_version_answer_is_a_decodable_v0_body() {
        let frame = unsupported_version_response(42);
        let mut b = frame.slice(4..);
        assert_eq!(
            frame.len() - 4,
            i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize
        );
        assert_eq!(bytes::Buf::get_i32(&mut b), 42);
        let resp = ApiVersionsResponse::decode(&mut b, 0).unwrap();
        assert_eq!(resp.error_code, code::UNSUPPORTED_VERSION);
        assert!(resp
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 4));
    }
}
