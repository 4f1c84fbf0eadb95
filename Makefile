# Entry points for building, cross-building, packaging and testing connmark-lb.
# `make test` is what CI runs (.ci/run).

CARGO ?= cargo
# Cargo.toml holds the one version; packages and tarballs derive theirs.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n1)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH

HOST_TARGET := x86_64-unknown-linux-musl
TARGET ?= $(HOST_TARGET)
ARCH ?= x86_64
DIST := dist

# How each static target's self-test runs here: natively or under qemu.
RUNNER_x86_64-unknown-linux-musl :=
RUNNER_aarch64-unknown-linux-musl := qemu-aarch64-static
RUNNER_armv7-unknown-linux-musleabihf := qemu-arm-static
RUNNER_mipsel-unknown-linux-musl := qemu-mipsel-static
RUNNER_mips-unknown-linux-musl := qemu-mips-static
SELFTEST := check --uci cross/selftest.uci

# An OpenWrt package architecture (`opkg print-architecture`, /etc/apk/arch) maps to the Rust
# target whose static binary runs there. 32-bit ARM needs VFP (hard-float code; static, so the
# router's own float ABI does not matter); MIPS needs mips32r2 and is soft-float, as OpenWrt's
# ath79 and ramips builds are.
ARM_ARCHES := arm_cortex-a5_vfpv4 arm_cortex-a7_neon-vfpv4 arm_cortex-a7_vfpv4 \
	arm_cortex-a8_vfpv3 arm_cortex-a9_neon arm_cortex-a9_vfpv3-d16 arm_cortex-a15_neon-vfpv4
rust_target = $(strip \
	$(if $(filter x86_64,$(1)),x86_64-unknown-linux-musl, \
	$(if $(filter aarch64_%,$(1)),aarch64-unknown-linux-musl, \
	$(if $(filter $(ARM_ARCHES),$(1)),armv7-unknown-linux-musleabihf, \
	$(if $(filter mipsel_24kc mipsel_74kc,$(1)),mipsel-unknown-linux-musl, \
	$(if $(filter mips_24kc mips_74kc,$(1)),mips-unknown-linux-musl, \
	$(error ARCH=$(1): use x86_64, aarch64_*, $(ARM_ARCHES), mips(el)_24kc or mips(el)_74kc; \
		other routers build with the OpenWrt SDK)))))))
static_bin = target/$(1)/release/connmark-lb

# Rustup ships no standard library here for MIPS (tier 3) or 32-bit ARM: those targets build
# std from the pinned nightly's rust-src and link with zig (cross/toolchain.env, cross/zig-cc,
# .cargo/config.toml), with std's `optimize_for_size` (smaller algorithms and formatting: the
# sizes in BENCH.md). The others use the stable toolchain and its std.
include cross/toolchain.env
# x86_64 and aarch64 build the same way to stay under their 800 KiB budget (with the stable std
# both are over); aarch64 links with zig too, the pinned nightly having no aarch64-musl std.
BUILD_STD_TARGETS := x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf \
	mipsel-unknown-linux-musl mips-unknown-linux-musl
BUILD_STD := -Z build-std=std,panic_abort -Z build-std-features=optimize_for_size
cargo_for = $(if $(filter $(1),$(BUILD_STD_TARGETS)),$(CARGO) +$(NIGHTLY),$(CARGO))
build_std_for = $(if $(filter $(1),$(BUILD_STD_TARGETS)),$(BUILD_STD))

# Every package `make release` builds: each architecture of the README's table.
RELEASE_ARCHES := x86_64 aarch64_generic aarch64_cortex-a53 aarch64_cortex-a72 \
	arm_cortex-a7_neon-vfpv4 arm_cortex-a9_vfpv3-d16 arm_cortex-a15_neon-vfpv4 \
	mipsel_24kc mips_24kc

.PHONY: build static cross ipk apk release dist deps kit test test-emulated lint demo bench

# The real OpenWrt userland (ubusd, rpcd, netifd, procd, fw4, opkg, apk, LuCI) the tests run,
# built from ../shared/openwrt-userland into target/ (a re-run with nothing changed costs
# under a second). Tests find it through OWRT_PREFIX.
KIT ?= $(CURDIR)/../shared/openwrt-userland
OWRT_PREFIX ?= $(CURDIR)/target/owrt
export OWRT_PREFIX

build:
	$(CARGO) build --release

# A static musl binary for this machine.
static:
	$(call cargo_for,$(HOST_TARGET)) build --release --target $(HOST_TARGET) \
		$(call build_std_for,$(HOST_TARGET))

# A static binary for TARGET, checked to be static and to run its self-test.
cross:
	$(call cargo_for,$(TARGET)) build --release --target $(TARGET) $(call build_std_for,$(TARGET))
	! readelf -lW $(call static_bin,$(TARGET)) | grep -q 'program interpreter'
	! readelf -dW $(call static_bin,$(TARGET)) | grep -q NEEDED
	$(RUNNER_$(TARGET)) $(call static_bin,$(TARGET)) $(SELFTEST) >target/selftest-$(TARGET).txt
	grep -q 'table inet connmark_lb {' target/selftest-$(TARGET).txt
	@ls -l $(call static_bin,$(TARGET))

# An .ipk of the static binary and files/ for a router of architecture ARCH, and the
# architecture-independent LuCI app beside it ($(DIST)/luci-app-connmark-lb_VERSION-r1_all.ipk).
ipk:
	$(MAKE) cross TARGET=$(call rust_target,$(ARCH))
	cross/mkipk.sh $(ARCH) $(call static_bin,$(call rust_target,$(ARCH))) $(DIST)
	PACKAGE=luci-app-connmark-lb cross/mkipk.sh all - $(DIST)

# An .apk of the same binary and files for OpenWrt 25.12 and later (apk-tools v3, packed
# by the kit's `apk mkpkg`): $(DIST)/ARCH/connmark-lb-VERSION-r1.apk, the file name
# OpenWrt's SDK gives it, and the LuCI app's noarch .apk beside it.
apk: kit
	$(MAKE) cross TARGET=$(call rust_target,$(ARCH))
	APK=$(OWRT_PREFIX)/bin/apk cross/mkapk.sh $(ARCH) \
		$(call static_bin,$(call rust_target,$(ARCH))) $(DIST)/$(ARCH)
	APK=$(OWRT_PREFIX)/bin/apk PACKAGE=luci-app-connmark-lb cross/mkapk.sh all - $(DIST)/$(ARCH)

# Every architecture's .ipk and .apk (and the LuCI app's) in $(DIST), with $(DIST)/sha256sums.
release: kit
	rm -rf $(DIST)
	for arch in $(RELEASE_ARCHES); do \
		$(MAKE) ipk ARCH=$$arch && $(MAKE) apk ARCH=$$arch || exit 1; \
	done
	cd $(DIST) && find . -name '*.ipk' -o -name '*.apk' | sed 's|^\./||' | LC_ALL=C sort | \
		xargs sha256sum >sha256sums
	@cat $(DIST)/sha256sums

# The release tarball of HEAD for the packages feed, and the feed Makefile's PKG_SOURCE,
# PKG_SOURCE_URL and PKG_HASH written for it. RELEASE_URL is the directory that holds one
# vX.Y.Z/ per release (a placeholder until the project has a home).
FEED_MAKEFILE ?= openwrt/net/connmark-lb/Makefile
LUCI_MAKEFILE := openwrt/applications/luci-app-connmark-lb/Makefile
RELEASE_URL ?= https://connmark-lb.example/releases/download
TARBALL = $(DIST)/connmark-lb-$(VERSION).tar.gz
dist:
	mkdir -p $(DIST)
	git archive --format=tar.gz --prefix=connmark-lb-$(VERSION)/ -o $(TARBALL) HEAD
	hash=$$(sha256sum $(TARBALL) | cut -d' ' -f1) && sed -i \
		-e 's|^PKG_SOURCE:=.*|PKG_SOURCE:=$$(PKG_NAME)-$$(PKG_VERSION).tar.gz|' \
		-e 's|^PKG_SOURCE_URL:=.*|PKG_SOURCE_URL:=$(RELEASE_URL)/v$$(PKG_VERSION)|' \
		-e "s|^PKG_HASH:=.*|PKG_HASH:=$$hash|" $(FEED_MAKEFILE)
	@grep -E '^PKG_(SOURCE|SOURCE_URL|HASH):=' $(FEED_MAKEFILE)

deps:
	scripts/install-deps.sh

kit: deps
	$(KIT)/build.sh $(OWRT_PREFIX)

# The MIPS release binary comes first: tests/it/emulated.rs runs it under qemu in `cargo test`.
test: deps lint kit
	$(MAKE) cross TARGET=mips-unknown-linux-musl
	$(CARGO) test
	$(CARGO) test --bench bench -- --smoke
	$(MAKE) ipk ARCH=x86_64
	$(MAKE) ipk ARCH=aarch64_generic
	mkdir -p $(DIST)/aarch64-check
	tar -xzOf $(DIST)/connmark-lb_$(VERSION)-r1_aarch64_generic.ipk ./data.tar.gz | \
		tar -xzf - -C $(DIST)/aarch64-check ./usr/sbin/connmark-lb
	qemu-aarch64-static $(DIST)/aarch64-check/usr/sbin/connmark-lb $(SELFTEST) | \
		grep -q 'table inet connmark_lb {'
	$(MAKE) apk ARCH=x86_64
	scripts/apk-install-check.sh $(DIST)/x86_64/connmark-lb-$(VERSION)-r1.apk
	$(MAKE) $(EMULATED_TARGETS:%=test-on-%)

# The unit and golden tests built for big- and little-endian 32-bit MIPS and run under
# qemu-user (the cargo runner), which catches byte-order and 32-bit bugs in the ubus,
# rtnetlink and ctnetlink code; `--cfg qemu_user` ignores the few tests that need a socket
# option or netlink family qemu-user does not translate (they run natively above). Then the
# MIPS release binary, under qemu-mips-static, is the router's connmark-lb in the namespace
# testbed (tests/it/emulated.rs).
EMULATED_TARGETS := mips-unknown-linux-musl mipsel-unknown-linux-musl
emulated_test = $(CARGO) +$(NIGHTLY) test -Z build-std --profile emulated --target $(1) \
	--config 'target.$(1).rustflags = ["--cfg", "qemu_user"]'
test-emulated: deps $(EMULATED_TARGETS:%=test-on-%)
	$(MAKE) cross TARGET=mips-unknown-linux-musl
	$(CARGO) test --test it -- emulated::

# The unit tests, then the golden tests (their `check` runs start the binary under qemu too).
test-on-%: deps
	$(call emulated_test,$*) --lib
	CONNMARK_LB_EMULATOR=$(RUNNER_$*) $(call emulated_test,$*) --test it -- golden::

# Apply cost, data-plane cost, balance quality and footprint against the seed recipe and
# plain forwarding, measured on the shipped static binary; writes BENCH.md and
# bench/results.json (as root, about 13 minutes on 2 cores).
ipk_file = $(DIST)/connmark-lb_$(VERSION)-r1_$(1).ipk
bench: deps
	$(MAKE) ipk ARCH=x86_64
	$(MAKE) ipk ARCH=aarch64_generic
	$(CARGO) bench --bench bench -- \
		--binary $(call static_bin,$(HOST_TARGET)) \
		--artifact static-x86_64=$(call static_bin,x86_64-unknown-linux-musl) \
		--artifact static-aarch64=$(call static_bin,aarch64-unknown-linux-musl) \
		--artifact ipk-x86_64=$(call ipk_file,x86_64) \
		--artifact ipk-aarch64_generic=$(call ipk_file,aarch64_generic)

# Namespace testbed: apply a 1:1:2 config, open 600 connections, print the split per link.
demo: deps
	$(CARGO) test --test demo

# The feed Makefiles as the OpenWrt feeds' maintainers read them, then the Rust code.
lint:
	scripts/lint-feed.sh $(FEED_MAKEFILE) $(LUCI_MAKEFILE)
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
