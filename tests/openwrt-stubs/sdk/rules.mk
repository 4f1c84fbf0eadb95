# Test stand-in for an OpenWrt SDK's rules.mk: just enough for a package
# Makefile to be evaluated by tests/it/packaging.rs.
INCLUDE_DIR:=$(TOPDIR)/include
