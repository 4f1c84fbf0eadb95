//! Packaging checks: the shipped shell scripts parse under ash and dash and pass shellcheck,
//! the default config is valid, and cross/mkipk.sh builds a real .ipk that is unpacked with
//! tar. The feed Makefiles are checked in `feed`, the init script runs under the real procd in
//! `procd`, the packages under the real opkg and apk in `pkgmgr`.

use connmark_lb::config::raw::RawValue;
use connmark_lb::config::{Config, RuleTarget, uci_text};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::support::package::{
    CONFIG, EPOCH, FEED_DIR, INIT_SCRIPT, NAME, USER_HOOK, assert_package_tree, binary,
    crate_version, feed_dump, package_binary, pulled_in, repo, tree,
};
use crate::support::process::{run, run_ok};
use crate::support::tempdir::TempDir;

// ---------------------------------------------------------------------------------------------
// Shell scripts: syntax and shellcheck

#[test]
fn shell_scripts_parse_under_ash_and_dash_and_pass_shellcheck() {
    let root = repo();
    for script in [INIT_SCRIPT, USER_HOOK] {
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
        "scripts/lint-feed.sh",
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
        "/etc/config/connmark-lb\n/etc/connmark-lb.user\n"
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
    let feed_deps = pulled_in(&feed_dump(FEED_DIR, &[])["connmark-lb.DEPENDS"]);
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
