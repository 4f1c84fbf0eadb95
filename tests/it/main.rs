//! One integration test binary; each module is one area. `golden`: renderer output per config
//! case. `packaging`: the OpenWrt files. The rest are end-to-end tests: the real `connmark-lb`
//! binary on a router in network namespaces, between a LAN host, one ISP namespace per link and
//! a server that reports which address it sees; they run as root under plain `cargo test`, and
//! a missing tool or privilege fails them.

mod busy;
mod checks;
mod e2e;
mod failover;
mod golden;
mod hitless;
mod lbconfig;
mod luci;
mod netns;
mod owrt;
mod packaging;
mod pkgmgr;
mod rpcd;
mod selftest;
mod traffic;
