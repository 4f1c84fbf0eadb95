#!/usr/bin/env bash
# Builds an .ipk that `opkg install` accepts on an OpenWrt router, from a
# prebuilt static binary and files/, with no SDK. The layout is the one
# OpenWrt's ipkg-build produces: a gzip'd tar (not an ar archive) holding
# ./debian-binary, ./data.tar.gz and ./control.tar.gz in that order; GNU tar
# format, numeric owners, sorted names, mtimes from SOURCE_DATE_EPOCH, so the
# same inputs give the same bytes. Contents and scripts: cross/package.sh.
#
# usage: cross/mkipk.sh ARCH BINARY OUTDIR
#   ARCH    the router's opkg architecture (`opkg print-architecture`), e.g.
#           x86_64, aarch64_generic, aarch64_cortex-a53
#   BINARY  the connmark-lb executable to ship as /usr/sbin/connmark-lb
#   OUTDIR  where connmark-lb_<version>-r<release>_<ARCH>.ipk is written
# Prints the path of the package. RELEASE (default 1) is the package release.
# PACKAGE=luci-app-connmark-lb builds the LuCI app instead (ARCH all; BINARY
# is not used).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# Reads the arguments (ARCH BINARY OUTDIR).
# shellcheck source=cross/package.sh
. "$root/cross/package.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=$work/data control=$work/control
mkdir -p "$data" "$control" "$outdir"
pkg_stage "$data"

tar_opts=(--format=gnu --numeric-owner --owner=0 --group=0 --mtime="@$pkg_epoch")
(cd "$data" && tar "${tar_opts[@]}" --sort=name -cf "$work/data.tar" .)
installed_size=$(stat -c %s "$work/data.tar")
gzip -n -9 <"$work/data.tar" >"$work/data.tar.gz"

depends=$(printf '%s, ' "${pkg_depends[@]}")
cat >"$control/control" <<CONTROL
Package: $pkg_name
Version: $pkg_version-r$pkg_release
Depends: ${depends%, }
License: $pkg_license
Section: $pkg_section
SourceDateEpoch: $pkg_epoch
Architecture: $arch
Installed-Size: $installed_size
Description: $pkg_summary
 ${pkg_details//$'\n'/$'\n' }
CONTROL

if [ "${#pkg_conffiles[@]}" -gt 0 ]; then
	printf '%s\n' "${pkg_conffiles[@]}" >"$control/conffiles"
fi
pkg_ipk_postinst >"$control/postinst"
pkg_ipk_prerm >"$control/prerm"
body=$(pkg_postinst_body)
if [ -n "$body" ]; then
	printf '#!/bin/sh\n%s\n' "$body" >"$control/postinst-pkg"
fi
chmod 0644 "$control/control"
[ ! -e "$control/conffiles" ] || chmod 0644 "$control/conffiles"
chmod 0755 "$control"/postinst* "$control/prerm"
(cd "$control" && tar "${tar_opts[@]}" --sort=name -cf - .) | gzip -n -9 >"$work/control.tar.gz"

echo "2.0" >"$work/debian-binary"
chmod 0644 "$work/debian-binary" "$work/data.tar.gz" "$work/control.tar.gz"
touch -d "@$pkg_epoch" "$work/debian-binary" "$work/data.tar.gz" "$work/control.tar.gz"

ipk=$outdir/${pkg_name}_$pkg_version-r${pkg_release}_$arch.ipk
(cd "$work" && tar "${tar_opts[@]}" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz) |
	gzip -n -9 >"$ipk.tmp"
mv "$ipk.tmp" "$ipk"
echo "$ipk"
