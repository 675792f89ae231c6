//! Membership changes (Raft thesis §4: single-server changes §4.1, joint consensus §4.3 /
//! Raft paper §6) for the per-core driver.
//!
//! - [`MultiRaft::change_membership`] (leader only) moves a group to exactly the given voters
//!   and learners with one `ConfChangeV2` entry: a simple change when exactly one node
//!   changes, otherwise joint consensus (`C_old,new`, explicit transition) followed by a
//!   leave entry (`C_new`) that the driver proposes itself as soon as the joint
//!   configuration is applied on the leader (or, after a leader change, on the next leader
//!   once its first entry is applied): Freshet's "auto-leave".
//! - Every conf-change entry carries, in its entry context, a [`ConfRecord`]: the change
//!   itself and the complete configuration after it. A replica applies a committed entry
//!   with `RawNode::apply_conf_change`; if its own configuration was not the one the change
//!   was made against (a new replica that started from an empty configuration, or one whose
//!   snapshot carried a later configuration) it adopts the recorded configuration instead.
//!   A configuration is therefore a function of the log prefix: nothing extra is written
//!   when a change is applied, and `open_group` re-derives the configuration from the last
//!   conf-change entry at or below the persisted commit index (the state file's ConfState
//!   covers the prefix below the log anchor).
//! - A leader removed from the voters (or made a learner) keeps leading only until the
//!   change is applied (§4.2.2: it manages a configuration it is not part of until then):
//!   at that moment it sends `MsgTimeoutNow` to the most caught-up remaining voter (which
//!   campaigns at once, thesis §3.10) and becomes a follower in its term. raft-rs 0.7 itself
//!   would let it go on leading as a non-member (`Raft::post_conf_change` returns early for
//!   a removed leader), and its next commit would panic (`maybe_commit` unwraps the
//!   leader's own progress, which the change removed): found by the simulator.
//! - A removed follower is not promotable in its new configuration and never campaigns; one
//!   that never learned of its removal campaigns with pre-vote only, which members in
//!   contact with a leader ignore (check_quorum lease).
//!
//! Ownership: part of [`MultiRaft`] (per core, `!Send`).

use bytes::{BufMut, Bytes, BytesMut};
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry,
    EntryType, Message, MessageType,
};
use raft::{Changer, ProgressTracker, StateRole};

use super::{Group, MultiRaft};
use crate::log::GroupLog;
use crate::meta::MetaStore;
use crate::transport::{GroupId, NodeId, Transport};

/// A group's configuration outside a membership change: voters and learners, ascending.
///
/// Ownership: a plain value (`Send`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    /// Voting members.
    pub voters: Vec<NodeId>,
    /// Non-voting members (receive the log, never vote or campaign).
    pub learners: Vec<NodeId>,
}

/// Why a membership change was refused or did not complete.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MembershipError {
    /// This node does not lead the group.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// Another membership change (or a leadership transfer) is still in progress.
    #[error("a membership change is in progress")]
    InProgress,
    /// The requested configuration is not valid (no voters, a node both voter and learner,
    /// node id 0, ...).
    #[error("invalid membership: {0}")]
    Invalid(String),
    /// No such group on this core.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// Leadership changed before the change was committed and its entry was replaced, or a
    /// snapshot skipped over it: the outcome is unknown here; check `status` and retry.
    #[error("membership change superseded by a new leader")]
    Superseded,
    /// The group was closed before the change completed.
    #[error("group closed")]
    GroupClosed,
    /// The runtime stopped (why).
    #[error("raft runtime stopped: {0}")]
    Stopped(String),
}

/// Kind of a conf-change entry ([`ConfRecord`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfKind {
    /// One node changes (thesis §4.1).
    Simple = 0,
    /// Enter the joint configuration `C_old,new` (§4.3), left by an explicit leave entry.
    EnterJoint = 1,
    /// Leave the joint configuration: `C_new`.
    LeaveJoint = 2,
}

/// What a conf-change entry's context holds (layout in docs/design/replication.md,
/// "Membership changes"): the change and the whole configuration after it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConfRecord {
    pub kind: ConfKind,
    /// (change type, node id) in proposal order.
    pub changes: Vec<(ConfChangeType, NodeId)>,
    /// The configuration once this entry is applied (lists ascending).
    pub after: ConfState,
}

const CONF_RECORD_VERSION: u16 = 1;
/// Bound on ids per list and changes per record (a record is read from the log).
const CONF_IDS_MAX: usize = 1024;

fn change_type_code(t: ConfChangeType) -> u8 {
    match t {
        ConfChangeType::AddNode => 0,
        ConfChangeType::RemoveNode => 1,
        ConfChangeType::AddLearnerNode => 2,
    }
}

fn put_ids(b: &mut BytesMut, ids: &[u64]) {
    b.put_u32_le(ids.len() as u32);
    for id in ids {
        b.put_u64_le(*id);
    }
}

/// A ConfState with every list sorted (raft-rs reports them in hash order).
pub(crate) fn normalized(cs: &ConfState) -> ConfState {
    let sorted = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    };
    ConfState {
        voters: sorted(&cs.voters),
        learners: sorted(&cs.learners),
        voters_outgoing: sorted(&cs.voters_outgoing),
        learners_next: sorted(&cs.learners_next),
        auto_leave: cs.auto_leave,
        ..Default::default()
    }
}

/// The configuration after leaving the joint configuration `cs`.
pub(crate) fn left(cs: &ConfState) -> ConfState {
    let mut learners = cs.learners.clone();
    learners.extend_from_slice(&cs.learners_next);
    normalized(&ConfState {
        voters: cs.voters.clone(),
        learners,
        ..Default::default()
    })
}

impl ConfRecord {
    /// Serializes (little-endian): `version:u16 = 1, kind:u8, change_count:u32,
    /// (change_type:u8, node_id:u64) × change_count, auto_leave:u8`, then four id lists
    /// `voters, learners, voters_outgoing, learners_next`, each `count:u32, ids:u64 …`.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_u16_le(CONF_RECORD_VERSION);
        b.put_u8(self.kind as u8);
        b.put_u32_le(self.changes.len() as u32);
        for (t, id) in &self.changes {
            b.put_u8(change_type_code(*t));
            b.put_u64_le(*id);
        }
        b.put_u8(u8::from(self.after.auto_leave));
        put_ids(&mut b, &self.after.voters);
        put_ids(&mut b, &self.after.learners);
        put_ids(&mut b, &self.after.voters_outgoing);
        put_ids(&mut b, &self.after.learners_next);
        b.freeze()
    }

    /// Parses [`ConfRecord::encode`]'s output; None for anything else.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = b.get(at..at + n)?;
            at += n;
            Some(s)
        };
        if u16::from_le_bytes(take(2)?.try_into().ok()?) != CONF_RECORD_VERSION {
            return None;
        }
        let kind = match take(1)?[0] {
            0 => ConfKind::Simple,
            1 => ConfKind::EnterJoint,
            2 => ConfKind::LeaveJoint,
            _ => return None,
        };
        let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        if n > CONF_IDS_MAX {
            return None;
        }
        let mut changes = Vec::with_capacity(n);
        for _ in 0..n {
            let t = match take(1)?[0] {
                0 => ConfChangeType::AddNode,
                1 => ConfChangeType::RemoveNode,
                2 => ConfChangeType::AddLearnerNode,
                _ => return None,
            };
            changes.push((t, u64::from_le_bytes(take(8)?.try_into().ok()?)));
        }
        let auto_leave = match take(1)?[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let mut lists: [Vec<u64>; 4] = Default::default();
        for list in lists.iter_mut() {
            let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            if n > CONF_IDS_MAX {
                return None;
            }
            for _ in 0..n {
                list.push(u64::from_le_bytes(take(8)?.try_into().ok()?));
            }
        }
        if at != b.len() {
            return None;
        }
        let [voters, learners, voters_outgoing, learners_next] = lists;
        Some(Self {
            kind,
            changes,
            after: ConfState {
                voters,
                learners,
                voters_outgoing,
                learners_next,
                auto_leave,
                ..Default::default()
            },
        })
    }

    /// The raft-rs change this record describes.
    pub fn conf_change(&self) -> ConfChangeV2 {
        let mut cc = ConfChangeV2::default();
        cc.set_transition(match self.kind {
            ConfKind::EnterJoint => ConfChangeTransition::Explicit,
            ConfKind::Simple | ConfKind::LeaveJoint => ConfChangeTransition::Auto,
        });
        cc.changes = self
            .changes
            .iter()
            .map(|(t, id)| {
                let mut s = ConfChangeSingle::default();
                s.set_change_type(*t);
                s.node_id = *id;
                s
            })
            .collect::<Vec<_>>()
            .into();
        cc
    }

    /// The record stored in a committed conf-change entry. A broken invariant if missing:
    /// only this driver proposes conf changes, always with a record.
    pub fn of_entry(gid: GroupId, e: &Entry) -> Self {
        assert!(
            e.get_entry_type() == EntryType::EntryConfChangeV2,
            "group {gid}: entry {} is a {:?}; this driver proposes only ConfChangeV2",
            e.index,
            e.get_entry_type()
        );
        Self::decode(&e.context).unwrap_or_else(|| {
            panic!(
                "group {gid}: conf-change entry {} has no valid membership record",
                e.index
            )
        })
    }
}

/// The voters a configuration counts on (both halves when joint).
pub(crate) fn all_voters(cs: &ConfState) -> Vec<NodeId> {
    let mut v = cs.voters.clone();
    v.extend_from_slice(&cs.voters_outgoing);
    v.sort_unstable();
    v.dedup();
    v
}

/// A progress tracker holding exactly `cs` (raft-rs's `confchange::restore`, which is not
/// public, rebuilt on the public `Changer`): outgoing voters one by one, then the joint step.
fn tracker_for(
    cs: &ConfState,
    next_idx: u64,
    max_inflight: usize,
) -> raft::Result<ProgressTracker> {
    let single = |id: u64, t: ConfChangeType| {
        let mut s = ConfChangeSingle::default();
        s.set_change_type(t);
        s.node_id = id;
        s
    };
    let mut prs = ProgressTracker::new(max_inflight);
    let mut incoming = Vec::new();
    for id in &cs.voters_outgoing {
        incoming.push(single(*id, ConfChangeType::RemoveNode));
    }
    for id in &cs.voters {
        incoming.push(single(*id, ConfChangeType::AddNode));
    }
    for id in cs.learners.iter().chain(&cs.learners_next) {
        incoming.push(single(*id, ConfChangeType::AddLearnerNode));
    }
    if cs.voters_outgoing.is_empty() {
        for s in incoming {
            let (cfg, changes) = Changer::new(&prs).simple(&[s])?;
            prs.apply_conf(cfg, changes, next_idx);
        }
    } else {
        for id in &cs.voters_outgoing {
            let (cfg, changes) =
                Changer::new(&prs).simple(&[single(*id, ConfChangeType::AddNode)])?;
            prs.apply_conf(cfg, changes, next_idx);
        }
        let (cfg, changes) = Changer::new(&prs).enter_joint(cs.auto_leave, &incoming)?;
        prs.apply_conf(cfg, changes, next_idx);
    }
    Ok(prs)
}

/// An outstanding [`MultiRaft::change_membership`] of one group.
#[derive(Debug, Clone)]
pub(crate) struct ConfOp {
    pub token: u64,
    /// Index and term of the proposed entry.
    pub index: u64,
    pub term: u64,
}

/// Outcome of a [`MultiRaft::change_membership`], reported by
/// [`MultiRaft::take_membership_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipEvent {
    /// The group.
    pub group: GroupId,
    /// The caller's token.
    pub token: u64,
    /// The configuration reached (applied on this node), or why not.
    pub result: Result<Membership, MembershipError>,
}

fn membership_of(cs: &ConfState) -> Membership {
    let n = normalized(cs);
    Membership {
        voters: n.voters,
        learners: n.learners,
    }
}

impl<L: GroupLog, M: MetaStore, T: Transport> MultiRaft<L, M, T> {
    /// Leader only: moves `group` to exactly `voters` (+ `learners`). One node changing is a
    /// simple change (§4.1); more is joint consensus (§4.3) whose leave entry the driver
    /// proposes itself. `Ok(Some(m))`: nothing to change; `Ok(None)`: proposed, the outcome
    /// comes as a [`MembershipEvent`] carrying `token` once the final (non-joint)
    /// configuration is applied on this node.
    pub fn change_membership(
        &mut self,
        group: GroupId,
        voters: &[NodeId],
        learners: &[NodeId],
        token: u64,
    ) -> Result<Option<Membership>, MembershipError> {
        let mut want_voters = voters.to_vec();
        want_voters.sort_unstable();
        want_voters.dedup();
        let mut want_learners = learners.to_vec();
        want_learners.sort_unstable();
        want_learners.dedup();
        if want_voters.is_empty() {
            return Err(MembershipError::Invalid("no voters".into()));
        }
        if want_voters.len() != voters.len() || want_learners.len() != learners.len() {
            return Err(MembershipError::Invalid("a node is listed twice".into()));
        }
        if want_voters.contains(&0) || want_learners.contains(&0) {
            return Err(MembershipError::Invalid("node id 0 is reserved".into()));
        }
        if let Some(id) = want_voters.iter().find(|v| want_learners.contains(v)) {
            return Err(MembershipError::Invalid(format!(
                "node {id} is both a voter and a learner"
            )));
        }
        let g = self
            .groups
            .get_mut(&group)
            .ok_or(MembershipError::UnknownGroup(group))?;
        let r = &g.raw.raft;
        if r.state != StateRole::Leader {
            let leader = (r.leader_id != 0).then_some(r.leader_id);
            return Err(MembershipError::NotLeader { leader });
        }
        let cur = normalized(&g.st.borrow().conf_state);
        if g.conf_op.is_some()
            || !cur.voters_outgoing.is_empty()
            || r.has_pending_conf()
            || r.lead_transferee.is_some()
        {
            return Err(MembershipError::InProgress);
        }
        let mut changes = Vec::new();
        for id in &want_voters {
            if !cur.voters.contains(id) {
                changes.push((ConfChangeType::AddNode, *id));
            }
        }
        for id in &want_learners {
            if !cur.learners.contains(id) {
                changes.push((ConfChangeType::AddLearnerNode, *id));
            }
        }
        for id in cur.voters.iter().chain(&cur.learners) {
            if !want_voters.contains(id) && !want_learners.contains(id) {
                changes.push((ConfChangeType::RemoveNode, *id));
            }
        }
        if changes.is_empty() {
            return Ok(Some(membership_of(&cur)));
        }
        let kind = if changes.len() == 1 {
            ConfKind::Simple
        } else {
            ConfKind::EnterJoint
        };
        let mut rec = ConfRecord {
            kind,
            changes,
            after: ConfState::default(),
        };
        // The configuration after the change, as raft-rs will compute it (also validates).
        let cc = rec.conf_change();
        let mut changer = Changer::new(r.prs());
        let outcome = match kind {
            ConfKind::Simple => changer.simple(&cc.changes),
            _ => changer.enter_joint(false, &cc.changes),
        };
        let (cfg, _) = outcome.map_err(|e| MembershipError::Invalid(e.to_string()))?;
        rec.after = normalized(&cfg.to_conf_state());
        let before = r.raft_log.last_index();
        if g.raw
            .propose_conf_change(rec.encode().to_vec(), cc)
            .is_err()
        {
            return Err(MembershipError::InProgress);
        }
        let r = &g.raw.raft;
        let index = r.raft_log.last_index();
        if index == before || r.pending_conf_index != index {
            // Dropped, or replaced by an empty entry (raft-rs refused it).
            return Err(MembershipError::InProgress);
        }
        g.conf_op = Some(ConfOp {
            token,
            index,
            term: r.term,
        });
        Ok(None)
    }

    /// Outcomes of membership changes since the last call.
    pub fn take_membership_events(&mut self) -> Vec<MembershipEvent> {
        std::mem::take(&mut self.membership_events)
    }

    /// Applies the committed conf-change entry `e` (called in log order by `apply`).
    pub(super) fn apply_conf_entry(&mut self, gid: GroupId, e: &Entry) {
        let max_inflight = self.cfg.max_inflight_msgs;
        let me = self.cfg.node_id;
        let g = self.groups.get_mut(&gid).expect("group exists");
        let rec = ConfRecord::of_entry(gid, e);
        let after = normalized(&rec.after);
        let applied = g.raw.apply_conf_change(&rec.conf_change());
        if !applied.is_ok_and(|cs| normalized(&cs) == after) {
            // This replica's configuration was not the one the change was made against (a
            // new replica that started empty, or a snapshot that carried a later
            // configuration): adopt the recorded one.
            Self::adopt_conf(g, &after, me, max_inflight, gid);
        }
        g.st.borrow_mut().conf_state = after.clone();
        g.conf_dirty = true;
        self.step_down_if_removed(gid);
        self.conf_applied(gid, e.index, e.term, &after);
    }

    /// A leader that is no longer a voter of its applied configuration hands leadership to
    /// the most caught-up voter (`MsgTimeoutNow`) and becomes a follower (module docs).
    fn step_down_if_removed(&mut self, gid: GroupId) {
        let me = self.cfg.node_id;
        let g = self.groups.get_mut(&gid).expect("group exists");
        let r = &mut g.raw.raft;
        if r.state != StateRole::Leader || r.promotable() {
            return;
        }
        let cs = normalized(&g.st.borrow().conf_state);
        let best = all_voters(&cs)
            .into_iter()
            .filter(|id| *id != me)
            .max_by_key(|id| (r.prs().get(*id).map_or(0, |p| p.matched), *id));
        let term = r.term;
        // Sent by the driver itself: raft-rs refuses messages queued by a node that is no
        // longer leader when the Ready is advanced.
        let timeout_now = best.map(|to| {
            let mut m = Message {
                to,
                from: me,
                term,
                ..Default::default()
            };
            m.set_msg_type(MessageType::MsgTimeoutNow);
            m
        });
        r.become_follower(term, raft::INVALID_ID);
        self.tick_changes.insert(gid);
        self.queue(gid, timeout_now.into_iter().collect());
    }

    /// Replaces the group's progress tracker with one holding exactly `cs`.
    fn adopt_conf(g: &mut Group<L>, cs: &ConfState, me: NodeId, max_inflight: usize, gid: u64) {
        let r = &mut g.raw.raft;
        let last = r.raft_log.last_index();
        let prs = tracker_for(cs, last + 1, max_inflight).unwrap_or_else(|e| {
            panic!("group {gid}: recorded configuration {cs:?} is not valid: {e}")
        });
        *r.mut_prs() = prs;
        if r.state == StateRole::Leader {
            if let Some(p) = r.mut_prs().get_mut(me) {
                p.maybe_update(last);
            }
        }
        r.post_conf_change();
    }

    /// Bookkeeping after entry `index` (a conf change or not) was applied: completes or
    /// fails the group's outstanding [`ConfOp`].
    pub(super) fn conf_applied(&mut self, gid: GroupId, index: u64, term: u64, cs: &ConfState) {
        let g = self.groups.get_mut(&gid).expect("group exists");
        let Some(op) = g.conf_op.clone() else { return };
        if index < op.index {
            return;
        }
        let result = if index == op.index && term != op.term {
            Err(MembershipError::Superseded)
        } else if cs.voters_outgoing.is_empty() {
            Ok(membership_of(cs))
        } else {
            return; // joint: wait for the leave entry
        };
        g.conf_op = None;
        self.membership_events.push(MembershipEvent {
            group: gid,
            token: op.token,
            result,
        });
    }

    /// A normal entry at the index of the outstanding change replaced it (raft-rs refused
    /// it, or a new leader's entry took the index).
    pub(super) fn normal_applied(&mut self, gid: GroupId, index: u64) {
        let g = self.groups.get_mut(&gid).expect("group exists");
        if g.conf_op.as_ref().is_some_and(|op| op.index == index) {
            let op = g.conf_op.take().expect("checked");
            self.membership_events.push(MembershipEvent {
                group: gid,
                token: op.token,
                result: Err(MembershipError::Superseded),
            });
        }
    }

    /// After a snapshot install: the outstanding change's entry may be inside the snapshot
    /// (its outcome then shows in the snapshot's configuration only if it was the last one).
    pub(super) fn conf_after_snapshot(&mut self, gid: GroupId, snapshot_index: u64) {
        let g = self.groups.get_mut(&gid).expect("group exists");
        if g.conf_op
            .as_ref()
            .is_some_and(|op| op.index <= snapshot_index)
        {
            let op = g.conf_op.take().expect("checked");
            self.membership_events.push(MembershipEvent {
                group: gid,
                token: op.token,
                result: Err(MembershipError::Superseded),
            });
        }
    }

    /// Fails the outstanding change of a group being closed.
    pub(super) fn conf_closed(&mut self, gid: GroupId, op: Option<ConfOp>) {
        if let Some(op) = op {
            self.membership_events.push(MembershipEvent {
                group: gid,
                token: op.token,
                result: Err(MembershipError::GroupClosed),
            });
        }
    }

    /// Once per pass, before collecting `Ready`s: a leader in a joint configuration with
    /// nothing pending proposes the leave entry (§4.3).
    pub(super) fn drive_membership(&mut self) {
        for g in self.groups.values_mut() {
            if g.raw.raft.state != StateRole::Leader {
                continue;
            }
            let cs = normalized(&g.st.borrow().conf_state);
            let r = &g.raw.raft;
            if !cs.voters_outgoing.is_empty() && r.promotable() && !r.has_pending_conf() {
                let rec = ConfRecord {
                    kind: ConfKind::LeaveJoint,
                    changes: Vec::new(),
                    after: left(&cs),
                };
                // Dropped during a leadership transfer: retried next pass.
                let _ = g
                    .raw
                    .propose_conf_change(rec.encode().to_vec(), rec.conf_change());
            }
        }
    }
}

/// The configuration after the committed prefix of a recovered log: the record of the last
/// conf-change entry at or below the commit index, if any (`open_group`).
pub(crate) fn recovered_conf(gid: GroupId, e: &Entry) -> ConfState {
    normalized(&ConfRecord::of_entry(gid, e).after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_record_roundtrips_and_refuses_other_bytes() {
        let r = ConfRecord {
            kind: ConfKind::EnterJoint,
            changes: vec![
                (ConfChangeType::AddNode, 4),
                (ConfChangeType::RemoveNode, 1),
            ],
            after: ConfState {
                voters: vec![2, 3, 4],
                voters_outgoing: vec![1, 2, 3],
                ..Default::default()
            },
        };
        let b = r.encode();
        assert_eq!(ConfRecord::decode(&b), Some(r.clone()));
        assert_eq!(ConfRecord::decode(&b[..b.len() - 1]), None, "truncated");
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(ConfRecord::decode(&long), None, "trailing bytes");
        let mut v = b.to_vec();
        v[0] = 9;
        assert_eq!(ConfRecord::decode(&v), None, "unknown version");
        let cc = r.conf_change();
        assert_eq!(
            cc.enter_joint(),
            Some(false),
            "explicit joint, left by Freshet"
        );
        let leave = ConfRecord {
            kind: ConfKind::LeaveJoint,
            changes: vec![],
            after: left(&r.after),
        };
        assert!(leave.conf_change().leave_joint());
        assert_eq!(leave.after.voters, vec![2, 3, 4]);
        assert!(leave.after.voters_outgoing.is_empty());
    }

    #[test]
    fn a_tracker_can_be_rebuilt_for_any_configuration_joint_included() {
        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![5],
            voters_outgoing: vec![1, 2, 4, 6],
            learners_next: vec![4],
            ..Default::default()
        };
        let prs = tracker_for(&cs, 10, 16).unwrap();
        assert_eq!(normalized(&prs.conf().to_conf_state()), normalized(&cs));
        let empty = tracker_for(&ConfState::default(), 1, 16).unwrap();
        assert!(empty.conf().to_conf_state().voters.is_empty());
    }
}
