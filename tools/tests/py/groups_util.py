"""Helpers for the consumer-group tests: member subprocesses and their event logs."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# Broker flags for group tests: no initial rebalance delay (KIP-134) and short sessions allowed.
GROUP_BROKER_ARGS = ("--group-initial-rebalance-delay-ms", "0", "--group-min-session-timeout-ms", "1000")


class Member:
    """A group_member.py subprocess; `events()` reads what it wrote so far."""

    def __init__(self, name, client, bootstrap, group, topic, session_ms=3000, instance_id=None, workdir=None,
                 strategy=None):
        self.name = name
        self.workdir = workdir or tempfile.mkdtemp(prefix=f"member-{name}-")
        self.out = os.path.join(self.workdir, f"{name}.jsonl")
        self.stop_file = os.path.join(self.workdir, f"{name}.stop")
        self.log = os.path.join(self.workdir, f"{name}.log")
        self.args = [sys.executable, os.path.join(HERE, "group_member.py"), "--client", client, "--bootstrap",
                     bootstrap, "--group", group, "--topic", topic, "--out", self.out, "--stop-file",
                     self.stop_file, "--session-ms", str(session_ms), "--client-id", f"member-{name}"]
        if instance_id:
            self.args += ["--instance-id", instance_id]
        if strategy:
            self.args += ["--strategy", strategy]
        self.proc = None

    def start(self):
        if os.path.exists(self.stop_file):
            os.remove(self.stop_file)
        self.proc = subprocess.Popen(self.args, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        return self

    def leave(self, timeout_s=20):
        """Graceful stop: the client closes (LeaveGroup for a dynamic member)."""
        open(self.stop_file, "w").close()
        code = self.proc.wait(timeout_s)
        assert code == 0, f"member {self.name} exited with {code}:\n{self.log_tail()}"

    def kill(self):
        """SIGKILL: the member disappears without leaving."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def events(self):
        try:
            with open(self.out) as f:
                return [json.loads(line) for line in f if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def assignment(self):
        """The partitions this member owns now (eager: each assign replaces; cooperative: adds)."""
        owned = set()
        for e in self.events():
            if e["ev"] == "assign":
                owned = owned | set(e["parts"]) if e.get("incremental") else set(e["parts"])
            elif e["ev"] == "revoke":
                owned -= set(e["parts"])
        return owned

    def records(self):
        return {(e["p"], e["o"]) for e in self.events() if e["ev"] == "rec"}

    def log_tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except FileNotFoundError:
            return ""

    def stop_quietly(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()


def wait_until(cond, timeout_s, what, interval_s=0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def create_topic(bootstrap, name, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name]
    fut.result(30)


def produce_spread(bootstrap, topic, partitions, per_partition, tag):
    """per_partition records to each partition; returns {(partition, offset)} acknowledged."""
    import confluent_kafka

    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    acked, errors = set(), []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.add((msg.partition(), msg.offset()))

    for i in range(per_partition):
        for part in range(partitions):
            p.produce(topic, value=f"{tag}-{part}-{i}".encode(), partition=part, on_delivery=cb)
        p.poll(0)
    assert p.flush(30) == 0, "producer did not deliver everything"
    assert not errors, errors[:5]
    return acked
