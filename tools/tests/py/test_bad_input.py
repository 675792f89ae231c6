"""Bad input from the network: malformed frames close only the offending connection, bad record
batches are refused with the right error code, and nothing else is affected.

After every attack: a connection opened before it still gets answers, the data written before it
reads back intact through a real client, and a new produce continues at the next offset.
"""

import random
import socket
import struct
import time

import confluent_kafka
import pytest

import kwire
from kclients import cf_consume, cf_produce, expected_got, rdkafka_conf, sample_records

SOCKET_REQUEST_MAX_BYTES = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes default


class Healthy:
    """Baseline data plus a bystander connection, checked after an attack."""

    def __init__(self, broker, topic):
        self.broker = broker
        self.topic = topic
        recs = sample_records(12, partition=0, seed=77)
        self.expected = expected_got(recs, cf_produce(broker.bootstrap, topic, recs, "gzip"))
        self.bystander = kwire.connect(broker.addr)
        self.corr = 1000

    def check(self):
        assert self.broker.alive(), "broker died:\n" + self.broker.log_tail()
        # The bystander connection, opened before the attack, still gets answers.
        self.corr += 1
        self.bystander.sendall(kwire.api_versions_v0(self.corr))
        corr, body = kwire.recv_frame(self.bystander)
        assert corr == self.corr
        err, apis = kwire.parse_api_versions_v0(body)
        assert err == 0 and kwire.API_PRODUCE in apis
        # Old data intact, new appends continue densely.
        n = len(self.expected)
        assert cf_consume(self.broker.bootstrap, self.topic, [0], n)[:n] == self.expected
        more = sample_records(3, partition=0, seed=self.corr)
        offs = cf_produce(self.broker.bootstrap, self.topic, more, "none")
        assert [o for _, o in offs] == list(range(n, n + 3)), "a refused batch must not use offsets"
        self.expected += expected_got(more, offs)


@pytest.fixture
def healthy(broker, topic_name):
    h = Healthy(broker, topic_name)
    yield h
    h.bystander.close()


def attack(broker, payload, then_close_write=False):
    s = kwire.connect(broker.addr)
    try:
        s.sendall(payload)
        if then_close_write:
            s.shutdown(socket.SHUT_WR)
        return kwire.closed_by_peer(s)
    except (BrokenPipeError, ConnectionResetError):
        return True
    finally:
        s.close()


def test_random_bytes_close_only_that_connection(broker, healthy):
    rng = random.Random(1234)
    for size in (1, 3, 7, 64, 4096):
        attack(broker, rng.randbytes(size), then_close_write=True)
        assert broker.alive()
    healthy.check()


def test_random_payload_inside_a_valid_length_prefix(broker, healthy):
    rng = random.Random(99)
    for _ in range(30):
        payload = rng.randbytes(rng.randrange(0, 300))
        attack(broker, kwire.frame(payload), then_close_write=True)
    healthy.check()


@pytest.mark.parametrize("size", [-1, -(2**31), -100])
def test_negative_length_prefix_closes_connection(broker, healthy, size):
    assert attack(broker, struct.pack(">i", size)), "a negative frame size must close the connection"
    healthy.check()


@pytest.mark.parametrize("size", [SOCKET_REQUEST_MAX_BYTES + 1, 2**31 - 1])
def test_length_prefix_over_socket_request_max_bytes_closes_connection(broker, healthy, size):
    """Kafka's socket.request.max.bytes: a size over the limit closes the connection at once,
    without reading (or allocating) the body."""
    assert attack(broker, struct.pack(">i", size) + b"\x00" * 16), "oversized frame must close the connection"
    healthy.check()


def test_truncated_frame_then_close(broker, healthy):
    full = kwire.api_versions_v0(7)
    for cut in (1, 4, 5, len(full) - 1):
        attack(broker, full[:cut], then_close_write=True)
    # A length prefix promising 1 MiB, 20 bytes sent, then the client vanishes.
    attack(broker, struct.pack(">i", 1 << 20) + b"\x01" * 20, then_close_write=True)
    healthy.check()


def test_unknown_api_key_closes_connection(broker, healthy):
    payload = kwire.frame(kwire.header_v1(31_000, 0, 5) + b"\x00" * 8)
    assert attack(broker, payload), "Kafka closes a connection that sends an unknown API key"
    healthy.check()


def test_unsupported_api_versions_version_answered_in_v0(broker, healthy):
    """KIP-511: an ApiVersions request newer than the broker knows is answered with a v0 response
    carrying UNSUPPORTED_VERSION (35) and the supported ranges, so the client can retry lower."""
    s = kwire.connect(broker.addr)
    try:
        s.sendall(kwire.frame(kwire.header_v2(kwire.API_VERSIONS, 127, 42) + b"\x00\x00\x00"))
        corr, body = kwire.recv_frame(s)
        assert corr == 42
        err, apis = kwire.parse_api_versions_v0(body)
        assert err == kwire.ERR_UNSUPPORTED_VERSION
        assert kwire.API_VERSIONS in apis and apis[kwire.API_VERSIONS][0] == 0
        # The connection stays usable: retry at v3 as a client would.
        s.sendall(kwire.api_versions_v3(43))
        corr, body = kwire.recv_frame(s)
        assert corr == 43
        err, apis3 = kwire.parse_api_versions_v3(body)
        assert err == 0 and apis3 == apis
    finally:
        s.close()
    healthy.check()


def test_huge_array_count_in_small_frame(broker, healthy):
    """An array count far beyond the frame's size (every element takes at least one byte) must be
    refused, not allocated for: Metadata v1 claiming 2^31-1 topics in a 4-byte body, Metadata v9
    (compact array) claiming 2^32-2, Produce v3 claiming 2^31-1 topics."""
    frames = [
        kwire.header_v1(kwire.API_METADATA, 1, 1) + struct.pack(">i", 2**31 - 1),
        kwire.header_v2(kwire.API_METADATA, 9, 2) + bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
        kwire.header_v1(kwire.API_PRODUCE, 3, 3) + struct.pack(">hhi", -1, -1, 1000) + struct.pack(">i", 2**31 - 1),
    ]
    for payload in frames:
        attack(broker, kwire.frame(payload))
        assert broker.alive(), "broker died on a tiny frame with a huge array count:\n" + broker.log_tail()
    healthy.check()


def test_unsupported_version_of_other_api_closes_connection(broker, healthy):
    payload = kwire.frame(kwire.header_v1(kwire.API_METADATA, 32_000, 9) + struct.pack(">i", -1))
    assert attack(broker, payload), "an unsupported request version (not ApiVersions) closes the connection"
    healthy.check()


def produce_raw(broker, topic, batch, corr=11):
    s = kwire.connect(broker.addr)
    try:
        s.sendall(kwire.produce_v7(corr, topic, 0, batch))
        got_corr, body = kwire.recv_frame(s)
        assert got_corr == corr
        return kwire.parse_produce_v7(body)
    finally:
        s.close()


def test_corrupted_crc_batch_is_refused_with_corrupt_message(broker, healthy, topic_name):
    batch = bytearray(kwire.build_batch([(b"k", b"value-%d" % i, []) for i in range(5)]))
    assert kwire.batch_crc_ok(batch)
    batch[-3] ^= 0x40  # a bit inside the last record: CRC32C no longer matches
    assert not kwire.batch_crc_ok(batch)
    res = produce_raw(broker, topic_name, bytes(batch))
    assert [(t, p, e) for t, p, e, _ in res] == [(topic_name, 0, kwire.ERR_CORRUPT_MESSAGE)]
    healthy.check()


def test_valid_raw_batch_is_accepted(broker, healthy, topic_name):
    """Control for the two refusal tests: the same hand-made frame with an intact batch is appended."""
    batch = kwire.build_batch([(b"k", b"value-%d" % i, [("h", b"v")]) for i in range(5)])
    n = len(healthy.expected)
    res = produce_raw(broker, topic_name, batch)
    assert res == [(topic_name, 0, kwire.ERR_NONE, n)]
    got = cf_consume(broker.bootstrap, topic_name, [0], 5, start_offset=n)
    assert [(g.offset, g.key, g.value, g.headers) for g in got[:5]] == [
        (n + i, b"k", b"value-%d" % i, [("h", b"v")]) for i in range(5)
    ]
    healthy.expected += got[:5]
    healthy.check()


@pytest.mark.parametrize("magic", [3, 1, 0])
def test_bad_magic_batch_is_refused(broker, healthy, topic_name, magic):
    """The CRC does not cover the magic byte, so only a magic check can catch it. Kafka answers
    CORRUPT_MESSAGE for an unknown magic, and INVALID_RECORD / UNSUPPORTED_FOR_MESSAGE_FORMAT for
    an old format in a Produce v3+ request (v3+ carries only magic 2 batches, KIP-98)."""
    batch = bytearray(kwire.build_batch([(b"k", b"v", [])]))
    batch[kwire.MAGIC_POS] = magic
    res = produce_raw(broker, topic_name, bytes(batch))
    assert len(res) == 1
    topic, partition, err, _ = res[0]
    assert (topic, partition) == (topic_name, 0)
    assert err in (kwire.ERR_CORRUPT_MESSAGE, kwire.ERR_INVALID_RECORD, kwire.ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT), err
    healthy.check()


def test_batch_length_field_disagreeing_with_bytes_is_refused(broker, healthy, topic_name):
    batch = bytearray(kwire.build_batch([(b"k", b"v", [])]))
    (blen,) = struct.unpack(">i", batch[8:12])
    batch[8:12] = struct.pack(">i", blen + 100)  # claims more bytes than the request carries
    res = produce_raw(broker, topic_name, bytes(batch))
    assert len(res) == 1 and res[0][2] != kwire.ERR_NONE, res
    healthy.check()


@pytest.mark.parametrize("offset_delta,ts_delta", [(2**63 - 1, 0), (-(2**63), 0), (0, 2**63 - 1), (2**62, -(2**62))])
def test_extreme_record_deltas_then_list_offsets_by_timestamp(broker, healthy, topic_name, offset_delta, ts_delta):
    """A client chooses every record field. A batch with a correct CRC whose record claims an
    extreme offset or timestamp delta is either refused (INVALID_RECORD) or stored; either way a
    later ListOffsets by timestamp (KIP-79), which reads the stored records, must answer and not
    crash the broker."""
    base_ts = int(time.time() * 1000) + 10**9  # later than every record written before it
    batch = kwire.raw_batch(kwire.raw_record(offset_delta, ts_delta, key=b"k", value=b"v"), 1, base_ts)
    res = produce_raw(broker, topic_name, batch)
    assert len(res) == 1 and res[0][:2] == (topic_name, 0)
    assert res[0][2] in (kwire.ERR_NONE, kwire.ERR_INVALID_RECORD, kwire.ERR_CORRUPT_MESSAGE), res
    c = confluent_kafka.Consumer(rdkafka_conf(broker.bootstrap, **{"group.id": "lookup"}))
    try:
        for ts in (base_ts - 1, base_ts, base_ts + 1, 2**62):
            c.offsets_for_times([confluent_kafka.TopicPartition(topic_name, 0, ts)], timeout=10)
            assert broker.alive(), f"broker died on ListOffsets by timestamp {ts}:\n{broker.log_tail()}"
    finally:
        c.close()
    if res[0][2] != kwire.ERR_NONE:
        healthy.check()
        return
    # Stored: it took exactly one offset (the broker assigns offsets by record count), and the
    # records before it are intact. (What a consumer makes of its odd delta is the client's business.)
    n = len(healthy.expected)
    assert res[0][3] == n
    assert cf_consume(broker.bootstrap, topic_name, [0], n)[:n] == healthy.expected
    offs = cf_produce(broker.bootstrap, topic_name, sample_records(1, partition=0, seed=8), "none")
    assert offs == [(0, n + 1)]
