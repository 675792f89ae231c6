//! In-process tests of the group handlers: real kafka-protocol requests through the handlers
//! into a one-core `GroupService`, and every response encoded at every version the handler
//! declares (a field set outside its versions would make the encoder fail).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use freshet_engine::group::service::{KeyValue, LocalFuture};
use freshet_engine::group::{
    GroupCall, GroupConfig, GroupCoordinator, GroupError, GroupReply, GroupRouter, GroupService,
    OffsetsLog, OffsetsRecord,
};
use futures_lite::future::block_on;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::cluster_view::{Endpoint, COORDINATOR_NOT_AVAILABLE};
use super::group_common::GroupCtx;

/// A clock that stands still (the tests fire timers with `tick`).
struct FixedClock(i64);

impl freshet_engine::Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

#[derive(Default)]
struct MemLog {
    parts: RefCell<HashMap<i32, Vec<KeyValue>>>,
}

impl OffsetsLog for MemLog {
    fn append<'a>(
        &'a self,
        partition: i32,
        records: &'a [OffsetsRecord],
        _ts: i64,
    ) -> LocalFuture<'a, Result<(), GroupError>> {
        let mut p = self.parts.borrow_mut();
        let v = p.entry(partition).or_default();
        for r in records {
            v.push((r.key.clone(), r.value.clone()));
        }
        Box::pin(async { Ok(()) })
    }

    fn read_all(&self, partition: i32) -> LocalFuture<'_, Result<Vec<KeyValue>, GroupError>> {
        let v = self
            .parts
            .borrow()
            .get(&partition)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(v) })
    }
}

/// One core that owns every offsets partition.
struct OneCore {
    svc: Rc<GroupService>,
}

impl GroupRouter for OneCore {
    fn cores(&self) -> usize {
        1
    }
    fn core_of_group(&self, _group_id: &str) -> usize {
        0
    }
    fn call(&self, core: usize, call: GroupCall) -> LocalFuture<'_, GroupReply> {
        assert_eq!(core, 0);
        let svc = self.svc.clone();
        Box::pin(async move { svc.dispatch(call).await })
    }
}

fn one_core() -> OneCore {
    let cfg = GroupConfig {
        initial_rebalance_delay_ms: 0,
        min_session_timeout_ms: 100,
        offsets_topic_num_partitions: 2,
        ..GroupConfig::default()
    };
    let svc = GroupService::new(
        GroupCoordinator::new(cfg, 9),
        Rc::new(FixedClock(1000)),
        Rc::new(MemLog::default()),
    );
    block_on(async {
        svc.load_partition(0).await.unwrap();
        svc.load_partition(1).await.unwrap();
    });
    OneCore { svc: Rc::new(svc) }
}

/// The coordinator of every key in these tests: broker 1 at 127.0.0.1:9092.
fn this_broker(_key: &str) -> Result<Endpoint, i16> {
    Ok(Endpoint {
        id: 1,
        host: "127.0.0.1".to_string(),
        port: 9092,
        rack: None,
    })
}

fn ctx(router: &OneCore) -> GroupCtx<'_> {
    GroupCtx {
        router,
        client_id: "tester",
        client_host: "/127.0.0.1",
        coordinator: &this_broker,
        topic_partitions: &|t: &str| (t == "t").then_some(8),
    }
}

fn encodes<T: Encodable>(msg: &T, version: i16) {
    let mut b = BytesMut::new();
    msg.encode(&mut b, version)
        .unwrap_or_else(|e| panic!("response does not encode at v{version}: {e}"));
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// A member joins (KIP-394 round trip from v4), syncs, heartbeats, commits, fetches, and the
/// group is listed and described: every handler at every version it declares.
#[test]
fn group_handlers_answer_and_encode_at_every_declared_version() {
    for version in super::join_group::VERSIONS.min..=super::join_group::VERSIONS.max {
        let router = one_core();
        let c = ctx(&router);
        let group = format!("g{version}");
        let mut req = JoinGroupRequest::default();
        req.group_id = GroupId(s(&group));
        req.session_timeout_ms = 10_000;
        req.rebalance_timeout_ms = 10_000;
        req.protocol_type = s("consumer");
        let mut p = join_group_request::JoinGroupRequestProtocol::default();
        p.name = s("range");
        p.metadata = Bytes::from_static(b"\x00\x00\x00\x00\x00\x00");
        req.protocols = vec![p];
        if version >= 4 {
            let first = block_on(super::join_group::serve(&c, version, req.clone()));
            encodes(&first, version);
            assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED (KIP-394)");
            req.member_id = first.member_id.clone();
        }
        // The join parks until the (zero) initial delay fires on the next tick.
        let fut = super::join_group::serve(&c, version, req.clone());
        let mut fut = std::pin::pin!(fut);
        assert!(block_on(futures_lite::future::poll_once(fut.as_mut())).is_none());
        block_on(router.svc.tick());
        let resp = block_on(fut);
        encodes(&resp, version);
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.generation_id, 1);
        assert_eq!(resp.leader, resp.member_id);
        assert_eq!(resp.members.len(), 1);
        let member = resp.member_id.clone();

        let sv = version.min(super::sync_group::VERSIONS.max);
        let mut sreq = SyncGroupRequest::default();
        sreq.group_id = GroupId(s(&group));
        sreq.generation_id = 1;
        sreq.member_id = member.clone();
        let mut a = sync_group_request::SyncGroupRequestAssignment::default();
        a.member_id = member.clone();
        a.assignment = Bytes::from_static(b"assignment");
        sreq.assignments = vec![a];
        let sresp = block_on(super::sync_group::serve(&c, sv, sreq));
        encodes(&sresp, sv);
        assert_eq!(sresp.error_code, 0);
        assert_eq!(sresp.assignment, Bytes::from_static(b"assignment"));

        for hv in super::heartbeat::VERSIONS.min..=super::heartbeat::VERSIONS.max {
            let mut h = HeartbeatRequest::default();
            h.group_id = GroupId(s(&group));
            h.generation_id = 1;
            h.member_id = member.clone();
            let r = block_on(super::heartbeat::serve(&c, hv, h));
            encodes(&r, hv);
            assert_eq!(r.error_code, 0);
        }

        for cv in super::offset_commit::VERSIONS.min..=super::offset_commit::VERSIONS.max {
            let mut cr = OffsetCommitRequest::default();
            cr.group_id = GroupId(s(&group));
            cr.generation_id_or_member_epoch = 1;
            cr.member_id = member.clone();
            let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
            t.name = TopicName(s("t"));
            let mut pp = offset_commit_request::OffsetCommitRequestPartition::default();
            pp.partition_index = 0;
            pp.committed_offset = 40 + cv as i64;
            t.partitions = vec![pp];
            cr.topics = vec![t];
            let r = block_on(super::offset_commit::serve(&c, cv, cr));
            encodes(&r, cv);
            assert_eq!(r.topics[0].partitions[0].error_code, 0);
        }

        for fv in super::offset_fetch::VERSIONS.min..=super::offset_fetch::VERSIONS.max {
            let mut fr = OffsetFetchRequest::default();
            if fv >= 8 {
                let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                g.group_id = GroupId(s(&group));
                g.topics = None;
                let mut other = offset_fetch_request::OffsetFetchRequestGroup::default();
                other.group_id = GroupId(s("nobody"));
                fr.groups = vec![g, other];
            } else {
                fr.group_id = GroupId(s(&group));
                let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
                t.name = TopicName(s("t"));
                t.partition_indexes = vec![0, 5];
                fr.topics = Some(vec![t]);
            }
            let r = block_on(super::offset_fetch::serve(&c, fv, fr));
            encodes(&r, fv);
            if fv >= 8 {
                assert_eq!(r.groups.len(), 2);
                assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 49);
                assert!(r.groups[1].topics.is_empty());
            } else {
                let ps = &r.topics[0].partitions;
                assert_eq!((ps[0].committed_offset, ps[1].committed_offset), (49, -1));
            }
        }

        for lv in super::list_groups::VERSIONS.min..=super::list_groups::VERSIONS.max {
            let r = block_on(super::list_groups::serve(
                &c,
                lv,
                ListGroupsRequest::default(),
            ));
            encodes(&r, lv);
            assert_eq!(r.groups.len(), 1);
            assert_eq!(r.groups[0].protocol_type.as_str(), "consumer");
        }

        for dv in super::describe_groups::VERSIONS.min..=super::describe_groups::VERSIONS.max {
            let mut d = DescribeGroupsRequest::default();
            d.groups = vec![GroupId(s(&group)), GroupId(s("nobody"))];
            let r = block_on(super::describe_groups::serve(&c, dv, d));
            encodes(&r, dv);
            assert_eq!(r.groups[0].group_state.as_str(), "Stable");
            assert_eq!(r.groups[0].protocol_data.as_str(), "range");
            assert_eq!(r.groups[0].members[0].client_id.as_str(), "tester");
            assert_eq!(
                r.groups[0].members[0].member_assignment,
                Bytes::from_static(b"assignment")
            );
            assert_eq!(r.groups[1].group_state.as_str(), "Dead");
            assert_eq!(r.groups[1].error_code, if dv >= 6 { 69 } else { 0 });
        }

        let mut od = OffsetDeleteRequest::default();
        od.group_id = GroupId(s(&group));
        let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
        t.name = TopicName(s("t"));
        t.partitions = vec![offset_delete_request::OffsetDeleteRequestPartition::default()];
        od.topics = vec![t];
        let r = block_on(super::offset_delete::serve(&c, 0, od));
        encodes(&r, 0);
        assert_eq!(r.error_code, 0);

        let lv = version.min(super::leave_group::VERSIONS.max);
        let mut l = LeaveGroupRequest::default();
        l.group_id = GroupId(s(&group));
        if lv >= 3 {
            let mut m = leave_group_request::MemberIdentity::default();
            m.member_id = member.clone();
            l.members = vec![m];
        } else {
            l.member_id = member.clone();
        }
        let r = block_on(super::leave_group::serve(&c, lv, l));
        encodes(&r, lv);
        assert_eq!(r.error_code, 0);
        block_on(router.svc.tick());

        for dv in super::delete_groups::VERSIONS.min..=super::delete_groups::VERSIONS.max {
            let mut d = DeleteGroupsRequest::default();
            d.groups_names = vec![GroupId(s(&group))];
            let r = block_on(super::delete_groups::serve(&c, dv, d));
            encodes(&r, dv);
            // The first deletion succeeds; the group is gone for the next versions.
            let want = if dv == super::delete_groups::VERSIONS.min {
                0
            } else {
                69
            };
            assert_eq!(r.results[0].error_code, want);
        }
    }
}

#[test]
fn find_coordinator_answers_this_broker_for_single_and_batched_keys() {
    let router = one_core();
    let c = ctx(&router);
    for v in super::find_coordinator::VERSIONS.min..=super::find_coordinator::VERSIONS.max {
        let mut req = FindCoordinatorRequest::default();
        if v >= 4 {
            req.coordinator_keys = vec![s("a"), s("b")];
        } else {
            req.key = s("a");
        }
        let r = block_on(super::find_coordinator::serve(&c, v, req));
        encodes(&r, v);
        if v >= 4 {
            assert_eq!(r.coordinators.len(), 2);
            assert_eq!(r.coordinators[1].key.as_str(), "b");
            assert_eq!(
                (r.coordinators[1].node_id.0, r.coordinators[1].port),
                (1, 9092)
            );
        } else {
            assert_eq!((r.error_code, r.node_id.0, r.port), (0, 1, 9092));
        }
    }
}

/// In a cluster, a key whose offsets partition has no known leader gets
/// COORDINATOR_NOT_AVAILABLE (node -1) — per key from v4 (KIP-699) — and the client retries;
/// other keys of the same batch still get their coordinator.
#[test]
fn find_coordinator_reports_an_unknown_coordinator_per_key() {
    let router = one_core();
    let lookup = |key: &str| match key {
        "led" => Ok(Endpoint {
            id: 2,
            host: "10.0.0.2".to_string(),
            port: 9093,
            rack: None,
        }),
        _ => Err(COORDINATOR_NOT_AVAILABLE),
    };
    let c = GroupCtx {
        coordinator: &lookup,
        ..ctx(&router)
    };
    for v in super::find_coordinator::VERSIONS.min..=super::find_coordinator::VERSIONS.max {
        let mut req = FindCoordinatorRequest::default();
        if v >= 4 {
            req.coordinator_keys = vec![s("led"), s("electing")];
        } else {
            req.key = s("electing");
        }
        let r = block_on(super::find_coordinator::serve(&c, v, req));
        encodes(&r, v);
        if v >= 4 {
            let got: Vec<(i16, i32, &str, i32)> = r
                .coordinators
                .iter()
                .map(|c| (c.error_code, c.node_id.0, c.host.as_str(), c.port))
                .collect();
            assert_eq!(
                got,
                vec![
                    (0, 2, "10.0.0.2", 9093),
                    (COORDINATOR_NOT_AVAILABLE, -1, "", -1)
                ]
            );
        } else {
            assert_eq!(
                (r.error_code, r.node_id.0, r.port),
                (COORDINATOR_NOT_AVAILABLE, -1, -1)
            );
        }
    }
}

#[test]
fn commits_for_unknown_topics_or_partitions_are_refused_per_partition() {
    let router = one_core();
    let c = ctx(&router);
    let mut cr = OffsetCommitRequest::default();
    cr.group_id = GroupId(s("simple"));
    cr.generation_id_or_member_epoch = -1;
    for (topic, partition) in [("t", 1), ("t", 8), ("missing", 0)] {
        let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
        t.name = TopicName(s(topic));
        let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
        p.partition_index = partition;
        p.committed_offset = 5;
        t.partitions = vec![p];
        cr.topics.push(t);
    }
    let r = block_on(super::offset_commit::serve(&c, 8, cr));
    encodes(&r, 8);
    let codes: Vec<i16> = r
        .topics
        .iter()
        .map(|t| t.partitions[0].error_code)
        .collect();
    assert_eq!(codes, vec![0, 3, 3], "t-8 is past the topic's 8 partitions");
    let all = router.svc.fetch_offsets("simple", None).unwrap();
    assert_eq!(all.len(), 1, "only the known partition was stored");
}
