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
