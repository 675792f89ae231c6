//! The log seam between a Raft group and the partition log.
//!
//! [`GroupLog`] is the subset of `freshet_storage::Log` that Raft uses: append whole Kafka v2
//! batches stamped with a term, flush, truncate a conflicting suffix (§5.3), read back whole
//! batches. The real implementation is the storage crate's `Log`; [`MemLog`] is an in-memory
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
}

#[derive(Debug, Default, Clone)]
struct MemLogImage {
    /// (base_offset, stamped batch bytes), in offset order.
    batches: Vec<(i64, Bytes)>,
    next_offset: i64,
}

#[derive(Debug, Default)]
struct MemLogState {
    current: MemLogImage,
    durable: MemLogImage,
    /// Smallest length `current.batches` was truncated to since the last flush.
    truncated_to: Option<usize>,
    crashed: bool,
    flushes: u64,
}

/// An in-memory [`GroupLog`] with a crash model: after [`MemLog::crash`], what survives is the
/// image of the last flush plus a seeded-random prefix of the writes made since (lost unflushed
/// writes); an unflushed truncation may or may not have happened.
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
        let keep_from = st.truncated_to.unwrap_or(current.batches.len());
        let extends = keep_from >= durable.batches.len();
        let mut image = if extends || rng.chance(500_000) {
            // Writes after the last flush reach the disk in order; a random prefix survives.
            let base = if extends {
                durable.batches.len()
            } else {
                keep_from
            };
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
            .unwrap_or(st.durable.next_offset.min(image.next_offset));
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
        let keep = st.current.batches.partition_point(|(o, _)| *o < offset);
        st.current.batches.truncate(keep);
        st.current.next_offset = offset.min(st.current.next_offset);
        let t = st.truncated_to.map_or(keep, |t| t.min(keep));
        st.truncated_to = Some(t);
        Ok(())
    }

    async fn read(&self, offset: i64, max_bytes: usize, upto: i64) -> Result<Bytes, LogError> {
        let st = self.st.borrow();
        let start = self.log_start_offset();
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
        self.st
            .borrow()
            .current
            .batches
            .first()
            .map_or(self.st.borrow().current.next_offset, |(o, _)| *o)
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
}
