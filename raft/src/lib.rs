//! freshet-raft: one Raft group per partition (tikv `raft` 0.7), driven per core.
//!
//! - [`batch`]: one Kafka v2 record batch is one Raft entry; Raft-internal entries are
//!   Freshet control batches in the same log.
//! - [`store`]: `raft::Storage` for a group (entry table, per-core cache, async fetch) and the
//!   offset translator (Raft index ↔ log offset ↔ Kafka offset).
//! - [`meta`]: the checksummed group state file (HardState, ConfState, log anchor).
//! - [`log`]: the [`log::GroupLog`] seam over the partition log, and an in-memory log that can
//!   crash.
//! - [`transport`]: envelopes between nodes (heartbeats coalesced) and the `Transport` seam.
//! - [`multiraft`]: the per-core driver.
//! - [`sim`]: the deterministic simulator (network, clock, cluster, invariant checks).
//!
//! Design: docs/design/replication.md.

pub mod batch;
pub mod log;
pub mod meta;
pub mod multiraft;
pub mod rng;
pub mod rpc;
pub mod runtime;
pub mod sim;
pub mod store;
pub mod tcp;
pub mod transport;
