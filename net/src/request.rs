//! Request header decoding: the pure, executor-free first step of every request (used by the
//! connection task and by the decoder fuzz test). Plain functions, no per-core state.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use thiserror::Error;

use crate::handlers::{handler_for, Handler};

/// Why a request frame is refused. All but `UnsupportedApiVersionsVersion` close the
/// connection; that one gets the KIP-511 answer.
#[derive(Debug, Error)]
pub enum RequestError {
    #[error("frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("API {0:?} is not served")]
    ApiNotServed(ApiKey),
    #[error("{key:?} v{version} is not served")]
    UnsupportedVersion { key: ApiKey, version: i16 },
    #[error("ApiVersions v{version} is not served (answer per KIP-511)")]
    UnsupportedApiVersionsVersion { version: i16, correlation_id: i32 },
    #[error("malformed {key:?} v{version} request header: {reason}")]
    MalformedHeader {
        key: ApiKey,
        version: i16,
        reason: String,
    },
}

/// A request whose header is decoded; `body` is still encoded (its handler decodes it).
pub struct DecodedRequest {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: Bytes,
    pub handler: &'static Handler,
}

/// Decodes one request frame (without its 4-byte size prefix): API key and version checked
/// against the handler registry, header decoded. Never panics.
pub fn decode_request(frame: Bytes) -> Result<DecodedRequest, RequestError> {
    if frame.len() < 8 {
        return Err(RequestError::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| RequestError::UnknownApiKey(raw_key))?;
    let handler = handler_for(key).ok_or(RequestError::ApiNotServed(key))?;
    if version < handler.versions.min || version > handler.versions.max {
        if key == ApiKey::ApiVersions {
            return Err(RequestError::UnsupportedApiVersionsVersion {
                version,
                correlation_id,
            });
        }
        return Err(RequestError::UnsupportedVersion { key, version });
    }
    let mut body = frame;
    let header =
        RequestHeader::decode(&mut body, key.request_header_version(version)).map_err(|e| {
            RequestError::MalformedHeader {
                key,
                version,
                reason: e.to_string(),
            }
        })?;
    Ok(DecodedRequest {
        api_key: key,
        api_version: version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.map(|c| c.as_str().to_string()),
        body,
        handler,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(key: i16, version: i16, corr: i32, rest: &[u8]) -> Bytes {
        let mut v = key.to_be_bytes().to_vec();
        v.extend(version.to_be_bytes());
        v.extend(corr.to_be_bytes());
        v.extend_from_slice(rest);
        Bytes::from(v)
    }

    #[test]
    fn unknown_keys_unserved_versions_and_short_frames_are_refused() {
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 1, 2])),
            Err(RequestError::TooShort(3))
        ));
        assert!(matches!(
            decode_request(frame(999, 0, 1, &[])),
            Err(RequestError::UnknownApiKey(999))
        ));
        assert!(matches!(
            decode_request(frame(0, 1, 1, &[0, 0])),
            Err(RequestError::UnsupportedVersion { .. })
        ));
        // KIP-511: an ApiVersions version from the future is answered, not dropped.
        assert!(matches!(
            decode_request(frame(18, 99, 5, &[])),
            Err(RequestError::UnsupportedApiVersionsVersion {
                version: 99,
                correlation_id: 5
            })
        ));
    }

    #[test]
    fn a_v1_header_with_client_id_decodes() {
        // Metadata v1: header v1 = key, version, correlation id, client id (int16 len).
        let r = decode_request(frame(
            3,
            1,
            77,
            &[0, 3, b'c', b'l', b'i', 0xff, 0xff, 0xff, 0xff],
        ))
        .unwrap();
        assert_eq!(r.correlation_id, 77);
        assert_eq!(r.client_id.as_deref(), Some("cli"));
        assert_eq!(r.body.len(), 4);
    }
}
