"""Freshet as a replicated cluster, proven with real processes: three `freshet start` nodes on
127.0.0.1 (the `cluster` fixture, clusterlib.py), real Kafka clients (confluent-kafka /
librdkafka 2.16), and real failures: SIGKILL (crash, no flush), SIGSTOP/SIGCONT (a node that
stops answering while keeping its sockets), restart on the same data dir.

What is checked, and where the rule comes from:
- Every partition is a Raft group (Raft paper, Ongaro & Ousterhout 2014): acks=all answers only
  once a majority has the records (§5.3 commit), so an acknowledged record survives the loss of
  any minority (§5.4 Leader Completeness); a node that comes back catches up through
  AppendEntries' consistency check (§5.3) and only an up-to-date node can be elected (§5.4.1).
- Kafka semantics on top: offsets dense and ordered per partition; acks=all with fewer in-sync
  replicas than min.insync.replicas → NOT_ENOUGH_REPLICAS; idempotent producers see no duplicates
  and no reordering across leader changes (KIP-98); a returning replica truncates a divergent
  suffix instead of serving it (KIP-101 leader epochs, KIP-320 fencing: the Raft §5.3 rule here);
  Metadata shows every broker and each partition's leader, replicas and ISR; the preferred
  replica (replicas[0]) gets leadership back (Kafka's auto.leader.rebalance).

Run only these: `.venv/bin/pytest tools/tests/py -m cluster` (debug build of `freshet`).
"""

import collections
import os
import struct
import threading
import time

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import clusterlib
import kwire
from clusterlib import ERR_NOT_ENOUGH_REPLICAS, ERR_NOT_LEADER_OR_FOLLOWER, Cluster
from kclients import cf_consumer, cf_produce, rdkafka_conf

pytestmark = pytest.mark.cluster

TIMEOUT_S = 30
NODES = {0, 1, 2}


# ---------------------------------------------------------------- helpers


def admin(cluster):
    """An AdminClient on the cluster (keep a reference until its futures resolve: a collected
    client fails them with _DESTROY). Harness self-test mode: node 0 only."""
    return AdminClient(rdkafka_conf(cluster[0].bootstrap if cluster.selftest else cluster.bootstrap))


def create_topic(cluster, name, partitions, rf, config=None):
    a = admin(cluster)
    futs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config or {})],
                           operation_timeout=TIMEOUT_S)
    futs[name].result(TIMEOUT_S)


def create_topic_once_brokers_live(cluster, name, partitions, rf, timeout_s=TIMEOUT_S):
    """create_topic right after a node restarted: until the controller counts it live again (KRaft:
    a returning broker is fenced until it registered and caught up), an RF that needs it gets
    INVALID_REPLICATION_FACTOR (38), as in Kafka; that error alone is retried, for timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return create_topic(cluster, name, partitions, rf)
        except confluent_kafka.KafkaException as e:
            if e.args[0].code() != confluent_kafka.KafkaError.INVALID_REPLICATION_FACTOR or \
                    time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def topic_view(cluster, i, topic):
    """Node i's Metadata for `topic`: {p: {"error", "leader", "replicas", "isr"}} or None."""
    t = cluster.metadata(via=i)["topics"].get(topic)
    return None if t is None or t["error"] != 0 else t["partitions"]


def wait_topic_ready(cluster, topic, partitions, rf, nodes=None, timeout_s=TIMEOUT_S):
    """Waits until every live node (or `nodes`) reports `partitions` partitions, each with `rf`
    distinct replicas, a leader among them, the full ISR, and the same leaders on every node.
    Returns that view."""
    nodes = cluster.alive() if nodes is None else nodes

    def ready():
        views = [topic_view(cluster, i, topic) for i in nodes]
        for v in views:
            if v is None or sorted(v) != list(range(partitions)):
                return False
            for p in v.values():
                if p["error"] != 0 or len(set(p["replicas"])) != rf or p["leader"] not in p["replicas"]:
                    return False
                if sorted(p["isr"]) != sorted(p["replicas"]):
                    return False
        leaders = [{p: v[p]["leader"] for p in v} for v in views]
        return views[0] if all(lv == leaders[0] for lv in leaders) else False

    return cluster.wait_for(ready, f"{topic}: {partitions} partitions x RF{rf}, leaders and full ISR on nodes {nodes}",
                            timeout_s)


def views_of(cluster, topic):
    """Every live node's Metadata of `topic`, one line per node (for failure messages)."""
    return views_at([cluster[i].bootstrap for i in cluster.alive()], topic)


def views_at(addrs, topic):
    """The Metadata of `topic` that each broker address ("host:port") reports, one line each."""
    lines = []
    for a in addrs:
        host, port = a.rsplit(":", 1)
        try:
            md = clusterlib.metadata_of((host, int(port)), timeout_s=2)
            t = md["topics"].get(topic)
            parts = t if t is None else {p: (v["error"], v["leader"], v["replicas"], v["isr"])
                                         for p, v in sorted(t["partitions"].items())}
            lines.append(f"{a} (controller {md['controller']}, brokers {sorted(md['brokers'])}): {parts}")
            if t is not None:
                ends = {p: clusterlib.list_offsets_of((host, int(port)), topic, p, -1, 2) for p in sorted(t["partitions"])}
                lines.append(f"  ListOffsets v1 latest (error, offset) per partition: {ends}")
        except Exception as e:  # noqa: BLE001 - diagnostics only (the node may be down)
            lines.append(f"{a}: {e!r}")
        try:  # what librdkafka parses from this node alone (its own, newer Metadata version)
            md = AdminClient(rdkafka_conf(a)).list_topics(topic=topic, timeout=5)
            t = md.topics.get(topic)
            parts = t if t is None else (t.error, {p: (pm.error, pm.leader, pm.replicas, pm.isrs)
                                                   for p, pm in sorted(t.partitions.items())})
            lines.append(f"  librdkafka via {a} (orig broker {md.orig_broker_id}): {parts}")
        except Exception as e:  # noqa: BLE001
            lines.append(f"  librdkafka via {a}: {e!r}")
    return "Metadata (error, leader, replicas, isr) per partition:\n" + "\n".join(lines)


def leaders(cluster, topic, via=None):
    v = topic_view(cluster, via if via is not None else cluster.alive()[0], topic)
    return {p: v[p]["leader"] for p in v}


def consume_all(bootstrap, topic, partitions, timeout_s=60):
    """Reads every partition from its beginning up to the high watermark the leader reports.
    Returns {p: [(offset, key, value)]} in the order consumed, and {p: (low, high)}."""
    c = cf_consumer(bootstrap)
    try:
        marks = {}

        def watermarks(p):
            try:
                return c.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=5)
            except confluent_kafka.KafkaException:
                # librdkafka's get_watermark_offsets answers from its Metadata cache and never refreshes
                # it: a partition cached leaderless (its first Metadata came mid-election) or led by a
                # broker missing from that response stays _UNKNOWN_PARTITION for metadata.max.age.ms.
                # list_topics sends a Metadata request, as a consumer's fetch path would.
                c.list_topics(topic, timeout=5)
                raise

        for p in partitions:
            try:
                marks[p] = Cluster.wait_for(lambda p=p: watermarks(p), f"watermarks of {topic}-{p}",
                                            timeout_s=TIMEOUT_S)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{views_at(bootstrap.split(','), topic)}") from None
        got = {p: [] for p in partitions}
        c.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in partitions])
        errs = []
        deadline = time.monotonic() + timeout_s

        def done():
            return all(marks[p][1] == 0 or (got[p] and got[p][-1][0] >= marks[p][1] - 1) for p in partitions)

        while not done() and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                errs.append(m.error())
                continue
            got[m.partition()].append((m.offset(), m.key(), m.value()))
        assert done(), (f"consumed {({p: len(got[p]) for p in partitions})} of high watermarks {marks} "
                        f"within {timeout_s}s; errors={errs[:5]}")
        return got, marks
    finally:
        c.close()


class ContinuousProducer:
    """One confluent-kafka producer, never restarted, sending keyed records with a global sequence
    number (value b"<seq>:<key>") to partition key % partitions, ~rate_per_s, from its own thread.
    Delivery reports: acked {seq: (partition, offset)}, errors [(seq, KafkaError)]."""

    def __init__(self, cluster, topic, partitions, conf, keys=12, rate_per_s=800):
        self.topic, self.partitions, self.keys, self.rate_per_s = topic, partitions, keys, rate_per_s
        self.producer = confluent_kafka.Producer(rdkafka_conf(cluster.bootstrap, **conf))
        self.sent = {}  # seq -> (partition, key, value)
        self.acked = {}
        self.errors = []
        self.acked_per_partition = collections.Counter()
        self.thread_error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, seq):
        def cb(err, msg):
            if err is not None:
                self.errors.append((seq, err))
            else:
                self.acked[seq] = (msg.partition(), msg.offset())
                self.acked_per_partition[msg.partition()] += 1
        return cb

    def _run(self):
        try:
            self._send_loop()
        except Exception as e:  # noqa: BLE001 - e.g. a fatal idempotent-producer error; reported by wait_progress
            self.thread_error = e

    def _send_loop(self):
        seq = 0
        tick_s = 0.01
        per_tick = max(1, int(self.rate_per_s * tick_s))
        while not self._stop.is_set():
            for _ in range(per_tick):
                k = seq % self.keys
                key = f"key-{k}".encode()
                value = f"{seq}:{k}".encode()
                p = k % self.partitions
                self.sent[seq] = (p, key, value)
                while True:
                    try:
                        self.producer.produce(self.topic, key=key, value=value, partition=p,
                                              on_delivery=self._on_delivery(seq))
                        break
                    except BufferError:
                        self.producer.poll(0.05)
                seq += 1
            self.producer.poll(tick_s)

    def start(self):
        self._thread.start()
        return self

    def stop_and_flush(self, timeout_s=60):
        """Stops sending, then waits for every delivery report. Returns the count still undelivered."""
        self._stop.set()
        self._thread.join(10)
        return self.producer.flush(timeout_s)

    def wait_progress(self, cluster, what, per_partition=50, partitions=None, timeout_s=TIMEOUT_S):
        """Waits until each partition (default: all) got `per_partition` more acknowledgements."""
        partitions = range(self.partitions) if partitions is None else partitions
        base = {p: self.acked_per_partition[p] for p in partitions}

        def progressed():
            assert self.thread_error is None, f"producer thread stopped: {self.thread_error!r}"
            return all(self.acked_per_partition[p] >= base[p] + per_partition for p in partitions)

        try:
            cluster.wait_for(progressed, f"{what}: {per_partition} more acks on every partition", timeout_s)
        except AssertionError as e:
            now = {p: self.acked_per_partition[p] - base[p] for p in partitions}
            raise AssertionError(f"{e}; new acks per partition: {now}; delivery errors: {len(self.errors)}, "
                                 f"first: {self.errors[:3]}; producer thread: {self.thread_error!r}") from None


class TailingConsumer:
    """One confluent-kafka consumer (assign(), no group) reading every partition from the start
    while the cluster fails around it, from its own thread: got {p: [(offset, value)]}. After a
    leader change librdkafka validates its position with OffsetForLeaderEpoch (KIP-320); a
    consumer only sees committed records, which Raft never truncates, so its stream per partition
    must be exactly 0, 1, 2, ... with no gap, repeat or reset."""

    def __init__(self, cluster, topic, partitions):
        self.topic, self.partitions = topic, partitions
        self.consumer = cf_consumer(cluster.bootstrap)
        self.got = {p: [] for p in range(partitions)}
        self.errors = []
        self.until = None  # {p: high watermark} once the producer is done
        self.thread_error = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.consumer.assign([confluent_kafka.TopicPartition(self.topic, p, confluent_kafka.OFFSET_BEGINNING)
                                  for p in range(self.partitions)])
            while not self._caught_up():
                m = self.consumer.poll(0.2)
                if m is None:
                    continue
                if m.error():
                    self.errors.append(m.error())  # transport errors while nodes die are expected
                    continue
                self.got[m.partition()].append((m.offset(), m.value()))
        except Exception as e:  # noqa: BLE001 - reported by finish()
            self.thread_error = e
        finally:
            self.consumer.close()

    def _caught_up(self):
        until = self.until
        return until is not None and all(h == 0 or (self.got[p] and self.got[p][-1][0] >= h - 1)
                                         for p, h in until.items())

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        """Ends the thread at once (a failing test must not leave it polling)."""
        if self._thread.is_alive():
            self.until = {}
            self._thread.join(5)

    def finish(self, high_watermarks, timeout_s=TIMEOUT_S):
        """Lets the consumer run until it reached every high watermark (or timeout_s)."""
        self.until = dict(high_watermarks)
        self._thread.join(timeout_s)
        assert self.thread_error is None, f"tailing consumer failed: {self.thread_error!r}"
        assert not self._thread.is_alive(), (
            f"tailing consumer did not reach the high watermarks {self.until} within {timeout_s}s: at "
            f"{({p: (g[-1][0] if g else None) for p, g in self.got.items()})}; errors: {self.errors[:5]}")


def produce_one(cluster, topic, partition, value, conf, timeout_s=15):
    """Produces one record with a fresh producer; returns (error or None, offset or None)."""
    p = confluent_kafka.Producer(rdkafka_conf(cluster.bootstrap, **conf))
    out = []
    p.produce(topic, value=value, partition=partition, on_delivery=lambda err, msg: out.append((err, msg.offset())))
    p.flush(timeout_s)
    p.purge()
    p.flush(1)
    return out[0] if out else ("no delivery report", None)


# ---------------------------------------------------------------- (a) metadata


def test_rf3_topic_metadata_shows_three_brokers_replicas_leaders_and_isr(cluster, topic_name):
    """(a) 3 nodes, CreateTopics 6 partitions x RF3 through AdminClient: every node's Metadata lists
    the 3 brokers with their Kafka addresses; each partition has 3 distinct replicas, a leader among
    them and the full ISR; every node reports the same leaders; preferred leaders (replicas[0]) are
    spread evenly (Kafka's assignReplicasToBrokers: each broker first for 6/3 = 2 partitions);
    DescribeCluster (KIP-700) shows the 3 nodes and a controller; records round-trip."""
    create_topic(cluster, topic_name, 6, 3)
    view = wait_topic_ready(cluster, topic_name, 6, 3)
    for i in range(3):
        md = cluster.metadata(via=i)
        assert md["brokers"] == {n.node_id: ("127.0.0.1", n.port) for n in cluster.nodes}, md["brokers"]
        assert md["controller"] in NODES, md["controller"]
    for p, part in view.items():
        assert set(part["replicas"]) == NODES, (p, part)
    preferred = collections.Counter(part["replicas"][0] for part in view.values())
    assert preferred == {0: 2, 1: 2, 2: 2}, f"preferred leaders not spread: {dict(preferred)}"

    # The client's own view (librdkafka) agrees.
    a = admin(cluster)
    md = a.list_topics(topic=topic_name, timeout=TIMEOUT_S)
    assert sorted(md.brokers) == [0, 1, 2]
    for p, pm in md.topics[topic_name].partitions.items():
        assert sorted(pm.replicas) == [0, 1, 2], (p, pm.replicas)
        assert pm.leader in NODES
    desc = a.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    assert sorted(n.id for n in desc.nodes) == [0, 1, 2]
    assert desc.controller is not None and desc.controller.id in NODES

    recs = [(p, f"a-{p}-{j}".encode()) for p in range(6) for j in range(5)]
    p = confluent_kafka.Producer(rdkafka_conf(cluster.bootstrap, acks="all"))
    acked = {}
    for part, v in recs:
        p.produce(topic_name, value=v, partition=part,
                  on_delivery=lambda err, msg: acked.__setitem__(msg.value(), (err, msg.offset())))
    assert p.flush(TIMEOUT_S) == 0
    assert all(err is None for err, _ in acked.values()), acked
    got, marks = consume_all(cluster.bootstrap, topic_name, range(6))
    for part in range(6):
        assert [o for o, _, _ in got[part]] == [0, 1, 2, 3, 4]
        assert [v for _, _, v in got[part]] == [f"a-{part}-{j}".encode() for j in range(5)]


# ---------------------------------------------------------------- (b) acks=all through failures


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
def test_every_acked_record_survives_leader_kill_pause_and_restart(cluster, topic_name, idempotent):
    """(b) One producer (acks=all, never restarted) sends keyed, numbered records to 6 RF3
    partitions while: the leader of partition 0 is SIGKILLed; then the new leader of partition 0
    is SIGSTOPped for 3 s (with one node dead, the cluster has no quorum meanwhile) and resumed;
    then the killed node is restarted on its data dir. Afterwards every acknowledged record is
    consumed at the offset it was acknowledged at, offsets are dense from 0 to the high watermark,
    acknowledged records are in send order per partition, and the log holds only records that
    were sent (Raft §5.3 commit + §5.4 Leader Completeness: acknowledged = committed = kept).
    Idempotent (KIP-98): every record acked exactly once and the log has no duplicate and no
    reordering across leader changes. Not idempotent: max.in.flight=1 (Kafka's ordering condition
    without idempotence); retries may duplicate records, never lose or reorder acknowledged ones.
    A resumed ex-leader must not serve its uncommitted suffix (KIP-101/KIP-320, Raft §5.3), and a
    consumer reading all along (never restarted) sees every offset exactly once, in order (KIP-320
    position validation after each leader change)."""
    partitions = 6
    create_topic(cluster, topic_name, partitions, 3)
    wait_topic_ready(cluster, topic_name, partitions, 3)
    conf = {"acks": "all", "linger.ms": 5, "enable.idempotence": idempotent}
    if not idempotent:
        conf["max.in.flight.requests.per.connection"] = 1
    prod = ContinuousProducer(cluster, topic_name, partitions, conf).start()
    tail = TailingConsumer(cluster, topic_name, partitions).start()
    try:
        _check_every_acked_record(cluster, topic_name, partitions, idempotent, prod, tail)
    finally:
        tail.stop()


def _check_every_acked_record(cluster, topic_name, partitions, idempotent, prod, tail):
    try:
        prod.wait_progress(cluster, "before any failure", per_partition=30)

        killed = leaders(cluster, topic_name)[0]
        cluster.kill(killed)
        prod.wait_progress(cluster, f"after SIGKILL of node {killed} (leader of partition 0)", per_partition=50)

        paused_leader = cluster.wait_for(
            lambda: [l for l in [leaders(cluster, topic_name)[0]] if l in cluster.alive()],
            "a live leader of partition 0")[0]
        cluster.pause(paused_leader)
        time.sleep(3)
        cluster.resume(paused_leader)
        prod.wait_progress(cluster, f"after SIGSTOP/SIGCONT of node {paused_leader}", per_partition=50)

        cluster.restart(killed)
        prod.wait_progress(cluster, f"after restarting node {killed}", per_partition=50)
    finally:
        undelivered = prod.stop_and_flush(60)
    check_log_holds_every_ack(cluster, topic_name, partitions, idempotent, prod, undelivered, tail)


def check_log_holds_every_ack(cluster, topic_name, partitions, idempotent, prod, undelivered, tail=None):
    """After a ContinuousProducer stopped (`undelivered` = what stop_and_flush returned): every
    record got a successful delivery report; consuming every partition from the beginning gives
    dense offsets from 0 to the high watermark, each acknowledged record at the offset it was
    acknowledged at, acknowledged records in send order, only records that were sent, and with an
    idempotent producer (KIP-98) no duplicate and no reordering. A TailingConsumer that read all
    along saw exactly the same offsets and bytes (KIP-320)."""
    assert undelivered == 0, f"{undelivered} records without a delivery report after 60 s; errors={prod.errors[:5]}"
    assert not prod.errors, f"{len(prod.errors)} delivery errors, first: {prod.errors[:5]}"
    assert len(prod.acked) == len(prod.sent)

    got, marks = consume_all(cluster.bootstrap, topic_name, range(partitions))
    if tail is not None:
        tail.finish({p: marks[p][1] for p in range(partitions)})
    for p in range(partitions):
        low, high = marks[p]
        log = got[p]
        offsets = [o for o, _, _ in log]
        assert low == 0, f"partition {p}: log start {low}"
        assert offsets == list(range(high)), f"partition {p}: offsets not dense 0..{high - 1}: " \
                                             f"first gap near {next((i for i, o in enumerate(offsets) if o != i), None)}"
        by_offset = {o: (k, v) for o, k, v in log}
        # Every acknowledgement carries its offset: a KIP-98 retry of a batch still being appended is
        # answered with the original's offsets, as Kafka does (librdkafka reports None after a bare
        # DUPLICATE_SEQUENCE_NUMBER, 46).
        no_offset = {seq for seq, (part, off) in prod.acked.items() if part == p and off is None}
        assert not no_offset, f"partition {p}: records acknowledged without an offset: {sorted(no_offset)[:10]}"
        acked_here = sorted((off, seq) for seq, (part, off) in prod.acked.items() if part == p)
        for off, seq in acked_here:
            _, key, value = prod.sent[seq]
            assert by_offset.get(off) == (key, value), \
                f"partition {p}: record seq {seq} acked at offset {off}, log has {by_offset.get(off)}"
        seqs_acked_order = [seq for _, seq in acked_here]
        assert seqs_acked_order == sorted(seqs_acked_order), f"partition {p}: acknowledged records out of send order"
        log_seqs = []
        for o, k, v in log:
            seq = int(v.split(b":")[0])
            assert prod.sent.get(seq, (None, None, None))[1:] == (k, v), f"partition {p} offset {o}: never sent {v!r}"
            assert prod.sent[seq][0] == p, f"partition {p} offset {o}: record of partition {prod.sent[seq][0]}"
            log_seqs.append(seq)
        if idempotent:
            dups = [s for s, c in collections.Counter(log_seqs).items() if c > 1]
            assert not dups, f"partition {p}: duplicates with an idempotent producer (KIP-98): {dups[:10]}"
            assert log_seqs == sorted(log_seqs), f"partition {p}: log out of send order with an idempotent producer"
            assert len(log_seqs) == len(acked_here), f"partition {p}: {len(log_seqs)} in log, {len(acked_here)} acked"
        if tail is None:
            continue
        tailed = tail.got[p]
        assert [o for o, _ in tailed] == list(range(high)), \
            f"partition {p}: the consumer reading through the failures saw offsets " \
            f"{[o for o, _ in tailed][:5]}... not exactly 0..{high - 1} (gap, repeat or reset; KIP-320)"
        assert [v for _, v in tailed] == [v for _, _, v in log], f"partition {p}: tailing consumer read other bytes"


# ---------------------------------------------------------------- (c) catch-up after restart


def test_restarted_node_catches_up_and_alone_holds_the_latest_records(cluster, topic_name):
    """(c) Node 2 is killed; N1 records are produced (acks=all, committed by nodes 0 and 1);
    node 2 restarts on its data dir and the leaders' ISR takes it back (it matched the commit
    index). Then node 1 is killed and N2 more records are produced: with only nodes 0 and 2 up,
    acks=all can only succeed if node 2 appended them after a log matching the leader's through
    N1 (AppendEntries consistency check, Raft §5.3). Then node 0 is killed and node 1 (which has
    N1 but not N2) restarted: node 2's log is now the only copy of N2 (node 1 can be elected only
    after catching up from node 2, §5.4.1; preferred-leader rebalancing may then move leadership
    to it), so every acknowledged record of N1 and N2 read back, dense and in order, came from
    node 2's log. The follower answers ListOffsets with NOT_LEADER_OR_FOLLOWER; the leader
    reports the full high watermark."""
    partitions = 3
    create_topic(cluster, topic_name, partitions, 3)
    wait_topic_ready(cluster, topic_name, partitions, 3)
    conf = {"acks": "all", "linger.ms": 5}

    def produce(tag, n):
        recs = [(p, f"{tag}-{p}-{j}".encode()) for j in range(n) for p in range(partitions)]
        pr = confluent_kafka.Producer(rdkafka_conf(cluster.bootstrap, **conf))
        out = {}
        for p, v in recs:
            while True:
                try:
                    pr.produce(topic_name, value=v, partition=p,
                               on_delivery=lambda err, msg, v=v: out.__setitem__(v, (err, msg.partition(),
                                                                                      msg.offset())))
                    break
                except BufferError:
                    pr.poll(0.1)
        assert pr.flush(TIMEOUT_S) == 0, f"{tag}: not all delivered within {TIMEOUT_S}s"
        errs = [(v, e) for v, (e, _, _) in out.items() if e is not None]
        assert not errs, f"{tag}: delivery errors {errs[:5]}"
        return {v: (p, o) for v, (_, p, o) in out.items()}

    cluster.kill(2)
    n1 = produce("n1", 200)
    cluster.restart(2)
    cluster.wait_for(lambda: all(2 in part["isr"] for part in topic_view(cluster, 0, topic_name).values()),
                     "node 2 back in every partition's ISR (caught up to the commit index)")
    cluster.kill(1)
    n2 = produce("n2", 200)
    cluster.kill(0)
    cluster.restart(1)
    cluster.wait_for(lambda: all(l in (1, 2) for l in leaders(cluster, topic_name, via=2).values()),
                     "every partition led by node 1 or 2", timeout_s=TIMEOUT_S)

    expected = {**n1, **n2}
    got, marks = consume_all(cluster.bootstrap, topic_name, range(partitions))
    for p in range(partitions):
        log = got[p]
        assert [o for o, _, _ in log] == list(range(marks[p][1])), f"partition {p}: offsets not dense"
        by_offset = {o: v for o, _, v in log}
        mine = sorted((o, v) for v, (pp, o) in expected.items() if pp == p)
        assert len(mine) == 400
        for o, v in mine:
            assert by_offset.get(o) == v, f"partition {p}: acked {v!r} at {o}, node 2 serves {by_offset.get(o)!r}"
        assert [v for _, v in mine] == [f"n1-{p}-{j}".encode() for j in range(200)] + \
               [f"n2-{p}-{j}".encode() for j in range(200)], f"partition {p}: acknowledged order differs"

        def leader_and_follower_answers(p=p):
            lead = leaders(cluster, topic_name, via=2)[p]
            other = ({1, 2} - {lead}).pop()
            return (cluster.list_offset(lead, topic_name, p), cluster.list_offset(other, topic_name, p)[0])

        answers = cluster.wait_for(lambda: (lambda a: a if a[0][0] == 0 else None)(leader_and_follower_answers()),
                                   f"partition {p}: a leader answering ListOffsets")
        assert answers == ((0, marks[p][1]), ERR_NOT_LEADER_OR_FOLLOWER), \
            f"partition {p}: ((leader error, end offset), follower error) = {answers}"


def test_lagging_follower_catches_up_past_a_truncated_log_prefix(cluster, topic_name):
    """(c2) Retention must not break a lagging follower: node 2 is down while 4,000 records
    (1 KiB, 1 MiB segments) are produced and DeleteRecords (KIP-107) moves the log start to 3,000,
    so the leader may drop the entries node 2 lacks (prefix truncation); node 2 returns and must
    catch up anyway (Raft §7: InstallSnapshot when the leader no longer has the entries). Proven
    as in (c): with node 1 down, acks=all needs node 2; then node 2 is the only up-to-date node
    and serves, as leader, the log from 3,000 (the low watermark survives failover, KIP-107) to
    the end, every acknowledged record at its offset (node 1 can lead only after catching up from
    node 2, §5.4.1, and preferred-leader rebalancing may then move leadership to it: either way the
    records read came from node 2's log)."""
    create_topic(cluster, topic_name, 1, 3, {"segment.bytes": str(1 << 20)})
    wait_topic_ready(cluster, topic_name, 1, 3)
    cluster.kill(2)
    value = lambda j: f"{j:08d}".encode() + b"r" * 1016  # noqa: E731
    offs = cf_produce(cluster.bootstrap, topic_name, [_rec(0, value(j)) for j in range(4000)])
    assert offs == [(0, j) for j in range(4000)]
    a = admin(cluster)
    tp = confluent_kafka.TopicPartition(topic_name, 0, 3000)
    assert a.delete_records([tp], operation_timeout=TIMEOUT_S)[tp].result(TIMEOUT_S).low_watermark == 3000
    cluster.restart(2)
    cluster.wait_for(lambda: 2 in topic_view(cluster, 0, topic_name)[0]["isr"],
                     "node 2 back in the ISR (caught up past the truncated prefix)", timeout_s=TIMEOUT_S)
    cluster.kill(1)
    more = cf_produce(cluster.bootstrap, topic_name, [_rec(0, value(j)) for j in range(4000, 4100)])
    assert more == [(0, j) for j in range(4000, 4100)]
    cluster.kill(0)
    cluster.restart(1)
    cluster.wait_for(lambda: leaders(cluster, topic_name, via=2)[0] in (1, 2),
                     "node 2 (the only up-to-date node), or node 1 after catching up from it, leading the partition")
    got, marks = consume_all(cluster.bootstrap, topic_name, [0])
    start, hw = marks[0]
    assert hw == 4100, f"node 2 as leader: (log start, high watermark) = {marks[0]}"
    # KIP-107: the low watermark survives failover exactly (the log start travels through the
    # partition's Raft log as a control entry every replica applies, snapshot catch-up included).
    assert start == 3000, f"node 2 as leader: (log start, high watermark) = {marks[0]}"
    assert [o for o, _, _ in got[0]] == list(range(3000, 4100))
    assert [v for _, _, v in got[0]] == [value(j) for j in range(3000, 4100)]


# ---------------------------------------------------------------- (d) not enough replicas


def test_acks_all_below_min_insync_replicas_gets_not_enough_replicas(cluster, topic_name):
    """(d1) Topic RF3 with min.insync.replicas=3: with a follower SIGKILLed the leader's ISR
    shrinks to 2 and acks=all is refused with NOT_ENOUGH_REPLICAS (19) (Kafka: min.insync.replicas
    applies to acks=all only, so acks=1 still succeeds); once the node is back and caught up,
    acks=all succeeds again."""
    create_topic(cluster, topic_name, 1, 3, {"min.insync.replicas": "3"})
    wait_topic_ready(cluster, topic_name, 1, 3)
    all_conf = {"acks": "all", "enable.idempotence": False, "message.send.max.retries": 0}
    err, off = produce_one(cluster, topic_name, 0, b"before", all_conf)
    assert err is None, f"acks=all with the full ISR: {err}"
    leader = leaders(cluster, topic_name)[0]
    follower = min(NODES - {leader})
    cluster.kill(follower)
    cluster.wait_for(lambda: follower not in topic_view(cluster, leader, topic_name)[0]["isr"],
                     f"ISR without the killed node {follower}")
    seen = []

    def refused():
        e, _ = produce_one(cluster, topic_name, 0, b"short", all_conf)
        seen.append(e)
        return e is not None and e.code() == ERR_NOT_ENOUGH_REPLICAS

    cluster.wait_for(refused, "acks=all refused with NOT_ENOUGH_REPLICAS", timeout_s=20, interval_s=0.5)
    err, _ = produce_one(cluster, topic_name, 0, b"short-again", all_conf)
    assert err is not None and err.code() == ERR_NOT_ENOUGH_REPLICAS, f"second acks=all with ISR 2 < 3: {err}"
    err, _ = produce_one(cluster, topic_name, 0, b"acks-1", {"acks": "1", "enable.idempotence": False})
    assert err is None, f"acks=1 is not subject to min.insync.replicas: {err}"
    cluster.restart(follower)
    cluster.wait_for(lambda: produce_one(cluster, topic_name, 0, b"after", all_conf)[0] is None,
                     "acks=all accepted again after the node returned", timeout_s=TIMEOUT_S, interval_s=0.5)


def test_acks_all_is_not_acknowledged_without_a_majority(cluster, topic_name):
    """(d2) Topic RF3 (min.insync.replicas 1): with both followers SIGKILLed the leader cannot
    commit (Raft §5.3: committed = stored on a majority), so an acks=all record gets no successful
    acknowledgement (an error or the client's timeout). After both nodes restart, acks=all succeeds
    again and the earlier acknowledged record is still there (§5.4)."""
    create_topic(cluster, topic_name, 1, 3)
    wait_topic_ready(cluster, topic_name, 1, 3)
    err, first_off = produce_one(cluster, topic_name, 0, b"first", {"acks": "all"})
    assert err is None, err
    leader = leaders(cluster, topic_name)[0]
    for n in sorted(NODES - {leader}):
        cluster.kill(n)
    err, off = produce_one(cluster, topic_name, 0, b"no-quorum",
                           {"acks": "all", "message.timeout.ms": 6000, "enable.idempotence": False}, timeout_s=10)
    assert err is not None, f"acks=all acknowledged at offset {off} with 2 of 3 replicas down"
    for n in sorted(NODES - {leader}):
        cluster.restart(n)
    err, off = produce_one(cluster, topic_name, 0, b"after", {"acks": "all"}, timeout_s=TIMEOUT_S)
    assert err is None, f"acks=all after the nodes returned: {err}"
    got, marks = consume_all(cluster.bootstrap, topic_name, [0])
    values = {o: v for o, _, v in got[0]}
    assert values[first_off] == b"first"
    assert values[off] == b"after"
    assert [o for o, _, _ in got[0]] == list(range(marks[0][1]))


# ---------------------------------------------------------------- (e) admin


def test_replication_factor_above_node_count_is_invalid(cluster, topic_name):
    """(e1) CreateTopics with replication factor 4 on 3 nodes → INVALID_REPLICATION_FACTOR (38),
    nothing created on any node (Kafka's CreateTopics contract)."""
    a = admin(cluster)
    futs = a.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=4)],
                           operation_timeout=TIMEOUT_S)
    with pytest.raises(confluent_kafka.KafkaException) as e:
        futs[topic_name].result(TIMEOUT_S)
    assert e.value.args[0].code() == confluent_kafka.KafkaError.INVALID_REPLICATION_FACTOR, e.value
    time.sleep(1)
    for i in range(3):
        assert topic_name not in cluster.metadata(via=i)["topics"]
        assert cluster.topic_dirs(i, topic_name) == []


def test_delete_topic_removes_its_replicas_on_every_node(cluster, topic_name):
    """(e2) DeleteTopics of an RF3 topic removes its partition directories on every node, including
    the node that was down during the delete — the controller leader, SIGKILLed just before, so
    the request must reach the newly elected controller (Raft §5.2) — which learns of the delete
    from the controller log when it returns; the name can then be created again, empty."""
    create_topic(cluster, topic_name, 3, 3)
    wait_topic_ready(cluster, topic_name, 3, 3)
    cf_produce(cluster.bootstrap, topic_name, [_rec(p, b"x") for p in range(3)])
    for i in range(3):
        assert cluster.topic_dirs(i, topic_name) == [f"{topic_name}-{p}" for p in range(3)], i
    down = cluster.metadata(via=0)["controller"]
    assert down in NODES, down
    cluster.kill(down)
    a = admin(cluster)
    a.delete_topics([topic_name], operation_timeout=TIMEOUT_S)[topic_name].result(TIMEOUT_S)
    for i in sorted(NODES - {down}):
        cluster.wait_for(lambda i=i: topic_name not in cluster.metadata(via=i)["topics"]
                         and cluster.topic_dirs(i, topic_name) == [],
                         f"topic gone from node {i}'s metadata and data dir")
    cluster.restart(down)
    cluster.wait_for(lambda: topic_name not in cluster.metadata(via=down)["topics"]
                     and cluster.topic_dirs(down, topic_name) == [],
                     f"topic gone from node {down} (down during the delete) after its restart")
    create_topic_once_brokers_live(cluster, topic_name, 1, 3)
    wait_topic_ready(cluster, topic_name, 1, 3)
    offs = cf_produce(cluster.bootstrap, topic_name, [_rec(0, b"again")])
    assert offs == [(0, 0)], f"re-created topic not empty: {offs}"


def _rec(partition, value):
    from kclients import Rec
    return Rec(None, value, [], None, partition)


# ---------------------------------------------------------------- (f) preferred leader


def test_leadership_returns_to_the_preferred_replica(cluster, topic_name):
    """(f) 6 partitions x RF3: leaders settle on the preferred replica (replicas[0]); node 0 is
    SIGKILLed and its partitions move to others; after node 0 restarts and catches up, leadership
    of its preferred partitions returns to it within 20 s (Kafka's preferred-leader rebalance,
    done with Raft leadership transfer)."""
    create_topic(cluster, topic_name, 6, 3)
    view = wait_topic_ready(cluster, topic_name, 6, 3)
    preferred = {p: part["replicas"][0] for p, part in view.items()}

    def on_preferred():
        ls = leaders(cluster, topic_name)
        return ls == preferred or False

    cluster.wait_for(on_preferred, f"every partition led by its preferred replica {preferred}", timeout_s=20)
    mine = [p for p, n in preferred.items() if n == 0]
    assert mine, preferred
    cluster.kill(0)
    cluster.wait_for(lambda: all(leaders(cluster, topic_name, via=1)[p] in (1, 2) for p in mine),
                     f"partitions {mine} led by node 1 or 2 while node 0 is down")
    t0 = time.monotonic()
    cluster.restart(0)
    cluster.wait_for(on_preferred, f"leadership back on preferred replicas {preferred}", timeout_s=20)
    print(f"preferred leadership restored {time.monotonic() - t0:.1f}s after node 0 restarted")


# ---------------------------------------------------------------- the harness itself


def test_harness_pause_stops_answers_and_restart_keeps_data(cluster, topic_name):
    """The fixture's failure tools do what the scenarios assume: a SIGSTOPped node accepts no
    request until SIGCONT (its listen backlog may still complete the TCP handshake); a SIGKILLed
    node refuses connections; restart(i) brings node i back on the same ports and data dir with
    its acknowledged records (durability across a crash)."""
    import clusterlib
    create_topic(cluster, topic_name, 1, 1 if cluster.selftest else 3)
    offs = cf_produce(cluster[0].bootstrap if cluster.selftest else cluster.bootstrap, topic_name,
                      [_rec(0, b"kept")])
    cluster.pause(1)
    with pytest.raises(OSError):
        clusterlib.metadata_of(cluster[1].addr, timeout_s=1)
    cluster.resume(1)
    assert cluster.metadata(via=1)["brokers"]
    cluster.kill(2)
    assert not clusterlib.port_open(cluster[2].addr)
    cluster.restart(2)
    assert cluster.metadata(via=2)["brokers"]
    cluster.kill(0)
    cluster.restart(0)
    boot = cluster[0].bootstrap if cluster.selftest else cluster.bootstrap
    got, marks = consume_all(boot, topic_name, [0])
    assert got[0][0][2] == b"kept" and offs == [(0, 0)]



# ---------------------------------------------------------------- (g) consumer group across a coordinator crash


def java_hash(s):
    """java.lang.String.hashCode (UTF-16 code units), as a signed 32-bit int."""
    h = 0
    for unit in s.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offsets_partition_for(group, partitions=16):
    """Kafka's GroupMetadataManager.partitionFor: Utils.abs(groupId.hashCode) % partitions."""
    h = java_hash(group)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


# Errors a commit may meet while the coordinator fails over (librdkafka rediscovers the coordinator
# on 14/15/16) or the group rebalances after it (22/25/27); anything else fails the test.
COMMIT_RETRIABLE = {
    confluent_kafka.KafkaError.COORDINATOR_LOAD_IN_PROGRESS, confluent_kafka.KafkaError.COORDINATOR_NOT_AVAILABLE,
    confluent_kafka.KafkaError.NOT_COORDINATOR, confluent_kafka.KafkaError.REQUEST_TIMED_OUT,
    confluent_kafka.KafkaError._TIMED_OUT, confluent_kafka.KafkaError._TRANSPORT,
    confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS, confluent_kafka.KafkaError.ILLEGAL_GENERATION,
    confluent_kafka.KafkaError.UNKNOWN_MEMBER_ID, confluent_kafka.KafkaError._WAIT_COORD,
}


def _read_varint(b, at):
    """Zigzag varint (Kafka record fields) at b[at:]: (value, next position)."""
    raw, at = kwire.read_uvarint(b, at)
    return (raw >> 1) ^ -(raw & 1), at


def replica_values(cluster, i, topic, partition):
    """Values of the uncompressed data records in node i's log files of topic-partition, read
    straight from its segment files (v2 batches back to back, zeros after the end; Raft-internal
    control batches skipped), whether the node runs or not. None if it holds no such directory."""
    d = os.path.join(cluster.nodes[i].data_dir, "kafka", f"{topic}-{partition}")
    try:
        names = sorted(f for f in os.listdir(d) if f.endswith(".log"))
    except FileNotFoundError:
        return None
    values = []
    for name in names:
        with open(os.path.join(d, name), "rb") as f:
            b = f.read()
        at = 0
        while at + 61 <= len(b):
            length = struct.unpack_from(">i", b, at + 8)[0]
            if length <= 0 or at + 12 + length > len(b):
                break
            attrs = struct.unpack_from(">h", b, at + 21)[0]
            count = struct.unpack_from(">i", b, at + 57)[0]
            if not attrs & 0x20 and not attrs & 0x07:
                r = at + 61
                for _ in range(count):
                    rec_len, r = _read_varint(b, r)
                    end = r + rec_len
                    r += 1  # attributes
                    _, r = _read_varint(b, r)  # timestamp delta
                    _, r = _read_varint(b, r)  # offset delta
                    klen, r = _read_varint(b, r)
                    r += max(klen, 0)
                    vlen, r = _read_varint(b, r)
                    values.append(b[r:r + vlen] if vlen >= 0 else None)
                    r = end
            at += 12 + length
    return values


def _missing_records_report(cluster, topic, c, tps, acked, got, trail, coord):
    """Why a consumer group member did not get every record: for each missing value its acked
    (partition, offset), where a fresh consumer reading from the beginning finds it, which replicas'
    log files hold it, the offsets this member got around it; the member's assignment, position()
    and committed() per partition."""
    missing = sorted(set(range(len(acked))) - got)
    lines = [f"coordinator node killed: {coord}; missing values (first 10 of {len(missing)}): {missing[:10]}"]
    try:
        lines.append(f"member assignment {[(t.partition, t.offset) for t in c.assignment()]}")
        lines.append(f"member position() {[(t.partition, t.offset) for t in c.position(tps)]}")
        lines.append(f"member committed() {[(t.partition, t.offset) for t in c.committed(tps, timeout=10)]}")
    except Exception as e:  # noqa: BLE001 - a report must not hide the failure it reports
        lines.append(f"member state unavailable: {e!r}")
    try:
        log, marks = consume_all(cluster.bootstrap, topic, range(3))
        lines.append(f"watermarks {marks}")
    except Exception as e:  # noqa: BLE001
        log = {}
        lines.append(f"fresh consumer failed: {e!r}")
    replicas = {}
    for j in missing[:10]:
        p, off = acked[j]
        value = str(j).encode()
        found = [o for o, _, v in log.get(p, []) if v == value]
        if p not in replicas:
            replicas[p] = {i: replica_values(cluster, i, topic, p) for i in range(len(cluster.nodes))}
        on = {i: (None if vals is None else value in vals) for i, vals in replicas[p].items()}
        near = [o for o in trail[p] if off - 3 <= o <= off + 3]
        jumps = [(a, b) for a, b in zip(trail[p], trail[p][1:]) if b != a + 1]
        lines.append(f"value {j}: acked at {topic}-{p} offset {off}; a fresh consumer finds it at {found}; "
                     f"in the log files of node(s) {on}; member got offsets {near} near it; "
                     f"member's offset jumps in partition {p} (from, to): {jumps[:10]}")
    return "\n".join(lines)


def describe_group(cluster, group):
    """DescribeConsumerGroups, retried while the group's coordinator loads or moves (errors 14, 15,
    16 are retriable in Kafka; librdkafka's admin client hands them to the caller)."""
    retriable = {confluent_kafka.KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                 confluent_kafka.KafkaError.COORDINATOR_NOT_AVAILABLE, confluent_kafka.KafkaError.NOT_COORDINATOR}
    deadline = time.monotonic() + TIMEOUT_S
    a = admin(cluster)
    while True:
        try:
            return a.describe_consumer_groups([group], request_timeout=10)[group].result(TIMEOUT_S)
        except confluent_kafka.KafkaException as e:
            err = e.args[0]
            assert err.code() in retriable and time.monotonic() < deadline, f"DescribeConsumerGroups failed: {err}"
            time.sleep(0.2)


@pytest.mark.cluster_args("--group-initial-rebalance-delay-ms", "0")
def test_consumer_group_keeps_committing_after_its_coordinator_is_killed(cluster, topic_name):
    """(g) A consumer group's coordinator is the leader of its __consumer_offsets partition (Kafka's
    partitionFor(group)); that partition is an RF3 Raft group like any other. A consumer commits
    every 100 records; the coordinator's node is SIGKILLed; the SAME consumer keeps consuming and
    committing (librdkafka finds the new coordinator; at-least-once: repeats only after the kill)
    until every record was seen and its last commit succeeded; committed offsets equal the high
    watermarks; a new member of the group then starts at those offsets (nothing re-delivered),
    and after the old node returns a fresh consumer still reads the same committed offsets."""
    group = f"cg-{topic_name}"
    n = 3000
    create_topic(cluster, topic_name, 3, 3)
    wait_topic_ready(cluster, topic_name, 3, 3)
    # Explicit partitions: every partition gets records, so every one has a commit to check.
    acked = cf_produce(cluster.bootstrap, topic_name, [_rec(j % 3, str(j).encode()) for j in range(n)])
    tps = [confluent_kafka.TopicPartition(topic_name, p) for p in range(3)]
    group_conf = {"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}

    before, after = [], []
    seen = [before]  # where consumed values go: `after` from the kill on
    trail = {p: [] for p in range(3)}  # offsets the consumer got, per partition, in order
    uncommitted = 0

    def take(m):
        """Counts a record poll() returned as consumed (its offset is stored for the next commit
        either way: enable.auto.offset.store)."""
        nonlocal uncommitted
        trail[m.partition()].append(m.offset())
        seen[0].append(int(m.value()))
        uncommitted += 1

    def commit(c):
        """Commits every consumed record, retrying while the coordinator moves or the group
        rebalances. The poll between attempts (it serves the rebalance) may return a record: it
        is consumed like any other, never dropped (dropping one loses it: the retried commit
        covers its offset)."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                c.commit(asynchronous=False)
                return
            except confluent_kafka.KafkaException as e:
                err = e.args[0]
                if err.code() == confluent_kafka.KafkaError._NO_OFFSET:
                    return
                assert err.code() in COMMIT_RETRIABLE and time.monotonic() < deadline, f"commit failed: {err}"
                m = c.poll(0.2)
                if m is not None and not m.error():
                    take(m)

    def coordinator():
        """The group's coordinator once FindCoordinator (DescribeConsumerGroups) names the leader
        of its __consumer_offsets partition (preferred-leader rebalancing may move it meanwhile)."""
        leader = cluster.leader("__consumer_offsets", offsets_partition_for(group))
        named = describe_group(cluster, group).coordinator.id
        assert named == leader, f"FindCoordinator says {named}, leader of __consumer_offsets is {leader}"
        return [leader]  # truthy for wait_for, node 0 included

    c = confluent_kafka.Consumer(rdkafka_conf(cluster.bootstrap, **group_conf))
    c.subscribe([topic_name])
    coord = None
    deadline = time.monotonic() + 90
    while len(set(before) | set(after)) < n:
        if time.monotonic() >= deadline:
            raise AssertionError(f"consumed {len(set(before) | set(after))}/{n} distinct records in 90 s\n"
                                 + _missing_records_report(cluster, topic_name, c, tps, acked,
                                                           set(before) | set(after), trail, coord))
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        take(m)
        if uncommitted >= 100:
            commit(c)
            uncommitted = 0
        if coord is None and len(before) >= 1000:
            [coord] = cluster.wait_for(coordinator, "FindCoordinator and Metadata agreeing on the group's coordinator")
            cluster.kill(coord)
            seen[0] = after
    commit(c)
    assert len(before) == len(set(before)), "records repeated before any failure"
    _, marks = consume_all(cluster.bootstrap, topic_name, range(3))
    committed = cluster.wait_for(lambda: c.committed(tps, timeout=10), "committed offsets")
    assert {t.partition: t.offset for t in committed} == {p: marks[p][1] for p in range(3)}
    c.close()

    c2 = confluent_kafka.Consumer(rdkafka_conf(cluster.bootstrap, **group_conf))
    c2.subscribe([topic_name])
    redelivered = []
    cluster.wait_for(lambda: (redelivered.extend(m.value() for m in [c2.poll(0.2)] if m and not m.error())
                              or len(c2.assignment()) == 3), "a new member assigned all 3 partitions")
    end = time.monotonic() + 3
    while time.monotonic() < end:
        m = c2.poll(0.2)
        if m is not None and not m.error():
            redelivered.append(m.value())
    assert not redelivered, f"new member re-read committed records: {redelivered[:5]}"
    desc = describe_group(cluster, group)
    assert desc.coordinator.id in NODES - {coord}, f"coordinator {desc.coordinator.id} after node {coord} died"
    c2.close()

    cluster.restart(coord)
    c3 = confluent_kafka.Consumer(rdkafka_conf(cluster.bootstrap, **group_conf))
    try:
        committed = cluster.wait_for(lambda: c3.committed(tps, timeout=10), "committed offsets after the restart")
        assert {t.partition: t.offset for t in committed} == {p: marks[p][1] for p in range(3)}
    finally:
        c3.close()
