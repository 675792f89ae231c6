//! Classic consumer-group membership (JoinGroup/SyncGroup/Heartbeat/LeaveGroup, KIP-62 session
//! timeouts, KIP-394 member id required) with the range assignor when we are the leader.
//!
//! Owned by one glommio executor (per-core, `!Send`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{codes, Client, ClientError, Connection};

/// Topic -> assigned partitions.
pub type Assignment = Vec<(String, Vec<i32>)>;

/// The range assignor (Kafka's RangeAssignor): per topic, members sorted by id get consecutive
/// ranges; the first `partitions % members` members get one extra.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Vec::new()))
        .collect();
    for (topic, &count) in partition_counts {
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() {
            continue;
        }
        let n = members.len() as i32;
        let per = count / n;
        let extra = count % n;
        let mut next = 0;
        for (i, m) in members.iter().enumerate() {
            let take = per + if (i as i32) < extra { 1 } else { 0 };
            if take > 0 {
                out.get_mut(*m)
                    .expect("member listed")
                    .push((topic.clone(), (next..next + take).collect()));
            }
            next += take;
        }
    }
    out
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn encode_subscription(topics: &[String]) -> Bytes {
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = topics.iter().map(|t| s(t)).collect();
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    sub.encode(&mut buf, 0).expect("subscription encodes");
    buf.freeze()
}

fn decode_subscription(raw: &Bytes) -> Vec<String> {
    if raw.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([raw[0], raw[1]]);
    let mut b = raw.slice(2..);
    ConsumerProtocolSubscription::decode(&mut b, version.clamp(0, 3))
        .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

fn encode_assignment(a: &Assignment) -> Bytes {
    let mut asg = ConsumerProtocolAssignment::default();
    for (t, ps) in a {
        let mut tp = TopicPartition::default();
        tp.topic = TopicName(s(t));
        tp.partitions = ps.clone();
        asg.assigned_partitions.push(tp);
    }
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    asg.encode(&mut buf, 0).expect("assignment encodes");
    buf.freeze()
}

struct MemberInner {
    client: Client,
    group: String,
    topics: Vec<String>,
    member_id: RefCell<String>,
    generation: Cell<i32>,
    coordinator: RefCell<Option<Connection>>,
    rejoin_needed: Cell<bool>,
    session_timeout_ms: i32,
    heartbeat_running: Cell<bool>,
    left: Cell<bool>,
}

/// This process's membership in one consumer group (per-core, `!Send`; cheap to clone).
#[derive(Clone)]
pub struct GroupMember {
    inner: Rc<MemberInner>,
}

impl GroupMember {
    pub fn new(client: Client, group: &str, topics: Vec<String>) -> GroupMember {
        GroupMember {
            inner: Rc::new(MemberInner {
                client,
                group: group.to_string(),
                topics,
                member_id: RefCell::new(String::new()),
                generation: Cell::new(-1),
                coordinator: RefCell::new(None),
                rejoin_needed: Cell::new(true),
                session_timeout_ms: 10_000,
                heartbeat_running: Cell::new(false),
                left: Cell::new(false),
            }),
        }
    }

    /// True when the coordinator asked for a rebalance (seen in a heartbeat).
    pub fn rejoin_needed(&self) -> bool {
        self.inner.rejoin_needed.get()
    }

    async fn coordinator(&self) -> Result<Connection, ClientError> {
        if let Some(c) = self.inner.coordinator.borrow().as_ref() {
            if !c.is_dead() {
                return Ok(c.clone());
            }
        }
        let c = self
            .inner
            .client
            .group_coordinator(&self.inner.group)
            .await?;
        *self.inner.coordinator.borrow_mut() = Some(c.clone());
        Ok(c)
    }

    /// Joins (or re-joins) the group and returns this member's assignment.
    pub async fn join(&self) -> Result<Assignment, ClientError> {
        let inner = &self.inner;
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > 50 {
                return Err(ClientError::Other(format!(
                    "could not join group {} after {attempts} attempts",
                    inner.group
                )));
            }
            let coord = self.coordinator().await?;
            let mut req = JoinGroupRequest::default();
            req.group_id = GroupId(s(&inner.group));
            req.session_timeout_ms = inner.session_timeout_ms;
            req.rebalance_timeout_ms = 30_000;
            req.member_id = s(&inner.member_id.borrow());
            req.protocol_type = s("consumer");
            let mut proto = JoinGroupRequestProtocol::default();
            proto.name = s("range");
            proto.metadata = encode_subscription(&inner.topics);
            req.protocols.push(proto);
            let (resp, _) = coord.call(&req).await?;
            match resp.error_code {
                0 => {}
                codes::MEMBER_ID_REQUIRED => {
                    *inner.member_id.borrow_mut() = resp.member_id.to_string();
                    continue;
                }
                codes::UNKNOWN_MEMBER_ID => {
                    inner.member_id.borrow_mut().clear();
                    continue;
                }
                codes::NOT_COORDINATOR
                | codes::COORDINATOR_NOT_AVAILABLE
                | codes::COORDINATOR_LOAD_IN_PROGRESS => {
                    *inner.coordinator.borrow_mut() = None;
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                codes::REBALANCE_IN_PROGRESS => {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                c => {
                    return Err(ClientError::kafka(format!("join group {}", inner.group), c));
                }
            }
            *inner.member_id.borrow_mut() = resp.member_id.to_string();
            inner.generation.set(resp.generation_id);
            let mut assignments = Vec::new();
            if resp.leader == resp.member_id {
                let mut subs: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for m in &resp.members {
                    subs.insert(m.member_id.to_string(), decode_subscription(&m.metadata));
                }
                let mut topics: Vec<String> = subs.values().flatten().cloned().collect();
                topics.sort();
                topics.dedup();
                let mut counts = BTreeMap::new();
                for t in &topics {
                    if let Ok(m) = inner.client.refresh_topic(t).await {
                        counts.insert(t.clone(), m.partitions.len() as i32);
                    }
                }
                for (m, a) in range_assign(&subs, &counts) {
                    let mut sa = SyncGroupRequestAssignment::default();
                    sa.member_id = s(&m);
                    sa.assignment = encode_assignment(&a);
                    assignments.push(sa);
                }
            }
            let mut sreq = SyncGroupRequest::default();
            sreq.group_id = GroupId(s(&inner.group));
            sreq.generation_id = resp.generation_id;
            sreq.member_id = resp.member_id.clone();
            sreq.protocol_type = Some(s("consumer"));
            sreq.protocol_name = Some(s("range"));
            sreq.assignments = assignments;
            let (sresp, _) = coord.call(&sreq).await?;
            match sresp.error_code {
                0 => {}
                codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION => continue,
                codes::UNKNOWN_MEMBER_ID => {
                    inner.member_id.borrow_mut().clear();
                    continue;
                }
                c => return Err(ClientError::kafka(format!("sync group {}", inner.group), c)),
            }
            inner.rejoin_needed.set(false);
            self.start_heartbeats();
            return Ok(super::admin::decode_assignment(&sresp.assignment));
        }
    }

    fn start_heartbeats(&self) {
        if self.inner.heartbeat_running.replace(true) {
            return;
        }
        let me = self.clone();
        glommio::spawn_local(async move {
            let interval = Duration::from_millis((me.inner.session_timeout_ms / 4) as u64);
            while !me.inner.left.get() {
                glommio::timer::sleep(interval).await;
                if me.inner.left.get() || me.inner.rejoin_needed.get() {
                    continue;
                }
                let Ok(coord) = me.coordinator().await else {
                    continue;
                };
                let mut req = HeartbeatRequest::default();
                req.group_id = GroupId(s(&me.inner.group));
                req.generation_id = me.inner.generation.get();
                req.member_id = s(&me.inner.member_id.borrow());
                match coord.call(&req).await {
                    Ok((r, _)) if r.error_code == 0 => {}
                    Ok((r, _)) => {
                        if r.error_code == codes::UNKNOWN_MEMBER_ID {
                            me.inner.member_id.borrow_mut().clear();
                        }
                        if matches!(
                            r.error_code,
                            codes::NOT_COORDINATOR | codes::COORDINATOR_NOT_AVAILABLE
                        ) {
                            *me.inner.coordinator.borrow_mut() = None;
                        }
                        me.inner.rejoin_needed.set(true);
                    }
                    Err(_) => {
                        *me.inner.coordinator.borrow_mut() = None;
                    }
                }
            }
            me.inner.heartbeat_running.set(false);
        })
        .detach();
    }

    /// Commits offsets within the current generation.
    pub async fn commit(&self, offsets: &[(String, i32, i64)]) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let member_id = self.inner.member_id.borrow().clone();
        super::admin::commit_offsets(
            &self.inner.client,
            &self.inner.group,
            self.inner.generation.get(),
            &member_id,
            offsets,
        )
        .await
    }

    /// Leaves the group (KIP-345 batch form on v3+).
    pub async fn leave(&self) -> Result<(), ClientError> {
        self.inner.left.set(true);
        let member_id = self.inner.member_id.borrow().clone();
        if member_id.is_empty() {
            return Ok(());
        }
        let coord = self.coordinator().await?;
        let version = coord.version(ApiKey::LeaveGroup)?;
        let mut req = LeaveGroupRequest::default();
        req.group_id = GroupId(s(&self.inner.group));
        if version >= 3 {
            let mut m = MemberIdentity::default();
            m.member_id = s(&member_id);
            req.members.push(m);
        } else {
            req.member_id = s(&member_id);
        }
        let resp = coord.call_version(&req, version).await?;
        if resp.error_code != 0 {
            return Err(ClientError::kafka(
                format!("leave group {}", self.inner.group),
                resp.error_code,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignor_gives_the_first_members_the_extra_partitions() {
        // Kafka's RangeAssignor: 3 partitions over 2 members -> [0,1] and [2].
        let mut subs = BTreeMap::new();
        subs.insert("m-a".to_string(), vec!["t".to_string()]);
        subs.insert("m-b".to_string(), vec!["t".to_string()]);
        let mut counts = BTreeMap::new();
        counts.insert("t".to_string(), 3);
        let a = range_assign(&subs, &counts);
        assert_eq!(a["m-a"], vec![("t".to_string(), vec![0, 1])]);
        assert_eq!(a["m-b"], vec![("t".to_string(), vec![2])]);
    }

    #[test]
    fn subscription_and_assignment_survive_the_consumer_protocol_encoding() {
        let raw = encode_subscription(&["a".to_string(), "b".to_string()]);
        assert_eq!(
            decode_subscription(&raw),
            vec!["a".to_string(), "b".to_string()]
        );
        let asg = vec![("a".to_string(), vec![0, 2])];
        let raw = encode_assignment(&asg);
        assert_eq!(super::super::admin::decode_assignment(&raw), asg);
    }
}
