# Test stand-in for an OpenWrt SDK's include/package.mk. BuildPackage records
# each package's fields instead of generating build rules, and three targets
# expose what the package Makefile defines:
#   dump                 prints PKG_* variables and every package's fields
#   install-<package>    runs Package/<package>/install into $(DESTDIR)
#   prepare              runs Build/Prepare into $(PKG_BUILD_DIR)

PKG_BUILD_DIR ?= $(TOPDIR)/build/$(PKG_NAME)-$(PKG_VERSION)
PKG_INSTALL_DIR ?= $(PKG_BUILD_DIR)/ipkg-install

INSTALL_DIR:=install -d -m0755
INSTALL_BIN:=install -m0755
INSTALL_CONF:=install -m0600
INSTALL_DATA:=install -m0644

STUB_FIELDS:=SECTION CATEGORY SUBMENU TITLE URL DEPENDS PROVIDES CONFLICTS VARIANT \
	DEFAULT_VARIANT
STUB_PKG_VARS:=PKG_NAME PKG_VERSION PKG_RELEASE PKG_LICENSE PKG_LICENSE_FILES PKG_MAINTAINER \
	PKG_SOURCE PKG_SOURCE_URL PKG_HASH PKG_BUILD_DEPENDS PKG_BUILD_PARALLEL STUB_RUST_PACKAGES

# A value inside single quotes for the shell.
sq = '$(subst ','\'',$(strip $(1)))'

# The SDK's default: unpack the downloaded PKG_SOURCE.
define Build/Prepare
	echo unpack $(PKG_SOURCE)
endef

define BuildPackage
$(foreach field,$(STUB_FIELDS),$(eval $(field):=))
$(eval $(Package/$(1)))
$(foreach field,$(STUB_FIELDS),$(eval STUB_$(1)_$(field):=$(value $(field))))
$(eval STUB_PACKAGES+=$(1))
endef

.PHONY: dump prepare

dump:
	@$(foreach var,$(STUB_PKG_VARS),printf '%s\n' $(call sq,$(var)=$($(var)));)
	@$(foreach pkg,$(STUB_PACKAGES),$(foreach field,$(STUB_FIELDS), \
		printf '%s\n' $(call sq,$(pkg).$(field)=$(STUB_$(pkg)_$(field)));))
	@$(foreach pkg,$(STUB_PACKAGES), \
		printf '%s\n' $(call sq,$(pkg).conffiles=$(Package/$(pkg)/conffiles));)
	@$(foreach pkg,$(STUB_PACKAGES), \
		printf '%s\n' $(call sq,$(pkg).description=$(Package/$(pkg)/description));)

install-%:
	$(call Package/$*/install,$(DESTDIR))

prepare:
	mkdir -p $(PKG_BUILD_DIR)
	$(Build/Prepare)
