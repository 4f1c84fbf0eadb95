//! An IPv6 link resolved from the real netifd of the kit: a static `wan6` (what DHCPv6 leaves
//! in netifd once it is up: a WAN address, a default route via the ISP's link-local address, a
//! delegated prefix) must give `check` the device, the link-local next hop, the global address
//! as SNAT source and the /56 as the link's pinned, un-NATed prefix.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::owrt::Stack;
use crate::support::package::binary;
use crate::support::process::run;
use crate::support::topology::Topology;

const NETWORK: &str = "config interface 'wan6'
	option device 'nf6a'
	option proto 'static'
	option ip6addr '2001:db8:ff01::2/64'
	option ip6gw 'fe80::1'
	option ip6prefix '2001:db8:1::/56'
";

const LB: &str = "config globals 'globals'
	list lan 'eth0'

config interface 'wan6'
	option family 'ipv6'
	list track_ip '2001:db8:53::53'
";

#[test]
fn wan6_from_netifd_gives_device_link_local_gateway_address_and_prefix() {
    let topo = Topology::dual_stack(1);
    topo.router
        .ip_batch("link add nf6a type veth peer name nf6b\nlink set nf6a up\nlink set nf6b up\n");
    let stack = Stack::new("netifd6");
    let socket = stack.start_ubus();
    let network = stack.path("network.uci");
    std::fs::write(&network, NETWORK).unwrap();
    stack.ok(
        "netifd-start",
        &[topo.router.name(), network.to_str().unwrap()],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = stack.call("network.interface.wan6", "status", "{}");
        if status["up"] == true
            && status["ipv6-prefix"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "wan6 never came up: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let config = stack.path("connmark-lb.uci");
    std::fs::write(&config, LB).unwrap();
    let out = run(Command::new(binary())
        .args(["check", "--uci", config.to_str().unwrap(), "--ubus-socket"])
        .arg(&socket));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for line in [
        "\t\tmeta nfproto != ipv6 return\n",
        "\t\tip6 saddr { 2001:db8:1::/56 } goto mark_wan6\n",
        "\t\tiifname vmap { \"nf6a\" : goto mark_wan6 }\n",
        "\t\toifname \"nf6a\" ip6 saddr != { 2001:db8:1::/56 } snat ip6 to 2001:db8:ff01::2\n",
        "# ip -6 -batch\n",
        "route replace default via fe80::1 dev nf6a table 4001\n",
        "net.ipv6.conf.all.forwarding = 1\n",
    ] {
        assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
    }
    assert!(!stdout.contains("# ip -batch"), "no IPv4 routing: {stdout}");
    stack.ok::<&str>("netifd-stop", &[]);
}
