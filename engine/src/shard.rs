//! `Shard`: everything one core owns, and the cross-core call mechanism.
//!
//! A `Shard` is per core (`!Send`, shared as `Rc<Shard>` by that core's tasks). Cores talk only
//! through the glommio channel mesh: `invoke_on(core, f)` ships a `Send` closure to `core`,
//! runs the future it returns there (with that core's `Rc<Shard>`), and ships the `Send` result
//! back, correlated by a call id. Calls to the own core run inline without touching the mesh.
//! Each (core → peer) direction has a budget of `mesh_in_flight_per_peer` outstanding calls.
//!
//! Metadata changes go through the controller (`crate::controller`, a Raft group on core 0 of
//! every founding node): every core's `create_topic` etc. hands an intent to core 0, which
//! submits it to the controller leader (itself or over RPC); each node applies the committed
//! command and core 0 broadcasts the new snapshot to every core, which opens/closes/
//! reconfigures the partitions it owns.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use freshet_raft::meta::DiskMetaStore;
use freshet_raft::multiraft::{GroupStatus, MultiRaft, RaftConfig};
use freshet_raft::tcp::{RpcConfig, TcpTransport};
use freshet_raft::transport::{Envelope, GroupId};
use freshet_storage::Clock;
use freshet_storage::DmaDisk;
use futures_lite::StreamExt;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::sync::Semaphore;

use crate::config::{BrokerConfig, TopicConfig};
use crate::controller::command::Intent;
use crate::error::{code, MeshError, TopicError};
use crate::metadata::{
    broker_id_of, raft_node_id, validate_topic_name, MetadataSnapshot, TopicMeta,
};
use crate::notify::Notify;
use crate::partition::{
    Acks, FetchedData, Partition, PartitionOffsets, PartitionRaft, PartitionSpec, ReplicateOutcome,
};
use crate::shard_table::ShardTable;

/// The value a remote call returns, type-erased for the trip over the mesh.
pub type MeshReply = Box<dyn Any + Send>;
/// A unit of work shipped to another core: built there into a local future.
pub type MeshJob = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = MeshReply>>> + Send>;

/// What travels over the mesh (crosses cores; `Send`).
pub enum MeshMsg {
    Call { from: usize, id: u64, job: MeshJob },
    Reply { id: u64, value: MeshReply },
}

/// The channel mesh type every core joins.
pub type Mesh = MeshBuilder<MeshMsg, Full>;

/// Builds the mesh for `cores` cores (call once, clone into every executor).
pub fn new_mesh(cores: usize, channel_capacity: usize) -> Mesh {
    MeshBuilder::full(cores, channel_capacity)
}

/// A pending reply on the calling core.
#[derive(Default)]
struct ReplySlot {
    value: RefCell<Option<MeshReply>>,
    waker: RefCell<Option<Waker>>,
}

struct ReplyWait(Rc<ReplySlot>);

impl Future for ReplyWait {
    type Output = MeshReply;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<MeshReply> {
        if let Some(v) = self.0.value.borrow_mut().take() {
            return Poll::Ready(v);
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A local partition's leader as this core knows it: (leader broker id, leader epoch =
/// Raft term, in-sync broker ids — known only on the leader's node, else empty).
pub type LocalLeader = (i32, i32, Vec<i32>);

/// How `set_topic_config` changes a topic's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicConfigChange {
    /// AlterConfigs: the topic's overrides become exactly these.
    Replace(Vec<(String, String)>),
    /// IncrementalAlterConfigs: set (`Some`) or remove (`None`) single keys.
    Incremental(Vec<(String, Option<String>)>),
}

/// Everything one core owns. Per core, `!Send`; shared by that core's tasks as `Rc<Shard>`.
pub struct Shard {
    core: usize,
    table: ShardTable,
    config: BrokerConfig,
    clock: Rc<dyn Clock>,
    senders: Senders<MeshMsg>,
    pending: RefCell<HashMap<u64, Rc<ReplySlot>>>,
    next_call_id: Cell<u64>,
    budgets: Vec<Semaphore>,
    metadata: RefCell<Rc<MetadataSnapshot>>,
    metadata_initialized: Cell<bool>,
    metadata_changed: Notify,
    apply_lock: Semaphore,
    partitions: RefCell<HashMap<String, BTreeMap<i32, Rc<Partition>>>>,
    stop: Arc<AtomicBool>,
    /// Next producer id this core hands out (InitProducerId); steps by `cores`.
    next_producer_id: Cell<i64>,
    extensions: RefCell<HashMap<TypeId, Rc<dyn Any>>>,
    /// This core's Raft runtime (every partition group of this core, and the controller
    /// group on core 0).
    raft: PartitionRaft,
    /// Sends this core's Raft envelopes to peers' RPC addresses.
    transport: TcpTransport,
    /// Inbox of this core's Raft runtime (envelopes from peers).
    raft_inbox: LocalSender<Envelope>,
    /// Partition replicas of this core by Raft group id.
    groups: RefCell<HashMap<GroupId, Rc<Partition>>>,
    /// What this core knows of the leaders of its partitions' groups:
    /// group → (leader broker, epoch, in-sync broker ids; empty unless this node leads).
    local_leaders: RefCell<HashMap<GroupId, LocalLeader>>,
}

impl Shard {
    /// Joins the mesh, loads (core 0) or receives (others) the metadata, opens the partitions
    /// this core owns and starts the per-core background tasks. `stop` is set by the process
    /// on SIGINT/SIGTERM.
    pub async fn start(
        config: BrokerConfig,
        mesh: Mesh,
        clock: Rc<dyn Clock>,
        stop: Arc<AtomicBool>,
    ) -> Result<Rc<Shard>, TopicError> {
        let cores = config.cores;
        let (senders, receivers) = mesh
            .join()
            .await
            .map_err(|_| TopicError::Store("joining the core mesh failed".into()))?;
        let core = senders.peer_id();
        assert!(core < cores, "mesh peer id {core} >= cores {cores}");
        let budgets = (0..cores)
            .map(|_| Semaphore::new(config.mesh_in_flight_per_peer as u64))
            .collect();
        let (raft, transport, raft_inbox) = start_raft(&config, core, &clock).await?;
        let shard = Rc::new(Shard {
            core,
            table: ShardTable::new(cores),
            config,
            clock,
            senders,
            pending: RefCell::new(HashMap::new()),
            next_call_id: Cell::new(1),
            budgets,
            metadata: RefCell::new(Rc::new(MetadataSnapshot::default())),
            metadata_initialized: Cell::new(false),
            metadata_changed: Notify::new(),
            apply_lock: Semaphore::new(1),
            partitions: RefCell::new(HashMap::new()),
            stop,
            next_producer_id: Cell::new(0),
            extensions: RefCell::new(HashMap::new()),
            raft,
            transport,
            raft_inbox,
            groups: RefCell::new(HashMap::new()),
            local_leaders: RefCell::new(HashMap::new()),
        });
        {
            let me = Rc::downgrade(&shard);
            shard.raft.on_change(Box::new(move |group, status| {
                if let Some(s) = me.upgrade() {
                    s.on_group_status(group, status);
                }
            }));
        }
        // Producer ids: the start time (ms since 2020) in the high bits makes ids of this run
        // larger than any id of an earlier run; the core in the low bits keeps cores apart.
        let since_2020_ms = (shard.clock.now_ms() - 1_577_836_800_000).max(0);
        shard
            .next_producer_id
            .set((since_2020_ms << 20) + core as i64);
        let mut receivers = receivers;
        for (peer, mut stream) in receivers.streams() {
            let me = shard.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = stream.next().await {
                    me.on_mesh_message(peer, msg);
                }
            })
            .detach();
        }
        if core == 0 {
            // The controller group (voters = the founders) replays the metadata log and
            // publishes the state to every core (docs/design/controller.md).
            let founders = crate::cluster::founders(&shard)
                .await
                .map_err(|e| TopicError::Store(format!("cluster membership: {e}")))?;
            crate::controller::Controller::start(&shard, founders).await?;
        } else {
            // Wait for core 0's first snapshot; give up if the process is stopping (core 0
            // failed to start, e.g. a corrupt metadata file).
            while !shard.metadata_initialized.get() {
                if shard.stopping() {
                    return Err(TopicError::ShuttingDown);
                }
                let seen = shard.metadata_changed.generation();
                futures_lite::future::or(shard.metadata_changed.wait(seen), async {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                })
                .await;
            }
        }
        glommio::spawn_local(Shard::retention_task(Rc::downgrade(&shard))).detach();
        glommio::spawn_local(Shard::leader_rebalance_task(Rc::downgrade(&shard))).detach();
        glommio::spawn_local(crate::reassign::run(Rc::downgrade(&shard))).detach();
        Ok(shard)
    }

    pub fn core(&self) -> usize {
        self.core
    }

    pub fn cores(&self) -> usize {
        self.table.cores()
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn clock(&self) -> &Rc<dyn Clock> {
        &self.clock
    }

    pub fn shard_table(&self) -> ShardTable {
        self.table
    }

    /// The core owning `topic`/`partition`.
    pub fn owner_of(&self, topic: &str, partition: i32) -> usize {
        self.table.core_of(topic, partition)
    }

    /// True once SIGINT/SIGTERM asked the broker to stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// This core's read-only copy of the metadata.
    pub fn metadata(&self) -> Rc<MetadataSnapshot> {
        self.metadata.borrow().clone()
    }

    /// A producer id unique across cores and restarts (idempotent producers, InitProducerId).
    pub fn allocate_producer_id(&self) -> i64 {
        let id = self.next_producer_id.get();
        self.next_producer_id.set(id + self.cores() as i64);
        id
    }

    /// Per-core state other modules hang on the shard (e.g. the group coordinator): created
    /// by `init` on first use, then shared.
    pub fn extension<T: 'static>(&self, init: impl FnOnce() -> T) -> Rc<T> {
        let mut ext = self.extensions.borrow_mut();
        let any = ext
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Rc::new(init()) as Rc<dyn Any>)
            .clone();
        drop(ext);
        any.downcast::<T>()
            .unwrap_or_else(|_| panic!("extension type mismatch"))
    }

    // ---------------------------------------------------------------- cross-core calls

    /// Runs `f` on `core` and returns its result here. `f` and its result cross cores (`Send`);
    /// the future `f` builds runs on `core` and may hold that core's `Rc`s. Calls to the own
    /// core run inline. At most `mesh_in_flight_per_peer` calls per peer are outstanding;
    /// further callers wait for a slot.
    pub async fn invoke_on<F, Fut, R>(self: &Rc<Self>, core: usize, f: F) -> Result<R, MeshError>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        if core == self.core {
            return Ok(f(self.clone()).await);
        }
        let budget = self.budgets.get(core).ok_or(MeshError::NoSuchCore(core))?;
        let _permit = budget
            .acquire_permit(1)
            .await
            .map_err(|_| MeshError::Unreachable(core))?;
        let id = self.next_call_id.get();
        self.next_call_id.set(id + 1);
        let slot = Rc::new(ReplySlot::default());
        self.pending.borrow_mut().insert(id, slot.clone());
        let job: MeshJob = Box::new(move |shard: Rc<Shard>| {
            Box::pin(async move { Box::new(f(shard).await) as MeshReply })
        });
        let msg = MeshMsg::Call {
            from: self.core,
            id,
            job,
        };
        if self.senders.send_to(core, msg).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(MeshError::Unreachable(core));
        }
        let value = ReplyWait(slot).await;
        Ok(*value
            .downcast::<R>()
            .unwrap_or_else(|_| panic!("mesh reply {id} from core {core} has the wrong type")))
    }

    fn on_mesh_message(self: &Rc<Self>, peer: usize, msg: MeshMsg) {
        match msg {
            MeshMsg::Call { from, id, job } => {
                assert_eq!(from, peer, "mesh call {id} claims origin {from}");
                let me = self.clone();
                glommio::spawn_local(async move {
                    let value = job(me.clone()).await;
                    if me
                        .senders
                        .send_to(from, MeshMsg::Reply { id, value })
                        .await
                        .is_err()
                    {
                        tracing::debug!(to = from, id, "mesh reply dropped: peer gone");
                    }
                })
                .detach();
            }
            MeshMsg::Reply { id, value } => {
                let slot = self.pending.borrow_mut().remove(&id);
                let slot =
                    slot.unwrap_or_else(|| panic!("mesh reply {id} from core {peer} unexpected"));
                *slot.value.borrow_mut() = Some(value);
                let waker = slot.waker.borrow_mut().take();
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
    }

    // ---------------------------------------------------------------- metadata (core 0 owns)

    /// Carries a metadata change out through the controller: core 0 of this node submits
    /// it to the controller leader (itself, or over RPC) and the call returns once this node
    /// applied the resulting revision on every core. Returns that revision.
    pub async fn submit_intent(self: &Rc<Self>, intent: Intent) -> Result<u64, TopicError> {
        if self.stopping() {
            return Err(TopicError::ShuttingDown);
        }
        self.invoke_on(0, move |s| async move {
            match crate::controller::controller_of(&s) {
                Some(c) => c.submit(&s, intent).await,
                None => Err(TopicError::ControllerUnavailable(
                    "this node runs no controller".into(),
                )),
            }
        })
        .await
        .map_err(|_| TopicError::ShuttingDown)?
    }

    /// The topic `name` as this node knows it after a change.
    fn topic_after_change(&self, name: String) -> Result<TopicMeta, TopicError> {
        self.metadata()
            .topic(&name)
            .cloned()
            .ok_or(TopicError::Unknown(name))
    }

    /// Creates a topic through the controller: `replication_factor` −1 = the default
    /// (`default.replication.factor`); `assignments` (partition p → broker ids, preferred
    /// leader first) replaces placement when given (`partitions` then −1 or their count).
    /// Returns the new topic once this node applied it (its local replicas are open).
    pub async fn create_topic(
        self: &Rc<Self>,
        name: String,
        partitions: i32,
        replication_factor: i16,
        assignments: Option<Vec<Vec<i32>>>,
        configs: Vec<(String, String)>,
    ) -> Result<TopicMeta, TopicError> {
        self.submit_intent(Intent::CreateTopic {
            name: name.clone(),
            partitions,
            replication_factor,
            configs,
            assignments,
        })
        .await?;
        self.topic_after_change(name)
    }

    /// Deletes a topic (everywhere: every replica's node removes its data when it applies
    /// the change).
    pub async fn delete_topic(self: &Rc<Self>, name: String) -> Result<(), TopicError> {
        self.submit_intent(Intent::DeleteTopic { name }).await?;
        Ok(())
    }

    /// Grows a topic to `total_partitions` partitions; `assignments` (the new partitions
    /// only) replaces placement when given.
    pub async fn add_partitions(
        self: &Rc<Self>,
        name: String,
        total_partitions: i32,
        assignments: Option<Vec<Vec<i32>>>,
    ) -> Result<TopicMeta, TopicError> {
        self.submit_intent(Intent::AddPartitions {
            name: name.clone(),
            total_partitions,
            assignments,
        })
        .await?;
        self.topic_after_change(name)
    }

    /// Changes a topic's config.
    pub async fn set_topic_config(
        self: &Rc<Self>,
        name: String,
        change: TopicConfigChange,
    ) -> Result<TopicMeta, TopicError> {
        self.submit_intent(Intent::SetTopicConfig {
            name: name.clone(),
            change,
        })
        .await?;
        self.topic_after_change(name)
    }

    /// Starts, replaces (`Some`) or cancels (`None`) the reassignment of one partition
    /// through the controller (KIP-455 AlterPartitionReassignments). Returns once this node
    /// applied the change; the partition's leader then moves the replicas
    /// (`crate::reassign`).
    pub async fn alter_reassignment(
        self: &Rc<Self>,
        name: String,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> Result<u64, TopicError> {
        self.submit_intent(Intent::AlterReassignment {
            name,
            partition,
            target,
        })
        .await
    }

    /// Sends `snap` to every core (including this one) and waits for all to apply it.
    pub(crate) async fn broadcast(self: &Rc<Self>, snap: MetadataSnapshot) {
        let mut tasks = Vec::with_capacity(self.cores());
        for c in 0..self.cores() {
            let me = self.clone();
            let snap = snap.clone();
            tasks.push(glommio::spawn_local(async move {
                let r = me
                    .invoke_on(c, move |s| async move { s.apply_metadata(snap).await })
                    .await;
                if let Err(e) = r {
                    tracing::warn!(core = c, error = %e, "metadata broadcast failed");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    }

    /// Replaces this core's metadata copy with `snap` unless it is stale, then opens, closes
    /// or reconfigures the partitions this core owns to match.
    async fn apply_metadata(self: &Rc<Self>, snap: MetadataSnapshot) {
        let Ok(_guard) = self.apply_lock.acquire_permit(1).await else {
            return;
        };
        if self.metadata_initialized.get() && snap.revision <= self.metadata().revision {
            tracing::debug!(revision = snap.revision, "stale metadata update ignored");
            return;
        }
        let snap = Rc::new(snap);
        *self.metadata.borrow_mut() = snap.clone();
        let me = self.config.node_id;
        // Replicas of deleted (or deleted and re-created) topics, and replicas no longer
        // assigned to this broker, go first (their Raft group state and log are removed).
        let mut gone = Vec::new();
        {
            let mut parts = self.partitions.borrow_mut();
            for (name, ps) in parts.iter_mut() {
                let t = snap.topic(name);
                ps.retain(|i, p| {
                    let keep = t.is_some_and(|t| {
                        t.id == p.topic_id
                            && t.assignment(*i)
                                .is_some_and(|a| a.group == p.group && a.is_holder(me))
                    });
                    if !keep {
                        gone.push(p.clone());
                    }
                    keep
                });
            }
            parts.retain(|_, ps| !ps.is_empty());
        }
        for p in gone {
            let (t, i) = (p.topic.clone(), p.index);
            self.forget_group(&p);
            if let Err(e) = p.close(true).await {
                tracing::warn!(topic = %t, partition = i, error = %e, "deleting partition failed");
            }
        }
        let mut opened = Vec::new();
        for t in snap.topics.values() {
            let eff = t.config.effective(&self.config.topic_defaults);
            let min_insync = self.min_insync_replicas(t);
            for i in 0..t.partitions {
                let Some(a) = t.assignment(i) else {
                    tracing::error!(topic = %t.name, partition = i, "partition without an assignment");
                    continue;
                };
                // Replicas, an ongoing reassignment's target and retiring brokers all hold one
                // (KIP-455; see PartitionAssignment).
                if !a.is_holder(me) || self.owner_of(&t.name, i) != self.core {
                    continue;
                }
                if let Some(p) = self.partition(&t.name, i) {
                    p.set_config(eff.clone(), min_insync);
                    p.set_replicas(a.desired().to_vec());
                    continue;
                }
                // A replica outside `replicas` is joining a running group: it opens with no
                // voters and learns its configuration from the leader (a learner first).
                let joining = !a.replicas.contains(&me);
                let dir = self.partition_dir(&t.name, i);
                if let Err(e) = self.claim_partition_dir(&dir, t.id, a.group, &snap) {
                    tracing::error!(topic = %t.name, partition = i, error = %e, "partition directory not usable; replica not opened");
                    continue;
                }
                self.adopt_group_state(a.group);
                let spec = PartitionSpec {
                    topic: t.name.clone(),
                    index: i,
                    topic_id: t.id,
                    group: a.group,
                    replicas: if joining {
                        Vec::new()
                    } else {
                        a.replicas.clone()
                    },
                    dir,
                    config: eff.clone(),
                    min_insync_replicas: min_insync,
                    producer_state_scan_bytes: self.config.producer_state_scan_bytes,
                };
                let node = raft_node_id(me);
                match Partition::open(spec, self.raft.clone(), node, self.clock.clone()).await {
                    Ok(p) => {
                        p.set_replicas(a.desired().to_vec());
                        self.partitions
                            .borrow_mut()
                            .entry(t.name.clone())
                            .or_default()
                            .insert(i, p.clone());
                        self.groups.borrow_mut().insert(a.group, p.clone());
                        // A replication-factor-1 group elected itself while opening: publish
                        // its leader now rather than after the runtime's next pass.
                        if let Some(st) = p.status() {
                            self.on_group_status(a.group, &st);
                        }
                        // The status seen at open is no change for the partition: tell the
                        // group coordinator about the initial leadership explicitly.
                        crate::group::wire::on_partition_leadership(
                            self,
                            &p.topic,
                            p.index,
                            p.is_leader(),
                            p.leader_epoch(),
                        );
                        if !joining {
                            opened.push(p);
                        }
                    }
                    Err(e) => {
                        tracing::error!(topic = %t.name, partition = i, error = %e, "opening partition failed");
                    }
                }
            }
        }
        // Single-replica groups elect themselves at once; report the change applied only
        // when they lead and have committed what their logs held.
        for p in opened {
            if !p
                .wait_single_replica_ready(SINGLE_REPLICA_READY_TIMEOUT)
                .await
            {
                tracing::warn!(topic = %p.topic, partition = p.index, "single-replica partition not leading yet");
            }
        }
        self.metadata_initialized.set(true);
        self.metadata_changed.notify_all();
    }

    /// `min.insync.replicas` of a topic: its own setting, else the broker's topic defaults,
    /// else `ClusterConfig::min_insync_replicas`.
    fn min_insync_replicas(&self, t: &TopicMeta) -> i32 {
        t.config
            .entries
            .get("min.insync.replicas")
            .or_else(|| {
                self.config
                    .topic_defaults
                    .entries
                    .get("min.insync.replicas")
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.config.cluster.min_insync_replicas)
    }

    /// Makes `dir` the directory of the replica of topic incarnation `topic_id`, group
    /// `group` before it opens (see [`crate::replica_marker`]):
    /// - no directory: created with its marker;
    /// - a marker naming this incarnation and group: used as is;
    /// - a marker naming another one (a topic deleted and re-created under the same name
    ///   while this node was down): the dead incarnation's directory is removed, and its
    ///   group's state files too unless `snap` still assigns that group somewhere; then the
    ///   directory is created afresh with the new marker;
    /// - no marker (a directory from before markers existed, or a crash between creating the
    ///   directory and writing its marker): adopted (marker written) when this group's state
    ///   file exists on this node, since group ids are never reused; else it holds no group
    ///   that ran here and is removed like a dead incarnation's;
    /// - a damaged marker: `Err`, the replica is not opened (nothing is deleted on a guess).
    ///
    /// Blocking std::fs; called only while applying metadata (under `apply_lock`).
    fn claim_partition_dir(
        &self,
        dir: &std::path::Path,
        topic_id: crate::metadata::TopicId,
        group: GroupId,
        snap: &MetadataSnapshot,
    ) -> Result<(), crate::replica_marker::MarkerError> {
        use crate::replica_marker::{self as marker, ReplicaMarker};
        let want = ReplicaMarker { topic_id, group };
        if !dir.exists() {
            return marker::write(dir, &want);
        }
        let stale = match marker::read(dir)? {
            Some(m) if m == want => return Ok(()),
            Some(m) => Some(m.group),
            None if !self.group_state_files(group).is_empty() => {
                tracing::info!(dir = %dir.display(), group, "partition directory without a marker adopted: its group state is here");
                return marker::write(dir, &want);
            }
            None => None,
        };
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(marker::MarkerError::Io {
                    path: dir.display().to_string(),
                    source,
                })
            }
        }
        if let Some(old) = stale.filter(|g| !group_assigned(snap, *g)) {
            self.remove_group_state_files(old);
        }
        tracing::info!(
            dir = %dir.display(),
            old_group = ?stale,
            group,
            "partition directory of a dead topic incarnation removed before opening the new replica"
        );
        marker::write(dir, &want)
    }

    /// Existing state files of `group` in any core's directory under `<data>/raft-state/`.
    fn group_state_files(&self, group: GroupId) -> Vec<PathBuf> {
        let root = self.config.data_dir.join("raft-state");
        let name = format!("group-{group:020}.state");
        let Ok(dirs) = std::fs::read_dir(&root) else {
            return Vec::new();
        };
        dirs.flatten()
            .map(|d| d.path().join(&name))
            .filter(|p| p.exists())
            .collect()
    }

    /// Removes every state file of `group` (a group no longer assigned to this broker and
    /// not open here). Returns how many went.
    fn remove_group_state_files(&self, group: GroupId) -> usize {
        let mut removed = 0;
        for path in self.group_state_files(group) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(group, path = %path.display(), "raft state of a group no longer assigned here removed");
                }
                Err(e) => {
                    tracing::warn!(group, path = %path.display(), error = %e, "removing raft group state failed")
                }
            }
        }
        removed
    }

    /// The group state files live per core (`<data>/raft-state/core-<n>/`); if `--cores`
    /// changed since the last run, a partition's state file may sit in another core's
    /// directory: move it here before the group opens (rare; blocking std::fs).
    fn adopt_group_state(&self, group: GroupId) {
        let root = self.config.data_dir.join("raft-state");
        let name = format!("group-{group:020}.state");
        let mine = root.join(format!("core-{}", self.core)).join(&name);
        if mine.exists() {
            return;
        }
        let Ok(dirs) = std::fs::read_dir(&root) else {
            return;
        };
        for d in dirs.flatten() {
            let other = d.path().join(&name);
            if other != mine && other.exists() {
                match std::fs::rename(&other, &mine) {
                    Ok(()) => {
                        tracing::info!(group, from = %other.display(), "raft group state moved to this core");
                    }
                    Err(e) => {
                        tracing::error!(group, from = %other.display(), error = %e, "moving raft group state failed");
                    }
                }
                return;
            }
        }
    }

    /// Removes the partition directories this core owns that the metadata no longer assigns
    /// to this broker and that no open replica uses: replicas of topics deleted (or moved
    /// away) while this node was down, which it learns of from the controller log only after
    /// its restart (Kafka deletes such stray logs at startup too). Call only with metadata
    /// caught up with the controller (a stale state lacks newer topics). Returns how many
    /// directories were removed. Blocking std::fs; once per start.
    pub(crate) async fn remove_stray_partitions(self: &Rc<Self>) -> usize {
        let Ok(_guard) = self.apply_lock.acquire_permit(1).await else {
            return 0;
        };
        let snap = self.metadata();
        let me = self.config.node_id;
        let root = self.config.data_dir.join("kafka");
        let Ok(dirs) = std::fs::read_dir(&root) else {
            return 0;
        };
        let mut removed = 0;
        for d in dirs.flatten() {
            if !d.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = d.file_name().to_string_lossy().into_owned();
            let Some((topic, p)) = name
                .rsplit_once('-')
                .and_then(|(t, p)| Some((t.to_string(), p.parse::<i32>().ok()?)))
            else {
                continue;
            };
            if self.owner_of(&topic, p) != self.core || self.partition(&topic, p).is_some() {
                continue;
            }
            let held = snap
                .topic(&topic)
                .and_then(|t| t.assignment(p))
                .is_some_and(|a| a.is_holder(me));
            if held {
                continue;
            }
            match std::fs::remove_dir_all(d.path()) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(
                        topic = %topic,
                        partition = p,
                        revision = snap.revision,
                        "stray partition removed: not assigned to this broker (topic deleted or moved while it was down)"
                    );
                }
                Err(e) => {
                    tracing::warn!(topic = %topic, partition = p, error = %e, "removing a stray partition failed")
                }
            }
        }
        self.remove_stray_group_states(&snap);
        removed
    }

    /// Removes the Raft group state files in this core's directory
    /// (`<data>/raft-state/core-<n>/group-<id>.state`) of groups that `snap` does not have
    /// this broker hold and that are not open here: the groups of stray partitions (group ids
    /// are never reused, so such a file can never serve again). The controller group's file
    /// stays. Part of [`Shard::remove_stray_partitions`] (same preconditions). Returns how
    /// many files were removed.
    fn remove_stray_group_states(&self, snap: &MetadataSnapshot) -> usize {
        let me = self.config.node_id;
        let dir = self
            .config
            .data_dir
            .join("raft-state")
            .join(format!("core-{}", self.core));
        let Ok(files) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut held: std::collections::HashSet<GroupId> = snap
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).filter_map(move |i| t.assignment(i)))
            .filter(|a| a.is_holder(me))
            .map(|a| a.group)
            .collect();
        held.insert(crate::metadata::CONTROLLER_GROUP);
        held.extend(self.groups.borrow().keys().copied());
        let mut removed = 0;
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let Some(group) = name
                .strip_prefix("group-")
                .and_then(|n| n.strip_suffix(".state"))
                .and_then(|n| n.parse::<GroupId>().ok())
            else {
                continue;
            };
            if held.contains(&group) {
                continue;
            }
            match std::fs::remove_file(f.path()) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(
                        group,
                        revision = snap.revision,
                        "stray raft group state removed: group not assigned to this broker"
                    );
                }
                Err(e) => {
                    tracing::warn!(group, error = %e, "removing stray raft group state failed")
                }
            }
        }
        removed
    }

    /// Where a partition's log lives.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.config
            .data_dir
            .join("kafka")
            .join(format!("{topic}-{partition}"))
    }

    // ---------------------------------------------------------------- data path (local)

    /// A partition this core owns.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(topic)
            .and_then(|ps| ps.get(&partition))
            .cloned()
    }

    /// Every partition this core owns.
    pub fn local_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|ps| ps.values().cloned())
            .collect()
    }

    fn missing_partition_code(&self, topic: &str, partition: i32) -> i16 {
        match self
            .metadata()
            .topic(topic)
            .and_then(|t| t.assignment(partition))
        {
            // Assigned here but not open (yet): LEADER_NOT_AVAILABLE; no replica on this
            // broker: NOT_LEADER_OR_FOLLOWER (the client refreshes its metadata).
            Some(a) if a.is_holder(self.config.node_id) => code::LEADER_NOT_AVAILABLE,
            Some(_) => code::NOT_LEADER_OR_FOLLOWER,
            None => code::UNKNOWN_TOPIC_OR_PARTITION,
        }
    }

    /// OffsetForLeaderEpoch on this core (KIP-101/KIP-279, fencing per KIP-320):
    /// `current_leader_epoch` -1 skips the fencing check. Err is a Kafka error code
    /// (NOT_LEADER_OR_FOLLOWER on a follower replica).
    pub fn local_end_offset_for_epoch(
        &self,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> Result<(i32, i64), i16> {
        let p = self
            .partition(topic, partition)
            .ok_or_else(|| self.missing_partition_code(topic, partition))?;
        if !p.is_leader() {
            return Err(code::NOT_LEADER_OR_FOLLOWER);
        }
        let epoch = p.leader_epoch();
        if current_leader_epoch >= 0 && current_leader_epoch > epoch {
            return Err(code::UNKNOWN_LEADER_EPOCH);
        }
        if current_leader_epoch >= 0 && current_leader_epoch < epoch {
            return Err(code::FENCED_LEADER_EPOCH);
        }
        Ok(p.end_offset_for_epoch(leader_epoch))
    }

    /// Appends on this core (the caller routed to the owner). Err is a Kafka error code.
    pub async fn local_replicate(
        &self,
        topic: &str,
        partition: i32,
        batches: Bytes,
        acks: Acks,
    ) -> Result<ReplicateOutcome, i16> {
        let p = self
            .partition(topic, partition)
            .ok_or_else(|| self.missing_partition_code(topic, partition))?;
        p.replicate(batches, acks).await.map_err(|e| {
            tracing::warn!(topic, partition, error = %e, "produce rejected");
            e.kafka_code()
        })
    }

    /// Reads on this core. Err carries the Kafka error code and, when the partition exists,
    /// its offsets.
    pub async fn local_read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<FetchedData, (i16, Option<PartitionOffsets>)> {
        let p = self
            .partition(topic, partition)
            .ok_or_else(|| (self.missing_partition_code(topic, partition), None))?;
        p.read(offset, max_bytes)
            .await
            .map_err(|e| (e.kafka_code(), Some(p.offsets())))
    }

    /// ListOffsets on this core: (timestamp, offset, leader_epoch) or a Kafka error code.
    pub async fn local_list_offset(
        &self,
        topic: &str,
        partition: i32,
        timestamp_ms: i64,
    ) -> Result<(i64, i64, i32), i16> {
        let p = self
            .partition(topic, partition)
            .ok_or_else(|| self.missing_partition_code(topic, partition))?;
        let (ts, off) = p
            .list_offset(timestamp_ms)
            .await
            .map_err(|e| e.kafka_code())?;
        Ok((ts, off, p.leader_epoch()))
    }

    /// Waits (on this core) until the high watermark of any listed partition moves past the
    /// given offset, or `timeout` passes. Returns true if data may be available.
    pub async fn local_wait_for_data(
        &self,
        parts: Vec<(String, i32, i64)>,
        timeout: Duration,
    ) -> bool {
        let watched: Vec<(Rc<Partition>, u64)> = parts
            .iter()
            .filter_map(|(t, i, _)| self.partition(t, *i))
            .map(|p| {
                let g = p.hw_generation();
                (p, g)
            })
            .collect();
        let ready = |w: &[(Rc<Partition>, u64)]| {
            parts.iter().any(|(t, i, off)| {
                w.iter()
                    .find(|(p, _)| &p.topic == t && p.index == *i)
                    .is_some_and(|(p, _)| p.high_watermark() > *off)
            })
        };
        if ready(&watched) {
            return true;
        }
        // The waits live across polls (a dropped wait deregisters itself).
        let mut waits: Vec<_> = watched
            .iter()
            .map(|(p, g)| Box::pin(p.wait_hw_change(*g)))
            .collect();
        let any_change = futures_lite::future::poll_fn(|cx| {
            for w in waits.iter_mut() {
                if w.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(true);
                }
            }
            Poll::Pending
        });
        futures_lite::future::or(any_change, async {
            glommio::timer::sleep(timeout).await;
            false
        })
        .await
    }

    // ---------------------------------------------------------------- background, shutdown

    async fn retention_task(me: std::rc::Weak<Shard>) {
        loop {
            let Some(interval) = me
                .upgrade()
                .map(|s| Duration::from_millis(s.config.retention_check_interval_ms.max(100)))
            else {
                return;
            };
            glommio::timer::sleep(interval).await;
            let Some(s) = me.upgrade() else { return };
            if s.stopping() {
                return;
            }
            for p in s.local_partitions() {
                match p.enforce_retention().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(topic = %p.topic, partition = p.index, removed_offsets = n, "retention moved the log start")
                    }
                    Err(e) => {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
                    }
                }
            }
        }
    }

    /// Closes every partition this core owns (their groups leave the Raft runtime, logs
    /// are closed), then stops the runtime (shutdown).
    pub async fn close_partitions(self: &Rc<Self>) {
        let parts: Vec<Rc<Partition>> = {
            let mut map = self.partitions.borrow_mut();
            let all = map.values().flat_map(|ps| ps.values().cloned()).collect();
            map.clear();
            all
        };
        for p in parts {
            let (t, i) = (p.topic.clone(), p.index);
            self.forget_group(&p);
            if let Err(e) = p.close(false).await {
                tracing::warn!(topic = %t, partition = i, error = %e, "closing partition failed");
            }
        }
        self.raft.stop().await;
    }

    // ---------------------------------------------------------------- raft

    /// This core's Raft runtime.
    pub fn raft(&self) -> &PartitionRaft {
        &self.raft
    }

    /// This core's Raft transport (cluster code adds peers' RPC addresses to it).
    pub fn transport(&self) -> &TcpTransport {
        &self.transport
    }

    /// Hands an envelope from a peer to this core's Raft runtime; dropped (Raft
    /// retransmits) when the inbox is full or the runtime stopped.
    pub fn deliver(&self, env: Envelope) {
        if let Err(e) = self.raft_inbox.try_send(env) {
            tracing::debug!(error = %e, "raft envelope dropped: inbox full or closed");
        }
    }

    /// What this core knows of a local partition's leader: (leader broker id, leader epoch,
    /// in-sync broker ids — known only where the leader runs). None if the partition has
    /// no replica on this core or no known leader.
    pub fn local_leader(&self, topic: &str, partition: i32) -> Option<LocalLeader> {
        let group = self.partition(topic, partition)?.group;
        self.local_leaders.borrow().get(&group).cloned()
    }

    /// A status change of one of this core's groups (the runtime's `on_change`, and once
    /// right after a partition opened).
    fn on_group_status(self: &Rc<Self>, group: GroupId, status: &GroupStatus) {
        // The cluster leader table covers every group of this core, the controller's too.
        crate::cluster::publish_local(self, group, status);
        let Some(p) = self.groups.borrow().get(&group).cloned() else {
            return; // not a partition group (the controller's), or already closed
        };
        let leadership_changed = p.on_status(status);
        let epoch = i32::try_from(status.term).unwrap_or(i32::MAX);
        match status.leader {
            Some(l) => {
                let isr = status.in_sync.iter().map(|n| broker_id_of(*n)).collect();
                self.local_leaders
                    .borrow_mut()
                    .insert(group, (broker_id_of(l), epoch, isr));
            }
            None => {
                self.local_leaders.borrow_mut().remove(&group);
            }
        }
        if leadership_changed {
            crate::group::wire::on_partition_leadership(
                self,
                &p.topic,
                p.index,
                p.is_leader(),
                epoch,
            );
        }
    }

    /// A partition leaves this core: no more status updates, leadership given up.
    fn forget_group(self: &Rc<Self>, p: &Rc<Partition>) {
        self.groups.borrow_mut().remove(&p.group);
        self.local_leaders.borrow_mut().remove(&p.group);
        crate::cluster::forget_local(self, p.group);
        crate::group::wire::on_partition_leadership(
            self,
            &p.topic,
            p.index,
            false,
            p.leader_epoch(),
        );
    }

    /// Preferred-leader rebalancing: every `leader_rebalance_interval_ms`, each group this
    /// node leads whose preferred replica (`replicas[0]`) is another broker that is in
    /// sync gets its leadership transferred there (Raft thesis §3.10), so leadership
    /// spreads back after a node returns.
    async fn leader_rebalance_task(me: std::rc::Weak<Shard>) {
        loop {
            let Some(interval_ms) = me
                .upgrade()
                .map(|s| s.config.cluster.leader_rebalance_interval_ms)
            else {
                return;
            };
            if interval_ms == 0 {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(interval_ms)).await;
            let Some(s) = me.upgrade() else { return };
            if s.stopping() {
                return;
            }
            let node = raft_node_id(s.config.node_id);
            for p in s.local_partitions() {
                let Some(&preferred) = p.replicas().first() else {
                    continue;
                };
                let preferred = raft_node_id(preferred);
                if preferred == node || !p.is_leader() {
                    continue;
                }
                if let Some(st) = p.status() {
                    // Raft's in-sync view lags a paused peer; the liveness view does not:
                    // never hand leadership to a broker this node finds down.
                    if st.leader == Some(node)
                        && st.in_sync.contains(&preferred)
                        && !s.broker_is_down(broker_id_of(preferred))
                    {
                        tracing::info!(topic = %p.topic, partition = p.index, to = broker_id_of(preferred), "transferring leadership to the preferred replica");
                        s.raft.transfer_leader(p.group, preferred);
                    }
                }
            }
        }
    }
}

/// Whether any partition of `snap` (on any broker) is served by Raft group `group`.
fn group_assigned(snap: &MetadataSnapshot, group: GroupId) -> bool {
    snap.topics
        .values()
        .any(|t| (0..t.partitions).any(|i| t.assignment(i).is_some_and(|a| a.group == group)))
}

/// How long applying metadata waits for a newly opened single-replica partition to lead.
const SINGLE_REPLICA_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates this core's Raft runtime: the group state store under
/// `<data>/raft-state/core-<n>/`, a TCP transport for this node's Raft id, the driver with
/// the cluster's Raft timing, and the runtime task fed by the returned inbox.
async fn start_raft(
    config: &BrokerConfig,
    core: usize,
    clock: &Rc<dyn Clock>,
) -> Result<(PartitionRaft, TcpTransport, LocalSender<Envelope>), TopicError> {
    let node = raft_node_id(config.node_id);
    let dir = config
        .data_dir
        .join("raft-state")
        .join(format!("core-{core}"));
    let meta = DiskMetaStore::open(DmaDisk, dir.clone())
        .await
        .map_err(|e| TopicError::Store(format!("raft state dir {}: {e}", dir.display())))?;
    let transport = TcpTransport::new(
        node,
        RpcConfig {
            frame_bytes_max: config.cluster.rpc_frame_bytes_max,
            send_queue_frames_max: config.cluster.rpc_send_queue_frames_max,
            ..RpcConfig::default()
        },
    );
    let mut rc = RaftConfig::new(node);
    rc.heartbeat_ticks = config.cluster.raft_heartbeat_ticks;
    rc.election_ticks = config.cluster.raft_election_ticks;
    rc.seed = (clock.now_ms() as u64) ^ ((core as u64) << 48);
    let driver = MultiRaft::new(rc, meta, transport.clone());
    let (inbox_tx, inbox_rx) = local_channel::new_bounded(config.cluster.rpc_send_queue_frames_max);
    let raft = freshet_raft::runtime::spawn(driver, inbox_rx, config.cluster.raft_tick_ms);
    Ok((raft, transport, inbox_tx))
}

/// Checks a CreateTopics request against the current metadata without changing anything.
pub fn validate_new_topic(
    snap: &MetadataSnapshot,
    name: &str,
    partitions: i32,
    configs: &[(String, String)],
) -> Result<(), TopicError> {
    validate_topic_name(name).map_err(|e| TopicError::InvalidName(e.to_string()))?;
    if snap.topic(name).is_some() {
        return Err(TopicError::AlreadyExists(name.to_string()));
    }
    if !(1..=100_000).contains(&partitions) {
        return Err(TopicError::InvalidPartitions(format!(
            "{partitions} partitions requested; must be 1..=100000"
        )));
    }
    TopicConfig::from_pairs(configs.iter().cloned())?;
    Ok(())
}
