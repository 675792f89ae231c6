//! Runs a benchmark plan: producer tasks on one set of executor threads, consumer tasks on
//! another, and the calling thread sampling counters once a second.
//!
//! Threads share only `Arc<Counters>`, `Arc<Recorder>` and `Arc<AtomicBool>` stop flags; every
//! client object lives on its own executor thread (per-core, `!Send`).

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::Compression;

use super::stats::{Counters, Recorder, Report, Sample, MB};
use crate::client::consumer::{Consumer, ConsumerConfig, OffsetSpec};
use crate::client::producer::{ProduceRecord, Producer, ProducerConfig};
use crate::client::{admin, codes, Client, ClientConfig, ClientError};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Publish only.
    Produce,
    /// Fill the topic, then measure reading it from the start.
    Consume,
    /// Publish and consume at once; end-to-end latency.
    E2e,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

/// A fully resolved benchmark.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub mode: Mode,
    pub client: ClientConfig,
    pub topics: Vec<String>,
    pub partitions: i32,
    pub replication_factor: i16,
    pub message_size: usize,
    pub producers_per_topic: usize,
    pub subscriptions_per_topic: usize,
    pub consumers_per_subscription: usize,
    /// Total target rate over all producers, msg/s; 0 = as fast as possible.
    pub rate_msgs_per_s: f64,
    pub duration: Option<Duration>,
    pub messages: Option<u64>,
    pub acks: i16,
    pub batch_bytes: usize,
    pub linger_ms: u64,
    pub compression: Compression,
    /// Distinct keys (0 = no keys, sticky partitioning).
    pub keys: u64,
    pub producer_threads: usize,
    pub consumer_threads: usize,
    pub max_in_flight_per_broker: usize,
    pub buffer_bytes_max: usize,
    /// Print a progress line every second.
    pub progress: bool,
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// Wall-clock nanoseconds (the send time carried in every benchmark record's first 8 bytes).
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Creates missing topics and waits until every partition has a leader.
async fn prepare_topics(plan: &Plan) -> Result<(), ClientError> {
    let client = Client::new(plan.client.clone());
    for t in &plan.topics {
        match client.refresh_topic(t).await {
            Ok(m) if m.partitions.len() as i32 == plan.partitions => continue,
            Ok(m) => {
                eprintln!(
                    "note: topic {t} exists with {} partitions (plan asked for {}); using it",
                    m.partitions.len(),
                    plan.partitions
                );
                continue;
            }
            Err(ClientError::UnknownTopic(_)) => {}
            Err(e) => return Err(e),
        }
        match admin::create_topic(&client, t, plan.partitions, plan.replication_factor, &[]).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(codes::TOPIC_ALREADY_EXISTS) => {}
            Err(ClientError::Unsupported { .. }) => {
                // No CreateTopics: fall back to auto-creation through Metadata
                // (allow_auto_topic_creation); the broker's num.partitions decides the count.
                let meta = client.metadata(Some(std::slice::from_ref(t)), true).await?;
                let n = meta
                    .topics
                    .iter()
                    .find(|m| &m.name == t)
                    .map_or(0, |m| m.partitions.len());
                eprintln!("note: broker lacks CreateTopics; topic {t} was auto-created with {n} partitions");
            }
            Err(e) => return Err(e),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in &plan.topics {
        loop {
            match client.refresh_topic(t).await {
                Ok(m) if !m.partitions.is_empty() && m.partitions.iter().all(|p| p.leader >= 0) => {
                    break
                }
                _ if Instant::now() > deadline => {
                    return Err(ClientError::Other(format!(
                        "topic {t} has no leader for every partition after 30 s"
                    )))
                }
                _ => glommio::timer::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}

fn partition_count(plan: &Plan, topic: &str) -> Result<i32, ClientError> {
    let topic = topic.to_string();
    let cfg = plan.client.clone();
    crate::cli::block_on(async move {
        let c = Client::new(cfg);
        Ok(c.refresh_topic(&topic).await?.partitions.len() as i32)
    })
}

struct Shared {
    counters: Counters,
    recorder: Recorder,
    stop_producers: AtomicBool,
    stop_consumers: AtomicBool,
    /// Messages still allowed to be sent when a message count was given.
    budget: AtomicU64,
    consumers_ready: AtomicUsize,
    producers_done: AtomicUsize,
    first_error: Mutex<Option<String>>,
    record_e2e: bool,
}

impl Shared {
    fn error(&self, e: &ClientError) {
        let mut f = self.first_error.lock().expect("error lock poisoned");
        if f.is_none() {
            *f = Some(e.to_string());
        }
    }
}

fn spawn_executor<F, Fut>(name: String, f: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .name(&name)
                .make()
                .expect("start benchmark executor");
            ex.run(f());
        })
        .expect("spawn benchmark thread")
}

/// One producer task: paced or flat-out sends until stopped or out of budget.
async fn producer_task(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    topic: String,
    index: usize,
    rate_msgs_per_s: f64,
) {
    let client = Client::new(plan.client.clone());
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: plan.acks,
            batch_bytes: plan.batch_bytes,
            linger: Duration::from_millis(plan.linger_ms),
            compression: plan.compression,
            max_in_flight_per_broker: plan.max_in_flight_per_broker,
            buffer_bytes_max: plan.buffer_bytes_max,
            ..ProducerConfig::default()
        },
    );
    let size = plan.message_size as u64;
    {
        let shared = shared.clone();
        producer.on_delivery(move |d| {
            let n = d.record_count as u64;
            if let Some(e) = d.error {
                Counters::add(&shared.counters.errors, n);
                shared.error(e);
                return;
            }
            let now = Instant::now();
            shared.recorder.publish(
                d.enqueue_times
                    .iter()
                    .map(|t| now.duration_since(*t).as_micros() as u64),
            );
            Counters::add(&shared.counters.acked, n);
            Counters::add(&shared.counters.acked_bytes, n * size);
        });
    }
    let topic: Rc<str> = Rc::from(topic.as_str());
    if let Err(e) = producer.partitions(&topic).await {
        shared.error(&e);
        shared.producers_done.fetch_add(1, Ordering::SeqCst);
        return;
    }
    // Payload: 8-byte send timestamp, then pseudo-random filler (differs per producer so
    // compression figures are not flattered by identical messages across producers).
    let mut filler = vec![0u8; plan.message_size.max(8)];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1);
    for b in filler.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = b'a' + (x % 26) as u8;
    }
    let start = Instant::now();
    // Send times in records are wall-clock ns derived from the monotonic clock and one anchor,
    // so each message costs a single clock read.
    let anchor_ns = wall_ns();
    let mut sent: u64 = 0;
    let mut key_counter: u64 = index as u64;
    let mut buf = BytesMut::with_capacity(plan.message_size.max(8) * 1024);
    loop {
        if shared.stop_producers.load(Ordering::Relaxed) {
            break;
        }
        if plan.messages.is_some() {
            let prev = shared.budget.fetch_sub(1, Ordering::Relaxed);
            if prev == 0 || prev > u64::MAX / 2 {
                shared.budget.store(0, Ordering::Relaxed);
                break;
            }
        }
        if rate_msgs_per_s > 0.0 {
            let due_s = sent as f64 / rate_msgs_per_s;
            let elapsed = start.elapsed().as_secs_f64();
            if due_s > elapsed {
                glommio::timer::sleep(Duration::from_secs_f64(due_s - elapsed)).await;
            }
        }
        if buf.capacity() < plan.message_size.max(8) {
            buf.reserve(plan.message_size.max(8) * 1024);
        }
        let now = Instant::now();
        buf.put_u64(anchor_ns + now.saturating_duration_since(start).as_nanos() as u64);
        buf.put_slice(&filler[8..]);
        let value: Bytes = buf.split().freeze();
        let key = if plan.keys > 0 {
            key_counter = key_counter.wrapping_add(1);
            Some(Bytes::from((key_counter % plan.keys).to_string()))
        } else {
            None
        };
        if let Err(e) = producer
            .send_at(
                &topic,
                ProduceRecord {
                    key,
                    value: Some(value),
                    ..ProduceRecord::default()
                },
                now,
            )
            .await
        {
            shared.error(&e);
            Counters::add(&shared.counters.errors, 1);
            glommio::timer::sleep(Duration::from_millis(10)).await;
            continue;
        }
        sent += 1;
        Counters::add(&shared.counters.sent, 1);
        glommio::yield_if_needed().await;
    }
    let _ = crate::client::sync::with_timeout(Duration::from_secs(30), producer.flush()).await;
    shared.producers_done.fetch_add(1, Ordering::SeqCst);
}

/// One consumer task reading `parts` of `topic` from `start`.
async fn consumer_task(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    topic: String,
    parts: Vec<i32>,
    start: OffsetSpec,
) {
    let client = Client::new(plan.client.clone());
    let consumer = Consumer::new(
        client,
        ConsumerConfig {
            max_wait_ms: 100,
            ..ConsumerConfig::default()
        },
    );
    let topic: Rc<str> = Rc::from(topic.as_str());
    let mut ready = false;
    for attempt in 0..50 {
        match consumer.assign(&topic, &parts, start).await {
            Ok(()) => {
                ready = true;
                break;
            }
            Err(e) if attempt == 49 => shared.error(&e),
            Err(_) => glommio::timer::sleep(Duration::from_millis(100)).await,
        }
    }
    shared.consumers_ready.fetch_add(1, Ordering::SeqCst);
    if !ready {
        return;
    }
    while !shared.stop_consumers.load(Ordering::Relaxed) {
        match consumer.poll().await {
            Ok(recs) => {
                if recs.is_empty() {
                    continue;
                }
                let bytes: u64 = recs
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
                    .sum();
                if shared.record_e2e {
                    let now = wall_ns();
                    shared.recorder.e2e(recs.iter().filter_map(|r| {
                        let v = r.value.as_ref()?;
                        if v.len() < 8 {
                            return None;
                        }
                        let sent = u64::from_be_bytes(v[0..8].try_into().ok()?);
                        Some(now.saturating_sub(sent) / 1000)
                    }));
                }
                Counters::add(&shared.counters.consumed, recs.len() as u64);
                Counters::add(&shared.counters.consumed_bytes, bytes);
            }
            Err(e) => {
                shared.error(&e);
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Producer phase used by `bench consume` to put `n` messages into the topics.
fn fill(plan: &Plan, n: u64) -> Result<(), ClientError> {
    let mut p = plan.clone();
    p.mode = Mode::Produce;
    p.messages = Some(n);
    p.duration = None;
    p.rate_msgs_per_s = 0.0;
    p.progress = false;
    eprintln!("filling {} topic(s) with {n} messages...", p.topics.len());
    let r = run_phase(&p, true)?;
    if r.errors > 0 {
        return Err(ClientError::Other(format!(
            "fill phase had {} errors: {}",
            r.errors,
            r.first_error.unwrap_or_default()
        )));
    }
    eprintln!(
        "filled: {} messages at {:.0} msg/s",
        r.acked, r.publish_msgs_per_s
    );
    Ok(())
}

/// Runs the plan and returns its report.
pub fn run(plan: &Plan) -> Result<Report, ClientError> {
    {
        let p = plan.clone();
        crate::cli::block_on(async move { prepare_topics(&p).await })?;
    }
    if plan.mode == Mode::Consume {
        let n = plan.messages.unwrap_or(1_000_000);
        fill(plan, n)?;
        let mut p = plan.clone();
        p.messages = Some(n * (plan.subscriptions_per_topic as u64).max(1));
        return run_phase(&p, false);
    }
    run_phase(plan, false)
}

fn run_phase(plan: &Plan, quiet: bool) -> Result<Report, ClientError> {
    let plan = Arc::new(plan.clone());
    let produce = plan.mode != Mode::Consume;
    let consume = plan.mode != Mode::Produce;
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        recorder: Recorder::default(),
        stop_producers: AtomicBool::new(false),
        stop_consumers: AtomicBool::new(false),
        budget: AtomicU64::new(if produce {
            plan.messages.unwrap_or(0)
        } else {
            0
        }),
        consumers_ready: AtomicUsize::new(0),
        producers_done: AtomicUsize::new(0),
        first_error: Mutex::new(None),
        record_e2e: plan.mode == Mode::E2e,
    });
    // Consumers: for each topic and subscription, `consumers_per_subscription` consumers
    // splitting the partitions round-robin.
    let mut consumer_jobs: Vec<(String, Vec<i32>)> = Vec::new();
    if consume {
        for t in &plan.topics {
            let n = partition_count(&plan, t)?;
            for _sub in 0..plan.subscriptions_per_topic.max(1) {
                let c = plan.consumers_per_subscription.max(1);
                for i in 0..c {
                    let parts: Vec<i32> = (0..n).filter(|p| *p as usize % c == i).collect();
                    if !parts.is_empty() {
                        consumer_jobs.push((t.clone(), parts));
                    }
                }
            }
        }
    }
    let consumer_count = consumer_jobs.len();
    let start_spec = if plan.mode == Mode::Consume {
        OffsetSpec::Earliest
    } else {
        OffsetSpec::Latest
    };
    let mut threads = Vec::new();
    if consume {
        let nthreads = plan.consumer_threads.max(1).min(consumer_count.max(1));
        for th in 0..nthreads {
            let jobs: Vec<(String, Vec<i32>)> = consumer_jobs
                .iter()
                .enumerate()
                .filter(|(i, _)| i % nthreads == th)
                .map(|(_, j)| j.clone())
                .collect();
            let plan = plan.clone();
            let shared = shared.clone();
            threads.push(spawn_executor(
                format!("bench-cons-{th}"),
                move || async move {
                    let mut tasks = Vec::new();
                    for (t, parts) in jobs {
                        tasks.push(glommio::spawn_local(consumer_task(
                            plan.clone(),
                            shared.clone(),
                            t,
                            parts,
                            start_spec,
                        )));
                    }
                    for t in tasks {
                        t.await;
                    }
                },
            ));
        }
        // Consumers must be positioned before the first message is sent.
        let deadline = Instant::now() + Duration::from_secs(30);
        while shared.consumers_ready.load(Ordering::SeqCst) < consumer_count
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let producer_count = if produce {
        plan.topics.len() * plan.producers_per_topic.max(1)
    } else {
        0
    };
    if produce {
        let per_producer_rate = if plan.rate_msgs_per_s > 0.0 {
            plan.rate_msgs_per_s / producer_count as f64
        } else {
            0.0
        };
        let mut jobs = Vec::new();
        for t in &plan.topics {
            for _ in 0..plan.producers_per_topic.max(1) {
                jobs.push(t.clone());
            }
        }
        let nthreads = plan.producer_threads.max(1).min(jobs.len());
        for th in 0..nthreads {
            let mine: Vec<(usize, String)> = jobs
                .iter()
                .enumerate()
                .filter(|(i, _)| i % nthreads == th)
                .map(|(i, t)| (i, t.clone()))
                .collect();
            let plan = plan.clone();
            let shared = shared.clone();
            threads.push(spawn_executor(
                format!("bench-prod-{th}"),
                move || async move {
                    let mut tasks = Vec::new();
                    for (i, t) in mine {
                        tasks.push(glommio::spawn_local(producer_task(
                            plan.clone(),
                            shared.clone(),
                            t,
                            i,
                            per_producer_rate,
                        )));
                    }
                    for t in tasks {
                        t.await;
                    }
                },
            ));
        }
    }
    // Sampling loop on this thread.
    let c = &shared.counters;
    let start = Instant::now();
    let mut timeline = Vec::new();
    let mut last = (0u64, 0u64, 0u64, 0u64);
    let mut last_t = start;
    let mut produce_end: Option<Instant> = None;
    let mut drain_deadline: Option<Instant> = None;
    let target_consumed = plan.messages.map(|m| {
        if plan.mode == Mode::Consume {
            m
        } else {
            m * (plan.subscriptions_per_topic.max(1) as u64)
        }
    });
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        let elapsed = now.duration_since(start);
        // End conditions.
        let time_up = plan.duration.is_some_and(|d| elapsed >= d);
        let sent_all = plan.messages.is_some()
            && produce
            && c.get(&c.acked) + c.get(&c.errors) >= plan.messages.unwrap_or(0);
        if produce && produce_end.is_none() && (time_up || sent_all) {
            shared.stop_producers.store(true, Ordering::Relaxed);
            produce_end = Some(now);
            drain_deadline = Some(now + Duration::from_secs(10));
        }
        let consumed_all = target_consumed.is_some_and(|t| c.get(&c.consumed) >= t);
        let producers_done = shared.producers_done.load(Ordering::SeqCst) >= producer_count;
        let finished = if !consume {
            produce_end.is_some() && producers_done
        } else if !produce {
            time_up || consumed_all
        } else {
            produce_end.is_some()
                && (producers_done && c.get(&c.consumed) >= c.get(&c.acked)
                    || drain_deadline.is_some_and(|d| now >= d))
        };
        if now.duration_since(last_t) >= Duration::from_secs(1) || finished {
            let dt = now.duration_since(last_t).as_secs_f64();
            let cur = (
                c.get(&c.acked),
                c.get(&c.acked_bytes),
                c.get(&c.consumed),
                c.get(&c.consumed_bytes),
            );
            let (pp, pe) = shared.recorder.take_interval();
            let s = Sample {
                t_s: elapsed.as_secs_f64(),
                publish_msgs_per_s: (cur.0 - last.0) as f64 / dt,
                publish_mb_per_s: (cur.1 - last.1) as f64 / dt / MB,
                consume_msgs_per_s: (cur.2 - last.2) as f64 / dt,
                consume_mb_per_s: (cur.3 - last.3) as f64 / dt / MB,
                publish: pp,
                e2e: pe,
                backlog: if consume && produce {
                    (cur.0 as i64 - cur.2 as i64).max(0)
                } else {
                    0
                },
            };
            if plan.progress && !quiet && dt >= 0.5 {
                let mut line = format!("[{:>5.1}s]", s.t_s);
                if produce {
                    line.push_str(&format!(
                        " pub {:>9.0} msg/s {:>7.1} MB/s",
                        s.publish_msgs_per_s, s.publish_mb_per_s
                    ));
                    if let Some(p) = &s.publish {
                        line.push_str(&format!(" lat p50 {:.2} p99 {:.2} ms", p.p50, p.p99));
                    }
                }
                if consume {
                    line.push_str(&format!(
                        " | cons {:>9.0} msg/s {:>7.1} MB/s",
                        s.consume_msgs_per_s, s.consume_mb_per_s
                    ));
                    if let Some(p) = &s.e2e {
                        line.push_str(&format!(" e2e p50 {:.2} p99 {:.2} ms", p.p50, p.p99));
                    }
                    if produce {
                        line.push_str(&format!(" | backlog {}", s.backlog));
                    }
                }
                let errs = c.get(&c.errors);
                if errs > 0 {
                    line.push_str(&format!(" | errors {errs}"));
                }
                eprintln!("{line}");
            }
            if dt >= 0.5 {
                timeline.push(s);
            }
            last = cur;
            last_t = now;
        }
        if finished {
            break;
        }
        if elapsed > plan.duration.unwrap_or(Duration::from_secs(3600)) + Duration::from_secs(60) {
            shared.stop_producers.store(true, Ordering::Relaxed);
            break;
        }
    }
    let end = Instant::now();
    shared.stop_producers.store(true, Ordering::Relaxed);
    shared.stop_consumers.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let produce_secs = produce_end
        .unwrap_or(end)
        .duration_since(start)
        .as_secs_f64()
        .max(1e-3);
    let total_secs = end.duration_since(start).as_secs_f64().max(1e-3);
    let consume_secs = if produce { produce_secs } else { total_secs };
    let (publish, e2e) = shared.recorder.totals();
    let acked = c.get(&c.acked);
    let consumed = c.get(&c.consumed);
    let first_error = shared.first_error.lock().expect("error lock").clone();
    Ok(Report {
        name: plan.name.clone(),
        mode: plan.mode.name().to_string(),
        brokers: plan.client.bootstrap.join(","),
        topics: plan.topics.len(),
        partitions: plan.partitions,
        message_size: plan.message_size,
        producers: producer_count,
        consumers: consumer_count,
        acks: plan.acks,
        compression: compression_name(plan.compression).to_string(),
        batch_bytes: plan.batch_bytes,
        linger_ms: plan.linger_ms,
        target_rate_msgs_per_s: plan.rate_msgs_per_s,
        duration_s: if produce { produce_secs } else { total_secs },
        sent: c.get(&c.sent),
        acked,
        errors: c.get(&c.errors),
        consumed,
        publish_msgs_per_s: acked as f64 / produce_secs,
        publish_mb_per_s: c.get(&c.acked_bytes) as f64 / produce_secs / MB,
        consume_msgs_per_s: consumed as f64 / consume_secs,
        consume_mb_per_s: c.get(&c.consumed_bytes) as f64 / consume_secs / MB,
        publish: if produce { publish } else { None },
        e2e,
        timeline,
        first_error,
    })
}
