//! Whole brokers in the test process, driven from the test thread: each broker runs on its
//! own thread with a one-core glommio executor (real loopback TCP between brokers); the
//! test thread queues commands for it and reads what it observed last (refreshed every
//! 20 ms). The test says what a command does (`run`) and what a node observes (`observe`).
//! [`World`] and [`Node`] are `Send` handles held by the test thread (`Arc<Mutex<..>>`
//! inside); each `Shard` stays on its own executor.
//!
//! A test crate takes it as `mod common { pub mod broker; pub mod loopback; }` (only what
//! it uses, as `raft_mesh.rs` says).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use freshet_engine::{cluster, new_mesh, BrokerConfig, Shard};
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use super::loopback::broker_config;

/// How long a queued command may take before the test fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(40);
/// How often a node takes a command from its queue and observes itself.
const OBSERVE_INTERVAL: Duration = Duration::from_millis(20);

/// One-core broker `node` with its data in `data_dir`, cluster RPC on `rpc`, `seeds`
/// (loopback ports): Raft heartbeat every 3 ticks, election after 30, controller requests
/// time out after 20 s.
pub fn config(data_dir: PathBuf, node: i32, rpc: u16, seeds: &[u16]) -> BrokerConfig {
    let mut cfg = broker_config(data_dir, node, 1, rpc, seeds);
    cfg.cluster.raft_heartbeat_ticks = 3;
    cfg.cluster.raft_election_ticks = 30;
    cfg.cluster.controller_request_timeout_ms = 20_000;
    cfg
}

/// A fresh data root `<tmp>/<name>-<pid>` for a test's brokers; also sends the brokers'
/// logs to the test output (filtered by RUST_LOG).
pub fn test_dir(name: &str) -> PathBuf {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// What every node observed last (`S`), and why a node did not start, by node id.
#[derive(Clone, Default)]
pub struct World<S> {
    pub seen: Arc<Mutex<BTreeMap<i32, S>>>,
    pub failed: Arc<Mutex<BTreeMap<i32, String>>>,
}

impl<S: Clone + Default + Debug> World<S> {
    /// What `node` observed last (`S::default()` before its first look).
    pub fn seen(&self, node: i32) -> S {
        self.seen
            .lock()
            .unwrap()
            .get(&node)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits up to `secs` for `f` to hold; panics naming `what` with every observation
    /// and start failure.
    pub fn wait(&self, what: &str, secs: u64, f: impl Fn(&World<S>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            if Instant::now() >= deadline {
                let seen = self.seen.lock().unwrap().clone();
                let failed = self.failed.lock().unwrap().clone();
                panic!("timed out: {what}; seen {seen:#?}; failed {failed:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Commands for a node, each with where its answer goes.
type Queue<C, R> = Arc<Mutex<Vec<(C, mpsc::Sender<R>)>>>;

/// A running broker: its thread, its stop flag and its command queue.
pub struct Node<C, R> {
    quit: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    todo: Queue<C, R>,
}

/// Starts broker `cfg` on a thread of its own. Once its cluster layer is up, every 20 ms it
/// runs a queued command (`run`, answered to [`Node::run`]) and stores `observe`'s view of
/// it in `world`. A failed `Shard::start` is stored in `world.failed` and ends the thread.
/// [`Node::stop`] stops the cluster layer and closes the partitions.
pub fn start<S, C, R>(
    cfg: BrokerConfig,
    world: &World<S>,
    observe: impl AsyncFn(&Shard) -> S + Clone + Send + 'static,
    run: impl AsyncFn(&Rc<Shard>, C) -> R + Clone + Send + 'static,
) -> Node<C, R>
where
    S: Clone + Send + 'static,
    C: Send + 'static,
    R: Send + 'static,
{
    let quit = Arc::new(AtomicBool::new(false));
    let todo: Queue<C, R> = Arc::default();
    let (q, t, w) = (quit.clone(), todo.clone(), world.clone());
    let thread = std::thread::spawn(move || {
        let node = cfg.node_id;
        let mesh = new_mesh(1, 64);
        let stop = Arc::new(AtomicBool::new(false));
        LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(1))
            .on_all_shards(move || async move {
                let shard =
                    match Shard::start(cfg, mesh, freshet_engine::system_clock(), stop).await {
                        Ok(s) => s,
                        Err(e) => {
                            w.failed.lock().unwrap().insert(node, e.to_string());
                            return;
                        }
                    };
                cluster::start(&shard).await.expect("cluster layer starts");
                while !q.load(Ordering::SeqCst) {
                    let next = t.lock().unwrap().pop();
                    if let Some((cmd, answer)) = next {
                        let _ = answer.send(run(&shard, cmd).await);
                    }
                    let seen = observe(&shard).await;
                    w.seen.lock().unwrap().insert(node, seen);
                    glommio::timer::sleep(OBSERVE_INTERVAL).await;
                }
                cluster::stop(&shard).await;
                shard.close_partitions().await;
            })
            .unwrap()
            .join_all()
            .into_iter()
            .for_each(|r| r.expect("core ran"));
    });
    Node { quit, thread, todo }
}

impl<C: Debug, R> Node<C, R> {
    /// Queues `cmd` and waits for its answer (at most 40 s).
    pub fn run(&self, cmd: C) -> R {
        let what = format!("{cmd:?}");
        let (tx, rx) = mpsc::channel();
        self.todo.lock().unwrap().push((cmd, tx));
        rx.recv_timeout(ANSWER_TIMEOUT)
            .unwrap_or_else(|e| panic!("{what} never answered: {e}"))
    }

    /// Stops the broker and waits for its thread.
    pub fn stop(self) {
        self.quit.store(true, Ordering::SeqCst);
        self.thread.join().expect("node thread");
    }
}
