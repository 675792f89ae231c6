//! Idempotent-producer sequence checks (KIP-98) for one partition.
//!
//! `ProducerStates` is per partition, per core (`!Send`, inside `Partition`). For each producer
//! id it remembers the epoch, the next expected sequence and the last few appended batches,
//! so a retried batch is answered with its original offsets instead of being appended twice.
//! State is in memory only: after a restart an unknown producer's first batch is accepted at
//! any sequence (as Kafka does for a producer whose state expired).

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer for duplicate detection (Kafka keeps 5).
pub const RECENT_BATCHES: usize = 5;

/// The producer fields of one v2 batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// Records in the batch minus one (lastOffsetDelta).
    pub last_offset_delta: i32,
}

impl ProducerBatch {
    /// Reads the producer fields of every batch in `batches` (concatenated v2 batches);
    /// `None` if the framing is off (the log's validation reports that properly).
    pub fn parse_all(batches: &[u8]) -> Option<Vec<ProducerBatch>> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < batches.len() {
            let b = batches.get(pos..)?;
            if b.len() < 61 {
                return None;
            }
            let len = i32::from_be_bytes(b[8..12].try_into().ok()?);
            if len < 49 {
                return None;
            }
            out.push(ProducerBatch {
                producer_id: i64::from_be_bytes(b[43..51].try_into().ok()?),
                producer_epoch: i16::from_be_bytes(b[51..53].try_into().ok()?),
                base_sequence: i32::from_be_bytes(b[53..57].try_into().ok()?),
                last_offset_delta: i32::from_be_bytes(b[23..27].try_into().ok()?),
            });
            pos = pos.checked_add(12 + len as usize)?;
        }
        Some(out)
    }

    fn last_sequence(&self) -> i32 {
        self.base_sequence.wrapping_add(self.last_offset_delta)
    }
}

/// What the sequence check says about an incoming append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// A retry of a batch already appended at these offsets: answer them, append nothing.
    Duplicate { first_offset: i64, last_offset: i64 },
    /// OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    OutOfOrder,
    /// A retry of a batch whose append has not finished yet: DUPLICATE_SEQUENCE_NUMBER (46).
    DuplicateInFlight,
    /// INVALID_PRODUCER_EPOCH (47): an older epoch than the one we know.
    FencedEpoch,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    /// Sequence the next new batch must start with.
    next_sequence: i32,
    /// (base_sequence, first_offset, last_offset) of recent batches; offsets are -1 until
    /// the append finished.
    recent: VecDeque<(i32, i64, i64)>,
}

/// Sequence state of every idempotent producer writing to one partition.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    /// Checks one append (all its batches) and, when it may go ahead, reserves its sequences
    /// so that a pipelined next batch of the same producer is checked against them.
    pub fn check_and_reserve(&mut self, batches: &[ProducerBatch]) -> SequenceCheck {
        let Some(first) = batches.first() else {
            return SequenceCheck::Append;
        };
        if first.producer_id < 0 {
            return SequenceCheck::Append;
        }
        let e = self.producers.entry(first.producer_id).or_default();
        let known = !e.recent.is_empty() || e.next_sequence != 0;
        if known && first.producer_epoch < e.epoch {
            return SequenceCheck::FencedEpoch;
        }
        if known && first.producer_epoch == e.epoch && first.base_sequence != e.next_sequence {
            if let Some(&(_, f, l)) = e.recent.iter().find(|r| r.0 == first.base_sequence) {
                return if f >= 0 {
                    SequenceCheck::Duplicate {
                        first_offset: f,
                        last_offset: l,
                    }
                } else {
                    SequenceCheck::DuplicateInFlight
                };
            }
            return SequenceCheck::OutOfOrder;
        }
        // New producer, new epoch, or the expected sequence: reserve.
        if !known || first.producer_epoch > e.epoch {
            e.recent.clear();
        }
        e.epoch = first.producer_epoch;
        for b in batches {
            e.recent.push_back((b.base_sequence, -1, -1));
            while e.recent.len() > RECENT_BATCHES {
                e.recent.pop_front();
            }
            e.next_sequence = b.last_sequence().wrapping_add(1).max(0);
        }
        SequenceCheck::Append
    }

    /// Records where the reserved batches landed (`first_offset` of the first batch).
    pub fn appended(&mut self, batches: &[ProducerBatch], first_offset: i64) {
        let Some(first) = batches.first() else { return };
        let Some(e) = self.producers.get_mut(&first.producer_id) else {
            return;
        };
        let mut off = first_offset;
        for b in batches {
            let last = off + b.last_offset_delta as i64;
            if let Some(r) = e.recent.iter_mut().find(|r| r.0 == b.base_sequence) {
                r.1 = off;
                r.2 = last;
            }
            off = last + 1;
        }
    }

    /// The append failed: forget the producer (its next batch is accepted at any sequence,
    /// as after an expiry) rather than leave a reservation that can never be filled.
    pub fn failed(&mut self, batches: &[ProducerBatch]) {
        if let Some(first) = batches.first() {
            self.producers.remove(&first.producer_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(pid: i64, epoch: i16, seq: i32, records: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            last_offset_delta: records - 1,
        }
    }

    #[test]
    fn kip_98_in_sequence_batches_append_and_a_retry_gets_its_original_offsets() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check_and_reserve(&[b(7, 0, 0, 3)]), SequenceCheck::Append);
        s.appended(&[b(7, 0, 0, 3)], 100);
        assert_eq!(s.check_and_reserve(&[b(7, 0, 3, 2)]), SequenceCheck::Append);
        s.appended(&[b(7, 0, 3, 2)], 103);
        assert_eq!(
            s.check_and_reserve(&[b(7, 0, 0, 3)]),
            SequenceCheck::Duplicate {
                first_offset: 100,
                last_offset: 102
            }
        );
        assert_eq!(
            s.check_and_reserve(&[b(7, 0, 9, 1)]),
            SequenceCheck::OutOfOrder
        );
    }

    #[test]
    fn kip_98_pipelined_batches_are_checked_against_reservations() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check_and_reserve(&[b(1, 0, 0, 5)]), SequenceCheck::Append);
        // The second request arrives before the first append finished.
        assert_eq!(s.check_and_reserve(&[b(1, 0, 5, 5)]), SequenceCheck::Append);
        assert_eq!(
            s.check_and_reserve(&[b(1, 0, 0, 5)]),
            SequenceCheck::DuplicateInFlight
        );
    }

    #[test]
    fn kip_98_an_older_epoch_is_fenced_and_a_newer_one_restarts_sequences() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check_and_reserve(&[b(3, 2, 0, 1)]), SequenceCheck::Append);
        assert_eq!(
            s.check_and_reserve(&[b(3, 1, 1, 1)]),
            SequenceCheck::FencedEpoch
        );
        assert_eq!(s.check_and_reserve(&[b(3, 3, 0, 1)]), SequenceCheck::Append);
        // Non-idempotent batches are never checked.
        assert_eq!(
            s.check_and_reserve(&[b(-1, -1, -1, 4)]),
            SequenceCheck::Append
        );
    }
}
