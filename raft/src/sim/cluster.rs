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
use crate::batch::{encode_batch, internal_kind, records, split_batches};
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
    /// Power loss.
    fn crash(&mut self, rng: &mut SimRng, torn: bool);
}

struct StorageStore {
    disk: SimDisk,
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
        let mut logs = Vec::new();
        for g in 0..groups {
            let clock: Rc<dyn Clock> = clock.clone();
            let log = block_on(Log::open(
                self.disk.clone(),
                PathBuf::from(format!("/n{node}/g{g}")),
                sim_log_config(),
                clock,
            ))
            .map_err(|e| format!("node {node} open log {g}: {e}"))?;
            logs.push(Rc::new(log));
        }
        Ok((meta, logs))
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
}

struct Acked {
    group: GroupId,
    token: u64,
    kafka_offset: i64,
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
    acked: Vec<Acked>,
    acked_tokens: BTreeSet<u64>,
    leaders: BTreeMap<(GroupId, u64), NodeId>,
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
        if std::env::var_os("FRESHET_SIM_TRACE").is_some() {
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
        // Spares open a joining replica (no configuration); for everyone else the state
        // file, once written, wins over this argument.
        let voters = if self.voters.contains(&n.id) {
            self.voters.clone()
        } else {
            Vec::new()
        };
        n.logs.clear();
        for (g, log) in (0..).zip(logs) {
            if std::env::var_os("FRESHET_SIM_TRACE").is_some() {
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
        // Power loss: unsynced writes kept, dropped or torn per sector; or all dropped.
        let torn = self.rng.chance(500_000);
        if std::env::var_os("FRESHET_SIM_TRACE").is_some() {
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

    fn produce(&mut self) {
        let g = self.rng.below(self.cfg.groups);
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|i| {
                self.nodes[*i]
                    .driver
                    .as_ref()
                    .is_some_and(|d| d.is_leader(g))
            })
            .collect();
        if leaders.is_empty() {
            return;
        }
        let i = leaders[self.rng.below(leaders.len() as u64) as usize];
        self.next_token += 1;
        let token = self.next_token;
        let (batch, n) = self.make_batch(token);
        let d = self.nodes[i].driver.as_mut().expect("leader is up");
        if d.propose(g, batch, token).is_ok() {
            self.proposals.insert(token, (g, n));
            self.report.proposed += 1;
        }
    }

    /// Log compaction (§7) on a random live node (a leader more often: its compaction is what
    /// sends lagging followers snapshots) up to a random point between its log start and its
    /// high watermark.
    fn compact(&mut self) -> Result<(), String> {
        let g = self.rng.below(self.cfg.groups);
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].driver.is_some())
            .collect();
        if up.is_empty() {
            return Ok(());
        }
        let leaders: Vec<usize> = up
            .iter()
            .copied()
            .filter(|i| {
                self.nodes[*i]
                    .driver
                    .as_ref()
                    .is_some_and(|d| d.is_leader(g))
            })
            .collect();
        let i = if !leaders.is_empty() && self.rng.chance(700_000) {
            leaders[self.rng.below(leaders.len() as u64) as usize]
        } else {
            up[self.rng.below(up.len() as u64) as usize]
        };
        let n = &mut self.nodes[i];
        let d = n.driver.as_mut().expect("up");
        let start = d
            .group_state(g)
            .expect("group")
            .borrow()
            .anchor
            .kafka_offset;
        let hw = d.high_watermark(g).expect("group");
        let k = start + self.rng.below((hw - start) as u64 + 1) as i64;
        let r = self.compact_requested.entry(g).or_insert(0);
        *r = (*r).max(k);
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

    /// A random membership change (Raft thesis §4) asked of a random group's leader: promote
    /// a learner, remove a voter (never below three), remove a learner, add a non-member as
    /// a learner, or swap a voter for a learner in one joint change (§4.3).
    fn change_membership(&mut self) {
        let g = self.rng.below(self.cfg.groups);
        let Some(i) = (0..self.nodes.len()).find(|i| {
            self.nodes[*i]
                .driver
                .as_ref()
                .is_some_and(|d| d.is_leader(g))
        }) else {
            return;
        };
        let st = self.nodes[i]
            .driver
            .as_ref()
            .expect("leader is up")
            .status(g)
            .expect("group");
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
        let pick = |rng: &mut SimRng, v: &[NodeId]| v[rng.below(v.len() as u64) as usize];
        match self.rng.below(5) {
            0 | 1 if !learners.is_empty() => {
                let l = pick(&mut self.rng, &learners);
                learners.retain(|x| *x != l);
                voters.push(l);
            }
            2 if voters.len() > 3 => {
                let v = pick(&mut self.rng, &voters);
                voters.retain(|x| *x != v);
            }
            3 if !learners.is_empty() && voters.len() >= 3 => {
                // Joint: one learner in, one voter out.
                let l = pick(&mut self.rng, &learners);
                let v = pick(&mut self.rng, &voters);
                learners.retain(|x| *x != l);
                voters.retain(|x| *x != v);
                voters.push(l);
            }
            4 if !learners.is_empty() => {
                let l = pick(&mut self.rng, &learners);
                learners.retain(|x| *x != l);
            }
            _ if !outside.is_empty() => learners.push(pick(&mut self.rng, &outside)),
            _ => return,
        }
        self.next_token += 1;
        let token = self.next_token;
        if std::env::var_os("FRESHET_SIM_TRACE").is_some() {
            eprintln!(
                "node {} group {g}: change membership {:?}+{:?} -> {voters:?}+{learners:?}",
                self.nodes[i].id, st.voters, st.learners
            );
        }
        let d = self.nodes[i].driver.as_mut().expect("leader is up");
        if let Ok(None) = d.change_membership(g, &voters, &learners, token) {
            self.report.membership_changes.0 += 1;
        }
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
        if faulty && self.rng.chance(self.cfg.produce_per_million) {
            self.produce();
        }
        if faulty && self.rng.chance(self.cfg.compact_per_million) {
            self.compact()?;
        }
        if faulty && self.rng.chance(self.cfg.membership_per_million) {
            self.change_membership();
        }
        for n in &mut self.nodes {
            let Some(d) = n.driver.as_mut() else { continue };
            block_on(d.process_ready()).map_err(|e| format!("node {}: {e}", n.id))?;
            for ev in d.take_events() {
                match ev {
                    Event::Committed {
                        group,
                        token,
                        kafka_offset,
                        high_watermark,
                    } => {
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
                        if !self.acked_tokens.insert(token) {
                            return Err(format!("token {token} acknowledged twice"));
                        }
                        self.acked.push(Acked {
                            group,
                            token,
                            kafka_offset,
                        });
                        self.report.acked += 1;
                    }
                    Event::Failed { .. } => self.report.failed += 1,
                }
            }
            for ev in d.take_membership_events() {
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
            for g in 0..self.cfg.groups {
                if d.is_leader(g) {
                    let gs = d.group_state(g).expect("group");
                    let cs = &gs.borrow().conf_state;
                    if !cs.voters.contains(&n.id) && !cs.voters_outgoing.contains(&n.id) {
                        return Err(format!(
                            "§4.2.2: node {} leads group {g} but is not a voter of its configuration {:?} (outgoing {:?})",
                            n.id, cs.voters, cs.voters_outgoing
                        ));
                    }
                    let term = d.progress(g).expect("group").0;
                    let prev = *self.leaders.entry((g, term)).or_insert(n.id);
                    if prev != n.id {
                        return Err(format!(
                            "Election Safety (§5.2) violated: group {g} term {term} led by {prev} and {}",
                            n.id
                        ));
                    }
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
                let st = n
                    .driver
                    .as_ref()
                    .expect("all up")
                    .group_state(g)
                    .expect("group");
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
            // Each member's log, from its own start (its anchor, §7).
            let mut logs = Vec::new();
            for n in &nodes {
                let st = n
                    .driver
                    .as_ref()
                    .expect("all up")
                    .group_state(g)
                    .expect("group");
                let anchor = st.borrow().anchor;
                let start = n.logs[&g].log_start_offset();
                if start != anchor.log_offset {
                    return Err(format!(
                        "node {} group {g}: log starts at {start}, anchor says {}",
                        n.id, anchor.log_offset
                    ));
                }
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
                    let st = n
                        .driver
                        .as_ref()
                        .expect("all up")
                        .group_state(g)
                        .expect("group");
                    let t = st.borrow().log_to_kafka(*log_offset);
                    let want = (!internal).then_some(kafka);
                    if t != want {
                        return Err(format!(
                            "node {} group {g}: translator says {t:?} for log offset {log_offset}, recount says {want:?}",
                            n.id
                        ));
                    }
                }
                if internal {
                    continue;
                }
                let recs = records(b).map_err(|e| e.to_string())?;
                let key = recs[0].0.as_ref().ok_or("record without key")?;
                let token = u64::from_be_bytes(key[..].try_into().map_err(|_| "bad key")?);
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
            for a in self.acked.iter().filter(|a| a.group == g) {
                match seen.get(&a.token) {
                    Some(k) if *k == a.kafka_offset => {}
                    Some(k) => {
                        return Err(format!(
                            "group {g}: token {} acknowledged at Kafka offset {} but stored at {k}",
                            a.token, a.kafka_offset
                        ))
                    }
                    None if a.kafka_offset < ref_anchor.kafka_offset => {}
                    None => {
                        return Err(format!(
                            "§8 violated: group {g}: acknowledged token {} (offset {}) lost",
                            a.token, a.kafka_offset
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
        acked: Vec::new(),
        acked_tokens: BTreeSet::new(),
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
