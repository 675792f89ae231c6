//! Controller commands and their byte layout (docs/design/controller.md, "Command layout").
//!
//! A [`Command`] is what the controller log records: a fully resolved metadata change (topic
//! ids, partition Raft groups and replica lists already chosen by the controller leader), so
//! applying it is deterministic on every node (KIP-500: the metadata log is the source of
//! truth; KIP-631: records such as `RegisterBrokerRecord`, `TopicRecord`, `PartitionRecord`,
//! `ConfigRecord`). An [`Intent`] is the unresolved request a broker forwards to the controller
//! leader (`CONTROLLER_PROPOSE`), and an [`Answer`] is the leader's reply.
//!
//! One command travels as the value of the single record of one Kafka v2 batch
//! ([`command_batch`], built with `freshet_raft::batch::encode_batch`). Every integer is
//! little-endian; `str` = `len:u32` + UTF-8 bytes. Decoding is total: any bytes give a value or
//! a [`CommandError`], never a panic, and counts are checked against the bytes present before
//! anything is allocated.
//!
//! Ownership: plain values (`Send`), built and decoded on any core.

use std::collections::BTreeMap;

use bytes::Bytes;
use thiserror::Error;

use crate::error::TopicError;
use crate::metadata::{BrokerInfo, PartitionAssignment, TopicId};
use crate::shard::TopicConfigChange;

/// Magic of an encoded command (first 4 bytes of the record value).
pub const COMMAND_MAGIC: [u8; 4] = *b"FRCC";
/// Magic of an encoded intent (`CONTROLLER_PROPOSE` request payload).
pub const INTENT_MAGIC: [u8; 4] = *b"FRCI";
/// Magic of an encoded answer (`CONTROLLER_PROPOSE` response payload).
pub const ANSWER_MAGIC: [u8; 4] = *b"FRCA";
/// Layout version of commands, intents and answers.
pub const LAYOUT_VERSION: u16 = 1;

/// Errors decoding a command, intent or answer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("truncated at byte {at}: {what}")]
    Truncated { at: usize, what: &'static str },
    #[error("bad magic {0:?}")]
    Magic([u8; 4]),
    #[error("unsupported layout version {0}")]
    Version(u16),
    #[error("unknown kind {0}")]
    Kind(u8),
    #[error("string is not UTF-8")]
    Utf8,
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("batch: {0}")]
    Batch(String),
}

/// One resolved metadata change, as stored in the controller log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// kind 1: a broker joins (or changes its addresses). KIP-631 `RegisterBrokerRecord`.
    RegisterBroker(BrokerInfo),
    /// kind 2: a new topic with every partition's Raft group and replicas.
    CreateTopic {
        name: String,
        id: TopicId,
        /// Topic config overrides (validated keys and values).
        config: BTreeMap<String, String>,
        /// One per partition, partition 0 first.
        assignments: Vec<PartitionAssignment>,
    },
    /// kind 3: remove a topic (only the incarnation with this id).
    DeleteTopic { name: String, id: TopicId },
    /// kind 4: append partitions (their assignments, in partition order).
    AddPartitions {
        name: String,
        id: TopicId,
        assignments: Vec<PartitionAssignment>,
    },
    /// kind 5: the topic's complete override map becomes `config`.
    SetTopicConfig {
        name: String,
        id: TopicId,
        config: BTreeMap<String, String>,
    },
    /// kind 6: start, replace (`Some`) or cancel (`None`) a partition's reassignment
    /// (KIP-455; Kafka's `PartitionChangeRecord` with target replicas).
    AlterReassignment {
        name: String,
        id: TopicId,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// kind 7: the partition's leader reports that the group's Raft configuration is exactly
    /// `replicas` (all voters, no learners): the reassignment heading there is complete.
    CompleteReassignment { group: u64, replicas: Vec<i32> },
}

/// A metadata change as a broker asks for it, before the controller leader resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// kind 1.
    RegisterBroker(BrokerInfo),
    /// kind 2. `replication_factor` −1 = `default.replication.factor`; `assignments`
    /// (manual, one replica list per partition) replaces placement when given.
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i16,
        configs: Vec<(String, String)>,
        assignments: Option<Vec<Vec<i32>>>,
    },
    /// kind 3.
    DeleteTopic { name: String },
    /// kind 4: grow to `total_partitions`; `assignments` for the new partitions only.
    AddPartitions {
        name: String,
        total_partitions: i32,
        assignments: Option<Vec<Vec<i32>>>,
    },
    /// kind 5.
    SetTopicConfig {
        name: String,
        change: TopicConfigChange,
    },
    /// kind 6: AlterPartitionReassignments for one partition (`None` cancels).
    AlterReassignment {
        name: String,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// kind 7: sent by a partition's leader (engine/src/reassign.rs).
    CompleteReassignment { group: u64, replicas: Vec<i32> },
}

/// The controller leader's reply to an intent: the revision at which the command was applied,
/// or the error the intent failed with.
pub type Answer = Result<u64, TopicError>;

// ------------------------------------------------------------------ writer / reader

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("count fits u32"));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    fn head(&mut self, magic: [u8; 4], kind: u8) {
        self.0.extend_from_slice(&magic);
        self.u16(LAYOUT_VERSION);
        self.u8(kind);
    }
    fn broker(&mut self, b: &BrokerInfo) {
        self.i32(b.id);
        self.str(&b.host);
        self.i32(b.port);
        self.str(&b.rpc_addr);
        self.opt_str(b.rack.as_deref());
    }
    fn config(&mut self, c: &BTreeMap<String, String>) {
        self.len(c.len());
        for (k, v) in c {
            self.str(k);
            self.str(v);
        }
    }
    fn assignments(&mut self, a: &[PartitionAssignment]) {
        self.len(a.len());
        for p in a {
            self.u64(p.group);
            self.replicas(&p.replicas);
        }
    }
    fn replicas(&mut self, r: &[i32]) {
        self.len(r.len());
        for b in r {
            self.i32(*b);
        }
    }
    fn opt_replicas(&mut self, r: Option<&Vec<i32>>) {
        match r {
            Some(r) => {
                self.u8(1);
                self.replicas(r);
            }
            None => self.u8(0),
        }
    }
    fn manual(&mut self, m: Option<&Vec<Vec<i32>>>) {
        match m {
            Some(m) => {
                self.u8(1);
                self.len(m.len());
                for r in m {
                    self.replicas(r);
                }
            }
            None => self.u8(0),
        }
    }
}

struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CommandError> {
        if self.b.len() - self.at < n {
            return Err(CommandError::Truncated { at: self.at, what });
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CommandError> {
        Ok(self.take(N, what)?.try_into().expect("length checked"))
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, CommandError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, CommandError> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, CommandError> {
        Ok(i16::from_le_bytes(self.arr(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, CommandError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, CommandError> {
        Ok(i32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, CommandError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    /// A count of items each at least `min_item_bytes` long, checked against what is left.
    fn count(&mut self, min_item_bytes: usize, what: &'static str) -> Result<usize, CommandError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item_bytes) > self.b.len() - self.at {
            return Err(CommandError::Truncated { at: self.at, what });
        }
        Ok(n)
    }
    fn str(&mut self, what: &'static str) -> Result<String, CommandError> {
        let n = self.count(1, what)?;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| CommandError::Utf8)
    }
    fn opt_str(&mut self, what: &'static str) -> Result<Option<String>, CommandError> {
        Ok(match self.u8(what)? {
            0 => None,
            _ => Some(self.str(what)?),
        })
    }
    fn head(&mut self, magic: [u8; 4]) -> Result<u8, CommandError> {
        let m = self.arr::<4>("magic")?;
        if m != magic {
            return Err(CommandError::Magic(m));
        }
        let v = self.u16("version")?;
        if v != LAYOUT_VERSION {
            return Err(CommandError::Version(v));
        }
        self.u8("kind")
    }
    fn broker(&mut self) -> Result<BrokerInfo, CommandError> {
        Ok(BrokerInfo {
            id: self.i32("broker id")?,
            host: self.str("broker host")?,
            port: self.i32("broker port")?,
            rpc_addr: self.str("broker rpc_addr")?,
            rack: self.opt_str("broker rack")?,
        })
    }
    fn config(&mut self) -> Result<BTreeMap<String, String>, CommandError> {
        let n = self.count(8, "config count")?;
        let mut c = BTreeMap::new();
        for _ in 0..n {
            let k = self.str("config key")?;
            let v = self.str("config value")?;
            c.insert(k, v);
        }
        Ok(c)
    }
    fn replicas(&mut self) -> Result<Vec<i32>, CommandError> {
        let n = self.count(4, "replica count")?;
        (0..n).map(|_| self.i32("replica")).collect()
    }
    fn assignments(&mut self) -> Result<Vec<PartitionAssignment>, CommandError> {
        let n = self.count(12, "assignment count")?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let group = self.u64("group")?;
            let replicas = self.replicas()?;
            out.push(PartitionAssignment::new(group, replicas));
        }
        Ok(out)
    }
    fn opt_replicas(&mut self) -> Result<Option<Vec<i32>>, CommandError> {
        match self.u8("target flag")? {
            0 => Ok(None),
            1 => Ok(Some(self.replicas()?)),
            k => Err(CommandError::Kind(k)),
        }
    }
    fn manual(&mut self) -> Result<Option<Vec<Vec<i32>>>, CommandError> {
        if self.u8("manual flag")? == 0 {
            return Ok(None);
        }
        let n = self.count(4, "manual count")?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.replicas()?);
        }
        Ok(Some(out))
    }
    fn end(&self) -> Result<(), CommandError> {
        match self.b.len() - self.at {
            0 => Ok(()),
            n => Err(CommandError::Trailing(n)),
        }
    }
}

// ------------------------------------------------------------------ commands

impl Command {
    /// The command's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Command::RegisterBroker(_) => 1,
            Command::CreateTopic { .. } => 2,
            Command::DeleteTopic { .. } => 3,
            Command::AddPartitions { .. } => 4,
            Command::SetTopicConfig { .. } => 5,
            Command::AlterReassignment { .. } => 6,
            Command::CompleteReassignment { .. } => 7,
        }
    }

    /// `magic "FRCC", version:u16, kind:u8`, then the kind's fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::default();
        w.head(COMMAND_MAGIC, self.kind());
        match self {
            Command::RegisterBroker(b) => w.broker(b),
            Command::CreateTopic {
                name,
                id,
                config,
                assignments,
            } => {
                w.str(name);
                w.0.extend_from_slice(id);
                w.config(config);
                w.assignments(assignments);
            }
            Command::DeleteTopic { name, id } => {
                w.str(name);
                w.0.extend_from_slice(id);
            }
            Command::AddPartitions {
                name,
                id,
                assignments,
            } => {
                w.str(name);
                w.0.extend_from_slice(id);
                w.assignments(assignments);
            }
            Command::SetTopicConfig { name, id, config } => {
                w.str(name);
                w.0.extend_from_slice(id);
                w.config(config);
            }
            Command::AlterReassignment {
                name,
                id,
                partition,
                target,
            } => {
                w.str(name);
                w.0.extend_from_slice(id);
                w.i32(*partition);
                w.opt_replicas(target.as_ref());
            }
            Command::CompleteReassignment { group, replicas } => {
                w.u64(*group);
                w.replicas(replicas);
            }
        }
        w.0
    }

    /// Inverse of [`Command::encode`].
    pub fn decode(b: &[u8]) -> Result<Command, CommandError> {
        let mut r = R { b, at: 0 };
        let cmd = match r.head(COMMAND_MAGIC)? {
            1 => Command::RegisterBroker(r.broker()?),
            2 => Command::CreateTopic {
                name: r.str("name")?,
                id: r.arr("topic id")?,
                config: r.config()?,
                assignments: r.assignments()?,
            },
            3 => Command::DeleteTopic {
                name: r.str("name")?,
                id: r.arr("topic id")?,
            },
            4 => Command::AddPartitions {
                name: r.str("name")?,
                id: r.arr("topic id")?,
                assignments: r.assignments()?,
            },
            5 => Command::SetTopicConfig {
                name: r.str("name")?,
                id: r.arr("topic id")?,
                config: r.config()?,
            },
            6 => Command::AlterReassignment {
                name: r.str("name")?,
                id: r.arr("topic id")?,
                partition: r.i32("partition")?,
                target: r.opt_replicas()?,
            },
            7 => Command::CompleteReassignment {
                group: r.u64("group")?,
                replicas: r.replicas()?,
            },
            k => return Err(CommandError::Kind(k)),
        };
        r.end()?;
        Ok(cmd)
    }
}

/// The Kafka v2 batch carrying `cmd`: one record, key null, value = [`Command::encode`].
pub fn command_batch(cmd: &Command, now_ms: i64) -> Bytes {
    let value = cmd.encode();
    freshet_raft::batch::encode_batch(0, now_ms, -1, &[(None, Some(&value))])
}

/// The command of a controller-log data batch (exactly one record, value = a command).
pub fn command_of_batch(batch: &[u8]) -> Result<Command, CommandError> {
    let recs =
        freshet_raft::batch::records(batch).map_err(|e| CommandError::Batch(e.to_string()))?;
    match recs.as_slice() {
        [(_, Some(v))] => Command::decode(v),
        _ => Err(CommandError::Batch(format!(
            "{} records; a command batch has exactly one with a value",
            recs.len()
        ))),
    }
}

// ------------------------------------------------------------------ intents and answers

impl Intent {
    /// `magic "FRCI", version:u16, kind:u8`, then the kind's fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::default();
        match self {
            Intent::RegisterBroker(b) => {
                w.head(INTENT_MAGIC, 1);
                w.broker(b);
            }
            Intent::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
                assignments,
            } => {
                w.head(INTENT_MAGIC, 2);
                w.str(name);
                w.i32(*partitions);
                w.i16(*replication_factor);
                w.len(configs.len());
                for (k, v) in configs {
                    w.str(k);
                    w.str(v);
                }
                w.manual(assignments.as_ref());
            }
            Intent::DeleteTopic { name } => {
                w.head(INTENT_MAGIC, 3);
                w.str(name);
            }
            Intent::AddPartitions {
                name,
                total_partitions,
                assignments,
            } => {
                w.head(INTENT_MAGIC, 4);
                w.str(name);
                w.i32(*total_partitions);
                w.manual(assignments.as_ref());
            }
            Intent::SetTopicConfig { name, change } => {
                w.head(INTENT_MAGIC, 5);
                w.str(name);
                match change {
                    TopicConfigChange::Replace(pairs) => {
                        w.u8(0);
                        w.len(pairs.len());
                        for (k, v) in pairs {
                            w.str(k);
                            w.str(v);
                        }
                    }
                    TopicConfigChange::Incremental(ops) => {
                        w.u8(1);
                        w.len(ops.len());
                        for (k, v) in ops {
                            w.str(k);
                            w.opt_str(v.as_deref());
                        }
                    }
                }
            }
            Intent::AlterReassignment {
                name,
                partition,
                target,
            } => {
                w.head(INTENT_MAGIC, 6);
                w.str(name);
                w.i32(*partition);
                w.opt_replicas(target.as_ref());
            }
            Intent::CompleteReassignment { group, replicas } => {
                w.head(INTENT_MAGIC, 7);
                w.u64(*group);
                w.replicas(replicas);
            }
        }
        w.0
    }

    /// Inverse of [`Intent::encode`].
    pub fn decode(b: &[u8]) -> Result<Intent, CommandError> {
        let mut r = R { b, at: 0 };
        let intent = match r.head(INTENT_MAGIC)? {
            1 => Intent::RegisterBroker(r.broker()?),
            2 => {
                let name = r.str("name")?;
                let partitions = r.i32("partitions")?;
                let replication_factor = r.i16("replication factor")?;
                let n = r.count(8, "config count")?;
                let mut configs = Vec::with_capacity(n);
                for _ in 0..n {
                    configs.push((r.str("config key")?, r.str("config value")?));
                }
                Intent::CreateTopic {
                    name,
                    partitions,
                    replication_factor,
                    configs,
                    assignments: r.manual()?,
                }
            }
            3 => Intent::DeleteTopic {
                name: r.str("name")?,
            },
            4 => Intent::AddPartitions {
                name: r.str("name")?,
                total_partitions: r.i32("total partitions")?,
                assignments: r.manual()?,
            },
            5 => {
                let name = r.str("name")?;
                let change = match r.u8("change kind")? {
                    0 => {
                        let n = r.count(8, "config count")?;
                        let mut pairs = Vec::with_capacity(n);
                        for _ in 0..n {
                            pairs.push((r.str("config key")?, r.str("config value")?));
                        }
                        TopicConfigChange::Replace(pairs)
                    }
                    1 => {
                        let n = r.count(5, "config op count")?;
                        let mut ops = Vec::with_capacity(n);
                        for _ in 0..n {
                            ops.push((r.str("config key")?, r.opt_str("config value")?));
                        }
                        TopicConfigChange::Incremental(ops)
                    }
                    k => return Err(CommandError::Kind(k)),
                };
                Intent::SetTopicConfig { name, change }
            }
            6 => Intent::AlterReassignment {
                name: r.str("name")?,
                partition: r.i32("partition")?,
                target: r.opt_replicas()?,
            },
            7 => Intent::CompleteReassignment {
                group: r.u64("group")?,
                replicas: r.replicas()?,
            },
            k => return Err(CommandError::Kind(k)),
        };
        r.end()?;
        Ok(intent)
    }
}

/// `magic "FRCA", version:u16, kind:u8` (0 = ok, else the error's tag below), then
/// `revision:u64` (ok) or `message:str` (error).
pub fn encode_answer(a: &Answer) -> Vec<u8> {
    let mut w = W::default();
    match a {
        Ok(rev) => {
            w.head(ANSWER_MAGIC, 0);
            w.u64(*rev);
        }
        Err(e) => {
            let (tag, msg) = error_tag(e);
            w.head(ANSWER_MAGIC, tag);
            w.str(&msg);
        }
    }
    w.0
}

/// Inverse of [`encode_answer`].
pub fn decode_answer(b: &[u8]) -> Result<Answer, CommandError> {
    let mut r = R { b, at: 0 };
    let a = match r.head(ANSWER_MAGIC)? {
        0 => Ok(r.u64("revision")?),
        tag => {
            let msg = r.str("message")?;
            Err(error_of_tag(tag, msg).ok_or(CommandError::Kind(tag))?)
        }
    };
    r.end()?;
    Ok(a)
}

/// Error tags: 1 AlreadyExists, 2 Unknown, 3 InvalidName, 4 InvalidPartitions,
/// 5 InvalidConfig, 6 InvalidReplicationFactor, 7 InvalidReplicaAssignment,
/// 8 ControllerUnavailable, 9 Store, 10 ShuttingDown, 11 NoReassignmentInProgress.
fn error_tag(e: &TopicError) -> (u8, String) {
    match e {
        TopicError::AlreadyExists(m) => (1, m.clone()),
        TopicError::Unknown(m) => (2, m.clone()),
        TopicError::InvalidName(m) => (3, m.clone()),
        TopicError::InvalidPartitions(m) => (4, m.clone()),
        TopicError::InvalidConfig(m) => (5, m.clone()),
        TopicError::InvalidReplicationFactor(m) => (6, m.clone()),
        TopicError::InvalidReplicaAssignment(m) => (7, m.clone()),
        TopicError::ControllerUnavailable(m) => (8, m.clone()),
        TopicError::Store(m) => (9, m.clone()),
        TopicError::ShuttingDown => (10, String::new()),
        TopicError::NoReassignmentInProgress(m) => (11, m.clone()),
    }
}

fn error_of_tag(tag: u8, m: String) -> Option<TopicError> {
    Some(match tag {
        1 => TopicError::AlreadyExists(m),
        2 => TopicError::Unknown(m),
        3 => TopicError::InvalidName(m),
        4 => TopicError::InvalidPartitions(m),
        5 => TopicError::InvalidConfig(m),
        6 => TopicError::InvalidReplicationFactor(m),
        7 => TopicError::InvalidReplicaAssignment(m),
        8 => TopicError::ControllerUnavailable(m),
        9 => TopicError::Store(m),
        10 => TopicError::ShuttingDown,
        11 => TopicError::NoReassignmentInProgress(m),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> BrokerInfo {
        BrokerInfo {
            id,
            host: "127.0.0.1".into(),
            port: 9092 + id,
            rpc_addr: format!("127.0.0.1:{}", 33145 + id),
            rack: (id == 2).then(|| "r2".to_string()),
        }
    }

    fn samples() -> Vec<Command> {
        let config: BTreeMap<String, String> = [("retention.ms".to_string(), "1000".to_string())]
            .into_iter()
            .collect();
        let a = vec![
            PartitionAssignment::new(7, vec![1, 2, 0]),
            PartitionAssignment::new(8, vec![2, 0, 1]),
        ];
        vec![
            Command::RegisterBroker(broker(1)),
            Command::RegisterBroker(broker(2)),
            Command::CreateTopic {
                name: "orders".into(),
                id: [9; 16],
                config: config.clone(),
                assignments: a.clone(),
            },
            Command::DeleteTopic {
                name: "orders".into(),
                id: [9; 16],
            },
            Command::AddPartitions {
                name: "orders".into(),
                id: [9; 16],
                assignments: a,
            },
            Command::SetTopicConfig {
                name: "orders".into(),
                id: [9; 16],
                config,
            },
            Command::AlterReassignment {
                name: "orders".into(),
                id: [9; 16],
                partition: 1,
                target: Some(vec![3, 1, 2]),
            },
            Command::AlterReassignment {
                name: "orders".into(),
                id: [9; 16],
                partition: 0,
                target: None,
            },
            Command::CompleteReassignment {
                group: 8,
                replicas: vec![3, 1, 2],
            },
        ]
    }

    /// KIP-631: every metadata record kind round-trips through its serialized form, carried as
    /// the one record of a Kafka v2 batch (KIP-500: the metadata log is a Kafka log).
    #[test]
    fn every_command_survives_encoding_into_a_kafka_batch() {
        for c in samples() {
            assert_eq!(Command::decode(&c.encode()), Ok(c.clone()));
            let batch = command_batch(&c, 1_700_000_000_000);
            let h = freshet_raft::batch::parse_batch(&batch).unwrap();
            assert_eq!(h.records_count, 1);
            assert_eq!(
                freshet_raft::batch::internal_kind(&h, &batch),
                None,
                "a command is a data batch, not a Raft-internal one"
            );
            assert_eq!(command_of_batch(&batch), Ok(c));
        }
    }

    /// Decoding is total: every truncation of every command, and every single-byte change of
    /// the header, gives an error, never a panic or a different command.
    #[test]
    fn truncated_or_damaged_commands_are_rejected_without_panicking() {
        for c in samples() {
            let b = c.encode();
            for cut in 0..b.len() {
                assert!(Command::decode(&b[..cut]).is_err(), "{c:?} cut at {cut}");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(Command::decode(&longer), Err(CommandError::Trailing(1)));
            let mut bad_kind = b.clone();
            bad_kind[6] = 77;
            assert_eq!(Command::decode(&bad_kind), Err(CommandError::Kind(77)));
            let mut bad_version = b.clone();
            bad_version[4] = 9;
            assert_eq!(Command::decode(&bad_version), Err(CommandError::Version(9)));
        }
        // A huge count with few bytes behind it is refused before allocating.
        let mut w = W::default();
        w.head(COMMAND_MAGIC, 2);
        w.str("t");
        w.0.extend_from_slice(&[1; 16]);
        w.u32(u32::MAX);
        assert!(matches!(
            Command::decode(&w.0),
            Err(CommandError::Truncated { .. })
        ));
        assert!(command_of_batch(b"not a batch").is_err());
    }

    #[test]
    fn intents_and_answers_round_trip_for_forwarding() {
        let intents = vec![
            Intent::RegisterBroker(broker(3)),
            Intent::CreateTopic {
                name: "t".into(),
                partitions: 3,
                replication_factor: -1,
                configs: vec![("cleanup.policy".into(), "compact".into())],
                assignments: Some(vec![vec![0, 1], vec![1, 2], vec![2, 0]]),
            },
            Intent::CreateTopic {
                name: "u".into(),
                partitions: 1,
                replication_factor: 3,
                configs: vec![],
                assignments: None,
            },
            Intent::DeleteTopic { name: "t".into() },
            Intent::AddPartitions {
                name: "t".into(),
                total_partitions: 5,
                assignments: None,
            },
            Intent::SetTopicConfig {
                name: "t".into(),
                change: TopicConfigChange::Incremental(vec![
                    ("retention.ms".into(), Some("5".into())),
                    ("segment.ms".into(), None),
                ]),
            },
            Intent::AlterReassignment {
                name: "t".into(),
                partition: 2,
                target: Some(vec![1, 2, 3]),
            },
            Intent::AlterReassignment {
                name: "t".into(),
                partition: 0,
                target: None,
            },
            Intent::CompleteReassignment {
                group: 4,
                replicas: vec![2],
            },
        ];
        for i in intents {
            let b = i.encode();
            assert_eq!(Intent::decode(&b), Ok(i));
            for cut in 0..b.len() {
                assert!(Intent::decode(&b[..cut]).is_err());
            }
        }
        let answers: Vec<Answer> = vec![
            Ok(42),
            Err(TopicError::AlreadyExists("t".into())),
            Err(TopicError::InvalidReplicationFactor("3 > 1".into())),
            Err(TopicError::ShuttingDown),
            Err(TopicError::NoReassignmentInProgress("t-0".into())),
        ];
        for a in answers {
            assert_eq!(decode_answer(&encode_answer(&a)), Ok(a));
        }
    }
}
