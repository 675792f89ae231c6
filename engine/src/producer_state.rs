//! Idempotent-producer sequence checks (KIP-98) for one partition.
//!
//! `ProducerStates` is per partition, per core (`!Send`, inside `Partition`). For each producer
//! id it remembers the epoch, the next expected sequence and the last few appended batches,
//! so a retried batch is answered with its original offsets instead of being appended twice.
//! On partition open the state is rebuilt from the batch headers of the log tail (see
//! [`ProducerStates::replay`] and `BrokerConfig::producer_state_scan_bytes`), as Kafka rebuilds
//! it from the log; a producer whose batches all lie before the scanned tail is unknown, and
//! its first batch is accepted at any sequence (KIP-360, as for a producer whose state expired).

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
        Some(
            Self::parse_with_offsets(batches)?
                .into_iter()
                .map(|(_, b)| b)
                .collect(),
        )
    }

    /// Like [`Self::parse_all`], with each batch's base offset (as stored in the log).
    pub fn parse_with_offsets(batches: &[u8]) -> Option<Vec<(i64, ProducerBatch)>> {
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
            out.push((
                i64::from_be_bytes(b[0..8].try_into().ok()?),
                ProducerBatch {
                    producer_id: i64::from_be_bytes(b[43..51].try_into().ok()?),
                    producer_epoch: i16::from_be_bytes(b[51..53].try_into().ok()?),
                    base_sequence: i32::from_be_bytes(b[53..57].try_into().ok()?),
                    last_offset_delta: i32::from_be_bytes(b[23..27].try_into().ok()?),
                },
            ));
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
    /// A retry of a batch whose append has not finished yet (the partition waits for the
    /// original's outcome, then checks again).
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

    /// Replays one batch found in the log at `base_offset` (partition open, log order): the
    /// producer's epoch, next sequence and last [`RECENT_BATCHES`] batches become what they
    /// were after that append. Batches without a producer id, or with an epoch older than
    /// one already replayed (cannot have been appended), change nothing.
    pub fn replay(&mut self, base_offset: i64, b: &ProducerBatch) {
        if b.producer_id < 0 {
            return;
        }
        let e = self.producers.entry(b.producer_id).or_default();
        let known = !e.recent.is_empty() || e.next_sequence != 0;
        if known && b.producer_epoch < e.epoch {
            return;
        }
        if !known || b.producer_epoch > e.epoch {
            e.recent.clear();
        }
        e.epoch = b.producer_epoch;
        let last_offset = base_offset + b.last_offset_delta as i64;
        e.recent
            .push_back((b.base_sequence, base_offset, last_offset));
        while e.recent.len() > RECENT_BATCHES {
            e.recent.pop_front();
        }
        e.next_sequence = b.last_sequence().wrapping_add(1).max(0);
    }

    /// Producers with state (for logs and tests).
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The append failed: forget the producer (its next batch is accepted at any sequence,
    /// as after an expiry) rather than leave a reservation that can never be filled.
    pub fn failed(&mut self, batches: &[ProducerBatch]) {
        if let Some(first) = batches.first() {
            self.producers.remove(&first.producer_id);
        }
    }
}

/// First offset of the log tail scanned to rebuild producer state: the newest segments whose
/// sizes add up to at least `scan_bytes` (always the active segment), never below the log
/// start. `segments` = (base offset, size in bytes, next offset), oldest first.
pub fn replay_start_offset(
    segments: &[(i64, u64, i64)],
    log_start_offset: i64,
    scan_bytes: u64,
) -> i64 {
    let mut start = log_start_offset;
    let mut scanned_bytes = 0u64;
    for &(base, size, _) in segments.iter().rev() {
        start = base;
        scanned_bytes = scanned_bytes.saturating_add(size);
        if scanned_bytes >= scan_bytes {
            break;
        }
    }
    start.max(log_start_offset)
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

    /// KIP-98 state rebuilt from the log: after replaying the appended batches, a retry of
    /// one of the last 5 batches is a duplicate with its original offsets, the next sequence
    /// appends, a gap is out of order, an older epoch is fenced.
    #[test]
    fn kip_98_state_replayed_from_the_log_detects_retries_after_a_restart() {
        let mut s = ProducerStates::default();
        let mut off = 0;
        for seq in 0..7 {
            s.replay(off, &b(9, 2, seq * 2, 2));
            off += 2;
        }
        s.replay(off, &b(-1, -1, -1, 4)); // a non-idempotent batch in between
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.check_and_reserve(&[b(9, 2, 12, 2)]),
            SequenceCheck::Duplicate {
                first_offset: 12,
                last_offset: 13
            }
        );
        assert_eq!(
            s.check_and_reserve(&[b(9, 2, 4, 2)]),
            SequenceCheck::Duplicate {
                first_offset: 4,
                last_offset: 5
            }
        );
        // Only the last 5 batches are remembered: sequence 2 (offsets 2-3) is too old.
        assert_eq!(
            s.check_and_reserve(&[b(9, 2, 2, 2)]),
            SequenceCheck::OutOfOrder
        );
        assert_eq!(
            s.check_and_reserve(&[b(9, 2, 20, 1)]),
            SequenceCheck::OutOfOrder
        );
        assert_eq!(
            s.check_and_reserve(&[b(9, 1, 14, 1)]),
            SequenceCheck::FencedEpoch
        );
        assert_eq!(
            s.check_and_reserve(&[b(9, 2, 14, 1)]),
            SequenceCheck::Append
        );
    }

    #[test]
    fn kip_98_replay_follows_epoch_bumps_and_ignores_older_epochs() {
        let mut s = ProducerStates::default();
        s.replay(0, &b(3, 0, 0, 1));
        s.replay(1, &b(3, 1, 0, 1)); // new epoch restarts sequences
        s.replay(2, &b(3, 0, 1, 1)); // older epoch: cannot have been appended; ignored
        assert_eq!(s.check_and_reserve(&[b(3, 1, 1, 1)]), SequenceCheck::Append);
        assert_eq!(
            s.check_and_reserve(&[b(3, 0, 1, 1)]),
            SequenceCheck::FencedEpoch
        );
    }

    /// The scan bound: newest segments until `scan_bytes` is reached, never below log start.
    #[test]
    fn replay_scans_the_newest_segments_up_to_the_byte_bound() {
        let segs = [(0, 100, 10), (10, 100, 20), (20, 30, 25)];
        assert_eq!(replay_start_offset(&segs, 0, 1), 20);
        assert_eq!(replay_start_offset(&segs, 0, 30), 20);
        assert_eq!(replay_start_offset(&segs, 0, 31), 10);
        assert_eq!(replay_start_offset(&segs, 0, 130), 10);
        assert_eq!(replay_start_offset(&segs, 0, 131), 0);
        assert_eq!(replay_start_offset(&segs, 0, u64::MAX), 0);
        assert_eq!(replay_start_offset(&segs, 5, u64::MAX), 5);
        assert_eq!(replay_start_offset(&[], 7, 100), 7);
    }
}
