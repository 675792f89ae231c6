//! The controller state machine: a [`MetadataSnapshot`] changed only by applying committed
//! [`Command`]s in log order, and the leader-side resolution of an [`Intent`] into a command.
//!
//! Determinism (KIP-500: every node replays the same metadata log to the same state): `apply`
//! depends only on the snapshot and the command, and every command, accepted or refused, bumps
//! `revision` by one, so after the command at Kafka offset `k` every node's revision is `k + 1`.
//! A command can be refused at apply time although the leader validated it (a proposal of an
//! earlier leader committed in between, e.g. the same topic created twice); then it changes
//! nothing but the revision on every node alike.
//!
//! Ownership: pure functions over values; the running controller calls them on core 0.

use crate::config::TopicConfig;
use crate::controller::command::{Command, Intent};
use crate::controller::placement;
use crate::error::TopicError;
use crate::metadata::{
    validate_topic_name, MetadataSnapshot, PartitionAssignment, TopicId, TopicMeta,
    CONTROLLER_GROUP,
};
use crate::shard::{validate_new_topic, TopicConfigChange};

/// The offsets topic, whose replication factor is capped at the registered brokers.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Largest partition count of a topic.
pub const PARTITIONS_MAX: i32 = 100_000;

/// The state before any command: no brokers, no topics, partition groups from 1.
pub fn initial_snapshot() -> MetadataSnapshot {
    MetadataSnapshot {
        revision: 0,
        next_group: CONTROLLER_GROUP + 1,
        ..Default::default()
    }
}

/// Applies one committed command: revision + 1, then the change (or nothing if refused).
pub fn apply(snap: &mut MetadataSnapshot, cmd: &Command) -> Result<(), TopicError> {
    snap.revision += 1;
    snap.next_group = snap.next_group.max(CONTROLLER_GROUP + 1);
    let revision = snap.revision;
    match cmd {
        Command::RegisterBroker(b) => {
            if b.id < 0 {
                return Err(TopicError::InvalidReplicaAssignment(format!(
                    "broker id {} < 0",
                    b.id
                )));
            }
            snap.brokers.insert(b.id, b.clone());
            Ok(())
        }
        Command::CreateTopic {
            name,
            id,
            config,
            assignments,
        } => {
            validate_topic_name(name).map_err(|e| TopicError::InvalidName(e.to_string()))?;
            if snap.topics.contains_key(name) {
                return Err(TopicError::AlreadyExists(name.clone()));
            }
            if assignments.is_empty() || assignments.len() > PARTITIONS_MAX as usize {
                return Err(TopicError::InvalidPartitions(format!(
                    "{} partitions",
                    assignments.len()
                )));
            }
            check_new_assignments(snap, assignments)?;
            let config = TopicConfig::from_pairs(config.clone())?;
            bump_next_group(snap, assignments);
            snap.topics.insert(
                name.clone(),
                TopicMeta {
                    name: name.clone(),
                    id: *id,
                    partitions: assignments.len() as i32,
                    config,
                    revision,
                    assignments: assignments.clone(),
                },
            );
            Ok(())
        }
        Command::DeleteTopic { name, id } => {
            topic_with_id(snap, name, id)?;
            snap.topics.remove(name);
            Ok(())
        }
        Command::AddPartitions {
            name,
            id,
            assignments,
        } => {
            let have = topic_with_id(snap, name, id)?.partitions as usize;
            if assignments.is_empty() || have + assignments.len() > PARTITIONS_MAX as usize {
                return Err(TopicError::InvalidPartitions(format!(
                    "{} + {} partitions",
                    have,
                    assignments.len()
                )));
            }
            check_new_assignments(snap, assignments)?;
            bump_next_group(snap, assignments);
            let t = snap.topics.get_mut(name).expect("checked above");
            t.assignments.extend(assignments.iter().cloned());
            t.partitions = t.assignments.len() as i32;
            t.revision = revision;
            Ok(())
        }
        Command::SetTopicConfig { name, id, config } => {
            topic_with_id(snap, name, id)?;
            let config = TopicConfig::from_pairs(config.clone())?;
            let t = snap.topics.get_mut(name).expect("checked above");
            t.config = config;
            t.revision = revision;
            Ok(())
        }
        Command::AlterReassignment {
            name,
            id,
            partition,
            target,
        } => {
            let t = topic_with_id(snap, name, id)?;
            let a = t.assignment(*partition).ok_or_else(|| {
                TopicError::Unknown(format!("{name}-{partition} (no such partition)"))
            })?;
            let mut a = a.clone();
            match target {
                None => {
                    let Some(old) = a.target.take() else {
                        return Err(TopicError::NoReassignmentInProgress(format!(
                            "{name}-{partition}"
                        )));
                    };
                    retire(&mut a, &old);
                }
                Some(new) => {
                    check_replica_list(snap, *partition, new)?;
                    let old = a.target.take().unwrap_or_default();
                    if same_set(new, &a.replicas) {
                        // Only the order changes (KIP-455: completes at once).
                        a.replicas = new.clone();
                    } else {
                        a.target = Some(new.clone());
                    }
                    retire(&mut a, &old);
                }
            }
            let t = snap.topics.get_mut(name).expect("checked above");
            t.assignments[*partition as usize] = a;
            t.revision = revision;
            Ok(())
        }
        Command::CompleteReassignment { group, replicas } => {
            let Some((t, p)) = snap.partition_of_group(*group) else {
                return Err(TopicError::Unknown(format!("Raft group {group}")));
            };
            let name = t.name.clone();
            let mut a = t.assignments[p as usize].clone();
            match &a.target {
                Some(target) if target == replicas => {
                    a.replicas = target.clone();
                    a.target = None;
                }
                None if same_set(replicas, &a.replicas) => {}
                _ => {
                    return Err(TopicError::InvalidReplicaAssignment(format!(
                        "{name}-{p}: reported configuration {replicas:?} is not the one heading for {:?} (stale report)",
                        a.desired()
                    )))
                }
            }
            a.retiring.clear();
            let t = snap.topics.get_mut(&name).expect("found above");
            t.assignments[p as usize] = a;
            t.revision = revision;
            Ok(())
        }
    }
}

/// Brokers of a dropped `old` target that are not wanted any more stay holders (retiring)
/// until the leader reports a configuration without them; wanted ones leave `retiring`.
fn retire(a: &mut PartitionAssignment, old: &[i32]) {
    for b in old {
        if !a.retiring.contains(b) {
            a.retiring.push(*b);
        }
    }
    let keep: Vec<i32> = a
        .retiring
        .iter()
        .copied()
        .filter(|b| !a.replicas.contains(b) && !a.target.as_ref().is_some_and(|t| t.contains(b)))
        .collect();
    a.retiring = keep;
}

fn same_set(x: &[i32], y: &[i32]) -> bool {
    x.len() == y.len() && x.iter().all(|b| y.contains(b))
}

/// A replica list of a reassignment: non-empty, registered and distinct brokers.
fn check_replica_list(
    snap: &MetadataSnapshot,
    partition: i32,
    replicas: &[i32],
) -> Result<(), TopicError> {
    if replicas.is_empty() {
        return Err(TopicError::InvalidReplicaAssignment(format!(
            "partition {partition}: the replica list is empty"
        )));
    }
    for (j, b) in replicas.iter().enumerate() {
        if !snap.brokers.contains_key(b) {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "partition {partition}: broker {b} is not registered"
            )));
        }
        if replicas[..j].contains(b) {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "partition {partition}: broker {b} listed twice"
            )));
        }
    }
    Ok(())
}

fn topic_with_id<'a>(
    snap: &'a MetadataSnapshot,
    name: &str,
    id: &TopicId,
) -> Result<&'a TopicMeta, TopicError> {
    match snap.topics.get(name) {
        Some(t) if &t.id == id => Ok(t),
        _ => Err(TopicError::Unknown(name.to_string())),
    }
}

/// New partitions: non-empty replica lists of registered, distinct brokers, on groups never
/// used before (≥ `next_group`, increasing).
fn check_new_assignments(
    snap: &MetadataSnapshot,
    assignments: &[PartitionAssignment],
) -> Result<(), TopicError> {
    let mut next = snap.next_group;
    for (i, a) in assignments.iter().enumerate() {
        if a.group < next {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "partition {i}: Raft group {} is already used (next free {next})",
                a.group
            )));
        }
        next = a.group + 1;
        if a.replicas.is_empty() {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "partition {i} has no replicas"
            )));
        }
        for (j, b) in a.replicas.iter().enumerate() {
            if !snap.brokers.contains_key(b) {
                return Err(TopicError::InvalidReplicaAssignment(format!(
                    "partition {i}: broker {b} is not registered"
                )));
            }
            if a.replicas[..j].contains(b) {
                return Err(TopicError::InvalidReplicaAssignment(format!(
                    "partition {i}: broker {b} listed twice"
                )));
            }
        }
    }
    Ok(())
}

fn bump_next_group(snap: &mut MetadataSnapshot, assignments: &[PartitionAssignment]) {
    for a in assignments {
        snap.next_group = snap.next_group.max(a.group + 1);
    }
}

/// What the leader needs besides the state to turn an intent into a command.
#[derive(Debug, Clone)]
pub struct ResolveContext {
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `offsets.topic.replication.factor` (used for `__consumer_offsets` with −1).
    pub offsets_topic_replication_factor: i16,
    /// The id a created topic gets (random, drawn by the caller).
    pub new_topic_id: TopicId,
    /// Brokers the leader considers down (`Shard::down_brokers`): automatic placement skips
    /// them, as Kafka places new replicas only on unfenced brokers. Manual assignments are
    /// taken as given.
    pub down: Vec<i32>,
}

/// Validates `intent` against the leader's applied state and resolves it into the command to
/// propose (ids, groups and replicas chosen). `Ok(None)`: nothing to change (a broker
/// re-registering with the same addresses).
pub fn resolve(
    snap: &MetadataSnapshot,
    intent: Intent,
    ctx: &ResolveContext,
) -> Result<Option<Command>, TopicError> {
    // The brokers automatic placement may use: registered and not found down.
    let brokers: Vec<i32> = snap
        .brokers
        .keys()
        .copied()
        .filter(|b| !ctx.down.contains(b))
        .collect();
    let first_group = snap.next_group.max(CONTROLLER_GROUP + 1);
    match intent {
        Intent::RegisterBroker(b) => {
            if snap.brokers.get(&b.id) == Some(&b) {
                return Ok(None);
            }
            Ok(Some(Command::RegisterBroker(b)))
        }
        Intent::CreateTopic {
            name,
            partitions,
            replication_factor,
            configs,
            assignments: manual,
        } => {
            let partitions = match &manual {
                Some(m) if partitions == -1 || partitions == m.len() as i32 => m.len() as i32,
                Some(m) => {
                    return Err(TopicError::InvalidReplicaAssignment(format!(
                        "{} replica lists for {partitions} partitions",
                        m.len()
                    )))
                }
                None => partitions,
            };
            validate_new_topic(snap, &name, partitions, &configs)?;
            let config = TopicConfig::from_pairs(configs)?;
            let assignments = match manual {
                Some(m) => placement::validate_manual(&snap.brokers, &m, None, first_group)?,
                None => {
                    let mut rf = replication_factor;
                    if name == OFFSETS_TOPIC {
                        // Capped at the registered brokers so a small cluster still gets it.
                        let want = if rf == -1 {
                            ctx.offsets_topic_replication_factor
                        } else {
                            rf
                        };
                        if want > 0 {
                            rf = placement::offsets_topic_replication_factor(want, brokers.len());
                        }
                    }
                    let rf = placement::resolve_replication_factor(
                        rf,
                        ctx.default_replication_factor,
                        brokers.len(),
                    )?;
                    let (start, shift) = placement::starts_of(&ctx.new_topic_id, brokers.len());
                    placement::assign_replicas(
                        &brokers,
                        0,
                        partitions,
                        rf,
                        first_group,
                        start,
                        shift,
                    )
                }
            };
            Ok(Some(Command::CreateTopic {
                name,
                id: ctx.new_topic_id,
                config: config.entries,
                assignments,
            }))
        }
        Intent::DeleteTopic { name } => {
            let t = snap
                .topic(&name)
                .ok_or_else(|| TopicError::Unknown(name.clone()))?;
            Ok(Some(Command::DeleteTopic { name, id: t.id }))
        }
        Intent::AddPartitions {
            name,
            total_partitions,
            assignments: manual,
        } => {
            let t = snap
                .topic(&name)
                .ok_or_else(|| TopicError::Unknown(name.clone()))?;
            if total_partitions <= t.partitions {
                return Err(TopicError::InvalidPartitions(format!(
                    "Topic currently has {} partitions, which is higher than the requested {total_partitions}.",
                    t.partitions
                )));
            }
            if total_partitions > PARTITIONS_MAX {
                return Err(TopicError::InvalidPartitions(format!(
                    "{total_partitions} partitions requested; must be at most {PARTITIONS_MAX}"
                )));
            }
            let added = total_partitions - t.partitions;
            let rf = t.replication_factor().max(1);
            let assignments = match manual {
                Some(m) => {
                    if m.len() != added as usize {
                        return Err(TopicError::InvalidReplicaAssignment(format!(
                            "Increasing the number of partitions by {added} but {} assignments provided.",
                            m.len()
                        )));
                    }
                    placement::validate_manual(&snap.brokers, &m, Some(rf), first_group)?
                }
                None => {
                    if rf > brokers.len() {
                        return Err(TopicError::InvalidReplicationFactor(format!(
                            "topic has {rf} replicas per partition but only {} broker(s) are registered",
                            brokers.len()
                        )));
                    }
                    // Continue the rotation from where partition 0's leader sits.
                    let (_, shift) = placement::starts_of(&t.id, brokers.len());
                    let start = t
                        .assignments
                        .first()
                        .and_then(|a| a.replicas.first())
                        .and_then(|l| brokers.iter().position(|b| b == l))
                        .unwrap_or(0);
                    placement::assign_replicas(
                        &brokers,
                        t.partitions,
                        added,
                        rf,
                        first_group,
                        start,
                        shift,
                    )
                }
            };
            Ok(Some(Command::AddPartitions {
                name,
                id: t.id,
                assignments,
            }))
        }
        Intent::AlterReassignment {
            name,
            partition,
            target,
        } => {
            let t = snap
                .topic(&name)
                .ok_or_else(|| TopicError::Unknown(name.clone()))?;
            let a = t.assignment(partition).ok_or_else(|| {
                TopicError::Unknown(format!("{name}-{partition} (no such partition)"))
            })?;
            match &target {
                None if a.target.is_none() => {
                    return Err(TopicError::NoReassignmentInProgress(format!(
                        "{name}-{partition}"
                    )))
                }
                None => {}
                Some(new) => {
                    check_replica_list(snap, partition, new)?;
                    if a.target.is_none() && *new == a.replicas {
                        return Ok(None); // already there
                    }
                }
            }
            Ok(Some(Command::AlterReassignment {
                name,
                id: t.id,
                partition,
                target,
            }))
        }
        Intent::CompleteReassignment { group, replicas } => {
            let (t, p) = snap
                .partition_of_group(group)
                .ok_or_else(|| TopicError::Unknown(format!("Raft group {group}")))?;
            let a = &t.assignments[p as usize];
            if a.target.is_none() && a.retiring.is_empty() && replicas == a.replicas {
                return Ok(None); // nothing to complete (a repeated report)
            }
            Ok(Some(Command::CompleteReassignment { group, replicas }))
        }
        Intent::SetTopicConfig { name, change } => {
            let t = snap
                .topic(&name)
                .ok_or_else(|| TopicError::Unknown(name.clone()))?;
            let config = match change {
                TopicConfigChange::Replace(pairs) => TopicConfig::from_pairs(pairs)?,
                TopicConfigChange::Incremental(ops) => {
                    let mut c = t.config.clone();
                    for (k, v) in ops {
                        match v {
                            Some(v) => c.set(k, v)?,
                            None => c.unset(&k),
                        }
                    }
                    c
                }
            };
            Ok(Some(Command::SetTopicConfig {
                name,
                id: t.id,
                config: config.entries,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code;
    use crate::metadata::BrokerInfo;

    fn broker(id: i32) -> BrokerInfo {
        BrokerInfo {
            id,
            host: "127.0.0.1".into(),
            port: 9092 + id,
            rpc_addr: format!("127.0.0.1:{}", 33145 + id),
            rack: None,
        }
    }

    fn ctx(id: u8) -> ResolveContext {
        ResolveContext {
            default_replication_factor: 3,
            offsets_topic_replication_factor: 3,
            new_topic_id: [id; 16],
            down: Vec::new(),
        }
    }

    fn create(name: &str, partitions: i32, rf: i16) -> Intent {
        Intent::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            configs: vec![],
            assignments: None,
        }
    }

    /// The leader's path: resolve against the applied state, then apply the command.
    fn run(
        snap: &mut MetadataSnapshot,
        intent: Intent,
        c: &ResolveContext,
    ) -> Result<(), TopicError> {
        if let Some(cmd) = resolve(snap, intent, c)? {
            apply(snap, &cmd)?;
        }
        Ok(())
    }

    fn three_brokers() -> MetadataSnapshot {
        let mut s = initial_snapshot();
        for id in 0..3 {
            apply(&mut s, &Command::RegisterBroker(broker(id))).unwrap();
        }
        s
    }

    /// Kafka places new replicas only on unfenced brokers: with broker 2 down (in the
    /// leader's liveness view) CreateTopics and CreatePartitions place on 0 and 1 only, an RF
    /// above the live brokers is INVALID_REPLICATION_FACTOR, and once 2 is live again it is
    /// used again.
    #[test]
    fn automatic_placement_skips_brokers_that_are_down() {
        let mut s = three_brokers();
        let down = ResolveContext {
            down: vec![2],
            ..ctx(1)
        };
        run(&mut s, create("a", 6, 2), &down).unwrap();
        let a = s.topic("a").unwrap();
        for p in 0..6 {
            let r = &a.assignment(p).unwrap().replicas;
            assert_eq!(r.len(), 2, "{r:?}");
            assert!(
                !r.contains(&2),
                "partition {p} placed on down broker 2: {r:?}"
            );
        }
        assert!(matches!(
            run(&mut s, create("b", 1, 3), &down),
            Err(TopicError::InvalidReplicationFactor(_))
        ));
        let more = Intent::AddPartitions {
            name: "a".into(),
            total_partitions: 9,
            assignments: None,
        };
        run(&mut s, more, &down).unwrap();
        let a = s.topic("a").unwrap();
        for p in 6..9 {
            let r = &a.assignment(p).unwrap().replicas;
            assert!(
                !r.contains(&2),
                "added partition {p} on down broker 2: {r:?}"
            );
        }
        run(&mut s, create("c", 3, 3), &ctx(2)).unwrap();
        let c = s.topic("c").unwrap();
        assert!((0..3).all(|p| c.assignment(p).unwrap().replicas.contains(&2)));
    }

    /// KIP-631: brokers register, topics get ids, partitions, replicas and fresh Raft groups;
    /// every command bumps the revision (the offset of the record in the metadata log, + 1).
    #[test]
    fn a_topic_lifecycle_moves_the_state_one_revision_per_command() {
        let mut s = three_brokers();
        assert_eq!(s.revision, 3);
        assert_eq!(s.brokers.len(), 3);
        run(&mut s, create("orders", 4, -1), &ctx(1)).unwrap();
        assert_eq!(s.revision, 4);
        let t = s.topic("orders").unwrap().clone();
        assert_eq!((t.partitions, t.revision, t.id), (4, 4, [1; 16]));
        assert_eq!(t.replication_factor(), 3, "default.replication.factor");
        let groups: Vec<u64> = t.assignments.iter().map(|a| a.group).collect();
        assert_eq!(groups, [1, 2, 3, 4]);
        assert_eq!(s.next_group, 5);
        run(
            &mut s,
            Intent::AddPartitions {
                name: "orders".into(),
                total_partitions: 6,
                assignments: None,
            },
            &ctx(0),
        )
        .unwrap();
        let t = s.topic("orders").unwrap();
        assert_eq!((t.partitions, t.revision), (6, 5));
        assert_eq!(t.assignments[5].group, 6);
        assert_eq!(
            s.partition_of_group(6).map(|(t, p)| (t.name.as_str(), p)),
            Some(("orders", 5))
        );
        run(
            &mut s,
            Intent::SetTopicConfig {
                name: "orders".into(),
                change: TopicConfigChange::Incremental(vec![(
                    "retention.ms".into(),
                    Some("5".into()),
                )]),
            },
            &ctx(0),
        )
        .unwrap();
        assert_eq!(
            s.topic("orders").unwrap().config.entries["retention.ms"],
            "5"
        );
        run(
            &mut s,
            Intent::DeleteTopic {
                name: "orders".into(),
            },
            &ctx(0),
        )
        .unwrap();
        assert!(s.topic("orders").is_none());
        assert_eq!(s.revision, 7);
        // Groups are never reused, even after the topic is gone.
        run(&mut s, create("orders", 1, 1), &ctx(2)).unwrap();
        assert_eq!(s.topic("orders").unwrap().assignments[0].group, 7);
    }

    /// KIP-500: replaying the same log gives the same state on every node, including commands
    /// that were refused at apply time (two leaders' proposals for the same topic).
    #[test]
    fn replaying_the_same_commands_gives_identical_states() {
        let base = three_brokers();
        let a = resolve(&base, create("t", 2, 2), &ctx(5)).unwrap().unwrap();
        // An earlier leader resolved the same name against the same state.
        let b = resolve(&base, create("t", 3, 1), &ctx(6)).unwrap().unwrap();
        let log = [a, b];
        let replay = || {
            let mut s = base.clone();
            let outcomes: Vec<_> = log.iter().map(|c| apply(&mut s, c)).collect();
            (s, outcomes)
        };
        let (s1, o1) = replay();
        let (s2, o2) = replay();
        assert_eq!(s1, s2);
        assert_eq!(o1, o2);
        assert!(o1[0].is_ok());
        assert_eq!(o1[1], Err(TopicError::AlreadyExists("t".into())));
        assert_eq!(
            s1.revision,
            base.revision + 2,
            "a refused command still counts"
        );
        assert_eq!(s1.topic("t").unwrap().id, [5; 16]);
    }

    #[test]
    fn intents_get_kafkas_error_codes() {
        let mut s = three_brokers();
        let code_of =
            |s: &MetadataSnapshot, i: Intent| resolve(s, i, &ctx(1)).unwrap_err().kafka_code();
        assert_eq!(
            code_of(&s, create("t", 1, 4)),
            code::INVALID_REPLICATION_FACTOR
        );
        assert_eq!(
            code_of(&s, create("t", 1, 0)),
            code::INVALID_REPLICATION_FACTOR
        );
        assert_eq!(code_of(&s, create("t", 0, 1)), code::INVALID_PARTITIONS);
        assert_eq!(
            code_of(&s, create("a/b", 1, 1)),
            code::INVALID_TOPIC_EXCEPTION
        );
        run(&mut s, create("t", 2, 1), &ctx(1)).unwrap();
        assert_eq!(code_of(&s, create("t", 1, 1)), code::TOPIC_ALREADY_EXISTS);
        assert_eq!(
            code_of(&s, Intent::DeleteTopic { name: "x".into() }),
            code::UNKNOWN_TOPIC_OR_PARTITION
        );
        let grow = |n| Intent::AddPartitions {
            name: "t".into(),
            total_partitions: n,
            assignments: None,
        };
        assert_eq!(code_of(&s, grow(2)), code::INVALID_PARTITIONS);
        let manual = Intent::AddPartitions {
            name: "t".into(),
            total_partitions: 4,
            assignments: Some(vec![vec![0]]),
        };
        assert_eq!(code_of(&s, manual), code::INVALID_REPLICA_ASSIGNMENT);
        let bad_cfg = Intent::SetTopicConfig {
            name: "t".into(),
            change: TopicConfigChange::Replace(vec![("no.such".into(), "1".into())]),
        };
        assert_eq!(code_of(&s, bad_cfg), code::INVALID_CONFIG);
        // No broker registered yet: retriable, not a client error.
        assert_eq!(
            code_of(&initial_snapshot(), create("t", 1, -1)),
            code::REQUEST_TIMED_OUT
        );
    }

    #[test]
    fn manual_assignments_and_the_offsets_topic_cap() {
        let mut s = initial_snapshot();
        apply(&mut s, &Command::RegisterBroker(broker(0))).unwrap();
        // offsets.topic.replication.factor 3 on a one-broker cluster: capped to 1.
        run(&mut s, create(OFFSETS_TOPIC, 2, -1), &ctx(1)).unwrap();
        assert_eq!(s.topic(OFFSETS_TOPIC).unwrap().replication_factor(), 1);
        apply(&mut s, &Command::RegisterBroker(broker(1))).unwrap();
        let m = Intent::CreateTopic {
            name: "m".into(),
            partitions: -1,
            replication_factor: -1,
            configs: vec![],
            assignments: Some(vec![vec![1, 0], vec![0, 1]]),
        };
        run(&mut s, m, &ctx(2)).unwrap();
        let t = s.topic("m").unwrap();
        assert_eq!(t.assignments[0].replicas, vec![1, 0]);
        assert_eq!(t.partitions, 2);
    }

    fn reassign(name: &str, partition: i32, target: Option<Vec<i32>>) -> Intent {
        Intent::AlterReassignment {
            name: name.into(),
            partition,
            target,
        }
    }

    fn complete(group: u64, replicas: Vec<i32>) -> Intent {
        Intent::CompleteReassignment { group, replicas }
    }

    /// KIP-455: a reassignment records its target next to the replicas (adding = target −
    /// replicas, removing = replicas − target) until the partition's leader reports the Raft
    /// configuration reached; bad requests get Kafka's codes.
    #[test]
    fn a_reassignment_is_recorded_then_completed_by_the_leaders_report() {
        let mut s = three_brokers();
        apply(&mut s, &Command::RegisterBroker(broker(3))).unwrap();
        let m = Intent::CreateTopic {
            name: "t".into(),
            partitions: -1,
            replication_factor: -1,
            configs: vec![],
            assignments: Some(vec![vec![0, 1, 2], vec![1, 2, 0]]),
        };
        run(&mut s, m, &ctx(1)).unwrap();
        let code_of =
            |s: &MetadataSnapshot, i: Intent| resolve(s, i, &ctx(1)).unwrap_err().kafka_code();
        assert_eq!(
            code_of(&s, reassign("nope", 0, Some(vec![0]))),
            code::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            code_of(&s, reassign("t", 2, Some(vec![0]))),
            code::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            code_of(&s, reassign("t", 0, Some(vec![]))),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code_of(&s, reassign("t", 0, Some(vec![3, 3, 1]))),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code_of(&s, reassign("t", 0, Some(vec![9, 1, 2]))),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code_of(&s, reassign("t", 0, None)),
            code::NO_REASSIGNMENT_IN_PROGRESS
        );
        run(&mut s, reassign("t", 0, Some(vec![3, 1, 2])), &ctx(1)).unwrap();
        let a = s.topic("t").unwrap().assignments[0].clone();
        assert_eq!(a.replicas, vec![0, 1, 2]);
        assert_eq!(a.target, Some(vec![3, 1, 2]));
        assert_eq!((a.adding(), a.removing()), (vec![3], vec![0]));
        assert_eq!(a.all_replicas(), vec![3, 1, 2, 0]);
        assert!(a.is_holder(3) && a.is_holder(0));
        // A report of another configuration is stale: refused, nothing changes.
        let rev = s.revision;
        let stale = resolve(&s, complete(a.group, vec![0, 1, 2]), &ctx(1))
            .unwrap()
            .unwrap();
        assert!(apply(&mut s, &stale).is_err());
        assert_eq!(s.revision, rev + 1);
        assert_eq!(s.topic("t").unwrap().assignments[0], a);
        run(&mut s, complete(a.group, vec![3, 1, 2]), &ctx(1)).unwrap();
        let a = &s.topic("t").unwrap().assignments[0];
        assert_eq!(
            (a.replicas.clone(), a.target.clone()),
            (vec![3, 1, 2], None)
        );
        assert!(!a.is_holder(0), "the removed replica's broker drops it");
        // The same order again: nothing to do; a new order only: done at once.
        let rev = s.revision;
        run(&mut s, reassign("t", 0, Some(vec![3, 1, 2])), &ctx(1)).unwrap();
        assert_eq!(s.revision, rev);
        run(&mut s, reassign("t", 0, Some(vec![1, 2, 3])), &ctx(1)).unwrap();
        let a = &s.topic("t").unwrap().assignments[0];
        assert_eq!(
            (a.replicas.clone(), a.target.clone()),
            (vec![1, 2, 3], None)
        );
    }

    /// KIP-455 cancellation reverts to the original replicas; brokers the cancelled target
    /// added stay holders (retiring) until the leader reports a configuration without them,
    /// so no replica the Raft group may still count on is deleted early.
    #[test]
    fn a_cancelled_or_replaced_target_keeps_its_brokers_until_the_leader_reports() {
        let mut s = three_brokers();
        apply(&mut s, &Command::RegisterBroker(broker(3))).unwrap();
        apply(&mut s, &Command::RegisterBroker(broker(4))).unwrap();
        let m = Intent::CreateTopic {
            name: "t".into(),
            partitions: -1,
            replication_factor: -1,
            configs: vec![],
            assignments: Some(vec![vec![0, 1, 2]]),
        };
        run(&mut s, m, &ctx(1)).unwrap();
        let group = s.topic("t").unwrap().assignments[0].group;
        run(&mut s, reassign("t", 0, Some(vec![3, 4, 2])), &ctx(1)).unwrap();
        // Replaced by another target: 4 is no longer wanted but may be a Raft member.
        run(&mut s, reassign("t", 0, Some(vec![3, 1, 2])), &ctx(1)).unwrap();
        let a = s.topic("t").unwrap().assignments[0].clone();
        assert_eq!(a.target, Some(vec![3, 1, 2]));
        assert_eq!(a.retiring, vec![4]);
        assert!(a.is_holder(4));
        run(&mut s, reassign("t", 0, None), &ctx(1)).unwrap();
        let a = s.topic("t").unwrap().assignments[0].clone();
        assert_eq!(
            (a.replicas.clone(), a.target.clone()),
            (vec![0, 1, 2], None)
        );
        assert_eq!(a.retiring, vec![4, 3]);
        assert_eq!(a.holders(), vec![0, 1, 2, 4, 3]);
        // The leader reports the original configuration: the retiring brokers drop it.
        run(&mut s, complete(group, vec![2, 1, 0]), &ctx(1)).unwrap();
        let a = &s.topic("t").unwrap().assignments[0];
        assert!(a.retiring.is_empty());
        assert_eq!(a.holders(), vec![0, 1, 2]);
        // Repeated reports change nothing.
        let rev = s.revision;
        run(&mut s, complete(group, vec![0, 1, 2]), &ctx(1)).unwrap();
        assert_eq!(s.revision, rev);
    }

    /// Apply re-checks what the leader checked: a command naming an unregistered broker or a
    /// used group changes nothing but the revision.
    #[test]
    fn apply_refuses_stale_or_inconsistent_commands() {
        let mut s = three_brokers();
        run(&mut s, create("t", 1, 1), &ctx(1)).unwrap();
        let rev = s.revision;
        let reused = Command::CreateTopic {
            name: "u".into(),
            id: [2; 16],
            config: Default::default(),
            assignments: vec![PartitionAssignment::new(1, vec![0])],
        };
        assert_eq!(
            apply(&mut s, &reused).unwrap_err().kafka_code(),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        let unknown_broker = Command::CreateTopic {
            name: "u".into(),
            id: [2; 16],
            config: Default::default(),
            assignments: vec![PartitionAssignment::new(9, vec![8])],
        };
        assert!(apply(&mut s, &unknown_broker).is_err());
        let wrong_incarnation = Command::DeleteTopic {
            name: "t".into(),
            id: [7; 16],
        };
        assert!(apply(&mut s, &wrong_incarnation).is_err());
        assert!(s.topic("t").is_some());
        assert!(s.topic("u").is_none());
        assert_eq!(s.revision, rev + 3);
        assert_eq!(s.next_group, 2);
    }
}
