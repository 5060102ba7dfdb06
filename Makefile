# Thin wrapper over meson/ninja for the common commands.
BUILD ?= build
RELEASE ?= build-release
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
TSAN ?= build-tsan

.PHONY: all deps setup build release install run check tsan soak bench fuzz clean

all: build

deps:
	./scripts/install-deps.sh

# The test build: ASan + UBSan (meson.build's own default is the release
# build that `meson install` installs).
$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false

setup: $(BUILD)/build.ninja

build: setup
	ninja -C $(BUILD)

# Shows the backup story (serve, write, full backup to an NBD target, write,
# incremental backup through a dirty bitmap, restore and verify), then runs
# the built-in default: a 1 GiB memory export "disk0" (Ctrl-C stops it).
run: release
	BLOCKD=$(CURDIR)/$(RELEASE)/blockd /usr/bin/python3 scripts/backup-demo.py
	./$(RELEASE)/blockd

check: build
	./scripts/run-tests.sh

# A long soak (tests/integration/test_soak.py): SOAK_SECONDS of 64 verifying
# NBD clients with backups, mirrors and bitmap cycles; `make check` runs 80 s.
SOAK_SECONDS ?= 1800
soak: build
	SOAK_SECONDS=$(SOAK_SECONDS) meson test -C $(BUILD) soak --print-errorlogs --verbose --timeout-multiplier 0

# The optimized build without sanitizers (make run, make bench, make install).
$(RELEASE)/build.ninja:
	meson setup $(RELEASE) --buildtype=release -Db_sanitize=none -Dwerror=true

release: $(RELEASE)/build.ninja
	ninja -C $(RELEASE)

# Installs the release build under its prefix (/usr/local unless
# `meson configure $(RELEASE) --prefix=...`); DESTDIR=... stages it.
install: release
	meson install -C $(RELEASE) --no-rebuild $(if $(DESTDIR),--destdir $(abspath $(DESTDIR)))

bench: release
	BLOCKD=$(CURDIR)/$(RELEASE)/blockd SOURCE_DIR=$(CURDIR) BUILD_DIR=$(CURDIR)/$(RELEASE) ./tests/bench/run-all.sh

# Builds the libFuzzer targets with clang (in $(FUZZ_BUILD)) and runs each
# for FUZZ_SECONDS on its corpus; non-zero exit if any crashed (docs/fuzzing.md).
fuzz:
	BUILD_FUZZ=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) ./tests/fuzz/run-fuzz.sh

# ThreadSanitizer: clang-14 build in $(TSAN) (tests/tsan/glib-tsan.c makes
# GLib's futex-based GMutex/GCond visible to TSan), then the unit and
# integration tests two at a time, as make check (10 min instead of 18 on
# two cores).  The tests' environment sets TSAN_OPTIONS
# (halt_on_error=1, second_deadlock_stack=1, tests/tsan/tsan.supp): a report
# makes the daemon exit 66 and the test fail.  TSan slows the daemon down
# several times, hence the longer timeouts.
$(TSAN)/build.ninja:
	CC=clang-14 meson setup $(TSAN) --buildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false

tsan: $(TSAN)/build.ninja
	ninja -C $(TSAN) -j2
	BUILD=$(TSAN) ./scripts/run-tests.sh --timeout-multiplier 3 --no-suite soak

clean:
	rm -rf $(BUILD) $(RELEASE) $(FUZZ_BUILD) $(TSAN)
