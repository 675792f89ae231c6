"""Committed offsets survive a broker restart and a new member resumes from them.

Scenario: a librdkafka consumer in a group reads a 3-partition topic and commits chosen offsets
(OffsetCommit with its generation); it leaves. The broker restarts (the coordinator replays
__consumer_offsets before answering: COORDINATOR_LOAD_IN_PROGRESS meanwhile). A kafka-python
consumer joining the same group starts exactly at the committed offsets, and both clients read
them back with OffsetFetch.
"""

import confluent_kafka
import kafka
import pytest
from kafka.structs import TopicPartition as KpTopicPartition

from groups_util import GROUP_BROKER_ARGS, create_topic, produce_spread, wait_until
from kclients import unique_group

PARTITIONS = 3
COMMIT_AT = {0: 10, 1: 20, 2: 0}


@pytest.mark.broker_args(*GROUP_BROKER_ARGS)
def test_commit_restart_and_resume_from_committed_offsets(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    produce_spread(broker.bootstrap, topic_name, PARTITIONS, 30, "rec")
    group = unique_group()

    c = confluent_kafka.Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 3000, "heartbeat.interval.ms": 300,
    })
    try:
        c.subscribe([topic_name])
        wait_until(lambda: c.consume(num_messages=10, timeout=0.2) and len(c.assignment()) == PARTITIONS, 30,
                   "the consumer to be assigned every partition")
        offsets = [confluent_kafka.TopicPartition(topic_name, p, o) for p, o in COMMIT_AT.items()]
        res = c.commit(offsets=offsets, asynchronous=False)
        assert all(tp.error is None for tp in res), res
        got = c.committed([confluent_kafka.TopicPartition(topic_name, p) for p in range(PARTITIONS)], timeout=10)
        assert {tp.partition: tp.offset for tp in got} == COMMIT_AT
    finally:
        c.close()

    broker.restart()

    k = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False,
                            auto_offset_reset="earliest", session_timeout_ms=3000, heartbeat_interval_ms=300)
    try:
        for p, o in COMMIT_AT.items():
            assert k.committed(KpTopicPartition(topic_name, p)) == o
        k.subscribe([topic_name])
        first = {}

        def all_first():
            for tp, recs in k.poll(timeout_ms=200).items():
                for r in recs:
                    first.setdefault(tp.partition, r.offset)
            return len(first) == PARTITIONS

        wait_until(all_first, 30, f"records from every partition (got firsts {first})")
        assert first == COMMIT_AT, "a new member starts at the committed offsets"
    finally:
        k.close()


def java_hash(s):
    """Java's String.hashCode (over UTF-16 code units, 32-bit wrapping)."""
    b = s.encode("utf-16-be")
    h = 0
    for i in range(0, len(b), 2):
        h = (31 * h + (b[i] << 8 | b[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offsets_partition(group, partitions=16):
    """Kafka's placement: Utils.abs(group.hashCode) % offsets.topic.num.partitions."""
    h = java_hash(group)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


@pytest.mark.broker_args(*GROUP_BROKER_ARGS)
def test_offsets_in_every_offsets_partition_parity_survive_restart(broker, topic_name):
    """Groups whose __consumer_offsets partitions are even and odd (so, with the round-robin
    placement, owned by both cores of a 2-core broker) all come back after a restart."""
    create_topic(broker.bootstrap, topic_name, 1)
    base = unique_group()
    groups = {}
    i = 0
    while len(groups) < 4:
        g = f"{base}-{i}"
        groups.setdefault(offsets_partition(g) % 4, g)
        i += 1
    groups = sorted(groups.values())
    for n, g in enumerate(groups):
        k = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=g, enable_auto_commit=False)
        try:
            k.commit({KpTopicPartition(topic_name, 0): kafka.structs.OffsetAndMetadata(100 + n, "", -1)})
        finally:
            k.close()
    broker.restart()
    for n, g in enumerate(groups):
        k = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=g, enable_auto_commit=False)
        try:
            assert k.committed(KpTopicPartition(topic_name, 0)) == 100 + n, (g, offsets_partition(g))
        finally:
            k.close()


@pytest.mark.broker_args(*GROUP_BROKER_ARGS)
def test_live_member_carries_on_across_a_broker_restart(broker, topic_name):
    """The group's metadata (generation, members, assignment) is replayed from
    __consumer_offsets: a member that stays up while the broker restarts keeps its generation
    and partitions (no rebalance) and keeps consuming; with commits after processing no record
    is lost."""
    from groups_util import Member

    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    produced = produce_spread(broker.bootstrap, topic_name, PARTITIONS, 10, "before")
    m = Member("live", "confluent", broker.bootstrap, unique_group(), topic_name, session_ms=6000)
    try:
        m.start()
        wait_until(lambda: produced <= m.records(), 30, "the member to consume everything")
        broker.restart()
        produced |= produce_spread(broker.bootstrap, topic_name, PARTITIONS, 10, "after")
        wait_until(lambda: produced <= m.records(), 30,
                   f"records produced after the restart; missing {sorted(produced - m.records())[:5]}")
        # The restored group kept the member in its generation: no rejoin, so no new assignment.
        rebalances = [e for e in m.events() if e["ev"] in ("assign", "revoke")]
        assert [e["ev"] for e in rebalances] == ["assign"], rebalances
        m.leave()
    finally:
        m.stop_quietly()
