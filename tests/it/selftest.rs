//! Proves the harness itself with hand-written router setups: the server reports the real
//! source, an unSNATed or wrong-way packet is dropped by the ISP, inbound replies that leave by
//! the wrong link fail, and the lost-SYN check catches the seed's re-marking defect. Without
//! these, a passing e2e test could mean a toothless topology.

use std::net::SocketAddrV4;

use crate::support::addr::{SERVICE, link_addr};
use crate::support::checks::{LinkLoad, SynLossOutcome, TCP_PORT, syn_loss_outcome, tcp_target};
use crate::support::topology::{Loss, Topology};
use crate::support::traffic::{Server, tcp_connections, tcp_connections_parallel, tcp_stream};

/// A router with plain routing and masquerade on wan1, as a LAN gateway without balancing.
fn masquerade_on_wan1(topo: &Topology) {
    topo.router.nft(
        "table ip selftest {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"wan1\" masquerade
    }
}
",
    );
}

#[test]
fn plain_routing_uses_wan1_and_isps_drop_unsnatted_packets() {
    let topo = Topology::new(2);
    let _server = Server::tcp(&topo.srv, tcp_target());
    masquerade_on_wan1(&topo);
    let target = tcp_target();

    let tally = tcp_connections(&topo.lan, target, 200);
    assert_eq!(
        tally.failures, 0,
        "plain routing failed: {:?}",
        tally.errors
    );
    assert_eq!(
        tally.count(link_addr(1)),
        200,
        "server saw {:?}",
        tally.seen
    );

    topo.router
        .run(&format!("ip route add {SERVICE}/32 via 10.0.2.1 dev wan2"));
    let before = topo.isp_counters(2);
    let tally = tcp_connections_parallel(&topo.lan, target, 4);
    let isp2 = topo.isp_counters(2).since(before);
    assert_eq!(
        tally.succeeded(),
        0,
        "unSNATed traffic got through: {tally:?}"
    );
    assert_eq!(tally.failures, 4);
    assert!(
        isp2.spoofed >= 4,
        "isp2 did not drop unSNATed SYNs: {isp2:?}"
    );
    assert_eq!(isp2.forwarded, 0, "isp2 forwarded a LAN source: {isp2:?}");
}

#[test]
fn inbound_replies_by_the_main_route_are_dropped_without_balancing() {
    let topo = Topology::new(2);
    let service = SocketAddrV4::new(link_addr(2), TCP_PORT);
    let _router_service = Server::tcp(&topo.router, service);
    // Only the reply path may be at fault here, not reverse-path filtering.
    topo.router
        .sysctl("net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.wan2.rp_filter=0");
    let tally = tcp_connections(&topo.srv, service, 4);
    assert_eq!(tally.succeeded(), 0, "replies found their way: {tally:?}");
    let isp1 = topo.isp_counters(1);
    assert!(
        isp1.spoofed >= 4,
        "replies from {} should have left by wan1 and been dropped: {isp1:?}",
        link_addr(2)
    );
    assert!(
        tally.errors.iter().all(|e| e.contains("connect")),
        "{tally:?}"
    );
}

/// Hand-written connmark balancing over 2 links, choosing at random. `seed_defect` reproduces
/// the seed: every NEW packet chooses again, even a retransmitted SYN whose connection already
/// has a link (and a NAT binding to its address); without it, only a connection without a
/// mark chooses.
fn hand_written_balancing(topo: &Topology, seed_defect: bool) {
    let choose = if seed_defect {
        "iifname \"eth0\" ct state established,related meta mark set ct mark
        iifname \"eth0\" ct state new"
    } else {
        "iifname \"eth0\" ct mark != 0 meta mark set ct mark
        iifname \"eth0\" ct state new ct mark == 0"
    };
    topo.router.nft(&format!(
        "table ip handmade {{
    chain prerouting {{
        type filter hook prerouting priority mangle; policy accept;
        {choose} meta mark set numgen random mod 2 map {{ 0 : 0x100, 1 : 0x200 }} ct mark set meta mark
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"wan1\" snat to 10.0.1.2
        oifname \"wan2\" snat to 10.0.2.2
    }}
}}
"
    ));
    topo.router.ip_batch(
        "rule add priority 4000 lookup main suppress_prefixlength 0
rule add priority 4001 fwmark 0x100 lookup 4001
rule add priority 4002 fwmark 0x200 lookup 4002
route add default via 10.0.1.1 dev wan1 table 4001
route add default via 10.0.2.1 dev wan2 table 4002
",
    );
    topo.router.sysctl(
        "net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.wan1.rp_filter=2 \
         net.ipv4.conf.wan2.rp_filter=2",
    );
}

/// Runs the lost-SYN experiment with 15 connections on hand-written balancing.
fn lost_syn_with_hand_written_balancing(seed_defect: bool) -> SynLossOutcome {
    let topo = Topology::new(2);
    let _server = Server::tcp(&topo.srv, tcp_target());
    hand_written_balancing(&topo, seed_defect);

    let tally = tcp_connections(&topo.lan, tcp_target(), 100);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    let load = LinkLoad::from_tally(&topo, &tally);
    assert!(
        load.counts.iter().all(|&c| c >= 20),
        "not balanced: {load:?}"
    );
    syn_loss_outcome(&topo, 15)
}

#[test]
fn lost_syn_check_catches_the_seeds_re_marking() {
    let SynLossOutcome { tally, isp } = lost_syn_with_hand_written_balancing(true);
    let spoofed: u64 = isp.iter().map(|c| c.spoofed).sum();
    eprintln!(
        "FIGURE selftest seed-like lost-SYN: {} of 15 failed, {spoofed} wrong-way packets, \
         {} SYNs lost",
        tally.failures,
        isp.iter().map(|c| c.lost).sum::<u64>()
    );
    assert!(
        spoofed > 0,
        "the lost-SYN check did not catch re-marked retransmissions: {tally:?} {isp:?}"
    );
}

#[test]
fn lost_syn_check_passes_when_only_unmarked_connections_choose() {
    let SynLossOutcome { tally, isp } = lost_syn_with_hand_written_balancing(false);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    assert_eq!(tally.succeeded(), 15);
    assert_eq!(isp.iter().map(|c| c.spoofed).sum::<u64>(), 0, "{isp:?}");
    assert_eq!(
        isp.iter().map(|c| c.lost).sum::<u64>(),
        15,
        "one SYN lost per connection: {isp:?}"
    );
}

#[test]
fn isp_loss_rules_drop_what_they_say() {
    let topo = Topology::new(2);
    let _server = Server::tcp(&topo.srv, tcp_target());
    masquerade_on_wan1(&topo);

    topo.add_loss(1, Loss::Percent(10));
    let report = tcp_stream(&topo.lan, tcp_target(), 100)
        .unwrap_or_else(|e| panic!("TCP must recover from 10% loss: {e}"));
    assert_eq!(report.answered, 100);
    let isp1 = topo.isp_counters(1);
    assert!(isp1.lost > 0, "10% loss dropped nothing: {isp1:?}");
    assert!(isp1.forwarded >= 100, "{isp1:?}");

    topo.clear_loss(1);
    topo.add_loss(1, Loss::All);
    let tally = tcp_connections_parallel(&topo.lan, tcp_target(), 2);
    assert_eq!(
        tally.succeeded(),
        0,
        "a dead link carried traffic: {tally:?}"
    );
    let lost = topo.isp_counters(1).since(isp1).lost;
    assert!(lost >= 2, "the dead link dropped {lost} packets");

    topo.clear_loss(1);
    let tally = tcp_connections(&topo.lan, tcp_target(), 10);
    assert_eq!(
        tally.count(link_addr(1)),
        10,
        "cleared loss still drops: {tally:?}"
    );
}
