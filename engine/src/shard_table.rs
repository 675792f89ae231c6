//! Deterministic partition → core placement.
//!
//! `ShardTable` is a tiny `Copy` value every core holds identically; no state crosses cores.
//! Placement: `core = (crc32c(topic) + partition) % cores`, so the partitions of one topic
//! are spread round-robin over the cores starting at a topic-dependent core. The data
//! directory layout does not depend on the placement, so `--cores` may change between runs.

/// Maps (topic, partition) to the core that owns it. Same on every core; `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardTable {
    cores: usize,
}

impl ShardTable {
    pub fn new(cores: usize) -> Self {
        assert!(cores > 0, "a broker needs at least one core");
        ShardTable { cores }
    }

    pub fn cores(&self) -> usize {
        self.cores
    }

    /// The core owning `topic`/`partition`.
    pub fn core_of(&self, topic: &str, partition: i32) -> usize {
        assert!(partition >= 0, "negative partition {partition} of {topic}");
        let h = crc32c::crc32c(topic.as_bytes()) as u64;
        ((h + partition as u64) % self.cores as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_deterministic_and_in_range() {
        let a = ShardTable::new(4);
        let b = ShardTable::new(4);
        for p in 0..100 {
            assert_eq!(a.core_of("orders", p), b.core_of("orders", p));
            assert!(a.core_of("orders", p) < 4);
        }
    }

    #[test]
    fn partitions_of_one_topic_spread_evenly_over_cores() {
        let t = ShardTable::new(3);
        let mut per_core = [0usize; 3];
        for p in 0..30 {
            per_core[t.core_of("events", p)] += 1;
        }
        assert_eq!(per_core, [10, 10, 10]);
    }

    #[test]
    fn single_core_owns_everything() {
        let t = ShardTable::new(1);
        assert_eq!(t.core_of("x", 0), 0);
        assert_eq!(t.core_of("__consumer_offsets", 49), 0);
    }
}
