//! Cluster membership, internal RPC and routing (component C of the cluster plan).
//!
//! - **Listener.** With `--seeds` (or a data directory that already belongs to a cluster of
//!   several nodes) every core binds `cluster.rpc_addr` (SO_REUSEPORT, like the Kafka port; core
//!   0 first, after checking that no other process holds the address) and serves Raft
//!   envelopes and request frames ([`freshet_raft::tcp::serve`]). A cluster of one (no seeds)
//!   opens no RPC listener.
//! - **Routing.** An inbound envelope is split per owning core ([`routing`]) and handed to
//!   `Shard::deliver` there (locally, or over the mesh with `invoke_on`).
//! - **Methods.** [`register_method`] adds a handler on the calling core; a request is served
//!   by the core that accepted it if that core has the method, otherwise by core 0. Built in
//!   (core 0): [`HELLO`] and [`LEADERS`]; the controller registers [`CONTROLLER_PROPOSE`].
//!   [`rpc_call`] calls a peer by broker id.
//! - **Discovery.** Core 0 sends HELLO to every seed (retrying every `discovery_retry_ms`) to
//!   learn node id ↔ RPC address, and adds every peer it learns (from HELLOs either way and
//!   from the metadata's registered brokers) to every core's `TcpTransport`. Founders = the
//!   node ids of all seeds: on first start [`founders`] waits until every seed answered, then
//!   persists them in `<data>/cluster/identity` ([`identity`]); on a restart it returns the
//!   persisted set at once.
//! - **Joining a formed cluster.** A HELLO answer carries the sender's founders once its
//!   cluster has formed. A node without an identity that hears of a formed cluster whose
//!   founders do not include it **joins** it ([`joined`] is true, founders = theirs): the
//!   controller opens its group as a learner and registers through [`join`] (method
//!   [`JOIN`], served by any member), which persists an identity marked "joined" once the
//!   registration is accepted. If those founders include the node (it founded the cluster
//!   but crashed before persisting its identity) it adopts them. A node whose RPC address is
//!   not among the seeds can only join; it waits until a seed reports a formed cluster.
//! - **Leader table** ([`leaders`]). Cores report their groups' statuses with
//!   [`publish_local`]; core 0 merges them with peers' LEADERS lists and pushes changes to the
//!   other cores (coalesced); every core answers [`Shard::leader_of`] from its own copy.
//!
//! Ownership: all state is per core (`ClusterCore`, hung on the shard as an extension,
//! `!Send`); cores exchange plain values (`PeerInfo`, leader deltas, envelopes) through
//! `invoke_on`. Core 0 holds the node-wide parts (founders, merged leader table, discovery).

pub mod identity;
pub mod leaders;
pub mod liveness;
pub mod routing;
pub mod rpc;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet_raft::rpc::status;
use freshet_raft::runtime::GroupStatus;
use freshet_raft::tcp::{self, RpcClient, RpcConfig};
use freshet_raft::transport::{Envelope, GroupId};
use glommio::sync::Semaphore;

use crate::config::BrokerConfig;
use crate::metadata::{broker_id_of, raft_node_id};
use crate::notify::Notify;
use crate::shard::Shard;

pub use freshet_raft::tcp::RpcError;
pub use identity::{Identity, IdentityError};
pub use leaders::{Claim, LeaderInfo, LeaderTable};
pub use rpc::{
    JoinAnswer, JoinRequest, CONTROLLER_PROPOSE, CONTROLLER_SNAPSHOT, HELLO, JOIN, LEADERS,
};

use leaders::LeaderDelta;
use routing::{split_envelope, RouteTable};
use rpc::{Hello, Leaders, LedGroup};

/// Errors of the cluster layer. Plain values (`Send`): they cross cores in mesh replies.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    /// Bad `--rpc-addr`/`--seeds`/identity combination.
    #[error("cluster config: {0}")]
    Config(String),
    /// The RPC address cannot be bound (in use by another process?).
    #[error("cannot serve the RPC address {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// No RPC address is known for that broker (not discovered yet, or not a member).
    #[error("broker {0} is not a known peer")]
    UnknownPeer(i32),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("shutting down")]
    ShuttingDown,
    /// The cluster refused this node's JOIN (node id taken by another address, or a
    /// founder's id); the node must not run with this identity.
    #[error("join refused: {0}")]
    JoinRefused(String),
}

/// Why a method handler failed (mapped to the response status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodError {
    /// `status::ERROR` with this message.
    Failed(String),
    /// `status::UNAVAILABLE` (the caller may retry) with this message.
    Unavailable(String),
}

/// The future of a method handler.
pub type MethodFuture = Pin<Box<dyn Future<Output = Result<Bytes, MethodError>>>>;
/// A method handler: runs on the core it was registered on, with that core's shard.
pub type MethodHandler = Rc<dyn Fn(Rc<Shard>, Bytes) -> MethodFuture>;

/// A peer node as discovered. `Send`: copied to every core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Broker id.
    pub id: i32,
    /// Where its RPC listener is.
    pub rpc_addr: SocketAddr,
    /// Its advertised Kafka listener (host:port), as it said in HELLO ("" if learnt from the
    /// metadata only).
    pub kafka_addr: String,
}

/// Counters of one core's cluster layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Envelopes received on this core's listener.
    pub envelopes_in: u64,
    /// Parts handed to another core.
    pub envelopes_forwarded: u64,
    /// Messages and beats dropped: unknown group or envelope for another node.
    pub messages_dropped: u64,
    /// Requests served (on this core or forwarded to core 0).
    pub requests_in: u64,
}

/// Per-core state of the cluster layer (see the module doc). `!Send`.
struct ClusterCore {
    start_lock: Semaphore,
    started: Cell<bool>,
    /// The address this core's listener is bound to (None: not clustered).
    bound: Cell<Option<SocketAddr>>,
    listener: RefCell<Option<tcp::Listener>>,
    client: RpcClient,
    methods: RefCell<HashMap<u16, MethodHandler>>,
    peers: RefCell<BTreeMap<i32, PeerInfo>>,
    routes: RefCell<RouteTable>,
    view: RefCell<HashMap<GroupId, LeaderInfo>>,
    view_changed: Notify,
    tasks_spawned: Cell<bool>,
    pending_local: RefCell<Vec<(GroupId, Option<Claim>)>>,
    local_dirty: Notify,
    stats: Cell<ClusterStats>,
    // ---- core 0 only
    founders: RefCell<Option<Vec<i32>>>,
    founders_changed: Notify,
    /// This node joined (or is joining) a formed cluster instead of founding it.
    joined: Cell<bool>,
    /// Seeds that reported a formed cluster (where JOIN is sent).
    join_via: RefCell<Vec<SocketAddr>>,
    /// Joining and the registration is not accepted yet (no identity persisted).
    join_pending: Cell<bool>,
    table: RefCell<LeaderTable>,
    push_pending: RefCell<LeaderDelta>,
    push_dirty: Notify,
    led_dirty: Notify,
    reports_in_flight: RefCell<BTreeSet<i32>>,
}

impl ClusterCore {
    fn new(cfg: &BrokerConfig) -> Self {
        ClusterCore {
            start_lock: Semaphore::new(1),
            started: Cell::new(false),
            bound: Cell::new(None),
            listener: RefCell::new(None),
            client: RpcClient::new(rpc_config(cfg)),
            methods: RefCell::default(),
            peers: RefCell::default(),
            routes: RefCell::default(),
            view: RefCell::default(),
            view_changed: Notify::new(),
            tasks_spawned: Cell::new(false),
            pending_local: RefCell::default(),
            local_dirty: Notify::new(),
            stats: Cell::default(),
            founders: RefCell::new(None),
            founders_changed: Notify::new(),
            joined: Cell::new(false),
            join_via: RefCell::default(),
            join_pending: Cell::new(false),
            table: RefCell::default(),
            push_pending: RefCell::default(),
            push_dirty: Notify::new(),
            led_dirty: Notify::new(),
            reports_in_flight: RefCell::default(),
        }
    }

    fn bump(&self, f: impl FnOnce(&mut ClusterStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }
}

fn cc(shard: &Shard) -> Rc<ClusterCore> {
    shard.extension(|| ClusterCore::new(shard.config()))
}

/// The RPC limits of this broker.
pub fn rpc_config(cfg: &BrokerConfig) -> RpcConfig {
    RpcConfig {
        frame_bytes_max: cfg.cluster.rpc_frame_bytes_max,
        send_queue_frames_max: cfg.cluster.rpc_send_queue_frames_max,
        calls_in_flight_per_peer_max: cfg.cluster.rpc_calls_in_flight_per_peer_max,
        ..RpcConfig::default()
    }
}

/// Resolves `host:port` to its first socket address.
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))
}

/// Checks the cluster flags without binding anything: the RPC addresses and every seed
/// resolve. (Used by `freshet start` before any core runs, and again by [`start`].) A node
/// whose own advertised RPC address is among the seeds may found the cluster; one whose
/// address is not can only join a cluster the seeds report as formed (module doc).
pub fn validate(cfg: &BrokerConfig) -> Result<Vec<SocketAddr>, ClusterError> {
    let c = &cfg.cluster;
    resolve(&c.rpc_addr).map_err(|e| ClusterError::Config(format!("rpc_addr {e}")))?;
    resolve(c.advertised_rpc_addr())
        .map_err(|e| ClusterError::Config(format!("advertised rpc address {e}")))?;
    let mut seeds = Vec::with_capacity(c.seeds.len());
    for s in &c.seeds {
        let a = resolve(s).map_err(|e| ClusterError::Config(format!("seed {e}")))?;
        if !seeds.contains(&a) {
            seeds.push(a);
        }
    }
    Ok(seeds)
}

// ------------------------------------------------------------------ start

/// Starts the cluster layer on this core; idempotent (later calls return at once). Core 0
/// loads the identity, binds the RPC address and starts discovery; the other cores first
/// make sure core 0 did, then bind the same address. May be called early by `Shard::start`
/// or by the controller ([`founders`] calls it).
pub async fn start(shard: &Rc<Shard>) -> Result<(), ClusterError> {
    if shard.core() == 0 {
        return start_core0_once(shard).await;
    }
    let c = cc(shard);
    let _guard = c
        .start_lock
        .acquire_permit(1)
        .await
        .map_err(|_| ClusterError::ShuttingDown)?;
    if c.started.get() {
        return Ok(());
    }
    ensure_tasks(shard);
    let bound = shard
        .invoke_on(0, |s| async move {
            start_core0_once(&s).await?;
            Ok::<_, ClusterError>(cc(&s).bound.get())
        })
        .await
        .map_err(|_| ClusterError::ShuttingDown)??;
    if let Some(addr) = bound {
        bind(shard, &c, addr)?;
    }
    c.started.set(true);
    Ok(())
}

async fn start_core0_once(shard: &Rc<Shard>) -> Result<(), ClusterError> {
    let c = cc(shard);
    let _guard = c
        .start_lock
        .acquire_permit(1)
        .await
        .map_err(|_| ClusterError::ShuttingDown)?;
    if c.started.get() {
        return Ok(());
    }
    ensure_tasks(shard);
    start_core0(shard, &c).await?;
    c.started.set(true);
    Ok(())
}

async fn start_core0(shard: &Rc<Shard>, c: &Rc<ClusterCore>) -> Result<(), ClusterError> {
    let cfg = shard.config();
    let me = cfg.node_id;
    let seeds = validate(cfg)?;
    let identity = identity::load(&cfg.data_dir)?;
    if let Some(id) = &identity {
        if id.node_id != me {
            return Err(ClusterError::Config(format!(
                "data directory {} belongs to node {}, not --node-id {me}",
                cfg.data_dir.display(),
                id.node_id
            )));
        }
    }
    register_builtin_methods(shard);
    let clustered = !seeds.is_empty()
        || identity
            .as_ref()
            .is_some_and(|i| i.founders.len() > 1 || i.joined);
    if !clustered {
        *c.founders.borrow_mut() = Some(vec![me]);
        c.founders_changed.notify_all();
        return Ok(());
    }
    let addr = resolve(&cfg.cluster.rpc_addr).map_err(ClusterError::Config)?;
    // SO_REUSEPORT would let two brokers share the address silently: refuse to start if
    // something already accepts connections there. (A bind test without SO_REUSEPORT would
    // also fail on the TIME_WAIT sockets a killed predecessor left behind.)
    let probe = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    if std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
        return Err(ClusterError::Bind {
            addr: cfg.cluster.rpc_addr.clone(),
            reason: "another process is already listening there".into(),
        });
    }
    bind(shard, c, addr)?;
    if let Some(id) = &identity {
        tracing::info!(founders = ?id.founders, joined = id.joined, "cluster identity loaded");
        c.joined.set(id.joined);
        *c.founders.borrow_mut() = Some(id.founders.clone());
        c.founders_changed.notify_all();
    }
    let me_addr = resolve(cfg.cluster.advertised_rpc_addr()).map_err(ClusterError::Config)?;
    let i_am_seed = seeds.contains(&me_addr);
    let others: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != me_addr).collect();
    if identity.is_none() && !i_am_seed {
        tracing::info!(
            rpc_addr = %me_addr,
            "this node's RPC address is not among the seeds: it joins the cluster they formed"
        );
    }
    glommio::spawn_local(discover(
        Rc::downgrade(shard),
        others,
        identity.is_none(),
        i_am_seed,
    ))
    .detach();
    glommio::spawn_local(report_leaders_task(Rc::downgrade(shard))).detach();
    glommio::spawn_local(maintenance_task(Rc::downgrade(shard))).detach();
    liveness::start(shard);
    Ok(())
}

/// Binds `addr` on this core and serves it.
fn bind(shard: &Rc<Shard>, c: &ClusterCore, addr: SocketAddr) -> Result<(), ClusterError> {
    let for_env = Rc::downgrade(shard);
    let for_req = Rc::downgrade(shard);
    let listener = tcp::serve(
        addr,
        rpc_config(shard.config()),
        Rc::new(move |env| {
            if let Some(s) = for_env.upgrade() {
                route_envelope(&s, env);
            }
        }),
        Rc::new(move |method, payload| {
            let s = for_req.upgrade();
            Box::pin(async move {
                match s {
                    Some(s) => dispatch(&s, method, payload).await,
                    None => (status::UNAVAILABLE, Bytes::from_static(b"stopping")),
                }
            })
        }),
    )
    .map_err(|e| ClusterError::Bind {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    let bound = listener.local_addr();
    tracing::info!(core = shard.core(), rpc_addr = %bound, "serving internal RPC");
    c.bound.set(Some(bound));
    *c.listener.borrow_mut() = Some(listener);
    Ok(())
}

/// Stops serving the RPC address on this core (shutdown): no new connections are accepted
/// here. Calls and Raft traffic already under way finish or fail on their own. Returns after
/// a short pause in which the reactor cancels the pending accept (io_uring holds the socket
/// until then), so a broker restarted in the same process can bind the address again.
pub async fn stop(shard: &Shard) {
    let l = cc(shard).listener.borrow_mut().take();
    if let Some(l) = l {
        l.close();
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

/// The founding nodes' broker ids, ascending (the controller group's voters). On the first
/// start of a clustered node this waits until every seed answered HELLO (or, for a joining
/// node, until a seed reported its formed cluster); on a restart it returns the persisted
/// set; a cluster of one is `[node_id]`. Any core.
pub async fn founders(shard: &Rc<Shard>) -> Result<Vec<i32>, ClusterError> {
    if shard.core() != 0 {
        return shard
            .invoke_on(0, |s| async move { founders_core0(&s).await })
            .await
            .map_err(|_| ClusterError::ShuttingDown)?;
    }
    founders_core0(shard).await
}

async fn founders_core0(shard: &Rc<Shard>) -> Result<Vec<i32>, ClusterError> {
    start(shard).await?;
    let c = cc(shard);
    loop {
        if let Some(f) = c.founders.borrow().clone() {
            return Ok(f);
        }
        if shard.stopping() {
            return Err(ClusterError::ShuttingDown);
        }
        let seen = c.founders_changed.generation();
        futures_lite::future::or(c.founders_changed.wait(seen), async {
            glommio::timer::sleep(Duration::from_millis(100)).await;
        })
        .await;
    }
}

/// Core 0, after [`founders`] returned: whether this node joined (or is joining) a formed
/// cluster rather than founding it. A joined node runs the controller group as a learner.
pub fn joined(shard: &Shard) -> bool {
    assert_eq!(shard.core(), 0, "membership is core 0's");
    cc(shard).joined.get()
}

/// Core 0: this node is joining and its registration was not accepted yet (a first start;
/// a restarted joined node has its identity and does not ask again).
pub fn join_pending(shard: &Shard) -> bool {
    assert_eq!(shard.core(), 0, "membership is core 0's");
    cc(shard).join_pending.get()
}

/// Core 0 of a node that is joining (see [`joined`]): asks the seeds that reported the formed
/// cluster to register `req` (method [`JOIN`]), retrying every `discovery_retry_ms` while
/// none accepts or refuses, then persists this node's identity as "joined" (so a restart
/// rejoins without asking again). A refusal is final: [`ClusterError::JoinRefused`].
pub async fn join(shard: &Rc<Shard>, req: JoinRequest) -> Result<JoinAnswer, ClusterError> {
    assert_eq!(shard.core(), 0, "joining is core 0's");
    let c = cc(shard);
    let payload = req.encode();
    let mut last_log = Instant::now();
    loop {
        if shard.stopping() {
            return Err(ClusterError::ShuttingDown);
        }
        let retry = Duration::from_millis(shard.config().cluster.discovery_retry_ms.max(10));
        let timeout = Duration::from_millis(
            shard
                .config()
                .cluster
                .controller_request_timeout_ms
                .max(1000),
        );
        let via = c.join_via.borrow().clone();
        let mut errors = Vec::new();
        for addr in via {
            match c.client.call(addr, JOIN, payload.clone(), timeout).await {
                Ok(b) => {
                    let a = JoinAnswer::decode(b).map_err(|e| {
                        ClusterError::Rpc(RpcError::Remote {
                            status: status::ERROR,
                            message: format!("bad JOIN answer from {addr}: {e}"),
                        })
                    })?;
                    identity::store(
                        &shard.config().data_dir,
                        &Identity {
                            node_id: shard.config().node_id,
                            founders: a.founders.clone(),
                            joined: true,
                        },
                    )?;
                    tracing::info!(
                        via = %addr,
                        revision = a.revision,
                        founders = ?a.founders,
                        "joined the cluster: registered with the controller"
                    );
                    *c.founders.borrow_mut() = Some(a.founders.clone());
                    c.join_pending.set(false);
                    return Ok(a);
                }
                Err(RpcError::Remote { message, .. }) => {
                    return Err(ClusterError::JoinRefused(format!("{addr}: {message}")))
                }
                Err(e) => errors.push(format!("{addr} ({e})")),
            }
        }
        if last_log.elapsed() >= Duration::from_secs(3) {
            last_log = Instant::now();
            tracing::info!("join not accepted yet; retrying: {}", errors.join(", "));
        }
        glommio::timer::sleep(retry).await;
    }
}

/// The RPC address this core serves (None: not clustered or not started).
pub fn bound_rpc_addr(shard: &Shard) -> Option<SocketAddr> {
    cc(shard).bound.get()
}

/// The peers this core knows, by broker id.
pub fn peers(shard: &Shard) -> Vec<PeerInfo> {
    cc(shard).peers.borrow().values().cloned().collect()
}

/// This core's counters.
pub fn stats(shard: &Shard) -> ClusterStats {
    cc(shard).stats.get()
}

// ------------------------------------------------------------------ routing

fn route_envelope(shard: &Rc<Shard>, env: Envelope) {
    let c = cc(shard);
    c.bump(|s| s.envelopes_in += 1);
    if env.to != raft_node_id(shard.config().node_id) {
        let n = env.messages.len() + env.heartbeats.len() + env.heartbeat_responses.len();
        c.bump(|s| s.messages_dropped += n as u64);
        tracing::debug!(to = env.to, "envelope for another node dropped");
        return;
    }
    let snap = shard.metadata();
    if c.routes.borrow().revision() != Some(snap.revision) {
        *c.routes.borrow_mut() =
            RouteTable::build(&snap, shard.shard_table(), shard.config().node_id);
    }
    let (parts, dropped) = {
        let routes = c.routes.borrow();
        split_envelope(env, |g| routes.core_of(g))
    };
    if dropped > 0 {
        c.bump(|s| s.messages_dropped += dropped as u64);
    }
    for (core, part) in parts {
        if core == shard.core() {
            shard.deliver(part);
        } else {
            c.bump(|s| s.envelopes_forwarded += 1);
            let s = shard.clone();
            glommio::spawn_local(async move {
                let _ = s
                    .invoke_on(core, move |t| async move { t.deliver(part) })
                    .await;
            })
            .detach();
        }
    }
}

// ------------------------------------------------------------------ methods

/// Registers `handler` for `method` on the calling core (replacing an earlier one). A
/// request is served by the core that accepted its connection if that core registered the
/// method, otherwise by core 0: register node-wide methods on core 0.
pub fn register_method(shard: &Shard, method: u16, handler: MethodHandler) {
    cc(shard).methods.borrow_mut().insert(method, handler);
}

fn method_result(r: Result<Bytes, MethodError>) -> (u16, Bytes) {
    match r {
        Ok(b) => (status::OK, b),
        Err(MethodError::Failed(m)) => (status::ERROR, Bytes::from(m)),
        Err(MethodError::Unavailable(m)) => (status::UNAVAILABLE, Bytes::from(m)),
    }
}

/// Serves a request here if this core has the method, else on core 0.
async fn dispatch(shard: &Rc<Shard>, method: u16, payload: Bytes) -> (u16, Bytes) {
    let c = cc(shard);
    c.bump(|s| s.requests_in += 1);
    let handler = c.methods.borrow().get(&method).cloned();
    if let Some(h) = handler {
        return method_result(h(shard.clone(), payload).await);
    }
    if shard.core() == 0 {
        return (status::UNKNOWN_METHOD, Bytes::new());
    }
    shard
        .invoke_on(0, move |s| async move {
            let h = cc(&s).methods.borrow().get(&method).cloned();
            match h {
                Some(h) => method_result(h(s.clone(), payload).await),
                None => (status::UNKNOWN_METHOD, Bytes::new()),
            }
        })
        .await
        .unwrap_or((status::UNAVAILABLE, Bytes::from_static(b"stopping")))
}

/// Calls `method` on broker `peer` and returns its answer. A call to this node itself is
/// served locally (same dispatch as a remote one). Any core.
pub async fn rpc_call(
    shard: &Rc<Shard>,
    peer: i32,
    method: u16,
    payload: Bytes,
    timeout: Duration,
) -> Result<Bytes, ClusterError> {
    if peer == shard.config().node_id {
        let (st, body) = dispatch(shard, method, payload).await;
        return match st {
            status::OK => Ok(body),
            status::UNKNOWN_METHOD => Err(RpcError::UnknownMethod(method).into()),
            status::UNAVAILABLE => Err(RpcError::Unavailable(text(&body)).into()),
            s => Err(RpcError::Remote {
                status: s,
                message: text(&body),
            }
            .into()),
        };
    }
    let c = cc(shard);
    let addr = c
        .peers
        .borrow()
        .get(&peer)
        .map(|p| p.rpc_addr)
        .ok_or(ClusterError::UnknownPeer(peer))?;
    Ok(c.client.call(addr, method, payload, timeout).await?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn register_builtin_methods(shard: &Shard) {
    register_method(
        shard,
        HELLO,
        Rc::new(|s, payload| Box::pin(async move { on_hello(&s, payload) })),
    );
    register_method(
        shard,
        LEADERS,
        Rc::new(|s, payload| Box::pin(async move { on_leaders(&s, payload) })),
    );
}

/// This node's HELLO (core 0: it knows the founders once the cluster formed).
fn my_hello(shard: &Shard) -> Hello {
    let cfg = shard.config();
    Hello {
        node_id: cfg.node_id,
        cluster_id: cfg.cluster_id.clone(),
        kafka_addr: cfg.advertised_addr().to_string(),
        rpc_addr: cfg.cluster.advertised_rpc_addr().to_string(),
        founders: cc(shard).founders.borrow().clone(),
    }
}

/// Checks a peer's HELLO against this node: same cluster id, and its id not this node's.
fn check_hello(mine: &Hello, theirs: &Hello) -> Result<(), String> {
    if theirs.cluster_id != mine.cluster_id {
        return Err(format!(
            "cluster id mismatch: node {} at {} is in cluster {:?}, this node in {:?}",
            theirs.node_id, theirs.rpc_addr, theirs.cluster_id, mine.cluster_id
        ));
    }
    if theirs.node_id == mine.node_id && theirs.rpc_addr != mine.rpc_addr {
        return Err(format!(
            "duplicate node id {}: used by {} and {}",
            mine.node_id, mine.rpc_addr, theirs.rpc_addr
        ));
    }
    if theirs.node_id < 0 {
        return Err(format!("invalid node id {}", theirs.node_id));
    }
    Ok(())
}

fn on_hello(shard: &Rc<Shard>, payload: Bytes) -> Result<Bytes, MethodError> {
    let theirs = Hello::decode(payload).map_err(|e| MethodError::Failed(e.to_string()))?;
    let mine = my_hello(shard);
    check_hello(&mine, &theirs).map_err(|e| {
        tracing::warn!("{e}");
        MethodError::Failed(e)
    })?;
    learn_from_hello(shard, &theirs);
    liveness::heard_from(shard, theirs.node_id);
    Ok(mine.encode())
}

fn learn_from_hello(shard: &Rc<Shard>, h: &Hello) {
    if h.node_id == shard.config().node_id {
        return;
    }
    match resolve(&h.rpc_addr) {
        Ok(addr) => {
            // A node that belongs to no formed cluster yet (a first start) must not move a
            // known peer to its address: it may be a new node claiming a member's id, which
            // JOIN refuses. A member that moved (restart with a new address) says it formed.
            let known = cc(shard).peers.borrow().get(&h.node_id).map(|k| k.rpc_addr);
            if h.founders.is_none() && known.is_some_and(|k| k != addr) {
                tracing::warn!(
                    node = h.node_id,
                    rpc_addr = %addr,
                    known = ?known,
                    "a node outside the cluster claims a known peer's id; its address is ignored"
                );
                return;
            }
            learn_peer(
                shard,
                PeerInfo {
                    id: h.node_id,
                    rpc_addr: addr,
                    kafka_addr: h.kafka_addr.clone(),
                },
            )
        }
        Err(e) => tracing::warn!(node = h.node_id, "peer's RPC address does not resolve: {e}"),
    }
}

/// Core 0: records a peer and pushes it to every core (which adds it to its transport).
fn learn_peer(shard: &Rc<Shard>, p: PeerInfo) {
    let c = cc(shard);
    let known = c.peers.borrow().get(&p.id).cloned();
    match known {
        Some(k) if k.rpc_addr == p.rpc_addr && (p.kafka_addr.is_empty() || k == p) => return,
        _ => {}
    }
    tracing::info!(node = p.id, rpc_addr = %p.rpc_addr, kafka_addr = %p.kafka_addr, "peer learnt");
    for core in 0..shard.cores() {
        let s = shard.clone();
        let p = p.clone();
        glommio::spawn_local(async move {
            let _ = s
                .invoke_on(core, move |t| async move { apply_peer(&t, p) })
                .await;
        })
        .detach();
    }
}

fn apply_peer(shard: &Shard, p: PeerInfo) {
    let c = cc(shard);
    let old = c.peers.borrow_mut().insert(p.id, p.clone());
    if old.as_ref().map(|o| o.rpc_addr) != Some(p.rpc_addr) {
        shard.transport().add_peer(raft_node_id(p.id), p.rpc_addr);
    }
}

fn on_leaders(shard: &Rc<Shard>, payload: Bytes) -> Result<Bytes, MethodError> {
    let l = Leaders::decode(payload).map_err(|e| MethodError::Failed(e.to_string()))?;
    if l.from == shard.config().node_id || l.from < 0 {
        return Err(MethodError::Failed(format!(
            "LEADERS from invalid node {}",
            l.from
        )));
    }
    let now_ms = shard.clock().now_ms();
    let groups = l
        .groups
        .into_iter()
        .map(|g| (g.group, g.epoch, g.isr))
        .collect();
    let delta = cc(shard)
        .table
        .borrow_mut()
        .apply_report(l.from, groups, now_ms);
    push_delta(shard, delta);
    Ok(Bytes::new())
}

// ------------------------------------------------------------------ discovery

/// Core 0: HELLOs the seeds until every one answered, learning peers. On a first start
/// (`undecided`: no identity yet) it also settles this node's membership: a seed that reports
/// a formed cluster decides it (adopt its founders if they include this node, else join);
/// otherwise, once every seed answered, a node that is itself a seed forms the cluster with
/// them, and one that is not keeps asking until a seed reports a formed cluster.
async fn discover(me: Weak<Shard>, seeds: Vec<SocketAddr>, undecided: bool, i_am_seed: bool) {
    let mut answered: BTreeMap<SocketAddr, i32> = BTreeMap::new();
    let mut decided = !undecided;
    let mut last_log = Instant::now();
    let mut last_error: BTreeMap<SocketAddr, String> = BTreeMap::new();
    loop {
        let Some(shard) = me.upgrade() else { return };
        if shard.stopping() {
            return;
        }
        let retry = Duration::from_millis(shard.config().cluster.discovery_retry_ms.max(10));
        let hello = my_hello(&shard).encode();
        // A node that can only join asks answered seeds again until one has formed.
        let ask_all = !decided && !i_am_seed;
        let calls: Vec<_> = seeds
            .iter()
            .filter(|a| ask_all || !answered.contains_key(a))
            .map(|&addr| {
                let client = cc(&shard).client.clone();
                let payload = hello.clone();
                let timeout = retry.max(Duration::from_millis(1000));
                glommio::spawn_local(async move {
                    (addr, client.call(addr, HELLO, payload, timeout).await)
                })
            })
            .collect();
        let mut answers = Vec::with_capacity(calls.len());
        for call in calls {
            answers.push(call.await);
        }
        // Another node answering with this node's id from another address: this node must
        // not take that id's founder seat (it would join and be refused instead).
        let mine = my_hello(&shard);
        let duplicate = answers.iter().any(|(_, r)| {
            r.as_ref()
                .ok()
                .and_then(|b| Hello::decode(b.clone()).ok())
                .is_some_and(|h| h.node_id == mine.node_id && h.rpc_addr != mine.rpc_addr)
        });
        for (addr, r) in answers {
            let r = r
                .map_err(|e| e.to_string())
                .and_then(|b| Hello::decode(b).map_err(|e| e.to_string()))
                .and_then(|h| check_hello(&my_hello(&shard), &h).map(|()| h));
            match r {
                Ok(h) => {
                    if !answered.contains_key(&addr) {
                        tracing::info!(seed = %addr, node = h.node_id, formed = h.founders.is_some(), "seed answered");
                    }
                    learn_from_hello(&shard, &h);
                    answered.insert(addr, h.node_id);
                    last_error.remove(&addr);
                    if let Some(f) = &h.founders {
                        if !decided {
                            decided = settle_from_formed(&shard, addr, f, i_am_seed && !duplicate);
                        } else if cc(&shard).joined.get() {
                            let c = cc(&shard);
                            if !c.join_via.borrow().contains(&addr) {
                                c.join_via.borrow_mut().push(addr);
                            }
                        }
                    }
                }
                Err(e) => {
                    last_error.insert(addr, e);
                }
            }
        }
        if !decided && i_am_seed && answered.len() == seeds.len() {
            form_cluster(&shard, &answered);
            decided = true;
        }
        if decided && answered.len() == seeds.len() {
            return;
        }
        if last_log.elapsed() >= Duration::from_secs(3) {
            last_log = Instant::now();
            let waiting: Vec<String> = last_error
                .iter()
                .map(|(a, e)| format!("{a} ({e})"))
                .collect();
            if !decided && !i_am_seed && answered.len() == seeds.len() {
                tracing::info!(
                    seeds = seeds.len(),
                    "waiting for the seeds to form their cluster (this node is not a seed: it can only join)"
                );
            } else {
                tracing::info!(
                    answered = answered.len(),
                    seeds = seeds.len(),
                    "waiting for seeds: {}",
                    waiting.join(", ")
                );
            }
        }
        drop(shard);
        glommio::timer::sleep(retry).await;
    }
}

/// First start, the seed at `via` reports a cluster formed with `founders`: adopt them (this
/// node is one of them: it crashed before persisting its identity) or join. Adopting needs
/// `may_adopt`: this node's own address is among the seeds (a founder's was) and no node
/// answered with this node's id from another address; otherwise a founder's id is sent to
/// JOIN, which refuses it. Returns whether the membership is settled.
fn settle_from_formed(
    shard: &Rc<Shard>,
    via: SocketAddr,
    founders: &[i32],
    may_adopt: bool,
) -> bool {
    let me = shard.config().node_id;
    let c = cc(shard);
    if founders.contains(&me) && may_adopt {
        if let Err(e) = identity::store(
            &shard.config().data_dir,
            &Identity {
                node_id: me,
                founders: founders.to_vec(),
                joined: false,
            },
        ) {
            tracing::error!(error = %e, "cannot persist the cluster identity");
            return false;
        }
        tracing::info!(founders = ?founders, %via, "the cluster formed already with this node as a founder");
    } else {
        tracing::info!(founders = ?founders, %via, "the seeds' cluster has formed: joining it");
        c.joined.set(true);
        c.join_pending.set(true);
        c.join_via.borrow_mut().push(via);
    }
    *c.founders.borrow_mut() = Some(founders.to_vec());
    c.founders_changed.notify_all();
    true
}

/// First start, every seed answered: founders = their ids and ours; persist them.
fn form_cluster(shard: &Rc<Shard>, answered: &BTreeMap<SocketAddr, i32>) {
    let me = shard.config().node_id;
    let mut ids: Vec<i32> = answered.values().copied().collect();
    ids.push(me);
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    if ids.len() != n {
        // Two seeds answered with the same id: a misconfiguration founders cannot be made
        // of. Keep the node from forming a controller group; the operator must fix --seeds.
        tracing::error!(
            ?answered,
            me,
            "seeds answered with duplicate node ids; the cluster cannot form"
        );
        return;
    }
    let c = cc(shard);
    if let Err(e) = identity::store(
        &shard.config().data_dir,
        &Identity {
            node_id: me,
            founders: ids.clone(),
            joined: false,
        },
    ) {
        tracing::error!(error = %e, "cannot persist the cluster identity; the cluster cannot form");
        return;
    }
    tracing::info!(founders = ?ids, "cluster formed: every seed answered");
    *c.founders.borrow_mut() = Some(ids);
    c.founders_changed.notify_all();
}

/// Core 0: expires silent peers' leader reports; learns peers registered in the metadata.
async fn maintenance_task(me: Weak<Shard>) {
    loop {
        let Some(shard) = me.upgrade() else { return };
        if shard.stopping() {
            return;
        }
        let cfg = &shard.config().cluster;
        let period = Duration::from_millis((cfg.leaders_report_interval_ms / 2).max(50));
        let expiry_ms = cfg.leaders_expiry_ms as i64;
        let now_ms = shard.clock().now_ms();
        let delta = cc(&shard).table.borrow_mut().expire(now_ms, expiry_ms);
        push_delta(&shard, delta);
        let snap = shard.metadata();
        for b in snap.brokers.values() {
            if b.id == shard.config().node_id || cc(&shard).peers.borrow().contains_key(&b.id) {
                continue;
            }
            if let Ok(addr) = resolve(&b.rpc_addr) {
                learn_peer(
                    &shard,
                    PeerInfo {
                        id: b.id,
                        rpc_addr: addr,
                        kafka_addr: format!("{}:{}", b.host, b.port),
                    },
                );
            }
        }
        drop(shard);
        glommio::timer::sleep(period).await;
    }
}

// ------------------------------------------------------------------ leader table

/// Reports a status of one of this core's groups (the runtime's `on_change`; call it on the
/// core owning the group, for every change and once after the group opened). Cheap:
/// coalesced and merged on core 0 later.
pub fn publish_local(shard: &Rc<Shard>, group: GroupId, status: &GroupStatus) {
    let claim = Claim {
        leader: status.leader.filter(|l| *l >= 1).map(broker_id_of),
        epoch: i32::try_from(status.term).unwrap_or(i32::MAX),
        isr: status
            .in_sync
            .iter()
            .filter(|n| **n >= 1)
            .map(|n| broker_id_of(*n))
            .collect(),
    };
    queue_local(shard, group, Some(claim));
}

/// The group left this core (closed, removed, moved): forget what it reported.
pub fn forget_local(shard: &Rc<Shard>, group: GroupId) {
    queue_local(shard, group, None);
}

fn queue_local(shard: &Rc<Shard>, group: GroupId, claim: Option<Claim>) {
    ensure_tasks(shard);
    let c = cc(shard);
    c.pending_local.borrow_mut().push((group, claim));
    c.local_dirty.notify_all();
}

/// The leader of `group` as this core knows it (any core; a map lookup).
pub fn leader_of(shard: &Shard, group: GroupId) -> Option<LeaderInfo> {
    cc(shard).view.borrow().get(&group).cloned()
}

/// Waits until this core knows a leader of `group` (or `timeout` passes).
pub async fn wait_for_leader(
    shard: &Shard,
    group: GroupId,
    timeout: Duration,
) -> Option<LeaderInfo> {
    let c = cc(shard);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = c.view.borrow().get(&group) {
            return Some(l.clone());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let seen = c.view_changed.generation();
        futures_lite::future::or(c.view_changed.wait(seen), async {
            glommio::timer::sleep(left).await;
        })
        .await;
    }
}

impl Shard {
    /// The leader of Raft group `group` (partition groups, and `CONTROLLER_GROUP` for the
    /// controller) as this core knows it: this node's own statuses merged with the peers'
    /// LEADERS reports. None while no leader is known.
    pub fn leader_of(&self, group: GroupId) -> Option<LeaderInfo> {
        leader_of(self, group)
    }

    /// The leader of a partition (through its assignment's group).
    pub fn leader_of_partition(&self, topic: &str, partition: i32) -> Option<LeaderInfo> {
        let group = self.metadata().topic(topic)?.assignment(partition)?.group;
        self.leader_of(group)
    }
}

/// Spawns this core's flusher (local statuses → core 0) and, on core 0, the pusher (merged
/// changes → other cores). Once per core.
fn ensure_tasks(shard: &Rc<Shard>) {
    let c = cc(shard);
    if c.tasks_spawned.replace(true) {
        return;
    }
    glommio::spawn_local(flush_local_task(Rc::downgrade(shard))).detach();
    if shard.core() == 0 {
        glommio::spawn_local(push_task(Rc::downgrade(shard))).detach();
    }
}

async fn flush_local_task(me: Weak<Shard>) {
    let mut seen = 0;
    loop {
        let Some(shard) = me.upgrade() else { return };
        let c = cc(&shard);
        if c.pending_local.borrow().is_empty() {
            drop(shard);
            // Wait without keeping the shard alive.
            let wait = c.local_dirty.wait(seen);
            futures_lite::future::or(wait, async {
                glommio::timer::sleep(Duration::from_millis(500)).await;
            })
            .await;
            seen = c.local_dirty.generation();
            continue;
        }
        // Let the rest of this burst of status changes queue up behind the first.
        futures_lite::future::yield_now().await;
        let batch = std::mem::take(&mut *c.pending_local.borrow_mut());
        if shard.core() == 0 {
            apply_local_updates(&shard, batch);
        } else {
            let _ = shard
                .invoke_on(0, move |s| async move { apply_local_updates(&s, batch) })
                .await;
        }
    }
}

/// Core 0: merges local status updates; signals the LEADERS reporter when what this node
/// leads changed.
fn apply_local_updates(shard: &Rc<Shard>, batch: Vec<(GroupId, Option<Claim>)>) {
    ensure_tasks(shard);
    let me = shard.config().node_id;
    let c = cc(shard);
    let led_changed = {
        let t = c.table.borrow();
        batch.iter().any(|(g, new)| {
            let old = t.local(*g);
            let leads = |x: Option<&Claim>| x.is_some_and(|x| x.leader == Some(me));
            (leads(old) || leads(new.as_ref())) && old != new.as_ref()
        })
    };
    let delta = c.table.borrow_mut().apply_local(batch);
    if led_changed {
        c.led_dirty.notify_all();
    }
    push_delta(shard, delta);
}

/// Core 0: applies merged changes to its own view and queues them for the other cores.
fn push_delta(shard: &Rc<Shard>, delta: LeaderDelta) {
    if delta.is_empty() {
        return;
    }
    let c = cc(shard);
    apply_view(shard, delta.clone());
    if shard.cores() > 1 {
        c.push_pending.borrow_mut().extend(delta);
        c.push_dirty.notify_all();
    }
}

fn apply_view(shard: &Shard, delta: LeaderDelta) {
    let c = cc(shard);
    {
        let mut v = c.view.borrow_mut();
        for (g, l) in delta {
            match l {
                Some(l) => v.insert(g, l),
                None => v.remove(&g),
            };
        }
    }
    c.view_changed.notify_all();
}

/// Core 0: sends queued view changes to the other cores, in order (one batch at a time).
async fn push_task(me: Weak<Shard>) {
    let mut seen = 0;
    loop {
        let Some(shard) = me.upgrade() else { return };
        let c = cc(&shard);
        if c.push_pending.borrow().is_empty() {
            drop(shard);
            futures_lite::future::or(c.push_dirty.wait(seen), async {
                glommio::timer::sleep(Duration::from_millis(500)).await;
            })
            .await;
            seen = c.push_dirty.generation();
            continue;
        }
        futures_lite::future::yield_now().await;
        let delta = std::mem::take(&mut *c.push_pending.borrow_mut());
        let mut sends = Vec::new();
        for core in 1..shard.cores() {
            let s = shard.clone();
            let d = delta.clone();
            sends.push(glommio::spawn_local(async move {
                let _ = s
                    .invoke_on(core, move |t| async move { apply_view(&t, d) })
                    .await;
            }));
        }
        for t in sends {
            t.await;
        }
    }
}

/// Core 0 of a clustered node: sends the list of groups this node leads to every peer on
/// change and at least every `leaders_report_interval_ms`.
async fn report_leaders_task(me: Weak<Shard>) {
    let mut seen = 0;
    loop {
        let Some(shard) = me.upgrade() else { return };
        if shard.stopping() {
            return;
        }
        let c = cc(&shard);
        let interval =
            Duration::from_millis(shard.config().cluster.leaders_report_interval_ms.max(10));
        let node = shard.config().node_id;
        let payload = Leaders {
            from: node,
            groups: c
                .table
                .borrow()
                .led_by(node)
                .into_iter()
                .map(|(group, cl)| LedGroup {
                    group,
                    epoch: cl.epoch,
                    isr: cl.isr.clone(),
                })
                .collect(),
        }
        .encode();
        let peers: Vec<i32> = c.peers.borrow().keys().copied().collect();
        for p in peers {
            if !c.reports_in_flight.borrow_mut().insert(p) {
                continue; // the previous report is still on its way
            }
            let s = shard.clone();
            let payload = payload.clone();
            glommio::spawn_local(async move {
                if let Err(e) = rpc_call(&s, p, LEADERS, payload, interval).await {
                    tracing::debug!(peer = p, error = %e, "LEADERS report failed");
                }
                cc(&s).reports_in_flight.borrow_mut().remove(&p);
            })
            .detach();
        }
        drop(shard);
        futures_lite::future::or(c.led_dirty.wait(seen), async {
            glommio::timer::sleep(interval).await;
        })
        .await;
        seen = c.led_dirty.generation();
        // Coalesce a burst of leadership changes (an election of many groups) into one report.
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}
