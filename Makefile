# The two commands a newcomer needs: `make demo` and `make test`.
# Both install what they need first (scripts/setup.sh, as root).

CARGO ?= cargo

.PHONY: setup build demo test bench conformance clean-sandboxes

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

# NetworkPolicy conformance: the upstream-derived cases of tests/cases/netpol
# replayed on real packets in the sandbox (9 pods, every pair probed through
# its Service ClusterIP), once through socket-level LB and once per packet.
# Then every behaviour of tests/cases/services.yaml (Service proxying) on
# real connections, a fresh sandbox world per behaviour.
# Needs root. `make test` runs the same through crates/cli/tests/conformance.rs
# and crates/cli/tests/services_conformance.rs.
conformance: build
	./target/debug/sluice conformance netpol --cases tests/cases/netpol --path socket
	./target/debug/sluice conformance netpol --cases tests/cases/netpol --path tc
	./target/debug/sluice conformance services --cases tests/cases/services.yaml

clean-sandboxes:
	./target/debug/sluice sandbox down
