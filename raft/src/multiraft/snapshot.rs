//! Log compaction and partition snapshots (Raft §7) for the per-core driver.
//!
//! A partition snapshot carries no state machine data, only a position (Redpanda's approach,
//! Kafka's log start offset): the records below the anchor are gone on every replica that
//! compacted, and a follower that needs them cannot get them back; it restarts its log at the
//! leader's anchor instead.
//!
//! - [`MultiRaft::compact`] (any replica, typically from retention or DeleteRecords): move the
//!   anchor to the entry holding a Kafka offset, never past the applied index; the group state
//!   file is written first, then the log's prefix is dropped (a crash between the two is
//!   finished by the next open: the log start is below the anchor).
//! - raft-rs asks `GroupStorage::snapshot` when a follower needs an entry below the anchor;
//!   the snapshot's metadata is (anchor index − 1, anchor previous term, membership), its data
//!   the anchor's log and Kafka offsets. The driver reports it sent at once
//!   (`report_snapshot(Finish)`): the leader then probes from the anchor, and a lost snapshot
//!   shows as a rejected probe, which sends a new one.
//! - The follower receives it in a `Ready` (raft-rs accepted it: its index is past the
//!   follower's commit and the follower lacks that entry). The install: write the state file
//!   with the new anchor and "log reset pending", reset the log to the anchor's log offset
//!   (every entry goes), write the state file again without the flag, restart the entry table
//!   at the anchor. A crash after the first write is finished by the next open.
//!
//! Ownership: part of [`MultiRaft`] (per core, `!Send`).

use raft::eraftpb::{HardState, Snapshot};
use raft::SnapshotStatus;

use super::{DriverError, Event, Group, MultiRaft, ProposeError};
use crate::batch::log_start_batch;
use crate::log::{GroupLog, LogError};
use crate::meta::{GroupMeta, MetaStore};
use crate::store::SnapshotData;
use crate::transport::{GroupId, Transport};

impl<L: GroupLog, M: MetaStore, T: Transport> MultiRaft<L, M, T> {
    /// Log compaction (§7): drops `group`'s entries below the one holding Kafka offset
    /// `kafka_offset` (or everything applied, if it lies beyond the applied entries). Records
    /// at or after `kafka_offset` that are held stay; a batch holding it stays whole, so the
    /// new log start may be below `kafka_offset`. Followers that need dropped entries are
    /// sent a snapshot. Returns the group's log start Kafka offset afterwards, or None if the
    /// group is not open here. An error is an I/O failure of the log or the state directory.
    pub async fn compact(
        &mut self,
        group: GroupId,
        kafka_offset: i64,
    ) -> Result<Option<i64>, DriverError> {
        let Some(g) = self.groups.get_mut(&group) else {
            return Ok(None);
        };
        let (anchor, record) = {
            let mut st = g.st.borrow_mut();
            let index = st.compaction_index(kafka_offset);
            if index <= st.anchor.index {
                return Ok(Some(st.anchor.kafka_offset));
            }
            let anchor = st.compact_to(index);
            let mut hard_state = st.hard_state.clone();
            // raft-rs refuses a persisted commit below its first index − 1 at open.
            hard_state.commit = hard_state.commit.max(anchor.index - 1);
            g.persisted_term_vote = (hard_state.term, hard_state.vote);
            let record = GroupMeta {
                hard_state,
                conf_state: st.conf_state.clone(),
                anchor,
                log_reset_pending: false,
            }
            .encode();
            (anchor, record)
        };
        // The state file first: a log cut first would leave an anchor below the log start.
        self.meta
            .write(group, record)
            .await
            .map_err(|source| DriverError::Meta { group, source })?;
        self.stats.meta_writes += 1;
        g.log
            .prefix_truncate(anchor.log_offset)
            .await
            .map_err(|source| DriverError::Log { group, source })?;
        self.stats.compactions += 1;
        Ok(Some(anchor.kafka_offset))
    }

    /// DeleteRecords through Raft (KIP-107): proposes a log start entry
    /// ([`crate::batch::InternalKind::LogStart`]) naming `kafka_offset`. It takes a log
    /// offset but no Kafka offset; once committed, every replica applies it
    /// ([`GroupState::note_log_start`](crate::store::GroupState::note_log_start); the
    /// recovery scan at open does the same for committed entries), and its outcome arrives as
    /// an [`Event`] carrying `token`. The caller (the partition leader) checked the offset
    /// against its high watermark; compacting the log to it is the engine's job on each
    /// replica.
    pub fn propose_log_start(
        &mut self,
        group: GroupId,
        kafka_offset: i64,
        token: u64,
    ) -> Result<(), ProposeError> {
        if kafka_offset < 0 {
            return Err(ProposeError::InvalidBatch(format!(
                "log start {kafka_offset} is negative"
            )));
        }
        self.propose_entry(group, log_start_batch(kafka_offset), token, false)
    }

    /// At open, before the recovery scan: brings the log in line with the state file's
    /// anchor after a crash interrupted a snapshot install (reset pending: reset the log,
    /// clear the flag) or a compaction (log start below the anchor: drop the prefix). Returns
    /// the number of state file writes.
    pub(super) async fn reconcile_log(
        meta: &M,
        group: GroupId,
        m: &mut GroupMeta,
        log: &L,
    ) -> Result<u64, DriverError> {
        let log_err = |source| DriverError::Log { group, source };
        let at = m.anchor.log_offset;
        let mut writes = 0;
        if m.log_reset_pending {
            log.reset_to(at).await.map_err(log_err)?;
            m.log_reset_pending = false;
            meta.write(group, m.encode())
                .await
                .map_err(|source| DriverError::Meta { group, source })?;
            writes += 1;
        } else if log.log_start_offset() < at {
            log.prefix_truncate(at).await.map_err(log_err)?;
        }
        let (start, end) = (log.log_start_offset(), log.next_offset());
        if start > at || end < at {
            // Something else cut the log (retention on a replicated log), or it lost data
            // that was durable: Raft cannot trust it.
            return Err(log_err(LogError::OffsetOutOfRange {
                offset: at,
                start,
                end,
            }));
        }
        Ok(writes)
    }

    /// Follower side of §7, inside a pass, before the entries of the same `Ready` are
    /// appended: see the module docs for the order of writes. `hs` is the `Ready`'s hard
    /// state, if it changed (its term and vote are persisted with the anchor). Returns the
    /// tokens of proposals that can no longer be tracked and the new high watermark.
    pub(super) async fn install_snapshot(
        meta: &M,
        gid: GroupId,
        g: &mut Group<L>,
        snap: &Snapshot,
        hs: Option<&HardState>,
    ) -> Result<(Vec<u64>, i64), DriverError> {
        let md = snap.get_metadata();
        let data = SnapshotData::decode(&snap.data).unwrap_or_else(|| {
            panic!("group {gid}: snapshot data not validated by the frame decoder")
        });
        let anchor = data.anchor(md.index, md.term);
        let conf_state = md.get_conf_state().clone();
        let mut hard_state = g.st.borrow().hard_state.clone();
        if let Some(hs) = hs {
            hard_state.term = hs.term;
            hard_state.vote = hs.vote;
        }
        hard_state.commit = hard_state.commit.max(md.index);
        let mut record = GroupMeta {
            hard_state: hard_state.clone(),
            conf_state: conf_state.clone(),
            anchor,
            log_reset_pending: true,
        };
        let meta_err = |source| DriverError::Meta { group: gid, source };
        meta.write(gid, record.encode()).await.map_err(meta_err)?;
        g.log
            .reset_to(anchor.log_offset)
            .await
            .map_err(|source| DriverError::Log { group: gid, source })?;
        record.log_reset_pending = false;
        meta.write(gid, record.encode()).await.map_err(meta_err)?;
        g.persisted_term_vote = (hard_state.term, hard_state.vote);
        {
            let mut st = g.st.borrow_mut();
            st.install_snapshot(anchor, conf_state);
            st.hard_state = hard_state;
        }
        // Proposals this node made as an earlier leader: their entries are gone from this
        // log, so they can no longer be tracked; they fail (Superseded, the client retries)
        // even though some may have committed on the others, as after any leader change
        // with an outcome this node cannot see. (Keeping those above the snapshot index
        // would break the growing-index order of `pending` once this node leads again:
        // found by sim seed 325.)
        let failed = g.pending.drain(..).map(|p| p.token).collect();
        Ok((failed, anchor.kafka_offset))
    }

    /// Records the outcome of [`MultiRaft::install_snapshot`]: failed proposals, the high
    /// watermark (the snapshot's Kafka offset: everything below it is committed).
    pub(super) fn note_snapshot_installed(&mut self, gid: GroupId, failed: Vec<u64>, hw: i64) {
        for token in failed {
            self.events.push(Event::Failed {
                group: gid,
                token,
                error: ProposeError::Superseded,
            });
        }
        let g = self.groups.get_mut(&gid).expect("group exists");
        if hw != g.high_watermark {
            assert!(
                hw > g.high_watermark,
                "group {gid}: snapshot moves the high watermark back ({} -> {hw})",
                g.high_watermark
            );
            g.high_watermark = hw;
            self.hw_changes.push((gid, hw));
        }
    }

    /// Tells raft-rs that the snapshots queued this round were sent: the follower's progress
    /// goes to probe from the anchor (a lost snapshot is re-sent after the probe is
    /// rejected). Called once every group of the round was advanced.
    pub(super) fn report_snapshots_sent(&mut self) {
        for (gid, to) in std::mem::take(&mut self.snapshots_sent) {
            if let Some(g) = self.groups.get_mut(&gid) {
                g.raw.report_snapshot(to, SnapshotStatus::Finish);
                self.stats.snapshots_sent += 1;
            }
        }
    }
}
