# Test stand-in for the packages feed's lang/rust/rust-package.mk.
RUST_ARCH_DEPENDS:=@(aarch64||arm||mips||mipsel||x86_64)
