//! Partition reassignment (KIP-455) on Raft membership changes (Raft thesis §4), with four
//! brokers' Raft runtimes talking over real loopback TCP inside one executor.
//!
//! The controller and the metadata broadcast are played by the test (a `PartitionAssignment`
//! it changes the way the controller's AlterReassignment / CompleteReassignment commands do,
//! and an "apply metadata" that opens the replicas the assignment's holders need — joining
//! ones with no voters, as `Shard::apply_metadata` does — and deletes the others). The
//! leader-side steps are the engine's own `freshet_engine::reassign::next_step`, carried out
//! on the leader's runtime. A producer keeps writing with acks=all to whichever replica
//! leads, the whole time; every acknowledged batch must be in the final log at its offset,
//! byte for byte, on every final replica.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet_engine::metadata::{raft_node_id, PartitionAssignment};
use freshet_engine::partition::{Acks, Partition, PartitionRaft};
use freshet_engine::reassign::{next_step, Step};
use freshet_raft::batch::split_batches;
use freshet_storage::batch::build_batch;

mod common {
    pub mod raft_mesh;
}
use common::raft_mesh::{partition_spec, raft_mesh, wait_until};

const GROUP: u64 = 9;
const BROKERS: i32 = 4;

/// One broker: its Raft runtime and, while it holds one, its replica of the partition.
struct Broker {
    id: i32,
    raft: PartitionRaft,
    partition: Rc<RefCell<Option<Rc<Partition>>>>,
}

impl Broker {
    fn p(&self) -> Option<Rc<Partition>> {
        self.partition.borrow().clone()
    }
}

struct Cluster {
    brokers: Vec<Broker>,
    dir: std::path::PathBuf,
    /// The partition's assignment as the controller would hold it.
    meta: RefCell<PartitionAssignment>,
}

/// A batch of `records` records whose values carry `tag` (so each acked batch is
/// recognisable in the final log).
fn batch(records: usize, tag: u8) -> Bytes {
    Bytes::from(build_batch(records, 8, 1_700_000_000_000, tag))
}

async fn start(dir: &std::path::Path, replicas: Vec<i32>) -> Rc<Cluster> {
    let nodes: Vec<u64> = (0..BROKERS).map(raft_node_id).collect();
    let mut brokers = Vec::new();
    for (b, (raft, slot)) in (0..BROKERS).zip(raft_mesh(&nodes)) {
        brokers.push(Broker {
            id: b,
            raft,
            partition: slot,
        });
    }
    let c = Rc::new(Cluster {
        brokers,
        dir: dir.to_path_buf(),
        meta: RefCell::new(PartitionAssignment::new(GROUP, replicas)),
    });
    c.apply_metadata().await;
    c
}

impl Cluster {
    /// What every broker does when it applies the metadata: holders open their replica
    /// (outside `replicas`: joining, no voters), others delete theirs.
    async fn apply_metadata(&self) {
        let a = self.meta.borrow().clone();
        for b in &self.brokers {
            match (a.is_holder(b.id), b.p()) {
                (true, Some(p)) => p.set_replicas(a.desired().to_vec()),
                (true, None) => {
                    let joining = !a.replicas.contains(&b.id);
                    let spec = partition_spec(
                        "t",
                        [1; 16],
                        GROUP,
                        if joining {
                            Vec::new()
                        } else {
                            a.replicas.clone()
                        },
                        self.dir.join(format!("broker-{}", b.id)),
                        2,
                    );
                    let p = Partition::open(
                        spec,
                        b.raft.clone(),
                        raft_node_id(b.id),
                        freshet_engine::system_clock(),
                    )
                    .await
                    .expect("partition opens");
                    p.set_replicas(a.desired().to_vec());
                    if let Some(st) = b.raft.status(GROUP) {
                        p.on_status(&st);
                    }
                    *b.partition.borrow_mut() = Some(p);
                }
                (false, Some(_)) => {
                    let p = b.partition.borrow_mut().take().expect("open");
                    p.close(true).await.expect("replica deleted");
                }
                (false, None) => {}
            }
        }
    }

    fn leader(&self) -> Option<(&Broker, Rc<Partition>)> {
        self.brokers
            .iter()
            .find_map(|b| b.p().filter(|p| p.is_leader()).map(|p| (b, p)))
    }

    /// The controller applies AlterPartitionReassignments (a target, or `None` = cancel).
    async fn alter(&self, target: Option<Vec<i32>>) {
        {
            let mut a = self.meta.borrow_mut();
            let old = a.target.take().unwrap_or_default();
            if let Some(t) = target {
                a.target = Some(t);
            }
            for b in old {
                if !a.retiring.contains(&b) {
                    a.retiring.push(b);
                }
            }
            let keep: Vec<i32> = a
                .retiring
                .iter()
                .copied()
                .filter(|b| !a.replicas.contains(b) && !a.desired().contains(b))
                .collect();
            a.retiring = keep;
        }
        self.apply_metadata().await;
    }

    /// One driver pass on the leader (what `reassign::poll_once` does on its core); returns
    /// the step taken. A CompleteReassignment goes to the "controller" here.
    async fn drive_once(&self) -> Step {
        let Some((b, p)) = self.leader() else {
            return Step::Wait;
        };
        let Some(st) = p.status() else {
            return Step::Wait;
        };
        let a = self.meta.borrow().clone();
        let step = next_step(raft_node_id(b.id), &st, &a);
        match &step {
            Step::Idle | Step::Wait => {}
            Step::Change { voters, learners } => {
                // NotLeader / InProgress / Superseded: the next pass looks again.
                let _ = b
                    .raft
                    .change_membership(GROUP, voters.clone(), learners.clone())
                    .await;
            }
            Step::Transfer(to) => {
                b.raft.transfer_leader(GROUP, *to);
                glommio::timer::sleep(Duration::from_millis(200)).await;
            }
            Step::Complete(replicas) => {
                {
                    let mut a = self.meta.borrow_mut();
                    assert_eq!(a.desired(), replicas.as_slice());
                    a.replicas = replicas.clone();
                    a.target = None;
                    a.retiring.clear();
                }
                self.apply_metadata().await;
            }
        }
        step
    }

    /// Drives until the metadata has no reassignment left; returns the steps taken.
    async fn drive_to_completion(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        let start = Instant::now();
        loop {
            let step = self.drive_once().await;
            if !matches!(step, Step::Wait | Step::Idle) {
                steps.push(step);
            }
            let a = self.meta.borrow().clone();
            if a.target.is_none() && a.retiring.is_empty() {
                return steps;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "reassignment did not finish: {a:?}, steps {steps:?}"
            );
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Produces acks=all batches to whichever replica leads until `stop`, retrying on
/// NOT_LEADER_OR_FOLLOWER / NOT_ENOUGH_REPLICAS; returns every acknowledged
/// (base offset, tag, records).
async fn produce_until(c: Rc<Cluster>, stop: Rc<RefCell<bool>>) -> Vec<(i64, u8, usize)> {
    let mut acked = Vec::new();
    let mut n: u32 = 0;
    while !*stop.borrow() {
        let tag = b'a' + (n % 26) as u8;
        let records = 1 + (n % 4) as usize;
        let Some((_, p)) = c.leader() else {
            glommio::timer::sleep(Duration::from_millis(5)).await;
            continue;
        };
        match p.replicate(batch(records, tag), Acks::All).await {
            Ok(o) => {
                assert_eq!(o.last_offset - o.base_offset + 1, records as i64);
                acked.push((o.base_offset, tag, records));
                n += 1;
            }
            Err(e) => {
                assert!(
                    [6, 19].contains(&e.kafka_code()),
                    "only retriable errors while moving: {e}"
                );
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    acked
}

/// Every acknowledged batch is in `p`'s log at its offset with its content, offsets are
/// dense.
async fn check_every_ack(p: &Partition, acked: &[(i64, u8, usize)], who: &str) {
    let mut by_base: BTreeMap<i64, Bytes> = BTreeMap::new();
    let mut next = 0i64;
    loop {
        let got = p.read_committed(next, 1 << 20).await.expect("readable");
        let batches = split_batches(got.records.clone()).expect("whole batches");
        if batches.is_empty() {
            break;
        }
        for (h, b) in batches {
            assert_eq!(h.base_offset, next, "{who}: offsets are dense");
            next = h.base_offset + i64::from(h.offset_count());
            by_base.insert(h.base_offset, b);
        }
    }
    for (base, tag, records) in acked {
        let b = by_base
            .get(base)
            .unwrap_or_else(|| panic!("{who}: acked batch at {base} missing"));
        let expected = batch(*records, *tag);
        // Same records (the header's base offset and leader epoch differ by placement).
        assert_eq!(&b[57..], &expected[57..], "{who}: batch at {base} differs");
    }
}

async fn final_replicas_agree(c: &Cluster, acked: &[(i64, u8, usize)], expected: &[i32]) {
    let a = c.meta.borrow().clone();
    assert_eq!(a.replicas, expected);
    let holders: Vec<i32> = c
        .brokers
        .iter()
        .filter(|b| b.p().is_some())
        .map(|b| b.id)
        .collect();
    let mut want = expected.to_vec();
    want.sort_unstable();
    assert_eq!(holders, want, "only the final replicas keep the partition");
    let (_, lp) = c.leader().expect("a leader");
    let st = lp.status().unwrap();
    let mut voters: Vec<u64> = expected.iter().map(|b| raft_node_id(*b)).collect();
    voters.sort_unstable();
    assert_eq!(st.voters, voters, "Raft voters = the new replicas");
    assert!(st.learners.is_empty() && st.voters_outgoing.is_empty());
    let hw = lp.high_watermark();
    for b in &c.brokers {
        if let Some(p) = b.p() {
            wait_until("replica caught up", 15, || p.high_watermark() == hw).await;
            check_every_ack(&p, acked, &format!("broker {}", b.id)).await;
        }
    }
}

fn run_scenario(
    name: &str,
    f: impl FnOnce(Rc<Cluster>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
        + Send
        + 'static,
    replicas: Vec<i32>,
) {
    let dir = std::env::temp_dir().join(format!("freshet-reassign-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let c = start(&d, replicas).await;
            wait_until("a leader", 15, || c.leader().is_some()).await;
            f(c.clone()).await;
            for b in &c.brokers {
                b.raft.stop().await;
            }
        })
        .unwrap()
        .join()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// KIP-455: [0,1,2] → [3,1,2] while acks=all writes go on, with the leader on broker 0 —
/// the replica that leaves. Broker 3 joins as a learner, catches up, becomes a voter; the
/// leader hands over to it (thesis §3.10) and the new leader drops broker 0; broker 0 then
/// deletes its replica. Every acknowledged record is on every final replica.
#[test]
fn a_partition_moves_off_its_leaders_broker_while_acks_all_writes_continue() {
    run_scenario(
        "leaves",
        |c| {
            Box::pin(async move {
                // Put the leadership on broker 0, the replica that leaves.
                wait_until("broker 0 leads", 15, || {
                    if let Some((b, p)) = c.leader() {
                        if b.id != 0 && p.status().is_some_and(|s| s.in_sync.len() == 3) {
                            b.raft.transfer_leader(GROUP, raft_node_id(0));
                        }
                    }
                    c.leader().is_some_and(|(b, _)| b.id == 0)
                })
                .await;
                let stop = Rc::new(RefCell::new(false));
                let producer = glommio::spawn_local(produce_until(c.clone(), stop.clone()));
                glommio::timer::sleep(Duration::from_millis(300)).await;
                c.alter(Some(vec![3, 1, 2])).await;
                let steps = c.drive_to_completion().await;
                assert!(
                    steps.iter().any(|s| matches!(s, Step::Transfer(4))),
                    "the leaving leader handed over to broker 3: {steps:?}"
                );
                glommio::timer::sleep(Duration::from_millis(300)).await;
                *stop.borrow_mut() = true;
                let acked = producer.await;
                assert!(acked.len() > 20, "writes went on: {} acked", acked.len());
                final_replicas_agree(&c, &acked, &[3, 1, 2]).await;
            })
        },
        vec![0, 1, 2],
    );
}

/// KIP-455: [0,1,2] → [1,2,3] with a leader that stays (learner, then one joint change),
/// under acks=all writes; then a second move back to [0,1,2] is cancelled after its learner
/// joined: the configuration returns to [1,2,3] and broker 0, retiring, deletes its replica
/// once the leader reported it.
#[test]
fn a_partition_moves_under_writes_and_a_cancelled_move_goes_back() {
    run_scenario(
        "cancel",
        |c| {
            Box::pin(async move {
                let stop = Rc::new(RefCell::new(false));
                let producer = glommio::spawn_local(produce_until(c.clone(), stop.clone()));
                glommio::timer::sleep(Duration::from_millis(200)).await;
                c.alter(Some(vec![1, 2, 3])).await;
                c.drive_to_completion().await;
                assert_eq!(c.meta.borrow().replicas, vec![1, 2, 3]);
                assert!(c.brokers[0].p().is_none(), "broker 0 deleted its replica");
                // Start moving back to [0,1,2], let broker 0 join as a learner, cancel.
                c.alter(Some(vec![0, 1, 2])).await;
                let start = Instant::now();
                loop {
                    c.drive_once().await;
                    let st = c.leader().and_then(|(_, p)| p.status());
                    if st.is_some_and(|s| s.learners == vec![raft_node_id(0)]) {
                        break;
                    }
                    assert!(
                        start.elapsed() < Duration::from_secs(15),
                        "learner never added"
                    );
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
                c.alter(None).await;
                assert_eq!(c.meta.borrow().retiring, vec![0]);
                assert!(
                    c.brokers[0].p().is_some(),
                    "a retiring broker keeps its replica"
                );
                c.drive_to_completion().await;
                *stop.borrow_mut() = true;
                let acked = producer.await;
                assert!(acked.len() > 20, "writes went on: {} acked", acked.len());
                final_replicas_agree(&c, &acked, &[1, 2, 3]).await;
            })
        },
        vec![0, 1, 2],
    );
}
