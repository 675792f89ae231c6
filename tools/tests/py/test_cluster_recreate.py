"""(e3) A topic deleted and re-created under the same name while one replica's node was down, with
real processes (clusterlib.py) and real clients (confluent-kafka / librdkafka).

The re-created topic has a new topic id (KIP-516) and new Raft groups but the same partition
directory names (<data>/kafka/<topic>-<p>): the returning node still holds the dead incarnation's
logs there. It must drop them (their `replica.id` marker names the old topic id and group) and
catch up from the new groups' leaders, so that it holds and serves, as follower and as leader,
only the new records from offset 0 (Raft §5.3 Log Matching against the new group only). The
in-process version of this scenario is engine/tests/topic_recreate.rs.

Run only this: `.venv/bin/pytest tools/tests/py/test_cluster_recreate.py` (debug build of `freshet`).
"""

import os
import struct

import pytest
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from kclients import Rec, cf_produce, rdkafka_conf
from test_cluster import TIMEOUT_S, consume_all, leaders, replica_values, topic_view

pytestmark = pytest.mark.cluster

PARTITIONS = 3
# Partition p's preferred replica (replicas[0]) is node p: once node 2 is back in sync, preferred-
# leader rebalancing (every 1 s in these clusters) makes it the leader of partition 2, so every node
# leads one partition when the records are read back.
ASSIGNMENT = [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
PREFERRED = {p: r[0] for p, r in enumerate(ASSIGNMENT)}
MARKER_BYTES = 34  # engine/src/replica_marker.rs: "FRRI", version u16, topic id [16], group u64, crc32c


def live_admin(cluster, live):
    """An AdminClient bootstrapped from the nodes `live` only (another one may be stopped)."""
    return AdminClient(rdkafka_conf(",".join(cluster[i].bootstrap for i in live)))


def create(cluster, live, topic):
    a = live_admin(cluster, live)
    a.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replica_assignment=ASSIGNMENT)],
                    operation_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)


def topic_id(cluster, live, topic):
    """The topic id (16 bytes, as in the marker) reported in Metadata v12 (KIP-516)."""
    a = live_admin(cluster, live)
    desc = a.describe_topics(TopicCollection([topic]), request_timeout=10)[topic].result(TIMEOUT_S)
    u = desc.topic_id
    return struct.pack(">qq", u.get_most_significant_bits(), u.get_least_significant_bits())


def marker(cluster, i, topic, p):
    """(topic id, Raft group) of the `replica.id` marker in node i's directory of topic-p, or None."""
    path = os.path.join(cluster.nodes[i].data_dir, "kafka", f"{topic}-{p}", "replica.id")
    try:
        with open(path, "rb") as f:
            b = f.read()
    except FileNotFoundError:
        return None
    assert len(b) == MARKER_BYTES and b[:4] == b"FRRI", f"{path}: not a replica marker: {b!r}"
    return b[6:22], struct.unpack_from("<Q", b, 22)[0]


def produce(cluster, live, topic, tag, n):
    """n records per partition, values `<tag>-<p>-<j>`, acks=all; returns {p: [values]}."""
    values = {p: [f"{tag}-{p}-{j}".encode() for j in range(n)] for p in range(PARTITIONS)}
    boot = ",".join(cluster[i].bootstrap for i in live)
    offs = cf_produce(boot, topic, [Rec(None, v, [], None, p) for p in values for v in values[p]])
    assert offs == [(p, j) for p in range(PARTITIONS) for j in range(n)], f"{tag}: offsets {offs}"
    return values


# A stopped node counts as live for 60 s (a failed connection would mark it down at once, so a
# SIGKILLed one is down at once): CreateTopics may then name it in a manual assignment, which Kafka
# (and Freshet, placement_checks.rs) allows only for registered, unfenced brokers.
@pytest.mark.cluster_args("--broker-session-timeout-ms", "60000")
def test_a_topic_recreated_while_a_replica_was_down_holds_only_the_new_records_there(cluster, topic_name):
    """(e3) 3 nodes; topic T (3 partitions x RF3, node p preferred for partition p) gets 30 records
    per partition on every replica. Node D (one that is not the controller, so the controller keeps
    answering) stops (SIGSTOP, still counted live); T is deleted and created again under the same
    name and assignment (new topic id, new groups) and gets 10 new records per partition; D is
    SIGKILLed without having answered anything since it stopped, and restarts on its data dir. Then
    D's partition directories name the new topic id and group, its log files hold exactly the new
    records, and once every partition is led by its preferred replica (D leads one) a consumer reading
    every partition from offset 0 (led by nodes 0, 1 and 2) gets exactly the new records, dense."""
    controller = cluster.metadata(via=0)["controller"]
    down = max({0, 1, 2} - {controller})
    live = sorted({0, 1, 2} - {down})
    create(cluster, live, topic_name)
    old_id = cluster.wait_for(lambda: topic_id(cluster, live, topic_name), "the first incarnation's topic id")
    old = produce(cluster, live, topic_name, "old", 30)
    cluster.wait_for(lambda: all(replica_values(cluster, down, topic_name, p) == old[p] for p in range(PARTITIONS)),
                     f"node {down}'s logs holding the old records")
    old_groups = {p: marker(cluster, down, topic_name, p)[1] for p in range(PARTITIONS)}
    assert all(marker(cluster, down, topic_name, p)[0] == old_id for p in range(PARTITIONS))

    cluster.pause(down)
    a = live_admin(cluster, live)
    a.delete_topics([topic_name], operation_timeout=TIMEOUT_S)[topic_name].result(TIMEOUT_S)
    for i in live:
        cluster.wait_for(lambda i=i: topic_name not in cluster.metadata(via=i)["topics"]
                         and cluster.topic_dirs(i, topic_name) == [],
                         f"the first incarnation gone from node {i}'s metadata and data dir")
    create(cluster, live, topic_name)
    new_id = cluster.wait_for(lambda: topic_id(cluster, live, topic_name), "the new incarnation's topic id")
    assert new_id != old_id, "a re-created topic gets a new topic id (KIP-516)"
    new = produce(cluster, live, topic_name, "new", 10)
    cluster.kill(down)
    # Node D still holds the dead incarnation's directories, logs and markers.
    assert cluster.topic_dirs(down, topic_name) == [f"{topic_name}-{p}" for p in range(PARTITIONS)]
    assert all(replica_values(cluster, down, topic_name, p) == old[p] for p in range(PARTITIONS))

    cluster.restart(down)
    cluster.wait_for(lambda: all(replica_values(cluster, down, topic_name, p) == new[p] for p in range(PARTITIONS)),
                     f"node {down}'s logs holding exactly the new records (none of the old)",
                     timeout_s=TIMEOUT_S)
    for p in range(PARTITIONS):
        got_id, group = marker(cluster, down, topic_name, p)
        assert got_id == new_id, f"partition {p}: node {down}'s marker names topic id {got_id.hex()}, not {new_id.hex()}"
        assert group != old_groups[p], f"partition {p}: node {down}'s marker still names the old group {group}"
        assert marker(cluster, live[0], topic_name, p) == (new_id, group), \
            f"partition {p}: node {live[0]}'s marker differs"
    cluster.wait_for(lambda: all(sorted(part["isr"]) == [0, 1, 2]
                                 for part in topic_view(cluster, live[0], topic_name).values()),
                     f"node {down} back in every partition's ISR")
    cluster.wait_for(lambda: all(leaders(cluster, topic_name, via=i) == PREFERRED for i in range(3)),
                     f"every node reporting the preferred leaders {PREFERRED} (node {down} leads one)",
                     timeout_s=TIMEOUT_S)
    got, marks = consume_all(cluster.bootstrap, topic_name, range(PARTITIONS))
    for p in range(PARTITIONS):
        assert marks[p] == (0, len(new[p])), f"partition {p}: watermarks {marks[p]}, want (0, {len(new[p])})"
        assert [(o, v) for o, _, v in got[p]] == list(enumerate(new[p])), \
            f"partition {p} (led by node {PREFERRED[p]}): read {[(o, v) for o, _, v in got[p]][:5]}..."
