//! Client-side subcommands of the `freshet` binary: `topic`, `group`, `cluster`, `produce`,
//! `consume` and `bench`. Each speaks only the Kafka protocol to `--brokers`, so it works the
//! same against Freshet, Apache Kafka or Redpanda.
//!
//! Each command runs on one glommio executor on the calling thread (per-core, `!Send`), except
//! `bench`, which starts its own executor threads.

mod consume;
mod group;
pub mod produce;
mod topic;

use std::future::Future;

use clap::{Args, Subcommand};

use crate::client::{Client, ClientConfig, ClientError};

/// Where the brokers are.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Bootstrap brokers, host:port[,host:port...]
    #[arg(long, short = 'b', default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Per-request timeout in milliseconds
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
}

impl ConnArgs {
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(&self.brokers);
        c.request_timeout = std::time::Duration::from_millis(self.request_timeout_ms);
        c
    }
}

/// The client-side commands (flattened into the top-level `freshet` command).
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create, list, describe, delete topics and change their configs
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// List, describe, reset offsets of and delete consumer groups
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Show cluster information
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Produce records read line by line from stdin or a file
    #[command(after_help = "Examples:\n  \
        printf 'k1:hello\\nk2:world\\n' | freshet produce orders --key-separator :\n  \
        freshet produce orders --file events.txt --acks 1 --compression lz4 -H source=cli")]
    Produce(produce::ProduceArgs),
    /// Consume records and print them (kcat-like format strings)
    #[command(after_help = "Examples:\n  \
        freshet consume orders --from-beginning --count 10\n  \
        freshet consume orders --group billing --format '%p:%o %k=%s\\n'\n\n\
        Format tokens: %t topic, %p partition, %o offset, %k key, %s value, %T timestamp (ms),\n\
        %h headers (k=v,...), %K key length, %S value length, %% percent, \\n newline, \\t tab.")]
    Consume(consume::ConsumeArgs),
    /// Benchmark a Kafka-compatible broker (produce, consume, end-to-end, OMB workloads)
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

/// `freshet cluster ...`
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Cluster id, controller, brokers (reachable, leaders, replicas), partition health and
    /// supported API versions
    #[command(after_help = "Example:\n  freshet cluster info --brokers 127.0.0.1:9092")]
    Info {
        #[command(flatten)]
        conn: ConnArgs,
        /// Also list every API and the version range the broker supports
        #[arg(long)]
        api_versions: bool,
    },
}

/// Runs a client command; returns the process exit code. Errors are one line on stderr.
pub fn run(cmd: ClientCommand) -> i32 {
    // Like other Unix tools, die quietly when stdout is a closed pipe (`... | head`) instead of
    // panicking inside println!.
    // SAFETY: resetting SIGPIPE to its default disposition at start-up, before any thread runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let result = match cmd {
        ClientCommand::Topic(c) => block_on(topic::run(c)),
        ClientCommand::Group(c) => block_on(group::run(c)),
        ClientCommand::Cluster(c) => block_on(cluster_run(c)),
        ClientCommand::Produce(a) => block_on(produce::run(a)),
        ClientCommand::Consume(a) => block_on(consume::run(a)),
        ClientCommand::Bench(b) => crate::bench::run(b),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Runs `fut` on a fresh glommio executor on this thread.
pub fn block_on<F, T>(fut: F) -> Result<T, ClientError>
where
    F: Future<Output = Result<T, ClientError>> + 'static,
    T: 'static,
{
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("freshet-cli")
        .make()
        .map_err(|e| ClientError::Other(format!("cannot start the I/O executor: {e}")))?;
    ex.run(fut)
}

/// Parses `key=value`.
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got '{s}'")),
    }
}

async fn cluster_run(cmd: ClusterCommand) -> Result<(), ClientError> {
    match cmd {
        ClusterCommand::Info { conn, api_versions } => {
            let client = Client::new(conn.client_config());
            let meta = client.metadata(None, false).await?;
            println!(
                "cluster id:  {}",
                meta.cluster_id.as_deref().unwrap_or("(none)")
            );
            println!("controller:  {}", meta.controller_id);
            println!("brokers:     {}", meta.brokers.len());
            let rows = broker_rows(&client, &meta, conn.request_timeout_ms).await;
            print_table(
                &[
                    "  ID",
                    "KAFKA-ADDR",
                    "ROLE",
                    "REACHABLE",
                    "LEADERS",
                    "REPLICAS",
                    "RACK",
                ],
                &rows,
            );
            let user_topics = meta.topics.iter().filter(|t| !t.is_internal).count();
            let parts: usize = meta
                .topics
                .iter()
                .filter(|t| !t.is_internal)
                .map(|t| t.partitions.len())
                .sum();
            println!("topics:      {user_topics} ({parts} partitions)");
            let (total, under, offline) = partition_health(&meta);
            println!(
                "partitions:  {total} (internal topics included): {under} under-replicated, \
                 {offline} without a leader"
            );
            if api_versions {
                let conn = client.any_conn().await?;
                println!("api versions ({}):", conn.addr());
                for (key, min, max) in conn.broker_api_versions() {
                    let name = kafka_protocol::messages::ApiKey::try_from(key)
                        .map(|k| format!("{k:?}"))
                        .unwrap_or_else(|_| format!("api {key}"));
                    let used = kafka_protocol::messages::ApiKey::try_from(key)
                        .ok()
                        .and_then(|k| conn.version(k).ok())
                        .map(|v| format!("  (using v{v})"))
                        .unwrap_or_default();
                    println!("  {name:<28} {min}..{max}{used}");
                }
            }
            Ok(())
        }
    }
}

/// One row per broker: id, Kafka address, controller or not, whether its Kafka listener
/// answers (ApiVersions within `timeout_ms`, at most 2 s), and how many partitions it leads
/// and holds replicas of. (Internal RPC addresses are not part of the Kafka protocol: each
/// node prints its own in its `freshet ready` line.)
async fn broker_rows(
    client: &Client,
    meta: &crate::client::ClusterMeta,
    timeout_ms: u64,
) -> Vec<Vec<String>> {
    let timeout = std::time::Duration::from_millis(timeout_ms.min(2_000));
    let mut rows = Vec::with_capacity(meta.brokers.len());
    for b in &meta.brokers {
        let addr = b.addr();
        let reachable =
            futures_lite::future::or(async { client.conn_to(&addr).await.is_ok() }, async {
                glommio::timer::sleep(timeout).await;
                false
            })
            .await;
        let parts = meta.topics.iter().flat_map(|t| t.partitions.iter());
        let leaders = parts.clone().filter(|p| p.leader == b.id).count();
        let replicas = parts.filter(|p| p.replicas.contains(&b.id)).count();
        rows.push(vec![
            format!("{:>4}", b.id),
            addr,
            if b.id == meta.controller_id {
                "controller".into()
            } else {
                "-".into()
            },
            if reachable { "yes" } else { "no" }.into(),
            leaders.to_string(),
            replicas.to_string(),
            b.rack.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    rows
}

/// (partitions, under-replicated: ISR smaller than the replica set, offline: no leader).
fn partition_health(meta: &crate::client::ClusterMeta) -> (usize, usize, usize) {
    let parts: Vec<_> = meta
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .collect();
    let under = parts
        .iter()
        .filter(|p| p.leader >= 0 && p.isr.len() < p.replicas.len())
        .count();
    let offline = parts.iter().filter(|p| p.leader < 0).count();
    (parts.len(), under, offline)
}

/// Prints rows as left-aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect());
    }
}

/// Prints a command-line error as one line (help and version go out unchanged) and exits.
pub fn exit_on_parse_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first} (see --help)");
            std::process::exit(2);
        }
    }
}
