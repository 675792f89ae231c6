//! Replica placement: which brokers hold each partition of a new topic or of new partitions.
//!
//! Rack-unaware round-robin as in Kafka's `assignReplicasToBrokers` (KIP-36 describes the
//! rack-aware variant of the same scheme): partition `p`'s first replica (its preferred leader)
//! is broker `(p + start) mod n` of the sorted broker list, so preferred leaders are spread
//! evenly; the other replicas follow at a per-topic shift that grows by one every `n`
//! partitions, so followers of one leader are spread too. `start` and the shift come from the
//! topic id (random per topic), so topics do not all put partition 0 on the same broker.
//!
//! Ownership: pure functions; run on the controller leader (core 0).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::TopicError;
use crate::metadata::{BrokerInfo, PartitionAssignment, TopicId};

/// The replica count a CreateTopics request gets: `requested` (≥ 1), or with −1 the broker
/// default capped at the number of registered brokers. KIP-464: −1 means "use the broker's
/// `default.replication.factor`". More replicas than brokers is INVALID_REPLICATION_FACTOR (38).
pub fn resolve_replication_factor(
    requested: i16,
    default: i16,
    brokers: usize,
) -> Result<usize, TopicError> {
    if brokers == 0 {
        return Err(TopicError::ControllerUnavailable(
            "no broker is registered with the controller yet".into(),
        ));
    }
    let rf = match requested {
        -1 => (default.max(1) as usize).min(brokers),
        r if r < 1 => {
            return Err(TopicError::InvalidReplicationFactor(
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ))
        }
        r => r as usize,
    };
    if rf > brokers {
        return Err(TopicError::InvalidReplicationFactor(format!(
            "Unable to replicate the partition {rf} time(s): The target replication factor of \
             {rf} cannot be reached because only {brokers} broker(s) are registered."
        )));
    }
    Ok(rf)
}

/// The replication factor of `__consumer_offsets`: `offsets.topic.replication.factor`, capped at
/// the registered brokers (so a small cluster still gets its offsets topic).
pub fn offsets_topic_replication_factor(configured: i16, brokers: usize) -> i16 {
    (configured.max(1) as usize).min(brokers.max(1)) as i16
}

/// The per-topic (start index, replica shift) drawn from the topic id's random bytes.
pub fn starts_of(id: &TopicId, brokers: usize) -> (usize, usize) {
    assert!(brokers > 0, "placement needs at least one broker");
    let a = u64::from_le_bytes(id[0..8].try_into().expect("8 bytes"));
    let b = u64::from_le_bytes(id[8..16].try_into().expect("8 bytes"));
    ((a % brokers as u64) as usize, (b % brokers as u64) as usize)
}

/// Round-robin assignments for partitions `first_partition .. first_partition + count` over
/// `brokers` (sorted, distinct), Raft groups numbered from `first_group`.
pub fn assign_replicas(
    brokers: &[i32],
    first_partition: i32,
    count: i32,
    rf: usize,
    first_group: u64,
    start_index: usize,
    shift: usize,
) -> Vec<PartitionAssignment> {
    let n = brokers.len();
    assert!(n > 0, "placement needs at least one broker");
    assert!(
        (1..=n).contains(&rf),
        "replication factor {rf} not in 1..={n}"
    );
    assert!(
        first_partition >= 0,
        "first partition {first_partition} < 0"
    );
    let mut out = Vec::with_capacity(count.max(0) as usize);
    for i in 0..count.max(0) {
        let p = (first_partition + i) as usize;
        // The follower shift grows by one per full round of partitions (Kafka bumps it
        // whenever the partition id is a non-zero multiple of n).
        let shift = shift + p / n;
        let first = (p + start_index) % n;
        let mut replicas = Vec::with_capacity(rf);
        replicas.push(brokers[first]);
        for j in 0..rf - 1 {
            let idx = (first + 1 + (shift + j) % (n - 1)) % n;
            replicas.push(brokers[idx]);
        }
        out.push(PartitionAssignment::new(first_group + i as u64, replicas));
    }
    out
}

/// Checks manual replica lists (CreateTopics `assignments`, CreatePartitions `assignments`):
/// each non-empty, no broker twice, every broker registered, all of one length (`expected_rf`
/// when given). Groups are numbered from `first_group`. Errors are
/// INVALID_REPLICA_ASSIGNMENT (39).
pub fn validate_manual(
    brokers: &BTreeMap<i32, BrokerInfo>,
    manual: &[Vec<i32>],
    expected_rf: Option<usize>,
    first_group: u64,
) -> Result<Vec<PartitionAssignment>, TopicError> {
    let bad = |m: String| Err(TopicError::InvalidReplicaAssignment(m));
    let rf = match expected_rf.or_else(|| manual.first().map(Vec::len)) {
        Some(rf) => rf,
        None => return bad("no partitions given".into()),
    };
    for (i, replicas) in manual.iter().enumerate() {
        if replicas.is_empty() {
            return bad(format!("partition {i} has an empty replica list"));
        }
        if replicas.len() != rf {
            return bad(format!(
                "Inconsistent replication factor: partition {i} has {} replicas, expected {rf}",
                replicas.len()
            ));
        }
        let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
        if distinct.len() != replicas.len() {
            return bad(format!("partition {i} lists a broker twice: {replicas:?}"));
        }
        if let Some(b) = replicas.iter().find(|b| !brokers.contains_key(b)) {
            return bad(format!("partition {i} names unknown broker {b}"));
        }
    }
    Ok(manual
        .iter()
        .enumerate()
        .map(|(i, r)| PartitionAssignment::new(first_group + i as u64, r.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code;

    fn count_by<F: Fn(&PartitionAssignment) -> Vec<i32>>(
        a: &[PartitionAssignment],
        f: F,
    ) -> BTreeMap<i32, usize> {
        let mut m = BTreeMap::new();
        for p in a {
            for b in f(p) {
                *m.entry(b).or_default() += 1;
            }
        }
        m
    }

    /// KIP-464 (−1 = broker default) and Kafka's INVALID_REPLICATION_FACTOR (38) when the
    /// factor exceeds the registered brokers.
    #[test]
    fn replication_factor_defaults_and_limits() {
        assert_eq!(resolve_replication_factor(-1, 3, 5).unwrap(), 3);
        assert_eq!(
            resolve_replication_factor(-1, 3, 2).unwrap(),
            2,
            "default capped at brokers"
        );
        assert_eq!(resolve_replication_factor(2, 1, 3).unwrap(), 2);
        for bad in [4, 0, -2] {
            assert_eq!(
                resolve_replication_factor(bad, 1, 3)
                    .unwrap_err()
                    .kafka_code(),
                code::INVALID_REPLICATION_FACTOR,
                "rf {bad}"
            );
        }
        assert_eq!(offsets_topic_replication_factor(3, 1), 1);
        assert_eq!(offsets_topic_replication_factor(3, 5), 3);
    }

    /// Round-robin placement: every partition has `rf` distinct replicas, preferred leaders are
    /// spread evenly and so are all replicas (each broker holds the same share).
    #[test]
    fn round_robin_spreads_leaders_and_replicas_evenly() {
        let brokers = [0, 1, 2, 3, 4];
        for start in 0..5 {
            for shift in 0..5 {
                let a = assign_replicas(&brokers, 0, 10, 3, 1, start, shift);
                assert_eq!(a.len(), 10);
                for (i, p) in a.iter().enumerate() {
                    assert_eq!(p.group, 1 + i as u64, "groups numbered in order");
                    let d: BTreeSet<_> = p.replicas.iter().collect();
                    assert_eq!(d.len(), 3, "distinct replicas {:?}", p.replicas);
                }
                let leaders = count_by(&a, |p| vec![p.replicas[0]]);
                assert!(leaders.values().all(|c| *c == 2), "{leaders:?}");
                let all = count_by(&a, |p| p.replicas.clone());
                assert!(all.values().all(|c| *c == 6), "{all:?}");
            }
        }
    }

    #[test]
    fn topics_with_different_ids_start_on_different_brokers() {
        let brokers = [0, 1, 2];
        let firsts: BTreeSet<i32> = (0u8..32)
            .map(|i| {
                let mut id = [0u8; 16];
                id[0] = i.wrapping_mul(37);
                id[9] = i;
                let (s, sh) = starts_of(&id, 3);
                assign_replicas(&brokers, 0, 1, 1, 1, s, sh)[0].replicas[0]
            })
            .collect();
        assert_eq!(firsts.len(), 3, "partition 0's leader varies per topic");
    }

    /// Added partitions continue the round-robin where the existing ones stopped (Kafka's
    /// CreatePartitions, KIP-195), so leaders stay spread.
    #[test]
    fn added_partitions_continue_the_rotation() {
        let brokers = [0, 1, 2];
        let whole = assign_replicas(&brokers, 0, 9, 2, 1, 1, 2);
        let head = assign_replicas(&brokers, 0, 4, 2, 1, 1, 2);
        let tail = assign_replicas(&brokers, 4, 5, 2, 5, 1, 2);
        let joined: Vec<_> = head.into_iter().chain(tail).collect();
        assert_eq!(joined, whole);
    }

    #[test]
    fn a_single_broker_gets_every_replica() {
        let a = assign_replicas(&[7], 0, 3, 1, 10, 0, 0);
        assert!(a.iter().all(|p| p.replicas == vec![7]));
        assert_eq!(a.iter().map(|p| p.group).collect::<Vec<_>>(), [10, 11, 12]);
    }

    /// CreateTopics manual assignments (KIP-4): INVALID_REPLICA_ASSIGNMENT (39) for unknown
    /// brokers, duplicates, empty or inconsistent lists.
    #[test]
    fn manual_assignments_are_validated() {
        let brokers: BTreeMap<i32, BrokerInfo> = (0..3)
            .map(|id| {
                (
                    id,
                    BrokerInfo {
                        id,
                        host: "h".into(),
                        port: 1,
                        rpc_addr: "r".into(),
                        rack: None,
                    },
                )
            })
            .collect();
        let ok = validate_manual(&brokers, &[vec![2, 0], vec![0, 1]], None, 5).unwrap();
        assert_eq!(ok[1].group, 6);
        assert_eq!(ok[0].replicas, vec![2, 0]);
        for bad in [
            vec![vec![0, 9]],
            vec![vec![1, 1]],
            vec![vec![]],
            vec![vec![0, 1], vec![2]],
            vec![],
        ] {
            assert_eq!(
                validate_manual(&brokers, &bad, None, 1)
                    .unwrap_err()
                    .kafka_code(),
                code::INVALID_REPLICA_ASSIGNMENT,
                "{bad:?}"
            );
        }
        assert!(validate_manual(&brokers, &[vec![0]], Some(2), 1).is_err());
    }
}
