//! `freshet consume --group` and `freshet group ...` against a real broker: the classic group
//! protocol (JoinGroup/SyncGroup with the range assignor, KIP-394 member ids), committed
//! offsets (OffsetCommit/OffsetFetch), lag from ListOffsets, reset and delete (KIP-229).

mod cli_support;
mod common;

use std::time::Duration;

use cli_support::{freshet, freshet_with};

fn lag_rows(describe: &str) -> Vec<(i32, i64, i64)> {
    describe
        .lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            if c.len() < 5 || c[0] != "g-topic" {
                return None;
            }
            Some((c[1].parse().ok()?, c[2].parse().ok()?, c[4].parse().ok()?))
        })
        .collect()
}

#[test]
fn group_consume_commits_then_describe_reset_and_delete() {
    let broker = common::Broker::start_with_args(&[
        "--group-initial-rebalance-delay-ms",
        "0",
        "--group-min-session-timeout-ms",
        "1000",
    ]);
    let b = broker.bootstrap();
    freshet(&["topic", "create", "g-topic", "-p", "2", "-b", &b]).ok();
    let lines: String = (0..10).map(|i| format!("m{i}\n")).collect();
    freshet_with(
        &["produce", "g-topic", "-b", &b],
        &lines,
        Duration::from_secs(60),
    )
    .ok();

    let c = freshet(&[
        "consume",
        "g-topic",
        "--group",
        "g1",
        "--from-beginning",
        "--count",
        "10",
        "-b",
        &b,
    ])
    .ok();
    assert_eq!(c.stdout.lines().count(), 10, "{c:#?}");

    let l = freshet(&["group", "list", "-b", &b]).ok();
    assert!(l.stdout.lines().any(|x| x.starts_with("g1 ")), "{l:#?}");

    // Everything consumed was committed: lag 0 on both partitions, offsets add up to 10.
    let d = freshet(&["group", "describe", "g1", "-b", &b]).ok();
    let rows = lag_rows(&d.stdout);
    assert_eq!(rows.len(), 2, "{d:#?}");
    assert!(rows.iter().all(|r| r.2 == 0), "{d:#?}");
    assert_eq!(rows.iter().map(|r| r.1).sum::<i64>(), 10, "{d:#?}");

    // Reset to the start: lag is everything again, and the group re-reads all 10.
    freshet(&[
        "group",
        "reset-offsets",
        "g1",
        "--topic",
        "g-topic",
        "--to-earliest",
        "-b",
        &b,
    ])
    .ok();
    let d = freshet(&["group", "describe", "g1", "-b", &b]).ok();
    assert_eq!(
        lag_rows(&d.stdout).iter().map(|r| r.2).sum::<i64>(),
        10,
        "{d:#?}"
    );
    let c = freshet(&[
        "consume", "g-topic", "--group", "g1", "--count", "10", "-b", &b,
    ])
    .ok();
    assert_eq!(c.stdout.lines().count(), 10, "{c:#?}");

    freshet(&["group", "delete", "g1", "-b", &b]).ok();
    let l = freshet(&["group", "list", "-b", &b]).ok();
    assert!(!l.stdout.lines().any(|x| x.starts_with("g1 ")), "{l:#?}");
}
