//! What the package tests share: the package's name and installed tree, its feed Makefiles as
//! GNU make evaluates them, where the repo and the binary under test are, and the stripped
//! binary and timestamp the packages built here use.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::process::run_ok;

pub const NAME: &str = "connmark-lb";
pub const CONFIG: &str = "files/etc/config/connmark-lb";
pub const INIT_SCRIPT: &str = "files/etc/init.d/connmark-lb";
pub const USER_HOOK: &str = "files/etc/connmark-lb.user";
/// The feed Makefiles' directories, laid out as in the packages and LuCI feeds.
pub const FEED_DIR: &str = "openwrt/net/connmark-lb";
pub const LUCI_DIR: &str = "openwrt/applications/luci-app-connmark-lb";
/// A stand-in SDK (rules.mk, package.mk, rust-package.mk, luci.mk) that evaluates a feed
/// Makefile and prints what it defines: the one stand-in left, the SDK being too big to run
/// here.
pub const STUB_SDK: &str = "tests/openwrt-stubs/sdk";

/// The installed tree both the feed Makefile and the .ipk must produce: path, mode, and the
/// source file in the repo ("" for the binary, None for directories).
pub const PACKAGE_TREE: &[(&str, u32, Option<&str>)] = &[
    ("etc", 0o755, None),
    ("etc/config", 0o755, None),
    ("etc/config/connmark-lb", 0o600, Some(CONFIG)),
    ("etc/connmark-lb.user", 0o644, Some(USER_HOOK)),
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
    cargo_field("version")
}

/// The string `key` of Cargo.toml's package section (version, license): the one place the
/// packages take them from.
pub fn cargo_field(key: &str) -> String {
    let manifest = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let prefix = format!("{key} = \"");
    manifest
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("Cargo.toml has no {key} line"))
        .to_string()
}

/// SOURCE_DATE_EPOCH of every package built here: the same input gives the same bytes.
pub const EPOCH: &str = "1700000000";

/// Runs the feed Makefile in `dir` (FEED_DIR or LUCI_DIR) against the stand-in SDK.
pub fn feed_make(dir: &str, args: &[&str]) -> String {
    run_ok(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(repo().join(dir))
            .arg(format!("TOPDIR={}", repo().join(STUB_SDK).display()))
            .args(args),
    )
}

/// What the feed Makefile in `dir` defines with `args` (variables) given: `PKG_*` and
/// `package.FIELD` keys.
pub fn feed_dump(dir: &str, args: &[&str]) -> HashMap<String, String> {
    feed_make(dir, &[args, &["dump"]].concat())
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The packages a DEPENDS value pulls in: `+NAME`, and `+SYMBOL:NAME` (true on every router
/// image we build for), in order.
pub fn pulled_in(depends: &str) -> Vec<String> {
    depends
        .split_whitespace()
        .filter_map(|word| word.strip_prefix('+'))
        .map(|word| word.rsplit(':').next().unwrap_or(word).to_string())
        .collect()
}

/// Lists a directory tree as (relative path, permission bits, is_dir), sorted by path.
pub fn tree(root: &Path) -> Vec<(String, u32, bool)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u32, bool)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, meta.permissions().mode() & 0o7777, meta.is_dir()));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Asserts that `root` holds exactly PACKAGE_TREE, with the repo's files and `binary` as content.
pub fn assert_package_tree(root: &Path, binary: &Path) {
    let expected: Vec<(String, u32, bool)> = PACKAGE_TREE
        .iter()
        .map(|(path, mode, source)| (path.to_string(), *mode, source.is_none()))
        .collect();
    assert_eq!(
        tree(root),
        expected,
        "installed tree under {}",
        root.display()
    );
    for (path, _, source) in PACKAGE_TREE {
        let Some(source) = source else { continue };
        let source = if source.is_empty() {
            binary.to_path_buf()
        } else {
            repo().join(source)
        };
        assert!(
            fs::read(root.join(path)).unwrap() == fs::read(&source).unwrap(),
            "{path} differs from {}",
            source.display()
        );
    }
}
