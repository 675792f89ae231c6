//! Errors of the storage crate, each mapped to the Kafka error code a client must see.

use std::io;

/// Kafka error codes the storage layer can produce (see Kafka's `Errors.java`).
pub mod kafka_code {
    /// OFFSET_OUT_OF_RANGE
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// CORRUPT_MESSAGE
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// MESSAGE_TOO_LARGE
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// UNSUPPORTED_FOR_MESSAGE_FORMAT
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    /// KAFKA_STORAGE_ERROR
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    /// INVALID_RECORD
    pub const INVALID_RECORD: i16 = 87;
}

/// Everything that can go wrong in a [`crate::Log`]. Plain data; crosses cores freely.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A client batch whose size fields or CRC32C do not check out (Kafka CORRUPT_MESSAGE).
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    /// A batch with well-formed framing but invalid fields (Kafka INVALID_RECORD).
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    /// A batch with a magic other than 2 (Kafka UNSUPPORTED_FOR_MESSAGE_FORMAT).
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    UnsupportedMagic(i8),
    /// A batch larger than `max.message.bytes` (Kafka MESSAGE_TOO_LARGE).
    #[error("record batch of {size_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    BatchTooLarge {
        /// size of the offending batch
        size_bytes: usize,
        /// configured limit (`batch_bytes_max`)
        max_bytes: u32,
    },
    /// The requested offset is outside `[log_start_offset, next_offset]`.
    #[error("offset {offset} out of range [{log_start_offset}, {next_offset}]")]
    OffsetOutOfRange {
        /// requested offset
        offset: i64,
        /// first offset still in the log
        log_start_offset: i64,
        /// log end offset
        next_offset: i64,
    },
    /// Data read back from disk failed its CRC or framing check: never served to a client
    /// (Kafka KAFKA_STORAGE_ERROR).
    #[error("corrupt data on disk in {file} at byte {position}: {reason}")]
    CorruptLog {
        /// file name
        file: String,
        /// byte position in the file
        position: u64,
        /// what failed
        reason: String,
    },
    /// A previous write or sync failed; the log refuses further mutations until reopened
    /// (Kafka marks the log dir offline in this case; KAFKA_STORAGE_ERROR).
    #[error("log is failed after an earlier I/O error: {0}")]
    LogFailed(String),
    /// An I/O error from the disk (Kafka KAFKA_STORAGE_ERROR).
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl StorageError {
    /// The Kafka error code a client gets for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            StorageError::CorruptBatch(_) => kafka_code::CORRUPT_MESSAGE,
            StorageError::InvalidBatch(_) => kafka_code::INVALID_RECORD,
            StorageError::UnsupportedMagic(_) => kafka_code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            StorageError::BatchTooLarge { .. } => kafka_code::MESSAGE_TOO_LARGE,
            StorageError::OffsetOutOfRange { .. } => kafka_code::OFFSET_OUT_OF_RANGE,
            StorageError::CorruptLog { .. } | StorageError::LogFailed(_) | StorageError::Io(_) => {
                kafka_code::KAFKA_STORAGE_ERROR
            }
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
