//! Standby links: `standby warm` on link 2 keeps it out of use while link 1 (the primary) is
//! up, probes it every `standby_interval` while it waits (the server counts its echo
//! requests), hands it the traffic when link 1 fails and takes it back when link 1 returns.

use std::time::Duration;

use serde_json::Value;

use crate::support::addr::link_addr;
use crate::support::checks::tcp_target;
use crate::support::lab::DaemonLab;
use crate::support::lbconfig::{Backend, tracked};
use crate::support::topology::{Loss, Topology};
use crate::support::traffic::tcp_connections;

/// The waiting link's probe rounds are this far apart in the test.
const STANDBY_INTERVAL: Duration = Duration::from_secs(2);
/// Echo requests per round and link (`count` default) with one target.
const PER_ROUND: u64 = 3;
/// One echo request at the IP layer over IPv4.
const ECHO_BYTES: u64 = 44;

/// Echo requests the server got from each link over `window`.
fn requests_over(topo: &Topology, window: Duration) -> Vec<u64> {
    let before = topo.srv_icmp_requests();
    std::thread::sleep(window);
    let after = topo.srv_icmp_requests();
    after.iter().zip(&before).map(|(a, b)| a - b).collect()
}

/// Every one of `count` new connections from the LAN reaches the server through `link`.
fn all_through(topo: &Topology, link: usize, count: usize, when: &str) {
    let tally = tcp_connections(&topo.lan, tcp_target(), count);
    assert_eq!(tally.failures, 0, "{when}: {:?}", tally.errors);
    assert_eq!(
        tally.count(link_addr(link)),
        count as u64,
        "{when}: {:?}",
        tally.seen
    );
}

/// The link's probe budget in status agrees with the echo requests the server counted from
/// it (every one of them a probe: LAN traffic is TCP), within one round, 44 B each.
fn assert_budget_matches_server(topo: &Topology, status: &Value) {
    let sent = status["probe_bytes_sent_today"]
        .as_u64()
        .expect("sent bytes");
    let received = status["probe_bytes_received_today"]
        .as_u64()
        .expect("received bytes");
    let counted = topo.srv_icmp_requests()[1] * ECHO_BYTES;
    assert_eq!(sent % ECHO_BYTES, 0, "{status}");
    assert!(
        sent.abs_diff(counted) <= PER_ROUND * ECHO_BYTES && received <= sent,
        "status says {sent} B sent, {received} B received; the server got {counted} B: {status}"
    );
    // A round of 3 requests and 3 replies every 2 s, over 30 days.
    let formula = 2 * PER_ROUND * ECHO_BYTES * 30 * 86_400 / STANDBY_INTERVAL.as_secs();
    let projected = status["probe_bytes_30d_projected"]
        .as_u64()
        .expect("projection");
    assert!(
        projected.abs_diff(formula) <= formula / 5,
        "projected {projected} B, formula {formula} B: {status}"
    );
}

#[test]
fn warm_standby_waits_cheaply_takes_over_and_gives_back() {
    let config = tracked(Backend::Nftables, 2, &[])
        .with_option("wan2", "standby", "warm")
        .with_option(
            "wan2",
            "standby_interval",
            &STANDBY_INTERVAL.as_secs().to_string(),
        );
    let lab = DaemonLab::start(&config);
    let topo = &lab.topo;
    all_through(topo, 1, 60, "both up: the standby waits");

    // Waiting: one round per standby_interval; the primary keeps its round a second.
    let window = Duration::from_secs(24);
    let requests = requests_over(topo, window);
    let expected = window.as_secs() / STANDBY_INTERVAL.as_secs() * PER_ROUND;
    let off = requests[1].abs_diff(expected) as f64 / expected as f64;
    println!(
        "FIGURE standby warm: {} echo requests in {} s (formula {expected}), primary {}",
        requests[1],
        window.as_secs(),
        requests[0]
    );
    assert!(
        off <= 0.10,
        "warm link sent {requests:?}, expected {expected}"
    );
    assert!(
        requests[0] >= window.as_secs() * PER_ROUND * 8 / 10,
        "primary probed at its normal pace: {requests:?}"
    );
    assert_budget_matches_server(topo, &lab.daemon.link(2));
    assert_eq!(lab.daemon.link(2)["in_use"], false);

    // The primary fails: the standby carries everything and is probed at the normal pace.
    topo.add_loss(1, Loss::All);
    lab.daemon.wait_link(1, "down", Duration::from_secs(10));
    all_through(topo, 2, 60, "primary down: the standby carries");
    assert_eq!(lab.daemon.link(2)["in_use"], true);
    let window = Duration::from_secs(5);
    let requests = requests_over(topo, window);
    assert!(
        requests[1] >= window.as_secs() * PER_ROUND * 8 / 10,
        "a standby in use is probed every interval: {requests:?}"
    );

    // The primary returns: new connections go back to it.
    topo.clear_loss(1);
    lab.daemon.wait_link(1, "up", Duration::from_secs(15));
    all_through(topo, 1, 60, "primary back: the standby waits again");
    assert_eq!(lab.daemon.link(2)["state"], "up");
}
