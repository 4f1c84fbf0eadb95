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
SELFTEST := check --uci cross/selftest.uci

# An opkg architecture (x86_64, aarch64_generic, aarch64_cortex-a53, ...)
# maps to the Rust target whose static binary runs there.
rust_target = $(strip \
	$(if $(filter x86_64,$(1)),x86_64-unknown-linux-musl, \
	$(if $(filter aarch64_%,$(1)),aarch64-unknown-linux-musl, \
	$(error ARCH=$(1): use x86_64 or aarch64_*; other routers build with the OpenWrt SDK))))
static_bin = target/$(1)/release/connmark-lb

.PHONY: build static cross ipk apk dist deps kit test lint demo bench

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
	$(CARGO) build --release --target $(HOST_TARGET)

# A static binary for TARGET, checked to be static and to run its self-test.
cross:
	$(CARGO) build --release --target $(TARGET)
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

# The source tarball for the packages feed (PKG_SOURCE) and its PKG_HASH.
dist:
	mkdir -p $(DIST)
	git archive --format=tar.gz --prefix=connmark-lb-$(VERSION)/ \
		-o $(DIST)/connmark-lb-$(VERSION).tar.gz HEAD
	sha256sum $(DIST)/connmark-lb-$(VERSION).tar.gz

deps:
	scripts/install-deps.sh

kit: deps
	$(KIT)/build.sh $(OWRT_PREFIX)

test: deps lint kit
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

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
