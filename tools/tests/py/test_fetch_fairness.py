"""Fetch fairness across partitions under a tight total max_bytes (KIP-227, KIP-74).

Every partition of a topic holds several batches; fetches ask for a total max_bytes of 1 byte,
so each response carries exactly one batch (KIP-74: at least one batch). With an incremental
fetch session the broker moves partitions that returned data to the end of the session order
(as Kafka's IncrementalFetchContext does), so consecutive responses serve every partition in
turn; without the rotation the first partition would be served until it ran dry. A full
(sessionless) fetch reads in the request's order.

Raw Fetch v7 frames (header v1, non-flexible) keep the session ids/epochs and the per-partition
fetch offsets under the test's control.
"""

import struct

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

import kwire

API_FETCH = 1
PARTITIONS = 4
BATCHES_PER_PARTITION = 3


def create_topic(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                               operation_timeout=10)
    futs[name].result(timeout=30)


def fetch_v7(corr, session_id, epoch, topic, parts, max_bytes=1, forgotten=()):
    """parts = [(partition, fetch_offset)]; partition_max_bytes is generous (1 MiB)."""
    body = struct.pack(">iiiibii", -1, 0, 0, max_bytes, 0, session_id, epoch)
    if parts:
        body += struct.pack(">i", 1) + kwire.kstring(topic) + struct.pack(">i", len(parts))
        for p, off in parts:
            body += struct.pack(">iqqi", p, off, -1, 1 << 20)
    else:
        body += struct.pack(">i", 0)
    if forgotten:
        body += struct.pack(">i", 1) + kwire.kstring(topic) + struct.pack(">i", len(forgotten))
        body += b"".join(struct.pack(">i", p) for p in forgotten)
    else:
        body += struct.pack(">i", 0)
    return kwire.frame(kwire.header_v1(API_FETCH, 7, corr) + body)


def parse_fetch_v7(body):
    """-> (error_code, session_id, {partition: (error_code, next_offset or None)})."""
    _throttle, err, session_id, n_topics = struct.unpack(">ihii", body[:14])
    off = 14
    out = {}
    for _ in range(n_topics):
        (ln,) = struct.unpack(">h", body[off:off + 2])
        off += 2 + ln
        (n_parts,) = struct.unpack(">i", body[off:off + 4])
        off += 4
        for _ in range(n_parts):
            p, perr, _hw, _lso, _start = struct.unpack(">ihqqq", body[off:off + 30])
            off += 30
            (n_aborted,) = struct.unpack(">i", body[off:off + 4])
            off += 4 + max(n_aborted, 0) * 16
            (rlen,) = struct.unpack(">i", body[off:off + 4])
            off += 4
            records = body[off:off + max(rlen, 0)]
            off += max(rlen, 0)
            next_offset = None
            pos = 0
            while pos + 27 <= len(records):  # walk the v2 batch headers (KIP-98 layout)
                base, blen = struct.unpack(">qi", records[pos:pos + 12])
                if pos + 12 + blen > len(records):
                    break
                (last_delta,) = struct.unpack(">i", records[pos + 23:pos + 27])
                next_offset = base + last_delta + 1
                pos += 12 + blen
            out[p] = (perr, next_offset)
    return err, session_id, out


def fill(broker, topic):
    s = kwire.connect(broker.addr)
    try:
        corr = 100
        for p in range(PARTITIONS):
            for b in range(BATCHES_PER_PARTITION):
                batch = kwire.build_batch([(None, bytes([65 + p]) * 500, [])] * 2)
                corr += 1
                s.sendall(kwire.produce_v7(corr, topic, p, batch))
                got, body = kwire.recv_frame(s)
                assert got == corr
                [(_, part, err, base)] = kwire.parse_produce_v7(body)
                assert (part, err, base) == (p, 0, 2 * b)
    finally:
        s.close()


def test_incremental_fetch_session_serves_every_partition_in_turn(broker, topic_name):
    """KIP-227 fairness: 4 partitions x 3 batches, total max_bytes 1. Each response carries one
    batch; over 12 responses (1 full + 11 incremental) every partition is served exactly 3
    times and each of the first 4 responses serves a different partition."""
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    fill(broker, topic_name)
    offsets = {p: 0 for p in range(PARTITIONS)}
    served = []
    s = kwire.connect(broker.addr)
    try:
        s.sendall(fetch_v7(1, 0, 0, topic_name, sorted(offsets.items())))
        got, body = kwire.recv_frame(s)
        assert got == 1
        err, session_id, parts = parse_fetch_v7(body)
        assert err == 0
        assert session_id != 0, "the broker created no fetch session"
        epoch = 1
        for corr in range(2, 2 + PARTITIONS * BATCHES_PER_PARTITION):
            with_data = [(p, nxt) for p, (perr, nxt) in parts.items() if perr == 0 and nxt is not None]
            assert len(with_data) == 1, f"response {corr - 1}: expected one batch, got {parts}, served {served}"
            [(p, nxt)] = with_data
            served.append(p)
            offsets[p] = nxt
            # Incremental: only the partition whose fetch offset changed is sent (KIP-227).
            s.sendall(fetch_v7(corr, session_id, epoch, topic_name, [(p, nxt)]))
            epoch += 1
            got, body = kwire.recv_frame(s)
            assert got == corr
            err, sid, parts = parse_fetch_v7(body)
            assert (err, sid) == (0, session_id)
        # The last response has nothing left to serve.
        assert all(nxt is None for _, nxt in parts.values()), parts
    finally:
        s.close()
    assert sorted(served[:PARTITIONS]) == list(range(PARTITIONS)), f"served order {served}"
    assert all(served.count(p) == BATCHES_PER_PARTITION for p in range(PARTITIONS)), served
    assert offsets == {p: 2 * BATCHES_PER_PARTITION for p in range(PARTITIONS)}


def test_sessionless_fetch_reads_in_the_request_order(broker, topic_name):
    """A full fetch without a session (epoch -1) is read in the request's partition order: with
    total max_bytes 1 the first listed partition that has data gets the one batch."""
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    fill(broker, topic_name)
    s = kwire.connect(broker.addr)
    try:
        for corr, order in enumerate(([3, 2, 1, 0], [1, 0, 3, 2], [1, 0, 3, 2]), start=1):
            s.sendall(fetch_v7(corr, 0, -1, topic_name, [(p, 0) for p in order]))
            got, body = kwire.recv_frame(s)
            assert got == corr
            err, sid, parts = parse_fetch_v7(body)
            assert (err, sid) == (0, 0)
            with_data = [p for p, (perr, nxt) in parts.items() if nxt is not None]
            assert with_data == [order[0]], f"request order {order}: data from {with_data}"
    finally:
        s.close()
