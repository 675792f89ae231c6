//! Scenario tests of Raft membership changes (`RaftHandle::change_membership`) on the
//! per-core runtime, nodes talking over real loopback TCP. References: the Raft
//! dissertation (Ongaro 2014) chapter 4 — §4.1 single-server changes, §4.2.1 catching up
//! new servers (as non-voting learners), §4.2.2 removing the current leader, §4.2.3
//! disruptive (removed) servers, §4.3 joint consensus (Raft paper §6).
//!
//! Nodes can be restarted: each node's listener feeds a forwarder that hands envelopes to
//! whichever runtime incarnation is current, and the node's state files and logs
//! (in-memory, surviving the restart minus unflushed writes) are reopened by the next one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use freshet_raft::log::MemLog;
use freshet_raft::meta::MemMetaStore;
use freshet_raft::multiraft::{MultiRaft, RaftConfig};
use freshet_raft::rng::SimRng;
use freshet_raft::runtime::{
    spawn, Committed, GroupStatus, Membership, MembershipError, RaftHandle, WaitFor,
};
use freshet_raft::tcp::{listen, RpcConfig, TcpTransport};
use freshet_raft::transport::{Envelope, GroupId, NodeId};
use futures_lite::StreamExt;
use glommio::channels::local_channel::{self, LocalSender};

mod common;
use common::{batch, run, wait_until};

const TICK_MS: u64 = 10;
const G: GroupId = 7;

type Inbox = Rc<RefCell<Option<LocalSender<Envelope>>>>;
/// (voters, voters_outgoing) of a status seen while joint.
type JointView = (Vec<NodeId>, Vec<NodeId>);

struct Node {
    raft: RefCell<RaftHandle<MemLog>>,
    meta: MemMetaStore,
    logs: RefCell<BTreeMap<GroupId, MemLog>>,
    inbox: Inbox,
}

struct Cluster {
    nodes: Vec<Node>,
    addrs: Vec<SocketAddr>,
}

fn start_runtime(
    id: NodeId,
    addrs: &[SocketAddr],
    meta: &MemMetaStore,
    inbox: &Inbox,
) -> RaftHandle<MemLog> {
    let t = TcpTransport::new(id, RpcConfig::default());
    for (peer, a) in (1..).zip(addrs) {
        if peer != id {
            t.add_peer(peer, *a);
        }
    }
    let mut cfg = RaftConfig::new(id);
    cfg.heartbeat_ticks = 2;
    cfg.election_ticks = 20;
    cfg.in_sync_lag_ticks = 20;
    let (tx, rx) = local_channel::new_bounded(1024);
    *inbox.borrow_mut() = Some(tx);
    spawn(MultiRaft::new(cfg, meta.clone(), t), rx, TICK_MS)
}

impl Cluster {
    /// `n` nodes (ids 1..=n), none holding a group yet.
    fn new(n: u64) -> Self {
        let mut addrs = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..n {
            let (tx, rx) = local_channel::new_bounded::<Envelope>(1024);
            addrs.push(listen("127.0.0.1:0".parse().unwrap(), RpcConfig::default(), tx).unwrap());
            let inbox: Inbox = Rc::default();
            let to = inbox.clone();
            // Forwarder: the listener's channel outlives runtime incarnations.
            glommio::spawn_local(async move {
                let mut s = rx.stream();
                while let Some(env) = s.next().await {
                    if let Some(tx) = to.borrow().as_ref() {
                        let _ = tx.try_send(env);
                    }
                }
            })
            .detach();
            inboxes.push(inbox);
        }
        let nodes = (1..=n)
            .zip(inboxes)
            .map(|(id, inbox)| {
                let meta = MemMetaStore::default();
                Node {
                    raft: RefCell::new(start_runtime(id, &addrs, &meta, &inbox)),
                    meta,
                    logs: RefCell::default(),
                    inbox,
                }
            })
            .collect();
        Self { nodes, addrs }
    }

    fn h(&self, id: NodeId) -> RaftHandle<MemLog> {
        self.nodes[(id - 1) as usize].raft.borrow().clone()
    }

    fn status(&self, id: NodeId) -> Option<GroupStatus> {
        self.h(id).status(G)
    }

    /// Opens the group on `id` with a fresh log; `voters` empty = a replica joining.
    async fn open(&self, id: NodeId, voters: &[NodeId]) {
        let log = MemLog::new();
        self.nodes[(id - 1) as usize]
            .logs
            .borrow_mut()
            .insert(G, log.clone());
        self.h(id)
            .open_group(G, voters.to_vec(), log)
            .await
            .unwrap();
    }

    /// Power loss and restart of node `id`: the runtime stops, unflushed log writes are
    /// lost, a new runtime reopens every group it held from its state files and logs.
    async fn restart(&self, id: NodeId, rng: &mut SimRng) {
        let n = &self.nodes[(id - 1) as usize];
        let old = n.raft.borrow().clone();
        old.stop().await;
        *n.inbox.borrow_mut() = None;
        let logs = n.logs.borrow().clone();
        for log in logs.values() {
            log.crash(rng);
        }
        let h = start_runtime(id, &self.addrs, &n.meta, &n.inbox);
        for (g, log) in logs {
            h.open_group(g, vec![], log).await.unwrap();
        }
        *n.raft.borrow_mut() = h;
    }

    /// Nodes 1..=3 open the group as its voters, each node of `joining` opens it with no
    /// voters (a replica joining); returns the leader the founders elect.
    async fn found_three(&self, joining: &[NodeId]) -> NodeId {
        for id in 1..=3 {
            self.open(id, &[1, 2, 3]).await;
        }
        for id in joining {
            self.open(*id, &[]).await;
        }
        self.leader(&[1, 2, 3]).await
    }

    /// Nodes 1..=4 open the group as its voters; returns (leader, a follower, the voters
    /// without that follower).
    async fn found_four(&self) -> (NodeId, NodeId, Vec<NodeId>) {
        for id in 1..=4 {
            self.open(id, &[1, 2, 3, 4]).await;
        }
        let l = self.leader(&[1, 2, 3, 4]).await;
        let f = (1..=4).find(|id| *id != l).unwrap();
        let rest = (1..=4).filter(|id| *id != f).collect();
        (l, f, rest)
    }

    /// `records` one-byte records through node `id`, committed by a majority.
    async fn write(&self, id: NodeId, records: usize) -> Committed {
        self.h(id)
            .replicate(G, batch(records), WaitFor::Majority)
            .await
            .unwrap()
    }

    /// §4.2.1: leader `l` keeps `voters` and adds `learners`; waits until the leader counts
    /// every learner in sync.
    async fn add_learners(&self, l: NodeId, voters: &[NodeId], learners: &[NodeId]) {
        let m = self
            .h(l)
            .change_membership(G, voters.to_vec(), learners.to_vec())
            .await;
        assert_eq!(m, Ok(members(voters, learners)));
        wait_until(10, "the learners to be in sync", || {
            self.status(l)
                .is_some_and(|s| s.learners_in_sync == learners)
        })
        .await;
    }

    async fn leader(&self, among: &[NodeId]) -> NodeId {
        wait_until(10, "a leader", || {
            among.iter().any(|id| self.h(*id).is_leader(G))
        })
        .await;
        *among.iter().find(|id| self.h(**id).is_leader(G)).unwrap()
    }

    /// Every node of `members` reports `voters`/`learners`, no joint configuration, and the
    /// same high watermark as the leader.
    async fn settled(&self, members: &[NodeId], voters: &[NodeId], learners: &[NodeId]) {
        let leader = self.leader(voters).await;
        wait_until(
            10,
            "members to apply the configuration and catch up",
            || {
                let hw = self.status(leader).map(|s| s.high_watermark);
                members.iter().all(|id| {
                    self.status(*id).is_some_and(|s| {
                        s.voters == voters
                            && s.learners == learners
                            && s.voters_outgoing.is_empty()
                            && Some(s.high_watermark) == hw
                    })
                })
            },
        )
        .await;
    }
}

fn members(voters: &[NodeId], learners: &[NodeId]) -> Membership {
    Membership {
        voters: voters.to_vec(),
        learners: learners.to_vec(),
    }
}

/// §4.2.1: a new server joins as a learner (it opened the group with no voters and never
/// campaigns), the leader catches it up (`learners_in_sync`), §4.1: it is promoted with a
/// single-server change (3 → 4 voters), then §4.2.2: the leader removes itself (4 → 3); it
/// keeps leading until the change is applied, then hands leadership to a remaining voter
/// and never leads again. Kafka offsets continue across all of it.
#[test]
fn a_learner_is_caught_up_promoted_and_the_old_leader_removes_itself_3_4_3() {
    run(|| async {
        let c = Cluster::new(4);
        let l = c.found_three(&[4]).await;
        for _ in 0..5 {
            c.write(l, 2).await;
        }
        assert!(!c.h(4).is_leader(G), "a joining replica never campaigns");

        c.add_learners(l, &[1, 2, 3], &[4]).await;
        let st = c.status(l).unwrap();
        assert_eq!(st.learners, vec![4]);
        assert_eq!(
            st.in_sync,
            vec![1, 2, 3],
            "a learner is not an in-sync voter"
        );
        c.settled(&[1, 2, 3, 4], &[1, 2, 3], &[4]).await;
        assert_eq!(
            c.status(4).unwrap().high_watermark,
            10,
            "the learner has every record"
        );

        let m = c.h(l).change_membership(G, vec![1, 2, 3, 4], vec![]).await;
        assert_eq!(m, Ok(members(&[1, 2, 3, 4], &[])));
        c.settled(&[1, 2, 3, 4], &[1, 2, 3, 4], &[]).await;
        let a = c.write(l, 1).await;
        assert_eq!(a.kafka_offset, 10);

        // The leader removes itself.
        let rest: Vec<NodeId> = (1..=4).filter(|id| *id != l).collect();
        let term = c.status(l).unwrap().term;
        let m = c.h(l).change_membership(G, rest.clone(), vec![]).await;
        assert_eq!(
            m,
            Ok(members(&rest, &[])),
            "resolves on the old leader once applied"
        );
        let nl = c.leader(&rest).await;
        assert_ne!(nl, l);
        wait_until(10, "the old leader to step down", || !c.h(l).is_leader(G)).await;
        assert!(
            c.status(nl).unwrap().term > term,
            "a new term, via TimeoutNow (§3.10)"
        );
        let b = c.write(nl, 3).await;
        assert_eq!((b.kafka_offset, b.high_watermark), (11, 14));
        c.settled(&rest, &rest, &[]).await;
        // The removed server stays out: it never campaigns again (its term stays put while
        // the others' group goes on).
        let t = c.status(l).unwrap().term;
        glommio::timer::sleep(Duration::from_millis(1_000)).await;
        assert!(!c.h(l).is_leader(G));
        assert_eq!(
            c.status(l).unwrap().term,
            t,
            "the removed leader never campaigns"
        );
        assert_eq!(
            c.status(l).unwrap().voters,
            rest,
            "it applied its own removal"
        );
    });
}

/// §4.3 / paper §6: voters {1,2,3} → {3,4,5} in one request: two learners join (two
/// changes, so joint consensus too), then the joint configuration C_old,new ({3,4,5} with
/// outgoing {1,2,3}) is entered and left by the driver's own leave entry. A replica reports
/// `voters_outgoing` while joint; the request resolves only once C_new is applied.
#[test]
fn joint_consensus_moves_the_group_to_mostly_new_voters_section_4_3() {
    run(|| async {
        let c = Cluster::new(5);
        let l = c.found_three(&[4, 5]).await;
        let joint_seen: Rc<RefCell<Vec<JointView>>> = Rc::default();
        let seen = joint_seen.clone();
        c.h(3).on_change(Box::new(move |_, s| {
            if !s.voters_outgoing.is_empty() {
                seen.borrow_mut()
                    .push((s.voters.clone(), s.voters_outgoing.clone()));
            }
        }));
        c.write(l, 4).await;
        c.add_learners(l, &[1, 2, 3], &[4, 5]).await;
        let m = c.h(l).change_membership(G, vec![3, 4, 5], vec![]).await;
        assert_eq!(m, Ok(members(&[3, 4, 5], &[])));
        assert!(
            joint_seen
                .borrow()
                .iter()
                .any(|(v, o)| *v == vec![3, 4, 5] && *o == vec![1, 2, 3]),
            "node 3 went through C_old,new: {:?}",
            joint_seen.borrow()
        );
        let nl = c.leader(&[3, 4, 5]).await;
        let a = c.write(nl, 2).await;
        assert_eq!((a.kafka_offset, a.high_watermark), (4, 6));
        c.settled(&[3, 4, 5], &[3, 4, 5], &[]).await;
    });
}

/// Crash safety of a configuration: a replica restarted after changes reopens with the
/// configuration of its committed log at once (state file written with the commit index
/// covering the change, else re-derived from the conf-change entries in the log); a leader
/// restarted in the middle of a change leaves the group in one agreed, non-joint
/// configuration that keeps committing.
#[test]
fn replicas_restarted_after_and_during_a_change_keep_their_configuration() {
    run(|| async {
        let mut rng = SimRng::new(11);
        let c = Cluster::new(4);
        let l = c.found_three(&[4]).await;
        c.write(l, 2).await;
        c.h(l)
            .change_membership(G, vec![1, 2, 3], vec![4])
            .await
            .unwrap();
        c.h(l)
            .change_membership(G, vec![1, 2, 3, 4], vec![])
            .await
            .unwrap();
        c.settled(&[1, 2, 3, 4], &[1, 2, 3, 4], &[]).await;
        // The joined node (which opened with no voters) and a founder restart.
        let f = (1..=3).find(|id| *id != l).unwrap();
        for id in [4, f] {
            c.restart(id, &mut rng).await;
            let st = c.status(id).unwrap();
            assert_eq!(
                st.voters,
                vec![1, 2, 3, 4],
                "node {id} reopened with its configuration"
            );
        }
        c.settled(&[1, 2, 3, 4], &[1, 2, 3, 4], &[]).await;

        // The leader restarts right after proposing 4 → 3 voters (removing a follower).
        let l = c.leader(&[1, 2, 3, 4]).await;
        let gone = (1..=4).find(|id| *id != l && *id != 4).unwrap();
        let target: Vec<NodeId> = (1..=4).filter(|id| *id != gone).collect();
        let pending = c.h(l).change_membership(G, target.clone(), vec![]);
        glommio::timer::sleep(Duration::from_millis(5)).await;
        c.restart(l, &mut rng).await;
        let outcome = pending.await;
        // Whatever happened, every replica agrees on one non-joint configuration.
        let all = [1, 2, 3, 4];
        let agreed = |c: &Cluster| {
            let s: Vec<GroupStatus> = all.iter().filter_map(|id| c.status(*id)).collect();
            s.len() == 4
                && s.iter().all(|x| x.voters_outgoing.is_empty())
                && (s.iter().all(|x| x.voters == target)
                    || s.iter().all(|x| x.voters == vec![1, 2, 3, 4]))
        };
        wait_until(10, "one agreed configuration", || agreed(&c)).await;
        let voters = c.status(l).unwrap().voters;
        if outcome.is_ok() {
            assert_eq!(voters, target, "a resolved change is in effect");
        }
        let nl = c.leader(&voters).await;
        c.write(nl, 1).await;
        c.settled(&voters, &voters, &[]).await;
    });
}

/// §7 with §4.2.1: the leader compacted its log, so a learner added afterwards needs
/// entries the leader no longer has; it gets a snapshot (which carries the current
/// configuration, with the learner in it), restarts its log at the leader's log start and
/// replicates from there; then it is promoted and takes part in commits.
#[test]
fn a_learner_added_after_compaction_catches_up_by_snapshot_section_7() {
    run(|| async {
        let c = Cluster::new(4);
        let l = c.found_three(&[4]).await;
        for _ in 0..4 {
            c.write(l, 5).await;
        }
        for id in 1..=3 {
            wait_until(5, "the commit to reach every voter", || {
                c.status(id).is_some_and(|s| s.high_watermark == 20)
            })
            .await;
            let start = c.h(id).compact(G, 15).await.unwrap();
            assert_eq!(start, Some(15));
        }
        c.add_learners(l, &[1, 2, 3], &[4]).await;
        let st4 = c.status(4).unwrap();
        assert_eq!(
            st4.log_start_kafka, 15,
            "its log starts at the leader's start"
        );
        assert_eq!(st4.high_watermark, 20);
        assert!(c.h(4).stats().snapshots_installed >= 1);
        c.h(l)
            .change_membership(G, vec![1, 2, 3, 4], vec![])
            .await
            .unwrap();
        let a = c.write(l, 1).await;
        assert_eq!(a.kafka_offset, 20);
        c.settled(&[1, 2, 3, 4], &[1, 2, 3, 4], &[]).await;
    });
}

/// §4.2.3: a removed follower does not disrupt the group: once it applied its removal it is
/// not promotable and never campaigns (not even a pre-vote round), however long it hears
/// nothing; the remaining voters go on committing.
#[test]
fn a_removed_follower_never_campaigns() {
    run(|| async {
        let c = Cluster::new(4);
        let (l, f, rest) = c.found_four().await;
        c.h(l)
            .change_membership(G, rest.clone(), vec![])
            .await
            .unwrap();
        wait_until(5, "the follower to apply its removal", || {
            c.status(f).is_some_and(|s| s.voters == rest)
        })
        .await;
        let before = c.status(f).unwrap();
        assert_eq!(before.leader, Some(l));
        // Four election timeouts (20 ticks of 10 ms, up to 2x) without the follower hearing
        // from anyone. A follower that campaigned (even only a pre-vote round, which keeps
        // its term) would have dropped its leader.
        glommio::timer::sleep(Duration::from_millis(1_600)).await;
        let after = c.status(f).unwrap();
        assert_eq!(
            (after.leader, after.term),
            (Some(l), before.term),
            "the removed node never campaigned"
        );
        c.write(l, 1).await;
    });
}

/// The request is checked before anything is proposed, and one change runs at a time
/// (§4.1: a leader starts a change only once the previous one is applied).
#[test]
fn membership_requests_are_validated_and_run_one_at_a_time() {
    run(|| async {
        let c = Cluster::new(4);
        let l = c.found_three(&[4]).await;
        let f = (1..=3).find(|id| *id != l).unwrap();
        assert!(matches!(
            c.h(f).change_membership(G, vec![1, 2, 3], vec![4]).await,
            Err(MembershipError::NotLeader { leader: Some(x) }) if x == l
        ));
        let h = c.h(l);
        for (voters, learners) in [
            (vec![], vec![4]),
            (vec![1, 2, 3], vec![3]),
            (vec![1, 1, 2], vec![]),
            (vec![0, 1, 2], vec![]),
        ] {
            assert!(
                matches!(
                    h.change_membership(G, voters.clone(), learners.clone())
                        .await,
                    Err(MembershipError::Invalid(_))
                ),
                "{voters:?} + {learners:?}"
            );
        }
        assert_eq!(
            h.change_membership(99, vec![1], vec![]).await,
            Err(MembershipError::UnknownGroup(99))
        );
        assert_eq!(
            h.change_membership(G, vec![3, 2, 1], vec![]).await,
            Ok(members(&[1, 2, 3], &[])),
            "no change: resolves at once"
        );
        // Two requests queued together: the second finds the first in progress.
        let a = h.change_membership(G, vec![1, 2, 3], vec![4]);
        let b = h.change_membership(G, vec![1, 2, 3, 4], vec![]);
        assert_eq!(b.await, Err(MembershipError::InProgress));
        assert_eq!(a.await, Ok(members(&[1, 2, 3], &[4])));
        // A closed group fails its outstanding change; a stopped runtime refuses.
        let p = h.change_membership(G, vec![1, 2, 3, 4], vec![]);
        h.close_group(G).await;
        let r = p.await;
        assert!(
            r == Err(MembershipError::GroupClosed) || r == Err(MembershipError::UnknownGroup(G)),
            "{r:?}"
        );
        h.stop().await;
        assert!(matches!(
            h.change_membership(G, vec![1], vec![]).await,
            Err(MembershipError::Stopped(_))
        ));
    });
}

/// The engine's reassignment path: a replica removed from the group is deleted
/// (`remove_group`: state file gone, log dropped) and later re-created empty on the same node
/// with no voters; added again as a learner it catches up from the leader's log start like
/// any new server (§4.2.1), and can be promoted back.
#[test]
fn a_removed_replica_deleted_and_recreated_empty_joins_again() {
    run(|| async {
        let c = Cluster::new(4);
        let (l, f, rest) = c.found_four().await;
        c.write(l, 3).await;
        c.h(l)
            .change_membership(G, rest.clone(), vec![])
            .await
            .unwrap();
        assert!(c.h(f).remove_group(G).await.is_some());
        assert!(c.status(f).is_none());
        c.write(l, 2).await;
        c.open(f, &[]).await;
        let st = c.status(f).unwrap();
        assert!(st.voters.is_empty() && st.high_watermark == 0, "{st:?}");
        c.add_learners(l, &rest, &[f]).await;
        c.h(l)
            .change_membership(G, vec![1, 2, 3, 4], vec![])
            .await
            .unwrap();
        c.write(l, 1).await;
        c.settled(&[1, 2, 3, 4], &[1, 2, 3, 4], &[]).await;
        assert_eq!(c.status(f).unwrap().high_watermark, 6);
    });
}
