//! freshet-engine: the per-core broker state behind the Kafka handlers.
//!
//! # Layout
//! - [`shard::Shard`] — everything one core owns (partitions, metadata copy, mesh endpoints).
//! - [`partition::Partition`] — one partition on its owning core; `replicate(batches, acks)` is
//!   the single append entry point (a Raft group of one at RF=1: high watermark = durable
//!   offset), with a background flusher and high-watermark wakeups for fetch waiters.
//! - [`metadata`] — topic metadata snapshots (versioned) and their on-disk store (core 0).
//! - [`shard_table::ShardTable`] — deterministic partition → core placement.
//! - [`config`] — `BrokerConfig` and per-topic configs.
//!
//! # How to invoke work on another core
//! Find the owner with `shard.owner_of(topic, partition)` and ship a closure there:
//! ```ignore
//! let owner = shard.owner_of("__consumer_offsets", p);
//! let result = shard
//!     .invoke_on(owner, move |s: Rc<Shard>| async move {
//!         // runs on `owner`; may use that core's Rc's (s.partition(..), s.extension(..))
//!         s.local_replicate("__consumer_offsets", p, batch, Acks::All).await
//!     })
//!     .await?; // Err(MeshError) only if the peer is gone (shutdown)
//! ```
//! The closure and its result must be `Send` (use `Bytes`, `String`, plain structs; never
//! `Rc`); the future it returns runs on the target core and need not be `Send`. A call to the
//! own core runs inline. Group work per core (one call carrying a `Vec` of items) rather than
//! one call per partition. Per-core state of another module (e.g. a group coordinator) hangs on
//! the shard via `shard.extension::<T>(|| T::new())`, created on first use on each core.
//!
//! # Topic administration
//! `Shard::{create_topic, delete_topic, add_partitions, set_topic_config}` may be called on any
//! core; core 0 hands the change to the controller ([`controller`], a Raft group of the founding
//! nodes; forwarded to its leader over RPC when another node leads) and the call returns once
//! this node applied the committed change on every core. `shard::validate_new_topic` checks a
//! CreateTopics entry without creating it (validate_only).

pub mod cluster;
pub mod config;
pub mod controller;
pub mod error;
pub mod group;
pub mod metadata;
pub mod notify;
pub mod partition;
pub mod producer_state;
pub mod reassign;
pub mod replica;
pub mod replica_marker;
pub mod shard;
pub mod shard_table;

pub use config::{BrokerConfig, TopicConfig};
pub use error::{code, MeshError, TopicError};
pub use partition::{Acks, FetchedData, Partition, PartitionOffsets, ReplicateOutcome};
pub use shard::{new_mesh, Mesh, Shard, TopicConfigChange};
pub use shard_table::ShardTable;

/// Re-exported so callers name the storage clock without depending on storage directly.
pub use freshet_storage::Clock;

/// The real wall clock (per core; `Rc`).
pub fn system_clock() -> std::rc::Rc<dyn Clock> {
    std::rc::Rc::new(freshet_storage::SystemClock)
}
