//! `__consumer_offsets` record keys and values, in Kafka's own schemas.
//!
//! Layouts follow apache/kafka `group-coordinator/src/main/resources/common/message/`
//! (`OffsetCommitKey`, `OffsetCommitValue`, `GroupMetadataKey`, `GroupMetadataValue`):
//! big-endian Kafka primitives, each key and value prefixed by an int16 version. Freshet
//! writes OffsetCommitValue v3 and GroupMetadataValue v3 (the last non-flexible versions,
//! which every Kafka tool reading the topic understands) and reads versions 0–4 of both.
//! `docs/design/groups.md` lists every field. Pure functions; usable on any core.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::RecordError;

/// Key version of an offset commit (versions 0 and 1 share the layout).
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of group metadata.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// Value version Freshet writes for offset commits.
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// Value version Freshet writes for group metadata.
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// A decoded record key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

/// A decoded OffsetCommitValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// -1 when unknown (versions < 3).
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Only version 1 carries it; -1 otherwise.
    pub expire_timestamp_ms: i64,
}

/// One member inside a GroupMetadataValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A decoded GroupMetadataValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// -1 when unknown (versions < 2).
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

// ---------------------------------------------------------------- encoding

fn put_string(b: &mut BytesMut, s: &str) {
    assert!(
        s.len() <= i16::MAX as usize,
        "string of {} bytes exceeds the int16 length of a Kafka string",
        s.len()
    );
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => b.put_i16(-1),
        Some(s) => put_string(b, s),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    assert!(v.len() <= i32::MAX as usize, "bytes field too large");
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

/// OffsetCommitKey (key version 1): group, topic, partition.
pub fn encode_offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + 2 + group.len() + 2 + topic.len() + 4);
    b.put_i16(OFFSET_COMMIT_KEY_VERSION);
    put_string(&mut b, group);
    put_string(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

/// GroupMetadataKey (key version 2): group.
pub fn encode_group_key(group: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + group.len());
    b.put_i16(GROUP_METADATA_KEY_VERSION);
    put_string(&mut b, group);
    b.freeze()
}

/// OffsetCommitValue v3: offset, leaderEpoch, metadata, commitTimestamp.
pub fn encode_offset_value(v: &OffsetValue) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + 8 + 4 + 2 + v.metadata.len() + 8);
    b.put_i16(OFFSET_COMMIT_VALUE_VERSION);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_string(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp_ms);
    b.freeze()
}

/// GroupMetadataValue v3 (see the module doc).
pub fn encode_group_value(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::with_capacity(128);
    b.put_i16(GROUP_METADATA_VALUE_VERSION);
    put_string(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_nullable_string(&mut b, v.protocol.as_deref());
    put_nullable_string(&mut b, v.leader.as_deref());
    b.put_i64(v.current_state_timestamp_ms);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_string(&mut b, &m.member_id);
        put_nullable_string(&mut b, m.group_instance_id.as_deref());
        put_string(&mut b, &m.client_id);
        put_string(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

// ---------------------------------------------------------------- decoding

/// Cursor over a record key or value; `flexible` selects compact lengths (KIP-482).
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    flexible: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            flexible: false,
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if self.buf.len() - self.pos < n {
            return Err(RecordError::Truncated(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, RecordError> {
        let s = self.take(2, what)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, RecordError> {
        let s = self.take(4, what)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(i64::from_be_bytes(a))
    }

    fn uvarint(&mut self, what: &'static str) -> Result<u32, RecordError> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.take(1, what)?[0];
            v |= ((b & 0x7f) as u32) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::Truncated(what))
    }

    /// Length of a string/bytes/array: -1 means null.
    fn len(&mut self, wide: bool, what: &'static str) -> Result<i32, RecordError> {
        if self.flexible {
            Ok(self.uvarint(what)? as i32 - 1)
        } else if wide {
            self.i32(what)
        } else {
            Ok(self.i16(what)? as i32)
        }
    }

    fn nullable_string(&mut self, what: &'static str) -> Result<Option<String>, RecordError> {
        let n = self.len(false, what)?;
        if n < 0 {
            return Ok(None);
        }
        let s = self.take(n as usize, what)?;
        String::from_utf8(s.to_vec())
            .map(Some)
            .map_err(|_| RecordError::InvalidUtf8(what))
    }

    fn string(&mut self, what: &'static str) -> Result<String, RecordError> {
        self.nullable_string(what)?
            .ok_or(RecordError::NegativeLength(-1, what))
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, RecordError> {
        let n = self.len(true, what)?;
        if n < 0 {
            return Err(RecordError::NegativeLength(n, what));
        }
        Ok(Bytes::copy_from_slice(self.take(n as usize, what)?))
    }

    fn array_len(&mut self, what: &'static str) -> Result<usize, RecordError> {
        let n = self.len(true, what)?;
        if n < 0 {
            return Err(RecordError::NegativeLength(n, what));
        }
        Ok(n as usize)
    }

    /// Skips a tagged-field section (flexible versions only).
    fn tagged_fields(&mut self) -> Result<(), RecordError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint("tagged field count")?;
        for _ in 0..count {
            self.uvarint("tag")?;
            let size = self.uvarint("tag size")? as usize;
            self.take(size, "tagged field")?;
        }
        Ok(())
    }
}

/// Decodes a `__consumer_offsets` record key.
pub fn decode_key(key: &[u8]) -> Result<RecordKey, RecordError> {
    let mut r = Reader::new(key);
    match r.i16("key version")? {
        0 | 1 => Ok(RecordKey::Offset {
            group: r.string("group")?,
            topic: r.string("topic")?,
            partition: r.i32("partition")?,
        }),
        2 => Ok(RecordKey::Group {
            group: r.string("group")?,
        }),
        v => Err(RecordError::UnknownKeyVersion(v)),
    }
}

/// Decodes an OffsetCommitValue of any version 0–4.
pub fn decode_offset_value(value: &[u8]) -> Result<OffsetValue, RecordError> {
    let mut r = Reader::new(value);
    let version = r.i16("value version")?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnsupportedValueVersion(
            version,
            "OffsetCommitValue",
        ));
    }
    r.flexible = version >= 4;
    let offset = r.i64("offset")?;
    let leader_epoch = if version >= 3 {
        r.i32("leaderEpoch")?
    } else {
        -1
    };
    let metadata = r.string("metadata")?;
    let commit_timestamp_ms = r.i64("commitTimestamp")?;
    let expire_timestamp_ms = if version == 1 {
        r.i64("expireTimestamp")?
    } else {
        -1
    };
    r.tagged_fields()?;
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
        expire_timestamp_ms,
    })
}

/// Decodes a GroupMetadataValue of any version 0–4.
pub fn decode_group_value(value: &[u8]) -> Result<GroupValue, RecordError> {
    let mut r = Reader::new(value);
    let version = r.i16("value version")?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnsupportedValueVersion(
            version,
            "GroupMetadataValue",
        ));
    }
    r.flexible = version >= 4;
    let protocol_type = r.string("protocolType")?;
    let generation = r.i32("generation")?;
    let protocol = r.nullable_string("protocol")?;
    let leader = r.nullable_string("leader")?;
    let current_state_timestamp_ms = if version >= 2 {
        r.i64("currentStateTimestamp")?
    } else {
        -1
    };
    let n = r.array_len("members")?;
    let mut members = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let member_id = r.string("memberId")?;
        let group_instance_id = if version >= 3 {
            r.nullable_string("groupInstanceId")?
        } else {
            None
        };
        let client_id = r.string("clientId")?;
        let client_host = r.string("clientHost")?;
        let rebalance_timeout_ms = if version >= 1 {
            r.i32("rebalanceTimeout")?
        } else {
            -1
        };
        let session_timeout_ms = r.i32("sessionTimeout")?;
        let rebalance_timeout_ms = if version >= 1 {
            rebalance_timeout_ms
        } else {
            session_timeout_ms
        };
        let subscription = r.bytes("subscription")?;
        let assignment = r.bytes("assignment")?;
        r.tagged_fields()?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    r.tagged_fields()?;
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

/// Topics named in a consumer-protocol subscription (`ConsumerProtocolSubscription`, any
/// version: the topic array comes first and the schema is not flexible). Used by
/// OffsetDelete (KIP-496) to refuse deleting offsets of subscribed topics.
pub fn subscription_topics(metadata: &[u8]) -> Result<Vec<String>, RecordError> {
    let mut r = Reader::new(metadata);
    let _version = r.i16("subscription version")?;
    let n = r.array_len("topics")?;
    let mut topics = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        topics.push(r.string("topic")?);
    }
    Ok(topics)
}
