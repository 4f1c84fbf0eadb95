# shellcheck shell=bash
# The variables below are read by the scripts that source this file; root is
# theirs.
# shellcheck disable=SC2034,SC2154
# The maintainer scripts are written literally (their variables expand on the router).
# shellcheck disable=SC2016
#
# Sourced by mkipk.sh and mkapk.sh (bash): what the connmark-lb package holds
# and says about itself, written once so the .ipk and the .apk cannot drift
# apart. The tree and modes are those of Package/connmark-lb in the feed
# Makefile, its dependencies and conffiles are read from there; the maintainer scripts are the ones OpenWrt's
# include/package-pack.mk generates for a package without scripts of its own
# (a test compares both formats with the Makefile and runs them with the real
# opkg and apk).
#
# The caller sets root (the project tree) and passes its arguments
# (ARCH BINARY OUTDIR, see its usage); PACKAGE describes luci-app-connmark-lb
# instead (cross/package-luci.sh; it needs no binary).
if [ "$#" -ne 3 ]; then
	sed -n 's/^# \{0,1\}//; /^usage:/,/^Prints/p' "$0" >&2
	exit 2
fi
arch=$1 binary=$2 outdir=$3
# Files must be owned by root in the package: without root, the caller runs
# again as root of a user namespace (its own files then belong to uid 0).
if [ "$(id -u)" != 0 ]; then
	exec unshare --map-root-user --setuid 0 --setgid 0 "$0" "$@"
fi

pkg_name=${PACKAGE:-connmark-lb}
pkg_release=${RELEASE:-1}
# shellcheck source=cross/feed.sh
. "$root/cross/feed.sh"
pkg_version=$(cargo_field "$root/Cargo.toml" version)
pkg_license=$(cargo_field "$root/Cargo.toml" license)
pkg_epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
pkg_feed=$root/openwrt/net/connmark-lb/Makefile
pkg_section=net
# The feed's default variant (nftables).
mapfile -t pkg_depends < <(feed_depends "$pkg_feed" connmark-lb)
mapfile -t pkg_conffiles < <(feed_block "$pkg_feed" Package/connmark-lb/conffiles)
pkg_summary="Multi-WAN connmark load balancer (static build)."
pkg_details="Balances new connections from the LAN over several WAN links by weight
and keeps each connection on its link for its whole life."

[ -n "$pkg_version" ] || { echo "$0: no version in $root/Cargo.toml" >&2; exit 1; }
[ "${#pkg_depends[@]}" -gt 0 ] || { echo "$0: no DEPENDS in $pkg_feed" >&2; exit 1; }
case $pkg_release in '' | *[!0-9]*) echo "$0: RELEASE must be an integer" >&2; exit 2 ;; esac
case $pkg_name in
connmark-lb) [ -x "$binary" ] || { echo "$0: $binary is not an executable" >&2; exit 1; } ;;
luci-app-connmark-lb) ;;
*) echo "$0: PACKAGE must be connmark-lb or luci-app-connmark-lb" >&2; exit 2 ;;
esac

# Installs the package's files under DIR, owned by root, with OpenWrt's modes
# (INSTALL_BIN 0755, INSTALL_CONF 0600, INSTALL_DATA 0644) and SOURCE_DATE_EPOCH
# mtimes.
pkg_stage() {
	local dir=$1
	install -d -m 0755 "$dir/usr/sbin" "$dir/etc/config" "$dir/etc/init.d"
	install -m 0755 "$binary" "$dir/usr/sbin/$pkg_name"
	install -m 0600 "$root/files/etc/config/$pkg_name" "$dir/etc/config/$pkg_name"
	install -m 0755 "$root/files/etc/init.d/$pkg_name" "$dir/etc/init.d/$pkg_name"
	install -m 0644 "$root/files/etc/$pkg_name.user" "$dir/etc/$pkg_name.user"
	chown -R 0:0 "$dir"
	find "$dir" -exec touch -h -d "@$pkg_epoch" {} +
}

# Every generated script starts with this guard: an image build or an offline
# root without base-files has no functions.sh, and the script then does
# nothing.
pkg_guard() {
	cat <<'GUARD'
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
GUARD
}

# opkg's postinst/prerm: base-files' default_postinst enables and starts every
# shipped init script (only enables it in an image build; keeps the user's
# enable/disable choice on upgrade), default_prerm disables and stops it.
pkg_ipk_postinst() {
	cat <<'HEAD'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
HEAD
	pkg_guard
	echo 'default_postinst "$0" "$@"'
}
pkg_ipk_prerm() {
	echo '#!/bin/sh'
	pkg_guard
	echo 'default_prerm "$0" "$@"'
}

# apk's scripts do the same; apk passes no script arguments, so the package
# name and root are exported for base-files, and an upgrade runs the install
# script with PKG_UPGRADE=1.
pkg_apk_exports() {
	echo 'export root="${IPKG_INSTROOT}"'
	echo "export pkgname=\"$pkg_name\""
}
pkg_apk_post_install() {
	pkg_ipk_postinst | sed '$d'
	pkg_apk_exports
	printf 'add_group_and_user\ndefault_postinst\n'
	pkg_postinst_body
}

# A package's own postinst (OpenWrt's Package/NAME/postinst): the .ipk ships it
# as postinst-pkg, which default_postinst runs; the .apk's post-install ends
# with it. connmark-lb has none.
pkg_postinst_body() {
	:
}
pkg_apk_post_upgrade() {
	printf '#!/bin/sh\nexport PKG_UPGRADE=1\n'
	pkg_apk_post_install | sed '1d'
}
pkg_apk_pre_deinstall() {
	pkg_ipk_prerm | sed '$d'
	pkg_apk_exports
	echo 'default_prerm'
}

if [ "$pkg_name" = luci-app-connmark-lb ]; then
	# shellcheck source=cross/package-luci.sh
	. "$root/cross/package-luci.sh"
fi
