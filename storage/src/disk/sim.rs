//! A simulated disk for tests and deterministic simulation (the raft simulator uses it
//! too). In memory; every call completes synchronously, so futures over it can be driven
//! with `futures_lite::future::block_on`. Seeded: the same seed gives the same faults.
//!
//! Model: each file has a *durable* image and a *current* image. Writes and size changes
//! land in the current image and are queued; `fdatasync` makes the queue durable. A
//! [`SimDisk::crash`] keeps, for every queued write, all of it, none of it or a random
//! subset of its 512-byte sectors (a torn write), then throws the rest away; files created
//! since the last `sync_dir` of their directory may vanish. Removals and renames are
//! durable at once. Per core, `!Send` (an `Rc` handle).

use super::{Disk, DiskFile, IoBuf, ALIGN};
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// SplitMix64: a tiny deterministic PRNG (Steele, Lea, Flood 2014). Plain data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }
    /// True with probability `per_million` / 1e6.
    pub fn chance(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.below(1_000_000) < per_million as u64
    }
}

/// Fault rates of a [`SimDisk`] (per million calls). Plain data.
#[derive(Clone, Debug, Default)]
pub struct SimFaults {
    /// Any call fails with an I/O error.
    pub io_error_per_million: u32,
    /// A read returns data with one bit flipped (transient corruption on the way).
    pub read_bitflip_per_million: u32,
}

const SECTOR: usize = 512;

#[derive(Debug)]
enum Op {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Op>,
}

fn apply_write(img: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let end = pos as usize + data.len();
    if img.len() < end {
        img.resize(end, 0);
    }
    img[pos as usize..end].copy_from_slice(data);
}

#[derive(Debug)]
struct SimState {
    rng: SplitMix64,
    faults: SimFaults,
    files: BTreeMap<PathBuf, Rc<RefCell<FileData>>>,
    dirs: BTreeSet<PathBuf>,
    unsynced_names: BTreeSet<PathBuf>,
    syncs: u64,
}

/// The simulated disk: a cheap clonable handle to shared in-memory state. Per core.
#[derive(Clone, Debug)]
pub struct SimDisk(Rc<RefCell<SimState>>);

impl SimDisk {
    /// An empty disk whose faults and crash outcomes are driven by `seed`.
    pub fn new(seed: u64) -> Self {
        SimDisk(Rc::new(RefCell::new(SimState {
            rng: SplitMix64::new(seed),
            faults: SimFaults::default(),
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
            unsynced_names: BTreeSet::new(),
            syncs: 0,
        })))
    }

    /// Sets the fault rates (default: none).
    pub fn set_faults(&self, faults: SimFaults) {
        self.0.borrow_mut().faults = faults;
    }

    /// Number of `fdatasync` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.0.borrow().syncs
    }

    /// Simulates power loss: unsynced writes are kept, dropped or torn at random, unsynced
    /// file creations may vanish. Open handles keep working on the post-crash images, but a
    /// crashed log must be reopened (its memory state is stale).
    pub fn crash(&self) {
        let mut st = self.0.borrow_mut();
        let st = &mut *st;
        for f in st.files.values() {
            let mut f = f.borrow_mut();
            let mut img = std::mem::take(&mut f.durable);
            for op in std::mem::take(&mut f.pending) {
                match op {
                    Op::Write { pos, data } => match st.rng.below(3) {
                        0 => apply_write(&mut img, pos, &data),
                        1 => {}
                        _ => {
                            for (i, sector) in data.chunks(SECTOR).enumerate() {
                                if st.rng.below(2) == 0 {
                                    apply_write(&mut img, pos + (i * SECTOR) as u64, sector);
                                }
                            }
                        }
                    },
                    Op::SetLen(len) => {
                        if st.rng.below(2) == 0 {
                            img.resize(len as usize, 0);
                        }
                    }
                }
            }
            f.current = img.clone();
            f.durable = img;
        }
        let names = std::mem::take(&mut st.unsynced_names);
        for n in names {
            if st.rng.below(2) == 0 {
                st.files.remove(&n);
            }
        }
    }

    /// Drops every unsynced write (no tearing): the "lose unflushed data" crash.
    pub fn lose_unflushed(&self) {
        let st = self.0.borrow();
        for f in st.files.values() {
            let mut f = f.borrow_mut();
            f.pending.clear();
            f.current = f.durable.clone();
        }
    }

    /// Flips bit `bit` of byte `pos` of `path` in both images (media corruption).
    pub fn flip_bit(&self, path: &Path, pos: u64, bit: u8) {
        let st = self.0.borrow();
        let f = st.files.get(path).expect("flip_bit: no such file");
        let mut f = f.borrow_mut();
        if let Some(b) = f.current.get_mut(pos as usize) {
            *b ^= 1 << (bit % 8);
        }
        if let Some(b) = f.durable.get_mut(pos as usize) {
            *b ^= 1 << (bit % 8);
        }
    }

    /// The current content of a file, if it exists.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        self.0
            .borrow()
            .files
            .get(path)
            .map(|f| f.borrow().current.clone())
    }

    /// Paths of all files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.0.borrow().files.keys().cloned().collect()
    }

    fn maybe_fail(&self, what: &str) -> io::Result<()> {
        let mut st = self.0.borrow_mut();
        let rate = st.faults.io_error_per_million;
        if st.rng.chance(rate) {
            return Err(io::Error::other(format!("simulated i/o error in {what}")));
        }
        Ok(())
    }
}

/// An aligned buffer of the simulated disk.
#[derive(Debug)]
pub struct SimBuf(Vec<u8>);

impl IoBuf for SimBuf {
    fn as_slice(&self) -> &[u8] {
        &self.0
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn trim_to(&mut self, len: usize) {
        assert!(len <= self.0.len(), "trim_to cannot grow a buffer");
        self.0.truncate(len);
    }
}

/// An open file of the simulated disk.
#[derive(Debug)]
pub struct SimFile {
    disk: SimDisk,
    data: Rc<RefCell<FileData>>,
}

fn check_aligned(what: &str, pos: u64, len: u64) {
    assert!(
        pos.is_multiple_of(ALIGN),
        "{what}: position {pos} not aligned to {ALIGN}"
    );
    assert!(
        len.is_multiple_of(ALIGN),
        "{what}: length {len} not aligned to {ALIGN}"
    );
}

impl Disk for SimDisk {
    type Buf = SimBuf;
    type File = SimFile;

    fn alloc_buf(&self, len: usize) -> SimBuf {
        check_aligned("alloc_buf", 0, len as u64);
        SimBuf(vec![0; len])
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.maybe_fail("create_dir_all")?;
        let mut st = self.0.borrow_mut();
        for a in dir.ancestors() {
            st.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.maybe_fail("list_dir")?;
        let st = self.0.borrow();
        if !st.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(st
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from))
            .collect())
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<SimFile> {
        self.maybe_fail("open")?;
        let mut st = self.0.borrow_mut();
        let parent = path.parent().unwrap_or(Path::new(""));
        if !st.dirs.contains(parent) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let data = match st.files.get(path) {
            Some(d) => d.clone(),
            None if create => {
                let d = Rc::new(RefCell::new(FileData::default()));
                st.files.insert(path.to_path_buf(), d.clone());
                st.unsynced_names.insert(path.to_path_buf());
                d
            }
            None => return Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        };
        Ok(SimFile {
            disk: self.clone(),
            data,
        })
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.maybe_fail("remove_file")?;
        let mut st = self.0.borrow_mut();
        st.unsynced_names.remove(path);
        match st.files.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }

    async fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.maybe_fail("remove_dir")?;
        let mut st = self.0.borrow_mut();
        if st.files.keys().any(|p| p.parent() == Some(dir)) {
            return Err(io::Error::other("directory not empty"));
        }
        st.dirs.remove(dir);
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.maybe_fail("rename")?;
        let mut st = self.0.borrow_mut();
        let d = st
            .files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        st.unsynced_names.remove(from);
        st.files.insert(to.to_path_buf(), d);
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.maybe_fail("sync_dir")?;
        let mut st = self.0.borrow_mut();
        st.unsynced_names.retain(|p| p.parent() != Some(dir));
        Ok(())
    }
}

impl DiskFile for SimFile {
    type Buf = SimBuf;

    async fn write_at(&self, buf: SimBuf, pos: u64) -> io::Result<usize> {
        check_aligned("write_at", pos, buf.0.len() as u64);
        self.disk.maybe_fail("write_at")?;
        let mut f = self.data.borrow_mut();
        apply_write(&mut f.current, pos, &buf.0);
        let n = buf.0.len();
        f.pending.push(Op::Write { pos, data: buf.0 });
        Ok(n)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        check_aligned("read_at", pos, len as u64);
        self.disk.maybe_fail("read_at")?;
        let f = self.data.borrow();
        let start = (pos as usize).min(f.current.len());
        let end = (pos as usize + len).min(f.current.len());
        let mut out = f.current[start..end].to_vec();
        drop(f);
        let mut st = self.disk.0.borrow_mut();
        let rate = st.faults.read_bitflip_per_million;
        if !out.is_empty() && st.rng.chance(rate) {
            let i = st.rng.below(out.len() as u64) as usize;
            let bit = st.rng.below(8) as u8;
            out[i] ^= 1 << bit;
        }
        Ok(Bytes::from(out))
    }

    async fn fdatasync(&self) -> io::Result<()> {
        self.disk.maybe_fail("fdatasync")?;
        self.disk.0.borrow_mut().syncs += 1;
        let mut f = self.data.borrow_mut();
        let f = &mut *f;
        for op in f.pending.drain(..) {
            match op {
                Op::Write { pos, data } => apply_write(&mut f.durable, pos, &data),
                Op::SetLen(len) => f.durable.resize(len as usize, 0),
            }
        }
        Ok(())
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.disk.maybe_fail("preallocate")?;
        let mut f = self.data.borrow_mut();
        if (f.current.len() as u64) < len {
            f.current.resize(len as usize, 0);
            f.pending.push(Op::SetLen(len));
        }
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.disk.maybe_fail("truncate")?;
        let mut f = self.data.borrow_mut();
        f.current.resize(len as usize, 0);
        f.pending.push(Op::SetLen(len));
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        self.disk.maybe_fail("size")?;
        Ok(self.data.borrow().current.len() as u64)
    }
}
