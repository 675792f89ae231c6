# Freshet — the two commands that matter are `make run` and `make test`.
CARGO ?= cargo
SEED ?= 1
export CARGO_TERM_COLOR ?= never

.PHONY: run build release test deps lint unit itest sim sim-long bench

run: release
	./target/release/freshet start

release:
	$(CARGO) build --release -p freshet

build:
	$(CARGO) build --workspace --all-targets

# Installs what the tests need, then runs every test. lint stops the run; unit and itest both
# run whatever the other's outcome, and the exit code reports any failure.
test: deps lint
	@rc=0; $(MAKE) --no-print-directory unit || rc=1; $(MAKE) --no-print-directory itest || rc=1; exit $$rc

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

# Broker benchmarks (release build, fresh local broker): the storage benchmark, then the OMB-style
# suite via tools/scripts/bench.sh, which rewrites the Broker section of docs/benchmarks.md.
# BENCH_PEER=host:port also runs the suite against another broker; BENCH_DURATION=seconds.
bench:
	@if grep -q '^bench-storage:' Makefile; then $(MAKE) --no-print-directory bench-storage; fi
	bash tools/scripts/bench.sh
