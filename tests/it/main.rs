//! One integration test binary; each module is one area. `golden`: renderer output per config
//! case. `feed` and `packaging`: the OpenWrt files. The rest are end-to-end tests: the real
//! `connmark-lb` binary on a router in network namespaces, between a LAN host, one ISP
//! namespace per link and a server that reports which address it sees; they run as root under
//! plain `cargo test`, and a missing tool or privilege fails them. `emulated` also needs the MIPS release build, which
//! `make test` and `make test-emulated` make before they run it.

/// Instantiates every case once per backend, as `nftables::case` and `iptables::case`.
macro_rules! for_both_backends {
    ($($case:ident),* $(,)?) => {
        mod nftables {
            $(
                #[test]
                fn $case() {
                    super::$case(crate::support::lbconfig::Backend::Nftables);
                }
            )*
        }
        mod iptables {
            $(
                #[test]
                fn $case() {
                    super::$case(crate::support::lbconfig::Backend::Iptables);
                }
            )*
        }
    };
}

mod classes;
mod dns;
mod dualstack;
mod e2e;
mod emulated;
mod failback;
mod failover;
mod failover_ipv6;
mod feed;
mod fuzz;
mod fw4;
mod golden;
mod hardening;
mod hitless;
mod luci;
mod netifd;
mod netifd6;
mod packaging;
mod pkgmgr;
mod procd;
mod rpcd;
mod rule_matches;
mod selftest;
mod standby;
mod support;
mod tunnels;
mod ubus_object;
