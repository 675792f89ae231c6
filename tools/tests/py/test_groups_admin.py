"""Group admin APIs as admin clients use them: ListGroups, DescribeGroups, OffsetFetch,
OffsetDelete (KIP-496), DeleteGroups, FindCoordinator with batched keys (KIP-699)."""

import confluent_kafka
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from groups_util import GROUP_BROKER_ARGS, create_topic, produce_spread, wait_until
from kclients import unique_group


@pytest.mark.broker_args(*GROUP_BROKER_ARGS)
def test_list_describe_fetch_and_delete_groups(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 2)
    produce_spread(broker.bootstrap, topic_name, 2, 5, "x")
    group = unique_group()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    c = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "client.id": "describe-me", "session.timeout.ms": 3000})
    try:
        c.subscribe([topic_name])
        wait_until(lambda: c.consume(num_messages=10, timeout=0.2) is not None and len(c.assignment()) == 2,
                   30, "assignment")
        c.commit(offsets=[TopicPartition(topic_name, 0, 3), TopicPartition(topic_name, 1, 4)], asynchronous=False)

        listed = admin.list_consumer_groups().result(10)
        states = {g.group_id: g.state for g in listed.valid}
        assert states.get(group) == confluent_kafka.ConsumerGroupState.STABLE

        d = admin.describe_consumer_groups([group])[group].result(10)
        assert d.state == confluent_kafka.ConsumerGroupState.STABLE
        assert d.partition_assignor == "range"
        assert len(d.members) == 1
        m = d.members[0]
        assert m.client_id == "describe-me"
        assert sorted(tp.partition for tp in m.assignment.topic_partitions) == [0, 1]

        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(10)
        assert {tp.partition: tp.offset for tp in res.topic_partitions} == {0: 3, 1: 4}

        # A live group cannot be deleted, nor can offsets of a topic it consumes.
        with pytest.raises(confluent_kafka.KafkaException) as e:
            admin.delete_consumer_groups([group])[group].result(10)
        assert e.value.args[0].code() == confluent_kafka.KafkaError.NON_EMPTY_GROUP
    finally:
        c.close()

    # Empty now: the group can go, with its offsets.
    wait_until(lambda: {g.group_id: g.state for g in admin.list_consumer_groups().result(10).valid}.get(group)
               == confluent_kafka.ConsumerGroupState.EMPTY, 10, "the group to become empty")
    admin.delete_consumer_groups([group])[group].result(10)
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic_name, 0)])])[group].result(10)
    assert [tp.offset for tp in res.topic_partitions] == [confluent_kafka.OFFSET_INVALID]
    with pytest.raises(confluent_kafka.KafkaException) as e:
        admin.delete_consumer_groups([group])[group].result(10)
    assert e.value.args[0].code() == confluent_kafka.KafkaError.GROUP_ID_NOT_FOUND


@pytest.mark.broker_args(*GROUP_BROKER_ARGS)
def test_kafka_python_admin_sees_groups_and_offsets(broker, topic_name):
    import kafka
    from kafka.admin import KafkaAdminClient
    from kafka.structs import OffsetAndMetadata, TopicPartition as KpTP

    create_topic(broker.bootstrap, topic_name, 1)
    groups = [unique_group(), unique_group()]
    for i, g in enumerate(groups):
        k = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=g, enable_auto_commit=False)
        try:
            # Manual commit outside the group protocol (generation -1): creates an Empty group.
            k.commit({KpTP(topic_name, 0): OffsetAndMetadata(7 + i, "meta", -1)})
        finally:
            k.close()
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        listed = {g["group_id"]: g for g in admin.list_groups()}
        for g in groups:
            assert (listed[g]["protocol_type"], listed[g]["group_state"]) == ("", "Empty")
        # One OffsetFetch for both groups (v8+, KIP-709), one with every partition (None).
        offs = admin.list_group_offsets({groups[0]: None, groups[1]: [KpTP(topic_name, 0)]})
        for i, g in enumerate(groups):
            got = offs[g][KpTP(topic_name, 0)]
            assert (got.offset, got.metadata) == (7 + i, "meta")
        described = admin.describe_groups(groups)
        assert [described[g]["group_state"] for g in groups] == ["Empty", "Empty"]
        assert described[groups[0]]["members"] == []
        assert admin.delete_groups(groups) == {g: "OK" for g in groups}
        assert not set(groups) & {g["group_id"] for g in admin.list_groups()}
    finally:
        admin.close()
