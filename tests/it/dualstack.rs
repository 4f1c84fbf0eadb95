//! IPv6 beside IPv4 end to end: a dual-stack router with two ISPs that each give it an IPv6
//! WAN address and delegate a /56, and drop every IPv6 source outside those (BCP38). A ULA LAN
//! host is balanced over both links with NAT66; a host addressed out of a link's /56 always
//! leaves by that link, un-NATed; inbound IPv6 is answered by its own link; `stop` leaves the
//! router as it was. Every case runs once per backend (nftables: one `inet` table; iptables:
//! `ip6tables-restore` beside `iptables-restore`).

use std::net::SocketAddr;

use crate::support::addr::v6;
use crate::support::checks::{LinkLoad, tcp_target, tcp6_target, udp6_target};
use crate::support::icmp::icmp6_echoes;
use crate::support::lab::Lab;
use crate::support::lbconfig::{Backend, Balance, LbConfig};
use crate::support::topology::{IspCounters, RouterState, Topology};
use crate::support::traffic::{Server, tcp_connections, tcp_connections_from, udp_flows_from};

/// A port of a service running on the router itself.
const ROUTER_SERVICE_PORT: u16 = 7100;

/// Two dual-stack links, each family balanced with these weights.
fn dual_stack(backend: Backend, weights6: &[u32]) -> LbConfig {
    LbConfig::new(backend, Balance::RoundRobin, &[1, 1]).with_ipv6(weights6)
}

/// ISP counter changes while `work` runs, index i for link i + 1.
fn isp_delta(topo: &Topology, work: impl FnOnce()) -> Vec<IspCounters> {
    let before = topo.all_isp_counters();
    work();
    topo.all_isp_counters()
        .into_iter()
        .zip(before)
        .map(|(after, before)| after.since(before))
        .collect()
}

/// `sysctl -n key` on the router.
fn sysctl(topo: &Topology, key: &str) -> String {
    topo.router
        .run(&format!("sysctl -n {key}"))
        .trim()
        .to_string()
}

/// Every `accept_ra` of the router: ours to leave alone.
fn accept_ra(topo: &Topology) -> Vec<String> {
    ["all", "default", "wan1", "wan2", "eth0"]
        .iter()
        .map(|dev| sysctl(topo, &format!("net.ipv6.conf.{dev}.accept_ra")))
        .collect()
}

/// IPv4 and IPv6 balanced at once, NAT66 shares 1:1 then (re-applied) 1:2 for TCP, 1:1 for
/// UDP and ICMPv6, delegated-prefix hosts pinned to their link un-NATed, nothing ever sent the
/// wrong way; IPv6 forwarding turned on, `accept_ra` never touched.
fn ipv6_balanced_with_nat66_and_prefixes_pinned(backend: Backend) {
    let lab = Lab::applied(&dual_stack(backend, &[1, 1]));
    let topo = &lab.topo;
    assert_eq!(sysctl(topo, "net.ipv6.conf.all.forwarding"), "1");
    let name = backend.name();

    let mut ula = Default::default();
    let mut v4 = Default::default();
    let isp = isp_delta(topo, || {
        ula = tcp_connections_from(&topo.lan, v6::HOST_ULA, tcp6_target(), 200);
        v4 = tcp_connections(&topo.lan, tcp_target(), 100);
    });
    assert_eq!(
        ula.failures + v4.failures,
        0,
        "{:?} {:?}",
        ula.errors,
        v4.errors
    );
    LinkLoad::from_tally6(topo, &ula).assert_shares(
        &format!("{name} ipv6 tcp from a ULA host 1:1 over 200"),
        &[1, 1],
        2.0,
    );
    LinkLoad::from_tally(topo, &v4).assert_shares(
        &format!("{name} ipv4 beside ipv6"),
        &[1, 1],
        2.0,
    );
    assert!(
        isp.iter().all(|c| c.spoofed == 0),
        "wrong-way packets: {isp:?}"
    );

    let udp = udp_flows_from(
        &topo.lan,
        Some(v6::HOST_ULA.into()),
        udp6_target(),
        200,
        21000,
    );
    assert_eq!(udp.failures, 0, "{:?}", udp.errors);
    LinkLoad::from_tally6(topo, &udp).assert_shares(&format!("{name} ipv6 udp 1:1"), &[1, 1], 2.0);
    let echoes = icmp6_echoes(&topo.lan, v6::HOST_ULA, v6::SERVICE, 200, 1);
    assert_eq!(echoes.failures, 0, "{echoes:?}");
    let load = LinkLoad {
        counts: topo.srv_icmp6_requests(),
    };
    assert_eq!(load.counts.iter().sum::<u64>(), 200, "{load:?}");
    load.assert_shares(&format!("{name} icmpv6 1:1"), &[1, 1], 2.0);

    for (link, other) in [(1, 2), (2, 1)] {
        let host = v6::host_in_prefix(link);
        let mut tally = Default::default();
        let isp = isp_delta(topo, || {
            tally = tcp_connections_from(&topo.lan, host, tcp6_target(), 40);
        });
        assert_eq!(tally.failures, 0, "{:?}", tally.errors);
        assert_eq!(
            tally.count(host),
            40,
            "a host of link {link}'s prefix leaves un-NATed: {tally:?}"
        );
        assert!(
            isp[link - 1].forwarded >= 40 * 3,
            "via link {link}: {isp:?}"
        );
        // Un-NATed, the host's address would be dropped as spoofed by the other ISP.
        assert_eq!(isp[other - 1].spoofed, 0, "never via link {other}: {isp:?}");
        eprintln!("FIGURE {name} ipv6 prefix of link {link}: 40/40 un-NATed via link {link}");
    }

    let file = topo.write_config("reweighted", &dual_stack(backend, &[1, 2]));
    topo.apply(&file);
    let tally = tcp_connections_from(&topo.lan, v6::HOST_ULA, tcp6_target(), 300);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    LinkLoad::from_tally6(topo, &tally).assert_shares(
        &format!("{name} ipv6 tcp from a ULA host 1:2 over 300"),
        &[1, 2],
        2.0,
    );
}

/// Connections from the server to a service of the router on its link-2 IPv6 address are
/// answered via link 2, although the router's IPv6 default route points to link 1.
fn inbound_ipv6_is_answered_by_its_link(backend: Backend) {
    let lab = Lab::applied(&dual_stack(backend, &[1, 1]));
    let topo = &lab.topo;
    let service = SocketAddr::new(v6::link_addr(2).into(), ROUTER_SERVICE_PORT);
    let _router_service = Server::tcp(&topo.router, service);
    let mut tally = Default::default();
    let isp = isp_delta(topo, || tally = tcp_connections(&topo.srv, service, 50));
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    assert_eq!(tally.count(v6::srv_addr_towards(2)), 50, "{tally:?}");
    // ISP 1 would drop a reply from link 2's address as spoofed.
    assert!(
        isp.iter().all(|c| c.spoofed == 0),
        "replies left by link 1: {isp:?}"
    );
    eprintln!(
        "FIGURE {} inbound ipv6: 50/50 answered via link 2",
        backend.name()
    );
}

/// `stop` removes every IPv6 rule, route, chain of ours; IPv6 traffic then uses the main table
/// again, and `accept_ra` was never changed.
fn stop_leaves_no_ipv6_state(backend: Backend) {
    let topo = Topology::dual_stack(2);
    let pristine = topo.router_state();
    let ra = accept_ra(&topo);
    // An IPv4-only config on a dual-stack router leaves IPv6 entirely alone.
    let v4 = topo.write_config("v4", &LbConfig::new(backend, Balance::RoundRobin, &[1, 1]));
    topo.apply(&v4);
    let only_v4 = topo.router_state();
    assert_eq!(
        only_v4.rules6, pristine.rules6,
        "IPv4-only config added ip -6 rules"
    );
    assert!(
        !only_v4.ip6tables.contains("CMLB_"),
        "{}",
        only_v4.ip6tables
    );
    assert_eq!(sysctl(&topo, "net.ipv6.conf.all.forwarding"), "0");
    let config = topo.write_config("lb", &dual_stack(backend, &[1, 1]));
    topo.apply(&config);
    let applied = topo.router_state();
    assert!(
        applied.rules6.contains("lookup 4003") && applied.routes6.contains("table 4004"),
        "{applied:?}"
    );
    topo.apply(&config);
    assert_eq!(
        without_counters(&applied).differences(&without_counters(&topo.router_state())),
        None,
        "apply x2 != apply x1"
    );
    topo.stop();
    let stopped = topo.router_state();
    assert_eq!(accept_ra(&topo), ra, "accept_ra changed");
    assert_eq!(
        without_ours_leftovers(&stopped),
        without_ours_leftovers(&pristine)
    );
}

/// `state` with nft counter values blanked (IPv6 neighbour and listener traffic counts in the
/// built-in chains of iptables-nft).
fn without_counters(state: &RouterState) -> RouterState {
    let nft = state
        .nft
        .lines()
        .map(|line| match line.find("counter packets ") {
            Some(at) => {
                let rest = &line[at + "counter packets ".len()..];
                let after = rest.splitn(4, ' ').nth(3).unwrap_or("");
                format!("{}counter {after}\n", &line[..at])
            }
            None => format!("{line}\n"),
        })
        .collect();
    RouterState {
        nft,
        ..state.clone()
    }
}

/// What must be back to pristine after stop: ip rules and routes of both families (the local
/// table aside: IPv6 forwarding, which stays on, adds subnet-router anycast routes there) and
/// every firewall rule (iptables-nft keeps its emptied built-in tables).
fn without_ours_leftovers(state: &RouterState) -> Vec<String> {
    let rules = |text: &str| -> String {
        text.lines()
            .filter(|l| l.starts_with("-A "))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    assert!(!state.nft.contains("connmark_lb"), "{}", state.nft);
    assert!(!state.nft.contains("CMLB_"), "{}", state.nft);
    let routes = |text: &str| -> String {
        text.lines()
            .filter(|l| !l.contains("table local"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    vec![
        state.rules.clone(),
        routes(&state.routes),
        state.rules6.clone(),
        routes(&state.routes6),
        rules(&state.iptables),
        rules(&state.ip6tables),
    ]
}

for_both_backends!(
    ipv6_balanced_with_nat66_and_prefixes_pinned,
    inbound_ipv6_is_answered_by_its_link,
    stop_leaves_no_ipv6_state,
);
