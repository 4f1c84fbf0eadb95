#!/usr/bin/env bash
# Installs what `make test` needs on a Debian/Ubuntu machine (as root): the
# network tools the tests drive, qemu for the aarch64 binary, busybox (ash,
# the shell OpenWrt runs our scripts with), shellcheck, strace (the bench counts
# the processes an apply starts with it), chromium and Playwright (the LuCI
# app's browser test drives Debian's chromium; no browser download), dnsmasq-base
# (the real dnsmasq that fills our address sets through nftset=; only the binary:
# no system service is installed or started), the musl targets, and the clippy
# and rustfmt components `make lint` uses.
# Silent and quick when everything is already there.
set -euo pipefail

apt_packages=(nftables iptables conntrack iproute2 qemu-user-static iperf3 busybox shellcheck strace
	chromium python3-pip dnsmasq-base)
rust_targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)

missing=()
for package in "${apt_packages[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q ' installed$' ||
		missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Playwright's Python package only; `playwright install` (a browser download) is never run.
if ! python3 -c 'import playwright' 2>/dev/null; then
	echo "install-deps: installing playwright (PyPI)"
	python3 -m pip install -q --break-system-packages playwright ||
		python3 -m pip install -q playwright
fi

installed_targets=$(rustup target list --installed)
for target in "${rust_targets[@]}"; do
	grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done

installed_components=$(rustup component list --installed)
for component in clippy rustfmt; do
	grep -q "^$component" <<<"$installed_components" || rustup component add "$component"
done

# The pinned nightly and zig that build and link the MIPS and 32-bit ARM binaries.
"$(dirname "$0")/install-cross.sh"
