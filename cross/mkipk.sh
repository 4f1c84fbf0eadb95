#!/usr/bin/env bash
# Builds an .ipk that `opkg install` accepts on an OpenWrt router, from a
# prebuilt static binary and files/, with no SDK. The layout is the one
# OpenWrt's ipkg-build produces: a gzip'd tar (not an ar archive) holding
# ./debian-binary, ./data.tar.gz and ./control.tar.gz in that order; GNU tar
# format, numeric owners, sorted names, mtimes from SOURCE_DATE_EPOCH, so the
# same inputs give the same bytes.
#
# usage: cross/mkipk.sh ARCH BINARY OUTDIR
#   ARCH    the router's opkg architecture (`opkg print-architecture`), e.g.
#           x86_64, aarch64_generic, aarch64_cortex-a53
#   BINARY  the connmark-lb executable to ship as /usr/sbin/connmark-lb
#   OUTDIR  where connmark-lb_<version>-r<release>_<ARCH>.ipk is written
# Prints the path of the package. RELEASE (default 1) is the package release.
set -euo pipefail

if [ "$#" -ne 3 ]; then
	sed -n 's/^# \{0,1\}//; /^usage:/,/^Prints/p' "$0" >&2
	exit 2
fi
arch=$1 binary=$2 outdir=$3
root=$(cd "$(dirname "$0")/.." && pwd)
name=connmark-lb
release=${RELEASE:-1}
# The crate version in Cargo.toml is the one version of the project.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)
[ -n "$version" ] || { echo "mkipk: no version in $root/Cargo.toml" >&2; exit 1; }
case $release in '' | *[!0-9]*) echo "mkipk: RELEASE must be an integer" >&2; exit 2 ;; esac
[ -x "$binary" ] || { echo "mkipk: $binary is not an executable" >&2; exit 1; }
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=$work/data control=$work/control
mkdir -p "$data" "$control" "$outdir"

# The same tree and modes as Package/connmark-lb/install in the feed
# Makefile (a test compares them).
install -d -m 0755 "$data/usr/sbin" "$data/etc/config" "$data/etc/init.d" \
	"$data/etc/hotplug.d/iface"
install -m 0755 "$binary" "$data/usr/sbin/$name"
install -m 0600 "$root/files/etc/config/$name" "$data/etc/config/$name"
install -m 0755 "$root/files/etc/init.d/$name" "$data/etc/init.d/$name"
install -m 0644 "$root/files/etc/hotplug.d/iface/30-$name" "$data/etc/hotplug.d/iface/30-$name"

tar_opts=(--format=gnu --numeric-owner --owner=0 --group=0 --mtime="@$epoch")
(cd "$data" && tar "${tar_opts[@]}" --sort=name -cf "$work/data.tar" .)
installed_size=$(stat -c %s "$work/data.tar")
gzip -n -9 <"$work/data.tar" >"$work/data.tar.gz"

cat >"$control/control" <<CONTROL
Package: $name
Version: $version-r$release
Depends: nftables, kmod-nft-core, kmod-nft-nat, kmod-nf-conntrack-netlink, ip-full
License: GPL-2.0-only
Section: net
SourceDateEpoch: $epoch
Architecture: $arch
Installed-Size: $installed_size
Description: Multi-WAN connmark load balancer (static build).
 Balances new connections from the LAN over several WAN links by weight
 and keeps each connection on its link for its whole life.
CONTROL

echo "/etc/config/$name" >"$control/conffiles"

# What OpenWrt's default_postinst does for a package with an init script:
# in an image build (IPKG_INSTROOT set) only enable it; on a router enable it
# (not on upgrade, which keeps the user's choice) and start it. The config
# ships disabled, so start only removes stale rules until it is enabled.
cat >"$control/postinst" <<'POSTINST'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
if [ -n "${IPKG_INSTROOT}" ]; then
	shell=$(command -v bash)
	${shell:-/bin/sh} "${IPKG_INSTROOT}/etc/rc.common" \
		"${IPKG_INSTROOT}/etc/init.d/connmark-lb" enable
	exit 0
fi
[ "${PKG_UPGRADE}" = "1" ] || /etc/init.d/connmark-lb enable
/etc/init.d/connmark-lb start
exit 0
POSTINST

# What default_prerm does: disable (not on upgrade) and stop, which removes
# our rules.
cat >"$control/prerm" <<'PRERM'
#!/bin/sh
if [ -n "${IPKG_INSTROOT}" ]; then
	shell=$(command -v bash)
	${shell:-/bin/sh} "${IPKG_INSTROOT}/etc/rc.common" \
		"${IPKG_INSTROOT}/etc/init.d/connmark-lb" disable
	exit 0
fi
[ "${PKG_UPGRADE}" = "1" ] || /etc/init.d/connmark-lb disable
/etc/init.d/connmark-lb stop || true
exit 0
PRERM

chmod 0644 "$control/control" "$control/conffiles"
chmod 0755 "$control/postinst" "$control/prerm"
(cd "$control" && tar "${tar_opts[@]}" --sort=name -cf - .) | gzip -n -9 >"$work/control.tar.gz"

echo "2.0" >"$work/debian-binary"
chmod 0644 "$work/debian-binary" "$work/data.tar.gz" "$work/control.tar.gz"
touch -d "@$epoch" "$work/debian-binary" "$work/data.tar.gz" "$work/control.tar.gz"

ipk=$outdir/${name}_$version-r${release}_$arch.ipk
(cd "$work" && tar "${tar_opts[@]}" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz) |
	gzip -n -9 >"$ipk.tmp"
mv "$ipk.tmp" "$ipk"
echo "$ipk"
