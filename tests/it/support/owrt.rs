//! The real OpenWrt userland (ubusd, rpcd, netifd, procd, fw4, opkg, apk) that `make kit`
//! builds from ../shared/openwrt-userland into OWRT_PREFIX (default target/owrt), driven
//! through the kit's `owrt.sh`. A [`Stack`] owns one STATE directory: dropping it stops every
//! daemon of that state and removes the directory, also when the test fails.

use super::addr::{link_addr, link_device, link_gateway};
use super::package::{FEED_DIR, feed_dump, pulled_in, repo};
use super::process::{run, run_ok};
use super::tempdir::TempDir;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

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

/// Polls `check` every 100 ms until it returns Some or `limit` passes.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// /etc/config/network for the test router (`topology`): loopback, `lan` on eth0 and
/// one static interface per link, `wan` on wan1, `wanb` on wan2, ..., with the ISP as gateway.
pub fn network_config(links: usize) -> String {
    let mut text = String::from(
        "config interface 'loopback'\n\toption device 'lo'\n\toption proto 'static'\n\
         \toption ipaddr '127.0.0.1'\n\toption netmask '255.0.0.0'\n\n\
         config interface 'lan'\n\toption device 'eth0'\n\toption proto 'static'\n\
         \toption ipaddr '192.168.77.1'\n\toption netmask '255.255.255.0'\n",
    );
    for link in 1..=links {
        text.push_str(&format!(
            "\nconfig interface '{name}'\n\toption device '{device}'\n\toption proto 'static'\n\
             \toption ipaddr '{addr}'\n\toption netmask '255.255.255.0'\n\
             \toption gateway '{gateway}'\n\toption metric '{metric}'\n",
            name = netifd_name(link),
            device = link_device(link),
            addr = link_addr(link),
            gateway = link_gateway(link),
            metric = 10 * link,
        ));
    }
    text
}

/// The netifd interface of link `link`: `wan`, `wanb`, `wanc`, ...
pub fn netifd_name(link: usize) -> String {
    match link {
        1 => "wan".to_string(),
        n => format!("wan{}", char::from(b'a' + u8::try_from(n - 1).unwrap())),
    }
}

/// /etc/config/connmark-lb as a router has it: every link named by its netifd interface
/// (device, gateway and address come from netifd), balanced by `weights` from the LAN.
pub fn netifd_lb_config(enabled: bool, weights: &[u32]) -> String {
    let mut text = format!(
        "config globals 'globals'\n\toption enabled '{}'\n\toption backend 'nftables'\n\
         \tlist lan 'eth0'\n",
        u8::from(enabled)
    );
    for (i, weight) in weights.iter().enumerate() {
        let name = netifd_name(i + 1);
        text.push_str(&format!(
            "\nconfig interface '{name}'\n\toption interface '{name}'\n\toption weight '{weight}'\n"
        ));
    }
    text
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

    /// `owrt.sh COMMAND STATE args...`, whatever its exit status.
    pub fn output<S: AsRef<OsStr>>(&self, command: &str, args: &[S]) -> Output {
        run(&mut self.command(command, args))
    }

    /// Starts netifd in `netns` with `network` as /etc/config/network and the hotplug scripts
    /// of `hotplug` (a directory holding `iface/`); waits until every interface named in
    /// `up` is up.
    pub fn start_netifd(&self, netns: &str, network: &str, hotplug: &Path, up: &[String]) {
        let file = self.path("network.uci");
        std::fs::write(&file, network).unwrap();
        self.ok(
            "netifd-start",
            &[OsStr::new(netns), file.as_os_str(), hotplug.as_os_str()],
        );
        for name in up {
            self.wait_interface(name, true);
        }
    }

    /// Waits until netifd reports interface `name` up (with its default route) or down.
    pub fn wait_interface(&self, name: &str, up: bool) {
        let object = format!("network.interface.{name}");
        wait_for(
            Duration::from_secs(15),
            &format!("{object} up={up}"),
            || {
                let status = self.call(&object, "status", "{}");
                // A WAN is usable to us once its default route is there, which netifd may
                // add just after the interface is up.
                let has_route = status["route"].as_array().is_some_and(|r| !r.is_empty());
                let routed = !name.starts_with("wan") || has_route == up;
                (status["up"] == up && routed).then_some(())
            },
        );
    }

    /// Starts procd in `netns` with the init scripts of `initd` and the programs of `sbin`
    /// in /usr/sbin of its OpenWrt-like view.
    pub fn start_procd(&self, netns: &str, initd: &Path, sbin: &Path) {
        let args: [&OsStr; 5] = [
            OsStr::new(netns),
            OsStr::new("--initd"),
            initd.as_os_str(),
            OsStr::new("--sbin"),
            sbin.as_os_str(),
        ];
        self.ok("procd-start", &args);
    }

    /// Runs `args` inside the procd view; it must succeed. Returns stdout.
    pub fn exec<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        self.ok("procd-exec", args)
    }

    /// procd's view of service `name` (`ubus call service list`), `{}` when it has none.
    pub fn service(&self, name: &str) -> serde_json::Value {
        let reply = self.call("service", "list", &format!(r#"{{"name":"{name}"}}"#));
        reply
            .get(name)
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}))
    }

    /// A daemon log of this stack (`ubusd`, `rpcd`, `netifd`, `procd`, `procd-syslog`).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.state().join(format!("log/{name}.log"))).unwrap_or_default()
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
        if thread::panicking() {
            for name in ["netifd", "procd", "procd-syslog", "rpcd"] {
                eprintln!("=== {name}.log:\n{}", self.log(name));
            }
            let hotplug = self.state().join("netifd/hotplug.log");
            eprintln!(
                "=== hotplug.log:\n{}",
                std::fs::read_to_string(hotplug).unwrap_or_default()
            );
        }
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
/// opkg's and apk's databases with stand-ins for the kit's packages and for our package's
/// dependencies (as its feed Makefile names them), one opkg feed per `feeds`, and jshn.sh
/// (package jshn is one of the stand-ins; rc.common's procd.sh sources it).
pub fn root_init(root: &Path, feeds: &[&Path]) {
    root_init_with(root, feeds, &[]);
}

/// [`root_init`] with more stand-ins (luci-base for the LuCI app).
pub fn root_init_with(root: &Path, feeds: &[&Path], more_stand_ins: &[&str]) {
    std::fs::create_dir_all(root).unwrap();
    let mut cmd = owrt(&["root-init"]);
    cmd.arg(root);
    for feed in feeds {
        cmd.arg("--feed").arg(feed);
    }
    let ours = pulled_in(&feed_dump(FEED_DIR, &[])["connmark-lb.DEPENDS"]);
    let mut stand_ins: Vec<&str> = KIT_STAND_INS.to_vec();
    for name in ours
        .iter()
        .map(String::as_str)
        .chain(more_stand_ins.iter().copied())
    {
        if !stand_ins.contains(&name) {
            stand_ins.push(name);
        }
    }
    cmd.args(stand_ins);
    run_ok(&mut cmd);
    let jshn = root.join("usr/share/libubox/jshn.sh");
    std::fs::create_dir_all(jshn.parent().unwrap()).unwrap();
    std::fs::copy(prefix().join("share/libubox/jshn.sh"), jshn).unwrap();
}
