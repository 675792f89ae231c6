//! The log seam between a Raft group and the partition log.
//!
//! [`GroupLog`] is the subset of `freshet_storage::Log` that Raft uses: append whole Kafka v2
//! batches stamped with a term, flush, truncate a conflicting suffix (§5.3), read back whole
//! batches, drop a prefix covered by a snapshot and restart the log at a snapshot's position
//! (§7, log compaction). The real implementation is the storage crate's `Log`; [`MemLog`] is an in-memory
//! log for the deterministic simulator that can crash and lose unflushed writes.
//!
//! Ownership: per core, `!Send` (shared inside the core through `Rc`).

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::batch::{parse_batch, restamp};
use crate::rng::SimRng;

/// Errors from a group's log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log refused the batch (bad CRC, framing, too large).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// Read below the log start or above the end.
    #[error("offset {offset} out of range [{start}, {end})")]
    OffsetOutOfRange {
        /// Requested offset.
        offset: i64,
        /// Log start offset.
        start: i64,
        /// Next offset.
        end: i64,
    },
    /// The log is crashed/closed (simulator) or an I/O error happened (real disk).
    #[error("log I/O error: {0}")]
    Io(String),
}

/// What Raft needs from a partition log. Offsets are log offsets (every record of every batch,
/// internal ones included, has one).
pub trait GroupLog {
    /// Appends whole batches, assigning base offsets from `next_offset()` and stamping
    /// `partition_leader_epoch = term`; returns the base offset of the first batch.
    fn append(&self, batches: Bytes, term: i32) -> impl Future<Output = Result<i64, LogError>>;
    /// Makes everything appended so far durable; returns the durable offset (exclusive).
    fn flush(&self) -> impl Future<Output = Result<i64, LogError>>;
    /// Drops every batch with base offset >= `offset`.
    fn truncate(&self, offset: i64) -> impl Future<Output = Result<(), LogError>>;
    /// Whole batches starting with the one containing `offset`, at least one (if any), about
    /// `max_bytes`, none whose base offset is >= `upto`.
    fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upto: i64,
    ) -> impl Future<Output = Result<Bytes, LogError>>;
    /// Next offset to be assigned (log end offset).
    fn next_offset(&self) -> i64;
    /// First offset held.
    fn log_start_offset(&self) -> i64;
    /// Moves the log start up to `offset` (log compaction, §7): batches wholly below it go,
    /// a batch holding it stays; beyond the end, the log is emptied and restarts at `offset`.
    /// When the start moves, the new start and everything appended before are durable on
    /// return. No-op when `offset <= log_start_offset()`.
    fn prefix_truncate(&self, offset: i64) -> impl Future<Output = Result<(), LogError>>;
    /// Drops the whole log and restarts it, empty, at `offset` (a follower installing a
    /// snapshot, §7): afterwards `log_start_offset() == next_offset() == offset`, durably.
    /// `offset` must be `>= log_start_offset()` (`OffsetOutOfRange` otherwise). Idempotent,
    /// so an install interrupted by a crash is completed by calling it again.
    fn reset_to(&self, offset: i64) -> impl Future<Output = Result<(), LogError>>;
}

/// A shared log (the engine's read path holds the other `Rc`).
impl<T: GroupLog> GroupLog for Rc<T> {
    fn append(&self, batches: Bytes, term: i32) -> impl Future<Output = Result<i64, LogError>> {
        (**self).append(batches, term)
    }
    fn flush(&self) -> impl Future<Output = Result<i64, LogError>> {
        (**self).flush()
    }
    fn truncate(&self, offset: i64) -> impl Future<Output = Result<(), LogError>> {
        (**self).truncate(offset)
    }
    fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upto: i64,
    ) -> impl Future<Output = Result<Bytes, LogError>> {
        (**self).read(offset, max_bytes, upto)
    }
    fn next_offset(&self) -> i64 {
        (**self).next_offset()
    }
    fn log_start_offset(&self) -> i64 {
        (**self).log_start_offset()
    }
    fn prefix_truncate(&self, offset: i64) -> impl Future<Output = Result<(), LogError>> {
        (**self).prefix_truncate(offset)
    }
    fn reset_to(&self, offset: i64) -> impl Future<Output = Result<(), LogError>> {
        (**self).reset_to(offset)
    }
}

fn storage_err(e: freshet_storage::StorageError) -> LogError {
    use freshet_storage::StorageError as S;
    match e {
        S::CorruptBatch(m) | S::InvalidBatch(m) => LogError::InvalidBatch(m),
        S::UnsupportedMagic(m) => LogError::InvalidBatch(format!("magic {m}")),
        S::BatchTooLarge {
            size_bytes,
            max_bytes,
        } => LogError::InvalidBatch(format!("{size_bytes} bytes > {max_bytes}")),
        S::OffsetOutOfRange {
            offset,
            log_start_offset,
            next_offset,
        } => LogError::OffsetOutOfRange {
            offset,
            start: log_start_offset,
            end: next_offset,
        },
        other => LogError::Io(other.to_string()),
    }
}

/// The real partition log. Raft entries are stamped with their term as leader epoch; no
/// LogAppendTime rewriting happens here (the leader's batch bytes are replicated as they are).
impl<D: freshet_storage::Disk> GroupLog for freshet_storage::Log<D> {
    async fn append(&self, batches: Bytes, term: i32) -> Result<i64, LogError> {
        freshet_storage::Log::append(self, batches, term, None)
            .await
            .map(|info| info.first_offset)
            .map_err(storage_err)
    }
    async fn flush(&self) -> Result<i64, LogError> {
        freshet_storage::Log::flush(self).await.map_err(storage_err)
    }
    async fn truncate(&self, offset: i64) -> Result<(), LogError> {
        freshet_storage::Log::truncate(self, offset)
            .await
            .map_err(storage_err)
    }
    async fn read(&self, offset: i64, max_bytes: usize, upto: i64) -> Result<Bytes, LogError> {
        freshet_storage::Log::read(self, offset, max_bytes, upto)
            .await
            .map_err(storage_err)
    }
    fn next_offset(&self) -> i64 {
        freshet_storage::Log::next_offset(self)
    }
    fn log_start_offset(&self) -> i64 {
        freshet_storage::Log::log_start_offset(self)
    }
    async fn prefix_truncate(&self, offset: i64) -> Result<(), LogError> {
        freshet_storage::Log::prefix_truncate(self, offset)
            .await
            .map_err(storage_err)
    }
    /// Storage has no single call for this: `truncate(offset)` drops every batch at or above
    /// `offset` (a batch straddling it whole; durable on return), then `prefix_truncate`
    /// moves the start to `offset` (beyond the end it starts a fresh segment there; the new
    /// start is persisted). A crash between the two leaves a log that a repeated call
    /// finishes (truncate is then a no-op).
    async fn reset_to(&self, offset: i64) -> Result<(), LogError> {
        let start = freshet_storage::Log::log_start_offset(self);
        if offset < start {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start,
                end: freshet_storage::Log::next_offset(self),
            });
        }
        freshet_storage::Log::truncate(self, offset)
            .await
            .map_err(storage_err)?;
        freshet_storage::Log::prefix_truncate(self, offset)
            .await
            .map_err(storage_err)?;
        let (start, end) = (
            freshet_storage::Log::log_start_offset(self),
            freshet_storage::Log::next_offset(self),
        );
        if start != offset || end != offset {
            return Err(LogError::Io(format!(
                "reset to {offset} left the log at [{start}, {end})"
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
struct MemLogImage {
    /// First offset held (moved by `prefix_truncate` / `reset_to`).
    start: i64,
    /// (base_offset, stamped batch bytes), in offset order.
    batches: Vec<(i64, Bytes)>,
    next_offset: i64,
}

impl MemLogImage {
    /// Drops the batches wholly below `offset`; beyond the end, empties the image at `offset`.
    fn drop_prefix(&mut self, offset: i64) {
        if offset <= self.start {
            return;
        }
        if offset >= self.next_offset {
            self.batches.clear();
            self.next_offset = offset;
        } else {
            let k = self.batches.partition_point(|(o, b)| {
                o + i64::from(parse_batch(b).expect("stored batch").offset_count()) <= offset
            });
            self.batches.drain(..k);
        }
        self.start = offset;
    }
}

#[derive(Debug, Default)]
struct MemLogState {
    current: MemLogImage,
    durable: MemLogImage,
    /// Smallest offset the log was (suffix-)truncated to since the last flush.
    truncated_to: Option<i64>,
    crashed: bool,
    flushes: u64,
}

/// An in-memory [`GroupLog`] with a crash model: after [`MemLog::crash`], what survives is the
/// image of the last flush plus a seeded-random prefix of the writes made since (lost unflushed
/// writes); an unflushed truncation may or may not have happened. Prefix truncation and
/// `reset_to` are durable on return (as in the storage crate).
///
/// Ownership: per core, `!Send`; clones share one log (the "disk" survives a node restart).
#[derive(Debug, Clone, Default)]
pub struct MemLog {
    st: Rc<RefCell<MemLogState>>,
}

impl MemLog {
    /// An empty log starting at offset 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a power loss: unflushed writes are lost except a random prefix.
    pub fn crash(&self, rng: &mut SimRng) {
        let mut st = self.st.borrow_mut();
        let durable = st.durable.clone();
        let current = st.current.clone();
        let cut = st.truncated_to.unwrap_or(current.next_offset);
        // Below `cut` the current image equals the durable one (only appends since).
        let extends = cut >= durable.next_offset;
        let mut image = if extends || rng.chance(500_000) {
            // Writes after the last flush reach the disk in order; a random prefix survives.
            let base_offset = if extends { durable.next_offset } else { cut };
            let base = current.batches.partition_point(|(o, _)| *o < base_offset);
            let extra = current.batches.len() - base;
            let keep = base + rng.below(extra as u64 + 1) as usize;
            let mut img = current.clone();
            img.batches.truncate(keep);
            img
        } else {
            durable
        };
        image.next_offset = image
            .batches
            .last()
            .map(|(o, b)| o + parse_batch(b).expect("stored batch").offset_count() as i64)
            .unwrap_or(st.durable.next_offset.min(image.next_offset))
            .max(image.start);
        st.current = image.clone();
        st.durable = image;
        st.truncated_to = None;
        st.crashed = false;
    }

    /// Number of flushes performed (for tests that check flush coalescing).
    pub fn flush_count(&self) -> u64 {
        self.st.borrow().flushes
    }

    /// Durable offset (exclusive).
    pub fn durable_offset(&self) -> i64 {
        self.st.borrow().durable.next_offset
    }
}

impl GroupLog for MemLog {
    async fn append(&self, batches: Bytes, term: i32) -> Result<i64, LogError> {
        let mut st = self.st.borrow_mut();
        if st.crashed {
            return Err(LogError::Io("crashed".into()));
        }
        let mut parsed = Vec::new();
        let mut rest = batches;
        while !rest.is_empty() {
            let h = parse_batch(&rest).map_err(|e| LogError::InvalidBatch(e.to_string()))?;
            parsed.push((h, rest.split_to(h.total_bytes())));
        }
        let base = st.current.next_offset;
        for (h, b) in parsed {
            let off = st.current.next_offset;
            st.current.batches.push((off, restamp(&b, off, term)));
            st.current.next_offset += h.offset_count() as i64;
        }
        Ok(base)
    }

    async fn flush(&self) -> Result<i64, LogError> {
        let mut st = self.st.borrow_mut();
        if st.crashed {
            return Err(LogError::Io("crashed".into()));
        }
        st.durable = st.current.clone();
        st.truncated_to = None;
        st.flushes += 1;
        Ok(st.durable.next_offset)
    }

    async fn truncate(&self, offset: i64) -> Result<(), LogError> {
        let mut st = self.st.borrow_mut();
        if offset >= st.current.next_offset {
            return Ok(());
        }
        if offset < st.current.start {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: st.current.start,
                end: st.current.next_offset,
            });
        }
        // A batch holding `offset` goes whole (as in the storage crate).
        let keep = st.current.batches.partition_point(|(o, b)| {
            o + i64::from(parse_batch(b).expect("stored batch").offset_count()) <= offset
        });
        st.current.batches.truncate(keep);
        let end = st
            .current
            .batches
            .last()
            .map_or(st.current.start, |(o, b)| {
                o + i64::from(parse_batch(b).expect("stored batch").offset_count())
            });
        st.current.next_offset = end;
        let t = st.truncated_to.map_or(end, |t| t.min(end));
        st.truncated_to = Some(t);
        Ok(())
    }

    async fn read(&self, offset: i64, max_bytes: usize, upto: i64) -> Result<Bytes, LogError> {
        let st = self.st.borrow();
        let start = st.current.start;
        if offset < start || offset > st.current.next_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start,
                end: st.current.next_offset,
            });
        }
        // The batch containing `offset`: the last with base <= offset.
        let first = st
            .current
            .batches
            .partition_point(|(o, _)| *o <= offset)
            .saturating_sub(1);
        let mut out = BytesMut::new();
        for (o, b) in &st.current.batches[first..] {
            if *o >= upto || (!out.is_empty() && out.len() + b.len() > max_bytes) {
                break;
            }
            out.extend_from_slice(b);
        }
        Ok(out.freeze())
    }

    fn next_offset(&self) -> i64 {
        self.st.borrow().current.next_offset
    }

    fn log_start_offset(&self) -> i64 {
        self.st.borrow().current.start
    }

    async fn prefix_truncate(&self, offset: i64) -> Result<(), LogError> {
        let mut st = self.st.borrow_mut();
        if st.crashed {
            return Err(LogError::Io("crashed".into()));
        }
        if offset <= st.current.start {
            return Ok(());
        }
        // As in the storage crate: buffered appends are written first, then the new start.
        st.current.drop_prefix(offset);
        st.durable = st.current.clone();
        st.truncated_to = None;
        Ok(())
    }

    async fn reset_to(&self, offset: i64) -> Result<(), LogError> {
        let mut st = self.st.borrow_mut();
        if st.crashed {
            return Err(LogError::Io("crashed".into()));
        }
        if offset < st.current.start {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: st.current.start,
                end: st.current.next_offset,
            });
        }
        let empty = MemLogImage {
            start: offset,
            batches: Vec::new(),
            next_offset: offset,
        };
        st.current = empty.clone();
        st.durable = empty;
        st.truncated_to = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{encode_batch, split_batches};
    use futures_lite::future::block_on;

    fn batch(n: usize) -> Bytes {
        let recs: Vec<_> = (0..n).map(|_| (None, Some(&b"r"[..]))).collect();
        encode_batch(0, 0, -1, &recs)
    }

    #[test]
    fn appends_assign_offsets_and_stamp_term_then_truncate_drops_the_suffix() {
        block_on(async {
            let log = MemLog::new();
            assert_eq!(log.append(batch(3), 1).await.unwrap(), 0);
            let mut two = BytesMut::new();
            two.extend_from_slice(&batch(1));
            two.extend_from_slice(&batch(2));
            assert_eq!(log.append(two.freeze(), 2).await.unwrap(), 3);
            assert_eq!(log.next_offset(), 6);
            let all = split_batches(log.read(0, 1 << 20, i64::MAX).await.unwrap()).unwrap();
            let got: Vec<_> = all
                .iter()
                .map(|(h, _)| (h.base_offset, h.partition_leader_epoch))
                .collect();
            assert_eq!(got, vec![(0, 1), (3, 2), (4, 2)]);
            // Reading from the middle of a batch starts at that batch.
            let mid = split_batches(log.read(5, 1, i64::MAX).await.unwrap()).unwrap();
            assert_eq!(mid[0].0.base_offset, 4);
            log.truncate(3).await.unwrap();
            assert_eq!(log.next_offset(), 3);
        });
    }

    #[test]
    fn crash_loses_only_unflushed_writes() {
        block_on(async {
            let log = MemLog::new();
            log.append(batch(1), 1).await.unwrap();
            log.flush().await.unwrap();
            for _ in 0..5 {
                log.append(batch(1), 1).await.unwrap();
            }
            let mut rng = SimRng::new(3);
            log.crash(&mut rng);
            let n = log.next_offset();
            assert!((1..=6).contains(&n), "kept {n}");
            assert_eq!(log.durable_offset(), n);
        });
    }

    #[test]
    fn prefix_truncate_keeps_later_batches_and_survives_a_crash_section_7() {
        block_on(async {
            let log = MemLog::new();
            for n in [2, 3, 1] {
                log.append(batch(n), 1).await.unwrap();
            }
            // Unflushed: compaction writes them out first (as storage does).
            log.prefix_truncate(2).await.unwrap();
            assert_eq!(log.log_start_offset(), 2);
            let got = split_batches(log.read(2, 1 << 20, i64::MAX).await.unwrap()).unwrap();
            let bases: Vec<_> = got.iter().map(|(h, _)| h.base_offset).collect();
            assert_eq!(bases, vec![2, 5]);
            assert!(matches!(
                log.read(1, 1 << 20, i64::MAX).await,
                Err(LogError::OffsetOutOfRange { start: 2, .. })
            ));
            log.append(batch(1), 2).await.unwrap();
            let mut rng = SimRng::new(1);
            log.crash(&mut rng);
            assert_eq!(log.log_start_offset(), 2, "the new start is durable");
            assert!((6..=7).contains(&log.next_offset()));
            // Beyond the end: the log restarts empty there.
            log.prefix_truncate(40).await.unwrap();
            assert_eq!((log.log_start_offset(), log.next_offset()), (40, 40));
            assert_eq!(log.append(batch(1), 3).await.unwrap(), 40);
        });
    }

    #[test]
    fn reset_to_drops_the_whole_log_and_restarts_at_the_snapshot_position_section_7() {
        block_on(async {
            let log = MemLog::new();
            for n in [2, 3, 1] {
                log.append(batch(n), 1).await.unwrap();
            }
            log.flush().await.unwrap();
            log.append(batch(4), 2).await.unwrap();
            // Inside the log (a divergent suffix beyond it goes too) ...
            log.reset_to(3).await.unwrap();
            assert_eq!((log.log_start_offset(), log.next_offset()), (3, 3));
            assert!(log.read(3, 1 << 20, i64::MAX).await.unwrap().is_empty());
            let mut rng = SimRng::new(2);
            log.crash(&mut rng);
            assert_eq!((log.log_start_offset(), log.next_offset()), (3, 3));
            // ... beyond it, and again (idempotent).
            log.reset_to(9).await.unwrap();
            log.reset_to(9).await.unwrap();
            assert_eq!(log.append(batch(2), 5).await.unwrap(), 9);
            assert!(log.reset_to(8).await.is_err(), "below the start");
        });
    }
}
