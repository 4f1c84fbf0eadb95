//! Tunnels as links, end to end: a userspace UDP tunnel (`tun0`, OpenVPN-style) whose outer
//! datagrams must leave by link 2, in a policy with link 1 balancing by weight (link 2 itself
//! is not a member). The daemon tracks all three; the tunnel's probes go through the tunnel.
//! Checks: the weights hold, the outer datagrams cross ISP 2 only, a dead tunnel peer is
//! detected and its share moves to link 1, and link 2's failure takes the tunnel down with it
//! (without probing through the dead link), both coming back afterwards.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::support::addr::{SERVICE, link_addr};
use crate::support::checks::tcp_target;
use crate::support::daemon::Timing;
use crate::support::lab::DaemonLab;
use crate::support::lbconfig::{Backend, LbConfig, tracked};
use crate::support::topology::Loss;
use crate::support::traffic::{Tally, tcp_connections};
use crate::support::tunnel::{self, Tunnel};

/// The tunnel's link number in status (its section comes after wan1 and wan2).
const TUNNEL_LINK: usize = 3;
/// New connections per measurement: with round-robin weights 1:3 the split is exact.
const CONNECTIONS: usize = 40;

fn config(backend: Backend) -> LbConfig {
    let track = [("interval", "0.5"), ("passive", "0")];
    let mut text = format!(
        "config interface 'vpn'\n\toption device '{}'\n\tlist underlay 'wan2'\n\toption endpoint '{}'\n\toption track_ip '{SERVICE}'\n",
        tunnel::DEVICE,
        Tunnel::endpoint()
    );
    for (option, value) in track {
        text.push_str(&format!("\toption {option} '{value}'\n"));
    }
    text.push_str(
        "\nconfig member 'm_wan1'\n\toption interface 'wan1'\n\toption weight '1'\n\n\
         config member 'm_vpn'\n\toption interface 'vpn'\n\toption weight '3'\n\n\
         config policy 'tunnelled'\n\tlist use_member 'm_wan1'\n\tlist use_member 'm_vpn'\n\n\
         config rule 'all'\n\toption use_policy 'tunnelled'\n",
    );
    tracked(backend, 2, &track).with_sections(&text)
}

/// (link 1, tunnel) counts of what the server saw; anything else fails the test.
fn split(tally: &Tally) -> (u64, u64) {
    let wan1 = tally.count(link_addr(1));
    let vpn = tally.count(IpAddr::from(tunnel::ROUTER_INNER));
    assert_eq!(
        wan1 + vpn,
        CONNECTIONS as u64,
        "every connection by link 1 or the tunnel: {:?}",
        tally.seen
    );
    (wan1, vpn)
}

/// Outer datagrams each ISP forwarded while `work` ran.
fn outer_during(lab: &DaemonLab, work: impl FnOnce()) -> (u64, u64) {
    let before = [1, 2].map(|isp| Tunnel::outer_packets(&lab.topo, isp));
    work();
    let after = [1, 2].map(|isp| Tunnel::outer_packets(&lab.topo, isp));
    (after[0] - before[0], after[1] - before[1])
}

fn tunnel_as_a_link(backend: Backend) {
    let mut started: Option<Tunnel> = None;
    let lab = DaemonLab::start_with(&config(backend), |topo| {
        started = Some(Tunnel::start(topo));
    });
    let mut tunnel = started.expect("tunnel started");
    let topo = &lab.topo;
    let timing = Timing::with_interval(Duration::from_millis(500));
    let limit = timing.detection_bound() * 2 + Duration::from_secs(2);

    // Weights 1:3, and the outer datagrams only on ISP 2 (the policy has link 1 and the
    // tunnel; local_traffic would balance the router's own datagrams into the tunnel itself
    // or over link 1 without the pin).
    let mut tally = None;
    let (isp1, isp2) = outer_during(&lab, || {
        tally = Some(tcp_connections(&topo.lan, tcp_target(), CONNECTIONS));
    });
    assert_eq!(split(&tally.expect("tally")), (10, 30), "weights 1:3");
    assert_eq!(isp1, 0, "no outer datagram crosses ISP 1");
    assert!(
        isp2 >= 60,
        "the tunnelled connections crossed ISP 2: {isp2}"
    );

    // The tunnel peer dies: the tunnel's probes are lost, and its share moves to link 1.
    let failed = Instant::now();
    tunnel.fail_peer();
    lab.daemon.wait_link(TUNNEL_LINK, "down", limit);
    let detection = failed.elapsed();
    println!("FIGURE tunnel peer failure detected in {detection:?} ({backend:?}, interval 0.5 s)");
    timing.assert_detection("tunnel peer failure", detection);
    let tally = tcp_connections(&topo.lan, tcp_target(), CONNECTIONS);
    assert_eq!(
        split(&tally),
        (CONNECTIONS as u64, 0),
        "after the peer failed"
    );
    tunnel.heal_peer(topo);
    lab.daemon.wait_link(TUNNEL_LINK, "up", limit);

    // Link 2 dies: the tunnel goes down with it at once, and is not probed meanwhile.
    let failed = Instant::now();
    topo.add_loss(2, Loss::All);
    lab.daemon.wait_link(2, "down", limit);
    lab.daemon
        .wait_link(TUNNEL_LINK, "down", Duration::from_millis(200));
    let detection = failed.elapsed();
    println!("FIGURE tunnel down with its underlay in {detection:?} ({backend:?})");
    let sent = Tunnel::router_sent(topo);
    let (isp1, _) = outer_during(&lab, || {
        let tally = tcp_connections(&topo.lan, tcp_target(), CONNECTIONS);
        assert_eq!(
            split(&tally),
            (CONNECTIONS as u64, 0),
            "after link 2 failed"
        );
        std::thread::sleep(Duration::from_secs(2));
    });
    assert_eq!(isp1, 0, "no outer datagram leaked via ISP 1");
    assert_eq!(
        Tunnel::router_sent(topo) - sent,
        0,
        "nothing (no probe) was sent into the tunnel while its underlay was down"
    );
    assert!(
        lab.daemon.log().contains("no underlay link is usable"),
        "{}",
        lab.daemon.log()
    );

    // Link 2 heals: the tunnel is probed again and takes its share back.
    topo.clear_loss(2);
    lab.daemon.wait_link(2, "up", limit);
    lab.daemon.wait_link(TUNNEL_LINK, "up", limit);
    let tally = tcp_connections(&topo.lan, tcp_target(), CONNECTIONS);
    assert_eq!(split(&tally), (10, 30), "after link 2 healed");
}

for_both_backends!(tunnel_as_a_link);
