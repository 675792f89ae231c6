//! `freshet produce TOPIC`: one record per input line.

use std::io::BufRead;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use kafka_protocol::records::Compression;

use super::{parse_kv, ConnArgs};
use crate::client::producer::{ProduceRecord, Producer, ProducerConfig};
use crate::client::{Client, ClientError};

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Topic to produce to
    pub topic: String,
    /// Read lines from this file instead of stdin
    #[arg(long, short = 'f')]
    pub file: Option<std::path::PathBuf>,
    /// Split each line at the first occurrence of this string into key and value
    #[arg(long, short = 'K')]
    pub key_separator: Option<String>,
    /// Header key=value added to every record (repeatable)
    #[arg(long = "header", short = 'H', value_parser = parse_kv)]
    pub headers: Vec<(String, String)>,
    /// Send every record to this partition (default: by key hash, or sticky round-robin)
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Acknowledgements: all (-1), 1 or 0
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// Compression codec: none, gzip, snappy, lz4, zstd
    #[arg(long, short = 'z', default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Linger time before a partial batch is sent, in milliseconds
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Maximum batch size per partition, in bytes
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_bytes: usize,
    /// Print each acknowledged batch (topic-partition@base offset, record count) on stderr
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// Parses an acks value.
pub fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        _ => Err(format!("acks must be all, -1, 1 or 0 (got '{s}')")),
    }
}

/// Parses a compression codec name.
pub fn parse_compression(s: &str) -> Result<Compression, String> {
    match s {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(format!(
            "compression must be none, gzip, snappy, lz4 or zstd (got '{s}')"
        )),
    }
}

pub async fn run(args: ProduceArgs) -> Result<(), ClientError> {
    // Open the input first so a missing file is reported before any network activity.
    let input: Box<dyn BufRead + Send> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(
            |e| ClientError::Other(format!("cannot open {}: {e}", path.display())),
        )?)),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let client = Client::new(args.conn.client_config());
    let topic: Rc<str> = Rc::from(args.topic.as_str());
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: args.acks,
            batch_bytes: args.batch_bytes,
            linger: Duration::from_millis(args.linger_ms),
            compression: args.compression,
            ..ProducerConfig::default()
        },
    );
    if args.verbose {
        producer.on_delivery(|d| match d.error {
            None => eprintln!(
                "{}-{}@{}: {} record(s)",
                d.topic, d.partition, d.base_offset, d.record_count
            ),
            Some(e) => eprintln!(
                "{}-{}: {} record(s) failed: {e}",
                d.topic, d.partition, d.record_count
            ),
        });
    }
    // Fail fast on an unknown topic or partition before reading input.
    let partitions = producer.partitions(&topic).await?;
    if let Some(p) = args.partition {
        if p < 0 || p >= partitions {
            return Err(ClientError::Other(format!(
                "partition {p} does not exist (topic {topic} has {partitions} partitions)"
            )));
        }
    }
    // Lines are read on a helper thread so the executor keeps sending while input is slow.
    let (tx, rx) = mpsc::sync_channel::<Result<String, String>>(65_536);
    std::thread::spawn(move || {
        for line in input.lines() {
            let item = line.map_err(|e| format!("cannot read input: {e}"));
            let stop = item.is_err();
            if tx.send(item).is_err() || stop {
                return;
            }
        }
    });
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(Bytes::from(v.clone()))))
        .collect();
    let mut sent: u64 = 0;
    loop {
        match rx.try_recv() {
            Ok(Ok(line)) => {
                let (key, value) = match &args.key_separator {
                    Some(sep) => match line.split_once(sep.as_str()) {
                        Some((k, v)) => {
                            (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string()))
                        }
                        None => (None, Bytes::from(line)),
                    },
                    None => (None, Bytes::from(line)),
                };
                producer
                    .send(
                        &topic,
                        ProduceRecord {
                            partition: args.partition,
                            key,
                            value: Some(value),
                            headers: headers.clone(),
                            timestamp_ms: None,
                        },
                    )
                    .await?;
                sent += 1;
            }
            Ok(Err(e)) => return Err(ClientError::Other(e)),
            Err(mpsc::TryRecvError::Empty) => {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        }
    }
    producer.close().await;
    let (failed, first) = producer.errors();
    if failed > 0 {
        let e = first.map(|e| e.to_string()).unwrap_or_default();
        return Err(ClientError::Other(format!(
            "{failed} of {sent} records were not produced: {e}"
        )));
    }
    eprintln!("produced {sent} records to {topic}");
    Ok(())
}
