//! The per-core group service: drives a [`GroupCoordinator`] with the real world.
//!
//! Owned by one core (`!Send`: `Rc`/`RefCell` inside). It reads time from a
//! [`Clock`](freshet_storage::Clock), parks JoinGroup/SyncGroup callers on one-shot slots,
//! appends `__consumer_offsets` records through the [`OffsetsLog`] seam (answers that follow
//! an append in the effect list are released only after it is durable), replays the log when
//! the core takes over an offsets partition, and fires timers from [`GroupService::run_timers`].
//! Requests for this core's groups arriving on other cores reach it through the mesh; the
//! request and response types are plain `Send` data.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use freshet_storage::Clock;

use super::api::*;
use super::coordinator::{GroupCoordinator, LeadershipAction, EPOCH_UNKNOWN};
use super::error::{code, GroupError};

/// A boxed, non-`Send` future (everything here stays on its core).
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A record as stored: key and value (`None` = tombstone).
pub type KeyValue = (Bytes, Option<Bytes>);

/// Where the coordinator's records live: the `__consumer_offsets` partitions of this core.
/// The real implementation appends through the partition's normal write path (acks=all:
/// resolves once durable / committed) and reads the log from its start to the high watermark.
pub trait OffsetsLog {
    /// Appends `records` (as one uncompressed batch stamped `timestamp_ms`) to
    /// `__consumer_offsets`/`partition`; resolves once they are durable.
    fn append<'a>(
        &'a self,
        partition: i32,
        records: &'a [OffsetsRecord],
        timestamp_ms: i64,
    ) -> LocalFuture<'a, Result<(), GroupError>>;

    /// Every (key, value) record of `partition` in log order (control batches skipped).
    fn read_all(&self, partition: i32) -> LocalFuture<'_, Result<Vec<KeyValue>, GroupError>>;
}

/// The code JoinGroup/SyncGroup answers carry when storing the group's metadata failed
/// (Kafka's `GroupMetadataManager.storeGroup`: a record too large is an internal error
/// there; NOT_COORDINATOR and COORDINATOR_NOT_AVAILABLE pass through).
fn metadata_append_code(err: &GroupError) -> i16 {
    match err {
        GroupError::InvalidCommitOffsetSize => code::UNKNOWN_SERVER_ERROR,
        e => e.code(),
    }
}

/// A one-shot slot a parked request waits on. Per core.
struct Slot<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

impl<T> Slot<T> {
    fn new() -> Rc<Self> {
        Rc::new(Slot {
            value: RefCell::new(None),
            waker: RefCell::new(None),
        })
    }

    fn set(&self, v: T) {
        *self.value.borrow_mut() = Some(v);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

struct SlotWait<T>(Rc<Slot<T>>);

impl<T> Future for SlotWait<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(v) = self.0.value.borrow_mut().take() {
            return Poll::Ready(v);
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// "The timers may have changed" signal for the timer loop. Per core.
#[derive(Default)]
struct Changed {
    generation: Cell<u64>,
    waker: RefCell<Option<Waker>>,
}

impl Changed {
    fn notify(&self) {
        self.generation.set(self.generation.get() + 1);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

struct ChangedWait<'a> {
    changed: &'a Changed,
    seen: u64,
}

impl Future for ChangedWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.changed.generation.get() != self.seen {
            return Poll::Ready(());
        }
        *self.changed.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// What replaying one `__consumer_offsets` partition found (for the per-core start-up
/// summary). Plain data, returned to the core that loaded the partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadedPartition {
    pub records: usize,
    pub skipped: usize,
}

/// The group coordinator of one core, wired to its clock and offsets log. See module doc.
pub struct GroupService {
    coord: RefCell<GroupCoordinator>,
    clock: Rc<dyn Clock>,
    log: Rc<dyn OffsetsLog>,
    next_waiter: Cell<WaiterId>,
    joins: RefCell<HashMap<WaiterId, Rc<Slot<JoinResponse>>>>,
    syncs: RefCell<HashMap<WaiterId, Rc<Slot<SyncResponse>>>>,
    changed: Changed,
}

impl GroupService {
    pub fn new(coord: GroupCoordinator, clock: Rc<dyn Clock>, log: Rc<dyn OffsetsLog>) -> Self {
        GroupService {
            coord: RefCell::new(coord),
            clock,
            log,
            next_waiter: Cell::new(1),
            joins: RefCell::new(HashMap::new()),
            syncs: RefCell::new(HashMap::new()),
            changed: Changed::default(),
        }
    }

    /// Read access to the state machine (tests, metrics).
    pub fn with_coordinator<R>(&self, f: impl FnOnce(&GroupCoordinator) -> R) -> R {
        f(&self.coord.borrow())
    }

    /// The offsets partition of a group.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        self.coord.borrow().partition_for(group_id)
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn waiter(&self) -> WaiterId {
        let w = self.next_waiter.get();
        self.next_waiter.set(w + 1);
        w
    }

    /// Carries out effects in order; an answer after a failed append becomes
    /// COORDINATOR_NOT_AVAILABLE (the client rediscovers the coordinator and rejoins).
    async fn apply(&self, effects: Vec<Effect>) {
        self.changed.notify();
        let mut append_failed: Option<GroupError> = None;
        for e in effects {
            match e {
                Effect::Persist {
                    partition,
                    epoch,
                    records,
                } => {
                    if let Err(err) = self.append_in_epoch(partition, epoch, &records).await {
                        tracing::warn!(partition, epoch, %err, "group metadata append failed");
                        append_failed = Some(err);
                    }
                }
                Effect::Join { waiter, response } => {
                    let response = match &append_failed {
                        Some(err) if response.error_code == code::NONE => {
                            JoinResponse::error(metadata_append_code(err), response.member_id)
                        }
                        _ => response,
                    };
                    if let Some(slot) = self.joins.borrow_mut().remove(&waiter) {
                        slot.set(response);
                    }
                }
                Effect::Sync { waiter, response } => {
                    let response = match &append_failed {
                        Some(err) if response.error_code == code::NONE => {
                            SyncResponse::error(metadata_append_code(err))
                        }
                        _ => response,
                    };
                    if let Some(slot) = self.syncs.borrow_mut().remove(&waiter) {
                        slot.set(response);
                    }
                }
            }
        }
    }

    /// Answers parked requests at once (effects of an unload carry no appends).
    fn answer(&self, effects: Vec<Effect>) {
        self.changed.notify();
        for e in effects {
            match e {
                Effect::Join { waiter, response } => {
                    if let Some(slot) = self.joins.borrow_mut().remove(&waiter) {
                        slot.set(response);
                    }
                }
                Effect::Sync { waiter, response } => {
                    if let Some(slot) = self.syncs.borrow_mut().remove(&waiter) {
                        slot.set(response);
                    }
                }
                Effect::Persist { partition, .. } => {
                    panic!("an unload produced an append to offsets partition {partition}")
                }
            }
        }
    }

    /// Appends `records` to `partition` if it is still served in `epoch` (the state they
    /// describe belongs to that epoch); NOT_COORDINATOR otherwise.
    async fn append_in_epoch(
        &self,
        partition: i32,
        epoch: i32,
        records: &[OffsetsRecord],
    ) -> Result<(), GroupError> {
        if self.coord.borrow().active_epoch(partition) != Some(epoch) {
            return Err(GroupError::NotCoordinator);
        }
        self.log.append(partition, records, self.now()).await
    }

    // ------------------------------------------------------------ partitions

    /// Marks `partition` as loading right away, before its leadership is known (broker
    /// start): its groups answer COORDINATOR_LOAD_IN_PROGRESS instead of NOT_COORDINATOR
    /// until [`Self::on_leadership`] either loads it (leader) or drops it (follower).
    pub fn begin_load(&self, partition: i32) {
        if !self.coord.borrow().owns_partition(partition) {
            self.coord.borrow_mut().begin_load(partition, EPOCH_UNKNOWN);
        }
    }

    /// Leadership of `__consumer_offsets`/`partition` changed on this node (see
    /// [`GroupCoordinator::on_leadership`]). Answers the parked requests of an unloaded
    /// partition at once; when the result is [`LeadershipAction::Load`], the caller runs
    /// [`Self::load_partition_in_epoch`] (retrying while it is still wanted).
    pub fn on_leadership(&self, partition: i32, is_leader: bool, epoch: i32) -> LeadershipAction {
        let mut out = Vec::new();
        let served = self.coord.borrow().active_epoch(partition);
        let action = self
            .coord
            .borrow_mut()
            .on_leadership(partition, is_leader, epoch, &mut out);
        match (action, served) {
            (LeadershipAction::None, _) => {}
            // Start-up decides every partition once: those lines stay at debug.
            (LeadershipAction::Load { epoch }, None) => {
                tracing::debug!(
                    partition,
                    epoch,
                    "loading __consumer_offsets partition as its leader"
                )
            }
            (LeadershipAction::Unloaded, None) => {
                tracing::debug!(partition, "not the leader of __consumer_offsets partition")
            }
            (action, Some(old_epoch)) => tracing::info!(
                partition,
                old_epoch,
                epoch,
                reload = matches!(action, LeadershipAction::Load { .. }),
                "__consumer_offsets leadership moved; this partition's groups were unloaded"
            ),
        }
        self.answer(out);
        action
    }

    /// Whether `partition` is (still) loading in `epoch`.
    pub fn is_loading_in(&self, partition: i32, epoch: i32) -> bool {
        self.coord.borrow().loading_epoch(partition) == Some(epoch)
    }

    /// Whether `partition` is loading in any epoch (the log reader gives up waiting when not).
    pub fn is_loading(&self, partition: i32) -> bool {
        self.coord.borrow().loading_epoch(partition).is_some()
    }

    /// This core coordinates `partition` alone (one broker, or tests): loads it as its
    /// leader in epoch 0. See [`Self::load_partition_in_epoch`].
    pub async fn load_partition(&self, partition: i32) -> Result<LoadedPartition, GroupError> {
        if self.coord.borrow().loading_epoch(partition).is_none() {
            self.on_leadership(partition, true, 0);
        }
        let epoch = self.coord.borrow().loading_epoch(partition).unwrap_or(0);
        self.load_partition_in_epoch(partition, epoch).await
    }

    /// Replays `partition`'s log for leader epoch `epoch` (requests for its groups get
    /// COORDINATOR_LOAD_IN_PROGRESS meanwhile), then serves it. If the log cannot be read
    /// the partition stays loading (never served empty: that would lose committed offsets)
    /// and the error is returned for the caller to retry. If leadership moved while the log
    /// was read (the partition is no longer loading in `epoch`), nothing is applied and
    /// NOT_COORDINATOR is returned: the newer epoch has its own load.
    pub async fn load_partition_in_epoch(
        &self,
        partition: i32,
        epoch: i32,
    ) -> Result<LoadedPartition, GroupError> {
        if !self.is_loading_in(partition, epoch) {
            return Err(GroupError::NotCoordinator);
        }
        let records = self.log.read_all(partition).await?;
        if !self.is_loading_in(partition, epoch) {
            return Err(GroupError::NotCoordinator);
        }
        let loaded;
        {
            let mut c = self.coord.borrow_mut();
            let mut skipped = 0usize;
            for (k, v) in &records {
                if let Err(err) = c.load_record(partition, k, v.as_deref()) {
                    skipped += 1;
                    tracing::warn!(partition, %err, "skipping undecodable __consumer_offsets record");
                }
            }
            tracing::debug!(
                partition,
                records = records.len(),
                skipped,
                "loaded __consumer_offsets partition"
            );
            loaded = LoadedPartition {
                records: records.len(),
                skipped,
            };
        }
        let now = self.now();
        self.coord.borrow_mut().finish_load(partition, now);
        self.changed.notify();
        Ok(loaded)
    }

    /// This core stops coordinating `partition`.
    pub fn unload_partition(&self, partition: i32) {
        let mut out = Vec::new();
        self.coord.borrow_mut().unload(partition, &mut out);
        self.answer(out);
    }

    /// Fires due timers until `stopping()`; `sleep` is the executor's timer (glommio's in
    /// production). Spawn once per core.
    pub async fn run_timers<S, F>(&self, sleep: S, stopping: impl Fn() -> bool)
    where
        S: Fn(Duration) -> F,
        F: Future<Output = ()>,
    {
        while !stopping() {
            let seen = self.changed.generation.get();
            let now = self.now();
            let mut out = Vec::new();
            self.coord.borrow_mut().tick(now, &mut out);
            if !out.is_empty() {
                self.apply(out).await;
                continue;
            }
            let next = self.coord.borrow().next_deadline_ms();
            let wait = ChangedWait {
                changed: &self.changed,
                seen,
            };
            match next {
                Some(d) => {
                    // Wake at least every second to notice `stopping()`.
                    let ms = (d - now).clamp(0, 1000) as u64;
                    futures_lite::future::or(sleep(Duration::from_millis(ms)), wait).await;
                }
                None => futures_lite::future::or(sleep(Duration::from_secs(1)), wait).await,
            }
        }
    }

    /// Fires the timers due now once (tests; `run_timers` in production).
    pub async fn tick(&self) {
        let mut out = Vec::new();
        let now = self.now();
        self.coord.borrow_mut().tick(now, &mut out);
        self.apply(out).await;
    }

    // ------------------------------------------------------------ APIs

    pub async fn join(&self, req: JoinRequest) -> JoinResponse {
        let w = self.waiter();
        let slot = Slot::new();
        self.joins.borrow_mut().insert(w, slot.clone());
        let mut out = Vec::new();
        let now = self.now();
        self.coord.borrow_mut().join(now, req, w, &mut out);
        self.apply(out).await;
        SlotWait(slot).await
    }

    pub async fn sync(&self, req: SyncRequest) -> SyncResponse {
        let w = self.waiter();
        let slot = Slot::new();
        self.syncs.borrow_mut().insert(w, slot.clone());
        let mut out = Vec::new();
        let now = self.now();
        self.coord.borrow_mut().sync(now, req, w, &mut out);
        self.apply(out).await;
        SlotWait(slot).await
    }

    /// Heartbeat; returns the Kafka error code.
    pub fn heartbeat(&self, req: &HeartbeatRequest) -> i16 {
        let now = self.now();
        let r = self.coord.borrow_mut().heartbeat(now, req);
        self.changed.notify();
        match r {
            Ok(()) => code::NONE,
            Err(e) => e.code(),
        }
    }

    pub async fn leave(
        &self,
        group_id: &str,
        members: &[LeavingMember],
    ) -> Result<Vec<LeaveResult>, GroupError> {
        let mut out = Vec::new();
        let now = self.now();
        let r = self
            .coord
            .borrow_mut()
            .leave(now, group_id, members, &mut out);
        self.apply(out).await;
        r
    }

    /// OffsetCommit: (topic, partition, error code) per requested partition, in order.
    pub async fn commit(&self, req: &CommitRequest) -> Result<Vec<(String, i32, i16)>, GroupError> {
        let now = self.now();
        let prepared = self.coord.borrow_mut().prepare_commit(now, req)?;
        self.changed.notify();
        if !prepared.records.is_empty() {
            // acks=all: resolves once a majority of the partition's replicas has the
            // records (Raft commit); fails with NOT_COORDINATOR if leadership is lost first.
            if let Err(err) = self
                .append_in_epoch(
                    prepared.offsets_partition,
                    prepared.epoch,
                    &prepared.records,
                )
                .await
            {
                tracing::warn!(group = %req.group_id, %err, "offset commit append failed");
                return Ok(prepared
                    .results
                    .into_iter()
                    .map(|(t, p, c)| {
                        let c = if c == code::NONE { err.code() } else { c };
                        (t, p, c)
                    })
                    .collect());
            }
        }
        let results = prepared.results.clone();
        if !self.coord.borrow_mut().apply_commit(now, prepared) {
            // Leadership moved during the append: the records are durable (whoever loads
            // the partition next replays them), but this core no longer serves the group.
            tracing::info!(group = %req.group_id, "offset commit durable after the coordinator moved");
        }
        Ok(results)
    }

    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<FetchedOffset>, GroupError> {
        self.coord.borrow().fetch_offsets(group_id, topics)
    }

    /// ListGroups of this core: (error code, groups).
    pub fn list_groups(&self, states: &[String], types: &[String]) -> (i16, Vec<ListedGroup>) {
        let c = self.coord.borrow();
        let err = if c.any_loading() {
            code::COORDINATOR_LOAD_IN_PROGRESS
        } else {
            code::NONE
        };
        (err, c.list_groups(states, types))
    }

    pub fn describe(&self, group_id: &str) -> Result<DescribedGroup, GroupError> {
        self.coord.borrow().describe(group_id)
    }

    /// DeleteGroups for one group: the Kafka error code.
    pub async fn delete_group(&self, group_id: &str) -> i16 {
        let mut out = Vec::new();
        let r = self.coord.borrow_mut().delete_group(group_id, &mut out);
        self.apply(out).await;
        match r {
            Ok(()) => code::NONE,
            Err(e) => e.code(),
        }
    }

    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<(String, i32, i16)>, GroupError> {
        let mut out = Vec::new();
        let r = self
            .coord
            .borrow_mut()
            .delete_offsets(group_id, partitions, &mut out);
        self.apply(out).await;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::GroupConfig;
    use freshet_storage::ManualClock;
    use futures_lite::future::block_on;

    /// An in-memory `__consumer_offsets`: records per partition, optionally failing, with a
    /// gate that holds appends and reads in flight (to move leadership meanwhile).
    #[derive(Default)]
    struct MemLog {
        parts: RefCell<HashMap<i32, Vec<KeyValue>>>,
        fail: Cell<bool>,
        /// The error the next appends fail with (what the engine's write path reports).
        fail_with: RefCell<Option<GroupError>>,
        hold: Cell<bool>,
        held: RefCell<Vec<Waker>>,
    }

    impl MemLog {
        fn release(&self) {
            self.hold.set(false);
            for w in self.held.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// Pending while the log's gate is closed.
    struct Gate<'a>(&'a MemLog);

    impl Future for Gate<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0.hold.get() {
                self.0.held.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }
    }

    impl OffsetsLog for MemLog {
        fn append<'a>(
            &'a self,
            partition: i32,
            records: &'a [OffsetsRecord],
            _ts: i64,
        ) -> LocalFuture<'a, Result<(), GroupError>> {
            Box::pin(async move {
                Gate(self).await;
                if self.fail.get() {
                    return Err(GroupError::CoordinatorNotAvailable);
                }
                if let Some(e) = self.fail_with.borrow().clone() {
                    return Err(e);
                }
                let mut p = self.parts.borrow_mut();
                let v = p.entry(partition).or_default();
                for r in records {
                    v.push((r.key.clone(), r.value.clone()));
                }
                Ok(())
            })
        }

        fn read_all(&self, partition: i32) -> LocalFuture<'_, Result<Vec<KeyValue>, GroupError>> {
            Box::pin(async move {
                Gate(self).await;
                Ok(self
                    .parts
                    .borrow()
                    .get(&partition)
                    .cloned()
                    .unwrap_or_default())
            })
        }
    }

    fn service(log: Rc<MemLog>, clock: Rc<ManualClock>) -> GroupService {
        let cfg = GroupConfig {
            initial_rebalance_delay_ms: 0,
            min_session_timeout_ms: 100,
            offsets_topic_num_partitions: 2,
            ..GroupConfig::default()
        };
        let svc = GroupService::new(GroupCoordinator::new(cfg, 3), clock, log);
        block_on(async {
            svc.load_partition(0).await.unwrap();
            svc.load_partition(1).await.unwrap();
        });
        svc
    }

    fn join_req(member_id: &str) -> JoinRequest {
        JoinRequest {
            group_id: "grp".into(),
            member_id: member_id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 1000,
            rebalance_timeout_ms: 2000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    /// Join (two round trips, KIP-394), wait for the initial delay, sync, commit; restart
    /// the service on the same log: the group and its offsets come back.
    #[test]
    fn commit_then_restart_resumes_from_the_log() {
        let log = Rc::new(MemLog::default());
        let clock = Rc::new(ManualClock::new(1_000));
        let svc = service(log.clone(), clock.clone());
        block_on(async {
            let r = svc.join(join_req("")).await;
            assert_eq!(r.error_code, code::MEMBER_ID_REQUIRED);
            let member = r.member_id;
            let join = svc.join(join_req(&member));
            let mut join = std::pin::pin!(join);
            // Parked until the (zero) initial delay fires on the next tick.
            assert!(futures_lite::future::poll_once(join.as_mut())
                .await
                .is_none());
            svc.tick().await;
            let r = join.await;
            assert_eq!((r.error_code, r.generation_id), (code::NONE, 1));
            let s = svc
                .sync(SyncRequest {
                    group_id: "grp".into(),
                    generation_id: 1,
                    member_id: member.clone(),
                    group_instance_id: None,
                    protocol_type: None,
                    protocol_name: None,
                    assignments: vec![(member.clone(), Bytes::from_static(b"asg"))],
                })
                .await;
            assert_eq!(s.assignment, Bytes::from_static(b"asg"));
            let res = svc
                .commit(&CommitRequest {
                    group_id: "grp".into(),
                    generation_id: 1,
                    member_id: member.clone(),
                    group_instance_id: None,
                    partitions: vec![CommitPartition {
                        topic: "t".into(),
                        partition: 2,
                        offset: 77,
                        leader_epoch: 0,
                        metadata: None,
                    }],
                })
                .await
                .unwrap();
            assert_eq!(res, vec![("t".to_string(), 2, code::NONE)]);
        });
        let p = svc.partition_for("grp");
        assert_eq!(
            log.parts.borrow()[&p].len(),
            2,
            "group record + offset record"
        );
        drop(svc);

        clock.advance_ms(500);
        let svc = service(log.clone(), clock.clone());
        let f = svc
            .fetch_offsets("grp", Some(&[("t".into(), vec![2])]))
            .unwrap();
        assert_eq!(f[0].offset, 77);
        let d = svc.describe("grp").unwrap();
        assert_eq!(d.state, "Stable");
        assert_eq!(d.members[0].assignment, Bytes::from_static(b"asg"));
    }

    #[test]
    fn failed_commit_append_reports_an_error_and_does_not_apply() {
        let log = Rc::new(MemLog::default());
        let clock = Rc::new(ManualClock::new(0));
        let svc = service(log.clone(), clock);
        log.fail.set(true);
        let req = CommitRequest {
            group_id: "grp".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            partitions: vec![CommitPartition {
                topic: "t".into(),
                partition: 0,
                offset: 5,
                leader_epoch: -1,
                metadata: None,
            }],
        };
        let res = block_on(svc.commit(&req)).unwrap();
        assert_eq!(res[0].2, code::COORDINATOR_NOT_AVAILABLE);
        let f = svc
            .fetch_offsets("grp", Some(&[("t".into(), vec![0])]))
            .unwrap();
        assert_eq!(f[0].offset, -1);
    }

    fn simple_commit(offset: i64) -> CommitRequest {
        CommitRequest {
            group_id: "grp".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            partitions: vec![CommitPartition {
                topic: "t".into(),
                partition: 0,
                offset,
                leader_epoch: -1,
                metadata: None,
            }],
        }
    }

    fn fetched(svc: &GroupService) -> Result<i64, GroupError> {
        svc.fetch_offsets("grp", Some(&[("t".into(), vec![0])]))
            .map(|f| f[0].offset)
    }

    /// Kafka `GroupMetadataManager.storeOffsets`: an append that fails because the offsets
    /// partition lost its leader (NOT_LEADER_OR_FOLLOWER) is answered NOT_COORDINATOR, so the
    /// consumer finds the new coordinator and commits there.
    #[test]
    fn commit_answers_not_coordinator_when_leadership_is_lost_during_the_append() {
        let log = Rc::new(MemLog::default());
        let svc = service(log.clone(), Rc::new(ManualClock::new(0)));
        let p = svc.partition_for("grp");
        block_on(async {
            log.hold.set(true);
            let req = simple_commit(5);
            let mut commit = std::pin::pin!(svc.commit(&req));
            assert!(futures_lite::future::poll_once(commit.as_mut())
                .await
                .is_none());
            // The Raft group elects another node while the proposal is in flight; the
            // engine's write path fails it with NOT_LEADER_OR_FOLLOWER (6).
            assert_eq!(svc.on_leadership(p, false, 1), LeadershipAction::Unloaded);
            *log.fail_with.borrow_mut() = Some(super::super::error::from_append_code(6));
            log.release();
            let res = commit.await.unwrap();
            assert_eq!(res, vec![("t".to_string(), 0, code::NOT_COORDINATOR)]);
        });
        assert_eq!(fetched(&svc), Err(GroupError::NotCoordinator));
        // Regaining leadership later replays the log, which does not have the commit.
        *log.fail_with.borrow_mut() = None;
        assert_eq!(
            svc.on_leadership(p, true, 2),
            LeadershipAction::Load { epoch: 2 }
        );
        block_on(svc.load_partition_in_epoch(p, 2)).unwrap();
        assert_eq!(fetched(&svc), Ok(-1));
    }

    /// A commit that became durable (majority) while leadership moved is acknowledged (it is
    /// in the log) but not applied to state this node no longer owns; whoever loads the
    /// partition next (here: this node again, in a newer epoch) replays it.
    #[test]
    fn a_commit_durable_as_leadership_moves_is_acknowledged_and_left_to_the_next_load() {
        let log = Rc::new(MemLog::default());
        let svc = service(log.clone(), Rc::new(ManualClock::new(0)));
        let p = svc.partition_for("grp");
        block_on(async {
            log.hold.set(true);
            let req = simple_commit(9);
            let mut commit = std::pin::pin!(svc.commit(&req));
            assert!(futures_lite::future::poll_once(commit.as_mut())
                .await
                .is_none());
            svc.on_leadership(p, false, 1);
            log.release();
            assert_eq!(
                commit.await.unwrap(),
                vec![("t".to_string(), 0, code::NONE)]
            );
        });
        assert_eq!(fetched(&svc), Err(GroupError::NotCoordinator));
        svc.on_leadership(p, true, 3);
        assert_eq!(fetched(&svc), Err(GroupError::LoadInProgress));
        block_on(svc.load_partition_in_epoch(p, 3)).unwrap();
        assert_eq!(fetched(&svc), Ok(9));
    }

    /// A replay overtaken by another leadership change is dropped: it neither serves the
    /// partition nor disturbs the newer state (Kafka: a load for an old epoch is skipped).
    #[test]
    fn a_replay_overtaken_by_a_leadership_change_is_discarded() {
        let log = Rc::new(MemLog::default());
        let clock = Rc::new(ManualClock::new(0));
        let svc = service(log.clone(), clock);
        let p = svc.partition_for("grp");
        block_on(svc.commit(&simple_commit(3))).unwrap();
        svc.on_leadership(p, false, 1);
        assert_eq!(
            svc.on_leadership(p, true, 2),
            LeadershipAction::Load { epoch: 2 }
        );
        block_on(async {
            log.hold.set(true);
            let mut load = std::pin::pin!(svc.load_partition_in_epoch(p, 2));
            assert!(futures_lite::future::poll_once(load.as_mut())
                .await
                .is_none());
            svc.on_leadership(p, false, 3);
            log.release();
            assert_eq!(load.await, Err(GroupError::NotCoordinator));
        });
        assert_eq!(fetched(&svc), Err(GroupError::NotCoordinator));
        // A load for an epoch that is not the one wanted does nothing either.
        svc.on_leadership(p, true, 4);
        assert_eq!(
            block_on(svc.load_partition_in_epoch(p, 2)),
            Err(GroupError::NotCoordinator)
        );
        assert_eq!(fetched(&svc), Err(GroupError::LoadInProgress));
        block_on(svc.load_partition_in_epoch(p, 4)).unwrap();
        assert_eq!(fetched(&svc), Ok(3));
    }

    /// Kafka `storeGroup`: when the group record cannot be written because the coordinator
    /// lost the offsets partition, SyncGroup is answered NOT_COORDINATOR (not the assignment).
    #[test]
    fn sync_answers_not_coordinator_when_the_group_record_append_loses_leadership() {
        let log = Rc::new(MemLog::default());
        let svc = service(log.clone(), Rc::new(ManualClock::new(0)));
        let p = svc.partition_for("grp");
        block_on(async {
            let member = svc.join(join_req("")).await.member_id;
            let mut join = std::pin::pin!(svc.join(join_req(&member)));
            assert!(futures_lite::future::poll_once(join.as_mut())
                .await
                .is_none());
            svc.tick().await;
            assert_eq!(join.await.generation_id, 1);
            log.hold.set(true);
            let req = SyncRequest {
                group_id: "grp".into(),
                generation_id: 1,
                member_id: member.clone(),
                group_instance_id: None,
                protocol_type: None,
                protocol_name: None,
                assignments: vec![(member.clone(), Bytes::from_static(b"asg"))],
            };
            let mut sync = std::pin::pin!(svc.sync(req));
            assert!(futures_lite::future::poll_once(sync.as_mut())
                .await
                .is_none());
            svc.on_leadership(p, false, 1);
            *log.fail_with.borrow_mut() = Some(GroupError::NotCoordinator);
            log.release();
            let r = sync.await;
            assert_eq!(r.error_code, code::NOT_COORDINATOR);
            assert!(r.assignment.is_empty());
        });
    }

    /// Effects are carried out in order and an append can wait; state computed in one leader
    /// epoch must not reach the log in a later one. Offset expiry (KIP-211) tombstones two
    /// partitions in one pass; while the first append is in flight the second partition
    /// changes hands and comes back in a newer epoch: its tombstones are not written.
    #[test]
    fn appends_computed_in_an_old_epoch_are_not_written_in_a_new_one() {
        let log = Rc::new(MemLog::default());
        let clock = Rc::new(ManualClock::new(0));
        let svc = service(log.clone(), clock.clone());
        // Expiry appends partition by partition in ascending order: `first` is appended
        // (and held) before `second`.
        let on = |p: i32| {
            (0..100)
                .map(|i| format!("grp-{i}"))
                .find(|g| svc.partition_for(g) == p)
                .expect("a group on each partition")
        };
        let (first, second) = (0, 1);
        let other_group = on(second);
        let mut commit = simple_commit(1);
        commit.group_id = on(first);
        block_on(svc.commit(&commit)).unwrap();
        commit.group_id = other_group.clone();
        block_on(svc.commit(&commit)).unwrap();
        let records_of = |p: i32| log.parts.borrow().get(&p).map_or(0, Vec::len);
        assert_eq!((records_of(first), records_of(second)), (1, 1));
        // Past offsets.retention.minutes and the check interval: both offsets expire.
        clock.advance_ms(GroupConfig::default().offsets_retention_ms + 1);
        block_on(async {
            log.hold.set(true);
            let mut tick = std::pin::pin!(svc.tick());
            assert!(futures_lite::future::poll_once(tick.as_mut())
                .await
                .is_none());
            // The expiry pass dropped both groups from memory and waits on its first append.
            // Meanwhile `second` moves away and back (epoch 2) and is replayed: its offset is
            // still in the log, so it is served again.
            svc.on_leadership(second, false, 1);
            svc.on_leadership(second, true, 2);
            log.hold.set(false);
            svc.load_partition_in_epoch(second, 2).await.unwrap();
            log.release();
            tick.await;
        });
        assert_eq!(
            records_of(first),
            3,
            "offset, its tombstone, group tombstone"
        );
        assert_eq!(
            records_of(second),
            1,
            "no tombstone from the old epoch in the new one"
        );
        assert_eq!(
            svc.fetch_offsets(&other_group, Some(&[("t".into(), vec![0])]))
                .unwrap()[0]
                .offset,
            1,
            "memory and log agree in epoch 2"
        );
    }
}
