//! freshet-storage: the per-core, direct-I/O segmented partition log.
//!
//! - [`Log`]: one partition's log (Kafka v2 batches as sent, broker-assigned offsets and
//!   leader epoch), per core and `!Send`.
//! - [`validate_batch`]: Kafka v2 batch validation usable by the broker before append.
//! - [`Disk`]/[`DiskFile`]: the I/O seam ([`DmaDisk`] real, [`SimDisk`] simulated).
//! - [`Clock`]: the time seam.
//!
//! File layouts: docs/design/log-format.md.

pub mod batch;
pub mod clock;
pub mod config;
pub mod disk;
pub mod error;
mod index;
mod log;
mod sync;

pub use batch::{validate_batch, validate_batches, BatchHeader};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{FlushPolicy, LogConfig};
pub use disk::{Disk, DiskFile, DmaDisk, IoBuf, SimDisk, SimFaults};
pub use error::{Result, StorageError};
pub use log::{AppendInfo, Log};
