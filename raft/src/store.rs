//! `raft::Storage` for one group: the entry table (Raft index → term, log offset, Kafka
//! offset), the per-core entry cache, and the asynchronous-fetch bookkeeping.
//!
//! raft-rs reads entries synchronously. Entries not yet applied are always in the cache (the
//! cache never evicts above the applied index), so every synchronous read raft-rs makes while
//! generating a Ready or checking for pending configuration changes is served from memory.
//! Reads for followers that are behind (`GetEntriesContext::can_async()`) below the cache are
//! answered with `LogTemporarilyUnavailable`; the driver then reads the batches from the log,
//! places them in [`GroupState::fetched`] and calls `RawNode::on_entries_fetched`, which
//! retries the read.
//!
//! Three numberings, one table ([`EntryMeta`], one row per Raft entry, 32 bytes):
//! - Raft index: dense over all entries;
//! - log offset: dense over all records of all batches, internal ones included;
//! - Kafka offset: dense over the records of data batches only (what clients see).
//!
//! Ownership: per core, `!Send`; shared between the `RawNode` and the driver by `Rc`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::batch::{entry_is_internal, parse_batch};
use crate::meta::LogAnchor;

/// Where one Raft entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// Raft term (also the batch's partition leader epoch).
    pub term: u64,
    /// Log offset of the batch's first record.
    pub log_offset: i64,
    /// Kafka offset of the batch's first record (for internal entries: the next data offset).
    pub kafka_offset: i64,
    /// Offsets the batch occupies in the log.
    pub log_count: u32,
    /// Offsets the batch occupies in Kafka's numbering (0 for internal entries).
    pub kafka_count: u32,
}

/// A read raft-rs asked for that must come from disk.
#[derive(Debug)]
pub struct FetchRequest {
    /// First index wanted.
    pub low: u64,
    /// One past the last index wanted.
    pub high: u64,
    /// Byte budget raft-rs asked for.
    pub max_size: Option<u64>,
    /// Handed back to `RawNode::on_entries_fetched`.
    pub context: GetEntriesContext,
}

/// The mutable state behind [`GroupStorage`].
#[derive(Debug)]
pub struct GroupState {
    /// Persisted HardState (what the group state file holds).
    pub hard_state: HardState,
    /// Persisted ConfState.
    pub conf_state: ConfState,
    /// Start of the log.
    pub anchor: LogAnchor,
    /// One row per entry, for indexes `anchor.index ..`.
    metas: VecDeque<EntryMeta>,
    /// The most recent entries, contiguous, ending at the last index (may be empty).
    cache: VecDeque<Entry>,
    cache_bytes: usize,
    /// Cache budget; the cache keeps every unapplied entry regardless.
    pub cache_bytes_max: usize,
    /// Highest applied index (the cache may evict at or below it).
    pub applied: u64,
    /// Entries read back from the log for an asynchronous fetch, contiguous.
    pub fetched: VecDeque<Entry>,
    /// Reads waiting for the driver.
    pub pending_fetches: Vec<FetchRequest>,
    /// DeleteRecords' log start (KIP-107): the largest Kafka offset named by a committed log
    /// start entry ([`crate::batch::InternalKind::LogStart`]) applied here (or found at or
    /// below the commit index by the recovery scan); 0 if none. See
    /// [`GroupState::log_start_kafka`].
    pub kafka_log_start: i64,
}

fn entry_bytes(e: &Entry) -> usize {
    e.data.len() + e.context.len() + 32
}

impl GroupState {
    /// A group whose log starts at `anchor` and is empty.
    pub fn new(
        hard_state: HardState,
        conf_state: ConfState,
        anchor: LogAnchor,
        cache_bytes_max: usize,
    ) -> Self {
        Self {
            hard_state,
            conf_state,
            anchor,
            metas: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_bytes_max,
            applied: anchor.index - 1,
            fetched: VecDeque::new(),
            pending_fetches: Vec::new(),
            kafka_log_start: 0,
        }
    }

    /// The Kafka log start clients see: the larger of the anchor's Kafka offset and the
    /// applied log start entries' offset. Exact on every replica that applied the entry: a
    /// log start entry lies after the entry holding its offset, so it is compacted away (or
    /// skipped by a snapshot) only once the anchor itself is at or past that offset.
    pub fn log_start_kafka(&self) -> i64 {
        self.anchor.kafka_offset.max(self.kafka_log_start)
    }

    /// Records an applied (committed) log start entry naming `kafka_offset`; the log start
    /// only moves forward.
    pub fn note_log_start(&mut self, kafka_offset: i64) {
        self.kafka_log_start = self.kafka_log_start.max(kafka_offset);
    }

    /// First index held.
    pub fn first_index(&self) -> u64 {
        self.anchor.index
    }

    /// Last index held (first_index - 1 when empty).
    pub fn last_index(&self) -> u64 {
        self.anchor.index + self.metas.len() as u64 - 1
    }

    /// Row of `index`, if held.
    pub fn meta(&self, index: u64) -> Option<&EntryMeta> {
        index
            .checked_sub(self.anchor.index)
            .and_then(|i| self.metas.get(i as usize))
    }

    /// Log offset the next entry will get.
    pub fn log_end_offset(&self) -> i64 {
        self.metas.back().map_or(self.anchor.log_offset, |m| {
            m.log_offset + i64::from(m.log_count)
        })
    }

    /// Kafka offset the next data record will get.
    pub fn kafka_end_offset(&self) -> i64 {
        self.metas.back().map_or(self.anchor.kafka_offset, |m| {
            m.kafka_offset + i64::from(m.kafka_count)
        })
    }

    /// Kafka offset one past the last record of entry `index` (the high watermark once
    /// `index` is committed).
    pub fn kafka_end_at(&self, index: u64) -> i64 {
        if index < self.anchor.index {
            return self.anchor.kafka_offset;
        }
        let m = self
            .meta(index)
            .unwrap_or_else(|| panic!("kafka_end_at({index}) beyond last {}", self.last_index()));
        m.kafka_offset + i64::from(m.kafka_count)
    }

    /// Translates a Kafka offset to the log offset holding that record; `kafka_end_offset()`
    /// maps to `log_end_offset()`; None below the anchor or beyond the end.
    pub fn kafka_to_log(&self, kafka_offset: i64) -> Option<i64> {
        if kafka_offset < self.anchor.kafka_offset || kafka_offset > self.kafka_end_offset() {
            return None;
        }
        let i = self
            .metas
            .partition_point(|m| m.kafka_offset + i64::from(m.kafka_count) <= kafka_offset);
        match self.metas.get(i) {
            None => Some(self.log_end_offset()),
            Some(m) => Some(m.log_offset + (kafka_offset - m.kafka_offset)),
        }
    }

    /// Kafka base offset of the data batch whose log base offset is `log_offset`; None for
    /// internal entries or an offset that is not a batch start.
    pub fn log_to_kafka(&self, log_offset: i64) -> Option<i64> {
        let i = self.metas.partition_point(|m| m.log_offset < log_offset);
        let m = self.metas.get(i)?;
        (m.log_offset == log_offset && m.kafka_count > 0).then_some(m.kafka_offset)
    }

    /// Kafka offset of the record at `log_offset`, which may lie anywhere inside a data
    /// batch (not only at its base; e.g. a timestamp index hit). None for internal entries
    /// and offsets outside the entries held.
    pub fn log_to_kafka_record(&self, log_offset: i64) -> Option<i64> {
        let i = self
            .metas
            .partition_point(|m| m.log_offset + i64::from(m.log_count) <= log_offset);
        let m = self.metas.get(i)?;
        (m.log_offset <= log_offset && m.kafka_count > 0)
            .then(|| m.kafka_offset + (log_offset - m.log_offset))
    }

    /// Drops every entry with index >= `index` (a conflicting suffix, §5.3).
    pub fn truncate_from(&mut self, index: u64) {
        assert!(
            index > self.hard_state.commit,
            "truncating committed entry {index} (commit {})",
            self.hard_state.commit
        );
        let keep = (index - self.anchor.index) as usize;
        self.metas.truncate(keep);
        while self.cache.back().is_some_and(|e| e.index >= index) {
            let e = self.cache.pop_back().expect("non-empty");
            self.cache_bytes -= entry_bytes(&e);
        }
        self.fetched.clear();
    }

    /// Records entries just appended to the log (contiguous, starting at last_index + 1) and
    /// returns their rows. `batch_offset_counts[i]` is how many log offsets entry i occupies.
    pub fn push_entries(&mut self, entries: &[Entry]) -> Vec<EntryMeta> {
        let mut rows = Vec::with_capacity(entries.len());
        for e in entries {
            assert_eq!(
                e.index,
                self.last_index() + 1,
                "entries must extend the log contiguously"
            );
            let (log_count, kafka_count) = if entry_is_internal(e) {
                (1, 0)
            } else {
                let h = parse_batch(&e.data).expect("data entries are validated at propose");
                (h.offset_count(), h.offset_count())
            };
            let m = EntryMeta {
                term: e.term,
                log_offset: self.log_end_offset(),
                kafka_offset: self.kafka_end_offset(),
                log_count,
                kafka_count,
            };
            self.metas.push_back(m);
            rows.push(m);
            if self.cache.back().is_none_or(|c| c.index + 1 == e.index) {
                self.cache_bytes += entry_bytes(e);
                self.cache.push_back(e.clone());
            }
        }
        self.evict();
        rows
    }

    /// Rebuilds one row while scanning the log at open (no caching).
    pub fn push_recovered(&mut self, m: EntryMeta) {
        assert_eq!(
            m.log_offset,
            self.log_end_offset(),
            "recovered rows must be contiguous"
        );
        assert_eq!(
            m.kafka_offset,
            self.kafka_end_offset(),
            "recovered Kafka offsets dense"
        );
        self.metas.push_back(m);
    }

    /// Index of the entry holding Kafka offset `kafka_offset` (the first entry whose Kafka
    /// range ends after it, so internal entries before it are passed), capped at
    /// `applied + 1` (§7: a snapshot covers applied entries only) and never below the
    /// current anchor. `compact_to` of the result keeps every record at or after
    /// `kafka_offset` that is held.
    pub fn compaction_index(&self, kafka_offset: i64) -> u64 {
        let i = self
            .metas
            .partition_point(|m| m.kafka_offset + i64::from(m.kafka_count) <= kafka_offset);
        (self.anchor.index + i as u64).min(self.applied + 1)
    }

    /// Log compaction (§7): the log now begins at `index` (`anchor.index ..= applied + 1`);
    /// rows and cached entries below it go. Returns the new anchor, which the caller makes
    /// durable in the group state file before cutting the log itself.
    pub fn compact_to(&mut self, index: u64) -> LogAnchor {
        assert!(
            index >= self.anchor.index,
            "compaction to {index} below the anchor {}",
            self.anchor.index
        );
        assert!(
            index <= self.applied + 1,
            "compaction to {index} past the applied index {} (§7: snapshots cover applied entries)",
            self.applied
        );
        if index == self.anchor.index {
            return self.anchor;
        }
        let prev_term = self.meta(index - 1).expect("applied entry held").term;
        let anchor = LogAnchor {
            index,
            prev_term,
            log_offset: self
                .meta(index)
                .map_or(self.log_end_offset(), |m| m.log_offset),
            kafka_offset: self
                .meta(index)
                .map_or(self.kafka_end_offset(), |m| m.kafka_offset),
        };
        self.metas.drain(..(index - self.anchor.index) as usize);
        self.anchor = anchor;
        while self.cache.front().is_some_and(|e| e.index < index) {
            let e = self.cache.pop_front().expect("non-empty");
            self.cache_bytes -= entry_bytes(&e);
        }
        while self.fetched.front().is_some_and(|e| e.index < index) {
            self.fetched.pop_front();
        }
        anchor
    }

    /// A follower installs a snapshot (§7): every entry goes, the log begins at `anchor`
    /// (the entry after the snapshot's index), and everything up to the snapshot counts as
    /// committed and applied.
    pub fn install_snapshot(&mut self, anchor: LogAnchor, conf_state: ConfState) {
        let snapshot_index = anchor.index - 1;
        assert!(
            snapshot_index > self.applied,
            "snapshot at {snapshot_index} does not pass the applied index {}",
            self.applied
        );
        self.metas.clear();
        self.cache.clear();
        self.cache_bytes = 0;
        self.fetched.clear();
        self.pending_fetches.clear();
        self.anchor = anchor;
        self.applied = snapshot_index;
        self.hard_state.commit = self.hard_state.commit.max(snapshot_index);
        self.conf_state = conf_state;
    }

    /// The snapshot a leader sends a follower that needs entries below the anchor: metadata
    /// (index `anchor.index − 1`, term `anchor.prev_term`, membership), data = the anchor's
    /// log and Kafka offsets ([`SnapshotData`]). No state machine data travels: the
    /// partition's history below the anchor is gone everywhere (Kafka's log start offset).
    pub fn snapshot(&self) -> Option<Snapshot> {
        if self.anchor.index <= 1 {
            return None;
        }
        let mut meta = SnapshotMetadata {
            index: self.anchor.index - 1,
            term: self.anchor.prev_term,
            ..Default::default()
        };
        meta.set_conf_state(self.conf_state.clone());
        let mut snap = Snapshot {
            data: SnapshotData {
                log_offset: self.anchor.log_offset,
                kafka_offset: self.anchor.kafka_offset,
            }
            .encode(),
            ..Default::default()
        };
        snap.set_metadata(meta);
        Some(snap)
    }

    /// Loads the unapplied entries read back from the log at open into the empty cache.
    pub fn restore_cache(&mut self, entries: Vec<Entry>) {
        assert!(self.cache.is_empty(), "restore_cache on a warm cache");
        if let Some(last) = entries.last() {
            assert_eq!(
                last.index,
                self.last_index(),
                "recovered cache must end at the log end"
            );
        }
        for e in entries {
            self.cache_bytes += entry_bytes(&e);
            self.cache.push_back(e);
        }
    }

    /// Evicts cached entries at or below the applied index beyond the byte budget.
    pub fn evict(&mut self) {
        while self.cache_bytes > self.cache_bytes_max
            && self.cache.front().is_some_and(|e| e.index <= self.applied)
        {
            let e = self.cache.pop_front().expect("non-empty");
            self.cache_bytes -= entry_bytes(&e);
        }
        // The cache must always cover every unapplied entry.
        if let Some(front) = self.cache.front() {
            assert!(
                front.index <= self.applied + 1,
                "cache lost unapplied entries"
            );
        }
    }

    /// Number of cached entries (tests).
    pub fn cached_len(&self) -> usize {
        self.cache.len()
    }

    fn cache_first(&self) -> u64 {
        self.cache
            .front()
            .map_or(self.last_index() + 1, |e| e.index)
    }
}

/// The data of a partition snapshot (§7): where the log begins after it, nothing else.
/// Layout (little-endian): `version:u16 = 1, anchor_log_offset:i64, anchor_kafka_offset:i64`.
///
/// Ownership: a plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotData {
    /// Log offset of the first entry after the snapshot.
    pub log_offset: i64,
    /// Kafka offset of the first data record at or after it.
    pub kafka_offset: i64,
}

/// Encoded length of [`SnapshotData`].
pub const SNAPSHOT_DATA_BYTES: usize = 18;

impl SnapshotData {
    /// The layout in the type's docs.
    pub fn encode(&self) -> bytes::Bytes {
        let mut b = Vec::with_capacity(SNAPSHOT_DATA_BYTES);
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&self.log_offset.to_le_bytes());
        b.extend_from_slice(&self.kafka_offset.to_le_bytes());
        b.into()
    }

    /// Parses [`SnapshotData::encode`]'s output; None for anything else (wrong length or
    /// version, negative offsets, Kafka offset beyond the log offset).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != SNAPSHOT_DATA_BYTES || b[0..2] != 1u16.to_le_bytes() {
            return None;
        }
        let d = Self {
            log_offset: i64::from_le_bytes(b[2..10].try_into().expect("8")),
            kafka_offset: i64::from_le_bytes(b[10..18].try_into().expect("8")),
        };
        (d.kafka_offset >= 0 && d.log_offset >= d.kafka_offset).then_some(d)
    }

    /// The log anchor a snapshot with this data and metadata (index, term) stands for.
    pub fn anchor(&self, snapshot_index: u64, snapshot_term: u64) -> LogAnchor {
        LogAnchor {
            index: snapshot_index + 1,
            prev_term: snapshot_term,
            log_offset: self.log_offset,
            kafka_offset: self.kafka_offset,
        }
    }
}

/// `raft::Storage` over a [`GroupState`] shared with the driver.
///
/// Ownership: per core, `!Send`.
#[derive(Debug, Clone)]
pub struct GroupStorage {
    /// Shared state.
    pub st: Rc<RefCell<GroupState>>,
}

impl raft::Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let st = self.st.borrow();
        Ok(RaftState::new(st.hard_state.clone(), st.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        let mut st = self.st.borrow_mut();
        if low < st.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= st.last_index() + 1,
            "entries [{low}, {high}) beyond last index {}",
            st.last_index()
        );
        let mut out = Vec::new();
        if low >= st.cache_first() {
            let first = st.cache_first();
            for e in st
                .cache
                .range((low - first) as usize..(high - first) as usize)
            {
                out.push(e.clone());
            }
        } else if st.fetched.front().is_some_and(|e| e.index <= low)
            && st.fetched.back().is_some_and(|e| e.index >= low)
        {
            let first = st.fetched.front().expect("non-empty").index;
            for e in st.fetched.range((low - first) as usize..) {
                if e.index >= high {
                    break;
                }
                out.push(e.clone());
            }
        } else if context.can_async() {
            st.pending_fetches.push(FetchRequest {
                low,
                high,
                max_size,
                context,
            });
            return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable));
        } else {
            panic!(
                "entries [{low}, {high}) not cached (cache from {}, applied {}) and context {context:?} cannot wait",
                st.cache_first(),
                st.applied
            );
        }
        raft::util::limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let st = self.st.borrow();
        if idx + 1 == st.anchor.index {
            return Ok(st.anchor.prev_term);
        }
        if idx < st.anchor.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match st.meta(idx) {
            Some(m) => Ok(m.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.st.borrow().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.st.borrow().last_index())
    }

    /// Asked for when a follower needs entries below the anchor (§7). Only the position
    /// travels ([`GroupState::snapshot`]), so it is always available once the log was
    /// compacted; `request_index` (a follower's explicit request) is not used by Freshet.
    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        self.st.borrow().snapshot().ok_or(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::encode_batch;
    use raft::Storage;

    fn data(index: u64, term: u64, records: usize) -> Entry {
        let recs: Vec<_> = (0..records).map(|_| (None, Some(&b"v"[..]))).collect();
        Entry {
            index,
            term,
            data: encode_batch(0, 0, -1, &recs),
            ..Default::default()
        }
    }

    fn empty(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn state() -> GroupState {
        GroupState::new(
            HardState::default(),
            ConfState::default(),
            LogAnchor::initial(),
            1 << 20,
        )
    }

    #[test]
    fn internal_entries_take_a_log_offset_but_no_kafka_offset() {
        let mut st = state();
        // leader no-op (§5.4.2), 3 records, 2 records, another term's no-op, 1 record
        st.push_entries(&[
            empty(1, 1),
            data(2, 1, 3),
            data(3, 1, 2),
            empty(4, 2),
            data(5, 2, 1),
        ]);
        let rows: Vec<_> = (1..=5).map(|i| *st.meta(i).unwrap()).collect();
        let log: Vec<_> = rows.iter().map(|m| m.log_offset).collect();
        let kafka: Vec<_> = rows.iter().map(|m| m.kafka_offset).collect();
        assert_eq!(log, vec![0, 1, 4, 6, 7]);
        assert_eq!(kafka, vec![0, 0, 3, 5, 5]);
        assert_eq!(st.kafka_end_offset(), 6);
        assert_eq!(st.log_end_offset(), 8);
        // Kafka → log: record 4 is the second record of the batch at log 4.
        assert_eq!(st.kafka_to_log(0), Some(1));
        assert_eq!(st.kafka_to_log(4), Some(5));
        assert_eq!(st.kafka_to_log(5), Some(7));
        assert_eq!(st.kafka_to_log(6), Some(8));
        assert_eq!(st.kafka_to_log(7), None);
        assert_eq!(st.log_to_kafka(4), Some(3));
        assert_eq!(
            st.log_to_kafka(6),
            None,
            "internal entry has no Kafka offset"
        );
        assert_eq!(st.kafka_end_at(3), 5);
        assert_eq!(st.kafka_end_at(4), 5);
    }

    #[test]
    fn any_record_inside_a_data_batch_translates_to_its_kafka_offset() {
        let mut st = state();
        // log: 0 no-op, 1..4 three records, 4..6 two records, 6 no-op, 7 one record
        st.push_entries(&[
            empty(1, 1),
            data(2, 1, 3),
            data(3, 1, 2),
            empty(4, 2),
            data(5, 2, 1),
        ]);
        let got: Vec<_> = (-1..9).map(|o| st.log_to_kafka_record(o)).collect();
        assert_eq!(
            got,
            vec![
                None,
                None,
                Some(0),
                Some(1),
                Some(2),
                Some(3),
                Some(4),
                None,
                Some(5),
                None
            ]
        );
        for k in 0..st.kafka_end_offset() {
            let log = st.kafka_to_log(k).unwrap();
            assert_eq!(st.log_to_kafka_record(log), Some(k), "round trip of {k}");
        }
    }

    #[test]
    fn conflicting_suffix_is_truncated_and_offsets_are_reassigned_per_log_matching_5_3() {
        let mut st = state();
        st.push_entries(&[empty(1, 1), data(2, 1, 2), data(3, 1, 2)]);
        st.hard_state.commit = 2;
        st.truncate_from(3);
        st.push_entries(&[empty(3, 2), data(4, 2, 1)]);
        let s = GroupStorage {
            st: Rc::new(RefCell::new(st)),
        };
        assert_eq!(s.term(3).unwrap(), 2);
        assert_eq!(s.last_index().unwrap(), 4);
        let st = s.st.borrow();
        assert_eq!(st.meta(4).unwrap().kafka_offset, 2);
        assert_eq!(st.meta(4).unwrap().log_offset, 4);
    }

    #[test]
    #[should_panic(expected = "truncating committed entry")]
    fn truncating_a_committed_entry_is_a_broken_invariant() {
        let mut st = state();
        st.push_entries(&[empty(1, 1), data(2, 1, 1)]);
        st.hard_state.commit = 2;
        st.truncate_from(2);
    }

    #[test]
    fn cache_keeps_unapplied_entries_and_old_ones_need_an_async_fetch() {
        let mut st = state();
        st.cache_bytes_max = 0;
        st.push_entries(&[empty(1, 1), data(2, 1, 1), data(3, 1, 1)]);
        assert_eq!(
            st.cached_len(),
            3,
            "nothing applied yet: everything stays cached"
        );
        st.applied = 2;
        st.evict();
        assert_eq!(st.cached_len(), 1);
        let s = GroupStorage {
            st: Rc::new(RefCell::new(st)),
        };
        let got = s
            .entries(3, 4, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got[0].index, 3);
        let err = s
            .entries(1, 4, None, GetEntriesContext::empty(true))
            .unwrap_err();
        assert_eq!(
            err,
            raft::Error::Store(StorageError::LogTemporarilyUnavailable)
        );
        assert_eq!(s.st.borrow().pending_fetches.len(), 1);
        s.st.borrow_mut()
            .fetched
            .extend([empty(1, 1), data(2, 1, 1)]);
        let got = s
            .entries(1, 4, None, GetEntriesContext::empty(true))
            .unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(s.term(0).unwrap(), 0);
        assert!(s.term(9).is_err());
    }

    #[test]
    fn compaction_moves_the_anchor_to_the_entry_holding_the_offset_never_past_applied_section_7() {
        let mut st = state();
        // no-op, [0,3), [3,5), no-op (term 2), [5,6)
        st.push_entries(&[
            empty(1, 1),
            data(2, 1, 3),
            data(3, 1, 2),
            empty(4, 2),
            data(5, 2, 1),
        ]);
        st.applied = 3;
        // Kafka 4 is inside entry 3: it stays, so records 3.. are still held.
        assert_eq!(st.compaction_index(4), 3);
        // Kafka 5 lies beyond entry 3; entry 4 (internal) and 5 are not applied: capped.
        assert_eq!(st.compaction_index(5), 4);
        assert_eq!(st.compaction_index(0), 2, "the leading no-op goes");
        let a = st.compact_to(3);
        assert_eq!(
            a,
            LogAnchor {
                index: 3,
                prev_term: 1,
                log_offset: 4,
                kafka_offset: 3
            }
        );
        assert_eq!(st.kafka_to_log(2), None, "below the log start");
        assert_eq!(st.kafka_to_log(4), Some(5));
        assert_eq!(st.log_to_kafka(7), Some(5));
        assert_eq!(
            st.kafka_end_at(2),
            3,
            "an index below the anchor ends at its Kafka start"
        );
        assert_eq!(st.cached_len(), 3);
        let s = GroupStorage {
            st: Rc::new(RefCell::new(st)),
        };
        // raft-rs's view: first index 3, term(2) answered from the anchor, below: compacted.
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert_eq!(s.term(1), Err(raft::Error::Store(StorageError::Compacted)));
        assert_eq!(
            s.entries(2, 4, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        );
        let snap = s.snapshot(0, 2).unwrap();
        assert_eq!(
            (snap.get_metadata().index, snap.get_metadata().term),
            (2, 1)
        );
        assert_eq!(
            SnapshotData::decode(&snap.data),
            Some(SnapshotData {
                log_offset: 4,
                kafka_offset: 3
            })
        );
    }

    #[test]
    fn compacting_every_applied_entry_leaves_an_empty_log_at_the_end() {
        let mut st = state();
        st.push_entries(&[empty(1, 1), data(2, 1, 3)]);
        st.applied = 2;
        let a = st.compact_to(st.compaction_index(i64::MAX));
        assert_eq!(
            (a.index, a.prev_term, a.log_offset, a.kafka_offset),
            (3, 1, 4, 3)
        );
        assert_eq!(st.last_index(), 2);
        assert_eq!((st.log_end_offset(), st.kafka_end_offset()), (4, 3));
        st.push_entries(&[data(3, 2, 1)]);
        assert_eq!(st.meta(3).unwrap().log_offset, 4);
        assert_eq!(st.meta(3).unwrap().kafka_offset, 3);
    }

    #[test]
    #[should_panic(expected = "past the applied index")]
    fn compacting_an_unapplied_entry_is_a_broken_invariant() {
        let mut st = state();
        st.push_entries(&[empty(1, 1), data(2, 1, 3), data(3, 1, 1)]);
        st.applied = 1;
        st.compact_to(3);
    }

    #[test]
    fn installed_snapshot_restarts_the_table_at_its_anchor_section_7() {
        let mut st = state();
        st.push_entries(&[empty(1, 1), data(2, 1, 3), data(3, 3, 2)]);
        st.applied = 1;
        st.hard_state.commit = 1;
        let anchor = SnapshotData {
            log_offset: 40,
            kafka_offset: 31,
        }
        .anchor(20, 4);
        st.install_snapshot(
            anchor,
            ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            },
        );
        assert_eq!(
            (st.first_index(), st.last_index(), st.applied),
            (21, 20, 20)
        );
        assert_eq!(st.hard_state.commit, 20);
        assert_eq!((st.log_end_offset(), st.kafka_end_offset()), (40, 31));
        assert_eq!(st.kafka_end_at(20), 31, "high watermark after the install");
        st.push_entries(&[empty(21, 5), data(22, 5, 2)]);
        assert_eq!(st.kafka_to_log(32), Some(42));
        let s = GroupStorage {
            st: Rc::new(RefCell::new(st)),
        };
        assert_eq!(s.term(20).unwrap(), 4);
    }

    #[test]
    fn snapshot_data_decoding_refuses_anything_but_its_layout() {
        let d = SnapshotData {
            log_offset: 9,
            kafka_offset: 4,
        };
        let b = d.encode();
        assert_eq!(b.len(), SNAPSHOT_DATA_BYTES);
        assert_eq!(SnapshotData::decode(&b), Some(d));
        assert_eq!(SnapshotData::decode(&b[..17]), None);
        let mut v = b.to_vec();
        v[0] = 2;
        assert_eq!(SnapshotData::decode(&v), None, "unknown version");
        let bad = SnapshotData {
            log_offset: 3,
            kafka_offset: 4,
        }
        .encode();
        assert_eq!(
            SnapshotData::decode(&bad),
            None,
            "Kafka offset beyond log offset"
        );
        assert!(
            state().snapshot().is_none(),
            "nothing compacted: no snapshot"
        );
    }
}
