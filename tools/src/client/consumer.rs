//! The fetching consumer: holds a position per assigned partition, sends one Fetch per leader
//! per poll (all leaders concurrently), decodes record batches (any compression) and follows
//! leader changes and out-of-range offsets.
//!
//! Owned by one glommio executor (per-core, `!Send`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::{codes, Client, ClientError};

/// Where to start reading a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    At(i64),
}

/// Consumer settings (names carry units).
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    /// What to do when a position is out of range.
    pub auto_reset: OffsetSpec,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait_ms: 200,
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            auto_reset: OffsetSpec::Earliest,
        }
    }
}

/// One consumed record.
#[derive(Clone, Debug)]
pub struct ConsumedRecord {
    pub topic: Rc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

struct ConsumerInner {
    client: Client,
    cfg: ConsumerConfig,
    positions: RefCell<BTreeMap<(Rc<str>, i32), i64>>,
    high_watermarks: RefCell<HashMap<(Rc<str>, i32), i64>>,
    partition_max_bytes: Cell<i32>,
}

/// A consumer of explicitly assigned partitions (per-core, `!Send`; cheap to clone).
#[derive(Clone)]
pub struct Consumer {
    inner: Rc<ConsumerInner>,
}

/// Looks up offsets with ListOffsets: `timestamp` -2 = earliest, -1 = latest.
pub async fn list_offsets(
    client: &Client,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<HashMap<i32, i64>, ClientError> {
    let meta = client.topic(topic).await?;
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for &p in partitions {
        let leader = meta
            .partitions
            .iter()
            .find(|m| m.id == p)
            .map(|m| m.leader)
            .ok_or_else(|| ClientError::Other(format!("topic {topic} has no partition {p}")))?;
        by_leader.entry(leader).or_default().push(p);
    }
    let mut out = HashMap::new();
    for (leader, parts) in by_leader {
        let conn = client.conn_to_node(leader).await?;
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        for p in parts {
            let mut lp = ListOffsetsPartition::default();
            lp.partition_index = p;
            lp.timestamp = timestamp;
            lp.current_leader_epoch = -1;
            t.partitions.push(lp);
        }
        req.topics.push(t);
        let (resp, _) = conn.call(&req).await?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::kafka(
                        format!("list offsets of {topic}-{}", p.partition_index),
                        p.error_code,
                    ));
                }
                out.insert(p.partition_index, p.offset);
            }
        }
    }
    Ok(out)
}

impl Consumer {
    pub fn new(client: Client, cfg: ConsumerConfig) -> Consumer {
        let pmb = cfg.partition_max_bytes;
        Consumer {
            inner: Rc::new(ConsumerInner {
                client,
                cfg,
                positions: RefCell::new(BTreeMap::new()),
                high_watermarks: RefCell::new(HashMap::new()),
                partition_max_bytes: Cell::new(pmb),
            }),
        }
    }

    /// Starts reading `topic`/`partition` at `spec` (resolved with ListOffsets).
    pub async fn assign(
        &self,
        topic: &Rc<str>,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<(), ClientError> {
        let offsets: HashMap<i32, i64> = match spec {
            OffsetSpec::At(o) if o >= 0 => partitions.iter().map(|&p| (p, o)).collect(),
            OffsetSpec::At(o) => {
                // Negative: that many records before the end.
                let ends = list_offsets(&self.inner.client, topic, partitions, -1).await?;
                let starts = list_offsets(&self.inner.client, topic, partitions, -2).await?;
                ends.iter()
                    .map(|(&p, &e)| (p, (e + o).max(starts.get(&p).copied().unwrap_or(0))))
                    .collect()
            }
            OffsetSpec::Earliest => list_offsets(&self.inner.client, topic, partitions, -2).await?,
            OffsetSpec::Latest => list_offsets(&self.inner.client, topic, partitions, -1).await?,
        };
        let mut pos = self.inner.positions.borrow_mut();
        for (p, o) in offsets {
            pos.insert((topic.clone(), p), o);
        }
        Ok(())
    }

    /// Assigns with known positions.
    pub fn assign_at(&self, topic: &Rc<str>, offsets: &[(i32, i64)]) {
        let mut pos = self.inner.positions.borrow_mut();
        for &(p, o) in offsets {
            pos.insert((topic.clone(), p), o);
        }
    }

    /// Drops every assignment.
    pub fn unassign_all(&self) {
        self.inner.positions.borrow_mut().clear();
    }

    /// Current positions (next offset to read) per partition.
    pub fn positions(&self) -> Vec<(Rc<str>, i32, i64)> {
        self.inner
            .positions
            .borrow()
            .iter()
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect()
    }

    /// Last known high watermark of a partition.
    pub fn high_watermark(&self, topic: &Rc<str>, partition: i32) -> Option<i64> {
        self.inner
            .high_watermarks
            .borrow()
            .get(&(topic.clone(), partition))
            .copied()
    }

    /// One round of fetches; returns the records that arrived (possibly none after max_wait).
    pub async fn poll(&self) -> Result<Vec<ConsumedRecord>, ClientError> {
        let positions = self.positions();
        if positions.is_empty() {
            glommio::timer::sleep(Duration::from_millis(self.inner.cfg.max_wait_ms as u64)).await;
            return Ok(Vec::new());
        }
        let mut by_leader: BTreeMap<i32, Vec<(Rc<str>, i32, i64)>> = BTreeMap::new();
        for (t, p, o) in positions {
            let mut leader = self.inner.client.cached_leader(&t, p);
            if leader < 0 {
                if let Ok(m) = self.inner.client.refresh_topic(&t).await {
                    leader = m
                        .partitions
                        .iter()
                        .find(|x| x.id == p)
                        .map_or(-1, |x| x.leader);
                }
            }
            if leader >= 0 {
                by_leader.entry(leader).or_default().push((t, p, o));
            }
        }
        if by_leader.is_empty() {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            return Ok(Vec::new());
        }
        let mut tasks = Vec::new();
        for (leader, parts) in by_leader {
            let me = self.clone();
            tasks.push(glommio::spawn_local(async move {
                me.fetch_from(leader, parts).await
            }));
        }
        let mut out = Vec::new();
        let mut first_err = None;
        for t in tasks {
            match t.await {
                Ok(mut recs) => out.append(&mut recs),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        match (out.is_empty(), first_err) {
            (true, Some(e)) if !e.is_connection() => Err(e),
            (true, Some(_)) => {
                glommio::timer::sleep(Duration::from_millis(200)).await;
                Ok(out)
            }
            _ => Ok(out),
        }
    }

    async fn fetch_from(
        &self,
        leader: i32,
        parts: Vec<(Rc<str>, i32, i64)>,
    ) -> Result<Vec<ConsumedRecord>, ClientError> {
        let inner = &self.inner;
        let conn = match inner.client.conn_to_node(leader).await {
            Ok(c) => c,
            Err(e) => {
                for (t, _, _) in &parts {
                    inner.client.invalidate_topic(t);
                }
                return Err(e);
            }
        };
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = inner.cfg.max_wait_ms;
        req.min_bytes = inner.cfg.min_bytes;
        req.max_bytes = inner.cfg.max_bytes;
        req.isolation_level = 0;
        req.session_id = 0;
        req.session_epoch = -1;
        let mut topic_index: HashMap<Rc<str>, usize> = HashMap::new();
        for (t, p, o) in &parts {
            let ti = *topic_index.entry(t.clone()).or_insert_with(|| {
                let mut ft = FetchTopic::default();
                ft.topic = TopicName(StrBytes::from_string(t.to_string()));
                req.topics.push(ft);
                req.topics.len() - 1
            });
            let mut fp = FetchPartition::default();
            fp.partition = *p;
            fp.fetch_offset = *o;
            fp.current_leader_epoch = -1;
            fp.last_fetched_epoch = -1;
            fp.log_start_offset = -1;
            fp.partition_max_bytes = inner.partition_max_bytes.get();
            req.topics[ti].partitions.push(fp);
        }
        let (resp, _) = conn.call(&req).await?;
        if resp.error_code != 0 {
            return Err(ClientError::kafka("fetch", resp.error_code));
        }
        let mut out = Vec::new();
        for t in resp.responses {
            let name = t.topic.0.to_string();
            let Some(topic) = topic_index.keys().find(|k| ***k == *name).cloned() else {
                continue;
            };
            for p in t.partitions {
                let key = (topic.clone(), p.partition_index);
                let Some(pos) = inner.positions.borrow().get(&key).copied() else {
                    continue; // unassigned meanwhile
                };
                match p.error_code {
                    0 => {}
                    codes::OFFSET_OUT_OF_RANGE => {
                        self.assign(&topic, &[p.partition_index], inner.cfg.auto_reset)
                            .await?;
                        continue;
                    }
                    c if codes::is_metadata_stale(c) => {
                        inner.client.invalidate_topic(&topic);
                        continue;
                    }
                    c => {
                        return Err(ClientError::kafka(
                            format!("fetch {topic}-{}", p.partition_index),
                            c,
                        ))
                    }
                }
                inner
                    .high_watermarks
                    .borrow_mut()
                    .insert(key.clone(), p.high_watermark);
                let Some(records) = p.records else { continue };
                if records.is_empty() {
                    continue;
                }
                let (next, complete) =
                    decode_batches(&topic, p.partition_index, pos, records, &mut out)?;
                if !complete && next == pos {
                    // A batch larger than partition_max_bytes: ask for more next time.
                    let cur = inner.partition_max_bytes.get();
                    inner
                        .partition_max_bytes
                        .set(cur.saturating_mul(2).min(inner.cfg.max_bytes));
                }
                inner.positions.borrow_mut().insert(key, next);
            }
        }
        Ok(out)
    }
}

/// Decodes the whole batches in `records`, appending those at or after `pos` to `out`.
/// Returns the next position and whether at least one whole batch was present.
fn decode_batches(
    topic: &Rc<str>,
    partition: i32,
    pos: i64,
    mut records: Bytes,
    out: &mut Vec<ConsumedRecord>,
) -> Result<(i64, bool), ClientError> {
    let mut next = pos;
    let mut any = false;
    // Batch header: baseOffset i64, batchLength i32, leaderEpoch i32, magic i8, crc u32,
    // attributes i16, lastOffsetDelta i32 ... (61 bytes in all).
    while records.len() >= 61 {
        let base = (&records[0..8]).get_i64();
        let len = (&records[8..12]).get_i32();
        if len < 49 {
            return Err(ClientError::Protocol(format!(
                "bad record batch length {len} in {topic}-{partition}"
            )));
        }
        let total = 12 + len as usize;
        if records.len() < total {
            break; // partial batch at the end of a fetch response is normal
        }
        let last_delta = (&records[23..27]).get_i32();
        let mut one = records.split_to(total);
        any = true;
        let set = RecordBatchDecoder::decode(&mut one).map_err(|e| {
            ClientError::Protocol(format!(
                "decode batch at {base} in {topic}-{partition}: {e}"
            ))
        })?;
        for r in set.records {
            if r.control || r.offset < pos {
                continue;
            }
            out.push(ConsumedRecord {
                topic: topic.clone(),
                partition,
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            });
        }
        next = next.max(base + last_delta as i64 + 1);
    }
    Ok((next, any))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(base: i64, n: i64, compression: Compression) -> Bytes {
        let recs: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i,
                sequence: (base + i) as i32 - 1,
                timestamp: 1000 + i,
                key: None,
                value: Some(Bytes::from(format!("v{}", base + i))),
                headers: IndexMap::new(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            recs.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn decode_skips_records_before_position_and_ignores_a_trailing_partial_batch() {
        // KIP-74: a fetch response may end with a partial batch; the consumer must ignore it.
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(10, 5, Compression::Lz4));
        let second = batch(15, 3, Compression::None);
        all.extend_from_slice(&second[..second.len() - 7]);
        let topic: Rc<str> = Rc::from("t");
        let mut out = Vec::new();
        let (next, any) = decode_batches(&topic, 0, 12, all.freeze(), &mut out).unwrap();
        assert!(any);
        assert_eq!(next, 15);
        let offsets: Vec<i64> = out.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![12, 13, 14]);
        assert_eq!(out[0].value.as_deref(), Some(&b"v12"[..]));
    }

    #[test]
    fn decode_reports_no_progress_when_only_a_partial_batch_arrived() {
        let b = batch(0, 4, Compression::None);
        let topic: Rc<str> = Rc::from("t");
        let mut out = Vec::new();
        let (next, any) = decode_batches(&topic, 0, 0, b.slice(..b.len() - 1), &mut out).unwrap();
        assert!(!any);
        assert_eq!(next, 0);
        assert!(out.is_empty());
    }
}
