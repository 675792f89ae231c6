//! One partition replica on its owning core: the Kafka face of the partition's Raft group.
//!
//! `Partition` is per core (`!Send`, held as `Rc<Partition>` in the owning `Shard`). Every
//! partition, replication factor 1 included, is a Raft group (docs/design/replication.md):
//! `replicate` proposes batches to the core's Raft runtime, which appends them to the log,
//! flushes (one fdatasync per written log per driver pass) and replicates them; the high
//! watermark is the Kafka end of the applied commit index. Reads translate Kafka offsets to
//! log offsets with the group's table and hide Raft-internal batches (`replica.rs`). The
//! leader epoch is the Raft term.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;
use freshet_raft::multiraft::{GroupStatus, ProposeError};
use freshet_raft::runtime::{RaftHandle, WaitFor};
use freshet_raft::store::GroupState;
use freshet_raft::transport::{GroupId, NodeId};
use freshet_storage::{Clock, DmaDisk, FlushPolicy, Log, LogConfig, StorageError};
use glommio::sync::Semaphore;
use thiserror::Error;

use crate::config::{EffectiveTopicConfig, TimestampType, KAFKA_LONG_MAX};
use crate::error::code;
use crate::metadata::raft_node_id;
use crate::notify::Notify;
use crate::producer_state::{replay_start_offset, ProducerBatch, ProducerStates, SequenceCheck};
use crate::replica::{
    kafka_epochs, log_batches_to_kafka, log_record_to_kafka, split_single_batches,
    stamp_log_append_time,
};

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
    #[error("this replica is not the partition's leader (or is closed)")]
    NotLeader,
    #[error("{in_sync} replicas in sync, min.insync.replicas is {min}")]
    NotEnoughReplicas { in_sync: i64, min: i64 },
    #[error("this new leader has not applied an entry of its own term yet (KIP-207)")]
    OffsetNotAvailable,
    #[error("not done within the request's timeout")]
    RequestTimedOut,
    #[error("out of order sequence number")]
    OutOfOrderSequence,
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
            PartitionError::NotEnoughReplicas { .. } => NOT_ENOUGH_REPLICAS,
            PartitionError::OffsetNotAvailable => OFFSET_NOT_AVAILABLE,
            PartitionError::RequestTimedOut => code::REQUEST_TIMED_OUT,
            PartitionError::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
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

const NOT_ENOUGH_REPLICAS: i16 = 19;
const OFFSET_NOT_AVAILABLE: i16 = 78;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

/// Kafka `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no response at all.
    None,
    /// acks=1: answered once the leader appended and flushed the batch.
    Leader,
    /// acks=all (-1): answered once the batch is committed (durable on a majority).
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
    // The Raft driver flushes every log it wrote in a pass (flush.messages / flush.ms are
    // accepted but not acted on); the log's policy mirrors the topic's for anyone asking.
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

/// The partition log type: shared between the Raft driver (which appends, truncates and
/// flushes it) and the partition's read path.
pub type PartitionLog = Rc<Log<DmaDisk>>;

/// The core's Raft runtime handle as partitions use it.
pub type PartitionRaft = RaftHandle<PartitionLog>;

/// What the partition last learnt about its Raft group (from `on_change`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Leadership {
    leader: Option<NodeId>,
    term: u64,
    high_watermark: i64,
    /// Kafka log start (the anchor, or DeleteRecords' start where it is larger).
    log_start: i64,
    /// The last applied entry is of the current term: as leader, everything committed
    /// before this term is applied here too (Raft §5.4.2), DeleteRecords' log start included.
    own_term_applied: bool,
}

impl Leadership {
    fn of(status: &GroupStatus, st: &GroupState) -> Self {
        let applied_term = st.meta(st.applied).map_or(st.anchor.prev_term, |m| m.term);
        Leadership {
            leader: status.leader,
            term: status.term,
            high_watermark: status.high_watermark,
            log_start: status.log_start_kafka,
            own_term_applied: applied_term == status.term,
        }
    }
}

/// A partition replica on its owning core: the Kafka face of one Raft group. Per core,
/// `!Send`; shared as `Rc<Partition>`.
///
/// Writes are proposed to the group (`replicate`); the driver appends, flushes and
/// replicates them. Reads translate Kafka offsets to log offsets through the group's
/// [`GroupState`] and never go past the high watermark (the Kafka end of the applied
/// commit index). Only the leader replica serves produce, fetch and offset lookups;
/// followers answer NOT_LEADER_OR_FOLLOWER.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: [u8; 16],
    /// Raft group id (the same on every replica).
    pub group: GroupId,
    /// Broker ids holding a replica; `[0]` is the preferred leader.
    replicas: RefCell<Vec<i32>>,
    log: PartitionLog,
    raft: PartitionRaft,
    state: Rc<RefCell<GroupState>>,
    node_id: NodeId,
    clock: Rc<dyn Clock>,
    config: RefCell<EffectiveTopicConfig>,
    /// `min.insync.replicas` for acks=all.
    min_insync_replicas: Cell<i32>,
    leadership: Cell<Leadership>,
    /// Bumped when the high watermark, leader or term changes (fetch and acks waiters).
    hw_changed: Notify,
    closed: Cell<bool>,
    producers: RefCell<ProducerStates>,
    /// Bumped when an append's producer sequences were settled (appended or failed) or the
    /// state was rebuilt: retries of in-flight batches wait on it.
    producers_changed: Notify,
    /// The leader term the producer state was rebuilt for (0: built at open, not as leader).
    producers_term: Cell<u64>,
    producers_rebuild: Semaphore,
    producer_state_scan_bytes: u64,
    /// DeleteRecords' log start (KIP-107) this replica compacted (or is compacting) its log
    /// to; the start itself lives in the group state (`GroupState::log_start_kafka`).
    compacting_to: Cell<i64>,
    dir: PathBuf,
}

/// Where and how to open a partition replica (everything but the runtime handle and clock).
#[derive(Debug, Clone)]
pub struct PartitionSpec {
    pub topic: String,
    pub index: i32,
    pub topic_id: [u8; 16],
    pub group: GroupId,
    /// Broker ids holding a replica; `[0]` is the preferred leader.
    pub replicas: Vec<i32>,
    pub dir: PathBuf,
    pub config: EffectiveTopicConfig,
    pub min_insync_replicas: i32,
    pub producer_state_scan_bytes: u64,
}

fn propose_error(e: ProposeError) -> PartitionError {
    match e {
        ProposeError::InvalidBatch(m) => PartitionError::InvalidRecord(m),
        // Not leader, superseded by a new leader, group closed: the client retries
        // against the leader Metadata names.
        _ => PartitionError::NotLeader,
    }
}

impl Partition {
    /// Opens the log under `spec.dir`, opens the partition's Raft group on this core's
    /// runtime (voters = the replicas' Raft node ids) and rebuilds idempotent producers'
    /// state from the log tail (see [`replay_producer_states`]).
    pub async fn open(
        spec: PartitionSpec,
        raft: PartitionRaft,
        node_id: NodeId,
        clock: Rc<dyn Clock>,
    ) -> Result<Rc<Partition>, PartitionError> {
        let log = Log::open(
            DmaDisk,
            spec.dir.clone(),
            log_config_for(&spec.config),
            clock.clone(),
        )
        .await
        .map_err(PartitionError::from_storage)?;
        let log = Rc::new(log);
        let voters: Vec<NodeId> = spec.replicas.iter().map(|b| raft_node_id(*b)).collect();
        let state = raft
            .open_group(spec.group, voters, log.clone())
            .await
            .map_err(|e| PartitionError::Storage(format!("opening raft group: {e}")))?;
        let producers = {
            let st = state.clone();
            replay_producer_states(&log, &st, spec.producer_state_scan_bytes).await
        };
        if !producers.is_empty() {
            tracing::debug!(topic = %spec.topic, partition = spec.index, producers = producers.len(), "producer state rebuilt from the log");
        }
        let status = raft.status(spec.group).unwrap_or_default();
        let leadership = Leadership::of(&status, &state.borrow());
        let producers_term = if status.leader == Some(node_id) {
            status.term
        } else {
            0
        };
        Ok(Rc::new(Partition {
            compacting_to: Cell::new(0),
            topic: spec.topic,
            index: spec.index,
            topic_id: spec.topic_id,
            group: spec.group,
            replicas: RefCell::new(spec.replicas),
            log,
            raft,
            state,
            node_id,
            clock,
            config: RefCell::new(spec.config),
            min_insync_replicas: Cell::new(spec.min_insync_replicas),
            leadership: Cell::new(leadership),
            hw_changed: Notify::new(),
            closed: Cell::new(false),
            producers: RefCell::new(producers),
            producers_changed: Notify::new(),
            producers_term: Cell::new(producers_term),
            producers_rebuild: Semaphore::new(1),
            producer_state_scan_bytes: spec.producer_state_scan_bytes,
            dir: spec.dir,
        }))
    }

    /// A partition whose only replica is this node elects itself while opening; this waits
    /// (at most `timeout`) until it leads and its high watermark covers everything its log
    /// held at open (the new term's no-op committed, Raft §5.4.2), so a topic is writable
    /// and readable as soon as its creation (or the broker's start) is reported. Returns
    /// whether it got there.
    pub async fn wait_single_replica_ready(&self, timeout: std::time::Duration) -> bool {
        if self.replicas.borrow().as_slice() != [crate::metadata::broker_id_of(self.node_id)] {
            return true;
        }
        let end = self.state.borrow().kafka_end_offset();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let seen = self.hw_changed.generation();
            if self.is_leader() && self.own_term_applied() && self.high_watermark() >= end {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || self.closed.get() {
                return false;
            }
            futures_lite::future::or(self.hw_changed.wait(seen), async {
                glommio::timer::sleep(left).await;
            })
            .await;
        }
    }

    /// Feeds a status change of the group (the runtime's `on_change`): wakes fetch and
    /// acks waiters when the high watermark, leader, term or log start moved, and compacts
    /// this replica's log once it applied a DeleteRecords log start beyond its log's start.
    /// Returns true when the leader or term changed.
    pub fn on_status(&self, status: &GroupStatus) -> bool {
        let new = Leadership::of(status, &self.state.borrow());
        let old = self.leadership.replace(new);
        if old != new {
            self.hw_changed.notify_all();
        }
        self.compact_to_log_start();
        old.leader != new.leader || old.term != new.term
    }

    /// KIP-107 on every replica: once a log start entry is applied here (on commit), the
    /// records below it go from this replica's log too, whole batches at a time (Raft §7
    /// compaction; the batch holding the start stays). Runs in the background: status
    /// callbacks cannot wait.
    fn compact_to_log_start(&self) {
        let target = {
            let st = self.state.borrow();
            if st.kafka_log_start <= st.anchor.kafka_offset {
                return;
            }
            st.kafka_log_start
        };
        if target <= self.compacting_to.get() || self.closed.get() {
            return;
        }
        self.compacting_to.set(target);
        let (raft, group) = (self.raft.clone(), self.group);
        let (topic, index) = (self.topic.clone(), self.index);
        glommio::spawn_local(async move {
            if let Err(e) = raft.compact(group, target).await {
                tracing::warn!(topic, partition = index, target, error = %e, "compacting to the DeleteRecords log start failed");
            }
        })
        .detach();
    }

    /// As leader: whether it applied an entry of its own term (so every entry committed by
    /// earlier leaders, DeleteRecords' log start included, is applied here). Until then
    /// [`Partition::read`] returns no records, whatever the high watermark says.
    pub fn own_term_applied(&self) -> bool {
        self.leadership.get().own_term_applied
    }

    /// Whether this replica leads the group (as of the last status change).
    pub fn is_leader(&self) -> bool {
        !self.closed.get() && self.leadership.get().leader == Some(self.node_id)
    }

    /// The Raft node id of the leader this replica knows of.
    pub fn leader_node(&self) -> Option<NodeId> {
        self.leadership.get().leader
    }

    /// Kafka leader epoch = the Raft term.
    pub fn leader_epoch(&self) -> i32 {
        i32::try_from(self.leadership.get().term).unwrap_or(i32::MAX)
    }

    /// Broker ids holding a replica; `[0]` is the preferred leader.
    pub fn replicas(&self) -> Vec<i32> {
        self.replicas.borrow().clone()
    }

    /// The replica list changed in the metadata (a reassignment, KIP-455): the preferred
    /// leader follows it. The Raft configuration changes separately (engine/src/reassign.rs).
    pub fn set_replicas(&self, replicas: Vec<i32>) {
        *self.replicas.borrow_mut() = replicas;
    }

    /// The group's current status from the runtime (leader, ISR, offsets).
    pub fn status(&self) -> Option<GroupStatus> {
        self.raft.status(self.group)
    }

    /// High watermark: the Kafka offset one past the last committed and applied record.
    pub fn high_watermark(&self) -> i64 {
        let st = self.state.borrow();
        st.kafka_end_at(st.applied)
    }

    /// Offsets in Kafka numbering: high watermark, log start (the group's anchor, or the
    /// applied DeleteRecords start where larger) and log end (every entry held, uncommitted
    /// ones included).
    pub fn offsets(&self) -> PartitionOffsets {
        let st = self.state.borrow();
        let hw = st.kafka_end_at(st.applied);
        PartitionOffsets {
            high_watermark: hw,
            last_stable_offset: hw,
            log_start_offset: st.log_start_kafka(),
            log_end_offset: st.kafka_end_offset(),
        }
    }

    /// Generation of the high-watermark signal; see `wait_hw_change`.
    pub fn hw_generation(&self) -> u64 {
        self.hw_changed.generation()
    }

    /// Resolves after the high watermark (or leader/term) changed past generation `seen`.
    pub async fn wait_hw_change(&self, seen: u64) {
        self.hw_changed.wait(seen).await
    }

    fn check_leader(&self) -> Result<(), PartitionError> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(PartitionError::NotLeader)
        }
    }

    /// The one append entry point: validates `batches` (one or more Kafka v2 batches),
    /// checks idempotent producers' sequences (KIP-98), stamps LogAppendTime if the topic
    /// uses it, and proposes each batch to the Raft group. acks=all answers once the
    /// batches are committed (durable on a majority), acks=1/0 once the leader flushed them.
    pub async fn replicate(
        &self,
        batches: Bytes,
        acks: Acks,
    ) -> Result<ReplicateOutcome, PartitionError> {
        self.check_leader()?;
        if acks == Acks::All {
            let status = self
                .raft
                .status(self.group)
                .ok_or(PartitionError::NotLeader)?;
            let in_sync = status.in_sync.len() as i64;
            let min = i64::from(self.min_insync_replicas.get());
            if in_sync < min {
                return Err(PartitionError::NotEnoughReplicas { in_sync, min });
            }
        }
        let (append_time, batch_bytes_max) = {
            let cfg = self.config.borrow();
            let t = match cfg.timestamp_type {
                TimestampType::LogAppendTime => Some(self.clock.now_ms()),
                TimestampType::CreateTime => None,
            };
            (t, cfg.max_message_bytes.clamp(1, u32::MAX as i64) as u32)
        };
        let headers = freshet_storage::validate_batches(&batches, batch_bytes_max)
            .map_err(PartitionError::from_storage)?;
        let batches = match append_time {
            Some(now_ms) => stamp_log_append_time(&batches, now_ms),
            None => batches,
        };
        self.ensure_producer_state().await?;
        // KIP-98: idempotent producers' sequences (checked and reserved before proposing so
        // pipelined batches of one producer are checked in arrival order).
        let producer_batches = ProducerBatch::parse_all(&batches).unwrap_or_default();
        let check = loop {
            let seen = self.producers_changed.generation();
            let hw_seen = self.hw_changed.generation();
            let check = self
                .producers
                .borrow_mut()
                .check_and_reserve(&producer_batches);
            if check != SequenceCheck::DuplicateInFlight {
                break check;
            }
            // A retry of a batch whose append is still running: Kafka finds the original in
            // its producer state and answers with its offsets, so wait for the original's
            // outcome (appended: a duplicate with its offsets; failed: the producer is
            // forgotten and this retry appends itself), or for a leadership change.
            self.check_leader()?;
            futures_lite::future::or(
                self.producers_changed.wait(seen),
                self.hw_changed.wait(hw_seen),
            )
            .await;
            self.check_leader()?;
        };
        match check {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate {
                first_offset,
                last_offset,
            } => {
                if acks == Acks::All {
                    self.wait_committed(last_offset).await?;
                }
                return Ok(ReplicateOutcome {
                    base_offset: first_offset,
                    last_offset,
                    log_append_time_ms: append_time.unwrap_or(-1),
                    log_start_offset: self.offsets().log_start_offset,
                });
            }
            SequenceCheck::DuplicateInFlight => unreachable!("waited for above"),
            SequenceCheck::OutOfOrder => return Err(PartitionError::OutOfOrderSequence),
            SequenceCheck::FencedEpoch => return Err(PartitionError::InvalidProducerEpoch),
        }
        let wait = match acks {
            Acks::All => WaitFor::Majority,
            Acks::Leader | Acks::None => WaitFor::Leader,
        };
        // One Raft entry per batch; all are queued before the first is awaited, so they
        // go into the same driver pass, in order.
        let singles = split_single_batches(&batches);
        assert_eq!(singles.len(), headers.len(), "validated batch count");
        let pending: Vec<_> = singles
            .into_iter()
            .map(|b| self.raft.replicate(self.group, b, wait))
            .collect();
        let mut first: Option<i64> = None;
        let mut last_offset = -1;
        let mut failure = None;
        for (fut, (_, h)) in pending.into_iter().zip(&headers) {
            match fut.await {
                Ok(c) => {
                    first.get_or_insert(c.kafka_offset);
                    last_offset = c.kafka_offset + i64::from(h.last_offset_delta);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            self.producers.borrow_mut().failed(&producer_batches);
            self.producers_changed.notify_all();
            return Err(propose_error(e));
        }
        let base_offset = first.expect("at least one batch was validated");
        self.producers
            .borrow_mut()
            .appended(&producer_batches, base_offset);
        self.producers_changed.notify_all();
        Ok(ReplicateOutcome {
            base_offset,
            last_offset,
            log_append_time_ms: append_time.unwrap_or(-1),
            log_start_offset: self.offsets().log_start_offset,
        })
    }

    /// Waits until the high watermark is past `last_offset` (a duplicate's original append
    /// committed), or fails once this replica is no longer the leader.
    async fn wait_committed(&self, last_offset: i64) -> Result<(), PartitionError> {
        loop {
            let seen = self.hw_changed.generation();
            if self.high_watermark() > last_offset {
                return Ok(());
            }
            self.check_leader()?;
            self.hw_changed.wait(seen).await;
        }
    }

    /// A replica that became leader rebuilds idempotent producers' state from its log (as
    /// a follower it did not track the producers of the entries it received), once per term.
    async fn ensure_producer_state(&self) -> Result<(), PartitionError> {
        let term = self.leadership.get().term;
        if self.producers_term.get() == term {
            return Ok(());
        }
        let _g = self
            .producers_rebuild
            .acquire_permit(1)
            .await
            .map_err(|_| PartitionError::NotLeader)?;
        if self.producers_term.get() == term {
            return Ok(());
        }
        let states =
            replay_producer_states(&self.log, &self.state, self.producer_state_scan_bytes).await;
        *self.producers.borrow_mut() = states;
        self.producers_term.set(term);
        self.producers_changed.notify_all();
        Ok(())
    }

    /// Reads whole batches from Kafka offset `offset`, at most `max_bytes` (but at least one
    /// batch, KIP-74), never past the high watermark. Raft-internal batches are left out and
    /// base offsets are Kafka offsets. A new leader that has not applied an entry of its own
    /// term yet returns no records (the fetch waits and retries): its log start and high
    /// watermark may still lag what earlier leaders committed.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<FetchedData, PartitionError> {
        self.check_leader()?;
        if !self.own_term_applied() {
            return Ok(FetchedData {
                records: Bytes::new(),
                offsets: self.offsets(),
            });
        }
        self.read_committed(offset, max_bytes).await
    }

    /// [`Partition::read`] without the leader check (the group coordinator's replay and
    /// tests read a replica's committed data).
    pub async fn read_committed(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<FetchedData, PartitionError> {
        let offsets = self.offsets();
        if offset < offsets.log_start_offset || offset > offsets.log_end_offset {
            return Err(PartitionError::OffsetOutOfRange {
                offset,
                start: offsets.log_start_offset,
                end: offsets.log_end_offset,
            });
        }
        if offset >= offsets.high_watermark {
            return Ok(FetchedData {
                records: Bytes::new(),
                offsets,
            });
        }
        let (from, upto) = {
            let st = self.state.borrow();
            let from = st
                .kafka_to_log(offset)
                .expect("offset checked against the group");
            let upto = st
                .kafka_to_log(offsets.high_watermark)
                .expect("high watermark inside the group");
            (from, upto)
        };
        let raw = self
            .log
            .read(from, max_bytes, upto)
            .await
            .map_err(PartitionError::from_storage)?;
        let records = log_batches_to_kafka(&raw, &self.state.borrow())
            .map_err(|e| PartitionError::Storage(e.to_string()))?;
        Ok(FetchedData { records, offsets })
    }

    /// ListOffsets: -2 earliest, -1 latest (high watermark), -3 max timestamp, else the first
    /// offset whose timestamp is >= `timestamp_ms`. Returns (timestamp, offset); (-1, -1) when
    /// nothing matches. Kafka offsets. A new leader answers OFFSET_NOT_AVAILABLE (retriable)
    /// until it applied an entry of its own term (KIP-207: offsets never go backwards across
    /// a leader change; here the log start and the high watermark).
    pub async fn list_offset(&self, timestamp_ms: i64) -> Result<(i64, i64), PartitionError> {
        self.check_leader()?;
        if !self.own_term_applied() {
            return Err(PartitionError::OffsetNotAvailable);
        }
        let offsets = self.offsets();
        let hw = offsets.high_watermark;
        let to_kafka = |log_offset: i64| log_record_to_kafka(&self.state.borrow(), log_offset);
        match timestamp_ms {
            -2 => Ok((-1, offsets.log_start_offset)),
            -1 => Ok((-1, hw)),
            -3 => Ok(self
                .log
                .max_timestamp()
                .and_then(|(ts, off)| to_kafka(off).map(|k| (ts, k)))
                .filter(|(_, k)| *k < hw)
                .unwrap_or((-1, -1))),
            ts => {
                let found = self
                    .log
                    .offset_for_timestamp(ts)
                    .await
                    .map_err(PartitionError::from_storage)?;
                // The log answers (log offset, timestamp).
                Ok(found
                    .and_then(|(off, ts)| to_kafka(off).map(|k| (ts, k)))
                    .filter(|(_, k)| *k < hw)
                    .unwrap_or((-1, -1)))
            }
        }
    }

    /// Applies a changed topic config (segment size, retention, limits, timestamp type) and
    /// `min.insync.replicas`.
    pub fn set_config(&self, cfg: EffectiveTopicConfig, min_insync_replicas: i32) {
        self.log.set_config(log_config_for(&cfg));
        *self.config.borrow_mut() = cfg;
        self.min_insync_replicas.set(min_insync_replicas);
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// Takes the group off this core's Raft runtime (and, with `delete`, removes its state
    /// file and the log's files); otherwise closes the log (the driver already flushed what
    /// it appended).
    pub async fn close(self: Rc<Self>, delete: bool) -> Result<(), PartitionError> {
        self.closed.set(true);
        let from_raft = if delete {
            self.raft.remove_group(self.group).await
        } else {
            self.raft.close_group(self.group).await
        };
        drop(from_raft);
        // Wake fetch and acks waiters so they see the partition gone.
        self.hw_changed.notify_all();
        let dir = self.dir.clone();
        let log = Rc::try_unwrap(self)
            .ok()
            .and_then(|me| Rc::try_unwrap(me.log).ok());
        match (log, delete) {
            (Some(log), true) => log.delete().await.map_err(PartitionError::from_storage),
            (Some(log), false) => log.close().await.map_err(PartitionError::from_storage),
            // An in-flight request still holds the partition: the files close when it drops
            // it; a deleted topic's directory goes now.
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

/// Administrative operations (DeleteRecords, OffsetForLeaderEpoch, retention,
/// DescribeLogDirs). Same owner as above: run on the partition's core.
impl Partition {
    /// DeleteRecords (KIP-107): moves the log start offset up to `offset` (-1 means the high
    /// watermark) and returns the new log start offset (the "low watermark"). An offset above
    /// the high watermark, or negative other than -1, is `OffsetOutOfRange`; one at or below
    /// the current log start changes nothing. Leader only.
    ///
    /// The start travels through the partition's Raft log as a log start entry
    /// (`RaftHandle::set_log_start`): answered once it is committed (on a majority) and
    /// applied here, and this replica compacted its log up to it. Every other replica applies
    /// it on commit and compacts its own log ([`Partition::on_status`]), and a replica that
    /// becomes leader serves from the same start (docs/design/replication.md, "DeleteRecords'
    /// log start"). Not done within `timeout`: `RequestTimedOut` (the entry may still
    /// commit, as a Kafka deletion may still complete after its request timed out).
    pub async fn delete_records(
        &self,
        offset: i64,
        timeout: std::time::Duration,
    ) -> Result<i64, PartitionError> {
        futures_lite::future::or(self.delete_records_now(offset), async {
            glommio::timer::sleep(timeout).await;
            Err(PartitionError::RequestTimedOut)
        })
        .await
    }

    async fn delete_records_now(&self, offset: i64) -> Result<i64, PartitionError> {
        // A new leader first applies what earlier leaders committed (its high watermark and
        // log start may lag until then).
        loop {
            let seen = self.hw_changed.generation();
            self.check_leader()?;
            if self.own_term_applied() {
                break;
            }
            self.hw_changed.wait(seen).await;
        }
        let offsets = self.offsets();
        let hw = offsets.high_watermark;
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(PartitionError::OffsetOutOfRange {
                offset,
                start: offsets.log_start_offset,
                end: hw,
            });
        }
        if target > offsets.log_start_offset {
            self.raft
                .set_log_start(self.group, target)
                .await
                .map_err(propose_error)?;
            assert!(
                self.state.borrow().log_start_kafka() >= target,
                "{}-{}: log start entry for {target} committed but not applied",
                self.topic,
                self.index
            );
            // The space goes with the whole batches below the new start.
            self.compacting_to.set(self.compacting_to.get().max(target));
            self.compact_to(target).await?;
            // Fetch waiters re-check their offsets against the new log start.
            self.hw_changed.notify_all();
        }
        Ok(self.offsets().log_start_offset)
    }

    /// Log compaction (Raft §7) of this replica's group up to the entry holding
    /// `kafka_offset` (≤ the high watermark): the driver moves the group's anchor, then
    /// prefix-truncates the log, so a restart and lagging followers (sent a snapshot) stay
    /// consistent. Returns the group's log start afterwards (a batch's base: the batch
    /// holding `kafka_offset` stays whole).
    async fn compact_to(&self, kafka_offset: i64) -> Result<i64, PartitionError> {
        match self.raft.compact(self.group, kafka_offset).await {
            Ok(Some(start)) => Ok(start),
            Ok(None) => Err(PartitionError::NotLeader),
            Err(e) => Err(PartitionError::Storage(format!(
                "compacting the raft group: {e}"
            ))),
        }
    }

    /// Retention (retention.bytes / retention.ms): the Kafka offset whole old segments could
    /// be dropped up to, as the storage's own retention would choose them (never the active
    /// segment, never past the high watermark); then the group is compacted to it. Returns
    /// the number of Kafka offsets the log start moved.
    pub async fn enforce_retention(&self) -> Result<u64, PartitionError> {
        // Every replica applies retention to its own log (a follower left below the
        // leader's log start is sent a snapshot).
        let cfg = self.log.config();
        if cfg.retention_bytes.is_none() && cfg.retention_ms.is_none() {
            return Ok(0);
        }
        let segments = self.log.segments();
        if segments.len() < 2 {
            return Ok(0);
        }
        let mut keep_from = self.log.log_start_offset();
        if let Some(bytes_max) = cfg.retention_bytes {
            let mut total: u64 = segments.iter().map(|s| s.1).sum();
            for &(_, size, next) in &segments[..segments.len() - 1] {
                if total.saturating_sub(size) < bytes_max {
                    break;
                }
                total -= size;
                keep_from = keep_from.max(next);
            }
        }
        if let Some(ms) = cfg.retention_ms {
            let cutoff = self.clock.now_ms().saturating_sub(ms as i64);
            let active_base = segments.last().expect("segments").0;
            let first_young = self
                .log
                .offset_for_timestamp(cutoff)
                .await
                .map_err(PartitionError::from_storage)?
                .map(|(off, _)| off);
            // Every segment ending at or before the segment holding the first record not
            // older than the cutoff is older than retention.ms.
            let young_seg_base = match first_young {
                Some(off) => segments
                    .iter()
                    .rev()
                    .find(|s| s.0 <= off)
                    .map_or(active_base, |s| s.0),
                None => active_base,
            };
            keep_from = keep_from.max(young_seg_base);
        }
        let target = {
            let st = self.state.borrow();
            let hw = st.kafka_end_at(st.applied);
            log_record_to_kafka(&st, keep_from).map(|k| k.min(hw))
        };
        let before = self.offsets().log_start_offset;
        match target {
            Some(k) if k > before => {
                let after = self.compact_to(k).await?;
                self.hw_changed.notify_all();
                Ok((after - before).max(0) as u64)
            }
            _ => Ok(0),
        }
    }

    /// OffsetForLeaderEpoch for this partition: the log's epoch cache (Raft terms at log
    /// offsets) in Kafka offsets; see [`epoch_end_offset`]. Callers check leadership
    /// ([`Partition::is_leader`]; `Shard::local_end_offset_for_epoch` does).
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        let st = self.state.borrow();
        let epochs = kafka_epochs(&st, &self.log.epochs());
        epoch_end_offset(&epochs, st.kafka_end_offset(), requested)
    }
}

/// Bytes asked of the log per read while replaying producer state.
const REPLAY_READ_BYTES: usize = 1024 * 1024;

/// Rebuilds idempotent producers' state (KIP-98) from the batch headers of the log tail: the
/// newest segments adding up to `scan_bytes` (see [`replay_start_offset`]). Log offsets are
/// translated to Kafka offsets through the group's table; Raft-internal batches are skipped.
/// Producers whose batches all lie before that tail stay unknown (their next batch is
/// accepted, KIP-360). A read error stops the scan with what was replayed so far (logged):
/// the partition still opens, and the producers not yet seen are treated as unknown.
async fn replay_producer_states(
    log: &Log<DmaDisk>,
    st: &Rc<RefCell<GroupState>>,
    scan_bytes: u64,
) -> ProducerStates {
    let mut states = ProducerStates::default();
    let end = log.next_offset();
    let mut offset = replay_start_offset(&log.segments(), log.log_start_offset(), scan_bytes)
        .max(st.borrow().anchor.log_offset);
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
        {
            let st = st.borrow();
            for (log_base, b) in &batches {
                if let Some(kafka_base) = st.log_to_kafka(*log_base) {
                    states.replay(kafka_base, b);
                }
            }
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
