//! The controller: a Raft group (`CONTROLLER_GROUP`) on core 0 of every founding node whose log
//! holds every metadata change (KIP-500, KIP-631). See docs/design/controller.md.
//!
//! - [`command`]: what the log records (resolved commands), what brokers forward (intents).
//! - [`state`]: applying commands to a `MetadataSnapshot`; resolving intents on the leader.
//! - [`placement`]: replica placement.
//! - [`snapshot`]: the rkyv snapshot file.
//! - [`service`]: the running controller on core 0 (apply, publish, submit, forward).

pub mod command;
pub mod placement;
pub mod service;
pub mod snapshot;
pub mod state;

pub use service::{controller_of, Controller};
