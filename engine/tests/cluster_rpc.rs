//! Two brokers in one process (node 0 with two cores, node 1 with one), each on its own
//! executors, talking over real loopback TCP: discovery from `--seeds` (HELLO), founders,
//! registered methods called by broker id (served on core 0 even when another core accepted
//! the connection), leader reports crossing nodes (LEADERS) and cores (core 0's push), and
//! the persisted founders on a restart without the other node.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use freshet_engine::cluster::{self, ClusterError, LeaderInfo, MethodError, RpcError};
use freshet_engine::{new_mesh, BrokerConfig, Shard};
use freshet_raft::runtime::GroupStatus;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

mod common {
    pub mod loopback;
}
use common::loopback::{broker_config, free_port};

const ECHO: u16 = 100;

fn config(dir: &std::path::Path, node: i32, cores: usize, rpc: u16, seeds: &[u16]) -> BrokerConfig {
    broker_config(dir.join(format!("node-{node}")), node, cores, rpc, seeds)
}

/// Runs `body` on every core of a broker on its own threads; returns a join handle.
fn spawn_node<F, Fut>(cfg: BrokerConfig, body: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce(Rc<Shard>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    std::thread::spawn(move || {
        let cores = cfg.cores;
        let mesh = new_mesh(cores, 64);
        let stop = Arc::new(AtomicBool::new(false));
        let results = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(cores))
            .on_all_shards(move || async move {
                let shard = Shard::start(cfg, mesh, freshet_engine::system_clock(), stop)
                    .await
                    .expect("shard starts");
                cluster::start(&shard).await.expect("cluster layer starts");
                body(shard.clone()).await;
                cluster::stop(&shard).await;
                shard.close_partitions().await;
            })
            .unwrap()
            .join_all();
        for r in results {
            r.expect("core ran to completion");
        }
    })
}

fn status(leader_raft_id: u64, term: u64, in_sync: &[u64]) -> GroupStatus {
    GroupStatus {
        leader: Some(leader_raft_id),
        term,
        in_sync: in_sync.to_vec(),
        ..Default::default()
    }
}

async fn eventually_leader(shard: &Shard, group: u64, want: LeaderInfo) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = shard.leader_of(group);
        if got.as_ref() == Some(&want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {} core {}: leader of {group} is {got:?}, want {want:?}",
            shard.config().node_id,
            shard.core()
        );
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// Every core of both nodes checks in, then waits for all: nobody stops serving early.
async fn barrier(done: &AtomicUsize, total: usize) {
    done.fetch_add(1, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::SeqCst) < total {
        assert!(std::time::Instant::now() < deadline, "barrier timed out");
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn two_nodes_discover_each_other_call_methods_and_share_leaders() {
    let dir = std::env::temp_dir().join(format!("freshet-cluster-rpc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (p0, p1) = (free_port(), free_port());
    let seeds = [p0, p1];
    let done = Arc::new(AtomicUsize::new(0));
    let total = 3; // node 0's two cores and node 1's one

    let d = done.clone();
    let node1 = spawn_node(config(&dir, 1, 1, p1, &seeds), move |shard| async move {
        cluster::register_method(
            &shard,
            ECHO,
            Rc::new(|s, payload| {
                Box::pin(async move {
                    if payload.is_empty() {
                        return Err(MethodError::Failed("empty".into()));
                    }
                    let mut v = format!("{}:", s.config().node_id).into_bytes();
                    v.extend_from_slice(&payload);
                    Ok(Bytes::from(v))
                })
            }),
        );
        assert_eq!(cluster::founders(&shard).await.unwrap(), vec![0, 1]);
        // This node leads group 42 at term 3 with both replicas in sync (Raft ids 2 and 1).
        cluster::publish_local(&shard, 42, &status(2, 3, &[1, 2]));
        // Node 0's core 1 leads group 43: reported to node 0's core 0, merged, sent here.
        eventually_leader(
            &shard,
            43,
            LeaderInfo {
                leader: 0,
                epoch: 5,
                isr: vec![0],
            },
        )
        .await;
        barrier(&d, total).await;
    });

    let d = done.clone();
    let node0 = spawn_node(config(&dir, 0, 2, p0, &seeds), move |shard| async move {
        // Founders are known on every core once both seeds answered HELLO.
        assert_eq!(cluster::founders(&shard).await.unwrap(), vec![0, 1]);
        let t = Duration::from_secs(5);
        if shard.core() == 1 {
            // The peer's method is served on its core 0; the caller is on core 1.
            let mut answer = None;
            for _ in 0..200 {
                match cluster::rpc_call(&shard, 1, ECHO, Bytes::from_static(b"ping"), t).await {
                    Ok(b) => {
                        answer = Some(b);
                        break;
                    }
                    // Node 1 registers its method right after starting; retry until then.
                    Err(ClusterError::Rpc(RpcError::UnknownMethod(ECHO))) => {
                        glommio::timer::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => panic!("echo failed: {e}"),
                }
            }
            assert_eq!(answer, Some(Bytes::from_static(b"1:ping")));
            assert!(matches!(
                cluster::rpc_call(&shard, 1, ECHO, Bytes::new(), t).await,
                Err(ClusterError::Rpc(RpcError::Remote { ref message, .. })) if message == "empty"
            ));
            assert_eq!(
                cluster::rpc_call(&shard, 1, 999, Bytes::new(), t).await,
                Err(ClusterError::Rpc(RpcError::UnknownMethod(999)))
            );
            assert_eq!(
                cluster::rpc_call(&shard, 7, ECHO, Bytes::new(), t).await,
                Err(ClusterError::UnknownPeer(7))
            );
            cluster::publish_local(&shard, 43, &status(1, 5, &[1]));
        }
        // Node 1's report reaches both cores of node 0 (core 0 merges, then pushes to core 1).
        eventually_leader(
            &shard,
            42,
            LeaderInfo {
                leader: 1,
                epoch: 3,
                isr: vec![0, 1],
            },
        )
        .await;
        // A core's own report is visible on its sibling core too.
        eventually_leader(
            &shard,
            43,
            LeaderInfo {
                leader: 0,
                epoch: 5,
                isr: vec![0],
            },
        )
        .await;
        assert!(cluster::peers(&shard).iter().any(|p| p.id == 1));
        barrier(&d, total).await;
    });
    node1.join().expect("node 1");
    node0.join().expect("node 0");

    // Restart node 0 alone: the founders come from its data directory at once, although
    // node 1 is gone.
    let restarted = spawn_node(config(&dir, 0, 1, p0, &seeds), |shard| async move {
        let t0 = std::time::Instant::now();
        assert_eq!(cluster::founders(&shard).await.unwrap(), vec![0, 1]);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "did not wait for seeds"
        );
    });
    restarted.join().expect("restart");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_node_outside_the_seeds_may_join_but_a_data_directory_of_another_node_is_refused() {
    let dir = std::env::temp_dir().join(format!("freshet-cluster-cfg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (p0, p1) = (free_port(), free_port());
    // Not a seed: the flags are valid (the node can only join a cluster the seeds formed).
    let cfg = config(&dir, 0, 1, p0, &[p1]);
    assert_eq!(
        cluster::validate(&cfg),
        Ok(vec![format!("127.0.0.1:{p1}").parse().unwrap()])
    );
    let mut cfg = config(&dir, 0, 1, p0, &[p1]);
    cfg.cluster.seeds = vec!["no-port".into()];
    assert!(matches!(
        cluster::validate(&cfg),
        Err(ClusterError::Config(m)) if m.contains("seed")
    ));
    // Data directory of node 0 with founders {0, 1}, reused with --node-id 1.
    std::fs::create_dir_all(dir.join("node-0")).unwrap();
    cluster::identity::store(
        &dir.join("node-0"),
        &cluster::Identity {
            node_id: 0,
            founders: vec![0, 1],
            joined: false,
        },
    )
    .unwrap();
    let mut cfg = config(&dir, 1, 1, p1, &[p0, p1]);
    cfg.data_dir = dir.join("node-0");
    let h = std::thread::spawn(move || {
        let mesh = new_mesh(1, 16);
        let stop = Arc::new(AtomicBool::new(false));
        LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(1))
            .on_all_shards(move || async move {
                // Core 0's start asks for the founders (the controller's voters), which
                // starts the cluster layer: either call reports the foreign data directory.
                let e = match Shard::start(cfg, mesh, freshet_engine::system_clock(), stop).await {
                    Err(e) => e.to_string(),
                    Ok(shard) => {
                        let e = cluster::start(&shard).await.unwrap_err().to_string();
                        shard.close_partitions().await;
                        e
                    }
                };
                assert!(e.contains("belongs to node 0, not --node-id 1"), "{e}");
            })
            .unwrap()
            .join_all()
    });
    for r in h.join().unwrap() {
        r.expect("core ran");
    }
    let _ = std::fs::remove_dir_all(PathBuf::from(&dir));
}
