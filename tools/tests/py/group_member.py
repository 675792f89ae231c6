"""One consumer-group member, run as a subprocess by the test_groups_*.py tests.

A real client (confluent-kafka / librdkafka, or kafka-python) subscribes to a topic in a group,
"processes" each record by appending a JSON line to --out, and commits after processing (so a
record is committed only once it is written: at-least-once, nothing skipped). Assignment and
revocation callbacks are written too. The member stops when --stop-file appears: it closes the
consumer (a dynamic member sends LeaveGroup) and writes {"ev": "closed"}. SIGKILL stops it
without leaving, like a crash.

Output lines: {"ev": "assign"|"revoke", "parts": [...], "incremental": bool, "t": ms}, {"ev": "rec", "p": .., "o": ..},
{"ev": "commit"}, {"ev": "closed"}, {"ev": "error", "msg": ...}.
"""

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--session-ms", type=int, default=3000)
    ap.add_argument("--heartbeat-ms", type=int, default=300)
    ap.add_argument("--max-poll-ms", type=int, default=10000)
    ap.add_argument("--instance-id", default=None)
    ap.add_argument("--client-id", default="group-member")
    ap.add_argument("--strategy", default=None, help="partition.assignment.strategy (librdkafka)")
    args = ap.parse_args()
    out = open(args.out, "a", buffering=1)

    def emit(**kv):
        kv["t"] = int(time.time() * 1000)
        out.write(json.dumps(kv) + "\n")
        out.flush()

    if args.client == "confluent":
        run_confluent(args, emit)
    else:
        run_kafka_python(args, emit)
    emit(ev="closed")


def run_confluent(args, emit):
    import confluent_kafka

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": args.client_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": args.session_ms,
        "heartbeat.interval.ms": args.heartbeat_ms,
        "max.poll.interval.ms": args.max_poll_ms,
        "enable.partition.eof": False,
    }
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    if args.strategy:
        conf["partition.assignment.strategy"] = args.strategy
    c = confluent_kafka.Consumer(conf)

    # With cooperative-sticky, callbacks carry only the partitions added or removed.
    incremental = args.strategy == "cooperative-sticky"

    def on_assign(consumer, parts):
        emit(ev="assign", parts=sorted(p.partition for p in parts), incremental=incremental,
             member=consumer.memberid())

    def on_revoke(consumer, parts):
        emit(ev="revoke", parts=sorted(p.partition for p in parts))

    c.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)
    while not os.path.exists(args.stop_file):
        msgs = c.consume(num_messages=100, timeout=0.2)
        if not msgs:
            continue
        done = False
        for m in msgs:
            if m.error():
                emit(ev="error", msg=str(m.error()))
                continue
            emit(ev="rec", p=m.partition(), o=m.offset())
            done = True
        if done:
            try:
                c.commit(asynchronous=False)
                emit(ev="commit")
            except confluent_kafka.KafkaException as e:
                # A commit refused because a rebalance started is retried by redelivery.
                emit(ev="error", msg=f"commit: {e}")
    c.close()


def run_kafka_python(args, emit):
    import kafka
    from kafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            emit(ev="revoke", parts=sorted(p.partition for p in revoked))

        def on_partitions_assigned(self, assigned):
            emit(ev="assign", parts=sorted(p.partition for p in assigned))

    c = kafka.KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id=args.client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=args.session_ms,
        heartbeat_interval_ms=args.heartbeat_ms,
        max_poll_interval_ms=args.max_poll_ms,
    )
    c.subscribe([args.topic], listener=Listener())
    while not os.path.exists(args.stop_file):
        batches = c.poll(timeout_ms=200)
        done = False
        for tp, recs in batches.items():
            for r in recs:
                emit(ev="rec", p=tp.partition, o=r.offset)
                done = True
        if done:
            try:
                c.commit()
                emit(ev="commit")
            except Exception as e:  # CommitFailedError during a rebalance: records come again
                emit(ev="error", msg=f"commit: {e!r}")
    c.close()


if __name__ == "__main__":
    sys.exit(main())
