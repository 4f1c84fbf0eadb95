//! `make demo`: builds the namespace testbed (a LAN host, the router, three ISPs, a server),
//! applies a 1:1:2 config with the real binary, opens some hundreds of connections from the
//! LAN and prints which link each went out by, as the server saw it. Everything it creates is
//! removed on exit. It also runs as part of `cargo test` (it fails if a connection fails).

// The testbed modules are shared with tests/it; this target uses a part and skips their tests.
#![allow(dead_code, unused_imports)]

#[path = "it/support/mod.rs"]
mod support;

use support::addr::{link_addr, link_device};
use support::checks;
use support::lbconfig::{Backend, Balance, LbConfig};
use support::topology::Topology;
use support::traffic::{Server, tcp_connections};

const CONNECTIONS: usize = 600;
const WEIGHTS: [u32; 3] = [1, 1, 2];

fn main() {
    let topo = Topology::new(WEIGHTS.len());
    let server = Server::tcp(&topo.srv, checks::tcp_target());
    let config = topo.write_config(
        "demo",
        &LbConfig::new(Backend::Nftables, Balance::RoundRobin, &WEIGHTS),
    );
    topo.apply(&config);
    println!("connmark-lb applied on the router (nftables, round-robin, weights 1:1:2)");
    println!("opening {CONNECTIONS} TCP connections from the LAN host to the server ...\n");
    let tally = tcp_connections(&topo.lan, checks::tcp_target(), CONNECTIONS);
    let total: u32 = WEIGHTS.iter().sum();
    println!(
        "{:<6} {:<11} {:>6} {:>11} {:>7} {:>6}",
        "link", "source", "weight", "connections", "share", "target"
    );
    for (i, weight) in WEIGHTS.iter().enumerate() {
        let link = i + 1;
        let count = tally.count(link_addr(link));
        println!(
            "{:<6} {:<11} {:>6} {:>11} {:>6.1}% {:>5.1}%",
            link_device(link),
            link_addr(link).to_string(),
            weight,
            count,
            100.0 * count as f64 / CONNECTIONS as f64,
            100.0 * f64::from(*weight) / f64::from(total)
        );
    }
    println!("failed connections: {}", tally.failures);
    drop(server);
    assert_eq!(tally.failures, 0, "every demo connection must succeed");
    assert_eq!(tally.succeeded(), CONNECTIONS as u64);
}
