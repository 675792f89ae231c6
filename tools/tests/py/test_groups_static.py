"""Static membership (KIP-345): a restarted member keeps its partitions without a rebalance.

Scenario: two librdkafka members with group.instance.id. Member b's process is SIGKILLed (static
members never send LeaveGroup) and restarted with the same instance id well within its session
timeout. The broker hands b's entry to the new process under a new member id: b gets back the
same partitions, and a sees no revocation or new assignment (no new generation), even after
more than one session timeout has passed.
"""

import time

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

from groups_util import GROUP_BROKER_ARGS, Member, create_topic, wait_until
from kclients import unique_group

PARTITIONS = 4
SESSION_MS = 6000


@pytest.mark.broker_args(*GROUP_BROKER_ARGS)
def test_static_member_restart_keeps_partitions_without_rebalance(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    group = unique_group()
    a = Member("a", "confluent", broker.bootstrap, group, topic_name, SESSION_MS, instance_id="inst-a")
    b = Member("b", "confluent", broker.bootstrap, group, topic_name, SESSION_MS, instance_id="inst-b")
    try:
        a.start()
        wait_until(lambda: a.assignment() == set(range(PARTITIONS)), 30, "a to own every partition")
        b.start()
        wait_until(lambda: a.assignment() and b.assignment()
                   and a.assignment() | b.assignment() == set(range(PARTITIONS)), 30,
                   f"a and b to share the partitions: {a.assignment()} {b.assignment()}")
        a_events_before = len([e for e in a.events() if e["ev"] in ("assign", "revoke")])
        b_parts = b.assignment()
        b_old_id = [e for e in b.events() if e["ev"] == "assign"][-1]["member"]

        b.kill()
        time.sleep(1)
        b.start()
        wait_until(lambda: len([e for e in b.events() if e["ev"] == "assign"]) >= 2, 20,
                   "the restarted b to be assigned")
        assert b.assignment() == b_parts, "the restarted static member gets its old partitions back"
        # Wait past the old incarnation's session timeout: nothing may happen to a.
        time.sleep(SESSION_MS / 1000 + 1)
        a_events_after = len([e for e in a.events() if e["ev"] in ("assign", "revoke")])
        assert a_events_after == a_events_before, f"a saw a rebalance: {a.events()[-4:]}"
        assert b.assignment() == b_parts
        # The group is Stable with two members; b's entry now carries the new process's id.
        b_new_id = [e for e in b.events() if e["ev"] == "assign"][-1]["member"]
        assert b_new_id != b_old_id
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        d = admin.describe_consumer_groups([group])[group].result(10)
        assert d.state == confluent_kafka.ConsumerGroupState.STABLE
        assert sorted(m.group_instance_id for m in d.members) == ["inst-a", "inst-b"]
        assert b_new_id in {m.member_id for m in d.members}
        assert b_old_id not in {m.member_id for m in d.members}
    finally:
        a.stop_quietly()
        b.stop_quietly()
