//! The per-core Kafka listener.
//!
//! Every core binds the Kafka address itself; glommio's `TcpListener::bind` sets SO_REUSEPORT
//! (glommio 0.9 `net/tcp_socket.rs`), so the kernel spreads incoming connections over the
//! cores and each core serves the connections it accepted.

use std::rc::Rc;
use std::time::Duration;

use freshet_engine::Shard;
use glommio::net::TcpListener;

use crate::conn::serve_connection;
use crate::NetCore;

/// How often an idle accept loop checks the stop flag.
const STOP_POLL_INTERVAL_MS: u64 = 100;

/// A bound per-core Kafka listener.
pub struct Server {
    shard: Rc<Shard>,
    listener: TcpListener,
}

impl Server {
    /// Binds the Kafka port on this core (SO_REUSEPORT).
    pub fn bind(shard: Rc<Shard>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(shard.config().kafka_addr.as_str())?;
        Ok(Server { shard, listener })
    }

    /// Serves connections until the broker stops, then closes the listener. Open
    /// connections end with the executor.
    pub async fn run(self) {
        let Server { shard, listener } = self;
        let net = NetCore::new(shard.clone());
        let cores = shard.cores().max(1);
        let max_here = shard.config().max_connections.div_ceil(cores).max(1);
        // ONE accept future lives across the stop checks and is replaced only once it has
        // completed: dropping an in-flight io_uring accept (as `or` with a timer would, every
        // idle interval) races with the kernel completing it, and the connection accepted in
        // that window is never served (its fd leaks; the client waits for ever — seen as about
        // 1 connection in 1000 left unanswered).
        let mut pending = Box::pin(listener.accept());
        loop {
            if shard.stopping() {
                break;
            }
            let accepted = futures_lite::future::or(async { Some((&mut pending).await) }, async {
                glommio::timer::sleep(Duration::from_millis(STOP_POLL_INTERVAL_MS)).await;
                None
            })
            .await;
            let Some(accepted) = accepted else { continue };
            pending = Box::pin(listener.accept());
            let stream = match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if net.open_connections.get() >= max_here {
                tracing::warn!(
                    limit = max_here,
                    core = shard.core(),
                    "connection refused: max_connections reached on this core"
                );
                drop(stream);
                continue;
            }
            net.open_connections.set(net.open_connections.get() + 1);
            let net2 = net.clone();
            glommio::spawn_local(async move {
                serve_connection(net2.clone(), stream).await;
                net2.open_connections.set(net2.open_connections.get() - 1);
            })
            .detach();
        }
        drop(pending);
        drop(listener);
    }
}
