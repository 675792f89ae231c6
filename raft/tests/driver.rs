//! Scenario tests of the multi-Raft driver on the simulated network and in-memory logs.

use bytes::Bytes;
use freshet_raft::batch::encode_batch;
use freshet_raft::log::{GroupLog, MemLog};
use freshet_raft::meta::MemMetaStore;
use freshet_raft::multiraft::{Event, MultiRaft, ProposeError, RaftConfig};
use freshet_raft::rng::SimRng;
use freshet_raft::sim::{NetConfig, SimNetwork, SimTransport};
use futures_lite::future::block_on;

type Driver = MultiRaft<MemLog, MemMetaStore, SimTransport>;

struct Cluster {
    net: SimNetwork,
    nodes: Vec<Option<Driver>>,
    logs: Vec<Vec<MemLog>>,
    metas: Vec<MemMetaStore>,
    groups: u64,
    now_ms: u64,
    events: Vec<(usize, Event)>,
    max_beats_per_envelope: usize,
    cache_bytes_max: usize,
    rng: SimRng,
}

const TICK_MS: u64 = 10;

impl Cluster {
    fn new(nodes: usize, groups: u64, cache_bytes_max: usize) -> Self {
        let net = SimNetwork::new(
            NetConfig {
                drop_per_million: 0,
                duplicate_per_million: 0,
                delay_min_ms: 1,
                delay_max_ms: 2,
            },
            1,
        );
        let mut c = Cluster {
            net,
            nodes: (0..nodes).map(|_| None).collect(),
            logs: (0..nodes)
                .map(|_| (0..groups).map(|_| MemLog::new()).collect())
                .collect(),
            metas: (0..nodes).map(|_| MemMetaStore::default()).collect(),
            groups,
            now_ms: 0,
            events: Vec::new(),
            max_beats_per_envelope: 0,
            cache_bytes_max,
            rng: SimRng::new(99),
        };
        for i in 0..nodes {
            c.start(i);
        }
        c
    }

    fn voters(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64).collect()
    }

    fn start(&mut self, i: usize) {
        let id = i as u64 + 1;
        let mut cfg = RaftConfig::new(id);
        cfg.heartbeat_ticks = 3;
        cfg.election_ticks = 15;
        cfg.max_size_per_msg_bytes = 1024;
        cfg.cache_bytes_max = self.cache_bytes_max;
        cfg.fetch_bytes_max = 4096;
        cfg.seed = 7 + self.now_ms;
        let mut d = MultiRaft::new(cfg, self.metas[i].clone(), self.net.transport(id));
        for g in 0..self.groups {
            block_on(d.open_group(g, &self.voters(), self.logs[i][g as usize].clone())).unwrap();
        }
        self.nodes[i] = Some(d);
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        for log in &self.logs[i] {
            log.crash(&mut self.rng);
        }
    }

    fn node(&mut self, i: usize) -> &mut Driver {
        self.nodes[i].as_mut().expect("node is up")
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now_ms += 1;
            self.net.set_now(self.now_ms);
            for env in self.net.deliver_due() {
                self.max_beats_per_envelope = self.max_beats_per_envelope.max(env.heartbeats.len());
                if let Some(d) = self.nodes[(env.to - 1) as usize].as_mut() {
                    d.step(env);
                }
            }
            for (i, n) in self.nodes.iter_mut().enumerate() {
                if let Some(d) = n.as_mut() {
                    if self.now_ms.is_multiple_of(TICK_MS) {
                        d.tick();
                    }
                    block_on(d.process_ready()).unwrap();
                    self.events
                        .extend(d.take_events().into_iter().map(|e| (i, e)));
                }
            }
        }
    }

    fn leader(&self, g: u64) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].as_ref().is_some_and(|d| d.is_leader(g)))
            .collect();
        leaders.first().copied()
    }

    fn wait_leader(&mut self, g: u64) -> usize {
        for _ in 0..1000 {
            if let Some(l) = self.leader(g) {
                return l;
            }
            self.run_ms(10);
        }
        panic!("no leader for group {g} after 10 s");
    }

    fn others(&self, i: usize) -> Vec<u64> {
        (1..=self.nodes.len() as u64)
            .filter(|id| *id != i as u64 + 1)
            .collect()
    }
}

fn batch(records: usize, tag: u8) -> Bytes {
    let v = [tag; 16];
    let recs: Vec<_> = (0..records).map(|_| (None, Some(&v[..]))).collect();
    encode_batch(0, 0, -1, &recs)
}

#[test]
fn leader_noop_entry_takes_a_log_offset_but_no_kafka_offset_section_5_4_2() {
    let mut c = Cluster::new(3, 1, 1 << 20);
    let l = c.wait_leader(0);
    c.run_ms(50);
    c.node(l).propose(0, batch(3, 1), 10).unwrap();
    c.node(l).propose(0, batch(2, 2), 11).unwrap();
    c.run_ms(50);
    let committed: Vec<_> = c
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Committed {
                token,
                kafka_offset,
                high_watermark,
                ..
            } => Some((*token, *kafka_offset, *high_watermark)),
            _ => None,
        })
        .collect();
    assert_eq!(committed, vec![(10, 0, 3), (11, 3, 5)]);
    let st = c.node(l).group_state(0).unwrap();
    let st = st.borrow();
    // index 1 = the leader's no-op (log offset 0), index 2 = first batch at log offset 1.
    assert_eq!(st.meta(2).unwrap().log_offset, 1);
    assert_eq!(st.kafka_to_log(0), Some(1));
    assert_eq!(st.log_to_kafka(0), None);
    for i in 0..3 {
        assert_eq!(c.nodes[i].as_ref().unwrap().high_watermark(0), Some(5));
    }
}

#[test]
fn isolated_leader_never_acknowledges_and_its_entry_is_superseded_section_8() {
    let mut c = Cluster::new(3, 1, 1 << 20);
    let old = c.wait_leader(0);
    c.run_ms(50);
    c.net.partition(&[old as u64 + 1], &c.others(old));
    c.node(old).propose(0, batch(1, 1), 1).unwrap();
    c.run_ms(1_000);
    assert!(
        !c.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Committed { token: 1, .. })),
        "an entry durable only on a minority must not be acknowledged"
    );
    // The majority side elected a new leader and accepts writes.
    let new = (0..3)
        .find(|i| *i != old && c.nodes[*i].as_ref().unwrap().is_leader(0))
        .expect("majority side elects a leader");
    c.node(new).propose(0, batch(1, 2), 2).unwrap();
    c.run_ms(100);
    assert!(matches!(
        c.node(old).propose(0, batch(1, 3), 3),
        Err(ProposeError::NotLeader { .. })
    ));
    c.net.heal();
    c.run_ms(1_000);
    let outcome = |t: u64| {
        c.events.iter().find_map(|(_, e)| match e {
            Event::Committed {
                token,
                kafka_offset,
                ..
            } if *token == t => Some(Ok(*kafka_offset)),
            Event::Failed { token, error, .. } if *token == t => Some(Err(error.clone())),
            _ => None,
        })
    };
    assert_eq!(outcome(1), Some(Err(ProposeError::Superseded)));
    assert_eq!(
        outcome(2),
        Some(Ok(0)),
        "Kafka offsets stay dense: no gap left by token 1"
    );
    for i in 0..3 {
        assert_eq!(c.nodes[i].as_ref().unwrap().high_watermark(0), Some(1));
    }
}

/// Envelopes sent by an idle cluster of 3 nodes with `groups` groups over `window_ms`, and
/// the most heartbeats seen in one envelope.
fn idle_envelopes(groups: u64, window_ms: u64) -> (u64, usize) {
    let mut c = Cluster::new(3, groups, 1 << 20);
    for g in 0..groups {
        c.wait_leader(g);
    }
    c.run_ms(300);
    let sent = |c: &Cluster| -> u64 {
        c.nodes
            .iter()
            .map(|n| n.as_ref().unwrap().stats().envelopes_sent)
            .sum()
    };
    let before = sent(&c);
    c.max_beats_per_envelope = 0;
    c.run_ms(window_ms);
    (sent(&c) - before, c.max_beats_per_envelope)
}

#[test]
fn heartbeats_of_all_groups_travel_in_one_envelope_per_node_pair() {
    let window_ms = 1_000;
    let (few, _) = idle_envelopes(2, window_ms);
    let (many, max_beats) = idle_envelopes(60, window_ms);
    // Per tick (10 ms) each ordered node pair carries at most one heartbeat envelope and one
    // response envelope, whatever the number of groups (uncoalesced, 60 groups would need
    // about 60 * 6 / 3 = 120 heartbeat messages per tick).
    let ticks = window_ms / TICK_MS;
    eprintln!("idle, {ticks} ticks: {few} envelopes for 2 groups, {many} for 60 groups, up to {max_beats} beats per envelope");
    assert!(many <= ticks * 6 * 2, "{many} envelopes in {ticks} ticks");
    assert!(
        many <= few * 3 / 2 + 20,
        "envelopes grow with the number of groups: {few} for 2 groups, {many} for 60"
    );
    assert!(
        max_beats > 10,
        "no envelope carried many groups' heartbeats ({max_beats})"
    );
}

#[test]
fn follower_appends_of_one_pass_share_one_flush() {
    let mut c = Cluster::new(3, 1, 1 << 20);
    let l = c.wait_leader(0);
    c.run_ms(100);
    let f = (l + 1) % 3;
    let flushes_before = c.logs[f][0].flush_count();
    // 20 batches proposed in one pass; max_size_per_msg 1 KiB puts a few in each append.
    for t in 0..20 {
        c.node(l).propose(0, batch(4, t as u8), 100 + t).unwrap();
    }
    // Deliver everything without ticks: one process_ready per node per ms.
    c.run_ms(5);
    let follower_flushes = c.logs[f][0].flush_count() - flushes_before;
    let entries = c.node(f).progress(0).unwrap().2;
    assert!(entries >= 21, "follower has {entries} entries");
    assert!(
        follower_flushes <= 2,
        "follower flushed {follower_flushes} times for one burst of appends"
    );
}

#[test]
fn follower_far_behind_catches_up_through_asynchronous_fetch() {
    let mut c = Cluster::new(3, 1, 0);
    let l = c.wait_leader(0);
    c.run_ms(50);
    let f = (l + 1) % 3;
    c.net.partition(&[f as u64 + 1], &c.others(f));
    for t in 0..60 {
        c.node(l).propose(0, batch(2, t as u8), t).unwrap();
        c.run_ms(2);
    }
    c.run_ms(100);
    c.net.heal();
    c.run_ms(1_500);
    let (_, lc, ll) = c.node(l).progress(0).unwrap();
    let (_, fc, fl) = c.node(f).progress(0).unwrap();
    assert_eq!((fc, fl), (lc, ll), "follower caught up");
    assert!(
        c.node(l).stats().async_fetches > 0,
        "with an empty cache the catch-up must come from the log"
    );
    assert_eq!(
        block_on(c.logs[f][0].read(0, 1 << 20, i64::MAX)).unwrap(),
        block_on(c.logs[l][0].read(0, 1 << 20, i64::MAX)).unwrap(),
        "Log Matching (§5.3): identical logs"
    );
}

#[test]
fn whole_cluster_restart_recovers_offsets_and_continues_densely() {
    let mut c = Cluster::new(3, 2, 1 << 20);
    for g in 0..2 {
        let l = c.wait_leader(g);
        c.run_ms(30);
        for t in 0..5 {
            c.node(l)
                .propose(g, batch(3, t), g * 100 + u64::from(t))
                .unwrap();
        }
    }
    c.run_ms(200);
    let hw: Vec<_> = (0..2)
        .map(|g| c.node(0).high_watermark(g).unwrap())
        .collect();
    assert_eq!(hw, vec![15, 15]);
    for i in 0..3 {
        c.crash(i);
    }
    for i in 0..3 {
        c.start(i);
    }
    let l = c.wait_leader(1);
    c.run_ms(100);
    c.node(l).propose(1, batch(1, 9), 999).unwrap();
    c.run_ms(100);
    let last = c.events.iter().rev().find_map(|(_, e)| match e {
        Event::Committed {
            token: 999,
            kafka_offset,
            ..
        } => Some(*kafka_offset),
        _ => None,
    });
    assert_eq!(
        last,
        Some(15),
        "new leader's no-op took no Kafka offset after the restart"
    );
    for i in 0..3 {
        assert_eq!(c.nodes[i].as_ref().unwrap().high_watermark(1), Some(16));
        assert_eq!(c.nodes[i].as_ref().unwrap().high_watermark(0), Some(15));
    }
}
