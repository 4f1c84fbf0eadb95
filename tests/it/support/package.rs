//! What the package tests share: the package's name and installed tree, where the repo and the
//! binary under test are, and the stripped binary and timestamp the packages built here use.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::process::run_ok;

pub const NAME: &str = "connmark-lb";
pub const CONFIG: &str = "files/etc/config/connmark-lb";
pub const INIT_SCRIPT: &str = "files/etc/init.d/connmark-lb";
pub const HOTPLUG: &str = "files/etc/hotplug.d/iface/30-connmark-lb";

/// The installed tree both the feed Makefile and the .ipk must produce: path, mode, and the
/// source file in the repo ("" for the binary, None for directories).
pub const PACKAGE_TREE: &[(&str, u32, Option<&str>)] = &[
    ("etc", 0o755, None),
    ("etc/config", 0o755, None),
    ("etc/config/connmark-lb", 0o600, Some(CONFIG)),
    ("etc/hotplug.d", 0o755, None),
    ("etc/hotplug.d/iface", 0o755, None),
    ("etc/hotplug.d/iface/30-connmark-lb", 0o644, Some(HOTPLUG)),
    ("etc/init.d", 0o755, None),
    ("etc/init.d/connmark-lb", 0o755, Some(INIT_SCRIPT)),
    ("usr", 0o755, None),
    ("usr/sbin", 0o755, None),
    ("usr/sbin/connmark-lb", 0o755, Some("")),
];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_connmark-lb"))
}

/// The test binary, stripped: what the packages built here ship (compressing the debug
/// build's symbols would cost seconds per package).
pub fn package_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("connmark-lb-packaged");
        run_ok(Command::new("strip").arg("-o").arg(&path).arg(binary()));
        path
    })
    .clone()
}

pub fn crate_version() -> String {
    let manifest = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("Cargo.toml has a version line")
        .to_string()
}

/// SOURCE_DATE_EPOCH of every package built here: the same input gives the same bytes.
pub const EPOCH: &str = "1700000000";
