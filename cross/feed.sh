# shellcheck shell=bash
# Reads the feed Makefiles (openwrt/), where the packages' dependencies and
# conffiles are written down once, and Cargo.toml, which holds the version and
# license: sourced by cross/package.sh (the .ipk and .apk),
# scripts/lint-feed.sh and scripts/apk-install-check.sh.

# The string FIELD (version, license) of the package section of Cargo.toml FILE.
cargo_field() {
	sed -n "s/^$2 = \"\\(.*\\)\"\$/\\1/p" "$1" | head -n1
}

# The lines of `define NAME` ... `endef` in FILE, continued lines joined.
feed_block() {
	awk -v name="$2" '$0 == "define " name { inside = 1; next }
		inside && /^endef/ { exit }
		inside { print }' "$1" | feed_join
}

# The value of the first `VAR:=` line of FILE outside any block, continued
# lines joined.
feed_value() {
	feed_join <"$1" | sed -n "s/^$2:=//p" | head -n1
}

# Its input with every line that ends in a backslash joined to the next.
feed_join() {
	sed -e ':a' -e '/\\$/{N;s/\\\n[[:space:]]*/ /;ba}'
}

# The package names of a DEPENDS value on stdin, one per line: `+NAME` and
# `+SYMBOL:NAME` (a condition every router image we build for meets).
feed_names() {
	tr -s ' \t' '\n\n' | sed -n 's/^+\(.*:\)\{0,1\}//p'
}

# The package names that Package/PACKAGE of FILE depends on.
feed_depends() {
	feed_block "$1" "Package/$2" | sed -n 's/^[[:space:]]*DEPENDS:=//p' | feed_names
}
