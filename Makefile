# Freshet — the two commands that matter are `make run` and `make test`.
CARGO ?= cargo
SEED ?= 1
export CARGO_TERM_COLOR ?= never

.PHONY: run build release test deps lint test-build unit itest sim sim-long sim-ci bench

run: release
	./target/release/freshet start

release:
	$(CARGO) build --release -p freshet

build:
	$(CARGO) build --workspace --all-targets

# Installs what the tests need, then runs every test. lint stops the run; test-build compiles
# every test binary and binary once, with one feature resolution for the whole workspace (a
# `cargo test -p X` or `cargo run -p X` resolves dependency features for X alone, and each
# different resolution recompiles the dependencies it changes: glommio, kafka-protocol, ...);
# unit, sim-ci and itest then only run what it built, and all run whatever the others' outcome;
# the exit code reports any failure. Each phase prints a timestamped start and end line
# (`==> [hh:mm:ss] ...`), and the run ends with its total.
test:
	@t0=$$(date +%s); rc=0; \
	{ $(call phase,deps) && $(call phase,lint) && $(call phase,test-build); } || rc=2; \
	if [ $$rc = 0 ]; then \
	  $(call phase,unit) || rc=1; \
	  $(call phase,sim-ci) || rc=1; \
	  $(call phase,itest) || rc=1; \
	fi; \
	echo "==> [$$(date -u +%T)] make test: $$([ $$rc = 0 ] && echo passed || echo FAILED) in $$(( $$(date +%s) - t0 )) s"; \
	exit $$rc

# $(call phase,TARGET): `make TARGET` between two timestamped lines; fails if TARGET fails.
define phase
{ echo "==> [$$(date -u +%T)] $(1): start"; s=$$(date +%s); \
$(MAKE) --no-print-directory $(1); r=$$?; \
echo "==> [$$(date -u +%T)] $(1): $$([ $$r = 0 ] && echo ok || echo FAILED) after $$(( $$(date +%s) - s )) s"; \
[ $$r = 0 ]; }
endef

deps:
	bash tools/scripts/install-test-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The cargo target dir (CARGO_TARGET_DIR, build.target-dir or ./target), for the binaries that
# sim-ci and itest run.
TARGET_DIR = $(shell $(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

# Every test binary of every crate and the binaries they drive (target/debug/freshet, .../sim),
# in one cargo invocation. The later phases run `cargo test --workspace` too, so they reuse it
# (a no-op when nothing changed).
test-build:
	$(CARGO) test --workspace --no-run

# Every crate's tests: unit tests, their tests/ dirs (the bounded decoder fuzz tests in net/tests
# and storage/tests, the in-process Raft/cluster scenarios in engine/tests) and the rdkafka-crate
# tests against the real broker binary in tools/tests/*.rs.
# One test: `cargo test -p freshet --test rdkafka_produce_consume NAME`
unit:
	$(CARGO) test --workspace --no-fail-fast

# Integration tests against the real broker binary (debug build): the pytest suite in
# tools/tests/py (confluent-kafka, kafka-python, kcat, raw sockets). The binary comes from the
# workspace test build (test-build), so no dependency is recompiled for it.
# One test: `.venv/bin/pytest tools/tests/py -q -k NAME`
itest:
	$(CARGO) test --workspace --no-run --quiet
	FRESHET_BIN=$(TARGET_DIR)/debug/freshet .venv/bin/pytest tools/tests/py -q

# Deterministic Raft simulator (raft/src/sim, docs/design/replication.md): nodes, network,
# disks and clock in one thread, every run a pure function of its seed; a failure prints its
# seed. SIM_BACKEND=storage runs the storage crate's Log on its SimDisk, mem the in-memory log.
#   make sim SEED=n        replay one seed (verbose)
#   make sim-long          SIM_SEEDS seeds from SEED
#   make sim-ci            as many seeds from 1 as fit in SIM_CI_SECS seconds (for make test; the
#                          dev-profile binary of the workspace test build, test-build, so neither a
#                          cold release build nor a differently-featured `cargo run` rebuild)
SIM_BACKEND ?= storage
SIM_CI_BACKEND ?= storage
SIM_SEEDS ?= 5000
SIM_CI_SECS ?= 100
sim:
	$(CARGO) run -p freshet-raft --release --bin sim -- --seed $(SEED) --backend $(SIM_BACKEND)

sim-long:
	$(CARGO) run -p freshet-raft --release --bin sim -- --seed $(SEED) --count $(SIM_SEEDS) --quiet --backend $(SIM_BACKEND)

sim-ci:
	$(CARGO) test --workspace --no-run --quiet
	$(TARGET_DIR)/debug/sim --seed 1 --budget-secs $(SIM_CI_SECS) --quiet --backend $(SIM_CI_BACKEND)

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
