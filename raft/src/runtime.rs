//! The per-core Raft runtime on glommio: one task owns the core's [`MultiRaft`] and runs its
//! loop; the engine talks to it through a cheap, cloneable [`RaftHandle`].
//!
//! One loop iteration: wait for an envelope, a timer tick, a command or a proposal; deliver
//! every envelope already in the inbox (up to [`INBOX_BATCH_MAX`]); tick the driver for the
//! time that passed; run queued commands (open / close / remove a group, transfer
//! leadership, stop); propose queued batches; one driver pass ([`MultiRaft::process_ready`]);
//! complete waiters; refresh the published [`GroupStatus`]es and call the `on_change`
//! callbacks for the ones that changed.
//!
//! - [`RaftHandle::replicate`] resolves, depending on [`WaitFor`], when the leader's own write
//!   of the batch is flushed (Kafka acks=1) or when it is committed, i.e. durable on a
//!   majority (acks=all, Raft §8).
//! - Groups are opened, closed and removed while the loop runs: the commands are queued and
//!   executed between passes.
//! - The driver flushes the logs itself (one fdatasync per written log per pass); the engine
//!   must not flush a replicated log.
//!
//! This is the engine's entry point (docs/design/replication.md, "Engine integration").
//!
//! Ownership: per core, `!Send`; the handle is cloned freely inside the core. Callbacks run on
//! the runtime's task, between passes.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::Stream;
use glommio::channels::local_channel::LocalReceiver;

use crate::log::GroupLog;
use crate::meta::MetaStore;
use crate::multiraft::{DriverError, DriverStats, Event, MultiRaft, ProposeError};
pub use crate::multiraft::{GroupStatus, Membership, MembershipError};
use crate::store::GroupState;
use crate::transport::{Envelope, GroupId, NodeId, Transport};

/// Envelopes delivered to the driver before one pass (the rest wait for the next pass).
pub const INBOX_BATCH_MAX: usize = 256;

/// What a proposal waits for before [`RaftHandle::replicate`] resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// The leader's own append of the entry is flushed (Kafka acks=1: the leader has it; it
    /// may still be lost if the leader fails before a majority has it).
    Leader,
    /// The entry is committed: durable on a majority, never lost (Kafka acks=all, Raft §8).
    Majority,
}

/// What a replicated batch got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Kafka base offset of the batch.
    pub kafka_offset: i64,
    /// High watermark right after it (with [`WaitFor::Leader`]: at the leader's append, so
    /// possibly not past the batch yet).
    pub high_watermark: i64,
}

type Outcome = Result<Committed, ProposeError>;

/// A one-shot value the loop fills and a future awaits.
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            value: None,
            waker: None,
        }
    }
}

type SlotRef<T> = Rc<RefCell<Slot<T>>>;

fn new_slot<T>() -> SlotRef<T> {
    Rc::new(RefCell::new(Slot::default()))
}

fn complete<T>(slot: &SlotRef<T>, v: T) {
    let mut s = slot.borrow_mut();
    s.value = Some(v);
    if let Some(w) = s.waker.take() {
        w.wake();
    }
}

/// Resolves when the loop fills the slot.
struct Completion<T> {
    slot: SlotRef<T>,
}

impl<T> Future for Completion<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.slot.borrow_mut();
        match s.value.take() {
            Some(o) => Poll::Ready(o),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

enum Command<L> {
    Open {
        group: GroupId,
        voters: Vec<NodeId>,
        log: L,
        reply: SlotRef<Result<Rc<RefCell<GroupState>>, DriverError>>,
    },
    Close {
        group: GroupId,
        remove: bool,
        reply: SlotRef<Option<L>>,
    },
    TransferLeader {
        group: GroupId,
        to: NodeId,
    },
    /// See [`RaftHandle::change_membership`]; the outcome goes to the membership waiter of
    /// `token`.
    ChangeMembership {
        group: GroupId,
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
        token: u64,
    },
    /// DeleteRecords' log start entry, see [`RaftHandle::set_log_start`]; the outcome goes
    /// to the waiter of `token`.
    LogStart {
        group: GroupId,
        kafka_offset: i64,
        token: u64,
    },
    /// Log compaction (Raft §7), see [`RaftHandle::compact`].
    Compact {
        group: GroupId,
        kafka_offset: i64,
        reply: SlotRef<Result<Option<i64>, DriverError>>,
    },
    Stop,
}

/// A status-change callback ([`RaftHandle::on_change`]).
pub type StatusCallback = Box<dyn Fn(GroupId, &GroupStatus)>;

type Callback = Rc<dyn Fn(GroupId, &GroupStatus)>;

struct Shared<L> {
    node_id: NodeId,
    commands: VecDeque<Command<L>>,
    proposals: VecDeque<(GroupId, Bytes, WaitFor, u64)>,
    waiters: HashMap<u64, (WaitFor, SlotRef<Outcome>)>,
    membership_waiters: HashMap<u64, SlotRef<Result<Membership, MembershipError>>>,
    next_token: u64,
    loop_waker: Option<Waker>,
    statuses: BTreeMap<GroupId, GroupStatus>,
    callbacks: Vec<Callback>,
    /// Set once the loop has ended (why).
    stopped: Option<String>,
    /// The driver's counters as of the last pass.
    stats: DriverStats,
    stop_waiters: Vec<SlotRef<()>>,
}

impl<L> Shared<L> {
    fn wake_loop(&mut self) {
        if let Some(w) = self.loop_waker.take() {
            w.wake();
        }
    }
}

fn stopped_error() -> ProposeError {
    // Retriable for a Kafka client (NOT_LEADER_OR_FOLLOWER): it refreshes metadata.
    ProposeError::NotLeader { leader: None }
}

/// The engine's handle on the core's Raft runtime.
///
/// Ownership: per core, `!Send`; clones share the runtime.
pub struct RaftHandle<L: GroupLog + 'static> {
    shared: Rc<RefCell<Shared<L>>>,
}

impl<L: GroupLog + 'static> Clone for RaftHandle<L> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<L: GroupLog + 'static> RaftHandle<L> {
    fn command<T>(
        &self,
        cmd: Command<L>,
        reply: SlotRef<T>,
        if_stopped: impl FnOnce() -> T,
    ) -> Completion<T> {
        let mut sh = self.shared.borrow_mut();
        if sh.stopped.is_some() {
            drop(cmd);
            complete(&reply, if_stopped());
        } else {
            sh.commands.push_back(cmd);
            sh.wake_loop();
        }
        Completion { slot: reply }
    }

    /// Opens (or creates, with `voters` as its membership) `group` on this core with `log`
    /// and recovers it from the log (see [`MultiRaft::open_group`]). Returns the group's
    /// entry table / offset translator for the read path. Executed between passes.
    pub async fn open_group(
        &self,
        group: GroupId,
        voters: Vec<NodeId>,
        log: L,
    ) -> Result<Rc<RefCell<GroupState>>, DriverError> {
        let reply = new_slot();
        let why = self.shared.borrow().stopped.clone();
        let cmd = Command::Open {
            group,
            voters,
            log,
            reply: reply.clone(),
        };
        self.command(cmd, reply, || {
            Err(DriverError::Stopped(why.unwrap_or_default()))
        })
        .await
    }

    /// Closes `group` and hands its log back (its state file stays: it can be opened again).
    /// Proposals still waiting fail with `NotLeader`. None if it was not open.
    pub async fn close_group(&self, group: GroupId) -> Option<L> {
        let reply = new_slot();
        let cmd = Command::Close {
            group,
            remove: false,
            reply: reply.clone(),
        };
        self.command(cmd, reply, || None).await
    }

    /// Closes `group` (as [`RaftHandle::close_group`]) and deletes its state file: this node
    /// no longer holds a replica (the caller deletes the log). A failure to delete the state
    /// file is an I/O failure of the node's state directory and stops the runtime, like any
    /// other state-file failure.
    pub async fn remove_group(&self, group: GroupId) -> Option<L> {
        let reply = new_slot();
        let cmd = Command::Close {
            group,
            remove: true,
            reply: reply.clone(),
        };
        self.command(cmd, reply, || None).await
    }

    /// Proposes one Kafka v2 batch to `group` and resolves once `wait` is satisfied, or with
    /// the reason it never will be (not leader, superseded, invalid batch, unknown group,
    /// group closed, runtime stopped).
    pub fn replicate(
        &self,
        group: GroupId,
        batch: Bytes,
        wait: WaitFor,
    ) -> impl Future<Output = Outcome> {
        self.submit(wait, |sh, token| {
            sh.proposals.push_back((group, batch, wait, token));
        })
    }

    /// DeleteRecords (KIP-107) through Raft: proposes a log start entry naming `kafka_offset`
    /// to `group` (this node must lead it; the caller checked the offset against the high
    /// watermark) and resolves once it is committed and applied here, with the Kafka offset
    /// of the next data record. Every replica applies it on commit: from then on its
    /// `GroupState::log_start_kafka` (and `GroupStatus::log_start_kafka`) is at least
    /// `kafka_offset`; compacting the log up to it is left to the caller on each replica.
    /// Fails like [`RaftHandle::replicate`].
    pub fn set_log_start(
        &self,
        group: GroupId,
        kafka_offset: i64,
    ) -> impl Future<Output = Outcome> {
        self.submit(WaitFor::Majority, |sh, token| {
            sh.commands.push_back(Command::LogStart {
                group,
                kafka_offset,
                token,
            });
        })
    }

    /// Queues one request that resolves like a proposal: `queue` puts it (under a fresh
    /// token) on the loop's queue, and the caller is answered once `wait` is satisfied for
    /// that token; after [`RaftHandle::stop`] it is answered at once with the stop reason.
    fn submit(
        &self,
        wait: WaitFor,
        queue: impl FnOnce(&mut Shared<L>, u64),
    ) -> Completion<Outcome> {
        let slot = new_slot();
        let mut sh = self.shared.borrow_mut();
        if sh.stopped.is_some() {
            complete(&slot, Err(stopped_error()));
        } else {
            sh.next_token += 1;
            let token = sh.next_token;
            queue(&mut sh, token);
            sh.waiters.insert(token, (wait, slot.clone()));
            sh.wake_loop();
        }
        Completion { slot }
    }

    /// Leader only: moves `group` to exactly `voters` (+ `learners`) with one ConfChangeV2
    /// (Raft thesis §4): a simple change when one node changes, joint consensus (§4.3)
    /// otherwise, whose leave entry the driver proposes itself once the joint configuration
    /// is applied. Resolves when the final (non-joint) configuration is committed and
    /// applied on this node, with that configuration. A learner added here is caught up by
    /// the leader (watch `GroupStatus::learners_in_sync` before promoting it); the node
    /// itself opens the group with empty voters. A leader that removes itself steps down
    /// once the change is applied (it hands leadership to the most caught-up voter).
    /// Errors: `NotLeader`, `InProgress` (another change or a leadership transfer),
    /// `Invalid` (no voters, a node in both lists, node id 0), `UnknownGroup`,
    /// `Superseded` (leadership changed before it committed: outcome unknown, check
    /// `status`), `GroupClosed`, `Stopped`.
    pub fn change_membership(
        &self,
        group: GroupId,
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    ) -> impl Future<Output = Result<Membership, MembershipError>> {
        let slot = new_slot();
        let mut sh = self.shared.borrow_mut();
        if let Some(why) = sh.stopped.clone() {
            complete(&slot, Err(MembershipError::Stopped(why)));
        } else {
            sh.next_token += 1;
            let token = sh.next_token;
            sh.commands.push_back(Command::ChangeMembership {
                group,
                voters,
                learners,
                token,
            });
            sh.membership_waiters.insert(token, slot.clone());
            sh.wake_loop();
        }
        Completion { slot }
    }

    /// The group's status as of the last pass; None if the group is not open (or the
    /// runtime stopped).
    pub fn status(&self, group: GroupId) -> Option<GroupStatus> {
        self.shared.borrow().statuses.get(&group).cloned()
    }

    /// Registers `f`, called on the runtime's task after a pass for every group whose status
    /// changed (any field: leader, term, commit, high watermark, log end, in-sync set,
    /// quorum, membership as applied on this node), and once for a newly opened group.
    /// Closed groups are not reported.
    pub fn on_change(&self, f: StatusCallback) {
        self.shared.borrow_mut().callbacks.push(Rc::from(f));
    }

    /// Asks this node, if it leads `group`, to hand leadership to `to` (Raft thesis §3.10).
    /// Best effort: watch `status` / `on_change` for the outcome.
    pub fn transfer_leader(&self, group: GroupId, to: NodeId) {
        let mut sh = self.shared.borrow_mut();
        if sh.stopped.is_none() {
            sh.commands.push_back(Command::TransferLeader { group, to });
            sh.wake_loop();
        }
    }

    /// Log compaction (Raft §7; retention and DeleteRecords): drops `group`'s entries below
    /// the one holding Kafka offset `kafka_offset`, never past the applied (committed)
    /// entries: records at or after `kafka_offset` that are held stay, and the batch holding
    /// it stays whole, so the new log start may be below `kafka_offset`. Works on any
    /// replica (each one compacts its own log); a follower that later needs dropped entries
    /// gets a snapshot from the leader and restarts its log at the leader's start. Returns
    /// the log start Kafka offset afterwards, `Ok(None)` if the group is not open on this
    /// core. Executed between passes. An error is an I/O failure of the log or the state
    /// directory (which also stops the runtime) or a stopped runtime.
    pub async fn compact(
        &self,
        group: GroupId,
        kafka_offset: i64,
    ) -> Result<Option<i64>, DriverError> {
        let reply = new_slot();
        let why = self.shared.borrow().stopped.clone();
        let cmd = Command::Compact {
            group,
            kafka_offset,
            reply: reply.clone(),
        };
        self.command(cmd, reply, || {
            Err(DriverError::Stopped(why.unwrap_or_default()))
        })
        .await
    }

    /// Stops the loop after the current pass and returns once it has stopped. Waiting
    /// proposals fail with `NotLeader`; the driver (and its references to the logs) is
    /// dropped.
    pub async fn stop(&self) {
        let reply = new_slot();
        let waiter = {
            let mut sh = self.shared.borrow_mut();
            if sh.stopped.is_some() {
                return;
            }
            sh.stop_waiters.push(reply.clone());
            sh.commands.push_back(Command::Stop);
            sh.wake_loop();
            Completion { slot: reply }
        };
        waiter.await
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> NodeId {
        self.shared.borrow().node_id
    }

    /// The driver's counters as of the last pass (flushes, envelopes, state-file writes...).
    pub fn stats(&self) -> DriverStats {
        self.shared.borrow().stats
    }

    /// Why the loop ended (stop or a fatal driver error), if it did.
    pub fn stopped(&self) -> Option<String> {
        self.shared.borrow().stopped.clone()
    }

    /// The group's high watermark as of the last pass.
    pub fn high_watermark(&self, group: GroupId) -> Option<i64> {
        self.shared
            .borrow()
            .statuses
            .get(&group)
            .map(|s| s.high_watermark)
    }

    /// Whether this node led the group as of the last pass.
    pub fn is_leader(&self, group: GroupId) -> bool {
        let sh = self.shared.borrow();
        sh.statuses
            .get(&group)
            .is_some_and(|s| s.leader == Some(sh.node_id))
    }
}

/// What woke the loop.
#[derive(Default)]
struct Woke {
    envelopes: Vec<Envelope>,
    inbox_closed: bool,
}

/// Waits until the timer fires, envelopes arrive, or a command or proposal is queued.
struct Wait<'a, L, S> {
    shared: &'a Rc<RefCell<Shared<L>>>,
    inbox: Option<Pin<&'a mut S>>,
    timer: Pin<Box<glommio::timer::Timer>>,
}

impl<L, S: Stream<Item = Envelope>> Future for Wait<'_, L, S> {
    type Output = Woke;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Woke> {
        let mut woke = Woke::default();
        if let Some(inbox) = self.inbox.as_mut() {
            while woke.envelopes.len() < INBOX_BATCH_MAX {
                match inbox.as_mut().poll_next(cx) {
                    Poll::Ready(Some(e)) => woke.envelopes.push(e),
                    Poll::Ready(None) => {
                        woke.inbox_closed = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        if !woke.envelopes.is_empty() || woke.inbox_closed {
            return Poll::Ready(woke);
        }
        {
            let sh = self.shared.borrow();
            if !sh.commands.is_empty() || !sh.proposals.is_empty() {
                return Poll::Ready(woke);
            }
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(woke);
        }
        self.shared.borrow_mut().loop_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Groups an envelope touches.
fn envelope_groups(env: &Envelope, out: &mut BTreeSet<GroupId>) {
    out.extend(env.messages.iter().map(|(g, _)| *g));
    out.extend(env.heartbeats.iter().map(|b| b.group));
    out.extend(env.heartbeat_responses.iter().map(|b| b.group));
}

/// Starts the runtime loop as a glommio task on the current executor. The driver may already
/// hold groups (`MultiRaft::open_group` before spawning) or get them through
/// [`RaftHandle::open_group`]. Ticks every `tick_ms`. Envelopes from other nodes arrive on
/// `inbox` (the engine / RPC listener owns its sender); when the inbox closes the loop goes on
/// without it until [`RaftHandle::stop`].
pub fn spawn<L, M, T>(
    driver: MultiRaft<L, M, T>,
    inbox: LocalReceiver<Envelope>,
    tick_ms: u64,
) -> RaftHandle<L>
where
    L: GroupLog + 'static,
    M: MetaStore + 'static,
    T: Transport + 'static,
{
    assert!(tick_ms > 0, "tick_ms must be positive");
    let shared = Rc::new(RefCell::new(Shared {
        node_id: driver.node_id(),
        commands: VecDeque::new(),
        proposals: VecDeque::new(),
        waiters: HashMap::new(),
        membership_waiters: HashMap::new(),
        next_token: 0,
        loop_waker: None,
        statuses: driver
            .group_ids()
            .into_iter()
            .filter_map(|g| Some((g, driver.status(g)?)))
            .collect(),
        callbacks: Vec::new(),
        stats: driver.stats(),
        stopped: None,
        stop_waiters: Vec::new(),
    }));
    let handle = RaftHandle {
        shared: shared.clone(),
    };
    glommio::spawn_local(async move {
        let result = run_loop(driver, inbox, tick_ms, &shared).await;
        let why = match result {
            Ok(()) => "stopped".to_string(),
            Err(e) => e.to_string(),
        };
        let (waiters, membership_waiters, commands, stop_waiters) = {
            let mut sh = shared.borrow_mut();
            sh.stopped = Some(why.clone());
            sh.statuses.clear();
            sh.proposals.clear();
            (
                std::mem::take(&mut sh.waiters),
                std::mem::take(&mut sh.membership_waiters),
                std::mem::take(&mut sh.commands),
                std::mem::take(&mut sh.stop_waiters),
            )
        };
        for (_, (_, slot)) in waiters {
            complete(&slot, Err(stopped_error()));
        }
        for (_, slot) in membership_waiters {
            complete(&slot, Err(MembershipError::Stopped(why.clone())));
        }
        for cmd in commands {
            match cmd {
                Command::Open { reply, .. } => {
                    complete(&reply, Err(DriverError::Stopped(why.clone())))
                }
                Command::Close { reply, .. } => complete(&reply, None),
                Command::Compact { reply, .. } => {
                    complete(&reply, Err(DriverError::Stopped(why.clone())))
                }
                Command::TransferLeader { .. }
                | Command::LogStart { .. }
                | Command::ChangeMembership { .. }
                | Command::Stop => {}
            }
        }
        for w in stop_waiters {
            complete(&w, ());
        }
    })
    .detach();
    handle
}

async fn run_loop<L, M, T>(
    mut driver: MultiRaft<L, M, T>,
    inbox: LocalReceiver<Envelope>,
    tick_ms: u64,
    shared: &Rc<RefCell<Shared<L>>>,
) -> Result<(), DriverError>
where
    L: GroupLog + 'static,
    M: MetaStore + 'static,
    T: Transport + 'static,
{
    let tick = Duration::from_millis(tick_ms);
    let mut next_tick = Instant::now() + tick;
    let mut stream = Box::pin(inbox.stream());
    let mut inbox_open = true;
    let mut dirty: BTreeSet<GroupId> = BTreeSet::new();
    // Opened groups: reported to `on_change` after the next pass even if unchanged.
    let mut opened: BTreeSet<GroupId> = driver.group_ids().into_iter().collect();
    loop {
        let woke = Wait {
            shared,
            inbox: inbox_open.then_some(stream.as_mut()),
            timer: Box::pin(glommio::timer::Timer::new(
                next_tick.saturating_duration_since(Instant::now()),
            )),
        }
        .await;
        inbox_open &= !woke.inbox_closed;
        for env in woke.envelopes {
            envelope_groups(&env, &mut dirty);
            driver.step(env);
        }
        let mut ticked = false;
        while Instant::now() >= next_tick {
            driver.tick();
            next_tick += tick;
            ticked = true;
        }
        // Commands, in the order they were queued.
        let mut stop = false;
        loop {
            let cmd = shared.borrow_mut().commands.pop_front();
            let Some(cmd) = cmd else { break };
            match cmd {
                Command::Open {
                    group,
                    voters,
                    log,
                    reply,
                } => {
                    let r = driver
                        .open_group(group, &voters, log)
                        .await
                        .map(|()| driver.group_state(group).expect("group just opened"));
                    if r.is_ok() {
                        // Published before the caller resumes (a single-voter group already
                        // leads), and reported to `on_change` after this pass.
                        let st = driver.status(group).expect("group just opened");
                        shared.borrow_mut().statuses.insert(group, st);
                        opened.insert(group);
                    }
                    complete(&reply, r);
                }
                Command::Close {
                    group,
                    remove,
                    reply,
                } => {
                    let log = if remove {
                        match driver.remove_group(group).await {
                            Ok(log) => log,
                            Err(e) => {
                                complete(&reply, None);
                                return Err(e);
                            }
                        }
                    } else {
                        driver.close_group(group)
                    };
                    dirty.remove(&group);
                    opened.remove(&group);
                    shared.borrow_mut().statuses.remove(&group);
                    complete(&reply, log);
                }
                Command::TransferLeader { group, to } => {
                    driver.transfer_leader(group, to);
                    dirty.insert(group);
                }
                Command::ChangeMembership {
                    group,
                    voters,
                    learners,
                    token,
                } => {
                    dirty.insert(group);
                    let r = driver.change_membership(group, &voters, &learners, token);
                    let done = match r {
                        Ok(None) => None,
                        Ok(Some(m)) => Some(Ok(m)),
                        Err(e) => Some(Err(e)),
                    };
                    if let Some(outcome) = done {
                        let w = shared.borrow_mut().membership_waiters.remove(&token);
                        if let Some(slot) = w {
                            complete(&slot, outcome);
                        }
                    }
                }
                Command::LogStart {
                    group,
                    kafka_offset,
                    token,
                } => {
                    dirty.insert(group);
                    if let Err(e) = driver.propose_log_start(group, kafka_offset, token) {
                        let w = shared.borrow_mut().waiters.remove(&token);
                        if let Some((_, slot)) = w {
                            complete(&slot, Err(e));
                        }
                    }
                }
                Command::Compact {
                    group,
                    kafka_offset,
                    reply,
                } => match driver.compact(group, kafka_offset).await {
                    Ok(start) => {
                        dirty.insert(group);
                        complete(&reply, Ok(start));
                    }
                    Err(e) => {
                        // The runtime stops with the I/O error; the caller learns why.
                        complete(&reply, Err(DriverError::Stopped(e.to_string())));
                        return Err(e);
                    }
                },
                Command::Stop => stop = true,
            }
        }
        // Proposals.
        let queued = std::mem::take(&mut shared.borrow_mut().proposals);
        for (group, batch, wait, token) in queued {
            dirty.insert(group);
            if let Err(e) = driver.propose_with(group, batch, token, wait == WaitFor::Leader) {
                let w = shared.borrow_mut().waiters.remove(&token);
                if let Some((_, slot)) = w {
                    complete(&slot, Err(e));
                }
            }
        }
        driver.process_ready().await?;
        // Waiters: acks=1 at the leader's flushed append, acks=all at commit.
        for a in driver.take_appended() {
            dirty.insert(a.group);
            let w = {
                let mut sh = shared.borrow_mut();
                match sh.waiters.get(&a.token) {
                    Some((WaitFor::Leader, _)) => sh.waiters.remove(&a.token),
                    _ => None,
                }
            };
            if let Some((_, slot)) = w {
                complete(
                    &slot,
                    Ok(Committed {
                        kafka_offset: a.kafka_offset,
                        high_watermark: a.high_watermark,
                    }),
                );
            }
        }
        for ev in driver.take_events() {
            let (group, token, outcome) = match ev {
                Event::Committed {
                    group,
                    token,
                    kafka_offset,
                    high_watermark,
                } => (
                    group,
                    token,
                    Ok(Committed {
                        kafka_offset,
                        high_watermark,
                    }),
                ),
                Event::Failed {
                    group,
                    token,
                    error,
                } => (group, token, Err(error)),
            };
            dirty.insert(group);
            let w = shared.borrow_mut().waiters.remove(&token);
            if let Some((_, slot)) = w {
                complete(&slot, outcome);
            }
        }
        for (g, _) in driver.take_hw_changes() {
            dirty.insert(g);
        }
        for ev in driver.take_membership_events() {
            dirty.insert(ev.group);
            let w = shared.borrow_mut().membership_waiters.remove(&ev.token);
            if let Some(slot) = w {
                complete(&slot, ev.result);
            }
        }
        // Statuses of the groups this iteration touched: envelopes, commands, proposals,
        // outcomes, elections or step-downs caused by a tick, and after a tick every group
        // this node leads with peers (in-sync windows and quorum expire with time alone).
        dirty.extend(opened.iter().copied());
        dirty.extend(driver.take_tick_changes());
        if ticked {
            let sh = shared.borrow();
            dirty.extend(
                sh.statuses
                    .iter()
                    .filter(|(_, s)| {
                        s.leader == Some(sh.node_id)
                            && s.voters.len() + s.voters_outgoing.len() + s.learners.len() > 1
                    })
                    .map(|(g, _)| *g),
            );
        }
        let refresh = std::mem::take(&mut dirty);
        let mut changed = Vec::new();
        {
            let mut sh = shared.borrow_mut();
            sh.stats = driver.stats();
            for g in refresh {
                let Some(st) = driver.status(g) else { continue };
                if opened.remove(&g) || sh.statuses.get(&g) != Some(&st) {
                    sh.statuses.insert(g, st.clone());
                    changed.push((g, st));
                }
            }
        }
        if !changed.is_empty() {
            let callbacks = shared.borrow().callbacks.clone();
            for (g, st) in &changed {
                for f in &callbacks {
                    f(*g, st);
                }
            }
        }
        if stop {
            return Ok(());
        }
    }
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
            let a = h.replicate(0, batch(3), WaitFor::Majority).await.unwrap();
            let b = h.replicate(0, batch(2), WaitFor::Majority).await.unwrap();
            assert_eq!((a.kafka_offset, a.high_watermark), (0, 3));
            assert_eq!((b.kafka_offset, b.high_watermark), (3, 5));
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{:?}",
                t.elapsed()
            );
            assert_eq!(h.high_watermark(0), Some(5));
            assert!(matches!(
                h.replicate(7, batch(1), WaitFor::Majority).await,
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
            let c = leader
                .replicate(0, batch(4), WaitFor::Majority)
                .await
                .unwrap();
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
