//! The metadata the reassignment handlers' tests (AlterPartitionReassignments,
//! ListPartitionReassignments; KIP-455) start from. Test-only plain values.

use freshet_engine::metadata::{BrokerInfo, MetadataSnapshot, PartitionAssignment, TopicMeta};
use freshet_engine::TopicConfig;

/// Brokers 0..=3; topic "t" with two partitions on replicas [0, 1, 2]: partition 0 idle
/// (group 1), partition 1 (group 2) being moved to the target [3, 1, 2].
pub(super) fn snapshot_with_one_partition_moving() -> MetadataSnapshot {
    let mut s = MetadataSnapshot::default();
    for id in 0..4 {
        s.brokers.insert(
            id,
            BrokerInfo {
                id,
                host: "h".into(),
                port: 9092,
                rpc_addr: "h:1".into(),
                rack: None,
            },
        );
    }
    let mut moving = PartitionAssignment::new(2, vec![0, 1, 2]);
    moving.target = Some(vec![3, 1, 2]);
    s.topics.insert(
        "t".into(),
        TopicMeta {
            name: "t".into(),
            id: [1; 16],
            partitions: 2,
            config: TopicConfig::default(),
            revision: 1,
            assignments: vec![PartitionAssignment::new(1, vec![0, 1, 2]), moving],
        },
    );
    s
}
