# Freshet — the two commands that matter are `make run` and `make test`.
CARGO ?= cargo
SEED ?= 1
export CARGO_TERM_COLOR ?= never

.PHONY: run build release test deps lint unit itest sim sim-long sim-ci bench

run: release
	./target/release/freshet start

release:
	$(CARGO) build --release -p freshet

build:
	$(CARGO) build --workspace --all-targets

# Installs what the tests need, then runs every test. lint stops the run; unit, sim-ci (the
# deterministic Raft simulator, SIM_CI_SECS) and itest all run whatever the others' outcome, and
# the exit code reports any failure. itest goes last: its pytest summary is the closing line.
test: deps lint
	@rc=0; \
	$(MAKE) --no-print-directory unit || rc=1; \
	$(MAKE) --no-print-directory sim-ci || rc=1; \
	$(MAKE) --no-print-directory itest || rc=1; \
	exit $$rc

deps:
	bash tools/scripts/install-test-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every crate's tests (unit tests, their tests/ dirs, the bounded decoder fuzz test in net/tests),
# except the broker-driving integration tests of the `freshet` package, which run in itest.
unit:
	@rc=0; \
	$(CARGO) test --workspace --exclude freshet --no-fail-fast || rc=1; \
	$(CARGO) test -p freshet --bins $(if $(wildcard tools/src/lib.rs),--lib) || rc=1; \
	exit $$rc

# Integration tests against the real broker binary (debug build): Rust (rdkafka crate, in
# tools/tests/*.rs) and Python (confluent-kafka, kafka-python, kcat, raw sockets, in
# tools/tests/py). Both suites run even if the first fails; the exit code reports either failure.
# One test: `cargo test -p freshet --test rdkafka_produce_consume NAME`
#           `.venv/bin/pytest tools/tests/py -q -k NAME`
itest:
	$(CARGO) build -p freshet --bin freshet
	@rc=0; \
	$(CARGO) test -p freshet --no-fail-fast --test '*' || rc=1; \
	.venv/bin/pytest tools/tests/py -q || rc=1; \
	exit $$rc

# Deterministic Raft simulator (raft/src/sim, docs/design/replication.md): nodes, network,
# disks and clock in one thread, every run a pure function of its seed; a failure prints its
# seed. SIM_BACKEND=storage runs the storage crate's Log on its SimDisk, mem the in-memory log.
#   make sim SEED=n        replay one seed (verbose)
#   make sim-long          SIM_SEEDS seeds from SEED
#   make sim-ci            as many seeds from 1 as fit in SIM_CI_SECS seconds (for make test; dev
#                          profile, so it reuses the test build instead of a cold release build)
SIM_BACKEND ?= storage
SIM_CI_BACKEND ?= storage
SIM_SEEDS ?= 5000
SIM_CI_SECS ?= 100
sim:
	$(CARGO) run -p freshet-raft --release --bin sim -- --seed $(SEED) --backend $(SIM_BACKEND)

sim-long:
	$(CARGO) run -p freshet-raft --release --bin sim -- --seed $(SEED) --count $(SIM_SEEDS) --quiet --backend $(SIM_BACKEND)

sim-ci:
	$(CARGO) run -p freshet-raft --bin sim -- --seed 1 --budget-secs $(SIM_CI_SECS) --quiet --backend $(SIM_CI_BACKEND)

# Storage benchmark (release): freshet-storage Log vs raw O_DIRECT writes of the same bytes
# in the same run (benches/src/bin/storage-bench.rs); figures go in docs/benchmarks.md "Storage".
# STORAGE_BENCH_MIB = MiB written per case.
STORAGE_BENCH_MIB ?= 512
.PHONY: bench-storage
bench-storage:
	$(CARGO) run --release -p freshet-benches --bin storage-bench -- --total-mib $(STORAGE_BENCH_MIB)

# Broker benchmarks (release build, fresh local broker): the storage benchmark, then the OMB-style
# suite via tools/scripts/bench.sh, which rewrites the Broker section of docs/benchmarks.md.
# BENCH_PEER=host:port also runs the suite against another broker; BENCH_DURATION=seconds.
bench: bench-storage
	bash tools/scripts/bench.sh

# Replication benchmark (release build): the same `freshet bench produce` (acks=all, 1 KiB) against
# one node with an RF1 topic and three local nodes with an RF3 topic, in one run; rewrites the
# Replication section of docs/benchmarks.md. BENCH_DURATION=seconds, BENCH_RATE=msg/s (latency run).
.PHONY: bench-replication
bench-replication:
	bash tools/scripts/bench-replication.sh
