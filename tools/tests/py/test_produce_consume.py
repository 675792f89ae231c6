"""Produce/consume round trips with unchanged real clients, every compression codec.

Scenario per (producer client, codec): one producer writes records with keys, headers
(KIP-82: duplicates and order kept, binary values) and explicit CreateTime timestamps (KIP-32)
to partition 0 of an auto-created topic, in the record batch v2 format (KIP-98). Then both
confluent-kafka and kafka-python read the partition from the beginning: every record must come
back byte for byte (null vs empty kept apart), at the offset its delivery report gave, with
dense offsets in order, compressed batches decompressed by the client (the broker stores the
producer's batches as they came).
"""

import pytest

from kclients import (CODECS, assert_dense_ordered, by_partition_offset, cf_consume, cf_produce, expected_got,
                      kp_consume, kp_produce, sample_records)

N = 40


def produce(client, bootstrap, topic, recs, codec, extra=None):
    return {"confluent": cf_produce, "kafka-python": kp_produce}[client](bootstrap, topic, recs, codec, extra)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("producer", ["confluent", "kafka-python"])
def test_roundtrip_every_codec_read_by_both_clients(broker, topic_name, producer, codec):
    recs = sample_records(N, partition=0, seed=CODECS.index(codec) * 2 + (producer == "confluent"))
    offsets = produce(producer, broker.bootstrap, topic_name, recs, codec)
    assert [p for p, _ in offsets] == [0] * N
    assert [o for _, o in offsets] == list(range(N)), "a fresh partition's offsets start at 0 and are dense"
    want = expected_got(recs, offsets)

    got_cf = cf_consume(broker.bootstrap, topic_name, [0], N)
    assert_dense_ordered(got_cf, 0, 0, N)
    assert got_cf[:N] == want

    got_kp = kp_consume(broker.bootstrap, topic_name, [0], N)
    assert_dense_ordered(got_kp, 0, 0, N)
    assert got_kp[:N] == want


def test_appends_from_both_clients_interleave_with_dense_offsets(broker, topic_name):
    """Batches from different producers and codecs land one after the other in one partition."""
    all_recs, all_offsets = [], []
    for i, codec in enumerate(CODECS):
        for client in ("confluent", "kafka-python"):
            recs = sample_records(9, partition=0, seed=100 + i)
            offs = produce(client, broker.bootstrap, topic_name, recs, codec)
            all_recs += recs
            all_offsets += offs
    total = len(all_recs)
    assert [o for _, o in all_offsets] == list(range(total))
    want = expected_got(all_recs, all_offsets)
    assert cf_consume(broker.bootstrap, topic_name, [0], total)[:total] == want
    assert kp_consume(broker.bootstrap, topic_name, [0], total)[:total] == want


def test_consume_from_middle_offset(broker, topic_name):
    """A fetch at an offset inside a compressed batch returns records from that offset on (the client
    skips the earlier records of the batch; KIP-74 returns whole batches)."""
    recs = sample_records(30, partition=0, seed=7)
    offsets = cf_produce(broker.bootstrap, topic_name, recs, "lz4")
    want = expected_got(recs, offsets)[17:]
    assert cf_consume(broker.bootstrap, topic_name, [0], len(want), start_offset=17)[:len(want)] == want
    assert kp_consume(broker.bootstrap, topic_name, [0], len(want), start_offset=17)[:len(want)] == want


def test_idempotent_producers_roundtrip(broker, topic_name):
    """KIP-98 idempotence: librdkafka with enable.idempotence=true and kafka-python (idempotent by
    default in 3.0) need InitProducerId and sequence numbers accepted by the broker."""
    recs1 = sample_records(20, partition=0, seed=11)
    offs1 = cf_produce(broker.bootstrap, topic_name, recs1, "zstd", extra={"enable.idempotence": True})
    recs2 = sample_records(20, partition=0, seed=12)
    offs2 = kp_produce(broker.bootstrap, topic_name, recs2, "gzip", extra={"enable_idempotence": True})
    assert [o for _, o in offs1 + offs2] == list(range(40))
    want = expected_got(recs1 + recs2, offs1 + offs2)
    assert by_partition_offset(cf_consume(broker.bootstrap, topic_name, [0], 40))[:40] == want


def test_restart_keeps_every_record(broker, topic_name):
    """Durability across a clean restart on the same data dir: everything acknowledged with acks=all
    is read back unchanged by every client, and new appends continue at the next offset."""
    recs, offsets = [], []
    for i, codec in enumerate(CODECS):
        r = sample_records(10, partition=0, seed=200 + i)
        offsets += cf_produce(broker.bootstrap, topic_name, r, codec)
        recs += r
        r = sample_records(10, partition=0, seed=300 + i)
        offsets += kp_produce(broker.bootstrap, topic_name, r, codec)
        recs += r
    want = expected_got(recs, offsets)
    n = len(recs)

    broker.restart()
    assert cf_consume(broker.bootstrap, topic_name, [0], n)[:n] == want
    assert kp_consume(broker.bootstrap, topic_name, [0], n)[:n] == want

    more = sample_records(5, partition=0, seed=999)
    more_offs = cf_produce(broker.bootstrap, topic_name, more, "none")
    assert [o for _, o in more_offs] == list(range(n, n + 5))


def test_crash_restart_keeps_acknowledged_records(broker, topic_name):
    """SIGKILL (no clean shutdown): acks=all records were durable when acknowledged, so all are
    still there after recovery."""
    recs = sample_records(50, partition=0, seed=5)
    offsets = kp_produce(broker.bootstrap, topic_name, recs, "snappy")
    broker.kill()
    broker.start()
    assert cf_consume(broker.bootstrap, topic_name, [0], 50)[:50] == expected_got(recs, offsets)
