//! The per-core group coordinator: all groups of the `__consumer_offsets` partitions this
//! core owns, their committed offsets, and their timers.
//!
//! Owned by one core (`!Send` by use; nothing in it is shared). Pure: time is an argument,
//! delayed answers and log appends are [`Effect`]s, and [`GroupCoordinator::tick`] fires
//! due timers. Kafka's `GroupCoordinator` (classic protocol) is the behavioural reference;
//! KIPs are cited where a rule comes from one.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::api::*;
use super::config::GroupConfig;
use super::error::{code, GroupError, RecordError};
use super::partition_for_group;
use super::records::{self, GroupValue, MemberValue, OffsetValue, RecordKey};
use super::state::{Group, GroupState, JoinPhase, Member};
use super::timer::{TimerKey, Timers};

/// Load status of an offsets partition on this core, with the leader epoch of the
/// `__consumer_offsets` partition it was (or is being) loaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartitionStatus {
    /// Replaying the log; requests get COORDINATOR_LOAD_IN_PROGRESS. Epoch
    /// [`EPOCH_UNKNOWN`] while this core waits to learn whether it leads the partition.
    Loading { epoch: i32 },
    /// Serving, as leader of the partition in `epoch`.
    Active { epoch: i32 },
}

impl PartitionStatus {
    fn epoch(self) -> i32 {
        match self {
            PartitionStatus::Loading { epoch } | PartitionStatus::Active { epoch } => epoch,
        }
    }

    fn is_loading(self) -> bool {
        matches!(self, PartitionStatus::Loading { .. })
    }
}

/// Epoch of a partition marked as loading before its leadership is known (broker start).
pub const EPOCH_UNKNOWN: i32 = -1;

/// What the driver must do after [`GroupCoordinator::on_leadership`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadershipAction {
    /// Nothing changed (same leader epoch, or still not the leader).
    None,
    /// Replay the partition's log for `epoch` (read it, feed [`GroupCoordinator::load_record`]
    /// and [`GroupCoordinator::finish_load`] only while
    /// [`GroupCoordinator::loading_epoch`] is still `Some(epoch)`).
    Load { epoch: i32 },
    /// The partition's groups were dropped; the effects answer their parked requests.
    Unloaded,
}

/// Records replayed so far for one loading partition: the latest value per key wins
/// (`None` = tombstone), exactly what compaction would keep.
#[derive(Debug, Default)]
struct LoadBuffer {
    groups: HashMap<String, Option<GroupValue>>,
    offsets: HashMap<(String, String, i32), Option<OffsetValue>>,
}

/// Groups and offsets of the offsets partitions owned by this core. See the module doc.
#[derive(Debug)]
pub struct GroupCoordinator {
    cfg: GroupConfig,
    partitions: HashMap<i32, PartitionStatus>,
    loading: HashMap<i32, LoadBuffer>,
    groups: HashMap<String, Group>,
    timers: Timers,
    rng_state: u64,
}

impl GroupCoordinator {
    /// A coordinator owning no partitions yet. `id_seed` seeds member-id generation
    /// (use a random value in production, a constant in tests).
    pub fn new(cfg: GroupConfig, id_seed: u64) -> Self {
        assert!(
            cfg.offsets_topic_num_partitions > 0,
            "offsets_topic_num_partitions must be positive"
        );
        GroupCoordinator {
            cfg,
            partitions: HashMap::new(),
            loading: HashMap::new(),
            groups: HashMap::new(),
            timers: Timers::default(),
            rng_state: id_seed,
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// The offsets partition of `group_id`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for_group(group_id, self.cfg.offsets_topic_num_partitions)
    }

    /// When [`Self::tick`] next has work to do.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.timers.next_deadline()
    }

    /// The group, for inspection (tests, DescribeGroups).
    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    /// Deadline of a timer (tests).
    pub fn timer_deadline_ms(&self, key: &TimerKey) -> Option<i64> {
        self.timers.deadline_of(key)
    }

    // ------------------------------------------------------------ partition loading

    /// This core becomes coordinator of `partition` (as leader in `epoch`) and starts
    /// replaying its log; its groups answer COORDINATOR_LOAD_IN_PROGRESS until
    /// [`Self::finish_load`]. Idempotent while the partition is loading in the same epoch
    /// (records replayed so far are kept); a load under another epoch starts over. Panics
    /// if the partition is being served: [`Self::unload`] it first (a new leader epoch means
    /// the log may have changed under the loaded state).
    pub fn begin_load(&mut self, partition: i32, epoch: i32) {
        match self.partitions.get(&partition) {
            Some(PartitionStatus::Loading { epoch: e }) if *e == epoch => return,
            Some(PartitionStatus::Active { epoch: e }) => panic!(
                "begin_load of offsets partition {partition} (epoch {epoch}) while it is served in epoch {e}"
            ),
            _ => {}
        }
        self.partitions
            .insert(partition, PartitionStatus::Loading { epoch });
        self.loading.insert(partition, LoadBuffer::default());
    }

    /// Leadership of `__consumer_offsets`/`partition` on this node, as the partition's Raft
    /// group reports it (`epoch` = leader epoch = Raft term). Kafka's
    /// `GroupCoordinator.onElection` / `onResignation`: becoming leader (or leader again in a
    /// newer epoch) drops whatever was loaded before and asks for a replay; losing leadership
    /// drops the partition's groups, answering their parked JoinGroup/SyncGroup with
    /// NOT_COORDINATOR so clients look the coordinator up again. Idempotent.
    pub fn on_leadership(
        &mut self,
        partition: i32,
        is_leader: bool,
        epoch: i32,
        out: &mut Vec<Effect>,
    ) -> LeadershipAction {
        let current = self.partitions.get(&partition).copied();
        if !is_leader {
            return match current {
                None => LeadershipAction::None,
                Some(_) => {
                    self.unload(partition, out);
                    LeadershipAction::Unloaded
                }
            };
        }
        match current {
            // Same epoch, or a stale report of an older term than the one loading or
            // served (terms never go back while the partition stays open): nothing to do.
            Some(st) if st.epoch() >= epoch => LeadershipAction::None,
            Some(PartitionStatus::Active { .. }) => {
                self.unload(partition, out);
                self.begin_load(partition, epoch);
                LeadershipAction::Load { epoch }
            }
            Some(PartitionStatus::Loading { .. }) | None => {
                self.begin_load(partition, epoch);
                LeadershipAction::Load { epoch }
            }
        }
    }

    /// The epoch `partition` is loading in (`None` when it is served or not owned).
    pub fn loading_epoch(&self, partition: i32) -> Option<i32> {
        match self.partitions.get(&partition) {
            Some(PartitionStatus::Loading { epoch }) => Some(*epoch),
            _ => None,
        }
    }

    /// The epoch `partition` is served in (`None` while loading or not owned).
    pub fn active_epoch(&self, partition: i32) -> Option<i32> {
        match self.partitions.get(&partition) {
            Some(PartitionStatus::Active { epoch }) => Some(*epoch),
            _ => None,
        }
    }

    /// The epoch of a partition that must be served (it has groups): a broken invariant
    /// otherwise, since groups exist only in served partitions.
    fn served_epoch(&self, partition: i32) -> i32 {
        self.active_epoch(partition)
            .unwrap_or_else(|| panic!("offsets partition {partition} has groups but is not served"))
    }

    /// Whether this core owns `partition` in any state (loading or served).
    pub fn owns_partition(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Replays one record of `partition` (in log order). A record that does not decode is
    /// reported and otherwise ignored by the caller.
    pub fn load_record(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), RecordError> {
        let buf = self
            .loading
            .get_mut(&partition)
            .unwrap_or_else(|| panic!("load_record for partition {partition} not loading"));
        match records::decode_key(key)? {
            RecordKey::Offset {
                group,
                topic,
                partition: p,
            } => {
                let v = value.map(records::decode_offset_value).transpose()?;
                buf.offsets.insert((group, topic, p), v);
            }
            RecordKey::Group { group } => {
                let v = value.map(records::decode_group_value).transpose()?;
                buf.groups.insert(group, v);
            }
        }
        Ok(())
    }

    /// Ends the replay of `partition`: builds its groups and starts serving them. Loaded
    /// members get a fresh session timeout from `now_ms` (as Kafka does after failover).
    pub fn finish_load(&mut self, partition: i32, now_ms: i64) {
        let buf = self
            .loading
            .remove(&partition)
            .unwrap_or_else(|| panic!("finish_load for partition {partition} not loading"));
        let mut group_ids: Vec<&String> = buf.groups.keys().collect();
        group_ids.sort();
        for gid in group_ids {
            let Some(v) = &buf.groups[gid] else { continue };
            let g = self.group_from_value(gid.clone(), v, now_ms);
            self.groups.insert(gid.clone(), g);
        }
        let mut offsets: Vec<_> = buf.offsets.into_iter().collect();
        offsets.sort_by(|a, b| a.0.cmp(&b.0));
        for ((gid, topic, p), v) in offsets {
            let Some(v) = v else { continue };
            let g = self
                .groups
                .entry(gid.clone())
                .or_insert_with(|| Group::new(gid, now_ms));
            g.offsets.insert(
                (topic, p),
                CommittedOffset {
                    offset: v.offset,
                    leader_epoch: v.leader_epoch,
                    metadata: v.metadata,
                    commit_timestamp_ms: v.commit_timestamp_ms,
                },
            );
        }
        let epoch = self
            .partitions
            .get(&partition)
            .map(|st| st.epoch())
            .expect("loading partitions have a status");
        self.partitions
            .insert(partition, PartitionStatus::Active { epoch });
        if self.timers.deadline_of(&TimerKey::OffsetExpiry).is_none() {
            self.timers.arm(
                TimerKey::OffsetExpiry,
                now_ms + self.cfg.offsets_retention_check_interval_ms,
            );
        }
    }

    fn group_from_value(&mut self, gid: String, v: &GroupValue, now_ms: i64) -> Group {
        let mut g = Group::new(gid.clone(), now_ms);
        g.generation_id = v.generation;
        g.protocol_type = (!v.protocol_type.is_empty()).then(|| v.protocol_type.clone());
        g.protocol_name = v.protocol.clone();
        if v.current_state_timestamp_ms >= 0 {
            g.state_timestamp_ms = v.current_state_timestamp_ms;
        }
        for m in &v.members {
            let protocols = match &v.protocol {
                Some(p) => vec![(p.clone(), m.subscription.clone())],
                None => Vec::new(),
            };
            g.add_member(Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocol_type: v.protocol_type.clone(),
                protocols,
                assignment: m.assignment.clone(),
                join_waiter: None,
                join_supports_skip: false,
                sync_waiter: None,
            });
            self.timers.arm(
                TimerKey::Session {
                    group: gid.clone(),
                    member: m.member_id.clone(),
                },
                now_ms + m.session_timeout_ms as i64,
            );
        }
        g.leader_id = v.leader.clone().filter(|l| g.has_member(l));
        if g.leader_id.is_none() {
            g.leader_id = g.members.values().next().map(|m| m.member_id.clone());
        }
        g.state = if g.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        g
    }

    /// This core stops coordinating `partition` (leadership moved): its groups are dropped
    /// and parked requests answered NOT_COORDINATOR so clients look the coordinator up again.
    pub fn unload(&mut self, partition: i32, out: &mut Vec<Effect>) {
        self.partitions.remove(&partition);
        self.loading.remove(&partition);
        let n = self.cfg.offsets_topic_num_partitions;
        let mut gone: Vec<String> = self
            .groups
            .keys()
            .filter(|g| partition_for_group(g, n) == partition)
            .cloned()
            .collect();
        gone.sort();
        for gid in gone {
            let g = self.groups.remove(&gid).expect("listed above");
            for m in g.members.values() {
                Self::fail_waiters(m, code::NOT_COORDINATOR, out);
                self.timers.cancel(&TimerKey::Session {
                    group: gid.clone(),
                    member: m.member_id.clone(),
                });
            }
            for pm in g.pending_members.keys() {
                self.timers.cancel(&TimerKey::PendingMember {
                    group: gid.clone(),
                    member: pm.clone(),
                });
            }
            self.timers.cancel(&TimerKey::Join { group: gid.clone() });
            self.timers.cancel(&TimerKey::PendingSync {
                group: gid.clone(),
                generation: g.generation_id,
            });
        }
    }

    /// Whether this core serves `group_id` now (NOT_COORDINATOR / LOAD_IN_PROGRESS if not).
    pub fn check_coordinator(&self, group_id: &str) -> Result<i32, GroupError> {
        let p = self.partition_for(group_id);
        match self.partitions.get(&p) {
            None => Err(GroupError::NotCoordinator),
            Some(PartitionStatus::Loading { .. }) => Err(GroupError::LoadInProgress),
            Some(PartitionStatus::Active { .. }) => Ok(p),
        }
    }

    // ------------------------------------------------------------ helpers

    /// A fresh member id: `<client.id>-<uuid>` like Kafka's.
    fn new_member_id(&mut self, client_id: &str) -> String {
        let a = self.next_random();
        let b = self.next_random();
        format!(
            "{}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            client_id,
            (a >> 32) as u32,
            (a >> 16) as u16,
            a as u16,
            (b >> 48) as u16,
            b & 0xffff_ffff_ffff
        )
    }

    /// splitmix64.
    fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fail_waiters(m: &Member, error_code: i16, out: &mut Vec<Effect>) {
        if let Some(w) = m.join_waiter {
            out.push(Effect::Join {
                waiter: w,
                response: JoinResponse::error(error_code, m.member_id.clone()),
            });
        }
        if let Some(w) = m.sync_waiter {
            out.push(Effect::Sync {
                waiter: w,
                response: SyncResponse::error(error_code),
            });
        }
    }

    fn arm_session(&mut self, group: &str, member_id: &str, session_timeout_ms: i32, now: i64) {
        self.timers.arm(
            TimerKey::Session {
                group: group.to_string(),
                member: member_id.to_string(),
            },
            now + session_timeout_ms as i64,
        );
    }

    fn reset_session(&mut self, group_id: &str, member_id: &str, now: i64) {
        let st = self
            .groups
            .get(group_id)
            .and_then(|g| g.member(member_id))
            .map(|m| m.session_timeout_ms);
        if let Some(st) = st {
            self.arm_session(group_id, member_id, st, now);
        }
    }

    /// KIP-345 fencing, then membership: the checks every member request starts with.
    fn validate_member(
        g: &Group,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if let Some(iid) = group_instance_id {
            if let Some(cur) = g.static_members.get(iid) {
                if cur != member_id {
                    return Err(GroupError::FencedInstanceId);
                }
            }
        }
        if !g.has_member(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        Ok(())
    }

    fn group_record(g: &Group) -> OffsetsRecord {
        let proto = g.protocol_name.clone();
        let value = GroupValue {
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            generation: g.generation_id,
            protocol: proto.clone(),
            leader: g.leader_id.clone(),
            current_state_timestamp_ms: g.state_timestamp_ms,
            members: g
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: proto
                        .as_deref()
                        .and_then(|p| m.metadata_for(p))
                        .cloned()
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        };
        OffsetsRecord {
            key: records::encode_group_key(&g.group_id),
            value: Some(records::encode_group_value(&value)),
        }
    }

    fn persist_group(&self, group_id: &str, out: &mut Vec<Effect>) {
        let g = &self.groups[group_id];
        let partition = self.partition_for(group_id);
        out.push(Effect::Persist {
            partition,
            epoch: self.served_epoch(partition),
            records: vec![Self::group_record(g)],
        });
    }

    /// The JoinGroup answer for `member_id` in the group's current generation.
    fn join_response(g: &Group, member_id: &str, as_leader: bool, skip: bool) -> JoinResponse {
        let proto = g.protocol_name.clone();
        let members = if as_leader {
            g.members
                .values()
                .map(|m| JoinMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: proto
                        .as_deref()
                        .and_then(|p| m.metadata_for(p))
                        .cloned()
                        .unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error_code: code::NONE,
            generation_id: g.generation_id,
            protocol_type: g.protocol_type.clone(),
            protocol_name: proto,
            leader: g.leader_id.clone().unwrap_or_default(),
            skip_assignment: skip,
            member_id: member_id.to_string(),
            members,
        }
    }

    // ------------------------------------------------------------ rebalance core

    /// Moves the group to PreparingRebalance (Kafka `prepareRebalance`).
    fn prepare_rebalance(&mut self, gid: &str, now: i64, out: &mut Vec<Effect>) {
        let initial_delay = self.cfg.initial_rebalance_delay_ms;
        let g = self.groups.get_mut(gid).expect("group exists");
        if g.state == GroupState::CompletingRebalance {
            // Members waiting for an assignment of a generation that will not happen.
            for m in g.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    out.push(Effect::Sync {
                        waiter: w,
                        response: SyncResponse::error(code::REBALANCE_IN_PROGRESS),
                    });
                }
            }
        }
        g.pending_sync.clear();
        let pending_sync_key = TimerKey::PendingSync {
            group: gid.to_string(),
            generation: g.generation_id,
        };
        let was_empty = g.state == GroupState::Empty;
        g.transition(GroupState::PreparingRebalance, now);
        let deadline = if was_empty {
            // KIP-134: wait for more members before the first generation.
            let remaining_ms = (g.rebalance_timeout_ms() - initial_delay).max(0);
            g.join_phase = JoinPhase::InitialDelay {
                remaining_ms,
                new_member_added: false,
            };
            now + initial_delay
        } else {
            g.join_phase = JoinPhase::Rebalance;
            now + g.rebalance_timeout_ms()
        };
        self.timers.cancel(&pending_sync_key);
        self.timers.arm(
            TimerKey::Join {
                group: gid.to_string(),
            },
            deadline,
        );
    }

    fn maybe_prepare_rebalance(&mut self, gid: &str, now: i64, out: &mut Vec<Effect>) {
        let st = self.groups[gid].state;
        if matches!(
            st,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(gid, now, out);
        }
    }

    /// Completes the join phase early when everyone is in (not during the initial delay).
    fn try_complete_join(&mut self, gid: &str, now: i64, out: &mut Vec<Effect>) {
        let g = &self.groups[gid];
        if g.state == GroupState::PreparingRebalance
            && g.join_phase == JoinPhase::Rebalance
            && g.all_members_joined()
        {
            self.complete_join(gid, now, out);
        }
    }

    /// Ends the join phase: drops dynamic members that did not rejoin, starts the next
    /// generation and answers every parked JoinGroup (the leader gets the members).
    fn complete_join(&mut self, gid: &str, now: i64, out: &mut Vec<Effect>) {
        self.timers.cancel(&TimerKey::Join {
            group: gid.to_string(),
        });
        let g = self.groups.get_mut(gid).expect("group exists");
        assert_eq!(
            g.state,
            GroupState::PreparingRebalance,
            "complete_join of group {gid} not preparing"
        );
        // Dynamic members that did not rejoin are out; static ones stay until their session
        // expires (KIP-345).
        let not_rejoined: Vec<String> = g
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in not_rejoined {
            let m = g.remove_member(&id).expect("listed above");
            Self::fail_waiters(&m, code::UNKNOWN_MEMBER_ID, out);
            self.timers.cancel(&TimerKey::Session {
                group: gid.to_string(),
                member: id,
            });
        }
        if g.is_empty() {
            g.generation_id += 1;
            g.protocol_name = None;
            g.leader_id = None;
            g.transition(GroupState::Empty, now);
            self.persist_group(gid, out);
            return;
        }
        // The leader must be a member that rejoined.
        let leader_joined = g
            .leader_id
            .as_deref()
            .and_then(|l| g.member(l))
            .is_some_and(|m| m.join_waiter.is_some());
        if !leader_joined {
            match g.members.values().find(|m| m.join_waiter.is_some()) {
                Some(m) => g.leader_id = Some(m.member_id.clone()),
                None => {
                    // Only static members that have not rejoined: wait again until they
                    // rejoin or their sessions expire.
                    let d = now + g.rebalance_timeout_ms();
                    g.join_phase = JoinPhase::Rebalance;
                    self.timers.arm(
                        TimerKey::Join {
                            group: gid.to_string(),
                        },
                        d,
                    );
                    return;
                }
            }
        }
        g.generation_id += 1;
        g.protocol_name = g.select_protocol();
        assert!(
            g.protocol_name.is_some(),
            "group {gid} has members but no common protocol"
        );
        g.transition(GroupState::CompletingRebalance, now);
        g.pending_sync = g
            .members
            .values()
            .map(|m| (m.member_id.clone(), ()))
            .collect();
        let leader = g.leader_id.clone().expect("leader elected above");
        let mut answered = Vec::new();
        for m in g.members.values() {
            if let Some(w) = m.join_waiter {
                let resp = Self::join_response(g, &m.member_id, m.member_id == leader, false);
                answered.push((m.member_id.clone(), m.session_timeout_ms, w, resp));
            }
        }
        for (id, _, _, _) in &answered {
            g.member_mut(id).expect("member").join_waiter = None;
        }
        let sync_deadline = now + g.rebalance_timeout_ms();
        let generation = g.generation_id;
        for (id, st, w, resp) in answered {
            out.push(Effect::Join {
                waiter: w,
                response: resp,
            });
            self.arm_session(gid, &id, st, now);
        }
        self.timers.arm(
            TimerKey::PendingSync {
                group: gid.to_string(),
                generation,
            },
            sync_deadline,
        );
    }

    /// Removes a member and moves the group on (Kafka `removeMemberAndUpdateGroup`).
    fn remove_member_and_update(
        &mut self,
        gid: &str,
        member_id: &str,
        now: i64,
        out: &mut Vec<Effect>,
    ) {
        let g = self.groups.get_mut(gid).expect("group exists");
        let Some(m) = g.remove_member(member_id) else {
            return;
        };
        Self::fail_waiters(&m, code::UNKNOWN_MEMBER_ID, out);
        self.timers.cancel(&TimerKey::Session {
            group: gid.to_string(),
            member: member_id.to_string(),
        });
        match self.groups[gid].state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(gid, now, out)
            }
            GroupState::PreparingRebalance => self.try_complete_join(gid, now, out),
        }
    }

    // ------------------------------------------------------------ JoinGroup

    /// JoinGroup. The answer comes as an `Effect::Join` for `waiter`, now or later.
    pub fn join(&mut self, now: i64, req: JoinRequest, waiter: WaiterId, out: &mut Vec<Effect>) {
        if let Err((e, member_id)) = self.join_inner(now, req, waiter, out) {
            out.push(Effect::Join {
                waiter,
                response: JoinResponse::error(e.code(), member_id),
            });
        }
    }

    fn join_inner(
        &mut self,
        now: i64,
        req: JoinRequest,
        waiter: WaiterId,
        out: &mut Vec<Effect>,
    ) -> Result<(), (GroupError, String)> {
        let mid = req.member_id.clone();
        let err = |e: GroupError| (e, mid.clone());
        if req.group_id.is_empty() {
            return Err(err(GroupError::InvalidGroupId));
        }
        self.check_coordinator(&req.group_id).map_err(err)?;
        if req.session_timeout_ms < self.cfg.min_session_timeout_ms
            || req.session_timeout_ms > self.cfg.max_session_timeout_ms
        {
            return Err(err(GroupError::InvalidSessionTimeout));
        }
        let gid = req.group_id.clone();
        match self.groups.get(&gid) {
            None if !req.member_id.is_empty() => return Err(err(GroupError::UnknownMemberId)),
            None => {
                if req.protocol_type.is_empty() || req.protocols.is_empty() {
                    return Err(err(GroupError::InconsistentGroupProtocol));
                }
                self.groups
                    .insert(gid.clone(), Group::new(gid.clone(), now));
            }
            Some(g) => {
                if g.state == GroupState::Dead {
                    return Err(err(GroupError::CoordinatorNotAvailable));
                }
                if !g.supports_protocols(&req.protocol_type, &req.protocols) {
                    return Err(err(GroupError::InconsistentGroupProtocol));
                }
            }
        }
        if req.member_id.is_empty() {
            self.join_new_member(now, req, waiter, out)
        } else {
            self.join_known_member(now, req, waiter, out)
                .map_err(|e| (e, mid.clone()))
        }
    }

    fn new_member(req: &JoinRequest, member_id: String, waiter: WaiterId) -> Member {
        Member {
            member_id,
            group_instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocol_type: req.protocol_type.clone(),
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            join_waiter: Some(waiter),
            join_supports_skip: req.supports_skip_assignment,
            sync_waiter: None,
        }
    }

    fn join_new_member(
        &mut self,
        now: i64,
        req: JoinRequest,
        waiter: WaiterId,
        out: &mut Vec<Effect>,
    ) -> Result<(), (GroupError, String)> {
        let gid = req.group_id.clone();
        // A known static member rejoining with an unknown member id (restart, KIP-345).
        if let Some(iid) = &req.group_instance_id {
            if let Some(old) = self.groups[&gid].static_members.get(iid).cloned() {
                let new_id = self.new_member_id(&req.client_id);
                self.static_member_rejoin(now, req, old, new_id, waiter, out);
                return Ok(());
            }
        }
        let g = &self.groups[&gid];
        if g.members.len() + g.pending_members.len() >= self.cfg.max_group_size {
            return Err((GroupError::GroupMaxSizeReached, String::new()));
        }
        let new_id = self.new_member_id(&req.client_id);
        if req.group_instance_id.is_none() && req.require_known_member_id {
            // KIP-394: hand out the id; the member must rejoin with it within its session.
            let g = self.groups.get_mut(&gid).expect("group exists");
            g.pending_members.insert(new_id.clone(), ());
            self.timers.arm(
                TimerKey::PendingMember {
                    group: gid,
                    member: new_id.clone(),
                },
                now + req.session_timeout_ms as i64,
            );
            return Err((GroupError::MemberIdRequired, new_id));
        }
        self.add_member_and_rebalance(now, &req, new_id, waiter, out);
        Ok(())
    }

    fn add_member_and_rebalance(
        &mut self,
        now: i64,
        req: &JoinRequest,
        member_id: String,
        waiter: WaiterId,
        out: &mut Vec<Effect>,
    ) {
        let gid = req.group_id.as_str();
        let g = self.groups.get_mut(gid).expect("group exists");
        if let JoinPhase::InitialDelay {
            new_member_added, ..
        } = &mut g.join_phase
        {
            if g.state == GroupState::PreparingRebalance {
                *new_member_added = true;
            }
        }
        g.add_member(Self::new_member(req, member_id.clone(), waiter));
        self.arm_session(gid, &member_id, req.session_timeout_ms, now);
        self.maybe_prepare_rebalance(gid, now, out);
        self.try_complete_join(gid, now, out);
    }

    /// Stores a member's new protocols/timeouts and parks its JoinGroup for the rebalance.
    fn update_member_and_rebalance(
        &mut self,
        now: i64,
        req: &JoinRequest,
        member_id: &str,
        waiter: WaiterId,
        out: &mut Vec<Effect>,
    ) {
        let gid = req.group_id.as_str();
        let g = self.groups.get_mut(gid).expect("group exists");
        let m = g.member_mut(member_id).expect("member exists");
        if let Some(old) = m.join_waiter.replace(waiter) {
            out.push(Effect::Join {
                waiter: old,
                response: JoinResponse::error(code::REBALANCE_IN_PROGRESS, member_id.into()),
            });
        }
        m.join_supports_skip = req.supports_skip_assignment;
        m.protocols = req.protocols.clone();
        m.protocol_type = req.protocol_type.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        self.arm_session(gid, member_id, req.session_timeout_ms, now);
        self.maybe_prepare_rebalance(gid, now, out);
        self.try_complete_join(gid, now, out);
    }

    fn join_known_member(
        &mut self,
        now: i64,
        req: JoinRequest,
        waiter: WaiterId,
        out: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        let gid = req.group_id.clone();
        let mid = req.member_id.clone();
        let g = self.groups.get_mut(&gid).expect("group exists");
        if g.pending_members.remove(&mid).is_some() {
            // Second JoinGroup of KIP-394: now the member really joins.
            self.timers.cancel(&TimerKey::PendingMember {
                group: gid.clone(),
                member: mid.clone(),
            });
            self.add_member_and_rebalance(now, &req, mid, waiter, out);
            return Ok(());
        }
        Self::validate_member(g, &mid, req.group_instance_id.as_deref())?;
        let m = g.member(&mid).expect("validated");
        let unchanged = m.protocols == req.protocols;
        let is_leader = g.leader_id.as_deref() == Some(mid.as_str());
        match g.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(now, &req, &mid, waiter, out)
            }
            GroupState::CompletingRebalance if unchanged => {
                // Lost the JoinGroup answer: send it again.
                let resp = Self::join_response(g, &mid, is_leader, false);
                out.push(Effect::Join {
                    waiter,
                    response: resp,
                });
            }
            GroupState::Stable if unchanged && !is_leader => {
                // A follower rejoining without changes gets the current generation.
                let resp = Self::join_response(g, &mid, false, false);
                self.reset_session(&gid, &mid, now);
                out.push(Effect::Join {
                    waiter,
                    response: resp,
                });
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(now, &req, &mid, waiter, out)
            }
            GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
        }
        Ok(())
    }

    /// KIP-345: a static member came back with a new process. It takes over its old member
    /// (the old id is fenced) and, when nothing changed, keeps its assignment without a
    /// rebalance.
    fn static_member_rejoin(
        &mut self,
        now: i64,
        req: JoinRequest,
        old_id: String,
        new_id: String,
        waiter: WaiterId,
        out: &mut Vec<Effect>,
    ) {
        let gid = req.group_id.clone();
        let g = self.groups.get_mut(&gid).expect("group exists");
        let old = g.replace_member_id(&old_id, new_id.clone());
        Self::fail_waiters(&old, code::FENCED_INSTANCE_ID, out);
        self.timers.cancel(&TimerKey::Session {
            group: gid.clone(),
            member: old_id.clone(),
        });
        let g = self.groups.get_mut(&gid).expect("group exists");
        let state = g.state;
        let prev_selected = g.protocol_name.clone();
        let m = g.member_mut(&new_id).expect("replaced above");
        m.protocols = req.protocols.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        let is_leader = g.leader_id.as_deref() == Some(new_id.as_str());
        let selection_unchanged = g.select_protocol() == prev_selected;
        self.arm_session(&gid, &new_id, req.session_timeout_ms, now);
        match state {
            GroupState::Stable if selection_unchanged && prev_selected.is_some() => {
                // The group's protocol stays: no rebalance (Kafka does not compare the
                // subscription bytes, which carry per-process fields such as owned
                // partitions). A leader gets the members and, with JoinGroup v9+, is told to
                // skip assignment (KIP-814); older leaders send an assignment that SyncGroup
                // ignores in Stable.
                self.persist_group(&gid, out);
                let g = &self.groups[&gid];
                let resp = Self::join_response(g, &new_id, is_leader, is_leader);
                out.push(Effect::Join {
                    waiter,
                    response: resp,
                });
            }
            GroupState::PreparingRebalance => {
                let m = self
                    .groups
                    .get_mut(&gid)
                    .expect("group exists")
                    .member_mut(&new_id)
                    .expect("member");
                m.join_waiter = Some(waiter);
                m.join_supports_skip = req.supports_skip_assignment;
                self.try_complete_join(&gid, now, out);
            }
            _ => {
                let mut r = req;
                r.member_id = new_id.clone();
                self.update_member_and_rebalance(now, &r, &new_id, waiter, out);
            }
        }
    }

    // ------------------------------------------------------------ SyncGroup

    /// SyncGroup. The answer comes as an `Effect::Sync` for `waiter`, now or later.
    pub fn sync(&mut self, now: i64, req: SyncRequest, waiter: WaiterId, out: &mut Vec<Effect>) {
        if let Err(e) = self.sync_inner(now, req, waiter, out) {
            out.push(Effect::Sync {
                waiter,
                response: SyncResponse::error(e.code()),
            });
        }
    }

    fn sync_inner(
        &mut self,
        now: i64,
        req: SyncRequest,
        waiter: WaiterId,
        out: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.check_coordinator(&req.group_id)?;
        let gid = req.group_id.clone();
        let mid = req.member_id.clone();
        let g = self
            .groups
            .get_mut(&gid)
            .ok_or(GroupError::UnknownMemberId)?;
        if g.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        Self::validate_member(g, &mid, req.group_instance_id.as_deref())?;
        if req.generation_id != g.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != g.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n) != g.protocol_name.as_ref())
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        match g.state {
            GroupState::Empty => return Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => return Err(GroupError::RebalanceInProgress),
            GroupState::Dead => return Err(GroupError::CoordinatorNotAvailable),
            GroupState::CompletingRebalance => {
                g.pending_sync.remove(&mid);
                let m = g.member_mut(&mid).expect("validated");
                if let Some(old) = m.sync_waiter.replace(waiter) {
                    out.push(Effect::Sync {
                        waiter: old,
                        response: SyncResponse::error(code::REBALANCE_IN_PROGRESS),
                    });
                }
                let is_leader = g.leader_id.as_deref() == Some(mid.as_str());
                if is_leader {
                    let mut given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in g.members.values_mut() {
                        m.assignment = given.remove(&m.member_id).unwrap_or_default();
                    }
                    g.transition(GroupState::Stable, now);
                    let ptype = g.protocol_type.clone();
                    let pname = g.protocol_name.clone();
                    let mut answers = Vec::new();
                    for m in g.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            answers.push(Effect::Sync {
                                waiter: w,
                                response: SyncResponse {
                                    error_code: code::NONE,
                                    protocol_type: ptype.clone(),
                                    protocol_name: pname.clone(),
                                    assignment: m.assignment.clone(),
                                },
                            });
                        }
                    }
                    let generation = g.generation_id;
                    let all_synced = g.pending_sync.is_empty();
                    // Persist first: the driver answers only once the group is durable.
                    self.persist_group(&gid, out);
                    out.extend(answers);
                    if all_synced {
                        self.timers.cancel(&TimerKey::PendingSync {
                            group: gid.clone(),
                            generation,
                        });
                    }
                }
                self.reset_session(&gid, &mid, now);
            }
            GroupState::Stable => {
                g.pending_sync.remove(&mid);
                let all_synced = g.pending_sync.is_empty();
                let generation = g.generation_id;
                let m = g.member(&mid).expect("validated");
                out.push(Effect::Sync {
                    waiter,
                    response: SyncResponse {
                        error_code: code::NONE,
                        protocol_type: g.protocol_type.clone(),
                        protocol_name: g.protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    },
                });
                if all_synced {
                    self.timers.cancel(&TimerKey::PendingSync {
                        group: gid.clone(),
                        generation,
                    });
                }
                self.reset_session(&gid, &mid, now);
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ Heartbeat / LeaveGroup

    /// Heartbeat: keeps the session alive; REBALANCE_IN_PROGRESS tells the member to rejoin.
    pub fn heartbeat(&mut self, now: i64, req: &HeartbeatRequest) -> Result<(), GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.check_coordinator(&req.group_id)?;
        let g = self
            .groups
            .get(&req.group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if g.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        Self::validate_member(g, &req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != g.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        let state = g.state;
        match state {
            GroupState::Empty => Err(GroupError::UnknownMemberId),
            GroupState::Dead => Err(GroupError::CoordinatorNotAvailable),
            GroupState::PreparingRebalance => {
                self.reset_session(&req.group_id, &req.member_id, now);
                Err(GroupError::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.reset_session(&req.group_id, &req.member_id, now);
                Ok(())
            }
        }
    }

    /// LeaveGroup for one or more members (v3+ batches, KIP-345). Returns one result per
    /// member in request order; a group-level refusal is the `Err`.
    pub fn leave(
        &mut self,
        now: i64,
        group_id: &str,
        members: &[LeavingMember],
        out: &mut Vec<Effect>,
    ) -> Result<Vec<LeaveResult>, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.check_coordinator(group_id)?;
        let result = |m: &LeavingMember, id: &str, e: i16| LeaveResult {
            member_id: id.to_string(),
            group_instance_id: m.group_instance_id.clone(),
            error_code: e,
        };
        let Some(g) = self.groups.get(group_id) else {
            return Ok(members
                .iter()
                .map(|m| result(m, &m.member_id, code::UNKNOWN_MEMBER_ID))
                .collect());
        };
        if g.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let mut results = Vec::with_capacity(members.len());
        for lm in members {
            let g = self.groups.get_mut(group_id).expect("checked above");
            let mut id = lm.member_id.clone();
            if let Some(iid) = &lm.group_instance_id {
                match g.static_members.get(iid) {
                    Some(cur) if id.is_empty() => id = cur.clone(),
                    Some(cur) if *cur != id => {
                        results.push(result(lm, &id, code::FENCED_INSTANCE_ID));
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        results.push(result(lm, &id, code::UNKNOWN_MEMBER_ID));
                        continue;
                    }
                }
            }
            if g.pending_members.remove(&id).is_some() {
                self.timers.cancel(&TimerKey::PendingMember {
                    group: group_id.to_string(),
                    member: id.clone(),
                });
                results.push(result(lm, &id, code::NONE));
                self.try_complete_join(group_id, now, out);
                continue;
            }
            if !g.has_member(&id) {
                results.push(result(lm, &id, code::UNKNOWN_MEMBER_ID));
                continue;
            }
            self.remove_member_and_update(group_id, &id, now, out);
            results.push(result(lm, &id, code::NONE));
        }
        Ok(results)
    }

    // ------------------------------------------------------------ offsets

    /// Validates an OffsetCommit. The driver appends `records`, then calls
    /// [`Self::apply_commit`] and answers with `results`.
    pub fn prepare_commit(
        &mut self,
        now: i64,
        req: &CommitRequest,
    ) -> Result<PreparedCommit, GroupError> {
        let p = self.check_coordinator(&req.group_id)?;
        match self.groups.get(&req.group_id) {
            None if req.generation_id < 0 => {}
            None => return Err(GroupError::IllegalGeneration),
            Some(g) if g.state == GroupState::Dead => {
                return Err(GroupError::CoordinatorNotAvailable)
            }
            Some(g) if req.generation_id < 0 && g.state == GroupState::Empty => {}
            Some(g) => {
                Self::validate_member(g, &req.member_id, req.group_instance_id.as_deref())?;
                if req.generation_id != g.generation_id {
                    return Err(GroupError::IllegalGeneration);
                }
                match g.state {
                    GroupState::CompletingRebalance => return Err(GroupError::RebalanceInProgress),
                    GroupState::Stable | GroupState::PreparingRebalance => {}
                    GroupState::Empty | GroupState::Dead => {
                        return Err(GroupError::UnknownMemberId)
                    }
                }
                self.reset_session(&req.group_id, &req.member_id, now);
            }
        }
        let mut prepared = PreparedCommit {
            group_id: req.group_id.clone(),
            offsets_partition: p,
            epoch: self.served_epoch(p),
            accepted: Vec::new(),
            records: Vec::new(),
            results: Vec::with_capacity(req.partitions.len()),
        };
        for cp in &req.partitions {
            let metadata = cp.metadata.clone().unwrap_or_default();
            if metadata.len() > self.cfg.offset_metadata_max_bytes {
                prepared.results.push((
                    cp.topic.clone(),
                    cp.partition,
                    code::OFFSET_METADATA_TOO_LARGE,
                ));
                continue;
            }
            let v = CommittedOffset {
                offset: cp.offset,
                leader_epoch: cp.leader_epoch,
                metadata,
                commit_timestamp_ms: now,
            };
            prepared.records.push(OffsetsRecord {
                key: records::encode_offset_key(&req.group_id, &cp.topic, cp.partition),
                value: Some(records::encode_offset_value(&OffsetValue {
                    offset: v.offset,
                    leader_epoch: v.leader_epoch,
                    metadata: v.metadata.clone(),
                    commit_timestamp_ms: v.commit_timestamp_ms,
                    expire_timestamp_ms: -1,
                })),
            });
            prepared.accepted.push((cp.topic.clone(), cp.partition, v));
            prepared
                .results
                .push((cp.topic.clone(), cp.partition, code::NONE));
        }
        Ok(prepared)
    }

    /// Makes a prepared commit visible once its records are durable. Returns false (and
    /// changes nothing) when the offsets partition is no longer served in the epoch the
    /// commit was validated in: leadership moved during the append, the records are in the
    /// log (if the append succeeded) and whoever loads the partition next replays them.
    pub fn apply_commit(&mut self, now: i64, prepared: PreparedCommit) -> bool {
        if self.active_epoch(prepared.offsets_partition) != Some(prepared.epoch) {
            return false;
        }
        let gid = prepared.group_id;
        let g = self
            .groups
            .entry(gid.clone())
            .or_insert_with(|| Group::new(gid, now));
        for (t, p, v) in prepared.accepted {
            g.offsets.insert((t, p), v);
        }
        true
    }

    /// OffsetFetch for one group: the requested partitions (`None` = every committed one).
    /// Partitions without a committed offset get offset -1.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<FetchedOffset>, GroupError> {
        self.check_coordinator(group_id)?;
        let g = self.groups.get(group_id);
        let found = |t: &str, p: i32| -> FetchedOffset {
            match g.and_then(|g| g.offsets.get(&(t.to_string(), p))) {
                Some(v) => FetchedOffset {
                    topic: t.to_string(),
                    partition: p,
                    offset: v.offset,
                    leader_epoch: v.leader_epoch,
                    metadata: Some(v.metadata.clone()),
                    error_code: code::NONE,
                },
                None => FetchedOffset {
                    topic: t.to_string(),
                    partition: p,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: Some(String::new()),
                    error_code: code::NONE,
                },
            }
        };
        Ok(match topics {
            Some(ts) => ts
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| (t, *p)))
                .map(|(t, p)| found(t, p))
                .collect(),
            None => g
                .map(|g| g.offsets.keys().map(|(t, p)| found(t, *p)).collect())
                .unwrap_or_default(),
        })
    }

    /// OffsetDelete (KIP-496): removes committed offsets of topics the group does not
    /// consume. Returns (topic, partition, error) per requested partition.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
        out: &mut Vec<Effect>,
    ) -> Result<Vec<(String, i32, i16)>, GroupError> {
        let p = self.check_coordinator(group_id)?;
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        match g.state {
            GroupState::Dead => return Err(GroupError::GroupIdNotFound),
            GroupState::Empty => {}
            _ if g.protocol_type.as_deref() == Some("consumer") => {}
            _ => return Err(GroupError::NonEmptyGroup),
        }
        let mut results = Vec::with_capacity(partitions.len());
        let mut tombstones = Vec::new();
        for (t, part) in partitions {
            if g.state != GroupState::Empty && g.is_subscribed_to(t) {
                results.push((t.clone(), *part, code::GROUP_SUBSCRIBED_TO_TOPIC));
                continue;
            }
            if g.offsets.remove(&(t.clone(), *part)).is_some() {
                tombstones.push(OffsetsRecord {
                    key: records::encode_offset_key(group_id, t, *part),
                    value: None,
                });
            }
            results.push((t.clone(), *part, code::NONE));
        }
        if !tombstones.is_empty() {
            out.push(Effect::Persist {
                partition: p,
                epoch: self.served_epoch(p),
                records: tombstones,
            });
        }
        Ok(results)
    }

    /// DeleteGroups for one group: only an empty group can go; its offsets and metadata
    /// are tombstoned.
    pub fn delete_group(
        &mut self,
        group_id: &str,
        out: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        let p = self.check_coordinator(group_id)?;
        let g = self
            .groups
            .get(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        match g.state {
            GroupState::Dead => return Err(GroupError::GroupIdNotFound),
            GroupState::Empty => {}
            _ => return Err(GroupError::NonEmptyGroup),
        }
        let g = self.groups.remove(group_id).expect("checked above");
        out.push(Effect::Persist {
            partition: p,
            epoch: self.served_epoch(p),
            records: Self::tombstones_for(&g),
        });
        Ok(())
    }

    fn tombstones_for(g: &Group) -> Vec<OffsetsRecord> {
        let mut recs: Vec<OffsetsRecord> = g
            .offsets
            .keys()
            .map(|(t, p)| OffsetsRecord {
                key: records::encode_offset_key(&g.group_id, t, *p),
                value: None,
            })
            .collect();
        recs.push(OffsetsRecord {
            key: records::encode_group_key(&g.group_id),
            value: None,
        });
        recs
    }

    /// Expires committed offsets (KIP-211): for an empty group, all of them once it has
    /// been empty for `offsets_retention_ms`; for a group without a protocol (manual
    /// commits), each once its commit is that old; for a consumer group, offsets of topics
    /// no member subscribes to. An empty group left without offsets is removed.
    fn expire_offsets(&mut self, now: i64, out: &mut Vec<Effect>) {
        let retention = self.cfg.offsets_retention_ms;
        let mut ids: Vec<String> = self.groups.keys().cloned().collect();
        ids.sort();
        let mut by_partition: BTreeMap<i32, Vec<OffsetsRecord>> = BTreeMap::new();
        for gid in ids {
            let p = self.partition_for(&gid);
            let g = self.groups.get_mut(&gid).expect("listed above");
            let expired: Vec<(String, i32)> = match (g.state, g.protocol_type.as_deref()) {
                (GroupState::Dead, _) => Vec::new(),
                (GroupState::Empty, Some(_)) => {
                    if g.state_timestamp_ms + retention <= now {
                        g.offsets.keys().cloned().collect()
                    } else {
                        Vec::new()
                    }
                }
                (GroupState::Empty, None) => g
                    .offsets
                    .iter()
                    .filter(|(_, v)| v.commit_timestamp_ms + retention <= now)
                    .map(|(k, _)| k.clone())
                    .collect(),
                (_, Some("consumer")) => g
                    .offsets
                    .iter()
                    .filter(|((t, _), v)| {
                        v.commit_timestamp_ms + retention <= now && !g.is_subscribed_to(t)
                    })
                    .map(|(k, _)| k.clone())
                    .collect(),
                _ => Vec::new(),
            };
            let recs = by_partition.entry(p).or_default();
            for k in expired {
                g.offsets.remove(&k);
                recs.push(OffsetsRecord {
                    key: records::encode_offset_key(&gid, &k.0, k.1),
                    value: None,
                });
            }
            if g.state == GroupState::Empty && g.offsets.is_empty() {
                recs.push(OffsetsRecord {
                    key: records::encode_group_key(&gid),
                    value: None,
                });
                self.groups.remove(&gid);
            }
        }
        for (partition, records) in by_partition {
            if !records.is_empty() {
                out.push(Effect::Persist {
                    partition,
                    epoch: self.served_epoch(partition),
                    records,
                });
            }
        }
    }

    // ------------------------------------------------------------ ListGroups / DescribeGroups

    /// ListGroups (states filter v4+, KIP-518; types filter v5+). Empty filters match all.
    pub fn list_groups(&self, states: &[String], types: &[String]) -> Vec<ListedGroup> {
        let mut v: Vec<ListedGroup> = self
            .groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .filter(|g| {
                let pn = self.partition_for(&g.group_id);
                matches!(
                    self.partitions.get(&pn),
                    Some(PartitionStatus::Active { .. })
                )
            })
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .filter(|_| {
                // Every group here is a classic group (KIP-848 type "classic").
                types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case("classic"))
            })
            .map(|g| ListedGroup {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.name(),
            })
            .collect();
        v.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        v
    }

    /// Whether any offsets partition is still loading (ListGroups reports
    /// COORDINATOR_LOAD_IN_PROGRESS then).
    pub fn any_loading(&self) -> bool {
        self.partitions.values().any(|s| s.is_loading())
    }

    /// DescribeGroups for one group. An unknown group is described as "Dead" with no
    /// members (error NONE), as Kafka does before DescribeGroups v6.
    pub fn describe(&self, group_id: &str) -> Result<DescribedGroup, GroupError> {
        self.check_coordinator(group_id)?;
        let Some(g) = self.groups.get(group_id) else {
            return Ok(DescribedGroup {
                error_code: code::NONE,
                group_id: group_id.to_string(),
                state: GroupState::Dead.name(),
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            });
        };
        let stable = g.state == GroupState::Stable;
        let proto = g.protocol_name.clone().unwrap_or_default();
        Ok(DescribedGroup {
            error_code: code::NONE,
            group_id: group_id.to_string(),
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable { proto.clone() } else { String::new() },
            members: g
                .members
                .values()
                .map(|m| DescribedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata_for(&proto).cloned().unwrap_or_default()
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    // ------------------------------------------------------------ timers

    /// Fires every timer due at `now_ms`: session expiry (KIP-62), KIP-394 pending members,
    /// join-phase deadlines (KIP-134/KIP-62), pending-sync deadlines, offset expiry.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Effect>) {
        while let Some(key) = self.timers.pop_due(now) {
            match key {
                TimerKey::Session { group, member } => {
                    self.on_session_expired(now, &group, &member, out)
                }
                TimerKey::PendingMember { group, member } => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        if g.pending_members.remove(&member).is_some() {
                            self.try_complete_join(&group, now, out);
                        }
                    }
                }
                TimerKey::Join { group } => self.on_join_deadline(now, &group, out),
                TimerKey::PendingSync { group, generation } => {
                    self.on_pending_sync_deadline(now, &group, generation, out)
                }
                TimerKey::OffsetExpiry => {
                    self.expire_offsets(now, out);
                    self.timers.arm(
                        TimerKey::OffsetExpiry,
                        now + self.cfg.offsets_retention_check_interval_ms,
                    );
                }
            }
        }
    }

    fn on_session_expired(&mut self, now: i64, gid: &str, member_id: &str, out: &mut Vec<Effect>) {
        let Some(g) = self.groups.get(gid) else {
            return;
        };
        let Some(m) = g.member(member_id) else { return };
        if m.join_waiter.is_some() || m.sync_waiter.is_some() {
            // A member parked in JoinGroup/SyncGroup is alive by definition.
            let st = m.session_timeout_ms;
            self.arm_session(gid, member_id, st, now);
            return;
        }
        self.remove_member_and_update(gid, member_id, now, out);
    }

    fn on_join_deadline(&mut self, now: i64, gid: &str, out: &mut Vec<Effect>) {
        let delay = self.cfg.initial_rebalance_delay_ms;
        let Some(g) = self.groups.get_mut(gid) else {
            return;
        };
        if g.state != GroupState::PreparingRebalance {
            return;
        }
        if let JoinPhase::InitialDelay {
            remaining_ms,
            new_member_added,
        } = g.join_phase
        {
            if new_member_added && remaining_ms > 0 {
                let d = delay.min(remaining_ms);
                g.join_phase = JoinPhase::InitialDelay {
                    remaining_ms: remaining_ms - d,
                    new_member_added: false,
                };
                self.timers.arm(
                    TimerKey::Join {
                        group: gid.to_string(),
                    },
                    now + d,
                );
                return;
            }
        }
        self.complete_join(gid, now, out);
    }

    fn on_pending_sync_deadline(
        &mut self,
        now: i64,
        gid: &str,
        generation: i32,
        out: &mut Vec<Effect>,
    ) {
        let Some(g) = self.groups.get(gid) else {
            return;
        };
        if g.generation_id != generation
            || !matches!(
                g.state,
                GroupState::CompletingRebalance | GroupState::Stable
            )
        {
            return;
        }
        let laggards: Vec<String> = g
            .member_ids()
            .into_iter()
            .filter(|id| g.pending_sync.contains_key(id))
            .collect();
        for id in laggards {
            self.remove_member_and_update(gid, &id, now, out);
        }
    }
}
