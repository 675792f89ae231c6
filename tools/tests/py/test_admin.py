"""Topic administration through the admin clients users actually run: confluent-kafka's AdminClient
(librdkafka 2.16) and kafka-python 3.0's KafkaAdminClient.

APIs: CreateTopics(19), DeleteTopics(20), DeleteRecords(21), DescribeConfigs(32), AlterConfigs(33),
IncrementalAlterConfigs(44, KIP-339), CreatePartitions(37, KIP-195), DescribeCluster(60, KIP-700),
ListOffsets(2) earliest / latest / by timestamp (KIP-79) / max timestamp (KIP-734), Metadata(3).
"""

import time

import confluent_kafka
import kafka
import kafka.errors as kerr
import pytest
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewPartitions, NewTopic, OffsetSpec, ResourceType)
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import OffsetSpec as KpOffsetSpec
from kafka.admin import OffsetTimestamp as KpOffsetTimestamp
from kafka.structs import TopicPartition as KpTopicPartition

from kclients import (LOG_APPEND_TIME, Rec, rdkafka_conf, cf_consume, cf_produce, expected_got, kp_consume,
                      kp_produce, sample_records)

TIMEOUT_S = 30

# The seven topic configs every Kafka-compatible broker must describe and alter, with a
# non-default value each to set.
ALTERED = {
    "retention.ms": "3600000",
    "retention.bytes": "1073741824",
    "segment.bytes": "16777216",
    "segment.ms": "600000",
    "cleanup.policy": "compact",
    "max.message.bytes": "2097152",
    "message.timestamp.type": "LogAppendTime",
}


def cf_admin(broker):
    return AdminClient(rdkafka_conf(broker.bootstrap))


def kp_admin(broker):
    return kafka.KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_S * 1000)


def cf_create(admin, name, partitions, config=None):
    futs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
                               operation_timeout=TIMEOUT_S)
    futs[name].result(TIMEOUT_S)


def cf_partitions(admin, name):
    md = admin.list_topics(topic=name, timeout=TIMEOUT_S)
    t = md.topics[name]
    assert t.error is None, t.error
    return md, t.partitions


def cf_describe(admin, name):
    res = ConfigResource(ResourceType.TOPIC, name)
    return admin.describe_configs([res])[res].result(TIMEOUT_S)


def source_of(entry):
    """ConfigEntry.source as the wire's int (confluent-kafka hands an int or a ConfigSource)."""
    return getattr(entry.source, "value", entry.source)


def wait_until(pred, what, timeout_s=TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# ------------------------------------------------------------------ confluent-kafka AdminClient


def test_cf_create_topic_with_partitions_then_produce_to_each(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 3, {"retention.ms": "86400000"})
    md, parts = cf_partitions(admin, topic_name)
    assert sorted(parts) == [0, 1, 2]
    node_ids = set(md.brokers)
    assert len(node_ids) == 1
    for p in parts.values():
        assert p.leader in node_ids and p.replicas == [p.leader] and p.isrs == [p.leader]
    for p in range(3):
        recs = sample_records(7, partition=p, seed=p)
        offs = cf_produce(broker.bootstrap, topic_name, recs, "lz4")
        assert offs == [(p, i) for i in range(7)]
        assert cf_consume(broker.bootstrap, topic_name, [p], 7)[:7] == expected_got(recs, offs)
    assert topic_name in admin.list_topics(timeout=TIMEOUT_S).topics


def test_cf_create_topic_errors(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1)
    cases = [
        (NewTopic(topic_name, num_partitions=1, replication_factor=1), confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS),
        (NewTopic(topic_name + "-zero", num_partitions=0, replication_factor=1),
         confluent_kafka.KafkaError.INVALID_PARTITIONS),
        (NewTopic(topic_name + "-rf3", num_partitions=1, replication_factor=3),
         confluent_kafka.KafkaError.INVALID_REPLICATION_FACTOR),
        (NewTopic("bad/name", num_partitions=1, replication_factor=1), confluent_kafka.KafkaError.TOPIC_EXCEPTION),
        (NewTopic(topic_name + "-cfg", num_partitions=1, replication_factor=1, config={"retention.ms": "soon"}),
         confluent_kafka.KafkaError.INVALID_CONFIG),
    ]
    for new_topic, code in cases:
        fut = admin.create_topics([new_topic], operation_timeout=TIMEOUT_S)[new_topic.topic]
        with pytest.raises(confluent_kafka.KafkaException) as ei:
            fut.result(TIMEOUT_S)
        assert ei.value.args[0].code() == code, (new_topic.topic, ei.value)
    md = admin.list_topics(timeout=TIMEOUT_S)
    assert topic_name + "-zero" not in md.topics and topic_name + "-cfg" not in md.topics


def test_cf_describe_configs_defaults(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1)
    entries = cf_describe(admin, topic_name)
    for key in ALTERED:
        assert key in entries, f"{key} missing from DescribeConfigs"
        assert source_of(entries[key]) == ConfigSource.DEFAULT_CONFIG.value, (key, entries[key])
    assert entries["cleanup.policy"].value == "delete"
    assert entries["message.timestamp.type"].value == "CreateTime"
    for key in ("retention.ms", "retention.bytes", "segment.bytes", "segment.ms", "max.message.bytes"):
        int(entries[key].value)


def test_cf_incremental_alter_every_topic_config_and_survive_restart(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1)
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in ALTERED.items()])
    admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
    entries = cf_describe(admin, topic_name)
    for k, v in ALTERED.items():
        assert entries[k].value == v, (k, entries[k].value)
        assert source_of(entries[k]) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, (k, entries[k].source)
    broker.restart()
    admin = cf_admin(broker)
    entries = cf_describe(admin, topic_name)
    assert {k: entries[k].value for k in ALTERED} == ALTERED, "topic configs must persist across a restart"
    # DELETE reverts one key to its default.
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("cleanup.policy", None, incremental_operation=AlterConfigOpType.DELETE)])
    admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
    assert cf_describe(admin, topic_name)["cleanup.policy"].value == "delete"


def test_cf_legacy_alter_configs_replaces_the_set(broker, topic_name):
    """AlterConfigs (33) is not incremental: keys left out return to their defaults."""
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1, {"retention.ms": "1000000"})
    res = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"segment.ms": "700000"})
    admin.alter_configs([res])[res].result(TIMEOUT_S)
    entries = cf_describe(admin, topic_name)
    assert entries["segment.ms"].value == "700000"
    assert entries["retention.ms"].value != "1000000"


def test_cf_alter_configs_rejects_bad_values(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1)
    for key, value in [("retention.ms", "soon"), ("cleanup.policy", "shred"), ("message.timestamp.type", "Now"),
                       ("segment.bytes", "0"), ("no.such.config", "1")]:
        res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
        with pytest.raises(confluent_kafka.KafkaException) as ei:
            admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
        assert ei.value.args[0].code() == confluent_kafka.KafkaError.INVALID_CONFIG, (key, ei.value)
    entries = cf_describe(admin, topic_name)
    assert entries["retention.ms"].value != "soon" and entries["cleanup.policy"].value == "delete"


def test_log_append_time_config_stamps_broker_time(broker, topic_name):
    """message.timestamp.type=LogAppendTime (KIP-32): consumers see the broker's append time."""
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1, {"message.timestamp.type": "LogAppendTime"})
    recs = sample_records(5, partition=0, seed=1, ts_base_ms=1_000_000)  # year 1970: clearly not "now"
    before = int(time.time() * 1000)
    cf_produce(broker.bootstrap, topic_name, recs, "zstd")
    after = int(time.time() * 1000)
    for got in (cf_consume(broker.bootstrap, topic_name, [0], 5), kp_consume(broker.bootstrap, topic_name, [0], 5)):
        for g in got[:5]:
            assert g.timestamp_type == LOG_APPEND_TIME
            assert before - 1000 <= g.timestamp_ms <= after + 1000


def test_max_message_bytes_config_refuses_larger_batches(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1, {"max.message.bytes": "2000"})
    with pytest.raises(AssertionError) as ei:
        cf_produce(broker.bootstrap, topic_name, [Rec(b"k", b"x" * 5000, [], None, 0)], "none",
                   extra={"message.send.max.retries": 0})
    assert "MSG_SIZE_TOO_LARGE" in str(ei.value) or "too large" in str(ei.value).lower(), ei.value
    offs = cf_produce(broker.bootstrap, topic_name, [Rec(b"k", b"x" * 500, [], None, 0)], "none")
    assert offs == [(0, 0)], "the refused batch used no offset"


def test_cf_delete_topic_then_recreate_starts_empty(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 2)
    cf_produce(broker.bootstrap, topic_name, sample_records(10, partition=1), "none")
    admin.delete_topics([topic_name], operation_timeout=TIMEOUT_S)[topic_name].result(TIMEOUT_S)
    wait_until(lambda: topic_name not in admin.list_topics(timeout=TIMEOUT_S).topics, "topic gone from metadata")
    with pytest.raises(confluent_kafka.KafkaException) as ei:
        admin.delete_topics([topic_name], operation_timeout=TIMEOUT_S)[topic_name].result(TIMEOUT_S)
    assert ei.value.args[0].code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART
    broker.restart()
    admin = cf_admin(broker)
    assert topic_name not in admin.list_topics(timeout=TIMEOUT_S).topics, "a deleted topic stays deleted"
    cf_create(admin, topic_name, 1)
    recs = sample_records(3, partition=0, seed=9)
    offs = cf_produce(broker.bootstrap, topic_name, recs, "none")
    assert offs == [(0, 0), (0, 1), (0, 2)]
    assert cf_consume(broker.bootstrap, topic_name, [0], 3)[:3] == expected_got(recs, offs)


def test_cf_create_partitions(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1)
    admin.create_partitions([NewPartitions(topic_name, 4)], operation_timeout=TIMEOUT_S)[topic_name].result(TIMEOUT_S)
    wait_until(lambda: len(cf_partitions(admin, topic_name)[1]) == 4, "4 partitions in metadata")
    recs = sample_records(4, partition=3)
    offs = cf_produce(broker.bootstrap, topic_name, recs, "snappy")
    assert offs == [(3, i) for i in range(4)]
    with pytest.raises(confluent_kafka.KafkaException) as ei:
        admin.create_partitions([NewPartitions(topic_name, 2)], operation_timeout=TIMEOUT_S)[topic_name].result(TIMEOUT_S)
    assert ei.value.args[0].code() == confluent_kafka.KafkaError.INVALID_PARTITIONS
    broker.restart()
    assert len(cf_partitions(cf_admin(broker), topic_name)[1]) == 4


def test_cf_delete_records_moves_log_start_offset(broker, topic_name):
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1)
    recs = sample_records(20, partition=0, seed=4)
    offs = cf_produce(broker.bootstrap, topic_name, recs, "gzip")
    tp = confluent_kafka.TopicPartition(topic_name, 0, 10)
    res = admin.delete_records([tp], operation_timeout=TIMEOUT_S)[tp].result(TIMEOUT_S)
    assert res.low_watermark == 10
    earliest = admin.list_offsets({confluent_kafka.TopicPartition(topic_name, 0): OffsetSpec.earliest()})
    assert list(earliest.values())[0].result(TIMEOUT_S).offset == 10
    want = expected_got(recs, offs)[10:]
    assert cf_consume(broker.bootstrap, topic_name, [0], 10)[:10] == want
    assert kp_consume(broker.bootstrap, topic_name, [0], 10)[:10] == want
    broker.restart()
    admin = cf_admin(broker)
    earliest = admin.list_offsets({confluent_kafka.TopicPartition(topic_name, 0): OffsetSpec.earliest()})
    assert list(earliest.values())[0].result(TIMEOUT_S).offset == 10, "log start offset persists"
    # Beyond the high watermark: OFFSET_OUT_OF_RANGE.
    tp = confluent_kafka.TopicPartition(topic_name, 0, 50)
    with pytest.raises(confluent_kafka.KafkaException) as ei:
        admin.delete_records([tp], operation_timeout=TIMEOUT_S)[tp].result(TIMEOUT_S)
    assert ei.value.args[0].code() == confluent_kafka.KafkaError.OFFSET_OUT_OF_RANGE


def test_cf_describe_cluster(broker, topic_name):
    admin = cf_admin(broker)
    desc = admin.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    assert desc.cluster_id, "cluster id must be non-empty"
    assert len(desc.nodes) == 1
    node = desc.nodes[0]
    assert (node.host, node.port) == ("127.0.0.1", broker.port)
    assert desc.controller is not None and desc.controller.id == node.id
    md = admin.list_topics(timeout=TIMEOUT_S)
    assert md.cluster_id == desc.cluster_id and list(md.brokers) == [node.id]
    broker.restart()
    admin = cf_admin(broker)  # keep the client alive until its future resolves
    again = admin.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    assert again.cluster_id == desc.cluster_id, "the cluster id is stable across restarts"


def test_cf_list_offsets_earliest_latest_by_timestamp(broker, topic_name):
    """ListOffsets (KIP-79 by timestamp, KIP-734 max timestamp)."""
    admin = cf_admin(broker)
    cf_create(admin, topic_name, 1)
    base = 1_700_000_000_000
    recs = sample_records(30, partition=0, seed=8, ts_base_ms=base)  # timestamps base+0 .. base+29
    cf_produce(broker.bootstrap, topic_name, recs[:15], "none")
    cf_produce(broker.bootstrap, topic_name, recs[15:], "lz4")
    tp = confluent_kafka.TopicPartition(topic_name, 0)

    def lo(spec):
        return list(admin.list_offsets({tp: spec}).values())[0].result(TIMEOUT_S)

    assert lo(OffsetSpec.earliest()).offset == 0
    assert lo(OffsetSpec.latest()).offset == 30
    r = lo(OffsetSpec.for_timestamp(base + 20))
    assert (r.offset, r.timestamp) == (20, base + 20), "inside a compressed batch, the exact record"
    assert lo(OffsetSpec.for_timestamp(base - 5)).offset == 0
    assert lo(OffsetSpec.for_timestamp(base + 1000)).offset == -1, "no record at or after: -1"
    r = lo(OffsetSpec.max_timestamp())
    assert (r.offset, r.timestamp) == (29, base + 29)


# ------------------------------------------------------------------ kafka-python KafkaAdminClient


def test_kp_create_list_describe_delete(broker, topic_name):
    admin = kp_admin(broker)
    try:
        admin.create_topics({topic_name: {"num_partitions": 3, "replication_factor": 1,
                                          "configs": {"segment.bytes": "33554432"}}})
        assert topic_name in admin.list_topics()
        [t] = admin.describe_topics([topic_name])
        assert t["error_code"] == 0
        assert sorted(p["partition_index"] for p in t["partitions"]) == [0, 1, 2]
        with pytest.raises(kerr.TopicAlreadyExistsError):
            admin.create_topics({topic_name: {"num_partitions": 1, "replication_factor": 1}})
        cfg = admin.describe_configs([KpConfigResource("TOPIC", topic_name)], config_filter="all")
        entries = cfg["topic"][topic_name]
        assert entries["segment.bytes"]["value"] == "33554432"
        for key in ALTERED:
            assert key in entries, key
        admin.delete_topics([topic_name])
        wait_until(lambda: topic_name not in admin.list_topics(), "topic deleted")
    finally:
        admin.close()


def test_kp_alter_configs_every_key(broker, topic_name):
    admin = kp_admin(broker)
    try:
        admin.create_topics({topic_name: {"num_partitions": 1, "replication_factor": 1}})
        admin.alter_configs([KpConfigResource("TOPIC", topic_name, configs=dict(ALTERED))])
        entries = admin.describe_configs([KpConfigResource("TOPIC", topic_name)], config_filter="all")["topic"][topic_name]
        assert {k: entries[k]["value"] for k in ALTERED} == ALTERED
    finally:
        admin.close()
    # The altered message.timestamp.type applies to kafka-python's own produce.
    recs = sample_records(3, partition=0, ts_base_ms=5_000)
    kp_produce(broker.bootstrap, topic_name, recs, "gzip")
    got = kp_consume(broker.bootstrap, topic_name, [0], 3)
    assert all(g.timestamp_type == LOG_APPEND_TIME and g.timestamp_ms > 1_600_000_000_000 for g in got)


def test_kp_create_partitions_delete_records_list_offsets(broker, topic_name):
    admin = kp_admin(broker)
    try:
        admin.create_topics({topic_name: {"num_partitions": 1, "replication_factor": 1}})
        admin.create_partitions({topic_name: 2})
        wait_until(lambda: len(admin.describe_topics([topic_name])[0]["partitions"]) == 2, "2 partitions")
        base = 1_650_000_000_000
        recs = sample_records(12, partition=1, seed=2, ts_base_ms=base)
        offs = kp_produce(broker.bootstrap, topic_name, recs, "zstd")
        assert offs == [(1, i) for i in range(12)]
        tp = KpTopicPartition(topic_name, 1)
        res = admin.delete_records({tp: 5})
        assert res[tp]["low_watermark"] == 5
        got = admin.list_partition_offsets({tp: KpOffsetSpec.EARLIEST})
        assert got[tp].offset == 5
        assert admin.list_partition_offsets({tp: KpOffsetSpec.LATEST})[tp].offset == 12
        by_ts = admin.list_partition_offsets({tp: KpOffsetTimestamp(base + 7)})[tp]
        assert (by_ts.offset, by_ts.timestamp) == (7, base + 7)
    finally:
        admin.close()
    assert kp_consume(broker.bootstrap, topic_name, [1], 7)[:7] == expected_got(recs, offs)[5:]


def test_kp_describe_cluster(broker):
    admin = kp_admin(broker)
    try:
        desc = admin.describe_cluster()
        assert desc["cluster_id"]
        assert len(desc["brokers"]) == 1
        b = desc["brokers"][0]
        assert (b["host"], b["port"]) == ("127.0.0.1", broker.port)
        assert desc["controller_id"] == b["broker_id"]
    finally:
        admin.close()


def test_kp_consumer_offsets_lookup_matches_admin(broker, topic_name):
    """kafka-python's consumer-side ListOffsets calls (beginning/end/offsets_for_times)."""
    base = 1_600_000_000_000
    recs = sample_records(10, partition=0, seed=6, ts_base_ms=base)
    kp_produce(broker.bootstrap, topic_name, recs, "snappy")
    c = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = KpTopicPartition(topic_name, 0)
        assert c.beginning_offsets([tp])[tp] == 0
        assert c.end_offsets([tp])[tp] == 10
        r = c.offsets_for_times({tp: base + 4})[tp]
        assert (r.offset, r.timestamp) == (4, base + 4)
        assert c.offsets_for_times({tp: base + 100})[tp] is None
    finally:
        c.close()
