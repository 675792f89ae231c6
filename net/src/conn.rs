//! One client connection: a reader task that frames and dispatches requests, and a writer
//! task that writes responses strictly in request order.
//!
//! Per core (`!Send`). Both tasks share the socket through `SharedStream` (an
//! `Rc<RefCell<TcpStream>>` borrowed only inside a single `poll_*` call, never across an
//! await). The in-order queue is a bounded local channel of handler tasks: the reader pushes
//! each request's task as it starts it; the writer awaits them front to back. Its capacity is
//! the per-connection in-flight limit: when full, the reader stops reading.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::Task;

use crate::frame::{FrameError, FrameReader};
use crate::handlers::{unsupported_version_response, HandlerResult, RequestContext};
use crate::request::{decode_request, RequestError};
use crate::NetCore;

/// The socket shared by a connection's reader and writer task (same core).
#[derive(Clone)]
pub struct SharedStream(Rc<RefCell<TcpStream>>);

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// A response slot in the in-order queue.
pub enum Pending {
    /// A running handler; its result is written when it is this slot's turn.
    Handler(Task<HandlerResult>),
    /// A response already encoded (e.g. the KIP-511 ApiVersions answer).
    Ready(Bytes),
}

/// The writer's half of the in-order queue: awaits slots front to back and hands each
/// finished response to `write`. Stops (and returns the reason) at the first handler error or
/// write failure; `Ok` when the reader closed the queue and every slot was written.
pub async fn drain_in_order<W, Fut>(rx: LocalReceiver<Pending>, mut write: W) -> Result<(), String>
where
    W: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = io::Result<()>>,
{
    while let Some(p) = rx.recv().await {
        let frame = match p {
            Pending::Ready(b) => Some(b),
            Pending::Handler(task) => task.await.map_err(|e| e.to_string())?,
        };
        if let Some(frame) = frame {
            write(frame)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
        }
    }
    Ok(())
}

/// Serves one connection until the client closes it, sends something unframeable, or the
/// broker stops.
pub async fn serve_connection(net: Rc<NetCore>, stream: TcpStream) {
    let id = net.connection_id();
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".into());
    let client_host: Rc<str> = peer_addr
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "?".into())
        .into();
    let _ = stream.set_nodelay(true);
    let stream = SharedStream(Rc::new(RefCell::new(stream)));
    let in_flight = net
        .shard
        .config()
        .max_in_flight_requests_per_connection
        .max(1);
    let (tx, rx) = local_channel::new_bounded::<Pending>(in_flight);
    let writer_stream = stream.clone();
    let writer = glommio::spawn_local(async move {
        drain_in_order(rx, |frame: Bytes| {
            let mut s = writer_stream.clone();
            async move { s.write_all(frame.chunk()).await }
        })
        .await
    });
    let writer_done = Rc::new(freshet_engine::notify::Notify::new());
    let writer_done2 = writer_done.clone();
    let writer = glommio::spawn_local(async move {
        let r = writer.await;
        writer_done2.notify_all();
        r
    });
    let seen = writer_done.generation();
    let reason =
        futures_lite::future::or(read_loop(&net, stream.clone(), tx, client_host), async {
            writer_done.wait(seen).await;
            Ok(())
        })
        .await;
    if let Err(e) = reason {
        tracing::warn!(conn = id, %peer, error = %e, "closing connection");
    }
    if let Err(e) = writer.await {
        tracing::warn!(conn = id, %peer, error = %e, "closing connection");
    }
    let mut s = stream;
    let _ = s.close().await;
    tracing::debug!(conn = id, %peer, "connection closed");
}

/// Reads frames and starts their handlers, pushing each into the in-order queue.
/// `Ok` on a clean close by the client; `Err` explains why we close.
async fn read_loop(
    net: &Rc<NetCore>,
    mut stream: SharedStream,
    tx: LocalSender<Pending>,
    client_host: Rc<str>,
) -> Result<(), String> {
    let mut frames = FrameReader::new(net.shard.config().socket_request_max_bytes);
    loop {
        if net.shard.stopping() {
            return Ok(());
        }
        let frame = match frames.read_frame(&mut stream).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err("connection reset by peer".into())
            }
            Err(e) => return Err(e.to_string()),
        };
        let pending = start_request(net, frame, &client_host)?;
        if tx.send(pending).await.is_err() {
            return Ok(()); // writer stopped; it reports why
        }
    }
}

/// Decodes the request header and starts the handler. `Err` closes the connection.
fn start_request(
    net: &Rc<NetCore>,
    frame: Bytes,
    client_host: &Rc<str>,
) -> Result<Pending, String> {
    match decode_request(frame) {
        Ok(req) => {
            let ctx = RequestContext {
                net: net.clone(),
                api_key: req.api_key,
                api_version: req.api_version,
                correlation_id: req.correlation_id,
                client_id: req.client_id,
                client_host: client_host.clone(),
            };
            Ok(Pending::Handler(glommio::spawn_local(
                (req.handler.handle)(ctx, req.body),
            )))
        }
        // KIP-511: tell the client which versions we serve.
        Err(RequestError::UnsupportedApiVersionsVersion { correlation_id, .. }) => {
            Ok(Pending::Ready(unsupported_version_response(correlation_id)))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;
    use std::time::Duration;

    /// Pipelined requests whose handlers finish in reverse order are still answered in
    /// request order (Kafka protocol guarantee per connection).
    #[test]
    fn responses_leave_in_request_order_even_when_handlers_finish_out_of_order() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let (tx, rx) = local_channel::new_bounded::<Pending>(8);
                let delays_ms = [30u64, 1, 15, 0];
                for (i, d) in delays_ms.iter().enumerate() {
                    let d = *d;
                    let task = glommio::spawn_local(async move {
                        glommio::timer::sleep(Duration::from_millis(d)).await;
                        Ok(Some(Bytes::from(vec![i as u8])))
                    });
                    tx.send(Pending::Handler(task)).await.unwrap();
                }
                tx.send(Pending::Ready(Bytes::from_static(&[9])))
                    .await
                    .unwrap();
                drop(tx);
                let out = Rc::new(RefCell::new(Vec::new()));
                let o = out.clone();
                drain_in_order(rx, |b| {
                    o.borrow_mut().extend_from_slice(&b);
                    async { Ok(()) }
                })
                .await
                .unwrap();
                assert_eq!(*out.borrow(), vec![0, 1, 2, 3, 9]);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// A handler that cannot decode its request stops the queue: later responses are not
    /// written (the connection is closed).
    #[test]
    fn a_failed_handler_stops_the_connection() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let (tx, rx) = local_channel::new_bounded::<Pending>(4);
                tx.send(Pending::Ready(Bytes::from_static(&[1])))
                    .await
                    .unwrap();
                let bad = glommio::spawn_local(async {
                    Err(crate::handlers::HandlerError::Decode {
                        api: ApiKey::Produce,
                        version: 9,
                        reason: "truncated".into(),
                    })
                });
                tx.send(Pending::Handler(bad)).await.unwrap();
                tx.send(Pending::Ready(Bytes::from_static(&[2])))
                    .await
                    .unwrap();
                drop(tx);
                let out = Rc::new(RefCell::new(Vec::new()));
                let o = out.clone();
                let r = drain_in_order(rx, |b| {
                    o.borrow_mut().extend_from_slice(&b);
                    async { Ok(()) }
                })
                .await;
                assert!(r.unwrap_err().contains("truncated"));
                assert_eq!(*out.borrow(), vec![1]);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
