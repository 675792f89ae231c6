"""A Freshet cluster that changes shape while clients use it, with real processes (clusterlib.py)
and real clients (confluent-kafka / librdkafka, kcat, the `freshet` admin CLI):

- (j) a node joins a cluster that already formed (KIP-631/KIP-595 observer: the controller's
  voters stay the founders, the new broker registers and replicates the metadata log as a learner,
  Raft §6 / thesis §4.2.1 "catching up new servers"); it gets replicas of new topics and rejoins
  after a crash;
- (r) a partition's replicas move to another broker while a producer writes to it (KIP-455
  AlterPartitionReassignments; Raft §6 joint consensus / thesis §4.3 for the membership change);
- (s) a node that was down while the controller log was truncated catches up from a shipped
  metadata snapshot (Raft §7 InstallSnapshot; KIP-630 FetchSnapshot for the metadata log).

A scenario whose feature is not committed yet is marked xfail (strict=False) naming the helper
and the feature; the mark goes when it lands, and the scenario must pass from then on.

Run only these: `.venv/bin/pytest tools/tests/py/test_cluster_grow.py` (debug build of `freshet`).
"""

import collections
import re
import signal

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from kclients import Rec, cf_produce, kcat, rdkafka_conf
from test_cluster import (TIMEOUT_S, ContinuousProducer, TailingConsumer, admin, check_log_holds_every_ack,
                          create_topic, leaders, topic_view, wait_topic_ready)

pytestmark = pytest.mark.cluster

IDEMPOTENT_ACKS_ALL = {"acks": "all", "linger.ms": 5, "enable.idempotence": True}


def wait_brokers_listed(cluster, nodes=None, timeout_s=TIMEOUT_S):
    """Waits until every live node (or `nodes`) lists exactly the cluster's running nodes as
    brokers in Metadata, each with its Kafka address."""
    nodes = cluster.alive() if nodes is None else nodes
    expected = {n.node_id: ("127.0.0.1", n.port) for n in cluster.nodes if n.alive()}
    for i in nodes:
        cluster.wait_for(lambda i=i: cluster.metadata(via=i)["brokers"] == expected,
                         f"node {i}'s Metadata listing brokers {sorted(expected)}", timeout_s)


def topics_seen_by(cluster, i, prefix):
    """Node i's Metadata for the topics named `prefix`*: {name: {p: replicas}}."""
    md = cluster.metadata(via=i)
    return {name: {p: part["replicas"] for p, part in t["partitions"].items()}
            for name, t in md["topics"].items() if name.startswith(prefix) and t["error"] == 0}


# ---------------------------------------------------------------- (j) a node joins


def test_a_fourth_node_joins_a_running_cluster_and_takes_new_replicas(cluster, topic_name):
    """(j) Three founders form the cluster and hold a topic; node 3 starts with `--seeds` = the
    founders' RPC addresses and joins: every node's Metadata and DescribeCluster (KIP-700) then list
    4 brokers, and node 3 knows the topic created before it came (it replicated the metadata log,
    KIP-631 observer). A new 8-partition RF3 topic created through node 3 places replicas on it like
    on any broker (Kafka's assignReplicasToBrokers: 6 replicas and 2 preferred leaderships each).
    An idempotent acks=all producer (never restarted) writes to all 8 partitions while node 3 is
    SIGKILLed and restarted: it rejoins (still listed, ISR full again = caught up, Raft §5.3). Then a
    founder is SIGKILLed, so partitions on {3, founder, x} commit only with node 3's acknowledgement;
    every acknowledged record is then consumed exactly once, in order (KIP-98), and a consumer that
    read all along saw every offset once (KIP-320)."""
    before = f"{topic_name}-old"
    create_topic(cluster, before, 3, 3)
    old_view = wait_topic_ready(cluster, before, 3, 3)

    n3 = cluster.add_node()
    assert n3.node_id == 3
    wait_brokers_listed(cluster)
    replicas = {p: part["replicas"] for p, part in old_view.items()}
    cluster.wait_for(lambda: {p: part["replicas"] for p, part in (topic_view(cluster, 3, before) or {}).items()}
                     == replicas, f"node 3's Metadata showing the topic created before it joined: {replicas}")
    md = cluster.metadata(via=3)
    assert md["controller"] in (0, 1, 2), f"controller {md['controller']}: the voters are the founders"
    for i in range(4):
        a = AdminClient(rdkafka_conf(cluster[i].bootstrap))  # referenced until the future resolves
        desc = a.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
        assert sorted(n.id for n in desc.nodes) == [0, 1, 2, 3], f"DescribeCluster via node {i}: {desc.nodes}"
    # kcat (librdkafka) bootstrapped from the new node alone sees the whole cluster.
    out = kcat("-b", n3.bootstrap, "-L", "-t", before, "-m", "10").stdout.decode()
    assert re.findall(r"broker (\d+) at", out) and sorted(int(b) for b in re.findall(r"broker (\d+) at", out)) \
        == [0, 1, 2, 3], out

    cluster.cli("topic", "create", topic_name, "--partitions", "8", "--replication-factor", "3", via=3)
    view = wait_topic_ready(cluster, topic_name, 8, 3)
    per_broker = collections.Counter(r for part in view.values() for r in part["replicas"])
    assert per_broker == {0: 6, 1: 6, 2: 6, 3: 6}, f"replicas per broker: {dict(per_broker)}"
    preferred = collections.Counter(part["replicas"][0] for part in view.values())
    assert preferred == {0: 2, 1: 2, 2: 2, 3: 2}, f"preferred leaders per broker: {dict(preferred)}"
    on3 = sorted(p for p, part in view.items() if 3 in part["replicas"])
    cluster.wait_for(lambda: cluster.topic_dirs(3, topic_name) == sorted(f"{topic_name}-{p}" for p in on3),
                     f"node 3 holding the directories of partitions {on3}")

    prod = ContinuousProducer(cluster, topic_name, 8, IDEMPOTENT_ACKS_ALL, keys=16).start()
    tail = TailingConsumer(cluster, topic_name, 8).start()
    try:
        try:
            prod.wait_progress(cluster, "before node 3 fails", per_partition=20)
            cluster.kill(3)
            prod.wait_progress(cluster, "node 3 down", per_partition=20)
            cluster.restart(3)
            wait_brokers_listed(cluster)
            wait_topic_ready(cluster, topic_name, 8, 3)
            prod.wait_progress(cluster, "after node 3 rejoined", per_partition=20)
            controller = cluster.metadata(via=0)["controller"]
            founder = min({0, 1, 2} - {controller})
            cluster.kill(founder)
            prod.wait_progress(cluster, f"node {founder} down: partitions on node 3 and {founder} need node 3",
                               per_partition=30)
        finally:
            undelivered = prod.stop_and_flush(60)
        check_log_holds_every_ack(cluster, topic_name, 8, True, prod, undelivered, tail)
    finally:
        tail.stop()


def test_a_node_id_registered_with_another_address_cannot_join(cluster):
    """(j2) A node that starts with the id of a registered broker (1) but its own RPC address is
    refused (Kafka: a broker id is unique; KRaft refuses a registration whose incarnation differs
    while the old one is live): it exits with a message naming the conflict, and the cluster still
    lists brokers 0, 1, 2 with node 1 at its own address."""
    from conftest import BrokerDied
    with pytest.raises(BrokerDied) as refused:
        cluster.add_node(node_id=1)
    assert "already registered" in str(refused.value), str(refused.value)[-2000:]
    wait_brokers_listed(cluster)


# ---------------------------------------------------------------- (r) partition reassignment


@pytest.mark.cluster_nodes(4)
def test_reassignment_moves_a_partition_to_another_broker_while_producing(cluster, topic_name):
    """(r) Four nodes; partition 0 on [0, 1, 2] (led by its preferred replica 0), partition 1 on
    [1, 2, 0] as a control. While an idempotent acks=all producer and a tailing consumer run,
    `freshet topic reassign --partition 0 --replicas 3,1,2` moves it (KIP-455: add node 3 as a
    learner, catch it up, transfer leadership away from the leaving replica, change membership with
    joint consensus, Raft §6). Afterwards every node's Metadata shows replicas == [3, 1, 2] (the
    target order) with the full ISR and a leader among them, no reassignment is listed, node 0 no
    longer has the partition's directory, node 3 has it, and partition 1 is untouched. Then node 1
    is SIGKILLed: partition 0 commits only with node 3. Every acknowledged record is consumed
    exactly once at its offset, in order (KIP-98), the tailing consumer saw every offset once."""
    a = admin(cluster)
    a.create_topics([NewTopic(topic_name, num_partitions=2, replica_assignment=[[0, 1, 2], [1, 2, 0]])],
                    operation_timeout=TIMEOUT_S)[topic_name].result(TIMEOUT_S)
    view = wait_topic_ready(cluster, topic_name, 2, 3)
    assert [view[0]["replicas"], view[1]["replicas"]] == [[0, 1, 2], [1, 2, 0]], view
    cluster.wait_for(lambda: leaders(cluster, topic_name)[0] == 0,
                     "partition 0 led by its preferred replica 0 (so the move must take leadership off it)")

    prod = ContinuousProducer(cluster, topic_name, 2, IDEMPOTENT_ACKS_ALL).start()
    tail = TailingConsumer(cluster, topic_name, 2).start()
    try:
        try:
            prod.wait_progress(cluster, "before the reassignment", per_partition=50)
            cluster.cli("topic", "reassign", topic_name, "--partition", "0", "--replicas", "3,1,2")

            def moved(i):
                v = topic_view(cluster, i, topic_name)
                p0 = v[0]
                return p0["replicas"] == [3, 1, 2] and sorted(p0["isr"]) == [1, 2, 3] and p0["leader"] in (3, 1, 2) \
                    and v[1]["replicas"] == [1, 2, 0]

            for i in range(4):
                cluster.wait_for(lambda i=i: moved(i), f"node {i}: partition 0 on [3, 1, 2] with the full ISR",
                                 timeout_s=60)
            cluster.wait_for(lambda: cluster.topic_dirs(0, topic_name) == [f"{topic_name}-1"],
                             "node 0 without partition 0's directory")
            assert cluster.topic_dirs(3, topic_name) == [f"{topic_name}-0"]
            listed = cluster.cli("topic", "reassignments").stdout
            assert topic_name not in listed, f"reassignment still listed after it completed:\n{listed}"
            prod.wait_progress(cluster, "after the reassignment", per_partition=50)
            cluster.kill(1)
            prod.wait_progress(cluster, "node 1 down: partition 0 commits on nodes 3 and 2", per_partition=30,
                               partitions=[0])
        finally:
            undelivered = prod.stop_and_flush(60)
        check_log_holds_every_ack(cluster, topic_name, 2, True, prod, undelivered, tail)
    finally:
        tail.stop()


# ---------------------------------------------------------------- (s) controller snapshot shipping

# Lines a node logs (engine/src/controller/service.rs, info level) when it truncates its controller
# log behind a durable snapshot, and when it installs a metadata snapshot fetched from a peer.
COMPACTED_LOG_LINE = re.compile(r"controller log compacted: log start \d+")
INSTALLED_SNAPSHOT_LINE = re.compile(r"controller: installed snapshot revision \d+ from node \d+")


@pytest.mark.cluster_args("--controller-snapshot-commands", "8")
def test_node_behind_a_truncated_controller_log_loads_the_shipped_snapshot(cluster, topic_name):
    """(s) Controller snapshots every 8 commands, and the controller log is truncated behind each
    one. 16 RF3 topics are created; a node that is not the controller leader (a leader stop is
    scenario (e2)'s business) is stopped; then 8 topics are deleted and the other 8 get 3 config
    changes each (32 commands, several truncations on the others, so the entries the stopped node
    lacks are gone: Raft §7). It restarts and must install the metadata snapshot its peers ship it
    (KIP-630), then tail the log: its Metadata equals the others' (same topics, same replicas), the
    deleted topics' directories are gone from its data dir, the others remain; with a third node
    then SIGKILLed, acks=all on a surviving topic commits through the restarted node's replica."""
    prefix = f"{topic_name}-"
    names = [f"{prefix}{j:02d}" for j in range(16)]
    a = admin(cluster)
    for name, fut in a.create_topics([NewTopic(n, num_partitions=1, replication_factor=3) for n in names],
                                     operation_timeout=TIMEOUT_S).items():
        fut.result(TIMEOUT_S)
    for n in names:
        wait_topic_ready(cluster, n, 1, 3)
    controller = cluster.metadata(via=0)["controller"]
    down = max({0, 1, 2} - {controller})
    up = sorted({0, 1, 2} - {down})
    cluster.kill(down, sig=signal.SIGTERM)

    deleted, kept = names[::2], names[1::2]
    for n, fut in a.delete_topics(deleted, operation_timeout=TIMEOUT_S).items():
        fut.result(TIMEOUT_S)
    for round_ in range(3):
        res = [ConfigResource("topic", n, incremental_configs=[
            ConfigEntry("retention.ms", str(3_600_000 + round_), incremental_operation=AlterConfigOpType.SET)])
            for n in kept]
        for r, fut in a.incremental_alter_configs(res, request_timeout=TIMEOUT_S).items():
            fut.result(TIMEOUT_S)
    for i in up:
        assert COMPACTED_LOG_LINE.search(cluster[i].log_text()), \
            f"node {i} logged no controller log truncation after 48 commands at 8 per snapshot"

    expected = topics_seen_by(cluster, up[0], prefix)
    assert sorted(expected) == kept, sorted(expected)
    cluster.restart(down)
    cluster.wait_for(lambda: topics_seen_by(cluster, down, prefix) == expected,
                     f"node {down}'s Metadata equal to node {up[0]}'s for the test's topics")
    this_start = cluster[down].log_text().rsplit("===== start #", 1)[-1]
    assert INSTALLED_SNAPSHOT_LINE.search(this_start), f"node {down} caught up without a shipped controller snapshot"
    cluster.wait_for(lambda: sorted(d for n in names for d in cluster.topic_dirs(down, n)) == [f"{n}-0" for n in kept],
                     f"node {down}'s data dir holding exactly the kept topics' partitions")
    for n in kept:
        wait_topic_ready(cluster, n, 1, 3)
    cluster.kill(up[1])
    offs = cf_produce(cluster.bootstrap, kept[0], [Rec(None, b"through-the-restarted-node", [], None, 0)])
    assert offs == [(0, 0)], offs
