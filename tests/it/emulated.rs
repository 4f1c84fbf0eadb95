//! The big-endian MIPS build (mips_24kc routers) as the router's connmark-lb, run by
//! qemu-user: its `apply` and `stop` spawn the host's `nft` and `ip`, and the server must see
//! the configured shares. `make test` and `make test-emulated` build that binary first
//! (`make cross TARGET=mips-unknown-linux-musl`); without it this test fails and says how to
//! build it. `CONNMARK_LB_MIPS_BINARY` names another build.
//!
//! Only `apply` and `stop` are emulated: `run` needs `SO_MARK` on its probe sockets and
//! ctnetlink for conntrack flushes, neither of which qemu-user translates (the unit tests of
//! those encoders run under qemu byte for byte instead).

use std::path::PathBuf;

use crate::support::checks::{LinkLoad, servers, tcp_target};
use crate::support::lbconfig::{Backend, Balance, LbConfig};
use crate::support::topology::Topology;
use crate::support::traffic::tcp_connections;

const WEIGHTS: [u32; 2] = [1, 2];

fn mips_binary() -> PathBuf {
    let path = std::env::var_os("CONNMARK_LB_MIPS_BINARY").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/mips-unknown-linux-musl/release/connmark-lb")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{}: no MIPS build; run `make cross TARGET=mips-unknown-linux-musl`",
        path.display()
    );
    path
}

#[test]
fn mips_binary_under_qemu_balances_and_stops() {
    let binary = mips_binary();
    let command = ["qemu-mips-static", binary.to_str().expect("utf-8 path")];
    for backend in [Backend::Nftables, Backend::Iptables] {
        let topo = Topology::new(2);
        let _servers = servers(&topo);
        let pristine = topo.router_state();
        let config =
            topo.write_config("lb", &LbConfig::new(backend, Balance::RoundRobin, &WEIGHTS));
        topo.lb_ok_as(&command, "apply", &config);
        let tally = tcp_connections(&topo.lan, tcp_target(), 300);
        assert_eq!(tally.failures, 0, "{:?}", tally.errors);
        LinkLoad::from_tally(&topo, &tally).assert_shares(
            &format!("mips binary, {} tcp 1:2 over 300", backend.name()),
            &WEIGHTS,
            2.0,
        );
        topo.lb_ok_as(&command, "stop", &config);
        if let Some(diff) = pristine.differences(&topo.router_state()) {
            panic!("{}: stop left changes:\n{diff}", backend.name());
        }
    }
}
