#!/usr/bin/env bash
# Checks feed Makefiles for what the openwrt/packages and openwrt/luci
# maintainers ask of every package: license (matching Cargo.toml), license
# file, maintainer, version (Cargo.toml's), a downloadable source with its
# hash, the standard includes, URL, description and conffiles of each package,
# RustBinPackage beside each BuildPackage of a Rust package. Prints one line
# per problem and exits 1 when there is any.
#
# usage: scripts/lint-feed.sh MAKEFILE...
# Every $(...) in single quotes below is make's, matched as text.
# shellcheck disable=SC2016
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=cross/feed.sh
. "$repo/cross/feed.sh"
[ "$#" -gt 0 ] || { sed -n '/^# usage:/s/^# //p' "$0" >&2; exit 2; }

version=$(cargo_field "$repo/Cargo.toml" version)
license=$(cargo_field "$repo/Cargo.toml" license)

problems=0
problem() {
	echo "lint-feed: $file: $*"
	problems=$((problems + 1))
}

# Whether `Package/NAME/PART` is defined, as a block or as `... = ...`.
has_part() {
	grep -qxF "define Package/$1/$2" "$file" || grep -q "^Package/$1/$2 = ." "$file"
}

# Whether the block of package NAME, or a block it calls, sets FIELD.
sets_field() {
	local text called
	text=$(feed_block "$file" "Package/$1")
	grep -q "^[[:space:]]*$2:=." <<<"$text" && return 0
	called=$(sed -n 's/^[[:space:]]*$(call \(Package\/[^,)]*\)).*/\1/p' <<<"$text")
	[ -n "$called" ] && feed_block "$file" "$called" | grep -q "^[[:space:]]*$2:=."
}

need_equal() {
	local got
	got=$(feed_value "$file" "$1")
	[ "$got" = "$2" ] || problem "$1 is \"$got\", expected \"$2\""
}

need_match() {
	local got
	got=$(feed_value "$file" "$1")
	grep -Eqx "$2" <<<"$got" || problem "$1 is \"$got\": $3"
}

need_line() {
	grep -qxF "$1" "$file" || problem "no line \"$1\""
}

for file in "$@"; do
	[ -f "$file" ] || { problem "no such file"; continue; }
	[ "$(head -n1 "$file")" = "# SPDX-License-Identifier: $license" ] ||
		problem "the first line must be \"# SPDX-License-Identifier: $license\" (Cargo.toml)"
	need_line 'include $(TOPDIR)/rules.mk'
	need_equal PKG_VERSION "$version"
	need_match PKG_RELEASE '[1-9][0-9]*' "a positive integer"
	need_equal PKG_LICENSE "$license"
	need_match PKG_MAINTAINER '[^<>]+ <[^<> ]+@[^<> ]+>' "Name <address>"

	# A LuCI app: luci.mk makes its one package of the LUCI_* variables.
	if grep -q '^LUCI_TITLE:=' "$file"; then
		for var in LUCI_DEPENDS LUCI_URL; do
			need_match "$var" '.+' "must be set"
		done
		need_line 'include ../../luci.mk'
		need_line '# call BuildPackage - OpenWrt buildroot signature'
		continue
	fi

	need_match PKG_NAME '[a-z0-9][a-z0-9.+-]*' "a package name"
	need_equal PKG_SOURCE '$(PKG_NAME)-$(PKG_VERSION).tar.gz'
	need_match PKG_SOURCE_URL 'https://.+' "the release tarball's directory"
	need_match PKG_HASH '[0-9a-f]{64}' "the tarball's sha256 (make dist writes it)"
	need_match PKG_LICENSE_FILES '.+' "must name the license file"
	for license_file in $(feed_value "$file" PKG_LICENSE_FILES); do
		[ -f "$repo/$license_file" ] || problem "PKG_LICENSE_FILES: no $license_file in the tree"
	done
	need_line 'include $(INCLUDE_DIR)/package.mk'
	rust=0
	if [ "$(feed_value "$file" PKG_BUILD_DEPENDS)" = rust/host ]; then
		rust=1
		need_line 'include ../../lang/rust/rust-package.mk'
	fi

	packages=$(sed -n 's/^$(eval $(call BuildPackage,\([^)]*\)))$/\1/p' "$file")
	[ -n "$packages" ] || problem "no \$(eval \$(call BuildPackage,NAME))"
	for package in $packages; do
		grep -qxF "define Package/$package" "$file" || problem "no define Package/$package"
		for field in TITLE URL DEPENDS; do
			sets_field "$package" "$field" || problem "Package/$package sets no $field:="
		done
		for part in description conffiles; do
			has_part "$package" "$part" || problem "no Package/$package/$part"
		done
		if [ "$rust" = 1 ]; then
			grep -qxF "\$(eval \$(call RustBinPackage,$package))" "$file" ||
				problem "no \$(eval \$(call RustBinPackage,$package))"
		fi
	done
done

[ "$problems" -eq 0 ]
