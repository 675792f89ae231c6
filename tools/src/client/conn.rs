//! One pipelined Kafka connection: any number of requests may be outstanding; a writer task
//! coalesces queued frames into large writes and a reader task hands each response to the
//! request that is first in line (Kafka answers strictly in request order on a connection).
//!
//! Owned by one glommio executor (per-core, `!Send`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::sync::{oneshot, with_timeout, Notify, OneshotSender};
use super::ClientError;

/// Largest response frame accepted (explicit limit; Kafka's own default socket limit is 100 MiB).
pub const RESPONSE_FRAME_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Writes are coalesced up to this many bytes.
const WRITE_COALESCE_BYTES_MAX: usize = 1024 * 1024;
/// Read chunk size.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Highest version of each API this client speaks. Capped below versions that address topics
/// by id only (Produce v13, Fetch v13) because this client addresses topics by name.
pub fn client_max_version(key: ApiKey) -> i16 {
    match key {
        ApiKey::Produce => 9,
        ApiKey::Fetch => 12,
        ApiKey::ListOffsets => 7,
        ApiKey::Metadata => 12,
        ApiKey::OffsetCommit => 8,
        ApiKey::OffsetFetch => 7,
        ApiKey::FindCoordinator => 3,
        ApiKey::JoinGroup => 7,
        ApiKey::Heartbeat => 4,
        ApiKey::LeaveGroup => 4,
        ApiKey::SyncGroup => 5,
        ApiKey::DescribeGroups => 5,
        ApiKey::ListGroups => 4,
        ApiKey::ApiVersions => 3,
        ApiKey::CreateTopics => 7,
        ApiKey::DeleteTopics => 5,
        ApiKey::DescribeConfigs => 4,
        ApiKey::AlterConfigs => 2,
        ApiKey::CreatePartitions => 3,
        ApiKey::DeleteGroups => 2,
        _ => 0,
    }
}

/// Lowest version this client speaks (the kafka-protocol crate's floor for each message).
fn client_min_version(key: ApiKey) -> i16 {
    match key {
        ApiKey::Produce => 3,
        ApiKey::Fetch => 4,
        _ => 0,
    }
}

struct Outgoing {
    frame: Bytes,
    reply: Option<OneshotSender<Result<Bytes, ClientError>>>,
}

struct ConnShared {
    addr: String,
    client_id: StrBytes,
    next_correlation_id: Cell<i32>,
    queue: RefCell<VecDeque<Outgoing>>,
    pending: RefCell<VecDeque<OneshotSender<Result<Bytes, ClientError>>>>,
    queue_notify: Notify,
    death_notify: Notify,
    dead: RefCell<Option<String>>,
    /// Broker's supported version range per API key.
    broker_versions: RefCell<HashMap<i16, (i16, i16)>>,
    request_timeout: Duration,
}

impl ConnShared {
    fn kill(&self, reason: String) {
        if self.dead.borrow().is_none() {
            *self.dead.borrow_mut() = Some(reason.clone());
        }
        let queued: Vec<Outgoing> = self.queue.borrow_mut().drain(..).collect();
        let pending: Vec<_> = self.pending.borrow_mut().drain(..).collect();
        for o in queued {
            if let Some(r) = o.reply {
                r.send(Err(ClientError::Closed {
                    addr: self.addr.clone(),
                    reason: reason.clone(),
                }));
            }
        }
        for r in pending {
            r.send(Err(ClientError::Closed {
                addr: self.addr.clone(),
                reason: reason.clone(),
            }));
        }
        self.queue_notify.notify_all();
        self.death_notify.notify_all();
    }
}

/// A pipelined connection to one broker (per-core, `!Send`; cheap to clone).
#[derive(Clone)]
pub struct Connection {
    shared: Rc<ConnShared>,
}

struct ReadHalf(Rc<RefCell<TcpStream>>);
struct WriteHalf(Rc<RefCell<TcpStream>>);

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut *s).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut *s).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut *s).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut *s).poll_close(cx)
    }
}

impl Connection {
    /// Connects to `addr`, then negotiates API versions (ApiVersions first, as KIP-35 asks).
    pub async fn connect(
        addr: &str,
        client_id: &str,
        request_timeout: Duration,
    ) -> Result<Connection, ClientError> {
        let connect_err = |e: std::io::Error| ClientError::Connect {
            addr: addr.to_string(),
            reason: e.to_string(),
        };
        let stream = match with_timeout(request_timeout, TcpStream::connect(addr)).await {
            None => {
                return Err(ClientError::Connect {
                    addr: addr.to_string(),
                    reason: "connection timed out".into(),
                })
            }
            Some(r) => r.map_err(|e| connect_err(std::io::Error::other(e.to_string())))?,
        };
        let _ = stream.set_nodelay(true);
        let stream = Rc::new(RefCell::new(stream));
        let shared = Rc::new(ConnShared {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            next_correlation_id: Cell::new(1),
            queue: RefCell::new(VecDeque::new()),
            pending: RefCell::new(VecDeque::new()),
            queue_notify: Notify::default(),
            death_notify: Notify::default(),
            dead: RefCell::new(None),
            broker_versions: RefCell::new(HashMap::new()),
            request_timeout,
        });
        glommio::spawn_local(writer_loop(shared.clone(), WriteHalf(stream.clone()))).detach();
        glommio::spawn_local(reader_loop(shared.clone(), ReadHalf(stream))).detach();
        let conn = Connection { shared };
        conn.negotiate_versions().await?;
        Ok(conn)
    }

    /// The broker address this connection goes to.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// True once the connection failed; a new one must be made.
    pub fn is_dead(&self) -> bool {
        self.shared.dead.borrow().is_some()
    }

    async fn negotiate_versions(&self) -> Result<(), ClientError> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("freshet-cli");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        // v3 first; a broker that does not know v3 answers with a v0 error response listing
        // its range, and we retry with v0 (KIP-511).
        let resp = match self.call_version(&req, 3).await {
            Ok(r) if r.error_code == 0 => r,
            Ok(_) | Err(ClientError::Protocol(_)) => self.call_version(&req, 0).await?,
            Err(e) => return Err(e),
        };
        if resp.error_code != 0 {
            return Err(ClientError::kafka("ApiVersions", resp.error_code));
        }
        let mut map = self.shared.broker_versions.borrow_mut();
        for k in resp.api_keys {
            map.insert(k.api_key, (k.min_version, k.max_version));
        }
        Ok(())
    }

    /// The broker's supported range of every API it announced, sorted by key.
    pub fn broker_api_versions(&self) -> Vec<(i16, i16, i16)> {
        let mut v: Vec<(i16, i16, i16)> = self
            .shared
            .broker_versions
            .borrow()
            .iter()
            .map(|(&k, &(a, b))| (k, a, b))
            .collect();
        v.sort();
        v
    }

    /// Highest version of `key` both sides support, or an error naming the API.
    pub fn version(&self, key: ApiKey) -> Result<i16, ClientError> {
        let map = self.shared.broker_versions.borrow();
        let Some(&(bmin, bmax)) = map.get(&(key as i16)) else {
            return Err(ClientError::Unsupported {
                api: format!("{key:?}"),
                addr: self.shared.addr.clone(),
            });
        };
        let max = bmax.min(client_max_version(key));
        let min = bmin.max(client_min_version(key));
        if max < min {
            return Err(ClientError::Unsupported {
                api: format!("{key:?}"),
                addr: self.shared.addr.clone(),
            });
        }
        Ok(max)
    }

    /// Sends `req` at the negotiated version and waits for the response.
    pub async fn call<R: Request>(&self, req: &R) -> Result<(R::Response, i16), ClientError> {
        let key = ApiKey::try_from(R::KEY).expect("request type has a known API key");
        let version = self.version(key)?;
        Ok((self.call_version(req, version).await?, version))
    }

    /// Sends `req` at `version` and waits for the response.
    pub async fn call_version<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let (frame, correlation_id) = self.encode(req, version)?;
        let (tx, rx) = oneshot();
        self.enqueue(Outgoing {
            frame,
            reply: Some(tx),
        })?;
        let key = ApiKey::try_from(R::KEY).expect("request type has a known API key");
        let reply = match with_timeout(self.shared.request_timeout, rx).await {
            None => {
                let reason = format!("{key:?} request timed out");
                self.shared.kill(reason.clone());
                return Err(ClientError::Timeout {
                    addr: self.shared.addr.clone(),
                    api: format!("{key:?}"),
                });
            }
            Some(None) => {
                return Err(ClientError::Closed {
                    addr: self.shared.addr.clone(),
                    reason: "connection dropped".into(),
                })
            }
            Some(Some(r)) => r?,
        };
        let mut body = reply;
        let header_version = R::Response::header_version(version);
        let header = ResponseHeader::decode(&mut body, header_version)
            .map_err(|e| ClientError::Protocol(format!("{key:?} response header: {e}")))?;
        if header.correlation_id != correlation_id {
            let reason = format!(
                "correlation id mismatch: sent {correlation_id}, got {}",
                header.correlation_id
            );
            self.shared.kill(reason.clone());
            return Err(ClientError::Protocol(reason));
        }
        R::Response::decode(&mut body, version)
            .map_err(|e| ClientError::Protocol(format!("{key:?} v{version} response: {e}")))
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub fn send_no_response<R: Request>(&self, req: &R, version: i16) -> Result<(), ClientError> {
        let (frame, _) = self.encode(req, version)?;
        self.enqueue(Outgoing { frame, reply: None })
    }

    fn enqueue(&self, o: Outgoing) -> Result<(), ClientError> {
        if let Some(reason) = self.shared.dead.borrow().clone() {
            return Err(ClientError::Closed {
                addr: self.shared.addr.clone(),
                reason,
            });
        }
        self.shared.queue.borrow_mut().push_back(o);
        self.shared.queue_notify.notify_all();
        Ok(())
    }

    fn encode<R: Request>(&self, req: &R, version: i16) -> Result<(Bytes, i32), ClientError> {
        let correlation_id = self.shared.next_correlation_id.get();
        self.shared
            .next_correlation_id
            .set(correlation_id.wrapping_add(1).max(1));
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(self.shared.client_id.clone());
        let header_version = R::header_version(version);
        // Size the frame up front: Produce requests carry megabytes of batches and regrowing
        // the buffer would copy them several times.
        let body_bytes = req.compute_size(version).unwrap_or(0);
        let mut buf = BytesMut::with_capacity(64 + self.shared.client_id.len() + body_bytes);
        buf.put_i32(0);
        header
            .encode(&mut buf, header_version)
            .map_err(|e| ClientError::Protocol(format!("encode header: {e}")))?;
        req.encode(&mut buf, version)
            .map_err(|e| ClientError::Protocol(format!("encode request: {e}")))?;
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        Ok((buf.freeze(), correlation_id))
    }
}

async fn writer_loop(shared: Rc<ConnShared>, mut w: WriteHalf) {
    let mut out: Vec<u8> = Vec::with_capacity(WRITE_COALESCE_BYTES_MAX);
    loop {
        if shared.dead.borrow().is_some() {
            return;
        }
        let notified = shared.queue_notify.notified();
        out.clear();
        let mut single: Option<Bytes> = None;
        {
            let mut q = shared.queue.borrow_mut();
            let mut pending = shared.pending.borrow_mut();
            while let Some(o) = q.front() {
                if !out.is_empty() && out.len() + o.frame.len() > WRITE_COALESCE_BYTES_MAX {
                    break;
                }
                let o = q.pop_front().expect("front exists");
                if let Some(r) = o.reply {
                    pending.push_back(r);
                }
                if out.is_empty() && single.is_none() && o.frame.len() >= WRITE_COALESCE_BYTES_MAX {
                    single = Some(o.frame);
                    break;
                }
                if let Some(s) = single.take() {
                    out.extend_from_slice(&s);
                }
                out.extend_from_slice(&o.frame);
            }
        }
        let res = if let Some(s) = single {
            w.write_all(&s).await
        } else if !out.is_empty() {
            w.write_all(&out).await
        } else {
            notified.await;
            continue;
        };
        if let Err(e) = res {
            shared.kill(format!("write failed: {e}"));
            return;
        }
    }
}

async fn reader_loop(shared: Rc<ConnShared>, mut r: ReadHalf) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        if shared.dead.borrow().is_some() {
            return;
        }
        // Hand out every complete frame.
        while buf.len() >= 4 {
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if size < 0 || size as usize > RESPONSE_FRAME_BYTES_MAX {
                shared.kill(format!("bad response frame size {size}"));
                return;
            }
            let size = size as usize;
            if buf.len() < 4 + size {
                buf.reserve(4 + size - buf.len());
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(size).freeze();
            let waiter = shared.pending.borrow_mut().pop_front();
            match waiter {
                Some(w) => w.send(Ok(frame)),
                None => {
                    shared.kill("response without a request".into());
                    return;
                }
            }
        }
        let start = buf.len();
        let want = READ_CHUNK_BYTES.max(buf.capacity() - start);
        buf.resize(start + want, 0);
        let read = {
            let dead_watch = async {
                loop {
                    let n = shared.death_notify.notified();
                    if shared.dead.borrow().is_some() {
                        return None;
                    }
                    n.await;
                }
            };
            futures_lite::future::or(async { Some(r.read(&mut buf[start..]).await) }, dead_watch)
                .await
        };
        let Some(read) = read else {
            return;
        };
        match read {
            Ok(0) => {
                buf.truncate(start);
                shared.kill("connection closed by broker".into());
                return;
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) => {
                buf.truncate(start);
                shared.kill(format!("read failed: {e}"));
                return;
            }
        }
    }
}

/// Closes the connection: pending requests fail, the tasks exit.
pub fn close(conn: &Connection) {
    conn.shared.kill("closed by client".into());
}
