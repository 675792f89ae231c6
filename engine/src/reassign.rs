//! The leader-side driver of partition reassignments (KIP-455 semantics on Raft membership
//! changes, Raft thesis §4).
//!
//! The metadata says where a partition should be (`PartitionAssignment::desired`: the target
//! of an ongoing reassignment, else the replicas; docs/design/controller.md "Partition
//! reassignment"); the group's Raft configuration says where it is. On every core, for each
//! group this node leads whose configuration differs from the metadata's wish, or whose
//! reassignment is not reported complete yet, the driver takes the next step:
//!
//! 1. replicas to add (`D − voters`) become learners (`change_membership(voters, adding)`);
//! 2. wait until every one of them is in `learners_in_sync` (caught up to the commit index);
//! 3. if this node is not in `D`: every member of `D` becomes a voter (`voters ∪ D`), then
//!    leadership goes to an in-sync member of `D` (`D[0]` first, §3.10) — the new leader's
//!    driver continues;
//! 4. otherwise the voters become exactly `D` (one change; joint consensus when more than
//!    one voter changes, §4.3) — the leader stays, since it is in `D`;
//! 5. the configuration is `D`: propose `CompleteReassignment {group, D}` to the controller;
//!    once applied, brokers no longer holding the partition delete their replica.
//!
//! Every step starts from the observed state (status and metadata), so the driver is
//! idempotent and restartable: a new leader, a restarted node or a cancel (`D` becomes the
//! original replicas) simply continues from where the group is. A failed step (not leader
//! any more, another change in progress, controller unavailable) is retried at the next
//! poll.
//!
//! Ownership: one driver task per core (`!Send`), holding a `Weak<Shard>`; per-group steps
//! run as local tasks of that core, at most one per group at a time.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::{Rc, Weak};
use std::time::Duration;

use freshet_raft::multiraft::GroupStatus;
use freshet_raft::transport::{GroupId, NodeId};
use thiserror::Error;

use crate::controller::command::Intent;
use crate::metadata::{broker_id_of, raft_node_id, PartitionAssignment};
use crate::partition::Partition;
use crate::shard::Shard;

/// How often each core looks for groups to move (a step that changed something is followed
/// by the next at once).
pub const REASSIGN_POLL_MS: u64 = 200;

/// Why a step did not go through (logged; the driver retries at the next poll).
#[derive(Debug, Error)]
pub enum ReassignError {
    #[error("membership change: {0}")]
    Membership(#[from] freshet_raft::multiraft::MembershipError),
    #[error("controller: {0}")]
    Controller(#[from] crate::error::TopicError),
}

/// What the next step for one group is, decided from its status and assignment alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do (configuration and metadata agree, or not the leader).
    Idle,
    /// Wait: a joint configuration is being left, or learners are catching up, or a
    /// leadership transfer is under way.
    Wait,
    /// `change_membership(voters, learners)` (Raft node ids).
    Change {
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    },
    /// Hand leadership to this voter (Raft node id).
    Transfer(NodeId),
    /// Report the configuration reached: `CompleteReassignment {group, replicas}`.
    Complete(Vec<i32>),
}

fn same_set(a: &[NodeId], b: &[NodeId]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// The next step for a group led by `me` (Raft node id) with status `st` and metadata `a`.
pub fn next_step(me: NodeId, st: &GroupStatus, a: &PartitionAssignment) -> Step {
    if st.leader != Some(me) {
        return Step::Idle;
    }
    if !st.voters_outgoing.is_empty() {
        return Step::Wait; // the runtime leaves the joint configuration by itself
    }
    let desired: Vec<NodeId> = a.desired().iter().map(|b| raft_node_id(*b)).collect();
    if desired.is_empty() {
        return Step::Idle;
    }
    let voters = &st.voters;
    if same_set(voters, &desired) && st.learners.is_empty() {
        if a.target.is_some() || !a.retiring.is_empty() {
            return Step::Complete(a.desired().to_vec());
        }
        return Step::Idle;
    }
    // 1-2: the replicas to add follow as learners until they caught up.
    let adding: Vec<NodeId> = desired
        .iter()
        .copied()
        .filter(|n| !voters.contains(n))
        .collect();
    if !adding.is_empty() {
        if !same_set(&st.learners, &adding) {
            return Step::Change {
                voters: voters.clone(),
                learners: adding,
            };
        }
        if !adding.iter().all(|n| st.learners_in_sync.contains(n)) {
            return Step::Wait;
        }
    }
    if !desired.contains(&me) {
        // 3: make every wanted replica a voter, then hand leadership to one of them.
        let mut all = voters.clone();
        all.extend(desired.iter().filter(|n| !voters.contains(n)));
        all.sort_unstable();
        if !same_set(voters, &all) || !st.learners.is_empty() {
            return Step::Change {
                voters: all,
                learners: Vec::new(),
            };
        }
        return match desired.iter().find(|n| st.in_sync.contains(n)) {
            Some(n) => Step::Transfer(*n),
            None => Step::Wait,
        };
    }
    // 4: the leader is in the new configuration.
    Step::Change {
        voters: desired,
        learners: Vec::new(),
    }
}

/// Groups with a step running on this core. Per core (`!Send`), an extension of the shard.
#[derive(Default)]
struct Running(RefCell<HashSet<GroupId>>);

/// RPC method `ELECT_PREFERRED` (served on core 0 of the node that leads the group):
/// payload `group:u64, to:i32` (little-endian; `to` = the broker to hand leadership to);
/// answer one byte, an [`ElectOutcome`]. Used by ElectLeaders (Kafka API 43) for
/// partitions another node leads.
pub const ELECT_PREFERRED: u16 = 20;

/// What a preferred-leader election request found on the node asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectOutcome {
    /// The leadership transfer was started (Raft thesis §3.10); watch the leader table.
    Started = 0,
    /// This node does not lead the group (any more).
    NotLeader = 1,
    /// No replica of the group on this node.
    UnknownGroup = 2,
}

/// Starts handing the leadership of `group` to broker `to` if this node leads it (any core;
/// the group's owning core does it).
pub async fn elect_preferred(s: &Rc<Shard>, group: GroupId, to: i32) -> ElectOutcome {
    let meta = s.metadata();
    let Some((t, p)) = meta.partition_of_group(group) else {
        return ElectOutcome::UnknownGroup;
    };
    let core = s.owner_of(&t.name, p);
    s.invoke_on(core, move |s| async move {
        if s.raft().status(group).is_none() {
            return ElectOutcome::UnknownGroup;
        }
        if !s.raft().is_leader(group) {
            return ElectOutcome::NotLeader;
        }
        s.raft().transfer_leader(group, raft_node_id(to));
        ElectOutcome::Started
    })
    .await
    .unwrap_or(ElectOutcome::NotLeader)
}

fn serve_elect(s: Rc<Shard>, payload: bytes::Bytes) -> crate::cluster::MethodFuture {
    Box::pin(async move {
        if payload.len() != 12 {
            return Err(crate::cluster::MethodError::Failed(format!(
                "ELECT_PREFERRED payload is {} bytes, expected 12",
                payload.len()
            )));
        }
        let group = u64::from_le_bytes(payload[0..8].try_into().expect("8 bytes"));
        let to = i32::from_le_bytes(payload[8..12].try_into().expect("4 bytes"));
        if to < 0 {
            return Err(crate::cluster::MethodError::Failed(format!(
                "broker id {to} < 0"
            )));
        }
        let outcome = elect_preferred(&s, group, to).await;
        Ok(bytes::Bytes::from(vec![outcome as u8]))
    })
}

/// Asks the node `leader` (possibly this one) to hand `group`'s leadership to `to`.
pub async fn request_preferred_election(
    s: &Rc<Shard>,
    leader: i32,
    group: GroupId,
    to: i32,
    timeout: Duration,
) -> Result<ElectOutcome, String> {
    let mut payload = group.to_le_bytes().to_vec();
    payload.extend_from_slice(&to.to_le_bytes());
    let answer = crate::cluster::rpc_call(
        s,
        leader,
        ELECT_PREFERRED,
        bytes::Bytes::from(payload),
        timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    match answer.first() {
        Some(0) => Ok(ElectOutcome::Started),
        Some(1) => Ok(ElectOutcome::NotLeader),
        Some(2) => Ok(ElectOutcome::UnknownGroup),
        _ => Err(format!("bad ELECT_PREFERRED answer {answer:?}")),
    }
}

/// The per-core driver loop (spawned by `Shard::start`): every [`REASSIGN_POLL_MS`], one
/// step for each group this node leads that is not where the metadata wants it. Core 0
/// also serves [`ELECT_PREFERRED`].
pub async fn run(me: Weak<Shard>) {
    if let Some(s) = me.upgrade() {
        if s.core() == 0 {
            crate::cluster::register_method(&s, ELECT_PREFERRED, Rc::new(serve_elect));
        }
    }
    loop {
        glommio::timer::sleep(Duration::from_millis(REASSIGN_POLL_MS)).await;
        let Some(s) = me.upgrade() else { return };
        if s.stopping() {
            return;
        }
        poll_once(&s);
    }
}

/// One pass over this core's led partitions: starts a step task for each that needs one.
pub fn poll_once(s: &Rc<Shard>) {
    let node = raft_node_id(s.config().node_id);
    let meta = s.metadata();
    let running = s.extension(Running::default);
    for p in s.local_partitions() {
        if !p.is_leader() || running.0.borrow().contains(&p.group) {
            continue;
        }
        let Some(a) = meta
            .topic(&p.topic)
            .and_then(|t| t.assignment(p.index))
            .filter(|a| a.group == p.group)
            .cloned()
        else {
            continue;
        };
        let Some(st) = p.status() else { continue };
        let step = next_step(node, &st, &a);
        if matches!(step, Step::Idle | Step::Wait) {
            continue;
        }
        running.0.borrow_mut().insert(p.group);
        let (s2, running2) = (s.clone(), running.clone());
        glommio::spawn_local(async move {
            let group = p.group;
            if let Err(e) = take_step(&s2, &p, step.clone()).await {
                tracing::info!(topic = %p.topic, partition = p.index, ?step, error = %e, "reassignment step not done; retrying");
            }
            running2.0.borrow_mut().remove(&group);
        })
        .detach();
    }
}

async fn take_step(s: &Rc<Shard>, p: &Rc<Partition>, step: Step) -> Result<(), ReassignError> {
    let brokers = |ns: &[NodeId]| ns.iter().map(|n| broker_id_of(*n)).collect::<Vec<_>>();
    match step {
        Step::Idle | Step::Wait => Ok(()),
        Step::Change { voters, learners } => {
            tracing::info!(topic = %p.topic, partition = p.index, voters = ?brokers(&voters), learners = ?brokers(&learners), "reassignment: changing the Raft configuration");
            let m = s
                .raft()
                .change_membership(p.group, voters, learners)
                .await?;
            tracing::info!(topic = %p.topic, partition = p.index, voters = ?brokers(&m.voters), learners = ?brokers(&m.learners), "reassignment: configuration committed");
            Ok(())
        }
        Step::Transfer(to) => {
            tracing::info!(topic = %p.topic, partition = p.index, to = broker_id_of(to), "reassignment: this leader leaves; transferring leadership");
            s.raft().transfer_leader(p.group, to);
            // Give the transfer an election timeout before looking again.
            let cfg = &s.config().cluster;
            let wait_ms = cfg.raft_tick_ms * cfg.raft_election_ticks as u64;
            glommio::timer::sleep(Duration::from_millis(wait_ms.max(REASSIGN_POLL_MS))).await;
            Ok(())
        }
        Step::Complete(replicas) => {
            let rev = s
                .submit_intent(Intent::CompleteReassignment {
                    group: p.group,
                    replicas: replicas.clone(),
                })
                .await?;
            tracing::info!(topic = %p.topic, partition = p.index, ?replicas, revision = rev, "reassignment complete");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(leader: u64, voters: &[u64], learners: &[u64], synced: &[u64]) -> GroupStatus {
        GroupStatus {
            leader: Some(leader),
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            in_sync: voters.to_vec(),
            learners_in_sync: synced.to_vec(),
            ..Default::default()
        }
    }

    fn moving(replicas: &[i32], target: &[i32]) -> PartitionAssignment {
        let mut a = PartitionAssignment::new(7, replicas.to_vec());
        a.target = Some(target.to_vec());
        a
    }

    // Raft node ids are broker ids + 1: brokers 0,1,2,3 are nodes 1,2,3,4.

    /// KIP-455 on Raft (thesis §4): [0,1,2] → [3,1,2] led by broker 1: add 3 as a learner,
    /// wait for it, replace 0 by 3 in one change, report.
    #[test]
    fn a_leader_in_the_target_adds_learners_then_swaps_voters_then_reports() {
        let a = moving(&[0, 1, 2], &[3, 1, 2]);
        let st = status(2, &[1, 2, 3], &[], &[]);
        assert_eq!(
            next_step(2, &st, &a),
            Step::Change {
                voters: vec![1, 2, 3],
                learners: vec![4]
            }
        );
        let st = status(2, &[1, 2, 3], &[4], &[]);
        assert_eq!(
            next_step(2, &st, &a),
            Step::Wait,
            "learner still catching up"
        );
        let st = status(2, &[1, 2, 3], &[4], &[4]);
        assert_eq!(
            next_step(2, &st, &a),
            Step::Change {
                voters: vec![4, 2, 3],
                learners: vec![]
            }
        );
        let mut joint = status(2, &[2, 3, 4], &[], &[]);
        joint.voters_outgoing = vec![1, 2, 3];
        assert_eq!(
            next_step(2, &joint, &a),
            Step::Wait,
            "leaving the joint config"
        );
        let st = status(2, &[2, 3, 4], &[], &[]);
        assert_eq!(next_step(2, &st, &a), Step::Complete(vec![3, 1, 2]));
        // Once the controller applied the report, nothing is left to do.
        let done = PartitionAssignment::new(7, vec![3, 1, 2]);
        assert_eq!(next_step(2, &st, &done), Step::Idle);
        // Followers never act.
        assert_eq!(
            next_step(3, &status(2, &[1, 2, 3], &[], &[]), &a),
            Step::Idle
        );
    }

    /// A leader outside the target ([0,1,2] → [3,4,5] led by 0) first makes the target
    /// voters too, then hands leadership to the target's first replica (thesis §3.10).
    #[test]
    fn a_leader_outside_the_target_hands_over_after_promoting_it() {
        let a = moving(&[0, 1, 2], &[3, 4, 5]);
        let st = status(1, &[1, 2, 3], &[4, 5, 6], &[4, 5, 6]);
        assert_eq!(
            next_step(1, &st, &a),
            Step::Change {
                voters: vec![1, 2, 3, 4, 5, 6],
                learners: vec![]
            }
        );
        let st = status(1, &[1, 2, 3, 4, 5, 6], &[], &[]);
        assert_eq!(next_step(1, &st, &a), Step::Transfer(4));
        // The new leader (broker 3 = node 4) removes the old replicas.
        let st = status(4, &[1, 2, 3, 4, 5, 6], &[], &[]);
        assert_eq!(
            next_step(4, &st, &a),
            Step::Change {
                voters: vec![4, 5, 6],
                learners: vec![]
            }
        );
    }

    /// KIP-455 cancel: the target is gone, so the driver moves back to the original replicas
    /// and reports them, which releases the retiring brokers.
    #[test]
    fn a_cancel_moves_the_configuration_back_and_releases_retiring_brokers() {
        let mut a = PartitionAssignment::new(7, vec![0, 1, 2]);
        a.retiring = vec![3];
        // Learner 3 had been added: drop it.
        let st = status(2, &[1, 2, 3], &[4], &[4]);
        assert_eq!(
            next_step(2, &st, &a),
            Step::Change {
                voters: vec![1, 2, 3],
                learners: vec![]
            }
        );
        // The final change had already committed ([3,1,2]): 0 comes back as a learner first.
        let st = status(2, &[2, 3, 4], &[], &[]);
        assert_eq!(
            next_step(2, &st, &a),
            Step::Change {
                voters: vec![2, 3, 4],
                learners: vec![1]
            }
        );
        let st = status(2, &[1, 2, 3], &[], &[]);
        assert_eq!(next_step(2, &st, &a), Step::Complete(vec![0, 1, 2]));
    }
}
