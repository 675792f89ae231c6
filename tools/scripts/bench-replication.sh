#!/usr/bin/env bash
# Replication benchmark (`make bench-replication`): the same `freshet bench produce` client and
# settings against (1) one node, topic replication factor 1 and (2) three local nodes (one
# cluster, --seeds), topic replication factor 3, in one run. acks=all, 1 KiB records, first at
# the client's maximum rate (throughput), then at a fixed rate (latency without client queueing).
# Rewrites the "Replication" section of docs/benchmarks.md between the
# <!-- BEGIN REPLICATION BENCH --> / <!-- END REPLICATION BENCH --> markers.
#
# Environment:
#   BENCH_DURATION    seconds per measurement (default 20)
#   BENCH_RATE        msg/s of the fixed-rate measurement (default 5000)
#   BENCH_PARTITIONS  partitions of the benchmark topic (default 6)
#   BENCH_CORES       --cores of every node (default 1: three nodes share this machine's cores)
#   BENCH_OUT         directory for JSON/SVG results and node logs (default target/bench-replication)
#   BENCH_NO_DOCS     set to 1 to leave docs/benchmarks.md alone
#   BENCH_NO_BUILD    set to 1 to use the existing release binary as it is
#   BENCH_DOC         the file to update (default docs/benchmarks.md of this checkout)
#   CARGO_TARGET_DIR  honoured (the binary is $CARGO_TARGET_DIR/release/freshet)
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
DURATION=${BENCH_DURATION:-20}
RATE=${BENCH_RATE:-5000}
PARTITIONS=${BENCH_PARTITIONS:-6}
CORES=${BENCH_CORES:-1}
OUT=${BENCH_OUT:-$ROOT/target/bench-replication}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/freshet
mkdir -p "$OUT"
rm -f "$OUT"/*.json

[ "${BENCH_NO_BUILD:-0}" = "1" ] || cargo build --release -p freshet >&2

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

DATA=$(mktemp -d /tmp/freshet-bench-repl.XXXXXX)
PIDS=()
stop_nodes() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_nodes
  rm -rf "$DATA"
}
trap cleanup EXIT

# start_nodes NAME COUNT: starts COUNT nodes (node ids 0..COUNT-1; with COUNT > 1 one cluster
# whose founders are all of them), waits for every `freshet ready`, sets BOOTSTRAP.
start_nodes() {
  local name=$1 count=$2 i kafka=() rpc=() seeds="" args
  for i in $(seq 0 $((count - 1))); do
    kafka+=("$(free_port)")
    rpc+=("$(free_port)")
  done
  for i in $(seq 0 $((count - 1))); do
    seeds+="${seeds:+,}127.0.0.1:${rpc[$i]}"
  done
  BOOTSTRAP=""
  for i in $(seq 0 $((count - 1))); do
    args=(start --node-id "$i" --data-dir "$DATA/$name/n$i" --kafka-addr "127.0.0.1:${kafka[$i]}"
          --rpc-addr "127.0.0.1:${rpc[$i]}" --cores "$CORES")
    [ "$count" -gt 1 ] && args+=(--seeds "$seeds")
    "$BIN" "${args[@]}" >"$OUT/$name-n$i.log" 2>&1 &
    PIDS+=($!)
    BOOTSTRAP+="${BOOTSTRAP:+,}127.0.0.1:${kafka[$i]}"
  done
  for i in $(seq 0 $((count - 1))); do
    for _ in $(seq 1 300); do
      grep -q "freshet ready" "$OUT/$name-n$i.log" 2>/dev/null && break
      sleep 0.1
    done
    grep -q "freshet ready" "$OUT/$name-n$i.log" || {
      echo "$name node $i did not start:" >&2; tail "$OUT/$name-n$i.log" >&2; exit 1; }
  done
}

# wait_brokers ADDR COUNT: waits until ADDR's Metadata lists COUNT brokers (nodes print `freshet
# ready` before the controller has registered every one of them).
wait_brokers() {
  python3 - "$1" "$2" <<'PY'
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
want, deadline, n = int(sys.argv[2]), time.monotonic() + 60, -1
while time.monotonic() < deadline:
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        body = struct.pack(">hhih", 3, 1, 1, 5) + b"wait-b" [:5] + struct.pack(">i", 0)  # Metadata v1, no topics
        s.sendall(struct.pack(">i", len(body)) + body)
        hdr = s.recv(4, socket.MSG_WAITALL)
        resp = s.recv(struct.unpack(">i", hdr)[0], socket.MSG_WAITALL)
        s.close()
        n = struct.unpack(">i", resp[4:8])[0]
        if n >= want:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit("only %d of %d brokers registered after 60 s" % (n, want))
PY
}

COMMON=(-q --acks all --linger-ms 1 --batch-bytes 1048576 --message-size 1024 --partitions "$PARTITIONS"
        --duration "$DURATION")

# measure NAME RF: max rate, then fixed rate, against the nodes started last.
measure() {
  local name=$1 rf=$2
  echo "== $name: RF$rf, 1 KiB, acks=all, max rate, ${DURATION}s ($BOOTSTRAP)" >&2
  "$BIN" bench produce -b "$BOOTSTRAP" --topic "bench-$name-max" --replication-factor "$rf" "${COMMON[@]}" \
    --json "$OUT/$name-max.json" --plot "$OUT/$name-max.svg" >&2
  echo "== $name: RF$rf, 1 KiB, acks=all, $RATE msg/s, ${DURATION}s" >&2
  "$BIN" bench produce -b "$BOOTSTRAP" --topic "bench-$name-rate" --replication-factor "$rf" "${COMMON[@]}" \
    --rate "$RATE" --json "$OUT/$name-rate.json" --plot "$OUT/$name-rate.svg" >&2
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
start_nodes rf1 1
measure rf1 1
stop_nodes
rm -rf "${DATA:?}/rf1"  # the RF1 run's data (GiBs) is not needed for the RF3 run
start_nodes rf3 3
wait_brokers "${BOOTSTRAP%%,*}" 3
measure rf3 3
stop_nodes
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$OUT" "$DURATION" "$RATE" "$PARTITIONS" "$CORES" "$LOAD_START" "$LOAD_END" <<'PY' >"$OUT/section.md"
import json, os, platform, subprocess, sys
out, duration, rate, partitions, cores, load_start, load_end = sys.argv[1:8]
def load(name):
    return json.load(open(os.path.join(out, name + ".json")))
def lat(j, q):
    v = j.get("publish_latency_ms") or {}
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
# Uncommitted changes that can affect the binary (scripts and docs cannot).
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!tools/scripts",
                        ":!docs"], capture_output=True, text=True).stdout.strip()
r = {k: load(k) for k in ("rf1-max", "rf1-rate", "rf3-max", "rf3-rate")}
print("Machine: %d cores (%s), %.0f GiB RAM, shared VM; commit %s%s; release build; every node and the client on "
      "this one machine over loopback (three RF3 nodes share its cores). Load average (1/5/15 min): %s at the "
      "start, %s at the end." % (os.cpu_count(), cpu(), mem_gib, rev, " + uncommitted changes" if dirty else "",
                                 load_start, load_end))
print()
print("Client: `freshet bench produce --acks all --message-size 1024 --linger-ms 1 --batch-bytes 1048576 "
      "--partitions %s --duration %s` (one producer), topic created by the client with `--replication-factor` "
      "1 or 3; nodes `freshet start --cores %s`, RF3 = three nodes founded together (`--seeds`). Latency = "
      "send() to acknowledgement, ms; at max rate it includes queueing in the client's 32 MiB buffer, so read "
      "latency from the fixed-rate rows. MB = 2^20 bytes." % (partitions, duration, cores))
print()
print("| setup | rate | msg/s | MB/s | p50 | p99 | p99.9 | max | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for setup, key in (("1 node, RF1", "rf1"), ("3 nodes, RF3", "rf3")):
    for label, kind in (("max", "max"), ("%s msg/s" % rate, "rate")):
        j = r["%s-%s" % (key, kind)]
        print("| %s | %s | %.0f | %.1f | %s | %s | %s | %s | %s |" % (setup, label, j["throughput_msgs_per_s"],
              j["throughput_mb_per_s"], lat(j, "p50"), lat(j, "p99"), lat(j, "p999"), lat(j, "max"),
              j.get("errors", "-")))
print()
t1, t3 = r["rf1-max"]["throughput_msgs_per_s"], r["rf3-max"]["throughput_msgs_per_s"]
def ratio(a, b):
    return "%.2f" % (a / b) if b else "-"
p50 = lambda k: (r[k].get("publish_latency_ms") or {}).get("p50", 0)
p99 = lambda k: (r[k].get("publish_latency_ms") or {}).get("p99", 0)
print("RF3 / RF1: max-rate throughput %s; at %s msg/s, p50 latency %s, p99 latency %s." % (
    ratio(t3, t1), rate, ratio(p50("rf3-rate"), p50("rf1-rate")), ratio(p99("rf3-rate"), p99("rf1-rate"))))
print()
print("Reproduce: `make bench-replication` (BENCH_DURATION=%s BENCH_RATE=%s); JSON, SVG plots and node logs in "
      "`target/bench-replication/`." % (duration, rate))
PY

cat "$OUT/section.md"

if [ "${BENCH_NO_DOCS:-0}" != "1" ]; then
  python3 "$ROOT/tools/scripts/splice-doc-section.py" "${BENCH_DOC:-$ROOT/docs/benchmarks.md}" "$OUT/section.md" \
    "<!-- BEGIN REPLICATION BENCH -->" "<!-- END REPLICATION BENCH -->" "Replication"
  echo "updated docs/benchmarks.md" >&2
fi
