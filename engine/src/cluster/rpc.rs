//! Node-to-node RPC methods of the cluster layer and their payloads.
//!
//! Payloads are little-endian, versioned (`version:u16` first) and decoded totally: any bytes
//! give a value or a [`PayloadError`], every count is checked against the bytes present before
//! anything is allocated. Layouts are documented in docs/design/replication.md ("Cluster
//! RPC methods").
//!
//! Ownership: pure values and functions; `Send`, usable on any core.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// `HELLO`: introduce this node (payload [`Hello`]); the answer is the peer's [`Hello`].
pub const HELLO: u16 = 1;
/// `LEADERS`: the sender's list of groups it leads ([`Leaders`]); the answer is empty.
pub const LEADERS: u16 = 2;
/// `CONTROLLER_PROPOSE`: a controller intent forwarded to the controller leader (payload and
/// answer defined by the controller, engine/src/controller/command.rs).
pub const CONTROLLER_PROPOSE: u16 = 3;
/// `CONTROLLER_SNAPSHOT`: asks a controller replica for its applied metadata state
/// ([`SnapshotRequest`]); the answer is the controller snapshot file's bytes
/// (engine/src/controller/snapshot.rs). Used by a controller replica whose log starts past
/// what it has applied (the controller log was compacted while it was away or before it
/// joined).
pub const CONTROLLER_SNAPSHOT: u16 = 4;
/// `JOIN`: a node that is not a founder asks a member of a formed cluster to register it
/// ([`JoinRequest`]); answered with [`JoinAnswer`] once the registration is applied on the
/// serving node, or refused (status ERROR, with the reason) when the node id is a founder's
/// or is registered with another RPC address.
pub const JOIN: u16 = 5;

/// Payload layout version of LEADERS, CONTROLLER_SNAPSHOT and JOIN (and of HELLO before
/// [`HELLO_VERSION`]).
pub const PAYLOAD_VERSION: u16 = 1;
/// Payload layout version of HELLO: 2 adds the sender's founders (whether its cluster has
/// formed). Version 1 HELLOs are still read (no founders known).
pub const HELLO_VERSION: u16 = 2;

/// A payload that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload truncated")]
    Truncated,
    #[error("unsupported payload version {0}")]
    Version(u16),
    #[error("count exceeds payload")]
    Count,
    #[error("string is not UTF-8")]
    Utf8,
    #[error("trailing bytes in payload")]
    Trailing,
}

struct Rd(Bytes);

impl Rd {
    fn need(&self, n: usize) -> Result<(), PayloadError> {
        if self.0.remaining() < n {
            return Err(PayloadError::Truncated);
        }
        Ok(())
    }
    fn u16(&mut self) -> Result<u16, PayloadError> {
        self.need(2)?;
        Ok(self.0.get_u16_le())
    }
    fn u32(&mut self) -> Result<u32, PayloadError> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }
    fn i32(&mut self) -> Result<i32, PayloadError> {
        self.need(4)?;
        Ok(self.0.get_i32_le())
    }
    fn u64(&mut self) -> Result<u64, PayloadError> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }
    fn string(&mut self) -> Result<String, PayloadError> {
        let n = self.u16()? as usize;
        self.need(n)?;
        let b = self.0.split_to(n);
        String::from_utf8(b.to_vec()).map_err(|_| PayloadError::Utf8)
    }
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, PayloadError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_bytes) > self.0.remaining() {
            return Err(PayloadError::Count);
        }
        Ok(n)
    }
    fn version(&mut self) -> Result<(), PayloadError> {
        match self.u16()? {
            PAYLOAD_VERSION => Ok(()),
            v => Err(PayloadError::Version(v)),
        }
    }
    fn u8(&mut self) -> Result<u8, PayloadError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn ids(&mut self) -> Result<Vec<i32>, PayloadError> {
        let n = self.count(4)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.i32()?);
        }
        Ok(v)
    }
    fn opt_string(&mut self) -> Result<Option<String>, PayloadError> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.string().map(Some),
        }
    }
    fn end(&self) -> Result<(), PayloadError> {
        if self.0.has_remaining() {
            return Err(PayloadError::Trailing);
        }
        Ok(())
    }
}

fn put_ids(b: &mut BytesMut, ids: &[i32]) {
    b.put_u32_le(ids.len() as u32);
    for i in ids {
        b.put_i32_le(*i);
    }
}

fn put_string(b: &mut BytesMut, s: &str) {
    // Strings are addresses and ids; longer ones are cut at a char boundary (never sent).
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    b.put_u16_le(end as u16);
    b.put_slice(&s.as_bytes()[..end]);
}

/// Who a node is: sent by the caller of HELLO and answered by the callee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Kafka broker id (`--node-id`).
    pub node_id: i32,
    /// `cluster_id` of the node's config; nodes of different clusters refuse each other.
    pub cluster_id: String,
    /// Advertised Kafka listener, host:port.
    pub kafka_addr: String,
    /// Advertised internal RPC address, host:port.
    pub rpc_addr: String,
    /// The founders of the sender's cluster (broker ids, ascending) once it has formed; None
    /// while the sender is still waiting for its seeds (or it sent a version 1 HELLO).
    pub founders: Option<Vec<i32>>,
}

impl Hello {
    /// `version:u16 = 2, node_id:i32, cluster_id:str, kafka_addr:str, rpc_addr:str,
    /// formed:u8, [n:u32, founders:i32 × n if formed = 1]` (`str` = `len:u16` + UTF-8).
    /// Version 1 ends after `rpc_addr`.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_u16_le(HELLO_VERSION);
        b.put_i32_le(self.node_id);
        put_string(&mut b, &self.cluster_id);
        put_string(&mut b, &self.kafka_addr);
        put_string(&mut b, &self.rpc_addr);
        match &self.founders {
            None => b.put_u8(0),
            Some(f) => {
                b.put_u8(1);
                put_ids(&mut b, f);
            }
        }
        b.freeze()
    }

    pub fn decode(payload: Bytes) -> Result<Hello, PayloadError> {
        let mut r = Rd(payload);
        let version = r.u16()?;
        if version != PAYLOAD_VERSION && version != HELLO_VERSION {
            return Err(PayloadError::Version(version));
        }
        let mut h = Hello {
            node_id: r.i32()?,
            cluster_id: r.string()?,
            kafka_addr: r.string()?,
            rpc_addr: r.string()?,
            founders: None,
        };
        if version == HELLO_VERSION && r.u8()? != 0 {
            h.founders = Some(r.ids()?);
        }
        r.end()?;
        Ok(h)
    }
}

/// CONTROLLER_SNAPSHOT request: the caller needs a state at least this new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// Smallest metadata revision the caller can use (its controller log start).
    pub min_revision: u64,
}

impl SnapshotRequest {
    /// `version:u16, min_revision:u64`.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(10);
        b.put_u16_le(PAYLOAD_VERSION);
        b.put_u64_le(self.min_revision);
        b.freeze()
    }

    pub fn decode(payload: Bytes) -> Result<SnapshotRequest, PayloadError> {
        let mut r = Rd(payload);
        r.version()?;
        let q = SnapshotRequest {
            min_revision: r.u64()?,
        };
        r.end()?;
        Ok(q)
    }
}

/// JOIN request: the joining node's registration (its KIP-631 broker record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// Kafka broker id (`--node-id`).
    pub node_id: i32,
    /// Advertised Kafka listener host and port.
    pub host: String,
    pub port: i32,
    /// Advertised internal RPC address.
    pub rpc_addr: String,
    pub rack: Option<String>,
}

impl JoinRequest {
    /// `version:u16, node_id:i32, host:str, port:i32, rpc_addr:str, rack:(present:u8, str)`.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_u16_le(PAYLOAD_VERSION);
        b.put_i32_le(self.node_id);
        put_string(&mut b, &self.host);
        b.put_i32_le(self.port);
        put_string(&mut b, &self.rpc_addr);
        match &self.rack {
            None => b.put_u8(0),
            Some(r) => {
                b.put_u8(1);
                put_string(&mut b, r);
            }
        }
        b.freeze()
    }

    pub fn decode(payload: Bytes) -> Result<JoinRequest, PayloadError> {
        let mut r = Rd(payload);
        r.version()?;
        let q = JoinRequest {
            node_id: r.i32()?,
            host: r.string()?,
            port: r.i32()?,
            rpc_addr: r.string()?,
            rack: r.opt_string()?,
        };
        r.end()?;
        Ok(q)
    }
}

/// JOIN answer: the registration is applied on the serving node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAnswer {
    /// Metadata revision that holds the registration.
    pub revision: u64,
    /// The cluster's founders (the controller group's voters), ascending.
    pub founders: Vec<i32>,
}

impl JoinAnswer {
    /// `version:u16, revision:u64, n:u32, founders:i32 × n`.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(16 + 4 * self.founders.len());
        b.put_u16_le(PAYLOAD_VERSION);
        b.put_u64_le(self.revision);
        put_ids(&mut b, &self.founders);
        b.freeze()
    }

    pub fn decode(payload: Bytes) -> Result<JoinAnswer, PayloadError> {
        let mut r = Rd(payload);
        r.version()?;
        let a = JoinAnswer {
            revision: r.u64()?,
            founders: r.ids()?,
        };
        r.end()?;
        Ok(a)
    }
}

/// One group a node leads, as reported in LEADERS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedGroup {
    /// Raft group id.
    pub group: u64,
    /// Leader epoch (Raft term, saturated to i32).
    pub epoch: i32,
    /// In-sync replicas (broker ids), the leader included.
    pub isr: Vec<i32>,
}

/// A node's complete list of the groups it leads (it replaces the previous list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaders {
    /// The reporting node (the leader of every listed group).
    pub from: i32,
    pub groups: Vec<LedGroup>,
}

impl Leaders {
    /// `version:u16, from:i32, n:u32, n × (group:u64, epoch:i32, n_isr:u32, isr:i32 × n_isr)`.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(10 + self.groups.len() * 24);
        b.put_u16_le(PAYLOAD_VERSION);
        b.put_i32_le(self.from);
        b.put_u32_le(self.groups.len() as u32);
        for g in &self.groups {
            b.put_u64_le(g.group);
            b.put_i32_le(g.epoch);
            b.put_u32_le(g.isr.len() as u32);
            for r in &g.isr {
                b.put_i32_le(*r);
            }
        }
        b.freeze()
    }

    pub fn decode(payload: Bytes) -> Result<Leaders, PayloadError> {
        let mut r = Rd(payload);
        r.version()?;
        let from = r.i32()?;
        let n = r.count(16)?;
        let mut groups = Vec::with_capacity(n);
        for _ in 0..n {
            let group = r.u64()?;
            let epoch = r.i32()?;
            let k = r.count(4)?;
            let mut isr = Vec::with_capacity(k);
            for _ in 0..k {
                isr.push(r.i32()?);
            }
            groups.push(LedGroup { group, epoch, isr });
        }
        r.end()?;
        Ok(Leaders { from, groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_leaders_roundtrip() {
        let h = Hello {
            node_id: 2,
            cluster_id: "c1".into(),
            kafka_addr: "127.0.0.1:9092".into(),
            rpc_addr: "127.0.0.1:33145".into(),
            founders: None,
        };
        assert_eq!(Hello::decode(h.encode()), Ok(h.clone()));
        let formed = Hello {
            founders: Some(vec![0, 1, 2]),
            ..h
        };
        assert_eq!(Hello::decode(formed.encode()), Ok(formed));
        let l = Leaders {
            from: 1,
            groups: vec![
                LedGroup {
                    group: 0,
                    epoch: 3,
                    isr: vec![1, 0, 2],
                },
                LedGroup {
                    group: u64::MAX,
                    epoch: i32::MAX,
                    isr: vec![],
                },
            ],
        };
        assert_eq!(Leaders::decode(l.encode()), Ok(l));
    }

    #[test]
    fn truncated_or_lying_payloads_are_errors() {
        let h = Hello {
            node_id: 2,
            cluster_id: "c1".into(),
            kafka_addr: "k".into(),
            rpc_addr: "r".into(),
            founders: Some(vec![0, 1]),
        }
        .encode();
        for cut in 0..h.len() {
            assert!(Hello::decode(h.slice(0..cut)).is_err(), "cut {cut}");
        }
        let mut long = h.to_vec();
        long.push(0);
        assert_eq!(
            Hello::decode(Bytes::from(long)),
            Err(PayloadError::Trailing)
        );
        let mut v3 = h.to_vec();
        v3[0] = 3;
        assert_eq!(
            Hello::decode(Bytes::from(v3)),
            Err(PayloadError::Version(3))
        );
        // A count of 2^32-1 groups in a 10-byte payload: refused before allocating.
        let mut b = BytesMut::new();
        b.put_u16_le(PAYLOAD_VERSION);
        b.put_i32_le(0);
        b.put_u32_le(u32::MAX);
        assert_eq!(Leaders::decode(b.freeze()), Err(PayloadError::Count));
        let l = Leaders {
            from: 1,
            groups: vec![LedGroup {
                group: 5,
                epoch: 1,
                isr: vec![1, 2],
            }],
        }
        .encode();
        for cut in 0..l.len() {
            assert!(Leaders::decode(l.slice(0..cut)).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn a_version_1_hello_is_read_without_founders() {
        let mut b = BytesMut::new();
        b.put_u16_le(PAYLOAD_VERSION);
        b.put_i32_le(4);
        put_string(&mut b, "c");
        put_string(&mut b, "k:1");
        put_string(&mut b, "r:2");
        assert_eq!(
            Hello::decode(b.freeze()),
            Ok(Hello {
                node_id: 4,
                cluster_id: "c".into(),
                kafka_addr: "k:1".into(),
                rpc_addr: "r:2".into(),
                founders: None,
            })
        );
    }

    #[test]
    fn join_and_snapshot_payloads_roundtrip_and_refuse_damage() {
        let q = JoinRequest {
            node_id: 3,
            host: "127.0.0.1".into(),
            port: 9095,
            rpc_addr: "127.0.0.1:33148".into(),
            rack: Some("r1".into()),
        };
        assert_eq!(JoinRequest::decode(q.encode()), Ok(q.clone()));
        let q2 = JoinRequest { rack: None, ..q };
        assert_eq!(JoinRequest::decode(q2.encode()), Ok(q2.clone()));
        let a = JoinAnswer {
            revision: 17,
            founders: vec![0, 1, 2],
        };
        assert_eq!(JoinAnswer::decode(a.encode()), Ok(a.clone()));
        let s = SnapshotRequest { min_revision: 9 };
        assert_eq!(SnapshotRequest::decode(s.encode()), Ok(s));
        let (qb, ab, sb) = (q2.encode(), a.encode(), s.encode());
        for cut in 0..qb.len() {
            assert!(JoinRequest::decode(qb.slice(0..cut)).is_err(), "cut {cut}");
        }
        for cut in 0..ab.len() {
            assert!(JoinAnswer::decode(ab.slice(0..cut)).is_err(), "cut {cut}");
        }
        for cut in 0..sb.len() {
            assert!(
                SnapshotRequest::decode(sb.slice(0..cut)).is_err(),
                "cut {cut}"
            );
        }
        // A founder count of 2^32-1 in a short answer: refused before allocating.
        let mut b = BytesMut::new();
        b.put_u16_le(PAYLOAD_VERSION);
        b.put_u64_le(1);
        b.put_u32_le(u32::MAX);
        assert_eq!(JoinAnswer::decode(b.freeze()), Err(PayloadError::Count));
    }
}
