//! Scenario tests of the group coordinator state machine. Time is driven by hand.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::code;
use super::records::{self, RecordKey};
use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

/// A consumer-protocol subscription (`ConsumerProtocolSubscription` v0) to `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1); // user data: null
    b.freeze()
}

struct Harness {
    c: GroupCoordinator,
    now: i64,
    effects: Vec<Effect>,
    next_waiter: WaiterId,
}

fn test_config(initial_delay_ms: i64) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: initial_delay_ms,
        min_session_timeout_ms: 1000,
        offsets_retention_ms: 60_000,
        offsets_retention_check_interval_ms: 5_000,
        offsets_topic_num_partitions: 4,
        ..GroupConfig::default()
    }
}

impl Harness {
    fn new(initial_delay_ms: i64) -> Self {
        let cfg = test_config(initial_delay_ms);
        let mut c = GroupCoordinator::new(cfg.clone(), 42);
        for p in 0..cfg.offsets_topic_num_partitions {
            c.begin_load(p, 0);
            c.finish_load(p, 0);
        }
        Harness {
            c,
            now: 0,
            effects: Vec::new(),
            next_waiter: 1,
        }
    }

    fn join_req(
        member_id: &str,
        instance: Option<&str>,
        protocols: &[(&str, Bytes)],
    ) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: instance.map(String::from),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|(n, m)| (n.to_string(), m.clone()))
                .collect(),
            require_known_member_id: true,
            supports_skip_assignment: true,
        }
    }

    fn send_join(&mut self, req: JoinRequest) -> WaiterId {
        let w = self.next_waiter;
        self.next_waiter += 1;
        self.c.join(self.now, req, w, &mut self.effects);
        w
    }

    fn join(&mut self, member_id: &str) -> WaiterId {
        self.send_join(Self::join_req(
            member_id,
            None,
            &[("range", subscription(&["t"]))],
        ))
    }

    /// Two-step KIP-394 join; returns the member id and the parked waiter.
    fn join_new(&mut self) -> (String, WaiterId) {
        let w = self.join("");
        let r = self.take_join(w).expect("MEMBER_ID_REQUIRED is immediate");
        assert_eq!(r.error_code, code::MEMBER_ID_REQUIRED);
        assert!(!r.member_id.is_empty());
        let w2 = self.join(&r.member_id);
        (r.member_id, w2)
    }

    fn take_join(&mut self, w: WaiterId) -> Option<JoinResponse> {
        let i = self
            .effects
            .iter()
            .position(|e| matches!(e, Effect::Join { waiter, .. } if *waiter == w))?;
        match self.effects.remove(i) {
            Effect::Join { response, .. } => Some(response),
            _ => unreachable!(),
        }
    }

    fn take_sync(&mut self, w: WaiterId) -> Option<SyncResponse> {
        let i = self
            .effects
            .iter()
            .position(|e| matches!(e, Effect::Sync { waiter, .. } if *waiter == w))?;
        match self.effects.remove(i) {
            Effect::Sync { response, .. } => Some(response),
            _ => unreachable!(),
        }
    }

    fn take_persists(&mut self) -> Vec<OffsetsRecord> {
        let mut recs = Vec::new();
        self.effects.retain(|e| match e {
            Effect::Persist { records, .. } => {
                recs.extend(records.iter().cloned());
                false
            }
            _ => true,
        });
        recs
    }

    fn sync(&mut self, member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> WaiterId {
        self.sync_static(member_id, None, generation, assignments)
    }

    fn sync_static(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        assignments: &[(&str, &str)],
    ) -> WaiterId {
        let w = self.next_waiter;
        self.next_waiter += 1;
        let req = SyncRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member_id.into(),
            group_instance_id: instance.map(String::from),
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a.as_bytes())))
                .collect(),
        };
        self.c.sync(self.now, req, w, &mut self.effects);
        w
    }

    fn heartbeat(&mut self, member_id: &str, generation: i32) -> Result<(), GroupError> {
        self.heartbeat_static(member_id, None, generation)
    }

    fn heartbeat_static(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.c.heartbeat(
            self.now,
            &HeartbeatRequest {
                group_id: "g".into(),
                generation_id: generation,
                member_id: member_id.into(),
                group_instance_id: instance.map(String::from),
            },
        )
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
        self.c.tick(self.now, &mut self.effects);
    }

    fn state(&self) -> GroupState {
        self.c.group("g").expect("group exists").state
    }

    fn generation(&self) -> i32 {
        self.c.group("g").expect("group exists").generation_id
    }

    fn commit(
        &mut self,
        member_id: &str,
        generation: i32,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Vec<i16>, GroupError> {
        let req = CommitRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member_id.into(),
            group_instance_id: None,
            partitions: vec![CommitPartition {
                topic: topic.into(),
                partition,
                offset,
                leader_epoch: 0,
                metadata: Some("m".into()),
            }],
        };
        let prepared = self.c.prepare_commit(self.now, &req)?;
        let codes = prepared.results.iter().map(|r| r.2).collect();
        self.effects.push(Effect::Persist {
            partition: prepared.offsets_partition,
            epoch: prepared.epoch,
            records: prepared.records.clone(),
        });
        assert!(self.c.apply_commit(self.now, prepared));
        Ok(codes)
    }

    fn fetched(&self, topic: &str, partition: i32) -> i64 {
        let r = self
            .c
            .fetch_offsets("g", Some(&[(topic.to_string(), vec![partition])]))
            .expect("coordinator");
        r[0].offset
    }

    /// Forms a stable two-member group (a leader and a follower); returns their ids.
    fn stable_pair(&mut self) -> (String, String) {
        let (a, wa) = self.join_new();
        let (b, wb) = self.join_new();
        self.advance(0); // initial delay of 0 fires
        let ra = self.take_join(wa).expect("leader answered");
        let rb = self.take_join(wb).expect("follower answered");
        assert_eq!(ra.error_code, code::NONE);
        assert_eq!(ra.generation_id, 1);
        let (leader, follower) = if ra.leader == a { (a, b) } else { (b, a) };
        let sl = self.sync(&leader, 1, &[(&leader, "A0"), (&follower, "A1")]);
        let sf = self.sync(&follower, 1, &[]);
        assert_eq!(
            self.take_sync(sl).unwrap().assignment,
            Bytes::from_static(b"A0")
        );
        assert_eq!(
            self.take_sync(sf).unwrap().assignment,
            Bytes::from_static(b"A1")
        );
        assert_eq!(rb.generation_id, 1);
        assert_eq!(self.state(), GroupState::Stable);
        (leader, follower)
    }
}

// ---------------------------------------------------------------- placement and records

#[test]
fn group_placement_matches_kafkas_string_hashcode() {
    // Known Java values: "hello".hashCode() == 99162322; "polygenelubricants" hashes to
    // Integer.MIN_VALUE, which Kafka's Utils.abs maps to 0.
    assert_eq!(java_string_hashcode("hello"), 99_162_322);
    assert_eq!(java_string_hashcode("polygenelubricants"), i32::MIN);
    assert_eq!(partition_for_group("polygenelubricants", 50), 0);
    assert_eq!(partition_for_group("hello", 50), 99_162_322 % 50);
    // Non-ASCII: hashed over UTF-16 code units ("é" is U+00E9 = 233).
    assert_eq!(java_string_hashcode("é"), 233);
    assert_eq!(java_string_hashcode(""), 0);
}

#[test]
fn offset_commit_records_use_kafkas_layout_and_round_trip() {
    let key = records::encode_offset_key("g", "t", 7);
    // version 1, "g", "t", partition 7, big-endian.
    assert_eq!(&key[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]);
    assert_eq!(
        records::decode_key(&key).unwrap(),
        RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 7
        }
    );
    let v = records::OffsetValue {
        offset: 42,
        leader_epoch: 3,
        metadata: "meta".into(),
        commit_timestamp_ms: 1000,
        expire_timestamp_ms: -1,
    };
    let enc = records::encode_offset_value(&v);
    assert_eq!(&enc[..2], &[0, 3]);
    assert_eq!(enc.len(), 2 + 8 + 4 + 2 + 4 + 8);
    assert_eq!(records::decode_offset_value(&enc).unwrap(), v);
    // A version-1 value (written by old Kafka) carries an expire timestamp.
    let mut old = BytesMut::new();
    old.put_i16(1);
    old.put_i64(5);
    old.put_i16(0);
    old.put_i64(77);
    old.put_i64(99);
    let d = records::decode_offset_value(&old).unwrap();
    assert_eq!(
        (
            d.offset,
            d.leader_epoch,
            d.commit_timestamp_ms,
            d.expire_timestamp_ms
        ),
        (5, -1, 77, 99)
    );
    // Truncated input is an error, not a panic.
    assert!(records::decode_offset_value(&enc[..10]).is_err());
    assert!(records::decode_key(&[0, 9]).is_err());
}

#[test]
fn group_metadata_records_round_trip_including_flexible_v4() {
    let v = records::GroupValue {
        protocol_type: "consumer".into(),
        generation: 5,
        protocol: Some("range".into()),
        leader: Some("m1".into()),
        current_state_timestamp_ms: 123,
        members: vec![records::MemberValue {
            member_id: "m1".into(),
            group_instance_id: Some("i1".into()),
            client_id: "c".into(),
            client_host: "/h".into(),
            rebalance_timeout_ms: 300,
            session_timeout_ms: 100,
            subscription: Bytes::from_static(b"sub"),
            assignment: Bytes::from_static(b"asg"),
        }],
    };
    let enc = records::encode_group_value(&v);
    assert_eq!(records::decode_group_value(&enc).unwrap(), v);
    assert_eq!(
        records::decode_key(&records::encode_group_key("g")).unwrap(),
        RecordKey::Group { group: "g".into() }
    );
    // The same value as flexible version 4 (compact strings, tagged fields).
    let mut b = BytesMut::new();
    b.put_i16(4);
    let cs = |b: &mut BytesMut, s: &str| {
        b.put_u8(s.len() as u8 + 1);
        b.put_slice(s.as_bytes());
    };
    cs(&mut b, "consumer");
    b.put_i32(5);
    cs(&mut b, "range");
    cs(&mut b, "m1");
    b.put_i64(123);
    b.put_u8(2); // one member
    cs(&mut b, "m1");
    cs(&mut b, "i1");
    cs(&mut b, "c");
    cs(&mut b, "/h");
    b.put_i32(300);
    b.put_i32(100);
    cs(&mut b, "sub");
    cs(&mut b, "asg");
    b.put_u8(0); // member tagged fields
    b.put_u8(0); // top-level tagged fields
    assert_eq!(records::decode_group_value(&b).unwrap(), v);
}

#[test]
fn timers_fire_in_deadline_order_and_rearm_replaces() {
    use super::timer::{TimerKey, Timers};
    let mut t = Timers::default();
    let a = TimerKey::Join { group: "a".into() };
    let b = TimerKey::Join { group: "b".into() };
    t.arm(a.clone(), 50);
    t.arm(b.clone(), 20);
    t.arm(a.clone(), 10); // re-arm replaces 50
    assert_eq!(t.len(), 2);
    assert_eq!(t.next_deadline(), Some(10));
    assert_eq!(t.pop_due(5), None);
    assert_eq!(t.pop_due(100), Some(a));
    assert_eq!(t.pop_due(100), Some(b.clone()));
    assert!(t.is_empty());
    t.arm(b.clone(), 1);
    t.cancel(&b);
    assert_eq!(t.pop_due(100), None);
}

// ---------------------------------------------------------------- join / sync

#[test]
fn kip394_first_join_without_member_id_is_told_member_id_required() {
    let mut h = Harness::new(0);
    let w = h.join("");
    let r = h.take_join(w).unwrap();
    assert_eq!(r.error_code, code::MEMBER_ID_REQUIRED);
    assert!(r.member_id.starts_with("client-"), "{}", r.member_id);
    // The group does not count the pending member as a member yet.
    assert!(h.c.group("g").unwrap().members.is_empty());
    // Rejoining with the id joins; a pending id not used within the session is forgotten.
    let w2 = h.join(&r.member_id);
    h.advance(0);
    let r2 = h.take_join(w2).unwrap();
    assert_eq!(r2.error_code, code::NONE);
    assert_eq!(r2.member_id, r.member_id);
    assert_eq!(r2.leader, r.member_id);
    assert_eq!(r2.members.len(), 1, "the leader receives member metadata");
    assert_eq!(r2.members[0].metadata, subscription(&["t"]));
    assert_eq!(r2.protocol_name.as_deref(), Some("range"));
}

#[test]
fn kip394_pending_member_expires_after_session_timeout() {
    let mut h = Harness::new(0);
    let w = h.join("");
    let id = h.take_join(w).unwrap().member_id;
    h.advance(SESSION_MS as i64 + 1);
    let w2 = h.join(&id);
    assert_eq!(h.take_join(w2).unwrap().error_code, code::UNKNOWN_MEMBER_ID);
}

#[test]
fn old_join_versions_join_without_the_member_id_round_trip() {
    let mut h = Harness::new(0);
    let mut req = Harness::join_req("", None, &[("range", subscription(&["t"]))]);
    req.require_known_member_id = false;
    let w = h.send_join(req);
    h.advance(0);
    let r = h.take_join(w).unwrap();
    assert_eq!(r.error_code, code::NONE);
    assert_eq!(r.generation_id, 1);
}

#[test]
fn kip134_initial_rebalance_delay_waits_and_extends_for_new_members() {
    let mut h = Harness::new(3000);
    let (a, wa) = h.join_new();
    h.advance(2000);
    assert!(h.take_join(wa).is_none(), "still inside the initial delay");
    let (_b, wb) = h.join_new();
    h.advance(1000); // t = 3000: a member joined during the delay, so it extends
    assert!(h.take_join(wa).is_none());
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    h.advance(3000); // t = 6000: nobody new, completes
    let ra = h.take_join(wa).unwrap();
    let rb = h.take_join(wb).unwrap();
    assert_eq!(ra.generation_id, 1);
    assert_eq!(rb.generation_id, 1);
    assert_eq!(ra.leader, a);
    assert_eq!(ra.members.len(), 2);
    assert!(rb.members.is_empty(), "followers get no member list");
    assert_eq!(h.state(), GroupState::CompletingRebalance);
}

#[test]
fn sync_waits_for_the_leader_and_persists_before_answering() {
    let mut h = Harness::new(0);
    let (a, wa) = h.join_new();
    let (b, wb) = h.join_new();
    h.advance(0);
    let leader = h.take_join(wa).unwrap().leader;
    assert_eq!(leader, a);
    h.take_join(wb).unwrap();
    let sf = h.sync(&b, 1, &[]);
    assert!(
        h.take_sync(sf).is_none(),
        "follower waits for the leader's assignment"
    );
    h.effects.clear();
    let sl = h.sync(&a, 1, &[(&a, "pa"), (&b, "pb")]);
    // The group record comes before both answers.
    assert!(matches!(h.effects[0], Effect::Persist { .. }));
    assert_eq!(
        h.take_sync(sf).unwrap().assignment,
        Bytes::from_static(b"pb")
    );
    assert_eq!(
        h.take_sync(sl).unwrap().assignment,
        Bytes::from_static(b"pa")
    );
    assert_eq!(h.state(), GroupState::Stable);
    // Wrong generation and unknown members are refused.
    let s = h.sync(&a, 7, &[]);
    assert_eq!(h.take_sync(s).unwrap().error_code, code::ILLEGAL_GENERATION);
    let s = h.sync("nobody", 1, &[]);
    assert_eq!(h.take_sync(s).unwrap().error_code, code::UNKNOWN_MEMBER_ID);
}

#[test]
fn protocol_selection_picks_a_protocol_every_member_supports() {
    let mut h = Harness::new(0);
    let both = [
        ("range", Bytes::from_static(b"r")),
        ("roundrobin", Bytes::from_static(b"rr")),
    ];
    let only_rr = [("roundrobin", Bytes::from_static(b"rr2"))];
    let w = h.send_join(Harness::join_req("", None, &both));
    let a = h.take_join(w).unwrap().member_id;
    let wa = h.send_join(Harness::join_req(&a, None, &both));
    let w = h.send_join(Harness::join_req("", None, &only_rr));
    let b = h.take_join(w).unwrap().member_id;
    let wb = h.send_join(Harness::join_req(&b, None, &only_rr));
    h.advance(0);
    let ra = h.take_join(wa).unwrap();
    assert_eq!(ra.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(
        h.take_join(wb).unwrap().protocol_name.as_deref(),
        Some("roundrobin")
    );
    // The leader sees each member's metadata for the chosen protocol.
    let md: Vec<_> = ra.members.iter().map(|m| m.metadata.clone()).collect();
    assert_eq!(
        md,
        vec![Bytes::from_static(b"rr"), Bytes::from_static(b"rr2")]
    );
    // A member with no protocol in common, or another protocol type, is refused.
    let w = h.send_join(Harness::join_req("", None, &[("sticky", Bytes::new())]));
    assert_eq!(
        h.take_join(w).unwrap().error_code,
        code::INCONSISTENT_GROUP_PROTOCOL
    );
    let mut other = Harness::join_req("", None, &both);
    other.protocol_type = "connect".into();
    let w = h.send_join(other);
    assert_eq!(
        h.take_join(w).unwrap().error_code,
        code::INCONSISTENT_GROUP_PROTOCOL
    );
}

#[test]
fn session_timeout_out_of_bounds_is_refused() {
    let mut h = Harness::new(0);
    let mut req = Harness::join_req("", None, &[("range", Bytes::new())]);
    req.session_timeout_ms = 10;
    let w = h.send_join(req);
    assert_eq!(
        h.take_join(w).unwrap().error_code,
        code::INVALID_SESSION_TIMEOUT
    );
    let mut req = Harness::join_req("", None, &[("range", Bytes::new())]);
    req.group_id = String::new();
    let w = h.send_join(req);
    assert_eq!(h.take_join(w).unwrap().error_code, code::INVALID_GROUP_ID);
}

// ---------------------------------------------------------------- heartbeat / leave / timeouts

#[test]
fn heartbeat_checks_generation_and_membership_and_signals_rebalance() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    assert_eq!(h.heartbeat(&leader, 1), Ok(()));
    assert_eq!(
        h.heartbeat(&follower, 0),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(h.heartbeat("ghost", 1), Err(GroupError::UnknownMemberId));
    // A third member joins: the others learn about it through their heartbeat.
    let (_c, wc) = h.join_new();
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(
        h.heartbeat(&follower, 1),
        Err(GroupError::RebalanceInProgress)
    );
    // Everyone rejoins: the join phase ends early, generation 2 with three members.
    let wl = h.join(&leader);
    let wf = h.join(&follower);
    let rl = h.take_join(wl).unwrap();
    assert_eq!(rl.generation_id, 2);
    assert_eq!(rl.members.len(), 3);
    assert_eq!(h.take_join(wf).unwrap().generation_id, 2);
    assert_eq!(h.take_join(wc).unwrap().generation_id, 2);
}

#[test]
fn kip62_member_that_stops_heartbeating_is_removed_after_session_timeout() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    // Only the leader heartbeats; the follower's process was killed.
    for _ in 0..3 {
        h.advance(3000);
        assert_eq!(h.heartbeat(&leader, 1), Ok(()));
    }
    h.advance(3000);
    // t = 12000 > session timeout: the follower is gone and a rebalance started.
    assert!(!h.c.group("g").unwrap().has_member(&follower));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(
        h.heartbeat(&leader, 1),
        Err(GroupError::RebalanceInProgress)
    );
    let w = h.join(&leader);
    let r = h
        .take_join(w)
        .expect("sole member rejoined: join completes at once");
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.members.len(), 1);
}

#[test]
fn kip62_member_that_does_not_rejoin_within_rebalance_timeout_is_dropped() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    let wl = h.join(&leader); // the leader starts a rebalance (it rejoins)
    assert!(h.take_join(wl).is_none(), "waits for the follower");
    // The follower keeps heartbeating (still processing) but never rejoins.
    let mut t = 0;
    while t < REBALANCE_MS as i64 {
        h.advance(2000);
        t += 2000;
        let _ = h.heartbeat(&follower, 1);
    }
    let r = h
        .take_join(wl)
        .expect("rebalance timeout completes the join");
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.members.len(), 1);
    assert!(!h.c.group("g").unwrap().has_member(&follower));
    assert_eq!(h.heartbeat(&follower, 1), Err(GroupError::UnknownMemberId));
}

#[test]
fn leave_group_triggers_rebalance_and_batched_leave_reports_per_member() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    let res =
        h.c.leave(
            h.now,
            "g",
            &[
                LeavingMember {
                    member_id: follower.clone(),
                    group_instance_id: None,
                },
                LeavingMember {
                    member_id: "ghost".into(),
                    group_instance_id: None,
                },
            ],
            &mut h.effects,
        )
        .unwrap();
    assert_eq!(res[0].error_code, code::NONE);
    assert_eq!(res[1].error_code, code::UNKNOWN_MEMBER_ID);
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    let w = h.join(&leader);
    let r = h.take_join(w).unwrap();
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.members.len(), 1);
    // The last member leaves: the join phase ends with an empty group.
    let s = h.sync(&leader, 2, &[(&leader, "all")]);
    h.take_sync(s).unwrap();
    h.c.leave(
        h.now,
        "g",
        &[LeavingMember {
            member_id: leader.clone(),
            group_instance_id: None,
        }],
        &mut h.effects,
    )
    .unwrap();
    h.advance(0);
    assert_eq!(h.state(), GroupState::Empty);
    assert_eq!(h.generation(), 3);
}

#[test]
fn follower_that_never_syncs_is_removed_at_the_pending_sync_deadline() {
    let mut h = Harness::new(0);
    let (a, wa) = h.join_new();
    let (b, wb) = h.join_new();
    h.advance(0);
    h.take_join(wa).unwrap();
    h.take_join(wb).unwrap();
    let s = h.sync(&a, 1, &[(&a, "x"), (&b, "y")]);
    h.take_sync(s).unwrap();
    // b heartbeats but never syncs; a heartbeats too.
    let mut t = 0;
    while t < REBALANCE_MS as i64 {
        h.advance(2000);
        t += 2000;
        let _ = h.heartbeat(&a, 1);
        let _ = h.heartbeat(&b, 1);
    }
    assert!(!h.c.group("g").unwrap().has_member(&b));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
}

// ---------------------------------------------------------------- static membership

fn static_join(h: &mut Harness, member_id: &str, instance: &str) -> WaiterId {
    h.send_join(Harness::join_req(
        member_id,
        Some(instance),
        &[("range", subscription(&["t"]))],
    ))
}

#[test]
fn kip345_static_member_restart_keeps_assignment_without_rebalance() {
    let mut h = Harness::new(0);
    let wa = static_join(&mut h, "", "inst-a");
    let wb = static_join(&mut h, "", "inst-b");
    h.advance(0);
    let ra = h.take_join(wa).unwrap();
    let rb = h.take_join(wb).unwrap();
    assert_eq!(
        ra.error_code,
        code::NONE,
        "static members skip MEMBER_ID_REQUIRED"
    );
    let (a, b) = (ra.member_id.clone(), rb.member_id.clone());
    let s1 = h.sync_static(&a, Some("inst-a"), 1, &[(&a, "pa"), (&b, "pb")]);
    let s2 = h.sync_static(&b, Some("inst-b"), 1, &[]);
    h.take_sync(s1).unwrap();
    h.take_sync(s2).unwrap();
    // b's process restarts (no LeaveGroup: static members do not send it) and rejoins
    // within the session timeout with a fresh JoinGroup.
    h.advance(4000);
    let w = static_join(&mut h, "", "inst-b");
    let r = h.take_join(w).expect("answered at once");
    assert_eq!(r.error_code, code::NONE);
    assert_eq!(r.generation_id, 1, "no new generation");
    assert_ne!(r.member_id, b, "a new member id replaces the old one");
    assert_eq!(h.state(), GroupState::Stable);
    let s = h.sync_static(&r.member_id, Some("inst-b"), 1, &[]);
    assert_eq!(
        h.take_sync(s).unwrap().assignment,
        Bytes::from_static(b"pb")
    );
    // The old incarnation is fenced.
    assert_eq!(
        h.heartbeat_static(&b, Some("inst-b"), 1),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(h.heartbeat_static(&r.member_id, Some("inst-b"), 1), Ok(()));
    // The leader saw nothing: same generation, heartbeats fine.
    assert_eq!(h.heartbeat_static(&a, Some("inst-a"), 1), Ok(()));
}

#[test]
fn kip345_static_member_rejoin_that_changes_the_group_protocol_triggers_rebalance() {
    let both = [
        ("range", Bytes::from_static(b"r")),
        ("roundrobin", Bytes::from_static(b"rr")),
    ];
    let mut h = Harness::new(0);
    let wa = h.send_join(Harness::join_req("", Some("inst-a"), &both));
    let wb = h.send_join(Harness::join_req("", Some("inst-b"), &both));
    h.advance(0);
    let a = h.take_join(wa).unwrap().member_id;
    let b = h.take_join(wb).unwrap().member_id;
    let s = h.sync_static(&a, Some("inst-a"), 1, &[(&a, "pa"), (&b, "pb")]);
    h.take_sync(s).unwrap();
    assert_eq!(
        h.c.group("g").unwrap().protocol_name.as_deref(),
        Some("range")
    );
    // New subscription bytes alone do not rebalance (Kafka compares only the protocol) ...
    let w = h.send_join(Harness::join_req(
        "",
        Some("inst-b"),
        &[
            ("range", Bytes::from_static(b"r2")),
            ("roundrobin", Bytes::from_static(b"rr")),
        ],
    ));
    let r = h.take_join(w).expect("answered at once");
    assert_eq!(r.generation_id, 1);
    // ... but a restart that only supports roundrobin changes the selection: rebalance.
    let w = h.send_join(Harness::join_req(
        "",
        Some("inst-b"),
        &[("roundrobin", Bytes::from_static(b"rr"))],
    ));
    assert!(h.take_join(w).is_none(), "parked for the rebalance");
    assert_eq!(h.state(), GroupState::PreparingRebalance);
}

#[test]
fn kip345_static_member_that_misses_the_rebalance_stays_until_its_session_expires() {
    let mut h = Harness::new(0);
    let wa = static_join(&mut h, "", "inst-a");
    let wb = static_join(&mut h, "", "inst-b");
    h.advance(0);
    let a = h.take_join(wa).unwrap().member_id;
    let b = h.take_join(wb).unwrap().member_id;
    let s = h.sync_static(&a, Some("inst-a"), 1, &[(&a, "pa"), (&b, "pb")]);
    h.take_sync(s).unwrap();
    let s = h.sync_static(&b, Some("inst-b"), 1, &[]);
    h.take_sync(s).unwrap();
    // a rejoins with a new subscription (forces a rebalance); b is down.
    let w = h.send_join(Harness::join_req(
        &a,
        Some("inst-a"),
        &[("range", subscription(&["t", "u"]))],
    ));
    // b's session (10 s) runs out before the rebalance timeout (30 s): removed then.
    h.advance(SESSION_MS as i64 + 1);
    let r = h
        .take_join(w)
        .expect("join completes once b's session expired");
    assert_eq!(r.members.len(), 1);
    assert!(!h
        .c
        .group("g")
        .unwrap()
        .static_members
        .contains_key("inst-b"));
}

#[test]
fn kip345_leave_by_instance_id_and_fencing() {
    let mut h = Harness::new(0);
    let w = static_join(&mut h, "", "inst-a");
    h.advance(0);
    let a = h.take_join(w).unwrap().member_id;
    let res =
        h.c.leave(
            h.now,
            "g",
            &[
                LeavingMember {
                    member_id: "stale-id".into(),
                    group_instance_id: Some("inst-a".into()),
                },
                LeavingMember {
                    member_id: String::new(),
                    group_instance_id: Some("inst-a".into()),
                },
            ],
            &mut h.effects,
        )
        .unwrap();
    assert_eq!(res[0].error_code, code::FENCED_INSTANCE_ID);
    assert_eq!(res[1].error_code, code::NONE);
    assert_eq!(res[1].member_id, a);
    assert!(h.c.group("g").unwrap().is_empty());
}

// ---------------------------------------------------------------- offsets

#[test]
fn commits_are_checked_against_generation_and_member() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    assert_eq!(h.commit(&leader, 1, "t", 0, 10), Ok(vec![code::NONE]));
    assert_eq!(h.fetched("t", 0), 10);
    assert_eq!(
        h.commit(&follower, 0, "t", 1, 5),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        h.commit("ghost", 1, "t", 1, 5),
        Err(GroupError::UnknownMemberId)
    );
    // Commits of the current generation are still allowed while preparing a rebalance
    // (consumers commit in their revoke callback) ...
    let (_c, _wc) = h.join_new();
    assert_eq!(h.commit(&follower, 1, "t", 1, 6), Ok(vec![code::NONE]));
    // ... but not once the join phase ended and the assignment is not known yet.
    let wl = h.join(&leader);
    let wf = h.join(&follower);
    h.take_join(wl).unwrap();
    h.take_join(wf).unwrap();
    assert_eq!(h.state(), GroupState::CompletingRebalance);
    assert_eq!(
        h.commit(&follower, 2, "t", 1, 7),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(h.fetched("t", 1), 6);
    // Unknown partitions read as -1; metadata over the limit is refused per partition.
    assert_eq!(h.fetched("t", 99), -1);
    let big = CommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            leader_epoch: -1,
            metadata: Some("x".repeat(5000)),
        }],
    };
    let mut h2 = Harness::new(0);
    let p = h2.c.prepare_commit(0, &big).unwrap();
    assert_eq!(
        p.results,
        vec![("t".into(), 0, code::OFFSET_METADATA_TOO_LARGE)]
    );
    assert!(p.records.is_empty());
}

#[test]
fn simple_consumer_commit_creates_an_empty_group() {
    let mut h = Harness::new(0);
    assert_eq!(h.commit("", -1, "t", 3, 100), Ok(vec![code::NONE]));
    assert_eq!(h.state(), GroupState::Empty);
    assert_eq!(h.fetched("t", 3), 100);
    let all = h.c.fetch_offsets("g", None).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(h.c.list_groups(&[], &[])[0].state, "Empty");
    // A group member's generation is required once the group has a generation>=0 commit
    // from someone unknown.
    assert_eq!(h.commit("", 3, "t", 3, 1), Err(GroupError::UnknownMemberId));
}

#[test]
fn kip211_offsets_of_an_empty_group_expire_after_retention() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    h.commit(&leader, 1, "t", 0, 10).unwrap();
    // Both leave: the group becomes empty at t = 1000.
    h.advance(1000);
    for m in [&leader, &follower] {
        h.c.leave(
            h.now,
            "g",
            &[LeavingMember {
                member_id: m.clone(),
                group_instance_id: None,
            }],
            &mut h.effects,
        )
        .unwrap();
    }
    h.advance(0);
    assert_eq!(h.state(), GroupState::Empty);
    h.take_persists();
    // Retention is 60 s from when the group became empty, checked every 5 s.
    h.advance(55_000);
    assert_eq!(h.fetched("t", 0), 10);
    h.advance(10_000);
    assert_eq!(h.fetched("t", 0), -1);
    assert!(
        h.c.group("g").is_none(),
        "an empty group without offsets is removed"
    );
    let recs = h.take_persists();
    assert!(recs.iter().all(|r| r.value.is_none()), "tombstones only");
    assert_eq!(
        recs.len(),
        2,
        "one offset tombstone and one group tombstone"
    );
}

#[test]
fn delete_groups_and_offset_delete_follow_kafka_rules() {
    let mut h = Harness::new(0);
    let (leader, _follower) = h.stable_pair();
    h.commit(&leader, 1, "t", 0, 10).unwrap();
    h.commit(&leader, 1, "other", 0, 4).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        h.c.delete_group("g", &mut out),
        Err(GroupError::NonEmptyGroup)
    );
    assert_eq!(
        h.c.delete_group("nope", &mut out),
        Err(GroupError::GroupIdNotFound)
    );
    // KIP-496: offsets of a subscribed topic stay; others can go.
    let res =
        h.c.delete_offsets("g", &[("t".into(), 0), ("other".into(), 0)], &mut out)
            .unwrap();
    assert_eq!(res[0].2, code::GROUP_SUBSCRIBED_TO_TOPIC);
    assert_eq!(res[1].2, code::NONE);
    assert_eq!(h.fetched("other", 0), -1);
    assert_eq!(h.fetched("t", 0), 10);
    // Simple-consumer group: deletable; its offsets and metadata are tombstoned.
    let mut h2 = Harness::new(0);
    h2.commit("", -1, "t", 0, 1).unwrap();
    let mut out = Vec::new();
    assert_eq!(h2.c.delete_group("g", &mut out), Ok(()));
    assert!(h2.c.group("g").is_none());
    match &out[0] {
        Effect::Persist { records, .. } => {
            assert_eq!(records.len(), 2);
            assert!(records.iter().all(|r| r.value.is_none()));
        }
        e => panic!("expected Persist, got {e:?}"),
    }
}

// ---------------------------------------------------------------- load / coordinator

#[test]
fn coordinator_refuses_groups_it_does_not_own_or_is_still_loading() {
    let cfg = test_config(0);
    let mut c = GroupCoordinator::new(cfg, 1);
    let p = c.partition_for("g");
    assert_eq!(c.check_coordinator("g"), Err(GroupError::NotCoordinator));
    c.begin_load(p, 0);
    assert_eq!(c.check_coordinator("g"), Err(GroupError::LoadInProgress));
    assert_eq!(
        c.heartbeat(
            0,
            &HeartbeatRequest {
                group_id: "g".into(),
                generation_id: 1,
                member_id: "m".into(),
                group_instance_id: None,
            }
        ),
        Err(GroupError::LoadInProgress)
    );
    c.finish_load(p, 0);
    assert_eq!(c.check_coordinator("g"), Ok(p));
}

#[test]
fn restart_replays_the_log_latest_record_per_key_wins() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    h.commit(&leader, 1, "t", 0, 10).unwrap();
    h.commit(&leader, 1, "t", 0, 20).unwrap();
    h.commit(&follower, 1, "t", 1, 5).unwrap();
    let log = h.take_persists();
    // An offset committed and later deleted: its tombstone comes later in the log.
    let gone_key = records::encode_offset_key("g", "gone", 0);
    let deleted = [
        OffsetsRecord {
            key: gone_key.clone(),
            value: Some(records::encode_offset_value(&records::OffsetValue {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
                expire_timestamp_ms: -1,
            })),
        },
        OffsetsRecord {
            key: gone_key,
            value: None,
        },
    ];

    let cfg = test_config(0);
    let mut c = GroupCoordinator::new(cfg, 7);
    let p = c.partition_for("g");
    c.begin_load(p, 0);
    for r in log.iter().chain(deleted.iter()) {
        c.load_record(p, &r.key, r.value.as_deref()).unwrap();
    }
    c.finish_load(p, 100_000);
    let g = c.group("g").expect("group restored");
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(g.generation_id, 1);
    assert_eq!(g.members.len(), 2);
    assert_eq!(g.leader_id.as_deref(), Some(leader.as_str()));
    assert_eq!(
        g.member(&follower).unwrap().assignment,
        Bytes::from_static(b"A1")
    );
    let f = c
        .fetch_offsets(
            "g",
            Some(&[("t".into(), vec![0, 1]), ("gone".into(), vec![0])]),
        )
        .unwrap();
    assert_eq!(
        f.iter().map(|o| o.offset).collect::<Vec<_>>(),
        vec![20, 5, -1]
    );
    // Restored members keep working: heartbeats with their generation succeed, and their
    // sessions run from the load time.
    assert_eq!(
        c.heartbeat(
            100_000,
            &HeartbeatRequest {
                group_id: "g".into(),
                generation_id: 1,
                member_id: follower.clone(),
                group_instance_id: None,
            }
        ),
        Ok(())
    );
    let mut out = Vec::new();
    c.tick(100_000 + SESSION_MS as i64 + 1, &mut out);
    assert!(
        !c.group("g").unwrap().has_member(&leader),
        "leader never heartbeated"
    );
}

#[test]
fn describe_and_list_report_what_admin_tools_need() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    let d = h.c.describe("g").unwrap();
    assert_eq!(d.state, "Stable");
    assert_eq!(d.protocol_type, "consumer");
    assert_eq!(d.protocol_name, "range");
    assert_eq!(d.members.len(), 2);
    let ml = d.members.iter().find(|m| m.member_id == leader).unwrap();
    assert_eq!(ml.assignment, Bytes::from_static(b"A0"));
    assert_eq!(ml.metadata, subscription(&["t"]));
    assert_eq!(ml.client_host, "/127.0.0.1");
    assert!(d.members.iter().any(|m| m.member_id == follower));
    let unknown = h.c.describe("nope").unwrap();
    assert_eq!(unknown.state, "Dead");
    assert!(unknown.members.is_empty());
    let l = h.c.list_groups(&[], &[]);
    assert_eq!(l.len(), 1);
    assert_eq!(
        (
            l[0].group_id.as_str(),
            l[0].protocol_type.as_str(),
            l[0].state
        ),
        ("g", "consumer", "Stable")
    );
    assert!(h.c.list_groups(&["Empty".into()], &[]).is_empty());
    assert_eq!(h.c.list_groups(&["stable".into()], &[]).len(), 1);
}

#[test]
fn kip814_returning_static_leader_gets_members_and_skip_assignment_without_rebalance() {
    let mut h = Harness::new(0);
    let wa = static_join(&mut h, "", "inst-a");
    h.advance(0);
    let a = h.take_join(wa).unwrap().member_id;
    let wb = static_join(&mut h, "", "inst-b");
    let wa2 = static_join(&mut h, &a, "inst-a");
    let b = h.take_join(wb).unwrap().member_id;
    assert_eq!(
        h.take_join(wa2).unwrap().leader,
        a,
        "the first member leads"
    );
    let s = h.sync_static(&a, Some("inst-a"), 2, &[(&a, "pa"), (&b, "pb")]);
    h.take_sync(s).unwrap();
    assert_eq!(h.generation(), 2);
    // The leader's process restarts (JoinGroup v9: it can be told to skip assignment).
    let w = static_join(&mut h, "", "inst-a");
    let r = h.take_join(w).expect("answered at once");
    assert_eq!(r.generation_id, 2, "no rebalance");
    assert!(r.skip_assignment);
    assert_eq!(
        r.leader, r.member_id,
        "leadership moves to the new member id"
    );
    assert_eq!(
        r.members.len(),
        2,
        "the leader still sees every member's metadata"
    );
    // An older client (before v9) cannot be told to skip; its assignment is ignored in Stable.
    let mut old = Harness::join_req("", Some("inst-a"), &[("range", subscription(&["t"]))]);
    old.supports_skip_assignment = false;
    let w = h.send_join(old);
    let r2 = h.take_join(w).expect("answered at once");
    assert_eq!(r2.generation_id, 2);
    let s = h.sync_static(
        &r2.member_id,
        Some("inst-a"),
        2,
        &[(&r2.member_id, "ignored")],
    );
    assert_eq!(
        h.take_sync(s).unwrap().assignment,
        Bytes::from_static(b"pa")
    );
    assert_eq!(h.state(), GroupState::Stable);
}

// ---------------------------------------------------------------- leadership moves (cluster)
//
// On a cluster each `__consumer_offsets` partition is a Raft group; the coordinator of its
// groups is the partition's leader. These scenarios follow Kafka's GroupCoordinator:
// `onElection` schedules loading the partition (requests get COORDINATOR_LOAD_IN_PROGRESS
// until it is loaded) and `onResignation` removes its groups, answering parked
// JoinGroup/SyncGroup with NOT_COORDINATOR (`GroupMetadataManager.removeGroupsForPartition`).

/// Replays `log` into `c` as the new leader of `p` in `epoch`.
fn load_as_leader(c: &mut GroupCoordinator, p: i32, epoch: i32, log: &[OffsetsRecord], now: i64) {
    let mut out = Vec::new();
    assert_eq!(
        c.on_leadership(p, true, epoch, &mut out),
        LeadershipAction::Load { epoch }
    );
    assert!(out.is_empty(), "nothing was served before: {out:?}");
    assert_eq!(c.check_coordinator("g"), Err(GroupError::LoadInProgress));
    for r in log {
        c.load_record(p, &r.key, r.value.as_deref()).unwrap();
    }
    c.finish_load(p, now);
}

#[test]
fn losing_leadership_unloads_groups_and_answers_parked_requests_not_coordinator() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    h.commit(&leader, 1, "t", 0, 10).unwrap();
    // A third member arrives: the group prepares a rebalance and its JoinGroup parks.
    let (_newcomer, parked) = h.join_new();
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert!(
        h.take_join(parked).is_none(),
        "parked until the others rejoin"
    );
    let p = h.c.partition_for("g");

    // The Raft group of the offsets partition elects another node (onResignation).
    let mut out = Vec::new();
    assert_eq!(
        h.c.on_leadership(p, false, 1, &mut out),
        LeadershipAction::Unloaded
    );
    h.effects.extend(out);
    let r = h
        .take_join(parked)
        .expect("parked JoinGroup answered at once");
    assert_eq!(r.error_code, code::NOT_COORDINATOR);
    assert!(h.c.group("g").is_none(), "the group is gone from this node");
    assert_eq!(
        h.heartbeat(&follower, 1),
        Err(GroupError::NotCoordinator),
        "clients are sent to FindCoordinator again"
    );
    assert_eq!(
        h.commit(&leader, 1, "t", 0, 11),
        Err(GroupError::NotCoordinator)
    );
    assert_eq!(
        h.c.fetch_offsets("g", None),
        Err(GroupError::NotCoordinator)
    );
    assert!(h.c.list_groups(&[], &[]).is_empty());
    // Its timers went with it: nothing fires for the group any more (no rebalance, no
    // appends to a partition this node no longer leads).
    h.effects.clear();
    h.advance(REBALANCE_MS as i64 + SESSION_MS as i64);
    assert!(
        h.effects
            .iter()
            .all(|e| !matches!(e, Effect::Persist { partition, .. } if *partition == p)),
        "no append for the unloaded partition: {:?}",
        h.effects
    );
    // Groups of the other partitions are untouched.
    let other = (0..4).find(|q| *q != p).unwrap();
    assert_eq!(h.c.active_epoch(other), Some(0));
    // A second resignation report changes nothing.
    let mut out = Vec::new();
    assert_eq!(
        h.c.on_leadership(p, false, 1, &mut out),
        LeadershipAction::None
    );
}

#[test]
fn new_leader_replays_the_log_and_members_keep_their_generation() {
    // The old coordinator (node A, epoch 0) forms the group and commits.
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    h.commit(&leader, 1, "t", 0, 10).unwrap();
    h.commit(&follower, 1, "t", 1, 7).unwrap();
    let log = h.take_persists();

    // Node B is elected leader of the partition in epoch 1 (onElection) and replays it.
    let mut b = GroupCoordinator::new(test_config(0), 99);
    let p = b.partition_for("g");
    assert_eq!(b.check_coordinator("g"), Err(GroupError::NotCoordinator));
    load_as_leader(&mut b, p, 1, &log, 50_000);
    assert_eq!(b.active_epoch(p), Some(1));
    let g = b.group("g").expect("group restored on the new coordinator");
    assert_eq!((g.state, g.generation_id), (GroupState::Stable, 1));
    let f = b
        .fetch_offsets("g", Some(&[("t".into(), vec![0, 1])]))
        .unwrap();
    assert_eq!(f.iter().map(|o| o.offset).collect::<Vec<_>>(), vec![10, 7]);
    // The members only re-ran FindCoordinator: their heartbeats and commits in generation 1
    // work on B without a rebalance.
    let hb = |m: &str| HeartbeatRequest {
        group_id: "g".into(),
        generation_id: 1,
        member_id: m.into(),
        group_instance_id: None,
    };
    assert_eq!(b.heartbeat(50_000, &hb(&leader)), Ok(()));
    assert_eq!(b.heartbeat(50_000, &hb(&follower)), Ok(()));
    let prepared = b
        .prepare_commit(
            50_000,
            &CommitRequest {
                group_id: "g".into(),
                generation_id: 1,
                member_id: follower.clone(),
                group_instance_id: None,
                partitions: vec![CommitPartition {
                    topic: "t".into(),
                    partition: 1,
                    offset: 8,
                    leader_epoch: 0,
                    metadata: None,
                }],
            },
        )
        .unwrap();
    assert_eq!(prepared.epoch, 1, "appends are tagged with B's epoch");
    assert!(b.apply_commit(50_000, prepared));
    assert_eq!(
        b.fetch_offsets("g", Some(&[("t".into(), vec![1])]))
            .unwrap()[0]
            .offset,
        8
    );
}

#[test]
fn a_commit_validated_before_a_leadership_change_is_not_applied_after_it() {
    let mut h = Harness::new(0);
    let (leader, _follower) = h.stable_pair();
    let p = h.c.partition_for("g");
    let req = CommitRequest {
        group_id: "g".into(),
        generation_id: 1,
        member_id: leader.clone(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset: 42,
            leader_epoch: 0,
            metadata: None,
        }],
    };
    let prepared = h.c.prepare_commit(h.now, &req).unwrap();
    assert_eq!(prepared.epoch, 0);
    let log = h.take_persists();
    // While the append is in flight the node loses leadership and wins it back in epoch 2
    // (another leader served epoch 1 in between); the new replay did not see the record.
    let mut out = Vec::new();
    h.c.on_leadership(p, false, 1, &mut out);
    load_as_leader(&mut h.c, p, 2, &log, h.now);
    assert!(
        !h.c.apply_commit(h.now, prepared),
        "state of epoch 0 must not leak into epoch 2"
    );
    assert_eq!(h.fetched("t", 0), -1, "the log, not memory, decides");
}

#[test]
fn leadership_reports_are_idempotent_and_a_newer_epoch_reloads() {
    let mut h = Harness::new(0);
    h.stable_pair();
    let p = h.c.partition_for("g");
    let log = h.take_persists();
    let mut out = Vec::new();
    // The same epoch again, or an older one (a stale report): nothing happens.
    assert_eq!(
        h.c.on_leadership(p, true, 0, &mut out),
        LeadershipAction::None
    );
    assert_eq!(h.c.active_epoch(p), Some(0));
    // Leader again in a newer epoch without this node having seen itself lose it (the
    // status jumped): the log may have changed under the loaded state, so it reloads.
    let (_newcomer, parked) = h.join_new();
    let mut out = Vec::new();
    assert_eq!(
        h.c.on_leadership(p, true, 3, &mut out),
        LeadershipAction::Load { epoch: 3 }
    );
    h.effects.extend(out);
    assert_eq!(
        h.take_join(parked).unwrap().error_code,
        code::NOT_COORDINATOR
    );
    assert_eq!(h.c.check_coordinator("g"), Err(GroupError::LoadInProgress));
    let mut out = Vec::new();
    assert_eq!(
        h.c.on_leadership(p, true, 2, &mut out),
        LeadershipAction::None,
        "an older epoch than the one loading is stale"
    );
    assert_eq!(h.c.loading_epoch(p), Some(3));
    for r in &log {
        h.c.load_record(p, &r.key, r.value.as_deref()).unwrap();
    }
    h.c.finish_load(p, h.now);
    assert_eq!(h.c.active_epoch(p), Some(3));
    assert_eq!(h.state(), GroupState::Stable, "as the log says");
}

#[test]
fn at_start_a_partition_waits_for_its_leadership_then_loads_or_steps_aside() {
    // Broker start: every offsets partition of the core answers LOAD_IN_PROGRESS until
    // Raft says who leads it (a single broker leads them all: today's behaviour).
    let mut c = GroupCoordinator::new(test_config(0), 5);
    let p = c.partition_for("g");
    let q = (0..4).find(|x| *x != p).unwrap();
    c.begin_load(p, EPOCH_UNKNOWN);
    c.begin_load(q, EPOCH_UNKNOWN);
    assert_eq!(c.check_coordinator("g"), Err(GroupError::LoadInProgress));
    assert!(c.any_loading());
    let mut out = Vec::new();
    // Follower of q: requests for its groups get NOT_COORDINATOR from now on.
    assert_eq!(
        c.on_leadership(q, false, 4, &mut out),
        LeadershipAction::Unloaded
    );
    assert!(!c.owns_partition(q));
    // Leader of p: load it in the reported epoch.
    assert_eq!(
        c.on_leadership(p, true, 4, &mut out),
        LeadershipAction::Load { epoch: 4 }
    );
    assert!(out.is_empty());
    c.finish_load(p, 0);
    assert_eq!(c.check_coordinator("g"), Ok(p));
    assert!(!c.any_loading());
}
