//! The test router run by OpenWrt's own daemons ([`OpenwrtRouter`]), the procd view's
//! directories, and what the procd and netifd tests read back from the router: the daemon's
//! pid under procd, the balancing rule's divisor, a routing table.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use super::checks::servers;
use super::netns::Netns;
use super::owrt::{Stack, netifd_lb_config, netifd_name, network_config, wait_for};
use super::package::repo;
use super::tempdir::TempDir;
use super::topology::Topology;
use super::traffic::Server;

/// OpenWrt's /etc/init.d/network runs netifd with `procd_set_param watch network.interface`;
/// that watch, which procd takes up when netifd registers the object, is what turns netifd's
/// notifications into the `interface.*` events interface triggers match. netifd itself runs
/// from `owrt.sh netifd-start` here, after this service is up, so this service only holds the
/// watch.
const NETWORK_WATCH: &str = "#!/bin/sh /etc/rc.common
USE_PROCD=1
START=20
start_service() {
	procd_open_instance
	procd_set_param command /bin/sleep 86400
	procd_set_param watch network.interface
	procd_close_instance
}
";

/// How long a change may take to reach the router.
pub const WAIT: Duration = Duration::from_secs(15);

/// The router's init.d (our script and `network`) and sbin (our binary) for the procd view.
fn view_dirs(dir: &TempDir) -> (PathBuf, PathBuf) {
    let (initd, sbin) = (dir.join("initd"), dir.join("sbin"));
    fs::create_dir_all(&initd).unwrap();
    fs::create_dir_all(&sbin).unwrap();
    fs::copy(
        repo().join("files/etc/init.d/connmark-lb"),
        initd.join("connmark-lb"),
    )
    .unwrap();
    fs::write(initd.join("network"), NETWORK_WATCH).unwrap();
    for entry in fs::read_dir(&initd).unwrap() {
        let path = entry.unwrap().path();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_connmark-lb"), sbin.join("connmark-lb"))
        .unwrap();
    (initd, sbin)
}

/// The daemon's pid in the view while procd reports its instance running.
pub fn daemon_pid(stack: &Stack) -> Option<u64> {
    let instance = &stack.service("connmark-lb")["instances"]["daemon"];
    (instance["running"] == true)
        .then(|| instance["pid"].as_u64())
        .flatten()
}

/// The divisor of the (first) policy's balancing rule, the sum of its live links' weights: 1
/// when it sends everything to one link; None without our table.
pub fn balance_modulus(router: &Netns) -> Option<u32> {
    let out = router.output("nft", &["list", "table", "inet", "connmark_lb"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(str::trim);
    lines.find(|line| line.starts_with("chain policy_"))?;
    let rule = lines.next()?;
    match rule.split(" mod ").nth(1) {
        Some(rest) => rest.split_whitespace().next()?.parse().ok(),
        None => rule.starts_with("goto mark_").then_some(1),
    }
}

/// The routes of table `table` in the router ("" while the table does not exist).
pub fn table_routes(router: &Netns, table: u32) -> String {
    let out = router.output(
        "ip",
        &["-4", "route", "show", "table", &table.to_string()],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until table `table` holds `route` (or, with "", nothing).
pub fn wait_table(router: &Netns, table: u32, route: &str) {
    wait_for(WAIT, &format!("table {table} with {route:?}"), || {
        let routes = table_routes(router, table);
        let matches = match route {
            "" => routes.trim().is_empty(),
            _ => routes.contains(route),
        };
        matches.then_some(())
    });
}

/// Waits until the balancing rule divides by `modulus`.
pub fn wait_modulus(router: &Netns, modulus: u32, why: &str) {
    wait_for(WAIT, why, || {
        (balance_modulus(router) == Some(modulus)).then_some(())
    });
}

/// The test router run by OpenWrt's daemons, started in a router's order: the namespaces of
/// [`Topology`] with two links and the server's services, ubusd + rpcd serving our config
/// (enabled, both links named by their netifd interface, 1:1), procd in its view with our init
/// script and the `network` service, then netifd configuring lan and both WANs (with no
/// hotplug scripts: we ship none). Our service is not started.
pub struct OpenwrtRouter {
    /// Declared first: its daemons stop before the namespaces and the view's files go.
    pub stack: Stack,
    pub socket: PathBuf,
    _view: TempDir,
    _servers: Vec<Server>,
    pub topo: Topology,
}

impl OpenwrtRouter {
    pub fn start(tag: &str) -> OpenwrtRouter {
        let topo = Topology::new(2);
        let servers = servers(&topo);
        // netifd configures the WANs (and their default routes) itself.
        topo.router
            .ip_batch("address flush dev wan1\naddress flush dev wan2\n");
        let stack = Stack::new(tag);
        let socket = stack.start_ubus();
        stack.write_config("connmark-lb", &netifd_lb_config(true, &[1, 1]));
        let view = TempDir::new(&format!("{tag}-view"));
        let (initd, sbin) = view_dirs(&view);
        stack.start_procd(topo.router.name(), &initd, &sbin);
        stack.exec(&["/etc/init.d/network", "start"]);
        let hotplug = stack.path("hotplug");
        std::fs::create_dir_all(hotplug.join("iface")).unwrap();
        let up = [netifd_name(1), netifd_name(2)];
        stack.start_netifd(topo.router.name(), &network_config(2), &hotplug, &up);
        OpenwrtRouter {
            stack,
            socket,
            _view: view,
            _servers: servers,
            topo,
        }
    }
}
