//! freshet-net: the Kafka listener of each core, framing, per-connection in-order pipelining
//! and the API handlers (`handlers/`, one file per API; see `handlers/mod.rs` for how to add
//! one).
//!
//! Per core: `serve(shard)` binds the Kafka port with SO_REUSEPORT (every core binds it; the
//! kernel spreads connections), accepts up to the core's share of `max_connections`, and runs
//! each connection as a reader task (framing, decoding the header, spawning one handler task
//! per request) and a writer task (writing responses strictly in request order). At most
//! `max_in_flight_requests_per_connection` requests of one connection are in flight; the
//! reader stops reading until the oldest response is written.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use freshet_engine::Shard;

pub mod alloc;
pub mod conn;
pub mod fetch_session;
pub mod frame;
pub mod handlers;
pub mod request;
pub mod server;

pub use server::Server;

/// Per-core network state shared by that core's connections (`!Send`, `Rc<NetCore>`).
pub struct NetCore {
    pub shard: Rc<Shard>,
    pub fetch_sessions: RefCell<fetch_session::FetchSessionCache>,
    pub open_connections: Cell<usize>,
    next_connection_id: Cell<u64>,
}

impl NetCore {
    pub fn new(shard: Rc<Shard>) -> Rc<Self> {
        let slots = shard.config().fetch_session_cache_slots;
        let core = shard.core();
        Rc::new(NetCore {
            shard,
            fetch_sessions: RefCell::new(fetch_session::FetchSessionCache::new(slots, core)),
            open_connections: Cell::new(0),
            next_connection_id: Cell::new(1),
        })
    }

    fn connection_id(&self) -> u64 {
        let id = self.next_connection_id.get();
        self.next_connection_id.set(id + 1);
        id
    }
}
