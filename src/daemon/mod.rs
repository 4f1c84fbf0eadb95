//! `connmark-lb run`: link health tracking and failover in one process.

mod bus;
pub mod conntrack;
mod counters;
pub mod devices;
pub mod health;
pub mod hook;
mod link;
mod netlink;
mod passive;
pub mod probe;
mod resteer;
mod run;
mod selfheal;
pub mod status;
#[cfg(test)]
mod testns;

pub use run::{Exit, Options, run};

/// Writes one line about a normal event (started, reloaded, a link's state change) to stdout,
/// which procd logs at info level. A closed stdout must not stop the daemon, so a failed write
/// is ignored.
fn log(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "connmark-lb: {message}");
}

/// Writes one line about a failure to stderr, which procd logs as `daemon.err`.
fn log_error(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "connmark-lb: {message}");
}
