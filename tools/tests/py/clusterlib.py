"""A Freshet cluster of real `freshet start` processes on 127.0.0.1, for the replication tests.

    def test_x(cluster):                       # 3 nodes (node ids 0, 1, 2), fresh data dirs
        cluster.bootstrap                      # "127.0.0.1:k0,127.0.0.1:k1,127.0.0.1:k2"
        cluster.kill(1)                        # SIGKILL: no clean shutdown (crash recovery)
        cluster.pause(2); cluster.resume(2)    # SIGSTOP / SIGCONT: a node that stops answering
        cluster.restart(1)                     # same data dir, same ports; waits for `freshet ready`
        n3 = cluster.add_node()                # node 3 joins the formed cluster (fresh dir and ports,
                                               # --seeds = the running nodes' RPC addresses)
        md = cluster.metadata()                # Metadata v1 asked of one live node (raw wire)
        cluster.wait_for(lambda: ..., "what")  # poll until true, fail with `what` after a timeout

    @pytest.mark.cluster_nodes(1)              # node count (default 3)
    @pytest.mark.cluster_args("--cores", "2")  # extra flags for every node's `freshet start`

Node i runs `freshet start --node-id i --kafka-addr 127.0.0.1:<kafka_i> --rpc-addr
127.0.0.1:<rpc_i> --seeds <every node's rpc addr> --data-dir <root>/n<i>/data --cores 1
--config <root>/node.toml` (DEFAULT_NODE_CONFIG), its log in <root>/n<i>/broker.log. Every node
is spawned first and then waited for: on its first start a node waits until every seed answered
before it prints `freshet ready`.

At teardown the fixture fails the test if a node died on its own (a crash is always a bug; nodes
the test killed do not count), resumes paused nodes, stops every node with SIGTERM (in parallel)
and prints each node's log tail when the test failed. FRESHET_KEEP_DATA=1 keeps everything.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import kwire
from conftest import Broker, BrokerDied, free_port, freshet_bin

API_LIST_OFFSETS = 2
ERR_NOT_LEADER_OR_FOLLOWER = 6
ERR_LEADER_NOT_AVAILABLE = 5
ERR_NOT_ENOUGH_REPLICAS = 19
ERR_INVALID_REPLICATION_FACTOR = 38

# `freshet start` flags every node gets, beyond ids, addresses and data dir (FRESHET_CLUSTER_ARGS
# adds more, space separated).
DEFAULT_NODE_ARGS = ("--cores", "1")

# TOML keys every node gets through `--config <root>/node.toml` (keys without a flag). Preferred-leader
# rebalancing every 1 s instead of 5 s: scenarios waiting for leadership to return take seconds less;
# the rule checked is the same. A test passing its own --config gets none of these.
DEFAULT_NODE_CONFIG = {"leader_rebalance_interval_ms": 1000}


def start_flags():
    """The long flags `freshet start --help` lists (so the harness can use a flag only once the
    binary has it, e.g. Raft timings)."""
    try:
        out = subprocess.run([freshet_bin(), "start", "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {w.rstrip(",") for w in out.split() if w.startswith("--")}


class Node(Broker):
    """One cluster member: a `Broker` with a node id, an RPC port and the seed list."""

    def __init__(self, index, root, kafka_port, rpc_port, seeds, extra_args, selftest=False, node_id=None):
        node_dir = os.path.join(root, f"n{index}")
        data_dir = os.path.join(node_dir, "data")
        os.makedirs(data_dir)
        self.index = index
        self.node_id = index if node_id is None else node_id
        self.rpc_port = rpc_port
        self.paused = False
        self.killed = False  # stopped by the test (SIGKILL/SIGTERM), so not "died on its own"
        args = ["--node-id", str(self.node_id)]
        if not selftest:
            args += ["--rpc-addr", f"127.0.0.1:{rpc_port}"]
        if seeds and not selftest:
            args += ["--seeds", ",".join(seeds)]
        super().__init__(data_dir, port=kafka_port, extra_args=args + list(extra_args))

    @property
    def rpc_addr(self):
        return f"127.0.0.1:{self.rpc_port}"

    def died_on_its_own(self):
        return self.proc is not None and self.proc.poll() is not None


class Cluster:
    """N `freshet start` processes forming one cluster. Node i has Kafka broker id i."""

    def __init__(self, n=3, extra_args=(), root=None):
        self.root = root or tempfile.mkdtemp(prefix="freshet-cluster-")
        self.ports_taken = set()  # every port handed to a node of this cluster (never reused)
        kafka_ports = [self._new_port() for _ in range(n)]
        rpc_ports = [self._new_port() for _ in range(n)]
        seeds = [f"127.0.0.1:{p}" for p in rpc_ports] if n > 1 else []
        flags = start_flags()
        if "--seeds" not in flags or "--rpc-addr" not in flags:
            if not os.environ.get("FRESHET_CLUSTER_SELFTEST"):
                shutil.rmtree(self.root, ignore_errors=True)
                raise BrokerDied(f"{freshet_bin()} has no --rpc-addr/--seeds flags (cluster membership not built "
                                 f"in); FRESHET_CLUSTER_SELFTEST=1 starts independent nodes to test the harness")
            self.selftest = True
        else:
            self.selftest = False
        extra = list(DEFAULT_NODE_ARGS) + list(extra_args) + os.environ.get("FRESHET_CLUSTER_ARGS", "").split()
        if "--config" not in extra and DEFAULT_NODE_CONFIG and not self.selftest:
            config_path = os.path.join(self.root, "node.toml")
            with open(config_path, "w") as f:
                f.writelines(f"{k} = {v!r}\n" if isinstance(v, str) else f"{k} = {v}\n"
                             for k, v in DEFAULT_NODE_CONFIG.items())
            extra += ["--config", config_path]
        self.node_args = extra
        self.nodes = [Node(i, self.root, kafka_ports[i], rpc_ports[i], seeds, extra, self.selftest)
                      for i in range(n)]
        self.founders = n
        self.unclean_stops = []

    def _new_port(self):
        """A free port on 127.0.0.1 not yet given to any node of this cluster (a stopped node keeps
        its ports for its restart)."""
        while True:
            p = free_port()
            if p not in self.ports_taken:
                self.ports_taken.add(p)
                return p

    def __len__(self):
        return len(self.nodes)

    def __getitem__(self, i):
        return self.nodes[i]

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes)

    def alive(self):
        """Indices of nodes that are running and not paused."""
        return [n.index for n in self.nodes if n.alive() and not n.paused]

    def start(self):
        """Spawns every node, then waits for each one's `freshet ready` line."""
        for n in self.nodes:
            n.spawn()
        for n in self.nodes:
            n.wait_ready()
        return self

    def add_node(self, extra_args=(), seeds=None, node_id=None):
        """Starts one more node on a cluster that already formed: node id = its index (or
        `node_id`), a fresh data dir and fresh ports, `--seeds` = the RPC addresses of the running
        nodes (default; pass `seeds` to choose). It joins (session 3 contract J: it asks the
        controller to register it); returns the Node once it printed `freshet ready`. A node that
        fails to start is stopped, kept in `nodes` (its log tail is printed at teardown) and the
        error (BrokerDied, with the log tail) re-raised."""
        assert not self.selftest, "add_node needs a binary with cluster membership"
        index = len(self.nodes)
        if seeds is None:
            seeds = [n.rpc_addr for n in self.nodes if n.alive()]
        assert seeds, "add_node: no running node to join"
        node = Node(index, self.root, self._new_port(), self._new_port(), list(seeds),
                    self.node_args + list(extra_args), node_id=node_id)
        self.nodes.append(node)
        try:
            node.start()
        except BrokerDied:
            node.killed = True  # reported by the caller's exception, not again as a crash
            node.stop(sig=signal.SIGKILL)
            raise
        return node

    def kill(self, i, sig=signal.SIGKILL):
        """Ends node i with `sig` (SIGKILL by default: no flush, no goodbye) and reaps it."""
        n = self.nodes[i]
        assert n.proc is not None, f"node {i} is not running"
        n.killed = True
        n.stop(sig=sig)
        n.paused = False
        # io_uring tears a dead process's ring down asynchronously; its listening sockets can accept
        # connections for a moment after the exit. "Killed" here means gone: wait for that.
        deadline = time.monotonic() + 10
        while port_open(n.addr) or port_open(("127.0.0.1", n.rpc_port)):
            assert time.monotonic() < deadline, f"node {i}'s ports still accept 10 s after it exited"
            time.sleep(0.05)

    def pause(self, i):
        """SIGSTOP: node i keeps its sockets open but answers nothing until resume(i)."""
        n = self.nodes[i]
        assert n.alive() and not n.paused, f"node {i} is not running"
        n.proc.send_signal(signal.SIGSTOP)
        n.paused = True
        # The signal is delivered asynchronously: wait until every thread is stopped ('T' in /proc), so
        # the test's next request cannot be answered by a node that has not stopped yet.
        deadline = time.monotonic() + 5
        while not process_stopped(n.proc.pid):
            assert time.monotonic() < deadline, f"node {i} not stopped 5 s after SIGSTOP"
            time.sleep(0.01)

    def resume(self, i):
        n = self.nodes[i]
        assert n.paused, f"node {i} is not paused"
        n.proc.send_signal(signal.SIGCONT)
        n.paused = False

    def restart(self, i, sig=signal.SIGTERM):
        """Starts node i again on its data dir and ports (stopping it first with `sig` if it runs)."""
        n = self.nodes[i]
        if n.paused:
            self.resume(i)
        if n.proc is not None:
            n.killed = True
            n.stop(sig=sig)
        n.start()
        n.killed = False
        return n

    def stop_all(self, timeout_s=10):
        """SIGTERM to every running node at once, then waits; SIGKILL after timeout_s. Records
        nodes that did not stop cleanly (exit code != 0 or needed SIGKILL) in unclean_stops."""
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for n in running:
            if n.paused:
                n.proc.send_signal(signal.SIGCONT)
                n.paused = False
            n.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for n in running:
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
                if n.proc.returncode != 0:
                    self.unclean_stops.append(f"node {n.index} exited with {n.proc.returncode} after SIGTERM")
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()
                self.unclean_stops.append(f"node {n.index} did not stop within {timeout_s}s of SIGTERM (SIGKILLed)")
            n.proc = None
        for n in self.nodes:
            if n.proc is not None:  # died earlier, already reported
                n.proc = None

    def crashed(self):
        """Nodes that exited without the test stopping them: [(index, exit code)]."""
        return [(n.index, n.proc.returncode) for n in self.nodes if n.died_on_its_own()]

    def log_tails(self, lines=80):
        return "\n".join(f"----- node {n.index} log tail ({n.log_path}) -----\n{n.log_tail(lines)}"
                         for n in self.nodes)

    def panics(self):
        return [(n.index, line) for n in self.nodes for line in n.log_text().splitlines() if "panicked at" in line]

    # ------------------------------------------------------------ observing the cluster

    def metadata(self, via=None, timeout_s=5):
        """Metadata v1 (all topics) asked of node `via` (default: the first live node that
        answers). Returns a dict, see parse_metadata_v1."""
        order = [via] if via is not None else self.alive()
        last = None
        for i in order:
            try:
                return metadata_of(self.nodes[i].addr, timeout_s)
            except OSError as e:
                last = e
        raise ConnectionError(f"no node answered Metadata: {last}")

    def cli(self, *args, via=None, timeout_s=60, check=True):
        """Runs the admin CLI `freshet <args> --brokers <bootstrap>` (every node, or node `via`)
        and returns the CompletedProcess (text). check=True fails on a non-zero exit."""
        brokers = self.bootstrap if via is None else self.nodes[via].bootstrap
        proc = subprocess.run([freshet_bin(), *args, "--brokers", brokers], capture_output=True, text=True,
                              timeout=timeout_s)
        if check and proc.returncode != 0:
            raise AssertionError(f"freshet {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}"
                                 f"\nstderr:\n{proc.stderr[-2000:]}")
        return proc

    def list_offset(self, i, topic, partition, timestamp=-1, timeout_s=5):
        """ListOffsets v1 asked of node i: (error_code, offset). timestamp -1 = latest (the high
        watermark), -2 = earliest."""
        return list_offsets_of(self.nodes[i].addr, topic, partition, timestamp, timeout_s)

    def leader(self, topic, partition, via=None):
        """The leader broker id of a partition as one live node reports it (-1 when unknown)."""
        md = self.metadata(via)
        t = md["topics"].get(topic)
        if t is None or partition not in t["partitions"]:
            return -1
        return t["partitions"][partition]["leader"]

    def topic_dirs(self, i, topic):
        """Directories of `topic`'s partitions in node i's data dir (<data>/kafka/<topic>-<p>)."""
        kafka_dir = os.path.join(self.nodes[i].data_dir, "kafka")
        try:
            names = os.listdir(kafka_dir)
        except FileNotFoundError:
            return []
        return sorted(d for d in names if d.rsplit("-", 1)[0] == topic and d.rsplit("-", 1)[-1].isdigit())

    @staticmethod
    def wait_for(pred, what, timeout_s=20, interval_s=0.2):
        """Polls pred() until it returns a true value (returned); exceptions count as not yet.
        Fails with `what` and the last value/exception after timeout_s."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            try:
                v = pred()
                if v:
                    return v
                last = v
            except Exception as e:  # noqa: BLE001 - a node may be down or electing right now
                last = repr(e)
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last}")
            time.sleep(interval_s)


# ---------------------------------------------------------------- raw wire: Metadata v1, ListOffsets v1


def _request(addr, payload, timeout_s):
    s = kwire.connect(addr, timeout_s)
    try:
        s.settimeout(timeout_s)
        s.sendall(payload)
        _corr, body = kwire.recv_frame(s)
        return body
    finally:
        s.close()


class _Reader:
    def __init__(self, buf):
        self.buf, self.off = buf, 0

    def take(self, fmt):
        vals = struct.unpack_from(fmt, self.buf, self.off)
        self.off += struct.calcsize(fmt)
        return vals if len(vals) > 1 else vals[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.buf[self.off:self.off + n].decode()
        self.off += n
        return s

    def int32s(self):
        return [self.take(">i") for _ in range(self.take(">i"))]


def parse_metadata_v1(body):
    """-> {"brokers": {id: (host, port)}, "controller": id, "topics": {name: {"error": code,
    "partitions": {p: {"error", "leader", "replicas", "isr"}}}}}"""
    r = _Reader(body)
    brokers = {}
    for _ in range(r.take(">i")):
        node_id = r.take(">i")
        host = r.string()
        port = r.take(">i")
        r.string()  # rack
        brokers[node_id] = (host, port)
    controller = r.take(">i")
    topics = {}
    for _ in range(r.take(">i")):
        err = r.take(">h")
        name = r.string()
        r.take(">b")  # is_internal
        parts = {}
        for _ in range(r.take(">i")):
            perr, p, leader = r.take(">hii")
            replicas = r.int32s()
            isr = r.int32s()
            parts[p] = {"error": perr, "leader": leader, "replicas": replicas, "isr": isr}
        topics[name] = {"error": err, "partitions": parts}
    return {"brokers": brokers, "controller": controller, "topics": topics}


def metadata_of(addr, timeout_s=5):
    return parse_metadata_v1(_request(addr, kwire.metadata_v1(1), timeout_s))


def list_offsets_of(addr, topic, partition, timestamp=-1, timeout_s=5):
    body = struct.pack(">i", -1)  # replica_id: a consumer
    body += struct.pack(">i", 1) + kwire.kstring(topic) + struct.pack(">i", 1) + struct.pack(">iq", partition,
                                                                                              timestamp)
    payload = kwire.frame(kwire.header_v1(API_LIST_OFFSETS, 1, 7) + body)
    r = _Reader(_request(addr, payload, timeout_s))
    assert r.take(">i") == 1
    r.string()
    assert r.take(">i") == 1
    _p, err, _ts, offset = r.take(">ihqq")
    return err, offset


def make_cluster(n, extra_args):
    """Builds and starts a cluster; on a start failure stops what started and re-raises."""
    c = Cluster(n, extra_args)
    try:
        c.start()
    except BrokerDied:
        c.stop_all()
        raise
    return c


def cleanup(cluster, failed):
    """Teardown: stop every node; keep logs (not data) of a failed test; FRESHET_KEEP_DATA keeps all."""
    cluster.stop_all()
    if os.environ.get("FRESHET_KEEP_DATA"):
        print(f"cluster data kept in {cluster.root}")
    elif failed:
        for n in cluster.nodes:
            shutil.rmtree(n.data_dir, ignore_errors=True)
        print(f"cluster logs kept in {cluster.root}/n*/broker.log")
    else:
        shutil.rmtree(cluster.root, ignore_errors=True)


def process_stopped(pid):
    """Every thread of process `pid` is in state T (stopped) per /proc/<pid>/task/*/stat."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        states = []
        for t in tids:
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return False
    return bool(states) and all(st in ("T", "t") for st in states)


def port_open(addr):
    try:
        socket.create_connection(addr, timeout=1).close()
        return True
    except OSError:
        return False
