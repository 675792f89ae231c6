//! The leader table: who leads each Raft group, at which epoch, with which in-sync replicas.
//!
//! Sources: this node's own group statuses (every core reports its groups' leaders, followers
//! included: a follower knows the leader and term but not the ISR) and the LEADERS messages
//! of peers (each lists the groups that node leads, with ISR). Core 0 of every node merges
//! them in a [`LeaderTable`] and pushes the changed entries to the other cores, which keep a
//! plain map ([`LeaderInfo`] by group) that `Shard::leader_of` reads.
//!
//! Merge rule per group: the claim with the highest epoch wins; at equal epochs a claim that
//! names a leader beats one that does not, and one with an ISR (the leader's own report)
//! beats one without. A winning claim without a leader (an election in progress at a newer
//! term) means "no leader known". A peer's report is dropped when the peer has not reported
//! for `expiry_ms` (it may be dead; its groups elect new leaders, which report themselves).
//!
//! Down brokers ([`LeaderTable::set_down`], from `cluster::liveness`): a broker found down
//! has its report dropped; a group whose winning claim names a down leader has no known
//! leader (until a newer epoch elects a live one), and down brokers are left out of every
//! ISR. The winner is chosen before the filter, so a stale older claim never comes back.
//!
//! Ownership: `LeaderTable` lives on core 0 (per core, plain data); `LeaderInfo` and
//! `Claim` are `Send` values that cross cores in mesh calls.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The current leader of a group as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// Broker id of the leader.
    pub leader: i32,
    /// Leader epoch (Raft term).
    pub epoch: i32,
    /// In-sync replicas (broker ids, leader included); empty until the leader's own report
    /// arrived (a follower's view has no ISR).
    pub isr: Vec<i32>,
}

/// What one source says about one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The leader the source knows of (None: no leader at this epoch yet).
    pub leader: Option<i32>,
    pub epoch: i32,
    /// Known only on the leader.
    pub isr: Vec<i32>,
}

impl Claim {
    fn rank(&self) -> (i32, bool, bool) {
        (self.epoch, self.leader.is_some(), !self.isr.is_empty())
    }
}

struct Report {
    at_ms: i64,
    groups: HashMap<u64, Claim>,
}

/// Core 0's merged view (see the module doc). Plain data; per core.
#[derive(Default)]
pub struct LeaderTable {
    local: HashMap<u64, Claim>,
    remote: BTreeMap<i32, Report>,
    merged: HashMap<u64, LeaderInfo>,
    /// Brokers considered down (see the module doc).
    down: BTreeSet<i32>,
}

/// Entries that changed: `Some` = new value, `None` = no leader known any more.
pub type LeaderDelta = Vec<(u64, Option<LeaderInfo>)>;

impl LeaderTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The merged entry of `group`.
    pub fn get(&self, group: u64) -> Option<&LeaderInfo> {
        self.merged.get(&group)
    }

    /// What this node's own statuses say about `group`.
    pub fn local(&self, group: u64) -> Option<&Claim> {
        self.local.get(&group)
    }

    /// Every merged entry.
    pub fn all(&self) -> impl Iterator<Item = (u64, &LeaderInfo)> {
        self.merged.iter().map(|(g, l)| (*g, l))
    }

    /// Groups this node's own statuses say `me` leads (what LEADERS reports), ascending.
    pub fn led_by(&self, me: i32) -> Vec<(u64, &Claim)> {
        let mut v: Vec<(u64, &Claim)> = self
            .local
            .iter()
            .filter(|(_, c)| c.leader == Some(me))
            .map(|(g, c)| (*g, c))
            .collect();
        v.sort_by_key(|(g, _)| *g);
        v
    }

    /// Local status updates (`None` = the group left this node). Returns the changes.
    pub fn apply_local(&mut self, updates: Vec<(u64, Option<Claim>)>) -> LeaderDelta {
        let mut touched = Vec::with_capacity(updates.len());
        for (g, c) in updates {
            match c {
                Some(c) => self.local.insert(g, c),
                None => self.local.remove(&g),
            };
            touched.push(g);
        }
        self.recompute(touched)
    }

    /// A peer's complete list of the groups it leads, received at `now_ms`.
    pub fn apply_report(
        &mut self,
        from: i32,
        groups: Vec<(u64, i32, Vec<i32>)>,
        now_ms: i64,
    ) -> LeaderDelta {
        let new: HashMap<u64, Claim> = groups
            .into_iter()
            .map(|(g, epoch, isr)| {
                (
                    g,
                    Claim {
                        leader: Some(from),
                        epoch,
                        isr,
                    },
                )
            })
            .collect();
        let mut touched: Vec<u64> = new.keys().copied().collect();
        if let Some(old) = self.remote.get(&from) {
            touched.extend(old.groups.keys().filter(|g| !new.contains_key(g)));
        }
        self.remote.insert(
            from,
            Report {
                at_ms: now_ms,
                groups: new,
            },
        );
        self.recompute(touched)
    }

    /// Drops the reports of peers silent since before `now_ms - expiry_ms`.
    pub fn expire(&mut self, now_ms: i64, expiry_ms: i64) -> LeaderDelta {
        let stale: Vec<i32> = self
            .remote
            .iter()
            .filter(|(_, r)| now_ms - r.at_ms > expiry_ms)
            .map(|(id, _)| *id)
            .collect();
        let mut touched = Vec::new();
        for id in stale {
            if let Some(r) = self.remote.remove(&id) {
                tracing::info!(
                    node = id,
                    groups = r.groups.len(),
                    "peer's leader report expired"
                );
                touched.extend(r.groups.into_keys());
            }
        }
        self.recompute(touched)
    }

    /// Replaces the set of down brokers: drops the reports of brokers newly down and
    /// recomputes every group (claims naming a down leader hide it; ISRs lose down brokers).
    pub fn set_down(&mut self, down: BTreeSet<i32>) -> LeaderDelta {
        if down == self.down {
            return Vec::new();
        }
        let newly: Vec<i32> = down.difference(&self.down).copied().collect();
        for id in newly {
            if let Some(r) = self.remote.remove(&id) {
                tracing::info!(
                    node = id,
                    groups = r.groups.len(),
                    "down peer's leader report dropped"
                );
            }
        }
        self.down = down;
        let mut touched: Vec<u64> = self.merged.keys().copied().collect();
        touched.extend(self.local.keys());
        for r in self.remote.values() {
            touched.extend(r.groups.keys());
        }
        self.recompute(touched)
    }

    fn resolve(&self, group: u64) -> Option<LeaderInfo> {
        let best = self
            .local
            .get(&group)
            .into_iter()
            .chain(self.remote.values().filter_map(|r| r.groups.get(&group)))
            .max_by_key(|c| c.rank())?;
        let leader = best.leader.filter(|l| !self.down.contains(l))?;
        Some(LeaderInfo {
            leader,
            epoch: best.epoch,
            isr: best
                .isr
                .iter()
                .copied()
                .filter(|b| !self.down.contains(b))
                .collect(),
        })
    }

    fn recompute(&mut self, mut touched: Vec<u64>) -> LeaderDelta {
        touched.sort_unstable();
        touched.dedup();
        let mut delta = Vec::new();
        for g in touched {
            let new = self.resolve(g);
            if self.merged.get(&g) != new.as_ref() {
                match &new {
                    Some(l) => self.merged.insert(g, l.clone()),
                    None => self.merged.remove(&g),
                };
                delta.push((g, new));
            }
        }
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(leader: Option<i32>, epoch: i32, isr: &[i32]) -> Claim {
        Claim {
            leader,
            epoch,
            isr: isr.to_vec(),
        }
    }

    #[test]
    fn the_leaders_own_report_fills_in_the_isr_a_follower_cannot_know() {
        let mut t = LeaderTable::new();
        // This node follows group 7; it knows node 2 leads at epoch 4.
        let d = t.apply_local(vec![(7, Some(claim(Some(2), 4, &[])))]);
        assert_eq!(
            d,
            vec![(
                7,
                Some(LeaderInfo {
                    leader: 2,
                    epoch: 4,
                    isr: vec![]
                })
            )]
        );
        // Node 2's LEADERS arrives: same epoch, with the ISR.
        let d = t.apply_report(2, vec![(7, 4, vec![2, 0])], 1_000);
        assert_eq!(d.len(), 1);
        assert_eq!(t.get(7).unwrap().isr, vec![2, 0]);
        // Nothing new: no delta.
        assert!(t
            .apply_report(2, vec![(7, 4, vec![2, 0])], 1_100)
            .is_empty());
    }

    #[test]
    fn a_newer_term_wins_and_an_election_in_progress_hides_the_old_leader() {
        let mut t = LeaderTable::new();
        t.apply_report(1, vec![(3, 5, vec![1, 2])], 0);
        assert_eq!(t.get(3).unwrap().leader, 1);
        // Locally we saw term 6 start without a leader yet (Raft §5.2: a new election).
        let d = t.apply_local(vec![(3, Some(claim(None, 6, &[])))]);
        assert_eq!(d, vec![(3, None)]);
        assert!(t.get(3).is_none());
        // Node 2 wins term 6.
        t.apply_report(2, vec![(3, 6, vec![2, 0])], 10);
        assert_eq!(t.get(3).unwrap().leader, 2);
        // A delayed stale report from node 1 (term 5) does not win back.
        assert!(t.apply_report(1, vec![(3, 5, vec![1])], 20).is_empty());
        assert_eq!(t.get(3).unwrap().leader, 2);
    }

    #[test]
    fn a_report_replaces_the_previous_one_and_silent_peers_expire() {
        let mut t = LeaderTable::new();
        t.apply_report(1, vec![(1, 1, vec![1]), (2, 1, vec![1])], 0);
        // Node 1 no longer leads group 2.
        let d = t.apply_report(1, vec![(1, 1, vec![1])], 500);
        assert_eq!(d, vec![(2, None)]);
        assert!(t.expire(5_000, 5_000).is_empty());
        let d = t.expire(5_501, 5_000);
        assert_eq!(d, vec![(1, None)]);
        // Local claims never expire; a group that left this node is removed.
        t.apply_local(vec![(9, Some(claim(Some(0), 2, &[0])))]);
        assert!(t.expire(1 << 40, 5_000).is_empty());
        assert_eq!(t.led_by(0).len(), 1);
        assert_eq!(t.apply_local(vec![(9, None)]), vec![(9, None)]);
        assert!(t.led_by(0).is_empty());
    }

    #[test]
    fn a_down_leader_is_hidden_at_once_and_leaves_every_isr() {
        let mut t = LeaderTable::new();
        // Node 1 leads group 5 (ISR 1,0,2); node 2 leads group 6 (ISR 2,1). This node (0)
        // follows both and knows their leaders from its own statuses.
        t.apply_local(vec![
            (5, Some(claim(Some(1), 3, &[]))),
            (6, Some(claim(Some(2), 4, &[]))),
        ]);
        t.apply_report(1, vec![(5, 3, vec![1, 0, 2])], 0);
        t.apply_report(2, vec![(6, 4, vec![2, 1])], 0);
        // Node 1's connection fails: no leader for group 5 (even though this node's own Raft
        // status still names node 1 until an election), and node 1 leaves group 6's ISR.
        let mut d = t.set_down([1].into());
        d.sort_by_key(|(g, _)| *g);
        assert_eq!(
            d,
            vec![
                (5, None),
                (
                    6,
                    Some(LeaderInfo {
                        leader: 2,
                        epoch: 4,
                        isr: vec![2]
                    })
                )
            ]
        );
        // A newer term elects node 0 for group 5: known again.
        t.apply_local(vec![(5, Some(claim(Some(0), 4, &[0, 2, 1])))]);
        assert_eq!(t.get(5).unwrap().leader, 0);
        assert_eq!(t.get(5).unwrap().isr, vec![0, 2]);
        // Node 1 is back: it is in the ISRs again as soon as it is live.
        t.set_down(BTreeSet::new());
        assert_eq!(t.get(5).unwrap().isr, vec![0, 2, 1]);
        assert_eq!(t.get(6).unwrap().isr, vec![2, 1]);
        // The same set again changes nothing.
        assert!(t.set_down(BTreeSet::new()).is_empty());
    }
}
