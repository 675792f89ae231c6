//! Per-topic log configuration and the flush policy decision.

/// When the engine should call [`crate::Log::flush`] (Kafka `flush.messages` / `flush.ms`).
/// The storage crate only decides; the engine drives timers. Plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync after every append (Kafka `flush.messages=1`).
    EveryAppend,
    /// fsync once this many bytes or messages are pending, or this many ms have passed since
    /// the last flush, whichever comes first. `None` disables a trigger.
    Threshold {
        /// pending bytes that trigger a flush
        bytes: Option<u64>,
        /// pending messages (records) that trigger a flush (Kafka `flush.messages`)
        messages: Option<u64>,
        /// ms since the last flush that trigger a flush (Kafka `flush.ms`)
        interval_ms: Option<u64>,
    },
}

impl Default for FlushPolicy {
    /// Kafka's defaults: flush.messages and flush.ms are both "never" (Long.MAX_VALUE); the
    /// OS decides. Freshet bounds the data at risk at 1 MiB / 100 ms by default instead,
    /// because acks=all waits on the durable offset anyway.
    fn default() -> Self {
        FlushPolicy::Threshold {
            bytes: Some(1 << 20),
            messages: None,
            interval_ms: Some(100),
        }
    }
}

impl FlushPolicy {
    /// Whether a flush is due given what is pending. Nothing pending never flushes.
    pub fn should_flush(
        &self,
        pending_bytes: u64,
        pending_msgs: u64,
        ms_since_last_flush: u64,
    ) -> bool {
        if pending_bytes == 0 && pending_msgs == 0 {
            return false;
        }
        match self {
            FlushPolicy::EveryAppend => true,
            FlushPolicy::Threshold {
                bytes,
                messages,
                interval_ms,
            } => {
                bytes.is_some_and(|b| pending_bytes >= b)
                    || messages.is_some_and(|m| pending_msgs >= m)
                    || interval_ms.is_some_and(|ms| ms_since_last_flush >= ms)
            }
        }
    }
}

/// Configuration of one partition log (topic-level configs). Plain data; crosses cores.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this (default 128 MiB;
    /// capped at 2 GiB - 1 because index positions are u32).
    pub segment_bytes_max: u64,
    /// `segment.ms`: roll a non-empty segment older than this (default 7 days).
    pub segment_ms: u64,
    /// `index.interval.bytes`: one offset/time index entry per this many log bytes (4096).
    pub index_interval_bytes: u32,
    /// `retention.bytes`: delete old segments beyond this total size; `None` = unlimited.
    pub retention_bytes: Option<u64>,
    /// `retention.ms`: delete segments whose newest timestamp is older; `None` = forever.
    pub retention_ms: Option<u64>,
    /// `flush.messages` / `flush.ms` (engine-driven).
    pub flush_policy: FlushPolicy,
    /// `max.message.bytes`: the largest batch accepted (Kafka default 1048588).
    pub batch_bytes_max: u32,
    /// Segment files are preallocated (fallocate) in steps of this size.
    pub preallocate_bytes: u64,
    /// Budget of the recent-batch cache of this log (bytes of batches kept in memory).
    pub cache_bytes_max: u64,
    /// Size of one aligned write buffer chunk; appends beyond this many unwritten bytes
    /// are written out (without fdatasync) before the append returns.
    pub write_buffer_bytes: u32,
    /// Disk reads are at least this large (aligned read-ahead).
    pub read_ahead_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 128 << 20,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            flush_policy: FlushPolicy::default(),
            batch_bytes_max: 1_048_588,
            preallocate_bytes: 32 << 20,
            cache_bytes_max: 8 << 20,
            write_buffer_bytes: 1 << 20,
            read_ahead_bytes: 256 << 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_policy_mirrors_kafka_flush_messages_and_flush_ms() {
        assert!(FlushPolicy::EveryAppend.should_flush(1, 1, 0));
        assert!(
            !FlushPolicy::EveryAppend.should_flush(0, 0, 10_000),
            "nothing pending"
        );
        let p = FlushPolicy::Threshold {
            bytes: Some(1000),
            messages: Some(10),
            interval_ms: Some(50),
        };
        assert!(!p.should_flush(999, 9, 49));
        assert!(p.should_flush(1000, 0, 0));
        assert!(p.should_flush(1, 10, 0));
        assert!(p.should_flush(1, 1, 50));
        let never = FlushPolicy::Threshold {
            bytes: None,
            messages: None,
            interval_ms: None,
        };
        assert!(!never.should_flush(u64::MAX, u64::MAX, u64::MAX));
    }
}
