# Thin wrapper over meson/ninja for the common commands.
BUILD ?= build
RELEASE ?= build-release

.PHONY: all deps setup build run check soak bench clean

all: build

deps:
	./scripts/install-deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

setup: $(BUILD)/build.ninja

build: setup
	ninja -C $(BUILD)

# Shows the backup story (serve, write, full backup to an NBD target, write,
# incremental backup through a dirty bitmap, restore and verify), then runs
# the built-in default: a 1 GiB memory export "disk0" (Ctrl-C stops it).
run: build
	BLOCKD=$(CURDIR)/$(BUILD)/blockd /usr/bin/python3 scripts/backup-demo.py
	./$(BUILD)/blockd

check: build
	./scripts/run-tests.sh

# A long soak (tests/integration/test_soak.py): SOAK_SECONDS of 64 verifying
# NBD clients with backups, mirrors and bitmap cycles; `make check` runs 80 s.
SOAK_SECONDS ?= 1800
soak: build
	SOAK_SECONDS=$(SOAK_SECONDS) meson test -C $(BUILD) soak --print-errorlogs --verbose

$(RELEASE)/build.ninja:
	meson setup $(RELEASE) --buildtype=release -Db_sanitize=none -Dwerror=true

bench: $(RELEASE)/build.ninja
	ninja -C $(RELEASE)
	BLOCKD=$(CURDIR)/$(RELEASE)/blockd SOURCE_DIR=$(CURDIR) BUILD_DIR=$(CURDIR)/$(RELEASE) ./tests/bench/run-all.sh

clean:
	rm -rf $(BUILD) $(RELEASE)
