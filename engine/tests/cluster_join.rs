//! Growing a formed cluster, several brokers in one process (one core each, own executors,
//! real loopback TCP), with a controller log that is compacted every few commands:
//!
//! 1. Three founders form the cluster. Founder 2 stops; 12 topics are created, so the
//!    controller log is compacted below what node 2 applied (Raft §7). Node 2 restarts: its
//!    Raft log is restarted by a position-only snapshot, so it must fetch the metadata state
//!    itself (CONTROLLER_SNAPSHOT) before it tails the log.
//! 2. Node 3, whose RPC address is not among the seeds, joins: it is registered (JOIN →
//!    RegisterBroker through the controller leader), added as a learner of the controller
//!    group (KRaft observer; the voters stay the founders), catches up by snapshot, and the
//!    next topic places a replica on it (RF 4 needs it).
//! 3. A second node claiming id 3 (or a founder's id) from another RPC address is refused at
//!    start.
//! 4. Node 3 restarts: its identity says "joined", it rejoins without JOIN and applies the
//!    commands it missed.

use std::path::Path;
use std::rc::Rc;

use freshet_engine::cluster::{self, Identity};
use freshet_engine::controller::controller_of;
use freshet_engine::metadata::CONTROLLER_GROUP;
use freshet_engine::{BrokerConfig, Shard};

mod common {
    pub mod broker;
    pub mod loopback;
}
use common::broker::{self, Node, World};
use common::loopback::free_port;

/// Commands between controller snapshots (and so log compactions) in this test.
const SNAPSHOT_COMMANDS: u64 = 4;

fn config(dir: &Path, data: &str, node: i32, rpc: u16, seeds: &[u16]) -> BrokerConfig {
    let mut cfg = broker::config(dir.join(data), node, rpc, seeds);
    cfg.cluster.controller_snapshot_commands = SNAPSHOT_COMMANDS;
    cfg
}

/// What a node's core 0 saw last (refreshed every 20 ms).
#[derive(Debug, Clone, Default)]
struct Seen {
    revision: u64,
    topics: Vec<String>,
    brokers: Vec<i32>,
    /// Controller group: leader (Raft id), log start (Kafka offset), learners (Raft ids).
    leader: Option<u64>,
    log_start: i64,
    learners: Vec<u64>,
    voters: Vec<u64>,
    joined: bool,
    /// Topics with a replica open on this node.
    open: Vec<String>,
    /// Controller group term and commit index; this core's RPC counters (diagnostics, read
    /// through `Debug` in timeout messages).
    #[allow(dead_code)]
    term: u64,
    #[allow(dead_code)]
    commit: u64,
    #[allow(dead_code)]
    rpc: String,
}

async fn observe(shard: &Shard) -> Seen {
    let snap = shard.metadata();
    let st = shard.raft().status(CONTROLLER_GROUP);
    Seen {
        revision: snap.revision,
        topics: snap.topics.keys().cloned().collect(),
        brokers: snap.brokers.keys().copied().collect(),
        leader: st.as_ref().and_then(|s| s.leader),
        log_start: st.as_ref().map_or(-1, |s| s.log_start_kafka),
        learners: st.as_ref().map_or(vec![], |s| s.learners.clone()),
        voters: st.as_ref().map_or(vec![], |s| s.voters.clone()),
        joined: controller_of(shard).is_some_and(|c| c.joined()),
        open: snap
            .topics
            .keys()
            .filter(|t| shard.partition(t, 0).is_some())
            .cloned()
            .collect(),
        term: st.as_ref().map_or(0, |s| s.term),
        commit: st.as_ref().map_or(0, |s| s.commit_index),
        rpc: format!("{:?}", cluster::stats(shard)),
    }
}

/// Create topic `.0` (one partition) with replication factor `.1`.
#[derive(Debug)]
struct Create(String, i16);

/// The replicas of the new topic's partition 0, or the error.
async fn run(shard: &Rc<Shard>, Create(name, rf): Create) -> Result<Vec<i32>, String> {
    shard
        .create_topic(name, 1, rf, None, vec![])
        .await
        .map(|m| m.assignment(0).unwrap().replicas.clone())
        .map_err(|e| e.to_string())
}

type BrokerNode = Node<Create, Result<Vec<i32>, String>>;

fn start(cfg: BrokerConfig, world: &World<Seen>) -> BrokerNode {
    broker::start(cfg, world, observe, run)
}

fn create(node: &BrokerNode, name: &str, rf: i16) -> Result<Vec<i32>, String> {
    node.run(Create(name.to_string(), rf))
}

fn raft_id(broker: i32) -> u64 {
    broker as u64 + 1
}

#[test]
fn a_node_joins_a_formed_cluster_and_lagging_replicas_catch_up_from_a_shipped_snapshot() {
    // RUST_LOG=info shows the brokers' logs (which node installed which snapshot).
    let dir = broker::test_dir("freshet-join");
    let ports = [free_port(), free_port(), free_port()];
    let p3 = free_port();
    let world = World::default();
    let founder = |i: i32| config(&dir, &format!("node-{i}"), i, ports[i as usize], &ports);

    // 1. Three founders; every one registered.
    let n0 = start(founder(0), &world);
    let n1 = start(founder(1), &world);
    let n2 = start(founder(2), &world);
    world.wait("three founders registered everywhere", 30, |w| {
        (0..3).all(|i| w.seen(i).brokers == vec![0, 1, 2])
    });
    n2.stop();
    // 12 topics (and 3 registrations) while node 2 is away: snapshots every 4 commands,
    // the log is compacted behind the previous one.
    for i in 0..12 {
        let r = create(&n0, &format!("t{i}"), 1);
        assert!(r.is_ok(), "t{i}: {r:?}");
    }
    // A create is answered once committed; node 0 observes its own apply up to 20 ms later.
    world.wait("node 0 applied all 15 commands", 10, |w| {
        w.seen(0).revision >= 15
    });
    let rev = world.seen(0).revision;
    world.wait("the founders compacted the controller log", 10, |w| {
        w.seen(0).log_start >= SNAPSHOT_COMMANDS as i64
            && w.seen(1).log_start >= SNAPSHOT_COMMANDS as i64
    });
    // In one process a stopped executor leaves its accepted sockets open (peers would keep
    // writing into them), so a restarted node comes back on a new RPC port: a founder may
    // change its address (it re-registers; peers learn it from its HELLO).
    let mut seeds2 = ports.to_vec();
    seeds2[2] = free_port();
    let n2 = start(config(&dir, "node-2", 2, seeds2[2], &seeds2), &world);
    world.wait("node 2 caught up past the compacted prefix", 30, |w| {
        w.seen(2).revision >= rev && w.seen(2).topics.len() == 12
    });
    // Its own log restarted past revision 0: the state came from a shipped snapshot.
    assert!(
        world.seen(2).log_start >= SNAPSHOT_COMMANDS as i64,
        "{:?}",
        world.seen(2)
    );
    assert!(dir.join("node-2/controller/snapshot").exists());

    // 2. Node 3 joins; its own address is not a seed.
    let n3 = start(config(&dir, "node-3", 3, p3, &ports), &world);
    world.wait("node 3 registered and caught up", 40, |w| {
        let s = w.seen(3);
        s.brokers == vec![0, 1, 2, 3] && s.topics.len() == 12 && s.joined
    });
    let s3 = world.seen(3);
    assert!(s3.log_start >= SNAPSHOT_COMMANDS as i64, "{s3:?}");
    assert_eq!(
        cluster::identity::load(&dir.join("node-3")).unwrap(),
        Some(Identity {
            node_id: 3,
            founders: vec![0, 1, 2],
            joined: true
        })
    );
    // The leader's view of the controller group: founders vote, node 3 learns.
    world.wait("node 3 is a learner on the controller leader", 10, |w| {
        (0..3).any(|i| {
            let s = w.seen(i);
            s.leader == Some(raft_id(i)) && s.learners == vec![raft_id(3)]
        })
    });
    let leader = (0..3)
        .find(|i| world.seen(*i).leader == Some(raft_id(*i)))
        .map(|i| world.seen(i))
        .expect("a founder leads");
    assert_eq!(leader.voters, vec![raft_id(0), raft_id(1), raft_id(2)]);
    // RF 4 is only possible with the joined broker; submitted on node 3 (forwarded).
    let replicas = create(&n3, "wide", 4).expect("RF4 topic on 4 brokers");
    let mut sorted = replicas.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 1, 2, 3]);
    world.wait("node 3 opened its replica of the RF4 topic", 10, |w| {
        w.seen(3).open.contains(&"wide".to_string())
    });

    // 3. Another node claiming id 3 from another address is refused ...
    let refused = |data: &str, id: i32, what: &str| {
        let dup = start(config(&dir, data, id, free_port(), &ports), &world);
        world.wait(what, 30, |w| w.failed.lock().unwrap().contains_key(&id));
        let why = world.failed.lock().unwrap()[&id].clone();
        assert!(
            why.contains("join refused") && why.contains("already registered"),
            "{why}"
        );
        dup.stop();
        assert_eq!(
            cluster::identity::load(&dir.join(data)).unwrap(),
            None,
            "a refused node persists no identity"
        );
    };
    refused("node-3-dup", 3, "the duplicate id is refused");
    // ... and so is a new node with a founder's id (it must not take the founder's seat).
    refused("node-1-dup", 1, "the founder's id is refused");

    // 4. Node 3 restarts (same data; a new RPC port, see above) after missing a command.
    n3.stop();
    create(&n0, "after", 3).expect("RF3 topic without node 3");
    world.failed.lock().unwrap().clear();
    let n3 = start(config(&dir, "node-3", 3, free_port(), &ports), &world);
    world.wait("restarted node 3 applied what it missed", 30, |w| {
        let s = w.seen(3);
        s.topics.contains(&"after".to_string()) && s.joined && s.brokers.len() == 4
    });
    assert!(world.failed.lock().unwrap().is_empty());

    for n in [n3, n2, n1, n0] {
        n.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
