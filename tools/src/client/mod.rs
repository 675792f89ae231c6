//! Freshet's own async Kafka client (glommio, no tokio): pipelined connections with API version
//! negotiation, a metadata cache that follows leader changes, a batching producer, a fetching
//! consumer with consumer-group membership, and admin calls. Every encoding and decoding goes
//! through the kafka-protocol crate.
//!
//! Everything here is owned by one glommio executor (per-core, `!Send`); a multi-threaded
//! benchmark runs one `Client` per thread.

pub mod admin;
pub mod conn;
pub mod consumer;
pub mod group;
pub mod producer;
pub mod sync;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    FindCoordinatorRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

pub use conn::Connection;

/// Errors of the client; every variant renders as one line fit for a terminal.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to broker {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to {addr} failed: {reason}")]
    Closed { addr: String, reason: String },
    #[error("{api} request to {addr} timed out")]
    Timeout { addr: String, api: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("broker {addr} does not support the {api} API")]
    Unsupported { api: String, addr: String },
    #[error("{context}: {name} (Kafka error code {code})")]
    Kafka {
        context: String,
        name: String,
        code: i16,
    },
    #[error("unknown topic: {0}")]
    UnknownTopic(String),
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// A Kafka error code returned by the broker, with what we were doing.
    pub fn kafka(context: impl Into<String>, code: i16) -> ClientError {
        let name = match ResponseError::try_from_code(code) {
            Some(e) => format!("{e}"),
            None => "NONE".to_string(),
        };
        ClientError::Kafka {
            context: context.into(),
            name,
            code,
        }
    }

    /// The Kafka error code, if this is one.
    pub fn code(&self) -> Option<i16> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True for failures of the connection (the request may be retried elsewhere).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::Closed { .. } | ClientError::Timeout { .. }
        )
    }
}

/// Kafka error codes the client reacts to.
pub mod codes {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;

    /// Errors after which a fresh metadata lookup and a retry may succeed.
    pub fn is_metadata_stale(code: i16) -> bool {
        matches!(
            code,
            UNKNOWN_TOPIC_OR_PARTITION
                | LEADER_NOT_AVAILABLE
                | NOT_LEADER_OR_FOLLOWER
                | FENCED_LEADER_EPOCH
                | UNKNOWN_LEADER_EPOCH
        )
    }

    /// Errors worth retrying the same request for.
    pub fn is_retriable(code: i16) -> bool {
        is_metadata_stale(code)
            || matches!(
                code,
                REQUEST_TIMED_OUT | NOT_ENOUGH_REPLICAS | NOT_ENOUGH_REPLICAS_AFTER_APPEND
            )
    }
}

/// Settings shared by every part of the client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Bootstrap brokers, `host:port`.
    pub bootstrap: Vec<String>,
    pub client_id: String,
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// Parses a `host:port[,host:port...]` list.
    pub fn new(brokers: &str) -> ClientConfig {
        ClientConfig {
            bootstrap: brokers
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            client_id: "freshet".to_string(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A partition as the metadata reports it.
#[derive(Clone, Debug)]
pub struct PartitionMeta {
    pub id: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A topic as the metadata reports it.
#[derive(Clone, Debug)]
pub struct TopicMeta {
    pub name: String,
    pub error_code: i16,
    pub is_internal: bool,
    pub partitions: Vec<PartitionMeta>,
}

/// A broker as the metadata reports it.
#[derive(Clone, Debug)]
pub struct BrokerMeta {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerMeta {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What one Metadata call returned.
#[derive(Clone, Debug, Default)]
pub struct ClusterMeta {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerMeta>,
    pub topics: Vec<TopicMeta>,
}

struct ClientInner {
    cfg: ClientConfig,
    conns: RefCell<HashMap<String, Connection>>,
    brokers: RefCell<HashMap<i32, String>>,
    topics: RefCell<HashMap<String, TopicMeta>>,
}

/// Connection pool plus metadata cache (per-core, `!Send`; cheap to clone).
#[derive(Clone)]
pub struct Client {
    inner: Rc<ClientInner>,
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Client {
        Client {
            inner: Rc::new(ClientInner {
                cfg,
                conns: RefCell::new(HashMap::new()),
                brokers: RefCell::new(HashMap::new()),
                topics: RefCell::new(HashMap::new()),
            }),
        }
    }

    /// A live connection to `addr`, made on first use and remade after a failure.
    pub async fn conn_to(&self, addr: &str) -> Result<Connection, ClientError> {
        if let Some(c) = self.inner.conns.borrow().get(addr) {
            if !c.is_dead() {
                return Ok(c.clone());
            }
        }
        let c = Connection::connect(
            addr,
            &self.inner.cfg.client_id,
            self.inner.cfg.request_timeout,
        )
        .await?;
        // Another task may have connected meanwhile; keep the live one.
        let mut conns = self.inner.conns.borrow_mut();
        if let Some(existing) = conns.get(addr) {
            if !existing.is_dead() {
                conn::close(&c);
                return Ok(existing.clone());
            }
        }
        conns.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// A connection to any reachable broker: known brokers first, then bootstrap addresses.
    pub async fn any_conn(&self) -> Result<Connection, ClientError> {
        let mut addrs: Vec<String> = self.inner.conns.borrow().keys().cloned().collect();
        addrs.extend(self.inner.cfg.bootstrap.iter().cloned());
        let mut last_err = ClientError::Other("no brokers given".into());
        for a in addrs {
            match self.conn_to(&a).await {
                Ok(c) => return Ok(c),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// A connection to broker `node_id` (address from the last metadata).
    pub async fn conn_to_node(&self, node_id: i32) -> Result<Connection, ClientError> {
        let addr = self.inner.brokers.borrow().get(&node_id).cloned();
        let addr = match addr {
            Some(a) => a,
            None => {
                self.metadata(Some(&[]), false).await?;
                self.inner
                    .brokers
                    .borrow()
                    .get(&node_id)
                    .cloned()
                    .ok_or_else(|| ClientError::Other(format!("unknown broker id {node_id}")))?
            }
        };
        self.conn_to(&addr).await
    }

    /// Fetches metadata for `topics` (`None` = all topics) and refreshes the cache.
    pub async fn metadata(
        &self,
        topics: Option<&[String]>,
        allow_auto_topic_creation: bool,
    ) -> Result<ClusterMeta, ClientError> {
        let conn = self.any_conn().await?;
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut mt = MetadataRequestTopic::default();
                    mt.name = Some(TopicName(StrBytes::from_string(t.clone())));
                    mt
                })
                .collect()
        });
        req.allow_auto_topic_creation = allow_auto_topic_creation;
        let (resp, _v): (MetadataResponse, i16) = conn.call(&req).await?;
        let meta = ClusterMeta {
            cluster_id: resp.cluster_id.map(|s| s.to_string()),
            controller_id: resp.controller_id.0,
            brokers: resp
                .brokers
                .iter()
                .map(|b| BrokerMeta {
                    id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect(),
            topics: resp
                .topics
                .iter()
                .map(|t| {
                    let mut parts: Vec<PartitionMeta> = t
                        .partitions
                        .iter()
                        .map(|p| PartitionMeta {
                            id: p.partition_index,
                            leader: p.leader_id.0,
                            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        })
                        .collect();
                    parts.sort_by_key(|p| p.id);
                    TopicMeta {
                        name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                        error_code: t.error_code,
                        is_internal: t.is_internal,
                        partitions: parts,
                    }
                })
                .collect(),
        };
        {
            let mut brokers = self.inner.brokers.borrow_mut();
            for b in &meta.brokers {
                brokers.insert(b.id, b.addr());
            }
            let mut cache = self.inner.topics.borrow_mut();
            for t in &meta.topics {
                if t.error_code == 0 {
                    cache.insert(t.name.clone(), t.clone());
                } else {
                    cache.remove(&t.name);
                }
            }
        }
        Ok(meta)
    }

    /// The cached metadata of `topic`, fetched if missing. Errors if the topic does not exist.
    pub async fn topic(&self, topic: &str) -> Result<TopicMeta, ClientError> {
        if let Some(t) = self.inner.topics.borrow().get(topic) {
            return Ok(t.clone());
        }
        self.refresh_topic(topic).await
    }

    /// Re-reads the metadata of `topic` (after NOT_LEADER_OR_FOLLOWER and the like).
    pub async fn refresh_topic(&self, topic: &str) -> Result<TopicMeta, ClientError> {
        let meta = self.metadata(Some(&[topic.to_string()]), false).await?;
        let t = meta
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| ClientError::UnknownTopic(topic.to_string()))?;
        match t.error_code {
            0 => Ok(t),
            codes::UNKNOWN_TOPIC_OR_PARTITION => Err(ClientError::UnknownTopic(topic.to_string())),
            c => Err(ClientError::kafka(format!("metadata for topic {topic}"), c)),
        }
    }

    /// Leader of `topic`/`partition` from the cache (-1 if unknown).
    pub fn cached_leader(&self, topic: &str, partition: i32) -> i32 {
        self.inner
            .topics
            .borrow()
            .get(topic)
            .and_then(|t| t.partitions.iter().find(|p| p.id == partition))
            .map(|p| p.leader)
            .unwrap_or(-1)
    }

    /// Forgets the cached metadata of `topic` so the next lookup asks a broker.
    pub fn invalidate_topic(&self, topic: &str) {
        self.inner.topics.borrow_mut().remove(topic);
    }

    /// The coordinator of consumer group `group` (FindCoordinator, key type 0).
    pub async fn group_coordinator(&self, group: &str) -> Result<Connection, ClientError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let conn = self.any_conn().await?;
            let mut req = FindCoordinatorRequest::default();
            req.key = StrBytes::from_string(group.to_string());
            req.key_type = 0;
            let (resp, _) = conn.call(&req).await?;
            if resp.error_code == 0 {
                let addr = format!("{}:{}", resp.host, resp.port);
                self.inner
                    .brokers
                    .borrow_mut()
                    .insert(resp.node_id.0, addr.clone());
                return self.conn_to(&addr).await;
            }
            if attempts < 20
                && matches!(
                    resp.error_code,
                    codes::COORDINATOR_NOT_AVAILABLE | codes::COORDINATOR_LOAD_IN_PROGRESS
                )
            {
                glommio::timer::sleep(Duration::from_millis(200)).await;
                continue;
            }
            return Err(ClientError::kafka(
                format!("find coordinator for group {group}"),
                resp.error_code,
            ));
        }
    }
}

/// Kafka's murmur2 partitioner hash (compatible with the Java client's default partitioner).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = len / 4;
    for i in 0..chunks {
        let o = i * 4;
        let mut k = u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = &data[chunks * 4..];
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition the Java client's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client_reference_values() {
        // Reference values from Kafka's UtilsTest.testMurmur2 (clients/src/test).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn client_error_names_the_kafka_error() {
        let e = ClientError::kafka("produce to t-0", codes::NOT_LEADER_OR_FOLLOWER);
        let s = e.to_string();
        assert!(s.contains("produce to t-0"), "{s}");
        assert!(s.contains("code 6"), "{s}");
    }
}
