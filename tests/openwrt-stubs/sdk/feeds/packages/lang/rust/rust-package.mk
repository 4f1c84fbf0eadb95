# Test stand-in for the packages feed's lang/rust/rust-package.mk.
RUST_ARCH_DEPENDS:=@(aarch64||arm||mips||mipsel||x86_64)

# Records the packages it is called for (STUB_RUST_PACKAGES in `make dump`).
define RustBinPackage
STUB_RUST_PACKAGES+=$(1)
endef
