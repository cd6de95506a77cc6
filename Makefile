# mqueue for Kamailio, in Rust. `make run` and `make test` start from a fresh
# Debian machine: they install what is missing first (`make deps`).

# KAMAILIO_BIN and KAMAILIO_SRC (environment or `make VAR=...`) point the
# build at another Kamailio; by default Debian's binary and the source that
# `make deps` fetches into kamailio-headers/src.
MODDIR ?= /usr/lib/x86_64-linux-gnu/kamailio/modules
CARGO ?= cargo

MODULE := build/mqueue.so
# Test-only variant: `mq_add` with the key "__panic__" panics (tests/panic.rs).
PANIC_MODULE := build/mqueue-panic.so
SOURCES := $(shell find src kamailio-headers -maxdepth 2 -type f \( -name '*.rs' -o -name '*.h' -o -name '*.c' \) 2>/dev/null) Cargo.toml build.rs

.PHONY: all deps build run demo test lint install clean bench stress fuzz asan

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@$(MAKE) --no-print-directory $(MODULE)

$(MODULE): $(SOURCES)
	$(CARGO) build --release
	@mkdir -p build
	cp target/release/libmqueue.so $(MODULE)

$(PANIC_MODULE): $(SOURCES)
	CARGO_TARGET_DIR=target/panic-inject $(CARGO) build --release --features panic-inject
	@mkdir -p build
	cp target/panic-inject/release/libmqueue.so $(PANIC_MODULE)

# Kamailio in the foreground with cfg/kamailio.cfg on 127.0.0.1:35060 (MQUEUE_PORT).
run: build
	bash scripts/run.sh

# SIP traffic for `make run` (second terminal).
demo:
	bash scripts/demo.sh

test: build
	@$(MAKE) --no-print-directory $(PANIC_MODULE)
	$(CARGO) test --release --no-default-features --lib
	@$(MAKE) --no-print-directory asan
	bash scripts/fuzz.sh $${FUZZ_TEST_SECS:-20} temp
	MQUEUE_MODULE=$(CURDIR)/$(MODULE) MQUEUE_PANIC_MODULE=$(CURDIR)/$(PANIC_MODULE) \
		$(CARGO) test --release --test '*' -- --test-threads=2

# Side-by-side workloads on build/mqueue.so and Debian's C mqueue.so (BENCH_N=...).
bench: build
	python3 bench/bench.py

# Full-size reliability runs: 1,000,000 items through the load test and a
# 10-minute SIP soak (MQUEUE_LOAD_ITEMS, MQUEUE_SOAK_SECS override).
stress: build
	MQUEUE_MODULE=$(CURDIR)/$(MODULE) MQUEUE_LOAD_ITEMS=$${MQUEUE_LOAD_ITEMS:-1000000} \
		MQUEUE_SOAK_SECS=$${MQUEUE_SOAK_SECS:-600} \
		$(CARGO) test --release --test load --test soak -- --test-threads=1 --nocapture

# The queue core's unit tests under AddressSanitizer (nightly toolchain).
asan:
	@rustup toolchain list | grep -q '^nightly' || { echo "asan: the nightly Rust toolchain is missing (rustup toolchain install nightly)" >&2; exit 1; }
	RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan $(CARGO) +nightly test --release \
		--no-default-features --lib --target x86_64-unknown-linux-gnu

# Fuzz each target for FUZZ_SECS seconds (default 300), growing fuzz/corpus.
fuzz:
	bash scripts/fuzz.sh $${FUZZ_SECS:-300} keep

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

install: build
	install -m 0644 $(MODULE) $(DESTDIR)$(MODDIR)/mqueue.so

clean:
	$(CARGO) clean
	rm -rf build
