//! The `Disk` seam: every byte the log reads or writes goes through these traits.
//!
//! Two implementations: [`DmaDisk`] (glommio `DmaFile`, O_DIRECT over io_uring; the only
//! place glommio is named) and [`SimDisk`] (in memory, seeded, can tear writes, lose
//! unflushed data, flip bits and fail calls). Both are per core and `!Send`.
//!
//! Contract (the real disk's O_DIRECT rules, asserted by the simulated disk): positions and
//! lengths of `write_at` / `read_at` are multiples of [`ALIGN`]. Writes become durable only
//! after `fdatasync` of that file returns; a newly created file's name becomes durable only
//! after `sync_dir` of its directory. A write is assumed to be atomic per 512-byte sector
//! (sectors of one write may land in any subset after power loss).

use bytes::Bytes;
use std::io;
use std::path::Path;

pub mod dma;
pub mod sim;

pub use dma::DmaDisk;
pub use sim::{SimDisk, SimFaults};

/// Alignment of positions and sizes of every disk I/O (the page size; O_DIRECT needs at
/// least the logical block size, which is <= 4096 on every device we target).
pub const ALIGN: u64 = 4096;

/// Rounds `v` up to a multiple of [`ALIGN`].
pub fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN) * ALIGN
}
/// Rounds `v` down to a multiple of [`ALIGN`].
pub fn align_down(v: u64) -> u64 {
    v / ALIGN * ALIGN
}

/// An aligned, owned I/O buffer.
pub trait IoBuf: 'static {
    /// The bytes.
    fn as_slice(&self) -> &[u8];
    /// The bytes, writable.
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// Shortens the buffer to `len` bytes (a multiple of [`ALIGN`]); cannot grow.
    fn trim_to(&mut self, len: usize);
}

/// A file system, as the log sees it. Per core; cheap to clone (a handle).
#[allow(async_fn_in_trait)] // single-core by design: futures are never sent across threads
pub trait Disk: Clone + 'static {
    /// Aligned buffer type accepted by `write_at`.
    type Buf: IoBuf;
    /// An open file.
    type File: DiskFile<Buf = Self::Buf>;
    /// Allocates a zeroed buffer of `len` bytes (a multiple of [`ALIGN`]).
    fn alloc_buf(&self, len: usize) -> Self::Buf;
    /// Creates `dir` and its parents if missing.
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the files in `dir`.
    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` read-write; creates it (empty) if missing and `create` is true.
    async fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    /// Removes a file (the removal is durable once this returns).
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    async fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to`.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes file creations and renames in `dir` durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file. Per core.
#[allow(async_fn_in_trait)] // single-core by design
pub trait DiskFile: 'static {
    /// Aligned buffer type accepted by `write_at`.
    type Buf: IoBuf;
    /// Writes all of `buf` at `pos` (both aligned). Returns bytes written.
    async fn write_at(&self, buf: Self::Buf, pos: u64) -> io::Result<usize>;
    /// Reads up to `len` bytes at `pos` (both aligned); shorter only at end of file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
    /// Makes every completed write to this file durable.
    async fn fdatasync(&self) -> io::Result<()>;
    /// Ensures space for `len` bytes is allocated; the file's size becomes at least `len`
    /// and the new range reads as zeros.
    async fn preallocate(&self, len: u64) -> io::Result<()>;
    /// Sets the file size to `len` (discarding or zero-extending).
    async fn truncate(&self, len: u64) -> io::Result<()>;
    /// Current size in bytes.
    async fn size(&self) -> io::Result<u64>;
}
