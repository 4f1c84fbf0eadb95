#!/usr/bin/env bash
# Builds an .apk for OpenWrt 25.12 and later (apk-tools v3), from a prebuilt
# static binary and files/, with no SDK: the tree, file modes, conffiles,
# lib/apk/packages/connmark-lb.{list,conffiles,conffiles_static} and scripts
# that OpenWrt's include/package-pack.mk makes with CONFIG_USE_APK, packed by
# `apk mkpkg`. Unsigned: install it with `apk add --allow-untrusted`. File
# mtimes come from SOURCE_DATE_EPOCH. Contents and scripts: cross/package.sh.
#
# usage: cross/mkapk.sh ARCH BINARY OUTDIR
#   ARCH    the router's apk architecture (`cat /etc/apk/arch`), e.g.
#           x86_64, aarch64_generic, aarch64_cortex-a53
#   BINARY  the connmark-lb executable to ship as /usr/sbin/connmark-lb
#   OUTDIR  where connmark-lb-<version>-r<release>.apk is written
# Prints the path of the package. RELEASE (default 1) is the package release;
# APK names the apk-tools v3 binary (default: `apk` on PATH, else the one
# `make kit` builds, $OWRT_PREFIX/bin/apk).
# PACKAGE=luci-app-connmark-lb builds the LuCI app instead (ARCH all, packed
# as noarch; BINARY is not used).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# Reads the arguments (ARCH BINARY OUTDIR).
# shellcheck source=cross/package.sh
. "$root/cross/package.sh"

apk=${APK:-$(command -v apk || echo "${OWRT_PREFIX:-$root/target/owrt}/bin/apk")}
"$apk" --version 2>/dev/null | grep -q '^apk-tools 3\.' ||
	{ echo "mkapk: $apk is not apk-tools v3 (set APK, or run make kit)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
files=$work/files scripts=$work/scripts
mkdir -p "$files" "$scripts" "$outdir"
pkg_stage "$files"

# What opkg would keep in /usr/lib/opkg/info: the file list (files and
# symlinks, before the metadata itself), the conffiles, and the conffiles with
# the sha256 they were shipped with (how sysupgrade tells edited ones).
meta=$files/lib/apk/packages
install -d -m 0755 "$files/lib" "$files/lib/apk" "$meta"
(cd "$files" && find . -type f,l -printf '/%P\n' | LC_ALL=C sort) >"$work/list"
mv "$work/list" "$meta/$pkg_name.list"
if [ "${#pkg_conffiles[@]}" -gt 0 ]; then
	printf '%s\n' "${pkg_conffiles[@]}" >"$meta/$pkg_name.conffiles"
	for file in "${pkg_conffiles[@]}"; do
		echo "$file $(sha256sum <"$files$file" | cut -d' ' -f1)"
	done >"$meta/$pkg_name.conffiles_static"
fi
chmod 0644 "$meta"/*
chown -R 0:0 "$files/lib"
find "$files/lib" -exec touch -h -d "@$pkg_epoch" {} +

pkg_apk_post_install >"$scripts/post-install"
pkg_apk_post_upgrade >"$scripts/post-upgrade"
pkg_apk_pre_deinstall >"$scripts/pre-deinstall"

version=$pkg_version-r$pkg_release
# Architecture-independent packages (PKGARCH all) are apk's noarch.
apk_arch=$arch
[ "$arch" != all ] || apk_arch=noarch
apkfile=$outdir/$pkg_name-$version.apk
"$apk" mkpkg \
	--info "name:$pkg_name" \
	--info "version:$version" \
	--info "description:$pkg_summary $(tr '\n' ' ' <<<"$pkg_details" | sed 's/ $//')" \
	--info "arch:$apk_arch" \
	--info "license:$pkg_license" \
	--info "origin:feeds/connmark_lb/$pkg_name" \
	--info "provider-priority:100" \
	--info "depends:${pkg_depends[*]}" \
	--script "post-install:$scripts/post-install" \
	--script "post-upgrade:$scripts/post-upgrade" \
	--script "pre-deinstall:$scripts/pre-deinstall" \
	--files "$files" \
	--output "$apkfile.tmp"
mv "$apkfile.tmp" "$apkfile"
echo "$apkfile"
