//! Measurements shared by the e2e tests and the harness self-tests: per-link shares and the
//! lost-SYN experiment.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use super::addr::{SERVICE, link_addr, v6};
use super::topology::{IspCounters, Loss, Topology};
use super::traffic::{Server, Tally, tcp_connections_parallel};

/// The server's TCP service port (answers with the peer address).
pub const TCP_PORT: u16 = 7000;
/// The server's UDP responder port.
pub const UDP_PORT: u16 = 7001;

/// The server's TCP service.
pub fn tcp_target() -> SocketAddrV4 {
    SocketAddrV4::new(SERVICE, TCP_PORT)
}

/// The server's UDP responder.
pub fn udp_target() -> SocketAddrV4 {
    SocketAddrV4::new(SERVICE, UDP_PORT)
}

/// The server's TCP service on its IPv6 service address.
pub fn tcp6_target() -> SocketAddr {
    SocketAddr::new(v6::SERVICE.into(), TCP_PORT)
}

/// The server's UDP responder on its IPv6 service address.
pub fn udp6_target() -> SocketAddr {
    SocketAddr::new(v6::SERVICE.into(), UDP_PORT)
}

/// The server's TCP and UDP services on the service address (and on the IPv6 one in a
/// dual-stack topology); stopped when dropped.
pub fn servers(topo: &Topology) -> Vec<Server> {
    let mut servers = vec![
        Server::tcp(&topo.srv, tcp_target()),
        Server::udp(&topo.srv, udp_target()),
    ];
    if topo.ipv6 {
        servers.push(Server::tcp(&topo.srv, tcp6_target()));
        servers.push(Server::udp(&topo.srv, udp6_target()));
    }
    servers
}

/// How many flows used each link, index i for link i + 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkLoad {
    pub counts: Vec<u64>,
}

impl LinkLoad {
    /// Maps the addresses the server saw to links; any other address fails the test, since
    /// the ISPs let only their customer's address through.
    pub fn from_tally(topo: &Topology, tally: &Tally) -> LinkLoad {
        LinkLoad::of_addresses(topo, tally, |link| link_addr(link).into())
    }

    /// The same for IPv6 flows that were NATed to each link's IPv6 address.
    pub fn from_tally6(topo: &Topology, tally: &Tally) -> LinkLoad {
        LinkLoad::of_addresses(topo, tally, |link| v6::link_addr(link).into())
    }

    fn of_addresses(topo: &Topology, tally: &Tally, addr: impl Fn(usize) -> IpAddr) -> LinkLoad {
        let counts: Vec<u64> = (1..=topo.link_count())
            .map(|link| tally.count(addr(link)))
            .collect();
        assert_eq!(
            counts.iter().sum::<u64>(),
            tally.succeeded(),
            "the server saw addresses that belong to no link: {:?}",
            tally.seen
        );
        LinkLoad { counts }
    }

    /// Each link's share of all flows, in percent.
    pub fn shares(&self) -> Vec<f64> {
        let total: u64 = self.counts.iter().sum();
        self.counts
            .iter()
            .map(|&count| 100.0 * count as f64 / total.max(1) as f64)
            .collect()
    }

    /// Asserts every link's share is within `tolerance` percentage points of its weight's
    /// share, and prints the measurement.
    pub fn assert_shares(&self, what: &str, weights: &[u32], tolerance: f64) {
        assert_eq!(
            self.counts.len(),
            weights.len(),
            "{what}: one weight per link"
        );
        let total_weight: u32 = weights.iter().sum();
        let shares = self.shares();
        let expected: Vec<f64> = weights
            .iter()
            .map(|&w| 100.0 * f64::from(w) / f64::from(total_weight))
            .collect();
        let shown: Vec<String> = shares.iter().map(|s| format!("{s:.1}%")).collect();
        eprintln!(
            "FIGURE {what}: counts {:?} shares [{}] (weights {weights:?}, tolerance {tolerance} points)",
            self.counts,
            shown.join(", ")
        );
        for (link, (share, expected)) in shares.iter().zip(&expected).enumerate() {
            assert!(
                (share - expected).abs() <= tolerance,
                "{what}: link {} carried {share:.2}% of {:?}, expected {expected:.2}% +- {tolerance}",
                link + 1,
                self.counts
            );
        }
    }
}

/// What happened to connections whose first SYN every ISP dropped.
#[derive(Debug)]
pub struct SynLossOutcome {
    pub tally: Tally,
    /// Counter changes during the experiment, index i for link i + 1.
    pub isp: Vec<IspCounters>,
}

/// Makes every ISP drop the first SYN of each connection, opens `connections` connections at
/// once (each needs its SYN retransmitted after 1 s), and removes the loss rules again.
pub fn syn_loss_outcome(topo: &Topology, connections: usize) -> SynLossOutcome {
    for link in 1..=topo.link_count() {
        topo.add_loss(link, Loss::FirstSyn);
    }
    let before = topo.all_isp_counters();
    let tally = tcp_connections_parallel(&topo.lan, tcp_target(), connections);
    let after = topo.all_isp_counters();
    for link in 1..=topo.link_count() {
        topo.clear_loss(link);
    }
    SynLossOutcome {
        tally,
        isp: after
            .into_iter()
            .zip(before)
            .map(|(after, before)| after.since(before))
            .collect(),
    }
}
