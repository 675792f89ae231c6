"""Protocol behaviour every Kafka client relies on, checked on the wire or through real clients:
in-order pipelined responses, acks=0 (no response), per-partition error codes, fetch paging
with KIP-74's oversized-first-batch rule, offset-out-of-range recovery, long-poll wakeups, and
the same round trip on a single-core broker."""

import struct
import threading
import time

import confluent_kafka
import pytest

import kwire
from kclients import (cf_consume, cf_consumer, cf_produce, expected_got, kp_consume, rdkafka_conf, Rec,
                      sample_records)

ERR_UNKNOWN_TOPIC_OR_PARTITION = 3


def test_pipelined_requests_are_answered_in_order(broker, topic_name):
    """Kafka's ordering guarantee per connection: responses come back in request order, whatever
    API each request is (clients match them by position as well as correlation id)."""
    cf_produce(broker.bootstrap, topic_name, sample_records(3, partition=0), "none")
    s = kwire.connect(broker.addr)
    try:
        frames, expect = [], []
        for i in range(60):
            kind = i % 3
            if kind == 0:
                frames.append(kwire.api_versions_v0(i))
            elif kind == 1:
                frames.append(kwire.metadata_v1(i, [topic_name]))
            else:
                frames.append(kwire.produce_v7(i, topic_name, 0, kwire.build_batch([(b"k", b"p%d" % i, [])])))
            expect.append(i)
        s.sendall(b"".join(frames))
        got = [kwire.recv_frame(s)[0] for _ in expect]
        assert got == expect
    finally:
        s.close()
    # The 20 pipelined produces landed in order after the 3 first records.
    got = cf_consume(broker.bootstrap, topic_name, [0], 23)
    assert [g.value for g in got[3:23]] == [b"p%d" % i for i in range(2, 60, 3)]


def test_acks_zero_produce_gets_no_response(broker, topic_name):
    """acks=0: the broker sends nothing back; the next request's response is the next frame."""
    cf_produce(broker.bootstrap, topic_name, sample_records(1, partition=0), "none")
    s = kwire.connect(broker.addr)
    try:
        batch = kwire.build_batch([(b"k", b"fire-and-forget", [])])
        s.sendall(kwire.produce_v7(1, topic_name, 0, batch, acks=0) + kwire.api_versions_v0(2))
        corr, _ = kwire.recv_frame(s)
        assert corr == 2, "a response was sent for an acks=0 produce"
    finally:
        s.close()
    got = cf_consume(broker.bootstrap, topic_name, [0], 2)
    assert got[1].value == b"fire-and-forget"


def test_produce_to_missing_partition_gets_unknown_topic_or_partition(broker, topic_name):
    cf_produce(broker.bootstrap, topic_name, sample_records(1, partition=0), "none")  # 1 partition
    s = kwire.connect(broker.addr)
    try:
        s.sendall(kwire.produce_v7(5, topic_name, 7, kwire.build_batch([(b"k", b"v", [])])))
        corr, body = kwire.recv_frame(s)
        assert corr == 5
        assert kwire.parse_produce_v7(body) == [(topic_name, 7, ERR_UNKNOWN_TOPIC_OR_PARTITION, -1)]
    finally:
        s.close()


def test_fetch_pages_through_many_batches_and_returns_an_oversized_first_batch(broker, topic_name):
    """20,000 records read with small fetch limits: many fetches, every record once, in order.
    A 300 KiB record is bigger than max.partition.fetch.bytes and fetch.max.bytes, yet is returned
    (KIP-74: the first batch is always returned so consumers make progress)."""
    bulk = [Rec(b"k%d" % i, b"%06d" % i + b"x" * 180, [], 1_700_000_000_000 + i, 0) for i in range(20_000)]
    big = Rec(b"big", bytes(range(256)) * 1200, [("h", b"v")], 1_700_000_100_000, 0)
    tail = sample_records(5, partition=0, seed=3)
    recs = bulk + [big] + tail
    offsets = cf_produce(broker.bootstrap, topic_name, bulk, "lz4", extra={"batch.size": 65536})
    offsets += cf_produce(broker.bootstrap, topic_name, [big], "none")
    offsets += cf_produce(broker.bootstrap, topic_name, tail, "gzip")
    assert [o for _, o in offsets] == list(range(len(recs)))
    small = {"fetch.max.bytes": 65536, "message.max.bytes": 65536, "max.partition.fetch.bytes": 16384,
             "receive.message.max.bytes": 1 << 20}
    got = cf_consume(broker.bootstrap, topic_name, [0], len(recs), extra=small, timeout_s=120)
    assert got[:len(recs)] == expected_got(recs, offsets)
    got = kp_consume(broker.bootstrap, topic_name, [0], len(recs), timeout_s=120,
                     extra={"fetch_max_bytes": 65536, "max_partition_fetch_bytes": 16384})
    assert got[:len(recs)] == expected_got(recs, offsets)


def test_fetch_beyond_the_end_is_out_of_range_and_the_client_resets(broker, topic_name):
    """Fetching at an offset past the high watermark gets OFFSET_OUT_OF_RANGE (1); with
    auto.offset.reset=earliest the client then reads from the log start."""
    recs = sample_records(10, partition=0, seed=4)
    offsets = cf_produce(broker.bootstrap, topic_name, recs, "none")
    got = cf_consume(broker.bootstrap, topic_name, [0], 10, start_offset=1000)
    assert got[:10] == expected_got(recs, offsets)
    got = kp_consume(broker.bootstrap, topic_name, [0], 10, start_offset=1000)
    assert got[:10] == expected_got(recs, offsets)


def test_waiting_consumer_is_woken_by_a_new_record(broker, topic_name):
    """A consumer parked at the end of the log (Fetch max.wait.ms long-poll) receives a record
    produced later well before fetch.wait.max.ms runs out: the append wakes the waiting fetch."""
    cf_produce(broker.bootstrap, topic_name, sample_records(1, partition=0), "none")
    c = cf_consumer(broker.bootstrap, {"fetch.wait.max.ms": 5000})
    try:
        c.assign([confluent_kafka.TopicPartition(topic_name, 0, 1)])
        # Let the consumer reach the end and park a fetch.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            m = c.poll(0.1)
            assert m is None or m.error(), "nothing to read yet"
        produced_at = []

        def produce_later():
            produced_at.append(time.monotonic())
            cf_produce(broker.bootstrap, topic_name, [Rec(b"late", b"wake up", [], None, 0)], "none")

        t = threading.Thread(target=produce_later)
        t.start()
        m = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = c.poll(0.1)
            if m is not None and not m.error():
                break
        received_at = time.monotonic()
        t.join()
        assert m is not None and not m.error() and m.value() == b"wake up"
        assert received_at - produced_at[0] < 2.5, \
            f"record arrived {received_at - produced_at[0]:.2f}s after produce: the parked fetch was not woken"
    finally:
        c.close()


@pytest.mark.broker_args("--cores", "1")
def test_single_core_broker_round_trip_and_restart(broker, topic_name):
    recs = sample_records(30, partition=0, seed=9)
    offsets = cf_produce(broker.bootstrap, topic_name, recs, "zstd")
    broker.restart()
    assert cf_consume(broker.bootstrap, topic_name, [0], 30)[:30] == expected_got(recs, offsets)


def test_many_topics_spread_over_cores(broker, topic_name):
    """Topics hash to different cores (shard table): 24 auto-created topics, each written and read
    back through one client connection, so requests cross cores."""
    names = [f"{topic_name}-{i}" for i in range(24)]
    p = confluent_kafka.Producer(rdkafka_conf(broker.bootstrap, **{"linger.ms": 5, "acks": "all"}))
    try:
        delivered = []
        for n in names:
            for j in range(5):
                p.produce(n, value=f"{n}/{j}".encode(), key=b"k", partition=0,
                          on_delivery=lambda err, msg: delivered.append((err, msg.topic(), msg.offset())))
        assert p.flush(30) == 0
    finally:
        p.close()
    assert all(err is None for err, _, _ in delivered), [d for d in delivered if d[0] is not None][:3]
    assert sorted((t, o) for _, t, o in delivered) == sorted((n, j) for n in names for j in range(5))
    c = cf_consumer(broker.bootstrap)
    try:
        c.assign([confluent_kafka.TopicPartition(n, 0, confluent_kafka.OFFSET_BEGINNING) for n in names])
        seen = {}
        deadline = time.monotonic() + 30
        while sum(len(v) for v in seen.values()) < 24 * 5 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                seen.setdefault(m.topic(), []).append((m.offset(), m.value()))
        assert seen == {n: [(j, f"{n}/{j}".encode()) for j in range(5)] for n in names}
    finally:
        c.close()


def test_request_header_client_id_null_and_long(broker):
    """client_id is a nullable string in request header v1: null and a long one are both fine."""
    s = kwire.connect(broker.addr)
    try:
        s.sendall(kwire.frame(struct.pack(">hhi", kwire.API_VERSIONS, 0, 1) + struct.pack(">h", -1)))
        assert kwire.recv_frame(s)[0] == 1
        s.sendall(kwire.frame(kwire.header_v1(kwire.API_VERSIONS, 0, 2, client_id="c" * 20000)))
        assert kwire.recv_frame(s)[0] == 2
    finally:
        s.close()
