#!/usr/bin/env bash
# Installs the pinned cross toolchain (cross/toolchain.env) for the targets rustup ships no
# standard library for here (MIPS, 32-bit ARM): a dated nightly with rust-src, whose std
# `-Z build-std` compiles, and zig from PyPI's ziglang package, which links against its musl
# (cross/zig-cc). Silent and quick when both are there. Run by scripts/install-deps.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=SCRIPTDIR/../cross/toolchain.env
. "$root/cross/toolchain.env"

if ! rustup "+$NIGHTLY" component list --installed 2>/dev/null | grep -q '^rust-src'; then
	echo "install-cross: installing $NIGHTLY with rust-src"
	rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src
fi

# x86_64 builds std too (the Makefile's BUILD_STD_TARGETS); rust-lld links it with the musl
# start files and libc of the nightly's x86_64 musl target.
if ! rustup "+$NIGHTLY" target list --installed | grep -qx x86_64-unknown-linux-musl; then
	echo "install-cross: adding x86_64-unknown-linux-musl to $NIGHTLY"
	rustup target add --toolchain "$NIGHTLY" x86_64-unknown-linux-musl
fi

zig=$ZIG_HOME/ziglang/zig
if [ "$("$zig" version 2>/dev/null)" != "$ZIGLANG" ]; then
	echo "install-cross: installing ziglang $ZIGLANG into $ZIG_HOME"
	python3 -m pip --version >/dev/null 2>&1 || {
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
	}
	rm -rf "$ZIG_HOME"
	python3 -m pip install --quiet --disable-pip-version-check --no-deps \
		--target "$ZIG_HOME" "ziglang==$ZIGLANG"
	[ "$("$zig" version)" = "$ZIGLANG" ]
fi
