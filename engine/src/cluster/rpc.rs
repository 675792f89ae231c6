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

/// Payload layout version of HELLO and LEADERS.
pub const PAYLOAD_VERSION: u16 = 1;

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
    fn end(&self) -> Result<(), PayloadError> {
        if self.0.has_remaining() {
            return Err(PayloadError::Trailing);
        }
        Ok(())
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
}

impl Hello {
    /// `version:u16, node_id:i32, cluster_id:str, kafka_addr:str, rpc_addr:str`
    /// (`str` = `len:u16` + UTF-8).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_u16_le(PAYLOAD_VERSION);
        b.put_i32_le(self.node_id);
        put_string(&mut b, &self.cluster_id);
        put_string(&mut b, &self.kafka_addr);
        put_string(&mut b, &self.rpc_addr);
        b.freeze()
    }

    pub fn decode(payload: Bytes) -> Result<Hello, PayloadError> {
        let mut r = Rd(payload);
        r.version()?;
        let h = Hello {
            node_id: r.i32()?,
            cluster_id: r.string()?,
            kafka_addr: r.string()?,
            rpc_addr: r.string()?,
        };
        r.end()?;
        Ok(h)
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
        };
        assert_eq!(Hello::decode(h.encode()), Ok(h));
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
        let mut v2 = h.to_vec();
        v2[0] = 2;
        assert_eq!(
            Hello::decode(Bytes::from(v2)),
            Err(PayloadError::Version(2))
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
}
