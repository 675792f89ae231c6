//! Engine errors and the Kafka error codes they map to.
//!
//! Plain values (`Send`): they cross cores inside mesh replies.

use thiserror::Error;

use crate::config::ConfigError;
use crate::metadata::MetadataError;

/// Kafka error codes used by the engine (from Kafka's `Errors.java`).
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_REQUEST: i16 = 42;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const INVALID_CONFIG: i16 = 40;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
    pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const INVALID_RECORD: i16 = 87;
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
    pub const UNSUPPORTED_ENDPOINT_TYPE: i16 = 119;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
}

/// Errors of topic-level (metadata) operations.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TopicError {
    #[error("topic {0} already exists")]
    AlreadyExists(String),
    #[error("unknown topic {0}")]
    Unknown(String),
    #[error("invalid topic name: {0}")]
    InvalidName(String),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// No controller leader answered in time (retriable).
    #[error("controller unavailable: {0}")]
    ControllerUnavailable(String),
    #[error("metadata store: {0}")]
    Store(String),
    #[error("broker is shutting down")]
    ShuttingDown,
    /// Cancelling a partition reassignment that is not ongoing (KIP-455).
    #[error("no reassignment in progress: {0}")]
    NoReassignmentInProgress(String),
}

impl TopicError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            TopicError::AlreadyExists(_) => code::TOPIC_ALREADY_EXISTS,
            TopicError::Unknown(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
            TopicError::InvalidName(_) => code::INVALID_TOPIC_EXCEPTION,
            TopicError::InvalidPartitions(_) => code::INVALID_PARTITIONS,
            TopicError::InvalidConfig(_) => code::INVALID_CONFIG,
            TopicError::InvalidReplicationFactor(_) => code::INVALID_REPLICATION_FACTOR,
            TopicError::InvalidReplicaAssignment(_) => code::INVALID_REPLICA_ASSIGNMENT,
            TopicError::ControllerUnavailable(_) => code::REQUEST_TIMED_OUT,
            TopicError::Store(_) => code::KAFKA_STORAGE_ERROR,
            TopicError::ShuttingDown => code::LEADER_NOT_AVAILABLE,
            TopicError::NoReassignmentInProgress(_) => code::NO_REASSIGNMENT_IN_PROGRESS,
        }
    }
}

impl From<ConfigError> for TopicError {
    fn from(e: ConfigError) -> Self {
        TopicError::InvalidConfig(e.to_string())
    }
}

impl From<MetadataError> for TopicError {
    fn from(e: MetadataError) -> Self {
        TopicError::Store(e.to_string())
    }
}

/// Errors of cross-core calls.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MeshError {
    #[error("core {0} is not reachable (shutting down)")]
    Unreachable(usize),
    #[error("no such core {0}")]
    NoSuchCore(usize),
}
