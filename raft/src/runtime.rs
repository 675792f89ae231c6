//! The per-core Raft runtime on glommio: one task owns the core's [`MultiRaft`] and runs its
//! loop (deliver envelopes from the inbox, tick on a timer, propose queued batches, one driver
//! pass, complete proposals); the engine talks to it through a cheap handle whose
//! [`RaftHandle::replicate`] is a future that resolves when the batch is committed.
//!
//! This is the entry point for the engine's `Partition::replicate()` (see
//! docs/design/replication.md, "Engine integration").
//!
//! Ownership: per core, `!Send`; the handle is cloned freely inside the core.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::local_channel::LocalReceiver;

use crate::log::GroupLog;
use crate::meta::MetaStore;
use crate::multiraft::{DriverError, Event, MultiRaft, ProposeError};
use crate::transport::{Envelope, GroupId, NodeId, Transport};

/// What a committed batch got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Kafka base offset of the batch.
    pub kafka_offset: i64,
    /// High watermark right after it.
    pub high_watermark: i64,
}

type Outcome = Result<Committed, ProposeError>;

#[derive(Default)]
struct Slot {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
}

/// Resolves when the proposal is decided.
struct Completion {
    slot: Rc<RefCell<Slot>>,
}

impl Future for Completion {
    type Output = Outcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut s = self.slot.borrow_mut();
        match s.outcome.take() {
            Some(o) => Poll::Ready(o),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[derive(Default)]
struct Shared {
    queue: VecDeque<(GroupId, Bytes, u64)>,
    waiters: BTreeMap<u64, Rc<RefCell<Slot>>>,
    next_token: u64,
    loop_waker: Option<Waker>,
    high_watermarks: BTreeMap<GroupId, i64>,
    leaders: BTreeMap<GroupId, bool>,
    stopped: Option<String>,
}

fn complete(slot: &Rc<RefCell<Slot>>, o: Outcome) {
    let mut s = slot.borrow_mut();
    s.outcome = Some(o);
    if let Some(w) = s.waker.take() {
        w.wake();
    }
}

/// The engine's handle on the core's Raft runtime.
///
/// Ownership: per core, `!Send`; clones share the runtime.
#[derive(Clone)]
pub struct RaftHandle {
    shared: Rc<RefCell<Shared>>,
}

impl RaftHandle {
    /// Proposes one Kafka v2 batch to `group` and resolves when it is committed (durable on a
    /// majority, §8) or will never be (not leader, superseded, invalid batch).
    pub fn replicate(&self, group: GroupId, batch: Bytes) -> impl Future<Output = Outcome> {
        let slot = Rc::new(RefCell::new(Slot::default()));
        let mut sh = self.shared.borrow_mut();
        if let Some(why) = &sh.stopped {
            slot.borrow_mut().outcome = Some(Err(ProposeError::InvalidBatch(format!(
                "raft runtime stopped: {why}"
            ))));
        } else {
            sh.next_token += 1;
            let token = sh.next_token;
            sh.queue.push_back((group, batch, token));
            sh.waiters.insert(token, slot.clone());
            if let Some(w) = sh.loop_waker.take() {
                w.wake();
            }
        }
        Completion { slot }
    }

    /// The group's high watermark as of the last pass.
    pub fn high_watermark(&self, group: GroupId) -> Option<i64> {
        self.shared.borrow().high_watermarks.get(&group).copied()
    }

    /// Whether this node led the group as of the last pass.
    pub fn is_leader(&self, group: GroupId) -> bool {
        self.shared
            .borrow()
            .leaders
            .get(&group)
            .copied()
            .unwrap_or(false)
    }
}

/// Waits until `deadline`, a new envelope, or a wake-up from [`RaftHandle::replicate`].
struct Wait<'a> {
    shared: &'a Rc<RefCell<Shared>>,
    inbox: Pin<Box<dyn Future<Output = Option<Envelope>> + 'a>>,
    timer: Pin<Box<dyn Future<Output = ()> + 'a>>,
}

enum Woke {
    Envelope(Envelope),
    InboxClosed,
    Timer,
    Proposals,
}

impl Future for Wait<'_> {
    type Output = Woke;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Woke> {
        if !self.shared.borrow().queue.is_empty() {
            return Poll::Ready(Woke::Proposals);
        }
        if let Poll::Ready(e) = self.inbox.as_mut().poll(cx) {
            return Poll::Ready(match e {
                Some(e) => Woke::Envelope(e),
                None => Woke::InboxClosed,
            });
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Woke::Timer);
        }
        self.shared.borrow_mut().loop_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Starts the runtime loop as a glommio task on the current executor. The driver must
/// already hold its groups (`open_group`). Ticks every `tick_ms`.
pub fn spawn<L, M, T>(
    mut driver: MultiRaft<L, M, T>,
    inbox: LocalReceiver<Envelope>,
    tick_ms: u64,
) -> RaftHandle
where
    L: GroupLog + 'static,
    M: MetaStore + 'static,
    T: Transport + 'static,
{
    let shared: Rc<RefCell<Shared>> = Rc::default();
    let handle = RaftHandle {
        shared: shared.clone(),
    };
    glommio::spawn_local(async move {
        let tick = Duration::from_millis(tick_ms);
        let mut next_tick = Instant::now() + tick;
        let result: Result<(), DriverError> = async {
            loop {
                let woke = {
                    let wait = Wait {
                        shared: &shared,
                        inbox: Box::pin(inbox.recv()),
                        timer: Box::pin(glommio::timer::sleep(
                            next_tick.saturating_duration_since(Instant::now()),
                        )),
                    };
                    wait.await
                };
                match woke {
                    Woke::Envelope(env) => driver.step(env),
                    Woke::InboxClosed => return Ok(()),
                    Woke::Timer => {}
                    Woke::Proposals => {}
                }
                while Instant::now() >= next_tick {
                    driver.tick();
                    next_tick += tick;
                }
                let queued = std::mem::take(&mut shared.borrow_mut().queue);
                for (group, batch, token) in queued {
                    if let Err(e) = driver.propose(group, batch, token) {
                        let slot = shared.borrow_mut().waiters.remove(&token);
                        if let Some(slot) = slot {
                            complete(&slot, Err(e));
                        }
                    }
                }
                driver.process_ready().await?;
                for ev in driver.take_events() {
                    let (token, outcome) = match ev {
                        Event::Committed {
                            token,
                            kafka_offset,
                            high_watermark,
                            ..
                        } => (
                            token,
                            Ok(Committed {
                                kafka_offset,
                                high_watermark,
                            }),
                        ),
                        Event::Failed { token, error, .. } => (token, Err(error)),
                    };
                    let slot = shared.borrow_mut().waiters.remove(&token);
                    if let Some(slot) = slot {
                        complete(&slot, outcome);
                    }
                }
                let mut sh = shared.borrow_mut();
                for (g, hw) in driver.take_hw_changes() {
                    sh.high_watermarks.insert(g, hw);
                }
                for g in driver.group_ids() {
                    sh.leaders.insert(g, driver.is_leader(g));
                }
            }
        }
        .await;
        let why = match result {
            Ok(()) => "inbox closed".to_string(),
            Err(e) => e.to_string(),
        };
        let mut sh = shared.borrow_mut();
        sh.stopped = Some(why.clone());
        for (_, slot) in std::mem::take(&mut sh.waiters) {
            complete(
                &slot,
                Err(ProposeError::InvalidBatch(format!(
                    "raft runtime stopped: {why}"
                ))),
            );
        }
    })
    .detach();
    handle
}

/// Node id → address book entry for tests and the engine's cluster config.
pub type PeerAddrs = BTreeMap<NodeId, std::net::SocketAddr>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::encode_batch;
    use crate::log::MemLog;
    use crate::meta::MemMetaStore;
    use crate::multiraft::RaftConfig;
    use crate::tcp::{listen, RpcConfig, TcpTransport};
    use futures_lite::future::block_on;
    use glommio::channels::local_channel;

    fn run<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join");
    }

    fn batch(n: usize) -> Bytes {
        let recs: Vec<_> = (0..n).map(|_| (None, Some(&b"v"[..]))).collect();
        encode_batch(0, 0, -1, &recs)
    }

    #[test]
    fn replication_factor_one_commits_at_once_without_waiting_for_an_election() {
        run(|| async {
            let (_tx, rx) = local_channel::new_bounded(16);
            let mut d = MultiRaft::new(
                RaftConfig::new(1),
                MemMetaStore::default(),
                TcpTransport::new(1, RpcConfig::default()),
            );
            block_on(d.open_group(0, &[1], MemLog::new())).unwrap();
            assert!(d.is_leader(0), "single voter campaigns on open");
            let h = spawn(d, rx, 10);
            let t = Instant::now();
            let a = h.replicate(0, batch(3)).await.unwrap();
            let b = h.replicate(0, batch(2)).await.unwrap();
            assert_eq!((a.kafka_offset, a.high_watermark), (0, 3));
            assert_eq!((b.kafka_offset, b.high_watermark), (3, 5));
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{:?}",
                t.elapsed()
            );
            assert_eq!(h.high_watermark(0), Some(5));
            assert!(matches!(
                h.replicate(7, batch(1)).await,
                Err(ProposeError::UnknownGroup(7))
            ));
        });
    }

    #[test]
    fn three_nodes_over_real_tcp_elect_a_leader_and_commit_section_8() {
        run(|| async {
            let mut inboxes = Vec::new();
            let mut addrs = PeerAddrs::new();
            for id in 1..=3u64 {
                let (tx, rx) = local_channel::new_bounded(1024);
                let a = listen("127.0.0.1:0".parse().unwrap(), RpcConfig::default(), tx).unwrap();
                addrs.insert(id, a);
                inboxes.push(rx);
            }
            let mut handles = Vec::new();
            for (id, rx) in (1..=3u64).zip(inboxes) {
                let t = TcpTransport::new(id, RpcConfig::default());
                for (peer, a) in &addrs {
                    if *peer != id {
                        t.add_peer(*peer, *a);
                    }
                }
                let mut cfg = RaftConfig::new(id);
                cfg.heartbeat_ticks = 2;
                cfg.election_ticks = 10;
                let mut d = MultiRaft::new(cfg, MemMetaStore::default(), t);
                block_on(d.open_group(0, &[1, 2, 3], MemLog::new())).unwrap();
                handles.push(spawn(d, rx, 10));
            }
            let start = Instant::now();
            let leader = loop {
                if let Some(h) = handles.iter().find(|h| h.is_leader(0)) {
                    break h.clone();
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "no leader elected"
                );
                glommio::timer::sleep(Duration::from_millis(10)).await;
            };
            let c = leader.replicate(0, batch(4)).await.unwrap();
            assert_eq!((c.kafka_offset, c.high_watermark), (0, 4));
            // Followers learn the commit from the next append/heartbeat.
            let start = Instant::now();
            while handles.iter().any(|h| h.high_watermark(0) != Some(4)) {
                assert!(start.elapsed() < Duration::from_secs(5), "followers lag");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        });
    }
}
