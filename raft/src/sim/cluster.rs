//! One simulated cluster run: nodes, a random produce/crash/restart/partition schedule drawn
//! from the seed, then a quiet period and the invariant checks.
//!
//! Invariants checked:
//! - Election Safety (§5.2): at most one leader per group per term, checked every step;
//! - acknowledged = committed (§8): every acknowledged batch is present exactly once, at the
//!   Kafka offset it was acknowledged with, on every replica;
//! - Log Matching (§5.3) / Leader Completeness (§5.4): after healing, every replica's log is
//!   byte-identical (same batches, same log offsets, same terms);
//! - Kafka offsets are dense over data batches, Raft-internal batches have none, and every
//!   node's offset translator agrees with a recount from the log;
//! - no batch appears twice (proposals are never retried, so a duplicate is a bug);
//! - log compaction (§7): nodes compact their groups at random points up to their applied
//!   index during the faulty phase, so crashed or cut-off followers come back below the
//!   leader's log start and catch up by snapshot. The checks above then hold from each
//!   replica's log start on: every replica's log is byte-identical to the longest one from
//!   its own start, its anchor agrees with the recount, no log start passes the high
//!   watermark or the largest Kafka offset ever asked to compact to;
//! - membership changes (Raft thesis §4): during the faulty phase leaders are asked at
//!   random to add a learner (spare nodes start as joining replicas with no configuration),
//!   promote one, remove a voter (possibly themselves) or a learner, or swap a voter for a
//!   learner in one joint change (§4.3), never going below three voters. The checks above
//!   then hold over the members of each group's final configuration; every member reports
//!   that same (non-joint) configuration and the leader is a voter in it. At every step, a
//!   leader is a voter of its own applied configuration (§4.2.2: a removed leader steps
//!   down as soon as it applies its removal);
//! - liveness after healing: every group elects a leader and every member catches up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use freshet_storage::{Clock, Log, LogConfig, ManualClock, SimDisk};
use futures_lite::future::block_on;

use super::{NetConfig, SimNetwork, SimTransport};
use crate::batch::{encode_batch, internal_kind, log_start_of, records, split_batches};
use crate::log::{GroupLog, MemLog};
use crate::meta::{DiskMetaStore, MemMetaStore, MetaStore};
use crate::multiraft::{DriverStats, Event, MultiRaft, RaftConfig};
use crate::rng::SimRng;
use crate::transport::{GroupId, NodeId};

/// Small segments and buffers so that a short run rolls segments, reads across them and
/// exercises the log's recovery scan.
fn sim_log_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 << 10,
        preallocate_bytes: 64 << 10,
        cache_bytes_max: 64 << 10,
        write_buffer_bytes: 16 << 10,
        read_ahead_bytes: 16 << 10,
        ..LogConfig::default()
    }
}

/// Shape of one run; [`SimConfig::from_seed`] draws it from the seed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed everything derives from.
    pub seed: u64,
    /// Number of nodes that start as voters of every group.
    pub nodes: u64,
    /// Further nodes that start with a joining replica of every group (no configuration),
    /// for membership changes to add.
    pub spares: u64,
    /// Membership change requests (to a random group's leader) per simulated ms, per
    /// million; 0 disables them.
    pub membership_per_million: u32,
    /// Number of Raft groups (partitions).
    pub groups: u64,
    /// Length of the faulty phase, in simulated ms.
    pub fault_ms: u64,
    /// Upper bound of the quiet phase in which the cluster must converge.
    pub quiesce_ms_max: u64,
    /// Produce attempts per simulated ms, per million.
    pub produce_per_million: u32,
    /// Node crashes per simulated ms, per million.
    pub crash_per_million: u32,
    /// Network partitions per simulated ms, per million.
    pub partition_per_million: u32,
    /// Log compactions (a random node and group, up to a random applied point) per
    /// simulated ms, per million; 0 disables them.
    pub compact_per_million: u32,
    /// DeleteRecords requests (KIP-107: a log start entry proposed by a random group's
    /// leader, as the engine's `Partition::delete_records` does) per simulated ms, per
    /// million; 0 disables them.
    pub log_start_per_million: u32,
    /// Removed replicas deleted and re-created empty (the engine's reassignment path: state
    /// file and log deleted, then opened again as a joining replica) per simulated ms, per
    /// million; 0 disables them.
    pub wipe_per_million: u32,
    /// Client reads (a Fetch at a random offset from a random leader) per simulated ms, per
    /// million.
    pub fetch_per_million: u32,
    /// Per-group entry cache budget (small to exercise the asynchronous fetch path).
    pub cache_bytes_max: usize,
    /// Network faults during the faulty phase.
    pub net: NetConfig,
    /// Log implementation.
    pub backend: Backend,
}

impl SimConfig {
    /// A run shape drawn from `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let mut r = SimRng::new(seed ^ 0xC0FF_EE00);
        Self {
            seed,
            nodes: if r.chance(300_000) { 5 } else { 3 },
            groups: 1 + r.below(4),
            fault_ms: 3_000 + r.below(4_000),
            quiesce_ms_max: 20_000,
            produce_per_million: 50_000 + r.below(250_000) as u32,
            crash_per_million: r.below(1_500) as u32,
            partition_per_million: r.below(1_500) as u32,
            cache_bytes_max: if r.chance(500_000) { 0 } else { 64 << 10 },
            net: NetConfig {
                drop_per_million: r.below(100_000) as u32,
                duplicate_per_million: r.below(20_000) as u32,
                delay_min_ms: 1,
                delay_max_ms: 1 + r.below(30),
            },
            backend: Backend::Storage,
            // Drawn last so that the other parameters of a seed are unchanged by it.
            compact_per_million: if r.chance(200_000) {
                0
            } else {
                r.below(15_000) as u32
            },
            // After those, for the same reason.
            spares: r.below(3),
            membership_per_million: if r.chance(150_000) {
                0
            } else {
                r.below(3_000) as u32
            },
            // After those, for the same reason.
            log_start_per_million: if r.chance(200_000) {
                0
            } else {
                r.below(4_000) as u32
            },
            wipe_per_million: if r.chance(200_000) {
                0
            } else {
                r.below(3_000) as u32
            },
            fetch_per_million: r.below(20_000) as u32,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Nodes that started as voters.
    pub nodes: u64,
    /// Nodes that started as joining replicas.
    pub spares: u64,
    /// Raft groups.
    pub groups: u64,
    /// Proposals accepted by a leader.
    pub proposed: u64,
    /// Proposals acknowledged (committed).
    pub acked: u64,
    /// Proposals reported failed (superseded).
    pub failed: u64,
    /// Node crashes (with loss of unflushed writes).
    pub crashes: u64,
    /// Network partitions.
    pub partitions: u64,
    /// Log compactions that moved a log start (§7).
    pub compactions: u64,
    /// Membership changes proposed / completed (final configuration applied on the
    /// proposer).
    pub membership_changes: (u64, u64),
    /// DeleteRecords log start entries (KIP-107) proposed / acknowledged (committed and
    /// applied on the proposer) / applied (a replica's log start moved forward by one,
    /// counted on every replica, recovery scans after restarts included).
    pub log_starts: (u64, u64, u64),
    /// DeleteRecords asked of a leader that had not yet applied an entry of its own term
    /// (the engine waits, KIP-207).
    pub log_start_waits: u64,
    /// Removed replicas deleted and re-created empty.
    pub wipes: u64,
    /// Client reads served / refused below the log start / not available (a leader that
    /// has not applied an entry of its own term, KIP-207).
    pub fetches: (u64, u64, u64),
    /// Distinct (group, term) leaderships observed.
    pub leaderships: u64,
    /// Envelopes sent / dropped by the network.
    pub envelopes: (u64, u64),
    /// Simulated ms until convergence after the faulty phase.
    pub converge_ms: u64,
    /// Driver counters summed over every node and incarnation.
    pub driver: DriverStats,
    /// Kafka end offset of each group at the end.
    pub kafka_end_offsets: Vec<i64>,
}

/// Which log implementation a simulated node persists to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The storage crate's `Log` on its `SimDisk` (torn writes, lost unsynced data).
    Storage,
    /// The in-memory [`crate::log::MemLog`] (isolates Raft bugs from storage bugs).
    Mem,
}

/// One node's durable state, across crashes.
trait NodeStore {
    type Log: GroupLog + Clone;
    type Meta: MetaStore;
    /// Opens (recovers) the state dir and the log of every group.
    fn open(
        &mut self,
        node: NodeId,
        groups: u64,
        clock: &Rc<ManualClock>,
    ) -> Result<(Self::Meta, Vec<Self::Log>), String>;
    /// Deletes group `g`'s log (`log` is its last handle; the driver already removed the
    /// group and its state file) and opens a new, empty one in its place (the engine's
    /// `Partition::close(delete)`, then a later open of the same partition).
    fn wipe_log(
        &mut self,
        node: NodeId,
        g: GroupId,
        log: Self::Log,
        clock: &Rc<ManualClock>,
    ) -> Result<Self::Log, String>;
    /// Power loss.
    fn crash(&mut self, rng: &mut SimRng, torn: bool);
}

struct StorageStore {
    disk: SimDisk,
}

impl StorageStore {
    fn open_log(
        &self,
        node: NodeId,
        g: GroupId,
        clock: &Rc<ManualClock>,
    ) -> Result<Rc<Log<SimDisk>>, String> {
        let clock: Rc<dyn Clock> = clock.clone();
        let log = block_on(Log::open(
            self.disk.clone(),
            PathBuf::from(format!("/n{node}/g{g}")),
            sim_log_config(),
            clock,
        ))
        .map_err(|e| format!("node {node} open log {g}: {e}"))?;
        Ok(Rc::new(log))
    }
}

impl NodeStore for StorageStore {
    type Log = Rc<Log<SimDisk>>;
    type Meta = DiskMetaStore<SimDisk>;
    fn open(
        &mut self,
        node: NodeId,
        groups: u64,
        clock: &Rc<ManualClock>,
    ) -> Result<(Self::Meta, Vec<Self::Log>), String> {
        let meta = block_on(DiskMetaStore::open(
            self.disk.clone(),
            PathBuf::from(format!("/n{node}/raft")),
        ))
        .map_err(|e| format!("node {node} state dir: {e}"))?;
        let logs = (0..groups)
            .map(|g| self.open_log(node, g, clock))
            .collect::<Result<_, _>>()?;
        Ok((meta, logs))
    }
    fn wipe_log(
        &mut self,
        node: NodeId,
        g: GroupId,
        log: Self::Log,
        clock: &Rc<ManualClock>,
    ) -> Result<Self::Log, String> {
        let log = Rc::try_unwrap(log)
            .map_err(|_| format!("node {node} group {g}: log still shared when deleted"))?;
        block_on(log.delete()).map_err(|e| format!("node {node} delete log {g}: {e}"))?;
        self.open_log(node, g, clock)
    }
    fn crash(&mut self, _rng: &mut SimRng, torn: bool) {
        // Unsynced writes kept, dropped or torn per sector; or all dropped.
        if torn {
            self.disk.crash();
        } else {
            self.disk.lose_unflushed();
        }
    }
}

#[derive(Default)]
struct MemStore {
    meta: MemMetaStore,
    logs: Vec<MemLog>,
}

impl NodeStore for MemStore {
    type Log = MemLog;
    type Meta = MemMetaStore;
    fn open(
        &mut self,
        _node: NodeId,
        groups: u64,
        _clock: &Rc<ManualClock>,
    ) -> Result<(Self::Meta, Vec<Self::Log>), String> {
        while (self.logs.len() as u64) < groups {
            self.logs.push(MemLog::new());
        }
        Ok((self.meta.clone(), self.logs.clone()))
    }
    fn wipe_log(
        &mut self,
        _node: NodeId,
        g: GroupId,
        _log: Self::Log,
        _clock: &Rc<ManualClock>,
    ) -> Result<Self::Log, String> {
        self.logs[g as usize] = MemLog::new();
        Ok(self.logs[g as usize].clone())
    }
    fn crash(&mut self, rng: &mut SimRng, _torn: bool) {
        for l in &self.logs {
            l.crash(rng);
        }
    }
}

struct Node<S: NodeStore> {
    id: NodeId,
    driver: Option<MultiRaft<S::Log, S::Meta, SimTransport>>,
    /// The node's disk: survives crashes (minus unsynced writes).
    store: S,
    logs: BTreeMap<GroupId, S::Log>,
    restart_at_ms: Option<u64>,
    tick_period_ms: u64,
    tick_phase_ms: u64,
    incarnation: u64,
    /// Groups whose replica was deleted and re-created empty at least once (they reopen
    /// from their own state file, never as a founding voter).
    wiped: BTreeSet<GroupId>,
    /// Per group, for this incarnation of the replica: (applied index, log start, applied
    /// DeleteRecords start) when last checked (KIP-107, [`Sim::check_log_starts`]).
    log_start_seen: BTreeMap<GroupId, (u64, i64, i64)>,
    /// Per group, for this incarnation: the largest DeleteRecords log start this replica
    /// started compacting to (the engine's `Partition::compacting_to`).
    compacting_to: BTreeMap<GroupId, i64>,
    /// Compactions to an applied log start not run yet (the engine runs them in a
    /// background task, so a crash can come first).
    compact_due: BTreeMap<GroupId, i64>,
}

impl<S: NodeStore> Node<S> {
    /// The entry table and translator of this (live) node's replica of `g`.
    fn state(&self, g: GroupId) -> Rc<std::cell::RefCell<crate::store::GroupState>> {
        self.driver
            .as_ref()
            .expect("node is up")
            .group_state(g)
            .expect("group")
    }
}

/// A proposed DeleteRecords log start entry.
struct LogStartProposal {
    group: GroupId,
    kafka_offset: i64,
    /// Term of the proposing leader.
    term: u64,
}

/// `v[k]` for a random `k`.
fn pick<T: Copy>(rng: &mut SimRng, v: &[T]) -> T {
    v[rng.below(v.len() as u64) as usize]
}

/// Whether `d` applied an entry of its current term in `g` (as leader: everything earlier
/// leaders committed is applied here too, §5.4.2): the engine's
/// `Leadership::own_term_applied`, which gates DeleteRecords, ListOffsets and Fetch (KIP-207).
fn own_term_applied<L: GroupLog, M: MetaStore, T: crate::transport::Transport>(
    d: &MultiRaft<L, M, T>,
    g: GroupId,
) -> bool {
    let st = d.group_state(g).expect("group");
    let st = st.borrow();
    let applied_term = st.meta(st.applied).map_or(st.anchor.prev_term, |m| m.term);
    d.progress(g).is_some_and(|p| p.0 == applied_term)
}

/// The Kafka offset of `g`'s log anchor on `d` and its high watermark.
fn anchor_and_hw<L: GroupLog, M: MetaStore, T: crate::transport::Transport>(
    d: &MultiRaft<L, M, T>,
    g: GroupId,
) -> (i64, i64) {
    let start = d
        .group_state(g)
        .expect("group")
        .borrow()
        .anchor
        .kafka_offset;
    (start, d.high_watermark(g).expect("group"))
}

/// The token a simulated client wrote as the key of every record of its batch.
fn batch_token(b: &Bytes) -> Result<u64, String> {
    let recs = records(b).map_err(|e| e.to_string())?;
    let key = recs[0].0.as_ref().ok_or("record without key")?;
    Ok(u64::from_be_bytes(
        key[..].try_into().map_err(|_| "bad key")?,
    ))
}

/// `FRESHET_SIM_TRACE` set: the run narrates restarts, crashes and changes on stderr.
fn trace() -> bool {
    std::env::var_os("FRESHET_SIM_TRACE").is_some()
}

struct Sim<S: NodeStore> {
    cfg: SimConfig,
    clock: Rc<ManualClock>,
    rng: SimRng,
    net: SimNetwork,
    nodes: Vec<Node<S>>,
    voters: Vec<NodeId>,
    next_token: u64,
    /// token -> (group, record count)
    proposals: BTreeMap<u64, (GroupId, u32)>,
    /// Every node id (voters first, then spares).
    all: Vec<NodeId>,
    /// Acknowledged data batches: token -> (group, Kafka offset).
    acked: BTreeMap<u64, (GroupId, i64)>,
    leaders: BTreeMap<(GroupId, u64), NodeId>,
    /// DeleteRecords log start entries proposed, by token.
    log_starts: BTreeMap<u64, LogStartProposal>,
    /// The same by (group, Raft index): (term, Kafka offset) of each proposed there.
    log_start_at: BTreeMap<(GroupId, u64), Vec<(u64, i64)>>,
    /// Per group: Raft index -> Kafka offset of every log start entry known committed (a
    /// replica applied it).
    log_start_committed: BTreeMap<GroupId, BTreeMap<u64, i64>>,
    /// Per group: term of the proposing leader -> largest acknowledged log start.
    log_start_acked: BTreeMap<GroupId, BTreeMap<u64, i64>>,
    report: SimReport,
    heal_at_ms: Option<u64>,
    /// Per group: the largest Kafka offset any node was asked to compact to (no log start
    /// may pass it).
    compact_requested: BTreeMap<GroupId, i64>,
}

const TICK_MS: u64 = 10;

impl<S: NodeStore> Sim<S> {
    fn start_node(&mut self, i: usize) -> Result<(), String> {
        let n = &mut self.nodes[i];
        n.incarnation += 1;
        n.log_start_seen.clear();
        n.compacting_to.clear();
        n.compact_due.clear();
        if trace() {
            eprintln!("restart node {} incarnation {}", n.id, n.incarnation);
        }
        let mut rc = RaftConfig::new(n.id);
        rc.heartbeat_ticks = 3;
        rc.election_ticks = 15;
        rc.max_size_per_msg_bytes = 16 << 10;
        rc.max_inflight_msgs = 16;
        rc.cache_bytes_max = self.cfg.cache_bytes_max;
        rc.fetch_bytes_max = 8 << 10;
        rc.seed = self.cfg.seed ^ (n.incarnation << 40);
        let (meta, logs) = n.store.open(n.id, self.cfg.groups, &self.clock)?;
        let mut d = MultiRaft::new(rc, meta, self.net.transport(n.id));
        n.logs.clear();
        for (g, log) in (0..).zip(logs) {
            // Spares open a joining replica (no configuration); for everyone else the state
            // file, once written, wins over this argument (a re-created replica has one).
            let voters = if self.voters.contains(&n.id) && !n.wiped.contains(&g) {
                self.voters.clone()
            } else {
                Vec::new()
            };
            if trace() {
                eprintln!(
                    "  node {} log {g}: start {} next {}",
                    n.id,
                    log.log_start_offset(),
                    log.next_offset()
                );
            }
            n.logs.insert(g, log.clone());
            block_on(d.open_group(g, &voters, log))
                .map_err(|e| format!("node {} open group {g}: {e}", n.id))?;
        }
        n.driver = Some(d);
        n.restart_at_ms = None;
        Ok(())
    }

    fn crash_node(&mut self, i: usize, now_ms: u64) {
        let n = &mut self.nodes[i];
        if let Some(d) = n.driver.take() {
            self.report.driver += d.stats();
        }
        n.logs.clear();
        n.compact_due.clear();
        // Power loss: unsynced writes kept, dropped or torn per sector; or all dropped.
        let torn = self.rng.chance(500_000);
        if trace() {
            eprintln!("t={now_ms} crash node {} torn={torn}", n.id);
        }
        n.store.crash(&mut self.rng, torn);
        n.restart_at_ms = Some(now_ms + 50 + self.rng.below(1_000));
        self.report.crashes += 1;
    }

    fn make_batch(&mut self, token: u64) -> (Bytes, u32) {
        let n = 1 + self.rng.below(4) as usize;
        let len = self.rng.below(1_500) as usize;
        let key = token.to_be_bytes();
        let value = vec![(token % 251) as u8; len];
        let recs: Vec<_> = (0..n).map(|_| (Some(&key[..]), Some(&value[..]))).collect();
        (encode_batch(0, token as i64, -1, &recs), n as u32)
    }

    fn faults(&mut self, now_ms: u64) -> Result<(), String> {
        if self.rng.chance(self.cfg.crash_per_million) {
            let i = self.rng.below(self.nodes.len() as u64) as usize;
            if self.nodes[i].driver.is_some() {
                self.crash_node(i, now_ms);
            }
        }
        if self.heal_at_ms.is_none() && self.rng.chance(self.cfg.partition_per_million) {
            let mut ids: Vec<NodeId> = self.all.clone();
            // Fisher-Yates with the seeded generator.
            for k in (1..ids.len()).rev() {
                let j = self.rng.below(k as u64 + 1) as usize;
                ids.swap(k, j);
            }
            let cut = 1 + self.rng.below(ids.len() as u64 / 2) as usize;
            self.net.partition(&ids[..cut], &ids[cut..]);
            self.heal_at_ms = Some(now_ms + 100 + self.rng.below(2_000));
            self.report.partitions += 1;
        }
        if self.heal_at_ms.is_some_and(|t| t <= now_ms) {
            self.net.heal();
            self.heal_at_ms = None;
        }
        Ok(())
    }

    fn new_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn driver(&self, i: usize) -> &MultiRaft<S::Log, S::Meta, SimTransport> {
        self.nodes[i].driver.as_ref().expect("node is up")
    }

    fn driver_mut(&mut self, i: usize) -> &mut MultiRaft<S::Log, S::Meta, SimTransport> {
        self.nodes[i].driver.as_mut().expect("node is up")
    }

    /// Live nodes, in id order.
    fn up(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].driver.is_some())
            .collect()
    }

    /// Live nodes that lead `g` (more than one while a deposed leader has not noticed).
    fn leaders_of(&self, g: GroupId) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| {
                self.nodes[*i]
                    .driver
                    .as_ref()
                    .is_some_and(|d| d.is_leader(g))
            })
            .collect()
    }

    /// A random group and a random one of its leaders, if it has one.
    fn random_leader(&mut self) -> Option<(GroupId, usize)> {
        let g = self.rng.below(self.cfg.groups);
        let leaders = self.leaders_of(g);
        (!leaders.is_empty()).then(|| (g, pick(&mut self.rng, &leaders)))
    }

    fn produce(&mut self) {
        let Some((g, i)) = self.random_leader() else {
            return;
        };
        let token = self.new_token();
        let (batch, n) = self.make_batch(token);
        if self.driver_mut(i).propose(g, batch, token).is_ok() {
            self.proposals.insert(token, (g, n));
            self.report.proposed += 1;
        }
    }

    /// Log compaction (§7) on a random live node (a leader more often: its compaction is what
    /// sends lagging followers snapshots) up to a random point between its log start and its
    /// high watermark (the engine's retention does the same on every replica).
    fn compact(&mut self) -> Result<(), String> {
        let g = self.rng.below(self.cfg.groups);
        let up = self.up();
        if up.is_empty() {
            return Ok(());
        }
        let leaders = self.leaders_of(g);
        let i = if !leaders.is_empty() && self.rng.chance(700_000) {
            pick(&mut self.rng, &leaders)
        } else {
            pick(&mut self.rng, &up)
        };
        let (start, hw) = anchor_and_hw(self.driver(i), g);
        let k = start + self.rng.below((hw - start) as u64 + 1) as i64;
        self.compact_node(i, g, k)
    }

    /// Compacts node `i`'s replica of `g` up to Kafka offset `k` (§7; every compaction of a
    /// run goes through here) and checks where its log start went.
    fn compact_node(&mut self, i: usize, g: GroupId, k: i64) -> Result<(), String> {
        let r = self.compact_requested.entry(g).or_insert(0);
        *r = (*r).max(k);
        let n = &mut self.nodes[i];
        let d = n.driver.as_mut().expect("node is up");
        let (start, hw) = anchor_and_hw(d, g);
        let got = block_on(d.compact(g, k))
            .map_err(|e| format!("node {} compact group {g} to {k}: {e}", n.id))?
            .ok_or("compact: group not open")?;
        if got < start || got > k.max(start) || got > hw {
            return Err(format!(
                "node {} group {g}: compact({k}) from start {start} (hw {hw}) moved the start to {got}",
                n.id
            ));
        }
        if got > start {
            self.report.compactions += 1;
        }
        Ok(())
    }

    /// DeleteRecords (KIP-107) as the engine's `Partition::delete_records` asks it of the
    /// partition leader: only once the leader applied an entry of its own term (before that
    /// the engine waits), a new log start in (log start, high watermark] is proposed as a log
    /// start entry with `MultiRaft::propose_log_start` (what `RaftHandle::set_log_start`
    /// runs). The acknowledgement and the leader's own compaction follow in
    /// [`Sim::take_events`].
    fn delete_records(&mut self) {
        let Some((g, i)) = self.random_leader() else {
            return;
        };
        let d = self.driver(i);
        if !own_term_applied(d, g) {
            self.report.log_start_waits += 1;
            return;
        }
        let start = d.group_state(g).expect("group").borrow().log_start_kafka();
        let hw = d.high_watermark(g).expect("group");
        if hw <= start {
            return; // at or below the current start: no change
        }
        // Offset −1 (the high watermark) now and then, else a point in (start, hw].
        let target = if self.rng.chance(200_000) {
            hw
        } else {
            start + 1 + self.rng.below((hw - start) as u64) as i64
        };
        let token = self.new_token();
        let d = self.driver_mut(i);
        if d.propose_log_start(g, target, token).is_err() {
            return;
        }
        let (term, _, index) = d.progress(g).expect("group");
        if trace() {
            eprintln!(
                "node {} group {g}: log start {target} proposed at index {index} term {term}",
                self.nodes[i].id
            );
        }
        self.log_start_at
            .entry((g, index))
            .or_default()
            .push((term, target));
        self.log_starts.insert(
            token,
            LogStartProposal {
                group: g,
                kafka_offset: target,
                term,
            },
        );
        self.report.log_starts.0 += 1;
    }

    /// KIP-107 on every replica (the engine's `Partition::compact_to_log_start`): once a log
    /// start entry is applied, a background task compacts the replica's log up to it. Here
    /// each pending one runs at a random later step (half the time per step), so crashes,
    /// snapshots and further compactions can come first.
    fn compact_to_log_starts(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let due: Vec<(GroupId, i64)> = self.nodes[i]
                .compact_due
                .iter()
                .map(|(g, k)| (*g, *k))
                .collect();
            for (g, k) in due {
                if self.rng.chance(500_000) {
                    self.nodes[i].compact_due.remove(&g);
                    self.compact_node(i, g, k)?;
                }
            }
        }
        Ok(())
    }

    /// A client read (Fetch) at a random Kafka offset from a random leader, served as the
    /// engine's `Partition::read` does: nothing until the leader applied an entry of its own
    /// term (KIP-207), OFFSET_OUT_OF_RANGE below the log start, else the batch holding the
    /// offset, which must be there and be the batch acknowledged at that offset (§8).
    fn fetch(&mut self) -> Result<(), String> {
        let Some((g, i)) = self.random_leader() else {
            return Ok(());
        };
        let d = self.driver(i);
        if !own_term_applied(d, g) {
            self.report.fetches.2 += 1;
            return Ok(());
        }
        let hw = d.high_watermark(g).expect("group");
        let k = self.rng.below(hw as u64 + 1) as i64;
        let n = &self.nodes[i];
        let st = self.driver(i).group_state(g).expect("group");
        let st = st.borrow();
        let start = st.log_start_kafka();
        if k < start {
            self.report.fetches.1 += 1;
            return Ok(());
        }
        self.report.fetches.0 += 1;
        if k == hw {
            return Ok(());
        }
        let at = st.kafka_to_log(k).ok_or_else(|| {
            format!(
                "node {} group {g}: Kafka offset {k} in [log start {start}, hw {hw}) is not held",
                n.id
            )
        })?;
        let bytes = block_on(GroupLog::read(&n.logs[&g], at, 1, i64::MAX))
            .map_err(|e| format!("node {} group {g}: read at {at}: {e}", n.id))?;
        let batches = split_batches(bytes).map_err(|e| format!("node {} group {g}: {e}", n.id))?;
        let (h, b) = batches
            .first()
            .ok_or_else(|| format!("node {} group {g}: nothing read at {at}", n.id))?;
        let count = i64::from(h.offset_count());
        let base = st.log_to_kafka(h.base_offset);
        let token = batch_token(b)?;
        let acked = self.acked.get(&token).map(|a| a.1);
        let served_at = base.filter(|b| (*b..*b + count).contains(&k));
        if served_at.is_none()
            || acked.is_some_and(|a| Some(a) != served_at)
            || self.proposals.get(&token).map(|p| p.0) != Some(g)
        {
            return Err(format!(
                "node {} group {g}: Fetch({k}) served token {token} at Kafka offset {base:?} (+{count}), acknowledged at {acked:?}",
                n.id
            ));
        }
        Ok(())
    }

    /// A random membership change (Raft thesis §4) asked of a random group's leader: promote
    /// a learner, remove a voter (never below three), remove a learner, add a non-member as
    /// a learner, or swap a voter for a learner in one joint change (§4.3).
    fn change_membership(&mut self) {
        let Some((g, i)) = self.random_leader() else {
            return;
        };
        let st = self.driver(i).status(g).expect("group");
        if !st.voters_outgoing.is_empty() {
            return;
        }
        let (mut voters, mut learners) = (st.voters.clone(), st.learners.clone());
        let outside: Vec<NodeId> = self
            .all
            .iter()
            .copied()
            .filter(|id| !voters.contains(id) && !learners.contains(id))
            .collect();
        let rng = &mut self.rng;
        match rng.below(5) {
            0 | 1 if !learners.is_empty() => {
                let l = pick(rng, &learners);
                learners.retain(|x| *x != l);
                voters.push(l);
            }
            2 if voters.len() > 3 => {
                let v = pick(rng, &voters);
                voters.retain(|x| *x != v);
            }
            3 if !learners.is_empty() && voters.len() >= 3 => {
                // Joint: one learner in, one voter out.
                let l = pick(rng, &learners);
                let v = pick(rng, &voters);
                learners.retain(|x| *x != l);
                voters.retain(|x| *x != v);
                voters.push(l);
            }
            4 if !learners.is_empty() => {
                let l = pick(rng, &learners);
                learners.retain(|x| *x != l);
            }
            _ if !outside.is_empty() => learners.push(pick(rng, &outside)),
            _ => return,
        }
        let token = self.new_token();
        if trace() {
            eprintln!(
                "node {} group {g}: change membership {:?}+{:?} -> {voters:?}+{learners:?}",
                self.nodes[i].id, st.voters, st.learners
            );
        }
        if let Ok(None) = self
            .driver_mut(i)
            .change_membership(g, &voters, &learners, token)
        {
            self.report.membership_changes.0 += 1;
        }
    }

    /// The engine's reassignment deletes a replica for good once the configuration without
    /// it is committed (KIP-455, engine/src/reassign.rs): `remove_group` deletes its state
    /// file, `Log::delete` its log, and adding it back later opens a new, empty joining
    /// replica (no configuration). Here a live non-member of a random group is wiped and
    /// reopened empty at once; the random membership changes may add it back (learner, then
    /// voter), and it must catch up by snapshot or from the log.
    ///
    /// Non-member by the configuration of the group's newest leader (the highest term seen
    /// so far), once it applied an entry of its own term: every committed change is applied
    /// there (§5.4), as in the controller metadata the engine goes by. A deposed leader of an
    /// older term may still not list a node the group has since added back.
    fn wipe_removed(&mut self) -> Result<(), String> {
        let g = self.rng.below(self.cfg.groups);
        let Some((&(_, term), &leader)) = self.leaders.range((g, 0)..=(g, u64::MAX)).next_back()
        else {
            return Ok(());
        };
        let Some(d) = self.nodes[(leader - 1) as usize].driver.as_ref() else {
            return Ok(());
        };
        if !d.is_leader(g) || d.progress(g).expect("group").0 != term || !own_term_applied(d, g) {
            return Ok(());
        }
        let st = d.status(g).expect("group");
        if !st.voters_outgoing.is_empty() {
            return Ok(());
        }
        let outside: Vec<usize> = self
            .up()
            .into_iter()
            .filter(|j| {
                let id = self.nodes[*j].id;
                !st.voters.contains(&id) && !st.learners.contains(&id)
            })
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        let j = pick(&mut self.rng, &outside);
        self.wipe(j, g)
    }

    /// Deletes node `j`'s replica of `g` (state file and log) and opens a new, empty joining
    /// replica in its place.
    fn wipe(&mut self, j: usize, g: GroupId) -> Result<(), String> {
        let clock = self.clock.clone();
        let n = &mut self.nodes[j];
        let d = n.driver.as_mut().expect("node is up");
        let log = block_on(d.remove_group(g))
            .map_err(|e| format!("node {} remove group {g}: {e}", n.id))?
            .ok_or_else(|| format!("node {} group {g}: not open", n.id))?;
        n.logs.remove(&g);
        let log = n.store.wipe_log(n.id, g, log, &clock)?;
        n.logs.insert(g, log.clone());
        block_on(d.open_group(g, &[], log))
            .map_err(|e| format!("node {} reopen group {g}: {e}", n.id))?;
        n.wiped.insert(g);
        n.log_start_seen.remove(&g);
        n.compacting_to.remove(&g);
        n.compact_due.remove(&g);
        if trace() {
            eprintln!(
                "node {} group {g}: replica deleted and re-created empty",
                n.id
            );
        }
        self.report.wipes += 1;
        Ok(())
    }

    fn step(&mut self, now_ms: u64, faulty: bool) -> Result<(), String> {
        self.net.set_now(now_ms);
        self.clock.set_ms(now_ms as i64);
        if faulty {
            self.faults(now_ms)?;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].restart_at_ms.is_some_and(|t| t <= now_ms) {
                self.start_node(i)?;
            }
        }
        for env in self.net.deliver_due() {
            let to = env.to;
            if let Some(d) = self.nodes[(to - 1) as usize].driver.as_mut() {
                d.step(env);
            }
        }
        for n in &mut self.nodes {
            if let Some(d) = n.driver.as_mut() {
                if (now_ms + n.tick_phase_ms).is_multiple_of(n.tick_period_ms) {
                    d.tick();
                }
            }
        }
        if faulty {
            if self.rng.chance(self.cfg.produce_per_million) {
                self.produce();
            }
            if self.rng.chance(self.cfg.compact_per_million) {
                self.compact()?;
            }
            if self.rng.chance(self.cfg.membership_per_million) {
                self.change_membership();
            }
            if self.rng.chance(self.cfg.log_start_per_million) {
                self.delete_records();
            }
            if self.rng.chance(self.cfg.wipe_per_million) {
                self.wipe_removed()?;
            }
            if self.rng.chance(self.cfg.fetch_per_million) {
                self.fetch()?;
            }
        }
        self.compact_to_log_starts()?;
        // Leaders' compactions after an acknowledged DeleteRecords (node, group, offset).
        let mut compact_after = Vec::new();
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            let Some(d) = n.driver.as_mut() else { continue };
            block_on(d.process_ready()).map_err(|e| format!("node {}: {e}", n.id))?;
            self.note_log_starts_committed(i);
            self.take_events(i, &mut compact_after)?;
        }
        for (i, g, k) in compact_after {
            self.compact_node(i, g, k)?;
        }
        self.check_log_starts()
    }

    /// Outcomes node `i` reported in its last pass, and the per-pass checks of its leaders.
    fn take_events(
        &mut self,
        i: usize,
        compact_after: &mut Vec<(usize, GroupId, i64)>,
    ) -> Result<(), String> {
        let d = self.driver_mut(i);
        let (events, membership) = (d.take_events(), d.take_membership_events());
        for ev in events {
            match ev {
                Event::Committed {
                    group,
                    token,
                    kafka_offset,
                    high_watermark,
                } => {
                    if let Some(p) = self.log_starts.get(&token) {
                        // KIP-107: the engine asserts the same once `set_log_start` resolved.
                        let d = self.driver(i);
                        let start = d
                            .group_state(group)
                            .expect("group")
                            .borrow()
                            .log_start_kafka();
                        if p.group != group
                            || start < p.kafka_offset
                            || high_watermark < kafka_offset
                        {
                            return Err(format!(
                                "node {} group {group}: log start {} (group {}) acknowledged with log start {start}, high watermark {high_watermark}, offset {kafka_offset}",
                                self.nodes[i].id, p.kafka_offset, p.group
                            ));
                        }
                        let a = self
                            .log_start_acked
                            .entry(group)
                            .or_default()
                            .entry(p.term)
                            .or_insert(0);
                        *a = (*a).max(p.kafka_offset);
                        self.report.log_starts.1 += 1;
                        compact_after.push((i, group, p.kafka_offset));
                        continue;
                    }
                    let (pg, count) = self.proposals[&token];
                    if pg != group {
                        return Err(format!(
                            "token {token} acked on group {group}, proposed on {pg}"
                        ));
                    }
                    if high_watermark < kafka_offset + i64::from(count) {
                        return Err(format!(
                            "token {token}: high watermark {high_watermark} below its end {}",
                            kafka_offset + i64::from(count)
                        ));
                    }
                    if self.acked.insert(token, (group, kafka_offset)).is_some() {
                        return Err(format!("token {token} acknowledged twice"));
                    }
                    self.report.acked += 1;
                }
                Event::Failed { .. } => self.report.failed += 1,
            }
        }
        for ev in membership {
            if let Ok(m) = ev.result {
                self.report.membership_changes.1 += 1;
                if m.voters.len() < 3 {
                    return Err(format!(
                        "group {}: membership change left {:?} (fewer than 3 voters)",
                        ev.group, m.voters
                    ));
                }
            }
        }
        let (id, d) = (
            self.nodes[i].id,
            self.nodes[i].driver.as_ref().expect("node is up"),
        );
        for g in 0..self.cfg.groups {
            if d.is_leader(g) {
                let gs = d.group_state(g).expect("group");
                let cs = &gs.borrow().conf_state;
                if !cs.voters.contains(&id) && !cs.voters_outgoing.contains(&id) {
                    return Err(format!(
                        "§4.2.2: node {id} leads group {g} but is not a voter of its configuration {:?} (outgoing {:?})",
                        cs.voters, cs.voters_outgoing
                    ));
                }
                let term = d.progress(g).expect("group").0;
                if trace() && !self.leaders.contains_key(&(g, term)) {
                    let st = d.status(g).expect("group");
                    eprintln!(
                        "node {id} group {g}: leader of term {term}, voters {:?} outgoing {:?} learners {:?}, progress {:?}",
                        st.voters, st.voters_outgoing, st.learners, d.progress(g)
                    );
                }
                let prev = *self.leaders.entry((g, term)).or_insert(id);
                if prev != id {
                    return Err(format!(
                        "Election Safety (§5.2) violated: group {g} term {term} led by {prev} and {id}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Records the log start entries node `i` applied since its last check as committed (an
    /// applied entry is committed; the same index and term is the same entry, §5.3).
    fn note_log_starts_committed(&mut self, i: usize) {
        if self.log_start_at.is_empty() {
            return;
        }
        let d = self.driver(i);
        let mut found = Vec::new();
        for g in 0..self.cfg.groups {
            let st = d.group_state(g).expect("group");
            let st = st.borrow();
            let from = self.nodes[i]
                .log_start_seen
                .get(&g)
                .map_or(0, |s| s.0 + 1)
                .max(st.first_index());
            if from > st.applied {
                continue;
            }
            for ((_, index), proposals) in self.log_start_at.range((g, from)..=(g, st.applied)) {
                let term = st.meta(*index).expect("held").term;
                if let Some((_, k)) = proposals.iter().find(|p| p.0 == term) {
                    found.push((g, *index, *k));
                }
            }
        }
        for (g, index, k) in found {
            self.log_start_committed
                .entry(g)
                .or_default()
                .insert(index, k);
        }
    }

    /// The KIP-107 invariants, after every step, on every live replica: its log start (the
    /// one clients see: max of the anchor and the applied log start entries) never moves
    /// back within one incarnation and never passes its high watermark; once it applied a
    /// committed log start entry (or a snapshot past it; also after a restart) its start is
    /// at least that entry's offset, and no log start entry moved it that is not committed;
    /// a leader that applied an entry of its own term (the one that answers ListOffsets and
    /// Fetch, KIP-207) is at or past every log start acknowledged in its term or before.
    /// Also notes the compactions the engine starts when a log start entry is applied.
    fn check_log_starts(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let Some(d) = self.nodes[i].driver.as_ref() else {
                continue;
            };
            let id = self.nodes[i].id;
            let mut seen = Vec::new();
            for g in 0..self.cfg.groups {
                let st = d.group_state(g).expect("group");
                let st = st.borrow();
                let (applied, start, dr_start) =
                    (st.applied, st.log_start_kafka(), st.kafka_log_start);
                let hw = d.high_watermark(g).expect("group");
                let before = self.nodes[i].log_start_seen.get(&g).copied();
                let err = |what: String| Err(format!("KIP-107: node {id} group {g}: {what}"));
                if before.is_some_and(|b| start < b.1) {
                    return err(format!("log start moved back from {:?} to {start}", before));
                }
                if start > hw {
                    return err(format!("log start {start} beyond the high watermark {hw}"));
                }
                if before.is_none_or(|b| b.0 != applied) {
                    let (at, committed) = self
                        .log_start_committed
                        .get(&g)
                        .and_then(|c| c.range(..=applied).max_by_key(|(_, k)| **k))
                        .map_or((0, 0), |(i, k)| (*i, *k));
                    if start < committed {
                        return err(format!(
                            "applied up to index {applied} (log start entry at index {at} committed, naming {committed}; here {:?}) but its log start is {start} (anchor {:?}, commit {})",
                            st.meta(at), st.anchor, st.hard_state.commit
                        ));
                    }
                    if dr_start > committed {
                        return err(format!(
                            "DeleteRecords start {dr_start} not named by any committed entry up to index {applied} (largest {committed})"
                        ));
                    }
                }
                if d.is_leader(g) && own_term_applied(d, g) {
                    let term = d.progress(g).expect("group").0;
                    let acked = self
                        .log_start_acked
                        .get(&g)
                        .and_then(|a| a.range(..=term).map(|(_, k)| *k).max())
                        .unwrap_or(0);
                    if start < acked {
                        return err(format!(
                            "leader of term {term} (own term applied, KIP-207) serves log start {start} below the acknowledged {acked}"
                        ));
                    }
                }
                let cs = &st.conf_state;
                if st.hard_state.vote != 0
                    && cs.voters.is_empty()
                    && cs.learners.is_empty()
                    && cs.voters_outgoing.is_empty()
                {
                    // A joining (new or re-created) replica never votes before it learned a
                    // configuration (multiraft.rs `step`; seed 1175 before the fix).
                    return Err(format!(
                        "node {id} group {g}: voted for {} in term {} before it learned any configuration",
                        st.hard_state.vote, st.hard_state.term
                    ));
                }
                let moved = before.map_or(0, |b| b.2) < dr_start;
                let compact = dr_start > st.anchor.kafka_offset
                    && dr_start > self.nodes[i].compacting_to.get(&g).copied().unwrap_or(0);
                seen.push((g, (applied, start, dr_start), moved, compact));
            }
            let n = &mut self.nodes[i];
            for (g, s, moved, compact) in seen {
                n.log_start_seen.insert(g, s);
                self.report.log_starts.2 += u64::from(moved);
                if compact {
                    n.compacting_to.insert(g, s.2);
                    n.compact_due.insert(g, s.2);
                }
            }
        }
        Ok(())
    }

    /// The nodes of group `g`'s configuration as its leader applied it (voters, then
    /// learners); None without a single leader, while joint, or while the leader is not
    /// one of the voters (a removed leader hands over, §4.2.2).
    fn members(&self, g: GroupId) -> Option<Vec<usize>> {
        let mut leaders = self.nodes.iter().filter_map(|n| {
            let d = n.driver.as_ref()?;
            d.is_leader(g).then(|| (n.id, d.status(g).expect("group")))
        });
        let (id, st) = leaders.next()?;
        if leaders.next().is_some() || !st.voters_outgoing.is_empty() || !st.voters.contains(&id) {
            return None;
        }
        Some(
            st.voters
                .iter()
                .chain(&st.learners)
                .map(|id| (*id - 1) as usize)
                .collect(),
        )
    }

    fn converged(&self) -> bool {
        if self.nodes.iter().any(|n| n.driver.is_none()) {
            return false;
        }
        (0..self.cfg.groups).all(|g| {
            let Some(members) = self.members(g) else {
                return false;
            };
            let mut seen = None;
            let mut conf = None;
            for i in members {
                let d = self.nodes[i].driver.as_ref().expect("all up");
                let (_, commit, last) = d.progress(g).expect("group");
                if commit != last || seen.is_some_and(|s| s != last) {
                    return false;
                }
                seen = Some(last);
                let st = d.status(g).expect("group");
                let c = (st.voters, st.learners, st.voters_outgoing);
                if conf.as_ref().is_some_and(|x| *x != c) {
                    return false;
                }
                conf = Some(c);
            }
            true
        })
    }

    /// Reads a node's whole log of `g`: (log offset, term, bytes) per batch.
    fn read_log(&self, n: &Node<S>, g: GroupId) -> Result<Vec<(i64, i32, Bytes)>, String> {
        let log = &n.logs[&g];
        let mut all = BytesMut::new();
        let mut off = log.log_start_offset();
        while off < log.next_offset() {
            let bytes = block_on(GroupLog::read(log, off, 1 << 20, i64::MAX))
                .map_err(|e| format!("node {} group {g}: read at {off}: {e}", n.id))?;
            let batches = split_batches(bytes.clone())
                .map_err(|e| format!("node {} group {g}: {e}", n.id))?;
            let (h, _) = batches.last().ok_or("empty read below the log end")?;
            off = h.base_offset + i64::from(h.offset_count());
            all.extend_from_slice(&bytes);
        }
        let batches =
            split_batches(all.freeze()).map_err(|e| format!("node {} group {g}: {e}", n.id))?;
        Ok(batches
            .into_iter()
            .map(|(h, b)| (h.base_offset, h.partition_leader_epoch, b))
            .collect())
    }

    fn check(&mut self) -> Result<(), String> {
        for g in 0..self.cfg.groups {
            // §4: the members of the final configuration (as the leader applied it) all
            // report it; the leader is one of its voters.
            let members = self.members(g).ok_or(format!(
                "group {g}: no single leader with a non-joint configuration at the end"
            ))?;
            let status = |i: usize| {
                self.nodes[i]
                    .driver
                    .as_ref()
                    .expect("all up")
                    .status(g)
                    .expect("group")
            };
            let leader = members
                .iter()
                .copied()
                .find(|i| status(*i).leader == Some(self.nodes[*i].id))
                .ok_or_else(|| {
                    let all: Vec<String> = (0..self.nodes.len())
                        .map(|i| format!("node {}: {:?}", self.nodes[i].id, status(i)))
                        .collect();
                    format!(
                        "group {g}: the leader is not a member of its configuration; {}",
                        all.join("; ")
                    )
                })?;
            let conf = status(leader);
            if !conf.voters.contains(&self.nodes[leader].id) {
                return Err(format!(
                    "group {g}: leader {} is not a voter of {:?}",
                    self.nodes[leader].id, conf.voters
                ));
            }
            for i in &members {
                let st = status(*i);
                if (&st.voters, &st.learners, &st.voters_outgoing)
                    != (&conf.voters, &conf.learners, &conf.voters_outgoing)
                {
                    return Err(format!(
                        "group {g}: node {} reports voters {:?} learners {:?} outgoing {:?}, the leader {:?} {:?}",
                        self.nodes[*i].id, st.voters, st.learners, st.voters_outgoing, conf.voters, conf.learners
                    ));
                }
            }
            for n in &self.nodes {
                let st = n.state(g);
                let anchor = st.borrow().anchor;
                let start = n.logs[&g].log_start_offset();
                if start != anchor.log_offset {
                    return Err(format!(
                        "node {} group {g}: log starts at {start}, anchor says {}",
                        n.id, anchor.log_offset
                    ));
                }
            }
            let nodes: Vec<&Node<S>> = members.iter().map(|i| &self.nodes[*i]).collect();
            // KIP-107: every member applied every committed log start entry (or a snapshot
            // past it): its start is the largest of them, or its own anchor if that is past
            // it; every acknowledged one is among them.
            let committed = self.log_start_committed.get(&g);
            let dr_start = committed
                .and_then(|c| c.values().max().copied())
                .unwrap_or(0);
            let acked = self.log_start_acked.get(&g);
            if acked.is_some_and(|a| a.values().any(|k| *k > dr_start)) {
                return Err(format!(
                    "KIP-107: group {g}: acknowledged log starts {acked:?} beyond the committed {dr_start}"
                ));
            }
            for n in &nodes {
                let st = n.state(g);
                let st = st.borrow();
                let want = st.anchor.kafka_offset.max(dr_start);
                if st.log_start_kafka() != want {
                    return Err(format!(
                        "KIP-107: node {} group {g}: log start {} (anchor {}, applied DeleteRecords start {}), committed log start entries say {want}",
                        n.id, st.log_start_kafka(), st.anchor.kafka_offset, st.kafka_log_start
                    ));
                }
            }
            // Each member's log, from its own start (its anchor, §7).
            let mut logs = Vec::new();
            for n in &nodes {
                let st = n.state(g);
                let anchor = st.borrow().anchor;
                let limit = self.compact_requested.get(&g).copied().unwrap_or(0);
                if anchor.kafka_offset > limit {
                    return Err(format!(
                        "node {} group {g}: log start Kafka offset {} beyond the largest compaction asked for ({limit})",
                        n.id, anchor.kafka_offset
                    ));
                }
                logs.push((anchor, self.read_log(n, g)?));
            }
            // The reference: the longest history (lowest start). Log Matching (§5.3): every
            // other log is byte-identical to it from that log's own start to the end.
            let r = (0..logs.len())
                .min_by_key(|i| logs[*i].0.log_offset)
                .expect("nodes");
            let (ref_anchor, reference) = (logs[r].0, logs[r].1.clone());
            let ref_id = nodes[r].id;
            for (i, n) in nodes.iter().enumerate() {
                let (anchor, other) = &logs[i];
                let tail: Vec<_> = reference
                    .iter()
                    .filter(|b| b.0 >= anchor.log_offset)
                    .cloned()
                    .collect();
                if other.len() != tail.len() {
                    return Err(format!(
                        "Log Matching (§5.3): group {g}: from log offset {}, node {ref_id} has {} batches, node {} has {}",
                        anchor.log_offset,
                        tail.len(),
                        n.id,
                        other.len()
                    ));
                }
                for (a, b) in tail.iter().zip(other) {
                    if a != b {
                        return Err(format!(
                            "Log Matching (§5.3): group {g}: node {ref_id} and node {} differ at log offset {} (terms {} vs {})",
                            n.id, a.0, a.1, b.1
                        ));
                    }
                }
            }
            // Recount Kafka offsets from the reference log, from its anchor; check every
            // node's anchor and translator against it.
            let mut kafka = ref_anchor.kafka_offset;
            let mut seen: BTreeMap<u64, i64> = BTreeMap::new();
            let mut log_expected = ref_anchor.log_offset;
            let check_anchors = |log_offset: i64, kafka: i64| -> Result<(), String> {
                for (i, n) in nodes.iter().enumerate() {
                    let a = logs[i].0;
                    if a.log_offset == log_offset && a.kafka_offset != kafka {
                        return Err(format!(
                            "node {} group {g}: anchor at log offset {log_offset} says Kafka offset {}, recount says {kafka}",
                            n.id, a.kafka_offset
                        ));
                    }
                }
                Ok(())
            };
            for (log_offset, _term, b) in &reference {
                let h = crate::batch::parse_batch(b).map_err(|e| e.to_string())?;
                if *log_offset != log_expected {
                    return Err(format!("group {g}: log offsets not dense at {log_offset}"));
                }
                check_anchors(*log_offset, kafka)?;
                log_expected += i64::from(h.offset_count());
                let internal = internal_kind(&h, b).is_some();
                for (i, n) in nodes.iter().enumerate() {
                    if *log_offset < logs[i].0.log_offset {
                        continue;
                    }
                    let st = n.state(g);
                    let t = st.borrow().log_to_kafka(*log_offset);
                    let want = (!internal).then_some(kafka);
                    if t != want {
                        return Err(format!(
                            "node {} group {g}: translator says {t:?} for log offset {log_offset}, recount says {want:?}",
                            n.id
                        ));
                    }
                }
                if let Some(k) = log_start_of(b) {
                    // The leader proposes it at its log end after checking the offset against
                    // its high watermark: it lies after the batch holding its offset, which
                    // makes the recovery scan's and a snapshot's start exact.
                    if k > kafka {
                        return Err(format!(
                            "KIP-107: group {g}: log start entry at log offset {log_offset} names {k}, beyond the records before it ({kafka})"
                        ));
                    }
                }
                if internal {
                    continue;
                }
                let token = batch_token(b)?;
                if seen.insert(token, kafka).is_some() {
                    return Err(format!("group {g}: batch of token {token} appears twice"));
                }
                if self.proposals.get(&token).map(|p| p.0) != Some(g) {
                    return Err(format!(
                        "group {g}: batch of token {token} was never proposed here"
                    ));
                }
                kafka += i64::from(h.offset_count());
            }
            check_anchors(log_expected, kafka)?;
            for n in &nodes {
                let d = n.driver.as_ref().expect("all up");
                if d.high_watermark(g) != Some(kafka) {
                    return Err(format!(
                        "node {} group {g}: high watermark {:?}, Kafka end offset {kafka}",
                        n.id,
                        d.high_watermark(g)
                    ));
                }
            }
            // §8: every acknowledged batch at or above the log start is held, at its offset
            // (batches below it were compacted away on every replica, §7).
            for (token, (_, offset)) in self.acked.iter().filter(|a| a.1 .0 == g) {
                match seen.get(token) {
                    Some(k) if k == offset => {}
                    Some(k) => {
                        return Err(format!(
                            "group {g}: token {token} acknowledged at Kafka offset {offset} but stored at {k}"
                        ))
                    }
                    None if *offset < ref_anchor.kafka_offset => {}
                    None => {
                        return Err(format!(
                            "§8 violated: group {g}: acknowledged token {token} (offset {offset}) lost"
                        ))
                    }
                }
            }
            self.report.kafka_end_offsets.push(kafka);
        }
        Ok(())
    }
}

/// Runs one seeded simulation and checks its invariants; `Err` describes the first violation.
pub fn run_seed(cfg: &SimConfig) -> Result<SimReport, String> {
    match cfg.backend {
        Backend::Storage => run::<StorageStore>(cfg, |seed| StorageStore {
            disk: SimDisk::new(seed),
        }),
        Backend::Mem => run::<MemStore>(cfg, |_| MemStore::default()),
    }
}

fn run<S: NodeStore>(cfg: &SimConfig, store: impl Fn(u64) -> S) -> Result<SimReport, String> {
    let mut rng = SimRng::new(cfg.seed);
    let net = SimNetwork::new(cfg.net.clone(), rng.next_u64());
    let voters: Vec<NodeId> = (1..=cfg.nodes).collect();
    let all: Vec<NodeId> = (1..=cfg.nodes + cfg.spares).collect();
    let nodes = all
        .iter()
        .map(|id| Node {
            id: *id,
            driver: None,
            store: store(rng.next_u64()),
            logs: BTreeMap::new(),
            restart_at_ms: None,
            tick_period_ms: TICK_MS - 1 + rng.below(3),
            tick_phase_ms: rng.below(TICK_MS),
            incarnation: 0,
            wiped: BTreeSet::new(),
            log_start_seen: BTreeMap::new(),
            compacting_to: BTreeMap::new(),
            compact_due: BTreeMap::new(),
        })
        .collect();
    let mut sim = Sim {
        cfg: cfg.clone(),
        clock: Rc::new(ManualClock::new(0)),
        rng: rng.fork(),
        net,
        nodes,
        voters,
        all,
        next_token: 0,
        proposals: BTreeMap::new(),
        acked: BTreeMap::new(),
        log_starts: BTreeMap::new(),
        log_start_at: BTreeMap::new(),
        log_start_committed: BTreeMap::new(),
        log_start_acked: BTreeMap::new(),
        leaders: BTreeMap::new(),
        report: SimReport {
            seed: cfg.seed,
            nodes: cfg.nodes,
            spares: cfg.spares,
            groups: cfg.groups,
            ..Default::default()
        },
        heal_at_ms: None,
        compact_requested: BTreeMap::new(),
    };
    for i in 0..sim.nodes.len() {
        sim.start_node(i)?;
    }
    let mut now = 0;
    while now < cfg.fault_ms {
        sim.step(now, true)?;
        now += 1;
    }
    // Quiet phase: heal, restart everyone, lossless network; the cluster must converge.
    sim.net.heal();
    sim.heal_at_ms = None;
    sim.net.set_config(NetConfig {
        drop_per_million: 0,
        duplicate_per_million: 0,
        delay_min_ms: 1,
        delay_max_ms: 3,
    });
    for i in 0..sim.nodes.len() {
        if sim.nodes[i].driver.is_none() {
            sim.start_node(i)?;
        }
    }
    let quiet_start = now;
    let mut stable_since = None;
    loop {
        sim.step(now, false)?;
        now += 1;
        if sim.converged() {
            // Stay converged for a few heartbeats so followers learn the final commit.
            let s = *stable_since.get_or_insert(now);
            if now - s >= 100 {
                break;
            }
        } else {
            stable_since = None;
        }
        if now - quiet_start > cfg.quiesce_ms_max {
            let states: Vec<String> = sim
                .nodes
                .iter()
                .map(|n| {
                    let d = n.driver.as_ref().expect("up");
                    format!(
                        "node {}: {:?}",
                        n.id,
                        (0..cfg.groups)
                            .map(|g| (d.progress(g), d.is_leader(g)))
                            .collect::<Vec<_>>()
                    )
                })
                .collect();
            return Err(format!(
                "liveness: no convergence {} ms after healing; {}",
                cfg.quiesce_ms_max,
                states.join("; ")
            ));
        }
    }
    sim.report.converge_ms = now - quiet_start;
    sim.check()?;
    sim.report.leaderships = sim.leaders.len() as u64;
    for n in &sim.nodes {
        sim.report.driver += n.driver.as_ref().expect("all up").stats();
    }
    sim.report.envelopes = sim.net.stats();
    Ok(sim.report)
}
