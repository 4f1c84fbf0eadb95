# SPDX-License-Identifier: GPL-2.0-only
#
# Lets applications/luci-app-connmark-lb/Makefile say `include ../../luci.mk`
# as it must in the LuCI feed, while it sits in this project's own feed
# (src-link): the LuCI feed the SDK has installed holds the real file.
include $(TOPDIR)/feeds/luci/luci.mk
