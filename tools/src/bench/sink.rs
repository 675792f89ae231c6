//! `freshet bench sink`: a tiny fake Kafka broker that answers ApiVersions, Metadata,
//! CreateTopics, ListOffsets, Produce (acknowledged, then discarded) and Fetch (always empty).
//! Benchmarking the client against it shows the client's own ceiling.
//!
//! Runs on one glommio executor; its state is per-core (`Rc<RefCell<_>>`, `!Send`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{
    decode_request_header_from_buffer, Decodable, Encodable, HeaderVersion, StrBytes,
};

use crate::client::ClientError;

/// Largest request frame the sink accepts.
const REQUEST_FRAME_BYTES_MAX: usize = 128 * 1024 * 1024;

struct SinkState {
    host: String,
    port: i32,
    default_partitions: i32,
    /// Every Nth partition produce answers NOT_LEADER_OR_FOLLOWER (0 = never), to exercise the
    /// client's metadata refresh and retry.
    not_leader_every: u64,
    partition_produces: u64,
    metadata_requests: u64,
    topics: HashMap<String, i32>,
    next_offset: HashMap<(String, i32), i64>,
    produced_records: u64,
    produced_bytes: u64,
}

/// Serves until killed.
pub fn serve(
    addr: &str,
    default_partitions: i32,
    not_leader_every: u64,
) -> Result<(), ClientError> {
    let addr = addr.to_string();
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("freshet-sink")
        .make()
        .map_err(|e| ClientError::Other(format!("cannot start executor: {e}")))?;
    ex.run(async move {
        let listener = TcpListener::bind(&addr)
            .map_err(|e| ClientError::Other(format!("cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| ClientError::Other(e.to_string()))?;
        eprintln!("sink listening on {local} (acknowledges and discards everything)");
        let state = Rc::new(RefCell::new(SinkState {
            host: local.ip().to_string(),
            port: local.port() as i32,
            default_partitions,
            not_leader_every,
            partition_produces: 0,
            metadata_requests: 0,
            topics: HashMap::new(),
            next_offset: HashMap::new(),
            produced_records: 0,
            produced_bytes: 0,
        }));
        {
            let state = state.clone();
            glommio::spawn_local(async move {
                let mut last = (0u64, 0u64);
                loop {
                    glommio::timer::sleep(Duration::from_secs(1)).await;
                    let s = state.borrow();
                    let cur = (s.produced_records, s.produced_bytes);
                    if cur != last {
                        eprintln!(
                            "sink: {} records/s, {:.1} MB/s, {} metadata requests so far",
                            cur.0 - last.0,
                            (cur.1 - last.1) as f64 / super::stats::MB,
                            s.metadata_requests
                        );
                    }
                    last = cur;
                }
            })
            .detach();
        }
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    glommio::spawn_local(connection(state.clone(), stream)).detach();
                }
                Err(e) => eprintln!("sink: accept failed: {e}"),
            }
        }
    })
}

async fn connection(state: Rc<RefCell<SinkState>>, mut stream: TcpStream) {
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut out = BytesMut::with_capacity(1 << 16);
    loop {
        while buf.len() >= 4 {
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if size < 0 || size as usize > REQUEST_FRAME_BYTES_MAX {
                return; // malformed frame: close the connection
            }
            let size = size as usize;
            if buf.len() < 4 + size {
                buf.reserve(4 + size - buf.len());
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(size).freeze();
            match handle(&state, frame).await {
                Ok(Some(resp)) => out.extend_from_slice(&resp),
                Ok(None) => {}
                Err(_) => return,
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        let start = buf.len();
        buf.resize(start + (256 * 1024).max(buf.capacity() - start), 0);
        match stream.read(&mut buf[start..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.truncate(start + n),
        }
    }
}

fn respond<R: Encodable + HeaderVersion>(
    key: ApiKey,
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Bytes, anyhow_like::Error> {
    let mut b = BytesMut::with_capacity(128);
    b.put_i32(0);
    let mut h = ResponseHeader::default();
    h.correlation_id = correlation_id;
    h.encode(&mut b, key.response_header_version(version))
        .map_err(anyhow_like::from)?;
    body.encode(&mut b, version).map_err(anyhow_like::from)?;
    let n = (b.len() - 4) as i32;
    b[0..4].copy_from_slice(&n.to_be_bytes());
    Ok(b.freeze())
}

/// Minimal error plumbing for the sink (any failure closes the connection).
mod anyhow_like {
    #[derive(Debug)]
    pub struct Error;
    pub fn from<E>(_: E) -> Error {
        Error
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn supported() -> Vec<(ApiKey, i16, i16)> {
    vec![
        (ApiKey::Produce, 3, 9),
        (ApiKey::Fetch, 4, 12),
        (ApiKey::ListOffsets, 1, 7),
        (ApiKey::Metadata, 1, 12),
        (ApiKey::ApiVersions, 0, 3),
        (ApiKey::CreateTopics, 2, 7),
    ]
}

async fn handle(
    state: &Rc<RefCell<SinkState>>,
    mut frame: Bytes,
) -> Result<Option<Bytes>, anyhow_like::Error> {
    let header = decode_request_header_from_buffer(&mut frame).map_err(anyhow_like::from)?;
    let key = ApiKey::try_from(header.request_api_key).map_err(anyhow_like::from)?;
    let v = header.request_api_version;
    let cid = header.correlation_id;
    let in_range = supported()
        .iter()
        .any(|(k, lo, hi)| *k == key && v >= *lo && v <= *hi);
    if key == ApiKey::ApiVersions {
        let mut resp = ApiVersionsResponse::default();
        if !in_range {
            resp.error_code = 35; // UNSUPPORTED_VERSION, answered at v0 (KIP-511)
        }
        for (k, lo, hi) in supported() {
            let mut av = ApiVersion::default();
            av.api_key = k as i16;
            av.min_version = lo;
            av.max_version = hi;
            resp.api_keys.push(av);
        }
        let ver = if in_range { v } else { 0 };
        return respond(key, cid, ver, &resp).map(Some);
    }
    if !in_range {
        return Err(anyhow_like::Error);
    }
    match key {
        ApiKey::Metadata => {
            let req = MetadataRequest::decode(&mut frame, v).map_err(anyhow_like::from)?;
            let mut st = state.borrow_mut();
            st.metadata_requests += 1;
            let names: Vec<String> = match &req.topics {
                Some(ts) => ts
                    .iter()
                    .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                    .collect(),
                None => st.topics.keys().cloned().collect(),
            };
            let mut resp = MetadataResponse::default();
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(0);
            b.host = s(&st.host);
            b.port = st.port;
            resp.brokers.push(b);
            resp.cluster_id = Some(s("freshet-sink"));
            resp.controller_id = BrokerId(0);
            for n in names {
                let dp = st.default_partitions;
                let count = *st.topics.entry(n.clone()).or_insert(dp);
                let mut t = MetadataResponseTopic::default();
                t.name = Some(TopicName(s(&n)));
                for p in 0..count {
                    let mut mp = MetadataResponsePartition::default();
                    mp.partition_index = p;
                    mp.leader_id = BrokerId(0);
                    mp.replica_nodes = vec![BrokerId(0)];
                    mp.isr_nodes = vec![BrokerId(0)];
                    t.partitions.push(mp);
                }
                resp.topics.push(t);
            }
            respond(key, cid, v, &resp).map(Some)
        }
        ApiKey::CreateTopics => {
            let req = CreateTopicsRequest::decode(&mut frame, v).map_err(anyhow_like::from)?;
            let mut st = state.borrow_mut();
            let mut resp = CreateTopicsResponse::default();
            for t in req.topics {
                let n = if t.num_partitions > 0 {
                    t.num_partitions
                } else {
                    st.default_partitions
                };
                st.topics.insert(t.name.0.to_string(), n);
                let mut r = CreatableTopicResult::default();
                r.name = t.name;
                r.num_partitions = n;
                r.replication_factor = 1;
                resp.topics.push(r);
            }
            respond(key, cid, v, &resp).map(Some)
        }
        ApiKey::ListOffsets => {
            let req = ListOffsetsRequest::decode(&mut frame, v).map_err(anyhow_like::from)?;
            let st = state.borrow();
            let mut resp = ListOffsetsResponse::default();
            for t in req.topics {
                let mut rt = ListOffsetsTopicResponse::default();
                for p in t.partitions {
                    let mut rp = ListOffsetsPartitionResponse::default();
                    rp.partition_index = p.partition_index;
                    rp.timestamp = -1;
                    rp.offset = if p.timestamp == -2 {
                        0
                    } else {
                        st.next_offset
                            .get(&(t.name.0.to_string(), p.partition_index))
                            .copied()
                            .unwrap_or(0)
                    };
                    rt.partitions.push(rp);
                }
                rt.name = t.name;
                resp.topics.push(rt);
            }
            respond(key, cid, v, &resp).map(Some)
        }
        ApiKey::Produce => {
            let req = ProduceRequest::decode(&mut frame, v).map_err(anyhow_like::from)?;
            let mut st = state.borrow_mut();
            let mut resp = ProduceResponse::default();
            for t in req.topic_data {
                let name = t.name.0.to_string();
                let mut rt = TopicProduceResponse::default();
                for p in t.partition_data {
                    st.partition_produces += 1;
                    let every = st.not_leader_every;
                    if every > 0 && st.partition_produces >= every {
                        st.partition_produces = 0;
                        let mut rp = PartitionProduceResponse::default();
                        rp.index = p.index;
                        rp.error_code = 6; // NOT_LEADER_OR_FOLLOWER: nothing is appended
                        rp.base_offset = -1;
                        rt.partition_responses.push(rp);
                        continue;
                    }
                    let (count, bytes) = p.records.as_ref().map_or((0, 0), count_records);
                    st.produced_records += count;
                    st.produced_bytes += bytes;
                    let next = st.next_offset.entry((name.clone(), p.index)).or_insert(0);
                    let mut rp = PartitionProduceResponse::default();
                    rp.index = p.index;
                    rp.base_offset = *next;
                    rp.log_append_time_ms = -1;
                    *next += count as i64;
                    rt.partition_responses.push(rp);
                }
                rt.name = t.name;
                resp.responses.push(rt);
            }
            if req.acks == 0 {
                return Ok(None);
            }
            respond(key, cid, v, &resp).map(Some)
        }
        ApiKey::Fetch => {
            let req = FetchRequest::decode(&mut frame, v).map_err(anyhow_like::from)?;
            glommio::timer::sleep(Duration::from_millis(req.max_wait_ms.clamp(0, 500) as u64))
                .await;
            let st = state.borrow();
            let mut resp = FetchResponse::default();
            for t in req.topics {
                let mut rt = FetchableTopicResponse::default();
                for p in t.partitions {
                    let mut pd = PartitionData::default();
                    pd.partition_index = p.partition;
                    pd.high_watermark = st
                        .next_offset
                        .get(&(t.topic.0.to_string(), p.partition))
                        .copied()
                        .unwrap_or(0);
                    pd.last_stable_offset = pd.high_watermark;
                    pd.records = Some(Bytes::new());
                    rt.partitions.push(pd);
                }
                rt.topic = t.topic;
                resp.responses.push(rt);
            }
            respond(key, cid, v, &resp).map(Some)
        }
        _ => Err(anyhow_like::Error),
    }
}

/// Counts records (from each batch header) and bytes of a produce payload.
fn count_records(records: &Bytes) -> (u64, u64) {
    let mut n = 0u64;
    let mut pos = 0usize;
    while records.len() >= pos + 61 {
        let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().expect("4 bytes"));
        if len < 49 {
            break;
        }
        n += i32::from_be_bytes(records[pos + 57..pos + 61].try_into().expect("4 bytes")).max(0)
            as u64;
        pos += 12 + len as usize;
    }
    (n, records.len() as u64)
}
