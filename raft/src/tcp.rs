//! The real transport: framed envelopes ([`crate::rpc`]) over TCP, on glommio.
//!
//! - [`listen`] binds the internal RPC address (broker flag `--rpc-addr`, default
//!   [`DEFAULT_RPC_ADDR`]), accepts connections and decodes frames into an inbox channel that
//!   the core's driver loop drains into `MultiRaft::step`. A malformed frame closes that
//!   connection only.
//! - [`TcpTransport`] keeps one outgoing connection per peer, written by one task per peer
//!   from a bounded queue. When the queue is full or the connection fails, frames are dropped:
//!   Raft retransmits, so the transport never blocks the driver.
//! - [`serve`] is [`listen`] for a node with several cores: envelopes go to a callback (the
//!   engine routes each group to its core) and request frames to a handler whose answer goes
//!   back on the same connection; [`RpcClient::call`] is the calling side (one connection per
//!   destination, calls matched by id, bounded in flight, with a timeout).
//!
//! Ownership: per core, `!Send`; must run inside a glommio executor (tasks are spawned with
//! `glommio::spawn_local`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};

use crate::rpc::{
    decode_any, encode_frame, encode_request, encode_response, frame_len, status, Frame,
    RpcRequest, RpcResponse, CALL_FRAME_OVERHEAD_BYTES, FRAME_LEN_BYTES,
};
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
    /// Calls ([`RpcClient::call`]) outstanding per destination address; further callers wait
    /// (within their timeout) for one to finish.
    pub calls_in_flight_per_peer_max: usize,
    /// Requests one inbound connection may have in its handlers at once; the connection is
    /// not read further until one finishes (backpressure on that peer only).
    pub requests_in_flight_per_conn_max: usize,
    /// Connecting to a peer for a call gives up after this long.
    pub connect_timeout_ms: u64,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            frame_bytes_max: 64 << 20,
            send_queue_frames_max: 1024,
            calls_in_flight_per_peer_max: 64,
            requests_in_flight_per_conn_max: 64,
            connect_timeout_ms: 1000,
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

/// Binds `addr` and serves incoming connections, sending every decoded envelope to `inbox`
/// (waiting while it is full: backpressure on that connection). Requests are answered
/// `UNKNOWN_METHOD`. Returns the bound address (useful with port 0).
pub fn listen(
    addr: SocketAddr,
    cfg: RpcConfig,
    inbox: LocalSender<Envelope>,
) -> io::Result<SocketAddr> {
    // Dropping the handle detaches the accept task: it serves for the executor's lifetime.
    serve_on(addr, cfg, Sink::Inbox(Rc::new(inbox)), None).map(|l| l.local_addr())
}

// ------------------------------------------------------------------ serving requests

/// Called with every envelope a connection delivers, in arrival order; must not block (the
/// engine routes it to the owning core and drops it there if that core's inbox is full).
pub type EnvelopeSink = Rc<dyn Fn(Envelope)>;

/// The future a [`RequestHandler`] returns: `(status, payload)` of the response.
pub type HandlerFuture = Pin<Box<dyn Future<Output = (u16, Bytes)>>>;

/// Serves one request: `(method, payload)` → response. Runs as its own task on the core
/// that accepted the connection; at most `requests_in_flight_per_conn_max` per connection.
pub type RequestHandler = Rc<dyn Fn(u16, Bytes) -> HandlerFuture>;

#[derive(Clone)]
enum Sink {
    Inbox(Rc<LocalSender<Envelope>>),
    Callback(EnvelopeSink),
}

/// Like [`listen`], but every envelope goes to `on_envelope` and requests (frame kind 2) to
/// `on_request`, whose answer goes back on the same connection (kind 3).
///
/// The listener is bound with SO_REUSEPORT (glommio's default), so every core of a node may
/// serve the same address and the kernel spreads connections over them.
pub fn serve(
    addr: SocketAddr,
    cfg: RpcConfig,
    on_envelope: EnvelopeSink,
    on_request: RequestHandler,
) -> io::Result<Listener> {
    serve_on(addr, cfg, Sink::Callback(on_envelope), Some(on_request))
}

/// A serving listener (per core, `!Send`). [`Listener::close`] stops accepting and closes
/// the listening socket; connections already accepted keep being served until they end.
pub struct Listener {
    addr: SocketAddr,
    accept: glommio::task::JoinHandle<()>,
}

impl Listener {
    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; the socket closes once the executor drops the accept task.
    pub fn close(&self) {
        self.accept.cancel();
    }
}

fn serve_on(
    addr: SocketAddr,
    cfg: RpcConfig,
    sink: Sink,
    on_request: Option<RequestHandler>,
) -> io::Result<Listener> {
    let listener = TcpListener::bind(addr).map_err(|e| io::Error::other(e.to_string()))?;
    let local = listener
        .local_addr()
        .map_err(|e| io::Error::other(e.to_string()))?;
    let accept = glommio::spawn_local(async move {
        while let Ok(stream) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            glommio::spawn_local(read_loop(
                stream,
                cfg.clone(),
                sink.clone(),
                on_request.clone(),
            ))
            .detach();
        }
    })
    .detach();
    Ok(Listener {
        addr: local,
        accept,
    })
}

/// Reads one frame body; `None` at end of stream, on an I/O error or an oversized length.
async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    stream: &mut R,
    frame_bytes_max: usize,
) -> Option<Bytes> {
    let mut len = [0u8; FRAME_LEN_BYTES];
    stream.read_exact(&mut len).await.ok()?;
    let n = match frame_len(&len, frame_bytes_max) {
        Ok(Some(n)) => n,
        _ => return None, // oversized: close the connection
    };
    let mut body = vec![0u8; n];
    stream.read_exact(&mut body).await.ok()?;
    Some(Bytes::from(body))
}

async fn read_loop(
    stream: TcpStream,
    cfg: RpcConfig,
    sink: Sink,
    on_request: Option<RequestHandler>,
) {
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    // Responses are written by one task from a queue as deep as the in-flight limit.
    let (resp_tx, resp_rx) =
        local_channel::new_bounded::<Bytes>(cfg.requests_in_flight_per_conn_max.max(1));
    glommio::spawn_local(async move {
        while let Some(frame) = resp_rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    })
    .detach();
    let resp_tx = Rc::new(resp_tx);
    let in_flight = Rc::new(glommio::sync::Semaphore::new(
        cfg.requests_in_flight_per_conn_max.max(1) as u64,
    ));
    while let Some(body) = read_frame(&mut rd, cfg.frame_bytes_max).await {
        match decode_any(body) {
            Ok(Frame::Envelope(env)) => match &sink {
                Sink::Inbox(inbox) => {
                    if inbox.send(env).await.is_err() {
                        return;
                    }
                }
                Sink::Callback(f) => f(env),
            },
            Ok(Frame::Request(req)) => {
                let Ok(permit) = in_flight.acquire_static_permit(1).await else {
                    return;
                };
                let handler = on_request.clone();
                let tx = resp_tx.clone();
                let frame_bytes_max = cfg.frame_bytes_max;
                glommio::spawn_local(async move {
                    let (status, payload) = match handler {
                        Some(h) => h(req.method, req.payload).await,
                        None => (status::UNKNOWN_METHOD, Bytes::new()),
                    };
                    let mut resp = RpcResponse {
                        id: req.id,
                        status,
                        payload,
                    };
                    if resp.payload.len() + CALL_FRAME_OVERHEAD_BYTES > frame_bytes_max {
                        resp.status = status::ERROR;
                        resp.payload = Bytes::from_static(b"response exceeds frame_bytes_max");
                    }
                    let _ = tx.send(encode_response(&resp)).await;
                    drop(permit);
                })
                .detach();
            }
            // A response on a serving connection, or a malformed frame: close this
            // connection only.
            Ok(Frame::Response(_)) | Err(_) => return,
        }
    }
}

// ------------------------------------------------------------------ calling other nodes

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RpcError {
    /// No answer within the caller's timeout (the request may still have been served).
    #[error("call timed out")]
    Timeout,
    /// The connection could not be opened.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Destination.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The connection broke before the answer arrived (the request may have been served).
    #[error("connection to {0} lost")]
    Disconnected(SocketAddr),
    /// The request does not fit in `frame_bytes_max`.
    #[error("request of {len} bytes exceeds the frame limit of {max} bytes")]
    TooLarge {
        /// Payload bytes.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The peer has no handler for the method.
    #[error("peer has no method {0}")]
    UnknownMethod(u16),
    /// The peer cannot serve it now; retry later.
    #[error("peer unavailable: {0}")]
    Unavailable(String),
    /// The handler failed (or answered an unknown status).
    #[error("remote error (status {status}): {message}")]
    Remote {
        /// Response status.
        status: u16,
        /// The handler's message.
        message: String,
    },
}

#[derive(Default)]
struct CallSlot {
    outcome: Option<Result<Bytes, RpcError>>,
    waker: Option<Waker>,
}

fn complete_call(slot: &RefCell<CallSlot>, outcome: Result<Bytes, RpcError>) {
    let mut s = slot.borrow_mut();
    if s.outcome.is_none() {
        s.outcome = Some(outcome);
    }
    if let Some(w) = s.waker.take() {
        w.wake();
    }
}

struct CallWait(Rc<RefCell<CallSlot>>);

impl Future for CallWait {
    type Output = Result<Bytes, RpcError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.borrow_mut();
        match s.outcome.take() {
            Some(o) => Poll::Ready(o),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// One outgoing call connection (per destination address, per core).
struct CallConn {
    addr: SocketAddr,
    tx: LocalSender<Bytes>,
    pending: RefCell<HashMap<u64, Rc<RefCell<CallSlot>>>>,
    in_flight: Rc<glommio::sync::Semaphore>,
    next_id: Cell<u64>,
    dead: Cell<bool>,
}

impl CallConn {
    /// Fails every pending call and forgets the connection (the next call reconnects).
    fn fail(
        self: &Rc<Self>,
        err: RpcError,
        conns: &Weak<RefCell<HashMap<SocketAddr, Rc<CallConn>>>>,
    ) {
        self.dead.set(true);
        for (_, slot) in self.pending.borrow_mut().drain() {
            complete_call(&slot, Err(err.clone()));
        }
        if let Some(map) = conns.upgrade() {
            let mut map = map.borrow_mut();
            if map.get(&self.addr).is_some_and(|c| Rc::ptr_eq(c, self)) {
                map.remove(&self.addr);
            }
        }
    }
}

/// Counters of an [`RpcClient`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls started.
    pub calls: u64,
    /// Calls that ended in an error (timeouts included).
    pub failed: u64,
    /// Connections opened.
    pub connects: u64,
}

/// The calling side of request/response frames: one connection per destination address
/// (opened on first use, reopened after a failure), at most `calls_in_flight_per_peer_max`
/// calls outstanding on it, answers matched by id.
///
/// Ownership: per core, `!Send`; clones share the connections. Needs a glommio executor.
#[derive(Clone)]
pub struct RpcClient {
    cfg: RpcConfig,
    conns: Rc<RefCell<HashMap<SocketAddr, Rc<CallConn>>>>,
    stats: Rc<Cell<CallStats>>,
}

impl RpcClient {
    /// A client with no connections yet.
    pub fn new(cfg: RpcConfig) -> Self {
        Self {
            cfg,
            conns: Rc::default(),
            stats: Rc::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CallStats {
        self.stats.get()
    }

    fn bump(&self, f: impl FnOnce(&mut CallStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn conn(&self, addr: SocketAddr) -> Rc<CallConn> {
        if let Some(c) = self.conns.borrow().get(&addr) {
            if !c.dead.get() {
                return c.clone();
            }
        }
        let depth = self.cfg.calls_in_flight_per_peer_max.max(1);
        let (tx, rx) = local_channel::new_bounded::<Bytes>(depth);
        let conn = Rc::new(CallConn {
            addr,
            tx,
            pending: RefCell::default(),
            in_flight: Rc::new(glommio::sync::Semaphore::new(depth as u64)),
            next_id: Cell::new(1),
            dead: Cell::new(false),
        });
        self.conns.borrow_mut().insert(addr, conn.clone());
        self.bump(|s| s.connects += 1);
        let weak_conn = Rc::downgrade(&conn);
        let conns = Rc::downgrade(&self.conns);
        let cfg = self.cfg.clone();
        glommio::spawn_local(async move {
            let connect = TcpStream::connect(addr);
            let timeout = Duration::from_millis(cfg.connect_timeout_ms);
            let stream = futures_lite::future::or(
                async { connect.await.map_err(|e| e.to_string()) },
                async {
                    glommio::timer::sleep(timeout).await;
                    Err("connect timed out".to_string())
                },
            )
            .await;
            let stream = match stream {
                Ok(s) => s,
                Err(reason) => {
                    if let Some(c) = weak_conn.upgrade() {
                        c.fail(RpcError::Connect { addr, reason }, &conns);
                    }
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            let (mut rd, mut wr) = futures_lite::io::split(stream);
            let writer_conn = weak_conn.clone();
            let writer_conns = conns.clone();
            glommio::spawn_local(async move {
                while let Some(frame) = rx.recv().await {
                    if wr.write_all(&frame).await.is_err() {
                        if let Some(c) = writer_conn.upgrade() {
                            c.fail(RpcError::Disconnected(addr), &writer_conns);
                        }
                        return;
                    }
                }
            })
            .detach();
            // Reader: match answers to pending calls until the connection ends.
            loop {
                let body = read_frame(&mut rd, cfg.frame_bytes_max).await;
                let Some(conn) = weak_conn.upgrade() else {
                    return;
                };
                let resp = match body.map(decode_any) {
                    Some(Ok(Frame::Response(r))) => r,
                    // End of stream, I/O error, or anything but a response: drop the
                    // connection.
                    _ => {
                        conn.fail(RpcError::Disconnected(addr), &conns);
                        return;
                    }
                };
                let slot = conn.pending.borrow_mut().remove(&resp.id);
                if let Some(slot) = slot {
                    complete_call(&slot, response_outcome(resp));
                }
                // Unknown id: the call timed out already; its answer is dropped.
            }
        })
        .detach();
        conn
    }

    /// Sends `method(payload)` to the node at `addr` and waits for its answer, at most
    /// `timeout` in total (connecting and waiting for an in-flight slot included).
    pub async fn call(
        &self,
        addr: SocketAddr,
        method: u16,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        self.bump(|s| s.calls += 1);
        let r = futures_lite::future::or(self.call_inner(addr, method, payload), async {
            glommio::timer::sleep(timeout).await;
            Err(RpcError::Timeout)
        })
        .await;
        if r.is_err() {
            self.bump(|s| s.failed += 1);
        }
        r
    }

    async fn call_inner(
        &self,
        addr: SocketAddr,
        method: u16,
        payload: Bytes,
    ) -> Result<Bytes, RpcError> {
        if payload.len() + CALL_FRAME_OVERHEAD_BYTES > self.cfg.frame_bytes_max {
            return Err(RpcError::TooLarge {
                len: payload.len(),
                max: self.cfg.frame_bytes_max,
            });
        }
        let conn = self.conn(addr);
        let sem = conn.in_flight.clone();
        let _permit = sem
            .acquire_static_permit(1)
            .await
            .map_err(|_| RpcError::Disconnected(addr))?;
        if conn.dead.get() {
            return Err(RpcError::Disconnected(addr));
        }
        let id = conn.next_id.get();
        conn.next_id.set(id + 1);
        let frame = encode_request(&RpcRequest {
            id,
            method,
            payload,
        });
        let slot = Rc::new(RefCell::new(CallSlot::default()));
        conn.pending.borrow_mut().insert(id, slot.clone());
        // The queue is as deep as the in-flight limit, so a permit holder always fits.
        if conn.tx.try_send(frame).is_err() {
            conn.pending.borrow_mut().remove(&id);
            return Err(RpcError::Disconnected(addr));
        }
        // Forget the slot if the caller gives up (timeout drops this future).
        struct Forget<'a>(&'a CallConn, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.pending.borrow_mut().remove(&self.1);
            }
        }
        let _forget = Forget(&conn, id);
        CallWait(slot).await.map_err(|e| match e {
            RpcError::UnknownMethod(_) => RpcError::UnknownMethod(method),
            e => e,
        })
    }
}

fn response_outcome(resp: RpcResponse) -> Result<Bytes, RpcError> {
    let text = || String::from_utf8_lossy(&resp.payload).into_owned();
    match resp.status {
        status::OK => Ok(resp.payload.clone()),
        // The caller fills in the method it asked for.
        status::UNKNOWN_METHOD => Err(RpcError::UnknownMethod(0)),
        status::UNAVAILABLE => Err(RpcError::Unavailable(text())),
        s => Err(RpcError::Remote {
            status: s,
            message: text(),
        }),
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

#[cfg(test)]
mod call_tests {
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

    /// Method 1 echoes, 2 fails, 3 sleeps for the payload's u64 milliseconds, others unknown.
    fn handler(served: Rc<Cell<u32>>) -> RequestHandler {
        Rc::new(move |method, payload: Bytes| {
            served.set(served.get() + 1);
            Box::pin(async move {
                match method {
                    1 => (status::OK, payload),
                    2 => (status::ERROR, Bytes::from_static(b"no such thing")),
                    3 => {
                        let ms = u64::from_le_bytes(payload[..8].try_into().unwrap());
                        glommio::timer::sleep(Duration::from_millis(ms)).await;
                        (status::OK, Bytes::new())
                    }
                    _ => (status::UNKNOWN_METHOD, Bytes::new()),
                }
            })
        })
    }

    #[test]
    fn calls_and_envelopes_share_one_listener() {
        run(|| async {
            let served = Rc::new(Cell::new(0));
            let got: Rc<RefCell<Vec<Envelope>>> = Rc::default();
            let g = got.clone();
            let addr = serve(
                "127.0.0.1:0".parse().unwrap(),
                RpcConfig::default(),
                Rc::new(move |env| g.borrow_mut().push(env)),
                handler(served.clone()),
            )
            .unwrap()
            .local_addr();
            let c = RpcClient::new(RpcConfig::default());
            let t = Duration::from_secs(5);
            let echo = c.call(addr, 1, Bytes::from_static(b"ping"), t).await;
            assert_eq!(echo, Ok(Bytes::from_static(b"ping")));
            assert!(matches!(
                c.call(addr, 2, Bytes::new(), t).await,
                Err(RpcError::Remote { status: status::ERROR, ref message }) if message == "no such thing"
            ));
            assert_eq!(
                c.call(addr, 99, Bytes::new(), t).await,
                Err(RpcError::UnknownMethod(99))
            );
            // Concurrent calls on one connection are matched by id, not by order: the slow
            // one is answered last.
            let order: Rc<RefCell<Vec<&str>>> = Rc::default();
            let (o1, o2) = (order.clone(), order.clone());
            let (c1, c2) = (c.clone(), c.clone());
            let a = glommio::spawn_local(async move {
                let slow = c1.call(addr, 3, Bytes::copy_from_slice(&200u64.to_le_bytes()), t);
                assert!(slow.await.is_ok());
                o1.borrow_mut().push("slow");
            });
            let b = glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                let fast = c2.call(addr, 1, Bytes::from_static(b"fast"), t);
                assert_eq!(fast.await, Ok(Bytes::from_static(b"fast")));
                o2.borrow_mut().push("fast");
            });
            a.await;
            b.await;
            assert_eq!(*order.borrow(), vec!["fast", "slow"]);
            assert_eq!(c.stats().connects, 1, "one connection serves every call");
            // Envelopes sent by a transport to the same address reach the callback.
            let tr = TcpTransport::new(1, RpcConfig::default());
            tr.add_peer(2, addr);
            let mut env = Envelope::new(1, 2);
            env.heartbeats.push(Beat {
                group: 3,
                term: 1,
                commit: 0,
                context: Bytes::new(),
            });
            tr.send(env);
            let start = std::time::Instant::now();
            while got.borrow().is_empty() {
                assert!(start.elapsed() < Duration::from_secs(5), "envelope lost");
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(got.borrow()[0].heartbeats[0].group, 3);
            assert_eq!(served.get(), 5);
        });
    }

    #[test]
    fn timeouts_limits_and_dead_peers_fail_the_call_not_the_caller() {
        run(|| async {
            let cfg = RpcConfig {
                calls_in_flight_per_peer_max: 2,
                connect_timeout_ms: 300,
                frame_bytes_max: 1024,
                ..RpcConfig::default()
            };
            let served = Rc::new(Cell::new(0));
            let addr = serve(
                "127.0.0.1:0".parse().unwrap(),
                cfg.clone(),
                Rc::new(|_| {}),
                handler(served.clone()),
            )
            .unwrap()
            .local_addr();
            let c = RpcClient::new(cfg.clone());
            let sleep_ms = |ms: u64| Bytes::copy_from_slice(&ms.to_le_bytes());
            // A slow handler: the caller times out; the connection stays usable.
            let t = std::time::Instant::now();
            assert_eq!(
                c.call(addr, 3, sleep_ms(2_000), Duration::from_millis(100))
                    .await,
                Err(RpcError::Timeout)
            );
            assert!(t.elapsed() < Duration::from_millis(1_000));
            // The limit of 2 in flight (the timed-out call released its slot): two slow calls
            // hold both slots, so a third call waits and times out without being sent.
            let c2 = c.clone();
            let s1 = glommio::spawn_local(async move {
                c2.call(addr, 3, sleep_ms(600), Duration::from_secs(5))
                    .await
            });
            let c3 = c.clone();
            let s2 = glommio::spawn_local(async move {
                c3.call(addr, 3, sleep_ms(600), Duration::from_secs(5))
                    .await
            });
            glommio::timer::sleep(Duration::from_millis(100)).await;
            let before = served.get();
            assert_eq!(
                c.call(addr, 1, Bytes::new(), Duration::from_millis(200))
                    .await,
                Err(RpcError::Timeout)
            );
            assert_eq!(served.get(), before, "the waiting call was never sent");
            assert!(s1.await.is_ok());
            assert!(s2.await.is_ok());
            // Too large for the frame limit: refused before sending.
            assert!(matches!(
                c.call(
                    addr,
                    1,
                    Bytes::from(vec![0u8; 2000]),
                    Duration::from_secs(1)
                )
                .await,
                Err(RpcError::TooLarge { .. })
            ));
            // Nobody listening: a connect error, quickly.
            let dead: SocketAddr = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            assert!(matches!(
                c.call(dead, 1, Bytes::new(), Duration::from_secs(5)).await,
                Err(RpcError::Connect { .. })
            ));
            // The live peer is unaffected.
            assert_eq!(
                c.call(addr, 1, Bytes::from_static(b"x"), Duration::from_secs(5))
                    .await,
                Ok(Bytes::from_static(b"x"))
            );
        });
    }

    #[test]
    fn a_peer_that_answers_garbage_is_disconnected_and_the_next_call_reconnects() {
        run(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let c = RpcClient::new(RpcConfig::default());
            let call = {
                let c = c.clone();
                glommio::spawn_local(async move {
                    c.call(addr, 1, Bytes::new(), Duration::from_secs(5)).await
                })
            };
            let mut s = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(&[12, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
                .await
                .unwrap();
            assert_eq!(call.await, Err(RpcError::Disconnected(addr)));
            // A second call opens a new connection; this peer answers properly.
            let call = {
                let c = c.clone();
                glommio::spawn_local(async move {
                    c.call(
                        addr,
                        1,
                        Bytes::from_static(b"again"),
                        Duration::from_secs(5),
                    )
                    .await
                })
            };
            let mut s = listener.accept().await.unwrap();
            let body = read_frame(&mut s, 1 << 20).await.unwrap();
            let Ok(Frame::Request(req)) = decode_any(body) else {
                panic!("expected a request");
            };
            let resp = encode_response(&RpcResponse {
                id: req.id,
                status: status::OK,
                payload: req.payload,
            });
            s.write_all(&resp).await.unwrap();
            assert_eq!(call.await, Ok(Bytes::from_static(b"again")));
            assert_eq!(c.stats().connects, 2);
        });
    }

    #[test]
    fn a_closed_listener_refuses_new_connections_and_its_address_can_be_served_again() {
        run(|| async {
            let l = serve(
                "127.0.0.1:0".parse().unwrap(),
                RpcConfig::default(),
                Rc::new(|_| {}),
                handler(Rc::default()),
            )
            .unwrap();
            let addr = l.local_addr();
            let c = RpcClient::new(RpcConfig::default());
            let t = Duration::from_secs(5);
            assert!(c.call(addr, 1, Bytes::new(), t).await.is_ok());
            l.close();
            glommio::timer::sleep(Duration::from_millis(20)).await;
            assert!(TcpStream::connect(addr).await.is_err());
            // A restarted node binds the same address.
            let again = serve(
                addr,
                RpcConfig::default(),
                Rc::new(|_| {}),
                handler(Rc::default()),
            )
            .unwrap();
            let c2 = RpcClient::new(RpcConfig::default());
            assert_eq!(
                c2.call(again.local_addr(), 1, Bytes::from_static(b"x"), t)
                    .await,
                Ok(Bytes::from_static(b"x"))
            );
        });
    }
}
