//! Group coordinator settings (Kafka's `group.*` and `offsets.*` broker configs).
//!
//! Built once from the broker config and cloned into each core's coordinator.

/// Limits and timeouts of the group coordinator. Plain data, `Clone + Send`; each core
/// holds its own copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms` (KIP-134): how long the first rebalance of an
    /// empty group waits for more members, extended by this much per new member up to the
    /// rebalance timeout. Kafka default 3000.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms` (Kafka default 6000).
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms` (Kafka default 1800000).
    pub max_session_timeout_ms: i32,
    /// `group.max.size` (Kafka default `i32::MAX`).
    pub max_group_size: usize,
    /// `offsets.retention.minutes` in ms (Kafka default 7 days).
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms` (Kafka default 600000).
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes` (Kafka default 4096).
    pub offset_metadata_max_bytes: usize,
    /// `offsets.topic.num.partitions`. Kafka's default is 50; Freshet defaults to 16 since
    /// each partition costs a log per core on small machines. Must not change once groups
    /// exist (it decides where every group lives).
    pub offsets_topic_num_partitions: i32,
    /// `offsets.commit.timeout.ms` (Kafka default 5000): how long an append to
    /// `__consumer_offsets` (an offset commit or a group record) may wait for a majority of
    /// the partition's replicas before the request fails with COORDINATOR_NOT_AVAILABLE (the
    /// records may still commit later; the client retries).
    pub offsets_commit_timeout_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_group_size: i32::MAX as usize,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            offsets_topic_num_partitions: 16,
            offsets_commit_timeout_ms: 5000,
        }
    }
}
