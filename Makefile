# sluice: `make` builds, `make demo` runs the demo, `make test` runs every test.
# Meson + Ninja do the building; this file only names the steps. `make demo` and `make test`
# install their own Debian dependencies first (`make deps`), so a fresh Debian 12 machine needs
# nothing else.

BUILD ?= build
ASAN  ?= build-asan

.PHONY: all build deps test test-unit test-integration test-asan demo bench bench-remote clean

all: build

deps:
	@./scripts/deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=debugoptimized

$(ASAN)/build.ninja:
	meson setup $(ASAN) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Every test: unit and integration on the optimised build, then again under ASan + UBSan.
test: deps
	$(MAKE) --no-print-directory build
	$(MAKE) --no-print-directory test-unit test-integration
	$(MAKE) --no-print-directory test-asan

test-unit: build
	meson test -C $(BUILD) --print-errorlogs --suite unit

test-integration: build
	meson test -C $(BUILD) --print-errorlogs --suite integration

# verify_asan_link_order=0: pipeline stages run with sluice-trace.so preloaded (the I/O
# profile), and a sanitized sluice started by a stage would otherwise refuse to start because
# the sanitizer's runtime is not the first library of the process.
test-asan: $(ASAN)/build.ninja
	ninja -C $(ASAN)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:verify_asan_link_order=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		meson test -C $(ASAN) --print-errorlogs --suite unit --suite integration

demo: deps
	$(MAKE) --no-print-directory build
	./scripts/demo.sh $(BUILD)/sluice

bench: build
	./bench/read.sh $(BUILD)/sluice

# sluice against aws and rclone, through a throttle standing in for a store far away.
bench-remote: build
	@./scripts/deps.sh --bench
	./bench/remote.sh $(BUILD)/sluice

clean:
	rm -rf $(BUILD) $(ASAN)
