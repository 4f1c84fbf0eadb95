//! Our packages under the real package managers: OpenWrt's opkg (24.10 and older) installs,
//! upgrades and removes the .ipk from a local feed with a `Packages` index, and apk-tools v3
//! (25.12 and later) does the same with the .apk, each in an offline root made by the kit's
//! `root-init` (base-files' functions.sh and rc.common, stand-ins for our dependencies). The
//! maintainer scripts are the SDK's, so base-files itself enables the service on install
//! (`/etc/rc.d` links) and disables it on removal; a user's edited config and hook script (the
//! conffiles, which sysupgrade keeps too) survive an upgrade.

use crate::support::owrt::{self, root_init};
use crate::support::package::{
    CONFIG, EPOCH, NAME, PACKAGE_TREE, USER_HOOK, crate_version, package_binary, repo,
};
use crate::support::process::{run, run_ok};
use crate::support::tempdir::TempDir;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The rc.d links `/etc/init.d/connmark-lb enable` makes (START=25, STOP=10).
const RC_LINKS: [&str; 2] = ["etc/rc.d/K10connmark-lb", "etc/rc.d/S25connmark-lb"];

/// Builds release `release` of the package with cross/mk{ipk,apk}.sh from the test binary.
fn build(script: &str, out: &Path, release: u32) -> PathBuf {
    let printed = run_ok(
        Command::new(repo().join("cross").join(script))
            .arg("x86_64")
            .arg(package_binary())
            .arg(out)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("RELEASE", release.to_string())
            .env("APK", owrt::prefix().join("bin/apk")),
    );
    PathBuf::from(printed.trim())
}

/// The package's files are in `root` with their modes and contents.
fn assert_installed(root: &Path) {
    for (path, mode, source) in PACKAGE_TREE {
        let Some(source) = source else { continue };
        let installed = root.join(path);
        let meta = fs::metadata(&installed)
            .unwrap_or_else(|e| panic!("{} not installed: {e}", installed.display()));
        assert_eq!(meta.permissions().mode() & 0o7777, *mode, "mode of {path}");
        let shipped = if source.is_empty() {
            package_binary()
        } else {
            repo().join(source)
        };
        assert!(
            fs::read(&installed).unwrap() == fs::read(&shipped).unwrap(),
            "{path} differs from {}",
            shipped.display()
        );
    }
}

/// Every file of the package except the (edited) conffiles is gone from `root`.
fn assert_removed(root: &Path) {
    for (path, _, source) in PACKAGE_TREE {
        if source.is_some() && !CONFFILES.iter().any(|(conffile, _)| conffile == path) {
            assert!(!root.join(path).exists(), "{path} left after removal");
        }
    }
}

fn rc_links(root: &Path) -> Vec<&'static str> {
    RC_LINKS
        .into_iter()
        .filter(|link| fs::symlink_metadata(root.join(link)).is_ok())
        .collect()
}

/// The package's conffiles: where they are installed, and their source in the repo.
const CONFFILES: [(&str, &str); 2] = [
    ("etc/config/connmark-lb", CONFIG),
    ("etc/connmark-lb.user", USER_HOOK),
];

/// Appends a user's edit to every installed conffile; returns the edited texts.
fn edit_conffiles(root: &Path) -> Vec<String> {
    CONFFILES
        .iter()
        .map(|(path, _)| {
            let path = root.join(path);
            let edited = format!(
                "{}\n# edited by the user\n",
                fs::read_to_string(&path).unwrap()
            );
            fs::write(&path, &edited).unwrap();
            edited
        })
        .collect()
}

/// Every conffile still holds the user's edit, and (with `suffix`) the new default sits beside
/// it.
fn assert_edits_kept(root: &Path, edited: &[String], suffix: Option<&str>) {
    for ((path, source), edited) in CONFFILES.iter().zip(edited) {
        assert_eq!(
            fs::read_to_string(root.join(path)).ok().as_ref(),
            Some(edited),
            "{path}"
        );
        if let Some(suffix) = suffix {
            assert_eq!(
                fs::read_to_string(root.join(format!("{path}{suffix}"))).ok(),
                fs::read_to_string(repo().join(source)).ok(),
                "the new {path} must be offered beside the user's"
            );
        }
    }
}

#[test]
fn opkg_installs_upgrades_keeping_the_edited_conffiles_and_removes_from_a_feed() {
    let tmp = TempDir::new("opkg");
    let (feed, root) = (tmp.join("feed"), tmp.join("root"));
    fs::create_dir_all(&feed).unwrap();
    build("mkipk.sh", &feed, 1);
    owrt::owrt_ok(&[Path::new("feed-index"), &feed]);
    root_init(&root, &[&feed]);
    let opkg = |args: &[&str]| -> String {
        // Offline, opkg runs maintainer scripts only when forced (IPKG_INSTROOT is the root).
        let mut cmd = owrt::owrt(&[Path::new("opkg"), &root]);
        cmd.args(args).arg("--force-postinstall");
        run_ok(&mut cmd)
    };

    opkg(&["update"]);
    opkg(&["install", NAME]);
    assert_installed(&root);
    assert_eq!(
        rc_links(&root),
        RC_LINKS,
        "postinst did not enable the service"
    );
    let version = |release: u32| format!("{NAME} - {}-r{release}", crate_version());
    assert!(opkg(&["list-installed"]).contains(&version(1)));

    let edited = edit_conffiles(&root);
    build("mkipk.sh", &feed, 2);
    owrt::owrt_ok(&[Path::new("feed-index"), &feed]);
    opkg(&["update"]);
    opkg(&["upgrade", NAME]);
    assert!(opkg(&["list-installed"]).contains(&version(2)));
    assert_installed_except_conffiles(&root);
    assert_edits_kept(&root, &edited, Some("-opkg"));
    assert_eq!(
        rc_links(&root),
        RC_LINKS,
        "an upgrade keeps the service enabled"
    );

    opkg(&["remove", NAME]);
    assert_removed(&root);
    assert!(
        rc_links(&root).is_empty(),
        "prerm did not disable the service"
    );
    assert!(!opkg(&["list-installed"]).contains(NAME));
    assert_edits_kept(&root, &edited, None);
}

/// After an upgrade that kept the user's conffiles, everything else is the new package's.
fn assert_installed_except_conffiles(root: &Path) {
    let saved: Vec<Vec<u8>> = CONFFILES
        .iter()
        .map(|(path, source)| {
            let saved = fs::read(root.join(path)).unwrap();
            fs::write(root.join(path), fs::read(repo().join(source)).unwrap()).unwrap();
            saved
        })
        .collect();
    assert_installed(root);
    for ((path, _), saved) in CONFFILES.iter().zip(saved) {
        fs::write(root.join(path), saved).unwrap();
    }
}

#[test]
fn apk_adds_upgrades_keeping_the_edited_conffiles_and_deletes() {
    let tmp = TempDir::new("apk");
    let (out, root) = (tmp.join("out"), tmp.join("root"));
    let first = build("mkapk.sh", &out, 1);
    let second = build("mkapk.sh", &out, 2);
    assert_eq!(
        first.file_name().unwrap().to_str(),
        Some(format!("{NAME}-{}-r1.apk", crate_version()).as_str()),
        "the SDK's file name"
    );
    root_init(&root, &[]);
    let apk = |args: &[&OsArg]| -> String {
        let mut cmd = owrt::owrt(&[Path::new("apk"), &root]);
        cmd.args(args);
        run_ok(&mut cmd)
    };

    apk(&[os("add"), os("--allow-untrusted"), first.as_os_str()]);
    assert_installed(&root);
    assert_eq!(
        rc_links(&root),
        RC_LINKS,
        "post-install did not enable the service"
    );
    // What the SDK puts in lib/apk/packages: the file list, the conffiles, and the conffiles
    // with the checksum they were shipped with.
    let meta = root.join("lib/apk/packages");
    let mut files: Vec<String> = PACKAGE_TREE
        .iter()
        .filter(|(_, _, source)| source.is_some())
        .map(|(path, _, _)| format!("/{path}"))
        .collect();
    files.sort();
    assert_eq!(
        fs::read_to_string(meta.join(format!("{NAME}.list"))).unwrap(),
        files.iter().map(|f| format!("{f}\n")).collect::<String>()
    );
    let conffiles: String = CONFFILES.iter().map(|(p, _)| format!("/{p}\n")).collect();
    assert_eq!(
        fs::read_to_string(meta.join(format!("{NAME}.conffiles"))).unwrap(),
        conffiles
    );
    let with_sums: String = CONFFILES
        .iter()
        .map(|(path, source)| {
            let sha = run_ok(Command::new("sha256sum").arg(repo().join(source)));
            format!("/{path} {}\n", sha.split(' ').next().unwrap())
        })
        .collect();
    assert_eq!(
        fs::read_to_string(meta.join(format!("{NAME}.conffiles_static"))).unwrap(),
        with_sums
    );
    let listed = apk(&[os("info"), os("-L"), os(NAME)]);
    for file in &files {
        assert!(
            listed.contains(&file[1..]),
            "apk info -L lacks {file}: {listed}"
        );
    }

    let edited = edit_conffiles(&root);
    let upgrade = apk(&[os("add"), os("--allow-untrusted"), second.as_os_str()]);
    assert!(upgrade.contains("post-upgrade"), "{upgrade}");
    assert!(
        apk(&[os("info"), os("-e"), os(NAME)]).contains(NAME),
        "not installed after the upgrade"
    );
    assert_installed_except_conffiles(&root);
    assert_edits_kept(&root, &edited, Some(".apk-new"));
    assert_eq!(
        rc_links(&root),
        RC_LINKS,
        "an upgrade keeps the service enabled"
    );

    apk(&[os("del"), os(NAME)]);
    assert_removed(&root);
    assert!(
        rc_links(&root).is_empty(),
        "pre-deinstall did not disable the service"
    );
    assert!(!meta.join(format!("{NAME}.list")).exists());
}

type OsArg = std::ffi::OsStr;

fn os(s: &str) -> &OsArg {
    OsArg::new(s)
}

/// Without base-files (an image build's early stage, a bare offline root) the maintainer
/// scripts of both formats print nothing and succeed.
#[test]
fn maintainer_scripts_are_silent_without_base_files() {
    let tmp = TempDir::new("bare-root");
    let out = tmp.join("out");
    let ipk = build("mkipk.sh", &out, 1);
    let apk_file = build("mkapk.sh", &out, 1);
    for (manager, package) in [("opkg", &ipk), ("apk", &apk_file)] {
        let root = tmp.join(manager);
        root_init(&root, &[]);
        fs::remove_file(root.join("lib/functions.sh")).unwrap();
        let mut install = owrt::owrt(&[Path::new(manager), &root]);
        match manager {
            "opkg" => install
                .args(["install", "--force-postinstall"])
                .arg(package),
            _ => install.args(["add", "--allow-untrusted"]).arg(package),
        };
        let out = run(&mut install);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{manager}: {out:?}");
        assert!(
            stderr.trim().is_empty(),
            "{manager} printed errors: {stderr}"
        );
        assert!(rc_links(&root).is_empty(), "{manager}");
        assert!(root.join("usr/sbin/connmark-lb").is_file(), "{manager}");
    }
}
