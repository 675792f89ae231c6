//! Wiring of the group coordinator into the broker: the per-core [`GroupService`] on the
//! [`Shard`], `__consumer_offsets` as its log, and a [`GroupRouter`] over the channel mesh.
//!
//! Everything here is per core (`Rc`/`Weak` of that core's `Shard`); only [`GroupCall`] /
//! [`GroupReply`] values cross cores, inside `Shard::invoke_on`.

use std::cell::Cell;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::call::{GroupCall, GroupReply, GroupRouter};
use super::coordinator::{GroupCoordinator, LeadershipAction, EPOCH_UNKNOWN};
use super::error::{from_append_code, GroupError};
use super::service::{GroupService, KeyValue, LocalFuture, OffsetsLog};
use super::{partition_for_group, OffsetsRecord, OFFSETS_TOPIC};
use crate::partition::{Acks, Partition};
use crate::shard::Shard;
use crate::TopicError;

/// Bytes read per step while replaying an offsets partition.
const LOAD_READ_BYTES: usize = 1 << 20;

/// Largest read window a replay step grows to when a window holds no record batch (only
/// Raft-internal entries before a large batch); far above any batch the broker accepts.
const LOAD_READ_BYTES_MAX: usize = 1 << 30;

/// How often each core re-checks the leadership of its `__consumer_offsets` partitions
/// against the engine (a safety net under [`on_partition_leadership`], which the engine calls
/// on every change; it also covers a partition that is not open yet or not on this node).
const LEADERSHIP_CHECK_INTERVAL_MS: u64 = 200;

/// Kafka's REQUEST_TIMED_OUT error code (an append that outlived `offsets.commit.timeout.ms`).
const REQUEST_TIMED_OUT: i16 = 7;

/// Pause between attempts to replay a partition whose log could not be read.
const LOAD_RETRY_MS: u64 = 500;

/// `__consumer_offsets` partitions of one core, through the normal partition write path
/// (acks=all: an append returns once a majority of the replicas has it) and read path. Holds
/// a `Weak` shard so the shard → extension → log chain is not a cycle.
struct ShardOffsetsLog {
    shard: Weak<Shard>,
}

impl ShardOffsetsLog {
    fn shard(&self) -> Result<Rc<Shard>, GroupError> {
        self.shard
            .upgrade()
            .ok_or(GroupError::CoordinatorNotAvailable)
    }
}

impl OffsetsLog for ShardOffsetsLog {
    fn append<'a>(
        &'a self,
        partition: i32,
        records: &'a [OffsetsRecord],
        timestamp_ms: i64,
    ) -> LocalFuture<'a, Result<(), GroupError>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(());
            }
            let shard = self.shard()?;
            let kv: Vec<freshet_raft::batch::RecordKv<'_>> = records
                .iter()
                .map(|r| (Some(&r.key[..]), r.value.as_deref()))
                .collect();
            let batch = freshet_raft::batch::encode_batch(0, timestamp_ms, -1, &kv);
            let timeout_ms = shard.config().groups.offsets_commit_timeout_ms.max(0) as u64;
            let append = async {
                shard
                    .local_replicate(OFFSETS_TOPIC, partition, batch, Acks::All)
                    .await
                    .map(|_| ())
                    .map_err(|code| {
                        tracing::warn!(partition, code, "__consumer_offsets append failed");
                        from_append_code(code)
                    })
            };
            let timeout = async {
                glommio::timer::sleep(Duration::from_millis(timeout_ms)).await;
                tracing::warn!(
                    partition,
                    timeout_ms,
                    "__consumer_offsets append not committed in offsets.commit.timeout.ms"
                );
                // Kafka: REQUEST_TIMED_OUT → COORDINATOR_NOT_AVAILABLE.
                Err(from_append_code(REQUEST_TIMED_OUT))
            };
            futures_lite::future::or(append, timeout).await
        })
    }

    /// Every record of `partition` up to the high watermark once this replica may serve them
    /// all ([`replay_offsets_partition`]), after waiting for the partition to open here.
    fn read_all(&self, partition: i32) -> LocalFuture<'_, Result<Vec<KeyValue>, GroupError>> {
        Box::pin(async move {
            let shard = self.shard()?;
            let svc = service(&shard);
            let still_loading = || svc.is_loading(partition) && !shard.stopping();
            let p = loop {
                if let Some(p) = shard.partition(OFFSETS_TOPIC, partition) {
                    break p;
                }
                if !still_loading() {
                    return Err(GroupError::NotCoordinator);
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            };
            replay_offsets_partition(&p, still_loading).await
        })
    }
}

/// Every record of the offsets partition `p` (this core's replica) up to the high watermark,
/// once this replica applied an entry of its own term and the high watermark has reached the
/// log end seen when the replay started. On a new Raft leader the entries of earlier terms
/// count as committed only once an entry of its own term is (Raft §5.4.2; raft-rs proposes an
/// empty entry on election), so waiting for that makes the replay cover every acknowledged
/// commit (§5.4.1: the leader's log holds them all); until then [`Partition::read`] returns
/// no records even where the high watermark (what it applied as a follower) already covers
/// the log end. Gives up with NOT_COORDINATOR as soon as `still_loading()` turns false
/// (leadership moved again). Runs on `p`'s core.
pub async fn replay_offsets_partition(
    p: &Partition,
    still_loading: impl Fn() -> bool,
) -> Result<Vec<KeyValue>, GroupError> {
    let partition = p.index;
    let target = p.offsets().log_end_offset;
    loop {
        let seen = p.hw_generation();
        if p.own_term_applied() && p.offsets().high_watermark >= target {
            break;
        }
        if !still_loading() {
            return Err(GroupError::NotCoordinator);
        }
        futures_lite::future::or(p.wait_hw_change(seen), async {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        })
        .await;
    }
    let mut out = Vec::new();
    let mut offset = p.offsets().log_start_offset;
    let mut read_bytes = LOAD_READ_BYTES;
    loop {
        let data = p.read(offset, read_bytes).await.map_err(|e| {
            tracing::error!(partition, error = %e, "__consumer_offsets read failed");
            from_append_code(e.kafka_code())
        })?;
        if offset >= data.offsets.high_watermark {
            break;
        }
        if data.records.is_empty() {
            // Below the high watermark but nothing came back: the window held only
            // Raft-internal entries (left out of Kafka reads) and the next record
            // batch did not fit. Read a larger window.
            if read_bytes >= LOAD_READ_BYTES_MAX {
                tracing::error!(
                    partition,
                    offset,
                    "__consumer_offsets read returns nothing below the high watermark"
                );
                return Err(GroupError::CoordinatorNotAvailable);
            }
            read_bytes *= 2;
            continue;
        }
        read_bytes = LOAD_READ_BYTES;
        let batches = freshet_raft::batch::split_batches(data.records).map_err(|e| {
            tracing::error!(partition, error = %e, "__consumer_offsets batch framing");
            GroupError::CoordinatorNotAvailable
        })?;
        let before = offset;
        for (h, batch) in batches {
            offset = offset.max(h.base_offset + h.offset_count() as i64);
            if h.is_control() {
                continue;
            }
            match freshet_raft::batch::records(&batch) {
                Ok(recs) => out.extend(
                    recs.into_iter()
                        .filter_map(|(k, v): (Option<Bytes>, Option<Bytes>)| k.map(|k| (k, v))),
                ),
                Err(e) => tracing::warn!(
                    partition,
                    base_offset = h.base_offset,
                    error = %e,
                    "skipping undecodable __consumer_offsets batch"
                ),
            }
        }
        assert!(
            offset > before,
            "offsets partition {partition} read made no progress at {before}"
        );
    }
    Ok(out)
}

/// What this core's loads found since the last summary line. Per core.
#[derive(Default)]
struct LoadSummary {
    partitions: Cell<usize>,
    records: Cell<usize>,
    skipped: Cell<usize>,
}

/// The core's group service, created on first use.
pub fn service(shard: &Rc<Shard>) -> Rc<GroupService> {
    shard.extension(|| {
        let cfg = shard.config().groups.clone();
        let seed = (shard.clock().now_ms() as u64)
            ^ ((shard.core() as u64) << 48)
            ^ ((std::process::id() as u64) << 20);
        GroupService::new(
            GroupCoordinator::new(cfg, seed),
            shard.clock().clone(),
            Rc::new(ShardOffsetsLog {
                shard: Rc::downgrade(shard),
            }),
        )
    })
}

/// Engine → groups: the Raft status of `topic`/`partition` on this core changed (leader or
/// term), or the partition was closed on this core (`is_leader = false`). Call on the core
/// owning the partition; returns at once (a no-op for other topics). Becoming leader spawns
/// the replay of the partition (its groups answer COORDINATOR_LOAD_IN_PROGRESS meanwhile);
/// losing it unloads the partition's groups (NOT_COORDINATOR). Idempotent; `epoch` is the
/// partition's leader epoch (Raft term).
pub fn on_partition_leadership(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    is_leader: bool,
    epoch: i32,
) {
    if topic != OFFSETS_TOPIC {
        return;
    }
    apply_leadership(shard, partition, is_leader, epoch);
}

fn apply_leadership(shard: &Rc<Shard>, partition: i32, is_leader: bool, epoch: i32) {
    let svc = service(shard);
    if shard.stopping() {
        // Shutdown closes every partition: answer parked requests NOT_COORDINATOR quietly
        // (no "leadership moved" line per partition) and load nothing.
        if !is_leader {
            svc.unload_partition(partition);
        }
        return;
    }
    // Broker start, election still running (no leader known yet): the partition stays
    // "loading" (COORDINATOR_LOAD_IN_PROGRESS) until the outcome is reported.
    let electing = || {
        shard
            .partition(OFFSETS_TOPIC, partition)
            .is_some_and(|p| p.leader_node().is_none())
    };
    if !is_leader && svc.is_loading_in(partition, EPOCH_UNKNOWN) && electing() {
        return;
    }
    if let LeadershipAction::Load { epoch } = svc.on_leadership(partition, is_leader, epoch) {
        spawn_load(shard, svc, partition, epoch);
    }
}

/// Replays `partition` for `epoch` in the background, retrying while that load is still the
/// wanted one (a partition is never served empty by mistake).
fn spawn_load(shard: &Rc<Shard>, svc: Rc<GroupService>, partition: i32, epoch: i32) {
    let weak = Rc::downgrade(shard);
    glommio::spawn_local(async move {
        let loaded = loop {
            if !svc.is_loading_in(partition, epoch) || weak.upgrade().is_none_or(|s| s.stopping())
            {
                return;
            }
            match svc.load_partition_in_epoch(partition, epoch).await {
                Ok(loaded) => break loaded,
                Err(GroupError::NotCoordinator) => return,
                Err(e) => {
                    tracing::error!(partition, epoch, error = %e, "loading __consumer_offsets failed; retrying");
                    glommio::timer::sleep(Duration::from_millis(LOAD_RETRY_MS)).await;
                }
            }
        };
        let Some(shard) = weak.upgrade() else { return };
        let sum = shard.extension(LoadSummary::default);
        sum.partitions.set(sum.partitions.get() + 1);
        sum.records.set(sum.records.get() + loaded.records);
        sum.skipped.set(sum.skipped.get() + loaded.skipped);
        // One INFO line per core once nothing is loading any more (per partition: debug).
        if !svc.with_coordinator(|c| c.any_loading()) {
            tracing::info!(
                core = shard.core(),
                partitions = sum.partitions.replace(0),
                records = sum.records.replace(0),
                skipped = sum.skipped.replace(0),
                "loaded __consumer_offsets partitions this core now coordinates"
            );
        }
    })
    .detach();
}

/// The engine's view of this node's role for `__consumer_offsets`/`partition` on this core:
/// `Some((is_leader, epoch))`, or `None` while undecided (the partition is assigned here but
/// not open yet, or its Raft group has no known leader). A partition not assigned to this
/// node is "not leader".
fn leadership_of(shard: &Shard, partition: i32) -> Option<(bool, i32)> {
    if let Some(p) = shard.partition(OFFSETS_TOPIC, partition) {
        p.leader_node()?;
        return Some((p.is_leader(), p.leader_epoch()));
    }
    let meta = shard.metadata();
    let topic = meta.topic(OFFSETS_TOPIC)?;
    let me = shard.config().node_id;
    match topic.assignment(partition) {
        Some(a) if a.is_holder(me) => None,
        _ => Some((false, EPOCH_UNKNOWN)),
    }
}

/// Starts the group coordinator on this core: creates `__consumer_offsets` (core 0), marks
/// this core's offsets partitions as loading (until their leadership is known), and starts
/// the leadership check and the timer loop. Call once per core after `Shard::start`, before
/// accepting connections.
pub async fn start_core(shard: &Rc<Shard>) {
    let svc = service(shard);
    let n = shard.config().groups.offsets_topic_num_partitions;
    let owned: Vec<i32> = (0..n)
        .filter(|p| shard.owner_of(OFFSETS_TOPIC, *p) == shard.core())
        .collect();
    // (`begin_load` leaves alone a partition the engine already reported on.)
    for p in &owned {
        svc.begin_load(*p);
    }
    if shard.core() == 0 {
        match shard.metadata().topic(OFFSETS_TOPIC).map(|t| t.partitions) {
            Some(have) if have != n => tracing::error!(
                have,
                configured = n,
                "__consumer_offsets exists with a different partition count; groups are placed by the configured count"
            ),
            Some(_) => {}
            None => {
                let configs = vec![
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("retention.ms".to_string(), "-1".to_string()),
                ];
                match shard
                    .create_topic(OFFSETS_TOPIC.to_string(), n, -1, None, configs)
                    .await
                {
                    Ok(_) | Err(TopicError::AlreadyExists(_)) => {}
                    Err(e) => tracing::error!(error = %e, "cannot create __consumer_offsets"),
                }
            }
        }
    }
    // Every core waits until the topic exists (created by core 0).
    while shard.metadata().topic(OFFSETS_TOPIC).is_none() && !shard.stopping() {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    let weak = Rc::downgrade(shard);
    glommio::spawn_local(async move {
        loop {
            let Some(shard) = weak.upgrade().filter(|s| !s.stopping()) else {
                return;
            };
            for p in &owned {
                if let Some((is_leader, epoch)) = leadership_of(&shard, *p) {
                    apply_leadership(&shard, *p, is_leader, epoch);
                }
            }
            drop(shard);
            glommio::timer::sleep(Duration::from_millis(LEADERSHIP_CHECK_INTERVAL_MS)).await;
        }
    })
    .detach();
    let weak = Rc::downgrade(shard);
    glommio::spawn_local(async move {
        svc.run_timers(glommio::timer::sleep, move || {
            weak.upgrade().is_none_or(|s| s.stopping())
        })
        .await
    })
    .detach();
}

/// Routes group calls to the owning core over the mesh (`Shard::invoke_on`).
pub struct ShardRouter {
    shard: Rc<Shard>,
}

impl ShardRouter {
    pub fn new(shard: Rc<Shard>) -> Self {
        ShardRouter { shard }
    }
}

impl GroupRouter for ShardRouter {
    fn cores(&self) -> usize {
        self.shard.cores()
    }

    fn core_of_group(&self, group_id: &str) -> usize {
        let n = self.shard.config().groups.offsets_topic_num_partitions;
        self.shard
            .owner_of(OFFSETS_TOPIC, partition_for_group(group_id, n))
    }

    fn call(&self, core: usize, call: GroupCall) -> LocalFuture<'_, GroupReply> {
        Box::pin(async move {
            let fallback = call.error_reply(GroupError::CoordinatorNotAvailable);
            self.shard
                .invoke_on(core, move |s: Rc<Shard>| async move {
                    service(&s).dispatch(call).await
                })
                .await
                .unwrap_or(fallback)
        })
    }
}
