//! InitProducerId (key 22): producer ids for idempotent producers (on by default in
//! kafka-python 3 and Java clients >= 3.0). Ids are unique across cores and restarts; a
//! producer re-initialising with its id gets the next epoch (KIP-360). Transactions are not
//! supported: a transactional id is refused with UNSUPPORTED_VERSION. Sequence numbers are
//! stored with the batches but not checked for duplicates yet (see docs/compat.md).

use bytes::Bytes;
use freshet_engine::code;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::protocol::VersionRange;

use super::{HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::InitProducerId;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: InitProducerIdRequest = ctx.decode(body)?;
        let mut resp = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        if req.transactional_id.is_some() {
            tracing::warn!(
                "InitProducerId with a transactional id refused: transactions are not supported"
            );
            resp.error_code = code::UNSUPPORTED_VERSION;
        } else if req.producer_id.0 >= 0
            && req.producer_epoch >= 0
            && req.producer_epoch < i16::MAX - 1
        {
            resp.producer_id = req.producer_id;
            resp.producer_epoch = req.producer_epoch + 1;
        } else {
            resp.producer_id = ProducerId(ctx.shard().allocate_producer_id());
            resp.producer_epoch = 0;
        }
        ctx.respond(&resp)
    })
}
