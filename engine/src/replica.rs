//! Pure helpers between a partition's Raft group and what Kafka clients see.
//!
//! A replicated partition log holds three numberings (docs/design/replication.md, "Offset
//! translation"): Raft index, log offset (every record of every batch, Raft-internal control
//! batches included) and Kafka offset (records of data batches only). The group's
//! [`GroupState`] is the translator; these functions apply it to bytes read from the log,
//! to the storage's timestamp and leader-epoch lookups, and to the batches a leader is about
//! to propose (LogAppendTime is stamped before proposing so every replica stores the same
//! bytes).
//!
//! Ownership: pure functions over bytes and a borrowed `GroupState`; run on the partition's
//! owning core.

use bytes::{Bytes, BytesMut};
use freshet_raft::store::GroupState;

/// Byte offsets inside a Kafka v2 batch header (big-endian).
const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const HEADER_BYTES: usize = 61;
/// Attributes bit 3: the batch's timestamps are the broker's append time (KIP-32).
const ATTR_LOG_APPEND_TIME: i16 = 0x08;

/// Errors of the translation helpers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplicaError {
    /// Bytes read back from the log do not frame as v2 batches.
    #[error("log read at log offset {at}: batch framing broken")]
    Framing { at: i64 },
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Marks every batch in `batches` (concatenated, already validated v2 batches) as
/// LogAppendTime with timestamp `now_ms`: attributes bit 3, base and max timestamp, and a
/// recomputed CRC32C. The leader does this before proposing, so the replicated entry is
/// byte-identical on every replica.
pub fn stamp_log_append_time(batches: &[u8], now_ms: i64) -> Bytes {
    let mut out = BytesMut::from(batches);
    let mut at = 0usize;
    while at + HEADER_BYTES <= out.len() {
        let len = be_i32(&out, at + BATCH_LENGTH_AT);
        let end = at + 12 + len.max(0) as usize;
        assert!(
            end <= out.len() && len as usize >= HEADER_BYTES - 12,
            "stamp_log_append_time on unvalidated batches"
        );
        let b = &mut out[at..end];
        let attrs =
            i16::from_be_bytes([b[ATTRIBUTES_AT], b[ATTRIBUTES_AT + 1]]) | ATTR_LOG_APPEND_TIME;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
        b[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
        b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
    out.freeze()
}

/// Splits concatenated, validated v2 batches into one `Bytes` per batch (one Raft entry
/// each), without copying.
pub fn split_single_batches(batches: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 12 <= batches.len() {
        let end = at + 12 + be_i32(batches, at + BATCH_LENGTH_AT).max(0) as usize;
        assert!(end <= batches.len(), "split of unvalidated batches");
        out.push(batches.slice(at..end));
        at = end;
    }
    out
}

/// Kafka offset of the record at `log_offset` (any record, not only a batch start). A
/// Raft-internal entry maps to the Kafka offset of the next data record. `None` below the
/// group's log start or at/after its log end.
pub fn log_record_to_kafka(st: &GroupState, log_offset: i64) -> Option<i64> {
    let (first, last) = (st.first_index(), st.last_index());
    if last < first || log_offset < st.meta(first)?.log_offset {
        return None;
    }
    // Largest index whose entry starts at or below `log_offset`.
    let (mut lo, mut hi) = (first, last);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if st.meta(mid)?.log_offset <= log_offset {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let m = st.meta(lo)?;
    if log_offset >= m.log_offset + i64::from(m.log_count) {
        return None;
    }
    Some(if m.kafka_count == 0 {
        m.kafka_offset
    } else {
        m.kafka_offset + (log_offset - m.log_offset)
    })
}

/// Turns whole batches read from a replicated log into what a Kafka client may see: batches
/// the translator gives no Kafka offset (Raft-internal entries) are dropped, every other
/// batch's base offset (first 8 bytes, outside the CRC) becomes its Kafka offset.
pub fn log_batches_to_kafka(data: &Bytes, st: &GroupState) -> Result<Bytes, ReplicaError> {
    let mut out = BytesMut::with_capacity(data.len());
    let mut at = 0usize;
    while at < data.len() {
        let base = if at + 12 <= data.len() {
            be_i64(data, at + BASE_OFFSET_AT)
        } else {
            -1
        };
        if at + HEADER_BYTES > data.len() {
            return Err(ReplicaError::Framing { at: base });
        }
        let len = be_i32(data, at + BATCH_LENGTH_AT);
        if len < (HEADER_BYTES - 12) as i32 || at + 12 + len as usize > data.len() {
            return Err(ReplicaError::Framing { at: base });
        }
        let end = at + 12 + len as usize;
        if let Some(kafka) = st.log_to_kafka(base) {
            let start = out.len();
            out.extend_from_slice(&data[at..end]);
            out[start..start + 8].copy_from_slice(&kafka.to_be_bytes());
        }
        at = end;
    }
    Ok(out.freeze())
}

/// The storage's leader-epoch cache (term, first log offset) in Kafka offsets: each term
/// starts at the Kafka offset of its first entry (a new leader's first entry is its internal
/// no-op, which maps to the next data offset). Terms below the group's log start begin at
/// the log start.
pub fn kafka_epochs(st: &GroupState, log_epochs: &[(i32, i64)]) -> Vec<(i32, i64)> {
    log_epochs
        .iter()
        .map(|&(epoch, log_start)| {
            let k = log_record_to_kafka(st, log_start).unwrap_or_else(|| {
                if log_start < st.anchor.log_offset {
                    st.anchor.kafka_offset
                } else {
                    st.kafka_end_offset()
                }
            });
            (epoch, k)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshet_raft::batch::{
        batch_to_entry, encode_batch, entry_to_batch, parse_batch, restamp, split_batches,
        CONTROL_ATTRIBUTE,
    };
    use freshet_raft::meta::LogAnchor;

    /// A group log as a Raft leader writes it: term 1's no-op (§5.4.2), 3 records, 2 records,
    /// term 2's no-op, 1 record. Log offsets 0 | 1-3 | 4-5 | 6 | 7; Kafka offsets
    /// - | 0-2 | 3-4 | - | 5.
    fn group() -> (GroupState, Bytes) {
        // Entries are rebuilt from the batches the log stores (no raft-rs types named here).
        let entry = |batch: &[u8], index: u64, term: u64| {
            batch_to_entry(restamp(batch, 0, term as i32), index).unwrap()
        };
        let data = |index: u64, term: u64, records: usize| {
            let recs: Vec<_> = (0..records).map(|_| (None, Some(&b"v"[..]))).collect();
            entry(&encode_batch(0, 1_000, -1, &recs), index, term)
        };
        let noop = |index: u64, term: u64| {
            let (key, value) = ([0u8, 0, 0x46, 0x01], [0u8; 4]);
            let b = encode_batch(
                CONTROL_ATTRIBUTE,
                0,
                -1,
                &[(Some(&key[..]), Some(&value[..]))],
            );
            entry(&b, index, term)
        };
        let mut st = GroupState::new(
            Default::default(),
            Default::default(),
            LogAnchor::initial(),
            1 << 20,
        );
        let entries = vec![
            noop(1, 1),
            data(2, 1, 3),
            data(3, 1, 2),
            noop(4, 2),
            data(5, 2, 1),
        ];
        st.push_entries(&entries);
        let mut log = BytesMut::new();
        for e in &entries {
            let m = *st.meta(e.index).unwrap();
            log.extend_from_slice(&restamp(&entry_to_batch(e), m.log_offset, e.term as i32));
        }
        (st, log.freeze())
    }

    /// docs/design/replication.md "Offset translation": internal batches never reach a client
    /// and every data batch carries its Kafka base offset; CRCs stay valid (base offset is
    /// outside the CRC).
    #[test]
    fn fetched_log_bytes_lose_internal_batches_and_get_kafka_base_offsets() {
        let (st, log) = group();
        let out = log_batches_to_kafka(&log, &st).unwrap();
        let got: Vec<_> = split_batches(out)
            .unwrap()
            .into_iter()
            .map(|(h, b)| {
                parse_batch(&b).expect("CRC still valid");
                (h.base_offset, h.offset_count(), h.partition_leader_epoch)
            })
            .collect();
        assert_eq!(got, vec![(0, 3, 1), (3, 2, 1), (5, 1, 2)]);
        // A read that starts at the second data batch (log offset 4) and ends with term 2's
        // no-op and data batch.
        let mut at = 0;
        for _ in 0..2 {
            at += batch_len(&log[at..]);
        }
        let tail = log_batches_to_kafka(&log.slice(at..), &st).unwrap();
        let bases: Vec<_> = split_batches(tail)
            .unwrap()
            .iter()
            .map(|(h, _)| h.base_offset)
            .collect();
        assert_eq!(bases, vec![3, 5]);
        let broken = log.slice(0..log.len() - 1);
        assert!(matches!(
            log_batches_to_kafka(&broken, &st),
            Err(ReplicaError::Framing { .. })
        ));
    }

    fn batch_len(b: &[u8]) -> usize {
        12 + be_i32(b, 8) as usize
    }

    #[test]
    fn any_log_record_maps_to_its_kafka_offset_and_internal_ones_to_the_next_data_offset() {
        let (st, _) = group();
        let got: Vec<_> = (-1..=8).map(|o| log_record_to_kafka(&st, o)).collect();
        assert_eq!(
            got,
            vec![
                None,
                Some(0), // no-op of term 1
                Some(0),
                Some(1),
                Some(2),
                Some(3),
                Some(4),
                Some(5), // no-op of term 2
                Some(5),
                None, // log end
            ]
        );
    }

    /// KIP-101: a term's epoch starts at its first Kafka offset.
    #[test]
    fn leader_epochs_start_at_kafka_offsets() {
        let (st, _) = group();
        assert_eq!(kafka_epochs(&st, &[(1, 0), (2, 6)]), vec![(1, 0), (2, 5)]);
        // A term that began at the log end (no entry yet) starts at the Kafka end.
        assert_eq!(kafka_epochs(&st, &[(3, 8)]), vec![(3, 6)]);
    }

    /// KIP-32 LogAppendTime: attribute bit 3, timestamps replaced, CRC recomputed, so the
    /// batch validates on every replica.
    #[test]
    fn log_append_time_is_stamped_with_a_valid_crc_on_every_batch() {
        let mut two = BytesMut::new();
        two.extend_from_slice(&encode_batch(0, 5, -1, &[(None, Some(b"a"))]));
        two.extend_from_slice(&encode_batch(0, 6, -1, &[(None, Some(b"b")), (None, None)]));
        let two = two.freeze();
        let out = stamp_log_append_time(&two, 1_700_000_000_000);
        let parts = split_single_batches(&out);
        assert_eq!(parts.len(), 2);
        for p in &parts {
            let h = parse_batch(p).expect("CRC recomputed");
            assert_eq!(h.attributes & ATTR_LOG_APPEND_TIME, ATTR_LOG_APPEND_TIME);
            assert_eq!(be_i64(p, MAX_TIMESTAMP_AT), 1_700_000_000_000);
            assert_eq!(be_i64(p, BASE_TIMESTAMP_AT), 1_700_000_000_000);
        }
        assert_eq!(split_single_batches(&two)[1].len(), parts[1].len());
    }
}
