//! Per-group Raft metadata: HardState, ConfState and the log anchor, in one small
//! checksummed record ("the group state file"), rewritten atomically when it changes.
//!
//! Layout (little-endian, every field; documented in docs/design/replication.md):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | magic | `[u8; 4]` = `FRGS` | file type |
//! | version | u16 = 2 | layout version (1 = the same without `flags`; still read) |
//! | term | u64 | HardState.term |
//! | vote | u64 | HardState.vote (0 = none) |
//! | commit | u64 | HardState.commit |
//! | anchor_index | u64 | Raft index of the first entry held in the log |
//! | anchor_prev_term | u64 | term of entry `anchor_index - 1` (0 at the beginning) |
//! | anchor_log_offset | i64 | log offset of that first entry |
//! | anchor_kafka_offset | i64 | Kafka offset of the first data record at or after it |
//! | flags | u8 | bit 0: log reset pending (a snapshot install was interrupted, §7); others 0 |
//! | auto_leave | u8 | ConfState.auto_leave |
//! | 4 lists | (count u32, ids u64 ...) | ConfState: voters, learners, voters_outgoing, learners_next |
//! | crc | u32 | CRC32C of every byte before it |
//!
//! The ConfState is a committed configuration at least as recent as the one in force at
//! `anchor_index − 1`; at open the configuration recorded by the last conf-change entry at or
//! below `commit` replaces it (membership changes: `crate::multiraft`'s membership module,
//! docs/design/replication.md "Membership changes").
//!
//! Ownership: per core, `!Send`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use raft::eraftpb::{ConfState, HardState};

const MAGIC: &[u8; 4] = b"FRGS";
const VERSION: u16 = 2;
/// Version 1: the same record without `flags`.
const VERSION_1: u16 = 1;
const FLAG_LOG_RESET_PENDING: u8 = 1;

/// Errors reading or writing group metadata.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    /// Bad magic, version, length or CRC: the file is not a valid group state file.
    #[error("group state file corrupt: {0}")]
    Corrupt(&'static str),
    /// The backing store failed.
    #[error("group state I/O error: {0}")]
    Io(String),
}

/// Where the group's log begins, in all three numberings (Raft index, log offset, Kafka offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogAnchor {
    /// Raft index of the first entry in the log (1 for a new group).
    pub index: u64,
    /// Term of entry `index - 1` (0 for a new group).
    pub prev_term: u64,
    /// Log offset of that entry.
    pub log_offset: i64,
    /// Kafka offset of the first data record at or after it.
    pub kafka_offset: i64,
}

impl LogAnchor {
    /// The anchor of a new, empty group.
    pub fn initial() -> Self {
        Self {
            index: 1,
            prev_term: 0,
            log_offset: 0,
            kafka_offset: 0,
        }
    }
}

/// Everything about a group that must survive a restart apart from the log itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupMeta {
    /// Raft HardState (term, vote, commit).
    pub hard_state: HardState,
    /// Raft ConfState (membership).
    pub conf_state: ConfState,
    /// Start of the log.
    pub anchor: LogAnchor,
    /// A follower is installing a snapshot (§7): the anchor already names the snapshot's
    /// position but the log may still hold entries from before. Opening the group finishes
    /// the install (`GroupLog::reset_to(anchor.log_offset)`) before trusting the log.
    pub log_reset_pending: bool,
}

fn put_ids(b: &mut BytesMut, ids: &[u64]) {
    b.put_u32_le(ids.len() as u32);
    for id in ids {
        b.put_u64_le(*id);
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], MetaError> {
        if self.at + n > self.b.len() {
            return Err(MetaError::Corrupt("truncated"));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, MetaError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn ids(&mut self) -> Result<Vec<u64>, MetaError> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4")) as usize;
        if n > 1024 {
            return Err(MetaError::Corrupt("member list too long"));
        }
        (0..n).map(|_| self.u64()).collect()
    }
}

impl GroupMeta {
    /// Serializes to the layout in the module docs.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(128);
        b.put_slice(MAGIC);
        b.put_u16_le(VERSION);
        b.put_u64_le(self.hard_state.term);
        b.put_u64_le(self.hard_state.vote);
        b.put_u64_le(self.hard_state.commit);
        b.put_u64_le(self.anchor.index);
        b.put_u64_le(self.anchor.prev_term);
        b.put_i64_le(self.anchor.log_offset);
        b.put_i64_le(self.anchor.kafka_offset);
        b.put_u8(if self.log_reset_pending {
            FLAG_LOG_RESET_PENDING
        } else {
            0
        });
        b.put_u8(u8::from(self.conf_state.auto_leave));
        put_ids(&mut b, &self.conf_state.voters);
        put_ids(&mut b, &self.conf_state.learners);
        put_ids(&mut b, &self.conf_state.voters_outgoing);
        put_ids(&mut b, &self.conf_state.learners_next);
        let crc = crc32c::crc32c(&b);
        b.put_u32_le(crc);
        b.freeze()
    }

    /// Parses and verifies a record written by [`GroupMeta::encode`].
    pub fn decode(b: &[u8]) -> Result<Self, MetaError> {
        if b.len() < 4 + 2 + 4 {
            return Err(MetaError::Corrupt("too short"));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4")) {
            return Err(MetaError::Corrupt("crc mismatch"));
        }
        let mut r = Reader { b: body, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(MetaError::Corrupt("bad magic"));
        }
        let version = u16::from_le_bytes(r.take(2)?.try_into().expect("2"));
        if version != VERSION && version != VERSION_1 {
            return Err(MetaError::Corrupt("unknown version"));
        }
        let hard_state = HardState {
            term: r.u64()?,
            vote: r.u64()?,
            commit: r.u64()?,
            ..Default::default()
        };
        let anchor = LogAnchor {
            index: r.u64()?,
            prev_term: r.u64()?,
            log_offset: r.u64()? as i64,
            kafka_offset: r.u64()? as i64,
        };
        let flags = if version == VERSION_1 {
            0
        } else {
            r.take(1)?[0]
        };
        if flags & !FLAG_LOG_RESET_PENDING != 0 {
            return Err(MetaError::Corrupt("unknown flags"));
        }
        let auto_leave = r.take(1)?[0] != 0;
        let conf_state = ConfState {
            voters: r.ids()?,
            learners: r.ids()?,
            voters_outgoing: r.ids()?,
            learners_next: r.ids()?,
            auto_leave,
            ..Default::default()
        };
        if r.at != body.len() {
            return Err(MetaError::Corrupt("trailing bytes"));
        }
        Ok(Self {
            hard_state,
            conf_state,
            anchor,
            log_reset_pending: flags & FLAG_LOG_RESET_PENDING != 0,
        })
    }
}

/// Durable home of every group's state record on one node. `write` must be atomic (old or
/// new record after a crash, never a mix) and durable when it returns.
pub trait MetaStore {
    /// Atomically replaces the record of `group`.
    fn write(&self, group: u64, record: Bytes) -> impl Future<Output = Result<(), MetaError>>;
    /// The record of `group`, if any was written.
    fn read(&self, group: u64) -> impl Future<Output = Result<Option<Bytes>, MetaError>>;
    /// Deletes the record of `group` (durable when it returns); no record is not an error.
    fn remove(&self, group: u64) -> impl Future<Output = Result<(), MetaError>>;
}

/// In-memory [`MetaStore`] for the simulator (writes are durable at once; clones share it).
///
/// Ownership: per core, `!Send`.
#[derive(Debug, Clone, Default)]
pub struct MemMetaStore {
    records: Rc<RefCell<HashMap<u64, Bytes>>>,
    writes: Rc<RefCell<u64>>,
}

impl MemMetaStore {
    /// Number of writes so far.
    pub fn write_count(&self) -> u64 {
        *self.writes.borrow()
    }
}

impl MetaStore for MemMetaStore {
    async fn write(&self, group: u64, record: Bytes) -> Result<(), MetaError> {
        self.records.borrow_mut().insert(group, record);
        *self.writes.borrow_mut() += 1;
        Ok(())
    }
    async fn read(&self, group: u64) -> Result<Option<Bytes>, MetaError> {
        Ok(self.records.borrow().get(&group).cloned())
    }
    async fn remove(&self, group: u64) -> Result<(), MetaError> {
        self.records.borrow_mut().remove(&group);
        Ok(())
    }
}

/// [`MetaStore`] on a storage [`freshet_storage::Disk`]: one file per group,
/// `<dir>/group-<id:020>.state`, one 4096-byte block `record_len:u32 LE, record, zeros`,
/// replaced by write-to-`.tmp` + fdatasync + rename + directory sync (atomic and durable).
/// Keep `dir` apart from log directories (the log removes stray `.tmp` files in its own).
///
/// Ownership: per core, `!Send`.
#[derive(Debug, Clone)]
pub struct DiskMetaStore<D: freshet_storage::Disk> {
    disk: D,
    dir: std::path::PathBuf,
}

const STATE_FILE_BYTES: usize = 4096;

impl<D: freshet_storage::Disk> DiskMetaStore<D> {
    /// A store in `dir` (created if missing).
    pub async fn open(disk: D, dir: std::path::PathBuf) -> Result<Self, MetaError> {
        disk.create_dir_all(&dir)
            .await
            .map_err(|e| MetaError::Io(e.to_string()))?;
        Ok(Self { disk, dir })
    }

    fn path(&self, group: u64) -> std::path::PathBuf {
        self.dir.join(format!("group-{group:020}.state"))
    }
}

impl<D: freshet_storage::Disk> MetaStore for DiskMetaStore<D> {
    async fn write(&self, group: u64, record: Bytes) -> Result<(), MetaError> {
        use freshet_storage::{DiskFile, IoBuf};
        let io = |e: std::io::Error| MetaError::Io(e.to_string());
        if record.len() + 4 > STATE_FILE_BYTES {
            return Err(MetaError::Io(format!(
                "group state record of {} bytes exceeds {STATE_FILE_BYTES}",
                record.len()
            )));
        }
        let mut buf = self.disk.alloc_buf(STATE_FILE_BYTES);
        let b = buf.as_mut_slice();
        b[0..4].copy_from_slice(&(record.len() as u32).to_le_bytes());
        b[4..4 + record.len()].copy_from_slice(&record);
        let path = self.path(group);
        let tmp = path.with_extension("state.tmp");
        let f = self.disk.open(&tmp, true).await.map_err(io)?;
        f.truncate(0).await.map_err(io)?;
        f.write_at(buf, 0).await.map_err(io)?;
        f.fdatasync().await.map_err(io)?;
        drop(f);
        self.disk.rename(&tmp, &path).await.map_err(io)?;
        self.disk.sync_dir(&self.dir).await.map_err(io)?;
        Ok(())
    }

    async fn read(&self, group: u64) -> Result<Option<Bytes>, MetaError> {
        use freshet_storage::DiskFile;
        let io = |e: std::io::Error| MetaError::Io(e.to_string());
        let f = match self.disk.open(&self.path(group), false).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let b = f.read_at(0, STATE_FILE_BYTES).await.map_err(io)?;
        if b.len() < 4 {
            return Err(MetaError::Corrupt(
                "state file shorter than its length field",
            ));
        }
        let len = u32::from_le_bytes(b[0..4].try_into().expect("4")) as usize;
        if 4 + len > b.len() {
            return Err(MetaError::Corrupt("state record length beyond the file"));
        }
        Ok(Some(b.slice(4..4 + len)))
    }

    async fn remove(&self, group: u64) -> Result<(), MetaError> {
        let path = self.path(group);
        let tmp = path.with_extension("state.tmp");
        for p in [&tmp, &path] {
            match self.disk.remove_file(p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(MetaError::Io(e.to_string())),
            }
        }
        self.disk
            .sync_dir(&self.dir)
            .await
            .map_err(|e| MetaError::Io(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_state_roundtrips_and_any_flipped_bit_is_detected() {
        let m = GroupMeta {
            hard_state: HardState {
                term: 7,
                vote: 2,
                commit: 41,
                ..Default::default()
            },
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                ..Default::default()
            },
            anchor: LogAnchor {
                index: 10,
                prev_term: 6,
                log_offset: 120,
                kafka_offset: 115,
            },
            log_reset_pending: true,
        };
        let b = m.encode();
        assert_eq!(GroupMeta::decode(&b).unwrap(), m);
        for i in 0..b.len() {
            let mut c = b.to_vec();
            c[i] ^= 0x10;
            assert!(
                GroupMeta::decode(&c).is_err(),
                "flip at byte {i} undetected"
            );
        }
        assert!(GroupMeta::decode(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn version_1_records_without_flags_still_decode() {
        let m = GroupMeta {
            anchor: LogAnchor {
                index: 3,
                prev_term: 2,
                log_offset: 9,
                kafka_offset: 7,
            },
            ..Default::default()
        };
        let v2 = m.encode();
        // Version 1 = version 2 without the flags byte (after anchor_kafka_offset).
        let flags_at = 4 + 2 + 3 * 8 + 4 * 8;
        let mut v1 = v2[..v2.len() - 4].to_vec();
        v1[4..6].copy_from_slice(&1u16.to_le_bytes());
        v1.remove(flags_at);
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(GroupMeta::decode(&v1).unwrap(), m);
    }

    #[test]
    fn state_file_on_the_sim_disk_survives_a_crash_and_replacement_is_atomic() {
        futures_lite::future::block_on(async {
            let disk = freshet_storage::SimDisk::new(5);
            let dir = std::path::PathBuf::from("/node1/raft");
            let store = DiskMetaStore::open(disk.clone(), dir.clone())
                .await
                .unwrap();
            assert_eq!(store.read(3).await.unwrap(), None);
            let mut m = GroupMeta::default();
            m.hard_state.term = 4;
            store.write(3, m.encode()).await.unwrap();
            m.hard_state.term = 5;
            store.write(3, m.encode()).await.unwrap();
            disk.crash();
            let store = DiskMetaStore::open(disk.clone(), dir).await.unwrap();
            let back = GroupMeta::decode(&store.read(3).await.unwrap().unwrap()).unwrap();
            assert_eq!(back.hard_state.term, 5, "a completed write is durable");
        });
    }

    #[test]
    fn a_removed_group_state_file_stays_gone_after_a_crash() {
        futures_lite::future::block_on(async {
            let disk = freshet_storage::SimDisk::new(6);
            let dir = std::path::PathBuf::from("/node1/raft");
            let store = DiskMetaStore::open(disk.clone(), dir.clone())
                .await
                .unwrap();
            store.write(3, GroupMeta::default().encode()).await.unwrap();
            store.write(4, GroupMeta::default().encode()).await.unwrap();
            store.remove(3).await.unwrap();
            store.remove(9).await.unwrap(); // never written: not an error
            disk.crash();
            let store = DiskMetaStore::open(disk.clone(), dir).await.unwrap();
            assert_eq!(store.read(3).await.unwrap(), None, "removal is durable");
            assert!(store.read(4).await.unwrap().is_some(), "other groups kept");
            let mem = MemMetaStore::default();
            mem.write(3, GroupMeta::default().encode()).await.unwrap();
            mem.remove(3).await.unwrap();
            assert_eq!(mem.read(3).await.unwrap(), None);
        });
    }
}
