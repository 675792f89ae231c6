//! Broker liveness: which peers this node considers down, decided quickly.
//!
//! Core 0 keeps one held [`PING`] call open to every peer: the peer answers it after
//! `hold_ms` (or at once when it is stopping), and core 0 sends the next one at once. So
//! - a peer that dies (SIGKILL, crash) is noticed as soon as the kernel closes its
//!   connection: the pending call fails with "connection lost", and reconnecting is refused;
//! - a peer that stops answering (SIGSTOP, stalled core, partition) is noticed when a call
//!   gets no answer within `broker_session_timeout_ms` (Kafka's `broker.session.timeout.ms`
//!   plays the same part for KRaft broker fencing) and a second call asking for an immediate
//!   answer gets none within a third of that (so a pause of this process is not blamed on the
//!   peer);
//! - a peer is live again as soon as one call is answered.
//!
//! A down broker's leader claims are hidden and it is removed from every ISR in the leader
//! table ([`super::leaders::LeaderTable::set_down`]); the handlers leave it out of the broker
//! list (Kafka lists only live brokers in Metadata and DescribeCluster) and report its
//! replicas in `offline_replicas` (Metadata v5+). Liveness is this node's local view, never
//! part of the replicated metadata: each node decides for itself (like Kafka's fenced state,
//! it only shapes what clients are told).
//!
//! Ownership: [`Liveness`] is per core (`!Send`, a shard extension). Core 0 decides and pushes
//! the down set to the other cores (plain `BTreeSet<i32>` values over the mesh); every core
//! answers [`Shard::broker_is_down`] from its own copy.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{cc, push_delta, register_method, MethodError, RpcError};
use crate::notify::Notify;
use crate::shard::Shard;

/// `PING`: a liveness probe. Payload: `hold_ms:u32` little-endian (missing = 0); the answer
/// (empty) comes after at most that long, earlier when the serving node is stopping.
pub const PING: u16 = 6;

/// Longest hold a PING handler honours.
const HOLD_MS_MAX: u64 = 10_000;
/// Pause before probing a peer again after its connection was refused or lost.
const RETRY_MS: u64 = 50;
/// How often core 0 looks for newly learnt peers to watch.
const WATCH_SCAN_MS: u64 = 100;

/// Per-core liveness state (see the module doc). `!Send`.
#[derive(Default)]
pub struct Liveness {
    /// Brokers considered down (never this node).
    down: RefCell<BTreeSet<i32>>,
    /// Bumped on every change of `down`.
    changed: Notify,
    /// Version of `down` (core 0 counts; other cores ignore an older push that arrives late).
    version: Cell<u64>,
    // ---- core 0 only
    started: Cell<bool>,
    /// Peers with a watcher task.
    watched: RefCell<BTreeSet<i32>>,
}

fn lv(shard: &Shard) -> Rc<Liveness> {
    shard.extension(Liveness::default)
}

impl Shard {
    /// True when this node considers broker `id` down (its RPC connection failed or it
    /// stopped answering; see `cluster::liveness`). Any core; a set lookup. Never true for
    /// this node itself.
    pub fn broker_is_down(&self, id: i32) -> bool {
        lv(self).down.borrow().contains(&id)
    }

    /// The brokers this node considers down, ascending. Any core.
    pub fn down_brokers(&self) -> Vec<i32> {
        lv(self).down.borrow().iter().copied().collect()
    }
}

/// Waits until the down set changes on this core (or `max` passes).
pub async fn wait_change(shard: &Shard, max: Duration) {
    let l = lv(shard);
    let seen = l.changed.generation();
    futures_lite::future::or(l.changed.wait(seen), async {
        glommio::timer::sleep(max).await;
    })
    .await;
}

/// Core 0 (and idempotent): serves PING and starts watching every peer, now and as peers are
/// learnt. Other cores forward PING to core 0 (`dispatch`).
pub(super) fn start(shard: &Rc<Shard>) {
    assert_eq!(shard.core(), 0, "liveness is decided on core 0");
    let l = lv(shard);
    if l.started.replace(true) {
        return;
    }
    register_method(
        shard,
        PING,
        Rc::new(|s, payload| Box::pin(async move { serve_ping(s, payload).await })),
    );
    glommio::spawn_local(watch_peers_task(Rc::downgrade(shard))).detach();
}

async fn serve_ping(shard: Rc<Shard>, payload: Bytes) -> Result<Bytes, MethodError> {
    let hold_ms = match payload.get(..4) {
        Some(b) => u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        None => 0,
    }
    .min(HOLD_MS_MAX);
    let until = Instant::now() + Duration::from_millis(hold_ms);
    let weak = Rc::downgrade(&shard);
    drop(shard);
    loop {
        match weak.upgrade() {
            Some(s) if !s.stopping() => {}
            _ => return Err(MethodError::Unavailable("stopping".into())),
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Bytes::new());
        }
        glommio::timer::sleep(left.min(Duration::from_millis(50))).await;
    }
}

/// Core 0: spawns a watcher for every peer that has none.
async fn watch_peers_task(me: Weak<Shard>) {
    loop {
        let Some(shard) = me.upgrade() else { return };
        if shard.stopping() {
            return;
        }
        let peers: Vec<i32> = cc(&shard).peers.borrow().keys().copied().collect();
        let l = lv(&shard);
        for p in peers {
            if p != shard.config().node_id && l.watched.borrow_mut().insert(p) {
                glommio::spawn_local(watch_peer(Rc::downgrade(&shard), p)).detach();
            }
        }
        drop(shard);
        glommio::timer::sleep(Duration::from_millis(WATCH_SCAN_MS)).await;
    }
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// The peer answered (any answer, even an error status: it is running).
    Answered,
    /// No answer in time: the peer is stalled or unreachable.
    Silent,
    /// Connection refused or lost, or the peer said it is stopping.
    Gone(String),
}

fn probe_outcome(r: &Result<Bytes, RpcError>) -> Probe {
    match r {
        Ok(_) | Err(RpcError::UnknownMethod(_)) | Err(RpcError::Remote { .. }) => Probe::Answered,
        Err(RpcError::Timeout) => Probe::Silent,
        Err(e) => Probe::Gone(e.to_string()),
    }
}

/// Core 0: probes `peer` back to back for as long as it is a known peer.
async fn watch_peer(me: Weak<Shard>, peer: i32) {
    loop {
        let Some(shard) = me.upgrade() else { return };
        if shard.stopping() {
            return;
        }
        let c = cc(&shard);
        let Some(addr) = c.peers.borrow().get(&peer).map(|p| p.rpc_addr) else {
            lv(&shard).watched.borrow_mut().remove(&peer);
            set_down(&shard, peer, false, "no longer a known peer");
            return;
        };
        let session_ms = shard.config().cluster.broker_session_timeout_ms.max(100);
        // Hold a third of the session: a healthy peer answers well before the timeout. A peer
        // that is down is asked to answer at once, so its return is noticed at once.
        let hold_ms = if shard.broker_is_down(peer) {
            0
        } else {
            (session_ms / 3).max(50)
        };
        let client = c.client.clone();
        drop(c);
        drop(shard);
        let payload = Bytes::copy_from_slice(&(hold_ms as u32).to_le_bytes());
        let r = client
            .call(addr, PING, payload, Duration::from_millis(session_ms))
            .await;
        let mut outcome = probe_outcome(&r);
        if outcome == Probe::Silent {
            // Confirm with an immediate answer asked for: a held call can also time out
            // because THIS process was stalled (SIGSTOP, a long pause) while the peer is fine.
            let confirm_ms = (session_ms / 3).max(50);
            let r = client
                .call(
                    addr,
                    PING,
                    Bytes::copy_from_slice(&0u32.to_le_bytes()),
                    Duration::from_millis(confirm_ms),
                )
                .await;
            outcome = probe_outcome(&r);
        }
        let Some(shard) = me.upgrade() else { return };
        match outcome {
            Probe::Answered => set_down(&shard, peer, false, "answered"),
            Probe::Silent => set_down(
                &shard,
                peer,
                true,
                &format!("no answer within {session_ms} ms"),
            ),
            Probe::Gone(why) => {
                set_down(&shard, peer, true, &why);
                drop(shard);
                glommio::timer::sleep(Duration::from_millis(RETRY_MS)).await;
            }
        }
    }
}

/// A request from `peer` arrived (HELLO): it runs, so it is live again at once rather than
/// at its watcher's next probe (a restarted node says HELLO before it serves clients). Core 0;
/// ignored elsewhere.
pub(super) fn heard_from(shard: &Rc<Shard>, peer: i32) {
    if shard.core() == 0 && peer != shard.config().node_id && shard.broker_is_down(peer) {
        set_down(shard, peer, false, "sent HELLO");
    }
}

/// Core 0: records `peer` as down or live; on a change, updates the leader table (pushing its
/// changes to every core) and every core's copy of the down set.
fn set_down(shard: &Rc<Shard>, peer: i32, down: bool, why: &str) {
    assert_eq!(shard.core(), 0, "liveness is decided on core 0");
    let l = lv(shard);
    let changed = if down {
        l.down.borrow_mut().insert(peer)
    } else {
        l.down.borrow_mut().remove(&peer)
    };
    if !changed {
        return;
    }
    if down {
        tracing::info!(broker = peer, reason = why, "broker marked down");
    } else {
        tracing::info!(broker = peer, "broker live again");
    }
    let set = l.down.borrow().clone();
    let version = l.version.get() + 1;
    l.version.set(version);
    l.changed.notify_all();
    let delta = cc(shard).table.borrow_mut().set_down(set.clone());
    push_delta(shard, delta);
    for core in 1..shard.cores() {
        let s = shard.clone();
        let set = set.clone();
        glommio::spawn_local(async move {
            let _ = s
                .invoke_on(core, move |t| async move {
                    let l = lv(&t);
                    if version > l.version.get() {
                        l.version.set(version);
                        *l.down.borrow_mut() = set;
                        l.changed.notify_all();
                    }
                })
                .await;
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn any_answer_means_live_silence_and_lost_connections_mean_down() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(probe_outcome(&Ok(Bytes::new())), Probe::Answered);
        // A peer that does not know PING still answered: it runs.
        assert_eq!(
            probe_outcome(&Err(RpcError::UnknownMethod(PING))),
            Probe::Answered
        );
        assert_eq!(probe_outcome(&Err(RpcError::Timeout)), Probe::Silent);
        assert!(matches!(
            probe_outcome(&Err(RpcError::Disconnected(addr))),
            Probe::Gone(_)
        ));
        assert!(matches!(
            probe_outcome(&Err(RpcError::Unavailable("stopping".into()))),
            Probe::Gone(_)
        ));
    }
}
