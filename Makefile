# The two commands a newcomer needs: `make demo` and `make test`.
# Both install what they need first (scripts/setup.sh, as root).

CARGO ?= cargo

.PHONY: setup build demo test bench clean-sandboxes

setup:
	./scripts/setup.sh

build: setup
	$(CARGO) build --workspace --bins

# A sandbox node with pods, the agent, and real traffic. Needs root.
demo: build
	./target/debug/sluice demo

# Everything CI runs: formatting, lints, unit/property tests, BPF packet
# tests (BPF_PROG_TEST_RUN), end-to-end tests in namespaces, and a smoke run
# of the benchmark (every mode must produce numbers). Needs root.
test: build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	./target/debug/sluice bench --quick --out target/bench-quick

# The full side-by-side benchmark (release build; several minutes).
bench: setup
	$(CARGO) build --release --workspace --bins
	./target/release/sluice bench --sluice-only-sizes 100000 --out docs/bench

clean-sandboxes:
	./target/debug/sluice sandbox down
