//! The real OpenWrt userland (ubusd, rpcd, netifd, procd, fw4, opkg, apk) that `make kit`
//! builds from ../shared/openwrt-userland into OWRT_PREFIX (default target/owrt), driven
//! through the kit's `owrt.sh`. A [`Stack`] owns one STATE directory: dropping it stops every
//! daemon of that state and removes the directory, also when the test fails.

use crate::packaging::{TempDir, repo, run, run_ok};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the kit was built: OWRT_PREFIX (exported by the Makefile), else target/owrt.
pub fn prefix() -> PathBuf {
    let prefix = std::env::var_os("OWRT_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/owrt"));
    assert!(
        prefix.join("bin/owrt.sh").is_file(),
        "no OpenWrt kit in {} (run `make kit`)",
        prefix.display()
    );
    prefix
}

/// `owrt.sh -p PREFIX args...`
pub fn owrt<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let prefix = prefix();
    let mut cmd = Command::new(prefix.join("bin/owrt.sh"));
    cmd.arg("-p").arg(&prefix).args(args);
    cmd
}

/// Runs an owrt.sh command that must succeed; returns its stdout.
pub fn owrt_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    run_ok(&mut owrt(args))
}

/// One running stack of OpenWrt daemons (ubusd + rpcd, and whatever a test adds: netifd,
/// procd) around a STATE directory.
pub struct Stack {
    /// Dropped after the daemons are stopped.
    dir: TempDir,
}

impl Stack {
    /// An empty STATE directory (no daemon yet); `etc-config/` is its /etc/config.
    pub fn new(tag: &str) -> Stack {
        let dir = TempDir::new(tag);
        std::fs::create_dir_all(dir.join("state/etc-config")).unwrap();
        Stack { dir }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// A scratch path next to the state, removed with it.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Writes an /etc/config file.
    pub fn write_config(&self, name: &str, text: &str) {
        std::fs::write(self.state().join("etc-config").join(name), text).unwrap();
    }

    /// `owrt.sh COMMAND STATE args...`, which must succeed; returns its stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, command: &str, args: &[S]) -> String {
        run_ok(&mut self.command(command, args))
    }

    fn command<S: AsRef<OsStr>>(&self, command: &str, args: &[S]) -> Command {
        let mut cmd = owrt(&[command]);
        cmd.arg(self.state()).args(args);
        cmd
    }

    /// Starts ubusd and rpcd; returns the socket path.
    pub fn start_ubus(&self) -> PathBuf {
        PathBuf::from(self.ok::<&str>("ubus-start", &[]).trim())
    }

    /// `ubus call OBJECT METHOD ARGS` with the kit's ubus CLI; the reply as JSON.
    pub fn call(&self, object: &str, method: &str, args: &str) -> serde_json::Value {
        let text = self.ok("ubus", &["call", object, method, args]);
        if text.trim().is_empty() {
            return serde_json::json!({});
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ubus reply {text:?}: {e}"))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let out = run(&mut self.command::<&str>("ubus-stop", &[]));
        if !out.status.success() {
            eprintln!(
                "cleanup: owrt.sh ubus-stop: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The packages `owrt.sh root-init` stands in for when given none (its README).
const KIT_STAND_INS: &[&str] = &[
    "libc",
    "libgcc1",
    "base-files",
    "busybox",
    "procd",
    "ubus",
    "ubusd",
    "uci",
    "libubox",
    "jshn",
    "jsonfilter",
    "netifd",
    "firewall4",
    "nftables",
    "ip-full",
    "kmod-nft-core",
    "kmod-nft-nat",
    "kmod-nf-conntrack-netlink",
    "iptables",
    "iptables-mod-conntrack-extra",
];

/// Makes `root` an offline OpenWrt root (`owrt.sh root-init`): base-files' shell libraries,
/// opkg's and apk's databases with stand-ins for our dependencies, one opkg feed per `feeds`,
/// and jshn.sh (package jshn is one of the stand-ins; rc.common's procd.sh sources it).
pub fn root_init(root: &Path, feeds: &[&Path]) {
    root_init_with(root, feeds, &[]);
}

/// [`root_init`] with more stand-ins than the kit's default ones (luci-base for the LuCI app).
pub fn root_init_with(root: &Path, feeds: &[&Path], more_stand_ins: &[&str]) {
    std::fs::create_dir_all(root).unwrap();
    let mut cmd = owrt(&["root-init"]);
    cmd.arg(root);
    for feed in feeds {
        cmd.arg("--feed").arg(feed);
    }
    if !more_stand_ins.is_empty() {
        cmd.args(KIT_STAND_INS).args(more_stand_ins);
    }
    run_ok(&mut cmd);
    let jshn = root.join("usr/share/libubox/jshn.sh");
    std::fs::create_dir_all(jshn.parent().unwrap()).unwrap();
    std::fs::copy(prefix().join("share/libubox/jshn.sh"), jshn).unwrap();
}
