# certbridge: build the module binaries, run the demo pulse, run every test.
# `make demo` is the main job; `make test` runs all tests (what CI runs).

TARGET   := x86_64-unknown-linux-gnu
MODULES  := acme_request acme_txt_publish acme_http_publish acme_finalize acme_group zone_render
CARGO    ?= cargo
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: all deps modules collection demo test test-rust test-ansible lint bench bench-fleet bench-rollout clean

all: modules

# Debian packages (pebble, bind9, dnsutils) and the Python venv with pinned Ansible tooling.
deps:
	scripts/install-deps

# Static, size-tuned release binaries into modules/ (where ansible.cfg finds them).
modules:
	$(CARGO) build --release --locked --target $(TARGET) --bins
	for m in $(MODULES); do install -m 0755 target/$(TARGET)/release/$$m modules/$$m; done

# The certbridge.acme collection tarball, assembled from the checkout (target/collection/).
collection: modules
	scripts/build-collection

# The main job: a full pulse against a local Pebble CA + BIND nameserver, twice.
demo: deps modules
	scripts/demo

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Rust unit and integration tests (dev-profile binaries), then the release binaries' checks.
test-rust:
	scripts/test-rust

test-ansible: modules
	scripts/test-ansible

test: deps lint modules test-rust test-ansible

bench: deps modules
	scripts/bench

# Fleet scale (docs/benchmarks.md): N = 200, 500 and 1,000 hosts, local connection, the floor and
# the pulse with the common-topic handler. Long (about 25 minutes here): not part of `bench`.
bench-fleet: deps modules
	scripts/bench --hosts 200,500,1000 --runs 1 --connection local --cases trivial,certbridge-common --group 0

# The simulated first rollout alone (300 hosts, the rate budget against a CA that answers 429s).
bench-rollout:
	python3 bench/rollout.py

clean:
	$(CARGO) clean
	for m in $(MODULES); do rm -f modules/$$m; done
