"""Consumer groups with real clients: sharing, leaving, crashing (classic protocol, KIP-62).

Scenario: three members of one group (two librdkafka via confluent-kafka, one kafka-python)
consume a 6-partition topic, committing after processing. They must split the partitions
between them. Then one leaves (LeaveGroup) and one is SIGKILLed (no LeaveGroup: the broker
must notice through the session timeout). The survivor must own every partition within the
session timeout (plus the time to rejoin), and every record produced before, during and after
the changes must be consumed at least once: with commits after processing, none is skipped.
"""

import time

import pytest

from groups_util import GROUP_BROKER_ARGS, Member, create_topic, produce_spread, wait_until
from kclients import unique_group

PARTITIONS = 6
SESSION_MS = 3000


# Mixed clients share the default eager assignors (range, roundrobin); librdkafka alone also
# runs sticky and the incremental cooperative-sticky protocol over the same broker APIs.
SCENARIOS = {
    "mixed-range": (("confluent", None), ("confluent", None), ("kafka-python", None)),
    "librdkafka-cooperative-sticky": (("confluent", "cooperative-sticky"),) * 3,
    "librdkafka-roundrobin": (("confluent", "roundrobin"),) * 3,
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.broker_args(*GROUP_BROKER_ARGS)
def test_three_members_share_partitions_and_survivor_takes_over_after_leave_and_kill(broker, topic_name, scenario):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    produced = produce_spread(broker.bootstrap, topic_name, PARTITIONS, 20, "before")
    group = unique_group()
    members = [
        Member(name, client, broker.bootstrap, group, topic_name, SESSION_MS, strategy=strategy)
        for name, (client, strategy) in zip(("leaver", "survivor", "crasher"), SCENARIOS[scenario])
    ]
    leaver, survivor, crasher = members
    try:
        for m in members:
            m.start()

        def shared():
            owned = [m.assignment() for m in members]
            union = set().union(*owned)
            disjoint = sum(len(o) for o in owned) == len(union)
            return all(owned) and union == set(range(PARTITIONS)) and disjoint

        wait_until(shared, 40, "three members to share all six partitions "
                   + str([(m.name, m.assignment(), m.log_tail(5)) for m in members]))
        produced |= produce_spread(broker.bootstrap, topic_name, PARTITIONS, 10, "shared")

        leaver.leave()
        t_kill = time.monotonic()
        crasher.kill()
        wait_until(lambda: survivor.assignment() == set(range(PARTITIONS)), SESSION_MS / 1000 + 15,
                   f"the survivor to own every partition: {survivor.assignment()}")
        took_s = time.monotonic() - t_kill
        # Detection needs one session timeout; the rejoin is quick (heartbeat interval 300 ms).
        assert took_s < SESSION_MS / 1000 + 6, f"takeover took {took_s:.1f}s"

        produced |= produce_spread(broker.bootstrap, topic_name, PARTITIONS, 10, "after")
        consumed = lambda: set().union(*(m.records() for m in members))  # noqa: E731
        wait_until(lambda: produced <= consumed(), 30,
                   f"every record to be consumed; missing {sorted(produced - consumed())[:10]}")
        survivor.leave()
    finally:
        for m in members:
            m.stop_quietly()
    for m in members:
        errors = [e for e in m.events() if e["ev"] == "error" and not e["msg"].startswith("commit")]
        assert not errors, (m.name, errors[:5])

    # Committed offsets now point past every record: a new member of the group gets nothing old.
    import confluent_kafka

    c = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        tps = [confluent_kafka.TopicPartition(topic_name, p) for p in range(PARTITIONS)]
        committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    finally:
        c.close()
    ends = {}
    for p, o in produced:
        ends[p] = max(ends.get(p, -1), o + 1)
    assert committed == ends
