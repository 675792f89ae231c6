"""Admin API error codes and edge cases beyond test_admin.py, through real clients where they can
express the request and raw wire frames where they cannot (DeleteTopics by topic id, KIP-516;
OffsetForLeaderEpoch, KIP-101/KIP-279/KIP-320), plus metadata and config changes reaching every
core of a `--cores 2` broker.
"""

import struct
import time
import uuid

import confluent_kafka
import kafka
import pytest
from confluent_kafka import TopicCollection
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewPartitions, NewTopic, ResourceType)

import kwire
from kclients import cf_produce, kcat, rdkafka_conf, sample_records

TIMEOUT_S = 30
API_DELETE_TOPICS = 20
API_DELETE_RECORDS = 21
API_OFFSET_FOR_LEADER_EPOCH = 23

ERR_OFFSET_OUT_OF_RANGE = 1
ERR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERR_MESSAGE_TOO_LARGE = 10
ERR_INVALID_TOPIC_EXCEPTION = 17
ERR_INVALID_REQUEST = 42
ERR_FENCED_LEADER_EPOCH = 74
ERR_UNKNOWN_LEADER_EPOCH = 75
ERR_UNKNOWN_TOPIC_ID = 100


def cf_admin(broker):
    return AdminClient(rdkafka_conf(broker.bootstrap))


def cf_create(admin, name, partitions, config=None, validate_only=False):
    t = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
    admin.create_topics([t], operation_timeout=TIMEOUT_S, validate_only=validate_only)[name].result(TIMEOUT_S)


def error_code(fut):
    with pytest.raises(confluent_kafka.KafkaException) as ei:
        fut.result(TIMEOUT_S)
    return ei.value.args[0].code()


def topic_id(admin, name):
    desc = admin.describe_topics(TopicCollection([name]))[name].result(TIMEOUT_S)
    mask = (1 << 64) - 1
    msb = desc.topic_id.get_most_significant_bits() & mask
    lsb = desc.topic_id.get_least_significant_bits() & mask
    return uuid.UUID(int=(msb << 64) | lsb)


# ------------------------------------------------------------------ raw frames


def request(sock, api_key, version, correlation_id, body, flexible):
    header = (kwire.header_v2 if flexible else kwire.header_v1)(api_key, version, correlation_id)
    sock.sendall(kwire.frame(header + body))
    cid, rest = kwire.recv_frame(sock)
    assert cid == correlation_id
    if flexible:  # response header v1: tagged fields after the correlation id
        tags, off = kwire.read_uvarint(rest, 0)
        assert tags == 0
        rest = rest[off:]
    return rest


def compact_nullable_string(s):
    return b"\x00" if s is None else kwire.compact_string(s)


def read_compact_nullable_string(buf, off):
    n, off = kwire.read_uvarint(buf, off)
    if n == 0:
        return None, off
    return buf[off:off + n - 1].decode(), off + n - 1


def delete_topics_v6(sock, correlation_id, entries):
    """DeleteTopics v6 (flexible): entries = [(name or None, uuid.UUID)] -> [(name, id, error)]."""
    body = kwire.uvarint(len(entries) + 1)
    for name, tid in entries:
        body += compact_nullable_string(name) + tid.bytes + b"\x00"
    body += struct.pack(">i", 30_000) + b"\x00"
    resp = request(sock, API_DELETE_TOPICS, 6, correlation_id, body, flexible=True)
    off = 4  # throttle_time_ms
    n, off = kwire.read_uvarint(resp, off)
    out = []
    for _ in range(n - 1):
        name, off = read_compact_nullable_string(resp, off)
        tid = uuid.UUID(bytes=resp[off:off + 16])
        (err,) = struct.unpack(">h", resp[off + 16:off + 18])
        _msg, off = read_compact_nullable_string(resp, off + 18)
        tags, off = kwire.read_uvarint(resp, off)
        assert tags == 0
        out.append((name, tid, err))
    return out


def offset_for_leader_epoch_v3(sock, correlation_id, topic, asks):
    """OffsetForLeaderEpoch v3: asks = [(partition, current_leader_epoch, leader_epoch)]
    -> [(partition, error, leader_epoch, end_offset)]."""
    body = struct.pack(">i", -1)  # replica_id: a consumer
    body += struct.pack(">i", 1) + kwire.kstring(topic) + struct.pack(">i", len(asks))
    for p, current, epoch in asks:
        body += struct.pack(">iii", p, current, epoch)
    resp = request(sock, API_OFFSET_FOR_LEADER_EPOCH, 3, correlation_id, body, flexible=False)
    off = 4
    (n_topics,) = struct.unpack(">i", resp[off:off + 4])
    assert n_topics == 1
    (ln,) = struct.unpack(">h", resp[off + 4:off + 6])
    off += 6 + ln
    (n_parts,) = struct.unpack(">i", resp[off:off + 4])
    off += 4
    out = []
    for _ in range(n_parts):
        err, p, epoch, end = struct.unpack(">hiiq", resp[off:off + 18])
        off += 18
        out.append((p, err, epoch, end))
    return out


def delete_records_v1(sock, correlation_id, topic, asks):
    """DeleteRecords v1: asks = [(partition, offset)] -> [(partition, low_watermark, error)]."""
    body = struct.pack(">i", 1) + kwire.kstring(topic) + struct.pack(">i", len(asks))
    for p, offset in asks:
        body += struct.pack(">iq", p, offset)
    body += struct.pack(">i", 30_000)
    resp = request(sock, API_DELETE_RECORDS, 1, correlation_id, body, flexible=False)
    off = 4
    (n_topics,) = struct.unpack(">i", resp[off:off + 4])
    assert n_topics == 1
    (ln,) = struct.unpack(">h", resp[off + 4:off + 6])
    off += 6 + ln
    (n_parts,) = struct.unpack(">i", resp[off:off + 4])
    off += 4
    out = []
    for _ in range(n_parts):
        out.append(struct.unpack(">iqh", resp[off:off + 14]))
        off += 14
    return out


def metadata_v1_topics(sock, correlation_id, topics=None):
    """Metadata v1 -> {topic: (error, partition count)} (v1: null topics = all, no auto-create)."""
    sock.sendall(kwire.metadata_v1(correlation_id, topics))
    cid, resp = kwire.recv_frame(sock)
    assert cid == correlation_id
    off = 0
    (n_brokers,) = struct.unpack(">i", resp[off:off + 4])
    off += 4
    for _ in range(n_brokers):
        off += 4
        (ln,) = struct.unpack(">h", resp[off:off + 2])
        off += 2 + ln + 4
        (ln,) = struct.unpack(">h", resp[off:off + 2])
        off += 2 + max(ln, 0)
    off += 4  # controller_id
    (n_topics,) = struct.unpack(">i", resp[off:off + 4])
    off += 4
    out = {}
    for _ in range(n_topics):
        (err, ln) = struct.unpack(">hh", resp[off:off + 4])
        name = resp[off + 4:off + 4 + ln].decode()
        off += 4 + ln + 1  # is_internal
        (n_parts,) = struct.unpack(">i", resp[off:off + 4])
        off += 4
        for _ in range(n_parts):
            off += 2 + 4 + 4
            for _ in range(2):  # replicas, isr
                (k,) = struct.unpack(">i", resp[off:off + 4])
                off += 4 + 4 * k
        out[name] = (err, n_parts)
    return out


# ------------------------------------------------------------------ DeleteTopics by id (KIP-516)


def test_delete_topics_by_topic_id_v6(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 2)
    tid = topic_id(admin, topic_name)
    assert tid.int != 0
    with kwire.connect(broker.addr) as s:
        stranger = uuid.uuid4()
        assert delete_topics_v6(s, 1, [(None, stranger)]) == [(None, stranger, ERR_UNKNOWN_TOPIC_ID)]
        # Name and id together, or the same topic twice (once by name, once by id): INVALID_REQUEST.
        [(_, _, err)] = delete_topics_v6(s, 2, [(topic_name, tid)])
        assert err == ERR_INVALID_REQUEST
        got = delete_topics_v6(s, 3, [(topic_name, uuid.UUID(int=0)), (None, tid)])
        assert [e for _, _, e in got] == [ERR_INVALID_REQUEST, ERR_INVALID_REQUEST]
        assert topic_name in metadata_v1_topics(s, 4)
        # By id alone: deleted, and the answer names the topic.
        assert delete_topics_v6(s, 5, [(None, tid)]) == [(topic_name, tid, 0)]
        assert topic_name not in metadata_v1_topics(s, 6)
        assert delete_topics_v6(s, 7, [(None, tid)]) == [(None, tid, ERR_UNKNOWN_TOPIC_ID)]


# ------------------------------------------------------------------ OffsetForLeaderEpoch


def test_offset_for_leader_epoch_and_kip_320_fencing(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1)
    # Leader epoch = the partition's Raft term: a new single-node partition elects itself in
    # term 1 and starts that epoch at offset 0 (like Kafka assigning an epoch on election).
    e = 1
    with kwire.connect(broker.addr) as s:
        # An epoch below the first known one: that epoch, ending where the first one starts.
        assert offset_for_leader_epoch_v3(s, 1, topic_name, [(0, -1, 0)]) == [(0, 0, 0, 0)]
        # The current epoch of an empty log ends at its log end offset, 0.
        assert offset_for_leader_epoch_v3(s, 1, topic_name, [(0, -1, e)]) == [(0, 0, e, 0)]
        cf_produce(broker.bootstrap, topic_name, sample_records(10, partition=0), "none")
        asks = [
            (0, -1, e),     # the current (latest) epoch ends at the log end offset
            (0, e, e),      # current_leader_epoch equal to the partition's: accepted
            (0, -1, e + 2), # above every known epoch: -1/-1
            (0, e + 1, e),  # the client knows a newer epoch than this leader: UNKNOWN_LEADER_EPOCH
            (0, e - 1, e),  # ... an older one: FENCED_LEADER_EPOCH
            (5, -1, e),     # no such partition
        ]
        assert offset_for_leader_epoch_v3(s, 2, topic_name, asks) == [
            (0, 0, e, 10),
            (0, 0, e, 10),
            (0, 0, -1, -1),
            (0, ERR_UNKNOWN_LEADER_EPOCH, -1, -1),
            (0, ERR_FENCED_LEADER_EPOCH, -1, -1),
            (5, ERR_UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
        ]
        assert offset_for_leader_epoch_v3(s, 3, topic_name + "-nope", [(0, -1, 0)]) == [
            (0, ERR_UNKNOWN_TOPIC_OR_PARTITION, -1, -1)]


# ------------------------------------------------------------------ confluent-kafka AdminClient


def test_validate_only_creates_nothing_but_reports_errors(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 2, {"retention.ms": "1000"}, validate_only=True)
    assert topic_name not in admin.list_topics(timeout=TIMEOUT_S).topics
    cf_create(admin, topic_name, 2)
    t = NewTopic(topic_name, num_partitions=1, replication_factor=1)
    fut = admin.create_topics([t], validate_only=True)[topic_name]
    assert error_code(fut) == confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS
    # CreatePartitions validate_only: accepted, nothing changes.
    fut = admin.create_partitions([NewPartitions(topic_name, 5)], validate_only=True)[topic_name]
    fut.result(TIMEOUT_S)
    assert len(admin.list_topics(topic=topic_name, timeout=TIMEOUT_S).topics[topic_name].partitions) == 2
    fut = admin.create_partitions([NewPartitions(topic_name + "-nope", 5)])[topic_name + "-nope"]
    assert error_code(fut) == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART
    # AlterConfigs validate_only: nothing changes.
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "5000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res], validate_only=True)[res].result(TIMEOUT_S)
    entries = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic_name)])
    entries = list(entries.values())[0].result(TIMEOUT_S)
    assert entries["retention.ms"].value == "604800000"


def test_describe_configs_synonyms_and_unknown_topic(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1, {"retention.ms": "3600000"})
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    entries = admin.describe_configs([res])[res].result(TIMEOUT_S)  # librdkafka always asks for synonyms
    r = entries["retention.ms"]
    syn = [(s.name, s.value, getattr(s.source, "value", s.source)) for s in r.synonyms.values()]
    assert syn == [("retention.ms", "3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value),
                   ("log.retention.ms", "604800000", ConfigSource.DEFAULT_CONFIG.value)], syn
    assert not r.is_read_only and not r.is_sensitive
    missing = ConfigResource(ResourceType.TOPIC, topic_name + "-nope")
    assert error_code(admin.describe_configs([missing])[missing]) == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_broker_configs_read_only(broker):
    admin = cf_admin(broker)
    node = admin.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S).nodes[0]
    res = ConfigResource(ResourceType.BROKER, str(node.id))
    entries = admin.describe_configs([res])[res].result(TIMEOUT_S)
    assert entries["node.id"].value == str(node.id)
    assert entries["advertised.listeners"].value == f"PLAINTEXT://127.0.0.1:{broker.port}"
    assert entries["log.retention.ms"].value == "604800000"
    assert all(e.is_read_only for e in entries.values())
    # Broker configs are static: a change is INVALID_CONFIG.
    alter = ConfigResource(ResourceType.BROKER, str(node.id), incremental_configs=[
        ConfigEntry("num.partitions", "3", incremental_operation=AlterConfigOpType.SET)])
    assert error_code(admin.incremental_alter_configs([alter])[alter]) == confluent_kafka.KafkaError.INVALID_CONFIG


def test_incremental_append_and_subtract_on_list_configs(broker, topic_name):
    """KIP-339: APPEND/SUBTRACT work on list configs (cleanup.policy) only."""
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1)

    def alter(key, value, op):
        res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=op)])
        return admin.incremental_alter_configs([res])[res]

    def value(key):
        res = ConfigResource(ResourceType.TOPIC, topic_name)
        return admin.describe_configs([res])[res].result(TIMEOUT_S)[key].value

    alter("cleanup.policy", "compact", AlterConfigOpType.APPEND).result(TIMEOUT_S)
    assert value("cleanup.policy") == "compact,delete"
    alter("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT).result(TIMEOUT_S)
    assert value("cleanup.policy") == "compact"
    fut = alter("retention.ms", "1", AlterConfigOpType.APPEND)
    assert error_code(fut) == confluent_kafka.KafkaError.INVALID_CONFIG
    fut = alter("no.such.key", None, AlterConfigOpType.DELETE)
    assert error_code(fut) == confluent_kafka.KafkaError.INVALID_CONFIG


def test_delete_records_to_high_watermark_and_unknown_partition(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1)
    cf_produce(broker.bootstrap, topic_name, sample_records(20, partition=0), "none")
    tp = confluent_kafka.TopicPartition(topic_name, 0, confluent_kafka.OFFSET_END)  # -1: the high watermark
    assert admin.delete_records([tp])[tp].result(TIMEOUT_S).low_watermark == 20
    # Deleting below the current start changes nothing.
    tp = confluent_kafka.TopicPartition(topic_name, 0, 5)
    assert admin.delete_records([tp])[tp].result(TIMEOUT_S).low_watermark == 20
    offs = cf_produce(broker.bootstrap, topic_name, sample_records(2, partition=0), "none")
    assert offs == [(0, 20), (0, 21)], "offsets continue after the deleted prefix"
    # librdkafka refuses unknown partitions locally; the broker's answers, on the wire:
    with kwire.connect(broker.addr) as s:
        asks = [(0, 23), (0, -2), (3, 1)]
        assert delete_records_v1(s, 1, topic_name, asks) == [
            (0, -1, ERR_OFFSET_OUT_OF_RANGE),  # beyond the high watermark (22)
            (0, -1, ERR_OFFSET_OUT_OF_RANGE),  # negative other than -1
            (3, -1, ERR_UNKNOWN_TOPIC_OR_PARTITION),
        ]
        assert delete_records_v1(s, 2, topic_name, [(0, 22)]) == [(0, 22, 0)]
        assert delete_records_v1(s, 3, topic_name + "-nope", [(0, 0)]) == [
            (0, -1, ERR_UNKNOWN_TOPIC_OR_PARTITION)]


# ------------------------------------------------------------------ every core sees every change


@pytest.mark.broker_args("--cores", "2")
def test_admin_changes_reach_every_core(broker, topic_name):
    """Metadata and config changes made through one connection's core reach the other core:
    connections are spread over the cores by SO_REUSEPORT, so 16 of them cover both (all 16
    landing on one core has probability 2^-15), and the topic's 8 partitions live on both."""
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 8)
    socks = [kwire.connect(broker.addr) for _ in range(16)]
    try:
        for i, s in enumerate(socks):
            assert metadata_v1_topics(s, 100 + i).get(topic_name) == (0, 8)
        # A config change applies to the live partitions on both cores.
        res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
            ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
        big = kwire.build_batch([(b"k", b"x" * 5000, [])])
        for p in range(8):
            s = socks[p]
            s.sendall(kwire.produce_v7(200 + p, topic_name, p, big))
            cid, body = kwire.recv_frame(s)
            assert cid == 200 + p
            [(_, part, err, _)] = kwire.parse_produce_v7(body)
            assert (part, err) == (p, ERR_MESSAGE_TOO_LARGE)
        admin.create_partitions([NewPartitions(topic_name, 10)])[topic_name].result(TIMEOUT_S)
        for i, s in enumerate(socks):
            assert metadata_v1_topics(s, 300 + i).get(topic_name) == (0, 10)
        admin.delete_topics([topic_name])[topic_name].result(TIMEOUT_S)
        for i, s in enumerate(socks):
            assert topic_name not in metadata_v1_topics(s, 400 + i)
    finally:
        for s in socks:
            s.close()


@pytest.mark.broker_args("--cores", "2")
def test_kcat_and_kafka_python_admin_on_two_cores(broker, topic_name):
    admin = kafka.KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    try:
        admin.create_topics({topic_name: {"num_partitions": 4, "replication_factor": 1}})
        [t] = admin.describe_topics([topic_name])
        assert sorted(p["partition_index"] for p in t["partitions"]) == [0, 1, 2, 3]
        out = kcat("-b", broker.bootstrap, "-L", "-t", topic_name).stdout.decode()
        assert f'topic "{topic_name}" with 4 partitions' in out, out
        admin.create_partitions({topic_name: kafka.admin.NewPartitions(6)})
        out = kcat("-b", broker.bootstrap, "-L", "-t", topic_name).stdout.decode()
        assert f'topic "{topic_name}" with 6 partitions' in out, out
        admin.delete_topics([topic_name])
        out = kcat("-b", broker.bootstrap, "-L").stdout.decode()
        assert topic_name not in out, out
    finally:
        admin.close()


@pytest.mark.broker_args("--cores", "2")
def test_describe_log_dirs_sizes_from_both_cores(broker, topic_name):
    """DescribeLogDirs (KIP-113): one log dir; partition sizes gathered from their owning cores."""
    admin = kafka.KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    try:
        admin.create_topics({topic_name: {"num_partitions": 4, "replication_factor": 1}})
        for p in (0, 1, 2):
            cf_produce(broker.bootstrap, topic_name, sample_records(5, partition=p, seed=p), "none")
        [answer] = admin.describe_log_dirs()
        [log_dir] = answer["log_dirs"]
        assert log_dir["error_code"] == 0
        assert log_dir["log_dir"].endswith("/kafka")
        assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
        [t] = [t for t in log_dir["topics"] if t["name"] == topic_name]
        sizes = {p["partition_index"]: p["partition_size"] for p in t["partitions"]}
        assert sorted(sizes) == [0, 1, 2, 3]
        # Partition 3 got no records: its log holds only its Raft term's no-op batch (the
        # leader's first entry, Raft §5.4.2), far smaller than a partition with records.
        assert all(sizes[p] > 0 for p in (0, 1, 2)) and sizes[3] < 200, sizes
        # Asked partitions only; ones that do not exist are left out.
        [answer] = admin.describe_log_dirs({topic_name: [0, 2, 9]})
        [t] = answer["log_dirs"][0]["topics"]
        assert sorted(p["partition_index"] for p in t["partitions"]) == [0, 2]
    finally:
        admin.close()


@pytest.mark.broker_args("--cores", "2")
def test_flush_configs_apply_to_live_partitions_on_both_cores(broker, topic_name):
    """flush.messages / flush.ms are accepted, changed on a live topic and kept across a restart.
    They no longer delay durability: every partition is a Raft group whose driver flushes what
    it appended in each pass before acks=1 is answered, and the high watermark (ListOffsets
    latest) is the commit index, so acks=1 data is visible at once on partitions of both cores
    (docs/design/replication.md, "Engine integration: partitions on Raft")."""
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 4, {"flush.messages": "1000000", "flush.ms": "600000"})
    batch = kwire.build_batch([(b"k", b"v%d" % i, []) for i in range(3)])
    with kwire.connect(broker.addr) as s:
        for p in range(4):
            s.sendall(kwire.produce_v7(10 + p, topic_name, p, batch, acks=1))
            _, body = kwire.recv_frame(s)
            [(_, _, err, base)] = kwire.parse_produce_v7(body)
            assert (err, base) == (0, 0)
    tps = [confluent_kafka.TopicPartition(topic_name, p) for p in range(4)]

    def latest():
        futs = admin.list_offsets({tp: confluent_kafka.admin.OffsetSpec.latest() for tp in tps})
        return sorted((tp.partition, f.result(TIMEOUT_S).offset) for tp, f in futs.items())

    deadline = time.monotonic() + TIMEOUT_S
    while latest() != [(p, 3) for p in range(4)]:
        assert time.monotonic() < deadline, f"acks=1 data not committed: {latest()}"
        time.sleep(0.1)
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("flush.ms", "0", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
    broker.restart()
    admin = cf_admin(broker)
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    entries = admin.describe_configs([res])[res].result(TIMEOUT_S)
    assert (entries["flush.ms"].value, entries["flush.messages"].value) == ("0", "1000000")


def test_internal_topics_cannot_be_deleted_or_repartitioned(broker):
    """The group coordinator places groups by __consumer_offsets' partition count and replays its
    records: deleting the topic or changing that count is refused with POLICY_VIOLATION, deleting
    its records with INVALID_TOPIC_EXCEPTION (as Kafka's ReplicaManager.deleteRecords)."""
    admin = cf_admin(broker)
    if "__consumer_offsets" not in admin.list_topics(timeout=TIMEOUT_S).topics:
        pytest.skip("this build does not create __consumer_offsets at start")
    n = len(admin.list_topics(topic="__consumer_offsets", timeout=TIMEOUT_S).topics["__consumer_offsets"].partitions)
    fut = admin.delete_topics(["__consumer_offsets"])["__consumer_offsets"]
    assert error_code(fut) == confluent_kafka.KafkaError.POLICY_VIOLATION
    fut = admin.create_partitions([NewPartitions("__consumer_offsets", n + 1)])["__consumer_offsets"]
    assert error_code(fut) == confluent_kafka.KafkaError.POLICY_VIOLATION
    md = admin.list_topics(topic="__consumer_offsets", timeout=TIMEOUT_S)
    assert len(md.topics["__consumer_offsets"].partitions) == n
    # Kafka refuses DeleteRecords on internal topics too (INVALID_TOPIC_EXCEPTION).
    with kwire.connect(broker.addr) as s:
        assert delete_records_v1(s, 1, "__consumer_offsets", [(0, -1)]) == [(0, -1, ERR_INVALID_TOPIC_EXCEPTION)]
