//! Set-up shared by the engine's replicated-partition scenario tests: Raft runtimes for a
//! few nodes talking over loopback TCP, each feeding its status changes to the partition
//! opened on it. Everything here is per-core (`!Send`): built and used on the test's one
//! glommio executor.
//!
//! A test crate takes it as `mod common { pub mod raft_mesh; }`: every `tests/*.rs` is a
//! crate of its own and names only the `common/` helpers it uses (an unused helper would be
//! dead code under `clippy -D warnings`).

use std::cell::RefCell;
use std::rc::Rc;

use freshet_engine::partition::{Partition, PartitionRaft};
use freshet_raft::meta::MemMetaStore;
use freshet_raft::multiraft::{MultiRaft, RaftConfig};
use freshet_raft::runtime::spawn;
use freshet_raft::tcp::{listen, RpcConfig, TcpTransport};
use glommio::channels::local_channel;

/// Where a node's partition goes once opened; the node's runtime reports to it.
pub type PartitionSlot = Rc<RefCell<Option<Rc<Partition>>>>;

/// One Raft runtime per node of `nodes` (Raft node ids), every one a peer of the others
/// over loopback TCP (ticks of 10 ms, heartbeat 2 ticks, election 10, in-sync lag 20), each
/// with the slot its group status changes are handed to (`Partition::on_status`).
pub fn raft_mesh(nodes: &[u64]) -> Vec<(PartitionRaft, PartitionSlot)> {
    let mut inboxes = Vec::new();
    let mut addrs = Vec::new();
    for node in nodes {
        let (tx, rx) = local_channel::new_bounded(1024);
        let a = listen("127.0.0.1:0".parse().unwrap(), RpcConfig::default(), tx).unwrap();
        addrs.push((*node, a));
        inboxes.push(rx);
    }
    let mut mesh = Vec::new();
    for (node, rx) in nodes.iter().copied().zip(inboxes) {
        let t = TcpTransport::new(node, RpcConfig::default());
        for (peer, a) in &addrs {
            if *peer != node {
                t.add_peer(*peer, *a);
            }
        }
        let mut cfg = RaftConfig::new(node);
        cfg.heartbeat_ticks = 2;
        cfg.election_ticks = 10;
        cfg.in_sync_lag_ticks = 20;
        let raft: PartitionRaft = spawn(MultiRaft::new(cfg, MemMetaStore::default(), t), rx, 10);
        let slot: PartitionSlot = Rc::default();
        let s = slot.clone();
        raft.on_change(Box::new(move |_, status| {
            if let Some(p) = s.borrow().as_ref() {
                p.on_status(status);
            }
        }));
        mesh.push((raft, slot));
    }
    mesh
}

/// Polls `f` every 10 ms until it holds; panics naming `what` after `secs` seconds.
pub async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(secs),
            "timed out: {what}"
        );
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A partition spec as these tests open it: partition 0 of `topic`, default topic config,
/// 1 MiB producer-state scan; the rest as given.
pub fn partition_spec(
    topic: &str,
    topic_id: [u8; 16],
    group: u64,
    replicas: Vec<i32>,
    dir: std::path::PathBuf,
    min_insync_replicas: i32,
) -> freshet_engine::partition::PartitionSpec {
    let config = freshet_engine::config::TopicConfig::default();
    freshet_engine::partition::PartitionSpec {
        topic: topic.into(),
        index: 0,
        topic_id,
        group,
        replicas,
        dir,
        config: config.effective(&config),
        min_insync_replicas,
        producer_state_scan_bytes: 1 << 20,
    }
}
