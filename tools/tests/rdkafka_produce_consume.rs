//! Round trips through the `rdkafka` crate (librdkafka 2.12 built from source), the client Rust
//! users pick: BaseProducer + BaseConsumer, no async runtime.
//!
//! Scenarios: records with keys and headers (KIP-82) and CreateTime timestamps (KIP-32) in every
//! compression codec come back byte for byte at dense offsets; everything survives a restart on
//! the same data dir; metadata and ListOffsets answer what librdkafka asks after ApiVersions
//! negotiation (KIP-35/KIP-511).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, Timestamp, TopicPartitionList};

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const TIMEOUT: Duration = Duration::from_secs(30);

/// One record as produced and as a consumer must see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: i64,
}

/// What a consumer saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    partition: i32,
    offset: i64,
    rec: Rec,
}

/// Deterministic records: binary, empty and null values, null keys, repeated and null headers,
/// a large compressible value and a large incompressible one.
fn sample_records(n: usize, seed: u64) -> Vec<Rec> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let ts_base = 1_700_000_000_000i64 + (seed as i64) * 1000;
    (0..n)
        .map(|i| {
            let kind = i % 7;
            let key = (kind != 3).then(|| format!("key-{i}").into_bytes());
            let value = match kind {
                0 => Some((0..=255u8).collect()),
                1 => Some(Vec::new()),
                2 => None,
                4 if i < 14 => Some(b"freshet ".repeat(4096)),
                5 if i < 14 => Some((0..20_000).map(|_| next() as u8).collect()),
                _ => Some(format!("value-{i}-{}", next()).into_bytes()),
            };
            let headers = if kind == 6 {
                Vec::new()
            } else {
                vec![
                    ("h1".to_string(), Some(format!("v{i}").into_bytes())),
                    ("bin".to_string(), Some(vec![0, 255, i as u8])),
                    ("h1".to_string(), Some(b"dup".to_vec())),
                    ("null".to_string(), None),
                ]
            };
            Rec {
                key,
                value,
                headers,
                timestamp_ms: ts_base + i as i64,
            }
        })
        .collect()
}

/// One delivery report: the record's index and its (partition, offset), or the error.
type Delivery = (usize, Result<(i32, i64), String>);

/// Collects delivery reports.
#[derive(Default)]
struct Deliveries {
    done: Mutex<Vec<Delivery>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let r = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.done.lock().expect("lock").push((*index, r));
    }
}

/// Produces `recs` to partition 0 with acks=all and returns each record's (partition, offset).
fn produce(bootstrap: &str, topic: &str, recs: &[Rec], codec: &str) -> Vec<(i32, i64)> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.codec", codec)
        .set("linger.ms", "5")
        .set("acks", "all")
        .create_with_context(Deliveries::default())
        .expect("create producer");
    for (i, r) in recs.iter().enumerate() {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut rec: BaseRecord<'_, [u8], [u8], Box<usize>> =
            BaseRecord::with_opaque_to(topic, Box::new(i))
                .partition(0)
                .timestamp(r.timestamp_ms)
                .headers(headers);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        let mut rec = rec;
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert!(
                        e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        "send failed: {e}"
                    );
                    rec = back;
                    producer.poll(Duration::from_millis(100));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(TIMEOUT)
        .expect("flush: every record delivered");
    let mut done = std::mem::take(&mut *producer.context().done.lock().expect("lock"));
    done.sort_by_key(|(i, _)| *i);
    assert_eq!(done.len(), recs.len(), "one delivery report per record");
    done.into_iter()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("record {i} not delivered: {e}")))
        .collect()
}

fn got_from(m: &BorrowedMessage<'_>) -> Got {
    let headers = m
        .headers()
        .map(|h| {
            (0..h.count())
                .map(|i| {
                    let hd = h.get(i);
                    (hd.key.to_string(), hd.value.map(|v| v.to_vec()))
                })
                .collect()
        })
        .unwrap_or_default();
    let timestamp_ms = match m.timestamp() {
        Timestamp::CreateTime(t) => t,
        other => panic!("expected CreateTime, got {other:?}"),
    };
    Got {
        partition: m.partition(),
        offset: m.offset(),
        rec: Rec {
            key: m.key().map(|k| k.to_vec()),
            value: m.payload().map(|v| v.to_vec()),
            headers,
            timestamp_ms,
        },
    }
}

/// Reads `count` records of partition 0 from the beginning (assign, no group membership).
fn consume(bootstrap: &str, topic: &str, count: usize) -> Vec<Got> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("freshet-rdkafka-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("create consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    let mut errors = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while got.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => got.push(got_from(&m)),
            Some(Err(e)) => errors.push(e.to_string()),
            None => {}
        }
    }
    assert_eq!(
        got.len(),
        count,
        "consumed {}/{count} in {TIMEOUT:?}; errors: {errors:?}",
        got.len()
    );
    got
}

fn expected(recs: &[Rec], offsets: &[(i32, i64)]) -> Vec<Got> {
    recs.iter()
        .zip(offsets)
        .map(|(r, &(partition, offset))| Got {
            partition,
            offset,
            rec: r.clone(),
        })
        .collect()
}

fn topic(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[test]
fn every_codec_round_trips_byte_for_byte_at_dense_offsets() {
    let broker = common::Broker::start();
    for (i, codec) in CODECS.iter().enumerate() {
        let t = topic(&format!("rdkafka-codec-{codec}"));
        let recs = sample_records(40, i as u64);
        let offsets = produce(&broker.bootstrap(), &t, &recs, codec);
        assert_eq!(
            offsets,
            (0..40).map(|o| (0, o)).collect::<Vec<_>>(),
            "{codec}: dense offsets from 0"
        );
        let got = consume(&broker.bootstrap(), &t, 40);
        assert_eq!(
            got,
            expected(&recs, &offsets),
            "{codec}: consumed records differ"
        );
    }
}

#[test]
fn batches_in_every_codec_share_one_partition_and_survive_restart() {
    let mut broker = common::Broker::start();
    let t = topic("rdkafka-restart");
    let mut recs = Vec::new();
    let mut offsets = Vec::new();
    for (i, codec) in CODECS.iter().enumerate() {
        let r = sample_records(12, 100 + i as u64);
        offsets.extend(produce(&broker.bootstrap(), &t, &r, codec));
        recs.extend(r);
    }
    assert_eq!(offsets, (0..60).map(|o| (0, o)).collect::<Vec<_>>());
    let want = expected(&recs, &offsets);
    assert_eq!(consume(&broker.bootstrap(), &t, 60), want);

    broker.restart();
    assert_eq!(consume(&broker.bootstrap(), &t, 60), want, "after restart");
    let more = sample_records(3, 999);
    assert_eq!(
        produce(&broker.bootstrap(), &t, &more, "zstd"),
        vec![(0, 60), (0, 61), (0, 62)]
    );
}

#[test]
fn metadata_and_list_offsets_after_version_negotiation() {
    let broker = common::Broker::start();
    let t = topic("rdkafka-metadata");
    let recs = sample_records(10, 7);
    produce(&broker.bootstrap(), &t, &recs, "lz4");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "freshet-rdkafka-md")
        .create()
        .expect("create consumer");
    let md = consumer
        .fetch_metadata(None, TIMEOUT)
        .expect("metadata for all topics");
    assert_eq!(md.brokers().len(), 1);
    let b = &md.brokers()[0];
    assert_eq!((b.host(), b.port()), ("127.0.0.1", broker.port as i32));
    let mt = md
        .topics()
        .iter()
        .find(|x| x.name() == t)
        .expect("topic listed");
    assert!(mt.error().is_none(), "{:?}", mt.error());
    assert_eq!(mt.partitions().len(), 1);
    let p = &mt.partitions()[0];
    assert_eq!(p.leader(), b.id());
    assert_eq!(p.replicas(), &[b.id()]);
    assert_eq!(p.isr(), &[b.id()]);

    let one = consumer
        .fetch_metadata(Some(&t), TIMEOUT)
        .expect("metadata for one topic");
    assert_eq!(one.topics().len(), 1);

    // ListOffsets: earliest/latest watermarks and lookup by timestamp (KIP-79).
    assert_eq!(
        consumer
            .fetch_watermarks(&t, 0, TIMEOUT)
            .expect("watermarks"),
        (0, 10)
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&t, 0, Offset::Offset(recs[6].timestamp_ms))
        .expect("tpl");
    let found = consumer
        .offsets_for_times(tpl, TIMEOUT)
        .expect("offsets_for_times");
    let e = found.elements();
    assert_eq!(e[0].offset(), Offset::Offset(6));
}
