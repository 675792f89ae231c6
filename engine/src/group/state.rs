//! One group's membership and committed offsets (Kafka's `GroupMetadata`).
//!
//! Per-core data held inside the `GroupCoordinator` of the core owning the group's
//! offsets partition; never shared.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::api::{CommittedOffset, WaiterId};

/// The classic group states (Kafka's `GroupState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members; may still hold committed offsets.
    Empty,
    /// Collecting JoinGroup requests for the next generation.
    PreparingRebalance,
    /// Join phase done; waiting for the leader's SyncGroup with the assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Removed; answers COORDINATOR_NOT_AVAILABLE until forgotten.
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups/ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// One member of a group.
#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// The assignment of the current generation (empty until the leader syncs).
    pub assignment: Bytes,
    /// A parked JoinGroup of this member.
    pub join_waiter: Option<WaiterId>,
    /// Whether that parked JoinGroup supports `skip_assignment` (v9+).
    pub join_supports_skip: bool,
    /// A parked SyncGroup of this member.
    pub sync_waiter: Option<WaiterId>,
}

impl Member {
    /// The member's metadata for protocol `name`.
    pub fn metadata_for(&self, name: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m)
    }

    pub fn supports(&self, name: &str) -> bool {
        self.protocols.iter().any(|(n, _)| n == name)
    }
}

/// How the join phase of the current rebalance ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinPhase {
    /// KIP-134 initial delay of a group that was empty: never completes early; on expiry,
    /// extends by the delay (at most `remaining_ms` in total) if a member joined meanwhile.
    InitialDelay {
        remaining_ms: i64,
        new_member_added: bool,
    },
    /// Completes when every member rejoined, or at the rebalance timeout (KIP-62).
    Rebalance,
}

/// A consumer group (Kafka's `GroupMetadata`).
#[derive(Debug, Clone)]
pub struct Group {
    pub group_id: String,
    pub state: GroupState,
    /// When `state` last changed (ms), persisted as `currentStateTimestamp` (KIP-211).
    pub state_timestamp_ms: i64,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    /// Members by id, in join order (BTreeMap keyed by join sequence for determinism).
    pub members: BTreeMap<u64, Member>,
    pub member_seq: HashMap<String, u64>,
    next_seq: u64,
    /// group.instance.id → member id (KIP-345).
    pub static_members: HashMap<String, String>,
    /// Ids handed out with MEMBER_ID_REQUIRED, not yet joined (KIP-394).
    pub pending_members: HashMap<String, ()>,
    /// Members of this generation that have not sent SyncGroup yet.
    pub pending_sync: HashMap<String, ()>,
    pub join_phase: JoinPhase,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
}

impl Group {
    pub fn new(group_id: String, now_ms: i64) -> Self {
        Group {
            group_id,
            state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            member_seq: HashMap::new(),
            next_seq: 0,
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            pending_sync: HashMap::new(),
            join_phase: JoinPhase::Rebalance,
            offsets: BTreeMap::new(),
        }
    }

    pub fn transition(&mut self, to: GroupState, now_ms: i64) {
        use GroupState::*;
        let ok = matches!(
            (self.state, to),
            (Empty, PreparingRebalance)
                | (Stable, PreparingRebalance)
                | (CompletingRebalance, PreparingRebalance)
                | (PreparingRebalance, CompletingRebalance)
                | (PreparingRebalance, Empty)
                | (CompletingRebalance, Stable)
                | (_, Dead)
        ) || (self.state == Empty && to == Empty);
        assert!(
            ok,
            "illegal group state transition {:?} -> {:?} for group {}",
            self.state, to, self.group_id
        );
        self.state = to;
        self.state_timestamp_ms = now_ms;
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.member_seq.contains_key(member_id)
    }

    pub fn member(&self, member_id: &str) -> Option<&Member> {
        self.member_seq
            .get(member_id)
            .and_then(|s| self.members.get(s))
    }

    pub fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        match self.member_seq.get(member_id) {
            Some(s) => self.members.get_mut(s),
            None => None,
        }
    }

    /// Adds a member; the first member becomes the leader.
    pub fn add_member(&mut self, member: Member) {
        assert!(
            !self.has_member(&member.member_id),
            "member {} added twice to group {}",
            member.member_id,
            self.group_id
        );
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        if let Some(iid) = &member.group_instance_id {
            self.static_members
                .insert(iid.clone(), member.member_id.clone());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.member_seq.insert(member.member_id.clone(), seq);
        self.members.insert(seq, member);
    }

    /// Removes a member, returning it; elects a new leader if it led.
    pub fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let seq = self.member_seq.remove(member_id)?;
        let m = self
            .members
            .remove(&seq)
            .expect("member_seq and members out of sync");
        if let Some(iid) = &m.group_instance_id {
            if self.static_members.get(iid).map(String::as_str) == Some(member_id) {
                self.static_members.remove(iid);
            }
        }
        self.pending_sync.remove(member_id);
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = self.members.values().next().map(|m| m.member_id.clone());
        }
        Some(m)
    }

    /// Replaces a static member's id (KIP-345 rejoin with an unknown member id); keeps its
    /// place, assignment and leadership. Returns the old member (its waiters are fenced).
    pub fn replace_member_id(&mut self, old_id: &str, new_id: String) -> Member {
        let seq = self
            .member_seq
            .remove(old_id)
            .expect("replace_member_id of an unknown member");
        let m = self.members.get_mut(&seq).expect("member_seq out of sync");
        let old = m.clone();
        m.member_id = new_id.clone();
        m.join_waiter = None;
        m.sync_waiter = None;
        if let Some(iid) = &m.group_instance_id {
            self.static_members.insert(iid.clone(), new_id.clone());
        }
        if self.leader_id.as_deref() == Some(old_id) {
            self.leader_id = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id).is_some() {
            self.pending_sync.insert(new_id.clone(), ());
        }
        self.member_seq.insert(new_id, seq);
        old
    }

    /// Protocols every member supports (all of them when the group is empty).
    fn candidate_protocols(&self) -> Option<Vec<String>> {
        let mut it = self.members.values();
        let first = it.next()?;
        let mut c: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            c.retain(|n| m.supports(n));
        }
        Some(c)
    }

    /// Whether a member with `protocol_type`/`protocols` may join (same protocol type and
    /// at least one protocol shared with every current member).
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocols.is_empty() || protocol_type.is_empty() {
            return false;
        }
        match self.candidate_protocols() {
            None => true,
            Some(c) => {
                self.protocol_type.as_deref() == Some(protocol_type)
                    && protocols.iter().any(|(n, _)| c.contains(n))
            }
        }
    }

    /// Kafka's protocol selection: among protocols all members support, each member votes
    /// for its most preferred one; most votes wins, ties go to the earlier candidate in the
    /// first member's preference order.
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols()?;
        if candidates.is_empty() {
            return None;
        }
        let mut votes = vec![0usize; candidates.len()];
        for m in self.members.values() {
            let pick = m
                .protocols
                .iter()
                .find_map(|(n, _)| candidates.iter().position(|c| c == n))
                .expect("a member supports every candidate protocol");
            votes[pick] += 1;
        }
        let best = votes
            .iter()
            .enumerate()
            .max_by(|(ia, a), (ib, b)| a.cmp(b).then(ib.cmp(ia)))
            .map(|(i, _)| i)
            .expect("candidates is not empty");
        Some(candidates[best].clone())
    }

    /// Largest rebalance timeout of the members (KIP-62), or 0.
    pub fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0)
    }

    /// Every member has a parked JoinGroup and no KIP-394 pending member is outstanding.
    pub fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    pub fn member_ids(&self) -> Vec<String> {
        self.members.values().map(|m| m.member_id.clone()).collect()
    }

    /// Whether any member's subscription (for the selected consumer protocol) names `topic`.
    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        if self.protocol_type.as_deref() != Some("consumer") {
            return false;
        }
        let Some(proto) = self.protocol_name.as_deref() else {
            return false;
        };
        self.members.values().any(|m| {
            m.metadata_for(proto)
                .and_then(|md| super::records::subscription_topics(md).ok())
                .is_some_and(|ts| ts.iter().any(|t| t == topic))
        })
    }
}
