//! The real transport: framed envelopes ([`crate::rpc`]) over TCP, on glommio.
//!
//! - [`listen`] binds the internal RPC address (broker flag `--rpc-addr`, default
//!   [`DEFAULT_RPC_ADDR`]), accepts connections and decodes frames into an inbox channel that
//!   the core's driver loop drains into `MultiRaft::step`. A malformed frame closes that
//!   connection only.
//! - [`TcpTransport`] keeps one outgoing connection per peer, written by one task per peer
//!   from a bounded queue. When the queue is full or the connection fails, frames are dropped:
//!   Raft retransmits, so the transport never blocks the driver.
//!
//! Ownership: per core, `!Send`; must run inside a glommio executor (tasks are spawned with
//! `glommio::spawn_local`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};

use crate::rpc::{decode_frame, encode_frame, frame_len, FRAME_LEN_BYTES};
use crate::transport::{Envelope, NodeId, Transport};

/// Default internal RPC address (`--rpc-addr`).
pub const DEFAULT_RPC_ADDR: &str = "127.0.0.1:33145";

/// Limits of the TCP transport.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// Largest frame accepted or sent; larger incoming frames close the connection.
    pub frame_bytes_max: usize,
    /// Frames queued per peer before new ones are dropped.
    pub send_queue_frames_max: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            frame_bytes_max: 64 << 20,
            send_queue_frames_max: 1024,
        }
    }
}

/// Counters of a transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Frames queued for sending.
    pub frames_queued: u64,
    /// Frames dropped: queue full, unknown peer, unencodable or too large.
    pub frames_dropped: u64,
}

struct Peer {
    tx: LocalSender<Bytes>,
}

/// Sending side: one connection and writer task per peer.
///
/// Ownership: per core, `!Send`; clones share the peers.
#[derive(Clone)]
pub struct TcpTransport {
    node: NodeId,
    cfg: RpcConfig,
    peers: Rc<RefCell<BTreeMap<NodeId, Peer>>>,
    stats: Rc<RefCell<TcpStats>>,
}

impl TcpTransport {
    /// A transport for `node` with no peers yet.
    pub fn new(node: NodeId, cfg: RpcConfig) -> Self {
        Self {
            node,
            cfg,
            peers: Rc::default(),
            stats: Rc::default(),
        }
    }

    /// Adds (or replaces) the address of a peer and starts its writer task.
    pub fn add_peer(&self, peer: NodeId, addr: SocketAddr) {
        let (tx, rx) = local_channel::new_bounded(self.cfg.send_queue_frames_max);
        glommio::spawn_local(write_loop(addr, rx)).detach();
        self.peers.borrow_mut().insert(peer, Peer { tx });
    }

    /// Counters so far.
    pub fn stats(&self) -> TcpStats {
        *self.stats.borrow()
    }
}

async fn write_loop(addr: SocketAddr, rx: LocalReceiver<Bytes>) {
    let mut conn: Option<TcpStream> = None;
    while let Some(frame) = rx.recv().await {
        if conn.is_none() {
            conn = TcpStream::connect(addr).await.ok();
            if let Some(c) = &conn {
                let _ = c.set_nodelay(true);
            }
        }
        if let Some(c) = conn.as_mut() {
            if c.write_all(&frame).await.is_err() {
                conn = None; // frame lost; Raft retransmits
            }
        }
    }
}

impl Transport for TcpTransport {
    fn send(&self, env: Envelope) {
        assert_eq!(env.from, self.node, "envelope sent from the wrong node");
        let mut stats = self.stats.borrow_mut();
        let frame = match encode_frame(&env) {
            Ok(f) if f.len() - FRAME_LEN_BYTES <= self.cfg.frame_bytes_max => f,
            _ => {
                stats.frames_dropped += 1;
                return;
            }
        };
        match self.peers.borrow().get(&env.to) {
            Some(p) if p.tx.try_send(frame).is_ok() => stats.frames_queued += 1,
            _ => stats.frames_dropped += 1,
        }
    }
}

/// Binds `addr` and serves incoming connections, sending every decoded envelope to `inbox`.
/// Returns the bound address (useful with port 0).
pub fn listen(
    addr: SocketAddr,
    cfg: RpcConfig,
    inbox: LocalSender<Envelope>,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).map_err(|e| io::Error::other(e.to_string()))?;
    let local = listener
        .local_addr()
        .map_err(|e| io::Error::other(e.to_string()))?;
    let inbox = Rc::new(inbox);
    glommio::spawn_local(async move {
        while let Ok(stream) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            glommio::spawn_local(read_loop(stream, cfg.frame_bytes_max, inbox.clone())).detach();
        }
    })
    .detach();
    Ok(local)
}

async fn read_loop(
    mut stream: TcpStream,
    frame_bytes_max: usize,
    inbox: Rc<LocalSender<Envelope>>,
) {
    let mut len = [0u8; FRAME_LEN_BYTES];
    loop {
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = match frame_len(&len, frame_bytes_max) {
            Ok(Some(n)) => n,
            _ => return, // oversized: close the connection
        };
        let mut body = vec![0u8; n];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        match decode_frame(Bytes::from(body)) {
            Ok(env) => {
                if inbox.send(env).await.is_err() {
                    return;
                }
            }
            Err(_) => return, // malformed: close this connection only
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Beat;

    fn run<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn envelopes_cross_a_real_tcp_connection_and_a_malformed_peer_is_cut_off_alone() {
        run(|| async {
            let (tx, rx) = local_channel::new_bounded(16);
            let addr = listen("127.0.0.1:0".parse().unwrap(), RpcConfig::default(), tx).unwrap();
            // A misbehaving client: garbage frame with a plausible length.
            let mut bad = TcpStream::connect(addr).await.unwrap();
            bad.write_all(&[12, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
                .await
                .unwrap();
            let t = TcpTransport::new(1, RpcConfig::default());
            t.add_peer(2, addr);
            for g in 0..3 {
                let mut env = Envelope::new(1, 2);
                env.heartbeats.push(Beat {
                    group: g,
                    term: 4,
                    commit: 9,
                    context: Bytes::new(),
                });
                t.send(env);
            }
            for g in 0..3 {
                let env = rx.recv().await.unwrap();
                assert_eq!((env.from, env.to), (1, 2));
                assert_eq!(env.heartbeats[0].group, g, "frames arrive in order");
            }
            // Unknown peer: dropped, counted.
            t.send(Envelope::new(1, 7));
            assert_eq!(
                t.stats(),
                TcpStats {
                    frames_queued: 3,
                    frames_dropped: 1
                }
            );
            // The garbage connection was closed by the listener.
            let mut buf = [0u8; 1];
            assert_eq!(bad.read(&mut buf).await.unwrap_or(0), 0);
        });
    }
}
