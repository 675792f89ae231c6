//! Scenario tests of the per-core Raft runtime (`freshet_raft::runtime`) on glommio with
//! nodes talking over real loopback TCP. Unreachable nodes are made with [`Gate`], a transport
//! that drops everything a node sends while closed (the node still receives).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use freshet_raft::log::{GroupLog, MemLog};
use freshet_raft::meta::{MemMetaStore, MetaStore};
use freshet_raft::multiraft::{DriverError, MultiRaft, ProposeError, RaftConfig};
use freshet_raft::runtime::{spawn, GroupStatus, RaftHandle, WaitFor};
use freshet_raft::tcp::{listen, RpcConfig, TcpTransport};
use freshet_raft::transport::{Envelope, GroupId, NodeId, Transport};
use glommio::channels::local_channel;

const TICK_MS: u64 = 10;

mod common;
use common::{batch, run, wait_until};

/// A TCP transport whose sending side can be closed (the node stops answering).
#[derive(Clone)]
struct Gate {
    inner: TcpTransport,
    closed: Rc<Cell<bool>>,
}

impl Transport for Gate {
    fn send(&self, env: Envelope) {
        if !self.closed.get() {
            self.inner.send(env);
        }
    }
}

struct Node {
    id: NodeId,
    raft: RaftHandle<MemLog>,
    gate: Rc<Cell<bool>>,
    meta: MemMetaStore,
}

/// `n` nodes (ids 1..=n) over loopback TCP, each running the runtime with no groups yet.
fn cluster(n: u64, tune: impl Fn(&mut RaftConfig)) -> Vec<Node> {
    let mut inboxes = Vec::new();
    let mut addrs = Vec::new();
    for _ in 1..=n {
        let (tx, rx) = local_channel::new_bounded(1024);
        addrs.push(listen("127.0.0.1:0".parse().unwrap(), RpcConfig::default(), tx).unwrap());
        inboxes.push(rx);
    }
    let mut nodes = Vec::new();
    for (id, rx) in (1..=n).zip(inboxes) {
        let t = TcpTransport::new(id, RpcConfig::default());
        for (peer, a) in (1..=n).zip(&addrs) {
            if peer != id {
                t.add_peer(peer, *a);
            }
        }
        let gate = Rc::new(Cell::new(false));
        let mut cfg = RaftConfig::new(id);
        cfg.heartbeat_ticks = 2;
        cfg.election_ticks = 20;
        cfg.in_sync_lag_ticks = 20;
        tune(&mut cfg);
        let meta = MemMetaStore::default();
        let transport = Gate {
            inner: t,
            closed: gate.clone(),
        };
        let d = MultiRaft::new(cfg, meta.clone(), transport);
        nodes.push(Node {
            id,
            raft: spawn(d, rx, TICK_MS),
            gate,
            meta,
        });
    }
    nodes
}

async fn open_everywhere(nodes: &[Node], group: GroupId) {
    let voters: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
    for n in nodes {
        n.raft
            .open_group(group, voters.clone(), MemLog::new())
            .await
            .unwrap();
    }
}

async fn leader_of(nodes: &[Node], group: GroupId) -> usize {
    wait_until(10, "a leader", || {
        nodes.iter().any(|n| n.raft.is_leader(group))
    })
    .await;
    nodes.iter().position(|n| n.raft.is_leader(group)).unwrap()
}

/// Records every status `on_change` reports.
fn record_changes(h: &RaftHandle<MemLog>) -> Rc<RefCell<Vec<(GroupId, GroupStatus)>>> {
    let seen: Rc<RefCell<Vec<(GroupId, GroupStatus)>>> = Rc::default();
    let s = seen.clone();
    h.on_change(Box::new(move |g, st| s.borrow_mut().push((g, st.clone()))));
    seen
}

/// Raft §5.2: a group whose only voter is this node elects itself (at once, on open);
/// §5.3 / §8: a closed group reopened on its log recovers every committed entry and its
/// offsets continue. Groups come and go while the loop runs.
#[test]
fn groups_are_opened_closed_and_reopened_while_the_loop_runs() {
    run(|| async {
        let nodes = cluster(1, |_| {});
        let h = &nodes[0].raft;
        let seen = record_changes(h);
        h.open_group(1, vec![1], MemLog::new()).await.unwrap();
        let st = h
            .status(1)
            .expect("published as soon as open_group returns");
        assert_eq!(st.leader, Some(1), "single voter leads at once");
        assert_eq!(st.voters, vec![1]);
        assert_eq!(st.in_sync, vec![1]);
        assert!(st.quorum_active);
        let a = h.replicate(1, batch(3), WaitFor::Majority).await.unwrap();
        assert_eq!((a.kafka_offset, a.high_watermark), (0, 3));
        h.open_group(2, vec![1], MemLog::new()).await.unwrap();
        assert!(matches!(
            h.open_group(2, vec![1], MemLog::new()).await,
            Err(DriverError::AlreadyOpen(2))
        ));
        let b = h.replicate(2, batch(1), WaitFor::Majority).await.unwrap();
        assert_eq!(b.kafka_offset, 0, "groups have their own offsets");
        let c = h.replicate(1, batch(2), WaitFor::Leader).await.unwrap();
        assert_eq!(c.kafka_offset, 3);
        assert_eq!(h.node_id(), 1);
        assert!(
            h.stats().flushes >= 3,
            "the driver flushed every write: {:?}",
            h.stats()
        );

        let log = h.close_group(1).await.expect("group 1 was open");
        assert!(h.status(1).is_none());
        assert!(h.close_group(1).await.is_none(), "closing twice");
        assert_eq!(
            h.replicate(1, batch(1), WaitFor::Majority).await,
            Err(ProposeError::UnknownGroup(1))
        );
        // Group 2 is unaffected.
        let d = h.replicate(2, batch(1), WaitFor::Majority).await.unwrap();
        assert_eq!(d.kafka_offset, 1);

        let state = h.open_group(1, vec![1], log).await.unwrap();
        let e = h.replicate(1, batch(1), WaitFor::Majority).await.unwrap();
        assert_eq!(e.kafka_offset, 5, "offsets continue after reopen");
        assert_eq!(state.borrow().kafka_end_offset(), 6);
        wait_until(5, "statuses settle", || {
            h.status(1).is_some_and(|s| s.high_watermark == 6)
        })
        .await;
        let seen = seen.borrow();
        assert!(
            seen.iter().any(|(g, s)| *g == 2 && s.leader == Some(1)),
            "on_change reports a newly opened group"
        );
        let ones: Vec<&GroupStatus> = seen
            .iter()
            .filter(|(g, _)| *g == 1)
            .map(|(_, s)| s)
            .collect();
        assert!(
            ones.windows(2).all(|w| w[0] != w[1]),
            "on_change reports changes only: {ones:?}"
        );
        assert_eq!(
            ones.last().map(|s| s.high_watermark),
            Some(6),
            "the last change published is the latest"
        );
    });
}

/// Kafka acks=1 vs acks=all. Raft §5.3: an entry is committed once a majority stores it;
/// §8: a client learning of commit never loses it. With both followers unable to answer,
/// the leader's own flushed append satisfies WaitFor::Leader, but WaitFor::Majority waits
/// until the followers' acknowledgements get through again.
#[test]
fn acks_1_resolves_at_the_leaders_flush_while_acks_all_waits_for_a_majority() {
    run(|| async {
        // Election timeout 1-2 s and check-quorum every 2 s: the leader keeps its role for
        // the length of the test while nobody answers it.
        let nodes = cluster(3, |c| {
            c.heartbeat_ticks = 5;
            c.election_ticks = 100;
        });
        open_everywhere(&nodes, 7).await;
        let l = leader_of(&nodes, 7).await;
        let leader = nodes[l].raft.clone();
        let first = leader
            .replicate(7, batch(2), WaitFor::Majority)
            .await
            .unwrap();
        assert_eq!(first.high_watermark, 2);
        for (i, n) in nodes.iter().enumerate() {
            if i != l {
                n.gate.set(true);
            }
        }
        let t = Instant::now();
        let acks1 = leader
            .replicate(7, batch(3), WaitFor::Leader)
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(acks1.kafka_offset, 2);
        assert_eq!(acks1.high_watermark, 2, "not committed yet");
        let done: Rc<RefCell<Option<Result<_, _>>>> = Rc::default();
        let d = done.clone();
        let l2 = leader.clone();
        glommio::spawn_local(async move {
            *d.borrow_mut() = Some(l2.replicate(7, batch(1), WaitFor::Majority).await);
        })
        .detach();
        glommio::timer::sleep(Duration::from_millis(400)).await;
        assert!(
            done.borrow().is_none(),
            "acks=all resolved without a majority"
        );
        let st = leader.status(7).unwrap();
        assert_eq!(st.high_watermark, 2);
        assert_eq!(st.log_end_kafka, 6, "LEO includes the uncommitted entries");
        assert_eq!(st.in_sync, vec![nodes[l].id], "followers silent for > lag");
        assert!(!st.quorum_active);
        for n in &nodes {
            n.gate.set(false);
        }
        wait_until(5, "acks=all to resolve", || done.borrow().is_some()).await;
        let c = done.borrow_mut().take().unwrap().unwrap();
        assert_eq!((c.kafka_offset, c.high_watermark), (5, 6));
        // Followers learn the commit and report no leader-only fields.
        wait_until(5, "followers' high watermark", || {
            nodes.iter().all(|n| n.raft.high_watermark(7) == Some(6))
        })
        .await;
        for (i, n) in nodes.iter().enumerate() {
            if i != l {
                let st = n.raft.status(7).unwrap();
                assert_eq!(st.leader, Some(nodes[l].id));
                assert!(st.in_sync.is_empty());
                assert!(!st.quorum_active);
                assert_eq!(
                    n.raft.replicate(7, batch(1), WaitFor::Leader).await,
                    Err(ProposeError::NotLeader {
                        leader: Some(nodes[l].id)
                    })
                );
            }
        }
    });
}

/// The leader's view of its followers (Kafka ISR, `replica.lag.time.max.ms`; Raft §5.3
/// matchIndex): a follower that stops answering leaves the in-sync set after the lag window,
/// a majority of silent voters clears `quorum_active` (check-quorum, thesis §6.2), and both
/// come back once it answers again. Every change is reported through `on_change`.
#[test]
fn in_sync_shrinks_when_a_follower_stops_answering_and_grows_back() {
    run(|| async {
        let nodes = cluster(3, |c| {
            c.heartbeat_ticks = 2;
            c.election_ticks = 100; // check-quorum only every 2 s
            c.in_sync_lag_ticks = 20;
        });
        open_everywhere(&nodes, 3).await;
        let l = leader_of(&nodes, 3).await;
        let leader = nodes[l].raft.clone();
        leader
            .replicate(3, batch(1), WaitFor::Majority)
            .await
            .unwrap();
        wait_until(5, "all in sync", || {
            leader.status(3).is_some_and(|s| s.in_sync == vec![1, 2, 3])
        })
        .await;
        let seen = record_changes(&leader);
        let followers: Vec<usize> = (0..3).filter(|i| *i != l).collect();
        let (f1, f2) = (nodes[followers[0]].id, nodes[followers[1]].id);
        nodes[followers[0]].gate.set(true);
        let t = Instant::now();
        wait_until(5, "f1 out of sync", || {
            leader.status(3).is_some_and(|s| !s.in_sync.contains(&f1))
        })
        .await;
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "left in-sync before the lag window: {:?}",
            t.elapsed()
        );
        let st = leader.status(3).unwrap();
        let mut expect = vec![nodes[l].id, f2];
        expect.sort();
        assert_eq!(st.in_sync, expect);
        assert!(st.quorum_active, "2 of 3 voters still answer");
        // acks=all still commits with the remaining majority.
        leader
            .replicate(3, batch(1), WaitFor::Majority)
            .await
            .unwrap();
        nodes[followers[1]].gate.set(true);
        wait_until(5, "quorum lost", || {
            leader.status(3).is_some_and(|s| !s.quorum_active)
        })
        .await;
        assert_eq!(leader.status(3).unwrap().in_sync, vec![nodes[l].id]);
        for i in &followers {
            nodes[*i].gate.set(false);
        }
        wait_until(5, "all back in sync", || {
            nodes.iter().any(|n| {
                n.raft
                    .status(3)
                    .is_some_and(|s| s.in_sync == vec![1, 2, 3] && s.quorum_active)
            })
        })
        .await;
        let seen = seen.borrow();
        let sizes: Vec<usize> = seen
            .iter()
            .filter(|(g, s)| *g == 3 && s.leader == Some(nodes[l].id))
            .map(|(_, s)| s.in_sync.len())
            .collect();
        let mut distinct = sizes.clone();
        distinct.dedup();
        assert!(
            distinct.windows(3).any(|w| w == [3, 2, 1]) || distinct.starts_with(&[2, 1]),
            "on_change saw the in-sync set shrink 3 → 2 → 1: {distinct:?}"
        );
        assert!(
            seen.iter().any(|(_, s)| !s.quorum_active) && seen.iter().any(|(_, s)| s.quorum_active),
            "on_change saw quorum_active flip"
        );
    });
}

/// Raft thesis §3.10 (leadership transfer): the leader brings the target up to date and
/// sends it TimeoutNow; the target wins the next term and the old leader follows it.
#[test]
fn transfer_leader_moves_leadership_to_the_named_voter() {
    run(|| async {
        let nodes = cluster(3, |_| {});
        open_everywhere(&nodes, 9).await;
        let l = leader_of(&nodes, 9).await;
        nodes[l]
            .raft
            .replicate(9, batch(2), WaitFor::Majority)
            .await
            .unwrap();
        let term = nodes[l].raft.status(9).unwrap().term;
        let target = (l + 1) % 3;
        let to = nodes[target].id;
        nodes[l].raft.transfer_leader(9, to);
        wait_until(5, "the target to lead", || nodes[target].raft.is_leader(9)).await;
        wait_until(5, "the old leader to follow", || {
            nodes[l]
                .raft
                .status(9)
                .is_some_and(|s| s.leader == Some(to))
        })
        .await;
        let st = nodes[target].raft.status(9).unwrap();
        assert!(st.term > term, "a new term: {} > {term}", st.term);
        let c = nodes[target]
            .raft
            .replicate(9, batch(1), WaitFor::Majority)
            .await
            .unwrap();
        assert_eq!(
            c.kafka_offset, 2,
            "the new leader holds every committed record"
        );
        assert!(matches!(
            nodes[l].raft.replicate(9, batch(1), WaitFor::Majority).await,
            Err(ProposeError::NotLeader { leader: Some(x) }) if x == to
        ));
    });
}

/// Removing a replica deletes its group state file (term, vote, membership): opening the
/// group again starts a new, empty member, unlike a close, which keeps it (Raft §5.1: term
/// and vote are the persistent state a member must not lose while it is one).
#[test]
fn remove_group_deletes_the_state_file_and_close_keeps_it() {
    run(|| async {
        let nodes = cluster(1, |_| {});
        let (h, meta) = (&nodes[0].raft, &nodes[0].meta);
        h.open_group(4, vec![1], MemLog::new()).await.unwrap();
        h.replicate(4, batch(2), WaitFor::Majority).await.unwrap();
        let log = h.close_group(4).await.unwrap();
        assert!(
            meta.read(4).await.unwrap().is_some(),
            "close keeps the state"
        );
        h.open_group(4, vec![1], log).await.unwrap();
        let log = h.remove_group(4).await.expect("was open");
        assert!(log.next_offset() > 0, "the log is handed back intact");
        assert_eq!(meta.read(4).await.unwrap(), None, "state file deleted");
        assert!(h.status(4).is_none());
        assert!(h.remove_group(4).await.is_none());
        h.open_group(4, vec![1], MemLog::new()).await.unwrap();
        let c = h.replicate(4, batch(1), WaitFor::Majority).await.unwrap();
        assert_eq!(c.kafka_offset, 0, "a removed group comes back empty");
        assert_eq!(h.status(4).unwrap().term, 1, "new member, first term");
    });
}

/// Closing a group or stopping the runtime while proposals wait: they fail with NotLeader
/// (the Kafka client retries elsewhere) instead of hanging; after stop nothing is accepted.
#[test]
fn close_and_stop_fail_waiting_proposals_with_not_leader() {
    run(|| async {
        let nodes = cluster(3, |c| {
            c.heartbeat_ticks = 5;
            c.election_ticks = 100;
        });
        open_everywhere(&nodes, 1).await;
        open_everywhere(&nodes, 2).await;
        let l1 = leader_of(&nodes, 1).await;
        let l2 = leader_of(&nodes, 2).await;
        for n in &nodes {
            n.gate.set(true);
        }
        let on_close = nodes[l1].raft.replicate(1, batch(1), WaitFor::Majority);
        let on_stop = nodes[l2].raft.replicate(2, batch(1), WaitFor::Majority);
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert!(nodes[l1].raft.close_group(1).await.is_some());
        assert_eq!(
            on_close.await,
            Err(ProposeError::NotLeader { leader: None })
        );
        nodes[l2].raft.stop().await;
        assert_eq!(on_stop.await, Err(ProposeError::NotLeader { leader: None }));
        let h = &nodes[l2].raft;
        assert!(h.stopped().is_some());
        assert!(h.status(2).is_none());
        assert_eq!(
            h.replicate(2, batch(1), WaitFor::Leader).await,
            Err(ProposeError::NotLeader { leader: None })
        );
        assert!(matches!(
            h.open_group(5, vec![1], MemLog::new()).await,
            Err(DriverError::Stopped(_))
        ));
        h.stop().await; // idempotent
    });
}

/// Raft thesis §6.2 (check-quorum): a leader that hears from no majority for an election
/// timeout steps down by itself, with no message to tell it; the published status and
/// `on_change` follow at once (a tick, not an envelope, changed it).
#[test]
fn a_leader_cut_off_from_its_followers_steps_down_and_its_status_says_so() {
    run(|| async {
        let nodes = cluster(3, |c| {
            c.heartbeat_ticks = 2;
            c.election_ticks = 20;
        });
        open_everywhere(&nodes, 6).await;
        let l = leader_of(&nodes, 6).await;
        let me = nodes[l].id;
        let seen = record_changes(&nodes[l].raft);
        for (i, n) in nodes.iter().enumerate() {
            if i != l {
                n.gate.set(true); // followers still hear the leader, never answer
            }
        }
        wait_until(5, "the leader to step down", || {
            nodes[l]
                .raft
                .status(6)
                .is_some_and(|s| s.leader != Some(me))
        })
        .await;
        let st = nodes[l].raft.status(6).unwrap();
        assert!(st.in_sync.is_empty() && !st.quorum_active, "{st:?}");
        assert!(
            seen.borrow()
                .iter()
                .any(|(g, s)| *g == 6 && s.leader != Some(me)),
            "on_change reported the step-down"
        );
        assert!(matches!(
            nodes[l].raft.replicate(6, batch(1), WaitFor::Leader).await,
            Err(ProposeError::NotLeader { .. })
        ));
    });
}

/// Raft §5.2: a follower that hears nothing for an election timeout stops trusting its leader
/// and campaigns (pre-vote first, thesis §9.6). With everyone else silent nothing arrives to
/// tell the runtime: the tick itself must surface the change in the published status.
#[test]
fn a_follower_that_stops_hearing_its_leader_reports_no_leader() {
    run(|| async {
        let nodes = cluster(3, |c| {
            c.heartbeat_ticks = 2;
            c.election_ticks = 20;
        });
        open_everywhere(&nodes, 8).await;
        let l = leader_of(&nodes, 8).await;
        let f = (l + 1) % 3;
        wait_until(5, "the follower to know its leader", || {
            nodes[f]
                .raft
                .status(8)
                .is_some_and(|s| s.leader == Some(nodes[l].id))
        })
        .await;
        let seen = record_changes(&nodes[f].raft);
        for (i, n) in nodes.iter().enumerate() {
            if i != f {
                n.gate.set(true);
            }
        }
        wait_until(5, "the follower to drop its leader", || {
            nodes[f].raft.status(8).is_some_and(|s| s.leader.is_none())
        })
        .await;
        assert!(
            seen.borrow()
                .iter()
                .any(|(g, s)| *g == 8 && s.leader.is_none()),
            "on_change reported it"
        );
    });
}
