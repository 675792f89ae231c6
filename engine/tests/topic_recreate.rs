//! A topic deleted and re-created under the same name while a replica's node was down
//! (several brokers in one process, one core each, real loopback TCP): the new topic has a
//! new topic id and a new Raft group but maps to the same partition directory name, which on
//! the returning node still holds the dead incarnation's log. The returning node must open
//! the new replica empty (its `replica.id` marker names the old incarnation: the directory
//! and the old group's state file go) and catch up from the new group's leader, so it holds
//! exactly the new records from offset 0 (Raft §5.3 Log Matching against the new group only).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet_engine::partition::Acks;
use freshet_engine::replica_marker;
use freshet_engine::{cluster, new_mesh, BrokerConfig, Shard};
use freshet_storage::batch::build_batch;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, node: i32, rpc: u16, seeds: &[u16]) -> BrokerConfig {
    let mut cfg = BrokerConfig::new(
        dir.join(format!("node-{node}")),
        format!("127.0.0.1:{}", free_port()),
        node,
        1,
    );
    cfg.cluster.rpc_addr = format!("127.0.0.1:{rpc}");
    cfg.cluster.seeds = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    cfg.cluster.leaders_report_interval_ms = 200;
    cfg.cluster.raft_heartbeat_ticks = 3;
    cfg.cluster.raft_election_ticks = 30;
    cfg.cluster.controller_request_timeout_ms = 20_000;
    cfg
}

/// What a node's partition `t`-0 looked like last (refreshed every 20 ms).
#[derive(Debug, Clone, Default)]
struct Seen {
    brokers: Vec<i32>,
    /// (group, log end offset, high watermark, committed bytes from offset 0) of `t`-0.
    t0: Option<(u64, i64, i64, Bytes)>,
}

#[derive(Debug, Clone)]
enum Cmd {
    Create,
    Delete,
    Produce(u8),
}

type Todo = Arc<Mutex<Vec<Cmd>>>;

#[derive(Clone, Default)]
struct World {
    seen: Arc<Mutex<BTreeMap<i32, Seen>>>,
    /// Answers, in order: Ok(group or base offset) or the error.
    done: Arc<Mutex<Vec<Result<i64, String>>>>,
}

impl World {
    fn seen(&self, node: i32) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .get(&node)
            .cloned()
            .unwrap_or_default()
    }

    fn wait(&self, what: &str, secs: u64, f: impl Fn(&World) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            let seen = self.seen.lock().unwrap().clone();
            assert!(
                Instant::now() < deadline,
                "timed out: {what}; seen {seen:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Node {
    quit: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    todo: Todo,
}

async fn run(shard: &std::rc::Rc<Shard>, cmd: Cmd) -> Result<i64, String> {
    match cmd {
        Cmd::Create => shard
            .create_topic("t".into(), 1, 3, Some(vec![vec![0, 1, 2]]), vec![])
            .await
            .map(|m| m.assignment(0).unwrap().group as i64)
            .map_err(|e| e.to_string()),
        Cmd::Delete => shard
            .delete_topic("t".into())
            .await
            .map(|()| 0)
            .map_err(|e| e.to_string()),
        Cmd::Produce(tag) => {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let b = Bytes::from(build_batch(1, 8, 1_700_000_000_000, tag));
                match shard.local_replicate("t", 0, b, Acks::All).await {
                    Ok(o) => return Ok(o.base_offset),
                    Err(code) if Instant::now() < deadline => {
                        let _ = code;
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                    }
                    Err(code) => return Err(format!("produce failed with code {code}")),
                }
            }
        }
    }
}

fn start(cfg: BrokerConfig, world: &World) -> Node {
    let quit = Arc::new(AtomicBool::new(false));
    let todo: Todo = Arc::default();
    let (q, t, w) = (quit.clone(), todo.clone(), world.clone());
    let thread = std::thread::spawn(move || {
        let node = cfg.node_id;
        let mesh = new_mesh(1, 64);
        let stop = Arc::new(AtomicBool::new(false));
        LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(1))
            .on_all_shards(move || async move {
                let shard = Shard::start(cfg, mesh, freshet_engine::system_clock(), stop)
                    .await
                    .expect("broker starts");
                cluster::start(&shard).await.expect("cluster layer starts");
                while !q.load(Ordering::SeqCst) {
                    let next = t.lock().unwrap().pop();
                    if let Some(cmd) = next {
                        let r = run(&shard, cmd).await;
                        w.done.lock().unwrap().push(r);
                    }
                    let mut t0 = None;
                    if let Some(p) = shard.partition("t", 0) {
                        let o = p.offsets();
                        let bytes = match p.read_committed(0, 1 << 20).await {
                            Ok(f) => f.records,
                            Err(_) => Bytes::new(),
                        };
                        t0 = Some((p.group, o.log_end_offset, o.high_watermark, bytes));
                    }
                    let seen = Seen {
                        brokers: shard.metadata().brokers.keys().copied().collect(),
                        t0,
                    };
                    w.seen.lock().unwrap().insert(node, seen);
                    glommio::timer::sleep(Duration::from_millis(20)).await;
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

impl Node {
    fn run(&self, world: &World, cmd: Cmd) -> Result<i64, String> {
        let n = world.done.lock().unwrap().len();
        self.todo.lock().unwrap().push(cmd.clone());
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(r) = world.done.lock().unwrap().get(n) {
                return r.clone();
            }
            assert!(Instant::now() < deadline, "{cmd:?} never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(self) {
        self.quit.store(true, Ordering::SeqCst);
        self.thread.join().expect("node thread");
    }
}

fn state_file(dir: &Path, node: i32, group: u64) -> PathBuf {
    dir.join(format!(
        "node-{node}/raft-state/core-0/group-{group:020}.state"
    ))
}

#[test]
fn a_topic_recreated_while_a_replica_was_down_starts_empty_there() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("freshet-recreate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ports = [free_port(), free_port(), free_port()];
    let world = World::default();
    let n0 = start(config(&dir, 0, ports[0], &ports), &world);
    let n1 = start(config(&dir, 1, ports[1], &ports), &world);
    let n2 = start(config(&dir, 2, ports[2], &ports), &world);
    world.wait("three brokers registered", 30, |w| {
        (0..3).all(|i| w.seen(i).brokers == vec![0, 1, 2])
    });

    // The first incarnation: 5 records, on every replica.
    let old_group = n0.run(&world, Cmd::Create).expect("create") as u64;
    for _ in 0..5 {
        n0.run(&world, Cmd::Produce(b'o')).expect("produce old");
    }
    world.wait("node 2 holds the old records", 20, |w| {
        w.seen(2).t0.is_some_and(|(_, _, hw, _)| hw == 5)
    });
    let pdir = dir.join("node-2/kafka/t-0");
    assert!(state_file(&dir, 2, old_group).exists());
    n2.stop();

    // Deleted and re-created (new id, new group) while node 2 is down; 2 new records.
    n0.run(&world, Cmd::Delete).expect("delete");
    let new_group = n0.run(&world, Cmd::Create).expect("re-create") as u64;
    assert_ne!(new_group, old_group, "group ids are never reused");
    assert_eq!(n0.run(&world, Cmd::Produce(b'n')), Ok(0));
    assert_eq!(n0.run(&world, Cmd::Produce(b'n')), Ok(1));
    // The returning node still has the old incarnation's directory.
    let before = replica_marker::read(&pdir).unwrap().expect("marker");
    assert_eq!(before.group, old_group);

    let mut seeds2 = ports.to_vec();
    seeds2[2] = free_port(); // a stopped in-process executor keeps its sockets (cluster_join.rs)
    let n2 = start(config(&dir, 2, seeds2[2], &seeds2), &world);
    world.wait("node 2 holds the new incarnation's 2 records", 30, |w| {
        w.seen(2)
            .t0
            .is_some_and(|(g, _, hw, _)| g == new_group && hw == 2)
    });
    let (_, leo, _, bytes) = world.seen(2).t0.unwrap();
    assert_eq!(leo, 2, "only the new records: none of the old 5");
    let (_, _, _, leader_bytes) = world.seen(0).t0.unwrap();
    assert_eq!(bytes, leader_bytes, "byte for byte the new group's log");
    assert!(!bytes.windows(8).any(|w| w == [b'o'; 8]), "no old record");
    let after = replica_marker::read(&pdir).unwrap().expect("marker");
    assert_eq!(after.group, new_group);
    // The dead group's state file went with its directory.
    assert!(!state_file(&dir, 2, old_group).exists());
    assert!(state_file(&dir, 2, new_group).exists());

    for n in [n0, n1, n2] {
        n.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
