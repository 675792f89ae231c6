//! The internal RPC frame between nodes: one [`Envelope`] per frame, little-endian, versioned,
//! checksummed. The byte layout is documented field by field in docs/design/replication.md
//! ("Internal RPC frame"); this module is its only encoder and decoder.
//!
//! Decoding is total: any byte string yields either an envelope or a [`FrameError`], never a
//! panic, and every count is bounded by the bytes actually present, so a hostile or corrupt
//! peer cannot make the receiver allocate more than the frame it sent.
//!
//! Ownership: pure functions; usable from any core.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raft::eraftpb::{
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};

use crate::store::SnapshotData;
use crate::transport::{Beat, Envelope};

/// `FRPC` as the first four bytes after the length.
pub const FRAME_MAGIC: [u8; 4] = *b"FRPC";
/// Current frame version.
pub const FRAME_VERSION: u16 = 1;
/// Frame kind: a Raft envelope.
pub const KIND_ENVELOPE: u16 = 1;
/// Bytes of the length prefix.
pub const FRAME_LEN_BYTES: usize = 4;

/// Why a frame was refused (the connection is closed; Raft retries over a new one).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix exceeds the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Wrong magic, version or kind.
    #[error("unsupported frame: {0}")]
    Unsupported(&'static str),
    /// Truncated or inconsistent contents.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// CRC32C mismatch.
    #[error("frame checksum mismatch")]
    Checksum,
    /// The envelope holds something this version cannot carry (a snapshot).
    #[error("cannot encode: {0}")]
    Unencodable(&'static str),
}

fn msg_type_code(t: MessageType) -> Option<u8> {
    use MessageType::*;
    match t {
        MsgAppend
        | MsgAppendResponse
        | MsgRequestVote
        | MsgRequestVoteResponse
        | MsgHeartbeat
        | MsgHeartbeatResponse
        | MsgTransferLeader
        | MsgTimeoutNow
        | MsgReadIndex
        | MsgReadIndexResp
        | MsgRequestPreVote
        | MsgRequestPreVoteResponse
        | MsgSnapshot => Some(t as i32 as u8),
        // Local messages never travel.
        _ => None,
    }
}

fn msg_type_from(code: u8) -> Option<MessageType> {
    use MessageType::*;
    Some(match code {
        3 => MsgAppend,
        4 => MsgAppendResponse,
        5 => MsgRequestVote,
        6 => MsgRequestVoteResponse,
        7 => MsgSnapshot,
        8 => MsgHeartbeat,
        9 => MsgHeartbeatResponse,
        13 => MsgTransferLeader,
        14 => MsgTimeoutNow,
        15 => MsgReadIndex,
        16 => MsgReadIndexResp,
        17 => MsgRequestPreVote,
        18 => MsgRequestPreVoteResponse,
        _ => return None,
    })
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_u32_le(v.len() as u32);
    b.put_slice(v);
}

fn put_ids(b: &mut BytesMut, ids: &[u64]) {
    b.put_u32_le(ids.len() as u32);
    for id in ids {
        b.put_u64_le(*id);
    }
}

/// The snapshot block of a `MsgSnapshot` (§7; only a position travels, see
/// [`SnapshotData`]): `index:u64, term:u64, auto_leave:u8, voters, learners,
/// voters_outgoing, learners_next` (each `count:u32, ids:u64…`), `data:bytes`.
fn put_snapshot(b: &mut BytesMut, s: &Snapshot) {
    let md = s.get_metadata();
    let cs = md.get_conf_state();
    b.put_u64_le(md.index);
    b.put_u64_le(md.term);
    b.put_u8(u8::from(cs.auto_leave));
    put_ids(b, &cs.voters);
    put_ids(b, &cs.learners);
    put_ids(b, &cs.voters_outgoing);
    put_ids(b, &cs.learners_next);
    put_bytes(b, &s.data);
}

fn put_beats(b: &mut BytesMut, beats: &[Beat]) {
    b.put_u32_le(beats.len() as u32);
    for beat in beats {
        b.put_u64_le(beat.group);
        b.put_u64_le(beat.term);
        b.put_u64_le(beat.commit);
        put_bytes(b, &beat.context);
    }
}

/// Encodes `env` as one frame (length prefix included).
pub fn encode_frame(env: &Envelope) -> Result<Bytes, FrameError> {
    let mut b = BytesMut::with_capacity(64);
    b.put_u32_le(0); // length, patched below
    b.put_slice(&FRAME_MAGIC);
    b.put_u16_le(FRAME_VERSION);
    b.put_u16_le(KIND_ENVELOPE);
    b.put_u64_le(env.from);
    b.put_u64_le(env.to);
    b.put_u32_le(env.messages.len() as u32);
    for (group, m) in &env.messages {
        let code = msg_type_code(m.get_msg_type())
            .ok_or(FrameError::Unencodable("message type does not travel"))?;
        // Only a MsgSnapshot carries a snapshot, and it always does.
        let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
        if m.snapshot.is_some() != snapshot {
            return Err(FrameError::Unencodable(
                "snapshot on a message that cannot carry it",
            ));
        }
        b.put_u64_le(*group);
        b.put_u8(code);
        b.put_u64_le(m.to);
        b.put_u64_le(m.from);
        b.put_u64_le(m.term);
        b.put_u64_le(m.log_term);
        b.put_u64_le(m.index);
        b.put_u64_le(m.commit);
        b.put_u64_le(m.commit_term);
        b.put_u64_le(m.request_snapshot);
        b.put_u8(u8::from(m.reject));
        b.put_u64_le(m.reject_hint);
        b.put_i64_le(m.priority);
        put_bytes(&mut b, &m.context);
        b.put_u32_le(m.entries.len() as u32);
        for e in m.entries.iter() {
            b.put_u8(e.get_entry_type() as i32 as u8);
            b.put_u64_le(e.term);
            b.put_u64_le(e.index);
            b.put_u8(u8::from(e.sync_log));
            put_bytes(&mut b, &e.context);
            put_bytes(&mut b, &e.data);
        }
        if snapshot {
            put_snapshot(&mut b, m.get_snapshot());
        }
    }
    put_beats(&mut b, &env.heartbeats);
    put_beats(&mut b, &env.heartbeat_responses);
    let crc = crc32c::crc32c(&b[FRAME_LEN_BYTES..]);
    b.put_u32_le(crc);
    let len = (b.len() - FRAME_LEN_BYTES) as u32;
    b[0..4].copy_from_slice(&len.to_le_bytes());
    Ok(b.freeze())
}

/// Reads the length prefix of a frame: `Ok(None)` if fewer than 4 bytes are buffered,
/// otherwise the number of bytes that follow it.
pub fn frame_len(buf: &[u8], frame_bytes_max: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < FRAME_LEN_BYTES {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len > frame_bytes_max {
        return Err(FrameError::TooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    Ok(Some(len))
}

struct Rd {
    b: Bytes,
}

impl Rd {
    fn need(&self, n: usize) -> Result<(), FrameError> {
        if self.b.remaining() < n {
            return Err(FrameError::Malformed("truncated"));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        self.need(1)?;
        Ok(self.b.get_u8())
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        self.need(2)?;
        Ok(self.b.get_u16_le())
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        self.need(4)?;
        Ok(self.b.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        self.need(8)?;
        Ok(self.b.get_u64_le())
    }
    fn bool(&mut self) -> Result<bool, FrameError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FrameError::Malformed("bool not 0/1")),
        }
    }
    fn bytes(&mut self) -> Result<Bytes, FrameError> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.b.split_to(n))
    }
    /// A count of items each at least `min_item_bytes` long, bounded by what is left.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, FrameError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_bytes) > self.b.remaining() {
            return Err(FrameError::Malformed("count exceeds frame"));
        }
        Ok(n)
    }
    fn ids(&mut self) -> Result<Vec<u64>, FrameError> {
        let n = self.count(8)?;
        (0..n).map(|_| self.u64()).collect()
    }
    fn snapshot(&mut self) -> Result<Snapshot, FrameError> {
        let index = self.u64()?;
        let term = self.u64()?;
        let conf_state = ConfState {
            auto_leave: self.bool()?,
            voters: self.ids()?,
            learners: self.ids()?,
            voters_outgoing: self.ids()?,
            learners_next: self.ids()?,
            ..Default::default()
        };
        let data = self.bytes()?;
        if index == 0 {
            return Err(FrameError::Malformed("snapshot index 0"));
        }
        if SnapshotData::decode(&data).is_none() {
            return Err(FrameError::Malformed("snapshot data"));
        }
        let mut md = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        md.set_conf_state(conf_state);
        let mut s = Snapshot {
            data,
            ..Default::default()
        };
        s.set_metadata(md);
        Ok(s)
    }
    fn beats(&mut self) -> Result<Vec<Beat>, FrameError> {
        let n = self.count(28)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(Beat {
                group: self.u64()?,
                term: self.u64()?,
                commit: self.u64()?,
                context: self.bytes()?,
            });
        }
        Ok(out)
    }
}

/// Decodes the body of one frame (the bytes after the length prefix).
pub fn decode_frame(body: Bytes) -> Result<Envelope, FrameError> {
    if body.len() < 4 + 2 + 2 + 4 {
        return Err(FrameError::Malformed("shorter than a frame header"));
    }
    let (content, crc) = body.split_at(body.len() - 4);
    if crc32c::crc32c(content) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(FrameError::Checksum);
    }
    let mut r = Rd {
        b: body.slice(0..body.len() - 4),
    };
    r.need(4)?;
    if r.b.split_to(4)[..] != FRAME_MAGIC {
        return Err(FrameError::Unsupported("bad magic"));
    }
    if r.u16()? != FRAME_VERSION {
        return Err(FrameError::Unsupported("unknown version"));
    }
    if r.u16()? != KIND_ENVELOPE {
        return Err(FrameError::Unsupported("unknown kind"));
    }
    let mut env = Envelope::new(r.u64()?, r.u64()?);
    let n = r.count(98)?;
    env.messages.reserve(n);
    for _ in 0..n {
        let group = r.u64()?;
        let t = msg_type_from(r.u8()?).ok_or(FrameError::Malformed("message type"))?;
        let mut m = Message {
            to: r.u64()?,
            from: r.u64()?,
            term: r.u64()?,
            log_term: r.u64()?,
            index: r.u64()?,
            commit: r.u64()?,
            commit_term: r.u64()?,
            request_snapshot: r.u64()?,
            reject: r.bool()?,
            reject_hint: r.u64()?,
            priority: r.u64()? as i64,
            context: r.bytes()?,
            ..Default::default()
        };
        m.set_msg_type(t);
        if m.from != env.from || m.to != env.to {
            return Err(FrameError::Malformed(
                "message addressed differently from its frame",
            ));
        }
        let ne = r.count(26)?;
        let mut entries = Vec::with_capacity(ne);
        for _ in 0..ne {
            let ty = match r.u8()? {
                0 => EntryType::EntryNormal,
                1 => EntryType::EntryConfChange,
                2 => EntryType::EntryConfChangeV2,
                _ => return Err(FrameError::Malformed("entry type")),
            };
            let mut e = Entry {
                term: r.u64()?,
                index: r.u64()?,
                sync_log: r.bool()?,
                context: r.bytes()?,
                data: r.bytes()?,
                ..Default::default()
            };
            e.set_entry_type(ty);
            entries.push(e);
        }
        m.entries = entries.into();
        if t == MessageType::MsgSnapshot {
            m.set_snapshot(r.snapshot()?);
        }
        env.messages.push((group, m));
    }
    env.heartbeats = r.beats()?;
    env.heartbeat_responses = r.beats()?;
    if r.b.has_remaining() {
        return Err(FrameError::Malformed("trailing bytes"));
    }
    Ok(env)
}

// ------------------------------------------------------------------ request/response frames
//
// Kinds 2 (request) and 3 (response) share the listener, length prefix, magic, version and
// CRC32C trailer with the envelope frame. Layout (little-endian), after `frame_len`:
// `magic, version:u16, kind:u16, id:u64, method|status:u16, payload:bytes, crc:u32`.

/// Frame kind: a request (`id`, `method`, payload).
pub const KIND_REQUEST: u16 = 2;
/// Frame kind: the response to a request (`id`, `status`, payload).
pub const KIND_RESPONSE: u16 = 3;
/// Bytes of a request/response frame body other than the payload: magic, version, kind, id,
/// method/status, payload length, crc.
pub const CALL_FRAME_OVERHEAD_BYTES: usize = 4 + 2 + 2 + 8 + 2 + 4 + 4;

/// Response status codes (the `status` field of a kind-3 frame).
pub mod status {
    /// The handler succeeded; the payload is its answer.
    pub const OK: u16 = 0;
    /// No handler for the method on the receiving node.
    pub const UNKNOWN_METHOD: u16 = 1;
    /// The handler failed; the payload is a UTF-8 message.
    pub const ERROR: u16 = 2;
    /// The receiver cannot serve it now (starting, stopping, overloaded); retry later.
    pub const UNAVAILABLE: u16 = 3;
}

/// A node-to-node request (frame kind 2). Plain value: `Send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcRequest {
    /// Chosen by the caller, unique among its in-flight calls on one connection.
    pub id: u64,
    /// What to do (the engine's method registry assigns numbers).
    pub method: u16,
    /// Method-specific bytes.
    pub payload: Bytes,
}

/// The answer to an [`RpcRequest`] (frame kind 3). Plain value: `Send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcResponse {
    /// The request's id.
    pub id: u64,
    /// One of [`status`].
    pub status: u16,
    /// The answer (`OK`) or a UTF-8 message (errors).
    pub payload: Bytes,
}

/// Any decoded frame.
#[derive(Debug, Clone)]
pub enum Frame {
    /// Kind 1: Raft traffic.
    Envelope(Envelope),
    /// Kind 2.
    Request(RpcRequest),
    /// Kind 3.
    Response(RpcResponse),
}

fn encode_call(kind: u16, id: u64, code: u16, payload: &[u8]) -> Bytes {
    let mut b =
        BytesMut::with_capacity(FRAME_LEN_BYTES + CALL_FRAME_OVERHEAD_BYTES + payload.len());
    b.put_u32_le(0);
    b.put_slice(&FRAME_MAGIC);
    b.put_u16_le(FRAME_VERSION);
    b.put_u16_le(kind);
    b.put_u64_le(id);
    b.put_u16_le(code);
    put_bytes(&mut b, payload);
    let crc = crc32c::crc32c(&b[FRAME_LEN_BYTES..]);
    b.put_u32_le(crc);
    let len = (b.len() - FRAME_LEN_BYTES) as u32;
    b[0..4].copy_from_slice(&len.to_le_bytes());
    b.freeze()
}

/// Encodes a request frame (length prefix included).
pub fn encode_request(req: &RpcRequest) -> Bytes {
    encode_call(KIND_REQUEST, req.id, req.method, &req.payload)
}

/// Encodes a response frame (length prefix included).
pub fn encode_response(resp: &RpcResponse) -> Bytes {
    encode_call(KIND_RESPONSE, resp.id, resp.status, &resp.payload)
}

/// The kind field of a frame body, if the body is long enough to hold one (not validated).
fn peek_kind(body: &[u8]) -> Option<u16> {
    body.get(6..8)
        .map(|k| u16::from_le_bytes(k.try_into().expect("2 bytes")))
}

/// Decodes the body of any frame (the bytes after the length prefix): an envelope (kind 1,
/// through [`decode_frame`]), a request (2) or a response (3). Total like [`decode_frame`].
pub fn decode_any(body: Bytes) -> Result<Frame, FrameError> {
    match peek_kind(&body) {
        Some(KIND_REQUEST) | Some(KIND_RESPONSE) => {}
        _ => return decode_frame(body).map(Frame::Envelope),
    }
    if body.len() < CALL_FRAME_OVERHEAD_BYTES {
        return Err(FrameError::Malformed("shorter than a call frame"));
    }
    let (content, crc) = body.split_at(body.len() - 4);
    if crc32c::crc32c(content) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(FrameError::Checksum);
    }
    let mut r = Rd {
        b: body.slice(0..body.len() - 4),
    };
    if r.b.split_to(4)[..] != FRAME_MAGIC {
        return Err(FrameError::Unsupported("bad magic"));
    }
    if r.u16()? != FRAME_VERSION {
        return Err(FrameError::Unsupported("unknown version"));
    }
    let kind = r.u16()?;
    let id = r.u64()?;
    let code = r.u16()?;
    let payload = r.bytes()?;
    if r.b.has_remaining() {
        return Err(FrameError::Malformed("trailing bytes"));
    }
    Ok(if kind == KIND_REQUEST {
        Frame::Request(RpcRequest {
            id,
            method: code,
            payload,
        })
    } else {
        Frame::Response(RpcResponse {
            id,
            status: code,
            payload,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SimRng;

    fn sample() -> Envelope {
        let mut env = Envelope::new(1, 2);
        let mut m = Message {
            from: 1,
            to: 2,
            term: 7,
            log_term: 6,
            index: 41,
            commit: 40,
            commit_term: 6,
            reject: true,
            reject_hint: 39,
            priority: -3,
            context: Bytes::from_static(b"ctx"),
            ..Default::default()
        };
        m.set_msg_type(MessageType::MsgAppend);
        let mut e = Entry {
            term: 7,
            index: 42,
            data: crate::batch::encode_batch(0, 5, -1, &[(None, Some(b"hello"))]),
            ..Default::default()
        };
        e.set_entry_type(EntryType::EntryNormal);
        m.entries = vec![e.clone(), Entry::default()].into();
        env.messages.push((9, m));
        let mut v = Message {
            from: 1,
            to: 2,
            term: 8,
            ..Default::default()
        };
        v.set_msg_type(MessageType::MsgRequestPreVote);
        env.messages.push((3, v));
        env.messages.push((4, snapshot_message()));
        env.heartbeats.push(Beat {
            group: 5,
            term: 7,
            commit: 12,
            context: Bytes::new(),
        });
        env.heartbeat_responses.push(Beat {
            group: 6,
            term: 2,
            commit: 1,
            context: Bytes::from_static(b"r"),
        });
        env
    }

    /// A MsgSnapshot as a leader sends it to a follower behind its log start (§7).
    fn snapshot_message() -> Message {
        let mut md = SnapshotMetadata {
            index: 120,
            term: 6,
            ..Default::default()
        };
        md.set_conf_state(ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Default::default()
        });
        let mut snap = Snapshot {
            data: SnapshotData {
                log_offset: 4000,
                kafka_offset: 3900,
            }
            .encode(),
            ..Default::default()
        };
        snap.set_metadata(md);
        let mut m = Message {
            from: 1,
            to: 2,
            term: 7,
            ..Default::default()
        };
        m.set_msg_type(MessageType::MsgSnapshot);
        m.set_snapshot(snap);
        m
    }

    fn same(a: &Envelope, b: &Envelope) {
        assert_eq!((a.from, a.to), (b.from, b.to));
        assert_eq!(a.heartbeats, b.heartbeats);
        assert_eq!(a.heartbeat_responses, b.heartbeat_responses);
        assert_eq!(a.messages.len(), b.messages.len());
        for ((ga, ma), (gb, mb)) in a.messages.iter().zip(&b.messages) {
            assert_eq!(ga, gb);
            assert_eq!(ma, mb);
        }
    }

    #[test]
    fn envelope_roundtrips_through_a_frame() {
        let env = sample();
        let f = encode_frame(&env).unwrap();
        let len = frame_len(&f, 1 << 20).unwrap().unwrap();
        assert_eq!(len + 4, f.len());
        let back = decode_frame(f.slice(4..)).unwrap();
        same(&env, &back);
        assert_eq!(frame_len(&f[..3], 1 << 20), Ok(None));
        assert!(matches!(
            frame_len(&f, 10),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn local_messages_and_misplaced_snapshots_are_not_encodable() {
        let unencodable = |m: Message| {
            let mut env = Envelope::new(1, 2);
            env.messages.push((1, m));
            matches!(encode_frame(&env), Err(FrameError::Unencodable(_)))
        };
        let mut m = Message {
            from: 1,
            to: 2,
            ..Default::default()
        };
        m.set_msg_type(MessageType::MsgHup);
        assert!(unencodable(m));
        let mut no_snap = snapshot_message();
        no_snap.snapshot = Default::default();
        assert!(unencodable(no_snap), "MsgSnapshot without its snapshot");
        let mut append_with_snap = snapshot_message();
        append_with_snap.set_msg_type(MessageType::MsgAppend);
        assert!(unencodable(append_with_snap), "snapshot on an append");
    }

    #[test]
    fn snapshot_message_carries_position_and_membership_section_7() {
        let mut env = Envelope::new(1, 2);
        env.messages.push((8, snapshot_message()));
        let f = encode_frame(&env).unwrap();
        let back = decode_frame(f.slice(4..)).unwrap();
        let (g, m) = &back.messages[0];
        assert_eq!(*g, 8);
        let s = m.get_snapshot();
        assert_eq!((s.get_metadata().index, s.get_metadata().term), (120, 6));
        assert_eq!(s.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
        assert_eq!(s.get_metadata().get_conf_state().learners, vec![4]);
        assert_eq!(
            SnapshotData::decode(&s.data),
            Some(SnapshotData {
                log_offset: 4000,
                kafka_offset: 3900
            })
        );
        // Data that is not a SnapshotData is refused at the frame, before raft-rs sees it.
        let mut bad = snapshot_message();
        bad.mut_snapshot().data = bytes::Bytes::from_static(b"state machine bytes");
        let mut env = Envelope::new(1, 2);
        env.messages.push((8, bad));
        let f = encode_frame(&env).unwrap();
        assert_eq!(
            decode_frame(f.slice(4..)).unwrap_err(),
            FrameError::Malformed("snapshot data")
        );
    }

    #[test]
    fn corrupt_or_truncated_frames_are_refused_without_panicking() {
        let f = encode_frame(&sample()).unwrap();
        let body = f.slice(4..);
        for cut in 0..body.len() {
            assert!(
                decode_frame(body.slice(0..cut)).is_err(),
                "truncated at {cut}"
            );
        }
        for i in 0..body.len() {
            let mut c = body.to_vec();
            c[i] ^= 0x04;
            assert!(
                decode_frame(Bytes::from(c)).is_err(),
                "flip at {i} accepted"
            );
        }
        // Random garbage with a valid checksum exercises the field checks.
        let mut rng = SimRng::new(4);
        for _ in 0..2_000 {
            let n = rng.below(200) as usize;
            let mut c: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            if n >= 8 && rng.chance(500_000) {
                c[0..4].copy_from_slice(&FRAME_MAGIC);
                c[4..6].copy_from_slice(&FRAME_VERSION.to_le_bytes());
                c[6..8].copy_from_slice(&KIND_ENVELOPE.to_le_bytes());
            }
            let crc = crc32c::crc32c(&c);
            c.extend_from_slice(&crc.to_le_bytes());
            let _ = decode_frame(Bytes::from(c));
        }
    }
}

#[cfg(test)]
mod call_tests {
    use super::*;
    use crate::rng::SimRng;

    #[test]
    fn requests_and_responses_roundtrip_and_share_the_frame_header() {
        let req = RpcRequest {
            id: u64::MAX - 1,
            method: 7,
            payload: Bytes::from_static(b"hello node"),
        };
        let f = encode_request(&req);
        assert_eq!(frame_len(&f, 1 << 20).unwrap(), Some(f.len() - 4));
        assert_eq!(&f[4..8], &FRAME_MAGIC);
        match decode_any(f.slice(4..)).unwrap() {
            Frame::Request(r) => assert_eq!(r, req),
            other => panic!("decoded {other:?}"),
        }
        let resp = RpcResponse {
            id: 3,
            status: status::ERROR,
            payload: Bytes::new(),
        };
        let f = encode_response(&resp);
        assert_eq!(f.len(), FRAME_LEN_BYTES + CALL_FRAME_OVERHEAD_BYTES);
        match decode_any(f.slice(4..)).unwrap() {
            Frame::Response(r) => assert_eq!(r, resp),
            other => panic!("decoded {other:?}"),
        }
        // Envelopes still decode through decode_any, and a request is not an envelope.
        let mut env = Envelope::new(1, 2);
        env.heartbeats.push(Beat {
            group: 4,
            term: 1,
            commit: 0,
            context: Bytes::new(),
        });
        let f = encode_frame(&env).unwrap();
        match decode_any(f.slice(4..)).unwrap() {
            Frame::Envelope(e) => assert_eq!(e.heartbeats, env.heartbeats),
            other => panic!("decoded {other:?}"),
        }
        let f = encode_request(&req);
        assert!(decode_frame(f.slice(4..)).is_err());
    }

    #[test]
    fn damaged_call_frames_are_refused_without_panicking() {
        let f = encode_request(&RpcRequest {
            id: 9,
            method: 1,
            payload: Bytes::from_static(b"0123456789"),
        });
        let body = f.slice(4..);
        for cut in 0..body.len() {
            assert!(decode_any(body.slice(0..cut)).is_err(), "cut at {cut}");
        }
        for i in 0..body.len() {
            for bit in [0x01u8, 0x80] {
                let mut c = body.to_vec();
                c[i] ^= bit;
                assert!(decode_any(Bytes::from(c)).is_err(), "flip at {i}");
            }
        }
        // A payload length larger than the frame, with a valid checksum: refused, nothing
        // allocated for it.
        let mut c = body[..body.len() - 4].to_vec();
        let at = 4 + 2 + 2 + 8 + 2;
        c[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&c);
        c.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_any(Bytes::from(c)).unwrap_err(),
            FrameError::Malformed("truncated")
        );
        // Unknown kind with a valid checksum.
        let mut c = body[..body.len() - 4].to_vec();
        c[6..8].copy_from_slice(&77u16.to_le_bytes());
        let crc = crc32c::crc32c(&c);
        c.extend_from_slice(&crc.to_le_bytes());
        assert!(decode_any(Bytes::from(c)).is_err());
        // Random garbage with a valid checksum and a call header.
        let mut rng = SimRng::new(11);
        for _ in 0..5_000 {
            let n = rng.below(64) as usize;
            let mut c: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            if n >= 8 {
                c[0..4].copy_from_slice(&FRAME_MAGIC);
                c[4..6].copy_from_slice(&FRAME_VERSION.to_le_bytes());
                let kind = if rng.chance(500_000) {
                    KIND_REQUEST
                } else {
                    KIND_RESPONSE
                };
                c[6..8].copy_from_slice(&kind.to_le_bytes());
            }
            let crc = crc32c::crc32c(&c);
            c.extend_from_slice(&crc.to_le_bytes());
            let _ = decode_any(Bytes::from(c));
        }
    }
}
