//! The per-core multi-Raft driver: many Raft groups (one per partition) owned by one core,
//! one `RawNode` each, driven together.
//!
//! One driver pass ([`MultiRaft::process_ready`]):
//! 1. collect the `Ready` of every group that has one;
//! 2. if any group has entries to write, send the leaders' appends and votes at once (they
//!    go out while the leader's own write is being flushed, Raft thesis §10.2.1);
//! 3. append each group's new entries to its log (truncating a conflicting suffix first, §5.3),
//!    then flush every log that was written **once** (a follower's appends of one pass share
//!    one flush), then rewrite the group state file of groups whose term/vote/membership
//!    changed;
//! 4. send the messages that must wait for persistence (followers' append/vote responses);
//! 5. apply committed entries: advance the high watermark, complete proposals (§8: a client is
//!    acknowledged only once its entry is committed, i.e. durable on a majority);
//! 6. serve reads raft-rs had to defer (`LogTemporarilyUnavailable`) from the log and call
//!    `on_entries_fetched`; repeat while groups have work;
//! 7. send everything else as one [`Envelope`] per destination node, with the heartbeats
//!    (and heartbeat responses) of all groups packed as [`crate::transport::Beat`]s; leaders'
//!    heartbeat timers are aligned ([`MultiRaft::tick`]) so all of them fall in one pass.
//!
//! Ownership: one `MultiRaft` per core, `!Send`; it owns its groups, their logs (by value or
//! `Rc`) and the node's [`MetaStore`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{Config, RawNode, StateRole};

use crate::batch::{
    batch_to_entry, entry_to_batch, internal_kind, log_start_of, parse_batch, split_batches,
    BatchError, InternalKind,
};
use crate::log::{GroupLog, LogError};
use crate::meta::{GroupMeta, LogAnchor, MetaError, MetaStore};
use crate::rng::SimRng;
use crate::store::{EntryMeta, GroupState, GroupStorage};
use crate::transport::{Envelope, GroupId, NodeId, Transport};

// Log compaction and snapshot install (Raft §7): `MultiRaft::compact` and the follower side.
mod snapshot;
// Membership changes (Raft thesis §4, paper §6): `MultiRaft::change_membership`, applying
// conf-change entries, the leave entry of a joint change, a removed leader handing over.
mod membership;

use membership::{all_voters, normalized, recovered_conf, ConfOp};
pub use membership::{Membership, MembershipError, MembershipEvent};

/// Driver settings (all limits explicit).
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This node's id (its Raft peer id in every group); non-zero.
    pub node_id: NodeId,
    /// Leader heartbeat interval, in ticks.
    pub heartbeat_ticks: usize,
    /// Base election timeout `E` in ticks: a follower campaigns after a random timeout in
    /// `(E, 2E]` ticks without hearing from a leader; must exceed `heartbeat_ticks`.
    pub election_ticks: usize,
    /// Byte budget of one append message.
    pub max_size_per_msg_bytes: u64,
    /// Appends in flight per follower.
    pub max_inflight_msgs: usize,
    /// Per-group entry cache budget (unapplied entries are always kept).
    pub cache_bytes_max: usize,
    /// Bytes read from the log per asynchronous fetch / recovery read.
    pub fetch_bytes_max: usize,
    /// Seed of the election-timeout jitter (deterministic runs); mixed with the node id.
    pub seed: u64,
    /// A leader counts a follower in sync ([`GroupStatus::in_sync`]) while it heard from it
    /// within this many ticks and the follower matched the commit index within this many
    /// ticks (Kafka's `replica.lag.time.max.ms`, in ticks).
    pub in_sync_lag_ticks: u64,
}

impl RaftConfig {
    /// Defaults for a 10 ms tick: heartbeat 150 ms, election 1.5–3 s (Redpanda's figures).
    pub fn new(node_id: NodeId) -> Self {
        Self {
            node_id,
            heartbeat_ticks: 15,
            election_ticks: 150,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            cache_bytes_max: 4 << 20,
            fetch_bytes_max: 1 << 20,
            seed: 0,
            in_sync_lag_ticks: 150,
        }
    }
}

/// Why a proposal was not (or will not be) committed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    /// This node does not lead the group (Kafka NOT_LEADER_OR_FOLLOWER, 6).
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// No such group on this core (Kafka UNKNOWN_TOPIC_OR_PARTITION, 3).
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The bytes are not exactly one valid v2 batch, or claim to be a Raft-internal entry
    /// (Kafka CORRUPT_MESSAGE 2 / INVALID_RECORD 87).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// Leadership changed before the entry committed and another entry took its index
    /// (Kafka NOT_LEADER_OR_FOLLOWER; the client retries).
    #[error("entry superseded by a new leader")]
    Superseded,
}

/// Errors that stop the driver (the engine reports the partitions as failed).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The log failed.
    #[error("group {group}: log: {source}")]
    Log {
        /// The group.
        group: GroupId,
        /// The cause.
        source: LogError,
    },
    /// The group state file failed.
    #[error("group {group}: state file: {source}")]
    Meta {
        /// The group.
        group: GroupId,
        /// The cause.
        source: MetaError,
    },
    /// A batch read back from the log does not parse.
    #[error("group {group}: corrupt log: {source}")]
    CorruptLog {
        /// The group.
        group: GroupId,
        /// The cause.
        source: BatchError,
    },
    /// Raft refused its configuration or state.
    #[error("group {group}: raft: {source}")]
    Raft {
        /// The group.
        group: GroupId,
        /// The cause.
        source: raft::Error,
    },
    /// The group is already open.
    #[error("group {0} already open")]
    AlreadyOpen(GroupId),
    /// The runtime loop that owned the driver has stopped (`RaftHandle::stop` or an
    /// earlier fatal error, given here).
    #[error("raft runtime stopped: {0}")]
    Stopped(String),
}

/// Outcome of a proposal, reported by [`MultiRaft::take_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Committed (majority durable) and applied: the batch got Kafka offsets
    /// `kafka_offset ..`; the high watermark moved to `high_watermark`.
    Committed {
        /// The group.
        group: GroupId,
        /// The caller's token.
        token: u64,
        /// Kafka base offset of the batch.
        kafka_offset: i64,
        /// High watermark after applying it.
        high_watermark: i64,
    },
    /// Will never commit.
    Failed {
        /// The group.
        group: GroupId,
        /// The caller's token.
        token: u64,
        /// Why.
        error: ProposeError,
    },
}

/// A proposal made with `report_append` reached the leader's own log and was flushed
/// (Kafka acks=1: "the leader has it"); it is not committed yet and may still be superseded.
/// Reported by [`MultiRaft::take_appended`]; its [`Event`] still follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The group.
    pub group: GroupId,
    /// The caller's token.
    pub token: u64,
    /// Kafka base offset the batch got.
    pub kafka_offset: i64,
    /// High watermark at that moment (the batch is not below it yet).
    pub high_watermark: i64,
}

/// A group's replication state as this node sees it ([`MultiRaft::status`]).
///
/// Ownership: a plain value, cloned freely (`Send`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupStatus {
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term (the Kafka leader epoch).
    pub term: u64,
    /// Raft commit index.
    pub commit_index: u64,
    /// Kafka offset one past the last applied (committed) record.
    pub high_watermark: i64,
    /// Kafka offset after the last entry held, committed or not (log end offset).
    pub log_end_kafka: i64,
    /// Kafka log start: the first record held (the log anchor), or DeleteRecords' log start
    /// (KIP-107) where an applied log start entry moved it further.
    pub log_start_kafka: i64,
    /// Voters of the group as of the last applied configuration, ascending (during a joint
    /// change, §4.3: the incoming voters `C_new`).
    pub voters: Vec<NodeId>,
    /// During a joint change: the outgoing voters `C_old`, ascending; empty otherwise.
    pub voters_outgoing: Vec<NodeId>,
    /// Learners (non-voting members that receive the log), ascending.
    pub learners: Vec<NodeId>,
    /// Leader only: voters of both halves (itself included) heard from and caught up to the
    /// commit index within `in_sync_lag_ticks`, ascending; empty on followers.
    pub in_sync: Vec<NodeId>,
    /// Leader only: learners heard from and caught up to the commit index within
    /// `in_sync_lag_ticks` (ready to be promoted), ascending; empty on followers.
    pub learners_in_sync: Vec<NodeId>,
    /// Leader only: a majority of voters (itself included; of each half during a joint
    /// change) heard from within `in_sync_lag_ticks`; false on followers.
    pub quorum_active: bool,
}

/// Counters of one driver (tests, the simulator's report, metrics later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Envelopes handed to the transport.
    pub envelopes_sent: u64,
    /// Log flushes issued (one per written log per pass).
    pub flushes: u64,
    /// Conflicting suffixes truncated (§5.3).
    pub truncations: u64,
    /// Reads served from the log for raft-rs's asynchronous fetch.
    pub async_fetches: u64,
    /// Group state file writes.
    pub meta_writes: u64,
    /// Log prefixes dropped by `compact` (§7).
    pub compactions: u64,
    /// Snapshots sent to followers that needed entries below the log start (§7).
    pub snapshots_sent: u64,
    /// Snapshots installed by this node as a follower (§7).
    pub snapshots_installed: u64,
}

impl std::ops::AddAssign for DriverStats {
    fn add_assign(&mut self, o: Self) {
        self.envelopes_sent += o.envelopes_sent;
        self.flushes += o.flushes;
        self.truncations += o.truncations;
        self.async_fetches += o.async_fetches;
        self.meta_writes += o.meta_writes;
        self.compactions += o.compactions;
        self.snapshots_sent += o.snapshots_sent;
        self.snapshots_installed += o.snapshots_installed;
    }
}

#[derive(Debug)]
struct Pending {
    index: u64,
    term: u64,
    token: u64,
    /// Report an [`Appended`] once the leader's own write is flushed.
    report_append: bool,
    /// The entry was written and flushed to this node's log (true for a prefix of `pending`).
    written: bool,
}

struct Group<L> {
    raw: RawNode<GroupStorage>,
    st: Rc<RefCell<GroupState>>,
    log: L,
    pending: VecDeque<Pending>,
    high_watermark: i64,
    /// `election_elapsed` after our last look (to detect raft-rs resetting the timer).
    last_elapsed: usize,
    /// (term, vote, conf) last written to the state file.
    persisted_term_vote: (u64, u64),
    /// Leader bookkeeping for [`GroupStatus`]: node tick at which each peer was last heard
    /// from, and last seen with `matched >= commit`.
    last_heard: BTreeMap<NodeId, u64>,
    caught_up: BTreeMap<NodeId, u64>,
    /// The outstanding [`MultiRaft::change_membership`], if any.
    conf_op: Option<ConfOp>,
    /// A conf-change entry was applied since the state file was last written: write it
    /// (with the commit index covering the entry) at the end of the pass.
    conf_dirty: bool,
}

/// Whether `m` asks for a vote (or a pre-vote, §9.6).
fn is_vote_request(m: &Message) -> bool {
    matches!(
        m.get_msg_type(),
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
    )
}

/// Whether a replica learned any configuration (a joining replica starts with none).
fn has_configuration(cs: &raft::eraftpb::ConfState) -> bool {
    !(cs.voters.is_empty() && cs.learners.is_empty() && cs.voters_outgoing.is_empty())
}

/// Many Raft groups driven by one core. See the module docs for one pass.
///
/// Ownership: per core, `!Send`.
pub struct MultiRaft<L: GroupLog, M: MetaStore, T: Transport> {
    cfg: RaftConfig,
    groups: BTreeMap<GroupId, Group<L>>,
    meta: M,
    transport: T,
    rng: SimRng,
    logger: slog::Logger,
    events: Vec<Event>,
    outbox: BTreeMap<NodeId, Envelope>,
    stats: DriverStats,
    /// Node ticks so far.
    ticks: u64,
    hw_changes: Vec<(GroupId, i64)>,
    appended: Vec<Appended>,
    /// Groups whose role, term or known leader changed during a tick (elections, check-quorum
    /// step-downs), for [`MultiRaft::take_tick_changes`] (a set: bounded by the groups even
    /// when nobody takes it, as in the simulator).
    tick_changes: BTreeSet<GroupId>,
    /// Snapshots queued this round, to report to raft-rs once it is advanced (§7).
    snapshots_sent: Vec<(GroupId, NodeId)>,
    /// Outcomes of membership changes, for [`MultiRaft::take_membership_events`].
    membership_events: Vec<MembershipEvent>,
}

impl<L: GroupLog, M: MetaStore, T: Transport> MultiRaft<L, M, T> {
    /// A driver with no groups.
    pub fn new(cfg: RaftConfig, meta: M, transport: T) -> Self {
        assert!(cfg.node_id != 0, "node id 0 is reserved by raft-rs");
        assert!(
            cfg.election_ticks > cfg.heartbeat_ticks,
            "election_ticks must exceed heartbeat_ticks"
        );
        // Mixed so that equal seeds on different nodes still give different jitter streams
        // (identical streams make every node time out together: endless split votes).
        let rng = SimRng::new(SimRng::new(cfg.seed).next_u64() ^ cfg.node_id);
        Self {
            cfg,
            groups: BTreeMap::new(),
            meta,
            transport,
            rng,
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            events: Vec::new(),
            outbox: BTreeMap::new(),
            stats: DriverStats::default(),
            ticks: 0,
            hw_changes: Vec::new(),
            appended: Vec::new(),
            tick_changes: BTreeSet::new(),
            snapshots_sent: Vec::new(),
            membership_events: Vec::new(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.cfg.node_id
    }

    /// Opens (or creates, with `voters` as its membership) the group and recovers its entry
    /// table from the log: the state file gives the anchor; every batch from there to the log
    /// end becomes one entry. Unapplied entries are loaded into the cache. The configuration
    /// is the one recorded by the last conf-change entry at or below the persisted commit
    /// index, else the state file's.
    ///
    /// A new group with empty `voters` is a replica joining an existing group (added as a
    /// learner by its leader): it never campaigns and learns its configuration from the
    /// leader's entries or snapshot.
    pub async fn open_group(
        &mut self,
        group: GroupId,
        voters: &[NodeId],
        log: L,
    ) -> Result<(), DriverError> {
        if self.groups.contains_key(&group) {
            return Err(DriverError::AlreadyOpen(group));
        }
        let meta_err = |source| DriverError::Meta { group, source };
        let log_err = |source| DriverError::Log { group, source };
        let meta = match self.meta.read(group).await.map_err(meta_err)? {
            Some(b) => {
                let mut m = GroupMeta::decode(&b).map_err(meta_err)?;
                // §7: finish a compaction or snapshot install a crash interrupted.
                self.stats.meta_writes +=
                    Self::reconcile_log(&self.meta, group, &mut m, &log).await?;
                m
            }
            None => {
                let mut m = GroupMeta {
                    anchor: LogAnchor::initial(),
                    ..Default::default()
                };
                m.anchor.log_offset = log.next_offset();
                m.conf_state.voters = voters.to_vec();
                self.meta.write(group, m.encode()).await.map_err(meta_err)?;
                m
            }
        };
        let mut st = GroupState::new(
            meta.hard_state.clone(),
            meta.conf_state.clone(),
            meta.anchor,
            self.cfg.cache_bytes_max,
        );
        // Recovery scan: one batch = one entry, from the anchor to the log end.
        let commit = meta.hard_state.commit;
        let end = log.next_offset();
        let mut off = meta.anchor.log_offset;
        let mut recovered_cache = Vec::new();
        let mut conf_state = normalized(&meta.conf_state);
        while off < end {
            let bytes = log
                .read(off, self.cfg.fetch_bytes_max, end)
                .await
                .map_err(log_err)?;
            let batches =
                split_batches(bytes).map_err(|source| DriverError::CorruptLog { group, source })?;
            assert!(
                !batches.is_empty(),
                "group {group}: log read at {off} < end {end} returned nothing"
            );
            for (h, b) in batches {
                assert_eq!(
                    h.base_offset, off,
                    "group {group}: log batches not contiguous"
                );
                let kind = internal_kind(&h, &b);
                let internal = kind.is_some();
                let index = st.last_index() + 1;
                if index <= commit
                    && matches!(
                        kind,
                        Some(InternalKind::ConfChange | InternalKind::ConfChangeV2)
                    )
                {
                    // §4: the configuration of the committed prefix (membership.rs).
                    let e = batch_to_entry(b.clone(), index)
                        .map_err(|source| DriverError::CorruptLog { group, source })?;
                    conf_state = recovered_conf(group, &e);
                }
                st.push_recovered(EntryMeta {
                    term: h.partition_leader_epoch as u64,
                    log_offset: off,
                    kafka_offset: st.kafka_end_offset(),
                    log_count: h.offset_count(),
                    kafka_count: if internal { 0 } else { h.offset_count() },
                });
                if index > commit {
                    let e = batch_to_entry(b, index)
                        .map_err(|source| DriverError::CorruptLog { group, source })?;
                    recovered_cache.push(e);
                } else if let Some(k) = internal.then(|| log_start_of(&b)).flatten() {
                    // KIP-107: committed log start entries set the exact log start again.
                    st.note_log_start(k);
                }
                off += i64::from(h.offset_count());
            }
        }
        assert!(
            commit <= st.last_index(),
            "group {group}: persisted commit {commit} beyond recovered log end {}",
            st.last_index()
        );
        st.applied = commit.max(st.first_index() - 1);
        st.conf_state = conf_state;
        st.restore_cache(recovered_cache);
        let high_watermark = st.kafka_end_at(st.applied);
        let st = Rc::new(RefCell::new(st));
        let e = self.cfg.election_ticks;
        let config = Config {
            id: self.cfg.node_id,
            heartbeat_tick: self.cfg.heartbeat_ticks,
            // raft-rs draws its randomized timeout from thread_rng; we pin its range to one
            // value (2E) and add our own seeded jitter through `election_elapsed` instead.
            election_tick: 2 * e,
            min_election_tick: 2 * e,
            max_election_tick: 2 * e + 1,
            applied: st.borrow().applied,
            max_size_per_msg: self.cfg.max_size_per_msg_bytes,
            max_inflight_msgs: self.cfg.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let raw = RawNode::new(&config, GroupStorage { st: st.clone() }, &self.logger)
            .map_err(|source| DriverError::Raft { group, source })?;
        let mut g = Group {
            raw,
            st,
            log,
            pending: VecDeque::new(),
            high_watermark,
            last_elapsed: usize::MAX,
            persisted_term_vote: (meta.hard_state.term, meta.hard_state.vote),
            last_heard: BTreeMap::new(),
            caught_up: BTreeMap::new(),
            conf_op: None,
            conf_dirty: false,
        };
        Self::jitter(&mut self.rng, e, &mut g);
        // A group whose only voter is this node (replication factor 1) need not wait an
        // election timeout: it campaigns at once and wins with its own vote.
        let cs = g.st.borrow().conf_state.clone();
        if cs.voters == [self.cfg.node_id] && cs.voters_outgoing.is_empty() {
            g.raw
                .campaign()
                .map_err(|source| DriverError::Raft { group, source })?;
        }
        self.groups.insert(group, g);
        Ok(())
    }

    /// Closes the group: it leaves this driver (its state file stays, so it can be opened
    /// again) and its log is handed back. Proposals still waiting fail with `NotLeader`
    /// (reported by [`MultiRaft::take_events`]). None if the group is not open.
    pub fn close_group(&mut self, group: GroupId) -> Option<L> {
        let mut g = self.groups.remove(&group)?;
        self.conf_closed(group, g.conf_op.take());
        for p in g.pending {
            self.events.push(Event::Failed {
                group,
                token: p.token,
                error: ProposeError::NotLeader { leader: None },
            });
        }
        self.appended.retain(|a| a.group != group);
        for env in self.outbox.values_mut() {
            env.messages.retain(|(gid, _)| *gid != group);
            env.heartbeats.retain(|b| b.group != group);
            env.heartbeat_responses.retain(|b| b.group != group);
        }
        Some(g.log)
    }

    /// Closes the group (see [`MultiRaft::close_group`]) and deletes its state file: the
    /// replica is gone from this node (a later `open_group` starts a new, empty member).
    pub async fn remove_group(&mut self, group: GroupId) -> Result<Option<L>, DriverError> {
        let log = self.close_group(group);
        self.meta
            .remove(group)
            .await
            .map_err(|source| DriverError::Meta { group, source })?;
        Ok(log)
    }

    /// Asks the leader of `group` to hand leadership to `to` (Raft thesis §3.10: the leader
    /// brings `to` up to date, then sends it TimeoutNow). Ignored when this node does not
    /// lead the group or `to` is not a voter; leadership may not move (check `status`).
    pub fn transfer_leader(&mut self, group: GroupId, to: NodeId) {
        if let Some(g) = self.groups.get_mut(&group) {
            let voter = all_voters(&g.st.borrow().conf_state).contains(&to);
            if g.raw.raft.state == StateRole::Leader && voter {
                g.raw.transfer_leader(to);
            }
        }
    }

    /// The group's replication state as of now (see [`GroupStatus`]). On the leader a voter
    /// is in sync when it was heard from and had matched the commit index within
    /// `in_sync_lag_ticks` node ticks (raft-rs's own `recent_active` is cleared at every
    /// check-quorum round, so the driver keeps the times itself); the leader always is.
    pub fn status(&self, group: GroupId) -> Option<GroupStatus> {
        let g = self.groups.get(&group)?;
        let r = &g.raw.raft;
        let st = g.st.borrow();
        let cs = normalized(&st.conf_state);
        let mut in_sync = Vec::new();
        let mut learners_in_sync = Vec::new();
        let mut quorum_active = false;
        if r.state == StateRole::Leader {
            let me = self.cfg.node_id;
            let commit = r.raft_log.committed;
            let lag = self.cfg.in_sync_lag_ticks;
            let recent = |m: &BTreeMap<NodeId, u64>, id: NodeId| {
                m.get(&id).is_some_and(|t| self.ticks - t <= lag)
            };
            let heard = |id: NodeId| id == me || recent(&g.last_heard, id);
            let synced = |id: NodeId| {
                let matched = r.prs().get(id).is_some_and(|p| p.matched >= commit);
                id == me || (heard(id) && (matched || recent(&g.caught_up, id)))
            };
            in_sync = all_voters(&cs)
                .into_iter()
                .filter(|id| synced(*id))
                .collect();
            learners_in_sync = cs
                .learners
                .iter()
                .copied()
                .filter(|id| synced(*id))
                .collect();
            let majority = |half: &[NodeId]| {
                half.is_empty() || half.iter().filter(|id| heard(**id)).count() > half.len() / 2
            };
            quorum_active =
                !cs.voters.is_empty() && majority(&cs.voters) && majority(&cs.voters_outgoing);
        }
        Some(GroupStatus {
            leader: (r.leader_id != 0).then_some(r.leader_id),
            term: r.term,
            commit_index: r.raft_log.committed,
            high_watermark: g.high_watermark,
            log_end_kafka: st.kafka_end_offset(),
            log_start_kafka: st.log_start_kafka(),
            voters: cs.voters,
            voters_outgoing: cs.voters_outgoing,
            learners: cs.learners,
            in_sync,
            learners_in_sync,
            quorum_active,
        })
    }

    /// Proposals made with `report_append` whose entry the leader has appended and flushed
    /// since the last call (Kafka acks=1).
    pub fn take_appended(&mut self) -> Vec<Appended> {
        std::mem::take(&mut self.appended)
    }

    /// After the pass's flush: reports the flushed entries of proposals that asked for it.
    fn report_appends(&mut self, written: &[GroupId]) {
        for gid in written {
            let g = self.groups.get_mut(gid).expect("written group exists");
            let st = g.st.borrow();
            // Written proposals form a prefix of `pending` (entries are written in order).
            for p in g.pending.iter_mut().rev() {
                if p.index > st.last_index() {
                    continue;
                }
                if p.written {
                    break;
                }
                p.written = true;
                let m = st.meta(p.index).expect("written entry held");
                if p.report_append && m.term == p.term {
                    self.appended.push(Appended {
                        group: *gid,
                        token: p.token,
                        kafka_offset: m.kafka_offset,
                        high_watermark: g.high_watermark,
                    });
                }
            }
        }
    }

    /// The groups that changed their high watermark since the last call, with the new value
    /// (for waking fetch waiters).
    pub fn take_hw_changes(&mut self) -> Vec<(GroupId, i64)> {
        std::mem::take(&mut self.hw_changes)
    }

    /// Re-draws the election timeout whenever raft-rs reset the timer (see `open_group`).
    fn jitter(rng: &mut SimRng, e: usize, g: &mut Group<L>) {
        let r = &mut g.raw.raft;
        if r.state != StateRole::Leader && r.election_elapsed < g.last_elapsed {
            r.election_elapsed = rng.below(e as u64) as usize;
        }
        g.last_elapsed = r.election_elapsed;
    }

    /// Advances every group's logical clock by one tick (heartbeats, elections).
    ///
    /// Heartbeats of all groups are aligned: a leader is ticked in a burst of
    /// `heartbeat_ticks` ticks every `heartbeat_ticks` node ticks, so each leader sends
    /// exactly one heartbeat per burst and all groups of this node heartbeat in the same pass
    /// (one envelope per node pair), whatever phase each group's own timer has. Followers and
    /// candidates tick every tick (election timing is not quantized).
    pub fn tick(&mut self) {
        let e = self.cfg.election_ticks;
        let h = self.cfg.heartbeat_ticks as u64;
        self.ticks += 1;
        let burst = self.ticks.is_multiple_of(h);
        for (gid, g) in self.groups.iter_mut() {
            let r = &g.raw.raft;
            let before = (r.state, r.term, r.leader_id);
            if g.raw.raft.state == StateRole::Leader {
                if burst {
                    for _ in 0..h {
                        g.raw.tick();
                    }
                }
            } else {
                g.raw.tick();
            }
            Self::jitter(&mut self.rng, e, g);
            let r = &g.raw.raft;
            if (r.state, r.term, r.leader_id) != before {
                self.tick_changes.insert(*gid);
            }
        }
    }

    /// Groups whose role, term or known leader a [`MultiRaft::tick`] changed since the last
    /// call (a follower campaigning, a leader stepping down at check-quorum).
    pub fn take_tick_changes(&mut self) -> BTreeSet<GroupId> {
        std::mem::take(&mut self.tick_changes)
    }

    /// Proposes one Kafka v2 batch to `group`. On success the outcome arrives later as an
    /// [`Event`] carrying `token`.
    pub fn propose(
        &mut self,
        group: GroupId,
        batch: Bytes,
        token: u64,
    ) -> Result<(), ProposeError> {
        self.propose_with(group, batch, token, false)
    }

    /// [`MultiRaft::propose`]; with `report_append`, also reports an [`Appended`]
    /// ([`MultiRaft::take_appended`]) once the leader's own write of the entry is flushed.
    pub fn propose_with(
        &mut self,
        group: GroupId,
        batch: Bytes,
        token: u64,
        report_append: bool,
    ) -> Result<(), ProposeError> {
        if !self.groups.contains_key(&group) {
            return Err(ProposeError::UnknownGroup(group));
        }
        let h = parse_batch(&batch).map_err(|e| ProposeError::InvalidBatch(e.to_string()))?;
        if h.total_bytes() != batch.len() {
            return Err(ProposeError::InvalidBatch("not exactly one batch".into()));
        }
        if internal_kind(&h, &batch).is_some() {
            return Err(ProposeError::InvalidBatch(
                "reserved control record type".into(),
            ));
        }
        self.propose_entry(group, batch, token, report_append)
    }

    /// Proposes one checked batch (a Kafka batch, or a log start entry built by
    /// [`MultiRaft::propose_log_start`]) as a normal entry.
    fn propose_entry(
        &mut self,
        group: GroupId,
        batch: Bytes,
        token: u64,
        report_append: bool,
    ) -> Result<(), ProposeError> {
        let g = self
            .groups
            .get_mut(&group)
            .ok_or(ProposeError::UnknownGroup(group))?;
        let leader = |g: &Group<L>| (g.raw.raft.leader_id != 0).then_some(g.raw.raft.leader_id);
        if g.raw.raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader { leader: leader(g) });
        }
        let mut m = Message {
            from: self.cfg.node_id,
            ..Default::default()
        };
        m.set_msg_type(MessageType::MsgPropose);
        m.entries = vec![Entry {
            data: batch,
            ..Default::default()
        }]
        .into();
        if g.raw.step(m).is_err() {
            // ProposalDropped: leadership transfer in progress or uncommitted-size limit.
            return Err(ProposeError::NotLeader { leader: leader(g) });
        }
        let index = g.raw.raft.raft_log.last_index();
        let term = g.raw.raft.term;
        if let Some(last) = g.pending.back() {
            assert!(last.index < index, "proposal indexes must grow");
        }
        g.pending.push_back(Pending {
            index,
            term,
            token,
            report_append,
            written: false,
        });
        Ok(())
    }

    /// Delivers an envelope from another node.
    pub fn step(&mut self, env: Envelope) {
        if env.to != self.cfg.node_id {
            return;
        }
        let e = self.cfg.election_ticks;
        let now = self.ticks;
        for (group, mut m) in env.into_messages() {
            if let Some(g) = self.groups.get_mut(&group) {
                let configured = has_configuration(&g.st.borrow().conf_state);
                if is_vote_request(&m) && !configured {
                    // A replica with no configuration (opened joining: new, or deleted and
                    // re-created after its removal) has no log and no memory of its past
                    // votes, and no configuration counts it yet: granting a vote would let a
                    // node with a stale configuration that still lists it win without the
                    // committed entries (found by the simulator: a lagging node elected with
                    // a wiped replica's vote overwrote committed entries). It votes once it
                    // has applied a configuration from the leader (its log then holds the
                    // entries up to that change).
                    continue;
                }
                if m.get_msg_type() == MessageType::MsgHeartbeat && !configured {
                    // A heartbeat's commit is min(matched, committed) from the sender's view of
                    // this replica. A leader whose term began before this replica was removed,
                    // deleted and re-created still holds the old incarnation's `matched`, and
                    // raft-rs panics when a commit passes the log's end ("to_commit N is out of
                    // range [last_index 0]", sim seeds 1220/storage and 1735/mem). Until it has a
                    // configuration (which only a leader of a newer term can give it, and which
                    // lifts its term above any such stale leader's) the replica takes commits
                    // only from appends, whose entries are checked against the sender's log; the
                    // heartbeat is still answered, so the leader's probe goes on.
                    m.commit = m.commit.min(g.raw.raft.raft_log.committed);
                }
                let from = m.from;
                // Errors are for messages from unknown peers or stale local messages; Raft
                // treats them as lost.
                let _ = g.raw.step(m);
                Self::jitter(&mut self.rng, e, g);
                let r = &g.raw.raft;
                if r.state == StateRole::Leader {
                    if let Some(p) = r.prs().get(from) {
                        g.last_heard.insert(from, now);
                        if p.matched >= r.raft_log.committed {
                            g.caught_up.insert(from, now);
                        }
                    }
                }
            }
        }
    }

    /// Outcomes of proposals since the last call, in the order they were decided.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// True if this node leads `group`.
    pub fn is_leader(&self, group: GroupId) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|g| g.raw.raft.state == StateRole::Leader)
    }

    /// The high watermark (Kafka offset, exclusive) of `group` on this node.
    pub fn high_watermark(&self, group: GroupId) -> Option<i64> {
        self.groups.get(&group).map(|g| g.high_watermark)
    }

    /// (term, commit index, last index) of `group`.
    pub fn progress(&self, group: GroupId) -> Option<(u64, u64, u64)> {
        self.groups.get(&group).map(|g| {
            (
                g.raw.raft.term,
                g.raw.raft.raft_log.committed,
                g.raw.raft.raft_log.last_index(),
            )
        })
    }

    /// The group's entry table, cache and translator (read-only use by the read path).
    pub fn group_state(&self, group: GroupId) -> Option<Rc<RefCell<GroupState>>> {
        self.groups.get(&group).map(|g| g.st.clone())
    }

    /// The group's log.
    pub fn log(&self, group: GroupId) -> Option<&L> {
        self.groups.get(&group).map(|g| &g.log)
    }

    /// Groups on this core, in id order.
    pub fn group_ids(&self) -> Vec<GroupId> {
        self.groups.keys().copied().collect()
    }

    /// Counters since this driver was created.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    fn queue(&mut self, group: GroupId, msgs: Vec<Message>) {
        let from = self.cfg.node_id;
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshots_sent.push((group, m.to));
            }
            self.outbox
                .entry(m.to)
                .or_insert_with(|| Envelope::new(from, m.to))
                .push(group, m);
        }
    }

    fn send_outbox(&mut self) {
        for (_, env) in std::mem::take(&mut self.outbox) {
            if !env.is_empty() {
                self.stats.envelopes_sent += 1;
                self.transport.send(env);
            }
        }
    }

    /// Sends the full messages (appends, votes) queued so far and keeps the coalesced
    /// heartbeats for the end of the pass, so a pass sends at most one heartbeat-carrying
    /// envelope per destination.
    fn send_outbox_messages(&mut self) {
        let from = self.cfg.node_id;
        for (to, env) in self.outbox.iter_mut() {
            if env.messages.is_empty() {
                continue;
            }
            let mut early = Envelope::new(from, *to);
            early.messages = std::mem::take(&mut env.messages);
            self.stats.envelopes_sent += 1;
            self.transport.send(early);
        }
    }

    /// One driver pass (see the module docs). Returns after every group is idle or after a
    /// bounded number of rounds.
    pub async fn process_ready(&mut self) -> Result<(), DriverError> {
        for _round in 0..8 {
            self.drive_membership();
            let mut work = Vec::new();
            for (gid, g) in self.groups.iter_mut() {
                if g.raw.has_ready() {
                    work.push((*gid, g.raw.ready()));
                }
            }
            if work.is_empty() {
                break;
            }
            // (2) Leaders' messages go out before their own write is durable (only worth a
            // separate envelope when there is a write to wait for).
            let disk_work = work.iter().any(|(_, rd)| !rd.entries().is_empty());
            for (gid, rd) in work.iter_mut() {
                let msgs = rd.take_messages();
                self.queue(*gid, msgs);
            }
            if disk_work {
                self.send_outbox_messages();
            }
            // (3) Persist entries, one flush per written log, then the state files.
            let mut written = Vec::new();
            for (gid, rd) in work.iter_mut() {
                let g = self.groups.get_mut(gid).expect("group in work list");
                if !rd.snapshot().is_empty() {
                    // §7: the leader's log starts past ours; restart ours at its anchor
                    // before appending the entries that follow it.
                    let (failed, hw) =
                        Self::install_snapshot(&self.meta, *gid, g, rd.snapshot(), rd.hs()).await?;
                    self.stats.snapshots_installed += 1;
                    self.stats.meta_writes += 2;
                    self.note_snapshot_installed(*gid, failed, hw);
                    self.conf_after_snapshot(*gid, rd.snapshot().get_metadata().index);
                }
                let g = self.groups.get_mut(gid).expect("group in work list");
                let entries = rd.take_entries();
                if !entries.is_empty() {
                    let (superseded, truncated) = Self::persist_entries(*gid, g, entries).await?;
                    self.stats.truncations += u64::from(truncated);
                    written.push(*gid);
                    for token in superseded.into_iter().rev() {
                        self.events.push(Event::Failed {
                            group: *gid,
                            token,
                            error: ProposeError::Superseded,
                        });
                    }
                }
                if let Some(hs) = rd.hs() {
                    g.st.borrow_mut().hard_state = hs.clone();
                }
            }
            for gid in &written {
                let g = &self.groups[gid];
                g.log.flush().await.map_err(|source| DriverError::Log {
                    group: *gid,
                    source,
                })?;
                self.stats.flushes += 1;
            }
            self.report_appends(&written);
            for (gid, _) in work.iter() {
                self.persist_meta_if_needed(*gid).await?;
            }
            // (4)-(5) Messages that wait for persistence, then apply.
            for (gid, mut rd) in work {
                let persisted = rd.take_persisted_messages();
                self.queue(gid, persisted);
                let committed = rd.take_committed_entries();
                self.apply(gid, committed);
                let g = self.groups.get_mut(&gid).expect("group in work list");
                let mut light = g.raw.advance_append(rd);
                if let Some(c) = light.commit_index() {
                    g.st.borrow_mut().hard_state.commit = c;
                }
                let msgs = light.take_messages();
                let committed = light.take_committed_entries();
                self.queue(gid, msgs);
                self.apply(gid, committed);
                let g = self.groups.get_mut(&gid).expect("group in work list");
                g.raw.advance_apply();
                let e = self.cfg.election_ticks;
                Self::jitter(&mut self.rng, e, g);
                // An applied membership change: its configuration and a commit index that
                // covers it reach the state file now (a restart then opens with it at once;
                // without the write it would be re-derived from the log, membership.rs).
                self.persist_meta_if_needed(gid).await?;
            }
            self.report_snapshots_sent();
            // (6) Deferred reads for followers that are behind.
            self.serve_fetches().await?;
        }
        self.send_outbox();
        Ok(())
    }

    async fn persist_entries(
        gid: GroupId,
        g: &mut Group<L>,
        entries: Vec<Entry>,
    ) -> Result<(Vec<u64>, bool), DriverError> {
        let log_err = |source| DriverError::Log { group: gid, source };
        let mut superseded = Vec::new();
        let first = entries[0].index;
        let conflict = {
            let st = g.st.borrow();
            (first <= st.last_index()).then(|| st.meta(first).expect("held").log_offset)
        };
        if let Some(log_offset) = conflict {
            // §5.3: a follower drops a conflicting suffix before appending the leader's entries.
            g.log.truncate(log_offset).await.map_err(log_err)?;
            g.st.borrow_mut().truncate_from(first);
            // Proposals at or after `first` can no longer commit as proposed.
            while g.pending.back().is_some_and(|p| p.index >= first) {
                superseded.push(g.pending.pop_back().expect("non-empty").token);
            }
        }
        let rows = g.st.borrow_mut().push_entries(&entries);
        for (e, row) in entries.iter().zip(rows) {
            let base = g
                .log
                .append(entry_to_batch(e), e.term as i32)
                .await
                .map_err(log_err)?;
            assert_eq!(
                base, row.log_offset,
                "group {gid}: log offset of index {} diverged from the entry table",
                e.index
            );
        }
        Ok((superseded, conflict.is_some()))
    }

    async fn persist_meta_if_needed(&mut self, gid: GroupId) -> Result<(), DriverError> {
        let g = self.groups.get_mut(&gid).expect("group exists");
        let record = {
            let st = g.st.borrow();
            let tv = (st.hard_state.term, st.hard_state.vote);
            if tv == g.persisted_term_vote && !g.conf_dirty {
                return Ok(());
            }
            g.persisted_term_vote = tv;
            g.conf_dirty = false;
            GroupMeta {
                hard_state: st.hard_state.clone(),
                conf_state: st.conf_state.clone(),
                anchor: st.anchor,
                log_reset_pending: false,
            }
            .encode()
        };
        self.stats.meta_writes += 1;
        self.meta
            .write(gid, record)
            .await
            .map_err(|source| DriverError::Meta { group: gid, source })
    }

    fn apply(&mut self, gid: GroupId, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        for e in &entries {
            {
                let g = self.groups.get_mut(&gid).expect("group exists");
                let mut st = g.st.borrow_mut();
                assert_eq!(e.index, st.applied + 1, "group {gid}: applied out of order");
                st.applied = e.index;
                if let Some(k) = log_start_of(&e.data) {
                    st.note_log_start(k); // KIP-107, see multiraft/snapshot.rs
                }
                while g.pending.front().is_some_and(|p| p.index <= e.index) {
                    let p = g.pending.pop_front().expect("non-empty");
                    if p.index == e.index && p.term == e.term {
                        let kafka_offset =
                            st.meta(e.index).expect("applied entry held").kafka_offset;
                        self.events.push(Event::Committed {
                            group: gid,
                            token: p.token,
                            kafka_offset,
                            high_watermark: st.kafka_end_at(e.index),
                        });
                    } else {
                        self.events.push(Event::Failed {
                            group: gid,
                            token: p.token,
                            error: ProposeError::Superseded,
                        });
                    }
                }
            }
            if e.get_entry_type() == EntryType::EntryNormal {
                self.normal_applied(gid, e.index);
            } else {
                // §4: a configuration takes effect on each replica when its entry is
                // applied (raft-rs semantics; see multiraft/membership.rs).
                self.apply_conf_entry(gid, e);
            }
        }
        let g = self.groups.get_mut(&gid).expect("group exists");
        let mut st = g.st.borrow_mut();
        let hw = st.kafka_end_at(st.applied);
        if hw != g.high_watermark {
            g.high_watermark = hw;
            self.hw_changes.push((gid, hw));
        }
        st.evict();
    }

    async fn serve_fetches(&mut self) -> Result<(), DriverError> {
        let fetch_bytes_max = self.cfg.fetch_bytes_max;
        for (gid, g) in self.groups.iter_mut() {
            let reqs = std::mem::take(&mut g.st.borrow_mut().pending_fetches);
            self.stats.async_fetches += reqs.len() as u64;
            for req in reqs {
                let (start, upto) = {
                    let st = g.st.borrow();
                    if req.low < st.first_index() || req.high > st.last_index() + 1 {
                        continue; // the log changed since; raft-rs will ask again
                    }
                    let last = st.meta(req.high - 1).expect("held");
                    (
                        st.meta(req.low).expect("held").log_offset,
                        last.log_offset + 1,
                    )
                };
                let bytes = g
                    .log
                    .read(start, fetch_bytes_max, upto)
                    .await
                    .map_err(|source| DriverError::Log {
                        group: *gid,
                        source,
                    })?;
                let batches = split_batches(bytes).map_err(|source| DriverError::CorruptLog {
                    group: *gid,
                    source,
                })?;
                let mut fetched = VecDeque::with_capacity(batches.len());
                for (i, (_, b)) in batches.into_iter().enumerate() {
                    let e = batch_to_entry(b, req.low + i as u64).map_err(|source| {
                        DriverError::CorruptLog {
                            group: *gid,
                            source,
                        }
                    })?;
                    fetched.push_back(e);
                }
                {
                    let mut st = g.st.borrow_mut();
                    for e in &fetched {
                        assert_eq!(
                            Some(e.term),
                            st.meta(e.index).map(|m| m.term),
                            "group {gid}: term in log batch differs from the entry table"
                        );
                    }
                    st.fetched = fetched;
                }
                g.raw.on_entries_fetched(req.context);
            }
        }
        Ok(())
    }
}
