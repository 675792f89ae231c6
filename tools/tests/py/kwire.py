"""Minimal hand-made Kafka wire frames for the raw-socket tests (bad input, many connections, fuzz).

Only what those tests need: the size-prefixed frame, request headers v1/v2, ApiVersions v0/v3,
Metadata v1, Produce v7 carrying arbitrary record-batch bytes, and their responses. Valid record
batches come from kafka-python's own builder so that only the corruption we add is ours.
"""

import socket
import struct
import time

from kafka.record._crc32c import crc as crc32c
from kafka.record.default_records import DefaultRecordBatchBuilder

API_PRODUCE = 0
API_METADATA = 3
API_VERSIONS = 18

ERR_NONE = 0
ERR_CORRUPT_MESSAGE = 2
ERR_UNSUPPORTED_VERSION = 35
ERR_INVALID_RECORD = 87
ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT = 43


def kstring(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def compact_string(s):
    b = s.encode()
    return uvarint(len(b) + 1) + b


def header_v1(api_key, api_version, correlation_id, client_id="freshet-test"):
    return struct.pack(">hhi", api_key, api_version, correlation_id) + kstring(client_id)


def header_v2(api_key, api_version, correlation_id, client_id="freshet-test"):
    return header_v1(api_key, api_version, correlation_id, client_id) + b"\x00"  # no tagged fields


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


def api_versions_v0(correlation_id):
    return frame(header_v1(API_VERSIONS, 0, correlation_id))


def api_versions_v3(correlation_id):
    body = compact_string("freshet-test") + compact_string("1.0") + b"\x00"
    return frame(header_v2(API_VERSIONS, 3, correlation_id) + body)


def metadata_v1(correlation_id, topics=None):
    if topics is None:
        body = struct.pack(">i", -1)  # all topics
    else:
        body = struct.pack(">i", len(topics)) + b"".join(kstring(t) for t in topics)
    return frame(header_v1(API_METADATA, 1, correlation_id) + body)


def produce_v7(correlation_id, topic, partition, records, acks=-1, timeout_ms=10_000):
    body = kstring(None) + struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition) + struct.pack(">i", len(records)) + records
    return frame(header_v1(API_PRODUCE, 7, correlation_id) + body)


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)}/{n} bytes")
        buf += chunk
    return bytes(buf)


def recv_frame(sock):
    """Returns (correlation_id, rest of the response after a v0 response header)."""
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    payload = recv_exact(sock, size)
    return struct.unpack(">i", payload[:4])[0], payload[4:]


def parse_api_versions_v0(body):
    """-> (error_code, {api_key: (min, max)}). Also the layout of an UNSUPPORTED_VERSION answer to a
    newer ApiVersions request (KIP-511: the broker answers such a request in v0)."""
    (err, n) = struct.unpack(">hi", body[:6])
    apis = {}
    off = 6
    for _ in range(max(n, 0)):
        k, lo, hi = struct.unpack(">hhh", body[off:off + 6])
        apis[k] = (lo, hi)
        off += 6
    return err, apis


def read_uvarint(buf, off):
    shift = n = 0
    while True:
        b = buf[off]
        off += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, off
        shift += 7


def parse_api_versions_v3(body):
    """ApiVersions v3 response body (flexible; response header stays v0 per KIP-511)."""
    (err,) = struct.unpack(">h", body[:2])
    n, off = read_uvarint(body, 2)
    apis = {}
    for _ in range(max(n - 1, 0)):
        k, lo, hi = struct.unpack(">hhh", body[off:off + 6])
        off += 6
        tags, off = read_uvarint(body, off)
        assert tags == 0, "no tagged fields expected per api"
        apis[k] = (lo, hi)
    return err, apis


def parse_produce_v7(body):
    """-> list of (topic, partition, error_code, base_offset)."""
    out = []
    (n_topics,) = struct.unpack(">i", body[:4])
    off = 4
    for _ in range(n_topics):
        (ln,) = struct.unpack(">h", body[off:off + 2])
        topic = body[off + 2:off + 2 + ln].decode()
        off += 2 + ln
        (n_parts,) = struct.unpack(">i", body[off:off + 4])
        off += 4
        for _ in range(n_parts):
            p, err, base, _append_time, _start = struct.unpack(">ihqqq", body[off:off + 30])
            off += 30
            out.append((topic, p, err, base))
    return out


def build_batch(records, base_timestamp_ms=None, compression=0):
    """A valid v2 record batch (magic 2) with offsets 0..n-1; records = [(key, value, headers)]."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    ts = base_timestamp_ms if base_timestamp_ms is not None else int(time.time() * 1000)
    for i, (k, v, h) in enumerate(records):
        b.append(i, timestamp=ts + i, key=k, value=v, headers=h)
    return bytes(b.build())


# Byte positions in a v2 batch header (KIP-98): baseOffset 0..8, batchLength 8..12,
# partitionLeaderEpoch 12..16, magic 16, crc 17..21, attributes 21..23 (CRC covers 21..end).
MAGIC_POS = 16
CRC_POS = 17
CRC_START = 21


def batch_crc_ok(batch):
    return struct.unpack(">I", batch[CRC_POS:CRC_START])[0] == crc32c(batch[CRC_START:])


def connect(addr, timeout_s=10):
    s = socket.create_connection(addr, timeout=timeout_s)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def closed_by_peer(sock, timeout_s=10):
    """True when the broker closes the connection (EOF or reset) within timeout_s and sends nothing."""
    sock.settimeout(timeout_s)
    try:
        data = sock.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return data == b""


def zigzag_varint(x):
    """Kafka's signed varint (zigzag, as in record fields)."""
    z = ((x << 1) ^ (x >> 63)) & 0xFFFFFFFFFFFFFFFF
    return uvarint(z)


def raw_record(offset_delta, ts_delta=0, key=None, value=b"", attributes=0):
    body = bytes([attributes]) + zigzag_varint(ts_delta) + zigzag_varint(offset_delta)
    body += zigzag_varint(-1) if key is None else zigzag_varint(len(key)) + key
    body += zigzag_varint(-1) if value is None else zigzag_varint(len(value)) + value
    body += zigzag_varint(0)  # no headers
    return zigzag_varint(len(body)) + body


def raw_batch(records, count, base_timestamp_ms, max_timestamp_ms=None, attributes=0):
    """A v2 batch around raw record bytes, with a correct batchLength and CRC32C (what any client
    can send, whatever the records say)."""
    max_ts = base_timestamp_ms if max_timestamp_ms is None else max_timestamp_ms
    after_crc = struct.pack(">hiqqqhi", attributes, count - 1, base_timestamp_ms, max_ts, -1, -1, -1)
    after_crc += struct.pack(">i", count) + records
    crc = crc32c(after_crc)
    head = struct.pack(">qiib", 0, 4 + 1 + 4 + len(after_crc), -1, 2) + struct.pack(">I", crc)
    return head + after_crc
