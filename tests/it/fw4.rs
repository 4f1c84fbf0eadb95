//! Living with the real firewall4: OpenWrt's default firewall config (lan and wan zones,
//! masquerading on wan) rendered and loaded by `fw4` in the router, our rules applied next to
//! it. Traffic is balanced with both tables loaded, fw4's zone policy still holds (the router
//! accepts from the LAN and rejects from a WAN), `fw4 restart` leaves our table and the
//! balance alone, and our `stop` leaves fw4's table byte for byte as it was.
//!
//! This kernel has no flowtable support, so `flow_offloading` rulesets cannot load here (see
//! the README on flow offloading).

use crate::support::checks::{LinkLoad, servers, tcp_target};
use crate::support::lbconfig::{Backend, Balance, LbConfig};
use crate::support::netns::Netns;
use crate::support::owrt::{Stack, netifd_name, network_config};
use crate::support::topology::Topology;
use crate::support::traffic::{spawn_in, tcp_connections};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// OpenWrt's default /etc/config/firewall (package firewall4), with the wan zone covering
/// both WAN interfaces.
const FIREWALL: &str = "
config defaults
	option syn_flood '1'
	option input 'REJECT'
	option output 'ACCEPT'
	option forward 'REJECT'

config zone
	option name 'lan'
	list network 'lan'
	option input 'ACCEPT'
	option output 'ACCEPT'
	option forward 'ACCEPT'

config zone
	option name 'wan'
	list network 'wan'
	list network 'wanb'
	option input 'REJECT'
	option output 'ACCEPT'
	option forward 'REJECT'
	option masq '1'
	option mtu_fix '1'

config forwarding
	option src 'lan'
	option dest 'wan'

config rule
	option name 'Allow-Ping'
	option src 'wan'
	option proto 'icmp'
	option icmp_type 'echo-request'
	option family 'ipv4'
	option target 'ACCEPT'
";

/// A port the router listens on, to see which side fw4 lets in.
const ROUTER_PORT: u16 = 8022;

/// fw4's table without counters, which move with any packet; with handles, an identical
/// listing also means no rule or object was replaced or added.
fn fw4_table(router: &Netns, handles: bool) -> String {
    let args: &[&str] = if handles {
        &["-s", "-a", "list", "table", "inet", "fw4"]
    } else {
        &["-s", "list", "table", "inet", "fw4"]
    };
    let out = router.output("nft", args, None);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Whether a TCP connection from `from` to `to` completes within a second.
fn connects(from: &Netns, to: SocketAddr) -> bool {
    spawn_in(from, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()
    })
    .join()
    .unwrap()
}

#[test]
fn coexists_with_a_real_fw4_ruleset_through_restart_and_stop() {
    let topo = Topology::new(2);
    let _servers = servers(&topo);
    let router = &topo.router;
    router.ip_batch(
        "address flush dev eth0\naddress flush dev wan1\naddress flush dev wan2\n\
         route flush table main\n",
    );
    let stack = Stack::new("fw4");
    stack.start_ubus();
    let hotplug = stack.path("hotplug");
    std::fs::create_dir_all(hotplug.join("iface")).unwrap();
    let up = ["lan".to_string(), netifd_name(1), netifd_name(2)];
    stack.start_netifd(router.name(), &network_config(2), &hotplug, &up);
    let firewall = stack.path("firewall.uci");
    std::fs::write(&firewall, FIREWALL).unwrap();
    let fw4 = |verb: &str| {
        stack.ok("fw4", &[router.name(), firewall.to_str().unwrap(), verb]);
    };

    let printed = stack.ok("fw4", &[router.name(), firewall.to_str().unwrap(), "print"]);
    assert!(
        printed.contains("masquerade") && printed.contains("\"wan2\""),
        "{printed}"
    );
    fw4("start");
    let fw4_alone = fw4_table(router, false);
    let listener = spawn_in(router, || {
        let listener = TcpListener::bind(("0.0.0.0", ROUTER_PORT)).unwrap();
        for stream in listener.incoming().take(2) {
            drop(stream);
        }
    });
    let from_lan = SocketAddr::from(([192, 168, 77, 1], ROUTER_PORT));
    let from_wan = SocketAddr::from(([10, 0, 1, 2], ROUTER_PORT));

    let config = LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1, 1]);
    let file = topo.write_config("lb", &config);
    topo.apply(&file);
    let load = LinkLoad::from_tally(&topo, &tcp_connections(&topo.lan, tcp_target(), 40));
    load.assert_shares("with fw4 loaded", &[1, 1], 5.0);
    assert!(connects(&topo.lan, from_lan), "fw4's lan zone must accept");
    assert!(
        !connects(topo.isp(1), from_wan),
        "fw4's wan zone must reject"
    );

    let ours = router.run("nft -s list table inet connmark_lb");
    fw4("restart");
    assert_eq!(
        router.run("nft -s list table inet connmark_lb"),
        ours,
        "fw4 restart changed our table"
    );
    let load = LinkLoad::from_tally(&topo, &tcp_connections(&topo.lan, tcp_target(), 40));
    load.assert_shares("after fw4 restart", &[1, 1], 5.0);
    assert!(connects(&topo.lan, from_lan));
    drop(listener);

    let before_stop = fw4_table(router, true);
    topo.stop();
    assert_eq!(
        fw4_table(router, true),
        before_stop,
        "our stop touched fw4's table"
    );
    assert_eq!(
        fw4_table(router, false),
        fw4_alone,
        "fw4's table is not what fw4 loaded"
    );
    assert!(!router.run("nft list tables").contains("connmark_lb"));
}
