//! ElectLeaders (key 43, KIP-183 preferred election; v1 KIP-460 election type): PREFERRED (0)
//! hands each partition's leadership to its preferred replica (the first of its replica list)
//! with a Raft leadership transfer (thesis §3.10) started on the node that leads it (RPC
//! `ELECT_PREFERRED`, engine/src/reassign.rs), and answers once the leader table shows the
//! preferred replica leading (or the request's timeout passed: REQUEST_TIMED_OUT). Per
//! partition: unknown → UNKNOWN_TOPIC_OR_PARTITION; already led by its preferred replica →
//! ELECTION_NOT_NEEDED; preferred replica down, out of the ISR, or no leader to hand over
//! from → PREFERRED_LEADER_NOT_AVAILABLE. UNCLEAN (1): Raft never elects a replica that may
//! lack committed entries, so a partition with a leader gets ELECTION_NOT_NEEDED and one
//! without ELIGIBLE_LEADERS_NOT_AVAILABLE. Other election types: INVALID_REQUEST at the top.
//! `topic_partitions` null means every partition; then ELECTION_NOT_NEEDED results are left
//! out (as Kafka does).

use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet_engine::cluster::leaders::LeaderInfo;
use freshet_engine::code;
use freshet_engine::metadata::MetadataSnapshot;
use freshet_engine::reassign::{request_preferred_election, ElectOutcome};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::sb;
use super::{topic_name, HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::ElectLeaders;
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;
/// Longest wait for the elected leaders, whatever the request's timeout says.
const WAIT_MS_MAX: i32 = 60_000;

/// One partition's answer so far: (topic, partition, result, the group and preferred
/// replica to wait for when an election was started).
type Outcome = (String, i32, Result<(), (i16, String)>, Option<(u64, i32)>);

/// What to do for one partition.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Answer with this code (and message) without electing.
    Answer(i16, String),
    /// Ask broker `leader` to hand group `group`'s leadership to `preferred`.
    Elect {
        group: u64,
        leader: i32,
        preferred: i32,
    },
}

/// Decides one partition from this node's metadata, leader table entry and down brokers.
pub(crate) fn decide(
    snap: &MetadataSnapshot,
    topic: &str,
    partition: i32,
    election_type: i8,
    leader: Option<&LeaderInfo>,
    down: &[i32],
) -> Decision {
    let Some(a) = snap.topic(topic).and_then(|t| t.assignment(partition)) else {
        return Decision::Answer(
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("Partition {topic}-{partition} does not exist."),
        );
    };
    if election_type == UNCLEAN {
        return match leader {
            Some(_) => Decision::Answer(
                code::ELECTION_NOT_NEEDED,
                "The partition has a leader.".into(),
            ),
            None => Decision::Answer(
                code::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                "Raft elects only a replica holding every committed record; none is available."
                    .into(),
            ),
        };
    }
    let preferred = a.all_replicas()[0];
    let Some(l) = leader else {
        return Decision::Answer(
            code::PREFERRED_LEADER_NOT_AVAILABLE,
            "The partition has no leader to hand over from; an election is under way.".into(),
        );
    };
    if l.leader == preferred {
        return Decision::Answer(
            code::ELECTION_NOT_NEEDED,
            format!("Broker {preferred}, the preferred replica, already leads."),
        );
    }
    if down.contains(&preferred) || (!l.isr.is_empty() && !l.isr.contains(&preferred)) {
        return Decision::Answer(
            code::PREFERRED_LEADER_NOT_AVAILABLE,
            format!("The preferred replica {preferred} is not in sync."),
        );
    }
    Decision::Elect {
        group: a.group,
        leader: l.leader,
        preferred,
    }
}

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: ElectLeadersRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let election_type = if ctx.api_version >= 1 {
            req.election_type
        } else {
            PREFERRED
        };
        if election_type != PREFERRED && election_type != UNCLEAN {
            return ctx
                .respond(&ElectLeadersResponse::default().with_error_code(code::INVALID_REQUEST));
        }
        let snap = shard.metadata();
        let all = req.topic_partitions.is_none();
        let asked: Vec<(String, Vec<i32>)> = match req.topic_partitions {
            Some(tps) => tps
                .into_iter()
                .map(|t| (t.topic.0.as_str().to_string(), t.partitions))
                .collect(),
            None => snap
                .topics
                .values()
                .map(|t| (t.name.clone(), (0..t.partitions).collect()))
                .collect(),
        };
        let down = shard.down_brokers();
        let wait = Duration::from_millis(req.timeout_ms.clamp(0, WAIT_MS_MAX) as u64);
        let deadline = Instant::now() + wait;
        let mut results: Vec<Outcome> = Vec::new();
        for (topic, parts) in &asked {
            for &p in parts {
                let leader = snap
                    .topic(topic)
                    .and_then(|t| t.assignment(p))
                    .and_then(|a| shard.leader_of(a.group));
                match decide(&snap, topic, p, election_type, leader.as_ref(), &down) {
                    Decision::Answer(code, msg) => {
                        results.push((topic.clone(), p, Err((code, msg)), None))
                    }
                    Decision::Elect {
                        group,
                        leader,
                        preferred,
                    } => {
                        let r = request_preferred_election(&shard, leader, group, preferred, wait)
                            .await;
                        let outcome = match r {
                            Ok(ElectOutcome::Started) => Ok(()),
                            Ok(o) => Err((
                                code::PREFERRED_LEADER_NOT_AVAILABLE,
                                format!(
                                    "Broker {leader} no longer leads the partition ({o:?}); retry."
                                ),
                            )),
                            Err(e) => Err((
                                code::PREFERRED_LEADER_NOT_AVAILABLE,
                                format!("Broker {leader} could not be asked: {e}"),
                            )),
                        };
                        let started = outcome.is_ok();
                        results.push((
                            topic.clone(),
                            p,
                            outcome,
                            started.then_some((group, preferred)),
                        ));
                    }
                }
            }
        }
        // Wait until every started election shows in the leader table.
        loop {
            let pending = results.iter().any(|(_, _, _, w)| {
                w.is_some_and(|(g, pref)| shard.leader_of(g).is_none_or(|l| l.leader != pref))
            });
            if !pending || Instant::now() >= deadline {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        let mut by_topic: Vec<ReplicaElectionResult> = Vec::new();
        for (topic, p, outcome, w) in results {
            let outcome = match (outcome, w) {
                (Ok(()), Some((g, pref)))
                    if shard.leader_of(g).is_none_or(|l| l.leader != pref) =>
                {
                    Err((
                        code::REQUEST_TIMED_OUT,
                        format!(
                            "Broker {pref} did not take over within {} ms.",
                            wait.as_millis()
                        ),
                    ))
                }
                (o, _) => o,
            };
            if all && matches!(&outcome, Err((c, _)) if *c == code::ELECTION_NOT_NEEDED) {
                continue;
            }
            let mut r = PartitionResult::default().with_partition_id(p);
            if let Err((c, msg)) = outcome {
                r.error_code = c;
                r.error_message = Some(sb(msg));
            }
            match by_topic.iter_mut().find(|t| t.topic.0.as_str() == topic) {
                Some(t) => t.partition_result.push(r),
                None => by_topic.push(
                    ReplicaElectionResult::default()
                        .with_topic(topic_name(&topic))
                        .with_partition_result(vec![r]),
                ),
            }
        }
        ctx.respond(&ElectLeadersResponse::default().with_replica_election_results(by_topic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshet_engine::metadata::{PartitionAssignment, TopicMeta};
    use freshet_engine::TopicConfig;

    fn snap() -> MetadataSnapshot {
        let mut s = MetadataSnapshot::default();
        s.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id: [1; 16],
                partitions: 1,
                config: TopicConfig::default(),
                revision: 1,
                assignments: vec![PartitionAssignment::new(5, vec![1, 2, 0])],
            },
        );
        s
    }

    fn led_by(leader: i32, isr: &[i32]) -> LeaderInfo {
        LeaderInfo {
            leader,
            epoch: 3,
            isr: isr.to_vec(),
        }
    }

    fn code_of(d: Decision) -> i16 {
        match d {
            Decision::Answer(c, _) => c,
            Decision::Elect { .. } => code::NONE,
        }
    }

    /// KIP-183 / KIP-460: each case gets Kafka's code; only a partition led elsewhere with
    /// its preferred replica in sync is elected (on its leader's node).
    #[test]
    fn elections_are_decided_with_kafkas_codes() {
        let s = snap();
        let l2 = led_by(2, &[0, 1, 2]);
        assert_eq!(
            decide(&s, "t", 0, PREFERRED, Some(&l2), &[]),
            Decision::Elect {
                group: 5,
                leader: 2,
                preferred: 1
            }
        );
        let code = |topic: &str, p: i32, ty: i8, l: Option<&LeaderInfo>, down: &[i32]| {
            code_of(decide(&s, topic, p, ty, l, down))
        };
        assert_eq!(
            code("x", 0, PREFERRED, Some(&l2), &[]),
            code::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            code("t", 1, PREFERRED, Some(&l2), &[]),
            code::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            code("t", 0, PREFERRED, Some(&led_by(1, &[1, 2])), &[]),
            code::ELECTION_NOT_NEEDED
        );
        assert_eq!(
            code("t", 0, PREFERRED, Some(&led_by(2, &[0, 2])), &[]),
            code::PREFERRED_LEADER_NOT_AVAILABLE
        );
        assert_eq!(
            code("t", 0, PREFERRED, Some(&l2), &[1]),
            code::PREFERRED_LEADER_NOT_AVAILABLE
        );
        assert_eq!(
            code("t", 0, PREFERRED, None, &[]),
            code::PREFERRED_LEADER_NOT_AVAILABLE
        );
        assert_eq!(
            code("t", 0, UNCLEAN, Some(&l2), &[]),
            code::ELECTION_NOT_NEEDED
        );
        assert_eq!(
            code("t", 0, UNCLEAN, None, &[]),
            code::ELIGIBLE_LEADERS_NOT_AVAILABLE
        );
    }
}
