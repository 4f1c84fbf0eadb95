//! Everything the tests share, and nothing that is a test. `tests/demo.rs` and the bench
//! (`benches/bench`) include this folder too, so a module here names its siblings through
//! `super::`, never through a crate path.
//!
//! - `addr`: the address plan: which address and device each namespace and link has.
//! - `netns`: one network namespace and the guard that deletes a test's namespaces.
//! - `topology`: the test topology (LAN host, router, one ISP per link, server) with its loss
//!   rules, counters and router state.
//! - `tempdir`: the one scratch directory type, and the unique tag tests run apart by.
//! - `process`: running host commands, bounded in time or fed stdin, and failing loudly.
//! - `lbconfig`: connmark-lb configs for the topology, written as UCI or JSON.
//! - `daemon`: `connmark-lb run` started in the router and watched through status.json.
//! - `dns`: dnsmasq resolvers in the ISPs and on the router, and a one-query DNS client.
//! - `lab`: a topology with services and a config, applied ([`lab::Lab`]) or run by the
//!   daemon ([`lab::DaemonLab`]).
//! - `traffic`: servers that report the peer address, and the LAN's connections and flows.
//! - `tunnel`: a userspace UDP tunnel (tun devices, python3 forwarders) over ISP 2.
//! - `icmp`: ICMP and ICMPv6 echoes from a raw socket, one conntrack flow each.
//! - `checks`: the server's services and the per-link measurements tests assert on.
//! - `long`: one long TCP connection on a chosen link, for what failover and failback do to it.
//! - `busy`: the busy-link scenario of hitless failover (tests and bench).
//! - `package`: the package's name and tree, the repo and the binaries under test.
//! - `owrt`: the OpenWrt kit: ubusd, rpcd, netifd and procd in a view of the router.
//! - `openwrt`: the router run by OpenWrt's daemons, and what procd/netifd tests read back.

pub mod addr;
pub mod busy;
pub mod checks;
pub mod daemon;
pub mod dns;
pub mod icmp;
pub mod lab;
pub mod lbconfig;
pub mod long;
pub mod netns;
pub mod openwrt;
pub mod owrt;
pub mod package;
pub mod process;
pub mod tempdir;
pub mod topology;
pub mod traffic;
pub mod tunnel;
