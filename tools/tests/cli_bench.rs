//! `freshet bench` runs for a few seconds and reports sane, non-zero figures in its JSON: against
//! the built-in sink (the client's own ceiling) and against a real broker (publish and
//! end-to-end latency, OMB workload files).

mod cli_support;
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use cli_support::{freshet, freshet_with, json_number, json_object};

fn check_latency(json: &str, key: &str) {
    let o = json_object(json, key).unwrap_or_else(|| panic!("{key} missing: {json}"));
    let p50 = json_number(o, "p50").expect("p50");
    let p99 = json_number(o, "p99").expect("p99");
    let p999 = json_number(o, "p999").expect("p999");
    let max = json_number(o, "max").expect("max");
    assert!(p50 > 0.0, "{key}: {o}");
    assert!(p50 <= p99, "{key}: {o}");
    assert!(p99 <= p999, "{key}: {o}");
    assert!(p999 <= max, "{key}: {o}");
    assert!(max < 60_000.0, "{key}: {o}");
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn bench_produce_against_the_sink_measures_the_client_ceiling() {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut sink = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["bench", "sink", "--addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sink");
    let dir = common::fresh_dir("freshet-bench-sink");
    let json = dir.join("sink.json");
    let svg = dir.join("sink.svg");
    std::thread::sleep(Duration::from_millis(300));
    let o = freshet(&[
        "bench",
        "produce",
        "-b",
        &addr,
        "--duration",
        "2",
        "--message-size",
        "512",
        "-q",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let _ = sink.kill();
    let _ = sink.wait();
    let o = o.ok();
    assert!(o.stdout.contains("publish"), "{o:#?}");
    let j = read(&json);
    assert!(
        json_number(&j, "throughput_msgs_per_s").unwrap() > 1000.0,
        "{j}"
    );
    assert!(json_number(&j, "throughput_mb_per_s").unwrap() > 0.5, "{j}");
    assert_eq!(json_number(&j, "errors"), Some(0.0), "{j}");
    check_latency(&j, "publish_latency_ms");
    let s = read(&svg);
    assert!(s.starts_with("<svg") && s.contains("<path"), "{s}");
}

#[test]
fn bench_produce_and_e2e_against_a_broker_report_sane_figures() {
    let broker = common::Broker::start();
    let b = broker.bootstrap();
    let dir = common::fresh_dir("freshet-bench");
    let pj = dir.join("produce.json");
    freshet(&[
        "bench",
        "produce",
        "-b",
        &b,
        "--topic",
        "bp",
        "--partitions",
        "4",
        "--duration",
        "2",
        "-q",
        "--json",
        pj.to_str().unwrap(),
    ])
    .ok();
    let j = read(&pj);
    assert!(
        json_number(&j, "throughput_msgs_per_s").unwrap() > 100.0,
        "{j}"
    );
    assert_eq!(json_number(&j, "errors"), Some(0.0), "{j}");
    check_latency(&j, "publish_latency_ms");

    let ej = dir.join("e2e.json");
    freshet(&[
        "bench",
        "e2e",
        "-b",
        &b,
        "--topic",
        "be",
        "--partitions",
        "4",
        "--duration",
        "2",
        "--rate",
        "2000",
        "-q",
        "--json",
        ej.to_str().unwrap(),
    ])
    .ok();
    let j = read(&ej);
    let rate = json_number(&j, "throughput_msgs_per_s").unwrap();
    assert!(rate > 1000.0 && rate < 2600.0, "paced at 2000 msg/s: {j}");
    assert_eq!(
        json_number(&j, "messages_consumed"),
        json_number(&j, "messages_acked"),
        "every acknowledged message is consumed: {j}"
    );
    check_latency(&j, "publish_latency_ms");
    check_latency(&j, "e2e_latency_ms");
}

#[test]
fn bench_workload_runs_an_omb_file() {
    let broker = common::Broker::start();
    let b = broker.bootstrap();
    let dir = common::fresh_dir("freshet-bench-wl");
    let wl = dir.join("small.yaml");
    std::fs::write(
        &wl,
        "name: small\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 100\n\
         subscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducersPerTopic: 1\n\
         producerRate: 1000\nconsumerBacklogSizeGB: 0\ntestDurationMinutes: 0.03\n",
    )
    .unwrap();
    let j = dir.join("wl.json");
    let o = freshet_with(
        &[
            "bench",
            "workload",
            wl.to_str().unwrap(),
            "-b",
            &b,
            "-q",
            "--json",
            j.to_str().unwrap(),
        ],
        "",
        Duration::from_secs(90),
    )
    .ok();
    assert!(o.stdout.contains("end-to-end"), "{o:#?}");
    let j = read(&j);
    assert!(
        json_number(&j, "throughput_msgs_per_s").unwrap() > 500.0,
        "{j}"
    );
    check_latency(&j, "e2e_latency_ms");
}

#[test]
fn producer_refreshes_metadata_and_retries_on_not_leader_or_follower() {
    // The sink answers every 3rd partition produce with NOT_LEADER_OR_FOLLOWER (error 6,
    // retriable): the producer must refresh metadata, resend, and lose nothing.
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut sink = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(["bench", "sink", "--addr", &addr, "--not-leader-every", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sink");
    std::thread::sleep(Duration::from_millis(300));
    let dir = common::fresh_dir("freshet-bench-retry");
    let json = dir.join("retry.json");
    let o = freshet(&[
        "bench",
        "produce",
        "-b",
        &addr,
        "--messages",
        "20000",
        "--message-size",
        "200",
        "--partitions",
        "4",
        "-q",
        "--json",
        json.to_str().unwrap(),
    ]);
    let _ = sink.kill();
    let _ = sink.wait();
    o.ok();
    let j = read(&json);
    assert_eq!(json_number(&j, "errors"), Some(0.0), "{j}");
    assert_eq!(json_number(&j, "messages_acked"), Some(20000.0), "{j}");
}
