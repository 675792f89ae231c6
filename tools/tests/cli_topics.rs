//! The `freshet` CLI against a real broker: topic admin, produce and consume (kcat-like), and
//! the error contract (one clear line, non-zero exit, no panic).
//!
//! Scenarios cite the Kafka behaviour they rely on: CreateTopics/DeleteTopics (KIP-4),
//! DescribeConfigs/AlterConfigs (KIP-133), record headers (KIP-82), ListOffsets earliest/latest.

mod cli_support;
mod common;

use std::time::Duration;

use cli_support::{assert_one_line_error, freshet, freshet_with};

#[test]
fn topic_lifecycle_create_list_describe_alter_delete() {
    let broker = common::Broker::start();
    let b = broker.bootstrap();
    let o = freshet(&["topic", "create", "orders", "--partitions", "4", "-b", &b]).ok();
    assert!(o.stdout.contains("created topic orders"), "{o:#?}");
    // Creating it again is TOPIC_ALREADY_EXISTS, unless --if-not-exists.
    let again = freshet(&["topic", "create", "orders", "-p", "4", "-b", &b]);
    assert_one_line_error(&again, "TopicAlreadyExists");
    freshet(&[
        "topic",
        "create",
        "orders",
        "-p",
        "4",
        "--if-not-exists",
        "-b",
        &b,
    ])
    .ok();

    let list = freshet(&["topic", "list", "-b", &b]).ok();
    assert!(list.stdout.lines().any(|l| l == "orders"), "{list:#?}");

    let d = freshet(&["topic", "describe", "orders", "-b", &b]).ok();
    assert!(d.stdout.contains("PartitionCount: 4"), "{d:#?}");
    let rows: Vec<&str> = d
        .stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|c| c.parse::<i32>().is_ok())
        })
        .collect();
    assert_eq!(rows.len(), 4, "one row per partition: {d:#?}");

    freshet(&[
        "topic",
        "alter-config",
        "orders",
        "--set",
        "retention.ms=3600000",
        "-b",
        &b,
    ])
    .ok();
    let d = freshet(&["topic", "describe", "orders", "-b", &b]).ok();
    assert!(d.stdout.contains("retention.ms=3600000"), "{d:#?}");

    freshet(&["topic", "delete", "orders", "-b", &b]).ok();
    let list = freshet(&["topic", "list", "-b", &b]).ok();
    assert!(!list.stdout.lines().any(|l| l == "orders"), "{list:#?}");
}

#[test]
fn produce_lines_with_keys_and_headers_then_consume_them_back() {
    let broker = common::Broker::start();
    let b = broker.bootstrap();
    freshet(&["topic", "create", "events", "-p", "3", "-b", &b]).ok();
    let input = "k1:hello\nk2:world\nk3:again\nnokey\n";
    let p = freshet_with(
        &["produce", "events", "-K", ":", "-H", "src=cli", "-b", &b],
        input,
        Duration::from_secs(60),
    )
    .ok();
    assert!(p.stderr.contains("produced 4 records"), "{p:#?}");

    let c = freshet(&[
        "consume",
        "events",
        "--from-beginning",
        "--count",
        "4",
        "-F",
        "%k=%s %h\\n",
        "-b",
        &b,
    ])
    .ok();
    let mut got: Vec<&str> = c.stdout.lines().collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            "=nokey src=cli",
            "k1=hello src=cli",
            "k2=world src=cli",
            "k3=again src=cli"
        ],
        "{c:#?}"
    );

    // Same key -> same partition (murmur2, as the Java client): k1 twice lands together.
    freshet_with(
        &["produce", "events", "-K", ":", "-b", &b],
        "k1:again\n",
        Duration::from_secs(60),
    )
    .ok();
    let c = freshet(&[
        "consume",
        "events",
        "--from-beginning",
        "--exit-at-end",
        "-F",
        "%k %p\\n",
        "-b",
        &b,
    ])
    .ok();
    let parts: Vec<&str> = c.stdout.lines().filter(|l| l.starts_with("k1 ")).collect();
    assert_eq!(parts.len(), 2, "{c:#?}");
    assert_eq!(parts[0], parts[1], "{c:#?}");

    // Describe's end offsets add up to what was produced.
    let d = freshet(&["topic", "describe", "events", "-b", &b]).ok();
    let total: i64 = d
        .stdout
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first()?.parse::<i32>().ok()?;
            cols.last()?.parse::<i64>().ok()
        })
        .sum();
    assert_eq!(total, 5, "{d:#?}");

    // A given partition and offset, and compression on the way in.
    freshet_with(
        &[
            "produce",
            "events",
            "-p",
            "2",
            "--compression",
            "zstd",
            "-b",
            &b,
        ],
        "z1\nz2\n",
        Duration::from_secs(60),
    )
    .ok();
    let c = freshet(&[
        "consume", "events", "-p", "2", "-o", "-2", "--count", "2", "-b", &b,
    ])
    .ok();
    assert_eq!(c.stdout, "z1\nz2\n", "{c:#?}");
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    let broker = common::Broker::start();
    let b = broker.bootstrap();
    let o = freshet(&["consume", "no-such-topic", "--count", "1", "-b", &b]);
    assert_one_line_error(&o, "unknown topic");
    let o = freshet_with(
        &["produce", "no-such-topic", "-b", &b],
        "x\n",
        Duration::from_secs(60),
    );
    assert_one_line_error(&o, "unknown topic");
    let dead = format!("127.0.0.1:{}", common::free_port());
    let o = freshet(&["topic", "list", "-b", &dead]);
    assert_one_line_error(&o, "cannot connect");
    let o = freshet(&["topic", "create", "x", "--partitions", "lots", "-b", &b]);
    assert_one_line_error(&o, "invalid value");
    let o = freshet(&["produce", "x", "--acks", "2", "-b", &b]);
    assert_one_line_error(&o, "acks");
}

#[test]
fn every_command_help_shows_an_example() {
    for cmd in [
        vec!["topic", "create"],
        vec!["topic", "list"],
        vec!["topic", "describe"],
        vec!["topic", "delete"],
        vec!["topic", "alter-config"],
        vec!["group", "list"],
        vec!["group", "describe"],
        vec!["group", "reset-offsets"],
        vec!["group", "delete"],
        vec!["cluster", "info"],
        vec!["produce"],
        vec!["consume"],
        vec!["bench", "produce"],
        vec!["bench", "consume"],
        vec!["bench", "e2e"],
        vec!["bench", "workload"],
        vec!["bench", "sink"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let o = freshet(&args).ok();
        assert!(
            o.stdout.contains("Example"),
            "{cmd:?} --help lacks an example: {o:#?}"
        );
    }
}

#[test]
fn cluster_info_lists_the_broker_and_negotiated_versions() {
    let broker = common::Broker::start();
    let b = broker.bootstrap();
    let o = freshet(&["cluster", "info", "--api-versions", "-b", &b]).ok();
    assert!(o.stdout.contains(&b), "{o:#?}");
    assert!(o.stdout.contains("Produce"), "{o:#?}");
    assert!(o.stdout.contains("(using v"), "{o:#?}");
}
