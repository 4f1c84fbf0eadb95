# shellcheck shell=bash
# Read by the scripts that source cross/package.sh.
# shellcheck disable=SC2034,SC2154
#
# Sourced by cross/package.sh when PACKAGE=luci-app-connmark-lb: what the LuCI
# app's package holds and says (its dependencies read from its feed
# Makefile), over connmark-lb's version, release, license and script frame.
# The tree is what luci.mk installs from openwrt/applications/
# luci-app-connmark-lb (htdocs/ under /www, root/ under /), the postinst body
# is luci.mk's (forget LuCI's menu and module caches, make rpcd read the new
# ACL).

pkg_feed=$root/openwrt/applications/luci-app-connmark-lb/Makefile
pkg_section=luci
mapfile -t pkg_depends < <(feed_value "$pkg_feed" LUCI_DEPENDS | feed_names)
pkg_conffiles=()
pkg_summary="LuCI support for connmark-lb (Multi-WAN)."
pkg_details="Network > Multi-WAN: live status of every link, forms for interfaces,
members, policies, rules and global settings, a path explainer and a check."

pkg_stage() {
	local dir=$1 app=$root/openwrt/applications/luci-app-connmark-lb
	install -d -m 0755 "$dir/www"
	cp -R "$app/htdocs/." "$dir/www/"
	cp -R "$app/root/." "$dir/"
	find "$dir" -type d -exec chmod 0755 {} +
	find "$dir" -type f -exec chmod 0644 {} +
	chown -R 0:0 "$dir"
	find "$dir" -exec touch -h -d "@$pkg_epoch" {} +
}

pkg_postinst_body() {
	cat <<'BODY'
[ -n "${IPKG_INSTROOT}" ] || {
	rm -f /tmp/luci-indexcache*
	rm -rf /tmp/luci-modulecache/
	killall -HUP rpcd 2>/dev/null
	exit 0
}
BODY
}
