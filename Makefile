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

# Installs what the tests need, then runs every test.
test: deps lint unit itest

deps:
	bash tools/scripts/install-test-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

itest:
	@echo "integration tests: none yet"
