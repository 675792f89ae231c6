//! Three replicas of one partition, each on its own Raft runtime, talking over real loopback
//! TCP inside one executor: the engine's `Partition` on top of `freshet_raft::runtime`.
//! Checks the Kafka face of a replicated partition: only the leader serves produce and
//! fetch (NOT_LEADER_OR_FOLLOWER elsewhere), acknowledged batches get dense Kafka offsets and
//! reach every replica byte for byte (Raft §5.3 Log Matching, seen through the offset
//! translation that hides the Raft-internal no-ops), acks=all needs min.insync.replicas in
//! sync (NOT_ENOUGH_REPLICAS), an idempotent producer's retry is a duplicate even on a new
//! leader (KIP-98), and after the leader goes away a new one continues the offsets with a
//! higher leader epoch (Raft §5.2, §5.4).

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet_engine::config::TopicConfig;
use freshet_engine::partition::{Acks, Partition, PartitionRaft};
use freshet_raft::batch::split_batches;
use freshet_storage::batch::build_batch;

mod common {
    pub mod raft_mesh;
}
use common::raft_mesh::{partition_spec, raft_mesh, wait_until};

const GROUP: u64 = 7;

struct Replica {
    node: u64,
    raft: PartitionRaft,
    partition: Rc<RefCell<Option<Rc<Partition>>>>,
}

impl Replica {
    fn p(&self) -> Rc<Partition> {
        self.partition.borrow().clone().expect("open")
    }

    /// Opens this replica's partition on its runtime (log directory `<dir>/node-<n>`, Raft
    /// state in its MetaStore), as a starting or restarted node would.
    async fn open(&self, dir: &Path, min_insync_replicas: i32) -> Rc<Partition> {
        let spec = partition_spec(
            "t",
            [1; 16],
            GROUP,
            vec![0, 1, 2],
            dir.join(format!("node-{}", self.node)),
            min_insync_replicas,
        );
        let p = Partition::open(
            spec,
            self.raft.clone(),
            self.node,
            freshet_engine::system_clock(),
        )
        .await
        .expect("partition opens");
        *self.partition.borrow_mut() = Some(p.clone());
        if let Some(st) = self.raft.status(GROUP) {
            p.on_status(&st);
        }
        p
    }

    /// Closes this replica's partition (its Raft runtime keeps running): the node is gone.
    async fn close(&self) {
        let p = self.partition.borrow_mut().take().expect("open");
        p.close(false).await.unwrap();
    }
}

/// Waits until one of `candidates` leads (Raft §5.2); returns it.
async fn wait_leader<'a>(
    what: &str,
    candidates: impl IntoIterator<Item = &'a Replica> + Clone,
) -> &'a Replica {
    let leader = || candidates.clone().into_iter().find(|r| r.p().is_leader());
    wait_until(what, 15, || leader().is_some()).await;
    leader().unwrap()
}

/// An idempotent producer's batch (producer id 42, epoch 0, base sequence `seq`).
fn idempotent_batch(records: usize, seq: i32) -> Bytes {
    let mut b = build_batch(records, 8, 1_700_000_000_000, b'i');
    b[43..51].copy_from_slice(&42i64.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

fn batch(records: usize) -> Bytes {
    Bytes::from(build_batch(records, 8, 1_700_000_000_000, b'x'))
}

/// Kafka base offsets of the batches in fetched bytes.
fn bases(records: &Bytes) -> Vec<i64> {
    split_batches(records.clone())
        .expect("whole batches")
        .iter()
        .map(|(h, _)| h.base_offset)
        .collect()
}

async fn start_replicas(dir: &Path) -> Vec<Replica> {
    let mut replicas = Vec::new();
    for (node, (raft, slot)) in (1..=3u64).zip(raft_mesh(&[1, 2, 3])) {
        let r = Replica {
            node,
            raft,
            partition: slot,
        };
        r.open(dir, 2).await;
        replicas.push(r);
    }
    replicas
}

/// Runs `scenario` on one executor with three fresh replicas (data under
/// `<tmp>/<name>-<pid>`, removed afterwards), then stops their Raft runtimes.
fn with_three_replicas(name: &str, scenario: impl AsyncFnOnce(&[Replica], &Path) + Send + 'static) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let replicas = start_replicas(&d).await;
            scenario(&replicas, &d).await;
            for r in &replicas {
                r.raft.stop().await;
            }
        })
        .unwrap()
        .join()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_partition_replicated_three_ways_serves_kafka_only_from_its_leader_and_survives_losing_it() {
    with_three_replicas(
        "freshet-replicated",
        async |replicas: &[Replica], d: &Path| {
            let leader = wait_leader("a leader", replicas).await;
            let lp = leader.p();
            let epoch_1 = lp.leader_epoch();
            assert!(epoch_1 >= 1, "leader epoch is the Raft term");
            // Followers answer NOT_LEADER_OR_FOLLOWER (6) to produce and fetch.
            for f in replicas.iter().filter(|r| r.node != leader.node) {
                let e = f.p().replicate(batch(1), Acks::All).await.unwrap_err();
                assert_eq!(e.kafka_code(), 6);
                assert_eq!(f.p().read(0, 1 << 20).await.unwrap_err().kafka_code(), 6);
            }
            // acks=all: committed on a majority; dense Kafka offsets (no-ops take none).
            let a = lp
                .replicate(idempotent_batch(3, 0), Acks::All)
                .await
                .unwrap();
            let b = lp.replicate(batch(2), Acks::All).await.unwrap();
            let c = lp.replicate(batch(1), Acks::Leader).await.unwrap();
            assert_eq!((a.base_offset, a.last_offset), (0, 2));
            assert_eq!((b.base_offset, b.last_offset), (3, 4));
            assert_eq!(c.base_offset, 5);
            wait_until("hw 6 on the leader", 15, || lp.high_watermark() == 6).await;
            let got = lp.read(0, 1 << 20).await.unwrap();
            assert_eq!(bases(&got.records), vec![0, 3, 5]);
            assert_eq!(lp.list_offset(-1).await.unwrap(), (-1, 6));
            assert_eq!(lp.list_offset(-2).await.unwrap(), (-1, 0));
            // Every replica holds the same batches at the same Kafka offsets (§5.3).
            for r in replicas {
                let p = r.p();
                wait_until("followers' hw", 15, || p.high_watermark() == 6).await;
                let theirs = p.read_committed(0, 1 << 20).await.unwrap();
                assert_eq!(theirs.records, got.records, "node {}", r.node);
            }
            // KIP-98: a retried batch is answered with its original offsets.
            let dup = lp
                .replicate(idempotent_batch(3, 0), Acks::All)
                .await
                .unwrap();
            assert_eq!((dup.base_offset, dup.last_offset), (0, 2));
            // One follower gone: 2 in sync still meets min.insync.replicas = 2 ...
            let gone = replicas.iter().find(|r| r.node != leader.node).unwrap();
            gone.close().await;
            let six = lp.replicate(batch(1), Acks::All).await.unwrap();
            assert_eq!(six.base_offset, 6);
            // ... but not min.insync.replicas = 3: NOT_ENOUGH_REPLICAS (19) once the
            // follower dropped out of the in-sync set; acks=1 is still accepted.
            lp.set_config(TopicConfig::default().effective(&TopicConfig::default()), 3);
            wait_until("in-sync set shrinks", 15, || {
                lp.status().is_some_and(|s| s.in_sync.len() == 2)
            })
            .await;
            let e = lp.replicate(batch(1), Acks::All).await.unwrap_err();
            assert_eq!(e.kafka_code(), 19);
            let one = lp.replicate(batch(1), Acks::Leader).await.unwrap();
            assert_eq!(one.base_offset, 7);
            lp.set_config(TopicConfig::default().effective(&TopicConfig::default()), 1);
            // The closed follower comes back (same log, state in its MetaStore): it
            // rejoins and catches up.
            let reopened = gone.open(d, 2).await;
            wait_until("rejoined follower catches up", 15, || {
                reopened.high_watermark() == 8
            })
            .await;
            // The leader goes away: the two others elect a new one (higher term), which
            // continues the offsets and knows the idempotent producer (KIP-98).
            leader.close().await;
            let others = replicas.iter().filter(|r| r.node != leader.node);
            let nl = wait_leader("a new leader", others).await.p();
            assert!(nl.leader_epoch() > epoch_1, "new term, new epoch");
            // A new leader counts a follower in sync once it heard from it.
            wait_until("new leader's in-sync set", 15, || {
                nl.status().is_some_and(|s| s.in_sync.len() == 2)
            })
            .await;
            let dup = nl
                .replicate(idempotent_batch(3, 0), Acks::All)
                .await
                .unwrap();
            assert_eq!((dup.base_offset, dup.last_offset), (0, 2));
            let e = nl.replicate(batch(2), Acks::All).await.unwrap();
            assert_eq!(e.base_offset, 8);
            let all = nl.read(0, 1 << 20).await.unwrap();
            assert_eq!(bases(&all.records), vec![0, 3, 5, 6, 7, 8]);
            // OffsetForLeaderEpoch: the first term ends where the new leader's began.
            assert_eq!(nl.end_offset_for_epoch(epoch_1).1, 8);
        },
    );
}

/// ListOffsets earliest on a leader: a new leader answers OFFSET_NOT_AVAILABLE (78,
/// KIP-207) until it applied an entry of its own term; nothing else is accepted.
async fn earliest(p: &Partition) -> i64 {
    let start = Instant::now();
    loop {
        match p.list_offset(-2).await {
            Ok((_, o)) => return o,
            Err(e) => assert_eq!(e.kafka_code(), 78, "only OFFSET_NOT_AVAILABLE: {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "leader never ready"
        );
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// KIP-107 across replicas: DeleteRecords' log start travels through the partition's Raft
/// log (a log start control entry, no Kafka offset), so every replica serves exactly the
/// same log start: a follower that applied it, a lagging follower that caught up by a
/// position-only snapshot (Raft §7) and then applied it, and a new leader elected right after
/// the old one answered DeleteRecords (it answers OFFSET_NOT_AVAILABLE, KIP-207, until it
/// applied an entry of its own term, never an older start).
#[test]
fn delete_records_log_start_is_exact_on_every_replica_across_snapshot_and_failover() {
    with_three_replicas(
        "freshet-logstart",
        async |replicas: &[Replica], d: &Path| {
            let a = wait_leader("a leader", replicas).await;
            let others: Vec<_> = replicas.iter().filter(|r| r.node != a.node).collect();
            let (b, c) = (others[0], others[1]);
            let ap = a.p();
            assert_eq!(earliest(&ap).await, 0);
            // C lags: closed while 4,000 records arrive (batches of 128, so 3,000 lies inside
            // the batch 2,944..=3,071).
            c.close().await;
            for _ in 0..31 {
                ap.replicate(batch(128), Acks::All).await.unwrap();
            }
            let last = ap.replicate(batch(32), Acks::All).await.unwrap();
            assert_eq!(last.last_offset, 3999);
            // DeleteRecords(3000): answered with exactly 3000 once committed.
            let timeout = Duration::from_secs(10);
            assert_eq!(ap.delete_records(3000, timeout).await.unwrap(), 3000);
            assert_eq!(ap.list_offset(-2).await.unwrap(), (-1, 3000));
            let e = ap.read(2999, 1 << 20).await.unwrap_err();
            assert_eq!(
                e.kafka_code(),
                1,
                "below the log start: OFFSET_OUT_OF_RANGE"
            );
            let got = ap.read(3000, 1 << 20).await.unwrap();
            assert_eq!(
                bases(&got.records)[0],
                2944,
                "the batch holding 3000 stays whole"
            );
            // No Kafka offset was taken by the log start entry.
            assert_eq!(
                ap.replicate(batch(1), Acks::All).await.unwrap().base_offset,
                4000
            );
            // B applies it on commit and compacts its own log (anchor at the batch base).
            let bp = b.p();
            wait_until("B applies the log start", 15, || {
                bp.offsets().log_start_offset == 3000
                    && b.raft
                        .status(GROUP)
                        .is_some_and(|s| s.log_start_kafka == 3000)
                    && b.raft.stats().compactions > 0
            })
            .await;
            // C returns below both logs' start: it installs a snapshot (a position only),
            // then applies the log start entry that follows it.
            let installed = c.raft.stats().snapshots_installed;
            let cp = c.open(d, 1).await;
            wait_until("C catches up by snapshot", 15, || {
                cp.high_watermark() == 4001 && c.raft.stats().snapshots_installed > installed
            })
            .await;
            wait_until("C's log start", 15, || {
                cp.offsets().log_start_offset == 3000
            })
            .await;
            // Failover right after DeleteRecords(3500) was answered: whoever leads next
            // serves from exactly 3500.
            assert_eq!(ap.delete_records(3500, timeout).await.unwrap(), 3500);
            a.close().await;
            let nl = wait_leader("a new leader", [b, c]).await.p();
            assert_eq!(earliest(&nl).await, 3500, "new leader's log start");
            assert_eq!(nl.read(3499, 1 << 20).await.unwrap_err().kafka_code(), 1);
            assert_eq!(
                nl.read(3500, 1 << 20)
                    .await
                    .unwrap()
                    .offsets
                    .log_start_offset,
                3500
            );
            for r in [b, c] {
                let p = r.p();
                wait_until("both replicas at 3500", 15, || {
                    p.offsets().log_start_offset == 3500
                })
                .await;
            }
            // Retention and new writes carry on from there.
            assert_eq!(
                nl.replicate(batch(1), Acks::All).await.unwrap().base_offset,
                4001
            );
            // A client cannot forge a log start entry: its batch is refused (INVALID_RECORD).
            let forged = nl
                .replicate(freshet_raft::batch::log_start_batch(4002), Acks::All)
                .await
                .unwrap_err();
            assert_eq!(forged.kafka_code(), 87);
            assert_eq!(nl.offsets().log_start_offset, 3500);
            // KIP-98: a retry sent while the original is still being appended is answered
            // with the original's offsets (not DUPLICATE_SEQUENCE_NUMBER).
            let (x, y) = futures_lite::future::zip(
                nl.replicate(idempotent_batch(3, 0), Acks::All),
                nl.replicate(idempotent_batch(3, 0), Acks::All),
            )
            .await;
            let (x, y) = (x.unwrap(), y.unwrap());
            assert_eq!((x.base_offset, x.last_offset), (4002, 4004));
            assert_eq!((y.base_offset, y.last_offset), (4002, 4004));
            // A replica reopened (recovery scan of its log) serves the same exact start: the
            // log start entry is re-applied from the log, no file of its own.
            let follower = [b, c].into_iter().find(|r| !r.p().is_leader()).unwrap();
            follower.close().await;
            let back = follower.open(d, 1).await;
            wait_until("reopened replica's log start", 15, || {
                back.offsets().log_start_offset == 3500 && back.high_watermark() == 4005
            })
            .await;
        },
    );
}
