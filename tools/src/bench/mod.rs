//! `freshet bench`: the Kafka benchmarking rig (produce, consume, end-to-end, OMB workload
//! files, and a discarding sink to measure the client's own ceiling).
//!
//! The calling thread samples and reports; producers and consumers run on their own glommio
//! executor threads (see `engine`).

pub mod engine;
pub mod plot;
pub mod sink;
pub mod stats;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use kafka_protocol::records::Compression;

use crate::cli::produce::{parse_acks, parse_compression};
use crate::cli::ConnArgs;
use crate::client::ClientError;
use engine::{Mode, Plan};
use stats::Report;

/// `freshet bench ...`
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Publish as fast as possible (or at --rate) and measure publish latency
    #[command(after_help = "Example:\n  \
        freshet bench produce --topic bench --partitions 16 --message-size 1024 \
        --duration 30 --acks all --json out.json --plot out.svg")]
    Produce(BenchArgs),
    /// Fill the topic with --messages N, then measure reading it from the beginning
    #[command(after_help = "Example:\n  \
        freshet bench consume --topic bench --messages 1000000 --consumers 4")]
    Consume(BenchArgs),
    /// Publish and consume at once; measures end-to-end latency (send to consume)
    #[command(after_help = "Example:\n  \
        freshet bench e2e --topic bench --rate 50000 --duration 60 --json e2e.json")]
    E2e(BenchArgs),
    /// Run an OpenMessaging-Benchmark workload file (end-to-end)
    #[command(after_help = "Example:\n  \
        freshet bench workload benches/workloads/1-topic-16-partitions-1kb.yaml --duration 60")]
    Workload(WorkloadArgs),
    /// A fake broker that acknowledges and discards everything (measures the client's ceiling)
    #[command(after_help = "Example:\n  \
        freshet bench sink --addr 127.0.0.1:19092 &\n  \
        freshet bench produce --brokers 127.0.0.1:19092 --duration 10")]
    Sink {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:19092")]
        addr: String,
        /// Partitions of every topic it is asked about
        #[arg(long, default_value_t = 16)]
        partitions: i32,
        /// Answer every Nth partition produce with NOT_LEADER_OR_FOLLOWER (0 = never)
        #[arg(long, default_value_t = 0)]
        not_leader_every: u64,
    },
}

/// Options shared by every benchmark run.
#[derive(Args, Debug, Clone)]
pub struct RunOpts {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Acknowledgements: all (-1), 1 or 0
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// Maximum batch size per partition, in bytes
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_bytes: usize,
    /// Linger before a partial batch is sent, in milliseconds
    #[arg(long, default_value_t = 1)]
    pub linger_ms: u64,
    /// Compression codec: none, gzip, snappy, lz4, zstd
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Requests in flight per broker connection, per producer
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Producer buffer limit, in bytes (send waits above it)
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub buffer_bytes: usize,
    /// Client executor threads for producers
    #[arg(long, default_value_t = 1)]
    pub producer_threads: usize,
    /// Client executor threads for consumers
    #[arg(long, default_value_t = 1)]
    pub consumer_threads: usize,
    /// Write the results as JSON to this file
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw throughput and latency percentiles over time into this SVG file
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No per-second progress lines on stderr
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub run: RunOpts,
    /// Topic to use (created if missing)
    #[arg(long, default_value = "freshet-bench")]
    pub topic: String,
    /// Partitions when the topic is created
    #[arg(long, default_value_t = 16)]
    pub partitions: i32,
    /// Replication factor when the topic is created
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// Message size in bytes (at least 8: the send timestamp)
    #[arg(long, default_value_t = 1024)]
    pub message_size: usize,
    /// Stop after this many messages
    #[arg(long, conflicts_with = "duration")]
    pub messages: Option<u64>,
    /// Stop after this many seconds (default 10 unless --messages)
    #[arg(long)]
    pub duration: Option<f64>,
    /// Target rate over all producers in msg/s (0 = as fast as possible)
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Producer count
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer count
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Number of distinct keys (0 = no keys, sticky partitioning)
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
}

#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// OMB workload file (YAML)
    pub file: PathBuf,
    #[command(flatten)]
    pub run: RunOpts,
    /// Override testDurationMinutes, in seconds
    #[arg(long)]
    pub duration: Option<f64>,
    /// Override producerRate (msg/s; 0 = max)
    #[arg(long)]
    pub rate: Option<f64>,
    /// Topic name prefix (topic i is PREFIX-i)
    #[arg(long, default_value = "omb")]
    pub topic_prefix: String,
    /// Produce only (no consumers), as for a publish-only figure
    #[arg(long)]
    pub produce_only: bool,
}

fn base_plan(run: &RunOpts, name: String, mode: Mode) -> Plan {
    Plan {
        name,
        mode,
        client: run.conn.client_config(),
        topics: Vec::new(),
        partitions: 1,
        replication_factor: 1,
        message_size: 1024,
        producers_per_topic: 1,
        subscriptions_per_topic: 1,
        consumers_per_subscription: 1,
        rate_msgs_per_s: 0.0,
        duration: None,
        messages: None,
        acks: run.acks,
        batch_bytes: run.batch_bytes,
        linger_ms: run.linger_ms,
        compression: run.compression,
        keys: 0,
        producer_threads: run.producer_threads,
        consumer_threads: run.consumer_threads,
        max_in_flight_per_broker: run.max_in_flight,
        buffer_bytes_max: run.buffer_bytes,
        progress: !run.quiet,
    }
}

fn check(cond: bool, msg: &str) -> Result<(), ClientError> {
    if cond {
        Ok(())
    } else {
        Err(ClientError::Other(msg.to_string()))
    }
}

fn plan_from_args(a: &BenchArgs, mode: Mode) -> Result<Plan, ClientError> {
    check(
        a.message_size >= 8,
        "--message-size must be at least 8 bytes",
    )?;
    check(a.partitions >= 1, "--partitions must be at least 1")?;
    check(a.producers >= 1, "--producers must be at least 1")?;
    check(a.consumers >= 1, "--consumers must be at least 1")?;
    check(a.rate >= 0.0, "--rate must not be negative")?;
    check(
        a.duration.is_none_or(|d| d > 0.0),
        "--duration must be positive",
    )?;
    let mut p = base_plan(&a.run, format!("bench {}", mode.name()), mode);
    p.topics = vec![a.topic.clone()];
    p.partitions = a.partitions;
    p.replication_factor = a.replication_factor;
    p.message_size = a.message_size;
    p.producers_per_topic = a.producers;
    p.consumers_per_subscription = a.consumers;
    p.rate_msgs_per_s = a.rate;
    p.messages = a.messages;
    p.duration = match (a.duration, a.messages) {
        (Some(d), _) => Some(Duration::from_secs_f64(d)),
        (None, None) => Some(Duration::from_secs(10)),
        (None, Some(_)) => None,
    };
    p.keys = a.keys;
    Ok(p)
}

fn plan_from_workload(a: &WorkloadArgs) -> Result<Plan, ClientError> {
    let w = workload::Workload::load(&a.file).map_err(|e| ClientError::Other(e.to_string()))?;
    let mode = if a.produce_only {
        Mode::Produce
    } else {
        Mode::E2e
    };
    let mut p = base_plan(&a.run, w.name.clone(), mode);
    let stem = a
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "workload".into());
    p.topics = (0..w.topics)
        .map(|i| format!("{}-{stem}-{i}", a.topic_prefix))
        .collect();
    p.partitions = w.partitions_per_topic;
    p.message_size = w.message_size;
    p.producers_per_topic = w.producers_per_topic;
    p.subscriptions_per_topic = w.subscriptions_per_topic;
    p.consumers_per_subscription = w.consumers_per_subscription;
    p.rate_msgs_per_s = a.rate.unwrap_or(w.producer_rate_msgs_per_s);
    p.duration = Some(Duration::from_secs_f64(
        a.duration.unwrap_or(w.test_duration_minutes * 60.0),
    ));
    p.keys = if w.key_distributor == "NO_KEY" {
        0
    } else {
        10_000
    };
    Ok(p)
}

fn emit(report: &Report, run: &RunOpts) -> Result<(), ClientError> {
    print!("{}", report.table());
    if let Some(path) = &run.json {
        std::fs::write(path, report.to_json())
            .map_err(|e| ClientError::Other(format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(path) = &run.plot {
        std::fs::write(path, plot::svg(report))
            .map_err(|e| ClientError::Other(format!("cannot write {}: {e}", path.display())))?;
    }
    if report.errors > 0 && report.acked == 0 && report.consumed == 0 {
        return Err(ClientError::Other(format!(
            "benchmark failed: {}",
            report.first_error.clone().unwrap_or_default()
        )));
    }
    Ok(())
}

/// Runs a bench command on threads of its own.
pub fn run(cmd: BenchCommand) -> Result<(), ClientError> {
    // Keep freed multi-megabyte request buffers in the allocator instead of returning them to
    // the kernel: otherwise every Produce request pays fresh page faults (measured: ~10% of
    // the client's CPU at 1 KiB messages).
    // SAFETY: mallopt only tunes glibc malloc; called before any benchmark thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 * 1024 * 1024);
    }
    match cmd {
        BenchCommand::Produce(a) => {
            let p = plan_from_args(&a, Mode::Produce)?;
            emit(&engine::run(&p)?, &a.run)
        }
        BenchCommand::Consume(a) => {
            let mut p = plan_from_args(&a, Mode::Consume)?;
            if p.messages.is_none() {
                p.messages = Some(1_000_000);
            }
            emit(&engine::run(&p)?, &a.run)
        }
        BenchCommand::E2e(a) => {
            let p = plan_from_args(&a, Mode::E2e)?;
            emit(&engine::run(&p)?, &a.run)
        }
        BenchCommand::Workload(a) => {
            let p = plan_from_workload(&a)?;
            emit(&engine::run(&p)?, &a.run)
        }
        BenchCommand::Sink {
            addr,
            partitions,
            not_leader_every,
        } => sink::serve(&addr, partitions, not_leader_every),
    }
}
