#!/usr/bin/env bash
# Broker benchmark suite (`make bench`): starts a fresh release broker, runs the standard
# OpenMessaging-Benchmark-style workloads with `freshet bench`, measures the client's own
# ceiling against `freshet bench sink`, and rewrites the "Broker" section of docs/benchmarks.md
# (between the BEGIN/END BROKER BENCH markers).
#
# Environment:
#   BENCH_DURATION  seconds per workload (default 30)
#   BENCH_PEER      host:port of another Kafka-compatible broker to run the same workloads
#                   against, side by side (optional)
#   BENCH_OUT       directory for JSON/SVG results (default target/bench)
#   BENCH_NO_DOCS   set to 1 to leave docs/benchmarks.md alone
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
DURATION=${BENCH_DURATION:-30}
OUT=${BENCH_OUT:-$ROOT/target/bench}
PEER=${BENCH_PEER:-}
BIN=$ROOT/target/release/freshet
WL=$ROOT/benches/workloads
mkdir -p "$OUT"

cargo build --release -p freshet >&2

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

DATA=$(mktemp -d /tmp/freshet-bench.XXXXXX)
PORT=$(free_port)
SINK_PORT=$(free_port)
BROKER_PID=""
SINK_PID=""
cleanup() {
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
  [ -n "$BROKER_PID" ] && wait "$BROKER_PID" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

# num_partitions only matters if the broker lacks CreateTopics (the bench creates its topics).
printf 'num_partitions = 16\n' >"$DATA/broker.toml"
"$BIN" start --data-dir "$DATA/data" --kafka-addr "127.0.0.1:$PORT" --config "$DATA/broker.toml" \
  >"$OUT/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 1 100); do
  grep -q "freshet ready" "$OUT/broker.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "freshet ready" "$OUT/broker.log" || { echo "broker did not start:" >&2; tail "$OUT/broker.log" >&2; exit 1; }

COMMON=(-q --acks all --linger-ms 1 --batch-bytes 1048576)

# run_suite TARGET ADDR: the three standard figures against one broker.
run_suite() {
  local target=$1 addr=$2 rate
  echo "== $target ($addr): 1 KiB, 16 partitions, max rate" >&2
  "$BIN" bench workload "$WL/1-topic-16-partitions-1kb.yaml" -b "$addr" --duration "$DURATION" \
    --topic-prefix "bench-$target" "${COMMON[@]}" \
    --json "$OUT/$target-1kb-max.json" --plot "$OUT/$target-1kb-max.svg" >&2
  rate=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["throughput_msgs_per_s"]*0.5))' \
    "$OUT/$target-1kb-max.json")
  echo "== $target ($addr): 1 KiB, 16 partitions, 50% rate = $rate msg/s" >&2
  "$BIN" bench workload "$WL/1-topic-16-partitions-1kb-50pct.yaml" -b "$addr" --duration "$DURATION" \
    --rate "$rate" --topic-prefix "bench-$target" "${COMMON[@]}" \
    --json "$OUT/$target-1kb-50pct.json" --plot "$OUT/$target-1kb-50pct.svg" >&2
  echo "== $target ($addr): 100 B, 16 partitions, max rate" >&2
  "$BIN" bench workload "$WL/1-topic-16-partitions-100b.yaml" -b "$addr" --duration "$DURATION" \
    --topic-prefix "bench-$target" "${COMMON[@]}" \
    --json "$OUT/$target-100b-max.json" --plot "$OUT/$target-100b-max.svg" >&2
  # Publish-only ceiling of the broker: two producers on two client threads (one client
  # thread alone is close to the broker's rate on this 2-core machine; see the sink figures).
  for size in 1024 100; do
    echo "== $target ($addr): $size B, publish only, 2 producers" >&2
    "$BIN" bench produce -b "$addr" --topic "bench-$target-produce-$size" --partitions 16 \
      --message-size "$size" --producers 2 --producer-threads 2 --duration "$DURATION" \
      "${COMMON[@]}" --json "$OUT/$target-produce2-$size.json" \
      --plot "$OUT/$target-produce2-$size.svg" >&2
  done
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
run_suite freshet "127.0.0.1:$PORT"
if [ -n "$PEER" ]; then
  run_suite peer "$PEER"
fi

# The client's own ceiling: the same producer against a sink that discards.
"$BIN" bench sink --addr "127.0.0.1:$SINK_PORT" >"$OUT/sink.log" 2>&1 &
SINK_PID=$!
sleep 0.5
for size in 1024 100; do
  echo "== client ceiling against the sink: $size B" >&2
  "$BIN" bench produce -b "127.0.0.1:$SINK_PORT" --message-size "$size" --partitions 16 \
    --duration "$(( DURATION < 10 ? DURATION : 10 ))" "${COMMON[@]}" --json "$OUT/sink-$size.json" >&2
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$OUT" "$PEER" "$DURATION" "$LOAD_START" "$LOAD_END" <<'PY' >"$OUT/broker-section.md"
import json, os, platform, subprocess, sys
out, peer, duration, load_start, load_end = sys.argv[1:6]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
def lat(j, k, q):
    v = (j or {}).get(k) or {}
    return "%.2f" % v[q] if q in v else "-"
def cpu():
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                return l.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
rows = [("1 KiB, max rate", "1kb-max"), ("1 KiB, 50% of max rate", "1kb-50pct"), ("100 B, max rate", "100b-max"),
        ("1 KiB, publish only, 2 producers", "produce2-1024"), ("100 B, publish only, 2 producers", "produce2-100")]
targets = [("Freshet", "freshet")] + ([("peer " + peer, "peer")] if peer else [])
print("Machine: %d cores (%s), %.0f GiB RAM, shared VM; commit %s; release build; broker and client on the same machine over loopback. Load average (1/5/15 min) of the machine from other jobs: %s at the start, %s at the end of the suite; figures scale with it." % (os.cpu_count(), cpu(), mem_gib, rev, load_start, load_end))
print()
print("Workloads (OMB format, `benches/workloads/`): 1 topic x 16 partitions, 1 producer, 1 consumer (end-to-end), acks=all, linger 1 ms, 1 MiB batches, %s s each; the publish-only rows use `freshet bench produce --producers 2 --producer-threads 2`. MB = 2^20 bytes. Latency in ms; publish = send() to acknowledgement, end-to-end = send() to consumer receipt (timestamp in the record). At max rate the producer's 32 MiB buffer is full by design, so publish latency there is queueing in the client; read latency from the 50%% row." % duration)
print()
print("| broker | workload | msg/s | MB/s | publish p50 | p99 | p99.9 | max | e2e p50 | p99 | p99.9 | max |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for tname, tkey in targets:
    for label, key in rows:
        j = load("%s-%s.json" % (tkey, key))
        if not j:
            continue
        print("| %s | %s | %.0f | %.1f | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            tname, label, j["throughput_msgs_per_s"], j["throughput_mb_per_s"],
            lat(j, "publish_latency_ms", "p50"), lat(j, "publish_latency_ms", "p99"),
            lat(j, "publish_latency_ms", "p999"), lat(j, "publish_latency_ms", "max"),
            lat(j, "e2e_latency_ms", "p50"), lat(j, "e2e_latency_ms", "p99"),
            lat(j, "e2e_latency_ms", "p999"), lat(j, "e2e_latency_ms", "max")))
print()
print("Client ceiling (`freshet bench produce` against `freshet bench sink`, which acknowledges and discards):")
print()
print("| message size | msg/s | MB/s | publish p50 | p99 |")
print("|---|---:|---:|---:|---:|")
for size in (1024, 100):
    j = load("sink-%d.json" % size)
    if j:
        print("| %d B | %.0f | %.1f | %s | %s |" % (size, j["throughput_msgs_per_s"], j["throughput_mb_per_s"],
              lat(j, "publish_latency_ms", "p50"), lat(j, "publish_latency_ms", "p99")))
print()
print("Reproduce: `make bench` (BENCH_DURATION=%s, optional BENCH_PEER=host:port); raw JSON and SVG plots in `target/bench/`." % duration)
PY

cat "$OUT/broker-section.md"

if [ "${BENCH_NO_DOCS:-0}" != "1" ]; then
  python3 "$ROOT/tools/scripts/splice-doc-section.py" "$ROOT/docs/benchmarks.md" "$OUT/broker-section.md" \
    "<!-- BEGIN BROKER BENCH (tools/scripts/bench.sh) -->" "<!-- END BROKER BENCH -->" "Broker"
  echo "updated docs/benchmarks.md" >&2
fi
