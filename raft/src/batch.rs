//! Kafka v2 record batches as Raft entries.
//!
//! One Kafka record batch is one Raft entry. Raft's own entries (the leader's empty entry of
//! §5.4.2, configuration changes) are stored in the same log as Kafka v2 *control* batches
//! (attributes bit 5) carrying one record whose key is a control key with a Freshet-specific
//! type (see [`InternalKind`]). Kafka clients never see them: the offset translator
//! ([`crate::translate`]) gives them no Kafka offset.
//!
//! Layout of a v2 batch (big-endian, as on the Kafka wire):
//! `base_offset:i64 batch_length:i32 partition_leader_epoch:i32 magic:i8 crc:u32
//! attributes:i16 last_offset_delta:i32 base_timestamp:i64 max_timestamp:i64 producer_id:i64
//! producer_epoch:i16 base_sequence:i32 records_count:i32 records...`; the CRC32C covers
//! `attributes..end`, so base offset and leader epoch can be restamped without recomputing it.
//!
//! Ownership: pure functions over bytes; usable from any core.

use bytes::{BufMut, Bytes, BytesMut};
use raft::eraftpb::{Entry, EntryType};

/// Size of the fixed batch header before the records.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Offset of the `attributes` field; the CRC covers from here to the end.
const ATTRIBUTES_AT: usize = 21;
/// Attributes bit marking a control batch (Kafka's `isControl`).
pub const CONTROL_ATTRIBUTE: i16 = 0x20;

/// Errors decoding a batch handed to Raft.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// Shorter than a header, or `batch_length` disagrees with the buffer.
    #[error("batch framing invalid: {0}")]
    Framing(&'static str),
    /// Magic byte other than 2.
    #[error("unsupported magic {0}")]
    Magic(i8),
    /// CRC32C mismatch (Kafka CORRUPT_MESSAGE).
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over attributes..end.
        computed: u32,
    },
    /// A control batch whose key is not a Freshet Raft control key where one was expected.
    #[error("not a Freshet internal control batch")]
    NotInternal,
}

/// The header fields Raft needs from a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (as stamped by whoever wrote it).
    pub base_offset: i64,
    /// Bytes after the `batch_length` field.
    pub batch_length: i32,
    /// Leader epoch = the Raft term of the entry once stored.
    pub partition_leader_epoch: i32,
    /// Kafka attributes.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Number of records.
    pub records_count: i32,
}

impl BatchHeader {
    /// Total size of the batch on the wire.
    pub fn total_bytes(&self) -> usize {
        12 + self.batch_length as usize
    }
    /// True for control batches (transaction markers and Freshet internal entries).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_ATTRIBUTE != 0
    }
    /// How many offsets the batch occupies in the log.
    pub fn offset_count(&self) -> u32 {
        (self.last_offset_delta as u32).wrapping_add(1)
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses the header of the first batch in `b` and checks framing, magic and CRC32C.
pub fn parse_batch(b: &[u8]) -> Result<BatchHeader, BatchError> {
    if b.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Framing("shorter than a batch header"));
    }
    let batch_length = be_i32(b, 8);
    if batch_length < (BATCH_HEADER_BYTES - 12) as i32 {
        return Err(BatchError::Framing("batch_length below header size"));
    }
    if 12 + batch_length as usize > b.len() {
        return Err(BatchError::Framing("batch_length beyond buffer"));
    }
    let magic = b[16] as i8;
    if magic != 2 {
        return Err(BatchError::Magic(magic));
    }
    let end = 12 + batch_length as usize;
    let stored = u32::from_be_bytes(b[17..21].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&b[ATTRIBUTES_AT..end]);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    let last_offset_delta = be_i32(b, 23);
    if last_offset_delta < 0 {
        return Err(BatchError::Framing("negative last_offset_delta"));
    }
    Ok(BatchHeader {
        base_offset: be_i64(b, 0),
        batch_length,
        partition_leader_epoch: be_i32(b, 12),
        attributes: be_i16(b, ATTRIBUTES_AT),
        last_offset_delta,
        records_count: be_i32(b, 57),
    })
}

/// Splits a buffer of whole batches (as returned by a log read) into batches.
pub fn split_batches(mut b: Bytes) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let h = parse_batch(&b)?;
        out.push((h, b.split_to(h.total_bytes())));
    }
    Ok(out)
}

fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> Result<i64, BatchError> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = *b.get(*at).ok_or(BatchError::Framing("varint past end"))?;
        *at += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(BatchError::Framing("varint too long"));
        }
    }
    Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
}

/// One record to encode: key and value (None = null).
pub type RecordKv<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Encodes a v2 batch with base offset 0 and leader epoch -1 (the log restamps both).
pub fn encode_batch(
    attributes: i16,
    base_timestamp_ms: i64,
    producer_id: i64,
    records: &[RecordKv<'_>],
) -> Bytes {
    assert!(!records.is_empty(), "a batch needs at least one record");
    let mut recs = BytesMut::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let mut r = BytesMut::new();
        r.put_i8(0); // record attributes
        put_varint(&mut r, 0); // timestamp delta
        put_varint(&mut r, i as i64); // offset delta
        match k {
            Some(k) => {
                put_varint(&mut r, k.len() as i64);
                r.put_slice(k);
            }
            None => put_varint(&mut r, -1),
        }
        match v {
            Some(v) => {
                put_varint(&mut r, v.len() as i64);
                r.put_slice(v);
            }
            None => put_varint(&mut r, -1),
        }
        put_varint(&mut r, 0); // headers
        put_varint(&mut recs, r.len() as i64);
        recs.put_slice(&r);
    }
    let mut b = BytesMut::with_capacity(BATCH_HEADER_BYTES + recs.len());
    b.put_i64(0);
    b.put_i32((BATCH_HEADER_BYTES - 12 + recs.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0); // CRC, filled below
    b.put_i16(attributes);
    b.put_i32(records.len() as i32 - 1);
    b.put_i64(base_timestamp_ms);
    b.put_i64(base_timestamp_ms);
    b.put_i64(producer_id);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(records.len() as i32);
    b.put_slice(&recs);
    let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// A decoded record: (key, value), None = null.
pub type DecodedRecord = (Option<Bytes>, Option<Bytes>);

/// Returns the (key, value) of every record of a batch (used by tests and the simulator).
pub fn records(batch: &[u8]) -> Result<Vec<DecodedRecord>, BatchError> {
    let h = parse_batch(batch)?;
    let end = h.total_bytes();
    let mut at = BATCH_HEADER_BYTES;
    let mut out = Vec::with_capacity(h.records_count.max(0) as usize);
    for _ in 0..h.records_count {
        let len = get_varint(batch, &mut at)?;
        let rec_end = at + usize::try_from(len).map_err(|_| BatchError::Framing("record len"))?;
        if rec_end > end {
            return Err(BatchError::Framing("record past batch end"));
        }
        at += 1; // attributes
        get_varint(batch, &mut at)?; // timestamp delta
        get_varint(batch, &mut at)?; // offset delta
        let field = |at: &mut usize| -> Result<Option<Bytes>, BatchError> {
            let n = get_varint(batch, at)?;
            if n < 0 {
                return Ok(None);
            }
            let e = *at + n as usize;
            if e > rec_end {
                return Err(BatchError::Framing("field past record end"));
            }
            let v = Bytes::copy_from_slice(&batch[*at..e]);
            *at = e;
            Ok(Some(v))
        };
        let k = field(&mut at)?;
        let v = field(&mut at)?;
        out.push((k, v));
        at = rec_end;
    }
    Ok(out)
}

/// Kinds of Raft-internal entries, stored as Kafka control batches whose single record key
/// is `version:i16 = 0, type:i16` with these types (Kafka itself uses 0 = ABORT, 1 = COMMIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalKind {
    /// A normal entry with empty data: the leader's no-op at the start of its term (§5.4.2).
    Empty = 0x4601,
    /// `EntryConfChange`.
    ConfChange = 0x4602,
    /// `EntryConfChangeV2`.
    ConfChangeV2 = 0x4603,
    /// DeleteRecords' log start (KIP-107), proposed by the partition leader: a normal entry
    /// whose data is this control batch itself, value `version:u16 LE = 1,
    /// kafka_offset:i64 LE` ([`log_start_batch`]). It takes a log offset but no Kafka offset;
    /// every replica applies it on commit (docs/design/replication.md, "DeleteRecords' log
    /// start").
    LogStart = 0x4604,
}

impl InternalKind {
    fn from_type(t: i16) -> Option<Self> {
        match t {
            0x4601 => Some(Self::Empty),
            0x4602 => Some(Self::ConfChange),
            0x4603 => Some(Self::ConfChangeV2),
            0x4604 => Some(Self::LogStart),
            _ => None,
        }
    }
}

/// Whether an entry is Raft-internal (never reaches a Kafka client): Raft's own entries and
/// the log start entries ([`InternalKind::LogStart`]).
pub fn entry_is_internal(e: &Entry) -> bool {
    e.get_entry_type() != EntryType::EntryNormal
        || e.data.is_empty()
        || log_start_of(&e.data).is_some()
}

/// The bytes stored in the log for a Raft entry: the batch itself for a normal entry with
/// data (a Kafka batch, or a log start control batch), a Freshet control batch for Raft's
/// own entries. Value of that internal record: `context_len:u32 LE, context, data`.
pub fn entry_to_batch(e: &Entry) -> Bytes {
    if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
        return e.data.clone();
    }
    let kind = match e.get_entry_type() {
        EntryType::EntryNormal => InternalKind::Empty,
        EntryType::EntryConfChange => InternalKind::ConfChange,
        EntryType::EntryConfChangeV2 => InternalKind::ConfChangeV2,
    };
    let mut key = [0u8; 4];
    key[2..4].copy_from_slice(&(kind as i16).to_be_bytes());
    let mut value = BytesMut::with_capacity(4 + e.context.len() + e.data.len());
    value.put_u32_le(e.context.len() as u32);
    value.put_slice(&e.context);
    value.put_slice(&e.data);
    encode_batch(CONTROL_ATTRIBUTE, 0, -1, &[(Some(&key), Some(&value))])
}

/// If `batch` is a Freshet internal control batch, its kind; None for any other batch
/// (client data and Kafka transaction markers).
pub fn internal_kind(h: &BatchHeader, batch: &[u8]) -> Option<InternalKind> {
    if !h.is_control() || h.records_count != 1 {
        return None;
    }
    let recs = records(batch).ok()?;
    let key = recs.first()?.0.as_ref()?;
    if key.len() != 4 || key[0..2] != [0, 0] {
        return None;
    }
    InternalKind::from_type(i16::from_be_bytes([key[2], key[3]]))
}

/// Rebuilds the Raft entry at `index` from the batch stored in the log; its term is the
/// batch's leader epoch.
pub fn batch_to_entry(batch: Bytes, index: u64) -> Result<Entry, BatchError> {
    let h = parse_batch(&batch)?;
    let mut e = Entry {
        index,
        term: h.partition_leader_epoch as u64,
        ..Default::default()
    };
    match internal_kind(&h, &batch) {
        None | Some(InternalKind::LogStart) => {
            e.set_entry_type(EntryType::EntryNormal);
            e.data = batch.slice(0..h.total_bytes());
        }
        Some(kind) => {
            let recs = records(&batch)?;
            let value = recs[0].1.clone().ok_or(BatchError::NotInternal)?;
            if value.len() < 4 {
                return Err(BatchError::NotInternal);
            }
            let clen = u32::from_le_bytes(value[0..4].try_into().expect("4 bytes")) as usize;
            if 4 + clen > value.len() {
                return Err(BatchError::NotInternal);
            }
            e.context = value.slice(4..4 + clen);
            e.data = value.slice(4 + clen..);
            e.set_entry_type(match kind {
                InternalKind::Empty => EntryType::EntryNormal,
                InternalKind::ConfChange => EntryType::EntryConfChange,
                InternalKind::ConfChangeV2 => EntryType::EntryConfChangeV2,
                InternalKind::LogStart => unreachable!("log start entries are handled above"),
            });
        }
    }
    Ok(e)
}

/// Length of a log start record's value: `version:u16 LE, kafka_offset:i64 LE`.
const LOG_START_VALUE_BYTES: usize = 10;
/// Version of the log start record's value.
const LOG_START_VERSION: u16 = 1;

/// The control batch of a log start entry ([`InternalKind::LogStart`]): DeleteRecords moved
/// the partition's log start to Kafka offset `kafka_offset` (KIP-107). One record, key
/// `version:i16 BE = 0, type:i16 BE = 0x4604` (Kafka's control key layout), value
/// `version:u16 LE = 1, kafka_offset:i64 LE`; timestamps 0, producer id -1, base offset 0
/// and leader epoch -1 until the log stamps them.
pub fn log_start_batch(kafka_offset: i64) -> Bytes {
    assert!(kafka_offset >= 0, "log start {kafka_offset} is negative");
    let mut key = [0u8; 4];
    key[2..4].copy_from_slice(&(InternalKind::LogStart as i16).to_be_bytes());
    let mut value = [0u8; LOG_START_VALUE_BYTES];
    value[0..2].copy_from_slice(&LOG_START_VERSION.to_le_bytes());
    value[2..10].copy_from_slice(&kafka_offset.to_le_bytes());
    encode_batch(CONTROL_ATTRIBUTE, 0, -1, &[(Some(&key), Some(&value))])
}

/// The Kafka offset a log start entry's batch names, or None for any other batch (cheap for
/// data batches: only control batches are decoded). A log start batch whose value does not
/// decode is None too (it cannot be proposed: the leader builds it with
/// [`log_start_batch`]).
pub fn log_start_of(batch: &[u8]) -> Option<i64> {
    if batch.len() < BATCH_HEADER_BYTES || be_i16(batch, ATTRIBUTES_AT) & CONTROL_ATTRIBUTE == 0 {
        return None;
    }
    let h = parse_batch(batch).ok()?;
    if internal_kind(&h, batch) != Some(InternalKind::LogStart) {
        return None;
    }
    let value = records(batch).ok()?.pop()?.1?;
    if value.len() != LOG_START_VALUE_BYTES || value[0..2] != LOG_START_VERSION.to_le_bytes() {
        return None;
    }
    let k = i64::from_le_bytes(value[2..10].try_into().expect("8 bytes"));
    (k >= 0).then_some(k)
}

/// Returns a copy of `batch` with base offset and leader epoch restamped, as the log does on
/// append (both lie outside the CRC).
pub fn restamp(batch: &[u8], base_offset: i64, leader_epoch: i32) -> Bytes {
    let mut b = BytesMut::from(batch);
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_batch_roundtrips_and_keeps_its_crc_when_restamped() {
        let b = encode_batch(
            0,
            1_000,
            42,
            &[(Some(b"k"), Some(b"v1")), (None, Some(b"v2"))],
        );
        let h = parse_batch(&b).unwrap();
        assert_eq!(h.records_count, 2);
        assert_eq!(h.offset_count(), 2);
        assert!(!h.is_control());
        assert_eq!(h.total_bytes(), b.len());
        let r = records(&b).unwrap();
        assert_eq!(r[0].0.as_deref(), Some(&b"k"[..]));
        assert_eq!(r[1].1.as_deref(), Some(&b"v2"[..]));
        let s = restamp(&b, 77, 5);
        let hs = parse_batch(&s).unwrap();
        assert_eq!(hs.base_offset, 77);
        assert_eq!(hs.partition_leader_epoch, 5);
    }

    #[test]
    fn corrupted_batch_is_rejected_by_crc() {
        let b = encode_batch(0, 1, -1, &[(None, Some(b"payload"))]);
        let mut m = b.to_vec();
        let last = m.len() - 2;
        m[last] ^= 0xff;
        assert!(matches!(parse_batch(&m), Err(BatchError::Crc { .. })));
        assert!(matches!(parse_batch(&m[..30]), Err(BatchError::Framing(_))));
    }

    #[test]
    fn internal_entries_roundtrip_as_control_batches_and_data_entries_stay_data() {
        for (ty, data) in [
            (EntryType::EntryNormal, Bytes::new()),
            (EntryType::EntryConfChange, Bytes::from_static(b"cc")),
            (EntryType::EntryConfChangeV2, Bytes::from_static(b"ccv2")),
        ] {
            let mut e = Entry {
                data: data.clone(),
                context: Bytes::from_static(b"ctx"),
                ..Default::default()
            };
            e.set_entry_type(ty);
            assert!(entry_is_internal(&e));
            let b = restamp(&entry_to_batch(&e), 10, 3);
            let h = parse_batch(&b).unwrap();
            assert!(h.is_control());
            assert!(internal_kind(&h, &b).is_some());
            let back = batch_to_entry(b, 9).unwrap();
            assert_eq!(back.get_entry_type(), ty);
            assert_eq!(back.data, data);
            assert_eq!(back.context, Bytes::from_static(b"ctx"));
            assert_eq!(back.term, 3);
            assert_eq!(back.index, 9);
        }
        // A Kafka transaction marker (control type 1) is *not* internal: clients see it.
        let marker = encode_batch(CONTROL_ATTRIBUTE, 0, 7, &[(Some(&[0, 0, 0, 1]), None)]);
        let h = parse_batch(&marker).unwrap();
        assert_eq!(internal_kind(&h, &marker), None);
        let data = encode_batch(0, 0, -1, &[(None, Some(b"x"))]);
        let e = batch_to_entry(data.clone(), 4).unwrap();
        assert!(!entry_is_internal(&e));
        assert_eq!(entry_to_batch(&e), data);
    }

    /// KIP-107 through Raft: a log start entry is a normal entry whose data is its control
    /// batch; it is stored as is, read back as the same entry, counts as internal (no Kafka
    /// offset) and names its offset; no other batch names one.
    #[test]
    fn log_start_entries_are_internal_normal_entries_stored_as_their_own_batch() {
        let b = log_start_batch(3000);
        let h = parse_batch(&b).unwrap();
        assert!(h.is_control());
        assert_eq!(h.offset_count(), 1);
        assert_eq!(internal_kind(&h, &b), Some(InternalKind::LogStart));
        assert_eq!(log_start_of(&b), Some(3000));
        // Value bytes: version 1 LE, then the offset LE.
        let value = records(&b).unwrap()[0].1.clone().unwrap();
        assert_eq!(&value[..], &[1, 0, 0xb8, 0x0b, 0, 0, 0, 0, 0, 0]);
        let e = Entry {
            data: b.clone(),
            ..Default::default()
        };
        assert!(entry_is_internal(&e));
        assert_eq!(entry_to_batch(&e), b);
        let stored = restamp(&b, 41, 6);
        let back = batch_to_entry(stored.clone(), 12).unwrap();
        assert_eq!(back.get_entry_type(), EntryType::EntryNormal);
        assert_eq!(back.data, stored);
        assert_eq!((back.index, back.term), (12, 6));
        assert!(entry_is_internal(&back));
        assert_eq!(log_start_of(&back.data), Some(3000));
        // Data batches, transaction markers and Raft's own entries name no log start.
        let data = encode_batch(0, 0, -1, &[(None, Some(b"x"))]);
        let marker = encode_batch(CONTROL_ATTRIBUTE, 0, 7, &[(Some(&[0, 0, 0, 1]), None)]);
        let noop = entry_to_batch(&Entry::default());
        for other in [data, marker, noop] {
            assert_eq!(log_start_of(&other), None);
        }
        // A log start key with a value that does not decode names nothing.
        let key = [0u8, 0, 0x46, 0x04];
        let bad = encode_batch(CONTROL_ATTRIBUTE, 0, -1, &[(Some(&key), Some(b"short"))]);
        assert_eq!(log_start_of(&bad), None);
    }
}
