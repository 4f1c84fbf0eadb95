//! Integration tests. `golden`: renderer output per config case. The rest are end-to-end tests:
//! the real `connmark-lb` binary on a router in network namespaces, between a LAN host, one ISP
//! namespace per link and a server that reports which address it sees. They run as root under
//! plain `cargo test`; a missing tool or privilege fails them.

mod checks;
mod e2e;
mod golden;
mod lbconfig;
mod netns;
mod selftest;
mod traffic;
