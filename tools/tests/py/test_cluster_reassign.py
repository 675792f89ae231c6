"""Partition reassignment and leader election through real Kafka admin clients, on real processes
(clusterlib.py): kafka-python's KafkaAdminClient.alter_partition_reassignments /
list_partition_reassignments (KIP-455; confluent-kafka has no reassignment API) and
confluent-kafka's AdminClient.elect_leaders (KIP-183 / KIP-460). The CLI path with a producer
running is scenario (r) in test_cluster_grow.py.

Run only these: `.venv/bin/pytest tools/tests/py/test_cluster_reassign.py` (debug build).
"""

import time

import pytest
from confluent_kafka import ElectionType, TopicPartition as CfTopicPartition
from confluent_kafka.admin import NewTopic
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import (InvalidReplicationAssignmentError, NoReassignmentInProgressError,
                          UnknownTopicOrPartitionError)

from test_cluster import TIMEOUT_S, admin, topic_view, wait_topic_ready

pytestmark = pytest.mark.cluster


@pytest.mark.cluster_nodes(4)
def test_kafka_python_moves_a_partition_and_gets_kafkas_error_codes(cluster, topic_name):
    """KIP-455 through kafka-python: bad requests get Kafka's per-partition errors (cancel of
    nothing: NO_REASSIGNMENT_IN_PROGRESS, unknown partition, unregistered broker); moving
    partition 0 from [0, 1, 2] to [3, 1, 2] is listed with adding [3] / removing [0] while it
    runs (or has already finished), then every node's Metadata shows [3, 1, 2] with the full ISR,
    nothing is listed any more, node 0 deleted its replica and node 3 holds it."""
    a = admin(cluster)
    a.create_topics([NewTopic(topic_name, num_partitions=2, replica_assignment=[[0, 1, 2], [1, 2, 0]])],
                    operation_timeout=TIMEOUT_S)[topic_name].result(TIMEOUT_S)
    wait_topic_ready(cluster, topic_name, 2, 3)
    kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=30000)
    try:
        p0, p1 = TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)
        errors = kp.alter_partition_reassignments({
            p1: None,
            TopicPartition(topic_name, 5): [0, 1, 2],
        })
        assert errors == {p1: NoReassignmentInProgressError,
                          TopicPartition(topic_name, 5): UnknownTopicOrPartitionError}, errors
        assert kp.alter_partition_reassignments({p0: [9, 1, 2]}) == {p0: InvalidReplicationAssignmentError}
        assert kp.alter_partition_reassignments({p0: [3, 1, 2]}) == {p0: None}
        listed = kp.list_partition_reassignments()
        if listed:  # the move may already be over
            assert listed == {p0: {"replicas": [3, 1, 2, 0], "adding_replicas": [3], "removing_replicas": [0]}}, \
                listed

        def moved(i):
            v = topic_view(cluster, i, topic_name)
            return v is not None and v[0]["replicas"] == [3, 1, 2] and sorted(v[0]["isr"]) == [1, 2, 3] \
                and v[1]["replicas"] == [1, 2, 0]

        for i in range(4):
            cluster.wait_for(lambda i=i: moved(i), f"node {i}: partition 0 on [3, 1, 2] with the full ISR",
                             timeout_s=60)
        deadline = time.time() + 30
        while kp.list_partition_reassignments():
            assert time.time() < deadline, "reassignment still listed"
            time.sleep(0.2)
        cluster.wait_for(lambda: cluster.topic_dirs(0, topic_name) == [f"{topic_name}-1"],
                         "node 0 without partition 0's directory")
        assert cluster.topic_dirs(3, topic_name) == [f"{topic_name}-0"]
    finally:
        kp.close()


def test_confluent_kafka_elect_leaders_preferred_and_unclean(cluster, topic_name):
    """KIP-183 / KIP-460 through confluent-kafka: with leadership moved off partition 0's
    preferred replica, a PREFERRED election brings it back (success), a second one is
    ELECTION_NOT_NEEDED, an unknown partition UNKNOWN_TOPIC_OR_PARTITION, and UNCLEAN on a
    partition with a leader ELECTION_NOT_NEEDED (Raft never elects unclean)."""
    a = admin(cluster)
    a.create_topics([NewTopic(topic_name, num_partitions=1, replica_assignment=[[0, 1, 2]])],
                    operation_timeout=TIMEOUT_S)[topic_name].result(TIMEOUT_S)
    wait_topic_ready(cluster, topic_name, 1, 3)
    cluster.wait_for(lambda: topic_view(cluster, 0, topic_name)[0]["leader"] == 0, "partition 0 led by broker 0")
    tp = CfTopicPartition(topic_name, 0)

    def elect(kind, tps):
        return {(t.topic, t.partition): (t.error.code() if t.error else 0)
                for t in a.elect_leaders(kind, tps).result(TIMEOUT_S)}

    assert elect(ElectionType.PREFERRED, [tp]) == {(topic_name, 0): 84}  # ELECTION_NOT_NEEDED
    assert elect(ElectionType.UNCLEAN, [tp]) == {(topic_name, 0): 84}
    assert elect(ElectionType.PREFERRED, [CfTopicPartition(topic_name, 3)]) == {(topic_name, 3): 3}
    # Reorder the replicas so broker 1 is preferred (KIP-455: same set, done at once), then elect it.
    kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=30000)
    try:
        assert kp.alter_partition_reassignments({TopicPartition(topic_name, 0): [1, 0, 2]}) \
            == {TopicPartition(topic_name, 0): None}
    finally:
        kp.close()
    cluster.wait_for(lambda: all(topic_view(cluster, i, topic_name)[0]["replicas"] == [1, 0, 2] for i in range(3)),
                     "replicas reordered to [1, 0, 2] everywhere")
    result = elect(ElectionType.PREFERRED, [tp])
    # The periodic preferred-leader rebalancing may have moved it first: then not needed.
    assert result in ({(topic_name, 0): 0}, {(topic_name, 0): 84}), result
    cluster.wait_for(lambda: all(topic_view(cluster, i, topic_name)[0]["leader"] == 1 for i in range(3)),
                     "broker 1 leads partition 0 on every node")
