//! A topic deleted and re-created under the same name while a replica's node was down
//! (several brokers in one process, one core each, real loopback TCP): the new topic has a
//! new topic id and a new Raft group but maps to the same partition directory name, which on
//! the returning node still holds the dead incarnation's log. The returning node must open
//! the new replica empty (its `replica.id` marker names the old incarnation: the directory
//! and the old group's state file go) and catch up from the new group's leader, so it holds
//! exactly the new records from offset 0 (Raft §5.3 Log Matching against the new group only).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet_engine::partition::Acks;
use freshet_engine::replica_marker;
use freshet_engine::{BrokerConfig, Shard};
use freshet_storage::batch::build_batch;

mod common {
    pub mod broker;
    pub mod loopback;
}
use common::broker::{self, Node, World};
use common::loopback::free_port;

fn config(dir: &Path, node: i32, rpc: u16, seeds: &[u16]) -> BrokerConfig {
    broker::config(dir.join(format!("node-{node}")), node, rpc, seeds)
}

/// What a node's partition `t`-0 looked like last (refreshed every 20 ms).
#[derive(Debug, Clone, Default)]
struct Seen {
    brokers: Vec<i32>,
    /// (group, log end offset, high watermark, committed bytes from offset 0) of `t`-0.
    t0: Option<(u64, i64, i64, Bytes)>,
}

async fn observe(shard: &Shard) -> Seen {
    let mut t0 = None;
    if let Some(p) = shard.partition("t", 0) {
        let o = p.offsets();
        let bytes = match p.read_committed(0, 1 << 20).await {
            Ok(f) => f.records,
            Err(_) => Bytes::new(),
        };
        t0 = Some((p.group, o.log_end_offset, o.high_watermark, bytes));
    }
    Seen {
        brokers: shard.metadata().brokers.keys().copied().collect(),
        t0,
    }
}

#[derive(Debug, Clone)]
enum Cmd {
    Create,
    Delete,
    Produce(u8),
}

/// Ok(group of `t`-0, or base offset of the record produced) or the error.
async fn run(shard: &Rc<Shard>, cmd: Cmd) -> Result<i64, String> {
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

fn start(cfg: BrokerConfig, world: &World<Seen>) -> Node<Cmd, Result<i64, String>> {
    broker::start(cfg, world, observe, run)
}

fn state_file(dir: &Path, node: i32, group: u64) -> PathBuf {
    dir.join(format!(
        "node-{node}/raft-state/core-0/group-{group:020}.state"
    ))
}

/// The bytes of every segment file (`*.log`) in partition directory `pdir`.
fn segment_bytes(pdir: &Path) -> Vec<u8> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

#[test]
fn a_topic_recreated_while_a_replica_was_down_starts_empty_there() {
    let dir = broker::test_dir("freshet-recreate");
    let ports = [free_port(), free_port(), free_port()];
    let world = World::default();
    let n0 = start(config(&dir, 0, ports[0], &ports), &world);
    let n1 = start(config(&dir, 1, ports[1], &ports), &world);
    let n2 = start(config(&dir, 2, ports[2], &ports), &world);
    world.wait("three brokers registered", 30, |w| {
        (0..3).all(|i| w.seen(i).brokers == vec![0, 1, 2])
    });

    // The first incarnation: 5 records, on every replica.
    let old_group = n0.run(Cmd::Create).expect("create") as u64;
    for _ in 0..5 {
        n0.run(Cmd::Produce(b'o')).expect("produce old");
    }
    world.wait("node 2 holds the old records", 20, |w| {
        w.seen(2).t0.is_some_and(|(_, _, hw, _)| hw == 5)
    });
    let pdir = dir.join("node-2/kafka/t-0");
    assert!(state_file(&dir, 2, old_group).exists());
    n2.stop();

    // Deleted and re-created (new id, new group) while node 2 is down; 2 new records.
    n0.run(Cmd::Delete).expect("delete");
    let new_group = n0.run(Cmd::Create).expect("re-create") as u64;
    assert_ne!(new_group, old_group, "group ids are never reused");
    assert_eq!(n0.run(Cmd::Produce(b'n')), Ok(0));
    assert_eq!(n0.run(Cmd::Produce(b'n')), Ok(1));
    // The returning node still has the old incarnation's directory (its marker is checked
    // below, after what the node serves).
    let before = replica_marker::read(&pdir);

    let mut seeds2 = ports.to_vec();
    seeds2[2] = free_port(); // a stopped in-process executor keeps its sockets (cluster_join.rs)
                             // Node 2 publishes its first metadata once its controller caught up, or after 3
                             // election timeouts: 9 s here, so the first state it opens replicas from already has
                             // the new incarnation (else it may open the old one and delete it on the delete command,
                             // and the directory claim this test is about never runs).
    let mut cfg2 = config(&dir, 2, seeds2[2], &seeds2);
    cfg2.cluster.raft_election_ticks = 300;
    let n2 = start(cfg2, &world);
    world.wait(
        "node 2 committed the new incarnation's 2 records",
        30,
        |w| {
            w.seen(2)
                .t0
                .is_some_and(|(g, _, hw, _)| g == new_group && hw >= 2)
        },
    );
    let (_, leo, hw, bytes) = world.seen(2).t0.unwrap();
    assert_eq!((leo, hw), (2, 2), "only the new records: none of the old 5");
    let (_, _, _, leader_bytes) = world.seen(0).t0.unwrap();
    assert_eq!(bytes, leader_bytes, "byte for byte the new group's log");
    assert!(!bytes.windows(8).any(|w| w == [b'o'; 8]), "no old record");
    // Nor on disk: the new group reads its log only from where it started (its anchor), so
    // a dead incarnation's records left below it would show only in the segment files.
    let files = segment_bytes(&pdir);
    assert!(
        files.windows(8).any(|w| w == [b'n'; 8]),
        "the new records on disk"
    );
    assert!(
        !files.windows(8).any(|w| w == [b'o'; 8]),
        "{} still holds the dead incarnation's records",
        pdir.display()
    );
    // The dead group's state file went with its directory.
    assert!(!state_file(&dir, 2, old_group).exists());
    assert!(state_file(&dir, 2, new_group).exists());
    let before = before.unwrap().expect("a marker before the restart");
    assert_eq!(before.group, old_group);
    let after = replica_marker::read(&pdir).unwrap().expect("marker");
    assert_eq!(after.group, new_group);

    for n in [n0, n1, n2] {
        n.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
