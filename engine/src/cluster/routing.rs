//! Inbound Raft envelopes → the cores owning their groups.
//!
//! A peer sends one envelope per pass to this node; it lands on whichever core accepted the
//! connection (SO_REUSEPORT) and holds messages of groups owned by any core. The receiving
//! core splits it per owning core ([`split_envelope`]) using a [`RouteTable`] built from the
//! metadata snapshot: group 0 (the controller) → core 0; a partition group → the core the
//! `ShardTable` gives its (topic, partition), if this node holds a replica. Messages of
//! unknown groups are dropped (Raft retransmits once the metadata catches up).
//!
//! Ownership: `RouteTable` is per core (rebuilt when that core's metadata revision moves);
//! the split envelopes are `Send` and cross cores in mesh calls.

use std::collections::HashMap;

use freshet_raft::transport::{Envelope, GroupId};

use crate::metadata::{MetadataSnapshot, CONTROLLER_GROUP};
use crate::shard_table::ShardTable;

/// Group → owning core on this node, for one metadata revision. Per core.
#[derive(Debug, Default)]
pub struct RouteTable {
    revision: Option<u64>,
    cores: HashMap<GroupId, usize>,
}

impl RouteTable {
    /// Routes of `broker`'s replicas in `snap`.
    pub fn build(snap: &MetadataSnapshot, table: ShardTable, broker: i32) -> Self {
        let mut cores = HashMap::new();
        cores.insert(CONTROLLER_GROUP, 0);
        for t in snap.topics.values() {
            for (i, a) in t.assignments.iter().enumerate() {
                if a.is_holder(broker) {
                    cores.insert(a.group, table.core_of(&t.name, i as i32));
                }
            }
        }
        RouteTable {
            revision: Some(snap.revision),
            cores,
        }
    }

    /// The revision this table was built from.
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// The core owning `group` on this node.
    pub fn core_of(&self, group: GroupId) -> Option<usize> {
        self.cores.get(&group).copied()
    }
}

/// Splits `env` into one envelope per owning core (ascending by core), keeping the order of
/// messages within each. Returns the parts and the number of messages and beats dropped
/// because `core_of` knows no owner.
pub fn split_envelope(
    env: Envelope,
    core_of: impl Fn(GroupId) -> Option<usize>,
) -> (Vec<(usize, Envelope)>, usize) {
    let (from, to) = (env.from, env.to);
    let mut parts: Vec<(usize, Envelope)> = Vec::new();
    let mut dropped = 0;
    fn part(parts: &mut Vec<(usize, Envelope)>, core: usize, from: u64, to: u64) -> &mut Envelope {
        let i = match parts.iter().position(|(c, _)| *c == core) {
            Some(i) => i,
            None => {
                parts.push((core, Envelope::new(from, to)));
                parts.len() - 1
            }
        };
        &mut parts[i].1
    }
    for (g, m) in env.messages {
        match core_of(g) {
            Some(c) => part(&mut parts, c, from, to).messages.push((g, m)),
            None => dropped += 1,
        }
    }
    for b in env.heartbeats {
        match core_of(b.group) {
            Some(c) => part(&mut parts, c, from, to).heartbeats.push(b),
            None => dropped += 1,
        }
    }
    for b in env.heartbeat_responses {
        match core_of(b.group) {
            Some(c) => part(&mut parts, c, from, to).heartbeat_responses.push(b),
            None => dropped += 1,
        }
    }
    parts.sort_by_key(|(c, _)| *c);
    (parts, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{PartitionAssignment, TopicMeta};
    use bytes::Bytes;
    use freshet_raft::transport::Beat;

    fn beat(group: u64) -> Beat {
        Beat {
            group,
            term: 1,
            commit: 0,
            context: Bytes::new(),
        }
    }

    /// Adds a message of `group` with Raft index `index` (the type is irrelevant to routing).
    fn push(env: &mut Envelope, group: u64, index: u64) {
        env.messages.push((group, Default::default()));
        let m = &mut env.messages.last_mut().expect("just pushed").1;
        (m.from, m.to, m.index) = (2, 1, index);
    }

    #[test]
    fn an_envelope_splits_per_owning_core_in_order_and_unknown_groups_drop() {
        let mut env = Envelope::new(2, 1);
        for (g, i) in [(10, 1), (11, 5), (10, 2), (99, 1)] {
            push(&mut env, g, i);
        }
        env.heartbeats = vec![beat(0), beat(11), beat(98)];
        env.heartbeat_responses = vec![beat(10)];
        let owner = |g: u64| match g {
            0 => Some(0),
            10 => Some(1),
            11 => Some(0),
            _ => None,
        };
        let (parts, dropped) = split_envelope(env, owner);
        assert_eq!(dropped, 2);
        assert_eq!(parts.len(), 2);
        let (c0, e0) = &parts[0];
        let (c1, e1) = &parts[1];
        assert_eq!((*c0, *c1), (0, 1));
        assert!(parts.iter().all(|(_, e)| (e.from, e.to) == (2, 1)));
        assert_eq!(
            e1.messages
                .iter()
                .map(|(g, m)| (*g, m.index))
                .collect::<Vec<_>>(),
            vec![(10, 1), (10, 2)],
            "per-group order is kept (Raft tolerates reordering, but appends should not need it)"
        );
        assert_eq!(e0.messages.len(), 1);
        assert_eq!(
            e0.heartbeats.iter().map(|b| b.group).collect::<Vec<_>>(),
            vec![0, 11]
        );
        assert_eq!(e1.heartbeat_responses[0].group, 10);
    }

    #[test]
    fn routes_cover_the_controller_and_only_this_brokers_replicas() {
        let mut snap = MetadataSnapshot {
            revision: 4,
            ..Default::default()
        };
        snap.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id: [0; 16],
                partitions: 3,
                config: Default::default(),
                revision: 4,
                assignments: vec![
                    PartitionAssignment::new(1, vec![0, 1]),
                    PartitionAssignment::new(2, vec![1, 2]),
                    PartitionAssignment::new(3, vec![2, 0]),
                ],
            },
        );
        let table = ShardTable::new(2);
        let r = RouteTable::build(&snap, table, 0);
        assert_eq!(r.revision(), Some(4));
        assert_eq!(r.core_of(0), Some(0));
        assert_eq!(r.core_of(1), Some(table.core_of("t", 0)));
        assert_eq!(r.core_of(2), None, "broker 0 holds no replica of group 2");
        assert_eq!(r.core_of(3), Some(table.core_of("t", 2)));
    }
}
