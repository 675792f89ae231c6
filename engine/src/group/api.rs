//! Requests, responses and effects of the group coordinator, independent of wire versions.
//!
//! The net handlers translate each Kafka API version to and from these types. All of them
//! are plain `Send` data, so they can cross cores inside mesh messages.

use bytes::Bytes;

/// Identifies one parked JoinGroup/SyncGroup request. Allocated by the driver, which maps
/// it to the response channel of the connection that sent the request.
pub type WaiterId = u64;

/// JoinGroup, every version (v0–v9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member that has no id yet.
    pub member_id: String,
    /// `group.instance.id` (KIP-345, v5+).
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// v1+ (KIP-62); v0 uses the session timeout.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: an unknown member must first obtain its id (KIP-394).
    pub require_known_member_id: bool,
    /// v9+: the leader may be told to skip assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

/// One member as the JoinGroup leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error_code: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// Non-empty only for the leader.
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    /// An error answer carrying `member_id` (set for MEMBER_ID_REQUIRED, KIP-394).
    pub fn error(error_code: i16, member_id: String) -> Self {
        JoinResponse {
            error_code,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id,
            members: Vec::new(),
        }
    }
}

/// SyncGroup, every version (v0–v5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// v5+: checked against the group when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's (member id, assignment) pairs; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error_code: i16) -> Self {
        SyncResponse {
            error_code,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// Heartbeat, every version (v0–v4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// One member leaving (LeaveGroup v3+ batches them, KIP-345; v0–v2 send one member id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// Per-member LeaveGroup result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResult {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error_code: i16,
}

/// One partition's offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// OffsetCommit (v2–v9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRequest {
    pub group_id: String,
    /// -1 for commits from outside the group protocol (simple consumers, admin tools).
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub partitions: Vec<CommitPartition>,
}

/// The value of one committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// Offsets validated by [`crate::group::GroupCoordinator::prepare_commit`], to be
/// appended to the log and then applied with `apply_commit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedCommit {
    pub group_id: String,
    pub offsets_partition: i32,
    /// Leader epoch the offsets partition was served in when the commit was validated;
    /// `apply_commit` only applies it if the partition is still served in that epoch.
    pub epoch: i32,
    /// Partitions accepted, with their new value.
    pub accepted: Vec<(String, i32, CommittedOffset)>,
    /// Records to append to `__consumer_offsets` (one per accepted partition).
    pub records: Vec<OffsetsRecord>,
    /// (topic, partition, error code) for every requested partition, in request order.
    pub results: Vec<(String, i32, i16)>,
}

/// One fetched offset (-1 and empty metadata when nothing is committed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub error_code: i16,
}

/// One group in ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
}

/// One member in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the selected protocol (its subscription).
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// One group in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    pub error_code: i16,
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<DescribedMember>,
}

/// One record of `__consumer_offsets` (key and value encoded with Kafka's schemas, see
/// `records.rs`; `value: None` is a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetsRecord {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// Something the driver must do on behalf of the coordinator, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Answer a parked JoinGroup.
    Join {
        waiter: WaiterId,
        response: JoinResponse,
    },
    /// Answer a parked SyncGroup.
    Sync {
        waiter: WaiterId,
        response: SyncResponse,
    },
    /// Append to `__consumer_offsets` partition `partition`; answers emitted after this
    /// effect should be sent once the append is durable.
    ///
    /// `epoch` is the leader epoch the partition was served in when the records were
    /// produced: the driver appends only while the partition is still served in that epoch
    /// (after a leadership change the state the records describe is gone) and otherwise
    /// treats the append as failed with NOT_COORDINATOR.
    Persist {
        partition: i32,
        epoch: i32,
        records: Vec<OffsetsRecord>,
    },
}
