#!/usr/bin/env bash
# make test's check of the .apk that `make apk` built: the real apk-tools v3
# (the kit's, OWRT_PREFIX) installs it into a fresh OpenWrt-like offline root,
# the installed binary renders the cross self-test config, and `apk del`
# removes it again.
#
# usage: scripts/apk-install-check.sh APK_FILE
set -euo pipefail

apk_file=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${OWRT_PREFIX:-$repo/target/owrt}
owrt=$prefix/bin/owrt.sh
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

# The package's dependencies, from its feed Makefile, are the root's stand-ins.
# shellcheck source=cross/feed.sh
. "$repo/cross/feed.sh"
mapfile -t depends < <(feed_depends "$repo/openwrt/net/connmark-lb/Makefile" connmark-lb)
"$owrt" root-init "$root" "${depends[@]}" >/dev/null
# rc.common's procd.sh needs jshn.sh (package jshn, a stand-in in the root).
install -D -m 0644 "$prefix/share/libubox/jshn.sh" "$root/usr/share/libubox/jshn.sh"
"$owrt" apk "$root" add --allow-untrusted "$apk_file"
"$root/usr/sbin/connmark-lb" check --uci "$repo/cross/selftest.uci" |
	grep -q 'table inet connmark_lb {'
"$owrt" apk "$root" del connmark-lb
if [ -e "$root/usr/sbin/connmark-lb" ]; then
	echo "apk-install-check: apk del left /usr/sbin/connmark-lb" >&2
	exit 1
fi
echo "apk-install-check: $apk_file installs, runs and deletes"
