//! Log compaction through the per-core runtime (`RaftHandle::compact`, Raft §7) with nodes
//! talking over real loopback TCP, so the snapshot message crosses the real frame codec.

use freshet_raft::log::{GroupLog, MemLog};
use freshet_raft::meta::MemMetaStore;
use freshet_raft::multiraft::{MultiRaft, RaftConfig};
use freshet_raft::runtime::{spawn, RaftHandle, WaitFor};
use freshet_raft::tcp::{listen, RpcConfig, TcpTransport};
use glommio::channels::local_channel;

mod common;
use common::{batch, run, wait_until};

/// `n` nodes (ids 1..=n) over loopback TCP, each running the runtime with no groups yet.
fn cluster(n: u64) -> Vec<RaftHandle<MemLog>> {
    let mut inboxes = Vec::new();
    let mut addrs = Vec::new();
    for _ in 1..=n {
        let (tx, rx) = local_channel::new_bounded(1024);
        addrs.push(listen("127.0.0.1:0".parse().unwrap(), RpcConfig::default(), tx).unwrap());
        inboxes.push(rx);
    }
    (1..=n)
        .zip(inboxes)
        .map(|(id, rx)| {
            let t = TcpTransport::new(id, RpcConfig::default());
            for (peer, a) in (1..=n).zip(&addrs) {
                if peer != id {
                    t.add_peer(peer, *a);
                }
            }
            let mut cfg = RaftConfig::new(id);
            cfg.heartbeat_ticks = 2;
            cfg.election_ticks = 20;
            spawn(MultiRaft::new(cfg, MemMetaStore::default(), t), rx, 10)
        })
        .collect()
}

/// Raft §7: two of three replicas take writes and compact (retention / DeleteRecords); the
/// third replica starts later with an empty log, below the others' log start, and catches up
/// by a snapshot that carries only the position, then follows new writes.
#[test]
fn replica_joining_after_compaction_starts_its_log_at_the_leaders_log_start() {
    run(|| async {
        let nodes = cluster(3);
        let voters = vec![1, 2, 3];
        for h in &nodes[..2] {
            h.open_group(1, voters.clone(), MemLog::new())
                .await
                .unwrap();
        }
        wait_until(10, "a leader", || nodes[..2].iter().any(|h| h.is_leader(1))).await;
        let l = nodes.iter().position(|h| h.is_leader(1)).unwrap();
        for i in 0..10 {
            let c = nodes[l]
                .replicate(1, batch(2), WaitFor::Majority)
                .await
                .unwrap();
            assert_eq!(c.kafka_offset, 2 * i);
        }
        wait_until(5, "both replicas apply", || {
            nodes[..2].iter().all(|h| h.high_watermark(1) == Some(20))
        })
        .await;
        for h in &nodes[..2] {
            // Kafka offset 15 is inside the batch 14..16, which stays whole.
            assert_eq!(h.compact(1, 15).await.unwrap(), Some(14));
            assert_eq!(h.compact(1, 3).await.unwrap(), Some(14), "never backwards");
            assert_eq!(h.compact(9, 3).await.unwrap(), None, "unknown group");
        }
        wait_until(5, "status shows the new log start", || {
            nodes[l].status(1).is_some_and(|s| s.log_start_kafka == 14)
        })
        .await;
        let log = MemLog::new();
        let st = nodes[2]
            .open_group(1, voters.clone(), log.clone())
            .await
            .unwrap();
        wait_until(10, "the new replica catches up", || {
            nodes[2].high_watermark(1) == Some(20)
        })
        .await;
        assert_eq!(st.borrow().anchor.kafka_offset, 14, "installed snapshot");
        assert_eq!(st.borrow().kafka_to_log(13), None);
        assert!(log.log_start_offset() > 0, "its log starts at the anchor");
        let c = nodes[l]
            .replicate(1, batch(1), WaitFor::Majority)
            .await
            .unwrap();
        assert_eq!(c.kafka_offset, 20);
        wait_until(5, "the new replica follows new writes", || {
            nodes[2].high_watermark(1) == Some(21)
        })
        .await;
        for h in &nodes {
            h.stop().await;
        }
    });
}
