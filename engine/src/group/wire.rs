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
use super::coordinator::GroupCoordinator;
use super::error::GroupError;
use super::service::{GroupService, KeyValue, LoadedPartition, LocalFuture, OffsetsLog};
use super::{partition_for_group, OffsetsRecord, OFFSETS_TOPIC};
use crate::partition::Acks;
use crate::shard::Shard;
use crate::TopicError;

/// Bytes read per step while replaying an offsets partition.
const LOAD_READ_BYTES: usize = 1 << 20;

/// `__consumer_offsets` partitions of one core, through the normal partition write path
/// (acks=all: an append returns once durable) and read path. Holds a `Weak` shard so the
/// shard → extension → log chain is not a cycle.
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
            shard
                .local_replicate(OFFSETS_TOPIC, partition, batch, Acks::All)
                .await
                .map(|_| ())
                .map_err(|code| {
                    tracing::warn!(partition, code, "__consumer_offsets append failed");
                    GroupError::CoordinatorNotAvailable
                })
        })
    }

    fn read_all(&self, partition: i32) -> LocalFuture<'_, Result<Vec<KeyValue>, GroupError>> {
        Box::pin(async move {
            let shard = self.shard()?;
            // The partition opens on this core shortly after the topic appears in metadata.
            let p = loop {
                if let Some(p) = shard.partition(OFFSETS_TOPIC, partition) {
                    break p;
                }
                if shard.stopping() {
                    return Err(GroupError::CoordinatorNotAvailable);
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            };
            let mut out = Vec::new();
            let mut offset = p.offsets().log_start_offset;
            loop {
                let data = p.read(offset, LOAD_READ_BYTES).await.map_err(|e| {
                    tracing::error!(partition, error = %e, "__consumer_offsets read failed");
                    GroupError::CoordinatorNotAvailable
                })?;
                if data.records.is_empty() || offset >= data.offsets.high_watermark {
                    break;
                }
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
                        Ok(recs) => out.extend(recs.into_iter().filter_map(
                            |(k, v): (Option<Bytes>, Option<Bytes>)| k.map(|k| (k, v)),
                        )),
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
        })
    }
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

/// Starts the group coordinator on this core: creates `__consumer_offsets` (core 0), marks
/// this core's offsets partitions as loading, replays them in the background, and starts the
/// timer loop. Call once per core after `Shard::start`, before accepting connections.
pub async fn start_core(shard: &Rc<Shard>) {
    let svc = service(shard);
    let n = shard.config().groups.offsets_topic_num_partitions;
    let owned: Vec<i32> = (0..n)
        .filter(|p| shard.owner_of(OFFSETS_TOPIC, *p) == shard.core())
        .collect();
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
                match shard.create_topic(OFFSETS_TOPIC.to_string(), n, configs).await {
                    Ok(_) | Err(TopicError::AlreadyExists(_)) => {}
                    Err(e) => tracing::error!(error = %e, "cannot create __consumer_offsets"),
                }
            }
        }
    }
    // Every core waits until the topic's partitions are open (created by core 0).
    while shard.metadata().topic(OFFSETS_TOPIC).is_none() && !shard.stopping() {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // One INFO summary per core once all its partitions are loaded (per partition: debug).
    let core = shard.core();
    let partitions = owned.len();
    let remaining = Rc::new(Cell::new(partitions));
    let total = Rc::new(Cell::new(LoadedPartition::default()));
    for p in owned {
        let svc = svc.clone();
        let weak = Rc::downgrade(shard);
        let remaining = remaining.clone();
        let total = total.clone();
        glommio::spawn_local(async move {
            let loaded = loop {
                match svc.load_partition(p).await {
                    Ok(loaded) => break loaded,
                    Err(e) => {
                        if weak.upgrade().is_none_or(|s| s.stopping()) {
                            return;
                        }
                        tracing::error!(partition = p, error = %e, "loading __consumer_offsets failed; retrying");
                        glommio::timer::sleep(Duration::from_millis(500)).await;
                    }
                }
            };
            let sum = total.get();
            total.set(LoadedPartition {
                records: sum.records + loaded.records,
                skipped: sum.skipped + loaded.skipped,
            });
            remaining.set(remaining.get() - 1);
            if remaining.get() == 0 {
                let sum = total.get();
                tracing::info!(
                    core,
                    partitions,
                    records = sum.records,
                    skipped = sum.skipped,
                    "loaded this core's __consumer_offsets partitions"
                );
            }
        })
        .detach();
    }
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
