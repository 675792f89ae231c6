//! The batching producer: records accumulate in one open batch per partition; a sender task
//! ships batches whose size reached `batch_bytes` or whose linger expired, grouped into one
//! Produce request per leader, with up to `max_in_flight_per_broker` requests pipelined on each
//! connection. On NOT_LEADER_OR_FOLLOWER / UNKNOWN_TOPIC_OR_PARTITION (and connection loss) it
//! refreshes metadata and re-sends to the new leader.
//!
//! Owned by one glommio executor (per-core, `!Send`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::sync::Notify;
use super::{codes, Client, ClientError};

/// Producer settings (names carry units).
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// 0, 1 or -1 (all).
    pub acks: i16,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub compression: Compression,
    pub max_in_flight_per_broker: usize,
    /// `send` waits while this many bytes are buffered and unacknowledged.
    pub buffer_bytes_max: usize,
    pub retries: u32,
    pub request_timeout_ms: i32,
    /// Batches for one broker are split into Produce requests of at most this many bytes
    /// (a single larger batch still goes alone).
    pub request_bytes_max: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: -1,
            batch_bytes: 1024 * 1024,
            linger: Duration::from_millis(1),
            compression: Compression::None,
            max_in_flight_per_broker: 5,
            buffer_bytes_max: 64 * 1024 * 1024,
            retries: 10,
            request_timeout_ms: 30_000,
            request_bytes_max: 4 * 1024 * 1024,
        }
    }
}

/// One record to send.
#[derive(Clone, Debug, Default)]
pub struct ProduceRecord {
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Create time; `None` = now.
    pub timestamp_ms: Option<i64>,
}

/// The outcome of one batch, handed to the delivery callback.
pub struct Delivery<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// Offset of the first record (-1 when unknown, e.g. acks=0).
    pub base_offset: i64,
    pub record_count: usize,
    pub error: Option<&'a ClientError>,
    /// When each record was handed to `send`, in order.
    pub enqueue_times: &'a [Instant],
}

type DeliveryFn = Box<dyn Fn(&Delivery)>;

struct Batch {
    topic: Rc<str>,
    partition: i32,
    records: Vec<Record>,
    bytes: usize,
    created: Instant,
    enqueue_times: Vec<Instant>,
    encoded: Option<Bytes>,
    attempts: u32,
}

struct TopicState {
    partitions: i32,
    sticky: i32,
}

struct ProducerInner {
    client: Client,
    cfg: ProducerConfig,
    topics: RefCell<FastMap<Rc<str>, TopicState>>,
    open: RefCell<FastMap<(Rc<str>, i32), Batch>>,
    /// Wall clock at `clock_anchor`, so record timestamps cost no second clock read.
    clock_anchor: (Instant, i64),
    ready: RefCell<VecDeque<Batch>>,
    in_flight: RefCell<HashMap<i32, usize>>,
    buffered_bytes: Cell<usize>,
    outstanding_records: Cell<usize>,
    flush_requested: Cell<bool>,
    closed: Cell<bool>,
    wake_sender: Notify,
    space: Notify,
    idle: Notify,
    on_delivery: RefCell<Option<DeliveryFn>>,
    errors: Cell<u64>,
    first_error: RefCell<Option<ClientError>>,
}

/// A Kafka producer (per-core, `!Send`; cheap to clone).
#[derive(Clone)]
pub struct Producer {
    inner: Rc<ProducerInner>,
}

/// Estimated encoded size of a record (varint overheads rounded up).
fn record_size(r: &ProduceRecord) -> usize {
    let h: usize = r
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 10)
        .sum();
    r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + h + 21
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Producer {
    /// Creates the producer and starts its sender task on the current executor.
    pub fn new(client: Client, cfg: ProducerConfig) -> Producer {
        assert!(
            cfg.max_in_flight_per_broker > 0,
            "max_in_flight_per_broker must be > 0"
        );
        let p = Producer {
            inner: Rc::new(ProducerInner {
                client,
                cfg,
                topics: RefCell::new(FastMap::default()),
                open: RefCell::new(FastMap::default()),
                clock_anchor: (Instant::now(), now_ms()),
                ready: RefCell::new(VecDeque::new()),
                in_flight: RefCell::new(HashMap::new()),
                buffered_bytes: Cell::new(0),
                outstanding_records: Cell::new(0),
                flush_requested: Cell::new(false),
                closed: Cell::new(false),
                wake_sender: Notify::default(),
                space: Notify::default(),
                idle: Notify::default(),
                on_delivery: RefCell::new(None),
                errors: Cell::new(0),
                first_error: RefCell::new(None),
            }),
        };
        glommio::spawn_local(sender_loop(p.inner.clone())).detach();
        p
    }

    /// Sets the callback called once per batch with its outcome.
    pub fn on_delivery(&self, f: impl Fn(&Delivery) + 'static) {
        *self.inner.on_delivery.borrow_mut() = Some(Box::new(f));
    }

    /// Records that failed for good so far, and the first such error.
    pub fn errors(&self) -> (u64, Option<ClientError>) {
        (
            self.inner.errors.get(),
            self.inner.first_error.borrow().clone(),
        )
    }

    /// Number of partitions of `topic` (metadata is looked up once and cached).
    pub async fn partitions(&self, topic: &Rc<str>) -> Result<i32, ClientError> {
        if let Some(t) = self.inner.topics.borrow().get(topic) {
            return Ok(t.partitions);
        }
        let meta = self.inner.client.topic(topic).await?;
        let n = meta.partitions.len() as i32;
        if n == 0 {
            return Err(ClientError::UnknownTopic(topic.to_string()));
        }
        let seed = (now_ms() as u64 ^ (Rc::as_ptr(&self.inner) as usize as u64)) % n as u64;
        self.inner.topics.borrow_mut().insert(
            topic.clone(),
            TopicState {
                partitions: n,
                sticky: seed as i32,
            },
        );
        Ok(n)
    }

    /// Adds a record to its partition's batch; waits only while the buffer is full.
    pub async fn send(&self, topic: &Rc<str>, rec: ProduceRecord) -> Result<(), ClientError> {
        self.send_at(topic, rec, Instant::now()).await
    }

    /// `send` with the caller's reading of the clock as the enqueue time (saves a clock read
    /// per record for callers that already have one).
    pub async fn send_at(
        &self,
        topic: &Rc<str>,
        rec: ProduceRecord,
        now: Instant,
    ) -> Result<(), ClientError> {
        let inner = &self.inner;
        if inner.closed.get() {
            return Err(ClientError::Other("producer is closed".into()));
        }
        while inner.buffered_bytes.get() >= inner.cfg.buffer_bytes_max {
            let n = inner.space.notified();
            if inner.buffered_bytes.get() < inner.cfg.buffer_bytes_max {
                break;
            }
            n.await;
        }
        let n = self.partitions(topic).await?;
        let partition = match (rec.partition, &rec.key) {
            (Some(p), _) => {
                if p < 0 || p >= n {
                    return Err(ClientError::Other(format!(
                        "partition {p} does not exist (topic {topic} has {n} partitions)"
                    )));
                }
                p
            }
            (None, Some(k)) => super::partition_for_key(k, n),
            (None, None) => inner.topics.borrow()[topic].sticky,
        };
        let size = record_size(&rec);
        let mut record = Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: rec.timestamp_ms.unwrap_or_else(|| {
                let (at, ms) = inner.clock_anchor;
                ms + now.saturating_duration_since(at).as_millis() as i64
            }),
            key: rec.key,
            value: rec.value,
            headers: IndexMap::new(),
            delete_horizon: false,
        };
        for (k, v) in rec.headers {
            record.headers.insert(StrBytes::from_string(k), v);
        }
        let key = (topic.clone(), partition);
        let mut became_full = false;
        let mut opened = false;
        {
            let mut open = inner.open.borrow_mut();
            let batch = open.entry(key.clone()).or_insert_with(|| {
                opened = true;
                Batch {
                    topic: topic.clone(),
                    partition,
                    records: Vec::with_capacity(64),
                    bytes: 61,
                    created: now,
                    enqueue_times: Vec::with_capacity(64),
                    encoded: None,
                    attempts: 0,
                }
            });
            // Offsets within a batch are relative; sequence tracks offset - 1 so the encoder
            // keeps every record in one batch and writes base sequence -1 (no idempotence).
            record.offset = batch.records.len() as i64;
            record.sequence = record.offset as i32 - 1;
            batch.records.push(record);
            batch.enqueue_times.push(now);
            batch.bytes += size;
            if batch.bytes >= inner.cfg.batch_bytes {
                became_full = true;
            }
        }
        inner.buffered_bytes.set(inner.buffered_bytes.get() + size);
        inner
            .outstanding_records
            .set(inner.outstanding_records.get() + 1);
        if became_full {
            let b = inner
                .open
                .borrow_mut()
                .remove(&key)
                .expect("batch just filled");
            inner.ready.borrow_mut().push_back(b);
            let mut topics = inner.topics.borrow_mut();
            let ts = topics.get_mut(topic).expect("topic state exists");
            if ts.sticky == partition {
                ts.sticky = (ts.sticky + 1) % ts.partitions;
            }
            inner.wake_sender.notify_all();
        } else if opened {
            inner.wake_sender.notify_all();
        }
        Ok(())
    }

    /// Sends everything buffered and waits until every record is acknowledged or failed.
    pub async fn flush(&self) {
        let inner = &self.inner;
        while inner.outstanding_records.get() > 0 {
            let n = inner.idle.notified();
            inner.flush_requested.set(true);
            inner.wake_sender.notify_all();
            if inner.outstanding_records.get() == 0 {
                break;
            }
            n.await;
        }
        inner.flush_requested.set(false);
    }

    /// Flushes, then stops the sender task.
    pub async fn close(&self) {
        self.flush().await;
        self.inner.closed.set(true);
        self.inner.wake_sender.notify_all();
    }
}

fn deliver(inner: &Rc<ProducerInner>, b: &Batch, base_offset: i64, error: Option<&ClientError>) {
    if let Some(e) = error {
        inner
            .errors
            .set(inner.errors.get() + b.enqueue_times.len() as u64);
        if inner.first_error.borrow().is_none() {
            *inner.first_error.borrow_mut() = Some(e.clone());
        }
    }
    if let Some(f) = inner.on_delivery.borrow().as_ref() {
        f(&Delivery {
            topic: &b.topic,
            partition: b.partition,
            base_offset,
            record_count: b.enqueue_times.len(),
            error,
            enqueue_times: &b.enqueue_times,
        });
    }
    inner
        .buffered_bytes
        .set(inner.buffered_bytes.get() - b.bytes.min(inner.buffered_bytes.get()));
    let left = inner.outstanding_records.get() - b.enqueue_times.len();
    inner.outstanding_records.set(left);
    inner.space.notify_all();
    if left == 0 {
        inner.idle.notify_all();
    }
}

fn encode_batch(inner: &ProducerInner, b: &mut Batch) -> Result<Bytes, ClientError> {
    if let Some(e) = &b.encoded {
        return Ok(e.clone());
    }
    let mut buf = BytesMut::with_capacity(b.bytes + 64);
    RecordBatchEncoder::encode(
        &mut buf,
        b.records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: inner.cfg.compression,
        },
    )
    .map_err(|e| ClientError::Protocol(format!("encode record batch: {e}")))?;
    let bytes = buf.freeze();
    b.encoded = Some(bytes.clone());
    b.records = Vec::new();
    Ok(bytes)
}

async fn sender_loop(inner: Rc<ProducerInner>) {
    loop {
        if inner.closed.get() && inner.outstanding_records.get() == 0 {
            return;
        }
        let wake = inner.wake_sender.notified();
        let now = Instant::now();
        let flush = inner.flush_requested.get() || inner.closed.get();
        let mut by_node: HashMap<i32, Vec<Batch>> = HashMap::new();
        let mut unknown_leader: Vec<Batch> = Vec::new();
        let mut next_deadline: Option<Instant> = None;
        let saturated = |node: i32| -> bool {
            inner.in_flight.borrow().get(&node).copied().unwrap_or(0)
                >= inner.cfg.max_in_flight_per_broker
        };
        // Full and retried batches first.
        {
            let mut ready = inner.ready.borrow_mut();
            let mut keep = VecDeque::new();
            while let Some(b) = ready.pop_front() {
                let leader = inner.client.cached_leader(&b.topic, b.partition);
                if leader < 0 {
                    unknown_leader.push(b);
                } else if saturated(leader) {
                    keep.push_back(b);
                } else {
                    by_node.entry(leader).or_default().push(b);
                }
            }
            *ready = keep;
        }
        // Then open batches whose linger expired (or all of them on flush). Batches for a
        // saturated leader keep filling up.
        {
            let mut open = inner.open.borrow_mut();
            let keys: Vec<(Rc<str>, i32)> = open.keys().cloned().collect();
            for k in keys {
                let b = &open[&k];
                let due = b.created + inner.cfg.linger;
                if flush || due <= now {
                    let leader = inner.client.cached_leader(&b.topic, b.partition);
                    if leader >= 0 && saturated(leader) {
                        continue;
                    }
                    let b = open.remove(&k).expect("key listed");
                    // KIP-480: the sticky partition moves on once its batch is sent.
                    if let Some(ts) = inner.topics.borrow_mut().get_mut(&b.topic) {
                        if ts.sticky == b.partition {
                            ts.sticky = (ts.sticky + 1) % ts.partitions;
                        }
                    }
                    if leader < 0 {
                        unknown_leader.push(b);
                    } else {
                        by_node.entry(leader).or_default().push(b);
                    }
                } else {
                    next_deadline = Some(next_deadline.map_or(due, |d: Instant| d.min(due)));
                }
            }
        }
        for b in unknown_leader {
            requeue_after_refresh(&inner, b, None);
        }
        let mut leftover = false;
        for (node, batches) in by_node {
            // Chunk into requests of at most request_bytes_max; chunks beyond the in-flight
            // budget wait in the ready queue for the next round.
            let mut chunk: Vec<Batch> = Vec::new();
            let mut chunk_bytes = 0usize;
            let mut chunks: Vec<Vec<Batch>> = Vec::new();
            for b in batches {
                if !chunk.is_empty() && chunk_bytes + b.bytes > inner.cfg.request_bytes_max {
                    chunks.push(std::mem::take(&mut chunk));
                    chunk_bytes = 0;
                }
                chunk_bytes += b.bytes;
                chunk.push(b);
            }
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
            for (i, c) in chunks.into_iter().enumerate() {
                if i > 0 && saturated(node) {
                    inner.ready.borrow_mut().extend(c);
                    leftover = true;
                    continue;
                }
                *inner.in_flight.borrow_mut().entry(node).or_insert(0) += 1;
                glommio::spawn_local(send_request(inner.clone(), node, c)).detach();
            }
        }
        if leftover {
            // Woken again when a response frees an in-flight slot.
            continue;
        }
        let sleep_for = match next_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_millis(100),
        };
        futures_lite::future::or(wake, async {
            glommio::timer::sleep(sleep_for.max(Duration::from_micros(50))).await;
        })
        .await;
    }
}

/// Refreshes the topic's metadata (after a backoff) and puts the batch back in line, or fails
/// it for good when out of retries.
fn requeue_after_refresh(inner: &Rc<ProducerInner>, mut b: Batch, error: Option<ClientError>) {
    b.attempts += 1;
    if b.attempts > inner.cfg.retries {
        let e = error.unwrap_or_else(|| {
            ClientError::Other(format!(
                "no leader for {}-{} after {} attempts",
                b.topic, b.partition, b.attempts
            ))
        });
        deliver(inner, &b, -1, Some(&e));
        return;
    }
    let inner = inner.clone();
    glommio::spawn_local(async move {
        let backoff_ms = (50u64 << b.attempts.min(5)).min(1000);
        glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
        inner.client.invalidate_topic(&b.topic);
        let _ = inner.client.refresh_topic(&b.topic).await;
        inner.ready.borrow_mut().push_back(b);
        inner.wake_sender.notify_all();
    })
    .detach();
}

async fn send_request(inner: Rc<ProducerInner>, node: i32, mut batches: Vec<Batch>) {
    let result = send_request_inner(&inner, node, &mut batches).await;
    *inner.in_flight.borrow_mut().entry(node).or_insert(1) -= 1;
    match result {
        Ok(outcomes) => {
            for (b, outcome) in batches.into_iter().zip(outcomes) {
                match outcome {
                    Ok(base) => deliver(&inner, &b, base, None),
                    Err(e) => {
                        let retriable = e.code().is_some_and(codes::is_retriable);
                        if retriable {
                            requeue_after_refresh(&inner, b, Some(e));
                        } else {
                            deliver(&inner, &b, -1, Some(&e));
                        }
                    }
                }
            }
        }
        Err(e) => {
            for b in batches {
                if e.is_connection() {
                    requeue_after_refresh(&inner, b, Some(e.clone()));
                } else {
                    deliver(&inner, &b, -1, Some(&e));
                }
            }
        }
    }
    inner.wake_sender.notify_all();
}

/// Sends one Produce request holding `batches`; returns each batch's base offset or error.
async fn send_request_inner(
    inner: &Rc<ProducerInner>,
    node: i32,
    batches: &mut [Batch],
) -> Result<Vec<Result<i64, ClientError>>, ClientError> {
    let conn = inner.client.conn_to_node(node).await?;
    let version = conn.version(ApiKey::Produce)?;
    let mut req = ProduceRequest::default();
    req.acks = inner.cfg.acks;
    req.timeout_ms = inner.cfg.request_timeout_ms;
    let mut topic_index: HashMap<Rc<str>, usize> = HashMap::new();
    for b in batches.iter_mut() {
        let records = encode_batch(inner, b)?;
        let ti = *topic_index.entry(b.topic.clone()).or_insert_with(|| {
            let mut t = TopicProduceData::default();
            t.name = TopicName(StrBytes::from_string(b.topic.to_string()));
            req.topic_data.push(t);
            req.topic_data.len() - 1
        });
        let mut pd = PartitionProduceData::default();
        pd.index = b.partition;
        pd.records = Some(records);
        req.topic_data[ti].partition_data.push(pd);
    }
    if inner.cfg.acks == 0 {
        conn.send_no_response(&req, version)?;
        return Ok(batches.iter().map(|_| Ok(-1)).collect());
    }
    let resp = conn.call_version(&req, version).await?;
    let mut results: HashMap<(String, i32), (i16, i64)> = HashMap::new();
    for t in &resp.responses {
        for p in &t.partition_responses {
            results.insert(
                (t.name.0.to_string(), p.index),
                (p.error_code, p.base_offset),
            );
        }
    }
    Ok(batches
        .iter()
        .map(|b| match results.get(&(b.topic.to_string(), b.partition)) {
            Some(&(0, base)) => Ok(base),
            Some(&(code, _)) => Err(ClientError::kafka(
                format!("produce to {}-{}", b.topic, b.partition),
                code,
            )),
            None => Err(ClientError::Protocol(format!(
                "produce response lacks partition {}-{}",
                b.topic, b.partition
            ))),
        })
        .collect())
}
