//! `freshet start`: parse flags / TOML into a `BrokerConfig`, start one pinned glommio
//! executor per core, print one ready line, and shut down cleanly on SIGINT/SIGTERM.
//!
//! Threads: the main thread only parses, waits for the cores to report ready, then waits for
//! a signal (`sigwait`) and raises the stop flag (`Arc<AtomicBool>`, the only state shared
//! between threads). Each core checks the flag, stops accepting, flushes and closes its
//! partitions, and exits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use clap::Args;
use freshet_engine::{new_mesh, BrokerConfig, Shard, TopicConfig};
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};
use serde::Deserialize;

/// Flags of `freshet start`; each can also be set in the `--config` TOML file (same names
/// with `_`), flags win.
#[derive(Args, Debug, Default)]
pub struct StartArgs {
    /// Directory for logs and metadata [default: ./freshet-data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Kafka listener address [default: 127.0.0.1:9092]
    #[arg(long)]
    pub kafka_addr: Option<String>,
    /// host:port announced to clients [default: --kafka-addr]
    #[arg(long)]
    pub advertise_kafka_addr: Option<String>,
    /// Broker id [default: 0]
    #[arg(long)]
    pub node_id: Option<i32>,
    /// Number of cores (executors) [default: all online CPUs]
    #[arg(long)]
    pub cores: Option<usize>,
    /// TOML config file
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// group.initial.rebalance.delay.ms [default: 3000]
    #[arg(long)]
    pub group_initial_rebalance_delay_ms: Option<i64>,
    /// group.min.session.timeout.ms [default: 6000]
    #[arg(long)]
    pub group_min_session_timeout_ms: Option<i32>,
    /// group.max.session.timeout.ms [default: 1800000]
    #[arg(long)]
    pub group_max_session_timeout_ms: Option<i32>,
    /// offsets.topic.num.partitions [default: 16]
    #[arg(long)]
    pub offsets_topic_num_partitions: Option<i32>,
    /// offsets.retention.minutes [default: 10080]
    #[arg(long)]
    pub offsets_retention_minutes: Option<i64>,
    /// offsets.commit.timeout.ms: how long an offset commit waits for its append to be
    /// committed on a majority before REQUEST_TIMED_OUT, 1..=2147483647 [default: 5000]
    #[arg(long)]
    pub offsets_commit_timeout_ms: Option<i64>,
    /// offsets.topic.replication.factor: replicas of __consumer_offsets (capped at the
    /// registered brokers), 1..=32767 [default: 3]
    #[arg(long)]
    pub offsets_topic_replication_factor: Option<i16>,
    /// The controller writes a metadata snapshot every this many applied commands,
    /// 1..=10000000 [default: 1000]
    #[arg(long)]
    pub controller_snapshot_commands: Option<u64>,
    /// How long a metadata change waits for the controller leader before REQUEST_TIMED_OUT,
    /// 100..=600000 [default: 10000]
    #[arg(long)]
    pub controller_request_timeout_ms: Option<u64>,
    /// A peer that leaves a liveness probe unanswered this long is marked down (Kafka's
    /// broker.session.timeout.ms; a failed connection marks it down at once),
    /// 100..=600000 [default: 3000]
    #[arg(long)]
    pub broker_session_timeout_ms: Option<u64>,
    /// Internal RPC address (Raft traffic and node-to-node calls) [default: 127.0.0.1:33145]
    #[arg(long)]
    pub rpc_addr: Option<String>,
    /// RPC address announced to other nodes [default: --rpc-addr]
    #[arg(long)]
    pub advertise_rpc_addr: Option<String>,
    /// RPC addresses of all founding nodes, this one included (host:port,host:port,...);
    /// none = a cluster of one. A node whose own address is not listed joins the cluster
    /// the seeds formed (any running members will do)
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
}

/// The TOML config file. Every field optional; unknown fields are an error.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    kafka_addr: Option<String>,
    advertise_kafka_addr: Option<String>,
    node_id: Option<i32>,
    cores: Option<usize>,
    cluster_id: Option<String>,
    auto_create_topics_enable: Option<bool>,
    num_partitions: Option<i32>,
    socket_request_max_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_in_flight_requests_per_connection: Option<usize>,
    mesh_in_flight_per_peer: Option<usize>,
    mesh_channel_capacity: Option<usize>,
    fetch_session_cache_slots: Option<usize>,
    retention_check_interval_ms: Option<u64>,
    producer_state_scan_bytes: Option<u64>,
    group_initial_rebalance_delay_ms: Option<i64>,
    group_min_session_timeout_ms: Option<i32>,
    group_max_session_timeout_ms: Option<i32>,
    offsets_topic_num_partitions: Option<i32>,
    offsets_retention_minutes: Option<i64>,
    offsets_commit_timeout_ms: Option<i64>,
    offsets_topic_replication_factor: Option<i16>,
    controller_snapshot_commands: Option<u64>,
    controller_request_timeout_ms: Option<u64>,
    broker_session_timeout_ms: Option<u64>,
    rpc_addr: Option<String>,
    advertise_rpc_addr: Option<String>,
    /// RPC addresses of the founding nodes: a list, or one comma-separated string.
    seeds: Option<Seeds>,
    raft_tick_ms: Option<u64>,
    raft_heartbeat_ticks: Option<usize>,
    raft_election_ticks: Option<usize>,
    default_replication_factor: Option<i16>,
    min_insync_replicas: Option<i32>,
    rpc_frame_bytes_max: Option<usize>,
    rpc_send_queue_frames_max: Option<usize>,
    rpc_calls_in_flight_per_peer_max: Option<usize>,
    discovery_retry_ms: Option<u64>,
    leaders_report_interval_ms: Option<u64>,
    leaders_expiry_ms: Option<u64>,
    leader_rebalance_interval_ms: Option<u64>,
    /// Broker-wide topic config defaults, e.g. `"retention.ms" = "3600000"`.
    topic_defaults: Option<std::collections::BTreeMap<String, String>>,
}

/// `seeds` in the TOML file: `["h:p", "h:p"]` or `"h:p,h:p"`.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Seeds {
    List(Vec<String>),
    Joined(String),
}

impl Seeds {
    fn into_vec(self) -> Vec<String> {
        match self {
            Seeds::List(v) => v,
            Seeds::Joined(s) => s.split(',').map(str::to_string).collect(),
        }
    }
}

/// Builds the broker config: defaults, then the TOML file, then flags.
fn broker_config(args: &StartArgs) -> Result<BrokerConfig, String> {
    let mut file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("bad config {}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let file_cluster = FileCluster {
        rpc_addr: file.rpc_addr.clone(),
        advertise_rpc_addr: file.advertise_rpc_addr.clone(),
        seeds: file.seeds.take_seeds(),
        raft_tick_ms: file.raft_tick_ms,
        raft_heartbeat_ticks: file.raft_heartbeat_ticks,
        raft_election_ticks: file.raft_election_ticks,
        default_replication_factor: file.default_replication_factor,
        min_insync_replicas: file.min_insync_replicas,
        rpc_frame_bytes_max: file.rpc_frame_bytes_max,
        rpc_send_queue_frames_max: file.rpc_send_queue_frames_max,
        rpc_calls_in_flight_per_peer_max: file.rpc_calls_in_flight_per_peer_max,
        discovery_retry_ms: file.discovery_retry_ms,
        leaders_report_interval_ms: file.leaders_report_interval_ms,
        leaders_expiry_ms: file.leaders_expiry_ms,
        leader_rebalance_interval_ms: file.leader_rebalance_interval_ms,
        offsets_topic_replication_factor: file.offsets_topic_replication_factor,
        controller_snapshot_commands: file.controller_snapshot_commands,
        controller_request_timeout_ms: file.controller_request_timeout_ms,
        broker_session_timeout_ms: file.broker_session_timeout_ms,
    };
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cores = args.cores.or(file.cores).unwrap_or(online);
    if cores == 0 {
        return Err("--cores must be at least 1".into());
    }
    let mut cfg = BrokerConfig::new(
        args.data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./freshet-data")),
        args.kafka_addr
            .clone()
            .or(file.kafka_addr)
            .unwrap_or_else(|| "127.0.0.1:9092".into()),
        args.node_id.or(file.node_id).unwrap_or(0),
        cores,
    );
    cfg.advertise_kafka_addr = args
        .advertise_kafka_addr
        .clone()
        .or(file.advertise_kafka_addr);
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = file.$f { cfg.$f = v; } )* };
    }
    set!(
        cluster_id,
        auto_create_topics_enable,
        num_partitions,
        socket_request_max_bytes,
        max_connections,
        max_in_flight_requests_per_connection,
        mesh_in_flight_per_peer,
        mesh_channel_capacity,
        fetch_session_cache_slots,
        retention_check_interval_ms,
        producer_state_scan_bytes
    );
    let g = &mut cfg.groups;
    if let Some(v) = args
        .group_initial_rebalance_delay_ms
        .or(file.group_initial_rebalance_delay_ms)
    {
        g.initial_rebalance_delay_ms = v;
    }
    if let Some(v) = args
        .group_min_session_timeout_ms
        .or(file.group_min_session_timeout_ms)
    {
        g.min_session_timeout_ms = v;
    }
    if let Some(v) = args
        .group_max_session_timeout_ms
        .or(file.group_max_session_timeout_ms)
    {
        g.max_session_timeout_ms = v;
    }
    if let Some(v) = args
        .offsets_topic_num_partitions
        .or(file.offsets_topic_num_partitions)
    {
        if v < 1 {
            return Err("offsets_topic_num_partitions must be at least 1".into());
        }
        g.offsets_topic_num_partitions = v;
    }
    if let Some(v) = args
        .offsets_retention_minutes
        .or(file.offsets_retention_minutes)
    {
        g.offsets_retention_ms = v.saturating_mul(60_000);
    }
    if let Some(v) = args
        .offsets_commit_timeout_ms
        .or(file.offsets_commit_timeout_ms)
    {
        g.offsets_commit_timeout_ms = in_range(
            "offsets_commit_timeout_ms (offsets.commit.timeout.ms)",
            v,
            OFFSETS_COMMIT_TIMEOUT_MS,
        )?;
    }
    if let Some(d) = file.topic_defaults {
        cfg.topic_defaults =
            TopicConfig::from_pairs(d).map_err(|e| format!("topic_defaults: {e}"))?;
    }
    if cfg.num_partitions < 1 {
        return Err("num_partitions must be at least 1".into());
    }
    cluster_config(args, file_cluster, &mut cfg)?;
    Ok(cfg)
}

/// The cluster keys of the TOML file (taken out before the rest is consumed).
struct FileCluster {
    rpc_addr: Option<String>,
    advertise_rpc_addr: Option<String>,
    seeds: Option<Vec<String>>,
    raft_tick_ms: Option<u64>,
    raft_heartbeat_ticks: Option<usize>,
    raft_election_ticks: Option<usize>,
    default_replication_factor: Option<i16>,
    min_insync_replicas: Option<i32>,
    rpc_frame_bytes_max: Option<usize>,
    rpc_send_queue_frames_max: Option<usize>,
    rpc_calls_in_flight_per_peer_max: Option<usize>,
    discovery_retry_ms: Option<u64>,
    leaders_report_interval_ms: Option<u64>,
    leaders_expiry_ms: Option<u64>,
    leader_rebalance_interval_ms: Option<u64>,
    offsets_topic_replication_factor: Option<i16>,
    controller_snapshot_commands: Option<u64>,
    controller_request_timeout_ms: Option<u64>,
    broker_session_timeout_ms: Option<u64>,
}

/// Accepted values of the keys validated by [`in_range`].
const OFFSETS_COMMIT_TIMEOUT_MS: std::ops::RangeInclusive<i64> = 1..=i32::MAX as i64;
const OFFSETS_TOPIC_REPLICATION_FACTOR: std::ops::RangeInclusive<i16> = 1..=i16::MAX;
const CONTROLLER_SNAPSHOT_COMMANDS: std::ops::RangeInclusive<u64> = 1..=10_000_000;
const CONTROLLER_REQUEST_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=600_000;
const BROKER_SESSION_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=600_000;

/// `v` if it lies in `range`, else an error naming the key, the value and the range.
fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    v: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, String> {
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{key} must be in {}..={}, got {v}",
            range.start(),
            range.end()
        ))
    }
}

trait TakeSeeds {
    fn take_seeds(&mut self) -> Option<Vec<String>>;
}

impl TakeSeeds for Option<Seeds> {
    fn take_seeds(&mut self) -> Option<Vec<String>> {
        self.take().map(Seeds::into_vec)
    }
}

/// Cluster settings: defaults, then the file, then flags; then validated (node id, addresses,
/// seeds that resolve, Raft timing).
fn cluster_config(
    args: &StartArgs,
    file: FileCluster,
    cfg: &mut BrokerConfig,
) -> Result<(), String> {
    let c = &mut cfg.cluster;
    if let Some(v) = args.rpc_addr.clone().or(file.rpc_addr) {
        c.rpc_addr = v;
    }
    c.advertise_rpc_addr = args.advertise_rpc_addr.clone().or(file.advertise_rpc_addr);
    if let Some(v) = args.seeds.clone().or(file.seeds) {
        c.seeds = v
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = file.$f { c.$f = v; } )* };
    }
    set!(
        raft_tick_ms,
        raft_heartbeat_ticks,
        raft_election_ticks,
        default_replication_factor,
        min_insync_replicas,
        rpc_frame_bytes_max,
        rpc_send_queue_frames_max,
        rpc_calls_in_flight_per_peer_max,
        discovery_retry_ms,
        leaders_report_interval_ms,
        leaders_expiry_ms,
        leader_rebalance_interval_ms
    );
    // Flag, else file; a value is taken only inside its range.
    macro_rules! checked {
        ($($f:ident: $key:expr, $range:expr;)*) => { $(
            if let Some(v) = args.$f.or(file.$f) {
                c.$f = in_range($key, v, $range)?;
            }
        )* };
    }
    checked!(
        offsets_topic_replication_factor:
            "offsets_topic_replication_factor (offsets.topic.replication.factor)",
            OFFSETS_TOPIC_REPLICATION_FACTOR;
        controller_snapshot_commands: "controller_snapshot_commands", CONTROLLER_SNAPSHOT_COMMANDS;
        controller_request_timeout_ms: "controller_request_timeout_ms", CONTROLLER_REQUEST_TIMEOUT_MS;
        broker_session_timeout_ms: "broker_session_timeout_ms", BROKER_SESSION_TIMEOUT_MS;
    );
    if cfg.node_id < 0 {
        return Err(format!("--node-id must be >= 0, got {}", cfg.node_id));
    }
    let c = &cfg.cluster;
    if c.raft_tick_ms == 0 || c.raft_heartbeat_ticks == 0 {
        return Err("raft_tick_ms and raft_heartbeat_ticks must be at least 1".into());
    }
    if c.raft_election_ticks <= c.raft_heartbeat_ticks {
        return Err(format!(
            "raft_election_ticks ({}) must exceed raft_heartbeat_ticks ({})",
            c.raft_election_ticks, c.raft_heartbeat_ticks
        ));
    }
    if c.default_replication_factor < 1 || c.min_insync_replicas < 1 {
        return Err("default_replication_factor and min_insync_replicas must be at least 1".into());
    }
    if c.rpc_frame_bytes_max < 1024 || c.rpc_send_queue_frames_max == 0 {
        return Err(
            "rpc_frame_bytes_max must be at least 1024 and rpc_send_queue_frames_max at least 1"
                .into(),
        );
    }
    freshet_engine::cluster::validate(cfg).map_err(|e| e.to_string())?;
    Ok(())
}

/// io_uring needs locked memory; raise RLIMIT_MEMLOCK to the hard limit (or unlimited when
/// we are allowed to).
fn raise_memlock() {
    // SAFETY: plain libc calls with valid pointers to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) != 0 {
            return;
        }
        let want = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &want) != 0 {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
        }
    }
}

/// Blocks SIGINT/SIGTERM in this thread (and the threads it spawns later) so that only
/// `wait_for_stop_signal` receives them.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, then pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_stop_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised sigset; `sig` is a valid out pointer.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
    sig
}

/// How often the kicker interrupts each core's sleep (see [`Kicker`]).
const KICK_INTERVAL_MS: u64 = 200;

/// Interrupts every executor thread's sleep every [`KICK_INTERVAL_MS`], from a thread of its own.
///
/// Why: glommio 0.9 can lose the wake-up of an executor that is going to sleep in
/// `io_uring_enter` while another thread hands it work (a mesh message from another core, a
/// blocking-thread result): the sender sees the sleeper's `should_notify` flag down and skips the
/// eventfd write, the sleeper waits for ever (seen 3 times in ~650 two-core starts under load:
/// core 1 asleep with core 0's metadata snapshot in its mesh channel, `freshet ready` never
/// printed; /work/notes/findings.md 18:50). A signal with a handler makes that `io_uring_enter`
/// return EINTR; glommio then re-polls its channels, timers and blocking-thread results and
/// finds the work, so a lost wake-up costs at most one interval. Costs one signal per core per
/// interval. Crosses threads: the list of executor threads is behind a mutex, touched only when
/// an executor starts or ends and by the kicker thread.
struct Kicker {
    threads: Arc<std::sync::Mutex<Vec<libc::pthread_t>>>,
    done: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// Takes its executor thread off the kicker's list when the executor's future ends (by any path).
struct KickGuard {
    threads: Arc<std::sync::Mutex<Vec<libc::pthread_t>>>,
    me: libc::pthread_t,
}

extern "C" fn ignore_kick(_: libc::c_int) {}

impl Kicker {
    const SIGNAL: libc::c_int = libc::SIGURG;

    fn start() -> Kicker {
        // SAFETY: installs a handler that does nothing (async-signal-safe) for SIGURG, whose
        // default action is to ignore it. No SA_RESTART: the interrupted io_uring_enter must
        // return to glommio, which treats EINTR as "nothing completed" and polls again.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = ignore_kick as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(Self::SIGNAL, &act, std::ptr::null_mut());
        }
        let threads: Arc<std::sync::Mutex<Vec<libc::pthread_t>>> = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let handle = {
            let (threads, done) = (threads.clone(), done.clone());
            std::thread::Builder::new()
                .name("freshet-kicker".into())
                .spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        std::thread::sleep(std::time::Duration::from_millis(KICK_INTERVAL_MS));
                        let list = threads.lock().unwrap_or_else(|e| e.into_inner());
                        for &t in list.iter() {
                            // SAFETY: `t` is a live executor thread: it removes itself from the
                            // list (under this lock) before it ends.
                            unsafe {
                                libc::pthread_kill(t, Self::SIGNAL);
                            }
                        }
                    }
                })
                .ok()
        };
        Kicker {
            threads,
            done,
            handle,
        }
    }

    /// Adds the calling (executor) thread to the list until the returned guard is dropped.
    fn register(threads: &Arc<std::sync::Mutex<Vec<libc::pthread_t>>>) -> KickGuard {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        threads.lock().unwrap_or_else(|e| e.into_inner()).push(me);
        KickGuard {
            threads: threads.clone(),
            me,
        }
    }

    fn stop(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for KickGuard {
    fn drop(&mut self) {
        let mut list = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: pthread_equal compares two thread ids.
        list.retain(|&t| unsafe { libc::pthread_equal(t, self.me) } == 0);
    }
}

/// What a core reports to the main thread.
enum CoreEvent {
    Ready,
    Failed(String),
}

/// Runs the broker until SIGINT/SIGTERM; returns the process exit code.
pub fn run(args: StartArgs) -> i32 {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    // A panic on any core is a broken invariant: report it and end the whole process (as the
    // release profile's panic=abort does), rather than leave a core silently dead.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let cfg = match broker_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("freshet: {e}");
            return 2;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&cfg.data_dir) {
        eprintln!("freshet: cannot create {}: {e}", cfg.data_dir.display());
        return 1;
    }
    raise_memlock();
    let signals = block_stop_signals();
    let stop = Arc::new(AtomicBool::new(false));
    let (events_tx, events_rx) = mpsc::channel::<CoreEvent>();
    let cores = cfg.cores;
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let placement = if cores <= online {
        PoolPlacement::MaxSpread(cores, None)
    } else {
        PoolPlacement::Unbound(cores)
    };
    let mesh = new_mesh(cores, cfg.mesh_channel_capacity);
    let core_cfg = cfg.clone();
    let core_stop = stop.clone();
    let kicker = Kicker::start();
    let kick_list = kicker.threads.clone();
    let pool = LocalExecutorPoolBuilder::new(placement)
        .name("freshet-core")
        .on_all_shards(move || async move {
            let _kick = Kicker::register(&kick_list);
            let events = events_tx;
            let shard = match Shard::start(
                core_cfg,
                mesh,
                freshet_engine::system_clock(),
                core_stop.clone(),
            )
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    let _ = events.send(CoreEvent::Failed(format!("a core failed to start: {e}")));
                    core_stop.store(true, Ordering::Relaxed);
                    return;
                }
            };
            if let Err(e) = freshet_engine::cluster::start(&shard).await {
                let _ = events.send(CoreEvent::Failed(format!(
                    "core {} cluster layer: {e}",
                    shard.core()
                )));
                core_stop.store(true, Ordering::Relaxed);
                shard.close_partitions().await;
                return;
            }
            freshet_engine::group::wire::start_core(&shard).await;
            let core = shard.core();
            let server = match freshet_net::server::Server::bind(shard.clone()) {
                Ok(s) => s,
                Err(e) => {
                    let _ = events.send(CoreEvent::Failed(format!("core {core} cannot bind: {e}")));
                    core_stop.store(true, Ordering::Relaxed);
                    shard.close_partitions().await;
                    return;
                }
            };
            let _ = events.send(CoreEvent::Ready);
            server.run().await;
            freshet_engine::cluster::stop(&shard).await;
            shard.close_partitions().await;
            tracing::info!(core, "core stopped");
        });
    let pool = match pool {
        Ok(p) => p,
        Err(e) => {
            eprintln!("freshet: cannot start executors: {e}");
            return 1;
        }
    };
    let mut ready = 0;
    let mut failed = false;
    while ready < cores {
        match events_rx.recv() {
            Ok(CoreEvent::Ready) => ready += 1,
            Ok(CoreEvent::Failed(e)) => {
                eprintln!("freshet: {e}");
                failed = true;
                break;
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if !failed {
        let rpc = if cfg.cluster.seeds.is_empty() {
            "none (cluster of one)".to_string()
        } else {
            format!(
                "{} (seeds {})",
                cfg.cluster.rpc_addr,
                cfg.cluster.seeds.join(",")
            )
        };
        println!(
            "freshet ready: node {}, kafka {}, rpc {}, {} cores, data {}",
            cfg.node_id,
            cfg.kafka_addr,
            rpc,
            cores,
            cfg.data_dir.display()
        );
        let sig = wait_for_stop_signal(&signals);
        tracing::info!(signal = sig, "stopping: flushing and closing partitions");
    }
    stop.store(true, Ordering::Relaxed);
    let results = pool.join_all();
    kicker.stop();
    let crashed = results.iter().filter(|r| r.is_err()).count();
    if failed || crashed > 0 {
        eprintln!("freshet: stopped with errors ({crashed} cores crashed)");
        return 1;
    }
    tracing::info!("stopped cleanly");
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `broker.toml` in a directory of its own under the temp dir (`tag` names the test),
    /// removed with its directory when dropped.
    struct ConfigFile {
        dir: PathBuf,
        path: PathBuf,
    }

    impl ConfigFile {
        fn new(tag: &str, toml: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("freshet-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let f = ConfigFile {
                path: dir.join("broker.toml"),
                dir,
            };
            f.write(toml);
            f
        }

        fn write(&self, toml: &str) {
            std::fs::write(&self.path, toml).unwrap();
        }

        /// `freshet start --cores 1 --config <this file>`.
        fn args(&self) -> StartArgs {
            StartArgs {
                config: Some(self.path.clone()),
                ..one_core(StartArgs::default())
            }
        }
    }

    impl Drop for ConfigFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// `args` with `--cores 1`.
    fn one_core(args: StartArgs) -> StartArgs {
        StartArgs {
            cores: Some(1),
            ..args
        }
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = ConfigFile::new(
            "start",
            "kafka_addr = \"0.0.0.0:19092\"\nnode_id = 3\nnum_partitions = 4\n\
             [topic_defaults]\n\"retention.ms\" = \"1000\"\n",
        );
        let args = StartArgs {
            node_id: Some(7),
            ..file.args()
        };
        let cfg = broker_config(&args).unwrap();
        assert_eq!(cfg.kafka_addr, "0.0.0.0:19092");
        assert_eq!(cfg.node_id, 7);
        assert_eq!(cfg.num_partitions, 4);
        assert_eq!(cfg.data_dir, PathBuf::from("./freshet-data"));
        assert_eq!(
            cfg.topic_defaults
                .entries
                .get("retention.ms")
                .map(|s| s.as_str()),
            Some("1000")
        );
        file.write("no_such_option = 1\n");
        assert!(broker_config(&args).is_err());
    }

    #[test]
    fn cluster_flags_and_keys_are_validated() {
        // Seeds as a TOML list; this node's address is one of them.
        let file = ConfigFile::new(
            "start-cl",
            "rpc_addr = \"127.0.0.1:40001\"\nseeds = [\"127.0.0.1:40001\", \"127.0.0.1:40002\"]\n\
             raft_election_ticks = 40\nleaders_report_interval_ms = 250\n",
        );
        let cfg = broker_config(&file.args()).unwrap();
        assert_eq!(cfg.cluster.rpc_addr, "127.0.0.1:40001");
        assert_eq!(cfg.cluster.seeds.len(), 2);
        assert_eq!(cfg.cluster.raft_election_ticks, 40);
        assert_eq!(cfg.cluster.leaders_report_interval_ms, 250);
        // Flags win; a comma-separated string works in the file too.
        file.write("seeds = \"127.0.0.1:40001,127.0.0.1:40003\"\n");
        let args = StartArgs {
            rpc_addr: Some("127.0.0.1:40003".into()),
            ..file.args()
        };
        let cfg = broker_config(&args).unwrap();
        assert_eq!(
            cfg.cluster.seeds,
            vec!["127.0.0.1:40001", "127.0.0.1:40003"]
        );
        // This node's RPC address is not a seed: valid, it joins the cluster the seeds
        // formed (engine/src/cluster/mod.rs, "Joining a formed cluster").
        let args = one_core(StartArgs {
            rpc_addr: Some("127.0.0.1:40009".into()),
            seeds: Some(vec!["127.0.0.1:40001".into(), "127.0.0.1:40002".into()]),
            ..Default::default()
        });
        let cfg = broker_config(&args).unwrap();
        assert_eq!(cfg.cluster.seeds.len(), 2);
        // A seed that does not resolve is refused.
        let args = StartArgs {
            seeds: Some(vec!["127.0.0.1:40001".into(), "nowhere:x".into()]),
            ..args
        };
        assert!(broker_config(&args).is_err());
        // Nonsense is refused with a message.
        for bad in [
            StartArgs {
                node_id: Some(-1),
                ..Default::default()
            },
            StartArgs {
                seeds: Some(vec!["no-port".into()]),
                ..Default::default()
            },
            StartArgs {
                rpc_addr: Some("256.0.0.1:1".into()),
                ..Default::default()
            },
        ] {
            assert!(broker_config(&one_core(bad)).is_err());
        }
    }

    /// The controller and offsets keys: TOML (Kafka's dotted names with `_`) and flags, flags
    /// winning; out-of-range values are refused with the key, the value and the range.
    #[test]
    fn controller_and_offsets_keys_are_set_and_range_checked() {
        let file = ConfigFile::new(
            "start-ko",
            "controller_snapshot_commands = 50
controller_request_timeout_ms = 2500
broker_session_timeout_ms = 1500
             offsets_topic_replication_factor = 2
offsets_commit_timeout_ms = 7000
",
        );
        let args = file.args();
        let cfg = broker_config(&args).unwrap();
        assert_eq!(cfg.cluster.controller_snapshot_commands, 50);
        assert_eq!(cfg.cluster.controller_request_timeout_ms, 2500);
        assert_eq!(cfg.cluster.broker_session_timeout_ms, 1500);
        assert_eq!(cfg.cluster.offsets_topic_replication_factor, 2);
        assert_eq!(cfg.groups.offsets_commit_timeout_ms, 7000);
        let flags = StartArgs {
            controller_snapshot_commands: Some(10),
            controller_request_timeout_ms: Some(100),
            broker_session_timeout_ms: Some(100),
            offsets_topic_replication_factor: Some(1),
            offsets_commit_timeout_ms: Some(1),
            ..args
        };
        let cfg = broker_config(&flags).unwrap();
        assert_eq!(cfg.cluster.controller_snapshot_commands, 10);
        assert_eq!(cfg.cluster.controller_request_timeout_ms, 100);
        assert_eq!(cfg.cluster.broker_session_timeout_ms, 100);
        assert_eq!(cfg.cluster.offsets_topic_replication_factor, 1);
        assert_eq!(cfg.groups.offsets_commit_timeout_ms, 1);
        // Defaults without any of them.
        let cfg = broker_config(&one_core(StartArgs::default())).unwrap();
        assert_eq!(cfg.cluster.controller_snapshot_commands, 1000);
        assert_eq!(cfg.cluster.controller_request_timeout_ms, 10_000);
        assert_eq!(cfg.cluster.broker_session_timeout_ms, 3000);
        assert_eq!(cfg.cluster.offsets_topic_replication_factor, 3);
        assert_eq!(cfg.groups.offsets_commit_timeout_ms, 5000);
        let bad = |a: StartArgs| broker_config(&one_core(a)).unwrap_err();
        let e = bad(StartArgs {
            controller_snapshot_commands: Some(0),
            ..Default::default()
        });
        assert_eq!(
            e,
            "controller_snapshot_commands must be in 1..=10000000, got 0"
        );
        let e = bad(StartArgs {
            broker_session_timeout_ms: Some(600_001),
            ..Default::default()
        });
        assert_eq!(
            e,
            "broker_session_timeout_ms must be in 100..=600000, got 600001"
        );
        let e = bad(StartArgs {
            controller_request_timeout_ms: Some(99),
            ..Default::default()
        });
        assert!(
            e.contains("controller_request_timeout_ms must be in 100..=600000"),
            "{e}"
        );
        let e = bad(StartArgs {
            offsets_topic_replication_factor: Some(0),
            ..Default::default()
        });
        assert!(e.contains("offsets.topic.replication.factor"), "{e}");
        let e = bad(StartArgs {
            offsets_commit_timeout_ms: Some(i64::from(i32::MAX) + 1),
            ..Default::default()
        });
        assert!(e.contains("offsets.commit.timeout.ms"), "{e}");
        // A value the key's type cannot hold is refused by the TOML parser, naming the key.
        file.write("offsets_topic_replication_factor = 40000\n");
        let e = broker_config(&file.args()).unwrap_err();
        assert!(e.contains("offsets_topic_replication_factor"), "{e}");
    }
}
