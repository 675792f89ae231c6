//! Kafka v2 record batches (magic 2): parsing, validation and the header stamping done on
//! append. The batch layout is Kafka's and big-endian; see docs/design/log-format.md.
//!
//! All functions here are pure and allocation-free; usable on any core.

use crate::error::{Result, StorageError};

/// Size of the fixed v2 batch header (Kafka `RECORD_BATCH_OVERHEAD`).
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` counts: baseOffset (8) + batchLength (4).
pub const LOG_OVERHEAD_BYTES: usize = 12;

pub(crate) const OFF_BASE_OFFSET: usize = 0;
pub(crate) const OFF_BATCH_LENGTH: usize = 8;
pub(crate) const OFF_LEADER_EPOCH: usize = 12;
pub(crate) const OFF_MAGIC: usize = 16;
pub(crate) const OFF_CRC: usize = 17;
pub(crate) const OFF_ATTRIBUTES: usize = 21;
pub(crate) const OFF_LAST_OFFSET_DELTA: usize = 23;
pub(crate) const OFF_BASE_TIMESTAMP: usize = 27;
pub(crate) const OFF_MAX_TIMESTAMP: usize = 35;
pub(crate) const OFF_PRODUCER_ID: usize = 43;
pub(crate) const OFF_PRODUCER_EPOCH: usize = 51;
pub(crate) const OFF_BASE_SEQUENCE: usize = 53;
pub(crate) const OFF_RECORDS_COUNT: usize = 57;

/// Attribute bits (Kafka `DefaultRecordBatch`).
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Timestamp type bit: 1 = LogAppendTime.
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Transactional batch.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Control batch.
pub const ATTR_CONTROL: i16 = 0x20;

/// The parsed fixed header of one v2 record batch. Plain data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// first offset of the batch
    pub base_offset: i64,
    /// bytes after the batchLength field (whole batch = 12 + batch_length)
    pub batch_length: i32,
    /// leader epoch / Raft term stamped by the broker
    pub partition_leader_epoch: i32,
    /// always 2 once validated
    pub magic: i8,
    /// CRC32C over attributes..end
    pub crc: u32,
    /// compression, timestamp type, transactional, control bits
    pub attributes: i16,
    /// last offset = base_offset + last_offset_delta
    pub last_offset_delta: i32,
    /// timestamp of the first record
    pub base_timestamp: i64,
    /// largest record timestamp (or the log append time)
    pub max_timestamp: i64,
    /// idempotent producer id (-1 if none)
    pub producer_id: i64,
    /// idempotent producer epoch
    pub producer_epoch: i16,
    /// sequence of the first record
    pub base_sequence: i32,
    /// number of records
    pub records_count: i32,
}

impl BatchHeader {
    /// Whole size of the batch in bytes, including baseOffset and batchLength.
    pub fn size_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length as usize
    }
    /// Last offset in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }
    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }
    /// Whether the batch timestamps are LogAppendTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses the fixed header without any check beyond its length. `b` must hold at least
/// [`BATCH_HEADER_BYTES`].
pub fn parse_header(b: &[u8]) -> BatchHeader {
    assert!(
        b.len() >= BATCH_HEADER_BYTES,
        "parse_header needs {BATCH_HEADER_BYTES} bytes, got {}",
        b.len()
    );
    BatchHeader {
        base_offset: be_i64(b, OFF_BASE_OFFSET),
        batch_length: be_i32(b, OFF_BATCH_LENGTH),
        partition_leader_epoch: be_i32(b, OFF_LEADER_EPOCH),
        magic: b[OFF_MAGIC] as i8,
        crc: be_u32(b, OFF_CRC),
        attributes: be_i16(b, OFF_ATTRIBUTES),
        last_offset_delta: be_i32(b, OFF_LAST_OFFSET_DELTA),
        base_timestamp: be_i64(b, OFF_BASE_TIMESTAMP),
        max_timestamp: be_i64(b, OFF_MAX_TIMESTAMP),
        producer_id: be_i64(b, OFF_PRODUCER_ID),
        producer_epoch: be_i16(b, OFF_PRODUCER_EPOCH),
        base_sequence: be_i32(b, OFF_BASE_SEQUENCE),
        records_count: be_i32(b, OFF_RECORDS_COUNT),
    }
}

/// Reads just the whole-batch size from the first 12 bytes; `None` if the length field is
/// not plausible for a v2 batch.
pub(crate) fn framed_size(b: &[u8]) -> Option<usize> {
    if b.len() < LOG_OVERHEAD_BYTES {
        return None;
    }
    let len = be_i32(b, OFF_BATCH_LENGTH);
    if len < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return None;
    }
    Some(LOG_OVERHEAD_BYTES + len as usize)
}

/// CRC32C as Kafka computes it for v2 batches: over attributes..end of batch.
pub fn batch_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[OFF_ATTRIBUTES..])
}

/// Validates the first batch in `bytes` (magic 2, size fields consistent, record count and
/// last offset delta consistent, CRC32C over attributes..end) and returns its header. Extra
/// bytes after the batch are ignored; use [`validate_batches`] for a concatenation.
///
/// Errors: `CorruptBatch` for framing/CRC problems (Kafka CORRUPT_MESSAGE),
/// `UnsupportedMagic` for magic != 2, `InvalidBatch` for inconsistent fields.
pub fn validate_batch(bytes: &[u8]) -> Result<BatchHeader> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(StorageError::CorruptBatch(format!(
            "{} bytes is shorter than a batch header ({BATCH_HEADER_BYTES})",
            bytes.len()
        )));
    }
    let magic = bytes[OFF_MAGIC] as i8;
    if magic != 2 {
        return Err(StorageError::UnsupportedMagic(magic));
    }
    let h = parse_header(bytes);
    if h.batch_length < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return Err(StorageError::CorruptBatch(format!(
            "batchLength {} is smaller than the header",
            h.batch_length
        )));
    }
    let size = h.size_bytes();
    if size > bytes.len() {
        return Err(StorageError::CorruptBatch(format!(
            "batchLength {} runs past the {} bytes given",
            h.batch_length,
            bytes.len()
        )));
    }
    let crc = batch_crc(&bytes[..size]);
    if crc != h.crc {
        return Err(StorageError::CorruptBatch(format!(
            "CRC32C mismatch: header {:#010x}, computed {crc:#010x}",
            h.crc
        )));
    }
    if h.records_count <= 0 {
        return Err(StorageError::InvalidBatch(format!(
            "records count {} (a batch must hold at least one record)",
            h.records_count
        )));
    }
    if h.last_offset_delta != h.records_count - 1 {
        return Err(StorageError::InvalidBatch(format!(
            "lastOffsetDelta {} does not match records count {}",
            h.last_offset_delta, h.records_count
        )));
    }
    Ok(h)
}

/// Validates a concatenation of batches (a Produce request's records field) and returns
/// each header with its byte range start. Empty input is invalid. Every batch must be
/// at most `batch_bytes_max` bytes.
pub fn validate_batches(bytes: &[u8], batch_bytes_max: u32) -> Result<Vec<(usize, BatchHeader)>> {
    if bytes.is_empty() {
        return Err(StorageError::InvalidBatch("no record batch given".into()));
    }
    let mut out = Vec::with_capacity(1);
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if let Some(size) = framed_size(rest) {
            if size > batch_bytes_max as usize {
                return Err(StorageError::BatchTooLarge {
                    size_bytes: size,
                    max_bytes: batch_bytes_max,
                });
            }
        }
        let h = validate_batch(rest)?;
        out.push((at, h));
        at += h.size_bytes();
    }
    Ok(out)
}

/// Writes the broker-assigned fields into a copy of a batch header: base offset, leader
/// epoch, and, for LogAppendTime, the timestamp bit, base/max timestamp and a fresh CRC
/// (which then needs the body: pass it in `body` so the CRC can be recomputed without
/// another pass over a joined buffer).
pub(crate) fn stamp_header(
    head: &mut [u8; BATCH_HEADER_BYTES],
    base_offset: i64,
    term: i32,
    log_append_time_ms: Option<i64>,
    body: &[u8],
) {
    head[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    head[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&term.to_be_bytes());
    if let Some(ts) = log_append_time_ms {
        let attrs = be_i16(head, OFF_ATTRIBUTES) | ATTR_LOG_APPEND_TIME;
        head[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
        head[OFF_BASE_TIMESTAMP..OFF_BASE_TIMESTAMP + 8].copy_from_slice(&ts.to_be_bytes());
        head[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&ts.to_be_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head[OFF_ATTRIBUTES..]), body);
        head[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

fn read_varint(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    let mut shift = 0u32;
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        raw |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

/// The first record with timestamp >= `ts_ms` in a batch, as (offset, timestamp), like
/// Kafka's `FileRecords.searchForTimestamp` (ListOffsets, KIP-79). Compressed batches are
/// decompressed (gzip, snappy, lz4, zstd; only this one batch, only on this lookup path).
/// LogAppendTime batches answer with (base offset, max timestamp): every record has that
/// timestamp. Record bytes are the client's and were never validated by the broker, so
/// malformed records fall back to the batch-level answer. `None` if no record qualifies.
pub fn first_record_at_or_after(batch: &[u8], ts_ms: i64) -> Option<(i64, i64)> {
    let h = parse_header(batch);
    if h.max_timestamp < ts_ms {
        return None;
    }
    let batch_level = Some((h.base_offset, h.max_timestamp));
    if h.is_log_append_time() {
        return batch_level;
    }
    let end = h.size_bytes().min(batch.len());
    if end < BATCH_HEADER_BYTES {
        return batch_level;
    }
    let raw = &batch[BATCH_HEADER_BYTES..end];
    let decompressed;
    let records: &[u8] = if h.compression() == 0 {
        raw
    } else {
        match decompress_records(h.compression(), raw) {
            Some(d) => {
                decompressed = d;
                &decompressed
            }
            None => return batch_level,
        }
    };
    match walk_records(&h, records, ts_ms) {
        Ok(found) => found,
        Err(()) => batch_level,
    }
}

fn decompress_records(codec: i16, data: &[u8]) -> Option<bytes::Bytes> {
    use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
    let mut b = bytes::Bytes::copy_from_slice(data);
    let take = |o: &mut bytes::Bytes| Ok(o.clone());
    let r = match codec {
        1 => Gzip::decompress(&mut b, take),
        2 => Snappy::decompress(&mut b, take),
        3 => Lz4::decompress(&mut b, take),
        4 => Zstd::decompress(&mut b, take),
        _ => return None,
    };
    r.ok()
}

/// Walks v2 records (length varint, attributes, timestampDelta varlong, offsetDelta varint,
/// ...). `Err` on malformed records.
fn walk_records(h: &BatchHeader, records: &[u8], ts_ms: i64) -> Result<Option<(i64, i64)>, ()> {
    let end = records.len();
    let mut at = 0usize;
    for _ in 0..h.records_count.max(0) {
        let len = read_varint(records, &mut at).ok_or(())?;
        let start = at;
        if len < 0 || start > end || len as u64 > (end - start) as u64 {
            return Err(());
        }
        let mut p = start + 1; // attributes int8
        let ts_delta = read_varint(records, &mut p).ok_or(())?;
        let off_delta = read_varint(records, &mut p).ok_or(())?;
        if !(0..=h.last_offset_delta as i64).contains(&off_delta) {
            return Err(());
        }
        let ts = h.base_timestamp.wrapping_add(ts_delta);
        if ts >= ts_ms {
            return Ok(Some((h.base_offset.saturating_add(off_delta), ts)));
        }
        at = start + len as usize;
    }
    Ok(None)
}

/// Builds a valid uncompressed v2 batch of `records` records, each with `value_bytes` of
/// value and timestamps `base_ts + i`. Used by tests, the crash-writer binary and the
/// benchmark; not a general producer.
pub fn build_batch(records: usize, value_bytes: usize, base_ts: i64, fill: u8) -> Vec<u8> {
    fn put_varint(v: &mut Vec<u8>, x: i64) {
        let mut z = ((x << 1) ^ (x >> 63)) as u64;
        loop {
            if z < 0x80 {
                v.push(z as u8);
                return;
            }
            v.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }
    assert!(records >= 1, "a batch needs at least one record");
    let mut body = Vec::with_capacity(records * (value_bytes + 16));
    let mut rec = Vec::with_capacity(value_bytes + 16);
    for i in 0..records {
        rec.clear();
        rec.push(0); // attributes
        put_varint(&mut rec, i as i64); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        put_varint(&mut rec, -1); // key length (null)
        put_varint(&mut rec, value_bytes as i64);
        rec.extend(std::iter::repeat_n(fill, value_bytes));
        put_varint(&mut rec, 0); // headers count
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(
        &((BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()) as i32).to_be_bytes(),
    );
    b.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&((records - 1) as i32).to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&(base_ts + records as i64 - 1).to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&(records as i32).to_be_bytes());
    b.extend_from_slice(&body);
    let crc = batch_crc(&b);
    b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::sim::SplitMix64;

    #[test]
    fn built_batches_validate_and_parse_back() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..200 {
            let n = 1 + rng.below(20) as usize;
            let v = rng.below(3000) as usize;
            let ts = rng.below(1 << 40) as i64;
            let b = build_batch(n, v, ts, rng.below(256) as u8);
            let h = validate_batch(&b).expect("valid");
            assert_eq!(h.size_bytes(), b.len());
            assert_eq!(h.records_count as usize, n);
            assert_eq!(h.last_offset_delta as usize, n - 1);
            assert_eq!(h.base_timestamp, ts);
            assert_eq!(h.max_timestamp, ts + n as i64 - 1);
            assert_eq!(h.magic, 2);
        }
    }

    /// Every single-bit flip in the CRC-covered part (attributes..end) or in the CRC itself is
    /// refused (CRC32C detects all 1-bit errors); flips in batchLength and magic are refused
    /// by the framing checks. baseOffset and partitionLeaderEpoch are outside the CRC by
    /// Kafka's design (the broker rewrites them).
    #[test]
    fn every_single_bit_flip_outside_broker_fields_is_refused() {
        let b = build_batch(3, 40, 1000, 9);
        for byte in 0..b.len() {
            if byte < OFF_BATCH_LENGTH || (OFF_LEADER_EPOCH..OFF_MAGIC).contains(&byte) {
                continue;
            }
            for bit in 0..8 {
                let mut m = b.clone();
                m[byte] ^= 1 << bit;
                assert!(
                    validate_batch(&m).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn concatenated_batches_are_split_and_each_checked() {
        let a = build_batch(2, 10, 0, 1);
        let b = build_batch(5, 100, 0, 2);
        let mut both = a.clone();
        both.extend_from_slice(&b);
        let hs = validate_batches(&both, 1 << 20).unwrap();
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[1].0, a.len());
        assert_eq!(hs[1].1.records_count, 5);
        // trailing garbage shorter than a header is corrupt, not ignored
        both.extend_from_slice(&[0, 0, 0]);
        assert_eq!(
            validate_batches(&both, 1 << 20)
                .unwrap_err()
                .kafka_error_code(),
            2
        );
        // the limit applies per batch (max.message.bytes)
        let e = validate_batches(&b, 100).unwrap_err();
        assert_eq!(e.kafka_error_code(), 10);
    }

    #[test]
    fn inconsistent_counts_are_invalid_record() {
        let mut b = build_batch(3, 10, 0, 1);
        b[OFF_LAST_OFFSET_DELTA + 3] = 5; // lastOffsetDelta 5 with 3 records
        let crc = batch_crc(&b);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(validate_batch(&b).unwrap_err().kafka_error_code(), 87);
    }

    #[test]
    fn log_append_time_stamping_keeps_the_crc_valid() {
        let b = build_batch(4, 50, 1000, 3);
        let mut head = [0u8; BATCH_HEADER_BYTES];
        head.copy_from_slice(&b[..BATCH_HEADER_BYTES]);
        stamp_header(&mut head, 77, 5, Some(123_456), &b[BATCH_HEADER_BYTES..]);
        let mut out = head.to_vec();
        out.extend_from_slice(&b[BATCH_HEADER_BYTES..]);
        let h = validate_batch(&out).expect("stamped batch is valid");
        assert_eq!((h.base_offset, h.partition_leader_epoch), (77, 5));
        assert!(h.is_log_append_time());
        assert_eq!((h.base_timestamp, h.max_timestamp), (123_456, 123_456));
        // CreateTime stamping leaves the client's CRC as is
        let mut head2 = [0u8; BATCH_HEADER_BYTES];
        head2.copy_from_slice(&b[..BATCH_HEADER_BYTES]);
        stamp_header(&mut head2, 9, 9, None, &b[BATCH_HEADER_BYTES..]);
        assert_eq!(head2[OFF_CRC..OFF_CRC + 4], b[OFF_CRC..OFF_CRC + 4]);
    }

    /// KIP-79 / Kafka FileRecords.searchForTimestamp: inside a compressed batch the exact
    /// record is found, not the batch.
    #[test]
    fn record_timestamps_are_found_inside_compressed_batches() {
        use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
        let plain = build_batch(5, 10, 100, 0);
        let recs = &plain[BATCH_HEADER_BYTES..];
        for codec in 1i16..=4 {
            let mut out = bytes::BytesMut::new();
            let put = |tmp: &mut bytes::BytesMut| {
                tmp.extend_from_slice(recs);
                Ok(())
            };
            match codec {
                1 => Gzip::compress(&mut out, put),
                2 => Snappy::compress(&mut out, put),
                3 => Lz4::compress(&mut out, put),
                _ => Zstd::compress(&mut out, put),
            }
            .expect("compress");
            let mut b = plain[..BATCH_HEADER_BYTES].to_vec();
            b.extend_from_slice(&out);
            let len = (b.len() - LOG_OVERHEAD_BYTES) as i32;
            b[OFF_BATCH_LENGTH..OFF_BATCH_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
            b[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&codec.to_be_bytes());
            b[..8].copy_from_slice(&50i64.to_be_bytes());
            let crc = batch_crc(&b);
            b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
            validate_batch(&b).expect("valid compressed batch");
            assert_eq!(
                first_record_at_or_after(&b, 103),
                Some((53, 103)),
                "codec {codec}"
            );
            assert_eq!(
                first_record_at_or_after(&b, 0),
                Some((50, 100)),
                "codec {codec}"
            );
        }
    }

    #[test]
    fn record_timestamps_are_found_inside_uncompressed_batches() {
        let mut b = build_batch(5, 10, 100, 0); // record i has ts 100 + i, offset delta i
        b[..8].copy_from_slice(&50i64.to_be_bytes());
        assert_eq!(first_record_at_or_after(&b, 0), Some((50, 100)));
        assert_eq!(first_record_at_or_after(&b, 103), Some((53, 103)));
        assert_eq!(first_record_at_or_after(&b, 105), None);
    }
}
