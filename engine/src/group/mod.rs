//! Kafka's classic group coordinator (consumer groups), as a pure state machine.
//!
//! Ownership: one [`GroupCoordinator`] per core, `!Send` by use (it is plain data, but it
//! is only ever touched by the core that owns the `__consumer_offsets` partitions it
//! serves). Requests for a group arriving on another core are forwarded over the mesh to
//! the core owning `partition_for_group(group_id)` (see `docs/design/groups.md`).
//!
//! No I/O and no clock in here: every entry point takes `now_ms`, delayed answers
//! (JoinGroup, SyncGroup) and log appends come back as [`Effect`]s, and timers are a
//! deterministic wheel polled with [`GroupCoordinator::tick`]. The driver on each core owns
//! the real clock, the waiters (response channels) and the offsets-partition logs.
//!
//! Protocol references: KIP-62 (rebalance timeout separate from session timeout), KIP-134
//! (initial rebalance delay), KIP-211 (offset expiry after the group becomes empty),
//! KIP-345 (static membership), KIP-394 (member id required), KIP-496 (OffsetDelete),
//! KIP-709 (batched OffsetFetch), KIP-699 (batched FindCoordinator), KIP-814 (skip
//! assignment for a static leader that rejoins).

pub mod api;
pub mod call;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod records;
pub mod service;
pub mod state;
pub mod timer;
pub mod wire;

#[cfg(test)]
mod tests;

pub use api::*;
pub use call::{GroupCall, GroupReply, GroupRouter};
pub use config::GroupConfig;
pub use coordinator::{GroupCoordinator, LeadershipAction, EPOCH_UNKNOWN};
pub use error::{GroupError, RecordError};
pub use service::{GroupService, OffsetsLog};
pub use state::GroupState;

/// The internal topic holding group metadata and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode()`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units,
/// wrapping in 32 bits. Kafka places a group with it, so we do too.
pub fn java_string_hashcode(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition of a group, exactly as Kafka computes it:
/// `Utils.abs(groupId.hashCode) % offsets.topic.num.partitions`, where `Utils.abs`
/// maps `i32::MIN` to 0.
pub fn partition_for_group(group_id: &str, offsets_topic_num_partitions: i32) -> i32 {
    assert!(
        offsets_topic_num_partitions > 0,
        "offsets.topic.num.partitions must be positive, got {offsets_topic_num_partitions}"
    );
    let h = java_string_hashcode(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % offsets_topic_num_partitions
}
