"""Thin, client-neutral helpers over confluent-kafka, kafka-python and kcat for the integration tests.

A record is a `Rec` (key, value, headers, timestamp_ms, partition); produce helpers return the
(partition, offset) each record was acknowledged at; consume helpers return `Got` tuples with
everything a consumer sees, so tests can compare byte for byte across clients.
"""

import collections
import logging
import os
import random
import subprocess
import time
import uuid

import confluent_kafka
import kafka
from kafka.structs import TopicPartition as KpTopicPartition

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
CONSUME_TIMEOUT_S = float(os.environ.get("FRESHET_CONSUME_TIMEOUT", "30"))

Rec = collections.namedtuple("Rec", "key value headers timestamp_ms partition")
Got = collections.namedtuple("Got", "partition offset key value headers timestamp_type timestamp_ms")

# Kafka timestamp types as consumers report them (record batch attribute bit 3).
CREATE_TIME = 0
LOG_APPEND_TIME = 1


def sample_records(n, partition=0, seed=1, ts_base_ms=None):
    """n records with varied keys/values/headers: binary bytes, empty and null values, null keys,
    repeated header names, one large compressible and one large random value."""
    rng = random.Random(seed)
    ts_base_ms = ts_base_ms if ts_base_ms is not None else int(time.time() * 1000) - 60_000
    recs = []
    for i in range(n):
        kind = i % 7
        key = None if kind == 3 else f"key-{i}".encode() + bytes([i % 256])
        if kind == 0:
            value = bytes(range(256))
        elif kind == 1:
            value = b""
        elif kind == 2:
            value = None
        elif kind == 4 and i < 14:
            value = b"freshet " * 4096  # 32 KiB, compresses well
        elif kind == 5 and i < 14:
            value = rng.randbytes(20_000)  # incompressible
        else:
            value = f"value-{i}-".encode() + rng.randbytes(rng.randrange(0, 64))
        if kind == 6:
            headers = []
        else:
            headers = [("h1", f"v{i}".encode()), ("bin", bytes([0, 255, i % 256])), ("h1", b"dup")]
            if kind == 1:
                headers.append(("empty", b""))
        recs.append(Rec(key, value, headers, ts_base_ms + i, partition))
    return recs


def expected_got(recs, offsets):
    """What a consumer must see for records acknowledged at `offsets` (CreateTime timestamps)."""
    return [
        Got(p, o, r.key, r.value, list(r.headers), CREATE_TIME, r.timestamp_ms)
        for r, (p, o) in zip(recs, offsets)
    ]


# librdkafka logs through Python logging (delivered on poll/flush): pytest shows them with a
# failing test, and no client thread writes to stderr after the run's summary line.
RDKAFKA_LOGGER = logging.getLogger("librdkafka")


def rdkafka_conf(bootstrap, **extra):
    """Base config for every confluent-kafka client (Producer, Consumer, AdminClient)."""
    conf = {"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOGGER}
    conf.update(extra)
    return conf


def unique_group():
    return f"freshet-test-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- confluent-kafka (librdkafka 2.16)


def cf_produce(bootstrap, topic, recs, codec="none", extra=None, timeout_s=30):
    conf = rdkafka_conf(bootstrap, **{"compression.codec": codec, "linger.ms": 5, "acks": "all"})
    conf.update(extra or {})
    p = confluent_kafka.Producer(conf)
    try:
        return _cf_produce(p, topic, recs, timeout_s)
    finally:
        p.purge()
        p.close()


def _cf_produce(p, topic, recs, timeout_s):
    results = [None] * len(recs)
    errors = []

    def cb(i):
        def on_delivery(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                results[i] = (msg.partition(), msg.offset())

        return on_delivery

    for i, r in enumerate(recs):
        kwargs = dict(topic=topic, value=r.value, key=r.key, timestamp=r.timestamp_ms or 0, on_delivery=cb(i))
        if r.headers:
            kwargs["headers"] = list(r.headers)
        if r.partition is not None:
            kwargs["partition"] = r.partition
        while True:
            try:
                p.produce(**kwargs)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    remaining = p.flush(timeout_s)
    assert remaining == 0, f"confluent-kafka: {remaining} messages not delivered within {timeout_s}s; errors={errors[:5]}"
    assert not errors, f"confluent-kafka delivery errors: {errors[:5]}"
    return results


def cf_consumer(bootstrap, extra=None):
    conf = rdkafka_conf(bootstrap, **{
        "group.id": unique_group(),  # required by confluent-kafka; we only assign(), never commit
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
    })
    conf.update(extra or {})
    return confluent_kafka.Consumer(conf)


def cf_consume(bootstrap, topic, partitions, count, start_offset=confluent_kafka.OFFSET_BEGINNING, extra=None,
               timeout_s=CONSUME_TIMEOUT_S):
    """Reads `count` records from the given partitions (assign, no group). Returns Got tuples in
    arrival order."""
    c = cf_consumer(bootstrap, extra)
    try:
        c.assign([confluent_kafka.TopicPartition(topic, p, start_offset) for p in partitions])
        got = []
        errs = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                errs.append(m.error())
                continue
            ts_type, ts = m.timestamp()
            got.append(Got(m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or []),
                           {confluent_kafka.TIMESTAMP_CREATE_TIME: CREATE_TIME,
                            confluent_kafka.TIMESTAMP_LOG_APPEND_TIME: LOG_APPEND_TIME}.get(ts_type, ts_type), ts))
        assert len(got) >= count, f"confluent-kafka consumed {len(got)}/{count} within {timeout_s}s; errors={errs[:5]}"
        return got
    finally:
        c.close()


# ---------------------------------------------------------------- kafka-python 3.0 (own protocol code)

KP_CODEC = {"none": None, "gzip": "gzip", "snappy": "snappy", "lz4": "lz4", "zstd": "zstd"}


def kp_produce(bootstrap, topic, recs, codec="none", extra=None, timeout_s=30):
    conf = dict(bootstrap_servers=bootstrap, compression_type=KP_CODEC[codec], linger_ms=5, acks="all",
                request_timeout_ms=int(timeout_s * 1000))
    conf.update(extra or {})
    p = kafka.KafkaProducer(**conf)
    try:
        futures = [
            p.send(topic, value=r.value, key=r.key, headers=list(r.headers) or None, partition=r.partition,
                   timestamp_ms=r.timestamp_ms)
            for r in recs
        ]
        p.flush(timeout=timeout_s)
        out = []
        for f in futures:
            md = f.get(timeout=timeout_s)
            out.append((md.partition, md.offset))
        return out
    finally:
        p.close(timeout=5)


def kp_consume(bootstrap, topic, partitions, count, start_offset=None, extra=None, timeout_s=CONSUME_TIMEOUT_S):
    conf = dict(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest")
    conf.update(extra or {})
    c = kafka.KafkaConsumer(**conf)
    try:
        tps = [KpTopicPartition(topic, p) for p in partitions]
        c.assign(tps)
        if start_offset is None:
            c.seek_to_beginning(*tps)
        else:
            for tp in tps:
                c.seek(tp, start_offset)
        got = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            batches = c.poll(timeout_ms=500)
            for tp in sorted(batches, key=lambda t: t.partition):
                for m in batches[tp]:
                    got.append(Got(m.partition, m.offset, m.key, m.value, [(k, v) for k, v in (m.headers or [])],
                                   m.timestamp_type, m.timestamp))
        assert len(got) >= count, f"kafka-python consumed {len(got)}/{count} within {timeout_s}s"
        return got
    finally:
        c.close()


# ---------------------------------------------------------------- kcat 1.7.1 (librdkafka 2.0.2)


def kcat(*args, input_bytes=None, timeout_s=60, check=True):
    proc = subprocess.run(["kcat", *args], input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout_s)
    if check and proc.returncode != 0:
        raise AssertionError(f"kcat {' '.join(args)} exited {proc.returncode}\nstderr:\n"
                             f"{proc.stderr.decode(errors='replace')[-3000:]}")
    return proc


def by_partition_offset(got):
    return sorted(got, key=lambda g: (g.partition, g.offset))


def assert_dense_ordered(got, partition, first_offset, count):
    """Offsets of `got` for `partition` are exactly first_offset..first_offset+count-1, in order."""
    offs = [g.offset for g in got if g.partition == partition]
    assert offs == list(range(first_offset, first_offset + count)), f"offsets not dense/ordered: {offs[:20]}..."
