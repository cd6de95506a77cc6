# mqueue for Kamailio, in Rust. `make run` and `make test` start from a fresh
# Debian machine: they install what is missing first (`make deps`).

# KAMAILIO_BIN and KAMAILIO_SRC (environment or `make VAR=...`) point the
# build at another Kamailio; by default Debian's binary and the source that
# `make deps` fetches into kamailio-headers/src.
# Debian's module directory, under the machine's multiarch triplet.
MULTIARCH := $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null)
MODDIR ?= /usr/lib/$(MULTIARCH)/kamailio/modules
CARGO ?= cargo

# The host: empty for Debian's Kamailio; each other host builds in a cargo
# target dir of its own, and a stamp named after the host makes a change of
# host rebuild build/mqueue.so.
KAMAILIO_BIN ?=
KAMAILIO_SRC ?=
HOST_ID := $(if $(KAMAILIO_BIN)$(KAMAILIO_SRC),$(shell printf '%s|%s' '$(KAMAILIO_BIN)' '$(KAMAILIO_SRC)' | sha1sum | cut -c1-12),debian)
HOST_TARGET := $(if $(filter debian,$(HOST_ID)),target,target/host-$(HOST_ID))
HOST_ENV := $(if $(KAMAILIO_BIN),KAMAILIO_BIN='$(KAMAILIO_BIN)') $(if $(KAMAILIO_SRC),KAMAILIO_SRC='$(KAMAILIO_SRC)')
# Where build-host puts the module and its panic-inject twin.
HOST_DIR ?= build/host-$(HOST_ID)

MODULE := build/mqueue.so
# Test-only variant: `mq_add` with the key "__panic__" panics (tests/panic.rs).
PANIC_MODULE := build/mqueue-panic.so
HOST_STAMP := build/.host-$(HOST_ID)
SOURCES := $(shell find src kamailio-headers -maxdepth 2 -type f \( -name '*.rs' -o -name '*.h' -o -name '*.c' \) 2>/dev/null) Cargo.toml build.rs

.PHONY: all deps build build-host run demo test test-versions lint install deb clean bench stress fuzz asan

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@$(MAKE) --no-print-directory $(MODULE)

$(HOST_STAMP):
	@mkdir -p build
	@rm -f build/.host-*
	@touch $@

$(MODULE): $(SOURCES) $(HOST_STAMP)
	$(HOST_ENV) CARGO_TARGET_DIR=$(HOST_TARGET) $(CARGO) build --release
	@mkdir -p build
	cp $(HOST_TARGET)/release/libmqueue.so $(MODULE)

$(PANIC_MODULE): $(SOURCES) $(HOST_STAMP)
	$(HOST_ENV) CARGO_TARGET_DIR=$(HOST_TARGET) $(CARGO) build --release --features panic-inject
	@mkdir -p build
	cp $(HOST_TARGET)/release/libmqueue.so $(PANIC_MODULE)

# The module and its panic-inject twin for the host named by KAMAILIO_BIN
# and KAMAILIO_SRC, into HOST_DIR (scripts/test-versions.sh).
build-host:
	@mkdir -p $(HOST_DIR)
	$(HOST_ENV) CARGO_TARGET_DIR=$(HOST_TARGET) $(CARGO) build --release
	cp $(HOST_TARGET)/release/libmqueue.so $(HOST_DIR)/mqueue.so
	$(HOST_ENV) CARGO_TARGET_DIR=$(HOST_TARGET) $(CARGO) build --release --features panic-inject
	cp $(HOST_TARGET)/release/libmqueue.so $(HOST_DIR)/mqueue-panic.so

# Kamailio in the foreground with cfg/kamailio.cfg on 127.0.0.1:35060 (MQUEUE_PORT).
run: build
	bash scripts/run.sh

# SIP traffic for `make run` (second terminal).
demo:
	bash scripts/demo.sh

# Lint, unit tests (also under ASan), fuzz smoke, then the integration tests
# on six hosts: Debian's Kamailio (every test), each release in
# ../shared/kamailio-src and master in ../shared/kamailio-next (the host ABI
# and differential tests), the Debian 13 package (scripts/test-versions.sh).
test: build
	@$(MAKE) --no-print-directory $(PANIC_MODULE)
	@$(MAKE) --no-print-directory lint
	$(CARGO) test --release --lib
	@$(MAKE) --no-print-directory asan
	bash scripts/fuzz.sh $${FUZZ_TEST_SECS:-20} temp
	bash scripts/test-versions.sh

# The integration tests alone, on the six hosts.
test-versions: build
	@$(MAKE) --no-print-directory $(PANIC_MODULE)
	bash scripts/test-versions.sh

# Side-by-side workloads on build/mqueue.so and the C mqueue.so of the same
# Kamailio (Debian's, or KAMAILIO_BIN's), BENCH_N=... and friends.
bench: build
	$(HOST_ENV) python3 bench/bench.py

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
		--no-default-features --lib --target $$(rustc -vV | sed -n 's/^host: //p')

# Fuzz each target for FUZZ_SECS seconds (default 300), growing fuzz/corpus.
fuzz:
	bash scripts/fuzz.sh $${FUZZ_SECS:-300} keep

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

# The Debian package for the Kamailio the module is built against:
# build/kamailio-mqueue-rs_<version>+kamailio<kamailio version>_<arch>.deb
# (this machine's Debian and kamailio); DEBIAN=13 builds the one for
# Debian 13's kamailio inside a Debian 13 root (scripts/deb-debian13.sh).
DEBIAN ?=
deb:
ifeq ($(DEBIAN),13)
	bash scripts/deb-debian13.sh
else
	@[ -z "$(DEBIAN)" ] || [ "$(DEBIAN)" = "$$(. /etc/os-release; echo $$VERSION_ID)" ] \
		|| { echo "deb: DEBIAN=$(DEBIAN): this machine builds for its own Debian, or DEBIAN=13" >&2; exit 1; }
	@$(MAKE) --no-print-directory build
	$(HOST_ENV) bash scripts/deb.sh $(MODULE)
endif

install: build
	install -m 0644 $(MODULE) $(DESTDIR)$(MODDIR)/mqueue.so

clean:
	$(CARGO) clean
	rm -rf build
