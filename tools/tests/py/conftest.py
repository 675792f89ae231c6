"""Shared pytest fixtures for Freshet's integration tests (real Kafka clients against a live broker).

How to use (for every area adding tests here):

    def test_something(broker):            # a fresh broker, fresh data dir, free port
        p = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
        ...
        broker.restart()                   # same data dir, same port: checks durability
        ...

    @pytest.mark.broker_args("--cores", "2")   # extra flags for `freshet start`
    def test_two_cores(broker): ...

The `broker` fixture is per test (function scope): each test gets its own process and data dir,
so a crash or a corrupted log in one test cannot leak into another. Starting takes well under
a second. At teardown the fixture fails the test with an error if the broker died on its own
(a crash is always a bug), then kills it. When a test fails, the tail of the broker's log is
printed in the report ("Captured stdout teardown").

Environment:
  FRESHET_BIN            broker binary (default: $CARGO_TARGET_DIR or ./target, then debug/freshet)
  FRESHET_READY_TIMEOUT  seconds to wait for the `freshet ready` line (default 30)
  FRESHET_KEEP_DATA=1    keep the temp data dirs and logs (their paths are printed); by default
                         only a failed test's broker log is kept
  FRESHET_ITEST_BUDGET_S wall-clock budget of the whole suite (default 900); later tests then fail
"""

import gc
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

# Raise the open-file limit for this process and the brokers it starts (they inherit it): the
# many-connections test holds 1,000+ sockets on each side.
NOFILE_WANTED = 8192
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft != resource.RLIM_INFINITY and _soft < NOFILE_WANTED:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(NOFILE_WANTED, _hard) if _hard != resource.RLIM_INFINITY
                                               else NOFILE_WANTED, _hard))

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def freshet_bin():
    explicit = os.environ.get("FRESHET_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO_ROOT, "target")
    if not os.path.isabs(target):
        target = os.path.join(REPO_ROOT, target)
    return os.path.join(target, "debug", "freshet")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerDied(Exception):
    pass


class Broker:
    """One `freshet start` process on 127.0.0.1:<port> with its own data dir.

    Attributes: port, bootstrap ("127.0.0.1:port"), data_dir, log_path, proc.
    Methods: start(), stop(sig=SIGTERM), kill(), restart(), alive(), log_text(), log_tail(n).
    """

    def __init__(self, data_dir, port=None, extra_args=(), ready_timeout_s=None):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.ready_timeout_s = ready_timeout_s or float(os.environ.get("FRESHET_READY_TIMEOUT", "30"))
        self.log_path = os.path.join(os.path.dirname(data_dir), "broker.log")
        self.proc = None
        self.starts = 0

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    @property
    def addr(self):
        return ("127.0.0.1", self.port)

    def command(self):
        return [
            freshet_bin(),
            "start",
            "--data-dir",
            self.data_dir,
            "--kafka-addr",
            self.bootstrap,
            *self.extra_args,
        ]

    def start(self):
        """Starts the process and waits for its `freshet ready` line (spawn + wait_ready)."""
        self.spawn()
        return self.wait_ready()

    def spawn(self):
        """Starts the process without waiting (cluster nodes on first start wait for each other
        before they print `freshet ready`, so a cluster spawns every node, then waits)."""
        assert self.proc is None, "broker already running"
        binary = freshet_bin()
        if not os.path.exists(binary):
            pytest.fail(f"broker binary {binary} not found: run `cargo build -p freshet` (or `make itest`)")
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        start_offset = log.tell()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log.close()
        self._ready_offset = start_offset

    def wait_ready(self):
        """Waits for this start's `freshet ready` line, then for the Kafka listener to accept."""
        start_offset = self._ready_offset
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            with open(self.log_path, "rb") as f:
                f.seek(start_offset)
                if b"freshet ready" in f.read():
                    break
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise BrokerDied(f"broker exited with {code} before ready:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                threads = thread_states(self.proc.pid)
                self.kill()
                raise BrokerDied(f"no `freshet ready` line within {self.ready_timeout_s}s:\n{self.log_tail()}\n"
                                 f"----- its threads when given up on (kernel view) -----\n{threads}")
            time.sleep(0.02)
        # The ready line should mean the listener is up; confirm it accepts connections.
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(self.addr, timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout_s=10):
        """Stops the broker (SIGTERM, then SIGKILL after timeout_s). Returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self):
        """SIGKILL: no clean shutdown (crash-recovery scenarios)."""
        return self.stop(sig=signal.SIGKILL)

    def restart(self, sig=signal.SIGTERM):
        """Stops the broker and starts it again on the same data dir and port."""
        self.stop(sig=sig)
        return self.start()

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=60):
        return "\n".join(self.log_text().splitlines()[-lines:])


def thread_states(pid):
    """What each thread of process `pid` is doing, as the kernel sees it (state, CPU ticks, wait
    channel, kernel stack), and the counters of its io_uring and eventfd descriptors: enough to
    tell a busy core from one asleep in io_uring_enter that nothing wakes (a start that hung under
    load, findings.md 18:50). Best effort: Linux /proc only, read without stopping the process."""
    def read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError as e:
            return f"<{e.strerror}>"

    lines = []
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError as e:
        return f"<{e}>"
    for tid in tids:
        t = f"/proc/{pid}/task/{tid}"
        stat = read(f"{t}/stat").rsplit(")", 1)[-1].split()
        state, utime, stime = (stat[0], stat[11], stat[12]) if len(stat) > 12 else ("?", "?", "?")
        lines.append(f"{tid} {read(f'{t}/comm')} state={state} utime={utime} stime={stime} "
                     f"wchan={read(f'{t}/wchan')}")
        lines.extend("    " + s for s in read(f"{t}/stack").splitlines())
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        fds = []
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "io_uring" in target or "eventfd" in target:
            info = " ".join(l for l in read(f"/proc/{pid}/fdinfo/{fd}").splitlines()
                            if l.split(":")[0] in ("SqHead", "SqTail", "CachedSqHead", "CqHead", "CqTail",
                                                   "CachedCqTail", "SQEs", "CQEs", "eventfd-count"))
            lines.append(f"fd {fd} {target}: {info}")
    return "\n".join(lines)


def make_broker_dir(prefix="freshet-test-"):
    root = tempfile.mkdtemp(prefix=prefix)
    data_dir = os.path.join(root, "data")
    os.mkdir(data_dir)
    return root, data_dir


# The whole suite's wall-clock budget (FRESHET_ITEST_BUDGET_S, default 900 s). A broken broker makes
# every test wait for client timeouts; past the budget the remaining tests fail at once (reported,
# never silently skipped) so that `make test` stays bounded.
ITEST_BUDGET_S = float(os.environ.get("FRESHET_ITEST_BUDGET_S", "900"))
_SESSION_START = time.monotonic()


def pytest_configure(config):
    config.addinivalue_line("markers", "broker_args(*args): extra command-line flags for `freshet start`")
    config.addinivalue_line("markers", "cluster: multi-node replication tests (clusterlib.py; select with -m cluster)")
    config.addinivalue_line("markers", "cluster_nodes(n): node count of the `cluster` fixture (default 3)")
    config.addinivalue_line("markers", "cluster_args(*args): extra `freshet start` flags for every cluster node")


def pytest_sessionfinish(session, exitstatus):
    # Destroy leftover librdkafka clients now, so their background threads cannot print after
    # pytest's summary line (the closing line CI reads).
    gc.collect()


def pytest_runtest_setup(item):
    elapsed = time.monotonic() - _SESSION_START
    if elapsed > ITEST_BUDGET_S:
        pytest.fail(f"integration-test budget of {ITEST_BUDGET_S:.0f}s used up ({elapsed:.0f}s elapsed): not run",
                    pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def broker(request):
    """A fresh broker per test; see the module docstring."""
    marker = request.node.get_closest_marker("broker_args")
    extra = marker.args if marker else ()
    root, data_dir = make_broker_dir()
    b = Broker(data_dir, extra_args=extra)
    try:
        b.start()
    except BrokerDied as e:
        pytest.fail(str(e))
    yield b
    died = b.proc is not None and b.proc.poll() is not None
    code = b.proc.returncode if died else None
    failed = any(getattr(request.node, "rep_" + w, None) is not None and getattr(request.node, "rep_" + w).failed
                 for w in ("setup", "call"))
    if failed or died:
        print(f"----- broker log tail ({b.log_path}) -----\n{b.log_tail(80)}")
    b.stop()
    if os.environ.get("FRESHET_KEEP_DATA"):
        print(f"broker data kept in {root}")
    elif failed or died:
        # Keep the log, not the data: preallocated segments are large and a broken broker fails
        # many tests (FRESHET_KEEP_DATA=1 keeps everything).
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"broker log kept in {b.log_path}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    if died:
        pytest.fail(f"broker died during the test (exit code {code}); log tail above")


@pytest.fixture
def topic_name(request):
    """A unique, valid topic name for this test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cluster(request):
    """N (default 3) `freshet start` processes forming one cluster; see clusterlib.py."""
    import clusterlib  # imports this module; kept out of module scope to avoid the cycle

    nodes = request.node.get_closest_marker("cluster_nodes")
    args = request.node.get_closest_marker("cluster_args")
    try:
        c = clusterlib.make_cluster(nodes.args[0] if nodes else 3, args.args if args else ())
    except BrokerDied as e:
        pytest.fail(f"cluster did not start: {e}")
    yield c
    crashed = c.crashed()
    failed = any(getattr(request.node, "rep_" + w, None) is not None and getattr(request.node, "rep_" + w).failed
                 for w in ("setup", "call"))
    if failed or crashed:
        print(c.log_tails())
    panics = c.panics()
    clusterlib.cleanup(c, failed or bool(crashed) or bool(panics))
    problems = [f"node {i} died during the test (exit code {code})" for i, code in crashed]
    problems += [f"node {i}: {line}" for i, line in panics]
    problems += c.unclean_stops
    if problems:
        pytest.fail("cluster teardown: " + "; ".join(problems))
