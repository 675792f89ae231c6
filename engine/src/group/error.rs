//! Errors of the group coordinator, each mapped to the Kafka error code clients expect.

use thiserror::Error;

/// Kafka error codes used by the group APIs (values from Kafka's `Errors` enum).
pub mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
    pub const INVALID_REQUEST: i16 = 42;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
}

/// Kafka's mapping of a failed `__consumer_offsets` append (its error code) to the error a
/// group client gets (`GroupMetadataManager.storeOffsets`): the coordinator moved or its log
/// failed → NOT_COORDINATOR (find it again); no quorum or timeout → COORDINATOR_NOT_AVAILABLE
/// (retry); too large → INVALID_COMMIT_OFFSET_SIZE.
pub fn from_append_code(append_code: i16) -> GroupError {
    match append_code {
        // NOT_LEADER_OR_FOLLOWER, KAFKA_STORAGE_ERROR
        6 | 56 => GroupError::NotCoordinator,
        // MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE, INVALID_FETCH_SIZE
        10 | 18 | 4 => GroupError::InvalidCommitOffsetSize,
        // UNKNOWN_TOPIC_OR_PARTITION, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS(_AFTER_APPEND), and
        // anything unexpected: retriable.
        _ => GroupError::CoordinatorNotAvailable,
    }
}

/// Why a group request was refused. Every variant has a Kafka error code ([`Self::code`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GroupError {
    #[error("this core/broker does not coordinate the group")]
    NotCoordinator,
    #[error("the group's offsets partition is still loading")]
    LoadInProgress,
    #[error("the group is being removed or migrated")]
    CoordinatorNotAvailable,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    #[error("group.instance.id is fenced by a newer member id (KIP-345)")]
    FencedInstanceId,
    #[error("protocol type or protocols incompatible with the group")]
    InconsistentGroupProtocol,
    #[error("session timeout outside group.min/max.session.timeout.ms")]
    InvalidSessionTimeout,
    #[error("member id required (KIP-394)")]
    MemberIdRequired,
    #[error("group.max.size reached")]
    GroupMaxSizeReached,
    #[error("group id not found")]
    GroupIdNotFound,
    #[error("group is not empty")]
    NonEmptyGroup,
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    #[error("the offset commit is too large for the offsets log")]
    InvalidCommitOffsetSize,
}

impl GroupError {
    /// The Kafka error code for this refusal.
    pub fn code(&self) -> i16 {
        use GroupError::*;
        match self {
            NotCoordinator => code::NOT_COORDINATOR,
            LoadInProgress => code::COORDINATOR_LOAD_IN_PROGRESS,
            CoordinatorNotAvailable => code::COORDINATOR_NOT_AVAILABLE,
            InvalidGroupId => code::INVALID_GROUP_ID,
            UnknownMemberId => code::UNKNOWN_MEMBER_ID,
            IllegalGeneration => code::ILLEGAL_GENERATION,
            RebalanceInProgress => code::REBALANCE_IN_PROGRESS,
            FencedInstanceId => code::FENCED_INSTANCE_ID,
            InconsistentGroupProtocol => code::INCONSISTENT_GROUP_PROTOCOL,
            InvalidSessionTimeout => code::INVALID_SESSION_TIMEOUT,
            MemberIdRequired => code::MEMBER_ID_REQUIRED,
            GroupMaxSizeReached => code::GROUP_MAX_SIZE_REACHED,
            GroupIdNotFound => code::GROUP_ID_NOT_FOUND,
            NonEmptyGroup => code::NON_EMPTY_GROUP,
            GroupSubscribedToTopic => code::GROUP_SUBSCRIBED_TO_TOPIC,
            OffsetMetadataTooLarge => code::OFFSET_METADATA_TOO_LARGE,
            InvalidRequest(_) => code::INVALID_REQUEST,
            InvalidCommitOffsetSize => code::INVALID_COMMIT_OFFSET_SIZE,
        }
    }
}

/// A `__consumer_offsets` record that cannot be decoded. Loading skips such records with a
/// warning instead of refusing to serve the partition.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("record truncated while reading {0}")]
    Truncated(&'static str),
    #[error("unknown record key version {0}")]
    UnknownKeyVersion(i16),
    #[error("unsupported value version {0} for {1}")]
    UnsupportedValueVersion(i16, &'static str),
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    #[error("negative length {0} for non-nullable {1}")]
    NegativeLength(i32, &'static str),
}
