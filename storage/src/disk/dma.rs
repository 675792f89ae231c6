//! The real disk: glommio `DmaFile` (O_DIRECT, io_uring). Must be used inside a glommio
//! executor; per core, `!Send`.

use super::{Disk, DiskFile, IoBuf};
use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use std::io;
use std::path::Path;

/// The glommio-backed disk. A zero-sized handle; one per core.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaDisk;

/// A glommio DMA buffer (4 KiB aligned).
#[derive(Debug)]
pub struct DmaBuf(DmaBuffer);

impl IoBuf for DmaBuf {
    fn as_slice(&self) -> &[u8] {
        self.0.as_bytes()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }
    fn trim_to(&mut self, len: usize) {
        self.0.trim_to_size(len)
    }
}

fn gio(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::other(e.to_string())
}

fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    match e {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError {
            source, op, path, ..
        } => io::Error::new(source.kind(), format!("{op} {path:?}: {source}")),
        other => gio(other),
    }
}

/// An open O_DIRECT file.
#[derive(Debug)]
pub struct DmaDiskFile(DmaFile);

impl DmaDiskFile {
    /// The glommio file (for the benchmark's raw baseline).
    pub fn inner(&self) -> &DmaFile {
        &self.0
    }
}

thread_local! {
    /// Devices (st_dev) whose io_uring poll support glommio has probed on this thread.
    static PROBED_DEVICES: std::cell::RefCell<std::collections::HashSet<u64>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

/// glommio 0.9 probes once per device and thread whether the device supports IOPOLL, by
/// reading the first block of the first file opened. If that file is empty the read
/// "succeeds" with 0 bytes, glommio caches "IOPOLL supported", and every later read on the
/// device fails with EOPNOTSUPP on devices without poll queues (virtio here). So the first
/// open on each device is of a 4 KiB probe file we write ourselves.
async fn probe_device_once(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let dev = std::fs::metadata(dir)?.dev();
    if PROBED_DEVICES.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let probe = dir.join(format!(".freshet-iopoll-probe-{}", std::process::id()));
    std::fs::write(&probe, vec![0u8; 4096])?;
    let r = OpenOptions::new()
        .read(true)
        .dma_open(&probe)
        .await
        .map_err(to_io);
    let _ = std::fs::remove_file(&probe);
    r?.close().await.map_err(to_io)?;
    PROBED_DEVICES.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}

impl Disk for DmaDisk {
    type Buf = DmaBuf;
    type File = DmaDiskFile;

    fn alloc_buf(&self, len: usize) -> DmaBuf {
        let mut b = glommio::allocate_dma_buffer(len);
        b.as_bytes_mut().fill(0);
        DmaBuf(b)
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<DmaDiskFile> {
        probe_device_once(path).await?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        Ok(DmaDiskFile(f))
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    async fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir(dir)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

impl DiskFile for DmaDiskFile {
    type Buf = DmaBuf;

    async fn write_at(&self, buf: DmaBuf, pos: u64) -> io::Result<usize> {
        let len = buf.0.len();
        let n = self.0.write_at(buf.0, pos).await.map_err(to_io)?;
        if n != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short direct write: {n} of {len} bytes at {pos}"),
            ));
        }
        Ok(n)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let r = self.0.read_at_aligned(pos, len).await.map_err(to_io)?;
        Ok(Bytes::copy_from_slice(&r))
    }

    async fn fdatasync(&self) -> io::Result<()> {
        self.0.fdatasync().await.map_err(to_io)
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.0.pre_allocate(len, false).await.map_err(to_io)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.truncate(len).await.map_err(to_io)
    }

    async fn size(&self) -> io::Result<u64> {
        self.0.file_size().await.map_err(to_io)
    }
}
