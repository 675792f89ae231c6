//! Scenario tests of log compaction and partition snapshots (Raft §7) on the multi-Raft
//! driver, the simulated network and in-memory logs.

use bytes::Bytes;
use freshet_raft::batch::{encode_batch, split_batches};
use freshet_raft::log::{GroupLog, MemLog};
use freshet_raft::meta::{GroupMeta, MemMetaStore, MetaStore};
use freshet_raft::multiraft::{Event, MultiRaft, RaftConfig};
use freshet_raft::rng::SimRng;
use freshet_raft::sim::{NetConfig, SimNetwork, SimTransport};
use futures_lite::future::block_on;

type Driver = MultiRaft<MemLog, MemMetaStore, SimTransport>;

const TICK_MS: u64 = 10;

struct Cluster {
    net: SimNetwork,
    nodes: Vec<Option<Driver>>,
    logs: Vec<MemLog>,
    metas: Vec<MemMetaStore>,
    now_ms: u64,
    events: Vec<Event>,
    rng: SimRng,
}

impl Cluster {
    /// `nodes` nodes, one group (0), small caches so catch-up reads come from the log.
    fn new(nodes: usize) -> Self {
        let net = SimNetwork::new(
            NetConfig {
                drop_per_million: 0,
                duplicate_per_million: 0,
                delay_min_ms: 1,
                delay_max_ms: 2,
            },
            3,
        );
        let mut c = Cluster {
            net,
            nodes: (0..nodes).map(|_| None).collect(),
            logs: (0..nodes).map(|_| MemLog::new()).collect(),
            metas: (0..nodes).map(|_| MemMetaStore::default()).collect(),
            now_ms: 0,
            events: Vec::new(),
            rng: SimRng::new(5),
        };
        for i in 0..nodes {
            c.start(i);
        }
        c
    }

    fn start(&mut self, i: usize) {
        let id = i as u64 + 1;
        let mut cfg = RaftConfig::new(id);
        cfg.heartbeat_ticks = 3;
        cfg.election_ticks = 15;
        cfg.max_size_per_msg_bytes = 1024;
        cfg.cache_bytes_max = 0;
        cfg.fetch_bytes_max = 4096;
        cfg.seed = 11 + self.now_ms;
        let voters: Vec<u64> = (1..=self.nodes.len() as u64).collect();
        let mut d = MultiRaft::new(cfg, self.metas[i].clone(), self.net.transport(id));
        block_on(d.open_group(0, &voters, self.logs[i].clone())).unwrap();
        self.nodes[i] = Some(d);
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.logs[i].crash(&mut self.rng);
    }

    fn node(&mut self, i: usize) -> &mut Driver {
        self.nodes[i].as_mut().expect("node is up")
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now_ms += 1;
            self.net.set_now(self.now_ms);
            for env in self.net.deliver_due() {
                if let Some(d) = self.nodes[(env.to - 1) as usize].as_mut() {
                    d.step(env);
                }
            }
            for n in self.nodes.iter_mut().flatten() {
                if self.now_ms.is_multiple_of(TICK_MS) {
                    n.tick();
                }
                block_on(n.process_ready()).unwrap();
                self.events.extend(n.take_events());
            }
        }
    }

    fn wait_leader(&mut self) -> usize {
        for _ in 0..1000 {
            if let Some(l) = (0..self.nodes.len())
                .find(|i| self.nodes[*i].as_ref().is_some_and(|d| d.is_leader(0)))
            {
                return l;
            }
            self.run_ms(10);
        }
        panic!("no leader after 10 s");
    }

    fn others(&self, i: usize) -> Vec<u64> {
        (1..=self.nodes.len() as u64)
            .filter(|id| *id != i as u64 + 1)
            .collect()
    }

    /// Every batch of node `i`'s log: (log offset, term, bytes).
    fn log_of(&self, i: usize) -> Vec<(i64, i32, Bytes)> {
        let log = &self.logs[i];
        let bytes = block_on(log.read(log.log_start_offset(), usize::MAX, i64::MAX)).unwrap();
        split_batches(bytes)
            .unwrap()
            .into_iter()
            .map(|(h, b)| (h.base_offset, h.partition_leader_epoch, b))
            .collect()
    }

    fn committed(&self) -> Vec<(u64, i64)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Committed {
                    token,
                    kafka_offset,
                    ..
                } => Some((*token, *kafka_offset)),
                _ => None,
            })
            .collect()
    }
}

fn batch(records: usize, tag: u8) -> Bytes {
    let v = [tag; 16];
    let recs: Vec<_> = (0..records).map(|_| (None, Some(&v[..]))).collect();
    encode_batch(0, 0, -1, &recs)
}

#[test]
fn follower_behind_the_leaders_log_start_catches_up_by_snapshot_section_7() {
    let mut c = Cluster::new(3);
    let l = c.wait_leader();
    c.run_ms(50);
    let f = (l + 1) % 3;
    c.net.partition(&[f as u64 + 1], &c.others(f));
    // 30 batches of 2 records while the follower is cut off: Kafka offsets 0..60.
    for t in 0..30u64 {
        c.node(l).propose(0, batch(2, t as u8), t).unwrap();
        c.run_ms(3);
    }
    c.run_ms(100);
    assert_eq!(c.node(l).high_watermark(0), Some(60));
    // DeleteRecords-like: drop everything below Kafka offset 41 (inside the batch 40..42).
    let start = block_on(c.node(l).compact(0, 41)).unwrap();
    assert_eq!(start, Some(40), "the batch holding offset 41 stays whole");
    let third = 3 - l - f;
    assert_eq!(block_on(c.node(third).compact(0, 41)).unwrap(), Some(40));
    assert_eq!(
        c.node(l).status(0).unwrap().log_start_kafka,
        40,
        "the log start moved on the leader"
    );
    c.net.heal();
    c.run_ms(1_500);
    let (_, lc, ll) = c.node(l).progress(0).unwrap();
    let (_, fc, fl) = c.node(f).progress(0).unwrap();
    assert_eq!((fc, fl), (lc, ll), "follower caught up");
    assert!(c.node(l).stats().snapshots_sent >= 1);
    assert_eq!(c.node(f).stats().snapshots_installed, 1);
    // The follower's log restarted at the leader's anchor and matches it byte for byte.
    assert_eq!(
        c.logs[f].log_start_offset(),
        c.logs[l].log_start_offset(),
        "follower log starts at the snapshot's anchor"
    );
    assert_eq!(
        c.log_of(f),
        c.log_of(l),
        "Log Matching (§5.3) above the start"
    );
    assert_eq!(c.node(f).high_watermark(0), Some(60));
    let st = c.node(f).group_state(0).unwrap();
    assert_eq!(st.borrow().anchor.kafka_offset, 40);
    assert_eq!(
        st.borrow().kafka_to_log(39),
        None,
        "below the log start: gone"
    );
    // New writes replicate to the restarted follower at dense Kafka offsets.
    c.node(l).propose(0, batch(1, 99), 99).unwrap();
    c.run_ms(200);
    assert!(c.committed().contains(&(99, 60)));
    assert_eq!(c.node(f).high_watermark(0), Some(61));
    assert_eq!(c.log_of(f), c.log_of(l));
}

#[test]
fn compaction_never_passes_the_applied_index_and_survives_a_restart_section_7() {
    let mut c = Cluster::new(3);
    let l = c.wait_leader();
    c.run_ms(50);
    for t in 0..10u64 {
        c.node(l).propose(0, batch(3, t as u8), t).unwrap();
    }
    c.run_ms(200);
    assert_eq!(c.node(l).high_watermark(0), Some(30));
    // Far beyond the high watermark: capped at the applied entries (the log empties).
    for i in 0..3 {
        assert_eq!(block_on(c.node(i).compact(0, 1_000)).unwrap(), Some(30));
        assert_eq!(c.logs[i].log_start_offset(), c.logs[i].next_offset());
    }
    assert_eq!(
        block_on(c.node(l).compact(7, 0)).unwrap(),
        None,
        "unknown group"
    );
    for i in 0..3 {
        c.crash(i);
    }
    for i in 0..3 {
        c.start(i);
    }
    let l = c.wait_leader();
    c.run_ms(50);
    c.node(l).propose(0, batch(1, 42), 42).unwrap();
    c.run_ms(200);
    assert!(
        c.committed().contains(&(42, 30)),
        "Kafka offsets continue from the anchor after a restart"
    );
    for i in 0..3 {
        assert_eq!(c.nodes[i].as_ref().unwrap().high_watermark(0), Some(31));
        let st = c.nodes[i].as_ref().unwrap().group_state(0).unwrap();
        assert_eq!(st.borrow().anchor.kafka_offset, 30);
    }
}

#[test]
fn interrupted_snapshot_install_is_finished_when_the_group_opens_section_7() {
    let mut c = Cluster::new(3);
    let l = c.wait_leader();
    c.run_ms(50);
    for t in 0..5u64 {
        c.node(l).propose(0, batch(2, t as u8), t).unwrap();
    }
    c.run_ms(200);
    let f = (l + 1) % 3;
    c.crash(f);
    // While the follower is down the others go on; then it is sent a snapshot past its log
    // (index last − 1), and a crash hits after the first state file write of the install:
    // the anchor names the snapshot's position, the log still holds the old entries.
    for t in 5..10u64 {
        c.node(l).propose(0, batch(2, t as u8), t).unwrap();
    }
    c.run_ms(200);
    let mut m = GroupMeta::decode(&block_on(c.metas[f].read(0)).unwrap().unwrap()).unwrap();
    let leader_st = c.node(l).group_state(0).unwrap();
    let last = leader_st.borrow().last_index();
    let at = *leader_st.borrow().meta(last).unwrap();
    m.anchor.index = last;
    m.anchor.prev_term = leader_st.borrow().meta(last - 1).unwrap().term;
    m.anchor.log_offset = at.log_offset;
    m.anchor.kafka_offset = at.kafka_offset;
    m.hard_state.commit = last - 1;
    m.log_reset_pending = true;
    block_on(c.metas[f].write(0, m.encode())).unwrap();
    assert!(c.logs[f].log_start_offset() < at.log_offset);
    c.start(f);
    assert_eq!(
        (c.logs[f].log_start_offset(), c.logs[f].next_offset()),
        (at.log_offset, at.log_offset),
        "the log restarted at the anchor"
    );
    let back = GroupMeta::decode(&block_on(c.metas[f].read(0)).unwrap().unwrap()).unwrap();
    assert!(!back.log_reset_pending, "install finished and recorded");
    c.run_ms(500);
    assert_eq!(c.node(f).high_watermark(0), Some(20));
    assert_eq!(
        c.log_of(f),
        c.log_of(l)
            .into_iter()
            .filter(|(o, _, _)| *o >= at.log_offset)
            .collect::<Vec<_>>(),
        "the entries above the anchor came back from the leader"
    );
}

#[test]
fn compaction_interrupted_before_the_log_cut_is_finished_when_the_group_opens_section_7() {
    let mut c = Cluster::new(3);
    let l = c.wait_leader();
    c.run_ms(50);
    for t in 0..6u64 {
        c.node(l).propose(0, batch(2, t as u8), t).unwrap();
    }
    c.run_ms(200);
    let f = (l + 1) % 3;
    // What `compact` writes first (the new anchor), then the crash before the log is cut.
    let st = c.node(f).group_state(0).unwrap();
    let index = st.borrow().compaction_index(6);
    let row = *st.borrow().meta(index).unwrap();
    let prev_term = st.borrow().meta(index - 1).unwrap().term;
    c.crash(f);
    let mut m = GroupMeta::decode(&block_on(c.metas[f].read(0)).unwrap().unwrap()).unwrap();
    m.anchor.index = index;
    m.anchor.prev_term = prev_term;
    m.anchor.log_offset = row.log_offset;
    m.anchor.kafka_offset = row.kafka_offset;
    m.hard_state.commit = m.hard_state.commit.max(index - 1);
    block_on(c.metas[f].write(0, m.encode())).unwrap();
    let end = c.logs[f].next_offset();
    assert!(c.logs[f].log_start_offset() < row.log_offset);
    c.start(f);
    assert_eq!(
        (c.logs[f].log_start_offset(), c.logs[f].next_offset()),
        (row.log_offset, end),
        "the prefix below the anchor is gone, the rest kept"
    );
    assert_eq!(row.kafka_offset, 6);
    c.run_ms(300);
    assert_eq!(c.node(f).high_watermark(0), Some(12));
    let st = c.node(f).group_state(0).unwrap();
    assert_eq!(st.borrow().kafka_to_log(6), Some(row.log_offset));
    assert_eq!(st.borrow().kafka_to_log(5), None);
}

#[test]
fn a_log_cut_behind_rafts_back_refuses_to_open_section_7() {
    let mut c = Cluster::new(3);
    let l = c.wait_leader();
    c.run_ms(50);
    for t in 0..4u64 {
        c.node(l).propose(0, batch(1, t as u8), t).unwrap();
    }
    c.run_ms(200);
    let f = (l + 1) % 3;
    c.crash(f);
    // Storage retention run directly on a replicated log: the anchor no longer matches.
    block_on(c.logs[f].prefix_truncate(3)).unwrap();
    let voters = [1, 2, 3];
    let mut d = MultiRaft::new(
        RaftConfig::new(f as u64 + 1),
        c.metas[f].clone(),
        c.net.transport(f as u64 + 1),
    );
    let err = block_on(d.open_group(0, &voters, c.logs[f].clone())).unwrap_err();
    assert!(
        err.to_string().contains("out of range"),
        "refused with the log's range: {err}"
    );
}
