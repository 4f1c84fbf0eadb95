//! `connmark-lb run` on a dual-stack router: each ISP's IPv4 and IPv6 links are tracked on
//! their own (ICMP and ICMPv6 echo through each link's mark), so one family of an ISP can die
//! while the other keeps working. A dead IPv6 link still answers neighbour discovery, like a
//! real ISP whose upstream failed: only the probes beyond it may tell.

use std::time::Duration;

use crate::support::addr::{link_addr, v6};
use crate::support::checks::{LinkLoad, tcp_target, tcp6_target};
use crate::support::daemon::Timing;
use crate::support::lab::DaemonLab;
use crate::support::lbconfig::{Backend, LbConfig, tracked};
use crate::support::topology::Loss;
use crate::support::traffic::{tcp_connections, tcp_connections_from};

/// Status and hook index of each link: IPv4 links first, then the IPv6 ones.
const WAN1: usize = 1;
const WAN2_6: usize = 4;
const WAN1_6: usize = 3;

/// Two ISPs, dual-stack, every link tracked every 0.5 s (IPv4 links probe the server's IPv4
/// service address, IPv6 links its IPv6 one).
fn dual_stack_tracked(backend: Backend) -> LbConfig {
    let mut config = tracked(backend, 2, &[("interval", "0.5")]).with_ipv6(&[1, 1]);
    for link in 1..=2 {
        let section = LbConfig::ipv6_section(link);
        config = config
            .with_option(&section, "track_ip", &v6::SERVICE.to_string())
            .with_option(&section, "interval", "0.5");
    }
    config
}

/// ISP 2's IPv6 dies silently (its IPv4 and its neighbour discovery keep working): detected
/// within the IPv4 bounds, new IPv6 connections (those of its own /56 too, NATed) avoid it,
/// IPv4 keeps both links; it heals within bounds. Then ISP 1's IPv4 dies while its IPv6
/// carries on.
fn ipv4_and_ipv6_fail_independently(backend: Backend) {
    let lab = DaemonLab::start(&dual_stack_tracked(backend));
    let name = backend.name();
    let timing = Timing::with_interval(Duration::from_millis(500));
    lab.topo.add_loss(2, Loss::AllIpv6);
    let detection = lab
        .daemon
        .wait_link(WAN2_6, "down", Duration::from_secs(10));
    assert_eq!(lab.daemon.link(2)["state"], "up", "ISP 2's IPv4 is fine");
    assert_eq!(lab.daemon.link(WAN2_6)["family"], "ipv6");
    let lan = &lab.topo.lan;
    let ula = tcp_connections_from(lan, v6::HOST_ULA, tcp6_target(), 100);
    assert_eq!(ula.failures, 0, "{:?}", ula.errors);
    assert_eq!(
        ula.count(v6::link_addr(1)),
        100,
        "IPv6 avoids link 2: {ula:?}"
    );
    let orphans = tcp_connections_from(lan, v6::host_in_prefix(2), tcp6_target(), 20);
    assert_eq!(
        orphans.count(v6::link_addr(1)),
        20,
        "link 2's /56 is NATed over link 1 while link 2 is down: {orphans:?}"
    );
    let v4 = tcp_connections(lan, tcp_target(), 100);
    assert_eq!(v4.failures, 0, "{:?}", v4.errors);
    LinkLoad::from_tally(&lab.topo, &v4).assert_shares(
        &format!("{name} ipv4 while ISP 2's ipv6 is down"),
        &[1, 1],
        2.0,
    );

    lab.topo.clear_loss(2);
    let recovery = lab.daemon.wait_link(WAN2_6, "up", Duration::from_secs(10));
    let pinned = tcp_connections_from(lan, v6::host_in_prefix(2), tcp6_target(), 20);
    assert_eq!(
        pinned.count(v6::host_in_prefix(2)),
        20,
        "pinned again: {pinned:?}"
    );

    lab.topo.add_loss(1, Loss::AllIpv4);
    let detection4 = lab.daemon.wait_link(WAN1, "down", Duration::from_secs(10));
    assert_eq!(
        lab.daemon.link(WAN1_6)["state"],
        "up",
        "ISP 1's IPv6 is fine"
    );
    let v4 = tcp_connections(lan, tcp_target(), 100);
    assert_eq!(v4.count(link_addr(2)), 100, "IPv4 avoids link 1: {v4:?}");
    let ula = tcp_connections_from(lan, v6::HOST_ULA, tcp6_target(), 100);
    assert_eq!(ula.failures, 0, "{:?}", ula.errors);
    LinkLoad::from_tally6(&lab.topo, &ula).assert_shares(
        &format!("{name} ipv6 while ISP 1's ipv4 is down"),
        &[1, 1],
        2.0,
    );

    eprintln!(
        "FIGURE {name} dual-stack failover, interval 0.5 s: ipv6 detection {:.2} s, recovery \
         {:.2} s, ipv4 detection {:.2} s (bounds {:.2} s, {:.2} s)",
        detection.as_secs_f64(),
        recovery.as_secs_f64(),
        detection4.as_secs_f64(),
        timing.detection_bound().as_secs_f64(),
        timing.recovery_bound().as_secs_f64()
    );
    timing.assert_detection(&format!("{name} ipv6"), detection);
    timing.assert_detection(&format!("{name} ipv4"), detection4);
    timing.assert_recovery(&format!("{name} ipv6"), recovery);
    let log = lab.daemon.log();
    lab.daemon.assert_logged(&[
        "wan2_6 (wan2): failing -> down (0/1 targets answered, 100% lost); new connections avoid it",
        "wan2_6: deleting its conntrack entries (disconnected)",
        "wan2_6 (wan2): recovering -> up (1/1 targets answered, 0% lost)",
        "wan1 (wan1): failing -> down",
    ]);
    assert!(
        !log.contains("wan2 (wan2): up ->"),
        "ISP 2's IPv4 never changed:\n{log}"
    );
    assert!(
        !log.contains("wan1_6 (wan1): up ->"),
        "ISP 1's IPv6 never changed:\n{log}"
    );
    assert_eq!(
        lab.hook_lines(),
        [
            "disconnected wan2_6 wan2 wan2_6 down",
            "connected wan2_6 wan2 wan2_6 up",
            "disconnected wan1 wan1 wan1 down",
        ]
    );
}

for_both_backends!(ipv4_and_ipv6_fail_independently);
