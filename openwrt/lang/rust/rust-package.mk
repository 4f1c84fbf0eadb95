# SPDX-License-Identifier: GPL-2.0-only
#
# Lets net/connmark-lb/Makefile say `include ../../lang/rust/rust-package.mk`
# as it must in the packages feed, while it sits in this project's own feed
# (src-link): the packages feed the SDK has installed holds the real file.
include $(TOPDIR)/feeds/packages/lang/rust/rust-package.mk
