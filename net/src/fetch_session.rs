//! Incremental fetch sessions (KIP-227): a bounded per-core cache.
//!
//! `FetchSessionCache` is per core (`!Send`, inside `NetCore`). A session lives on the core
//! whose connection created it; a client that reconnects to another core gets
//! FETCH_SESSION_ID_NOT_FOUND and starts a new session, as KIP-227 allows.

use std::collections::HashMap;
use std::time::Instant;

use freshet_engine::code;

/// One partition a session follows, with what the client last saw of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPartition {
    pub topic: String,
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// KIP-320: the leader epoch the client believes current (v9+); -1 = not checked.
    pub current_leader_epoch: i32,
    /// Offsets last sent to the client (-1 = never sent).
    pub last_high_watermark: i64,
    pub last_log_start_offset: i64,
}

/// A fetch session.
#[derive(Debug)]
pub struct FetchSession {
    pub id: i32,
    /// The epoch the next incremental request must carry.
    pub next_epoch: i32,
    pub partitions: Vec<SessionPartition>,
    last_used: Instant,
}

/// What the request's (session_id, epoch) pair asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    /// No session: a full fetch, answered with session id 0.
    Sessionless,
    /// Start a new session from this full request (closing `close` if non-zero).
    New { close: i32 },
    /// Incremental request on an existing session.
    Incremental { id: i32, epoch: i32 },
}

/// KIP-227 request classification.
pub fn classify(session_id: i32, epoch: i32) -> SessionAction {
    match (session_id, epoch) {
        (0, -1) => SessionAction::Sessionless,
        // The client closes session `id` and fetches without one.
        (_, -1) => SessionAction::Sessionless,
        (id, 0) => SessionAction::New { close: id },
        (id, e) => SessionAction::Incremental { id, epoch: e },
    }
}

/// Bounded LRU cache of sessions. Per core.
#[derive(Debug)]
pub struct FetchSessionCache {
    slots: usize,
    sessions: HashMap<i32, FetchSession>,
    next_id: i32,
}

impl FetchSessionCache {
    pub fn new(slots: usize, core: usize) -> Self {
        FetchSessionCache {
            slots,
            sessions: HashMap::new(),
            // Distinct id ranges per core make a wrong-core session id a clean "not found".
            next_id: (core as i32 % 64) * (i32::MAX / 64) + 1,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn remove(&mut self, id: i32) {
        self.sessions.remove(&id);
    }

    /// Creates a session for `partitions`; evicts the least recently used one when full.
    /// Returns 0 (no session) when the cache has no slots.
    pub fn create(&mut self, partitions: Vec<SessionPartition>) -> i32 {
        if self.slots == 0 {
            return 0;
        }
        if self.sessions.len() >= self.slots {
            let lru = self
                .sessions
                .values()
                .min_by_key(|s| s.last_used)
                .map(|s| s.id)
                .expect("a full cache has a session");
            self.sessions.remove(&lru);
        }
        let mut id = self.next_id;
        while id == 0 || self.sessions.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        self.next_id = id.wrapping_add(1).max(1);
        self.sessions.insert(
            id,
            FetchSession {
                id,
                next_epoch: 1,
                partitions,
                last_used: Instant::now(),
            },
        );
        id
    }

    /// Looks up a session for an incremental request at `epoch`; bumps its epoch.
    /// Err is the top-level Kafka error code.
    pub fn begin_incremental(&mut self, id: i32, epoch: i32) -> Result<&mut FetchSession, i16> {
        let s = self
            .sessions
            .get_mut(&id)
            .ok_or(code::FETCH_SESSION_ID_NOT_FOUND)?;
        if s.next_epoch != epoch {
            return Err(code::INVALID_FETCH_SESSION_EPOCH);
        }
        s.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
        s.last_used = Instant::now();
        Ok(s)
    }

    pub fn get_mut(&mut self, id: i32) -> Option<&mut FetchSession> {
        self.sessions.get_mut(&id)
    }
}

impl FetchSession {
    /// Adds or updates a partition from an incremental request.
    pub fn upsert(&mut self, p: SessionPartition) {
        match self
            .partitions
            .iter_mut()
            .find(|x| x.topic == p.topic && x.partition == p.partition)
        {
            Some(x) => {
                x.fetch_offset = p.fetch_offset;
                x.max_bytes = p.max_bytes;
                x.current_leader_epoch = p.current_leader_epoch;
            }
            None => self.partitions.push(p),
        }
    }

    /// KIP-227 fairness: moves the partitions that returned records in the last response to
    /// the end of the session's order (keeping the relative order of both groups), so the
    /// next response reads the partitions that got nothing first and a tight total max_bytes
    /// cannot starve partitions late in the list. `returned_data` holds (topic, partition).
    pub fn rotate_to_end(&mut self, returned_data: &[(String, i32)]) {
        if returned_data.is_empty() {
            return;
        }
        let (moved, kept): (Vec<_>, Vec<_>) = self.partitions.drain(..).partition(|p| {
            returned_data
                .iter()
                .any(|(t, i)| *t == p.topic && *i == p.partition)
        });
        self.partitions = kept;
        self.partitions.extend(moved);
    }

    /// Removes a partition the client forgot.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions
            .retain(|x| !(x.topic == topic && x.partition == partition));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(topic: &str, partition: i32, off: i64) -> SessionPartition {
        SessionPartition {
            topic: topic.into(),
            topic_id: [1; 16],
            partition,
            fetch_offset: off,
            max_bytes: 1024,
            current_leader_epoch: -1,
            last_high_watermark: -1,
            last_log_start_offset: -1,
        }
    }

    #[test]
    fn kip_227_request_kinds() {
        assert_eq!(classify(0, -1), SessionAction::Sessionless);
        assert_eq!(classify(0, 0), SessionAction::New { close: 0 });
        assert_eq!(classify(7, 0), SessionAction::New { close: 7 });
        assert_eq!(classify(7, -1), SessionAction::Sessionless);
        assert_eq!(
            classify(7, 3),
            SessionAction::Incremental { id: 7, epoch: 3 }
        );
    }

    #[test]
    fn kip_227_epochs_must_follow_in_sequence() {
        let mut c = FetchSessionCache::new(10, 0);
        let id = c.create(vec![sp("t", 0, 0)]);
        assert_ne!(id, 0);
        assert!(c.begin_incremental(id, 1).is_ok());
        assert_eq!(
            c.begin_incremental(id, 1).err(),
            Some(code::INVALID_FETCH_SESSION_EPOCH)
        );
        assert!(c.begin_incremental(id, 2).is_ok());
        assert_eq!(
            c.begin_incremental(id + 1000, 1).err(),
            Some(code::FETCH_SESSION_ID_NOT_FOUND)
        );
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_least_recently_used_session() {
        let mut c = FetchSessionCache::new(2, 1);
        let a = c.create(vec![]);
        let b = c.create(vec![]);
        assert!(c.begin_incremental(a, 1).is_ok()); // a is now more recent than b
        let d = c.create(vec![]);
        assert_eq!(c.len(), 2);
        assert!(c.get_mut(b).is_none());
        assert!(c.get_mut(a).is_some());
        assert!(c.get_mut(d).is_some());
        assert_eq!(FetchSessionCache::new(0, 0).create(vec![]), 0);
    }

    #[test]
    fn incremental_updates_and_forgets_partitions() {
        let mut c = FetchSessionCache::new(1, 0);
        let id = c.create(vec![sp("t", 0, 5), sp("t", 1, 9)]);
        let s = c.begin_incremental(id, 1).unwrap();
        s.upsert(sp("t", 0, 6));
        s.upsert(sp("u", 0, 0));
        s.forget("t", 1);
        let offs: Vec<_> = s
            .partitions
            .iter()
            .map(|p| (p.topic.as_str(), p.partition, p.fetch_offset))
            .collect();
        assert_eq!(offs, vec![("t", 0, 6), ("u", 0, 0)]);
    }

    fn order(s: &FetchSession) -> Vec<i32> {
        s.partitions.iter().map(|p| p.partition).collect()
    }

    /// KIP-227 (as Kafka's IncrementalFetchContext does): partitions that returned data move
    /// to the end of the session order, so under a total max_bytes that fits one partition's
    /// data per response every partition is served in turn instead of the first one forever.
    #[test]
    fn kip_227_partitions_that_returned_data_rotate_to_the_end() {
        let mut c = FetchSessionCache::new(1, 0);
        let id = c.create((0..4).map(|i| sp("t", i, 0)).collect());
        let mut served = Vec::new();
        for epoch in 1..=8 {
            let s = c.begin_incremental(id, epoch).unwrap();
            // Every partition has data; the budget takes only the first one in order.
            let first = s.partitions[0].partition;
            served.push(first);
            s.rotate_to_end(&[("t".to_string(), first)]);
        }
        assert_eq!(served, vec![0, 1, 2, 3, 0, 1, 2, 3]);

        // Several partitions returning data keep their relative order behind the others.
        let s = c.get_mut(id).unwrap();
        assert_eq!(order(s), vec![0, 1, 2, 3]);
        s.rotate_to_end(&[("t".to_string(), 2), ("t".to_string(), 0)]);
        assert_eq!(order(s), vec![1, 3, 0, 2]);
        // Nothing returned (or an unknown partition): the order stays.
        s.rotate_to_end(&[]);
        s.rotate_to_end(&[("u".to_string(), 1)]);
        assert_eq!(order(s), vec![1, 3, 0, 2]);
    }
}
