//! One partition on its owning core: the append path, flush policy, high watermark and
//! fetch wakeups.
//!
//! `Partition` is per core (`!Send`, held as `Rc<Partition>` in the owning `Shard`). At
//! replication factor 1 a partition is a Raft group of one: the leader epoch is 0 and the
//! commit index (the high watermark) is the durable offset of the log. `replicate` is the one
//! append entry point; the Raft group will later take it over.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet_storage::{Clock, DmaDisk, FlushPolicy, Log, LogConfig, StorageError};
use futures_lite::future;
use thiserror::Error;

use crate::config::{EffectiveTopicConfig, TimestampType, KAFKA_LONG_MAX};
use crate::error::code;
use crate::notify::Notify;
use crate::producer_state::{replay_start_offset, ProducerBatch, ProducerStates, SequenceCheck};

/// Errors of partition operations; each maps to one Kafka error code.
#[derive(Debug, Error)]
pub enum PartitionError {
    #[error("corrupt batch: {0}")]
    CorruptMessage(String),
    #[error("invalid batch: {0}")]
    InvalidRecord(String),
    #[error("unsupported message format: {0}")]
    UnsupportedFormat(String),
    #[error("batch too large: {0}")]
    MessageTooLarge(String),
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("partition is closed")]
    NotLeader,
    #[error("out of order sequence number")]
    OutOfOrderSequence,
    #[error("duplicate sequence number (retry of a batch still being appended)")]
    DuplicateSequence,
    #[error("producer epoch is older than the current one")]
    InvalidProducerEpoch,
    #[error("storage error: {0}")]
    Storage(String),
}

impl PartitionError {
    /// The Kafka error code a client gets for this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            PartitionError::CorruptMessage(_) => code::CORRUPT_MESSAGE,
            PartitionError::InvalidRecord(_) => code::INVALID_RECORD,
            PartitionError::UnsupportedFormat(_) => code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            PartitionError::MessageTooLarge(_) => code::MESSAGE_TOO_LARGE,
            PartitionError::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
            PartitionError::NotLeader => code::NOT_LEADER_OR_FOLLOWER,
            PartitionError::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
            PartitionError::DuplicateSequence => DUPLICATE_SEQUENCE_NUMBER,
            PartitionError::InvalidProducerEpoch => INVALID_PRODUCER_EPOCH,
            PartitionError::Storage(_) => code::KAFKA_STORAGE_ERROR,
        }
    }

    fn from_storage(e: StorageError) -> Self {
        let s = e.to_string();
        match e {
            StorageError::CorruptBatch(_) => PartitionError::CorruptMessage(s),
            StorageError::UnsupportedMagic(_) => PartitionError::UnsupportedFormat(s),
            StorageError::InvalidBatch(_) => PartitionError::InvalidRecord(s),
            StorageError::BatchTooLarge { .. } => PartitionError::MessageTooLarge(s),
            StorageError::OffsetOutOfRange {
                offset,
                log_start_offset,
                next_offset,
            } => PartitionError::OffsetOutOfRange {
                offset,
                start: log_start_offset,
                end: next_offset,
            },
            _ => PartitionError::Storage(s),
        }
    }
}

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
const INVALID_PRODUCER_EPOCH: i16 = 47;

/// Kafka `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no response at all.
    None,
    /// acks=1: answered once appended (durability follows in the background).
    Leader,
    /// acks=all (-1): answered once the batch is durable (commit index past it).
    All,
}

impl Acks {
    pub fn from_kafka(acks: i16) -> Option<Acks> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// Outcome of a successful `replicate`. `Send`: it travels back over the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicateOutcome {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's append time when the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// Offsets a fetch response reports. `Send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// Data read for a fetch. `Send`: `records` is the storage's `Bytes`, handed on unchanged.
#[derive(Debug, Clone)]
pub struct FetchedData {
    pub records: Bytes,
    pub offsets: PartitionOffsets,
}

/// Converts a topic's effective config into the storage's log config.
pub fn log_config_for(cfg: &EffectiveTopicConfig) -> LogConfig {
    // The engine drives flushing (see `Partition::flusher`); the log's policy mirrors the
    // topic's for anyone asking the log.
    let flush_policy = if cfg.flush_asap() || cfg.flush_messages <= 1 {
        FlushPolicy::EveryAppend
    } else {
        FlushPolicy::Threshold {
            bytes: None,
            messages: (cfg.flush_messages != KAFKA_LONG_MAX).then_some(cfg.flush_messages as u64),
            interval_ms: (cfg.flush_ms != KAFKA_LONG_MAX).then_some(cfg.flush_ms as u64),
        }
    };
    LogConfig {
        segment_bytes_max: cfg.segment_bytes.max(1) as u64,
        segment_ms: cfg.segment_ms.max(1) as u64,
        retention_bytes: (cfg.retention_bytes >= 0).then_some(cfg.retention_bytes as u64),
        retention_ms: (cfg.retention_ms >= 0).then_some(cfg.retention_ms as u64),
        batch_bytes_max: cfg.max_message_bytes.clamp(1, u32::MAX as i64) as u32,
        flush_policy,
        ..LogConfig::default()
    }
}

/// A partition replica on its owning core. Per core, `!Send`; shared as `Rc<Partition>`.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: [u8; 16],
    log: Rc<Log<DmaDisk>>,
    clock: Rc<dyn Clock>,
    leader_epoch: i32,
    config: RefCell<EffectiveTopicConfig>,
    /// Bumped when the high watermark advances (fetch waiters, acks=all waiters).
    hw_changed: Notify,
    /// Bumped on every append and config change (wakes the flusher).
    appended: Notify,
    unflushed_messages: Cell<i64>,
    unflushed_since: Cell<Option<Instant>>,
    closed: Cell<bool>,
    producers: RefCell<ProducerStates>,
    dir: PathBuf,
    flusher: RefCell<Option<glommio::Task<()>>>,
}

impl Partition {
    /// Opens the log under `dir`, rebuilds idempotent producers' state from the last
    /// `producer_state_scan_bytes` of it (see [`replay_producer_states`]) and starts the
    /// partition's background flusher.
    pub async fn open(
        topic: String,
        index: i32,
        topic_id: [u8; 16],
        dir: PathBuf,
        config: EffectiveTopicConfig,
        clock: Rc<dyn Clock>,
        producer_state_scan_bytes: u64,
    ) -> Result<Rc<Partition>, PartitionError> {
        let log = Log::open(DmaDisk, dir.clone(), log_config_for(&config), clock.clone())
            .await
            .map_err(PartitionError::from_storage)?;
        let producers = replay_producer_states(&log, producer_state_scan_bytes).await;
        if !producers.is_empty() {
            tracing::debug!(%topic, partition = index, producers = producers.len(), "producer state rebuilt from the log");
        }
        let p = Rc::new(Partition {
            topic,
            index,
            topic_id,
            log: Rc::new(log),
            clock,
            leader_epoch: 0,
            config: RefCell::new(config),
            hw_changed: Notify::new(),
            appended: Notify::new(),
            unflushed_messages: Cell::new(0),
            unflushed_since: Cell::new(None),
            closed: Cell::new(false),
            producers: RefCell::new(producers),
            dir,
            flusher: RefCell::new(None),
        });
        let flusher = glommio::spawn_local(Partition::flusher(p.clone()));
        *p.flusher.borrow_mut() = Some(flusher);
        Ok(p)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// High watermark: the durable offset (commit index of a one-member Raft group).
    pub fn high_watermark(&self) -> i64 {
        self.log.durable_offset()
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let hw = self.high_watermark();
        PartitionOffsets {
            high_watermark: hw,
            last_stable_offset: hw,
            log_start_offset: self.log.log_start_offset(),
            log_end_offset: self.log.next_offset(),
        }
    }

    /// Generation of the high-watermark signal; see `wait_hw_change`.
    pub fn hw_generation(&self) -> u64 {
        self.hw_changed.generation()
    }

    /// Resolves after the high watermark advanced past generation `seen`.
    pub async fn wait_hw_change(&self, seen: u64) {
        self.hw_changed.wait(seen).await
    }

    /// The one append entry point (the Raft group takes it over later): appends `batches`
    /// (one or more Kafka v2 record batches) and answers per `acks`.
    pub async fn replicate(
        &self,
        batches: Bytes,
        acks: Acks,
    ) -> Result<ReplicateOutcome, PartitionError> {
        if self.closed.get() {
            return Err(PartitionError::NotLeader);
        }
        let append_time = match self.config.borrow().timestamp_type {
            TimestampType::LogAppendTime => Some(self.clock.now_ms()),
            TimestampType::CreateTime => None,
        };
        // KIP-98: idempotent producers' sequences (checked and reserved before the append
        // so pipelined batches of one producer are checked in arrival order).
        let producer_batches = ProducerBatch::parse_all(&batches).unwrap_or_default();
        let check = self
            .producers
            .borrow_mut()
            .check_and_reserve(&producer_batches);
        match check {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate {
                first_offset,
                last_offset,
            } => {
                if acks == Acks::All {
                    while self.log.durable_offset() <= last_offset {
                        self.flush_now().await?;
                    }
                }
                return Ok(ReplicateOutcome {
                    base_offset: first_offset,
                    last_offset,
                    log_append_time_ms: append_time.unwrap_or(-1),
                    log_start_offset: self.log.log_start_offset(),
                });
            }
            SequenceCheck::DuplicateInFlight => return Err(PartitionError::DuplicateSequence),
            SequenceCheck::OutOfOrder => return Err(PartitionError::OutOfOrderSequence),
            SequenceCheck::FencedEpoch => return Err(PartitionError::InvalidProducerEpoch),
        }
        let info = match self
            .log
            .append(batches, self.leader_epoch, append_time)
            .await
        {
            Ok(info) => {
                self.producers
                    .borrow_mut()
                    .appended(&producer_batches, info.first_offset);
                info
            }
            Err(e) => {
                self.producers.borrow_mut().failed(&producer_batches);
                return Err(PartitionError::from_storage(e));
            }
        };
        let count = info.last_offset - info.first_offset + 1;
        self.unflushed_messages
            .set(self.unflushed_messages.get() + count);
        if self.unflushed_since.get().is_none() {
            self.unflushed_since.set(Some(Instant::now()));
        }
        self.appended.notify_all();
        if acks == Acks::All {
            while self.log.durable_offset() <= info.last_offset {
                self.flush_now().await?;
            }
        }
        Ok(ReplicateOutcome {
            base_offset: info.first_offset,
            last_offset: info.last_offset,
            log_append_time_ms: append_time.unwrap_or(-1),
            log_start_offset: self.log.log_start_offset(),
        })
    }

    /// Flushes now (coalesced with concurrent flushes by the log) and publishes the new
    /// high watermark.
    pub async fn flush_now(&self) -> Result<i64, PartitionError> {
        let before = self.log.durable_offset();
        let end_before_flush = self.log.next_offset();
        let durable = self
            .log
            .flush()
            .await
            .map_err(PartitionError::from_storage)?;
        if durable >= self.log.next_offset() {
            self.unflushed_messages.set(0);
            self.unflushed_since.set(None);
        } else if durable >= end_before_flush {
            self.unflushed_messages
                .set(self.log.next_offset() - durable);
            self.unflushed_since.set(Some(Instant::now()));
        }
        if durable > before {
            self.hw_changed.notify_all();
        }
        Ok(durable)
    }

    /// Background flusher: flushes whenever data is pending, as soon as possible by default,
    /// or per the topic's flush.messages / flush.ms when those are set. Ends when the
    /// partition is closed (`close` awaits it).
    async fn flusher(p: Rc<Partition>) {
        loop {
            if p.closed.get() {
                return;
            }
            let seen = p.appended.generation();
            if p.log.next_offset() <= p.log.durable_offset() {
                p.appended.wait(seen).await;
                continue;
            }
            let cfg = p.config.borrow().clone();
            let due = cfg.flush_asap()
                || p.unflushed_messages.get() >= cfg.flush_messages
                || p.unflushed_since
                    .get()
                    .is_some_and(|t| t.elapsed().as_millis() as i64 >= cfg.flush_ms);
            if due {
                if let Err(e) = p.flush_now().await {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "background flush failed; retrying in 100 ms");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
            let waited_ms = p
                .unflushed_since
                .get()
                .map(|t| t.elapsed().as_millis() as i64)
                .unwrap_or(0);
            let sleep_ms = (cfg.flush_ms.saturating_sub(waited_ms)).clamp(1, 1000) as u64;
            future::or(p.appended.wait(seen), async {
                glommio::timer::sleep(Duration::from_millis(sleep_ms)).await;
            })
            .await;
        }
    }

    /// Reads whole batches from `offset`, at most `max_bytes` (but at least one batch, KIP-74),
    /// never past the high watermark.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<FetchedData, PartitionError> {
        let offsets = self.offsets();
        if offset < offsets.log_start_offset || offset > offsets.log_end_offset {
            return Err(PartitionError::OffsetOutOfRange {
                offset,
                start: offsets.log_start_offset,
                end: offsets.log_end_offset,
            });
        }
        let records = if offset >= offsets.high_watermark {
            Bytes::new()
        } else {
            self.log
                .read(offset, max_bytes, offsets.high_watermark)
                .await
                .map_err(PartitionError::from_storage)?
        };
        Ok(FetchedData { records, offsets })
    }

    /// ListOffsets: -2 earliest, -1 latest (high watermark), -3 max timestamp, else the first
    /// offset whose timestamp is >= `timestamp_ms`. Returns (timestamp, offset); (-1, -1) when
    /// nothing matches.
    pub async fn list_offset(&self, timestamp_ms: i64) -> Result<(i64, i64), PartitionError> {
        let hw = self.high_watermark();
        match timestamp_ms {
            -2 => Ok((-1, self.log.log_start_offset())),
            -1 => Ok((-1, hw)),
            -3 => Ok(self
                .log
                .max_timestamp()
                .filter(|(_, off)| *off < hw)
                .unwrap_or((-1, -1))),
            ts => {
                let found = self
                    .log
                    .offset_for_timestamp(ts)
                    .await
                    .map_err(PartitionError::from_storage)?;
                // The log answers (offset, timestamp).
                Ok(found
                    .filter(|(off, _)| *off < hw)
                    .map(|(off, ts)| (ts, off))
                    .unwrap_or((-1, -1)))
            }
        }
    }

    /// Applies a changed topic config (flush policy, retention, limits).
    pub fn set_config(&self, cfg: EffectiveTopicConfig) {
        self.log.set_config(log_config_for(&cfg));
        *self.config.borrow_mut() = cfg;
        self.appended.notify_all();
    }

    pub async fn enforce_retention(&self) -> Result<u64, PartitionError> {
        self.log
            .enforce_retention()
            .await
            .map_err(PartitionError::from_storage)
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// Stops the flusher, flushes what is pending and closes (or deletes) the log.
    pub async fn close(self: Rc<Self>, delete: bool) -> Result<(), PartitionError> {
        self.closed.set(true);
        self.appended.notify_all();
        let flusher = self.flusher.borrow_mut().take();
        if let Some(f) = flusher {
            f.await;
        }
        if !delete {
            self.flush_now().await?;
        }
        // Wake fetch waiters so they see the partition gone.
        self.hw_changed.notify_all();
        let dir = self.dir.clone();
        let log = Rc::try_unwrap(self)
            .ok()
            .and_then(|me| Rc::try_unwrap(me.log).ok());
        match (log, delete) {
            (Some(log), true) => log.delete().await.map_err(PartitionError::from_storage),
            (Some(log), false) => log.close().await.map_err(PartitionError::from_storage),
            // An in-flight request still holds the partition: the files close when it drops
            // it (data is already flushed); a deleted topic's directory goes now.
            (None, true) => std::fs::remove_dir_all(&dir)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| PartitionError::Storage(e.to_string())),
            (None, false) => Ok(()),
        }
    }
}

/// Kafka's "no epoch" / "no offset" sentinels (`UNDEFINED_EPOCH`, `UNDEFINED_EPOCH_OFFSET`).
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// OffsetForLeaderEpoch answer (KIP-101, KIP-279) from a leader-epoch cache `epochs`
/// ((epoch, start offset), ascending) and the log end offset `leo`, as Kafka's
/// `LeaderEpochFileCache.endOffsetFor` computes it:
/// - `requested` is -1, or above every known epoch: (-1, -1);
/// - `requested` is the latest epoch: (requested, LEO);
/// - below the first known epoch: (requested, start offset of the first epoch);
/// - otherwise: the largest epoch <= `requested` and the start offset of the next epoch.
pub fn epoch_end_offset(epochs: &[(i32, i64)], leo: i64, requested: i32) -> (i32, i64) {
    if requested == UNDEFINED_EPOCH {
        return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
    }
    if epochs.last().is_some_and(|(e, _)| *e == requested) {
        return (requested, leo);
    }
    // First entry with epoch > requested.
    let higher = epochs.partition_point(|(e, _)| *e <= requested);
    match (higher.checked_sub(1), epochs.get(higher)) {
        (_, None) => (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET),
        (None, Some((_, start))) => (requested, *start),
        (Some(floor), Some((_, start))) => (epochs[floor].0, *start),
    }
}

/// Administrative operations (DeleteRecords, OffsetForLeaderEpoch, DescribeLogDirs). Same
/// owner as above: run on the partition's core.
impl Partition {
    /// DeleteRecords (KIP-107): moves the log start offset up to `offset` (-1 means the high
    /// watermark) and returns the new log start offset (the "low watermark"). An offset above
    /// the high watermark, or negative other than -1, is `OffsetOutOfRange`; one at or below
    /// the current log start changes nothing.
    pub async fn delete_records(&self, offset: i64) -> Result<i64, PartitionError> {
        if self.closed.get() {
            return Err(PartitionError::NotLeader);
        }
        let hw = self.high_watermark();
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(PartitionError::OffsetOutOfRange {
                offset,
                start: self.log.log_start_offset(),
                end: hw,
            });
        }
        if target > self.log.log_start_offset() {
            self.log
                .prefix_truncate(target)
                .await
                .map_err(PartitionError::from_storage)?;
            // Fetch waiters re-check their offsets against the new log start.
            self.hw_changed.notify_all();
        }
        Ok(self.log.log_start_offset())
    }

    /// OffsetForLeaderEpoch for this partition: see [`epoch_end_offset`].
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        epoch_end_offset(&self.log.epochs(), self.log.next_offset(), requested)
    }
}

/// Bytes asked of the log per read while replaying producer state.
const REPLAY_READ_BYTES: usize = 1024 * 1024;

/// Rebuilds idempotent producers' state (KIP-98) from the batch headers of the log tail: the
/// newest segments adding up to `scan_bytes` (see [`replay_start_offset`]). Producers whose
/// batches all lie before that tail stay unknown (their next batch is accepted, KIP-360). A
/// read error stops the scan with what was replayed so far (logged): the partition still
/// opens, and the producers not yet seen are treated as unknown.
async fn replay_producer_states(log: &Log<DmaDisk>, scan_bytes: u64) -> ProducerStates {
    let mut states = ProducerStates::default();
    let end = log.next_offset();
    let mut offset = replay_start_offset(&log.segments(), log.log_start_offset(), scan_bytes);
    while offset < end {
        let data = match log.read(offset, REPLAY_READ_BYTES, end).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(dir = %log.dir().display(), offset, error = %e, "producer state replay stopped early");
                break;
            }
        };
        let Some(batches) = ProducerBatch::parse_with_offsets(&data) else {
            tracing::warn!(dir = %log.dir().display(), offset, "producer state replay: unparsable batches; stopped early");
            break;
        };
        let Some(&(base, last)) = batches.last() else {
            break;
        };
        for (base_offset, b) in &batches {
            states.replay(*base_offset, b);
        }
        let next = base + last.last_offset_delta as i64 + 1;
        if next <= offset {
            tracing::warn!(dir = %log.dir().display(), offset, next, "producer state replay: read did not advance; stopped early");
            break;
        }
        offset = next;
    }
    states
}

#[cfg(test)]
mod admin_tests {
    use super::*;

    /// KIP-101/KIP-279 scenarios of `LeaderEpochFileCache.endOffsetFor`: epochs 2 from 10,
    /// 4 from 30, 7 from 50; log end 80.
    #[test]
    fn epoch_end_offsets_follow_kafkas_leader_epoch_cache() {
        let epochs = [(2, 10), (4, 30), (7, 50)];
        // The latest epoch ends at the log end.
        assert_eq!(epoch_end_offset(&epochs, 80, 7), (7, 80));
        // A known older epoch ends where the next one starts.
        assert_eq!(epoch_end_offset(&epochs, 80, 2), (2, 30));
        assert_eq!(epoch_end_offset(&epochs, 80, 4), (4, 50));
        // An unknown epoch between known ones: the largest epoch below it, next one's start.
        assert_eq!(epoch_end_offset(&epochs, 80, 3), (2, 30));
        assert_eq!(epoch_end_offset(&epochs, 80, 6), (4, 50));
        // Below every epoch (data removed): the requested epoch and the first start offset.
        assert_eq!(epoch_end_offset(&epochs, 80, 1), (1, 10));
        // Above every epoch, or undefined: (-1, -1).
        assert_eq!(epoch_end_offset(&epochs, 80, 9), (-1, -1));
        assert_eq!(epoch_end_offset(&epochs, 80, -1), (-1, -1));
        // An empty log knows no epoch.
        assert_eq!(epoch_end_offset(&[], 0, 0), (-1, -1));
    }
}
