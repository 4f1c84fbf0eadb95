# Test stand-in for the LuCI feed's luci.mk: the one package it makes of the
# LUCI_* variables, named after the app's directory.
PKG_NAME?=$(notdir $(CURDIR))

include $(INCLUDE_DIR)/package.mk

define Package/$(PKG_NAME)
  SECTION:=luci
  CATEGORY:=LuCI
  TITLE:=$(LUCI_TITLE)
  URL:=$(LUCI_URL)
  DEPENDS:=$(LUCI_DEPENDS)
endef

$(eval $(call BuildPackage,$(PKG_NAME)))
