//! Packaging checks. The feed Makefile is evaluated by GNU make against a stand-in SDK
//! (tests/openwrt-stubs/sdk: the one stand-in left, the SDK being too big to run here), the
//! hotplug hook's event filter runs under busybox ash (OpenWrt's shell), and cross/mkipk.sh
//! builds a real .ipk that is unpacked with tar. The init script runs under the real procd in
//! `procd`, the packages under the real opkg and apk in `pkgmgr`. Scripts that use fixed
//! router paths (/etc/init.d, /var/run) run in a private mount namespace where those paths are
//! temporary directories.
//!
//! Longer than ~600 lines on purpose: it holds only the tests of this one area, each a few
//! dozen lines of steps and assertions; everything they share lives in `support/`.

use connmark_lb::config::raw::RawValue;
use connmark_lb::config::{Config, RuleTarget, uci_text};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use crate::support::package::{
    CONFIG, EPOCH, HOTPLUG, INIT_SCRIPT, NAME, PACKAGE_TREE, binary, crate_version, package_binary,
    repo,
};
use crate::support::process::{run, run_ok};
use crate::support::tempdir::TempDir;

const STUB_SDK: &str = "tests/openwrt-stubs/sdk";
const STUB_RUST_MK: &str = "tests/openwrt-stubs/sdk/feeds/packages/lang/rust/rust-package.mk";

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A script that appends its arguments as one line to `log`: stands in for a program the
/// script under test calls.
fn write_recorder(path: &Path, log: &Path) {
    write_executable(
        path,
        &format!("#!/bin/sh\necho \"$*\" >>'{}'\n", log.display()),
    );
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs `argv` in a private mount namespace in which each `(source, target)` directory is
/// bind-mounted over `target`, so scripts with fixed router paths touch only test files.
fn in_private_mounts(binds: &[(&Path, &str)], argv: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(
            "while [ \"$1\" != -- ]; do mount --bind \"$1\" \"$2\"; shift 2; done; shift; exec \"$@\"",
        )
        .arg("sh");
    for (source, target) in binds {
        cmd.arg(source).arg(target);
    }
    cmd.arg("--").args(argv);
    for var in [
        "IPKG_INSTROOT",
        "PKG_UPGRADE",
        "IPKG_NO_SCRIPT",
        "DEVICE",
        "IFUPDATE_ADDRESSES",
        "IFUPDATE_ROUTES",
        "IFUPDATE_PREFIXES",
        "IFUPDATE_DATA",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(envs.iter().copied());
    run(&mut cmd)
}

// ---------------------------------------------------------------------------------------------
// Feed Makefile

/// Runs the feed Makefile against the stand-in SDK.
fn feed_make(args: &[&str]) -> String {
    run_ok(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(repo().join("openwrt/connmark-lb"))
            .arg(format!("TOPDIR={}", repo().join(STUB_SDK).display()))
            .args(args),
    )
}

fn feed_dump() -> HashMap<String, String> {
    feed_make(&["dump"])
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn stub_rust_arch_depends() -> String {
    let text = fs::read_to_string(repo().join(STUB_RUST_MK)).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("RUST_ARCH_DEPENDS:="))
        .unwrap()
        .to_string()
}

fn words(value: &str) -> Vec<&str> {
    value.split_whitespace().collect()
}

#[test]
fn feed_makefile_declares_rust_build_and_apk_valid_version() {
    let dump = feed_dump();
    assert_eq!(dump["PKG_NAME"], NAME);
    assert_eq!(dump["PKG_BUILD_DEPENDS"], "rust/host");
    assert_eq!(dump["PKG_BUILD_PARALLEL"], "1");
    assert_eq!(
        dump["PKG_VERSION"],
        crate_version(),
        "PKG_VERSION must follow Cargo.toml"
    );
    let parts: Vec<&str> = dump["PKG_VERSION"].split('.').collect();
    assert_eq!(
        parts.len(),
        3,
        "apk wants x.y.z, got {}",
        dump["PKG_VERSION"]
    );
    for part in parts {
        part.parse::<u32>()
            .unwrap_or_else(|_| panic!("version part {part:?} is not a number"));
    }
    let release: u32 = dump["PKG_RELEASE"]
        .parse()
        .expect("PKG_RELEASE is an integer");
    assert!(release >= 1);
    assert!(!dump["PKG_LICENSE"].is_empty());
}

#[test]
fn feed_makefile_has_nftables_default_and_iptables_variant() {
    let dump = feed_dump();
    let arch = stub_rust_arch_depends();

    // Each variant: its package, what it depends on, and what it must never pull in.
    let variants: [(&str, &str, &[&str], &str); 2] = [
        (
            "connmark-lb",
            "nftables",
            &[
                "+nftables",
                "+kmod-nft-core",
                "+kmod-nft-nat",
                "+kmod-nf-conntrack-netlink",
                "+ip-full",
            ],
            "iptables",
        ),
        (
            "connmark-lb-iptables",
            "iptables",
            &[
                "+iptables",
                "+iptables-mod-conntrack-extra",
                "+iptables-mod-ipopt",
                "+kmod-ipt-nat",
                "+kmod-nf-conntrack-netlink",
                "+ip-full",
            ],
            "nft",
        ),
    ];
    for (package, variant, needs, never) in variants {
        let deps = words(&dump[&format!("{package}.DEPENDS")]);
        assert_eq!(
            deps[0], arch,
            "DEPENDS must start with $(RUST_ARCH_DEPENDS)"
        );
        for dep in needs {
            assert!(
                deps.contains(dep),
                "{variant} package lacks {dep}: {deps:?}"
            );
        }
        assert!(!deps.iter().any(|d| d.contains(never)), "{deps:?}");
        assert_eq!(dump[&format!("{package}.VARIANT")], variant);
    }
    assert_eq!(dump["connmark-lb.DEFAULT_VARIANT"], "1");
    assert_eq!(dump["connmark-lb-iptables.CONFLICTS"], NAME);

    for pkg in ["connmark-lb", "connmark-lb-iptables"] {
        assert_eq!(dump[&format!("{pkg}.PROVIDES")], NAME);
        assert_eq!(dump[&format!("{pkg}.conffiles")], "/etc/config/connmark-lb");
        for field in ["SECTION", "CATEGORY", "TITLE", "description"] {
            assert!(
                !dump[&format!("{pkg}.{field}")].is_empty(),
                "{pkg} has no {field}"
            );
        }
    }
}

/// Lists a directory tree as (relative path, permission bits, is_dir), sorted by path.
fn tree(root: &Path) -> Vec<(String, u32, bool)> {
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
fn assert_package_tree(root: &Path, binary: &Path) {
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

#[test]
fn feed_makefile_installs_every_file_with_openwrt_modes() {
    for pkg in ["connmark-lb", "connmark-lb-iptables"] {
        let tmp = TempDir::new("feed-install");
        let install_dir = tmp.join("ipkg-install");
        fs::create_dir_all(install_dir.join("bin")).unwrap();
        let built = install_dir.join("bin/connmark-lb");
        fs::copy(binary(), &built).unwrap();
        let dest = tmp.join("dest");
        feed_make(&[
            &format!("PKG_BUILD_DIR={}", repo().display()),
            &format!("PKG_INSTALL_DIR={}", install_dir.display()),
            &format!("DESTDIR={}", dest.display()),
            &format!("install-{pkg}"),
        ]);
        assert_package_tree(&dest, &built);
    }
}

#[test]
fn feed_makefile_prepare_copies_the_source_without_build_output() {
    let tmp = TempDir::new("feed-prepare");
    let build_dir = tmp.join("build");
    assert!(
        repo().join("target").is_dir(),
        "cargo test builds into target/, which prepare must leave out"
    );
    feed_make(&[&format!("PKG_BUILD_DIR={}", build_dir.display()), "prepare"]);
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "src/lib.rs",
        CONFIG,
        INIT_SCRIPT,
        HOTPLUG,
    ] {
        assert!(
            build_dir.join(needed).is_file(),
            "prepare did not copy {needed}"
        );
    }
    for left_out in ["target", ".git"] {
        assert!(
            !build_dir.join(left_out).exists(),
            "prepare copied {left_out}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Shell scripts: syntax and shellcheck

#[test]
fn shell_scripts_parse_under_ash_and_dash_and_pass_shellcheck() {
    let root = repo();
    for script in [INIT_SCRIPT, HOTPLUG] {
        let path = root.join(script);
        run_ok(Command::new("sh").arg("-n").arg(&path));
        run_ok(Command::new("busybox").args(["sh", "-n"]).arg(&path));
        // dash is ash's sibling: the closest dialect shellcheck knows to busybox ash.
        run_ok(Command::new("shellcheck").args(["-s", "dash"]).arg(&path));
    }
    for script in [
        "cross/mkipk.sh",
        "cross/mkapk.sh",
        "cross/zig-cc",
        "scripts/install-deps.sh",
        "scripts/install-cross.sh",
        "scripts/apk-install-check.sh",
        ".ci/run",
    ] {
        let path = root.join(script);
        run_ok(Command::new("bash").arg("-n").arg(&path));
        // -x from the repo root follows `. cross/package.sh`.
        run_ok(
            Command::new("shellcheck")
                .arg("-x")
                .arg(&path)
                .current_dir(&root),
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
    }
}

// ---------------------------------------------------------------------------------------------
// Default config

#[test]
fn default_config_is_a_valid_two_wan_setup_shipped_disabled() {
    let text = fs::read_to_string(repo().join(CONFIG)).unwrap();
    let raw = uci_text::parse(&text).unwrap();
    let config = Config::from_raw(&raw).unwrap();
    assert!(!config.globals.enabled, "the package must ship disabled");
    let links: Vec<(&str, Option<&str>)> = config
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.netifd.as_deref()))
        .collect();
    assert_eq!(links, [("wan", Some("wan")), ("wanb", Some("wanb"))]);
    for section in raw.sections.iter().filter(|s| s.kind == "interface") {
        match section.get("track_ip") {
            Some(RawValue::List(hosts)) => assert!(hosts.len() >= 2, "{}", section.label()),
            other => panic!("{} has track_ip {other:?}", section.label()),
        }
    }
    assert_eq!(config.policies.len(), 1);
    assert_eq!(config.policies[0].members.len(), 2);
    assert!(
        config
            .rules
            .iter()
            .all(|r| r.target == RuleTarget::Policy(0)),
        "{:?}",
        config.rules
    );
}

#[test]
fn check_renders_the_default_config_and_the_cross_selftest_config() {
    let tmp = TempDir::new("check");
    for config in [CONFIG, "cross/selftest.uci"] {
        let out = run_ok(
            Command::new(binary())
                .args(["check", "--uci"])
                .arg(repo().join(config))
                .arg("--state-dir")
                .arg(tmp.join("state")),
        );
        assert!(out.contains("table inet connmark_lb {"), "{config}: {out}");
    }
}

// ---------------------------------------------------------------------------------------------
// Hotplug hook

#[test]
fn hotplug_reloads_only_for_events_that_change_a_configured_wan() {
    struct Case {
        action: &'static str,
        interface: &'static str,
        env: &'static [(&'static str, &'static str)],
        service_running: bool,
        reload: bool,
    }
    let cases = [
        Case {
            action: "ifup",
            interface: "wanb",
            env: &[("DEVICE", "eth2")],
            service_running: true,
            reload: true,
        },
        Case {
            action: "ifdown",
            interface: "wan",
            env: &[],
            service_running: true,
            reload: true,
        },
        Case {
            action: "ifupdate",
            interface: "wan",
            env: &[("DEVICE", "eth1"), ("IFUPDATE_ADDRESSES", "1")],
            service_running: true,
            reload: true,
        },
        Case {
            action: "ifupdate",
            interface: "wanb",
            env: &[("DEVICE", "eth2"), ("IFUPDATE_ROUTES", "1")],
            service_running: true,
            reload: true,
        },
        Case {
            action: "ifupdate",
            interface: "wan",
            env: &[
                ("DEVICE", "eth1"),
                ("IFUPDATE_PREFIXES", "1"),
                ("IFUPDATE_DATA", "1"),
            ],
            service_running: true,
            reload: false,
        },
        Case {
            action: "ifup",
            interface: "lan",
            env: &[("DEVICE", "br-lan")],
            service_running: true,
            reload: false,
        },
        Case {
            action: "ifup",
            interface: "wa",
            env: &[("DEVICE", "eth9")],
            service_running: true,
            reload: false,
        },
        Case {
            action: "ifup-failed",
            interface: "wan",
            env: &[],
            service_running: true,
            reload: false,
        },
        Case {
            action: "ifup",
            interface: "wan",
            env: &[("DEVICE", "eth1")],
            service_running: false,
            reload: false,
        },
    ];
    let hook = repo().join(HOTPLUG);
    let hook = hook.to_str().unwrap();
    for case in cases {
        let tmp = TempDir::new("hotplug");
        let (run_dir, initd) = (tmp.join("run"), tmp.join("initd"));
        fs::create_dir_all(&run_dir).unwrap();
        fs::create_dir_all(&initd).unwrap();
        if case.service_running {
            fs::write(run_dir.join("connmark-lb.ifaces"), "wan wanb\n").unwrap();
        }
        let log = tmp.join("log");
        write_recorder(&initd.join(NAME), &log);
        let mut env = vec![("ACTION", case.action), ("INTERFACE", case.interface)];
        env.extend_from_slice(case.env);
        // hotplug-call sources each hook in a subshell.
        let out = in_private_mounts(
            &[(&run_dir, "/var/run"), (&initd, "/etc/init.d")],
            &["busybox", "sh", "-c", "( . \"$0\" )", hook],
            &env,
        );
        let what = format!(
            "{} {} {:?} running={}",
            case.action, case.interface, case.env, case.service_running
        );
        assert!(out.status.success(), "{what}: {out:?}");
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{what} was not silent: {out:?}"
        );
        let expected = if case.reload {
            vec!["reload".to_string()]
        } else {
            Vec::new()
        };
        assert_eq!(read_lines(&log), expected, "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// .ipk

fn build_ipk(out_dir: &Path, arch: &str) -> PathBuf {
    let printed = run_ok(
        Command::new(repo().join("cross/mkipk.sh"))
            .arg(arch)
            .arg(package_binary())
            .arg(out_dir)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env_remove("RELEASE"),
    );
    let ipk = PathBuf::from(printed.trim());
    assert_eq!(
        ipk,
        out_dir.join(format!("{NAME}_{}-r1_{arch}.ipk", crate_version()))
    );
    ipk
}

/// `tar -tv` of an archive: (mode string, owner, size, date time, name) per member, in order.
fn tar_listing(archive: &Path) -> Vec<(String, String, u64, String, String)> {
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--full-time", "-tvzf"])
            .arg(archive)
            .env("TZ", "UTC"),
    )
    .lines()
    .map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (
            f[0].to_string(),
            f[1].to_string(),
            f[2].parse().unwrap(),
            format!("{} {}", f[3], f[4]),
            f[5..].join(" "),
        )
    })
    .collect()
}

fn control_fields(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(continuation) = line.strip_prefix(' ') {
            let last = fields.last_mut().expect("continuation after a field");
            last.1.push('\n');
            last.1.push_str(continuation);
        } else {
            let (key, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            fields.push((key.to_string(), value.to_string()));
        }
    }
    fields
}

#[test]
fn ipk_has_openwrt_layout_control_fields_and_tree() {
    let tmp = TempDir::new("ipk");
    let ipk = build_ipk(&tmp.join("out"), "aarch64_generic");

    let outer = tar_listing(&ipk);
    let names: Vec<&str> = outer.iter().map(|m| m.4.as_str()).collect();
    assert_eq!(
        names,
        ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    );
    for (mode, owner, _, time, name) in &outer {
        assert_eq!(owner, "0/0", "{name}");
        assert_eq!(mode, "-rw-r--r--", "{name}");
        assert_eq!(
            time, "2023-11-14 22:13:20",
            "{name} mtime is not SOURCE_DATE_EPOCH"
        );
    }
    let unpacked = tmp.join("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&ipk)
            .arg("-C")
            .arg(&unpacked),
    );
    assert_eq!(
        fs::read_to_string(unpacked.join("debian-binary")).unwrap(),
        "2.0\n"
    );

    // data.tar.gz: sorted, numeric owners, the package tree.
    let data = tar_listing(&unpacked.join("data.tar.gz"));
    let data_names: Vec<String> = data.iter().map(|m| m.4.clone()).collect();
    let mut sorted = data_names.clone();
    sorted.sort();
    assert_eq!(data_names, sorted, "data.tar members are not sorted");
    assert!(data.iter().all(|m| m.1 == "0/0"));
    let root = tmp.join("root");
    fs::create_dir_all(&root).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(unpacked.join("data.tar.gz"))
            .arg("-C")
            .arg(&root),
    );
    assert_package_tree(&root, &package_binary());
    run_ok(Command::new(root.join("usr/sbin/connmark-lb")).arg("--help"));

    // control.tar.gz
    let control_dir = tmp.join("control");
    fs::create_dir_all(&control_dir).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(unpacked.join("control.tar.gz"))
            .arg("-C")
            .arg(&control_dir),
    );
    let control: Vec<(String, u32, bool)> = tree(&control_dir);
    assert_eq!(
        control,
        [
            ("conffiles".to_string(), 0o644, false),
            ("control".to_string(), 0o644, false),
            ("postinst".to_string(), 0o755, false),
            ("prerm".to_string(), 0o755, false),
        ]
    );
    assert_eq!(
        fs::read_to_string(control_dir.join("conffiles")).unwrap(),
        "/etc/config/connmark-lb\n"
    );
    let fields = control_fields(&fs::read_to_string(control_dir.join("control")).unwrap());
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.first(), Some(&"Package"));
    assert_eq!(keys.last(), Some(&"Description"));
    let field = |key: &str| -> String {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .1
            .clone()
    };
    assert_eq!(field("Package"), NAME);
    assert_eq!(field("Version"), format!("{}-r1", crate_version()));
    assert_eq!(field("Architecture"), "aarch64_generic");
    assert_eq!(field("SourceDateEpoch"), EPOCH);
    let data_tar_size = run(Command::new("gzip")
        .arg("-dc")
        .arg(unpacked.join("data.tar.gz")))
    .stdout
    .len();
    assert_eq!(field("Installed-Size"), data_tar_size.to_string());
    assert!(
        field("Description").contains('\n'),
        "Description needs a long form"
    );

    // Depends: the feed's nftables package dependencies, as opkg writes them.
    let dump = feed_dump();
    let feed_deps: Vec<String> = words(&dump["connmark-lb.DEPENDS"])
        .iter()
        .filter_map(|d| d.strip_prefix('+'))
        .map(str::to_string)
        .collect();
    assert_eq!(field("Depends"), feed_deps.join(", "));

    for script in ["postinst", "prerm"] {
        let path = control_dir.join(script);
        run_ok(Command::new("busybox").args(["sh", "-n"]).arg(&path));
        // functions.sh is the router's (base-files), not ours to follow.
        run_ok(
            Command::new("shellcheck")
                .args(["-s", "dash", "-e", "SC1091"])
                .arg(&path),
        );
    }
}

#[test]
fn ipk_is_byte_for_byte_reproducible() {
    let tmp = TempDir::new("ipk-repro");
    let first = fs::read(build_ipk(&tmp.join("a"), "x86_64")).unwrap();
    thread::sleep(Duration::from_millis(1100));
    let second = fs::read(build_ipk(&tmp.join("b"), "x86_64")).unwrap();
    assert!(first == second, "two builds of the same inputs differ");
}
