//! Checks of the replica placement a client asks for (CreateTopics replication_factor and
//! replica_assignment, CreatePartitions assignments), with Kafka's codes and messages (KRaft
//! `ReplicationControlManager`): INVALID_REPLICATION_FACTOR (38), INVALID_REPLICA_ASSIGNMENT
//! (39). Pure functions over the broker ids clients can see (`ClusterView::broker_ids`); the
//! controller places replicas itself when none are given. Run on the connection's core.

use freshet_engine::code;

/// An error code with Kafka's message.
pub(crate) type CheckError = (i16, String);

/// A requested replication factor: -1 (the broker default) or 1..=`brokers`.
pub(crate) fn check_replication_factor(rf: i16, brokers: usize) -> Result<(), CheckError> {
    if rf == -1 {
        return Ok(());
    }
    if rf <= 0 {
        return Err((
            code::INVALID_REPLICATION_FACTOR,
            format!(
                "Replication factor must be larger than 0, or -1 to use the default value (got {rf})."
            ),
        ));
    }
    if rf as usize > brokers {
        return Err((
            code::INVALID_REPLICATION_FACTOR,
            format!(
                "Unable to replicate the partition {rf} time(s): The target replication factor \
                 of {rf} cannot be reached because only {brokers} broker(s) are registered."
            ),
        ));
    }
    Ok(())
}

/// The replication factor a topic gets for a request's `rf` (-1: `default_rf`, capped at the
/// broker count, at least 1) — what CreateTopics v5+ answers for `validate_only`.
pub(crate) fn effective_replication_factor(rf: i16, default_rf: i16, brokers: usize) -> i16 {
    if rf != -1 {
        return rf;
    }
    let brokers = i16::try_from(brokers).unwrap_or(i16::MAX);
    default_rf.clamp(1, brokers.max(1))
}

/// One partition's manual replica list: not empty, each broker registered and named once, and
/// (when `expected_rf` is given) as long as the other partitions' lists.
pub(crate) fn check_replica_list(
    partition: i32,
    replicas: &[i32],
    brokers: &[i32],
    expected_rf: Option<usize>,
) -> Result<(), CheckError> {
    let bad = |msg: String| Err((code::INVALID_REPLICA_ASSIGNMENT, msg));
    if replicas.is_empty() {
        return bad(format!(
            "The manual partition assignment of partition {partition} includes an empty replica list."
        ));
    }
    for (i, b) in replicas.iter().enumerate() {
        if !brokers.contains(b) {
            return bad(format!(
                "The manual partition assignment of partition {partition} includes broker {b}, \
                 but no such broker is registered."
            ));
        }
        if replicas[..i].contains(b) {
            return bad(format!(
                "The manual partition assignment of partition {partition} includes the broker \
                 {b} more than once."
            ));
        }
    }
    if let Some(rf) = expected_rf {
        if replicas.len() != rf {
            return bad(format!(
                "The manual partition assignment of partition {partition} includes {} \
                 replica(s), but this is not consistent with previous partitions, which have \
                 {rf} replica(s).",
                replicas.len()
            ));
        }
    }
    Ok(())
}

/// A whole manual assignment of a new topic, `(partition index, replicas)` in request order:
/// partitions numbered 0..n-1 once each, every list valid and of one length. Ok is the
/// per-partition replica lists in partition order.
pub(crate) fn check_topic_assignment(
    entries: &[(i32, Vec<i32>)],
    brokers: &[i32],
) -> Result<Vec<Vec<i32>>, CheckError> {
    let mut sorted: Vec<&(i32, Vec<i32>)> = entries.iter().collect();
    sorted.sort_by_key(|(p, _)| *p);
    if sorted.iter().enumerate().any(|(i, (p, _))| *p != i as i32) {
        return Err((
            code::INVALID_REPLICA_ASSIGNMENT,
            "Partitions must be numbered consecutively from 0, each once.".to_string(),
        ));
    }
    let rf = sorted.first().map(|(_, r)| r.len());
    let mut out = Vec::with_capacity(sorted.len());
    for (p, replicas) in sorted {
        check_replica_list(*p, replicas, brokers, rf)?;
        out.push(replicas.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKERS: &[i32] = &[0, 1, 2];

    fn code_of<T>(r: Result<T, CheckError>) -> i16 {
        r.map(|_| code::NONE).unwrap_or_else(|(c, _)| c)
    }

    /// KIP-4 / KRaft: RF -1 is the default, 1..=brokers places, anything else is
    /// INVALID_REPLICATION_FACTOR with a message naming the registered broker count.
    #[test]
    fn replication_factor_must_fit_the_registered_brokers() {
        assert_eq!(code_of(check_replication_factor(-1, 1)), code::NONE);
        assert_eq!(code_of(check_replication_factor(1, 1)), code::NONE);
        assert_eq!(code_of(check_replication_factor(3, 3)), code::NONE);
        assert_eq!(
            code_of(check_replication_factor(0, 3)),
            code::INVALID_REPLICATION_FACTOR
        );
        assert_eq!(
            code_of(check_replication_factor(-2, 3)),
            code::INVALID_REPLICATION_FACTOR
        );
        let (c, msg) = check_replication_factor(4, 3).unwrap_err();
        assert_eq!(c, code::INVALID_REPLICATION_FACTOR);
        assert!(msg.contains("only 3 broker(s)"), "{msg}");
        assert_eq!(
            code_of(check_replication_factor(2, 1)),
            code::INVALID_REPLICATION_FACTOR
        );
    }

    #[test]
    fn the_default_replication_factor_is_capped_at_the_broker_count() {
        assert_eq!(effective_replication_factor(-1, 3, 3), 3);
        assert_eq!(effective_replication_factor(-1, 3, 1), 1);
        assert_eq!(effective_replication_factor(-1, 1, 3), 1);
        assert_eq!(effective_replication_factor(-1, -1, 3), 1);
        assert_eq!(effective_replication_factor(2, 3, 3), 2);
    }

    /// INVALID_REPLICA_ASSIGNMENT: empty lists, unknown brokers, a broker twice, lists of
    /// differing lengths, and partitions not numbered 0..n-1.
    #[test]
    fn manual_assignments_name_registered_brokers_once_with_one_length() {
        let a = |entries: &[(i32, &[i32])]| {
            let e: Vec<(i32, Vec<i32>)> = entries.iter().map(|(p, r)| (*p, r.to_vec())).collect();
            check_topic_assignment(&e, BROKERS)
        };
        assert_eq!(
            a(&[(1, &[2, 0]), (0, &[1, 2])]),
            Ok(vec![vec![1, 2], vec![2, 0]]),
            "request order does not matter; replicas keep theirs (preferred leader first)"
        );
        assert_eq!(code_of(a(&[(0, &[])])), code::INVALID_REPLICA_ASSIGNMENT);
        assert_eq!(code_of(a(&[(0, &[3])])), code::INVALID_REPLICA_ASSIGNMENT);
        assert_eq!(
            code_of(a(&[(0, &[1, 1])])),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code_of(a(&[(0, &[0, 1]), (1, &[2])])),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code_of(a(&[(0, &[0]), (2, &[1])])),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code_of(a(&[(0, &[0]), (0, &[1])])),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        let (_, msg) = a(&[(0, &[7])]).unwrap_err();
        assert!(msg.contains("broker 7"), "{msg}");
    }

    #[test]
    fn one_replica_list_is_checked_against_the_expected_length() {
        assert_eq!(
            code_of(check_replica_list(4, &[2, 1], BROKERS, Some(2))),
            code::NONE
        );
        assert_eq!(
            code_of(check_replica_list(4, &[2], BROKERS, Some(2))),
            code::INVALID_REPLICA_ASSIGNMENT
        );
        assert_eq!(
            code_of(check_replica_list(4, &[2], BROKERS, None)),
            code::NONE
        );
    }
}
