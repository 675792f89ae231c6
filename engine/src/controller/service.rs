//! The running controller on core 0: opens the controller Raft group, applies committed
//! commands in log order, publishes each new state to every core, answers intents as leader
//! and forwards them to the leader otherwise. See docs/design/controller.md.
//!
//! A node that joined a formed cluster runs the same controller as a learner of the group
//! (KRaft observer): it opens the group with no voters, registers through JOIN, and the
//! leader adds every registered non-founder broker as a learner. A replica whose log starts
//! past what it has applied (the log was compacted: every `controller_snapshot_commands`
//! commands, after the snapshot file is durable) fetches the applied state from the leader
//! (CONTROLLER_SNAPSHOT) before it applies more.
//!
//! Ownership: per core (`!Send`), exists on core 0 of every clustered node (founder or
//! joined); other cores reach it through `Shard::invoke_on(0, ..)`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet_raft::batch::{internal_kind, split_batches};
use freshet_raft::multiraft::ProposeError;
use freshet_raft::runtime::WaitFor;
use freshet_raft::store::GroupState;
use freshet_raft::transport::NodeId;
use freshet_storage::{DmaDisk, Log, LogConfig};
use glommio::sync::Semaphore;

use crate::cluster::rpc::SnapshotRequest;
use crate::cluster::{JoinAnswer, JoinRequest, MethodError};
use crate::controller::command::{command_batch, command_of_batch, Answer, Intent};
use crate::controller::snapshot::{
    decode_snapshot, encode_snapshot, read_snapshot, write_snapshot,
};
use crate::controller::state::{apply, initial_snapshot, resolve, ResolveContext};
use crate::error::TopicError;
use crate::metadata::{
    broker_id_of, raft_node_id, random_topic_id, BrokerInfo, MetadataSnapshot, CONTROLLER_GROUP,
};
use crate::notify::Notify;
use crate::partition::PartitionLog;
use crate::shard::Shard;

/// Apply outcomes kept for answering intents (by revision).
const OUTCOMES_KEPT: usize = 4096;
/// Bytes read from the controller log per read while applying.
const APPLY_READ_BYTES: usize = 1 << 20;
/// Retry period while no controller leader is known.
const RETRY_MS: u64 = 100;
/// Longest single forwarding attempt to the controller leader (then re-check the leader).
const FORWARD_ATTEMPT_MS: u64 = 2000;
/// A metadata publication still not applied on every core after this long is logged.
const PUBLISH_SLOW_MS: u64 = 5000;
/// How often the stray-partition removal checks whether the state is caught up.
const STRAY_CHECK_MS: u64 = 200;
/// Longest single CONTROLLER_SNAPSHOT fetch from one member.
const SNAPSHOT_FETCH_MS: u64 = 2000;
/// How often the leader checks the controller group's learners against the registered
/// brokers (besides every group change).
const LEARNERS_CHECK_MS: u64 = 500;

/// Whether an intent ran here or must go to the leader.
enum Local {
    Done(Answer),
    NotLeader,
}

/// The controller of this node. Per core 0, `!Send`; hung on the shard (see [`controller_of`]).
pub struct Controller {
    dir: PathBuf,
    me: NodeId,
    voters: Vec<NodeId>,
    log: PartitionLog,
    table: Rc<RefCell<GroupState>>,
    /// The applied state (revision = commands applied = next Kafka offset to apply).
    state: RefCell<MetadataSnapshot>,
    /// Recent apply outcomes: (revision after the command, result).
    outcomes: RefCell<VecDeque<(u64, Result<(), TopicError>)>>,
    /// Request ids of recently applied commands (the record key, see [`RequestId`]) and the
    /// revision each produced: a retried intent is answered from here, not applied twice.
    requests: RefCell<VecDeque<(RequestId, u64)>>,
    /// Revision every core of this node has applied.
    published: Cell<u64>,
    /// Signalled by the controller group's `on_change` (commit/leader moved).
    group_changed: Notify,
    /// Signalled after each publication.
    published_changed: Notify,
    /// Serialises leader-side resolve → propose → apply, so each intent sees the last.
    change_lock: Semaphore,
    /// Serialises apply passes.
    apply_lock: Semaphore,
    commands_since_snapshot: Cell<u64>,
    /// Revision of the last durable snapshot file (the controller log is compacted up to
    /// the one before it, see `compact_log`).
    last_snapshot_revision: Cell<u64>,
    /// This node joined the formed cluster: a learner of the group, never a voter.
    joined: bool,
    /// A CONTROLLER_SNAPSHOT fetch is needed and was logged (log once per episode).
    fetch_logged: Cell<bool>,
}

/// The slot on core 0's shard holding the controller once it is open.
#[derive(Default)]
pub struct ControllerSlot(RefCell<Option<Rc<Controller>>>);

/// This node's controller, if this is core 0 of a founding node and it is open.
pub fn controller_of(shard: &Shard) -> Option<Rc<Controller>> {
    shard.extension(ControllerSlot::default).0.borrow().clone()
}

impl Controller {
    /// Core 0: loads the snapshot, opens the controller log and Raft group with `founders`
    /// (broker ids) as voters (no voters on a node that joins: it waits to be added as a
    /// learner), registers a joining node through JOIN, catches up (bounded wait), publishes
    /// the first state and starts the apply, registration and (leader) learner tasks.
    pub async fn start(
        shard: &Rc<Shard>,
        founders: Vec<i32>,
    ) -> Result<Rc<Controller>, TopicError> {
        assert_eq!(shard.core(), 0, "the controller runs on core 0");
        let cfg = shard.config().clone();
        let dir = cfg.data_dir.join("controller");
        std::fs::create_dir_all(&dir)
            .map_err(|e| TopicError::Store(format!("{}: {e}", dir.display())))?;
        let snap = read_snapshot(&dir)
            .map_err(|e| TopicError::Store(e.to_string()))?
            .unwrap_or_else(initial_snapshot);
        let log_cfg = LogConfig {
            retention_bytes: None,
            retention_ms: None,
            segment_bytes_max: 64 << 20,
            preallocate_bytes: 1 << 20,
            cache_bytes_max: 1 << 20,
            ..LogConfig::default()
        };
        let log = Rc::new(
            Log::open(DmaDisk, dir.join("log"), log_cfg, shard.clock().clone())
                .await
                .map_err(|e| TopicError::Store(format!("controller log: {e}")))?,
        );
        let voters: Vec<NodeId> = founders.iter().map(|b| raft_node_id(*b)).collect();
        let joined = crate::cluster::joined(shard);
        // A joining node opens the group with no voters: it never campaigns and waits for the
        // leader's appends (or a Raft snapshot) once it is a learner. A restarted joined node
        // has its configuration in its group state, which wins over this argument.
        let open_voters = if joined { Vec::new() } else { voters.clone() };
        let table = shard
            .raft()
            .open_group(CONTROLLER_GROUP, open_voters, log.clone())
            .await
            .map_err(|e| TopicError::Store(format!("controller group: {e}")))?;
        tracing::info!(
            revision = snap.revision,
            topics = snap.topics.len(),
            brokers = snap.brokers.len(),
            voters = ?founders,
            joined,
            "controller opened"
        );
        let snapshot_revision = snap.revision;
        let ctl = Rc::new(Controller {
            dir,
            me: raft_node_id(cfg.node_id),
            voters,
            log,
            table,
            published: Cell::new(0),
            state: RefCell::new(snap),
            outcomes: RefCell::new(VecDeque::new()),
            requests: RefCell::new(VecDeque::new()),
            group_changed: Notify::new(),
            published_changed: Notify::new(),
            change_lock: Semaphore::new(1),
            apply_lock: Semaphore::new(1),
            commands_since_snapshot: Cell::new(0),
            last_snapshot_revision: Cell::new(snapshot_revision),
            joined,
            fetch_logged: Cell::new(false),
        });
        *shard.extension(ControllerSlot::default).0.borrow_mut() = Some(ctl.clone());
        crate::cluster::register_method(
            shard,
            crate::cluster::CONTROLLER_PROPOSE,
            Rc::new(|s, payload| Box::pin(async move { Ok(serve_propose(s, payload).await) })),
        );
        crate::cluster::register_method(
            shard,
            crate::cluster::JOIN,
            Rc::new(|s, payload| Box::pin(async move { serve_join(s, payload).await })),
        );
        crate::cluster::register_method(
            shard,
            crate::cluster::CONTROLLER_SNAPSHOT,
            Rc::new(|s, payload| Box::pin(async move { serve_snapshot(&s, payload) })),
        );
        {
            let weak = Rc::downgrade(&ctl);
            shard.raft().on_change(Box::new(move |group, _status| {
                if group == CONTROLLER_GROUP {
                    if let Some(c) = weak.upgrade() {
                        c.group_changed.notify_all();
                    }
                }
            }));
        }
        if crate::cluster::join_pending(shard) {
            // First start of a joining node: the registration must be accepted (or refused:
            // the node stops with the reason) before it serves anything.
            let info = own_broker_info(shard);
            let req = JoinRequest {
                node_id: info.id,
                host: info.host,
                port: info.port,
                rpc_addr: info.rpc_addr,
                rack: info.rack,
            };
            if let Err(e) = crate::cluster::join(shard, req).await {
                tracing::error!(error = %e, "this node cannot join the cluster");
                return Err(TopicError::Store(format!("cluster membership: {e}")));
            }
        }
        // Catch up before the first publication: at once for a cluster of one (it leads as
        // soon as it opens); bounded by a few election timeouts otherwise.
        let wait_ms = cfg.cluster.raft_tick_ms * cfg.cluster.raft_election_ticks as u64 * 3;
        let deadline = Instant::now() + Duration::from_millis(wait_ms.max(100));
        loop {
            ctl.apply_committed(shard, false).await;
            if ctl.caught_up(shard) || Instant::now() >= deadline || shard.stopping() {
                break;
            }
            ctl.wait_group_change(Duration::from_millis(20)).await;
        }
        ctl.publish(shard).await;
        glommio::spawn_local(Controller::apply_task(
            Rc::downgrade(&ctl),
            Rc::downgrade(shard),
        ))
        .detach();
        glommio::spawn_local(Controller::register_task(ctl.clone(), Rc::downgrade(shard))).detach();
        glommio::spawn_local(Controller::learners_task(
            Rc::downgrade(&ctl),
            Rc::downgrade(shard),
        ))
        .detach();
        Ok(ctl)
    }

    /// The applied state.
    pub fn state(&self) -> MetadataSnapshot {
        self.state.borrow().clone()
    }

    /// Broker id of the controller leader, if known.
    pub fn leader(&self, shard: &Shard) -> Option<i32> {
        shard
            .raft()
            .status(CONTROLLER_GROUP)
            .and_then(|s| s.leader)
            .filter(|l| *l >= 1)
            .map(broker_id_of)
    }

    /// A leader is known, this node has seen a commit in the leader's term (so every entry of
    /// earlier terms is committed and known here, Raft §5.4.2), and applied up to the high
    /// watermark.
    fn caught_up(&self, shard: &Shard) -> bool {
        let Some(st) = shard.raft().status(CONTROLLER_GROUP) else {
            return false;
        };
        let term_committed = self
            .table
            .borrow()
            .meta(st.commit_index)
            .is_some_and(|m| m.term == st.term);
        st.leader.is_some()
            && term_committed
            && self.state.borrow().revision as i64 >= st.high_watermark
    }

    /// This node leads, is caught up (including the no-op of its own term: only then does
    /// its state reflect every earlier leader's commands, Raft §8) and published its state.
    fn leader_ready(&self, shard: &Shard) -> bool {
        let leads = shard
            .raft()
            .status(CONTROLLER_GROUP)
            .is_some_and(|s| s.leader == Some(self.me));
        leads && self.caught_up(shard) && self.published.get() >= self.state.borrow().revision
    }

    /// Why the leader is or is not ready (for error messages and logs).
    fn readiness(&self, shard: &Shard) -> String {
        let st = shard.raft().status(CONTROLLER_GROUP);
        let st = st.as_ref();
        let commit_term = st.and_then(|s| self.table.borrow().meta(s.commit_index).map(|m| m.term));
        let state = self.state.borrow();
        let missing: Vec<i32> = self
            .voters
            .iter()
            .map(|v| broker_id_of(*v))
            .filter(|b| !state.brokers.contains_key(b))
            .collect();
        format!(
            "leader {:?} term {:?} commit {:?} (its term {commit_term:?}) high watermark {:?}, applied {} published {}, founders not registered {missing:?}",
            st.and_then(|s| s.leader),
            st.map(|s| s.term),
            st.map(|s| s.commit_index),
            st.map(|s| s.high_watermark),
            state.revision,
            self.published.get(),
        )
    }

    async fn wait_group_change(&self, max: Duration) {
        let seen = self.group_changed.generation();
        futures_lite::future::or(self.group_changed.wait(seen), async {
            glommio::timer::sleep(max).await;
        })
        .await;
    }

    async fn apply_task(me: std::rc::Weak<Controller>, shard: std::rc::Weak<Shard>) {
        loop {
            let (Some(ctl), Some(s)) = (me.upgrade(), shard.upgrade()) else {
                return;
            };
            if s.stopping() {
                return;
            }
            let seen = ctl.group_changed.generation();
            ctl.apply_committed(&s, true).await;
            let wait = ctl.group_changed.wait(seen);
            drop(s);
            futures_lite::future::or(wait, async {
                glommio::timer::sleep(Duration::from_millis(200)).await;
            })
            .await;
        }
    }

    /// Applies every committed command not applied yet (reading the group's log through its
    /// translator) and, with `publish`, sends the new state to every core.
    async fn apply_committed(&self, shard: &Rc<Shard>, publish: bool) {
        let Ok(_g) = self.apply_lock.acquire_permit(1).await else {
            return;
        };
        let installed = match self.catch_up_by_snapshot(shard).await {
            Some(installed) => installed,
            None => return, // the log starts past the state and no member sent one yet
        };
        let mut applied = 0u64;
        while let Some(hw) = shard
            .raft()
            .status(CONTROLLER_GROUP)
            .map(|s| s.high_watermark)
        {
            let next = self.state.borrow().revision as i64;
            if next >= hw {
                break;
            }
            let Some(from) = self.table.borrow().kafka_to_log(next) else {
                tracing::warn!(
                    next,
                    hw,
                    "controller log has no entry for the next command yet"
                );
                break;
            };
            let bytes = match freshet_raft::log::GroupLog::read(
                &self.log,
                from,
                APPLY_READ_BYTES,
                self.log.next_offset(),
            )
            .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, from, "reading the controller log failed");
                    break;
                }
            };
            let batches = match split_batches(bytes) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, from, "controller log batch unreadable");
                    break;
                }
            };
            let before = self.state.borrow().revision;
            for (h, b) in batches {
                if internal_kind(&h, &b).is_some() {
                    continue;
                }
                let Some(k) = self.table.borrow().log_to_kafka(h.base_offset) else {
                    continue;
                };
                let rev = self.state.borrow().revision as i64;
                if k < rev {
                    continue;
                }
                if k >= hw {
                    break;
                }
                assert_eq!(
                    k, rev,
                    "controller commands are applied densely in Kafka order"
                );
                self.apply_one(&b);
                applied += 1;
            }
            if self.state.borrow().revision == before {
                break; // nothing readable past `next` yet
            }
        }
        if applied > 0 {
            let n = self.commands_since_snapshot.get() + applied;
            self.commands_since_snapshot.set(n);
            if n >= shard.config().cluster.controller_snapshot_commands.max(1) {
                let snap = self.state.borrow().clone();
                match write_snapshot(&self.dir, &snap) {
                    Ok(()) => {
                        self.commands_since_snapshot.set(0);
                        tracing::info!(revision = snap.revision, "controller snapshot written");
                        self.compact_log(shard, snap.revision).await;
                    }
                    Err(e) => tracing::error!(error = %e, "controller snapshot failed"),
                }
            }
        }
        if (applied > 0 || installed) && publish {
            self.publish(shard).await;
        }
    }

    /// Controller log prefix truncation (Raft §7): once the snapshot file of `revision` is
    /// durable, drop the log below the PREVIOUS snapshot's revision. Every replica compacts
    /// its own log; keeping one interval of commands lets a replica that lags by less than
    /// `controller_snapshot_commands` catch up from the log, and one that lags more gets a
    /// position-only Raft snapshot and then the state itself (`catch_up_by_snapshot`). Both
    /// revisions are covered by durable snapshot files on this node, so a restart never
    /// needs a dropped command.
    async fn compact_log(&self, shard: &Rc<Shard>, revision: u64) {
        let upto = self.last_snapshot_revision.replace(revision);
        if upto == 0 {
            return;
        }
        match shard.raft().compact(CONTROLLER_GROUP, upto as i64).await {
            Ok(Some(start)) => tracing::info!(
                log_start = start,
                snapshot_revision = revision,
                "controller log compacted: log start {start} (snapshot revision {revision})"
            ),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, upto, "controller log compaction failed"),
        }
    }

    /// A replica whose controller log starts past the next command to apply (the log was
    /// compacted while it was away, or before it joined; a Raft snapshot here carries only a
    /// position) fetches the applied state from the leader, else from any other member
    /// (CONTROLLER_SNAPSHOT), makes it durable in its own snapshot file and installs it.
    /// Some(false): nothing needed; Some(true): installed; None: needed but not available yet
    /// (the apply task retries).
    async fn catch_up_by_snapshot(&self, shard: &Rc<Shard>) -> Option<bool> {
        let st = shard.raft().status(CONTROLLER_GROUP)?;
        let need = st.log_start_kafka;
        let have = self.state.borrow().revision;
        if have as i64 >= need {
            return Some(false);
        }
        if !self.fetch_logged.replace(true) {
            tracing::info!(
                applied = have,
                log_start = need,
                "controller log starts past the applied state: fetching a snapshot from the leader"
            );
        }
        let me = broker_id_of(self.me);
        let mut from: Vec<i32> = st
            .leader
            .filter(|l| *l >= 1)
            .map(broker_id_of)
            .into_iter()
            .collect();
        for b in self
            .voters
            .iter()
            .map(|v| broker_id_of(*v))
            .chain(self.state.borrow().brokers.keys().copied())
        {
            if !from.contains(&b) {
                from.push(b);
            }
        }
        from.retain(|b| *b != me);
        let req = SnapshotRequest {
            min_revision: need as u64,
        }
        .encode();
        for b in from {
            let r = crate::cluster::rpc_call(
                shard,
                b,
                crate::cluster::CONTROLLER_SNAPSHOT,
                req.clone(),
                Duration::from_millis(SNAPSHOT_FETCH_MS),
            )
            .await;
            let snap = match r
                .map_err(|e| e.to_string())
                .and_then(|bytes| decode_snapshot(&bytes).map_err(|e| e.to_string()))
            {
                Ok(snap) if snap.revision as i64 >= need => snap,
                Ok(snap) => {
                    tracing::debug!(
                        from = b,
                        revision = snap.revision,
                        need,
                        "controller snapshot too old"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::debug!(from = b, error = %e, "controller snapshot fetch failed");
                    continue;
                }
            };
            if let Err(e) = write_snapshot(&self.dir, &snap) {
                tracing::error!(error = %e, "cannot store the fetched controller snapshot");
                return None;
            }
            let revision = snap.revision;
            tracing::info!(
                revision,
                from = b,
                log_start = need,
                "controller: installed snapshot revision {revision} from node {b}"
            );
            *self.state.borrow_mut() = snap;
            self.commands_since_snapshot.set(0);
            self.last_snapshot_revision.set(revision);
            self.fetch_logged.set(false);
            return Some(true);
        }
        None
    }

    fn apply_one(&self, batch: &Bytes) {
        let mut st = self.state.borrow_mut();
        let outcome = match command_of_batch(batch) {
            Ok(cmd) => {
                let r = apply(&mut st, &cmd);
                match &r {
                    Ok(()) => tracing::info!(
                        revision = st.revision,
                        kind = cmd.kind(),
                        "controller command applied"
                    ),
                    Err(e) => {
                        tracing::info!(revision = st.revision, error = %e, "controller command refused")
                    }
                }
                r
            }
            Err(e) => {
                // Deterministic on every node: an undecodable command counts but changes
                // nothing.
                st.revision += 1;
                tracing::error!(revision = st.revision, error = %e, "undecodable controller command");
                Err(TopicError::Store(format!("undecodable command: {e}")))
            }
        };
        let mut o = self.outcomes.borrow_mut();
        o.push_back((st.revision, outcome));
        while o.len() > OUTCOMES_KEPT {
            o.pop_front();
        }
        if let Some(id) = request_of_batch(batch) {
            let mut r = self.requests.borrow_mut();
            r.push_back((id, st.revision));
            while r.len() > OUTCOMES_KEPT {
                r.pop_front();
            }
        }
    }

    /// The revision the command of request `id` produced, if it was applied recently.
    fn revision_of_request(&self, id: &RequestId) -> Option<u64> {
        self.requests
            .borrow()
            .iter()
            .rev()
            .find(|(r, _)| r == id)
            .map(|(_, rev)| *rev)
    }

    /// Sends the applied state to every core and waits until all applied it (logging a
    /// warning every `PUBLISH_SLOW_MS` while some core has not: applying opens and removes
    /// partitions, and nothing more is applied meanwhile). Once the state is caught up with
    /// the controller, schedules the removal of stray partitions ([`schedule_stray_removal`]).
    async fn publish(&self, shard: &Rc<Shard>) {
        let snap = self.state.borrow().clone();
        let rev = snap.revision;
        let started = Instant::now();
        let mut broadcast = std::pin::pin!(shard.broadcast(snap));
        loop {
            let done = futures_lite::future::or(
                async {
                    (&mut broadcast).await;
                    true
                },
                async {
                    glommio::timer::sleep(Duration::from_millis(PUBLISH_SLOW_MS)).await;
                    false
                },
            )
            .await;
            if done {
                break;
            }
            tracing::warn!(
                revision = rev,
                waited_ms = started.elapsed().as_millis() as u64,
                "metadata publication slow: not every core applied it yet"
            );
        }
        if rev > self.published.get() || rev == 0 {
            self.published.set(rev);
        }
        self.published_changed.notify_all();
        schedule_stray_removal(shard);
    }

    /// Waits until this node published `revision` (or `deadline`).
    async fn wait_published(
        &self,
        shard: &Shard,
        revision: u64,
        deadline: Instant,
    ) -> Result<(), TopicError> {
        while self.published.get() < revision {
            if shard.stopping() {
                return Err(TopicError::ShuttingDown);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(TopicError::ControllerUnavailable(format!(
                    "metadata revision {revision} not applied here in time (at {})",
                    self.published.get()
                )));
            }
            let seen = self.published_changed.generation();
            futures_lite::future::or(self.published_changed.wait(seen), async {
                glommio::timer::sleep((deadline - now).min(Duration::from_millis(50))).await;
            })
            .await;
        }
        Ok(())
    }

    fn outcome_of(&self, revision: u64) -> Option<Result<(), TopicError>> {
        self.outcomes
            .borrow()
            .iter()
            .rev()
            .find(|(r, _)| *r == revision)
            .map(|(_, o)| o.clone())
    }

    /// Every founder has registered its broker (placement must see all of them: a topic
    /// created on first start before the others registered would get too few replicas).
    fn founders_registered(&self) -> bool {
        let st = self.state.borrow();
        self.voters
            .iter()
            .all(|v| st.brokers.contains_key(&broker_id_of(*v)))
    }

    /// Runs `intent` here if this node is the ready controller leader: resolve against the
    /// applied state, propose, wait until applied and published here. An intent whose
    /// `request` id was applied already (a retry after a lost answer or a leader change: the
    /// previous leader may have committed it) is answered with that command's outcome.
    /// `NotLeader` also when leadership is lost while proposing (the caller retries with the
    /// same request id, so the retry cannot apply it twice).
    async fn execute_local(
        &self,
        shard: &Rc<Shard>,
        intent: &Intent,
        request: Option<RequestId>,
        deadline: Instant,
    ) -> Local {
        let needs_brokers = !matches!(
            intent,
            Intent::RegisterBroker(_) | Intent::DeleteTopic { .. }
        );
        // Wait for readiness without holding the change lock (the registration of a founder
        // must be able to pass an intent that waits for it), then re-check under the lock.
        let _guard = loop {
            if shard.stopping() {
                return Local::Done(Err(TopicError::ShuttingDown));
            }
            let leads = shard
                .raft()
                .status(CONTROLLER_GROUP)
                .is_some_and(|s| s.leader == Some(self.me));
            if !leads {
                return Local::NotLeader;
            }
            if self.leader_ready(shard) && (!needs_brokers || self.founders_registered()) {
                let Ok(g) = self.change_lock.acquire_permit(1).await else {
                    return Local::Done(Err(TopicError::ShuttingDown));
                };
                if self.leader_ready(shard) && (!needs_brokers || self.founders_registered()) {
                    break g;
                }
                continue;
            }
            if Instant::now() >= deadline {
                return Local::Done(Err(TopicError::ControllerUnavailable(format!(
                    "controller leader not ready: {}",
                    self.readiness(shard)
                ))));
            }
            self.apply_committed(shard, true).await;
            self.wait_group_change(Duration::from_millis(20)).await;
        };
        // Ready: every committed command is applied here, so an earlier attempt of this request
        // (by this leader or a previous one) is known if it was committed.
        if let Some(rev) = request.as_ref().and_then(|id| self.revision_of_request(id)) {
            tracing::info!(
                revision = rev,
                "controller intent already applied (a retry): answered with its outcome"
            );
            return Local::Done(match self.outcome_of(rev) {
                Some(Ok(())) | None => Ok(rev),
                Some(Err(e)) => Err(e),
            });
        }
        let ctx = ResolveContext {
            default_replication_factor: shard.config().cluster.default_replication_factor,
            offsets_topic_replication_factor: shard
                .config()
                .cluster
                .offsets_topic_replication_factor,
            new_topic_id: random_topic_id(),
            down: shard.down_brokers(),
        };
        let cmd = match resolve(&self.state.borrow(), intent.clone(), &ctx) {
            Ok(Some(c)) => c,
            Ok(None) => return Local::Done(Ok(self.state.borrow().revision)),
            Err(e) => return Local::Done(Err(e)),
        };
        let batch = match &request {
            Some(id) => keyed_command_batch(&cmd, id, shard.clock().now_ms()),
            None => command_batch(&cmd, shard.clock().now_ms()),
        };
        let committed = match shard
            .raft()
            .replicate(CONTROLLER_GROUP, batch, WaitFor::Majority)
            .await
        {
            Ok(c) => c,
            Err(ProposeError::NotLeader { .. } | ProposeError::Superseded) if request.is_some() => {
                // Lost leadership before the commit: the entry may still be committed by the
                // next leader; the retry (same request id) finds it there or proposes it.
                return Local::NotLeader;
            }
            Err(e) => {
                return Local::Done(Err(TopicError::ControllerUnavailable(format!(
                    "controller proposal failed: {e}"
                ))))
            }
        };
        let revision = committed.kafka_offset as u64 + 1;
        // Apply (our own task may already be doing it) and publish on this node.
        self.group_changed.notify_all();
        while self.published.get() < revision && Instant::now() < deadline && !shard.stopping() {
            self.apply_committed(shard, true).await;
            if self.published.get() < revision {
                self.wait_group_change(Duration::from_millis(10)).await;
            }
        }
        if let Err(e) = self.wait_published(shard, revision, deadline).await {
            return Local::Done(Err(e));
        }
        Local::Done(match self.outcome_of(revision) {
            Some(Ok(())) | None => Ok(revision),
            Some(Err(e)) => Err(e),
        })
    }

    /// Core 0: carries `intent` out through the controller leader (here or over RPC) and
    /// returns once this node applied the resulting revision.
    pub async fn submit(&self, shard: &Rc<Shard>, intent: Intent) -> Answer {
        let timeout =
            Duration::from_millis(shard.config().cluster.controller_request_timeout_ms.max(1));
        let deadline = Instant::now() + timeout;
        // One id for every attempt of this intent (here or forwarded): see `execute_local`.
        let request: RequestId = random_topic_id();
        let forwarded = Bytes::from(encode_propose(&request, &intent));
        loop {
            if shard.stopping() {
                return Err(TopicError::ShuttingDown);
            }
            let leader = shard.raft().status(CONTROLLER_GROUP).and_then(|s| s.leader);
            match leader {
                Some(l) if l == self.me => match self
                    .execute_local(shard, &intent, Some(request), deadline)
                    .await
                {
                    Local::Done(a) => return a,
                    Local::NotLeader => {}
                },
                Some(l) if l >= 1 => {
                    // One attempt never uses the whole budget: a leader that just died must
                    // leave time to reach its successor.
                    let remaining = deadline
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(FORWARD_ATTEMPT_MS));
                    match crate::cluster::rpc_call(
                        shard,
                        broker_id_of(l),
                        crate::cluster::CONTROLLER_PROPOSE,
                        forwarded.clone(),
                        remaining,
                    )
                    .await
                    {
                        Ok(reply) => match crate::controller::command::decode_answer(&reply) {
                            Ok(Ok(rev)) => {
                                self.group_changed.notify_all();
                                return self
                                    .wait_published(shard, rev, deadline)
                                    .await
                                    .map(|()| rev);
                            }
                            Ok(Err(TopicError::ControllerUnavailable(why))) => {
                                tracing::debug!(
                                    leader = broker_id_of(l),
                                    why,
                                    "controller leader busy; retrying"
                                );
                            }
                            Ok(Err(e)) => return Err(e),
                            Err(e) => tracing::warn!(error = %e, "bad controller answer"),
                        },
                        Err(e) => {
                            tracing::debug!(leader = broker_id_of(l), error = %e, "forwarding to the controller failed; retrying")
                        }
                    }
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(TopicError::ControllerUnavailable(format!(
                    "no controller leader answered within {} ms",
                    timeout.as_millis()
                )));
            }
            self.wait_group_change(Duration::from_millis(RETRY_MS))
                .await;
        }
    }

    /// The `CONTROLLER_PROPOSE` handler's work on core 0: run the intent only if this node
    /// leads (no second forwarding hop; the caller retries on `ControllerUnavailable`).
    pub async fn serve_forwarded(
        &self,
        shard: &Rc<Shard>,
        intent: Intent,
        request: Option<RequestId>,
    ) -> Answer {
        let timeout =
            Duration::from_millis(shard.config().cluster.controller_request_timeout_ms.max(1));
        match self
            .execute_local(shard, &intent, request, Instant::now() + timeout)
            .await
        {
            Local::Done(a) => a,
            Local::NotLeader => Err(TopicError::ControllerUnavailable(
                "this node is not the controller leader".into(),
            )),
        }
    }

    /// Registers this broker (RegisterBroker) once a controller leader exists, and again
    /// whenever the registered addresses differ from this node's (KIP-631 broker
    /// registration).
    async fn register_task(me: Rc<Controller>, shard: std::rc::Weak<Shard>) {
        loop {
            let Some(s) = shard.upgrade() else { return };
            if s.stopping() {
                return;
            }
            let info = own_broker_info(&s);
            if me.state.borrow().brokers.get(&info.id) == Some(&info) {
                return;
            }
            match me.submit(&s, Intent::RegisterBroker(info.clone())).await {
                Ok(rev) => tracing::info!(
                    broker = info.id,
                    revision = rev,
                    "broker registered with the controller"
                ),
                Err(e) => {
                    tracing::info!(error = %e, "broker registration not done yet; retrying");
                    drop(s);
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

impl Controller {
    /// Leader: keeps the controller group's learners equal to the registered brokers that
    /// are not founders (KRaft observers), so a joined broker receives the metadata log once
    /// its RegisterBroker is applied. Voters stay the founders. Runs on every node; acts only
    /// while this node is the ready leader and no membership change is under way.
    async fn learners_task(me: std::rc::Weak<Controller>, shard: std::rc::Weak<Shard>) {
        loop {
            let (Some(ctl), Some(s)) = (me.upgrade(), shard.upgrade()) else {
                return;
            };
            if s.stopping() {
                return;
            }
            ctl.reconcile_learners(&s).await;
            drop(s);
            ctl.wait_group_change(Duration::from_millis(LEARNERS_CHECK_MS))
                .await;
        }
    }

    async fn reconcile_learners(&self, shard: &Rc<Shard>) {
        if !self.leader_ready(shard) {
            return;
        }
        let Some(st) = shard.raft().status(CONTROLLER_GROUP) else {
            return;
        };
        if !st.voters_outgoing.is_empty() {
            return; // a joint configuration is being left
        }
        let want: Vec<NodeId> = self
            .state
            .borrow()
            .brokers
            .keys()
            .map(|b| raft_node_id(*b))
            .filter(|n| !self.voters.contains(n))
            .collect();
        let mut have = st.learners.clone();
        have.sort_unstable();
        if have == want {
            return;
        }
        tracing::info!(
            learners = ?want.iter().map(|n| broker_id_of(*n)).collect::<Vec<_>>(),
            "controller group: adding the registered brokers that are not founders as learners"
        );
        match shard
            .raft()
            .change_membership(CONTROLLER_GROUP, self.voters.clone(), want)
            .await
        {
            Ok(m) => tracing::info!(
                voters = ?m.voters.iter().map(|n| broker_id_of(*n)).collect::<Vec<_>>(),
                learners = ?m.learners.iter().map(|n| broker_id_of(*n)).collect::<Vec<_>>(),
                "controller group membership changed"
            ),
            Err(e) => {
                tracing::info!(error = %e, "controller group learners not changed yet; retrying")
            }
        }
    }

    /// Whether this node joined the formed cluster (a learner of the controller group).
    pub fn joined(&self) -> bool {
        self.joined
    }
}

/// The `JOIN` RPC handler (core 0 of any member): refuses a founder's node id or one that is
/// registered with another RPC address, else registers the broker through the controller
/// leader and answers once the registration is applied here.
async fn serve_join(shard: Rc<Shard>, payload: Bytes) -> Result<Bytes, MethodError> {
    let req = JoinRequest::decode(payload)
        .map_err(|e| MethodError::Failed(format!("malformed JOIN request: {e}")))?;
    let Some(ctl) = controller_of(&shard) else {
        return Err(MethodError::Unavailable(
            "this node runs no controller yet".into(),
        ));
    };
    if req.node_id < 0 {
        return Err(MethodError::Failed(format!(
            "invalid node id {}",
            req.node_id
        )));
    }
    let registered = ctl.state.borrow().brokers.get(&req.node_id).cloned();
    if let Some(b) = registered {
        if b.rpc_addr != req.rpc_addr {
            return Err(MethodError::Failed(format!(
                "node id {} is already registered with RPC address {} (the joining node \
                 advertises {}); choose another --node-id",
                req.node_id, b.rpc_addr, req.rpc_addr
            )));
        }
    }
    let founders: Vec<i32> = ctl.voters.iter().map(|v| broker_id_of(*v)).collect();
    if founders.contains(&req.node_id) {
        return Err(MethodError::Failed(format!(
            "node id {} is a founder of this cluster (founders {founders:?}); a joining node \
             needs an id of its own (a founder restarts with its own data directory)",
            req.node_id
        )));
    }
    let info = BrokerInfo {
        id: req.node_id,
        host: req.host,
        port: req.port,
        rpc_addr: req.rpc_addr,
        rack: req.rack,
    };
    tracing::info!(node = info.id, rpc_addr = %info.rpc_addr, "JOIN: registering a new broker");
    match ctl.submit(&shard, Intent::RegisterBroker(info)).await {
        Ok(revision) => Ok(JoinAnswer { revision, founders }.encode()),
        Err(TopicError::ControllerUnavailable(m)) => Err(MethodError::Unavailable(m)),
        Err(TopicError::ShuttingDown) => Err(MethodError::Unavailable("shutting down".into())),
        Err(e) => Err(MethodError::Failed(e.to_string())),
    }
}

/// The `CONTROLLER_SNAPSHOT` RPC handler (core 0 of any member): this node's applied state
/// as a snapshot file image, if it is at least the requested revision.
fn serve_snapshot(shard: &Rc<Shard>, payload: Bytes) -> Result<Bytes, MethodError> {
    let req = SnapshotRequest::decode(payload)
        .map_err(|e| MethodError::Failed(format!("malformed CONTROLLER_SNAPSHOT request: {e}")))?;
    let Some(ctl) = controller_of(shard) else {
        return Err(MethodError::Unavailable(
            "this node runs no controller yet".into(),
        ));
    };
    let snap = ctl.state();
    if snap.revision < req.min_revision {
        return Err(MethodError::Unavailable(format!(
            "applied revision {} is below the requested {}",
            snap.revision, req.min_revision
        )));
    }
    tracing::info!(revision = snap.revision, "serving a controller snapshot");
    Ok(Bytes::from(encode_snapshot(&snap)))
}

/// Whether this start's stray-partition removal was scheduled (core 0 shard extension).
#[derive(Default)]
struct StrayRemoval(Cell<bool>);

/// Once per start: as soon as this node's published state is caught up with the controller
/// (a leader is known, its term committed, everything up to the high watermark applied and
/// published: every partition directory on disk was created by a command it has applied),
/// every core removes the partition directories the state no longer assigns to this broker
/// (`Shard::remove_stray_partitions`): topics deleted while this node was down.
fn schedule_stray_removal(shard: &Rc<Shard>) {
    if shard.extension(StrayRemoval::default).0.replace(true) {
        return;
    }
    let weak = Rc::downgrade(shard);
    glommio::spawn_local(async move {
        loop {
            let Some(s) = weak.upgrade() else { return };
            if s.stopping() {
                return;
            }
            if let Some(c) = controller_of(&s) {
                if c.caught_up(&s) && c.published.get() >= c.state.borrow().revision {
                    break;
                }
            }
            drop(s);
            glommio::timer::sleep(Duration::from_millis(STRAY_CHECK_MS)).await;
        }
        let Some(s) = weak.upgrade() else { return };
        for core in 0..s.cores() {
            let _ = s
                .invoke_on(core, |t| async move { t.remove_stray_partitions().await })
                .await;
        }
    })
    .detach();
}

/// This node's registration: Kafka listener (advertised), RPC address (advertised).
pub fn own_broker_info(shard: &Shard) -> BrokerInfo {
    let cfg = shard.config();
    let addr = cfg.advertised_addr();
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_matches(|c| c == '[' || c == ']').to_string(),
            p.parse().unwrap_or(9092),
        ),
        None => (addr.to_string(), 9092),
    };
    BrokerInfo {
        id: cfg.node_id,
        host,
        port,
        rpc_addr: cfg.cluster.advertised_rpc_addr().to_string(),
        rack: None,
    }
}

/// The `CONTROLLER_PROPOSE` RPC handler (any core): decodes the intent, runs it on core 0 if
/// this node is the controller leader, and returns the encoded [`Answer`] (always an answer;
/// a malformed intent is answered with an error, not a dropped connection).
pub async fn serve_propose(shard: Rc<Shard>, payload: Bytes) -> Bytes {
    let answer: Answer = match decode_propose(&payload) {
        Err(e) => Err(TopicError::Store(format!(
            "malformed controller intent: {e}"
        ))),
        Ok((request, intent)) => shard
            .invoke_on(0, move |s| async move {
                match controller_of(&s) {
                    Some(c) => c.serve_forwarded(&s, intent, request).await,
                    None => Err(TopicError::ControllerUnavailable(
                        "this node runs no controller".into(),
                    )),
                }
            })
            .await
            .unwrap_or(Err(TopicError::ShuttingDown)),
    };
    Bytes::from(crate::controller::command::encode_answer(&answer))
}

/// Identifies one controller intent across its attempts (16 random bytes, chosen by the node
/// that submits it). Carried in CONTROLLER_PROPOSE and as the key of the command's record, so
/// every replica knows which request each applied command answered.
pub type RequestId = [u8; 16];

/// Magic of a CONTROLLER_PROPOSE payload that carries a request id: `"FRCR", id[16]`, then
/// the intent ([`Intent::encode`]). A payload without it is a bare intent (no id).
const PROPOSE_MAGIC: &[u8; 4] = b"FRCR";

/// The CONTROLLER_PROPOSE payload of `intent` with its request id.
pub fn encode_propose(request: &RequestId, intent: &Intent) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + 64);
    out.extend_from_slice(PROPOSE_MAGIC);
    out.extend_from_slice(request);
    out.extend_from_slice(&intent.encode());
    out
}

/// Inverse of [`encode_propose`]; a bare intent decodes with no request id.
pub fn decode_propose(
    b: &[u8],
) -> Result<(Option<RequestId>, Intent), crate::controller::command::CommandError> {
    match b.strip_prefix(PROPOSE_MAGIC.as_slice()) {
        Some(rest) if rest.len() >= 16 => {
            let mut id = [0u8; 16];
            id.copy_from_slice(&rest[..16]);
            Ok((Some(id), Intent::decode(&rest[16..])?))
        }
        _ => Ok((None, Intent::decode(b)?)),
    }
}

/// A command batch whose one record has the request id as its key (the value is the command,
/// as [`command_batch`] writes it; `command_of_batch` ignores the key).
fn keyed_command_batch(
    cmd: &crate::controller::command::Command,
    request: &RequestId,
    now_ms: i64,
) -> Bytes {
    let value = cmd.encode();
    freshet_raft::batch::encode_batch(0, now_ms, -1, &[(Some(request), Some(&value))])
}

/// The request id of a command batch (its record's 16-byte key), if it has one.
fn request_of_batch(batch: &[u8]) -> Option<RequestId> {
    let recs = freshet_raft::batch::records(batch).ok()?;
    match recs.as_slice() {
        [(Some(k), _)] if k.len() == 16 => {
            let mut id = [0u8; 16];
            id.copy_from_slice(k);
            Some(id)
        }
        _ => None,
    }
}

#[cfg(test)]
mod request_tests {
    use super::*;

    #[test]
    fn a_forwarded_intent_keeps_its_request_id_and_bare_intents_still_decode() {
        let intent = Intent::DeleteTopic { name: "t".into() };
        let id = [7u8; 16];
        let (got_id, got) = decode_propose(&encode_propose(&id, &intent)).unwrap();
        assert_eq!(got_id, Some(id));
        assert!(matches!(got, Intent::DeleteTopic { name } if name == "t"));
        let (none, bare) = decode_propose(&intent.encode()).unwrap();
        assert_eq!(none, None);
        assert!(matches!(bare, Intent::DeleteTopic { .. }));
        assert!(decode_propose(b"FRCR\x01").is_err());
    }

    #[test]
    fn the_request_id_rides_in_the_record_key_and_the_command_is_unchanged() {
        let cmd = crate::controller::command::Command::DeleteTopic {
            name: "t".into(),
            id: [3; 16],
        };
        let id = [9u8; 16];
        let b = keyed_command_batch(&cmd, &id, 1);
        assert_eq!(request_of_batch(&b), Some(id));
        assert_eq!(command_of_batch(&b).unwrap(), cmd);
        assert_eq!(request_of_batch(&command_batch(&cmd, 1)), None);
    }
}
