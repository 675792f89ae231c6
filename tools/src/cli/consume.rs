//! `freshet consume TOPIC`: prints records with a kcat-like format string.

use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use super::ConnArgs;
use crate::client::consumer::{ConsumedRecord, Consumer, ConsumerConfig, OffsetSpec};
use crate::client::group::GroupMember;
use crate::client::{admin, Client, ClientError};

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Topic to consume
    pub topic: String,
    /// Start at the earliest offset (default: latest, or the group's committed offsets)
    #[arg(long)]
    pub from_beginning: bool,
    /// Start offset: earliest, latest, N (absolute) or -N (N before the end)
    #[arg(long, short = 'o', allow_hyphen_values = true, value_parser = parse_offset)]
    pub offset: Option<OffsetSpec>,
    /// Only these partitions (repeatable; not with --group)
    #[arg(long, short = 'p')]
    pub partition: Vec<i32>,
    /// Join this consumer group (range assignor) and commit offsets
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Output format (see below)
    #[arg(long, short = 'F', default_value = "%s\\n")]
    pub format: String,
    /// Exit after this many records
    #[arg(long, short = 'c')]
    pub count: Option<u64>,
    /// Exit when every partition is read up to its end
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
    /// Exit after this many milliseconds without a record
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
}

/// Parses an offset spec.
pub fn parse_offset(s: &str) -> Result<OffsetSpec, String> {
    match s {
        "earliest" | "beginning" => Ok(OffsetSpec::Earliest),
        "latest" | "end" => Ok(OffsetSpec::Latest),
        n => n
            .parse::<i64>()
            .map(OffsetSpec::At)
            .map_err(|_| format!("offset must be earliest, latest, N or -N (got '{s}')")),
    }
}

/// One piece of a parsed format string.
#[derive(Debug, PartialEq)]
enum Token {
    Lit(String),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
    KeyLen,
    ValueLen,
}

fn parse_format(f: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let t = match chars.next() {
                    Some('t') => Token::Topic,
                    Some('p') => Token::Partition,
                    Some('o') => Token::Offset,
                    Some('k') => Token::Key,
                    Some('s') => Token::Value,
                    Some('T') => Token::Timestamp,
                    Some('h') => Token::Headers,
                    Some('K') => Token::KeyLen,
                    Some('S') => Token::ValueLen,
                    Some('%') => {
                        lit.push('%');
                        continue;
                    }
                    other => return Err(format!("unknown format token %{}", other.unwrap_or(' '))),
                };
                if !lit.is_empty() {
                    out.push(Token::Lit(std::mem::take(&mut lit)));
                }
                out.push(t);
            }
            '\\' => match chars.next() {
                Some('n') => lit.push('\n'),
                Some('t') => lit.push('\t'),
                Some('\\') => lit.push('\\'),
                Some(o) => {
                    lit.push('\\');
                    lit.push(o);
                }
                None => lit.push('\\'),
            },
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Token::Lit(lit));
    }
    Ok(out)
}

fn render(tokens: &[Token], r: &ConsumedRecord, out: &mut Vec<u8>) {
    for t in tokens {
        match t {
            Token::Lit(s) => out.extend_from_slice(s.as_bytes()),
            Token::Topic => out.extend_from_slice(r.topic.as_bytes()),
            Token::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
            Token::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
            Token::Key => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
            Token::Value => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
            Token::Timestamp => out.extend_from_slice(r.timestamp_ms.to_string().as_bytes()),
            Token::Headers => {
                for (i, (k, v)) in r.headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'=');
                    out.extend_from_slice(v.as_deref().unwrap_or_default());
                }
            }
            Token::KeyLen => out.extend_from_slice(
                r.key
                    .as_ref()
                    .map_or(-1, |k| k.len() as i64)
                    .to_string()
                    .as_bytes(),
            ),
            Token::ValueLen => out.extend_from_slice(
                r.value
                    .as_ref()
                    .map_or(-1, |v| v.len() as i64)
                    .to_string()
                    .as_bytes(),
            ),
        }
    }
}

/// Set by SIGINT/SIGTERM: the consume loop stops, commits and leaves its group.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub async fn run(args: ConsumeArgs) -> Result<(), ClientError> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let tokens = parse_format(&args.format).map_err(ClientError::Other)?;
    if args.group.is_some() && !args.partition.is_empty() {
        return Err(ClientError::Other(
            "--partition cannot be combined with --group".into(),
        ));
    }
    let client = Client::new(args.conn.client_config());
    let topic: Rc<str> = Rc::from(args.topic.as_str());
    let meta = client.refresh_topic(&topic).await?;
    let start = match (args.offset, args.from_beginning) {
        (Some(o), _) => o,
        (None, true) => OffsetSpec::Earliest,
        (None, false) => OffsetSpec::Latest,
    };
    let consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            max_wait_ms: 500,
            auto_reset: if matches!(start, OffsetSpec::Latest) {
                OffsetSpec::Latest
            } else {
                OffsetSpec::Earliest
            },
            ..ConsumerConfig::default()
        },
    );
    let member = match &args.group {
        Some(g) => {
            let m = GroupMember::new(client.clone(), g, vec![topic.to_string()]);
            assign_from_group(&client, &consumer, &m, g, &topic, start).await?;
            Some(m)
        }
        None => {
            let parts: Vec<i32> = if args.partition.is_empty() {
                meta.partitions.iter().map(|p| p.id).collect()
            } else {
                for p in &args.partition {
                    if !meta.partitions.iter().any(|m| m.id == *p) {
                        return Err(ClientError::Other(format!(
                            "partition {p} does not exist (topic {topic} has {} partitions)",
                            meta.partitions.len()
                        )));
                    }
                }
                args.partition.clone()
            };
            consumer.assign(&topic, &parts, start).await?;
            None
        }
    };
    let stdout = std::io::stdout();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut seen: u64 = 0;
    let mut last_record = Instant::now();
    let mut last_commit = Instant::now();
    let result = loop {
        if STOP.load(Ordering::SeqCst) {
            break Ok(());
        }
        if let Some(m) = &member {
            if m.rejoin_needed() {
                let _ = m.commit(&positions(&consumer)).await;
                consumer.unassign_all();
                let g = args.group.as_deref().expect("group member implies --group");
                assign_from_group(&client, &consumer, m, g, &topic, start).await?;
            }
        }
        let recs = match consumer.poll().await {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        if !recs.is_empty() {
            last_record = Instant::now();
        }
        let mut printed = recs.len();
        for (i, r) in recs.iter().enumerate() {
            render(&tokens, r, &mut buf);
            seen += 1;
            if args.count.is_some_and(|c| seen >= c) {
                printed = i + 1;
                break;
            }
        }
        let done = args.count.is_some_and(|c| seen >= c);
        {
            let mut lock = stdout.lock();
            if lock.write_all(&buf).and_then(|_| lock.flush()).is_err() {
                break Ok(()); // stdout closed (e.g. piped into head)
            }
            buf.clear();
        }
        if done {
            // Records after the count limit were not printed: rewind each partition to its
            // first unprinted record so a group commits only what was printed.
            let mut rewind: HashMap<i32, i64> = HashMap::new();
            for r in &recs[printed..] {
                let e = rewind.entry(r.partition).or_insert(r.offset);
                *e = (*e).min(r.offset);
            }
            let rewind: Vec<(i32, i64)> = rewind.into_iter().collect();
            consumer.assign_at(&topic, &rewind);
            break Ok(());
        }
        if args.exit_at_end
            && consumer
                .positions()
                .iter()
                .all(|(t, p, o)| consumer.high_watermark(t, *p).is_some_and(|hw| *o >= hw))
        {
            break Ok(());
        }
        if args
            .idle_timeout_ms
            .is_some_and(|ms| last_record.elapsed() >= Duration::from_millis(ms))
        {
            break Ok(());
        }
        if let Some(m) = &member {
            if last_commit.elapsed() >= Duration::from_secs(1) {
                m.commit(&positions(&consumer)).await?;
                last_commit = Instant::now();
            }
        }
    };
    if let Some(m) = &member {
        m.commit(&positions(&consumer)).await?;
        let _ = m.leave().await;
    }
    result
}

fn positions(c: &Consumer) -> Vec<(String, i32, i64)> {
    c.positions()
        .into_iter()
        .map(|(t, p, o)| (t.to_string(), p, o))
        .collect()
}

/// Joins the group and positions the consumer at the committed offsets of its assignment
/// (or at `start` where nothing was committed).
async fn assign_from_group(
    client: &Client,
    consumer: &Consumer,
    member: &GroupMember,
    group: &str,
    topic: &Rc<str>,
    start: OffsetSpec,
) -> Result<(), ClientError> {
    let assignment = member.join().await?;
    let committed = admin::fetch_committed(client, group).await?;
    let mine: Vec<i32> = assignment
        .iter()
        .filter(|(t, _)| t.as_str() == &**topic)
        .flat_map(|(_, ps)| ps.iter().copied())
        .collect();
    let known = committed.get(&**topic);
    let mut at = Vec::new();
    let mut fresh = Vec::new();
    for p in mine {
        match known.and_then(|m| m.get(&p)) {
            Some(&o) => at.push((p, o)),
            None => fresh.push(p),
        }
    }
    consumer.assign_at(topic, &at);
    if !fresh.is_empty() {
        consumer.assign(topic, &fresh, start).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn format_string_renders_like_kcat() {
        let tokens = parse_format("%t/%p@%o %k=%s [%h] %K %S\\n").unwrap();
        let r = ConsumedRecord {
            topic: Rc::from("orders"),
            partition: 3,
            offset: 42,
            timestamp_ms: 7,
            key: Some(Bytes::from_static(b"k1")),
            value: Some(Bytes::from_static(b"hello")),
            headers: vec![("a".into(), Some(Bytes::from_static(b"1")))],
        };
        let mut out = Vec::new();
        render(&tokens, &r, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "orders/3@42 k1=hello [a=1] 2 5\n"
        );
    }

    #[test]
    fn unknown_format_token_is_rejected() {
        assert!(parse_format("%q").is_err());
    }

    #[test]
    fn offsets_parse_names_and_relative_values() {
        assert_eq!(parse_offset("earliest"), Ok(OffsetSpec::Earliest));
        assert_eq!(parse_offset("-5"), Ok(OffsetSpec::At(-5)));
        assert!(parse_offset("soon").is_err());
    }
}
