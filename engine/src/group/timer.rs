//! Deterministic timers for the group coordinator.
//!
//! The coordinator never reads a clock: it arms deadlines (absolute ms) here and the driver
//! calls `GroupCoordinator::tick(now_ms)` at or after [`Timers::next_deadline`]. Tests drive
//! time by hand. Per-core, owned by the coordinator.

use std::collections::{BTreeSet, HashMap};

/// What a deadline is for. Re-arming a key replaces its previous deadline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKey {
    /// A member's session (KIP-62 `session.timeout.ms`).
    Session { group: String, member: String },
    /// A member that got MEMBER_ID_REQUIRED must rejoin within its session timeout (KIP-394).
    PendingMember { group: String, member: String },
    /// The join phase of a rebalance (initial delay or rebalance timeout).
    Join { group: String },
    /// Members must send SyncGroup within the rebalance timeout after the join phase.
    PendingSync { group: String, generation: i32 },
    /// Periodic expiry of committed offsets (`offsets.retention.check.interval.ms`).
    OffsetExpiry,
}

/// A set of (deadline, key) with O(log n) arm/cancel and in-order expiry.
#[derive(Debug, Default)]
pub struct Timers {
    by_deadline: BTreeSet<(i64, TimerKey)>,
    by_key: HashMap<TimerKey, i64>,
}

impl Timers {
    /// Arms `key` to fire at `deadline_ms`, replacing any earlier arming of the same key.
    pub fn arm(&mut self, key: TimerKey, deadline_ms: i64) {
        if let Some(old) = self.by_key.insert(key.clone(), deadline_ms) {
            let removed = self.by_deadline.remove(&(old, key.clone()));
            assert!(removed, "timer index out of sync for {key:?}");
        }
        self.by_deadline.insert((deadline_ms, key));
    }

    /// Disarms `key` if armed.
    pub fn cancel(&mut self, key: &TimerKey) {
        if let Some(old) = self.by_key.remove(key) {
            let removed = self.by_deadline.remove(&(old, key.clone()));
            assert!(removed, "timer index out of sync for {key:?}");
        }
    }

    /// The deadline of `key`, if armed.
    pub fn deadline_of(&self, key: &TimerKey) -> Option<i64> {
        self.by_key.get(key).copied()
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<i64> {
        self.by_deadline.iter().next().map(|(d, _)| *d)
    }

    /// Removes and returns the earliest key due at `now_ms`, if any.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<TimerKey> {
        let first = self.by_deadline.iter().next()?.clone();
        if first.0 > now_ms {
            return None;
        }
        self.by_deadline.remove(&first);
        self.by_key.remove(&first.1);
        Some(first.1)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
